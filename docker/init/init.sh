#!/usr/bin/env bash
# One-shot job of docker-compose.yml, run in the postgres:15 image: creates the demo tables
# on the primary and on every replica, installs pgfanout's capture on the primary and
# tracks the demo tables. Safe to run again (everything here is idempotent).
#   PRIMARY   libpq URI of the primary
#   REPLICAS  libpq URIs of the replicas, separated by spaces
set -euo pipefail

psql_at() { psql -X -q -v ON_ERROR_STOP=1 -d "$@"; }

for url in "$PRIMARY" $REPLICAS; do
  until pg_isready -q -d "$url"; do sleep 1; done
  psql_at "$url" -f /pgfanout/demo/tables.sql
done
psql_at "$PRIMARY" -f /pgfanout/sql/install.sql
psql_at "$PRIMARY" -f /pgfanout/demo/track.sql >/dev/null
echo "init: demo tables created on the primary and $(wc -w <<<"$REPLICAS") replicas; tracked on the primary"
