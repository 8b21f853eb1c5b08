#!/usr/bin/env bash
# The test command: installs what is missing (Debian 12), builds, starts the local
# throwaway PostgreSQL 15 and RabbitMQ (scripts/servers.sh) and a 3-node RabbitMQ cluster
# (scripts/cluster.sh), runs every test with ctest (labels unit, integration, fault,
# cluster, packaging) and the check of the compose files, and stops the servers again if
# it started them. Exits non-zero if anything failed.
#
# PGFANOUT_RUN_DIR and PGFANOUT_BUILD_DIR choose other server and build directories.
#
# Then the sanitizer stage (PGFANOUT_SANITIZE_STAGE=0 leaves it out): the unit and
# integration tests again in a tree built with -DPGFANOUT_SANITIZE=ON (ASan and UBSan,
# stopping at the first report; $PGFANOUT_BUILD_DIR-sanitize), then the fuzzers (clang,
# -DPGFANOUT_FUZZ=ON, $PGFANOUT_BUILD_DIR-fuzz) for PGFANOUT_FUZZ_SECONDS (default 60) in
# all, split between them: the message fuzzer over tests/fuzz/corpus, the pgoutput
# decoder's over tests/fuzz/corpus-pgoutput and the value converter's over
# tests/fuzz/row_json_corpus, with libFuzzer's -seed=PGFANOUT_FUZZ_SEED (default 1, so a
# run's inputs can be replayed; 0 lets libFuzzer pick one, for long runs that look for new
# findings). PGFANOUT_SANITIZE_LABELS picks what ctest runs
# there (default "unit|integration"), PGFANOUT_SANITIZE_EXCLUDE what it leaves out (a ctest
# -E regex; default the 270 MB row test, which takes minutes and gigabytes under ASan and
# exercises no code the 20 MB row tests do not).
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
  # The cluster first: servers.sh stop deletes the whole run directory, the cluster's
  # state (and the PIDs to stop it by) included.
  bash scripts/cluster.sh stop >/dev/null 2>&1 || true
  if ((started_servers)); then bash scripts/servers.sh stop || true; fi
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

sanitize_rc=0
fuzz_rc=0
sanitize_stage="${PGFANOUT_SANITIZE_STAGE:-1}"
if [[ "$sanitize_stage" == 1 ]]; then
  SAN_BUILD="$BUILD-sanitize"
  FUZZ_BUILD="$BUILD-fuzz"
  san_log="$SAN_BUILD/ctest.log"
  echo
  echo "== sanitizer stage: ASan + UBSan build in $SAN_BUILD"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  set +e
  cmake -S "$ROOT" -B "$SAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPGFANOUT_SANITIZE=ON >/dev/null &&
    cmake --build "$SAN_BUILD" --parallel "${PGFANOUT_BUILD_JOBS:-$(nproc)}"
  sanitize_rc=$?
  if ((sanitize_rc == 0)); then
    ctest --test-dir "$SAN_BUILD" --output-on-failure --no-tests=error --timeout "$TEST_TIMEOUT" \
      -L "${PGFANOUT_SANITIZE_LABELS:-unit|integration}" -E "${PGFANOUT_SANITIZE_EXCLUDE:-RowPastJsonbsLimit}" \
      2>&1 | tee "$san_log"
    sanitize_rc=${PIPESTATUS[0]}
  else
    echo "test.sh: the sanitizer build failed (see above)" >&2
  fi
  echo
  fuzz_seconds="${PGFANOUT_FUZZ_SECONDS:-60}"
  # At least 1 s each: libFuzzer reads -max_total_time=0 as "no limit".
  fuzz_share=$((fuzz_seconds > 2 ? fuzz_seconds / 3 : 1))
  fuzz_seed="${PGFANOUT_FUZZ_SEED:-1}"
  echo "== fuzz stage: $fuzz_seconds s of tests/fuzz over their corpora, seed $fuzz_seed"
  cmake -S "$ROOT" -B "$FUZZ_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_COMPILER=clang++ -DPGFANOUT_FUZZ=ON -DPGFANOUT_BUILD_TESTS=OFF >/dev/null &&
    cmake --build "$FUZZ_BUILD" --target pgfanout_fuzz_message pgfanout_fuzz_pgoutput pgfanout_fuzz_row_json
  fuzz_rc=$?
  # Each target gets a third of the time; new inputs go to a scratch directory per target,
  # findings (crash-*) to the fuzz build tree.
  for target in message:corpus pgoutput:corpus-pgoutput row_json:row_json_corpus; do
    ((fuzz_rc == 0)) || break
    name=${target%%:*} corpus=${target#*:}
    echo "-- pgfanout_fuzz_$name: $fuzz_share s over tests/fuzz/$corpus"
    mkdir -p "$FUZZ_BUILD/corpus-work-$name"
    (cd "$FUZZ_BUILD" && "./bin/pgfanout_fuzz_$name" -max_total_time="$fuzz_share" -seed="$fuzz_seed" \
        -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 "corpus-work-$name" "$ROOT/tests/fuzz/$corpus")
    fuzz_rc=$?
  done
  set -e
fi

echo
echo "== summary"
grep -E '^[0-9]+% tests passed' "$log" || echo "ctest: no summary (exit $ctest_rc)"
if ((compose_rc == 0)); then echo "compose check: passed"; else echo "compose check: FAILED"; fi
if [[ "$sanitize_stage" == 1 ]]; then
  echo "sanitizer build: $(grep -E '^[0-9]+% tests passed' "$san_log" 2>/dev/null || echo "FAILED (exit $sanitize_rc)")"
  if ((fuzz_rc == 0)); then echo "fuzz: passed"; else echo "fuzz: FAILED (exit $fuzz_rc; inputs in $FUZZ_BUILD)"; fi
fi
((ctest_rc == 0)) || exit "$ctest_rc"
((compose_rc == 0)) || exit "$compose_rc"
((sanitize_rc == 0)) || exit "$sanitize_rc"
exit "$fuzz_rc"
