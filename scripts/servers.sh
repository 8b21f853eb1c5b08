#!/usr/bin/env bash
# Throwaway local servers for the demo, the tests and the bench: one PostgreSQL 15 cluster
# and one RabbitMQ node, both on 127.0.0.1 only, with all state in one run directory.
#
#   scripts/servers.sh start   start both (if not running), wait until they answer, print env
#   scripts/servers.sh stop    stop both, by the PIDs recorded at start, and delete their state
#   scripts/servers.sh env     print the environment (source it: eval "$(scripts/servers.sh env)")
#
# PGFANOUT_RUN_DIR chooses the run directory (default: .run in the checkout).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${PGFANOUT_RUN_DIR:-$ROOT/.run}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
RABBIT_SBIN=/usr/lib/rabbitmq/bin
WAIT_SECONDS="${PGFANOUT_SERVER_WAIT:-90}"

log() { echo "servers: $*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

write_tools() {
  # Wrappers that carry the node's environment, for tests and people alike.
  cat >"$RUN/rabbitmqctl" <<EOT
#!/usr/bin/env bash
set -a; . "$RUN/rabbit/env"; set +a
exec $RABBIT_SBIN/rabbitmqctl -n "\$RABBITMQ_NODENAME" "\$@"
EOT
  cat >"$RUN/pg_ctl" <<EOT
#!/usr/bin/env bash
if [ "\$(id -u)" -eq 0 ]; then
  exec runuser -u postgres -- $PGBIN/pg_ctl -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" "\$@"
fi
exec $PGBIN/pg_ctl -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" "\$@"
EOT
  chmod +x "$RUN/rabbitmqctl" "$RUN/pg_ctl"
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_pg() {
  if [ -f "$RUN/pg.env" ]; then
    . "$RUN/pg.env"
    if as_postgres "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
      log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
      return
    fi
  fi
  # Default ports sit below Linux's ephemeral range (32768-60999): a client reconnecting
  # to a port in that range while the server is down can be handed the same port as its
  # own source port, connect to itself, and keep the server from binding it again.
  PG_PORT=$(pick_port "${PGFANOUT_PG_PORT:-25432}")
  # The data directory lives outside the checkout so that the postgres user can own it
  # whatever the checkout's permissions are.
  PGDATA_DIR=$(mktemp -d /tmp/pgfanout-pg.XXXXXX)
  chmod 755 "$PGDATA_DIR"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA_DIR"
  as_postgres "$PGBIN/initdb" -D "$PGDATA_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$RUN/initdb.log" 2>&1 \
    || { cat "$RUN/initdb.log" >&2; exit 1; }
  cat >>"$PGDATA_DIR/data/postgresql.conf" <<EOT
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDATA_DIR'
max_connections = 200
shared_buffers = 256MB
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_logical_replication_workers = 16
max_worker_processes = 32
EOT
  PGDATA_DIR="$PGDATA_DIR/data"
  printf 'PGDATA_DIR=%q\nPG_PORT=%q\n' "$PGDATA_DIR" "$PG_PORT" >"$RUN/pg.env"
  as_postgres "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t "$WAIT_SECONDS" start >/dev/null \
    || { cat "$PGDATA_DIR/server.log" >&2; exit 1; }
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
    ((SECONDS < deadline)) || { log "PostgreSQL did not answer in ${WAIT_SECONDS}s"; exit 1; }
    sleep 0.2
  done
  log "PostgreSQL 15 ready on 127.0.0.1:$PG_PORT (data $PGDATA_DIR)"
}

start_rabbit() {
  if [ -f "$RUN/rabbit/env" ]; then
    set -a; . "$RUN/rabbit/env"; set +a
    if "$RABBIT_SBIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q status >/dev/null 2>&1; then
      log "RabbitMQ already running on 127.0.0.1:$RABBITMQ_NODE_PORT"
      return
    fi
  fi
  mkdir -p "$RUN/rabbit"
  local port dist
  port=$(pick_port "${PGFANOUT_AMQP_PORT:-25672}")
  dist=$(pick_port $((port - 1000)))
  cat >"$RUN/rabbit/env" <<EOT
HOME=$RUN/rabbit
RABBITMQ_NODENAME=pgfanout$port@localhost
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$port
RABBITMQ_DIST_PORT=$dist
ERL_EPMD_ADDRESS=127.0.0.1
RABBITMQ_MNESIA_BASE=$RUN/rabbit/mnesia
RABBITMQ_LOG_BASE=$RUN/rabbit/log
RABBITMQ_PID_FILE=$RUN/rabbit/rabbit.pid
RABBITMQ_ENABLED_PLUGINS_FILE=$RUN/rabbit/enabled_plugins
RABBITMQ_CONFIG_FILE=$RUN/rabbit/rabbitmq
RABBITMQ_CONF_ENV_FILE=$RUN/rabbit/rabbitmq-env.conf
EOT
  # The shovel replays dead letters as the README shows (tests/integration/fencing_itest.cpp).
  echo '[rabbitmq_shovel].' >"$RUN/rabbit/enabled_plugins"
  : >"$RUN/rabbit/rabbitmq-env.conf"
  cat >"$RUN/rabbit/rabbitmq.conf" <<EOT
listeners.tcp.default = 127.0.0.1:$port
loopback_users.guest = true
log.file.level = warning
EOT
  set -a; . "$RUN/rabbit/env"; set +a
  "$RABBIT_SBIN/rabbitmq-server" -detached >"$RUN/rabbit/start.log" 2>&1
  # await_startup fails at once until the node has registered with epmd, so poll it.
  local deadline=$((SECONDS + WAIT_SECONDS))
  until timeout 30 "$RABBIT_SBIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q await_startup >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "RabbitMQ did not start in ${WAIT_SECONDS}s"; cat "$RUN/rabbit/start.log" >&2
      tail -n 50 "$RUN"/rabbit/log/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
  log "RabbitMQ ready on 127.0.0.1:$port (node $RABBITMQ_NODENAME)"
}

print_env() {
  . "$RUN/pg.env"
  local amqp_port
  amqp_port=$(sed -n 's/^RABBITMQ_NODE_PORT=//p' "$RUN/rabbit/env")
  cat <<EOT
export PGFANOUT_RUN_DIR='$RUN'
export PGFANOUT_TEST_PG='host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres'
export PGFANOUT_TEST_PGPORT='$PG_PORT'
export PGFANOUT_TEST_AMQP='amqp://guest:guest@127.0.0.1:$amqp_port/%2f'
export PGFANOUT_TEST_RABBITMQCTL='$RUN/rabbitmqctl'
export PGFANOUT_TEST_PG_CTL='$RUN/pg_ctl'
export PGHOST=127.0.0.1 PGPORT='$PG_PORT' PGUSER=postgres
EOT
}

stop_all() {
  if [ -f "$RUN/rabbit/env" ]; then
    set -a; . "$RUN/rabbit/env"; set +a
    local pid=""
    [ -f "$RABBITMQ_PID_FILE" ] && pid=$(cat "$RABBITMQ_PID_FILE")
    timeout 30 "$RABBIT_SBIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q stop >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    log "RabbitMQ stopped"
  fi
  if [ -f "$RUN/pg.env" ]; then
    . "$RUN/pg.env"
    as_postgres "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$(dirname "$PGDATA_DIR")"
    log "PostgreSQL stopped"
  fi
  rm -rf "$RUN"
}

case "${1:-}" in
  start)
    mkdir -p "$RUN"
    start_pg
    start_rabbit
    . "$RUN/pg.env"
    write_tools
    print_env | tee "$RUN/env"
    ;;
  stop) stop_all ;;
  env) cat "$RUN/env" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
