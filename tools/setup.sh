#!/usr/bin/env bash
# Installs what building and testing facedb needs on a Debian machine, idempotently:
# a C compiler (simsimd compiles its SIMD kernels from C) and curl (used by the docs' examples).
# Rust itself (cargo, rustc >= 1.85) must already be installed; this script checks for it.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed. Install Rust 1.85 or newer (https://rustup.rs), then run this again." >&2
  exit 1
fi
