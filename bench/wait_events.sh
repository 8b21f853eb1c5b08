#!/usr/bin/env bash
# What tracked writers wait on in logical capture: pgbench's single-row UPDATEs (4 clients)
# against a 100,001-row table, first with the capture alone (slot, no publisher), then
# with the chain running (one publisher, two listeners whose replica databases are on the
# same server, as bench/run.sh puts them). During each run the writers' wait events are
# sampled from pg_stat_activity every 10 ms; "CPU" is a sample with no wait event (the
# writer running or waiting for a core). The server's WAL bytes and flushes (pg_stat_wal: the whole server, the
# replicas' apply included) are divided by the writers' transactions.
#
#   eval "$(scripts/servers.sh env)"; bench/wait_events.sh [CONNINFO]
#
# CONNINFO (default $PGFANOUT_TEST_PG) must be a superuser. Needs the broker of
# scripts/servers.sh (PGFANOUT_TEST_AMQP, PGFANOUT_TEST_RABBITMQCTL) and the programs
# built in BENCH_BUILD_DIR (default build). BENCH_SECONDS (default 8) per run. Works in
# scratch databases of its own; at the end it stops what it started (by PID), drops the
# slot and the databases, and deletes its queues and exchange.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BENCH_BUILD_DIR:-$ROOT/build}/bin"
SECS="${BENCH_SECONDS:-8}"
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 3 ] || { echo "wait_events: BENCH_SECONDS must be at least 3" >&2; exit 2; }
AMQP="${PGFANOUT_TEST_AMQP:?run eval \"\$(scripts/servers.sh env)\" first}"
RABBITMQCTL="${PGFANOUT_TEST_RABBITMQCTL:?run eval \"\$(scripts/servers.sh env)\" first}"
for p in pgfanout-publisher pgfanout-listener; do
  [ -x "$BIN/$p" ] || { echo "wait_events: $BIN/$p is missing (build first)" >&2; exit 2; }
done

source "$ROOT/bench/scratch_db.sh"
PIDS=()
BENCH_PID=""  # pgbench, while a run lasts
REPLICA_DBS=()
NAME="pgfanout_waits_$$"
WORK="$(mktemp -d)"

stop_programs() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  trap '' INT TERM
  [ -z "$BENCH_PID" ] || kill -TERM "$BENCH_PID" 2>/dev/null || true
  stop_programs
  if [ -n "${DB_CONN:-}" ]; then
    # The slot pins WAL until dropped; its walsender ends after the publisher.
    for _ in $(seq 1 100); do
      [ "$(psql_base -d "$CONNINFO" -At -c "SELECT count(*) FROM pg_replication_slots WHERE database = '$DB' AND active")" = 0 ] && break
      sleep 0.1
    done
    psql_base -d "$CONNINFO" -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null 2>&1 || true
  fi
  for d in "${REPLICA_DBS[@]}"; do
    psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
  scratch_db_drop
  if [ -n "${DB:-}" ] && [ -n "$(psql_base -d "$CONNINFO" -At -c "SELECT slot_name FROM pg_replication_slots WHERE database = '$DB'" 2>/dev/null)" ]; then
    echo "wait_events: a replication slot of $DB is left; drop it with pg_drop_replication_slot" >&2
  fi
  broker_forget "$RABBITMQCTL" "$NAME" "${NAME}_1" "${NAME}_2"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "wait_events: stopped (signal)" >&2; exit 130' INT TERM

scratch_db_open "${1:-}" "$NAME"
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

SCRIPT="$WORK/update.sql"
printf '%s\n' '\set id random(1, 100000)' \
  "UPDATE t SET t = 'updated text', j = '{\"n\": 2}', ts = now() WHERE id = :id;" > "$SCRIPT"

wal() { psql_base -d "$CONNINFO" -At -c "SELECT wal_bytes || ' ' || wal_sync FROM pg_stat_wal"; }

run() {  # label
  local wal0 wal1 tps
  wal0="$(wal)"
  "$PGBIN/pgbench" -n -c 4 -j 2 -T "$SECS" -f "$SCRIPT" "$DB_CONN" > "$WORK/pgbench.txt" 2>&1 &
  BENCH_PID=$!
  sleep 1
  # One sample every 10 ms until a second before pgbench ends; the statistics snapshot is
  # cleared at each, so that writers that have ended are not counted.
  psql_base -d "$CONNINFO" -At -v db="$DB" -v secs="$((SECS - 2))" > "$WORK/waits.txt" <<'EOF'
CREATE TEMP TABLE s (w text);
SELECT format('DO $$ DECLARE until timestamptz := clock_timestamp() + interval ''%s s''; BEGIN WHILE clock_timestamp() < until LOOP PERFORM pg_stat_clear_snapshot(); INSERT INTO s SELECT coalesce(wait_event_type || '':'' || wait_event, ''CPU'') FROM pg_stat_activity WHERE datname = %L AND application_name = ''pgbench''; PERFORM pg_sleep(0.01); END LOOP; END $$', :secs, :'db') \gexec
SELECT rpad(w, 28) || lpad(round(100.0 * count(*) / sum(count(*)) OVER ())::text, 4) || ' %' FROM s GROUP BY w ORDER BY count(*) DESC LIMIT 8;
EOF
  if ! wait "$BENCH_PID"; then
    cat "$WORK/pgbench.txt" >&2
    echo "wait_events: pgbench failed" >&2
    exit 1
  fi
  BENCH_PID=""
  tps="$(sed -n 's/^tps = \([0-9]*\).*/\1/p' "$WORK/pgbench.txt" | head -1)"
  [ -n "$tps" ] && [ "$tps" -gt 0 ] || { cat "$WORK/pgbench.txt" >&2; echo "wait_events: no tps from pgbench" >&2; exit 1; }
  wal1="$(wal)"
  echo "$1: $tps tps; server WAL per writer transaction: $(awk -v a="$wal0" -v b="$wal1" -v n="$((tps * SECS))" \
    'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f bytes, %.2f flushes", (y[1] - x[1]) / n, (y[2] - x[2]) / n }')"
  echo "  the writers' wait-event samples:"
  sed 's/^/  /' "$WORK/waits.txt"
}

alive() {  # what, pid, log
  kill -0 "$2" 2>/dev/null || { cat "$3" >&2; echo "wait_events: the $1 stopped" >&2; exit 1; }
}

echo "bench/wait_events.sh, $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(bench_commit), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$SECS s of single-row UPDATEs per run, pgbench -c 4, PostgreSQL $(psql_base -d "$CONNINFO" -At -c 'SHOW server_version' | cut -d' ' -f1)"
run "logical capture, no publisher"
# The chain starts where the slot is now: the first run's changes are not shipped.
psql_base -d "$DB_CONN" -c "SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM pg_replication_slots WHERE database = current_database()" >/dev/null
"$BIN/pgfanout-publisher" --source "$DB_CONN" --amqp "$AMQP" --exchange "$NAME" --pack 100 > "$WORK/publisher.log" 2>&1 &
PUBLISHER=$!
PIDS+=("$PUBLISHER")
LISTENERS=()
for i in 1 2; do
  "$BIN/pgfanout-listener" --target "$(scratch_conninfo "$CONNINFO" "${DB}_replica$i")" --queue "${NAME}_$i" \
    --amqp "$AMQP" --exchange "$NAME" > "$WORK/listener$i.log" 2>&1 &
  LISTENERS+=($!)
  PIDS+=($!)
done
for i in 1 2; do
  for _ in $(seq 1 300); do
    grep -q "consuming from" "$WORK/listener$i.log" && break
    alive "listener $i" "${LISTENERS[$((i - 1))]}" "$WORK/listener$i.log"
    sleep 0.1
  done
  grep -q "consuming from" "$WORK/listener$i.log" || { echo "wait_events: listener $i did not start in 30 s" >&2; exit 1; }
done
for _ in $(seq 1 300); do
  grep -q "streaming replication slot" "$WORK/publisher.log" && break
  alive publisher "$PUBLISHER" "$WORK/publisher.log"
  sleep 0.1
done
run "logical capture, chain running"
# The chain carried the changes: a row written now reaches both replicas.
psql_base -d "$DB_CONN" -c "INSERT INTO t VALUES (-1, 'sentinel', NULL, now())" >/dev/null
for i in 1 2; do
  for _ in $(seq 1 600); do
    [ "$(psql_base -d "$(scratch_conninfo "$CONNINFO" "${DB}_replica$i")" -At -c "SELECT count(*) FROM t WHERE id = -1")" = 1 ] && break
    alive publisher "$PUBLISHER" "$WORK/publisher.log"
    sleep 0.1
  done
  [ "$(psql_base -d "$(scratch_conninfo "$CONNINFO" "${DB}_replica$i")" -At -c "SELECT count(*) FROM t WHERE id = -1")" = 1 ] \
    || { echo "wait_events: replica $i did not catch up in 60 s" >&2; exit 1; }
done
echo "both replicas caught up after the chain run"
