#!/usr/bin/env bash
# The capture's CPU cost per change, as the writing backend's own CPU time (utime + stime
# of /proc/self/stat, read with pg_read_file), which other load on the machine barely
# moves, unlike TPS. Compares sql/install.sql with another version of it, alternating.
#
#   BENCH_WRITER=role bench/capture_cpu.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#   BENCH_BASELINE_SQL=/tmp/old-install.sql BENCH_WRITER=role bench/capture_cpu.sh
#       (e.g. git show main:sql/install.sql > /tmp/old-install.sql)
#
# CONNINFO must be a superuser (pg_read_file of /proc, CREATE DATABASE); the script works
# in scratch databases of its own and drops them at the end. BENCH_WRITER is a role (not a
# superuser: the outbox's row-level security does not check superusers) that writes, as
# most writers would, through SET ROLE. BENCH_REPEAT (default 5) runs of each
# workload per variant, alternating; the minimum is printed with the median. Workloads,
# each in one DO block in one transaction (no commit cost): BENCH_ROWS (default 20,000)
# single-row INSERTs, 5 × BENCH_ROWS rows in INSERTs of 1,000 rows, BENCH_ROWS single-row
# UPDATEs, into a table
# (id bigint primary key, t text, j jsonb, ts timestamptz) tracked or not.
#
# BENCH_PIECES=on adds variants of this install.sql, each in a copy of its database with
# one piece changed, to show what each piece costs or saves (a piece that changes
# capture_insert tracks the table again, so that the table's own INSERT capture, made
# from capture_insert's body, has the change too):
#   idle from table     the captures read publisher_state.idle with a query, as before
#                       the flag had its sequence
#   SET search_path     the row captures carry SET search_path = pg_catalog, pg_temp
#   policy true         the outbox policy admits every row: what its check costs the
#                       UPDATEs (the INSERTs go through the table's own view of the
#                       outbox, which that policy does not check)
#   no big-row guard    to_jsonb without the pg_column_size test (what the guard costs;
#                       such a capture fails writes of rows past jsonb's 256 MB)
#   INSERTs by the policy  the table's INSERT capture writes the outbox itself, whose
#                       policy checks every row, as before the table had a view of its
#                       own: what that view saves
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPEAT="${BENCH_REPEAT:-5}"
ROWS="${BENCH_ROWS:-20000}"  # CPU time comes in 10 ms ticks: 60,000 gives 0.2 us per row
[[ "$ROWS" =~ ^[0-9]+$ ]] && [ "$ROWS" -ge 1000 ] && [ $((ROWS % 200)) -eq 0 ] \
  || { echo "capture_cpu: BENCH_ROWS must be a multiple of 200, at least 1000" >&2; exit 2; }
WRITER="${BENCH_WRITER:?set BENCH_WRITER to a LOGIN role that is not a superuser}"
BASELINE="${BENCH_BASELINE_SQL:-}"

source "$ROOT/bench/scratch_db.sh"
WORK="$(mktemp -d)"
BASE_DB="pgfanout_cpu_base_$$"
BASE_CONN=""

cleanup() {
  [ -z "${WATCHDOG:-}" ] || pkill -P "$WATCHDOG" sleep 2>/dev/null || true
  [ -z "$BASE_CONN" ] || psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $BASE_DB WITH (FORCE)" >/dev/null 2>&1 || true
  for piece_db in ${PIECE_DBS:-}; do
    psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $piece_db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  scratch_db_drop
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "capture_cpu: stopped (signal or time limit)" >&2; exit 130' INT TERM
(sleep "${BENCH_MAX_SECONDS:-900}" && kill -TERM $$) 2>/dev/null &
WATCHDOG=$!

setup() {  # conninfo
  psql_base -d "$1" -v writer="$WRITER" -f - >/dev/null <<'EOF'
CREATE TABLE bench (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);
CREATE TABLE plain (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);
GRANT SELECT, INSERT, UPDATE, DELETE ON bench, plain TO :"writer";
SELECT pgfanout.track('bench');
UPDATE pgfanout.publisher_state SET idle = false;
EOF
}

scratch_db_open "${1:-}" pgfanout_cpu
setup "$DB_CONN"
if [ -n "$BASELINE" ]; then
  psql_base -d "$CONNINFO" -c "CREATE DATABASE $BASE_DB" >/dev/null
  BASE_CONN="$(scratch_conninfo "$CONNINFO" "$BASE_DB")"
  PGOPTIONS="-c client_min_messages=warning" psql_base -d "$BASE_CONN" -f "$BASELINE" >/dev/null
  setup "$BASE_CONN"
fi

CPU_MS="(SELECT (split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint) * 1000 / $(getconf CLK_TCK)
         FROM pg_read_file('/proc/self/stat') s)"
body() {  # table workload
  case $2 in
    single) echo "FOR i IN 1..$ROWS LOOP INSERT INTO $1 VALUES (i, 'a short line of text', '{\"n\": 1, \"tag\": \"bench\"}', now()); END LOOP;" ;;
    bulk) echo "FOR i IN 0..$((ROWS * 5 / 1000 - 1)) LOOP INSERT INTO $1 SELECT g, 'a short line of text', '{\"n\": 1, \"tag\": \"bench\"}', now() FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g; END LOOP;" ;;
    update) echo "FOR i IN 1..$ROWS LOOP UPDATE $1 SET t = 'updated text', j = '{\"n\": 2}', ts = now() WHERE id = i; END LOOP;" ;;
  esac
}
measure() {  # conninfo table workload -> CPU ms of the writing backend
  local fill=""
  [ "$3" = update ] && fill="INSERT INTO $2 SELECT g, 'x', '{}', now() FROM generate_series(1, $ROWS) g;"
  psql_base -d "$1" -c "TRUNCATE $2; TRUNCATE pgfanout.changes; $fill" -c "VACUUM ANALYZE $2" -c "CHECKPOINT" >/dev/null
  "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v writer="$WRITER" -d "$1" <<EOF
SELECT $CPU_MS AS c0 \gset
SET ROLE :"writer";
DO \$do\$ BEGIN $(body "$2" "$3") END \$do\$;
RESET ROLE;
SELECT $CPU_MS - :c0;
EOF
}

VARIANTS="untracked|$DB_CONN|plain
this install.sql|$DB_CONN|bench"
if [ "${BENCH_PIECES:-off}" = on ]; then
  # Each piece: a label and the SQL that changes it in a copy of the database. A text
  # replacement that changes nothing stops the script: the piece would measure nothing.
  pieces=(
    "idle from table|SELECT pg_temp.swap(f, 'pg_catalog.pg_sequence_last_value(''pgfanout.publisher_idle''::pg_catalog.regclass) OPERATOR(pg_catalog.=) 1', '(SELECT idle FROM pgfanout.publisher_state)') FROM unnest(ARRAY['pgfanout.capture_insert()', 'pgfanout.capture_row()']::regprocedure[]) AS f; SELECT pgfanout.track('bench')"
    "SET search_path|ALTER FUNCTION pgfanout.capture_row() SET search_path = pg_catalog, pg_temp; SELECT pg_temp.run(format('ALTER FUNCTION %s() SET search_path = pg_catalog, pg_temp', pgfanout.capture_function('bench')))"
    "policy true|ALTER POLICY pgfanout_capture ON pgfanout.changes WITH CHECK (true)"
    "no big-row guard|SELECT pg_temp.swap('pgfanout.capture_insert()', 'CASE WHEN pg_catalog.pg_column_size(n.*) OPERATOR(pg_catalog.<) 100000 THEN pg_catalog.to_jsonb(n.*)
                              ELSE pgfanout.row_jsonb(n.*) END', 'pg_catalog.to_jsonb(n.*)'); SELECT pg_temp.swap('pgfanout.capture_row()', 'AND coalesce(pg_catalog.pg_column_size(NEW), 0) OPERATOR(pg_catalog.<) 100000
       AND coalesce(pg_catalog.pg_column_size(OLD), 0) OPERATOR(pg_catalog.<) 100000', ''); SELECT pgfanout.track('bench')"
    "INSERTs by the policy|SELECT pg_temp.swap((pgfanout.capture_function('bench') || '()')::regprocedure, 'IF TG_TABLE_SCHEMA OPERATOR(pg_catalog.=) ''public''', 'IF false AND TG_TABLE_SCHEMA OPERATOR(pg_catalog.=) ''public''')"
  )
  for i in "${!pieces[@]}"; do
    label="${pieces[$i]%%|*}"
    piece_db="${DB}_p$i"
    psql_base -d "$CONNINFO" -c "CREATE DATABASE $piece_db TEMPLATE $DB" >/dev/null
    PIECE_DBS="${PIECE_DBS:-} $piece_db"
    piece_conn="$(scratch_conninfo "$CONNINFO" "$piece_db")"
    psql_base -d "$piece_conn" -f - >/dev/null <<EOF
CREATE FUNCTION pg_temp.run(q text) RETURNS void LANGUAGE plpgsql AS \$\$ BEGIN EXECUTE q; END \$\$;
CREATE FUNCTION pg_temp.swap(f regprocedure, old text, new text) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
    def text := pg_get_functiondef(f);
BEGIN
    IF strpos(def, old) = 0 THEN
        RAISE EXCEPTION 'capture_cpu: % no longer holds: %', f, old;
    END IF;
    EXECUTE replace(def, old, new);
END
\$\$;
${pieces[$i]#*|};
EOF
    VARIANTS="$VARIANTS
$label|$piece_conn|bench"
  done
fi
[ -z "$BASELINE" ] || VARIANTS="$VARIANTS
baseline|$BASE_CONN|bench"
echo "writer $WRITER, $REPEAT runs per variant, $ROWS rows ($((ROWS * 5)) in bulk), $(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
for w in single bulk update; do
  for i in $(seq 1 "$REPEAT"); do
    while IFS='|' read -r label conn table; do
      printf '%s\t%s\n' "$label" "$(measure "$conn" "$table" "$w")" >>"$WORK/$w"
    done <<<"$VARIANTS"
  done
  rows=$([ "$w" = bulk ] && echo $((ROWS * 5)) || echo "$ROWS")
  while IFS='|' read -r label _ _; do
    sorted=$(awk -F'\t' -v l="$label" '$1 == l { print $2 }' "$WORK/$w" | sort -n)
    min=$(head -n 1 <<<"$sorted")
    median=$(sed -n "$(( ($(wc -l <<<"$sorted") + 1) / 2 ))p" <<<"$sorted")
    awk -v w="$w" -v l="$label" -v a="$min" -v m="$median" -v n="$rows" \
      'BEGIN { printf "  %-7s %-22s CPU %6d ms min, %6d median  = %5.1f us per row (min)\n", w, l, a, m, a * 1000 / n }'
  done <<<"$VARIANTS"
done
