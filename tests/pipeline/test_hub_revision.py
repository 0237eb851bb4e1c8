"""A hub model or dataset is keyed by the commit its revision resolves to, not by its name:
offline, against a Hugging Face cache laid out as huggingface_hub writes it."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants

from ifexp.examples import read_jsonl
from ifexp.schema import DatasetConfig, IfexpError, ModelConfig
from ifexp.stages.base_model import prepare_model
from ifexp.stages.dataset import build_dataset

FIRST, SECOND = "1" * 40, "2" * 40


def publish(hub: Path, repo: str, kind: str, commit: str, files: dict[str, str], ref: str = "main") -> Path:
    """What huggingface_hub leaves in its cache after downloading repo@ref at this commit."""
    storage = hub / f"{kind}s--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    for name, text in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(text)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    return hub


def test_a_hub_model_is_its_commit_and_a_moved_branch_is_another_model(offline_hub, tmp_path):
    cfg = ModelConfig(name="m", source="hub", hf_id="org/m")
    first = publish(offline_hub, "org/m", "model", FIRST, {"config.json": "{}"})
    base = prepare_model(cfg, tmp_path / "cache")
    assert base.digest == f"hub:org/m@{FIRST}" and base.path == first  # a local folder every loader opens
    publish(offline_hub, "org/m", "model", SECOND, {"config.json": '{"changed": 1}'})  # main moved on
    assert prepare_model(cfg, tmp_path / "cache").digest == f"hub:org/m@{SECOND}"  # so nothing downstream is reused
    pinned = ModelConfig(name="m", source="hub", hf_id="org/m", revision=FIRST)
    assert prepare_model(pinned, tmp_path / "cache").digest == f"hub:org/m@{FIRST}"


def test_a_local_model_folder_is_its_files_contents(tmp_path):
    folder = tmp_path / "my_model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    cfg = ModelConfig(name="m", source="hub", hf_id=str(folder))
    before = prepare_model(cfg, tmp_path / "cache")
    assert before.path == folder and before.digest.startswith("local:")
    (folder / "config.json").write_text('{"retrained": 1}')  # same name, other weights: another model
    assert prepare_model(cfg, tmp_path / "cache").digest != before.digest


def test_a_hub_model_that_cannot_be_resolved_is_one_line(offline_hub, tmp_path):
    cfg = ModelConfig(name="m", source="hub", hf_id="org/absent", revision="v1")
    with pytest.raises(IfexpError, match=r"^model 'm': cannot get model org/absent@v1 from the hub or the local"):
        prepare_model(cfg, tmp_path / "cache")


def test_a_hub_dataset_is_keyed_by_its_commit_and_read_from_that_snapshot(offline_hub, tmp_path, monkeypatch):
    # `datasets` is optional (ifexp[hub]); a stand-in reads the snapshot folder the pipeline hands it
    monkeypatch.setattr("ifexp.data.hub_examples", lambda cfg: read_jsonl(Path(cfg.path) / "train.jsonl"))
    dataset = DatasetConfig(name="cot", source="hub", hf_id="org/cot", n_train=8, n_val=2, n_test=2, flaw_fraction=0)

    def commit_with(answer: str, commit: str) -> None:
        rows = [
            json.dumps({"id": f"q{i}", "question": f"{i} + {answer}?", "cot": "so", "answer": answer})
            for i in range(12)
        ]
        publish(offline_hub, "org/cot", "dataset", commit, {"train.jsonl": "\n".join(rows) + "\n"})

    commit_with("1", FIRST)
    first = build_dataset(dataset, tmp_path / "cache")
    assert {e.answer for e in first.train} == {"1"}
    commit_with("2", SECOND)  # main moved on: a new dataset, not the cached one
    second = build_dataset(dataset, tmp_path / "cache")
    assert second.artifact.digest != first.artifact.digest and {e.answer for e in second.train} == {"2"}
    pinned = replace(dataset, hf_revision=FIRST)
    assert build_dataset(pinned, tmp_path / "cache").artifact.digest == first.artifact.digest


@pytest.mark.parametrize(
    "files",
    [
        # GAIR/LIMO's layout: one JSONL file at the top of the repository
        {"limo.jsonl": None},
        # a dataset card whose YAML names the data files of each split, as the hub's parquet repos do
        {
            "README.md": "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            "    path: data/cot-*.jsonl\n---\n# A CoT set\n",
            "data/cot-00000.jsonl": None,
            "other/ignored.jsonl": None,
        },
    ],
    ids=["top_level_jsonl", "card_with_data_files"],
)
def test_the_datasets_library_reads_a_hub_snapshot_folder(offline_hub, tmp_path, monkeypatch, files):
    """The real loader on a snapshot folder (what hub_examples hands it), not a stand-in."""
    pytest.importorskip("datasets")  # ifexp[hub]; `make setup` installs it
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = "\n".join(
        json.dumps({"question": f"What is {i} + 1?", "solution": f"{i} + 1 = {i + 1}.", "answer": str(i + 1)})
        for i in range(12)
    )
    texts = {name: text if text is not None else rows + "\n" for name, text in files.items()}
    texts = {
        name: ('{"question": "decoy", "solution": "", "answer": "0"}\n' if "other/" in name else text)
        for name, text in texts.items()
    }
    publish(offline_hub, "org/cot", "dataset", FIRST, texts)
    dataset = DatasetConfig(name="cot", source="hub", hf_id="org/cot", n_train=8, n_val=2, n_test=2, flaw_fraction=0)
    data = build_dataset(dataset, tmp_path / "cache")
    examples = data.train + data.val + data.test
    assert len(examples) == 12 and "decoy" not in {e.question for e in examples}
    assert {(e.question, e.cot, e.answer) for e in examples} == {
        (f"What is {i} + 1?", f"{i} + 1 = {i + 1}.", str(i + 1)) for i in range(12)
    }
