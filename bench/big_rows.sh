#!/usr/bin/env bash
# Peak RSS (VmHWM) of pgfanout-publisher and pgfanout-listener while big rows flow through
# a broker that takes no message over 16 MiB (RabbitMQ 3.13/4.x's default
# max_message_size): each row travels in chunks. ROWS rows of ROW_MB MB are written to the
# primary first (a backlog: the publisher's reads are as full as they get), then the
# publisher starts; the peaks are printed each time another quarter of the rows has
# reached the replica, so a peak that grew with the number of rows would show. Two kinds
# of rows: random hex (PostgreSQL stores it as it is) and repeated text (stored
# compressed, a hundredth of its size).
#
#   bench/big_rows.sh                 (servers from scripts/servers.sh: eval "$(scripts/servers.sh env)")
#
# Needs PGFANOUT_TEST_PG, PGFANOUT_TEST_AMQP and PGFANOUT_TEST_RABBITMQCTL (as printed by
# scripts/servers.sh); sets the broker's max_message_size to 16 MiB and puts it back at the
# end. BENCH_ROWS (default 20), BENCH_ROW_MB (default 20), BENCH_KINDS (default
# "random repeated"), BENCH_BIN (default build/bin), BENCH_TIMEOUT seconds per kind (600).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${BENCH_ROWS:-20}"
ROW_MB="${BENCH_ROW_MB:-20}"
KINDS="${BENCH_KINDS:-random repeated}"
BIN="${BENCH_BIN:-$ROOT/build/bin}"
TIMEOUT="${BENCH_TIMEOUT:-600}"
: "${PGFANOUT_TEST_AMQP:?run eval \"\$(scripts/servers.sh env)\" first}"
: "${PGFANOUT_TEST_RABBITMQCTL:?run eval \"\$(scripts/servers.sh env)\" first}"
source "$ROOT/bench/scratch_db.sh"

RABBITMQCTL="$PGFANOUT_TEST_RABBITMQCTL"
PREVIOUS_LIMIT="$("$RABBITMQCTL" eval 'application:get_env(rabbit, max_message_size).' | sed -n 's/^{ok,\([0-9]*\)}$/\1/p')"
LOGS="$(mktemp -d /tmp/pgfanout-big-rows.XXXXXX)"
NAME="bench_big_$$"
PIDS=()
REPLICA_DB=""

stop_programs() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_programs
  broker_forget "$RABBITMQCTL" "$NAME" "$NAME"
  if [ -n "$PREVIOUS_LIMIT" ]; then
    "$RABBITMQCTL" eval "application:set_env(rabbit, max_message_size, $PREVIOUS_LIMIT)." >/dev/null
  else
    "$RABBITMQCTL" eval 'application:unset_env(rabbit, max_message_size).' >/dev/null
  fi
  [ -z "$REPLICA_DB" ] || psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $REPLICA_DB WITH (FORCE)" >/dev/null 2>&1 || true
  scratch_db_drop
}
trap cleanup EXIT

"$RABBITMQCTL" eval 'application:set_env(rabbit, max_message_size, 16777216).' >/dev/null
scratch_db_open "" "$NAME"
REPLICA_DB="${NAME}_replica"
psql_base -d "$CONNINFO" -c "CREATE DATABASE $REPLICA_DB" >/dev/null
REPLICA_CONN="$(scratch_conninfo "$CONNINFO" "$REPLICA_DB")"
psql_base -d "$DB_CONN" -c "CREATE TABLE big (id int PRIMARY KEY, payload text)" -c "SELECT pgfanout.track('big')" >/dev/null
psql_base -d "$REPLICA_CONN" -c "CREATE TABLE big (id int PRIMARY KEY, payload text)" >/dev/null

hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
row_sql() {
  local bytes=$((ROW_MB * 1000000))
  if [ "$1" = random ]; then
    echo "(SELECT left(string_agg(md5(g::text || random()::text), ''), $bytes) FROM generate_series(1, $((bytes / 32 + 1))) AS g)"
  else
    echo "repeat('x', $bytes - 10) || lpad(i::text, 10, '0')"
  fi
}

echo "pgfanout $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'): $ROWS rows of $ROW_MB MB per kind, broker max_message_size 16 MiB, publisher --pack 10 (default --max-message-bytes 16 MiB); load $(cut -d' ' -f1-3 /proc/loadavg)"
first=1
for kind in $KINDS; do
  last=$((first + ROWS - 1))
  "$BIN/pgfanout-listener" --target "$REPLICA_CONN" --queue "$NAME" --amqp "$PGFANOUT_TEST_AMQP" \
    --exchange "$NAME" >"$LOGS/listener-$kind.log" 2>&1 &
  PIDS+=($!)
  LISTENER=$!
  until grep -q "consuming from" "$LOGS/listener-$kind.log"; do
    kill -0 "$LISTENER" || { cat "$LOGS/listener-$kind.log" >&2; exit 1; }
    sleep 0.2
  done
  for i in $(seq "$first" "$last"); do
    psql_base -d "$DB_CONN" -c "INSERT INTO big SELECT i, $(row_sql "$kind") FROM (VALUES ($i)) AS v(i)" >/dev/null
  done
  compressed=$(psql_base -d "$DB_CONN" -Atc "SELECT count(*) FROM pgfanout.changes WHERE pg_column_compression(new_row) IS NOT NULL")
  "$BIN/pgfanout-publisher" --source "$DB_CONN" --amqp "$PGFANOUT_TEST_AMQP" --exchange "$NAME" \
    --pack 10 --log-level debug >"$LOGS/publisher-$kind.log" 2>&1 &
  PIDS+=($!)
  PUBLISHER=$!
  echo
  echo "$kind rows ($compressed of $ROWS stored compressed in the outbox)"
  printf '%-22s %24s %24s\n' "rows on the replica" "publisher VmHWM, MiB" "listener VmHWM, MiB"
  started=$SECONDS
  next=1
  while :; do
    applied=$(psql_base -d "$REPLICA_CONN" -Atc "SELECT count(*) FROM big WHERE id BETWEEN $first AND $last")
    while [ "$next" -le 4 ] && [ "$applied" -ge $((ROWS * next / 4)) ]; do
      printf '%-22s %24s %24s\n' "$applied of $ROWS" "$(hwm_mib "$PUBLISHER")" "$(hwm_mib "$LISTENER")"
      next=$((next + 1))
    done
    [ "$applied" -lt "$ROWS" ] || break
    if ((SECONDS - started > TIMEOUT)); then
      echo "timed out after $TIMEOUT s with $applied of $ROWS rows on the replica" >&2
      tail -5 "$LOGS/publisher-$kind.log" "$LOGS/listener-$kind.log" >&2
      exit 1
    fi
    kill -0 "$PUBLISHER" && kill -0 "$LISTENER" || { echo "a program exited; logs in $LOGS" >&2; exit 1; }
    sleep 0.5
  done
  secs=$((SECONDS - started))
  same=$(psql_base -d "$DB_CONN" -Atc "SELECT md5(string_agg(md5(payload), '' ORDER BY id)) FROM big WHERE id BETWEEN $first AND $last")
  got=$(psql_base -d "$REPLICA_CONN" -Atc "SELECT md5(string_agg(md5(payload), '' ORDER BY id)) FROM big WHERE id BETWEEN $first AND $last")
  chunked=$(grep -c "chunks" "$LOGS/publisher-$kind.log" || true)
  dead=$("$RABBITMQCTL" -q list_queues name messages | awk -v q="$NAME.dead" '$1 == q { print $2 }')
  echo "all $ROWS rows in ${secs} s; replica equals primary: $([ "$same" = "$got" ] && echo yes || echo NO); changes sent in chunks: $chunked; dead letters: ${dead:-?}"
  stop_programs
  first=$((last + 1))
done
