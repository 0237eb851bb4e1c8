"""Two CPU processes (gloo) give what one process gives: fine-tuning and gradient features."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from ifexp.distributed import run_sharded
from ifexp.models import load_model
from ifexp.schema import EstimatorConfig, IfexpError, TrainConfig
from ifexp.stages.features import extract_feature_store
from ifexp.train import finetune


@pytest.fixture(scope="module")
def one_and_two_process_sft(tiny_model, tiny_model_cfg, small_splits, tmp_path_factory):
    train = small_splits["train"][:16]
    train_cfg = TrainConfig(epochs=1, batch_size=4, lr=5e-3, lora_dropout=0.0)
    out = {}
    for processes in (1, 2):
        folder = tmp_path_factory.mktemp(f"sft{processes}")
        kwargs = dict(base_path=tiny_model, examples=train, model_cfg=tiny_model_cfg, train_cfg=train_cfg, seed=3)
        out[processes] = (folder, run_sharded(finetune, {**kwargs, "out_dir": folder}, processes))
    return out


def adapter_weights(tiny_model: str, folder) -> dict[str, torch.Tensor]:
    model = PeftModel.from_pretrained(load_model(tiny_model), folder / "weights")
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def test_two_process_finetuning_matches_one(one_and_two_process_sft, tiny_model):
    (one_dir, one), (two_dir, two) = one_and_two_process_sft[1], one_and_two_process_sft[2]
    assert one["steps"] == two["steps"] == 4
    np.testing.assert_allclose(one["losses"], two["losses"], rtol=1e-4)
    single, double = adapter_weights(tiny_model, one_dir), adapter_weights(tiny_model, two_dir)
    assert single.keys() == double.keys()
    for name in single:
        torch.testing.assert_close(single[name], double[name], rtol=1e-3, atol=1e-5)
    assert any(v.abs().max() > 0 for n, v in double.items() if "lora_B" in n)  # it did train


@pytest.mark.parametrize("projection", ["sjlt", "kronecker"])
def test_two_process_features_match_one(
    one_and_two_process_sft, tiny_model, tiny_model_cfg, small_splits, tmp_path, projection
):
    one_dir, _ = one_and_two_process_sft[1]
    est = EstimatorConfig(projection=projection, k=512, batch_size=4)
    kwargs = dict(
        est=est,
        model_cfg=tiny_model_cfg,
        model_path=tiny_model,
        adapter=str(one_dir / "weights"),
        examples=small_splits["train"][:14],  # 4 batches, the last one short: shards of 8 and 6
        split_key="train",
    )
    stores = {}
    for processes in (1, 2):
        stores[processes] = tmp_path / str(processes)
        manifest = run_sharded(extract_feature_store, {**kwargs, "out": stores[processes]}, processes)
        assert manifest["n"] == 14
    single, double = (np.load(stores[p] / "features.npy") for p in (1, 2))
    assert np.abs(single).max() > 0
    np.testing.assert_allclose(double, single, rtol=1e-4, atol=1e-6 * np.abs(single).max())
    if projection == "kronecker":
        one_factors, two_factors = (torch.load(stores[p] / "kfac_factors.pt") for p in (1, 2))
        for side in ("input_cov", "grad_cov"):
            for name in one_factors[side]:
                expected = one_factors[side][name]
                torch.testing.assert_close(
                    two_factors[side][name], expected, rtol=1e-5, atol=1e-6 * expected.abs().max()
                )


def test_batch_size_must_divide_among_processes(tiny_model, tiny_model_cfg, small_splits, tmp_path):
    kwargs = dict(
        base_path=tiny_model,
        examples=small_splits["train"][:4],
        model_cfg=tiny_model_cfg,
        train_cfg=TrainConfig(batch_size=3, max_steps=1),
        seed=0,
        out_dir=tmp_path,
    )
    with pytest.raises(IfexpError, match=r"^train.batch_size=3 must be a multiple of the 2 processes$"):
        run_sharded(finetune, kwargs, 2)


def test_a_crashing_worker_is_one_line_and_its_traceback_is_logged(caplog):
    with pytest.raises(IfexpError, match=r"^getcwd failed in a 2-process run \(exit"):
        run_sharded(os.getcwd, {"unexpected": 1}, 2)
    assert "TypeError: posix.getcwd() takes no keyword arguments" in caplog.text  # the job's run.log gets it


def test_a_worker_killed_by_a_signal_leaves_its_stack(capfd, caplog, monkeypatch):
    from helpers import workers

    tests_dir = str(Path(workers.__file__).parents[1])  # the worker imports helpers.workers by name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    with pytest.raises(IfexpError, match=r"^abort_on_rank_one failed in a 2-process run \(exit"):
        run_sharded(workers.abort_on_rank_one, {}, 2)
    for shown in (capfd.readouterr().err, caplog.text):  # on stderr as it happens, and in the job's log
        assert "Fatal Python error: Aborted" in shown
        assert 'workers.py", line' in shown and "in abort_on_rank_one" in shown  # where in the worker it died


@pytest.mark.slow
def test_a_whole_job_with_two_processes_selects_what_one_process_selects(easy_cot, tmp_path):
    from helpers.cli import run_ifexp
    from helpers.data import EASY_TRAINING

    runs = {}
    for processes in (1, 2):
        runs[processes] = tmp_path / f"run{processes}"
        run_ifexp(
            "experiment=smoke",
            *EASY_TRAINING,
            f"dataset.path={easy_cot}",
            "pruning=combined",
            f"compute.num_processes={processes}",
            f"paths.cache_dir={tmp_path}/cache{processes}",
            f"hydra.run.dir={runs[processes]}",
            check=True,
        )
    one, two = (json.loads((runs[p] / "selection.json").read_text()) for p in (1, 2))
    assert one["removed"] == two["removed"]
    scores = [np.genfromtxt(runs[p] / "scores.csv", delimiter=",", names=True, dtype=None) for p in (1, 2)]
    for column in ("s_correct", "s_incorrect", "rank_score"):
        np.testing.assert_allclose(scores[1][column], scores[0][column], rtol=1e-3, atol=1e-6)
