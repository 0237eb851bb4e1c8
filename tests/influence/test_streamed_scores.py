"""The scores stage streams (stores read by rows, the influence written block by block, ranks per
query column) and gives what the in-memory scoring gave before it did."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ifexp.cache import Artifact
from ifexp.influence import features as store
from ifexp.influence.features import NpyWriter, StoredRows, write_store
from ifexp.influence.precondition import make_preconditioner
from ifexp.influence.score import ScoreAccumulator, influence_matrix, influence_scores
from ifexp.schema import EstimatorConfig
from ifexp.stages.scores import build_scores, read_scores


def scores_before(influence: np.ndarray, query_correct: np.ndarray) -> dict[str, np.ndarray]:
    """ifexp.influence.score.influence_scores as it was before the stage streamed (the reference)."""
    n = influence.shape[0]
    order = np.argsort(influence, axis=0, kind="stable")
    ranks = np.empty_like(influence, dtype=np.float64)
    np.put_along_axis(ranks, order, np.arange(n, dtype=np.float64)[:, None].repeat(influence.shape[1], 1), axis=0)
    for column in range(influence.shape[1]):
        unique, inverse = np.unique(influence[:, column], return_inverse=True)
        if len(unique) < n:
            sums = np.bincount(inverse, weights=ranks[:, column])
            ranks[:, column] = (sums / np.bincount(inverse))[inverse]
    ranks /= max(1, n - 1)

    def mean_over(matrix, mask):
        return matrix[:, mask].mean(axis=1) if mask.any() else np.full(n, np.nan)

    return {
        "s_correct": mean_over(influence, query_correct),
        "s_incorrect": mean_over(influence, ~query_correct),
        "rank_correct": mean_over(ranks, query_correct),
        "rank_incorrect": mean_over(ranks, ~query_correct),
    }


def cholesky_before(features: np.ndarray, damping: float) -> torch.Tensor:
    """ProjectedFisher.fit's factor as it was before (features whole as float32, + lam * eye)."""
    train = torch.tensor(np.asarray(features), dtype=torch.float32)
    fisher = torch.zeros(train.shape[1], train.shape[1], dtype=torch.float64)
    for start in range(0, len(train), 4096):
        block = train[start : start + 4096].double()
        fisher += block.T @ block
    fisher /= len(train)
    lam = max(damping * float(torch.trace(fisher)) / min(train.shape), 1e-300)
    return torch.linalg.cholesky(fisher + lam * torch.eye(train.shape[1], dtype=torch.float64))


def stores(tmp_path: Path, n: int, k: int, n_queries: int, seed: int = 0) -> tuple[Artifact, Artifact, np.ndarray]:
    """A float16 training store with repeated rows (ties in every query's ranks) and a query store."""
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n, k)).astype(np.float32)
    train[n // 2 : n // 2 + 5] = train[:5]
    queries = rng.normal(size=(n_queries, k)).astype(np.float32)
    paths = {"train": tmp_path / "train", "queries": tmp_path / "queries"}
    write_store(paths["train"], [str(i) for i in range(n)], train, "float16")
    write_store(paths["queries"], [str(i) for i in range(n_queries)], queries, "float32")
    correct = rng.random(n_queries) < 0.4
    return Artifact("features", "train", paths["train"]), Artifact("features", "queries", paths["queries"]), correct


@pytest.mark.parametrize("preconditioner", ["proj_fisher", "grad_cos"])
def test_streamed_scores_equal_the_in_memory_scores_of_before(tmp_path, preconditioner):
    train, queries, correct = stores(tmp_path, n=300, k=40, n_queries=25)
    estimator = EstimatorConfig(preconditioner=preconditioner, damping=0.1)
    artifact = build_scores(tmp_path / "cache", estimator, train, queries, correct)

    # before: the training store loaded whole, the matrix in memory, ranks over the whole matrix
    features, query_features = (np.asarray(np.load(a / "features.npy")) for a in (train, queries))
    fitted = make_preconditioner(preconditioner, 0.1).fit(torch.tensor(features, dtype=torch.float32))
    influence = influence_matrix(features, query_features, fitted)
    if preconditioner == "proj_fisher":
        assert torch.equal(fitted.cholesky, cholesky_before(features, 0.1))  # the fit, bit for bit
        streamed_fit = make_preconditioner(preconditioner, 0.1).fit(StoredRows(train / "features.npy"))
        assert torch.equal(streamed_fit.cholesky, fitted.cholesky)
    np.testing.assert_array_equal(np.load(artifact / "influence.npy"), influence)  # bit for bit
    assert not list(artifact.path.glob(".*tmp"))  # the query-major copy is gone
    saved, before = read_scores(artifact), scores_before(influence, correct)
    for name in ("s_correct", "s_incorrect"):
        np.testing.assert_array_equal(saved[name], before[name])  # bit for bit
    for name in ("rank_correct", "rank_incorrect"):  # summed exactly, divided once: within an ulp or two
        np.testing.assert_allclose(saved[name], before[name], rtol=1e-14, atol=0)
        assert not np.array_equal(saved[name], np.round(saved[name]))  # ranks, not their sums
    in_memory = influence_scores(influence, correct)
    for name in saved:
        np.testing.assert_array_equal(saved[name], in_memory[name])


def test_accumulated_scores_do_not_depend_on_the_chunking():
    rng = np.random.default_rng(1)
    influence = rng.normal(size=(97, 13)).astype(np.float32)
    influence[40:45] = influence[:5]  # ties
    correct = rng.random(13) < 0.5
    whole = influence_scores(influence, correct)
    pieces = ScoreAccumulator(97, correct)
    for start in (0, 7, 30, 60):
        pieces.add_rows(start, influence[start : {0: 7, 7: 30, 30: 60, 60: 97}[start]])
    for query in reversed(range(13)):  # in another order
        pieces.add_query(query, influence[:, query].copy())
    for name, value in pieces.result().items():
        np.testing.assert_array_equal(value, whole[name])


def test_the_stage_reads_the_training_store_a_chunk_at_a_time(tmp_path, monkeypatch):
    """Bounded memory: the fit and the influence pass read the training store by slices of at most
    8,192 rows, never whole, and the matrix goes to disk, never to one array."""
    n = 20_000
    train, queries, correct = stores(tmp_path, n=n, k=8, n_queries=3)
    read = []
    slicing, whole = StoredRows.__getitem__, StoredRows.__array__

    def sliced(self, rows):
        array = slicing(self, rows)
        if self.path == train / "features.npy":
            read.append(len(array))
        return array

    def loaded_whole(self, *args, **kwargs):
        assert self.path != train / "features.npy", "the training store was read whole"
        return whole(self, *args, **kwargs)

    monkeypatch.setattr(StoredRows, "__getitem__", sliced)
    monkeypatch.setattr(StoredRows, "__array__", loaded_whole)

    def no_matrix(shape, *args, **kwargs):
        assert shape != (n, 3), "an N x Q array in memory"
        return empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", no_matrix)
    artifact = build_scores(tmp_path / "cache", EstimatorConfig(), train, queries, correct)
    assert max(read) <= 8192 and sum(read) == 2 * n  # fit + influence pass
    assert np.load(artifact / "influence.npy", mmap_mode="r").shape == (n, 3)


empty = np.empty


def test_npy_writer_and_stored_rows_round_trip(tmp_path):
    values = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    writer = NpyWriter(tmp_path / "a.npy", (5, 6), np.float16)
    writer.write(3, values[3:])
    writer.write(0, values[:3])
    writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), values.astype(np.float16))
    rows = StoredRows(tmp_path / "a.npy")
    assert rows.shape == (5, 6) and len(rows) == 5 and rows.dtype == np.float16
    np.testing.assert_array_equal(rows[1:4], values[1:4].astype(np.float16))
    np.testing.assert_array_equal(np.asarray(rows), values.astype(np.float16))
    transposed = NpyWriter(tmp_path / "t.npy", (6, 5), np.float32)
    transposed.write_columns(0, values[:2].T)
    transposed.write_columns(2, values[2:].T)
    transposed.close()
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), values.T)
    with pytest.raises(ValueError):
        NpyWriter(tmp_path / "b.npy", (2, 6), np.float32).write(1, values[:2])
    assert store.WRITE_ROWS >= 1024
