#!/usr/bin/env python3
"""Peers of facedb on the same dataset files: FAISS (IndexFlatIP, IndexHNSWFlat) and hnswlib.

    peers.py bench --dataset DIR --k 10 --threads T --out FILE.json [--efs 16,32,...]
                   [--M 16] [--ef-construction 200] [--max-queries N]
    peers.py crosscheck --dataset DIR [--k 100]

Run it through run.sh, which provides the virtualenv. See README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = ("faiss-flat", "faiss-hnsw", "hnswlib")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="peers.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bench", help="build the peers' indexes and measure recall/latency/QPS")
    b.add_argument("--dataset", required=True, help="dataset directory (bench-format.md)")
    b.add_argument("--k", type=int, default=10)
    b.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    b.add_argument("--out", required=True, help="JSON file to write (a list of records)")
    b.add_argument("--efs", default="16,32,64,128,256,512", help="ef_search sweep for HNSW")
    b.add_argument("--M", type=int, default=16)
    b.add_argument("--ef-construction", type=int, default=200)
    b.add_argument("--max-queries", type=int, default=None, help="use the first N queries")
    b.add_argument("--engines", default=",".join(ENGINES), help="subset of " + ",".join(ENGINES))
    b.add_argument("--warmup", type=int, default=50,
                   help="untimed queries before each timed pass (default 50)")
    b.add_argument("--no-batch", action="store_true",
                   help="skip the batch pass (all queries in one call, T threads)")

    c = sub.add_parser("crosscheck", help="FAISS IndexFlatIP vs truth/plain; writes truth/crosscheck.json")
    c.add_argument("--dataset", required=True)
    c.add_argument("--k", type=int, default=None, help="default: the manifest's k_truth (100)")
    c.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return ap.parse_args(argv)


# Thread counts must be fixed before numpy / faiss load their OpenMP and BLAS runtimes.
ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, HERE)
import vecio  # noqa: E402


def log(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def versions() -> dict:
    from importlib.metadata import version

    import faiss

    v = {"faiss": faiss.__version__, "hnswlib": version("hnswlib"), "numpy": np.__version__,
         "python": sys.version.split()[0]}
    try:
        v["faiss_compile_options"] = faiss.get_compile_options()
    except Exception:  # older builds
        pass
    return v


class Progress:
    """A line on stderr at most every `every` seconds."""

    def __init__(self, what: str, total: int, every: float = 5.0):
        self.what, self.total, self.every = what, total, every
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        el = now - self.t0
        eta = el / done * (self.total - done) if done else float("nan")
        log(f"{self.what}: {done}/{self.total} ({100.0 * done / max(1, self.total):.0f}%), "
            f"{el:.0f}s elapsed, eta {eta:.0f}s")


# --------------------------------------------------------------------------------------------
# dataset


def load_dataset(d: str, max_queries: int | None):
    manifest = {}
    mpath = os.path.join(d, "manifest.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    t0 = time.perf_counter()
    base = vecio.read_fvecs(os.path.join(d, "base.fvecs"))
    queries = vecio.read_fvecs(os.path.join(d, "queries.fvecs"))
    truth_ids, truth_scores = vecio.read_truth(d, "plain")
    if base.shape[0] == 0 or queries.shape[0] == 0:
        raise SystemExit(f"{d}: empty base or queries")
    if base.shape[1] != queries.shape[1]:
        raise SystemExit(f"{d}: base has d={base.shape[1]} but queries d={queries.shape[1]}")
    if manifest.get("dim") not in (None, base.shape[1]) or manifest.get("count") not in (None, base.shape[0]):
        raise SystemExit(f"{d}: manifest says {manifest.get('count')} x {manifest.get('dim')}, "
                         f"base.fvecs is {base.shape[0]} x {base.shape[1]}")
    if len(truth_ids) < queries.shape[0]:
        raise SystemExit(f"{d}: {queries.shape[0]} queries but {len(truth_ids)} truth rows")
    if max_queries is not None:
        queries = queries[:max_queries]
    nq = queries.shape[0]
    truth_ids, truth_scores = truth_ids[:nq], truth_scores[:nq]
    sample = base[:: max(1, base.shape[0] // 1000)]
    worst = float(np.max(np.abs(np.linalg.norm(sample, axis=1) - 1.0)))
    if worst > 1e-3:
        log(f"warning: base vectors are not unit-normalised (|norm - 1| up to {worst:.3g})")
    log(f"loaded {d}: {base.shape[0]} x {base.shape[1]}, {nq} queries, "
        f"{time.perf_counter() - t0:.1f}s")
    name = manifest.get("name") or os.path.basename(os.path.normpath(d))
    return name, base, np.ascontiguousarray(queries), truth_ids, truth_scores


# --------------------------------------------------------------------------------------------
# engines: build(base) -> None; search_one(q (1, d)) -> ids; search_batch(Q) -> list of ids


def chunked_add(what: str, n: int, add) -> None:
    step = int(min(50_000, max(2_000, n // 100)))
    prog = Progress(f"{what} build", n)
    for s in range(0, n, step):
        add(s, min(n, s + step))
        prog.update(min(n, s + step))


class FaissFlat:
    name = "faiss-flat"

    def __init__(self, d, k, threads, **_):
        import faiss

        self.faiss, self.k = faiss, k
        self.index = faiss.IndexFlatIP(d)

    def build(self, base):
        chunked_add(self.name, base.shape[0], lambda s, e: self.index.add(base[s:e]))

    def set_ef(self, ef):
        pass

    def search_one(self, q):
        _, ids = self.index.search(q, self.k)
        return ids[0]

    def search_batch(self, qs):
        _, ids = self.index.search(qs, self.k)
        return list(ids)


class FaissHNSW(FaissFlat):
    name = "faiss-hnsw"

    def __init__(self, d, k, threads, M, ef_construction):
        import faiss

        self.faiss, self.k = faiss, k
        self.index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction

    def set_ef(self, ef):
        self.index.hnsw.efSearch = ef


class Hnswlib:
    name = "hnswlib"

    def __init__(self, d, k, threads, M, ef_construction):
        import hnswlib

        self.k, self.threads = k, threads
        self.d, self.M, self.efc = d, M, ef_construction
        self.index = hnswlib.Index(space="ip", dim=d)

    def build(self, base):
        n = base.shape[0]
        self.index.init_index(max_elements=n, ef_construction=self.efc, M=self.M, random_seed=100)
        self.index.set_num_threads(self.threads)
        chunked_add(self.name, n, lambda s, e: self.index.add_items(
            base[s:e], np.arange(s, e, dtype=np.int64), num_threads=self.threads))

    def set_ef(self, ef):
        self.index.set_ef(ef)

    def search_one(self, q):
        # hnswlib runs a call of <= 4 * num_threads rows on the calling thread
        ids, _ = self.index.knn_query(q, k=self.k, num_threads=self.threads)
        return ids[0]

    def search_batch(self, qs):
        ids, _ = self.index.knn_query(qs, k=self.k, num_threads=self.threads)
        return list(ids)


def valid(ids) -> np.ndarray:
    ids = np.asarray(ids)
    return ids[ids >= 0]  # FAISS pads with -1 when it has fewer than k results


def measure(engine, queries, truth_ids, truth_scores, k, warmup, batch, label):
    """One timed pass, queries one at a time; then (optionally) one batch call."""
    nq = queries.shape[0]
    singles = [queries[i : i + 1] for i in range(nq)]  # contiguous (1, d) views, made untimed
    for i in range(min(warmup, nq)):
        engine.search_one(singles[i])
    lat_ns = np.empty(nq, dtype=np.int64)
    results = [None] * nq
    prog = Progress(f"{label} search", nq)
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t_start = clock()
        for i in range(nq):
            t0 = clock()
            ids = engine.search_one(singles[i])
            t1 = clock()
            lat_ns[i] = t1 - t0
            results[i] = ids
            if (i & 255) == 255:
                prog.update(i + 1)
        total_s = (clock() - t_start) / 1e9
    finally:
        if gc_was:
            gc.enable()
    lat_ms = lat_ns / 1e6
    out = {
        "qps": nq / total_s,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p95_ms": float(np.percentile(lat_ms, 95)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "max_ms": float(lat_ms.max()),
        "mean_ms": float(lat_ms.mean()),
        "recall": vecio.mean_recall([valid(r) for r in results], truth_ids, truth_scores, k),
    }
    if batch:
        t0 = time.perf_counter()
        bres = engine.search_batch(queries)
        bt = time.perf_counter() - t0
        out["batch_qps"] = nq / bt
        out["batch_recall"] = vecio.mean_recall([valid(r) for r in bres], truth_ids, truth_scores, k)
    return out


def fmt_table(records) -> str:
    head = ["engine", "M", "efC", "ef", "thr", "k", "build_s", "recall", "qps", "p50_ms",
            "p95_ms", "p99_ms", "batch_qps"]
    rows = []
    for r in records:
        p = r["params"]
        rows.append([
            r["engine"], p["M"] if p["M"] is not None else "-",
            p["ef_construction"] if p["ef_construction"] is not None else "-",
            p["ef_search"] if p["ef_search"] is not None else "-",
            r["threads"], r["k"], f"{r['build_s']:.2f}", f"{r['recall']:.4f}", f"{r['qps']:.0f}",
            f"{r['p50_ms']:.3f}", f"{r['p95_ms']:.3f}", f"{r['p99_ms']:.3f}",
            f"{r['batch_qps']:.0f}" if "batch_qps" in r else "-",
        ])
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i])  # noqa: E731
                                           for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def cmd_bench(a) -> int:
    import faiss

    faiss.omp_set_num_threads(a.threads)
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; known: {', '.join(ENGINES)}")
    efs = [int(x) for x in a.efs.split(",") if x.strip()]
    if a.k <= 0 or a.threads <= 0 or not efs or min(efs) <= 0:
        raise SystemExit("--k, --threads and every --efs value must be positive")
    name, base, queries, truth_ids, truth_scores = load_dataset(a.dataset, a.max_queries)
    if a.k > min(len(t) for t in truth_ids):
        log(f"warning: k={a.k} exceeds some truth rows (the rule then uses m = |T|)")
    n, d = base.shape
    vers = versions()
    log(f"threads={a.threads} k={a.k} M={a.M} ef_construction={a.ef_construction} efs={efs} "
        f"faiss {vers['faiss']} ({vers.get('faiss_compile_options', '?')}), hnswlib {vers['hnswlib']}")
    classes = {"faiss-flat": FaissFlat, "faiss-hnsw": FaissHNSW, "hnswlib": Hnswlib}
    records = []
    for ename in engines:
        cls = classes[ename]
        flat = ename == "faiss-flat"
        gc.collect()
        rss0 = rss_mb()
        eng = cls(d, a.k, a.threads, M=a.M, ef_construction=a.ef_construction)
        log(f"{ename}: building on {n} vectors")
        t0 = time.perf_counter()
        eng.build(base)
        build_s = time.perf_counter() - t0
        rss1 = rss_mb()
        index_mb = (rss1 - rss0) if rss0 is not None and rss1 is not None else None
        log(f"{ename}: built in {build_s:.1f}s" + (f", ~{index_mb:.0f} MB" if index_mb is not None else ""))
        for ef in ([None] if flat else efs):
            eng.set_ef(ef)
            label = ename + ("" if flat else f" ef={ef}")
            m = measure(eng, queries, truth_ids, truth_scores, a.k, a.warmup, not a.no_batch, label)
            rec = {
                "engine": ename,
                "params": {"M": None if flat else a.M,
                           "ef_construction": None if flat else a.ef_construction,
                           "ef_search": ef},
                "threads": a.threads,
                "k": a.k,
                "build_s": build_s,
                "qps": m["qps"],
                "p50_ms": m["p50_ms"],
                "p95_ms": m["p95_ms"],
                "p99_ms": m["p99_ms"],
                "recall": m["recall"],
                "queries": int(queries.shape[0]),
                "versions": vers,
                # extras (readers ignore what they do not know)
                "max_ms": m["max_ms"],
                "mean_ms": m["mean_ms"],
                "dataset": name,
                "count": int(n),
                "dim": int(d),
                "index_mb": index_mb,
            }
            if "batch_qps" in m:
                rec["batch_qps"] = m["batch_qps"]
                rec["batch_recall"] = m["batch_recall"]
            records.append(rec)
            log(f"{label}: recall {m['recall']:.4f}, {m['qps']:.0f} qps, p50 {m['p50_ms']:.3f} ms")
        del eng
        gc.collect()
    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(records, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.out)
    print(f"peers on {name} ({n} x {d}, {queries.shape[0]} queries), k={a.k}, threads={a.threads}; "
          f"qps/p* = one query at a time, batch_qps = all queries in one call")
    print(fmt_table(records))
    log(f"wrote {a.out}")
    return 0


def cmd_crosscheck(a) -> int:
    import faiss

    faiss.omp_set_num_threads(a.threads)
    manifest = {}
    mpath = os.path.join(a.dataset, "manifest.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    k = a.k or int(manifest.get("k_truth", 100))
    _, base, queries, truth_ids, truth_scores = load_dataset(a.dataset, None)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    t0 = time.perf_counter()
    scores, ids = index.search(queries, k)
    log(f"crosscheck: FAISS IndexFlatIP top-{k} of {queries.shape[0]} queries in "
        f"{time.perf_counter() - t0:.1f}s")
    recalls = np.array([vecio.recall_at_k(valid(ids[q]), truth_ids[q], truth_scores[q], k)
                        for q in range(queries.shape[0])])
    max_diff = 0.0
    for q in range(queries.shape[0]):
        m = min(k, len(truth_ids[q]))
        if m:
            diff = np.abs(scores[q, :m].astype(np.float64) - truth_scores[q][:m].astype(np.float64))
            max_diff = max(max_diff, float(diff.max()))
    # Why a query scored below 1: rescore FAISS's ids that the rule did not accept, in f64,
    # against the truth's last place s = T[m-1]. Truth rows stop at k_truth ids, so at k ==
    # k_truth a face tied with the last one (within 1e-6) may be listed by FAISS and not by the
    # row; such a tie is not an error of the truth (the rule's intent: ties at the k-th place
    # do not penalise either choice), so "ok" accepts it. Any other disagreement fails.
    #   ties_beyond_truth: every such id is within 1e-6 of s: a tie at the k-th place with a face
    #       the truth row does not list (happens when k == k_truth: rows stop at k_truth ids);
    #   truth_missed: some id scores above s + 1e-6: the truth is wrong;
    #   faiss_misordered: some id scores below s - 1e-6: FAISS's float32 order differs.
    diag = {"ties_beyond_truth": 0, "truth_missed": 0, "faiss_misordered": 0}
    b64q = queries.astype(np.float64)
    for q in np.flatnonzero(recalls < 1.0):
        m = min(k, len(truth_ids[q]))
        if m == 0:
            continue
        s = float(truth_scores[q][m - 1])
        thr = s - vecio.TIE_EPS
        accepted = {int(i) for i, sc in zip(truth_ids[q], truth_scores[q]) if float(sc) >= thr}
        extra = [int(i) for i in valid(ids[q])[:k] if int(i) not in accepted]
        true = base[extra].astype(np.float64) @ b64q[q]
        if np.any(true > s + vecio.TIE_EPS):
            diag["truth_missed"] += 1
        elif np.any(true < thr):
            diag["faiss_misordered"] += 1
        else:
            diag["ties_beyond_truth"] += 1
    recall = float(recalls.mean())
    ok = bool(diag["truth_missed"] == 0 and diag["faiss_misordered"] == 0 and max_diff < 1e-4)
    report = {
        "k": k,
        "recall": recall,
        "max_score_diff": max_diff,
        "queries": int(queries.shape[0]),
        "faiss_version": faiss.__version__,
        "ok": ok,
        "queries_below_1": int(np.sum(recalls < 1.0)),
        "min_recall": float(recalls.min()),
        **diag,
    }
    path = os.path.join(a.dataset, "truth", "crosscheck.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps(report))
    if not ok:
        log(f"crosscheck FAILED: recall {recall} (queries below 1: {report['queries_below_1']}: "
            f"{diag['ties_beyond_truth']} ties with faces beyond the truth's last row, "
            f"{diag['truth_missed']} truth missed a better face, {diag['faiss_misordered']} FAISS "
            f"float32 order), max score diff {max_diff:.3g} (must be < 1e-4); wrote {path}")
        return 1
    log(f"crosscheck ok (recall {recall}; {diag['ties_beyond_truth']} queries with ties beyond the "
        f"truth row's end); wrote {path}")
    return 0


def main() -> int:
    a = ARGS
    try:
        return {"bench": cmd_bench, "crosscheck": cmd_crosscheck}[a.cmd](a)
    except (OSError, ValueError) as e:  # missing or malformed dataset files
        log(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
