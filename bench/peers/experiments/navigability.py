"""How navigable is face-like data for HNSW (hnswlib)? An experiment, not part of the suite.

Data like the harness's `cone` kind (identities independent around a common direction, 10
samples each), 100k x 128-d, and variants where identities come in families sharing a
direction ("fam:FAMILIES:BETA"). Prints recall@10 against brute force and single-thread QPS
at a few ef. M and ef_construction come from the environment (M, EFC; 16 and 200 by default).

    M=16 bench/peers/.venv/bin/python bench/peers/experiments/navigability.py cone fam:100:0.6
    M=48 EFC=400 bench/peers/.venv/bin/python bench/peers/experiments/navigability.py cone

Finding (2026-11-21, see docs/benchmarks.md): with M=16, recall on cone plateaus near 0.92
however large ef is: each point's 10 same-identity samples (cosine 0.95 against 0.73 for
everyone else) fill its neighbour list and the selection heuristic prunes the links between
identities, so some identities cannot be reached. M=32 reaches 0.99 at ef=256, M=48 0.995 at
ef=64.
"""
import os
import sys
import time

import hnswlib
import numpy as np

rng = np.random.default_rng(1)
D, IDS, PER, Q = 128, 10000, 10, 500
def unit(x): return x / np.linalg.norm(x, axis=-1, keepdims=True)
def orth(c, n):
    u = rng.standard_normal((n, D)); u -= (u @ c)[:, None] * c; return unit(u)
c = unit(rng.standard_normal(D))
def centroids(kind):
    alpha = rng.uniform(0.80, 0.95, IDS)
    if kind == "cone":
        u = orth(c, IDS)
    else:  # families: FAM directions, each identity = family direction + own part
        FAM, beta = int(kind.split(":")[1]), float(kind.split(":")[2])
        fam = orth(c, FAM)
        own = orth(c, IDS)
        pick = rng.integers(0, FAM, IDS)
        u = unit(beta * fam[pick] + np.sqrt(1 - beta**2) * own)
    return unit(alpha[:, None] * c + np.sqrt(1 - alpha[:, None]**2) * u)
def samples(cent, idx):
    noise = rng.standard_normal((len(idx), D)) * (0.229 / np.sqrt(D))
    return unit(cent[idx] + noise).astype(np.float32)
for kind in sys.argv[1:]:
    cent = centroids(kind)
    data = samples(cent, np.arange(IDS * PER) % IDS)
    qi = rng.integers(0, IDS, Q); q = samples(cent, qi)
    sims = q @ data.T
    truth = np.argsort(-sims, axis=1)[:, :10]
    diff = (data[:2000] @ data[2000:4000].T); 
    idx = hnswlib.Index(space="ip", dim=D); idx.init_index(max_elements=len(data), M=int(os.environ.get("M", "16")), ef_construction=int(os.environ.get("EFC", "200")))
    idx.set_num_threads(2); t = time.time(); idx.add_items(data, np.arange(len(data))); bt = time.time() - t
    out = [f"{kind}: diff-identity cos mean {diff.mean():.3f} p5 {np.percentile(diff,5):.3f} p95 {np.percentile(diff,95):.3f}; build {bt:.1f}s"]
    idx.set_num_threads(1)
    for ef in (64, 256, 1024):
        idx.set_ef(ef); t = time.time(); labels, _ = idx.knn_query(q, k=10); dt = time.time() - t
        rec = np.mean([len(set(labels[i]) & set(truth[i])) / 10 for i in range(Q)])
        out.append(f"  ef={ef}: recall@10 {rec:.3f}, {Q/dt:.0f} QPS")
    print("\n".join(out), flush=True)
