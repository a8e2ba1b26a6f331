#!/usr/bin/env bash
# Runs the peers of facedb (FAISS, hnswlib) from a virtualenv of their own.
#
#   bench/peers/run.sh setup                      create/update bench/peers/.venv only
#   bench/peers/run.sh test [pytest args]         the tests of bench/peers
#   bench/peers/run.sh make-test-dataset ARGS     make_test_dataset.py (test data only)
#   bench/peers/run.sh bench ARGS                 peers.py bench ...
#   bench/peers/run.sh crosscheck ARGS            peers.py crosscheck ...
#
# The first call creates bench/peers/.venv with `python3 -m venv` (or $PEERS_PYTHON) and installs
# requirements.txt into it from PyPI; later calls reuse it (it is reinstalled when
# requirements.txt or the interpreter changes). hnswlib is built from source: if g++ or the
# interpreter's headers are missing they are installed with apt-get (Debian's g++ / python3-dev),
# except for a pyenv interpreter, whose headers come with it. Setup messages go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PEERS_PYTHON:-python3}"
STAMP="$VENV/.peers-stamp"

log() { echo "peers/run.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root for: $*"; exit 1
  fi
}

apt_install() {
  log "installing $* with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Is $PY a pyenv build? (its headers live under its own prefix; never fix it with apt)
is_pyenv() {
  local prefix
  prefix="$("$PY" -c 'import sys; print(sys.base_prefix)')"
  case "$prefix" in
    */.pyenv/versions/*) return 0 ;;
    "${PYENV_ROOT:-/nonexistent}"/versions/*) return 0 ;;
  esac
  return 1
}

# Debian package with the headers of $PY: python3-dev for the distribution's python3, else
# pythonX.Y-dev.
dev_package() {
  local ver sys_ver=""
  ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ -x /usr/bin/python3 ] && sys_ver="$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$ver" = "$sys_ver" ]; then echo python3-dev; else echo "python$ver-dev"; fi
}

ensure_build_tools() {
  local missing=() inc
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  if [ ! -f "$inc/Python.h" ]; then
    if is_pyenv; then
      log "$PY is a pyenv interpreter but $inc/Python.h is missing; reinstall it with pyenv"
      exit 1
    fi
    missing+=("$(dev_package)")
  fi
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

venv_works() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

wanted_stamp() {
  {
    cat "$HERE/requirements.txt"
    "$PY" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
}

setup_venv() {
  command -v "$PY" >/dev/null 2>&1 || { log "$PY not found (set PEERS_PYTHON or install python3)"; exit 1; }
  local want
  want="$(wanted_stamp)"
  if venv_works && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    return 0
  fi
  # One setup at a time (the Rust harness and a person may both call this).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$HERE/.venv.lock"
    flock 9
    if venv_works && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
      exec 9>&-
      return 0
    fi
  fi
  local t0=$SECONDS
  if ! venv_works; then
    rm -rf "$VENV"
    log "creating $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    if ! "$PY" -m venv "$VENV"; then
      # Debian's own python3 ships venv/ensurepip separately
      if ! is_pyenv && [ "$("$PY" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
        rm -rf "$VENV"
        apt_install python3-venv
        "$PY" -m venv "$VENV"
      else
        exit 1
      fi
    fi
  fi
  ensure_build_tools
  log "installing requirements.txt (hnswlib compiles from source: about a minute)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" >"$STAMP"
  log "ready in $((SECONDS - t0))s: $("$VENV/bin/python" -c '
import faiss, numpy, importlib.metadata as m
print("faiss", faiss.__version__, "hnswlib", m.version("hnswlib"), "numpy", numpy.__version__)')"
  if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
}

cmd="${1:-}"
if [ -z "$cmd" ] || [ "$cmd" = "-h" ] || [ "$cmd" = "--help" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
shift

setup_venv
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

case "$cmd" in
  setup) ;;
  test) exec "$VENV/bin/python" -m pytest -p no:cacheprovider --rootdir "$HERE" "$HERE/tests" "$@" ;;
  make-test-dataset) exec "$VENV/bin/python" "$HERE/make_test_dataset.py" "$@" ;;
  *) exec "$VENV/bin/python" "$HERE/peers.py" "$cmd" "$@" ;;
esac
