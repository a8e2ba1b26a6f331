#!/usr/bin/env bash
# Checks that the engine builds and tests without dlib: the unit tests and clippy of the crate
# without its `detect` feature (no C++ shim, no libdlib), on a machine made to look as if
# libdlib-dev were not installed. pkg-config is pointed at an empty directory, so `dlib-1` is
# not found (checked first: a build that still found dlib would prove nothing). It builds in
# target/nodlib, so the default build's artifacts in target/ stay valid. Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
empty="$(mktemp -d)"
trap 'rmdir "$empty"' EXIT
export PKG_CONFIG_PATH="$empty" PKG_CONFIG_LIBDIR=/nonexistent
if pkg-config --exists dlib-1 2>/dev/null; then
  echo "test-without-dlib: pkg-config still finds dlib-1 with PKG_CONFIG_PATH=$empty and PKG_CONFIG_LIBDIR=/nonexistent" >&2
  exit 1
fi
export CARGO_TARGET_DIR=target/nodlib
cargo test --lib --no-default-features "$@"
cargo clippy --lib --tests --no-default-features -- -D warnings
