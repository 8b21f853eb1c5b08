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
#
# A test that fails is run once more on its own (ctest --rerun-failed). The stage still
# fails if it fails again, or, in the sanitizer stage, if ASan or UBSan reported anything
# in ctest's output or in a log of a process the tests started. The summary at the end
# names every test that failed, the ones that passed on the second run included, and the
# fuzzers' output goes to files in the fuzz tree, so the last lines of a run say what
# went wrong.
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

# The tests that failed in the last ctest run of build tree $1, one per line.
failed_tests() {
  sed -E 's/^[0-9]+://' "$1/Testing/Temporary/LastTestsFailed.log" 2>/dev/null || true
}
# Runs ctest in build tree $1 (further arguments go to ctest), output to $1/ctest.log. If
# tests fail, runs those once more (output to $1/ctest-rerun.log). Sets run_rc to the
# rerun's exit code (or the first run's if nothing failed), first_failed to the tests
# that failed the first time and still_failed to those that failed again.
run_ctest() {
  local tree=$1
  shift
  first_failed="" still_failed=""
  ctest --test-dir "$tree" --output-on-failure --no-tests=error --timeout "$TEST_TIMEOUT" "$@" \
    2>&1 | tee "$tree/ctest.log"
  run_rc=${PIPESTATUS[0]}
  ((run_rc != 0)) || return 0
  first_failed=$(failed_tests "$tree")
  [ -n "$first_failed" ] || return 0
  echo
  echo "== running the failed tests once more in $tree:"
  echo "$first_failed" | sed 's/^/   /'
  ctest --test-dir "$tree" --output-on-failure --timeout "$TEST_TIMEOUT" --rerun-failed \
    2>&1 | tee "$tree/ctest-rerun.log"
  run_rc=${PIPESTATUS[0]}
  ((run_rc == 0)) || still_failed=$(failed_tests "$tree")
}
# Prints the summary line of stage $1 from what run_ctest set.
summarize_ctest() {
  local what=$1 tree=$2 failed=$3 again=$4 rc=$5
  echo "$what: $(grep -E '^[0-9]+% tests passed' "$tree/ctest.log" 2>/dev/null || echo "no summary (exit $rc)")"
  [ -n "$failed" ] || return 0
  local name
  while IFS= read -r name; do
    if grep -qxF -- "$name" <<<"$again"; then
      echo "   FAILED twice: $name"
    else
      echo "   failed once, passed when run again: $name"
    fi
  done <<<"$failed"
}

set +e
run_ctest "$BUILD"
ctest_rc=$run_rc release_failed=$first_failed release_again=$still_failed
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
  san_failed="" san_again="" san_reports=""
  # A failed build must not leave an earlier run's results to be summarised.
  rm -rf "$SAN_BUILD/test-logs" "$SAN_BUILD"/ctest*.log
  echo
  echo "== sanitizer stage: ASan + UBSan build in $SAN_BUILD"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  set +e
  cmake -S "$ROOT" -B "$SAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPGFANOUT_SANITIZE=ON >/dev/null &&
    cmake --build "$SAN_BUILD" --parallel "${PGFANOUT_BUILD_JOBS:-$(nproc)}"
  sanitize_rc=$?
  if ((sanitize_rc == 0)); then
    run_ctest "$SAN_BUILD" -L "${PGFANOUT_SANITIZE_LABELS:-unit|integration}" \
      -E "${PGFANOUT_SANITIZE_EXCLUDE:-RowPastJsonbsLimit}"
    sanitize_rc=$run_rc san_failed=$first_failed san_again=$still_failed
    # A report fails the stage even where no test noticed it (a process killed on purpose
    # right after, say), and even if the test passed when run again.
    san_reports=$(grep -rlE '==[0-9]+==ERROR: [A-Za-z]+Sanitizer|^[^ ]+:[0-9]+:[0-9]+: runtime error: ' \
      "$SAN_BUILD"/ctest*.log "$SAN_BUILD/test-logs" 2>/dev/null)
    if [ -n "$san_reports" ]; then
      echo "test.sh: ASan or UBSan reported errors; see these files:" >&2
      echo "$san_reports" | sed 's/^/   /' >&2
      ((sanitize_rc != 0)) || sanitize_rc=1
    fi
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
    fuzz_log="$FUZZ_BUILD/fuzz-$name.log"
    (cd "$FUZZ_BUILD" && "./bin/pgfanout_fuzz_$name" -max_total_time="$fuzz_share" -seed="$fuzz_seed" \
        -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 "corpus-work-$name" "$ROOT/tests/fuzz/$corpus") \
        >"$fuzz_log" 2>&1
    fuzz_rc=$?
    if ((fuzz_rc == 0)); then
      grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$fuzz_log"
    else
      tail -n 80 "$fuzz_log"
      echo "pgfanout_fuzz_$name: FAILED (exit $fuzz_rc); its whole output is in $fuzz_log"
    fi
  done
  set -e
fi

echo
echo "== summary"
summarize_ctest "tests" "$BUILD" "$release_failed" "$release_again" "$ctest_rc"
if ((compose_rc == 0)); then echo "compose check: passed"; else echo "compose check: FAILED"; fi
if [[ "$sanitize_stage" == 1 ]]; then
  summarize_ctest "sanitizer build" "$SAN_BUILD" "$san_failed" "$san_again" "$sanitize_rc"
  [ -z "$san_reports" ] || echo "   ASan/UBSan reports in: $(echo $san_reports)"
  if ((fuzz_rc == 0)); then echo "fuzz: passed"; else echo "fuzz: FAILED (exit $fuzz_rc; inputs in $FUZZ_BUILD)"; fi
fi
((ctest_rc == 0)) || exit "$ctest_rc"
((compose_rc == 0)) || exit "$compose_rc"
((sanitize_rc == 0)) || exit "$sanitize_rc"
exit "$fuzz_rc"
