"""peers.py end to end on a small generated dataset (needs the venv's faiss and hnswlib)."""

import json
import os
import subprocess
import sys

import pytest

import make_test_dataset as mtd

PEERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "peers.py")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("peersds")
    mtd.generate(str(d), count=2000, dim=16, queries=60, seed=3, filtered=False)
    return str(d)


def run(*args):
    return subprocess.run([sys.executable, PEERS, *args], capture_output=True, text=True)


def test_bench_writes_records(ds, tmp_path):
    out = tmp_path / "peers.json"
    p = run("bench", "--dataset", ds, "--k", "10", "--threads", "2", "--out", str(out),
            "--efs", "16,128", "--M", "8", "--ef-construction", "64", "--warmup", "5")
    assert p.returncode == 0, p.stderr
    recs = json.loads(out.read_text())
    assert [(r["engine"], r["params"]["ef_search"]) for r in recs] == [
        ("faiss-flat", None), ("faiss-hnsw", 16), ("faiss-hnsw", 128), ("hnswlib", 16), ("hnswlib", 128)]
    keys = {"engine", "params", "threads", "k", "build_s", "qps", "p50_ms", "p95_ms", "p99_ms",
            "recall", "queries", "versions"}
    for r in recs:
        assert keys <= r.keys()
        assert r["threads"] == 2 and r["k"] == 10 and r["queries"] == 60
        assert set(r["versions"]) >= {"faiss", "hnswlib", "numpy"}
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["qps"] > 0
        assert 0.0 <= r["recall"] <= 1.0 and r["batch_recall"] == pytest.approx(r["recall"])
        if r["engine"] != "faiss-flat":
            assert r["params"]["M"] == 8 and r["params"]["ef_construction"] == 64
    assert recs[0]["recall"] == 1.0  # exact search
    assert recs[2]["recall"] >= 0.95 and recs[4]["recall"] >= 0.95  # ef=128 on 2000 points
    assert "faiss-hnsw" in p.stdout and "| engine" in p.stdout


def test_bench_max_queries_and_engine_subset(ds, tmp_path):
    out = tmp_path / "p.json"
    p = run("bench", "--dataset", ds, "--k", "5", "--threads", "1", "--out", str(out),
            "--engines", "faiss-flat", "--max-queries", "7", "--no-batch")
    assert p.returncode == 0, p.stderr
    (r,) = json.loads(out.read_text())
    assert r["queries"] == 7 and r["recall"] == 1.0 and "batch_qps" not in r


def test_crosscheck_ok(ds):
    p = run("crosscheck", "--dataset", ds)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(ds, "truth", "crosscheck.json")) as f:
        c = json.load(f)
    assert c["ok"] is True and c["k"] == 100 and c["recall"] == 1.0 and c["queries"] == 60
    assert c["max_score_diff"] < 1e-4 and c["faiss_version"]


def test_crosscheck_fails_on_wrong_truth(ds, tmp_path):
    import shutil

    import numpy as np

    import vecio

    bad = tmp_path / "bad"
    shutil.copytree(ds, bad)
    ids, scores = vecio.read_truth(str(bad))
    outside = next(i for i in range(2000) if i not in set(ids[0].tolist()))
    ids[0] = ids[0].copy()
    ids[0][0] = outside  # query 0's best face replaced by one outside its top 100
    vecio.write_ivecs(str(bad / "truth" / "plain.ivecs"), ids)
    p = run("crosscheck", "--dataset", str(bad))
    assert p.returncode == 1
    c = json.loads((bad / "truth" / "crosscheck.json").read_text())
    assert c["ok"] is False and c["recall"] < 1.0 and c["truth_missed"] == 1
    assert np.isfinite(c["max_score_diff"])
