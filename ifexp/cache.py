"""Content-addressed artifact cache: `<cache_dir>/<stage>/<hash>/` with a manifest.json.

An artifact's identity is the hash of everything it depends on (its config slice plus its
inputs' hashes), so a sweep reuses what it has already computed and a killed run resumes from
the last finished stage. Each artifact is built in a temporary folder and renamed into place,
so a partial artifact is never visible; an flock serialises builders of the same artifact, and
the kernel drops it when a builder dies, so a killed job leaves no stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

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
    raise TypeError(f"cannot hash {type(value).__name__}")


def content_hash(key: Any) -> str:
    """A short stable hash of a JSON-able description (dataclasses allowed)."""
    text = json.dumps(key, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """Hash of a file's bytes; a missing file is left for the reader to report."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else f"missing:{path}"


def read_manifest(artifact: Path) -> dict[str, Any]:
    return json.loads((Path(artifact) / MANIFEST).read_text())


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
