"""The query sets Q_C and Q_I: theta*'s own answers to the validation questions, graded.

Not a stage of its own: theta*'s answers are an `eval` artifact (ifexp.stages.eval) of theta* on
the validation split, generated with the `queries` config; this module turns them into the
(question, response) examples whose gradients are the queries, and drops those too long to take a
gradient of, under the rule training applies to traces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ifexp.cache import Artifact
from ifexp.examples import Example, Problem
from ifexp.models import Checkpoint, load_tokenizer
from ifexp.prompts import encode_example
from ifexp.schema import IfexpError, JobConfig, ModelConfig
from ifexp.stages.eval import evaluate, read_generations, warn_if_length_capped

log = logging.getLogger(__name__)
VALIDATION = "val"


@dataclass(frozen=True)
class QuerySets:
    artifact: Artifact  # theta*'s graded answers
    queries: list[Example]  # the answers that fit, as (question, response) examples
    correct: np.ndarray  # (len(queries),) bool: graded correct (Q_C) or not (Q_I)
    metrics: dict[str, Any]


def answer_validation_questions(
    cfg: JobConfig, cache_dir: Path, theta_star: Checkpoint, scorer_cfg: ModelConfig, val: list[Example]
) -> QuerySets:
    """theta*'s graded answers to the validation questions, as the query sets Q_C and Q_I."""
    if not val:
        raise IfexpError("influence scores need validation questions: dataset.n_val is 0")
    problems = [Problem(e.id, e.question, e.answer) for e in val]
    artifact = evaluate(
        cache_dir,
        {"theta_star": theta_star},
        {VALIDATION: problems},
        {VALIDATION: cfg.dataset.answer_format},  # the dataset's own questions
        cfg.queries,
        cfg.engine,
        scorer_cfg.system_prompt,
        cfg.scorer_seed,
    )["theta_star"][VALIDATION]
    answered = artifact.manifest()
    warn_if_length_capped("theta*'s validation answers", answered, "queries.max_new_tokens, or dataset.max_new_tokens")
    queries, correct = query_examples(read_generations(artifact))
    # a generation too long to take a gradient of is dropped (and counted), as training drops a trace
    fits, n_truncated = fitting_queries(theta_star, scorer_cfg, queries, cfg.train.overlong)
    if not fits.all():
        log.warning(
            "query sets: %d of %d answers do not fit model.max_seq_len=%d (train.overlong=%s): dropped",
            int((~fits).sum()),
            len(queries),
            scorer_cfg.max_seq_len,
            cfg.train.overlong,
        )
    queries, correct = [q for q, keep in zip(queries, fits, strict=True) if keep], correct[fits]
    n_correct, n_incorrect = int(correct.sum()), int((~correct).sum())
    if n_correct == 0 or n_incorrect == 0:
        log.warning(
            "query sets: |Q_C| = %d, |Q_I| = %d; the empty side's scores are left empty (NaN)", n_correct, n_incorrect
        )
    metrics = {
        "queries/n_correct": n_correct,
        "queries/n_incorrect": n_incorrect,
        "queries/n_rejected": int((~fits).sum()),
        "queries/n_truncated": n_truncated,
        "queries/pass@1": answered["pass@1"],
        "queries/n_length_capped": answered["n_length_capped"],
    }
    return QuerySets(artifact, queries, correct, metrics)


def query_examples(generations: list[dict]) -> tuple[list[Example], np.ndarray]:
    """theta*'s own answers to the validation questions as (question, response) examples + grades."""
    queries, correct = [], []
    for record in generations:
        for j, (response, ok) in enumerate(zip(record["responses"], record["correct"], strict=True)):
            queries.append(Example(f"{record['id']}/{j}", record["question"], response, record["answer"]))
            correct.append(ok)
    return queries, np.asarray(correct, dtype=bool)


def fitting_queries(
    model: Checkpoint, model_cfg: ModelConfig, queries: list[Example], overlong: str
) -> tuple[np.ndarray, int]:
    """Which queries the features stage can encode, under the rule training applies to traces:
    a prompt that fills model.max_seq_len leaves no response to take a gradient of (dropped);
    a longer response is cut (overlong=truncate) or the query dropped (overlong=reject).
    Returns the mask of kept queries and how many of them are truncated."""
    tokenizer = load_tokenizer(model.model_path)
    keep, n_truncated = np.ones(len(queries), dtype=bool), 0
    for i, query in enumerate(queries):
        ids, n_prompt, truncated = encode_example(
            tokenizer, query.question, query.cot, model_cfg.max_seq_len, model_cfg.system_prompt
        )
        if truncated and (overlong == "reject" or n_prompt >= len(ids)):
            keep[i] = False
        elif truncated:
            n_truncated += 1
    return keep, n_truncated
