#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests (which start the real
# `facedb` binary on free loopback ports and talk HTTP to it) and the property tests.
# Installs what the tests need first (tools/setup.sh). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo test --workspace --all-targets "$@"
