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

from ifexp import checkpointing
from ifexp.train import per_example_losses


def trainable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers whose weight is trained (the LoRA A/B matrices of a PEFT model)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.weight.requires_grad
    }


class LayerRecorder:
    """Records each watched layer's inputs (forward) and output gradients (backward).

    Without `on_layer` it keeps both for the whole batch (`inputs`, `output_grads`: tests, the
    dense per-example gradients). With `on_layer(name, inputs, output_grads)` it hands each layer
    over as soon as its output gradient arrives and keeps nothing: the features stream, one layer
    at a time, through the backward pass.

    Under gradient checkpointing (ifexp.checkpointing) a decoder layer runs twice: its forward
    pass, whose activations are dropped, and its recompute inside the backward pass, just before
    its gradients. The inputs are taken from the recompute (the tensors autograd itself then holds,
    freed with them), and the output-gradient hook is registered on the first pass only (the one
    the backward pass runs through): each layer is recorded once per batch, and at most one
    decoder layer's inputs are held at a time. A layer whose gradient arrives twice in one backward
    pass (a module called twice in a forward) is an error, not a silent overwrite.
    """

    def __init__(self, layers: dict[str, nn.Linear], on_layer=None):
        self.layers = layers
        self.on_layer = on_layer
        self.inputs: dict[str, torch.Tensor] = {}
        self.output_grads: dict[str, torch.Tensor] = {}
        # (B, T) 1 on real tokens, 0 on padding: padded inputs are not zero, their gradients are
        self.token_mask: torch.Tensor | None = None
        # per batch: the layers whose gradient arrived; and the most layers' inputs held at once
        self.recorded: set[str] = set()
        self.max_inputs_held = 0
        self._pending: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _forward_hook(self, name: str):
        def hook(module, args, output):
            where = checkpointing.region()
            if where != "forward":  # a first pass under checkpointing keeps nothing: it is recomputed
                self.inputs[name] = args[0].detach()
                self.max_inputs_held = max(self.max_inputs_held, len(self.inputs))
                if name in self._pending:  # its gradient came first (checkpointing: see _gradient)
                    self._hand_over(name, self._pending.pop(name))
            if where != "recompute":  # the backward pass runs through the first pass's graph only
                output.register_hook(lambda grad: self._gradient(name, grad.detach()))

        return hook

    def _gradient(self, name: str, grad: torch.Tensor) -> None:
        if name in self.recorded or name in self._pending:
            raise RuntimeError(f"layer {name}: a second output gradient in one backward pass")
        if name in self.inputs:
            self._hand_over(name, grad)
        else:
            # Under checkpointing a layer's output gradient can arrive before its recompute (the
            # nodes between the output and the matmul save nothing): it waits for the inputs.
            self._pending[name] = grad

    def _hand_over(self, name: str, grad: torch.Tensor) -> None:
        self.recorded.add(name)
        if self.on_layer is None:
            self.output_grads[name] = grad
        else:
            self.on_layer(name, self.inputs.pop(name), grad)

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
        self.recorded.clear()
        self._pending.clear()


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
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        losses = per_example_losses(logits, batch["labels"], batch.get("token_weights"))
        del logits  # the loss holds what its backward needs
        # Gradients of the sum: each example's output gradients are those of its own loss.
        params = [layer.weight for layer in recorder.layers.values()]
        torch.autograd.backward(losses.sum(), inputs=params)
    missing = [name for name in recorder.layers if name not in recorder.recorded]
    if missing:
        raise RuntimeError(
            f"{len(missing)} layers not recorded, e.g. {missing[0]} "
            f"({'its inputs never came' if missing[0] in recorder._pending else 'no output gradient'})"
        )
    for layer in recorder.layers.values():
        layer.weight.grad = None
    return losses.detach()


def per_example_gradients(recorder: LayerRecorder) -> dict[str, torch.Tensor]:
    """Materialised per-example weight gradients, (B, out, in) per layer (tests, dense projection)."""
    return {
        name: torch.einsum("bto,bti->boi", recorder.output_grads[name].float(), recorder.inputs[name].float())
        for name in recorder.layers
    }
