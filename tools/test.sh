#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the integration tests (which start the real
# `facedb` binary on free loopback ports and talk HTTP to it), the property tests, and the
# bench peers' Python tests (in a virtualenv that bench/peers/run.sh creates from PyPI).
# Installs what the tests need first (tools/setup.sh). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo test --workspace --all-targets "$@"
# The integration tests written against one server run a second time through a router over
# three `facedb shard`s (FACEDB_IT_CLUSTER=1 makes their shared server a router): a router must
# answer every request exactly as a single node does. Only the modules whose tests use the
# shared server; the others start servers of their own and would only repeat themselves.
FACEDB_IT_CLUSTER=1 cargo test --test it "$@" -- galleries:: faces:: filters:: search:: errors:: index:: \
  --skip prop_search::
bench/peers/run.sh test
