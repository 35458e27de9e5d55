#!/usr/bin/env bash
# The shipped unit under real systemd: boot Debian with systemd as PID 1 in a container
# (tests/systemd/box.sh), install this checkout with deploy/install.sh --with-torch, and run
# tests/systemd/live_unit.py against the service: READY (Type=notify), status, predictions
# from a publisher, the watchdog past WatchdogSec=, reload on SIGHUP, a QAT burst inside the
# unit's sandbox, a clean stop. Needs root. The base root file system is cached in
# $EDGE_AGENT_SYSTEMD_CACHE (default .systemd-box/, git-ignored); each run boots a fresh
# overlay of it.
# Usage: tests/systemd/run.sh [pytest options]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${EDGE_AGENT_SYSTEMD_CACHE:-$repo/.systemd-box}
hostpy=${EDGE_AGENT_HOST_PYTHON:-$repo/.venv/bin/python}
[ "$(id -u)" = 0 ] || { echo "systemd: needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
[ -x "$hostpy" ] || { echo "systemd: no host Python at $hostpy (scripts/test.sh creates .venv)" >&2; exit 1; }
mkdir -p "$cache"
run=$(mktemp -d "$cache/run.XXXXXX")
cleanup() {
  bash "$here/box.sh" down "$run" >/dev/null 2>&1 || true
  [ -n "${KEEP_LOGS:-}" ] || rm -rf "$run"
}
trap cleanup EXIT
t0=$SECONDS
bash "$here/box.sh" up "$cache/base" "$run" --bind "$repo:/src"
echo "=== systemd: container up after $((SECONDS - t0)) s" >&2
set +e
EDGE_AGENT_BOX_RUN=$run "$hostpy" -m pytest -p no:cacheprovider -v "$here/live_unit.py" "$@"
rc=$?
set -e
echo "=== systemd: done after $((SECONDS - t0)) s (pytest exit $rc)" >&2
exit "$rc"
