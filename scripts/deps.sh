#!/usr/bin/env bash
# Installs what pgfanout needs to build, test, run the demo and the bench on Debian 12.
# Only Debian's archive is used; nothing is downloaded at build time. Idempotent: packages
# already present are not reinstalled.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libpqxx-dev libpq-dev libboost-dev nlohmann-json3-dev librabbitmq-dev libssl-dev
  libspdlog-dev libcli11-dev libsimdjson-dev googletest libgtest-dev libgmock-dev
  postgresql-15 postgresql-client-15 postgresql-15-postgis-3 rabbitmq-server
  python3 python3-yaml procps curl
  dpkg-dev systemd
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Debian's rabbitmq-server and postgresql packages start system services on install;
# pgfanout runs its own throwaway servers, so keep the system ones from starting.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
