#!/usr/bin/env bash
# What tracked writers wait on in logical capture: pgbench's single-row UPDATEs (4 clients)
# against a 100,001-row table, first with the capture alone (slot, no publisher), then
# with the chain running (one publisher, two listeners whose replica databases are on the
# same server, as bench/run.sh puts them). During each run the writers' wait events are
# sampled from pg_stat_activity every 10 ms; "CPU" is a sample with no wait event.
#
#   bench/wait_events.sh [CONNINFO]     (default: $PGFANOUT_TEST_PG; a superuser)
#
# Needs the servers of scripts/servers.sh (PGFANOUT_TEST_AMQP for the broker) and the
# programs built in BENCH_BUILD_DIR (default build/bin). BENCH_SECONDS (default 8) per run.
# Works in scratch databases of its own and drops them, and stops what it started, at the
# end (and deletes its queues, with PGFANOUT_TEST_RABBITMQCTL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BENCH_BUILD_DIR:-$ROOT/build}/bin"
SECS="${BENCH_SECONDS:-8}"
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 3 ] || { echo "wait_events: BENCH_SECONDS must be at least 3" >&2; exit 2; }
AMQP="${PGFANOUT_TEST_AMQP:?set PGFANOUT_TEST_AMQP (scripts/servers.sh env)}"
for p in pgfanout-publisher pgfanout-listener; do
  [ -x "$BIN/$p" ] || { echo "wait_events: $BIN/$p is missing (build first)" >&2; exit 2; }
done

source "$ROOT/bench/scratch_db.sh"
PIDS=()
REPLICA_DBS=()
EXCHANGE="pgfanout_waits_$$"
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # The slot goes with its database, once no walsender streams it.
  psql_base -d "${DB_CONN:-}" -c "SELECT pgfanout.set_capture('trigger')" >/dev/null 2>&1 || true
  for d in "${REPLICA_DBS[@]}"; do
    psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
  if [ -n "${PGFANOUT_TEST_RABBITMQCTL:-}" ]; then
    for i in 1 2; do
      "$PGFANOUT_TEST_RABBITMQCTL" delete_queue "${EXCHANGE}_$i" >/dev/null 2>&1 || true
      "$PGFANOUT_TEST_RABBITMQCTL" delete_queue "${EXCHANGE}_$i.dead" >/dev/null 2>&1 || true
    done
  fi
  scratch_db_drop
}
trap cleanup EXIT
trap 'echo "wait_events: stopped (signal)" >&2; exit 130' INT TERM

scratch_db_open "${1:-}" pgfanout_waits
TABLE_SQL="CREATE TABLE t (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);
INSERT INTO t SELECT g, 'prefilled row ' || g, '{\"n\": 0}', now() FROM generate_series(0, 100000) g;
ALTER TABLE t SET (autovacuum_enabled = off);"
psql_base -d "$DB_CONN" -c "$TABLE_SQL" -c "VACUUM ANALYZE t" -c "SELECT pgfanout.track('t')" \
  -c "SELECT pgfanout.set_capture('logical')" >/dev/null
for i in 1 2; do
  d="${DB}_replica$i"
  psql_base -d "$CONNINFO" -c "CREATE DATABASE $d" >/dev/null
  REPLICA_DBS+=("$d")
  psql_base -d "$(scratch_conninfo "$CONNINFO" "$d")" -c "$TABLE_SQL" -c "VACUUM ANALYZE t" >/dev/null
done

WORK="$(mktemp -d)"
SCRIPT="$WORK/update.sql"
printf '%s\n' '\set id random(1, 100000)' \
  "UPDATE t SET t = 'updated text', j = '{\"n\": 2}', ts = now() WHERE id = :id;" > "$SCRIPT"

wal() { psql_base -d "$CONNINFO" -At -c "SELECT wal_bytes || ' ' || wal_sync FROM pg_stat_wal"; }

run() {  # label
  local wal0
  wal0="$(wal)"
  "$PGBIN/pgbench" -n -c 4 -j 2 -T "$SECS" -f "$SCRIPT" "$DB_CONN" > "$WORK/pgbench.txt" 2>&1 &
  local bench=$!
  PIDS+=("$bench")
  sleep 1
  psql_base -d "$CONNINFO" -At -v db="$DB" -v samples="$(( (SECS - 2) * 100 ))" > "$WORK/waits.txt" <<'EOF'
CREATE TEMP TABLE s (w text);
SELECT format('DO $$ BEGIN FOR i IN 1..%s LOOP INSERT INTO s SELECT coalesce(wait_event_type || '':'' || wait_event, ''CPU'') FROM pg_stat_activity WHERE datname = %L AND application_name = ''pgbench''; PERFORM pg_sleep(0.01); END LOOP; END $$', :samples, :'db') \gexec
SELECT rpad(w, 28) || lpad(round(100.0 * count(*) / sum(count(*)) OVER ())::text, 4) || ' %' FROM s GROUP BY w ORDER BY count(*) DESC LIMIT 8;
EOF
  wait "$bench" || true
  local tps wal1
  tps="$(grep -o 'tps = [0-9.]*' "$WORK/pgbench.txt" | head -1 | cut -d' ' -f3 | cut -d. -f1)"
  wal1="$(wal)"
  # The whole server's WAL (the replicas' apply included), over the run and what follows it
  # until now: bytes and flushes (fsyncs) per writer transaction.
  echo "$1: $tps tps; server WAL per writer transaction: $(awk -v a="$wal0" -v b="$wal1" -v n="$((tps * SECS))" \
    'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f bytes, %.2f flushes", (y[1] - x[1]) / n, (y[2] - x[2]) / n }')"
  echo "  the writers' wait-event samples:"
  sed 's/^/  /' "$WORK/waits.txt"
}

echo "wait_events: $SECS s of single-row UPDATEs per run, pgbench -c 4, on $(psql_base -d "$CONNINFO" -At -c 'SHOW server_version' | cut -d' ' -f1)"
run "logical capture, no publisher"
# The chain starts where the slot is now: the first run's changes are not shipped.
psql_base -d "$DB_CONN" -c "SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM pg_replication_slots WHERE database = current_database()" >/dev/null
"$BIN/pgfanout-publisher" --source "$DB_CONN" --amqp "$AMQP" --exchange "$EXCHANGE" --pack 100 > "$WORK/publisher.log" 2>&1 &
PIDS+=($!)
for i in 1 2; do
  "$BIN/pgfanout-listener" --target "$(scratch_conninfo "$CONNINFO" "${DB}_replica$i")" --queue "${EXCHANGE}_$i" \
    --amqp "$AMQP" --exchange "$EXCHANGE" > "$WORK/listener$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 3
run "logical capture, chain running"
rm -rf "$WORK"
