"""Plugins: a user's own modules of strategies, projections, preconditioners, benchmarks, dataset or
model sources, engines (anything registered in an `ifexp.registry.Registry`), loaded by configuration.

`ifexp plugins=[my_lab.strategies] pruning=my_strategy` imports `my_lab.strategies` in the job's own
process before the job is validated (the entry point, `cli.compose_job` and `pipeline.run_job` call
`load_plugins`), so a launcher that runs each job in a process of its own (submitit, Slurm) imports
it there. A name is looked up on `sys.path`, then in the folder `ifexp` was started in (the
launcher's, also in its jobs' processes: `LAUNCH_DIR_VARIABLE`). Defining a Strategy subclass, or
registering in any registry, is all a plugin does; its config YAML (conf/pruning/my_strategy.yaml)
comes from a folder on Hydra's search path (`hydra.searchpath=[file://DIR]`).

An installed package can declare its plugin modules in the entry-point group `ifexp.plugins`
(`[project.entry-points."ifexp.plugins"] my_lab = "my_lab.strategies"`): they are loaded for every
job, before the listed ones, and a `conf/` folder inside the module's top-level package is put on
Hydra's search path when `ifexp` starts (`cli.SweepsSearchPath`), so its YAML files need no
`hydra.searchpath` and `pruning=glob(*)` sees them.

The cache: a plugin's code is not in the import closure of ifexp's stage modules, so it is recorded
when loaded (`code_version.record_plugin`: its code version and the modules that declare the
registries it registered in) and every stage whose closure holds one of those modules keys it
(`code_version.plugins_for`). A projection or preconditioner is in the features, scores and
self_influence keys; an engine in the eval key; a dataset or model source in its stage's; a
strategy in none (selection is not cached), nor a benchmark (its code makes the problems, which the
eval key holds by content). A plugin that registers nothing ifexp sees is in every stage's key.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from ifexp.code_version import PLUGINS, record_plugin
from ifexp.registry import Registry
from ifexp.schema import IfexpError

ENTRY_POINT_GROUP = "ifexp.plugins"
# The folder `ifexp` was started in, set by the entry point and inherited by the jobs' processes
# (submitit's local and Slurm launchers): a plugin module is also looked up there.
LAUNCH_DIR_VARIABLE = "IFEXP_LAUNCH_DIR"


def load_plugins(names: Iterable[str]) -> None:
    """Imports the installed plugins, then each listed module, once per process (in order), and
    records what each registered."""
    for name in dict.fromkeys([*installed_plugins(), *names]):
        load_plugin(name)


def installed_plugins() -> list[str]:
    """The modules installed packages declare in the `ifexp.plugins` entry-point group."""
    from importlib.metadata import entry_points

    return sorted({entry.module for entry in entry_points(group=ENTRY_POINT_GROUP)})


def installed_plugin_conf_dirs() -> list[Path]:
    """The `conf/` folder inside each installed plugin's top-level package, where there is one
    (found without importing the plugin)."""
    import importlib.util

    folders = []
    for module in installed_plugins():
        try:
            spec = importlib.util.find_spec(module.split(".")[0])
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            if (Path(location) / "conf").is_dir():
                folders.append(Path(location) / "conf")
    return folders


def _declare_registries() -> None:
    """Imports every module that declares a registry a job is validated against (what validation
    imports to check a job: it would, right after, anyway), so that what a plugin registers is told
    apart from the built-ins a first import of such a module registers. A registry declared
    elsewhere and first imported by a plugin makes that plugin one that "registered nothing seen",
    which every stage keys: the safe side."""
    from ifexp.validation import choices

    choices()


def load_plugin(name: str) -> None:
    if name in PLUGINS:
        return
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise IfexpError(f"plugins: {name!r} is not a module name (e.g. my_lab.strategies)")
    _declare_registries()
    _launch_dir_on_path()
    before = {id(registry): set(registry.names()) for registry in Registry.ALL}
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any failure of the user's module is one line naming it
        raise IfexpError(f"plugin {name}: {_why(name, error)}") from error
    registries = frozenset(
        registry.module
        for registry in Registry.ALL
        if id(registry) in before and set(registry.names()) - before[id(registry)]
    )
    record_plugin(name, registries)


def _launch_dir_on_path() -> None:
    launch_dir = os.environ.get(LAUNCH_DIR_VARIABLE) or os.getcwd()
    if launch_dir not in sys.path and str(Path(launch_dir).resolve()) not in map(_resolved, sys.path):
        sys.path.append(launch_dir)


def _resolved(entry: str) -> str:
    return str(Path(entry or ".").resolve())


def _why(name: str, error: Exception) -> str:
    """The import failure as one line: what failed, and where in the user's code."""
    if isinstance(error, ModuleNotFoundError) and error.name and (name + ".").startswith(error.name + "."):
        launch_dir = os.environ.get(LAUNCH_DIR_VARIABLE) or os.getcwd()
        return f"cannot import it: no module named '{error.name}' (looked on sys.path and in {launch_dir})"
    text = " ".join(str(error).split())
    where = ""
    if isinstance(error, SyntaxError) and error.filename:
        text, where = error.msg, f" ({error.filename}:{error.lineno})"
    else:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<")]
        if frames:
            where = f" ({frames[-1].filename}:{frames[-1].lineno})"
    return f"importing it failed: {type(error).__name__}: {text}{where}"


def forget_plugin(name: str) -> None:
    """Undoes load_plugin in this process as far as ifexp sees it (a test's clean-up): the record
    and the module; entries it registered are the caller's to unregister."""
    PLUGINS.pop(name, None)
    sys.modules.pop(name, None)
