import os
import subprocess
import sys
from pathlib import Path

import pytest

from ifexp.cache import cached_stage, content_hash, read_manifest


def test_builds_once_then_reuses(tmp_path):
    calls = []

    def build(out: Path):
        calls.append(out)
        (out / "value.txt").write_text("42")
        return {"answer": 42}

    first = cached_stage(tmp_path, "stage", {"a": 1}, build)
    second = cached_stage(tmp_path, "stage", {"a": 1}, build)
    assert first == second and len(calls) == 1
    assert (first / "value.txt").read_text() == "42"
    assert read_manifest(first)["answer"] == 42
    assert cached_stage(tmp_path, "stage", {"a": 2}, build) != first


def test_failed_build_leaves_nothing_visible(tmp_path):
    def build(out: Path):
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_stage(tmp_path, "stage", {"a": 1}, build)
    assert not (tmp_path / "stage" / content_hash({"a": 1})).exists()


def test_hash_is_stable_and_order_free():
    key = {"a": 1, "b": [1, 2], "c": {"x": None, "y": "text"}}
    assert content_hash(key) == content_hash({"c": {"y": "text", "x": None}, "b": [1, 2], "a": 1})
    assert content_hash(key) != content_hash({**key, "b": [2, 1]})  # a list's order is content
    assert content_hash(key) != content_hash({**key, "a": 2})
    # the same in another process whose str hashing is salted differently
    probe = f"from ifexp.cache import content_hash; print(content_hash({key!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == content_hash(key)
