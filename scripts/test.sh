#!/usr/bin/env bash
# The whole test suite as CI runs it: lint, type check, tests. Installs what it needs.
# Usage: scripts/test.sh [pytest options]
EXTRAS=dev
source "$(dirname "$0")/venv.sh"
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing systemd (for systemd-analyze) ..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >&2
fi
ruff check edge_agent kernels tests bench
mypy edge_agent kernels
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
