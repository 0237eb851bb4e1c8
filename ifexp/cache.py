"""Content-addressed artifact cache: `<cache_dir>/<stage>/<digest>/` with a manifest.json.

An artifact is identified by what produced it (dora's XP signature): the digest is the hash of
its stage's key, which holds
- the config slice the stage reads (a dataclass minus an explicit exclusion list, so a new
  config field counts until someone decides it cannot change the result: `config_slice`),
- the *digests* of its input artifacts (never a folder's name: `Artifact.digest`),
- the stage's code version: a hash of the source of the ifexp modules that produce it (their
  syntax tree, so comments and formatting do not count) and the versions of the libraries it
  runs (`Stage.version`).
So an edit to the grader, a new prompt instruction or a transformers upgrade recomputes exactly
the stages whose code changed, and everything downstream of them through the digests.

Each artifact is built in a temporary folder and renamed into place, so a partial artifact is
never visible; an flock serialises builders of the same artifact, and the kernel drops it when
a builder dies, so a killed job leaves no stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from ifexp.code_version import code_version
from ifexp.schema import IfexpError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
# Fault injection for the reliability tests (docs/reliability.md): "STAGE:during" SIGKILLs this
# process after STAGE's files are written but before the rename; "STAGE:after" right after it.
FAULT_VARIABLE = "IFEXP_FAULT"


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Artifact):
        return value.digest
    raise TypeError(f"cannot hash {type(value).__name__}")


def content_hash(key: Any) -> str:
    """A short stable hash of a JSON-able description (dataclasses and artifacts allowed)."""
    text = json.dumps(key, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """Hash of a file's bytes; a missing file is left for the reader to report."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else f"missing:{path}"


def config_slice(config: Any, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A config dataclass as a key: every field except the named ones (which must exist)."""
    names = {f.name for f in fields(config)}
    unknown = set(exclude) - names
    if unknown:  # an exclusion that no longer matches a field would silently key nothing
        raise ValueError(f"{type(config).__name__} has no field(s) {sorted(unknown)} to exclude")
    return {name: value for name, value in asdict(config).items() if name not in set(exclude)}


@functools.cache
def library_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_manifest(artifact: Path | Artifact) -> dict[str, Any]:
    path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    return json.loads((path / MANIFEST).read_text())


@dataclass(frozen=True)
class Artifact:
    """One stage output: what produced it (stage, digest) and where it lives."""

    stage: str
    digest: str
    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:  # opens where a path is expected (from_pretrained, open, Path)
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)


# stage name -> its Stage, as the stage modules (ifexp/stages/) declare them
STAGES: dict[str, Stage] = {}


@dataclass(frozen=True)
class Stage:
    """A stage of the chain: its name and the module that declares it and builds its artifacts.

    The stage's code version is computed from that module (`ifexp.code_version`): every ifexp
    module in its static import closure, the libraries they import (and all these require), and
    Python's version; `revision` is a hand-set number for what none of them shows (a changed file
    format read by a later stage)."""

    name: str
    module: str
    revision: int = 1

    def __post_init__(self) -> None:
        known = STAGES.get(self.name)
        if known is not None and known.module != self.module:
            raise ValueError(f"stage '{self.name}' is already declared by {known.module}")
        STAGES[self.name] = self

    def version(self) -> dict[str, Any]:
        return {"revision": self.revision, **code_version(self.module)}

    def key(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "version": self.version()}

    def locate(self, cache_dir: str | Path, inputs: dict[str, Any]) -> Artifact:
        """Where the artifact for these inputs lives (built or not)."""
        digest = content_hash(self.key(inputs))
        return Artifact(self.name, digest, Path(cache_dir) / self.name / digest)

    def find(self, cache_dir: str | Path, inputs: dict[str, Any]) -> Artifact | None:
        """The finished artifact for these inputs, or None."""
        artifact = self.locate(cache_dir, inputs)
        return artifact if (artifact / MANIFEST).is_file() else None

    def get(
        self, cache_dir: str | Path, inputs: dict[str, Any], build: Callable[[Path], dict[str, Any] | None]
    ) -> Artifact:
        """The artifact for these inputs, built with build(tmp_dir) if it is not cached yet."""
        path = cached_stage(cache_dir, self.name, self.key(inputs), build)
        return Artifact(self.name, path.name, path)


def _inject_fault(stage: str, moment: str) -> None:
    if os.environ.get(FAULT_VARIABLE) == f"{stage}:{moment}":
        os.kill(os.getpid(), signal.SIGKILL)


def cached_stage(
    cache_dir: str | Path,
    stage: str,
    key: Any,
    build: Callable[[Path], dict[str, Any] | None],
) -> Path:
    """Return the artifact folder for (stage, key), building it with build(tmp_dir) if needed.

    build writes its files into tmp_dir and may return extra manifest entries. If build fails
    (or the disk fills up) its temp folder is removed; one left by a killed builder is removed
    by the next builder of the same artifact, which holds the lock.
    """
    digest = content_hash(key)
    stage_dir = Path(cache_dir) / stage
    final = stage_dir / digest
    if (final / MANIFEST).is_file():
        log.info("%s: reusing %s", stage, final)
        return final
    stage_dir.mkdir(parents=True, exist_ok=True)
    with open(stage_dir / f".{digest}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if (final / MANIFEST).is_file():  # another job built it while we waited
            log.info("%s: reusing %s (built by another job)", stage, final)
            return final
        for stale in stage_dir.glob(f".tmp-{digest}-*"):  # left by a killed builder: we hold the lock
            log.warning("%s: removing %s left by an interrupted build", stage, stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = stage_dir / f".tmp-{digest}-{os.getpid()}"
        tmp.mkdir()
        log.info("%s: computing %s", stage, final)
        started = time.time()
        try:
            extra = build(tmp) or {}
            manifest = {
                "stage": stage,
                "hash": digest,
                "key": json.loads(json.dumps(key, sort_keys=True, default=_plain)),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(time.time() - started, 3),
                **extra,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise IfexpError(
                    f"disk full while writing the {stage} artifact under {stage_dir}: nothing was kept"
                ) from None
            raise
        _inject_fault(stage, "during")
        if final.exists():  # a folder without manifest cannot come from a rename; be safe
            shutil.rmtree(final)
        os.rename(tmp, final)
        _inject_fault(stage, "after")
    return final
