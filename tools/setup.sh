#!/usr/bin/env bash
# Installs what building and testing facedb needs on a Debian machine, idempotently:
# a C compiler (simsimd compiles its SIMD kernels from C), curl and jq (the docs' examples,
# which tests/it/doc_examples.rs runs), python3, and for the face detection/extraction
# front-end (dlib): libdlib-dev, libopenblas-dev, liblapack-dev, pkg-config, plus python3-pip
# when `python3 -m pip` is missing (tools/fetch-models.sh downloads the models with
# `pip download`). Only missing packages are installed, with one
# `apt-get install --no-install-recommends` (sudo when not root).
# Rust itself (cargo, rustc >= 1.89: Cargo.toml's rust-version) must already be installed; this
# script checks for it.
# Then it runs tools/fetch-models.sh, which fetches the dlib models into models/ and the test
# photos into tests/images/ (both git-ignored; downloads cached in
# ${XDG_CACHE_HOME:-~/.cache}/facedb/pypi/) and does nothing when they are already in place.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
for pkg in libdlib-dev libopenblas-dev liblapack-dev pkg-config; do
  # (grep without -q reads all of dpkg's output: no SIGPIPE under pipefail)
  dpkg -s "$pkg" 2>/dev/null | grep '^Status: install ok installed' >/dev/null || need_apt+=("$pkg")
done

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed. Install Rust 1.89 or newer (https://rustup.rs), then run this again." >&2
  exit 1
fi
rust_version="$(rustc --version 2>/dev/null | cut -d' ' -f2)"
if ! printf '1.89.0\n%s\n' "$rust_version" | sort -V -C; then
  echo "setup: rustc ${rust_version:-(none)} is older than 1.89, Cargo.toml's rust-version: run \`rustup update\`." >&2
  exit 1
fi

"$(dirname "$0")/fetch-models.sh"
