# Sourced by the bench's stand-alone scripts, which each work in a scratch database of
# their own on the server CONNINFO names (a role that may create databases).
#
#   source "$ROOT/bench/scratch_db.sh"
#   scratch_db_open "${1:-}" PREFIX    # CONNINFO = $1, else $PGFANOUT_TEST_PG
#   trap scratch_db_drop EXIT          # (or call it from the script's own EXIT trap)
#
# scratch_db_open sets CONNINFO, PGBIN (default /usr/lib/postgresql/15/bin), DB
# (PREFIX_<pid>) and DB_CONN (CONNINFO with its database set to DB), creates DB and runs
# sql/install.sql in it. psql_base runs psql quietly, stopping at the first error.
# broker_forget RABBITMQCTL EXCHANGE QUEUE... deletes what a script's programs declared;
# bench_commit prints the commit the bench code is at, flagging local changes.

SCRATCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"

psql_base() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

# scratch_conninfo CONNINFO DB: CONNINFO (URI or key=value) with its database set to DB.
scratch_conninfo() {
  if [[ "$1" =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
    echo "${BASH_REMATCH[1]}/$2${BASH_REMATCH[4]}"
  else
    echo "$1 dbname=$2"   # key=value form: the last dbname wins
  fi
}

scratch_db_open() {
  CONNINFO="${1:-${PGFANOUT_TEST_PG:-}}"
  [ -n "$CONNINFO" ] || { echo "usage: $0 [CONNINFO]  (or set PGFANOUT_TEST_PG)" >&2; exit 2; }
  DB="$2_$$"
  DB_CONN="$(scratch_conninfo "$CONNINFO" "$DB")"
  psql_base -d "$CONNINFO" -c "CREATE DATABASE $DB" >/dev/null
  PGOPTIONS="-c client_min_messages=warning" psql_base -d "$DB_CONN" -f "$SCRATCH_ROOT/sql/install.sql" >/dev/null
}

scratch_db_drop() {
  [ -n "${DB:-}" ] || return 0
  psql_base -d "$CONNINFO" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}

broker_forget() {
  local ctl="$1" exchange="$2" q
  shift 2
  for q in "$@"; do
    "$ctl" -q delete_queue "$q" >/dev/null 2>&1 || true
    "$ctl" -q delete_queue "$q.dead" >/dev/null 2>&1 || true
  done
  "$ctl" eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"bench\">>)." >/dev/null 2>&1 || true
}

bench_commit() {
  echo "$(git -C "$SCRATCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$SCRATCH_ROOT" diff --quiet HEAD -- common publisher listener sql bench scripts 2>/dev/null || echo ' + local changes')"
}
