#!/usr/bin/env bash
# A throwaway 3-node RabbitMQ cluster on 127.0.0.1 for the cluster tests (and for trying
# quorum queues by hand): three nodes with their own names, AMQP and distribution ports
# and data directories, one Erlang cookie, joined with `rabbitmqctl join_cluster`.
#
#   scripts/cluster.sh start   start the nodes (if not running), join them, print env
#   scripts/cluster.sh stop    stop the nodes, by the PIDs recorded at start, delete state
#   scripts/cluster.sh env     print the environment again
#
# State lives in $PGFANOUT_RUN_DIR/cluster (default .run/cluster in the checkout).
# PGFANOUT_CLUSTER_PORT is the first AMQP port tried (default 25800); each node takes the
# next free one. The printed PGFANOUT_TEST_CLUSTER_AMQP lists the three nodes' URLs,
# comma-separated, and PGFANOUT_TEST_CLUSTER_CTL a rabbitmqctl wrapper that takes the node
# number first: `$PGFANOUT_TEST_CLUSTER_CTL 2 stop_app`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${PGFANOUT_RUN_DIR:-$ROOT/.run}/cluster"
RABBIT_SBIN=/usr/lib/rabbitmq/bin
WAIT_SECONDS="${PGFANOUT_SERVER_WAIT:-120}"
NODES=(1 2 3)

log() { echo "cluster: $*" >&2; }
. "$ROOT/scripts/ports.sh"

node_env() { echo "$RUN/node$1/env"; }
ctl() {
  local n=$1
  shift
  (set -a; . "$(node_env "$n")"; set +a; exec "$RABBIT_SBIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@")
}
node_name() { sed -n 's/^RABBITMQ_NODENAME=//p' "$(node_env "$1")"; }
node_port() { sed -n 's/^RABBITMQ_NODE_PORT=//p' "$(node_env "$1")"; }

running() {
  local n
  for n in "${NODES[@]}"; do
    [ -f "$(node_env "$n")" ] && timeout 30 bash -c "$(declare -f ctl node_env); RUN='$RUN' RABBIT_SBIN='$RABBIT_SBIN'; ctl $n -q status" >/dev/null 2>&1 || return 1
  done
}

start_node() {
  local n=$1 port dist dir="$RUN/node$1"
  mkdir -p "$dir"
  port=$(pick_port "$2")
  dist=$(pick_port $((port - 2000)))
  # One HOME for all three: the Erlang cookie in it is what lets them (and rabbitmqctl)
  # talk to each other.
  cat >"$(node_env "$n")" <<EOT
HOME=$RUN
RABBITMQ_NODENAME=pgfanoutc$n-$port@localhost
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$port
RABBITMQ_DIST_PORT=$dist
ERL_EPMD_ADDRESS=127.0.0.1
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
RABBITMQ_MNESIA_BASE=$dir/mnesia
RABBITMQ_LOG_BASE=$dir/log
RABBITMQ_PID_FILE=$dir/rabbit.pid
RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
RABBITMQ_CONFIG_FILE=$dir/rabbitmq
RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
EOT
  echo '[].' >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  cat >"$dir/rabbitmq.conf" <<EOT
listeners.tcp.default = 127.0.0.1:$port
loopback_users.guest = true
log.file.level = warning
EOT
  (set -a; . "$(node_env "$n")"; set +a; "$RABBIT_SBIN/rabbitmq-server" -detached >"$dir/start.log" 2>&1)
  echo "$port"
}

await_node() {
  local n=$1 deadline=$((SECONDS + WAIT_SECONDS))
  until timeout 30 bash -c "$(declare -f ctl node_env); RUN='$RUN' RABBIT_SBIN='$RABBIT_SBIN'; ctl $n -q await_startup" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "node $n did not start in ${WAIT_SECONDS}s"
      cat "$RUN/node$n/start.log" >&2 || true
      tail -n 40 "$RUN"/node"$n"/log/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
}

write_tools() {
  cat >"$RUN/rabbitmqctl" <<EOT
#!/usr/bin/env bash
# rabbitmqctl for node N of the test cluster: rabbitmqctl N ARGS...
n=\$1; shift
set -a; . "$RUN/node\$n/env"; set +a
exec $RABBIT_SBIN/rabbitmqctl -n "\$RABBITMQ_NODENAME" "\$@"
EOT
  chmod +x "$RUN/rabbitmqctl"
}

print_env() {
  local urls="" n
  for n in "${NODES[@]}"; do
    urls+="${urls:+,}amqp://guest:guest@127.0.0.1:$(node_port "$n")/%2f"
  done
  cat <<EOT
export PGFANOUT_TEST_CLUSTER_AMQP='$urls'
export PGFANOUT_TEST_CLUSTER_CTL='$RUN/rabbitmqctl'
export PGFANOUT_TEST_CLUSTER_NODES='$(for n in "${NODES[@]}"; do printf '%s ' "$(node_name "$n")"; done | sed 's/ $//')'
EOT
}

start() {
  if running; then
    log "already running"
    print_env
    return
  fi
  stop_nodes
  mkdir -p "$RUN"
  umask 077
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN/.erlang.cookie"
  umask 022
  chmod 400 "$RUN/.erlang.cookie"
  local port=${PGFANOUT_CLUSTER_PORT:-25800} n
  for n in "${NODES[@]}"; do
    port=$(start_node "$n" "$port")
    port=$((port + 1))
  done
  for n in "${NODES[@]}"; do await_node "$n"; done
  local first
  first=$(node_name 1)
  for n in 2 3; do
    ctl "$n" -q stop_app >/dev/null
    ctl "$n" -q join_cluster "$first" >/dev/null
    ctl "$n" -q start_app >/dev/null
    await_node "$n"
  done
  local members
  members=$(ctl 1 -q cluster_status --formatter json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
  [ "$members" = 3 ] || { log "the cluster has $members running nodes, not 3"; exit 1; }
  write_tools
  log "3-node RabbitMQ cluster ready: $(print_env | sed -n "s/^export PGFANOUT_TEST_CLUSTER_NODES='\(.*\)'/\1/p")"
  print_env | tee "$RUN/env"
}

stop_nodes() {
  local n pid
  for n in "${NODES[@]}"; do
    [ -f "$(node_env "$n")" ] || continue
    pid=""
    [ -f "$RUN/node$n/rabbit.pid" ] && pid=$(cat "$RUN/node$n/rabbit.pid")
    timeout 30 bash -c "$(declare -f ctl node_env); RUN='$RUN' RABBIT_SBIN='$RABBIT_SBIN'; ctl $n -q stop" >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop_nodes; rm -rf "$RUN"; log "stopped" ;;
  env) cat "$RUN/env" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
