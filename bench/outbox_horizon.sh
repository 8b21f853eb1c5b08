#!/usr/bin/env bash
# What a head read of the outbox costs while an old transaction holds vacuum back: the
# publisher's read from the lowest id (before OutboxCursor) against its read from after
# the last change it read (now). Each round captures ROWS changes through a tracked
# table, deletes them as the publisher does once they are shipped, and times both reads
# (best of 3) with the deleted rows' index entries still there. No publisher runs.
#
#   bench/outbox_horizon.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#
# CONNINFO must be a role that may create databases; the script works in a scratch
# database of its own and drops it at the end. BENCH_ROUNDS (default 6), BENCH_ROWS
# (default 50000), PGBIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${BENCH_ROUNDS:-6}"
ROWS="${BENCH_ROWS:-50000}"
source "$ROOT/bench/scratch_db.sh"
OLD_TX=""
cleanup() {
  [ -z "$OLD_TX" ] || kill "$OLD_TX" 2>/dev/null || true
  scratch_db_drop
}
trap cleanup EXIT
scratch_db_open "${1:-}" pgfanout_outbox_horizon
psql_base "$DB_CONN" -c "UPDATE pgfanout.publisher_state SET idle = false" \
  -c "CREATE TABLE t (id bigint PRIMARY KEY, v text)" -c "SELECT pgfanout.track('t')" >/dev/null

# The old transaction: has an xid and a snapshot, like a long report or batch job.
psql_base "$DB_CONN" -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT pg_current_xact_id()" \
  -c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
OLD_TX=$!
sleep 1

# Best of 3, in ms, of a query run in one psql session.
best_ms() {
  psql_base "$DB_CONN" -c '\timing on' -c "$1" -c "$1" -c "$1" 2>&1 |
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sort -g | head -1
}

echo "head read of 2,000 rows, ms (best of 3), with an old transaction open (load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-26s %22s %22s\n' "deleted rows behind it" "from the lowest id" "after the last read"
for round in $(seq "$ROUNDS"); do
  first=$(( (round - 1) * ROWS + 1 ))
  psql_base "$DB_CONN" -c "INSERT INTO t SELECT g, 'row ' || g FROM generate_series($first, $(( round * ROWS ))) g" >/dev/null
  last=$(psql_base "$DB_CONN" -Atc "SELECT max(id) FROM pgfanout.changes")
  psql_base "$DB_CONN" -c "DELETE FROM pgfanout.changes" >/dev/null
  # One change behind them, as the next one to ship.
  psql_base "$DB_CONN" -c "INSERT INTO t VALUES (-$round, 'next')" >/dev/null
  lowest=$(best_ms "SELECT id, new_row::text FROM pgfanout.changes ORDER BY id LIMIT 2000")
  after=$(best_ms "SELECT id, new_row::text FROM pgfanout.changes WHERE id > $last ORDER BY id LIMIT 2000")
  psql_base "$DB_CONN" -c "DELETE FROM pgfanout.changes" >/dev/null
  printf '%-26s %22s %22s\n' "$(( round * ROWS + round - 1 ))" "$lowest" "$after"
done
