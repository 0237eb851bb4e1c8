"""One job of the paper's loop (DESIGN.md), as the steps `run_job` reads top to bottom:

    1. the data D, the trainee's base model and the benchmarks
    2. what the strategy ranks by (`SIGNAL_STEPS`): theta*, its graded answers Q_C / Q_I and the
       influence scores s_C / s_I, or a baseline's signal
    3. the strategy's selection at fraction p, and Random's of the same size and seed
    4. fine-tuning the trainee on each subset
    5. pass@1 of every fine-tuned model (and the base model) on every benchmark
    6. the comparison with Random, and the run's outputs (ifexp.outputs)

Every cached step is a stage module of ifexp.stages, which owns its key, its build and how its
artifact is read; a sweep therefore trains theta* and extracts gradients once, and a killed job
resumes from its last finished stage. Selection is a pure function of cached signals,
recomputed every time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ifexp import outputs
from ifexp.cache import Artifact
from ifexp.evaluate.benchmarks import answer_format_for, held_out_problems, load_benchmark
from ifexp.evaluate.grading import check_trace_answers
from ifexp.examples import Example, Problem
from ifexp.influence.score import rank_score
from ifexp.models import Checkpoint
from ifexp.plugins import load_plugins
from ifexp.schema import IfexpError, JobConfig, PruningConfig
from ifexp.selection import SIGNALS, Signals, flaw_detection, needed_signals, removal_scores, select
from ifexp.selection.lexical import lexical_ceilings
from ifexp.stages.base_model import prepare_model
from ifexp.stages.dataset import Dataset, build_dataset
from ifexp.stages.embedding import build_embedding, read_embedding
from ifexp.stages.eval import evaluate, read_generations, warn_if_length_capped
from ifexp.stages.features import build_features
from ifexp.stages.perplexity import build_perplexity, read_perplexity
from ifexp.stages.queries import answer_validation_questions
from ifexp.stages.scores import build_scores, read_scores
from ifexp.stages.self_influence import build_self_influence, read_self_influence
from ifexp.stages.sft import build_sft
from ifexp.stages.theta_loss import build_theta_loss, read_theta_loss
from ifexp.threads import pin_threads
from ifexp.trace_check import rule_carried_metrics
from ifexp.validation import validate

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job's config and cache, and what its steps record: stage times, metrics, artifacts."""

    cfg: JobConfig
    cache_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.time()
        yield
        key = outputs.timing_key(stage)
        self.timings[key] = round(self.timings.get(key, 0.0) + time.time() - started, 2)


# ---------------------------------------------------------------------------------------------
# 1. Benchmarks


def load_benchmarks(cfg: JobConfig, test: list[Example]) -> dict[str, list[Problem]]:
    """The dataset's held-out test split, whole, as the in-domain benchmark named dataset.name
    (every dataset the same way), and the benchmarks of eval.benchmarks; a listed benchmark of the
    dataset's own name is that split. A job with nothing to evaluate stops here, before training."""
    benchmarks = {}
    if test:
        benchmarks[cfg.dataset.name] = held_out_problems(test)
    for name in cfg.eval.benchmarks:
        if name not in benchmarks:
            benchmarks[name] = load_benchmark(name, cfg.eval.max_examples, cfg.eval.benchmark_seed)
    if not benchmarks:
        raise IfexpError(
            f"nothing to evaluate: dataset '{cfg.dataset.name}' holds out no test problems and eval.benchmarks is "
            "empty; set dataset.n_test (or dataset.test_path) or eval.benchmarks"
        )
    return benchmarks


# ---------------------------------------------------------------------------------------------
# 2. Signals: each strategy declares the SIGNALS it needs (ifexp.selection); SIGNAL_STEPS computes
#    one each, through the stages, and returns its Signals fields.


class Scorer:
    """theta* and what is computed from it, built on first use and then shared by the steps."""

    def __init__(self, job: Job, data: Dataset, base: Artifact):
        self.job, self.data, self.base = job, data, base
        self.cfg = job.cfg.scorer or job.cfg.model

    @cached_property
    def theta_star(self) -> Checkpoint:
        """The scorer fine-tuned on all of D with scorer_seed (and scorer_epochs)."""
        job, cfg = self.job, self.job.cfg
        with job.timed("base_model"):
            # theta*'s base: another model's in cross-model transfer
            scorer_base = self.base if cfg.scorer is None else prepare_model(self.cfg, job.cache_dir)
        job.artifacts["scorer_base_model"] = scorer_base
        train_cfg = cfg.train if cfg.scorer_epochs is None else replace(cfg.train, epochs=cfg.scorer_epochs)
        with job.timed("sft_full"):
            sft = build_sft(
                job.cache_dir, scorer_base, self.data.train, self.cfg, train_cfg, cfg.scorer_seed, cfg.compute
            )
        job.artifacts["sft_full"] = sft
        trained = sft.manifest()
        # what theta* (all of D) lost to model.max_seq_len: LIMO-style traces, said per run
        said = ("final_loss", "steps", *OVERLONG_KEYS, "gradient_checkpointing")
        job.metrics.update({f"theta_star/{k}": trained[k] for k in said if k in trained})
        return Checkpoint(scorer_base, sft, cfg.train.method)

    @cached_property
    def train_features(self) -> Artifact:
        job = self.job
        with job.timed("features"):
            store = build_features(
                job.cache_dir,
                job.cfg.estimator,
                self.cfg,
                self.theta_star,
                self.data.train,
                "train",
                job.cfg.compute,
                job.cfg.train.gradient_checkpointing,
            )
        job.artifacts["features_train"] = store
        return store


def influence_step(scorer: Scorer) -> dict[str, Any]:
    """s_C, s_I and their ranks: theta*'s graded answers to the validation questions are the queries."""
    job, cfg = scorer.job, scorer.job.cfg
    with job.timed("queries"):
        query_sets = answer_validation_questions(cfg, job.cache_dir, scorer.theta_star, scorer.cfg, scorer.data.val)
    job.artifacts["queries"] = query_sets.artifact
    job.metrics.update(query_sets.metrics)
    answers = [query.cot for query in query_sets.queries]
    job.metrics.update(rule_carried_metrics(cfg.dataset, answers, query_sets.correct.tolist()))
    with job.timed("features"):
        query_store = build_features(
            job.cache_dir,
            cfg.estimator,
            scorer.cfg,
            scorer.theta_star,
            query_sets.queries,
            "queries",
            cfg.compute,
            cfg.train.gradient_checkpointing,
        )
    job.artifacts["features_queries"] = query_store
    with job.timed("scores"):
        scores = build_scores(job.cache_dir, cfg.estimator, scorer.train_features, query_store, query_sets.correct)
    job.artifacts["scores"] = scores
    correct = query_sets.correct
    return {
        **read_scores(scores),
        "n_correct_queries": int(correct.sum()),
        "n_incorrect_queries": int((~correct).sum()),
    }


def self_influence_step(scorer: Scorer) -> dict[str, Any]:
    job = scorer.job
    with job.timed("scores"):
        artifact = build_self_influence(job.cache_dir, job.cfg.estimator, scorer.train_features)
    job.artifacts["self_influence"] = artifact
    return {"self_influence": read_self_influence(artifact)}


def theta_loss_step(scorer: Scorer) -> dict[str, Any]:
    job = scorer.job
    with job.timed("theta_loss"):
        artifact = build_theta_loss(
            job.cache_dir, scorer.theta_star, scorer.cfg, scorer.data.train, job.cfg.estimator.batch_size
        )
    job.artifacts["theta_loss"] = artifact
    return {"theta_loss": read_theta_loss(artifact)}


def perplexity_step(scorer: Scorer) -> dict[str, Any]:
    job = scorer.job
    with job.timed("perplexity"):
        artifact = build_perplexity(
            job.cache_dir, scorer.base, job.cfg.model, scorer.data.train, job.cfg.estimator.batch_size
        )
    job.artifacts["perplexity"] = artifact
    return {"perplexity": read_perplexity(artifact)}


def embedding_step(scorer: Scorer) -> dict[str, Any]:
    job = scorer.job
    with job.timed("embedding"):
        artifact = build_embedding(job.cache_dir, job.cfg.pruning.embedding_mode, scorer.data.train, scorer.data.val)
    job.artifacts["embedding"] = artifact
    return {"embedding": read_embedding(artifact)}


def difficulty_step(scorer: Scorer) -> dict[str, Any]:
    """Each training question's solve rate: a model's answers (the queries' sampling), graded."""
    job, cfg = scorer.job, scorer.job.cfg
    if cfg.pruning.difficulty_model == "theta_star":
        model, system_prompt = scorer.theta_star, scorer.cfg.system_prompt
    else:
        model, system_prompt = Checkpoint(scorer.base), cfg.model.system_prompt
    problems = {"train": [Problem(e.id, e.question, e.answer) for e in scorer.data.train]}
    with job.timed("difficulty"):
        artifact = evaluate(
            job.cache_dir,
            {"solver": model},
            problems,
            {"train": cfg.dataset.answer_format},  # the dataset's own questions
            cfg.queries,
            cfg.engine,
            system_prompt,
            cfg.scorer_seed,
        )["solver"]["train"]
    job.artifacts["difficulty"] = artifact
    solve_rate = [sum(r["correct"]) / len(r["correct"]) for r in read_generations(artifact)]
    job.metrics["difficulty/mean_solve_rate"] = float(np.mean(solve_rate))
    return {"difficulty": np.asarray(solve_rate, dtype=np.float64)}


# signal -> the step that computes it, in the order they run
SIGNAL_STEPS: dict[str, Callable[[Scorer], dict[str, Any]]] = {
    "theta_loss": theta_loss_step,
    "self_influence": self_influence_step,
    "influence": influence_step,
    "perplexity": perplexity_step,
    "embedding": embedding_step,
    "difficulty": difficulty_step,
}
assert set(SIGNAL_STEPS) == set(SIGNALS), "every signal a strategy may need has its step"
# scores.csv carries I(d, d) and the perplexity beside s_C / s_I: computed with them
COMPUTED_WITH = {"influence": {"self_influence", "perplexity"}, "self_influence": {"perplexity"}}


def compute_signals(job: Job, data: Dataset, base: Artifact, needs: set[str]) -> Signals:
    """What the strategy ranks by: the trace answers and lengths always, and the `needs` signals."""
    trace_answers = check_trace_answers(data.train, job.cfg.dataset.answer_format)
    job.metrics.update(
        {"data/n_trace_answer_wrong": trace_answers.n_wrong, "data/n_no_answer": trace_answers.n_no_answer}
    )
    if trace_answers.n_no_answer:
        log.warning("dataset: %d training traces have no final answer we can read", trace_answers.n_no_answer)
    values: dict[str, Any] = {}
    needs = needs.union(*(COMPUTED_WITH.get(signal, set()) for signal in needs))
    scorer = Scorer(job, data, base)
    for signal, step in SIGNAL_STEPS.items():
        if signal in needs:
            values.update(step(scorer))
    return Signals(
        ids=[e.id for e in data.train],
        flaw=[e.flaw for e in data.train],
        trace_answer_correct=trace_answers.correct,
        length=np.array([len(e.cot) for e in data.train], dtype=np.float64),
        **values,
    )


# ---------------------------------------------------------------------------------------------
# 3-6. Selection, fine-tuning, evaluation, comparison


def training_subsets(cfg: JobConfig, signals: Signals, kept: np.ndarray) -> dict[str, np.ndarray]:
    """The masks of D the trainee is fine-tuned on, by arm: the strategy's pick (`pruned`),
    Random's of the same size and seed, and (eval.eval_full) all of D."""
    subsets = {"pruned": kept}
    if cfg.pruning.compare_random and cfg.pruning.strategy != "none":
        random_pick = PruningConfig(strategy="random", fraction=cfg.pruning.fraction)
        subsets["random"] = select(random_pick, signals, cfg.seed)
    if cfg.eval.eval_full:
        subsets["full"] = np.ones(len(signals.ids), dtype=bool)
    return subsets


def compare(evals: dict[str, dict[str, Artifact]], run_dir: Path) -> dict[str, Any]:
    """pass@1 of each arm, the strategy's delta vs Random and gain over the base model, per
    benchmark; each arm's graded generations copied into the run's generations/ folder."""
    metrics: dict[str, Any] = {}
    for arm, per_bench in evals.items():
        for bench, artifact in per_bench.items():
            manifest = artifact.manifest()
            metrics[outputs.pass_key(bench, arm)] = manifest["pass@1"]
            metrics[outputs.length_capped_key(bench, arm)] = manifest["n_length_capped"]
            # the in-domain eval's budget defaults to the dataset's; a benchmark set pins its own
            warn_if_length_capped(
                f"{arm} model on {bench}", manifest, "eval.max_new_tokens, or dataset.max_new_tokens in-domain"
            )
            metrics[outputs.artifact_key(f"eval/{arm}/{bench}")] = str(artifact)
            path = outputs.generations_path(run_dir, arm, bench)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((artifact / "generations.jsonl").read_text())
    for bench in evals["pruned"]:
        if "random" in evals:
            metrics[outputs.delta_key(bench)] = (
                metrics[outputs.pass_key(bench)] - metrics[outputs.pass_key(bench, "random")]
            )
        if "base" in evals:
            metrics[outputs.gain_key(bench)] = (
                metrics[outputs.pass_key(bench)] - metrics[outputs.pass_key(bench, "base")]
            )
    return metrics


# what fine-tuning says about the traces longer than model.max_seq_len (ifexp.train.EncodedSet)
OVERLONG_KEYS = ("n_truncated", "n_rejected", "n_tokens_cut", "max_example_len")


def training_metrics(cfg: JobConfig, training: dict[str, Any]) -> dict[str, Any]:
    """What fine-tuning the strategy's model did with over-long traces, and its loss."""
    if training["n_truncated"] or training["n_rejected"]:
        log.warning(
            "training: %d traces longer than model.max_seq_len=%d were truncated (%d tokens cut) and %d dropped "
            "(train.overlong=%s; the longest is %d tokens)",
            training["n_truncated"],
            cfg.model.max_seq_len,
            training["n_tokens_cut"],
            training["n_rejected"],
            cfg.train.overlong,
            training["max_example_len"],
        )
    return {
        "n_train_kept": training["n_examples"],
        "n_truncated": training["n_truncated"],
        "n_rejected": training["n_rejected"],
        # how much over-long traces lost (LIMO-style data: say it, per run)
        "train/n_tokens_cut": training["n_tokens_cut"],
        "train/max_example_len": training["max_example_len"],
        "train/gradient_checkpointing": training.get("gradient_checkpointing", False),
        "train/steps": training["steps"],
        "train/first_loss": training["first_loss"],
        "train/final_loss": training["final_loss"],
    }


def run_job(cfg: JobConfig, run_dir: Path, tracker=None, config_digest: str | None = None) -> dict[str, Any]:
    """Score, prune, fine-tune on what is kept, evaluate against Random; write the run's outputs.
    `config_digest` (the entry point's `ifexp.job_identity`) goes into metrics.json: it says which
    config the run dir's results came from."""
    load_plugins(cfg.plugins)
    validate(cfg)
    # every stage under the same MKL threading, whether or not a perplexity pass ran before it in
    # this process (ifexp.threads): for the CLI's jobs and for jobs run in-process alike
    pin_threads()
    run_dir.mkdir(parents=True, exist_ok=True)
    job = Job(cfg, Path(cfg.paths.cache_dir).resolve())
    job.metrics.update(
        {
            "model": cfg.model.name,
            "scorer": (cfg.scorer or cfg.model).name,
            "dataset": cfg.dataset.name,
            "estimator": cfg.estimator.name,
            outputs.STRATEGY_KEY: cfg.pruning.strategy,
            "fraction": cfg.pruning.fraction,
            outputs.SEED_KEY: cfg.seed,
            outputs.REPLICATE_KEY: outputs.replicate_id(cfg.dataset.data_seed, cfg.scorer_seed),
        }
    )
    if config_digest is not None:
        job.metrics[outputs.DIGEST_KEY] = config_digest

    # 1. The data D (first: a bad input file fails before minutes of model conversion), the
    #    trainee's base model and the benchmarks.
    with job.timed("dataset"):
        data = build_dataset(cfg.dataset, job.cache_dir)
    job.metrics.update(data.metrics)
    with job.timed("base_model"):
        base = prepare_model(cfg.model, job.cache_dir)
    with job.timed("benchmarks"):
        benchmarks = load_benchmarks(cfg, data.test)
    # 2. What the strategy ranks by.
    signals = compute_signals(job, data, base, needed_signals(cfg.pruning.strategy))
    # 3. The strategy's selection at fraction p, and Random's of the same size and seed.
    ranking = removal_scores(cfg.pruning, signals, cfg.seed) if cfg.pruning.strategy != "none" else None
    kept = select(cfg.pruning, signals, cfg.seed, ranking)
    options = {k: v for k, v in asdict(cfg.pruning).items() if k not in ("strategy", "fraction")}
    outputs.write_selection(run_dir, cfg.pruning.strategy, cfg.pruning.fraction, cfg.seed, options, signals.ids, kept)
    if ranking is not None:
        labels = signals.flaw if any(signals.flaw) else None
        outputs.write_removal_scores(run_dir, signals.ids, ranking, kept, labels)
    job.metrics.update(flaw_detection(kept, ranking, signals.flaw))
    # what the trace text alone finds (a family above 0.8 is a format, not a reasoning flaw)
    job.metrics.update(lexical_ceilings([e.cot for e in data.train], signals.flaw))
    # 4. Fine-tune the trainee on each subset.
    subsets = training_subsets(cfg, signals, kept)
    if "random" in subsets:
        shared = int((~kept & ~subsets["random"]).sum())
        job.metrics[outputs.SHARED_WITH_RANDOM] = shared
        log.info("selection: %d of the %d removed examples are also Random's", shared, int((~kept).sum()))
    sft = {}
    for arm, mask in subsets.items():
        with job.timed(f"sft_{arm}"):
            subset = [e for e, k in zip(data.train, mask, strict=True) if k]
            sft[arm] = build_sft(job.cache_dir, base, subset, cfg.model, cfg.train, cfg.seed, cfg.compute)
    # 5. pass@1 of every fine-tuned model (and the base model) on every benchmark.
    models = {arm: Checkpoint(base, artifact, cfg.train.method) for arm, artifact in sft.items()}
    if cfg.eval.eval_base:
        models["base"] = Checkpoint(base)
    with job.timed("eval"):
        answer_formats = {b: answer_format_for(b, cfg.dataset.name, cfg.dataset.answer_format) for b in benchmarks}
        evals = evaluate(
            job.cache_dir, models, benchmarks, answer_formats, cfg.eval, cfg.engine, cfg.model.system_prompt, cfg.seed
        )
    # 6. The comparison with Random (and the base model), and the run's outputs.
    job.metrics.update(compare(evals, run_dir))
    job.metrics.update(
        {
            "n_train": len(data.train),
            "n_train_removed": int((~kept).sum()),
            "n_train_flawed": sum(1 for e in data.train if e.flaw),
            **training_metrics(cfg, sft["pruned"].manifest()),
            **{f"n_problems/{bench}": len(problems) for bench, problems in benchmarks.items()},
            outputs.artifact_key("base_model"): str(base),
            outputs.artifact_key("dataset"): str(data.artifact),
            **{outputs.artifact_key(name): str(artifact) for name, artifact in job.artifacts.items()},
            **{outputs.artifact_key(f"sft_{arm}"): str(artifact) for arm, artifact in sft.items()},
            **job.timings,
        }
    )
    with_scores = "scores" in job.artifacts or "self_influence" in job.artifacts
    write_outputs(run_dir, job.metrics, signals, kept, with_scores, tracker)
    return job.metrics


def write_outputs(
    run_dir: Path, metrics: dict[str, Any], signals: Signals, kept: np.ndarray, with_scores: bool, tracker
) -> None:
    """metrics.json, scores.csv, figures; and the same to W&B."""
    from ifexp import figures

    outputs.write_metrics(run_dir, metrics)
    figure_paths = []
    if with_scores:
        empty = np.full(len(signals.ids), np.nan)  # self_influence computes no query-based scores
        scores = {
            name: empty if getattr(signals, name) is None else getattr(signals, name)
            for name in ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect")
        }
        scores["rank_score"] = rank_score(scores["rank_correct"], scores["rank_incorrect"])
        outputs.write_scores_csv(
            run_dir / outputs.SCORES,
            signals.ids,
            scores,
            signals.perplexity,
            kept,
            signals.flaw if any(signals.flaw) else None,
            signals.trace_answer_correct,
            signals.self_influence,
        )
        if signals.s_correct is not None:
            figure_paths += figures.score_figures(run_dir / outputs.FIGURES, scores, kept, signals.flaw)
    deltas = {
        bench: metrics[outputs.delta_key(bench)]
        for bench in outputs.benchmarks_of(metrics)
        if outputs.delta_key(bench) in metrics
    }
    if deltas and metrics[outputs.STRATEGY_KEY] != "random":
        nan = float("nan")  # one job: no interval
        figure_paths.append(
            figures.delta_bars(
                run_dir / outputs.FIGURES / "delta_vs_random.png",
                {metrics[outputs.STRATEGY_KEY]: {b: (d, nan, nan) for b, d in deltas.items()}},
                title="Δ pass@1 vs Random (this job: one seed, no interval)",
            )
        )
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)})
        if with_scores:
            tracker.table("scores", run_dir / outputs.SCORES)
        tracker.images({path.stem: path for path in figure_paths})
    for key, value in metrics.items():
        if key.startswith((f"{outputs.PASS}/", f"random_{outputs.PASS}/", f"{outputs.DELTA_VS_RANDOM}/")):
            log.info("%s = %.3f", key, value)
