#!/usr/bin/env python3
"""A small stand-in for the Rust harness's dataset writer, for testing bench/peers only.

Writes a dataset directory in the format of bench-format.md (manifest.json, base.fvecs,
queries.fvecs, base_meta.jsonl, truth/plain.* and truth/sel-*.*) with numpy. Ground truth is
computed in float64 from the stored float32 vectors, best first, ties by id ascending.
The real datasets (and their truth) come from `facedb-bench`; do not publish figures measured
on these.

    run.sh make-test-dataset --out /tmp/ds --count 20000 --dim 128 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vecio  # noqa: E402

# bucket range filters of the format: name -> inclusive [lo, hi]
FILTERS = {
    "sel-0.1pct": (0, 0),
    "sel-1pct": (0, 9),
    "sel-10pct": (0, 99),
    "sel-50pct": (0, 499),
    "sel-100pct": (0, 999),
}


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_vectors(kind: str, count: int, dim: int, queries: int, identities: int, rng):
    """(base, queries) float32 unit vectors.

    cone: identity centroids share a common direction (two different people score ~0.7), samples
    are centroid + gaussian noise (two samples of one person score ~0.95); queries are fresh
    samples of random identities. uniform: independent uniform directions (the hard case).
    """
    if kind == "uniform":
        base = _normalise(rng.standard_normal((count, dim)))
        qs = _normalise(rng.standard_normal((queries, dim)))
        return base.astype(np.float32), qs.astype(np.float32)
    common = _normalise(rng.standard_normal((1, dim)))
    alpha = 1.53  # cos(centroid_i, centroid_j) ~ alpha^2 / (alpha^2 + 1) ~ 0.70
    centroids = _normalise(alpha * common + _normalise(rng.standard_normal((identities, dim))))
    sigma = 0.23  # cos(sample, sample') of one identity ~ 1 / (1 + sigma^2) ~ 0.95

    def samples(ident):
        noise = rng.standard_normal((ident.size, dim)) * (sigma / np.sqrt(dim))
        return _normalise(centroids[ident] + noise).astype(np.float32)

    base = samples(np.arange(count) % identities)
    qs = samples(rng.integers(0, identities, queries))
    return base, qs


def exact_topk(base: np.ndarray, qs: np.ndarray, k: int, mask=None):
    """Per query (ids, f64 scores) of its k best faces among `mask` (all when None), computed in
    float64, best first, ties by id ascending. Rows are shorter than k when fewer faces pass."""
    b64 = base.astype(np.float64)
    allowed = np.arange(base.shape[0]) if mask is None else np.flatnonzero(mask)
    sub = b64[allowed]
    ids_out, scores_out = [], []
    for start in range(0, qs.shape[0], 256):
        s = qs[start : start + 256].astype(np.float64) @ sub.T
        for row in s:
            kk = min(k, row.size)
            if kk == 0:
                ids_out.append(np.zeros(0, np.int32))
                scores_out.append(np.zeros(0, np.float64))
                continue
            # every position scoring >= the k-th best value, in ascending id order, then a stable
            # sort by descending score: ties keep ascending ids.
            kth = np.partition(row, row.size - kk)[row.size - kk]
            cand = np.flatnonzero(row >= kth)
            order = cand[np.argsort(-row[cand], kind="stable")][:kk]
            ids_out.append(allowed[order].astype(np.int32))
            scores_out.append(row[order])
    return ids_out, scores_out


def generate(out: str, count: int = 3000, dim: int = 32, queries: int = 50, kind: str = "cone",
             identities: int | None = None, seed: int = 42, k_truth: int = 100,
             filtered: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    identities = identities or max(1, count // 20)
    base, qs = make_vectors(kind, count, dim, queries, identities, rng)
    buckets = rng.integers(0, 1000, count)
    os.makedirs(os.path.join(out, "truth"), exist_ok=True)
    vecio.write_fvecs(os.path.join(out, "base.fvecs"), base)
    vecio.write_fvecs(os.path.join(out, "queries.fvecs"), qs)
    with open(os.path.join(out, "base_meta.jsonl"), "w") as f:
        for i in range(count):
            tags = ["even" if i % 2 == 0 else "odd"] + (["vip"] if i % 97 == 0 else [])
            f.write(json.dumps({"bucket": int(buckets[i]), "cam_id": f"cam-{i % 16}", "tags": tags}))
            f.write("\n")
    sets = {"plain": None}
    if filtered:
        sets.update({name: (buckets >= lo) & (buckets <= hi) for name, (lo, hi) in FILTERS.items()})
    for name, mask in sets.items():
        ids, scores = exact_topk(base, qs, k_truth, mask)
        vecio.write_ivecs(os.path.join(out, "truth", f"{name}.ivecs"), ids)
        vecio.write_fvecs(os.path.join(out, "truth", f"{name}.scores.fvecs"),
                          [s.astype(np.float32) for s in scores])
    manifest = {
        "format_version": 1,
        "name": f"{kind}-d{dim}-n{count}-s{seed}-peerstest",
        "kind": kind,
        "dim": dim,
        "count": count,
        "identities": identities if kind == "cone" else None,
        "samples_per_identity": (count // identities) if kind == "cone" else None,
        "queries": queries,
        "seed": seed,
        "k_truth": k_truth,
        "metric": "ip",
        "generator": "bench/peers/make_test_dataset.py (test data for bench/peers only)",
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="dataset directory to write")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kind", choices=["cone", "uniform"], default="cone")
    ap.add_argument("--identities", type=int, default=None, help="default: count / 20")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--k-truth", type=int, default=100)
    ap.add_argument("--no-filtered", action="store_true", help="write truth/plain only")
    a = ap.parse_args(argv)
    m = generate(a.out, a.count, a.dim, a.queries, a.kind, a.identities, a.seed, a.k_truth,
                 not a.no_filtered)
    print(f"wrote {a.out}: {m['name']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
