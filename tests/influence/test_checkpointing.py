"""Gradient checkpointing (train.gradient_checkpointing) changes memory, never a result: the same
features, K-FAC statistics, losses and adapter with it as without, each layer recorded once."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ifexp.checkpointing import AUTO_MIN_TOKENS, checkpointed, decoder_layers, use_checkpointing
from ifexp.influence.capture import LayerRecorder, forward_backward, trainable_linears
from ifexp.influence.features import extract_features
from ifexp.influence.project import KroneckerProjector, SparseJLProjector
from ifexp.models import load_model, load_tokenizer
from ifexp.schema import IfexpError, TrainConfig
from ifexp.train import apply_lora, collate, encode_examples, finetune

# down_proj is the last matmul of a decoder layer: the one a recompute that stops early never reaches
TARGETS = ["q_proj", "v_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora_model(tiny_model, tiny_model_cfg, small_splits):
    model_cfg = replace(tiny_model_cfg, lora_targets=TARGETS)
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model), model_cfg, TrainConfig(lora_r=4, lora_alpha=8))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # as after training (at B = 0 every A-gradient is zero)
            torch.nn.init.normal_(param, std=0.05)
    tokenizer = load_tokenizer(tiny_model)
    rows = encode_examples(tokenizer, small_splits["train"][:10], model_cfg, "truncate").rows()
    return model, rows, lambda batch: collate(batch, tokenizer.pad_token_id)


def features_and_factors(model, rows, collate_fn, setting: str):
    layers = trainable_linears(model)
    sketch = SparseJLProjector(512, seed=1)
    kronecker = KroneckerProjector({name: tuple(layer.weight.shape) for name, layer in layers.items()}, 3, 3, seed=1)
    sjlt, losses = extract_features(model, rows, sketch, collate_fn, 4, gradient_checkpointing=setting)
    kron, _ = extract_features(model, rows, kronecker, collate_fn, 4, gradient_checkpointing=setting)
    return sjlt, losses, kron, kronecker


def test_features_are_the_same_with_and_without_checkpointing(lora_model):
    model, rows, collate_fn = lora_model
    without = features_and_factors(model, rows, collate_fn, "never")
    with_it = features_and_factors(model, rows, collate_fn, "always")
    for plain, recomputed in zip(without[:3], with_it[:3], strict=True):
        assert np.abs(plain).max() > 0
        np.testing.assert_allclose(recomputed, plain, rtol=1e-6, atol=0)
    for covariances in ("input_cov", "grad_cov"):  # each token counted once, not once per pass
        for name, value in getattr(without[3], covariances).items():
            torch.testing.assert_close(getattr(with_it[3], covariances)[name], value, rtol=1e-9, atol=0)
    assert with_it[3].n_tokens == without[3].n_tokens


@pytest.mark.parametrize("setting", ["never", "always"])
def test_kfac_statistics_are_in_feature_order_when_layers_stream_in_backward_order(lora_model, setting):
    """Streamed extraction sees the layers last to first; KFAC pairs its i-th statistics with the i-th
    feature block. Every block here is 3 x 3, so a misordering gives wrong scores, not an error."""
    from ifexp.influence.precondition import KFAC

    model, rows, collate_fn = lora_model
    _, _, features, projector = features_and_factors(model, rows, collate_fn, setting)
    layers = list(trainable_linears(model))
    assert list(projector.input_cov) == list(projector.grad_cov) == layers
    got = KFAC(projector.input_cov, projector.grad_cov, damping=0.1).query_side(torch.as_tensor(features))
    start = 0
    for name in layers:  # each block with its own layer's factors: (G kron A)^-1 vec(Phi)
        k_out, k_in = projector.block_shapes()[name]
        grad, inp = (
            c + 0.1 * torch.diagonal(c).mean() * torch.eye(c.shape[0], dtype=torch.float64)
            for c in (projector.grad_cov[name], projector.input_cov[name])
        )
        block = torch.as_tensor(features[:, start : start + k_out * k_in]).double()
        expected = block @ torch.linalg.inv(torch.kron(grad, inp)).T
        actual = got[:, start : start + k_out * k_in].double()
        torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max()))
        start += k_out * k_in


def test_checkpointing_recomputes_and_holds_one_decoder_layer_of_inputs(lora_model):
    """The recompute really runs (each layer's forward twice a batch), and streaming features keep
    the inputs of one decoder layer at a time instead of every layer's."""
    model, rows, collate_fn = lora_model
    layers = trainable_linears(model)
    per_decoder_layer = len(layers) // len(decoder_layers(model))
    first = next(iter(layers.values()))
    for enabled, runs, held in ((False, 1, len(layers)), (True, 2, per_decoder_layer)):
        calls = []
        handle = first.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        recorder = LayerRecorder(layers, on_layer=lambda name, inputs, grads: None)
        try:
            with checkpointed(model, enabled):
                forward_backward(model, recorder, collate_fn(rows[:4]))
        finally:
            handle.remove()
        assert len(calls) == runs
        assert recorder.recorded == set(layers)
        assert not recorder.inputs  # every input handed over with its gradient
        assert recorder.max_inputs_held == held
    assert all(not hasattr(layer.forward, "ifexp_unwrapped") for layer in decoder_layers(model))  # undone


def test_finetuning_is_the_same_with_and_without_checkpointing(
    tiny_model, tiny_model_cfg, small_splits, tmp_path, monkeypatch
):
    model_cfg = replace(tiny_model_cfg, lora_targets=TARGETS)
    checkpoint, runs, checkpointed_calls = torch.utils.checkpoint.checkpoint, {}, []

    def counted(*args, **kwargs):
        checkpointed_calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    for setting in ("never", "always"):
        cfg = TrainConfig(max_steps=3, batch_size=8, lr=1e-2, lora_r=4, gradient_checkpointing=setting)
        runs[setting] = finetune(tiny_model, small_splits["train"], model_cfg, cfg, seed=1, out_dir=tmp_path / setting)
        # every decoder layer of every step ran under checkpoint with "always", none with "never"
        assert len(checkpointed_calls) == (0 if setting == "never" else 3 * model_cfg.tiny.num_layers)
    assert (runs["never"]["gradient_checkpointing"], runs["always"]["gradient_checkpointing"]) == (False, True)
    np.testing.assert_allclose(runs["always"]["losses"], runs["never"]["losses"], rtol=1e-6, atol=0)
    plain, recomputed = (load_file(str(tmp_path / s / "weights" / "adapter_model.safetensors")) for s in runs)
    assert plain.keys() == recomputed.keys()
    for name, value in plain.items():
        torch.testing.assert_close(recomputed[name], value, rtol=1e-6, atol=1e-9)


def test_auto_turns_checkpointing_on_from_the_threshold():
    assert not use_checkpointing("auto", AUTO_MIN_TOKENS - 1) and use_checkpointing("auto", AUTO_MIN_TOKENS)
    assert use_checkpointing("always", 8) and not use_checkpointing("never", 10**6)
    with pytest.raises(IfexpError, match="train.gradient_checkpointing='on': expected one of auto, always, never"):
        use_checkpointing("on", 8)
