#!/usr/bin/env bash
# Where a writer's CPU goes inside the capture trigger: `perf record` of the backend of a
# one-client pgbench of single-row UPDATEs on a tracked table (id bigint primary key,
# n int, t text, j jsonb, ts timestamptz; 100,000 rows), no publisher running (idle =
# false, so no NOTIFY). Prints the share of the backend's samples taken inside the
# PL/pgSQL trigger, and what the trigger spent them on (the first named function below
# plpgsql_exec_trigger in each sample's call chain).
#
#   bench/trigger_profile.sh [CONNINFO]      (default: $PGFANOUT_TEST_PG)
#
# Needs perf (Debian package linux-perf) and the right to profile the server's processes
# (root). CONNINFO must be a role that may create databases on a server on this machine;
# the script works in a scratch database of its own and drops it at the end. PGBIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v perf >/dev/null || { echo "trigger_profile: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
source "$ROOT/bench/scratch_db.sh"
WORK="$(mktemp -d)"
PGBENCH=""
cleanup() {
  [ -z "$PGBENCH" ] || kill "$PGBENCH" 2>/dev/null || true
  scratch_db_drop
  rm -rf "$WORK"
}
trap cleanup EXIT
scratch_db_open "${1:-}" pgfanout_trigger_profile
psql_base -d "$DB_CONN" >/dev/null <<'SQL'
UPDATE pgfanout.publisher_state SET idle = false;
CREATE TABLE u (id bigint PRIMARY KEY, n int, t text, j jsonb, ts timestamptz);
INSERT INTO u SELECT g, 0, 'text ' || g, jsonb_build_object('a', g), now() FROM generate_series(1, 100000) g;
SELECT pgfanout.track('u');
VACUUM ANALYZE u;
SQL
printf '\\set id random(1, 100000)\nUPDATE u SET n = n + 1 WHERE id = :id;\n' > "$WORK/update.sql"

"$PGBIN/pgbench" -n -c 1 -j 1 -T 8 -f "$WORK/update.sql" "$DB_CONN" > "$WORK/pgbench.out" 2>&1 &
PGBENCH=$!
sleep 1
pid=$(psql_base -d "$DB_CONN" -At -c "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgbench'")
[ -n "$pid" ] || { echo "trigger_profile: pgbench's backend not found" >&2; exit 1; }
perf record -q -F 2000 -g -p "$pid" -o "$WORK/perf.data" -- sleep 5 >/dev/null 2>&1
wait "$PGBENCH"
PGBENCH=""
echo "pgbench -c 1, single-row UPDATE of a tracked table: $(grep -o 'tps = [0-9.]*' "$WORK/pgbench.out" | head -1) (load: $(cut -d' ' -f1-3 /proc/loadavg))"
perf script -i "$WORK/perf.data" -F ip,sym 2>/dev/null | python3 -c '
import sys
from collections import Counter
stacks = [s for s in sys.stdin.read().split("\n\n") if s.strip()]
total = len(stacks)
inside = Counter()
for st in stacks:
    frames = [(line.strip().split(None, 1) + ["?"])[1] for line in st.strip().split("\n")]
    if "plpgsql_exec_trigger" in frames:
        below = [f for f in reversed(frames[:frames.index("plpgsql_exec_trigger")]) if f not in ("[unknown]", "?")]
        inside[below[0] if below else "(PL/pgSQL itself)"] += 1
n = sum(inside.values())
print(f"backend samples: {total}; inside the trigger: {n} ({100 * n / max(total, 1):.1f} %)")
for name, count in inside.most_common(8):
    print(f"  {100 * count / max(n, 1):5.1f} %  {name}")
'
