#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh), unpacks it into a throwaway root with dpkg, and
# checks what it holds: both programs (and that they run), the SQL files, the systemd units
# (valid for systemd-analyze, with the settings, the user, the restart policy and the
# hardening the README promises), the sysusers.d file, the settings files as conffiles and
# the maintainer scripts. Then `cmake --install` into a DESTDIR must give the same files.
# Exits non-zero, naming the first thing missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK=$(mktemp -d /tmp/pgfanout-package.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_package: $*" >&2; exit 1; }

deb=$(bash "$ROOT/scripts/package.sh" | tail -n 1)
[ -f "$deb" ] || fail "scripts/package.sh made no .deb"
echo "package: $deb"

control=$(dpkg-deb -f "$deb")
grep -qx 'Package: pgfanout' <<<"$control" || fail "control has no Package: pgfanout"
grep -q '^Depends:.*libpqxx' <<<"$control" || fail "Depends lacks libpqxx: $control"
grep -q '^Depends:.*librabbitmq' <<<"$control" || fail "Depends lacks librabbitmq: $control"

# A throwaway root with an empty dpkg database: unpack (no maintainer script runs, nothing
# touches this machine), then ask dpkg what it installed there.
R="$WORK/root"
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates"
: >"$R/var/lib/dpkg/status"
dpkg --root="$R" --force-depends --force-not-root --unpack "$deb" >/dev/null
dpkg --root="$R" -s pgfanout | grep -q '^Status: install ok unpacked' || fail "dpkg does not list pgfanout as unpacked"
listed=$(dpkg --root="$R" -L pgfanout)

expect_file() {
  grep -qx "$1" <<<"$listed" || fail "the package does not hold $1"
  # dpkg --unpack leaves a conffile as FILE.dpkg-new until the package is configured.
  [ -f "$R$1" ] || [ -f "$R$1.dpkg-new" ] || fail "$1 is not in the unpacked root"
}
for f in /usr/bin/pgfanout-publisher /usr/bin/pgfanout-listener \
         /usr/share/pgfanout/sql/install.sql /usr/share/pgfanout/sql/uninstall.sql \
         /usr/lib/systemd/system/pgfanout-publisher.service \
         /usr/lib/systemd/system/pgfanout-listener@.service \
         /usr/lib/sysusers.d/pgfanout.conf \
         /etc/pgfanout/publisher.env /etc/pgfanout/listener-example.env; do
  expect_file "$f"
done
for sql in "$ROOT"/sql/*.sql; do expect_file "/usr/share/pgfanout/sql/$(basename "$sql")"; done
for p in publisher listener; do
  out=$("$R/usr/bin/pgfanout-$p" --version) || fail "pgfanout-$p --version failed"
  [ -n "$out" ] || fail "pgfanout-$p --version printed nothing"
done

conffiles=$(cat "$R/var/lib/dpkg/info/pgfanout.conffiles")
for f in /etc/pgfanout/publisher.env /etc/pgfanout/listener-example.env; do
  grep -qx "$f" <<<"$conffiles" || fail "$f is not a conffile"
done
for s in postinst postrm; do
  [ -x "$R/var/lib/dpkg/info/pgfanout.$s" ] || fail "no executable $s"
  sh -n "$R/var/lib/dpkg/info/pgfanout.$s" || fail "$s is not valid sh"
done
grep -q '^u pgfanout ' "$R/usr/lib/sysusers.d/pgfanout.conf" || fail "sysusers.d does not create user pgfanout"

unit_has() {
  grep -qx "$2" "$1" || fail "$(basename "$1") lacks the line '$2'"
}
pub="$R/usr/lib/systemd/system/pgfanout-publisher.service"
lis="$R/usr/lib/systemd/system/pgfanout-listener@.service"
for u in "$pub" "$lis"; do
  for line in User=pgfanout Group=pgfanout Restart=on-failure NoNewPrivileges=yes \
              ProtectSystem=strict ProtectHome=yes PrivateTmp=yes CapabilityBoundingSet= \
              'WantedBy=multi-user.target'; do
    unit_has "$u" "$line"
  done
  grep -q '^RestartPreventExitStatus=.*\b2\b' "$u" || fail "$(basename "$u") restarts on exit 2 (configuration error)"
done
unit_has "$pub" 'EnvironmentFile=/etc/pgfanout/publisher.env'
unit_has "$pub" 'ExecStart=/usr/bin/pgfanout-publisher'
unit_has "$lis" 'EnvironmentFile=/etc/pgfanout/listener-%i.env'
unit_has "$lis" 'ExecStart=/usr/bin/pgfanout-listener'

# systemd's own check, on copies whose ExecStart points at the unpacked programs (they are
# not in /usr/bin on this machine). Any warning (an unknown or malformed setting) fails.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$WORK/units"
  sed "s|/usr/bin/|$R/usr/bin/|" "$pub" >"$WORK/units/pgfanout-publisher.service"
  sed "s|/usr/bin/|$R/usr/bin/|" "$lis" >"$WORK/units/pgfanout-listener@check.service"
  for u in "$WORK"/units/*.service; do
    out=$(timeout 60 systemd-analyze verify --man=no "$u" 2>&1) || fail "systemd-analyze verify $(basename "$u"): $out"
    [ -z "$out" ] || fail "systemd-analyze verify $(basename "$u"): $out"
  done
else
  fail "systemd-analyze is missing (scripts/deps.sh installs systemd)"
fi

# cmake --install from the same tree, into a DESTDIR: the same files.
build=$(dirname "$deb")
DESTDIR="$WORK/destdir" cmake --install "$build" >/dev/null
for f in /usr/bin/pgfanout-publisher /usr/bin/pgfanout-listener /usr/share/pgfanout/sql/install.sql \
         /usr/lib/systemd/system/pgfanout-publisher.service /usr/lib/systemd/system/pgfanout-listener@.service \
         /usr/lib/sysusers.d/pgfanout.conf /etc/pgfanout/publisher.env; do
  [ -f "$WORK/destdir$f" ] || fail "cmake --install did not install $f"
done
echo "check_package: the .deb and cmake --install hold the programs, the SQL, the units and the settings"
