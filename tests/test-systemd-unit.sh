#!/usr/bin/env bash
# tests/test-systemd-unit.sh: the unit nbdkit-fsevent@.service as built
# (systemd/nbdkit-fsevent@.service.in, with nbdkit's path) passes
# systemd-analyze verify as an instance, and says what the README says:
# EnvironmentFile per instance, Restart=on-failure, its ExecStart.
# (scripts/test-package verifies the installed one, man pages and all.)

source ./functions.sh
set -x

requires systemd-analyze --version
unit="$top_builddir/systemd/nbdkit-fsevent@.service"
[ -f "$unit" ] || { echo "SKIP: $0: unit not built (configure found no systemd unit dir)" >&2; exit 77; }
requires test -x "$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$unit")"

d="$(tmpdir)"
cp "$unit" "$d/nbdkit-fsevent@test.service"
systemd-analyze verify --man=no "$d/nbdkit-fsevent@test.service" ||
    fail "systemd-analyze verify"
grep -qx 'EnvironmentFile=/etc/nbdkit-fsevent/%i.conf' "$unit" || fail "EnvironmentFile"
grep -qx 'Restart=on-failure' "$unit" || fail "Restart="
grep -Eqx 'ExecStart=/[^ ]*nbdkit -f -U \$\{SOCKET\} fsevent \$\{IMAGE\} \$PARAMS' "$unit" ||
    fail "ExecStart"
echo OK
