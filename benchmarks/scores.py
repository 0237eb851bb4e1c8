"""`ifexp-bench scores`: scoring cost and its approximations.

    ifexp-bench scores --model smollm2_135m --n-train 256 --n-queries 64 --out scores.json

Growth of feature extraction and scoring with N and Q, low-rank query scoring against exact,
two processes against one, bf16 autocast against fp32 (speed, and agreement of features and scores).

    ifexp-bench scores --scale-n 25000 50000 100000 200000 --scale-queries 2000 --scale-k 8192 --out scale.json

is the other mode (no model): the scores stage itself (ifexp.stages.scores.build_scores, the
proj_fisher estimator) on synthetic feature stores of N training rows and Q queries of k dims
(float16, normal random values), each N in a fresh process of its own: its peak RSS (VmHWM, reset
once the stores are written), the seconds of the fit and of the streamed influence and scores, and
the disk the stores and the matrix take; everything is deleted afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    Benchmark,
    benchmark_rows,
    device,
    in_own_process,
    load_group,
    machine,
    mean_spearman,
    median_time,
    on_device,
    option,
    padded,
    peak_rss_mb,
    proxy_features,
    read_status,
    reset_peak,
    theta_star_proxy,
    timed,
)
from ifexp.cache import Artifact
from ifexp.schema import EstimatorConfig, ModelConfig


@dataclass(kw_only=True)
class Scores(Benchmark):
    """scoring cost growth, low-rank queries, 2 processes, bf16"""

    model: str = option("smollm2_135m")
    estimator: str = option("proj_fisher")
    seq_len: int = option(256)
    n_train: int = option(256)
    n_queries: int = option(64)
    rank: int = option(8, help="the low-rank setting reported as lowrank_*")
    ranks: list[int] = option([1, 2, 4, 16, 32, 48])
    two_process_n: int = option(32)
    bf16_n_train: int = option(32)
    bf16_n_queries: int = option(16)
    cache_dir: str = option("outputs/cache")
    scale_n: list[int] = option([], help="the other mode: the scores stage on synthetic stores of these N")
    scale_queries: int = option(2000, help="Q of the synthetic stores")
    scale_k: int = option(8192, help="k of the synthetic stores")
    scale_dir: str = option("/tmp", help="where the synthetic stores are written (and removed)")

    def execute(self) -> dict:
        if self.scale_n:
            return self.scale()
        from ifexp.distributed import run_sharded
        from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
        from ifexp.influence.features import extract_features
        from ifexp.influence.score import influence_matrix
        from ifexp.models import load_tokenizer
        from ifexp.stages.base_model import prepare_model

        model_cfg = replace(load_group("model", self.model, ModelConfig), max_seq_len=self.seq_len)
        est = load_group("estimator", self.estimator, EstimatorConfig)
        base = prepare_model(model_cfg, self.cache_dir)
        rows = benchmark_rows(base, model_cfg, self.n_train + self.n_queries)
        train_rows, query_rows = rows[: self.n_train], rows[self.n_train :]
        model = theta_star_proxy(base, model_cfg)
        collate_fn = padded(load_tokenizer(base).pad_token_id)
        projector = make_projector(est, model)

        def features_of(part: list, compute_dtype: str = "float32") -> np.ndarray:
            return extract_features(
                model, part, projector, collate_fn, est.batch_size, desc="features", compute_dtype=compute_dtype
            )[0]

        def growing(part_rows: list) -> tuple[np.ndarray, dict[int, float]]:
            """Features of all rows, timed at 1/4, 1/2 and all of them (extraction streams over rows)."""
            chunks, seconds, elapsed, done = [], {}, 0.0, 0
            for size in (len(part_rows) // 4, len(part_rows) // 2, len(part_rows)):
                took, chunk = timed(features_of, part_rows[done:size])
                elapsed, done = elapsed + took, size
                chunks.append(chunk)
                seconds[size] = round(elapsed, 2)
            return np.concatenate(chunks), seconds

        features_of(train_rows[:2])  # warm-up
        train_features, train_seconds = growing(train_rows)
        query_features, query_seconds = growing(query_rows)

        def score(n: int, q: int) -> np.ndarray:
            preconditioner = make_estimator_preconditioner(est).fit(torch.from_numpy(train_features[:n]))
            return influence_matrix(train_features[:n], query_features[:q], preconditioner)

        result: dict = {
            "model": self.model,
            "estimator": self.estimator,
            "k": projector.k,
            "n_train": self.n_train,
            "n_queries": self.n_queries,
            "seq_len": self.seq_len,
            "threads": torch.get_num_threads(),
            "queries_are": "held-out gsm_symbolic reference traces (no generation step), at a theta* proxy",
            "cost_growth": {
                "features_s_by_n_train": train_seconds,
                "features_s_by_n_queries": query_seconds,
                "scoring_s_by_n_train": {n: round(median_time(score, n, self.n_queries), 4) for n in train_seconds},
                "scoring_s_by_n_queries": {q: round(median_time(score, self.n_train, q), 4) for q in query_seconds},
            },
        }

        # Low-rank query batching: the same fitted preconditioner, exact vs rank-r queries.
        preconditioner = make_estimator_preconditioner(est).fit(torch.from_numpy(train_features))
        exact = influence_matrix(train_features, query_features, preconditioner)
        exact_s = median_time(influence_matrix, train_features, query_features, preconditioner)
        curve = {}
        for rank in sorted({*self.ranks, self.rank}):
            approx = influence_matrix(train_features, query_features, preconditioner, query_rank=rank)
            took = median_time(influence_matrix, train_features, query_features, preconditioner, query_rank=rank)
            curve[rank] = {"rank_corr": round(mean_spearman(exact, approx), 4), "speedup": round(exact_s / took, 3)}
        singular = np.linalg.svd(preconditioner.query_side(torch.from_numpy(query_features)).numpy(), compute_uv=False)
        energy = np.cumsum(singular**2) / np.sum(singular**2)
        result.update(
            lowrank_rank=self.rank,
            lowrank_rank_corr=curve[self.rank]["rank_corr"],
            lowrank_speedup=curve[self.rank]["speedup"],
            lowrank_curve=curve,
            lowrank_timing="influence_matrix with the preconditioner already fitted (query solve + SVD + train pass)",
            query_energy_at_rank={r: round(float(energy[min(r, len(energy)) - 1]), 4) for r in curve},
        )

        if self.two_process_n > 0:  # two processes (gloo / nccl workers) vs this process, on the same rows
            two_rows = train_rows[: self.two_process_n]
            kwargs = dict(base=base, model_cfg=model_cfg, rows=two_rows, est=est)
            took, two_process = timed(run_sharded, proxy_features, kwargs, 2)
            one_process = train_features[: len(two_rows)]
            result.update(
                two_process_n=len(two_rows),
                two_process_s=round(took, 2),
                two_process_max_abs_diff=float(np.abs(two_process - one_process).max()),
                two_process_max_abs_feature=float(np.abs(one_process).max()),
            )

        # bf16 autocast vs fp32 on a subset: speed and agreement of features and scores.
        sub_train, sub_query = train_rows[: self.bf16_n_train], query_rows[: self.bf16_n_queries]
        timings, subsets = {}, {}
        for dtype in ("float32", "bfloat16"):
            features_of(sub_train[:2], dtype)  # warm-up (bf16 kernels)
            timings[dtype], train_part = timed(features_of, sub_train, dtype)
            subsets[dtype] = (train_part, features_of(sub_query, dtype))
        fitted = {d: make_estimator_preconditioner(est).fit(torch.from_numpy(subsets[d][0])) for d in subsets}
        scores = {d: influence_matrix(*subsets[d], fitted[d]) for d in subsets}
        # a training step (forward + backward of the mean loss, as Accelerate's bf16 autocast runs it)
        train_batches = [on_device(collate_fn(sub_train[i : i + 8])) for i in range(0, len(sub_train), 8)]

        def train_steps(dtype: str) -> None:
            for batch in train_batches:
                with torch.autocast(device(), dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                    loss = model(**batch).loss
                loss.backward()
            model.zero_grad()

        step_s = {}
        for dtype in ("float32", "bfloat16"):
            train_steps(dtype)  # warm-up
            step_s[dtype] = timed(train_steps, dtype)[0]
        cosine = torch.nn.functional.cosine_similarity(
            torch.from_numpy(subsets["float32"][0]), torch.from_numpy(subsets["bfloat16"][0]), dim=1
        )
        result.update(
            bf16_n_train=len(sub_train),
            bf16_n_queries=len(sub_query),
            bf16_features_speedup=round(timings["float32"] / timings["bfloat16"], 3),
            bf16_train_step_speedup=round(step_s["float32"] / step_s["bfloat16"], 3),
            bf16_feature_cosine_min=round(float(cosine.min()), 4),
            bf16_feature_cosine_mean=round(float(cosine.mean()), 4),
            bf16_score_rank_corr=round(mean_spearman(scores["float32"], scores["bfloat16"]), 4),
            peak_rss_mb=peak_rss_mb(),
        )
        return result

    def scale(self) -> dict:
        """The scores stage on synthetic stores, one N at a time, each in its own process."""
        runs = {}
        for n in self.scale_n:
            spec = {"n": n, "q": self.scale_queries, "k": self.scale_k, "dir": self.scale_dir}
            runs[n] = in_own_process(scale_run, spec)
            print(f"scores: N = {n}: {runs[n]}", flush=True)
        done = [n for n in self.scale_n if "peak_rss_mb" in runs[n]]
        return {
            "mode": "scale: the scores stage on synthetic float16 stores (proj_fisher, damping 0.1)",
            "n_queries": self.scale_queries,
            "k": self.scale_k,
            **machine(),
            "peak_measured_as": "VmHWM of the run's own process after a reset once the stores are written",
            "runs": runs,
            "peak_rss_mb_by_n": {n: runs[n]["peak_rss_mb"] for n in done},
            "seconds_by_n": {n: runs[n]["seconds"] for n in done},
        }


def synthetic_store(folder: Path, n: int, k: int, seed: int, chunk: int = 4096) -> Artifact:
    """A float16 feature store of n normal random rows, written chunk by chunk (as the features stage
    writes), as an Artifact of the features stage."""
    from ifexp.influence.features import NpyWriter, write_store

    folder.mkdir(parents=True)
    writer = NpyWriter(folder / "features.npy", (n, k), np.float16)
    for start in range(0, n, chunk):
        rng = np.random.default_rng([seed, start])
        writer.write(start, rng.standard_normal((min(chunk, n - start), k), dtype=np.float32))
    writer.close()
    write_store(folder, [str(i) for i in range(n)], None)
    return Artifact("features", f"synthetic-{seed}-{n}x{k}", folder)


def scale_run(spec: dict, results) -> None:
    """One N of the scale mode, in this (fresh) process; puts its result on results."""
    import shutil
    import tempfile

    import ifexp.stages.scores as stage

    n, q, k = spec["n"], spec["q"], spec["k"]
    needed = (n + q) * k * 2 + 2 * n * q * 4  # the stores, influence.npy and its query-major copy
    free = shutil.disk_usage(spec["dir"]).free
    if free < needed * 1.1:
        results.put({"error": f"{needed / 1e9:.1f} GB of disk needed in {spec['dir']}, {free / 1e9:.1f} GB free"})
        return
    work = Path(tempfile.mkdtemp(prefix="ifexp-scale-", dir=spec["dir"]))
    try:
        started = time.perf_counter()
        train, queries = synthetic_store(work / "train", n, k, 0), synthetic_store(work / "queries", q, k, 1)
        correct = np.random.default_rng(2).random(q) < 0.4
        written_s = time.perf_counter() - started
        phases: dict[str, float] = {}

        def timed_phase(name, function):
            def run(*args, **kwargs):
                took, result = timed(function, *args, **kwargs)
                phases[name] = round(took, 4)  # a small test run takes milliseconds
                return result

            return run

        # the stage's own steps, timed where it calls them
        stage.fitted_preconditioner = timed_phase("fit_s", stage.fitted_preconditioner)
        stage.streamed_scores = timed_phase("influence_and_scores_s", stage.streamed_scores)
        before_mb = read_status("VmRSS")
        reset = reset_peak()
        seconds, artifact = timed(stage.build_scores, work / "cache", EstimatorConfig(), train, queries, correct)
        peak_mb = read_status("VmHWM")
        sizes = {
            "train_store_gb": (train / "features.npy").stat().st_size / 1e9,
            "influence_gb": (artifact / "influence.npy").stat().st_size / 1e9,
        }
        results.put(
            {
                "peak_rss_mb": round(peak_mb, 1) if peak_mb else None,
                "peak_rss_is_since_stores_written": reset,
                "rss_before_mb": round(before_mb, 1) if before_mb else None,
                "seconds": round(seconds, 2),
                **phases,
                "stores_written_s": round(written_s, 2),
                **{key: round(value, 3) for key, value in sizes.items()},
                "disk_free_gb_before": round(free / 1e9, 1),
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
