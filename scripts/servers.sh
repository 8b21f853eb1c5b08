#!/usr/bin/env bash
# Throwaway local servers for the demo, the tests and the bench: one PostgreSQL 15 cluster
# and one RabbitMQ node, both on 127.0.0.1 only, with all state in one run directory.
#
#   scripts/servers.sh start   start both (if not running), wait until they answer, print env
#   scripts/servers.sh stop    stop both, by the PIDs recorded at start, and delete their state
#   scripts/servers.sh env     print the environment (source it: eval "$(scripts/servers.sh env)")
#   scripts/servers.sh start-pg  start PostgreSQL alone (the bench's second instance for
#                              replicas, bench/run.sh --replicas-apart); `stop` stops it
#
# Both servers also speak TLS, with certificates made here by openssl (in $RUN/tls): a CA,
# a server certificate for the DNS name `localhost` (PostgreSQL with ssl = on on its one
# port; RabbitMQ on a TLS port of its own besides the plain one), a client certificate
# from the same CA, and an unrelated second CA (with a client certificate of its own) for
# tests that must be refused. PostgreSQL also asks members of the role
# pgfanout_password_users for a scram-sha-256 password.
#
# PGFANOUT_RUN_DIR chooses the run directory (default: .run in the checkout).
# PGFANOUT_RABBIT_ERL_ARGS adds Erlang VM arguments to RabbitMQ's (e.g. "+sbwt none", the
# bench's check of the broker's CPU; bench.py prints them in its header).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${PGFANOUT_RUN_DIR:-$ROOT/.run}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
RABBIT_SBIN=/usr/lib/rabbitmq/bin
WAIT_SECONDS="${PGFANOUT_SERVER_WAIT:-90}"

log() { echo "servers: $*" >&2; }

. "$ROOT/scripts/ports.sh"

write_tools() {
  # Wrappers that carry the node's environment, for tests and people alike.
  cat >"$RUN/rabbitmqctl" <<EOT
#!/usr/bin/env bash
set -a; . "$RUN/rabbit/env"; set +a
exec $RABBIT_SBIN/rabbitmqctl -n "\$RABBITMQ_NODENAME" "\$@"
EOT
  cat >"$RUN/pg_ctl" <<EOT
#!/usr/bin/env bash
# The server's own libpq connections (subscriptions) stay plain, as at start (see print_env).
export PGSSLMODE=disable
if [ "\$(id -u)" -eq 0 ]; then
  exec runuser -u postgres -- $PGBIN/pg_ctl -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" "\$@"
fi
exec $PGBIN/pg_ctl -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" "\$@"
EOT
  chmod +x "$RUN/rabbitmqctl" "$RUN/pg_ctl"
}

# Runs a command silently; shows what it printed only when it fails.
quiet() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
}

# Test keys: P-256, quick to make on a loaded machine.
NEW_KEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

# sign_cert DIR NAME CA COMMON_NAME EXTENSION...: DIR/NAME.key and DIR/NAME.pem, signed by
# DIR/CA.pem.
sign_cert() {
  local dir=$1 name=$2 signer=$3 cn=$4
  shift 4
  printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature "$@" \
    >"$dir/$name.ext"
  quiet openssl req -new "${NEW_KEY[@]}" -subj "/CN=$cn" -keyout "$dir/$name.key" -out "$dir/$name.csr"
  quiet openssl x509 -req -sha256 -days 825 -in "$dir/$name.csr" -CA "$dir/$signer.pem" \
    -CAkey "$dir/$signer.key" -CAcreateserial -CAserial "$dir/$signer.srl" \
    -extfile "$dir/$name.ext" -out "$dir/$name.pem"
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# The test CAs and certificates, made once per run directory (kept until `stop`).
make_certs() {
  local dir="$RUN/tls" tmp="$RUN/tls.tmp" ca
  [ -f "$dir/ca.pem" ] && return
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for ca in ca other-ca; do
    quiet openssl req -x509 "${NEW_KEY[@]}" -sha256 -days 3650 -subj "/CN=pgfanout test $ca" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout "$tmp/$ca.key" -out "$tmp/$ca.pem"
  done
  sign_cert "$tmp" server ca localhost subjectAltName=DNS:localhost extendedKeyUsage=serverAuth
  sign_cert "$tmp" client ca pgfanout-client extendedKeyUsage=clientAuth
  sign_cert "$tmp" other-client other-ca pgfanout-client extendedKeyUsage=clientAuth
  chmod 600 "$tmp"/*.key
  mv "$tmp" "$dir"
  log "test CAs and certificates in $dir"
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
ssl = on
EOT
  # The server's key must belong to the server's user and be readable by nobody else.
  install -m 644 "$RUN/tls/server.pem" "$PGDATA_DIR/data/server.crt"
  install -m 600 "$RUN/tls/server.key" "$PGDATA_DIR/data/server.key"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA_DIR/data/server.crt" "$PGDATA_DIR/data/server.key"
  # Members of pgfanout_password_users must give a password (tests of PGPASSFILE); the
  # first matching line wins, so this goes before initdb's trust lines.
  local hba="$PGDATA_DIR/data/pg_hba.conf"
  { echo '# scripts/servers.sh: members of pgfanout_password_users give a password'
    printf 'host all +pgfanout_password_users %s scram-sha-256\n' 127.0.0.1/32 ::1/128
    cat "$hba"; } >"$hba.new"
  mv "$hba.new" "$hba"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$hba"
  PGDATA_DIR="$PGDATA_DIR/data"
  printf 'PGDATA_DIR=%q\nPG_PORT=%q\n' "$PGDATA_DIR" "$PG_PORT" >"$RUN/pg.env"
  # PGSSLMODE: the server's own libpq connections (subscriptions) stay plain (see print_env).
  as_postgres env PGSSLMODE=disable "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t "$WAIT_SECONDS" start >/dev/null \
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
  local port tls_port dist
  port=$(pick_port "${PGFANOUT_AMQP_PORT:-25672}")
  tls_port=$(pick_port $((port + 1)))
  dist=$(pick_port $((port - 1000)))
  echo "$tls_port" >"$RUN/rabbit/tls_port"
  cat >"$RUN/rabbit/env" <<EOT
HOME=$RUN/rabbit
RABBITMQ_NODENAME=pgfanout$port@localhost
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
RABBITMQ_NODE_PORT=$port
RABBITMQ_DIST_PORT=$dist
ERL_EPMD_ADDRESS=127.0.0.1
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1} ${PGFANOUT_RABBIT_ERL_ARGS:-}'
PGFANOUT_RABBIT_ERL_ARGS='${PGFANOUT_RABBIT_ERL_ARGS:-}'
RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
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
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $RUN/tls/ca.pem
ssl_options.certfile = $RUN/tls/server.pem
ssl_options.keyfile = $RUN/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
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
  log "RabbitMQ ready on 127.0.0.1:$port, TLS on $tls_port (node $RABBITMQ_NODENAME)"
}

print_env() {
  . "$RUN/pg.env"
  local amqp_port amqps_port tls="$RUN/tls"
  amqp_port=$(sed -n 's/^RABBITMQ_NODE_PORT=//p' "$RUN/rabbit/env")
  amqps_port=$(cat "$RUN/rabbit/tls_port")
  # PGSSLMODE=disable keeps every connection that does not ask for TLS in its conninfo
  # (the suite, the demo, the bench, and the server's own subscriptions, started with it
  # too) on plain TCP as before ssl = on; the TLS tests ask with sslmode=verify-full.
  cat <<EOT
export PGFANOUT_RUN_DIR='$RUN'
export PGFANOUT_TEST_PG='host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres'
export PGFANOUT_TEST_PGPORT='$PG_PORT'
export PGFANOUT_TEST_AMQP='amqp://guest:guest@127.0.0.1:$amqp_port/%2f'
export PGFANOUT_TEST_RABBITMQCTL='$RUN/rabbitmqctl'
export PGFANOUT_TEST_PG_CTL='$RUN/pg_ctl'
export PGFANOUT_TEST_AMQPS_PORT='$amqps_port'
export PGFANOUT_TEST_AMQPS='amqps://guest:guest@localhost:$amqps_port/%2f?cacert=$tls/ca.pem'
export PGFANOUT_TEST_TLS_CA='$tls/ca.pem'
export PGFANOUT_TEST_TLS_OTHER_CA='$tls/other-ca.pem'
export PGFANOUT_TEST_TLS_CLIENT_CERT='$tls/client.pem' PGFANOUT_TEST_TLS_CLIENT_KEY='$tls/client.key'
export PGFANOUT_TEST_TLS_OTHER_CLIENT_CERT='$tls/other-client.pem' PGFANOUT_TEST_TLS_OTHER_CLIENT_KEY='$tls/other-client.key'
export PGHOST=127.0.0.1 PGPORT='$PG_PORT' PGUSER=postgres PGSSLMODE=disable
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
    make_certs
    start_pg
    start_rabbit
    . "$RUN/pg.env"
    write_tools
    print_env | tee "$RUN/env"
    ;;
  start-pg)
    mkdir -p "$RUN"
    make_certs
    start_pg
    ;;
  stop) stop_all ;;
  env) cat "$RUN/env" ;;
  *) echo "usage: $0 start|start-pg|stop|env" >&2; exit 2 ;;
esac
