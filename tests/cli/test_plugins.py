"""Plugins (ifexp.plugins): a strategy in a module of the user's own, outside the package, loaded
by `plugins=[my_lab.strategies]`, with its YAML on Hydra's search path.

The jobs run as a user runs them, from the user's project folder, and like the `ifexp` console
script (`python -P`: the folder is not put on sys.path by Python, only ifexp's launch-dir rule
finds the module): one job; a 2-job multirun; hydra/launcher=local (each job its own process,
which must import the plugin itself). The Slurm launcher's is in tests/slurm/. Then: an import
error is one line naming the module, and a plugin is in the cache keys of exactly the stages that
can run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import REPO
from helpers.plugins import CHEAP_JOB, MODULE, STRATEGY, removed_as_expected, write_plugin

from ifexp.code_version import PLUGINS, code_version, plugin_code_version
from ifexp.outputs import read_removal_scores
from ifexp.plugins import forget_plugin, load_plugin
from ifexp.registry import Registry
from ifexp.schema import IfexpError


def ifexp_in(project: Path, *args: str, site: Path | None = None) -> subprocess.CompletedProcess:
    """`ifexp ARGS` started in the project folder, ifexp from this tree (PYTHONPATH; `site`: a
    folder of installed packages beside it), the project folder not on sys.path (-P, as under the
    console script)."""
    paths = [str(REPO), *([str(site)] if site else []), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-P", "-m", "ifexp.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture
def project(tmp_path) -> Path:
    write_plugin(tmp_path / "project")
    return tmp_path / "project"


def plugin_args(project: Path, cache: Path) -> list[str]:
    return [
        f"plugins=[{MODULE}]",
        f"hydra.searchpath=[file://{project / 'conf'}]",
        *CHEAP_JOB,
        f"paths.cache_dir={cache}",
    ]


def test_one_job_runs_the_plugin_strategy(project, tmp_path):
    result = ifexp_in(project, *plugin_args(project, tmp_path / "cache"), f"pruning={STRATEGY}", "hydra.run.dir=run")
    succeeded(result)
    metrics = json.loads((project / "run" / "metrics.json").read_text())
    selection = json.loads((project / "run" / "selection.json").read_text())
    assert metrics["strategy"] == selection["strategy"] == STRATEGY
    assert removed_as_expected(selection)
    ranking = read_removal_scores(project / "run")  # the strategy's ranking, in the run's outputs
    assert [i for i, removed in zip(ranking["example_id"], ranking["removed"], strict=True) if removed] == (
        selection["removed"]
    )
    assert ranking["removal_score"] == [float(sorted(ranking["example_id"]).index(i)) for i in ranking["example_id"]]
    assert "plugins:\n- my_lab.strategies" in (project / "run" / ".hydra" / "config.yaml").read_text()


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_a_two_job_multirun_runs_it_in_every_job(project, tmp_path, launcher):
    """basic: both jobs in the launcher's process; local: each in a submitit process of its own."""
    chosen = ["hydra/launcher=local"] if launcher == "local" else []
    result = ifexp_in(
        project,
        "-m",
        *chosen,
        *plugin_args(project, tmp_path / "cache"),
        f"pruning={STRATEGY},random",
        "hydra.sweep.dir=sweep",
    )
    succeeded(result)
    selections = {}
    for path in sorted((project / "sweep").glob("*/selection.json")):
        selection = json.loads(path.read_text())
        selections[selection["strategy"]] = selection
    assert sorted(selections) == sorted([STRATEGY, "random"])
    assert removed_as_expected(selections[STRATEGY]) and not removed_as_expected(selections["random"])
    if launcher == "local":  # the jobs ran through submitit, each in its own process
        assert list((project / "sweep" / ".submitit").glob("*/*_result.pkl"))


def test_an_installed_plugin_package_needs_neither_the_plugins_key_nor_a_search_path(tmp_path):
    """A package installed with an `ifexp.plugins` entry point and its YAML in its own conf/ folder:
    loaded for every job, and its conf/ on the search path from the start, so a glob sees it."""
    site = tmp_path / "site"
    (write_plugin(site)).rename(site / "my_lab" / "conf")
    dist_info = site / "my_lab-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-lab\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[ifexp.plugins]\nmy_lab = {MODULE}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = ifexp_in(
        elsewhere,
        "-m",
        *CHEAP_JOB,
        "pruning=glob(last_*)",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra.sweep.dir=sweep",
        site=site,
    )
    succeeded(result)
    (selection,) = [json.loads(p.read_text()) for p in (elsewhere / "sweep").glob("*/selection.json")]
    assert selection["strategy"] == STRATEGY and removed_as_expected(selection)


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_it(project, tmp_path):
    result = ifexp_in(project, "plugins=[my_lab.absent]", *CHEAP_JOB, "hydra.run.dir=run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ifexp: error: plugin my_lab.absent: cannot import it: no module named 'my_lab.absent' "
        f"(looked on sys.path and in {project})"
    ]
    (project / "my_lab" / "broken.py").write_text("import numpy\n\nVALUE = 1 / 0\n")
    result = ifexp_in(project, "plugins=[my_lab.broken]", *CHEAP_JOB, "hydra.run.dir=run2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ifexp: error: plugin my_lab.broken: importing it failed: ZeroDivisionError: division by zero "
        f"({project / 'my_lab' / 'broken.py'}:3)"
    ]


# ---------------------------------------------------------------------------------------------
# The cache: which stages key a plugin


PROJECTION_PLUGIN = """
from ifexp.influence.project import SparseJLProjector


class Halved(SparseJLProjector):
    projections = ("{name}",)
"""
BENCHMARK_PLUGIN = """
from ifexp.evaluate.benchmarks import Benchmark, register_benchmark
from ifexp.examples import Problem

register_benchmark(Benchmark("{name}", lambda size, seed: [Problem("p0", "1 + 1?", "2")]))
"""
STRATEGY_PLUGIN = """
from ifexp.selection import Strategy


class Nothing(Strategy):
    name = "{name}"

    def removal_scores(self, cfg, signals, seed):
        return [0.0] * len(signals.ids)
"""
SILENT_PLUGIN = """
import ifexp.prompts

ifexp.prompts.PATCHED = True  # changes ifexp without registering anything
"""


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """A folder on sys.path for in-process plugins; every plugin loaded is forgotten (and its
    registrations undone) afterwards, so that no other test's keys see it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = {id(r): set(r.names()) for r in Registry.ALL}
    loaded = set(PLUGINS)
    yield tmp_path
    for registry in Registry.ALL:
        for name in set(registry.names()) - before.get(id(registry), set()):
            registry.unregister(name)
    for name in set(PLUGINS) - loaded:
        forget_plugin(name)


STAGE_MODULES = {
    "dataset": "ifexp.stages.dataset",
    "base_model": "ifexp.stages.base_model",
    "sft": "ifexp.stages.sft",
    "eval": "ifexp.stages.eval",
    "features": "ifexp.stages.features",
    "scores": "ifexp.stages.scores",
    "self_influence": "ifexp.stages.self_influence",
    "perplexity": "ifexp.stages.perplexity",
}


def keyed_by(module: str) -> set[str]:
    """The stages whose code version (hence cache key) holds this plugin."""
    return {
        stage
        for stage, stage_module in STAGE_MODULES.items()
        if module in code_version(stage_module).get("plugins", {})
    }


@pytest.mark.parametrize(
    ("source", "stages"),
    [
        (PROJECTION_PLUGIN, {"features", "scores", "self_influence"}),
        # a benchmark's code makes problems, which the eval key holds by content: no stage runs it
        (BENCHMARK_PLUGIN, set()),
        (STRATEGY_PLUGIN, set()),  # selection is not cached
        (SILENT_PLUGIN, set(STAGE_MODULES)),  # registers nothing: what it changes is unknown
    ],
    ids=["projection", "benchmark", "strategy", "registers_nothing"],
)
def test_a_plugin_is_in_the_keys_of_the_stages_that_can_run_it(plugin_folder, source, stages):
    module = f"lab_{uuid.uuid4().hex[:8]}"
    (plugin_folder / f"{module}.py").write_text(source.format(name=module))
    assert not keyed_by(module)
    load_plugin(module)
    assert keyed_by(module) == stages
    if stages:  # its code version is its own code's: an edit is a new key
        first = plugin_code_version(module)
        (plugin_folder / f"{module}.py").write_text(source.format(name=module) + "\nEDITED = 1\n")
        assert plugin_code_version(module) != first
        assert plugin_code_version(module)["code"][module] != first["code"][module]


def test_a_plugins_own_modules_and_libraries_are_in_its_code_version(project, monkeypatch):
    monkeypatch.syspath_prepend(str(project))
    version = plugin_code_version(MODULE)
    assert {"my_lab", "my_lab.strategies", "my_lab.ranking", "ifexp.selection.registry"} <= set(version["code"])
    assert "numpy" in version["libraries"]
    for name in [n for n in sys.modules if n == "my_lab" or n.startswith("my_lab.")]:
        del sys.modules[name]


def test_a_plugin_name_that_is_not_a_module_name_is_refused():
    with pytest.raises(IfexpError, match=r"plugins: 'my_lab/strategies.py' is not a module name"):
        load_plugin("my_lab/strategies.py")
