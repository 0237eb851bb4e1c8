"""A job's identity and the run directory that holds it.

A job is identified by the digest of its config (the task config Hydra composed, as saved in
`.hydra/config.yaml`, flattened to dotted keys) less the keys that cannot change a result. The
digest is written into the job's metrics.json when it finishes. A run directory holds one
job: a job that lands in a folder where a job of another config has finished refuses to start,
because it would write its selection, generations and metrics over that job's. Hydra's folder
names do not prevent it: the default multirun names a job by its number in the sweep, and the
named sweeps by strategy, fraction and seed only, so `pruning.combine=zscore` or `train.lr=...`
run into the same sweep dir would land in rank's or the default's folders.

Hydra writes `.hydra/` before the task function runs, so ifexp sets `hydra.output_subdir: null`
and `claim_run_dir` writes the same three files itself once the folder is known to be free.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ifexp.outputs import DIGEST_KEY, HYDRA_DIR, METRICS, saved_config_path
from ifexp.schema import IfexpError, cannot_change_a_result

log = logging.getLogger(__name__)
SWEEP_CONFIG = "multirun.yaml"
# Values that joined schema.CANNOT_CHANGE_A_RESULT after jobs had recorded digests that count them:
# such a job's metrics.json still names its own config (recorded_digests).
JOINED_CANNOT_CHANGE_A_RESULT = ("engine.reuse",)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; lists and empty mappings as one JSON value."""
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat or {prefix.rstrip("."): "{}"}
    if isinstance(node, list):
        return {prefix.rstrip("."): json.dumps(node)}
    return {prefix.rstrip("."): node}


def identity_values(config: Mapping[str, Any], counting: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flattened config less the keys that cannot change a result (but those in `counting`)."""
    return {k: v for k, v in flatten(config).items() if k in counting or not cannot_change_a_result(k)}


def config_digest(config: Mapping[str, Any], counting: tuple[str, ...] = ()) -> str:
    text = json.dumps(identity_values(config, counting), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_digests(config: Mapping[str, Any]) -> set[str]:
    """The digests a finished job of this config may have recorded: its digest, and the one from
    before JOINED_CANNOT_CHANGE_A_RESULT joined the list (a finished run dir stays readable)."""
    return {config_digest(config), config_digest(config, counting=JOINED_CANNOT_CHANGE_A_RESULT)}


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The job config saved in run_dir/.hydra/config.yaml, or None."""
    path = saved_config_path(run_dir)
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    """'key: old -> new' for the first `limit` keys whose values differ."""
    old_flat, new_flat = identity_values(old), identity_values(new)
    keys = sorted(k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k) != new_flat.get(k))
    shown = [f"{k}: {old_flat.get(k, '<absent>')} -> {new_flat.get(k, '<absent>')}" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown) + more


def finished_digest(run_dir: Path) -> str | None:
    """The config digest of the job that finished in run_dir, or None where none finished. A
    metrics.json from before digests were recorded is matched by its saved config's digest."""
    path = run_dir / METRICS
    if not path.is_file():
        return None
    try:
        digest = json.loads(path.read_text()).get(DIGEST_KEY)
    except (json.JSONDecodeError, AttributeError):
        digest = None
    if digest:
        return str(digest)
    saved = read_config(run_dir)
    return config_digest(saved) if saved is not None else "unknown"


def claim_run_dir(run_dir: Path, config: Mapping[str, Any], hydra_files: Mapping[str, str]) -> str:
    """Refuses run_dir where a job of another config finished; else writes `.hydra/` (`hydra_files`:
    name -> text) and returns this job's digest. A finished job of the same config may run again
    (its stages come from the cache and its outputs are the same); an unfinished job of another
    config (crashed or killed) is replaced, and run.log says so."""
    digest = config_digest(config)
    old = read_config(run_dir)
    finished = finished_digest(run_dir)
    if finished is not None and finished not in recorded_digests(config):
        # Empty where .hydra/config.yaml was written over already (hydra.output_subdir set by the user)
        changed = differences(old, config) if old is not None else ""
        what = f" ({changed})" if changed else ""
        raise IfexpError(
            f"{run_dir} holds a finished job of another config{what}; refusing to write over it: "
            "choose another hydra.run.dir, or hydra.sweep.dir / hydra.sweep.subdir for a multirun"
        )
    if finished is None and old is not None and config_digest(old) != digest:
        log.warning(
            "%s held an unfinished job of another config (%s); this job replaces it", run_dir, differences(old, config)
        )
    hydra_dir = run_dir / HYDRA_DIR
    hydra_dir.mkdir(parents=True, exist_ok=True)
    for name, text in hydra_files.items():
        (hydra_dir / name).write_text(text, encoding="utf-8")
    return digest


def keep_earlier_sweep_config(sweep_dir: str | Path) -> Path | None:
    """Moves an earlier sweep's multirun.yaml in `sweep_dir` to multirun.N.yaml (the first free N)
    and returns where, before Hydra writes the new sweep's over it. A second sweep into one folder
    (another strategy, more seeds) would otherwise leave only its own, and the folder would no
    longer say how its other jobs were launched."""
    current = Path(sweep_dir) / SWEEP_CONFIG
    if not current.is_file():
        return None
    number = 1
    while (kept := current.with_name(f"multirun.{number}.yaml")).exists():
        number += 1
    current.rename(kept)
    return kept
