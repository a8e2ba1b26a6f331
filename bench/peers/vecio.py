"""Readers/writers for the TEXMEX .fvecs/.ivecs files of a facedb-bench dataset directory, and
the recall@k rule of /bench-format.md (the rule both harnesses implement; keep them identical).

Only numpy and the standard library: imported by peers.py (after it has set the thread-count
environment variables), by make_test_dataset.py and by the tests.
"""

from __future__ import annotations

import os

import numpy as np

# Tolerance of the recall rule: a result id counts as correct when its true score is at least
# score(T[m-1]) - TIE_EPS (so ties at the k-th place do not penalise either choice).
TIE_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# reading


def _raw_rows(path: str, what: str) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(offset in int32 words, length) of every row of a .fvecs/.ivecs file (ragged allowed),
    and the file's words."""
    if os.path.getsize(path) % 4:
        raise ValueError(f"{path}: size {os.path.getsize(path)} is not a multiple of 4")
    words = np.fromfile(path, dtype="<i4")
    rows = []
    pos, n = 0, words.size
    while pos < n:
        d = int(words[pos])
        if d < 0 or pos + 1 + d > n:
            raise ValueError(
                f"{path}: corrupt {what} file: row {len(rows)} at byte {4 * pos} "
                f"claims {d} values, {n - pos - 1} left"
            )
        rows.append((pos + 1, d))
        pos += 1 + d
    return rows, words


def read_fvecs(path: str) -> np.ndarray:
    """A .fvecs file whose rows all have the same length, as a C-contiguous (n, d) float32 array.

    Uses a memory map and one copy, so a 1M x 128 file (512 MB) costs 512 MB, not 1 GB.
    """
    size = os.path.getsize(path)
    if size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if size % 4:
        raise ValueError(f"{path}: size {size} is not a multiple of 4")
    mm = np.memmap(path, dtype="<i4", mode="r")
    d = int(mm[0])
    if d <= 0 or mm.size % (d + 1):
        raise ValueError(f"{path}: not a uniform .fvecs file (first row says d={d}, {mm.size} words)")
    table = mm.reshape(-1, d + 1)
    bad = np.flatnonzero(table[:, 0] != d)
    if bad.size:
        raise ValueError(f"{path}: row {int(bad[0])} has d={int(table[bad[0], 0])}, expected {d}")
    out = np.ascontiguousarray(table[:, 1:]).view("<f4").astype(np.float32, copy=False)
    del table, mm
    return out


def read_ivecs_rows(path: str) -> list[np.ndarray]:
    """A .ivecs file as a list of int32 arrays (rows may differ in length: filtered truth)."""
    rows, words = _raw_rows(path, "ivecs")
    return [words[o : o + d].astype(np.int32) for o, d in rows]


def read_fvecs_rows(path: str) -> list[np.ndarray]:
    """A .fvecs file as a list of float32 arrays (rows may differ in length: filtered scores)."""
    rows, words = _raw_rows(path, "fvecs")
    floats = words.view("<f4")
    return [floats[o : o + d].astype(np.float32) for o, d in rows]


def read_truth(dataset_dir: str, name: str = "plain") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """truth/<name>.ivecs and truth/<name>.scores.fvecs: per query (ids, scores), best first."""
    ids = read_ivecs_rows(os.path.join(dataset_dir, "truth", f"{name}.ivecs"))
    scores = read_fvecs_rows(os.path.join(dataset_dir, "truth", f"{name}.scores.fvecs"))
    if len(ids) != len(scores):
        raise ValueError(f"truth/{name}: {len(ids)} id rows but {len(scores)} score rows")
    for q, (i, s) in enumerate(zip(ids, scores)):
        if len(i) != len(s):
            raise ValueError(f"truth/{name}: query {q} has {len(i)} ids but {len(s)} scores")
    return ids, scores


# --------------------------------------------------------------------------------------------
# writing (the test-dataset generator and the tests)


def write_fvecs(path: str, rows) -> None:
    """Rows of float32 values (a 2-d array or a list of 1-d arrays of any lengths)."""
    _write_rows(path, rows, "<f4")


def write_ivecs(path: str, rows) -> None:
    """Rows of int32 values (a 2-d array or a list of 1-d arrays of any lengths)."""
    _write_rows(path, rows, "<i4")


def _write_rows(path: str, rows, dtype: str) -> None:
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        n, d = rows.shape
        table = np.empty((n, d + 1), dtype="<i4")
        table[:, 0] = d
        table[:, 1:] = rows.astype(dtype).view("<i4")
        table.tofile(path)
        return
    with open(path, "wb") as f:
        for r in rows:
            r = np.asarray(r).astype(dtype)
            f.write(np.int32(r.size).astype("<i4").tobytes())
            f.write(r.tobytes())


# --------------------------------------------------------------------------------------------
# recall


def recall_at_k(result_ids, truth_ids, truth_scores, k: int) -> float:
    """Recall@k of one result list by the rule of bench-format.md.

    result_ids: the engine's answer, best first (only real ids: callers drop FAISS's -1 padding).
    truth_ids, truth_scores: the query's truth row T, best first.
    Let m = min(k, |T|). If m = 0: 1 when the result is empty, else 0. Otherwise the correct ids
    are every id of T whose score is >= score(T[m-1]) - 1e-6, and the recall is
    min(1, |R[:k] & correct| / m). Scores are compared in f64 (the stored f32 values, widened).
    """
    m = min(k, len(truth_ids))
    r = [int(x) for x in list(result_ids)[:k]]
    if m == 0:
        return 1.0 if len(list(result_ids)) == 0 else 0.0
    scores = np.asarray(truth_scores, dtype=np.float64)
    threshold = float(scores[m - 1]) - TIE_EPS
    correct = {int(i) for i in np.asarray(truth_ids)[scores >= threshold]}
    return min(1.0, len(set(r) & correct) / m)


def mean_recall(results, truth_ids, truth_scores, k: int) -> float:
    """Mean of recall_at_k over queries; results[q] pairs with truth row q."""
    if len(results) == 0:
        raise ValueError("no queries")
    if len(results) > len(truth_ids):
        raise ValueError(f"{len(results)} results but only {len(truth_ids)} truth rows")
    total = 0.0
    for q, r in enumerate(results):
        total += recall_at_k(r, truth_ids[q], truth_scores[q], k)
    return total / len(results)
