#!/usr/bin/env bash
# What capture costs the primary: pgbench TPS of writes to an untracked table against the
# same writes to a table tracked by sql/install.sql.
#
#   bench/capture_cost.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#
# CONNINFO (key=value or URI) must be a role that may create databases; the script works in
# a scratch database of its own and drops it at the end. Environment:
#   BENCH_SECONDS   length of each pgbench run (default 6)
#   BENCH_ROUNDS    rounds over all variants (default 2); each variant reports its best
#                   round, which filters out bursts of other load on a shared machine
#   BENCH_CLIENTS   pgbench clients (default 4), BENCH_THREADS pgbench threads (default 2)
#   BENCH_SYNCHRONOUS_COMMIT  synchronous_commit of the pgbench sessions (default on). With
#                   off, single-row runs are bound by CPU instead of by the WAL flush at
#                   commit: the ratios then show the capture's CPU cost at its worst, and
#                   they do not swing with other disk traffic on the machine
#   BENCH_WRITER    a LOGIN role (not a superuser) that pgbench writes as (default: the
#                   role of CONNINFO). Row-level security on the outbox checks every change a
#                   writer inserts; superusers and the outbox's owner (who installs here)
#                   skip that check, so only a writer of its own measures what most writers pay
#   BENCH_MAX_SECONDS  hard limit on the whole script (default 240): past it, it stops,
#                   drops its database and exits non-zero
#   PGBIN           where psql and pgbench live (default /usr/lib/postgresql/15/bin)
# With the defaults it runs 2 x 10 runs of 6 s, about 2.5 minutes in all.
#
# Variants (table: id bigint primary key, t text, j jsonb, ts timestamptz):
#   single-row INSERT   untracked | statement trigger, publisher busy (no NOTIFY)
#                       | row trigger, busy | statement trigger, publisher idle (NOTIFY per commit)
#   single-row UPDATE   untracked | tracked, busy | tracked, idle            (100,000 rows)
#   1,000-row INSERT    untracked | row trigger | statement trigger   (INSERT ... SELECT generate_series)
# "Busy" and "idle" are what the publisher last wrote to pgfanout.publisher_state. No
# publisher runs: the outbox only grows during a run, as when the publisher is down or far
# behind, and it is emptied between runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_RUN="${BENCH_SECONDS:-6}"
SYNCHRONOUS_COMMIT="${BENCH_SYNCHRONOUS_COMMIT:-on}"
ROUNDS="${BENCH_ROUNDS:-2}"
CLIENTS="${BENCH_CLIENTS:-4}"
THREADS="${BENCH_THREADS:-2}"
PREFILL=100000

source "$ROOT/bench/scratch_db.sh"
WORK="$(mktemp -d)"

sql() { psql_base -d "$DB_CONN" "$@" >/dev/null; }

cleanup() {
  [ -z "${WATCHDOG:-}" ] || pkill -P "$WATCHDOG" sleep 2>/dev/null || true
  scratch_db_drop
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "capture_cost: stopped (signal or time limit)" >&2; exit 130' INT TERM
# Whatever hangs (a server that stops answering, say), the script ends in bounded time.
(sleep "${BENCH_MAX_SECONDS:-240}" && kill -TERM $$) 2>/dev/null &
WATCHDOG=$!

scratch_db_open "${1:-}" pgfanout_capture_bench
sql -c "CREATE SEQUENCE bench_ids" \
    -c "CREATE TABLE bench (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz)"
WRITER_CONN="$DB_CONN"
if [ -n "${BENCH_WRITER:-}" ]; then
  sql -v writer="$BENCH_WRITER" -f - <<'EOF'
GRANT SELECT, INSERT, UPDATE ON bench TO :"writer";
GRANT USAGE ON SEQUENCE bench_ids TO :"writer";
EOF
  if [[ "$DB_CONN" == postgres* ]]; then
    WRITER_CONN="$DB_CONN$([[ "$DB_CONN" == *\?* ]] && echo '&' || echo '?')user=$BENCH_WRITER"
  else
    WRITER_CONN="$DB_CONN user=$BENCH_WRITER"   # key=value form: the last user wins
  fi
fi

cat >"$WORK/insert.sql" <<'EOF'
INSERT INTO bench VALUES (nextval('bench_ids'), 'a short line of text', '{"n": 1, "tag": "bench"}', now());
EOF
cat >"$WORK/update.sql" <<EOF
\set id random(1, $PREFILL)
UPDATE bench SET t = 'updated text', j = '{"n": 2}', ts = now() WHERE id = :id;
EOF
cat >"$WORK/bulk.sql" <<'EOF'
INSERT INTO bench SELECT nextval('bench_ids'), 'a short line of text', '{"n": 1, "tag": "bench"}', now()
FROM generate_series(1, 1000);
EOF

# How table bench is captured.
capture_none() { sql -c "SELECT pgfanout.untrack('bench')" 2>/dev/null; }
capture_statement() { sql -c "SELECT pgfanout.track('bench')"; }
capture_row() {
  sql -c "SELECT pgfanout.track('bench')" \
      -c "DROP TRIGGER pgfanout_insert ON bench" \
      -c "CREATE TRIGGER pgfanout_insert AFTER INSERT ON bench FOR EACH ROW EXECUTE FUNCTION pgfanout.capture_row('id')"
}

# A clean start for each run: empty outbox; table empty (inserts) or holding PREFILL rows
# (updates; refilled only when it does not hold them).
reset() {
  local rows=$1
  sql -c "TRUNCATE pgfanout.changes"
  if [ "$rows" -eq 0 ]; then
    sql -c "TRUNCATE bench"
  elif [ "$("$PGBIN/psql" -X -At -d "$DB_CONN" -c "SELECT count(*) FROM bench")" -ne "$rows" ]; then
    sql -c "TRUNCATE bench" \
        -c "SET session_replication_role = replica" \
        -c "INSERT INTO bench SELECT g, 'a short line of text', '{\"n\": 1, \"tag\": \"bench\"}', now() FROM generate_series(1, $rows) g"
  fi
  sql -c "VACUUM ANALYZE bench" -c "VACUUM pgfanout.changes" -c "CHECKPOINT"
}

#        label                                   capture    publisher rows      script
VARIANTS="insert untracked|none|busy|0|insert.sql
insert statement trigger, busy|statement|busy|0|insert.sql
insert row trigger, busy|row|busy|0|insert.sql
insert statement trigger, idle (NOTIFY)|statement|idle|0|insert.sql
update untracked|none|busy|$PREFILL|update.sql
update tracked, busy|statement|busy|$PREFILL|update.sql
update tracked, idle (NOTIFY)|statement|idle|$PREFILL|update.sql
1000-row insert untracked|none|busy|0|bulk.sql
1000-row insert row trigger|row|busy|0|bulk.sql
1000-row insert statement trigger|statement|busy|0|bulk.sql"

RESULTS="$WORK/results"
: >"$RESULTS"
echo "pgbench -n -c $CLIENTS -j $THREADS -T $SECONDS_PER_RUN, $ROUNDS rounds, synchronous_commit=$SYNCHRONOUS_COMMIT," \
     "writer ${BENCH_WRITER:-(the installing role)}," \
     "$(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  while IFS='|' read -r label capture publisher rows script; do
    "capture_$capture"
    sql -c "UPDATE pgfanout.publisher_state SET idle = $([ "$publisher" = idle ] && echo true || echo false)"
    reset "$rows"
    out=$(PGOPTIONS="-c synchronous_commit=$SYNCHRONOUS_COMMIT" "$PGBIN/pgbench" -n -c "$CLIENTS" -j "$THREADS" -T "$SECONDS_PER_RUN" -f "$WORK/$script" "$WRITER_CONN" 2>&1) \
      || { echo "$out" >&2; exit 1; }
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    printf '%s\t%s\n' "$label" "$tps" >>"$RESULTS"
    printf '  round %s  %-42s %9.1f tps\n' "$round" "$label" "$tps"
  done <<<"$VARIANTS"
done

best() { awk -F'\t' -v l="$1" '$1 == l && $2 > b { b = $2 } END { print b + 0 }' "$RESULTS"; }
echo
echo "best of $ROUNDS rounds                                        tps   vs untracked"
while IFS='|' read -r label _ _ _ script; do
  case $script in
    insert.sql) base="insert untracked" ;;
    update.sql) base="update untracked" ;;
    bulk.sql) base="1000-row insert untracked" ;;
  esac
  awk -v l="$label" -v t="$(best "$label")" -v b="$(best "$base")" \
    'BEGIN { printf "  %-42s %12.1f %8.2fx\n", l, t, (b > 0 ? t / b : 0) }'
done <<<"$VARIANTS"
