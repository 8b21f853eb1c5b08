#!/usr/bin/env bash
# pgfanout against PostgreSQL's native logical replication, on this machine, in one run.
#
#   bench/run.sh [--full] [--packs 1,100] [--only bulk,updates,cost,latency,fanout] [--fanout 1,2,4,8] [...]
#
# Installs what is missing (scripts/deps.sh), builds into build-bench/, starts its own
# PostgreSQL and RabbitMQ (scripts/servers.sh, in a run directory of its own), runs every
# workload against pgfanout and native logical replication, prints the table and saves it
# to bench/results/<date>.txt. Servers and processes are stopped at the end, whatever
# happens. About 5 minutes; --full adds 1,000,000 changes for the RSS-vs-volume check.
# --replicas-apart puts the replica databases (pgfanout's and native's) in a second
# PostgreSQL instance (scripts/servers.sh start-pg), as they would be on other servers,
# though on the same cores and disk here; the default keeps them in the primary's instance.
# Any other option goes to bench/bench.py (--help lists them).
#
# Environment: BENCH_SKIP_DEPS=1 skips scripts/deps.sh; BENCH_BUILD_DIR (default
# build-bench); BENCH_RUN_DIR (default a fresh /tmp/pgfanout-bench-run.XXXXXX; servers
# already running there are reused); BENCH_KEEP_SERVERS=1 leaves the servers running
# (stop them with PGFANOUT_RUN_DIR=<run dir> scripts/servers.sh stop, and with
# --replicas-apart also PGFANOUT_RUN_DIR=<run dir>-replicas scripts/servers.sh stop).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BENCH_BUILD_DIR:-$ROOT/build-bench}"

APART=""
ARGS=()
for a in "$@"; do
  case "$a" in
    -h|--help) exec python3 "$ROOT/bench/bench.py" --help ;;
    --replicas-apart) APART=1 ;;
    *) ARGS+=("$a") ;;
  esac
done

[ -n "${BENCH_SKIP_DEPS:-}" ] || "$ROOT/scripts/deps.sh"

echo "bench: building into $BUILD" >&2
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPGFANOUT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" >/dev/null

RUN_DIR="${BENCH_RUN_DIR:-$(mktemp -d /tmp/pgfanout-bench-run.XXXXXX)}"
RUN_DIR="${RUN_DIR%/}"  # the replicas' instance lives beside it, not inside
export PGFANOUT_RUN_DIR="$RUN_DIR"
REPLICA_RUN_DIR="$RUN_DIR-replicas"
BENCH_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$BENCH_PID" 2>/dev/null || true
  fi
  if [ -z "${BENCH_KEEP_SERVERS:-}" ]; then
    [ -z "$APART" ] || PGFANOUT_RUN_DIR="$REPLICA_RUN_DIR" "$ROOT/scripts/servers.sh" stop >/dev/null 2>&1 || true
    "$ROOT/scripts/servers.sh" stop >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Another session may take a port between servers.sh choosing it and the server binding
# it: start again on fresh ports a few times. start_servers RUN_DIR COMMAND WHAT
start_servers() {
  local attempt
  for attempt in 1 2 3; do
    if PGFANOUT_RUN_DIR="$1" "$ROOT/scripts/servers.sh" "$2" >/dev/null; then return; fi
    PGFANOUT_RUN_DIR="$1" "$ROOT/scripts/servers.sh" stop >/dev/null 2>&1 || true
    [ "$attempt" -lt 3 ] || { echo "bench: could not start $3" >&2; exit 1; }
    echo "bench: starting $3 failed; trying again" >&2
    sleep 2
  done
}
start_servers "$RUN_DIR" start "the servers"
eval "$("$ROOT/scripts/servers.sh" env)"
if [ -n "$APART" ]; then
  start_servers "$REPLICA_RUN_DIR" start-pg "the replicas' PostgreSQL instance"
  ARGS+=(--replica-run-dir "$REPLICA_RUN_DIR")
fi

source "$ROOT/bench/scratch_db.sh"  # bench_commit
mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/$(date +%Y-%m-%d_%H%M%S).txt"
{
  echo "pgfanout bench, $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(bench_commit)"
  echo "command: bench/run.sh $*"
} | tee "$OUT"
set +e
python3 -u "$ROOT/bench/bench.py" --bin "$BUILD/bin" "${ARGS[@]}" > >(tee -a "$OUT") 2>&1 &
BENCH_PID=$!
wait "$BENCH_PID"
rc=$?
BENCH_PID=""
sleep 0.2  # let tee write the last lines
set -e
echo "saved to ${OUT#"$ROOT"/}"
exit "$rc"
