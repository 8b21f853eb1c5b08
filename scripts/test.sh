#!/usr/bin/env bash
# The test command: installs what is missing (Debian 12), builds, starts the local
# throwaway PostgreSQL 15 and RabbitMQ (scripts/servers.sh) and a 3-node RabbitMQ cluster
# (scripts/cluster.sh), runs every test with ctest (labels unit, integration, fault,
# cluster, packaging) and the check of the compose files, and stops the servers again if
# it started them. Exits non-zero if anything failed.
#
# PGFANOUT_RUN_DIR and PGFANOUT_BUILD_DIR choose other server and build directories.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${PGFANOUT_BUILD_DIR:-$ROOT/build}"
RUN="${PGFANOUT_RUN_DIR:-$ROOT/.run}"
export PGFANOUT_BUILD_DIR="$BUILD" PGFANOUT_RUN_DIR="$RUN"
# A bound for every test that sets none itself.
TEST_TIMEOUT="${PGFANOUT_TEST_TIMEOUT:-900}"

bash scripts/deps.sh || { echo "test.sh: installing the dependencies failed (see above)" >&2; exit 1; }
bash scripts/build.sh || { echo "test.sh: the build failed (see above); no test was run" >&2; exit 1; }

servers_running() {
  [ -x "$RUN/pg_ctl" ] && "$RUN/pg_ctl" status >/dev/null 2>&1 &&
    [ -x "$RUN/rabbitmqctl" ] && timeout 30 "$RUN/rabbitmqctl" -q status >/dev/null 2>&1
}
started_servers=0
servers_running || started_servers=1
stop_servers() {
  if ((started_servers)); then bash scripts/servers.sh stop || true; fi
  bash scripts/cluster.sh stop >/dev/null 2>&1 || true
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! env_lines=$(bash scripts/servers.sh start); then
  echo "test.sh: the local PostgreSQL and RabbitMQ did not start (messages above); no test was run" >&2
  exit 1
fi
eval "$env_lines"
if ! cluster_lines=$(bash scripts/cluster.sh start); then
  echo "test.sh: the 3-node RabbitMQ cluster did not start (messages above); no test was run" >&2
  exit 1
fi
eval "$cluster_lines"

log="$BUILD/ctest.log"
set +e
ctest --test-dir "$BUILD" --output-on-failure --no-tests=error --timeout "$TEST_TIMEOUT" 2>&1 | tee "$log"
ctest_rc=${PIPESTATUS[0]}
echo
python3 tests/compose/check_compose.py
compose_rc=$?
set -e

echo
echo "== summary"
grep -E '^[0-9]+% tests passed' "$log" || echo "ctest: no summary (exit $ctest_rc)"
if ((compose_rc == 0)); then echo "compose check: passed"; else echo "compose check: FAILED"; fi
((ctest_rc == 0)) || exit "$ctest_rc"
exit "$compose_rc"
