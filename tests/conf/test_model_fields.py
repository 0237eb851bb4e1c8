"""A model config shows only what its source reads: the fields of one source (schema.SOURCE_FIELDS:
the random tiny model's shape, a hub id and revision, a GGUF package and file) are null for every
other, in `ifexp --cfg job` and in each conf/model/*.yaml, and a job that sets one where its source
ignores it is refused in one line."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from helpers.cli import run_ifexp

from ifexp.cli import CONF_DIR, compose_job
from ifexp.schema import SOURCE_FIELDS, IfexpError, ModelConfig, TinyModelConfig

MODELS = sorted(path.stem for path in (Path(CONF_DIR) / "model").glob("*.yaml"))
TINY_SHAPE = {f.name for f in fields(TinyModelConfig)}


def test_cfg_job_with_the_default_model_shows_no_field_the_model_ignores():
    printed = yaml.safe_load(run_ifexp("--cfg", "job", check=True).stdout)
    model = printed["model"]
    assert model["source"] == "gguf" and model["gguf_package"] and model["gguf_file"]
    assert not TINY_SHAPE & set(model)  # hidden_size: 64, num_layers: 2, vocab_size: 1024, ...
    ignored = [name for source, names in SOURCE_FIELDS.items() if source != "gguf" for name in names]
    assert {name: model[name] for name in ignored} == dict.fromkeys(ignored)


@pytest.mark.parametrize("model", MODELS)
def test_each_model_sets_its_own_sources_fields_only(model):
    job = compose_job([f"model={model}"])
    for source, names in SOURCE_FIELDS.items():
        values = {name: getattr(job.model, name) for name in names}
        if source == job.model.source:
            assert values["hf_id" if source == "hub" else names[0]] is not None
        else:
            assert values == dict.fromkeys(names), f"{model} (source={job.model.source}) sets {source}'s fields"


def test_every_model_field_is_common_or_one_sources():
    """A new source-specific field is named in SOURCE_FIELDS (else it shows for every model)."""
    common = {"name", "source", "system_prompt", "max_seq_len", "lora_targets"}
    specific = [name for names in SOURCE_FIELDS.values() for name in names]
    assert len(specific) == len(set(specific))
    assert {f.name for f in fields(ModelConfig)} == common | set(specific)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.hf_id=org/model"], "model.hf_id is read by source=hub only, and model 'smollm2_135m' has source=gguf"),
        (["model=tiny_llama", "model.gguf_file=x.gguf"], "model.gguf_file is read by source=gguf only"),
        (["model=tiny_llama", "model.tiny=null"], "model 'tiny_llama': source=tiny needs model.tiny"),
    ],
)
def test_a_field_the_source_ignores_is_refused(overrides, message):
    with pytest.raises(IfexpError, match=message):
        compose_job(overrides)
