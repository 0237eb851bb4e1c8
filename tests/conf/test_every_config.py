"""Every option of every config group in conf/ and every named sweep in sweeps/ composes into a
valid job through ifexp.cli.compose_job (lightning-hydra-template's `experiment=glob(*)` test).

The options are found by globbing the folders, so a new YAML file is checked as soon as it is
added: it composes, validates, and the job holds the values the file sets. Each value a sweep
sweeps over composes too (`glob(*)` is every option of its group), so a sweep cannot name a
strategy or model that does not exist.
"""

from __future__ import annotations

import fnmatch
from dataclasses import is_dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ifexp.cli import CONF_DIR, SWEEPS_DIR, compose_job, one_line

CONF = Path(CONF_DIR)

# What an option needs beside itself to make a valid job; a new option that needs more fails
# here with validate()'s one line, and its overrides go in this table.
NEEDS = {"dataset=jsonl": ["dataset.path=/data/cot.jsonl"]}


# `group=name` for each YAML file in a group's folder (the group is the folder, as Hydra names it:
# conf/hydra/launcher/slurm.yaml is hydra/launcher=slurm); conf/config.yaml is the primary config.
GROUP_OPTIONS = [f"{path.parent.relative_to(CONF).as_posix()}={path.stem}" for path in sorted(CONF.glob("*/**/*.yaml"))]
SWEEPS = [f"sweeps={path.stem}" for path in sorted(SWEEPS_DIR.glob("*.yaml"))]


def option_file(option: str) -> Path:
    group, name = option.split("=")
    return SWEEPS_DIR / f"{name}.yaml" if group == "sweeps" else CONF / group / f"{name}.yaml"


def set_values(option: str) -> list[tuple[str, object]]:
    """(dotted key in the job, value) for every value the option's file sets itself: not its
    defaults list, not hydra's settings, not interpolations (resolved at run time)."""
    text = option_file(option).read_text()
    content = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    content = {k: v for k, v in content.items() if k not in ("defaults", "hydra")}
    group = option.split("=")[0]
    prefix = "" if "# @package _global_" in text else group.replace("/", ".") + "."

    def leaves(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{key}.{k}" if key else k)
        elif not (isinstance(node, str) and "${" in node):
            yield key, node

    return [(prefix + key, value) for key, value in leaves(content, "")]


def job_value(job, dotted: str):
    node = job
    for part in dotted.split("."):
        node = getattr(node, part) if is_dataclass(node) else node[part]
    return node


def test_the_folders_are_found():
    """The globs see every group (a moved folder would silently test nothing; a new one is welcome)."""
    groups = {option.split("=")[0] for option in GROUP_OPTIONS}
    expected = {"model", "dataset", "train", "eval", "engine", "estimator", "pruning", "logger", "experiment"}
    assert expected | {"hydra/launcher"} <= groups
    assert len(SWEEPS) >= 5 and "sweeps=paper" in SWEEPS


@pytest.mark.parametrize("option", GROUP_OPTIONS + SWEEPS)
def test_each_option_composes_into_a_valid_job_with_its_values(option):
    needs = NEEDS.get(option, [])
    job = compose_job([option, *needs])  # check=True: validate() too
    if option.startswith("hydra/"):
        return  # a launcher's settings are Hydra's, not the job's
    given = {override.split("=")[0] for override in needs}
    for key, value in set_values(option):
        if key not in given:
            assert job_value(job, key) == value, f"{option}: {key}"


def swept_values(sweep: str) -> list[str]:
    """Each `key=value` a named sweep sweeps over, one at a time (not their product)."""
    from hydra import compose, initialize_config_dir

    # composed, not read from the file: a sweep may take its params from another (defaults: [leg_counting])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        params = compose(
            config_name="config", overrides=[f"sweeps={sweep}"], return_hydra_config=True
        ).hydra.sweeper.params
    overrides = []
    for key, values in params.items():
        values = str(values)
        if values.startswith("glob("):
            pattern = values.removeprefix("glob(").removesuffix(")")
            names = [path.stem for path in sorted((CONF / key).glob("*.yaml"))]
            overrides += [f"{key}={name}" for name in fnmatch.filter(names, pattern)]
        else:
            assert "(" not in values, f"sweeps/{sweep}.yaml: {key}: {values} (teach swept_values this syntax)"
            overrides += [f"{key}={value}" for value in values.split(",")]
    return overrides


@pytest.mark.parametrize("sweep", [option.split("=")[1] for option in SWEEPS])
def test_each_value_a_sweep_sweeps_composes(sweep):
    overrides = swept_values(sweep)
    assert overrides
    failures = []
    for override in overrides:
        try:
            compose_job([f"sweeps={sweep}", override])
        except Exception as error:
            failures.append(f"sweeps={sweep} {override}: {one_line(error)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("dataset", "budget"), [("leg_counting", 160), ("gsm_symbolic", 256), ("jsonl", 256), ("limo", 3000)]
)
def test_answers_to_a_datasets_questions_get_that_datasets_token_budget(dataset, budget):
    """theta*'s validation answers and the in-domain test answers default to dataset.max_new_tokens,
    so choosing a dataset with long traces does not cut its answers at the default dataset's 160."""
    chosen = [f"dataset={dataset}", *NEEDS.get(f"dataset={dataset}", [])]
    job = compose_job(chosen)
    assert (job.dataset.max_new_tokens, job.queries.max_new_tokens, job.eval.max_new_tokens) == (budget,) * 3
    raised = compose_job([*chosen, "dataset.max_new_tokens=400"])
    assert (raised.queries.max_new_tokens, raised.eval.max_new_tokens) == (400, 400)
    # a benchmark set of its own keeps its own budget
    assert compose_job([*chosen, "eval=math_offline"]).eval.max_new_tokens == 256
