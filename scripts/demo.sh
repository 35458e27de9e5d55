#!/usr/bin/env bash
# The main job on the embedded default: the bundled BasicMotions model and data set.
# Usage: scripts/demo.sh [edge-agent demo options]
EXTRAS=demo
source "$(dirname "$0")/venv.sh"
exec edge-agent demo "$@"
