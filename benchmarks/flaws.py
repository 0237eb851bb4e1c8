"""`ifexp-bench flaws`: how well each strategy finds the injected flawed traces, for one job config.

    ifexp-bench flaws --out flaws.json sweeps=cpu_demo scorer_epochs=6

AUROC (overall and per flaw kind) and precision when removing as many traces as are flawed.
The signals come from the pipeline's own cached stages (`compute_signals`), so the numbers are
those a sweep's jobs would report, without fine-tuning and evaluating the pruned models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.common import Benchmark, option


def registered_strategies() -> list[str]:
    """Every pruning strategy in ifexp's registry, in registration order."""
    from ifexp.selection import strategy_names

    return list(strategy_names())


@dataclass(kw_only=True)
class Flaws(Benchmark):
    """flaw detection per strategy and flaw kind, for one job config"""

    strategies: list[str] | None = option(None, help="default: every registered strategy")
    overrides: list[str] = option(
        [], positional=True, nargs="*", help="Hydra overrides, e.g. sweeps=cpu_demo scorer_epochs=6"
    )

    def execute(self) -> dict:
        from ifexp.cli import compose_job
        from ifexp.pipeline import Job, compute_signals
        from ifexp.selection import flaw_detection, needed_signals, removal_scores, select
        from ifexp.stages.base_model import prepare_model
        from ifexp.stages.dataset import build_dataset

        strategies = self.strategies or registered_strategies()
        cfg = compose_job(self.overrides, check=True)
        cache_dir = Path(cfg.paths.cache_dir)
        data = build_dataset(cfg.dataset, cache_dir)
        n_flawed = sum(bool(e.flaw) for e in data.train)
        if not n_flawed:
            raise SystemExit("ifexp-bench: error: the training set has no flaw labels (dataset.flaw_fraction=0?)")
        base = prepare_model(cfg.model, cache_dir)
        needs = set().union(*(needed_signals(strategy) for strategy in strategies))
        job = Job(cfg, cache_dir)
        signals = compute_signals(job, data, base, needs)
        metrics = job.metrics
        detection = {}
        for strategy in strategies:
            pruning = replace(cfg.pruning, strategy=strategy, fraction=n_flawed / len(signals.ids))
            scores = removal_scores(pruning, signals, cfg.seed)
            found = flaw_detection(select(pruning, signals, cfg.seed, scores), scores, signals.flaw)
            detection[strategy] = {key.removeprefix("flaw/"): round(value, 4) for key, value in found.items()}
        return {
            "overrides": self.overrides,
            "n_train": len(signals.ids),
            "n_flawed": n_flawed,
            "removed": "as many as are flawed (precision = recall)",
            "theta_star": {k.removeprefix("theta_star/"): v for k, v in metrics.items() if k.startswith("theta_star/")},
            "queries": {k.removeprefix("queries/"): v for k, v in metrics.items() if k.startswith("queries/")},
            "detection": detection,
            "seconds": job.timings,
        }
