"""The test-dataset generator writes the documented format, and its truth is right."""

import json
import os

import numpy as np
import pytest

import make_test_dataset as mtd
import vecio


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    mtd.generate(str(d), count=3000, dim=32, queries=40, seed=7)
    return str(d)


def test_files_and_shapes(ds):
    with open(os.path.join(ds, "manifest.json")) as f:
        m = json.load(f)
    assert m["format_version"] == 1 and m["metric"] == "ip" and m["k_truth"] == 100
    base = vecio.read_fvecs(os.path.join(ds, "base.fvecs"))
    qs = vecio.read_fvecs(os.path.join(ds, "queries.fvecs"))
    assert base.shape == (m["count"], m["dim"]) == (3000, 32)
    assert qs.shape == (40, 32)
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(qs, axis=1), 1.0, atol=1e-5)
    with open(os.path.join(ds, "base_meta.jsonl")) as f:
        metas = [json.loads(line) for line in f]
    assert len(metas) == 3000 and all(0 <= x["bucket"] <= 999 for x in metas)


def test_cone_shape(ds):
    base = vecio.read_fvecs(os.path.join(ds, "base.fvecs")).astype(np.float64)
    ident = np.arange(3000) % 150
    same = np.sum(base[0] * base[150])  # identity 0, two samples
    assert ident[0] == ident[150] and same > 0.9
    other = base[1:150] @ base[0]  # other identities
    assert 0.5 < other.mean() < 0.85


def brute_truth(base, q, k, allowed):
    """Independent of the generator: a full lexsort on (-score, id) of every allowed face."""
    s = base[allowed].astype(np.float64) @ q.astype(np.float64)
    order = np.lexsort((allowed, -s))[:k]
    return allowed[order], s[order]


@pytest.mark.parametrize("name", ["plain", "sel-0.1pct", "sel-1pct", "sel-10pct", "sel-50pct", "sel-100pct"])
def test_truth_matches_brute_force(ds, name):
    base = vecio.read_fvecs(os.path.join(ds, "base.fvecs"))
    qs = vecio.read_fvecs(os.path.join(ds, "queries.fvecs"))
    with open(os.path.join(ds, "base_meta.jsonl")) as f:
        buckets = np.array([json.loads(line)["bucket"] for line in f])
    lo, hi = mtd.FILTERS.get(name, (0, 999))
    allowed = np.flatnonzero((buckets >= lo) & (buckets <= hi))
    ids, scores = vecio.read_truth(ds, name)
    assert len(ids) == 40
    for q in range(40):
        want_ids, want_sc = brute_truth(base, qs[q], 100, allowed)
        assert ids[q].tolist() == want_ids.tolist()
        np.testing.assert_array_equal(scores[q], want_sc.astype(np.float32))
        assert np.all(np.diff(scores[q].astype(np.float64)) <= 0)
    if name == "sel-0.1pct":
        assert all(len(r) == allowed.size < 100 for r in ids)  # ragged: ~3 faces pass


def test_ties_broken_by_ascending_id(tmp_path):
    # duplicated base vectors tie exactly: the lower id must come first
    base = np.tile(np.eye(4, dtype=np.float32), (3, 1))  # ids 0, 4, 8 are the same vector
    q = np.array([[1, 0, 0, 0]], np.float32)
    ids, scores = mtd.exact_topk(base, q, 5)
    assert ids[0][:3].tolist() == [0, 4, 8]
    assert scores[0][:3].tolist() == [1.0, 1.0, 1.0]


def test_exact_float32_search_has_recall_1(ds):
    base = vecio.read_fvecs(os.path.join(ds, "base.fvecs"))
    qs = vecio.read_fvecs(os.path.join(ds, "queries.fvecs"))
    ids, scores = vecio.read_truth(ds)
    s = qs @ base.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :10]
    assert vecio.mean_recall(list(top), ids, scores, 10) == 1.0
    # and a broken engine is caught: drop the best answer of every query
    assert vecio.mean_recall([t[1:] for t in top], ids, scores, 10) == pytest.approx(0.9)
