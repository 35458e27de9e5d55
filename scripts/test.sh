#!/usr/bin/env bash
# The whole test suite as CI runs it: lint, type check, tests. Installs what it needs.
# Usage: scripts/test.sh [pytest options]
EXTRAS=dev
source "$(dirname "$0")/venv.sh"
# System packages the tests use (scripts/system-packages.sh says which and why), installed
# when missing where we are root and have apt-get.
read -r -a missing <<< "$(scripts/system-packages.sh python)"
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
# The cross-language publisher test (tests/test_interop.py) needs Node.js packages; it is
# skipped, with its reason, where npm is still missing (not root, no apt-get) or the
# registry cannot be reached.
if command -v npm >/dev/null && [ ! -d tests/interop/node_modules/zeromq ]; then
  timeout 180 npm ci --prefix tests/interop --no-audit --no-fund --silent >&2 \
    || echo "npm ci failed: the Node.js publisher test will be skipped" >&2
fi
ruff check edge_agent kernels tests bench
ruff format --check edge_agent kernels tests bench
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
