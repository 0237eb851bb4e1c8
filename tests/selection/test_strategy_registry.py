"""A new pruning strategy is one Strategy subclass and one YAML file (issue 17).

The strategy below is defined in this test and its YAML written to a folder on Hydra's search
path (`hydra.searchpath=[file://...]`, whose pruning/ group Hydra merges with conf/pruning/):
the schema then accepts it (and lists it when it rejects a name), a job runs with it through the
CLI in this process, and the tiny_all sweep (`pruning: glob(*)`) picks it up (that folder given
by `--config-dir`: see below). Nothing else in ifexp is touched. It is unregistered afterwards,
so that no other test sees it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO

from ifexp.cli import compose_job, main
from ifexp.schema import IfexpError, JobConfig, PruningConfig
from ifexp.selection import STRATEGIES, Signals, Strategy, needed_signals, removal_scores, strategy_names
from ifexp.validation import choices, validate

NAME = "surprise_per_char"


@contextlib.contextmanager
def registered_strategy(conf_dir: Path) -> Iterator[type[Strategy]]:
    """Defines the new strategy (which registers it) and writes its YAML under conf_dir/pruning/;
    unregisters it on exit."""

    class SurprisePerCharacter(Strategy):
        """Remove the traces the base model finds most surprising per character."""

        name = NAME
        needs = {"perplexity"}

        def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
            return np.log(np.asarray(signals.perplexity)) / np.maximum(np.asarray(signals.length), 1.0)

    (conf_dir / "pruning").mkdir(parents=True, exist_ok=True)
    (conf_dir / "pruning" / f"{NAME}.yaml").write_text(f"# the test's own strategy\nstrategy: {NAME}\nfraction: 0.25\n")
    try:
        yield SurprisePerCharacter
    finally:
        STRATEGIES.unregister(NAME)


@pytest.fixture
def new_strategy(tmp_path) -> Iterator[Path]:
    """The folder to put on Hydra's search path, while the new strategy is registered."""
    with registered_strategy(tmp_path / "conf"):
        yield tmp_path / "conf"


def search_path(conf_dir: Path) -> str:
    return f"hydra.searchpath=[file://{conf_dir}]"


def run_ifexp_here(monkeypatch, *args: str) -> None:
    """`ifexp ARGS` in this process (a subprocess would not know the test's strategy)."""
    monkeypatch.setattr(sys, "argv", ["ifexp", *args])
    try:
        main()
    except SystemExit as exit:  # ifexp's one-line errors exit; the line is on stderr
        pytest.fail(f"ifexp {' '.join(args)} exited with {exit.code}")


def test_the_schema_accepts_it_and_lists_it_when_rejecting_a_name(tmp_path):
    with registered_strategy(tmp_path) as strategy:
        assert strategy_names()[-1] == NAME and choices()["pruning.strategy"] == strategy_names()
        assert needed_signals(NAME) == {"perplexity"}
        validate(JobConfig(pruning=PruningConfig(NAME, 0.25)))
        with pytest.raises(IfexpError) as error:
            validate(JobConfig(pruning=PruningConfig("nope", 0.25)))
        assert str(error.value) == f"pruning.strategy='nope': expected one of {', '.join(strategy_names())}"
        assert str(error.value).endswith(f", {NAME}")  # registered last
        # composed from its YAML on the search path, validated by compose_job
        job = compose_job([search_path(tmp_path), f"pruning={NAME}"])
        assert (job.pruning.strategy, job.pruning.fraction) == (NAME, 0.25)
        perplexity = np.array([2.0, 8.0, 8.0, 3.0])
        signals = Signals(ids=list("abcd"), perplexity=perplexity, length=np.array([10.0, 10.0, 40.0, 1.0]))
        expected = np.log(perplexity) / [10.0, 10.0, 40.0, 1.0]
        np.testing.assert_array_equal(removal_scores(job.pruning, signals, 0), expected)
        assert STRATEGIES[NAME] is strategy
    assert NAME not in choices()["pruning.strategy"]
    with pytest.raises(IfexpError, match=f"pruning.strategy='{NAME}': expected one of none, random, "):
        validate(JobConfig(pruning=PruningConfig(NAME, 0.25)))


def test_a_job_runs_with_it_through_the_cli(new_strategy, cache_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_ifexp_here(
        monkeypatch,
        search_path(new_strategy),
        "experiment=smoke",
        f"pruning={NAME}",
        "pruning.compare_random=false",
        "eval.benchmarks=[gsm_symbolic]",
        "eval.max_examples=4",
        "eval.max_new_tokens=8",
        "eval.eval_base=false",
        "eval.eval_full=false",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    selection = json.loads((run_dir / "selection.json").read_text())
    assert metrics["strategy"] == selection["strategy"] == NAME
    assert selection["n_removed"] == len(selection["removed"]) == 8 and metrics["n_train_kept"] == 24
    # what the strategy `needs` was computed, and nothing it does not need (theta*, its scores)
    assert "artifact/perplexity" in metrics and "artifact/sft_full" not in metrics
    assert 0.0 <= metrics["flaw/auroc"] <= 1.0  # ranked for flaw detection like any strategy
    assert "pass@1/gsm_symbolic" in metrics


def test_ifexp_bench_flaws_picks_it_up(new_strategy, cache_dir, tmp_path):
    from benchmarks.cli import main as bench_main
    from benchmarks.flaws import registered_strategies

    assert NAME in registered_strategies()  # what `ifexp-bench flaws` ranks without --strategies
    out = tmp_path / "flaws.json"
    bench_main(
        ["flaws", "--strategies", NAME, "random", "--out", str(out), "experiment=smoke", f"paths.cache_dir={cache_dir}"]
    )
    detection = json.loads(out.read_text())["detection"]
    assert set(detection) == {NAME, "random"} and 0.0 <= detection[NAME]["auroc"] <= 1.0


def test_the_tiny_all_sweep_picks_it_up(new_strategy, tmp_path, monkeypatch):
    launched: list[str] = []

    def record(cfg: JobConfig, run_dir: Path, tracker=None, config_digest=None) -> dict:
        launched.append(cfg.pruning.strategy)
        return {}

    import ifexp.pipeline

    # each job is composed and validated by the CLI as usual; only the work is left out
    monkeypatch.setattr(ifexp.pipeline, "run_job", record)
    # --config-dir, not hydra.searchpath: Hydra 1.3.8 expands glob(*) over the search path it
    # started with (ConfigLoaderImpl.get_group_options gets no overrides), so a folder added by an
    # override composes its jobs but is not globbed
    run_ifexp_here(
        monkeypatch,
        f"--config-dir={new_strategy}",
        "sweeps=tiny_all",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert sorted(launched) == sorted(choices()["pruning.strategy"]) and NAME in launched
    assert (tmp_path / "sweep" / f"{NAME}-p0.25-seed0").is_dir()


def test_each_registered_strategy_has_its_yaml_and_each_yaml_a_strategy():
    """What makes `pruning: glob(*)` (tiny_all) run exactly the strategies the schema accepts."""
    configs = {path.stem: yaml.safe_load(path.read_text()) for path in (REPO / "conf" / "pruning").glob("*.yaml")}
    assert set(configs) == set(strategy_names())
    assert all(config["strategy"] == name for name, config in configs.items())


def test_a_strategy_declares_what_the_registry_can_check():
    with pytest.raises(TypeError, match="strategy 'random' is already registered"):
        type("Again", (Strategy,), {"name": "random"})
    with pytest.raises(TypeError, match=r"\['gradients'\] not in"):
        type("Unknown", (Strategy,), {"name": "unknown_signal", "needs": {"gradients"}})
    with pytest.raises(TypeError, match="'temperature' is not a PruningConfig field"):
        type("NoField", (Strategy,), {"name": "no_field", "options": {"temperature": ("hot",)}})
    with pytest.raises(TypeError, match="'length_keep' is already"):
        type("Clash", (Strategy,), {"name": "clash", "options": {"length_keep": ("short", "medium")}})
    assert not {"unknown_signal", "no_field", "clash"} & set(STRATEGIES)
