#!/usr/bin/env bash
# The capture's CPU cost per change, as the writing backend's own CPU time (utime + stime
# of /proc/self/stat, read with pg_read_file), which other load on the machine barely
# moves, unlike TPS. Compares sql/install.sql with another version of it, alternating.
#
#   BENCH_WRITER=role bench/capture_cpu.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#   BENCH_BASELINE_SQL=/tmp/old-install.sql BENCH_WRITER=role bench/capture_cpu.sh
#       (e.g. git show main:sql/install.sql > /tmp/old-install.sql)
#
# CONNINFO must be a superuser (pg_read_file of /proc, CREATE DATABASE); the script works
# in scratch databases of its own and drops them at the end. BENCH_WRITER is a role (not a
# superuser: the outbox's row-level security does not check superusers) that writes, as
# most writers would, through SET ROLE. BENCH_REPEAT (default 5) runs of each
# workload per variant, alternating; the minimum is printed with the median. Workloads,
# each in one DO block in one transaction (no commit cost): 20,000 single-row INSERTs,
# 100 INSERTs of 1,000 rows, 20,000 single-row UPDATEs, into a table
# (id bigint primary key, t text, j jsonb, ts timestamptz) tracked or not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPEAT="${BENCH_REPEAT:-5}"
WRITER="${BENCH_WRITER:?set BENCH_WRITER to a LOGIN role that is not a superuser}"
BASELINE="${BENCH_BASELINE_SQL:-}"

source "$ROOT/bench/scratch_db.sh"
WORK="$(mktemp -d)"
BASE_DB="pgfanout_cpu_base_$$"
BASE_CONN=""

cleanup() {
  [ -z "${WATCHDOG:-}" ] || pkill -P "$WATCHDOG" sleep 2>/dev/null || true
  [ -z "$BASE_CONN" ] || psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $BASE_DB WITH (FORCE)" >/dev/null 2>&1 || true
  scratch_db_drop
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "capture_cpu: stopped (signal or time limit)" >&2; exit 130' INT TERM
(sleep "${BENCH_MAX_SECONDS:-900}" && kill -TERM $$) 2>/dev/null &
WATCHDOG=$!

setup() {  # conninfo
  psql_base -d "$1" -v writer="$WRITER" -f - >/dev/null <<'EOF'
CREATE TABLE bench (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);
CREATE TABLE plain (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);
GRANT SELECT, INSERT, UPDATE, DELETE ON bench, plain TO :"writer";
SELECT pgfanout.track('bench');
UPDATE pgfanout.publisher_state SET idle = false;
EOF
}

scratch_db_open "${1:-}" pgfanout_cpu
setup "$DB_CONN"
if [ -n "$BASELINE" ]; then
  psql_base -d "$CONNINFO" -c "CREATE DATABASE $BASE_DB" >/dev/null
  BASE_CONN="$(scratch_conninfo "$CONNINFO" "$BASE_DB")"
  PGOPTIONS="-c client_min_messages=warning" psql_base -d "$BASE_CONN" -f "$BASELINE" >/dev/null
  setup "$BASE_CONN"
fi

CPU_MS="(SELECT (split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint) * 1000 / $(getconf CLK_TCK)
         FROM pg_read_file('/proc/self/stat') s)"
body() {  # table workload
  case $2 in
    single) echo "FOR i IN 1..20000 LOOP INSERT INTO $1 VALUES (i, 'a short line of text', '{\"n\": 1, \"tag\": \"bench\"}', now()); END LOOP;" ;;
    bulk) echo "FOR i IN 0..99 LOOP INSERT INTO $1 SELECT g, 'a short line of text', '{\"n\": 1, \"tag\": \"bench\"}', now() FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g; END LOOP;" ;;
    update) echo "FOR i IN 1..20000 LOOP UPDATE $1 SET t = 'updated text', j = '{\"n\": 2}', ts = now() WHERE id = i; END LOOP;" ;;
  esac
}
measure() {  # conninfo table workload -> CPU ms of the writing backend
  local fill=""
  [ "$3" = update ] && fill="INSERT INTO $2 SELECT g, 'x', '{}', now() FROM generate_series(1, 20000) g;"
  psql_base -d "$1" -c "TRUNCATE $2; TRUNCATE pgfanout.changes; $fill" -c "VACUUM ANALYZE $2" -c "CHECKPOINT" >/dev/null
  "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v writer="$WRITER" -d "$1" <<EOF
SELECT $CPU_MS AS c0 \gset
SET ROLE :"writer";
DO \$do\$ BEGIN $(body "$2" "$3") END \$do\$;
RESET ROLE;
SELECT $CPU_MS - :c0;
EOF
}

VARIANTS="untracked|$DB_CONN|plain
this install.sql|$DB_CONN|bench"
[ -z "$BASELINE" ] || VARIANTS="$VARIANTS
baseline|$BASE_CONN|bench"
echo "writer $WRITER, $REPEAT runs per variant, $(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
for w in single bulk update; do
  for i in $(seq 1 "$REPEAT"); do
    while IFS='|' read -r label conn table; do
      printf '%s\t%s\n' "$label" "$(measure "$conn" "$table" "$w")" >>"$WORK/$w"
    done <<<"$VARIANTS"
  done
  rows=$([ "$w" = bulk ] && echo 100000 || echo 20000)
  while IFS='|' read -r label _ _; do
    sorted=$(awk -F'\t' -v l="$label" '$1 == l { print $2 }' "$WORK/$w" | sort -n)
    min=$(head -n 1 <<<"$sorted")
    median=$(sed -n "$(( ($(wc -l <<<"$sorted") + 1) / 2 ))p" <<<"$sorted")
    awk -v w="$w" -v l="$label" -v a="$min" -v m="$median" -v n="$rows" \
      'BEGIN { printf "  %-7s %-18s CPU %6d ms min, %6d median  = %5.1f us per row (min)\n", w, l, a, m, a * 1000 / n }'
  done <<<"$VARIANTS"
done
