import json
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
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert json.loads(json.dumps(content_hash({"x": 1})))
