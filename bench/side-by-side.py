#!/usr/bin/env python3
"""Summarises bench/side-by-side.sh's outputs: for every ingest and search figure of
`facedb-bench durability` and `--profile quick`, the median of the rounds of each build (with
the range) and new/old. Prints a markdown table.

    bench/side-by-side.py OUT ROUNDS
"""
import json
import os
import statistics
import sys


def durability_figures(path):
    report = json.load(open(os.path.join(path, "durability.json")))
    for run in report["ingest"]:
        key = f"durability: ingest, wal_mode {run['wal_mode']}, {run['writers']} writer(s), {run['faces']:,} faces"
        yield key, "faces/s", run["faces_per_s"]


def quick_figures(path):
    report = json.load(open(os.path.join(path, "results.json")))
    for dataset in report["datasets"]:
        for run in dataset["runs"]:
            what = [run["mode"], run["workload"]]
            for field in ("filter", "selectivity", "limit", "threshold"):
                if run.get(field) is not None:
                    what.append(f"{field} {run[field]}")
            what.append(f"concurrency {run['concurrency']}")
            if run.get("engine_threads") is not None:
                what.append(f"threads {run['engine_threads']}")
            key = "quick: " + ", ".join(str(w) for w in what)
            if run["workload"] == "ingest":
                yield key, "faces/s", run["faces_per_s"]
            else:
                yield key, "ops/s", run["throughput"]


def main():
    out, rounds = sys.argv[1], int(sys.argv[2])
    figures = {}
    order = []
    for build in ("old", "new"):
        for round_ in range(1, rounds + 1):
            for bench, read in (("durability", durability_figures), ("quick", quick_figures)):
                path = os.path.join(out, f"{build}-{bench}-{round_}")
                for key, unit, value in read(path):
                    if (key, unit) not in figures:
                        figures[(key, unit)] = {"old": [], "new": []}
                        order.append((key, unit))
                    figures[(key, unit)][build].append(value)
    print("| figure | unit | old: median (range) | new: median (range) | new / old | paired new / old: median (range) |")
    print("|---|---|---:|---:|---:|---:|")
    paired_medians = {"faces/s": [], "ops/s": []}
    for key, unit in order:
        old, new = figures[(key, unit)]["old"], figures[(key, unit)]["new"]
        if not old or not new:
            continue
        fmt = lambda xs: f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
        ratio = statistics.median(new) / statistics.median(old)
        # Each round runs old, then new: the ratio within a round cancels the machine's drift
        # between rounds.
        paired = [n / o for o, n in zip(old, new) if o > 0]
        paired_medians[unit].append(statistics.median(paired))
        print(
            f"| {key} | {unit} | {fmt(old)} | {fmt(new)} | {ratio:.3f} | "
            f"{statistics.median(paired):.3f} ({min(paired):.3f}–{max(paired):.3f}) |"
        )
    print()
    for unit, what in (("faces/s", "ingest"), ("ops/s", "search")):
        ratios = paired_medians[unit]
        if ratios:
            mean = statistics.geometric_mean(ratios)
            print(f"- {what}: geometric mean of the paired medians over {len(ratios)} figures: {mean:.3f}")


if __name__ == "__main__":
    main()
