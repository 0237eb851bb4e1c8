"""Per-example gradients of trainable Linear layers, batched, from forward/backward hooks.

For a Linear layer y = W x, the gradient of example b's loss is sum_t g_{b,t} x_{b,t}^T, where
x are the layer's inputs and g the gradients of the loss at its outputs. One backward pass of
the *sum* of per-example losses gives every example's g (examples do not interact), so the
hooks record x and g for the whole batch and the per-example gradients follow by an einsum,
or, projected, without ever forming them (see project.KroneckerProjector).

An example's loss is ifexp.train.per_example_losses: its mean token cross-entropy over response
tokens (labels != -100), or, with token weights (estimator.loss_weighting=step_mean), a weighted
sum of its token losses; the same cross-entropy as training's (ifexp.train.next_token_cross_entropy).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ifexp.train import per_example_losses


def trainable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers whose weight is trained (the LoRA A/B matrices of a PEFT model)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.weight.requires_grad
    }


class LayerRecorder:
    """Records each watched layer's inputs (forward) and output gradients (backward)."""

    def __init__(self, layers: dict[str, nn.Linear]):
        self.layers = layers
        self.inputs: dict[str, torch.Tensor] = {}
        self.output_grads: dict[str, torch.Tensor] = {}
        # (B, T) 1 on real tokens, 0 on padding: padded inputs are not zero, their gradients are
        self.token_mask: torch.Tensor | None = None
        self._handles: list = []

    def _forward_hook(self, name: str):
        def hook(module, args, output):
            self.inputs[name] = args[0].detach()

            def save_grad(grad):
                self.output_grads[name] = grad.detach()

            output.register_hook(save_grad)

        return hook

    @contextmanager
    def watching(self):
        self._handles = [layer.register_forward_hook(self._forward_hook(n)) for n, layer in self.layers.items()]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def clear(self) -> None:
        self.inputs.clear()
        self.output_grads.clear()


def forward_backward(
    model: nn.Module, recorder: LayerRecorder, batch: dict[str, torch.Tensor], compute_dtype: str = "float32"
) -> torch.Tensor:
    """Run one batch; afterwards recorder holds inputs and output gradients. Returns (B,) losses.

    compute_dtype bfloat16 runs the forward under autocast (CPU with AVX512-BF16, or GPU); the
    losses and the projections stay float32.
    """
    recorder.clear()
    recorder.token_mask = batch["attention_mask"]
    device = next(model.parameters()).device.type
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=compute_dtype == "bfloat16")
    with recorder.watching(), autocast:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        losses = per_example_losses(logits, batch["labels"], batch.get("token_weights"))
        # Gradients of the sum: each example's output gradients are those of its own loss.
        params = [layer.weight for layer in recorder.layers.values()]
        torch.autograd.backward(losses.sum(), inputs=params)
    for layer in recorder.layers.values():
        layer.weight.grad = None
    return losses.detach()


def per_example_gradients(recorder: LayerRecorder) -> dict[str, torch.Tensor]:
    """Materialised per-example weight gradients, (B, out, in) per layer (tests, dense projection)."""
    return {
        name: torch.einsum("bto,bti->boi", recorder.output_grads[name].float(), recorder.inputs[name].float())
        for name in recorder.layers
    }
