#!/usr/bin/env bash
# What one outbox row per INSERT statement (instead of one per row) would save the bulk
# writer: 100 transactions of 1,000 rows into a (bigint, text, jsonb, timestamptz) table,
# untracked, tracked by sql/install.sql, and three hand-made statement-level captures that
# write the statement's rows as one value. No publisher runs (publisher_state.idle is set
# false, so no NOTIFY). Variants alternate for BENCH_ROUNDS rounds; wall seconds per run.
#
#   bench/statement_outbox.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#
# CONNINFO must be a role that may create databases; the script works in a scratch
# database of its own and drops it at the end. BENCH_ROUNDS (default 3), PGBIN.
# Variants:
#   untracked       no trigger
#   tracked         pgfanout.track(): one outbox row per row (to_jsonb)
#   string_agg      one row per statement: string_agg(to_jsonb(n.*)::text), stored
#                   uncompressed (to_jsonb's form, as the message contract wants)
#   string_agg_ids  the same, each row with a change id of its own from a sequence
#                   (CACHE 1, like the outbox's): what messages need, one id per change
#   to_jsonb_only   a statement trigger that computes to_jsonb(n.*)::text of every row
#                   and writes nothing: the floor of any capture that sends to_jsonb's form
#   json_agg        one row per statement: json_agg(n.*) (to_json's form: not the contract's)
#   jsonb_agg       one row per statement: jsonb_agg(to_jsonb(n.*)) as jsonb (compressed)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${BENCH_ROUNDS:-3}"
source "$ROOT/bench/scratch_db.sh"
trap scratch_db_drop EXIT
scratch_db_open "${1:-}" pgfanout_stmt_outbox
psql_base "$DB_CONN" >/dev/null <<'SQL'
UPDATE pgfanout.publisher_state SET idle = false;
CREATE TABLE chunks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_name text, op text,
                     rows_text text, rows_jsonb jsonb, ts timestamptz DEFAULT clock_timestamp());
ALTER TABLE chunks ALTER COLUMN rows_text SET STORAGE EXTERNAL;
CREATE FUNCTION cap_string_agg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO chunks (table_name, op, rows_text)
  SELECT TG_TABLE_NAME, 'INSERT', string_agg(to_jsonb(n.*)::text, ',') FROM new_rows n; RETURN NULL; END $$;
CREATE FUNCTION cap_to_jsonb_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE total bigint; BEGIN
  SELECT sum(length(to_jsonb(n.*)::text)) INTO total FROM new_rows n; RETURN NULL; END $$;
CREATE SEQUENCE change_ids CACHE 1;
CREATE FUNCTION cap_string_agg_ids() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO chunks (table_name, op, rows_text)
  SELECT TG_TABLE_NAME, 'INSERT', string_agg(s.id::text || E'\t' || s.v::text, E'\n' ORDER BY s.id)
  FROM (SELECT nextval('change_ids') AS id, to_jsonb(n.*) AS v FROM new_rows n OFFSET 0) s; RETURN NULL; END $$;
CREATE FUNCTION cap_json_agg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO chunks (table_name, op, rows_text)
  SELECT TG_TABLE_NAME, 'INSERT', json_agg(n.*)::text FROM new_rows n; RETURN NULL; END $$;
CREATE FUNCTION cap_jsonb_agg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO chunks (table_name, op, rows_jsonb)
  SELECT TG_TABLE_NAME, 'INSERT', jsonb_agg(to_jsonb(n.*)) FROM new_rows n; RETURN NULL; END $$;
SQL
for v in untracked to_jsonb_only tracked string_agg string_agg_ids json_agg jsonb_agg; do
  psql_base "$DB_CONN" -c "CREATE TABLE $v (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz)" >/dev/null
done
psql_base "$DB_CONN" >/dev/null <<'SQL'
SELECT pgfanout.track('tracked');
CREATE TRIGGER c AFTER INSERT ON string_agg REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cap_string_agg();
CREATE TRIGGER c AFTER INSERT ON to_jsonb_only REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cap_to_jsonb_only();
CREATE TRIGGER c AFTER INSERT ON string_agg_ids REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cap_string_agg_ids();
CREATE TRIGGER c AFTER INSERT ON json_agg REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cap_json_agg();
CREATE TRIGGER c AFTER INSERT ON jsonb_agg REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cap_jsonb_agg();
SQL

echo "100 x 1,000-row INSERT transactions; wall seconds per run (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
for round in $(seq "$ROUNDS"); do
  line="round $round:"
  for v in untracked to_jsonb_only tracked string_agg string_agg_ids json_agg jsonb_agg; do
    psql_base "$DB_CONN" -c "TRUNCATE $v, chunks, pgfanout.changes" -c "CHECKPOINT" >/dev/null
    start=$(date +%s.%N)
    psql_base "$DB_CONN" -c "DO \$\$ BEGIN FOR i IN 0..99 LOOP
      INSERT INTO $v SELECT g, 'text ' || g, jsonb_build_object('a', g, 'b', 'xyz'), now()
      FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g; COMMIT; END LOOP; END \$\$"
    line+=$(printf '  %s %.2f' "$v" "$(echo "$(date +%s.%N) - $start" | bc)")
  done
  echo "$line"
done
