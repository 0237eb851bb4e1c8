"""Gradient checkpointing: each decoder layer's activations are recomputed in the backward pass
instead of being kept from the forward pass, for fine-tuning and gradient features alike.

`train.gradient_checkpointing`: auto (on when the run's longest sequence has at least
AUTO_MIN_TOKENS tokens) | always | never. The recomputation runs the same operations on the same
inputs, so losses, adapters and features come out the same with it as without (tests/influence/
test_checkpointing.py, bit for bit on CPU); hence the setting is in schema.CANNOT_CHANGE_A_RESULT
and no cache key holds it.

How: torch.utils.checkpoint (non-reentrant) around the forward of every decoder layer
(transformers' GradientCheckpointingLayer), in training and in eval mode alike (transformers' own
gradient_checkpointing_enable only checkpoints a module in training mode; feature extraction runs
the model in eval mode, without dropout). Early stopping of the recomputation is off, so every
module of a layer runs again in full: the feature hooks (ifexp.influence.capture) record a
layer's inputs during its recompute, just before its backward, and `region()` tells them which
pass they are in.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.utils.checkpoint
from torch import nn

from ifexp.schema import CHOICES, IfexpError, expected_one_of

# auto turns checkpointing on from this many tokens in the longest sequence of a run. Measured on
# SmolLM2-135M (ifexp-bench memory, docs/performance.md): it saves 31% of a training step's peak at
# 2,048 tokens but 9% at 512, where the layers' activations are small beside the weights and the
# logits; the recompute costs one more forward pass of every layer (about a third more compute).
AUTO_MIN_TOKENS = 2048

_state = threading.local()


def region() -> str | None:
    """Where the running code is: "forward" (the first pass through a checkpointed layer, whose
    activations are dropped), "recompute" (that layer run again inside the backward pass) or None
    (outside any checkpointed layer)."""
    return getattr(_state, "region", None)


def _checkpointed(forward):
    """forward run under torch.utils.checkpoint; region() tells its first pass from its recompute."""

    @functools.wraps(forward)
    def run(*args, **kwargs):
        calls = 0

        def body(*inner_args, **inner_kwargs):
            nonlocal calls
            calls += 1
            outer = region()
            _state.region = "forward" if calls == 1 else "recompute"
            try:
                return forward(*inner_args, **inner_kwargs)
            finally:
                _state.region = outer

        # a cache would be written twice (the recompute replays the layer): none, as transformers does
        if kwargs.get("past_key_values") is not None:
            kwargs["past_key_values"] = None
        if kwargs.get("use_cache"):
            kwargs["use_cache"] = False
        # no early stop: the recompute runs every module of the layer, so every hook sees its inputs
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            return torch.utils.checkpoint.checkpoint(body, *args, use_reentrant=False, **kwargs)

    run.ifexp_unwrapped = forward
    return run


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (transformers' GradientCheckpointingLayer: every decoder layer)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


def use_checkpointing(setting: str, longest: int) -> bool:
    """Whether a run whose longest sequence has `longest` tokens checkpoints (auto: from
    AUTO_MIN_TOKENS on)."""
    if setting not in CHOICES["train.gradient_checkpointing"]:
        raise IfexpError(expected_one_of("train.gradient_checkpointing", setting))
    return setting == "always" or (setting == "auto" and longest >= AUTO_MIN_TOKENS)


def enable_checkpointing(model: nn.Module) -> int:
    """Checkpoint every decoder layer of model (idempotent); the number of layers checkpointed."""
    layers = decoder_layers(model)
    if not layers:
        name = type(model).__name__
        raise IfexpError(f"{name} has no decoder layers to checkpoint: set train.gradient_checkpointing=never")
    for layer in layers:
        if not hasattr(layer.forward, "ifexp_unwrapped"):
            layer.forward = _checkpointed(layer.forward)
    return len(layers)


def disable_checkpointing(model: nn.Module) -> None:
    """Undo enable_checkpointing."""
    for layer in decoder_layers(model):
        if hasattr(layer.forward, "ifexp_unwrapped"):
            layer.forward = layer.forward.ifexp_unwrapped
            if getattr(layer.forward, "__self__", None) is layer and layer.forward.__func__ is type(layer).forward:
                del layer.forward  # the class's own method again, as before


@contextmanager
def checkpointed(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """model's decoder layers checkpointed inside the block (nothing changes when not enabled)."""
    if not enabled:
        yield
        return
    already = any(hasattr(layer.forward, "ifexp_unwrapped") for layer in decoder_layers(model))
    enable_checkpointing(model)
    try:
        yield
    finally:
        if not already:
            disable_checkpointing(model)
