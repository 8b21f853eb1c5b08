#!/usr/bin/env bash
# The listener's --snapshot against PostgreSQL's own initial copy, in one run on the same
# server: pgbench scale 10 (1,000,000 pgbench_accounts rows) on a primary, copied into an
# empty replica database by `pgfanout-listener --snapshot`, and into another by a native
# subscription (CREATE SUBSCRIPTION ... WITH (copy_data = true)). Times are wall clock,
# polled every 0.1 s: for the listener from its start to its log's "snapshot: 1 tables"
# (rows copied and committed), for the subscription from CREATE SUBSCRIPTION until
# pg_subscription_rel says 'r' (ready) for the table. Each round copies into fresh
# databases, after a pause (see PAUSE); the medians are compared.
#
#   bench/snapshot.sh                 (servers from scripts/servers.sh: eval "$(scripts/servers.sh env)")
#
# Needs PGFANOUT_TEST_PG (a superuser: CREATE SUBSCRIPTION; the server runs with
# wal_level = logical) and PGFANOUT_TEST_AMQP. BENCH_SCALE (default 10), BENCH_ROUNDS
# (default 5), BENCH_WORKERS (--snapshot-workers; default: the listener's), BENCH_BIN
# (default build/bin), BENCH_TIMEOUT seconds per copy (600).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCALE="${BENCH_SCALE:-10}"
ROUNDS="${BENCH_ROUNDS:-5}"
BIN="${BENCH_BIN:-$ROOT/build/bin}"
TIMEOUT="${BENCH_TIMEOUT:-600}"
: "${PGFANOUT_TEST_AMQP:?run eval \"\$(scripts/servers.sh env)\" first}"
source "$ROOT/bench/scratch_db.sh"

NAME="bench_snap_$$"
LOGS="$(mktemp -d /tmp/pgfanout-snapshot.XXXXXX)"
REPLICAS=()
SUB_CONNS=()
LISTENER=""

cleanup() {
  [ -z "$LISTENER" ] || { kill "$LISTENER" 2>/dev/null || true; wait "$LISTENER" 2>/dev/null || true; }
  for s in "${SUB_CONNS[@]}"; do drop_subscription "${s%|*}" "${s#*|}"; done
  for db in "${REPLICAS[@]}"; do
    psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  scratch_db_drop
}
trap cleanup EXIT

scratch_db_open "" "$NAME"
"$PGBIN/pgbench" -i -q -s "$SCALE" -I dtgvp "$DB_CONN" >/dev/null 2>&1
# The replicas' table, taken before track() adds the capture's triggers to it.
SCHEMA_SQL="$("$PGBIN/pg_dump" -s -t public.pgbench_accounts "$DB_CONN")"
psql_base -d "$DB_CONN" -c "SELECT pgfanout.track('public.pgbench_accounts')" \
  -c "CREATE PUBLICATION ${NAME}_pub FOR TABLE public.pgbench_accounts" >/dev/null
ROWS=$(psql_base -d "$DB_CONN" -Atc "SELECT count(*) FROM pgbench_accounts")
WORKERS_FLAG=()
[ -z "${BENCH_WORKERS:-}" ] || WORKERS_FLAG=(--snapshot-workers "$BENCH_WORKERS")

new_replica() {  # REPLICA_CONN: a fresh database with the table, empty
  local db="${NAME}_r$1"
  psql_base -d "$CONNINFO" -c "CREATE DATABASE $db" >/dev/null
  REPLICAS+=("$db")
  REPLICA_CONN="$(scratch_conninfo "$CONNINFO" "$db")"
  psql_base -d "$REPLICA_CONN" <<<"$SCHEMA_SQL" >/dev/null
}

now() { date +%s.%N; }
timed_out() { (( $(echo "$(now) - $1 > $TIMEOUT" | bc) )); }

snapshot_once() {  # SECONDS_TAKEN
  new_replica "s$1"
  local log="$LOGS/listener-$1.log" start end got
  start=$(now)
  "$BIN/pgfanout-listener" --target "$REPLICA_CONN" --queue "${NAME}_$1" --amqp "$PGFANOUT_TEST_AMQP" \
    --exchange "$NAME" --tables public.pgbench_accounts --snapshot --source "$DB_CONN" \
    "${WORKERS_FLAG[@]}" >"$log" 2>&1 &
  LISTENER=$!
  until grep -q "snapshot: 1 tables" "$log"; do
    kill -0 "$LISTENER" 2>/dev/null || { cat "$log" >&2; exit 1; }
    ! timed_out "$start" || { echo "the snapshot timed out" >&2; exit 1; }
    sleep 0.1
  done
  end=$(now)
  kill "$LISTENER"; wait "$LISTENER" 2>/dev/null || true; LISTENER=""
  got=$(psql_base -d "$REPLICA_CONN" -Atc "SELECT count(*) FROM pgbench_accounts")
  [ "$got" = "$ROWS" ] || { echo "the snapshot copied $got of $ROWS rows" >&2; exit 1; }
  SECONDS_TAKEN=$(echo "$end - $start" | bc)
}

# A subscription to the same cluster cannot create its slot in CREATE SUBSCRIPTION (it
# would wait for its own transaction): the slot is made first, outside the timing; the
# table's copy makes its own temporary slot, as it always does.
native_once() {  # SECONDS_TAKEN
  new_replica "n$1"
  local sub="${NAME}_sub$1" start end got
  psql_base -d "$DB_CONN" -c "SELECT pg_create_logical_replication_slot('$sub', 'pgoutput')" >/dev/null
  SUB_CONNS+=("$REPLICA_CONN|$sub")
  start=$(now)
  psql_base -d "$REPLICA_CONN" -c "CREATE SUBSCRIPTION $sub CONNECTION '$DB_CONN' PUBLICATION ${NAME}_pub WITH (copy_data = true, create_slot = false, slot_name = '$sub')" >/dev/null 2>&1
  until [ "$(psql_base -d "$REPLICA_CONN" -Atc "SELECT srsubstate FROM pg_subscription_rel WHERE srrelid = 'public.pgbench_accounts'::regclass")" = r ]; do
    ! timed_out "$start" || { echo "the subscription's copy timed out" >&2; exit 1; }
    sleep 0.1
  done
  end=$(now)
  got=$(psql_base -d "$REPLICA_CONN" -Atc "SELECT count(*) FROM pgbench_accounts")
  [ "$got" = "$ROWS" ] || { echo "the subscription copied $got of $ROWS rows" >&2; exit 1; }
  drop_subscription "$REPLICA_CONN" "$sub"
  SECONDS_TAKEN=$(echo "$end - $start" | bc)
}

drop_subscription() {
  psql_base -d "$1" -c "ALTER SUBSCRIPTION $2 DISABLE" -c "ALTER SUBSCRIPTION $2 SET (slot_name = NONE)" \
    -c "DROP SUBSCRIPTION $2" >/dev/null 2>&1 || true
  psql_base -d "$DB_CONN" -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$2'" >/dev/null 2>&1 || true
}

# The logical replication launcher starts no worker within wal_retrieve_retry_interval of
# its last start: a subscription made sooner would wait for it, and the wait is no part of
# the copy. Every copy (either kind) starts after that pause.
PAUSE=$(psql_base -d "$DB_CONN" -Atc "SELECT ceil(setting::numeric / 1000) + 1 FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'")

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "pgfanout $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'): pgbench scale $SCALE, $ROWS pgbench_accounts rows ($(psql_base -d "$DB_CONN" -Atc "SELECT pg_size_pretty(pg_relation_size('pgbench_accounts'))")), $ROUNDS rounds; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %22s %16s %26s\n' round "--snapshot, s" "rows/s" "native copy_data, s"
SNAP=(); NATIVE=()
for round in $(seq 1 "$ROUNDS"); do
  # Alternating which goes first, so that neither always meets a warmer cache.
  if (( round % 2 )); then
    sleep "$PAUSE"; snapshot_once "$round"; s=$SECONDS_TAKEN; sleep "$PAUSE"; native_once "$round"; n=$SECONDS_TAKEN
  else
    sleep "$PAUSE"; native_once "$round"; n=$SECONDS_TAKEN; sleep "$PAUSE"; snapshot_once "$round"; s=$SECONDS_TAKEN
  fi
  SNAP+=("$s"); NATIVE+=("$n")
  printf '%-6s %22.2f %16.0f %26.2f\n' "$round" "$s" "$(echo "$ROWS / $s" | bc -l)" "$n"
done
s=$(median "${SNAP[@]}"); n=$(median "${NATIVE[@]}")
workers=$(sed -n 's/.*consistent as of one source snapshot (\([0-9]*\) workers).*/\1/p' "$LOGS"/listener-1.log)
printf '%-6s %22.2f %16.0f %26.2f\n' median "$s" "$(echo "$ROWS / $s" | bc -l)" "$n"
echo "--snapshot with $workers workers: $(printf '%.2f' "$(echo "$n / $s" | bc -l)")x native's speed (native time / snapshot time); load after $(cut -d' ' -f1-3 /proc/loadavg)"
