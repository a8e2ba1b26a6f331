#!/usr/bin/env bash
# Builds facedb (release) and runs `facedb serve` with the embedded defaults:
# listen 127.0.0.1:18411, data under ./data, the default schema, 128-d facens.
# Extra arguments go to `facedb serve` (see `facedb serve --help`). A data dir keeps the schema
# it was created with: with another --schema, give another --data-dir too, e.g.
#   tools/serve.sh --schema schema/example.yaml --data-dir data-example
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo build --release --bin facedb
exec target/release/facedb serve "$@"
