#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests (which start the real
# `facedb` binary on free loopback ports and talk HTTP to it), the property tests, and the
# bench peers' Python tests (in a virtualenv that bench/peers/run.sh creates from PyPI).
# Installs what the tests need first (tools/setup.sh). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo test --workspace --all-targets "$@"
bench/peers/run.sh test
