#!/usr/bin/env bash
# Fails when two top-level modules of src/ use each other, directly or through others (the
# layers of docs/architecture.md must stay acyclic). `--list` also prints every module's uses.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 tools/check-layers.py "$@" src
