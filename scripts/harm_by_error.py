"""Where high_harm's signal is: s_I (mean influence over θ*'s wrong answers, Q_I) split by what is
wrong with each answer. On leg_counting the step checker (ifexp.trace_check) names each wrong
answer's error kinds, and for a rule family whether the answer carries the rule; the flaw AUROC of
the mean influence over each part of Q_I says which wrong answers point at the flawed traces.

    .venv/bin/python scripts/harm_by_error.py sweeps=slips seed=100 'dataset.flaw_kinds=[four_legs_rule]'

Reads (or builds, through the cache) the job's θ*, its query answers, features and scores, as
`ifexp-bench flaws` does; prints one JSON object. Exploratory: one θ* per run.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from ifexp.cli import compose_job
from ifexp.influence.score import percentile_ranks
from ifexp.pipeline import Job, compute_signals
from ifexp.selection.flaws import auroc
from ifexp.stages.base_model import prepare_model
from ifexp.stages.dataset import build_dataset
from ifexp.stages.eval import read_generations
from ifexp.stages.queries import query_examples
from ifexp.tasks import leg_counting_split_problems
from ifexp.trace_check import RULE_CARRIED, leg_trace_errors

MIN_QUERIES = 5  # a part of Q_I smaller than this gets no AUROC


def main(overrides: list[str]) -> dict:
    cfg = compose_job(overrides, check=True)
    if cfg.dataset.source != "leg_counting":
        raise SystemExit("harm_by_error: the step checker reads leg_counting answers only")
    cache_dir = Path(cfg.paths.cache_dir)
    data = build_dataset(cfg.dataset, cache_dir)
    job = Job(cfg, cache_dir)
    signals = compute_signals(job, data, prepare_model(cfg.model, cache_dir), {"influence"})
    scores = job.artifacts["scores"]
    influence = np.load(Path(scores) / "influence.npy")
    flawed = np.array([bool(f) for f in signals.flaw])
    problems = {p.id: p for p in leg_counting_split_problems(cfg.dataset)}
    # influence.npy's columns are the query store's rows (ids.json: the answers that fit the model)
    queries, grades = query_examples(read_generations(job.artifacts["queries"]))
    by_id = {q.id: (q, bool(ok)) for q, ok in zip(queries, grades, strict=True)}
    column_ids = json.loads((Path(job.artifacts["features_queries"]) / "ids.json").read_text())
    if len(column_ids) != influence.shape[1]:
        raise SystemExit(f"harm_by_error: {len(column_ids)} query ids but {influence.shape[1]} query columns")
    answers = [(by_id[i][0].id.rsplit("/", 1)[0], by_id[i][0].cot, by_id[i][1]) for i in column_ids]
    wrong = np.array([not correct for _, _, correct in answers])
    rules = [kind for kind in cfg.dataset.flaw_kinds if kind in RULE_CARRIED]
    if len(rules) != 1:
        raise SystemExit(f"harm_by_error: dataset.flaw_kinds needs exactly one rule kind of {sorted(RULE_CARRIED)}")
    carrying = np.array([RULE_CARRIED[rules[0]](text) for _, text, _ in answers])
    kinds = [set(leg_trace_errors(problems[qid], text)) if not correct else set() for qid, text, correct in answers]

    def part(mask: np.ndarray) -> dict:
        row = {"n_queries": int(mask.sum()), "n_carrying_rule": int((mask & carrying).sum())}
        if mask.sum() >= MIN_QUERIES:
            row["flaw_auroc"] = round(auroc(influence[:, mask].mean(axis=1), flawed), 3)
        return row

    on_wrong = influence[:, wrong]
    ranks = percentile_ranks(influence)[:, wrong]
    # ways of averaging over Q_I that need no label of the answers
    label_free = {
        "median": np.median(on_wrong, axis=1),
        "90th percentile": np.percentile(on_wrong, 90, axis=1),
        "max": on_wrong.max(axis=1),
        "mean percentile rank (r_I)": ranks.mean(axis=1),
        "mean over Q_I minus mean over Q_C": on_wrong.mean(axis=1) - influence[:, ~wrong].mean(axis=1),
    }
    # Q_I grouped by influence profile (k-means on each answer's normalised column): does a group
    # gather the answers that carry the rule?
    profiles = on_wrong.T / np.linalg.norm(on_wrong.T, axis=1, keepdims=True)
    clusters = {}
    for k in (2, 3, 4, 6):
        labels = KMeans(k, n_init=10, random_state=0).fit_predict(profiles)
        clusters[k] = []
        for c in range(k):
            in_group = wrong.copy()
            in_group[wrong] = labels == c
            clusters[k].append(part(in_group))
    counts = dict(Counter(kind for found in kinds for kind in found).most_common())
    return {
        "overrides": overrides,
        "n_train": int(len(flawed)),
        "n_flawed": int(flawed.sum()),
        "Q_I (high_harm's s_I)": part(wrong),
        "Q_I carrying the rule": part(wrong & carrying),
        "Q_I not carrying it": part(wrong & ~carrying),
        "Q_C (s_C)": part(~wrong),
        "label-free averages over Q_I (flaw AUROC)": {
            name: round(auroc(values, flawed), 3) for name, values in label_free.items()
        },
        "Q_I clustered by influence profile": clusters,
        "Q_I by error kind": {kind: part(np.array([kind in found for found in kinds])) for kind in counts},
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
