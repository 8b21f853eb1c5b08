#!/usr/bin/env bash
# What each form of handing a batch of rows to a replica costs the replica's backend, in
# its own CPU time (utime + stime of /proc/self/stat, read with pg_read_file, which other
# load on the machine barely moves), per row. Issue 14 asks which form the listener should
# use; this measures the candidates on the same batches, alternating:
#   jsonb   INSERT ... SELECT FROM jsonb_to_recordset($1::jsonb) ... ON CONFLICT DO UPDATE
#           (the listener's statement)
#   json    the same from json_to_recordset($1::json) (the listener's for a batch past
#           jsonb's 256 MB)
#   arrays  the same from unnest($1::bigint[], $2::text[], ...): one typed array a column
#           (not for a table with an array column: unnest would flatten it)
#   copy    COPY (text format) into a temporary staging table, then INSERT ... SELECT FROM
#           it ... ON CONFLICT DO UPDATE, then TRUNCATE of the stage
#   copy_new  what the listener does since the COPY apply: the new rows by COPY straight
#           into the table, the updates by the jsonb statement
#
#   bench/apply_forms.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#
# CONNINFO must be a superuser (pg_read_file of /proc, COPY to and from server files in
# /tmp); the script works in a scratch database of its own and drops it at the end.
# Environment: BENCH_BATCHES (default 100) batches of BENCH_ROWS (default 1000) rows;
# BENCH_REPEAT (default 3) runs of each form, the minimum is printed with the median;
# BENCH_MAX_SECONDS (default 600) bounds the whole script. A run writes every batch as
# inserts of new keys (pass "insert"), then the same keys with other values (pass
# "update"), each pass in one transaction (commits cost every form alike), into two tables:
# "doc" (id bigint primary key, name text, n numeric, doc jsonb, ts timestamptz) and
# "scalars" (the same with tags int[] for doc). The statements are not prepared, as the
# listener's are not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BATCHES="${BENCH_BATCHES:-100}"
ROWS="${BENCH_ROWS:-1000}"
REPEAT="${BENCH_REPEAT:-3}"

source "$ROOT/bench/scratch_db.sh"
WORK="$(mktemp -d)"
# The server writes the COPY files itself (COPY ... TO), as the user it runs as.
COPY_PREFIX="/tmp/pgfanout_apply_forms_$$"

cleanup() {
  [ -z "${WATCHDOG:-}" ] || pkill -P "$WATCHDOG" sleep 2>/dev/null || true
  scratch_db_drop
  rm -rf "$WORK"
  rm -f "$COPY_PREFIX"_*.copy
}
trap cleanup EXIT
trap 'echo "apply_forms: stopped (signal or time limit)" >&2; exit 130' INT TERM
(sleep "${BENCH_MAX_SECONDS:-600}" && kill -TERM $$) 2>/dev/null &
WATCHDOG=$!

scratch_db_open "${1:-}" pgfanout_apply

# shape -> its fourth column's name, type, and the expression of its value
shape_column() {
  case $1 in
    doc) echo "doc jsonb jsonb_build_object('a', g, 'pass', p, 'tag', 'bench')" ;;
    scalars) echo "tags int[] ARRAY[g, p, 7]" ;;
  esac
}

prepare() {  # shape: table t, payload and COPY files for it
  read -r col type expr <<<"$(shape_column "$1")"
  PGOPTIONS="-c client_min_messages=warning" psql_base -d "$DB_CONN" -v batches="$BATCHES" -v rows="$ROWS" -v prefix="${COPY_PREFIX}_$1" -f - >/dev/null <<EOF
DROP TABLE IF EXISTS t, payload;
CREATE TABLE t (id bigint PRIMARY KEY, name text, n numeric, $col $type, ts timestamptz);
CREATE TABLE payload (pass int, batch int, json text, arrays text[], PRIMARY KEY (pass, batch));
CREATE TEMP TABLE src AS
  SELECT p AS pass, (g - 1) / :rows AS batch, g AS id, 'name ' || g || ' pass ' || p AS name,
         g * 1.5 + p AS n, $expr AS $col,
         timestamptz '2026-12-06 12:00+00' + g * interval '1 second' + p * interval '1 day' AS ts
  FROM generate_series(1, 2) p, generate_series(1, :batches * :rows) g;
INSERT INTO payload
  SELECT pass, batch,
         json_agg(json_build_object('id', id, 'name', name, 'n', n, '$col', $col, 'ts', ts) ORDER BY id)::text,
         ARRAY[array_agg(id ORDER BY id)::text, array_agg(name ORDER BY id)::text, array_agg(n ORDER BY id)::text,
               array_agg($col ORDER BY id)::text, array_agg(ts ORDER BY id)::text]
  FROM src GROUP BY pass, batch;
SELECT format('COPY (SELECT id, name, n, $col, ts FROM src WHERE pass = %s AND batch = %s ORDER BY id) TO %L',
              pass, batch, format('%s_%s_%s.copy', :'prefix', pass, batch))
FROM (SELECT DISTINCT pass, batch FROM src) b \gexec
EOF
}

CPU_MS="(SELECT (split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint) * 1000 / $(getconf CLK_TCK)
         FROM pg_read_file('/proc/self/stat') s)"
batch_sql() {  # form shape -> the PL/pgSQL body applying batch r.batch of pass r.pass
  read -r col type _ <<<"$(shape_column "$2")"
  local upsert="ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, n = EXCLUDED.n, $col = EXCLUDED.$col, ts = EXCLUDED.ts"
  local record="AS k(id bigint, name text, n numeric, $col $type, ts timestamptz)"
  case $1 in
    jsonb) echo "EXECUTE 'INSERT INTO t SELECT k.* FROM jsonb_to_recordset(\$1::jsonb) $record $upsert' USING r.json;" ;;
    json) echo "EXECUTE 'INSERT INTO t SELECT k.* FROM json_to_recordset(\$1::json) $record $upsert' USING r.json;" ;;
    arrays) echo "EXECUTE 'INSERT INTO t SELECT * FROM unnest(\$1::bigint[], \$2::text[], \$3::numeric[], \$4::${type}[], \$5::timestamptz[]) $upsert'
                    USING r.arrays[1], r.arrays[2], r.arrays[3], r.arrays[4], r.arrays[5];" ;;
    # The listener's since dabbd05: new rows (pass 1) by COPY straight into the table;
    # updates (pass 2) arrive as UPDATEs, which the jsonb upsert applies.
    copy_new) echo "IF r.pass = 1 THEN
                  EXECUTE format('COPY t FROM %L', format('%s_%s_%s.copy', '${COPY_PREFIX}_$2', r.pass, r.batch));
                ELSE
                  EXECUTE 'INSERT INTO t SELECT k.* FROM jsonb_to_recordset(\$1::jsonb) $record $upsert' USING r.json;
                END IF;" ;;
    copy) echo "EXECUTE format('COPY stage FROM %L', format('%s_%s_%s.copy', '${COPY_PREFIX}_$2', r.pass, r.batch));
                EXECUTE 'INSERT INTO t SELECT * FROM stage $upsert';
                TRUNCATE stage;" ;;
  esac
}
measure() {  # form shape -> "insert_ms update_ms" of the backend
  "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$DB_CONN" <<EOF
TRUNCATE t;
CHECKPOINT;
CREATE TEMP TABLE stage (LIKE t);
SELECT $CPU_MS AS c0 \gset
DO \$do\$ DECLARE r record; BEGIN
  FOR r IN SELECT * FROM payload WHERE pass = 1 ORDER BY batch LOOP $(batch_sql "$1" "$2") END LOOP;
END \$do\$;
SELECT $CPU_MS AS c1 \gset
DO \$do\$ DECLARE r record; BEGIN
  FOR r IN SELECT * FROM payload WHERE pass = 2 ORDER BY batch LOOP $(batch_sql "$1" "$2") END LOOP;
END \$do\$;
SELECT $CPU_MS AS c2 \gset
SELECT CASE WHEN (SELECT count(*) FROM t WHERE name LIKE '% pass 2') = $BATCHES * $ROWS
            THEN (:c1 - :c0) || ' ' || (:c2 - :c1) ELSE 'wrong' END;
EOF
}

echo "$BATCHES batches of $ROWS rows, $REPEAT runs per form, $(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
rows=$((BATCHES * ROWS))
for shape in doc scalars; do
  # Typed arrays cannot carry an array column: unnest flattens int[][] (so, not "scalars").
  FORMS=$([ "$shape" = doc ] && echo "jsonb json arrays copy copy_new" || echo "jsonb json copy copy_new")
  prepare "$shape"
  for i in $(seq 1 "$REPEAT"); do
    for form in $FORMS; do
      result="$(measure "$form" "$shape")"
      [ "$result" != wrong ] || { echo "apply_forms: $form left table $shape wrong" >&2; exit 1; }
      echo "$shape $form $result" >>"$WORK/runs"
    done
  done
  echo "table $shape:"
  for form in $FORMS; do
    for pass in insert update; do
      col=$([ "$pass" = insert ] && echo 3 || echo 4)
      sorted=$(awk -v s="$shape" -v f="$form" -v c="$col" '$1 == s && $2 == f { print $c }' "$WORK/runs" | sort -n)
      min=$(head -n 1 <<<"$sorted")
      median=$(sed -n "$(( ($(wc -l <<<"$sorted") + 1) / 2 ))p" <<<"$sorted")
      awk -v f="$form" -v p="$pass" -v a="$min" -v m="$median" -v n="$rows" \
        'BEGIN { printf "  %-7s %-7s CPU %6d ms min, %6d median  = %5.2f us per row (min)\n", f, p, a, m, a * 1000 / n }'
    done
  done
done
