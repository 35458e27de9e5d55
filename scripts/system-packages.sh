#!/usr/bin/env bash
# Prints the Debian packages the test suite needs and this machine lacks, one line,
# space-separated (empty when nothing is missing). scripts/test.sh installs them.
# Usage: scripts/system-packages.sh [python]
python=${1:-python3}
missing=()
# systemd-analyze: the unit file's checks
command -v systemd-analyze >/dev/null || missing+=(systemd)
# a C compiler and the Python headers: the ahead-of-time kernels (compile-kernels)
cc=$("$python" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')
command -v "$cc" >/dev/null || missing+=(gcc)
"$python" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
# Node.js and npm: the publisher written from docs/protocol.md alone (tests/test_interop.py)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# Debian's Prometheus server: tests/test_fleet_prometheus.py scrapes real agents with it
# (skipped, with its reason, where it is missing); bench/fleet.py needs it too.
command -v prometheus >/dev/null || missing+=(prometheus)
echo "${missing[*]}"
