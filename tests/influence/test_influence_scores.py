"""Preconditioners, influence matrix, s_C / s_I / rank scores, the sign convention, and scores.csv."""

import csv

import numpy as np
import pytest
import torch
from helpers.jobs import SCORES_CSV_COLUMNS

from ifexp.influence.capture import LayerRecorder, forward_backward, per_example_losses, trainable_linears
from ifexp.influence.features import extract_features, read_store, write_store
from ifexp.influence.precondition import make_preconditioner
from ifexp.influence.project import ExactProjector
from ifexp.influence.score import (
    influence_matrix,
    influence_scores,
    lowrank_queries,
    percentile_ranks,
    self_influence,
)
from ifexp.models import load_model, load_tokenizer
from ifexp.outputs import write_scores_csv
from ifexp.schema import TrainConfig
from ifexp.train import apply_lora, collate, encode_examples


def test_proj_fisher_equals_explicit_inverse():
    rng = np.random.default_rng(0)
    train, queries = rng.normal(size=(50, 12)).astype(np.float32), rng.normal(size=(4, 12)).astype(np.float32)
    preconditioner = make_preconditioner("proj_fisher", damping=0.05).fit(torch.tensor(train))
    fisher = train.astype(np.float64).T @ train / len(train)
    lam = 0.05 * np.trace(fisher) / 12
    expected = train @ np.linalg.inv(fisher + lam * np.eye(12)) @ queries.T
    np.testing.assert_allclose(influence_matrix(train, queries, preconditioner, chunk=7), expected, rtol=1e-4)


def test_grad_dot_and_grad_cos():
    train = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    queries = np.array([[2.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(influence_matrix(train, queries, make_preconditioner("grad_dot"))[:, 0], [2, 0, 6])
    np.testing.assert_allclose(
        influence_matrix(train, queries, make_preconditioner("grad_cos"))[:, 0], [1, 0, 0.6], rtol=1e-6
    )


def test_ranks_and_scores():
    influence = np.array([[3.0, -1.0, 0.0], [1.0, 5.0, 0.0], [2.0, 0.0, 1.0]])
    ranks = percentile_ranks(influence)
    np.testing.assert_allclose(ranks[:, 0], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(ranks[:, 2], [0.25, 0.25, 1.0])  # ties share the average rank
    scores = influence_scores(influence, np.array([True, True, False]))
    np.testing.assert_allclose(scores["s_correct"], [1.0, 3.0, 1.0])
    np.testing.assert_allclose(scores["s_incorrect"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(scores["rank_score"], scores["rank_correct"] - scores["rank_incorrect"])
    assert np.isnan(influence_scores(influence, np.array([True, True, True]))["s_incorrect"]).all()


def test_sign_positive_influence_means_training_on_d_lowers_loss_on_q(
    tiny_model, tiny_model_cfg, small_splits, tmp_path
):
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model), tiny_model_cfg, TrainConfig(lora_r=4, lora_alpha=8))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    # float64 so that a small step's loss change is far above rounding error
    model = model.double()
    tokenizer = load_tokenizer(tiny_model)
    encoded = encode_examples(tokenizer, small_splits["train"][:6], tiny_model_cfg, "truncate")
    rows = encoded.rows()
    layers = trainable_linears(model)
    projector = ExactProjector({n: tuple(m.weight.shape) for n, m in layers.items()})
    features, _ = extract_features(model, rows, projector, lambda b: collate(b, tokenizer.pad_token_id), batch_size=4)
    write_store(tmp_path / "store", [str(i) for i in range(6)], features)
    ids, stored = read_store(tmp_path / "store")
    assert ids == [str(i) for i in range(6)] and np.array_equal(stored, features)

    query, train_row = rows[0], rows[1]
    predicted = influence_matrix(features[1:2], features[0:1], make_preconditioner("grad_dot"))[0, 0]

    def query_loss():
        with torch.no_grad():
            batch = collate([query], tokenizer.pad_token_id)
            return per_example_losses(model(input_ids=batch["input_ids"]).logits, batch["labels"]).item()

    before = query_loss()
    recorder = LayerRecorder(layers)
    forward_backward(model, recorder, collate([train_row], tokenizer.pad_token_id))
    step = 1e-2
    with torch.no_grad():  # one SGD step on the training example d
        for name, layer in layers.items():
            grad = torch.einsum("bto,bti->oi", recorder.output_grads[name], recorder.inputs[name])
            layer.weight -= step * grad
    change = query_loss() - before
    assert predicted != 0
    assert np.sign(change) == -np.sign(predicted)
    assert change == pytest.approx(-step * predicted, rel=0.1)


def test_scores_csv_follows_the_contract(tmp_path):
    influence = np.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 0.0]])
    scores = influence_scores(influence, np.array([True, False]))
    write_scores_csv(
        tmp_path / "scores.csv",
        ["a", "b", "c"],
        scores,
        perplexity=[1.5, 2.0, 3.0],
        kept=[True, False, True],
        flaw=["", "truncated", ""],
    )
    with (tmp_path / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*SCORES_CSV_COLUMNS, "flaw"]
    assert [r["example_id"] for r in rows] == ["a", "b", "c"]
    assert float(rows[1]["s_correct"]) == 2.0 and float(rows[1]["s_incorrect"]) == 0.5
    assert [r["kept"] for r in rows] == ["1", "0", "1"] and rows[1]["flaw"] == "truncated"
    write_scores_csv(tmp_path / "nan.csv", ["a", "b", "c"], influence_scores(influence, np.array([True, True])))
    assert (tmp_path / "nan.csv").read_text().splitlines()[1].split(",")[2] == ""  # no Q_I: empty, not 'nan'


def test_scores_csv_has_trace_answer_correct_after_the_contract_columns(tmp_path):
    scores = influence_scores(np.array([[1.0, -1.0], [2.0, 0.5]]), np.array([True, False]))
    write_scores_csv(
        tmp_path / "s.csv", ["a", "b"], scores, flaw=["", "x"], trace_answer_correct=np.array([True, False])
    )
    with (tmp_path / "s.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*SCORES_CSV_COLUMNS, "flaw", "trace_answer_correct"]
    assert [r["trace_answer_correct"] for r in rows] == ["1", "0"]
    write_scores_csv(tmp_path / "t.csv", ["a", "b"], scores, trace_answer_correct=[True, True])
    assert (tmp_path / "t.csv").read_text().splitlines()[0].endswith(",kept,trace_answer_correct")
    write_scores_csv(tmp_path / "u.csv", ["a", "b"], scores)
    assert (tmp_path / "u.csv").read_text().splitlines()[0].endswith(",perplexity,kept")


def test_lowrank_queries_are_the_best_rank_r_approximation():
    rng = np.random.default_rng(1)
    # queries near a rank-3 subspace, plus a little noise
    queries = (rng.normal(size=(20, 3)) @ rng.normal(size=(3, 30)) + 0.01 * rng.normal(size=(20, 30))).astype(
        np.float32
    )
    train = rng.normal(size=(40, 30)).astype(np.float32)
    grad_dot = make_preconditioner("grad_dot")
    exact = influence_matrix(train, queries, grad_dot)
    np.testing.assert_allclose(influence_matrix(train, queries, grad_dot, query_rank=20), exact, rtol=1e-5)
    rank_3 = influence_matrix(train, queries, grad_dot, query_rank=3, chunk=16)
    assert np.abs(rank_3 - exact).max() < 0.02 * np.abs(exact).max()
    rank_1 = influence_matrix(train, queries, grad_dot, query_rank=1)
    assert np.linalg.norm(rank_1 - exact) > np.linalg.norm(rank_3 - exact)
    left, singular, right = np.linalg.svd(queries.astype(np.float64), full_matrices=False)
    assert singular[3] < 0.1 * singular[2]  # the data really is near rank 3
    for rank, scored in ((1, rank_1), (3, rank_3)):
        # Eckart-Young: the compressed queries are the truncated SVD, and what they leave out is
        # exactly the energy beyond the first `rank` singular values
        basis, coefficients = lowrank_queries(torch.tensor(queries), rank)
        compressed = (basis @ coefficients).T.double().numpy()
        truncated = (left[:, :rank] * singular[:rank]) @ right[:rank]
        np.testing.assert_allclose(compressed, truncated, atol=1e-4 * singular[0])
        np.testing.assert_allclose(
            np.linalg.norm(queries - compressed), np.sqrt((singular[rank:] ** 2).sum()), rtol=1e-3
        )
        # and scoring against them is scoring against the truncated queries
        np.testing.assert_allclose(scored, train @ truncated.T, rtol=1e-4, atol=1e-4 * np.abs(exact).max())


@pytest.mark.parametrize("estimator", ["grad_dot", "grad_cos", "proj_fisher"])
def test_self_influence_is_the_diagonal_of_train_on_train_influence(estimator):
    train = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    preconditioner = make_preconditioner(estimator, damping=0.5).fit(torch.tensor(train))
    expected = np.diag(influence_matrix(train, train, preconditioner))
    values = self_influence(train, preconditioner, chunk=7)
    np.testing.assert_allclose(values, expected, rtol=1e-4)
    assert (values > 0).all()
    if estimator == "grad_cos":  # the same for every example: why validate() rejects it for pruning
        np.testing.assert_allclose(values, 1.0, rtol=1e-6)
    else:  # a ranking: the examples differ
        assert values.std() > 0.1 * values.mean()


def test_self_influence_pruning_rejects_the_cosine_estimator():
    from ifexp.schema import EstimatorConfig, IfexpError, JobConfig, PruningConfig
    from ifexp.validation import validate

    def job(preconditioner: str, strategy: str = "self_influence") -> JobConfig:
        return JobConfig(
            estimator=EstimatorConfig(name=preconditioner, preconditioner=preconditioner),
            pruning=PruningConfig(strategy=strategy, fraction=0.2),
        )

    with pytest.raises(IfexpError) as error:
        validate(job("grad_cos"))
    message = str(error.value)
    assert "\n" not in message
    for words in ("pruning.strategy=self_influence", "estimator.preconditioner=grad_cos", "grad_dot", "proj_fisher"):
        assert words in message
    validate(job("grad_dot"))
    validate(job("proj_fisher"))
    validate(job("grad_cos", strategy="combined"))  # cosine influence on queries stays allowed
