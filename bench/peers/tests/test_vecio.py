"""The .fvecs/.ivecs reader against bytes written by hand, and the recall rule on tiny cases."""

import struct

import numpy as np
import pytest

import vecio
from vecio import recall_at_k


def _write(path, rows, fmt):
    with open(path, "wb") as f:
        for r in rows:
            f.write(struct.pack("<i", len(r)))
            f.write(struct.pack("<%d%s" % (len(r), fmt), *r))


def test_read_fvecs_handmade(tmp_path):
    p = tmp_path / "a.fvecs"
    _write(p, [[1.0, 2.0, 3.0], [0.5, -0.25, 1e-3]], "f")
    a = vecio.read_fvecs(str(p))
    assert a.dtype == np.float32 and a.shape == (2, 3) and a.flags.c_contiguous
    np.testing.assert_array_equal(a, np.array([[1, 2, 3], [0.5, -0.25, 1e-3]], np.float32))


def test_read_ivecs_ragged_handmade(tmp_path):
    p = tmp_path / "t.ivecs"
    _write(p, [[7, 3, 9], [], [42], [1, 2, 3, 4, 5]], "i")
    rows = vecio.read_ivecs_rows(str(p))
    assert [r.tolist() for r in rows] == [[7, 3, 9], [], [42], [1, 2, 3, 4, 5]]
    assert all(r.dtype == np.int32 for r in rows)


def test_read_fvecs_rows_ragged_handmade(tmp_path):
    p = tmp_path / "s.fvecs"
    _write(p, [[0.9, 0.8], [], [0.5]], "f")
    rows = vecio.read_fvecs_rows(str(p))
    assert [r.tolist() for r in rows] == [[np.float32(0.9), np.float32(0.8)], [], [0.5]]


def test_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((17, 5)).astype(np.float32)
    vecio.write_fvecs(str(tmp_path / "a.fvecs"), a)
    np.testing.assert_array_equal(vecio.read_fvecs(str(tmp_path / "a.fvecs")), a)
    rows = [np.arange(n, dtype=np.int32) * 3 for n in (0, 4, 1, 100)]
    vecio.write_ivecs(str(tmp_path / "r.ivecs"), rows)
    back = vecio.read_ivecs_rows(str(tmp_path / "r.ivecs"))
    assert [r.tolist() for r in back] == [r.tolist() for r in rows]
    # a uniform 2-d int array is written the same as its rows
    m = np.arange(12, dtype=np.int32).reshape(3, 4)
    vecio.write_ivecs(str(tmp_path / "m.ivecs"), m)
    vecio.write_ivecs(str(tmp_path / "m2.ivecs"), list(m))
    assert (tmp_path / "m.ivecs").read_bytes() == (tmp_path / "m2.ivecs").read_bytes()


def test_empty_file(tmp_path):
    p = tmp_path / "e.fvecs"
    p.write_bytes(b"")
    assert vecio.read_fvecs(str(p)).shape == (0, 0)
    assert vecio.read_ivecs_rows(str(p)) == []


def test_corrupt_files(tmp_path):
    p = tmp_path / "bad.ivecs"
    p.write_bytes(struct.pack("<iii", 5, 1, 2))  # claims 5 values, has 2
    with pytest.raises(ValueError):
        vecio.read_ivecs_rows(str(p))
    p.write_bytes(struct.pack("<ii", 1, 1) + b"\x00")  # not a multiple of 4
    with pytest.raises(ValueError):
        vecio.read_ivecs_rows(str(p))
    q = tmp_path / "ragged.fvecs"
    _write(q, [[1.0, 2.0], [3.0]], "f")
    with pytest.raises(ValueError):
        vecio.read_fvecs(str(q))  # a matrix reader refuses ragged rows
    _write(q, [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0]], "f")  # 9 words: divisible by d+1=3
    with pytest.raises(ValueError):
        vecio.read_fvecs(str(q))


def test_read_truth_checks_lengths(tmp_path):
    (tmp_path / "truth").mkdir()
    vecio.write_ivecs(str(tmp_path / "truth" / "plain.ivecs"), [[1, 2], [3]])
    vecio.write_fvecs(str(tmp_path / "truth" / "plain.scores.fvecs"), [[0.9, 0.8], [0.7, 0.6]])
    with pytest.raises(ValueError):
        vecio.read_truth(str(tmp_path))


# ---- the recall rule ---------------------------------------------------------------------

T_IDS = [10, 11, 12, 13, 14]
T_SC = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)


def test_recall_exact_and_partial():
    assert recall_at_k([10, 11, 12], T_IDS, T_SC, 3) == 1.0
    assert recall_at_k([12, 10, 11], T_IDS, T_SC, 3) == 1.0  # order inside top-k is free
    assert recall_at_k([10, 11, 99], T_IDS, T_SC, 3) == pytest.approx(2 / 3)
    assert recall_at_k([13, 14, 99], T_IDS, T_SC, 3) == 0.0
    assert recall_at_k([], T_IDS, T_SC, 3) == 0.0
    assert recall_at_k([10], T_IDS, T_SC, 3) == pytest.approx(1 / 3)


def test_recall_only_first_k_of_result_count():
    assert recall_at_k([99, 98, 97, 10, 11, 12], T_IDS, T_SC, 3) == 0.0


def test_recall_duplicates_count_once():
    assert recall_at_k([10, 10, 10], T_IDS, T_SC, 3) == pytest.approx(1 / 3)


def test_recall_ties_at_kth_place_accept_either():
    ids = [1, 2, 3, 4]
    sc = np.array([0.9, 0.8, 0.8, 0.1], np.float32)  # 2 and 3 tie at the 2nd place
    assert recall_at_k([1, 2], ids, sc, 2) == 1.0
    assert recall_at_k([1, 3], ids, sc, 2) == 1.0
    assert recall_at_k([3, 2], ids, sc, 2) == 1.0  # min(1, 2/2)
    assert recall_at_k([2, 3, 1], ids, sc, 3) == 1.0
    assert recall_at_k([1, 4], ids, sc, 2) == 0.5


def test_recall_tie_tolerance_is_1e_6():
    ids = [1, 2, 3]
    within = np.array([0.9, 0.5, 0.5 - 0.9e-6], np.float64).astype(np.float32)
    assert recall_at_k([1, 3], ids, within, 2) == 1.0
    beyond = np.array([0.9, 0.5, 0.5 - 3e-6], np.float64).astype(np.float32)
    assert recall_at_k([1, 3], ids, beyond, 2) == 0.5


def test_recall_short_truth_row():
    # a filtered row with 2 faces: m = 2 even for k = 10
    assert recall_at_k([5, 6], [5, 6], np.array([0.9, 0.8], np.float32), 10) == 1.0
    assert recall_at_k([5, 6, 7, 8], [5, 6], np.array([0.9, 0.8], np.float32), 10) == 1.0
    assert recall_at_k([5, 7], [5, 6], np.array([0.9, 0.8], np.float32), 10) == 0.5


def test_recall_empty_truth_row():
    empty = np.zeros(0, np.float32)
    assert recall_at_k([], [], empty, 10) == 1.0
    assert recall_at_k([3], [], empty, 10) == 0.0


def test_mean_recall():
    truth_ids = [T_IDS, [1, 2]]
    truth_sc = [T_SC, np.array([0.5, 0.4], np.float32)]
    assert vecio.mean_recall([[10, 11], [1, 9]], truth_ids, truth_sc, 2) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        vecio.mean_recall([[1]] * 3, truth_ids, truth_sc, 2)
