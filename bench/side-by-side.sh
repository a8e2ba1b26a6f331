#!/usr/bin/env bash
# Runs two builds of facedb and its bench harness side by side, interleaved, on this machine:
# `facedb-bench durability` (ingest per wal_mode, snapshot, restarts) and `--profile quick`
# (search over HTTP and in-process), ROUNDS rounds: old then new in odd rounds, new then old in
# even ones (the second run of a round is measured slower on this machine: docs/benchmarks.md,
# the A/A run; alternating cancels that out of the paired ratios). Each build is a
# directory holding `facedb` and `facedb-bench` (release builds of the two commits). Outputs go
# to OUT/<build>-<bench>-<round>/; bench/side-by-side.py summarises them.
#
#   bench/side-by-side.sh OLD_DIR NEW_DIR [ROUNDS] [OUT]
set -euo pipefail
old=${1:?old build dir}; new=${2:?new build dir}; rounds=${3:-3}; out=${4:-target/side-by-side}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  order="old new"; (( round % 2 == 0 )) && order="new old"
  for build in $order; do
    dir=$old; [[ $build == new ]] && dir=$new
    echo "== round $round: $build durability" >&2
    "$dir/facedb-bench" durability --out "$out/$build-durability-$round" > /dev/null
    echo "== round $round: $build quick" >&2
    "$dir/facedb-bench" --profile quick --out "$out/$build-quick-$round" > /dev/null
  done
done
python3 "$(dirname "$0")/side-by-side.py" "$out" "$rounds"
