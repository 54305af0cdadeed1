#!/usr/bin/env bash
# tests/test-package.sh: scripts/test-package (about 2-3 minutes): the
# Debian packages build from a copy of the tree, lintian reports no
# errors, they install, "nbdkit fsevent IMG" serves an image that
# nbdinfo and a libnbd read see, a handler builds with the -dev
# package's pkg-config file, systemd-analyze verify passes on
# nbdkit-fsevent@.service; then the packages are removed.  It installs
# packages on this machine: it skips when they are installed already
# (someone uses them) or when the tools are missing.

source ./functions.sh
set -x

# Never inside the package build that scripts/test-package runs.
if [ -n "${FSEVENT_PACKAGE_TEST:-}" ]; then
    echo "SKIP: $0: inside scripts/test-package's own build" >&2
    exit 77
fi
requires_root
requires dpkg-buildpackage --version
requires lintian --version
requires test -x /usr/bin/dh
requires apt-get --version
requires nbdinfo --version
requires systemd-analyze --version
requires pkg-config --version
requires cc --version
if dpkg-query -W -f='${Status}' nbdkit-fsevent 2>/dev/null | grep -q "install ok installed"; then
    echo "SKIP: $0: nbdkit-fsevent is installed already (test-package would remove it)" >&2
    exit 77
fi
# Build dependencies (dpkg-checkbuilddeps says which are missing).
( cd "$top_srcdir" && dpkg-checkbuilddeps ) >/dev/null 2>&1 || {
    echo "SKIP: $0: build dependencies missing: $(cd "$top_srcdir" && dpkg-checkbuilddeps 2>&1)" >&2
    exit 77
}

"$scripts/test-package"
