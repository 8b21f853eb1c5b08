#!/usr/bin/env bash
# The demo: one primary and two replica databases kept in step through RabbitMQ.
#
#   scripts/demo.sh [--duration N] [--rate TPS] [--capture trigger|logical]
#
# Installs what is missing (Debian 12), builds, starts the local throwaway servers
# (scripts/servers.sh), creates the primary pgfanout_demo and the replicas
# pgfanout_replica_a and pgfanout_replica_b afresh, tracks two tables, runs one publisher
# and two listeners, and writes a continuous stream of inserts, updates and deletes on the
# primary. Every 2 s it prints row counts and a checksum of every database, and the last
# log line of the writer, the publisher and the listeners (full logs in .run/demo/).
#
# Ctrl-C (or the end of --duration N seconds) stops the writer, waits for the replicas to
# catch up, prints the final comparison, stops the processes and the servers it started.
# Exits 0 only if both replicas equal the primary at the end. --capture logical switches
# the primary to the logical capture (README, "Capture modes") after seeding it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${PGFANOUT_BUILD_DIR:-$ROOT/build}"
RUN="${PGFANOUT_RUN_DIR:-$ROOT/.run}"
export PGFANOUT_RUN_DIR="$RUN"
LOGS="$RUN/demo"
DEMO="$ROOT/docker/demo"
CATCH_UP_SECONDS=60

duration=0
rate=200
capture=trigger
usage() { echo "usage: scripts/demo.sh [--duration SECONDS] [--rate TRANSACTIONS_PER_SECOND] [--capture trigger|logical]" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --duration) [[ "${2:-}" =~ ^[0-9]+$ ]] || usage; duration=$2; shift 2 ;;
    --duration=*) duration=${1#*=}; [[ "$duration" =~ ^[0-9]+$ ]] || usage; shift ;;
    --rate) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || usage; rate=$2; shift 2 ;;
    --rate=*) rate=${1#*=}; [[ "$rate" =~ ^[1-9][0-9]*$ ]] || usage; shift ;;
    --capture) [[ "${2:-}" =~ ^(trigger|logical)$ ]] || usage; capture=$2; shift 2 ;;
    --capture=*) capture=${1#*=}; [[ "$capture" =~ ^(trigger|logical)$ ]] || usage; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '%sdemo:%s %s\n' "$BOLD" "$PLAIN" "$*"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Cleanup: runs on every exit. Stops what this run started, by PID, then the servers if
# this run started them (the logs are kept: servers.sh stop deletes the run directory).
declare -A PIDS=()
started_servers=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local name
  for name in writer publisher listener_a listener_b; do
    [ -z "${PIDS[$name]:-}" ] || stop_pid "$name" "${PIDS[$name]}"
    rm -f "$LOGS/$name.pid"
  done
  if ((started_servers)); then
    local keep
    keep=$(mktemp -d /tmp/pgfanout-demo-logs.XXXXXX)
    [ -d "$LOGS" ] && cp -a "$LOGS/." "$keep/"
    bash scripts/servers.sh stop || true
    mkdir -p "$LOGS" && cp -a "$keep/." "$LOGS/" && rm -rf "$keep"
  fi
  [ -d "$LOGS" ] && say "logs are in ${LOGS#"$ROOT/"}/"
  exit "$rc"
}

stop_pid() {
  local name=$1 pid=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "$name (pid $pid) did not stop in 10 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

servers_running() {
  [ -x "$RUN/pg_ctl" ] && "$RUN/pg_ctl" status >/dev/null 2>&1 &&
    [ -x "$RUN/rabbitmqctl" ] && timeout 30 "$RUN/rabbitmqctl" -q status >/dev/null 2>&1
}

# A process of the demo, in its own session so that the terminal's Ctrl-C reaches only
# this script, which then stops the writer first and the replication last.
start_bg() {
  local name=$1
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  PIDS[$name]=$!
  echo "${PIDS[$name]}" >"$LOGS/$name.pid"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
say "installing what is missing and building"
bash scripts/deps.sh
bash scripts/build.sh --target pgfanout-publisher pgfanout-listener
for bin in pgfanout-publisher pgfanout-listener; do
  [ -x "$BUILD/bin/$bin" ] || fail "$BUILD/bin/$bin was not built"
done

servers_running || started_servers=1
env_lines=$(bash scripts/servers.sh start) || fail "the local PostgreSQL and RabbitMQ did not start (see above)"
eval "$env_lines"
mkdir -p "$LOGS"

# Processes left over from an interrupted run would write into the fresh databases.
for pidfile in "$LOGS"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$(ps -o comm= -p "$pid" 2>/dev/null)" in
    pgfanout-* | pgbench) stop_pid "$(basename "$pidfile" .pid) of a previous run" "$pid" ;;
  esac
  rm -f "$pidfile"
done

PRIMARY_DB=pgfanout_demo
REPLICA_DBS=(pgfanout_replica_a pgfanout_replica_b)
QUEUES=(demo.replica_a demo.replica_b)
EXCHANGE=pgfanout_demo
conninfo() { echo "host=127.0.0.1 port=$PGPORT user=postgres dbname=$1"; }
psql_db() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$1" "${@:2}"; }

say "creating $PRIMARY_DB and ${REPLICA_DBS[*]} afresh"
for db in "$PRIMARY_DB" "${REPLICA_DBS[@]}"; do
  psql_db postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  psql_db "$db" -f "$DEMO/tables.sql"
done
psql_db "$PRIMARY_DB" -f sql/install.sql
psql_db "$PRIMARY_DB" -f "$DEMO/track.sql" >/dev/null
psql_db "$PRIMARY_DB" -f "$DEMO/seed.sql"
if [ "$capture" = logical ]; then
  say "switching $PRIMARY_DB to the logical capture (the seeded changes stay in the outbox and go first)"
  psql_db "$PRIMARY_DB" -c "SELECT pgfanout.set_capture('logical')" >/dev/null
fi
# Queues of an earlier run may still hold its messages.
for q in "${QUEUES[@]}"; do
  "$RUN/rabbitmqctl" -q delete_queue "$q" >/dev/null 2>&1 || true
  "$RUN/rabbitmqctl" -q delete_queue "$q.dead" >/dev/null 2>&1 || true
done

# The listeners first: the publisher's first message must find their queues bound, or the
# broker would drop it as unroutable.
export PGFANOUT_AMQP_URL="$PGFANOUT_TEST_AMQP" PGFANOUT_EXCHANGE="$EXCHANGE"
for i in 0 1; do
  name=listener_${REPLICA_DBS[$i]#pgfanout_replica_}
  say "starting $name: queue ${QUEUES[$i]} -> ${REPLICA_DBS[$i]}"
  start_bg "$name" "$BUILD/bin/pgfanout-listener" --target "$(conninfo "${REPLICA_DBS[$i]}")" --queue "${QUEUES[$i]}"
done
deadline=$((SECONDS + 60))
bound() {
  local bindings q
  bindings=$("$RUN/rabbitmqctl" -q list_bindings source_name destination_name 2>/dev/null) || return 1
  for q in "${QUEUES[@]}"; do grep -q "^$EXCHANGE[[:space:]]$q\$" <<<"$bindings" || return 1; done
}
until bound; do
  for name in listener_a listener_b; do
    kill -0 "${PIDS[$name]}" 2>/dev/null || { tail -n 20 "$LOGS/$name.log" >&2; fail "$name exited"; }
  done
  ((SECONDS < deadline)) || fail "the queues ${QUEUES[*]} were not bound to exchange $EXCHANGE within 60 s (see $LOGS/)"
  sleep 0.5
done

pending=$(psql -X -A -t -d "$PRIMARY_DB" -c "SELECT count(*) FROM pgfanout.changes")
say "starting the publisher on $PRIMARY_DB ($pending seeded changes wait in its outbox)"
start_bg publisher "$BUILD/bin/pgfanout-publisher" --source "$(conninfo "$PRIMARY_DB")"
say "starting the writer: about $rate transactions/s of inserts, updates and deletes"
start_bg writer pgbench -n -c 2 -j 1 -R "$rate" -T "$((duration > 0 ? duration + 5 : 31536000))" \
  --max-tries=10 -P 10 -f "$DEMO/writer.pgbench" "$PRIMARY_DB"

# ---------------------------------------------------------------------------------------
# One consistent snapshot per database: row counts and an md5 over all rows in key order.
read -r -d '' STATE_SQL <<'SQL' || true
SELECT (SELECT count(*) FROM public.accounts),
       (SELECT count(*) FROM shop."Order Items"),
       md5(coalesce((SELECT string_agg(a::text, E'\n' ORDER BY a.id) FROM public.accounts a), '')
           || E'\f' ||
           coalesce((SELECT string_agg(i::text, E'\n' ORDER BY i.order_id, i.line)
                     FROM shop."Order Items" i), ''))
SQL
state() { psql -X -A -t -q -F ' ' -d "$1" -c "$STATE_SQL" 2>/dev/null || echo "? ? unavailable"; }

declare -A STATE=()
# The replicas first: a replica read after the primary could show changes the primary's
# earlier snapshot had not seen yet.
snapshot() {
  local db
  for db in "${REPLICA_DBS[@]}" "$PRIMARY_DB"; do STATE[$db]=$(state "$db"); done
}

# Argument: what to say of a replica that differs from the primary.
print_states() {
  local differs=$1 db label mark accounts items sum
  for db in "$PRIMARY_DB" "${REPLICA_DBS[@]}"; do
    read -r accounts items sum <<<"${STATE[$db]}"
    label=${db#pgfanout_}
    [ "$db" = "$PRIMARY_DB" ] && label=primary
    mark=""
    if [ "$db" != "$PRIMARY_DB" ]; then
      if [ "${STATE[$db]}" = "${STATE[$PRIMARY_DB]}" ]; then mark="= primary"; else mark=$differs; fi
    fi
    printf '  %-10s accounts %6s  "Order Items" %6s  md5 %s  %s\n' "$label" "$accounts" "$items" "${sum:0:12}" "$mark"
  done
}

print_logs() {
  local name line
  for name in writer publisher listener_a listener_b; do
    line=$(tail -n 1 "$LOGS/$name.log" 2>/dev/null | cut -c 1-140)
    [ -z "$line" ] || printf '  %-10s | %s\n' "$name" "$line"
  done
}

check_alive() {
  local name
  for name in publisher listener_a listener_b writer; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      wait "${PIDS[$name]}" 2>/dev/null && rc=0 || rc=$?
      [ "$name" = writer ] && ((duration > 0)) && ((rc == 0)) && continue
      tail -n 20 "$LOGS/$name.log" >&2
      fail "$name exited (status $rc)"
    fi
  done
}

stop_requested=0
trap 'stop_requested=1' INT TERM
if ((duration > 0)); then
  say "streaming for $duration s (Ctrl-C stops earlier)"
else
  say "streaming; press Ctrl-C to stop"
fi
started=$SECONDS
while ((!stop_requested)); do
  sleep 2 || true
  ((stop_requested)) && break
  check_alive
  snapshot
  printf '\n[%4ds]\n' $((SECONDS - started))
  print_states "catching up"
  print_logs
  ((duration > 0 && SECONDS - started >= duration)) && break
done

# ---------------------------------------------------------------------------------------
echo
say "stopping the writer; waiting up to ${CATCH_UP_SECONDS} s for the replicas to catch up"
stop_pid writer "${PIDS[writer]}"
unset 'PIDS[writer]'
stop_requested=0
deadline=$((SECONDS + CATCH_UP_SECONDS))
while :; do
  snapshot
  equal=1
  for db in "${REPLICA_DBS[@]}"; do
    [ "${STATE[$db]}" = "${STATE[$PRIMARY_DB]}" ] || equal=0
  done
  ((equal || stop_requested || SECONDS >= deadline)) && break
  sleep 1 || true
done
echo "final state:"
print_states DIFFERS
if ((equal)); then
  say "both replicas equal the primary"
else
  say "the replicas DIFFER from the primary (logs in ${LOGS#"$ROOT/"}/)"
fi
# cleanup stops the publisher and the listeners, and the servers if this run started them.
((equal)) || exit 1
exit 0
