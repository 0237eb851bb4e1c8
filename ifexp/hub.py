"""Hugging Face hub repositories, pinned to the commit they resolve to.

A hub model or dataset is identified in every cache key by the commit its revision (a branch,
tag or commit; `main` by default) resolves to, never by its name: a repository that moves on
must not reuse what an earlier commit built. Online, the revision is resolved and the files are
downloaded into the Hugging Face cache; offline (HF_HUB_OFFLINE=1, or no network), the revision
is read from that cache's `refs/`, as huggingface_hub does.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ifexp.schema import IfexpError

log = logging.getLogger(__name__)

# What a model needs to load in transformers and vLLM: config, weights, tokenizer, chat template
# (not the `original/` checkpoints some repositories ship beside them).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_snapshot(
    repo_id: str, revision: str, repo_type: str, what: str, allow_patterns: list[str] | None = None
) -> tuple[str, Path]:
    """(commit, local folder of the repository at that commit); `what` names the config in errors."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, allow_patterns=allow_patterns))
    except Exception as error:  # noqa: BLE001 - any hub failure is one line for the user; the chain keeps the rest
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise IfexpError(
            f"{what}: cannot get {repo_type} {repo_id}@{revision} from the hub or the local Hugging Face cache "
            f"({type(error).__name__}: {reason})"
        ) from error
    if not COMMIT.fullmatch(folder.name):
        raise IfexpError(f"{what}: {repo_id}@{revision} resolved to {folder}, not a commit's snapshot folder")
    log.info("%s: %s@%s is commit %s", what, repo_id, revision, folder.name)
    return folder.name, folder
