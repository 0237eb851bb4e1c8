"""Per-example gradient capture and projections on the tiny model."""

import pytest
import torch

from ifexp.influence.capture import LayerRecorder, forward_backward, per_example_gradients, trainable_linears
from ifexp.influence.project import DenseProjector, KroneckerProjector, SparseJLProjector
from ifexp.models import load_model, load_tokenizer
from ifexp.schema import TrainConfig
from ifexp.train import apply_lora, collate, encode_examples


def recorded(model, rows, pad_id) -> tuple[dict, LayerRecorder]:
    """The LoRA layers, and a recorder holding one forward and backward pass over the batch."""
    layers = trainable_linears(model)
    recorder = LayerRecorder(layers)
    forward_backward(model, recorder, collate(rows, pad_id))
    return layers, recorder


def kronecker_projector(layers: dict) -> KroneckerProjector:
    """3 x 3 per layer: small enough for the explicit Kronecker matrices."""
    shapes = {name: tuple(layer.weight.shape) for name, layer in layers.items()}
    return KroneckerProjector(shapes, k_in=3, k_out=3, seed=1)


@pytest.fixture(scope="module")
def lora_model_and_batch(tiny_model, tiny_model_cfg, small_splits):
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model), tiny_model_cfg, TrainConfig(lora_r=4, lora_alpha=8))
    # LoRA B starts at zero (then every A-gradient is zero): give it weights as after training.
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    tokenizer = load_tokenizer(tiny_model)
    encoded = encode_examples(tokenizer, small_splits["train"][:5], tiny_model_cfg, "truncate")
    rows = encoded.rows()
    assert len({len(ids) for ids, _ in rows}) > 1  # variable lengths: padding is exercised
    return model, rows, tokenizer.pad_token_id


def test_batched_per_example_gradients_equal_single_backward(lora_model_and_batch):
    model, rows, pad_id = lora_model_and_batch
    layers, recorder = recorded(model, rows, pad_id)
    assert layers and all("lora_" in name for name in layers)
    batched = per_example_gradients(recorder)
    for index, row in enumerate(rows):
        model.zero_grad()
        single = LayerRecorder(layers)
        forward_backward(model, single, collate([row], pad_id))
        alone = per_example_gradients(single)
        for name in layers:
            torch.testing.assert_close(batched[name][index], alone[name][0], rtol=1e-4, atol=1e-6)
        # and the hook-based gradient equals autograd's own parameter gradient
        from ifexp.influence.capture import per_example_losses

        batch = collate([row], pad_id)
        loss = per_example_losses(model(input_ids=batch["input_ids"]).logits, batch["labels"]).sum()
        grads = torch.autograd.grad(loss, [layer.weight for layer in layers.values()])
        for name, grad in zip(layers, grads, strict=True):
            torch.testing.assert_close(alone[name][0], grad, rtol=1e-4, atol=1e-6)


def test_kronecker_projection_equals_explicit_kronecker_matrix(lora_model_and_batch):
    model, rows, pad_id = lora_model_and_batch
    layers, recorder = recorded(model, rows, pad_id)
    projector = kronecker_projector(layers)
    features = projector(recorder)
    grads = per_example_gradients(recorder)
    explicit = {name: projector.explicit_matrix(name, *layer.weight.shape) for name, layer in layers.items()}
    expected = torch.cat([grads[name].flatten(1) @ explicit[name].T for name in layers], dim=1)
    assert features.shape == (len(rows), projector.k)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda k: DenseProjector(k, seed=0),
        lambda k: DenseProjector(k, 0, "rademacher"),
        lambda k: SparseJLProjector(k, seed=0),
    ],
)
def test_projections_preserve_inner_products_on_random_vectors(make):
    torch.manual_seed(0)
    k, dim = 4096, 30000
    vectors = torch.randn(6, dim)
    projector = make(k)
    projected = projector.project_flat({"a": vectors[:, :20000], "b": vectors[:, 20000:]})
    exact = vectors @ vectors.T
    approx = projected @ projected.T
    norms = vectors.norm(dim=1)
    # JL: |<Pa,Pb> - <a,b>| <~ c |a||b| / sqrt(k); c=4 is a comfortable bound for 15 pairs.
    assert ((approx - exact).abs() <= 4 * torch.outer(norms, norms) / k**0.5).all()


def test_projections_preserve_inner_products_on_real_gradients(lora_model_and_batch):
    model, rows, pad_id = lora_model_and_batch
    _, recorder = recorded(model, rows, pad_id)
    flat = torch.cat([g.flatten(1) for g in per_example_gradients(recorder).values()], dim=1)
    exact = flat @ flat.T
    norms = flat.norm(dim=1)
    for projector in (DenseProjector(2048, seed=3), SparseJLProjector(2048, seed=3)):
        features = projector(recorder)
        assert ((features @ features.T - exact).abs() <= 4 * torch.outer(norms, norms) / 2048**0.5).all()


def test_kfac_equals_explicit_kronecker_factored_inverse(lora_model_and_batch):
    from ifexp.influence.precondition import KFAC

    model, rows, pad_id = lora_model_and_batch
    layers, recorder = recorded(model, rows, pad_id)
    projector = kronecker_projector(layers)
    features = projector(recorder).double()
    assert projector.n_tokens == int(collate(rows, pad_id)["attention_mask"].sum())
    kfac = KFAC(projector.input_cov, projector.grad_cov, damping=0.1)
    got = kfac.query_side(features)
    start, expected = 0, []
    for name in layers:
        k_out, k_in = projector.block_shapes()[name]
        factors = []
        for cov in (projector.grad_cov[name], projector.input_cov[name]):
            factors.append(cov + 0.1 * torch.diagonal(cov).mean() * torch.eye(cov.shape[0], dtype=torch.float64))
        # vec(G^-1 Phi A^-1) for row-major vec = (G kron A)^-1 vec(Phi) (both symmetric)
        explicit = torch.linalg.inv(torch.kron(factors[0], factors[1]))
        expected.append(features[:, start : start + k_out * k_in] @ explicit.T)
        start += k_out * k_in
    expected = torch.cat(expected, dim=1)
    # the preconditioner returns float32: compare at float32 precision relative to the scale
    torch.testing.assert_close(got.double(), expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max()))


def test_bfloat16_autocast_gradients_agree_with_float32(lora_model_and_batch):
    model, rows, pad_id = lora_model_and_batch
    recorder = LayerRecorder(trainable_linears(model))
    flat = {}
    for dtype in ("float32", "bfloat16"):
        losses = forward_backward(model, recorder, collate(rows, pad_id), compute_dtype=dtype)
        assert losses.dtype == torch.float32
        flat[dtype] = torch.cat([g.flatten(1) for g in per_example_gradients(recorder).values()], dim=1)
    assert any(g.dtype == torch.bfloat16 for g in recorder.output_grads.values())  # autocast really ran
    cosine = torch.nn.functional.cosine_similarity(flat["float32"], flat["bfloat16"], dim=1)
    assert (cosine > 0.98).all(), cosine


def test_step_mean_weights_give_every_line_the_same_mass():
    from ifexp.train import step_mean_weights, step_spans

    line_break = frozenset({9})
    assert step_spans([1, 2, 9, 3, 4, 9], line_break) == [(0, 3), (3, 6)]
    weights = step_mean_weights([1, 9, 2, 3, 9, 4], line_break)  # steps [1 9] [2 3 9] [4]
    assert weights == pytest.approx([1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9, 1 / 3])
    assert sum(weights) == pytest.approx(1.0)
    assert step_mean_weights([5, 6, 7, 8], line_break) == pytest.approx([0.25] * 4)  # one line: the token mean
    assert step_mean_weights([1, 9], line_break) == pytest.approx([0.5, 0.5])  # a trailing break ends the last step
    assert step_mean_weights([1, 9, 9, 2], line_break) == pytest.approx([1 / 6] * 3 + [1 / 2])  # a blank line


def test_step_mean_gradient_is_the_mean_of_the_lines_gradients(lora_model_and_batch, tiny_model):
    """One backward pass with step weights = the average over the trace's lines of the gradient of
    each line's mean token loss, each taken alone on the input cut after that line (causal model)."""
    from ifexp.train import line_break_ids, step_mean_weights, step_spans

    model, rows, pad_id = lora_model_and_batch
    step_ends = line_break_ids(load_tokenizer(tiny_model))
    layers = trainable_linears(model)
    ids, n_prompt = max(rows, key=lambda row: len(step_spans(row[0][row[1] :], step_ends)))
    response = ids[n_prompt:]
    spans = step_spans(response, step_ends)
    assert len(spans) >= 3  # the test means something only with several lines

    recorder = LayerRecorder(layers)
    forward_backward(model, recorder, collate([(ids, n_prompt)], pad_id, step_ends))
    weighted = per_example_gradients(recorder)
    line_rows = [(ids[: n_prompt + stop], n_prompt + start) for start, stop in spans]
    forward_backward(model, recorder, collate(line_rows, pad_id))
    per_line = per_example_gradients(recorder)
    for name in layers:
        torch.testing.assert_close(weighted[name][0], per_line[name].mean(dim=0), rtol=1e-4, atol=1e-7)

    # with no line break at all the weights are the token mean: the default loss, unchanged
    forward_backward(model, recorder, collate([(ids, n_prompt)], pad_id, frozenset()))
    unweighted = LayerRecorder(layers)
    forward_backward(model, unweighted, collate([(ids, n_prompt)], pad_id))
    for name in layers:
        torch.testing.assert_close(
            per_example_gradients(recorder)[name], per_example_gradients(unweighted)[name], rtol=1e-5, atol=1e-8
        )
    assert sum(step_mean_weights(response, step_ends)) == pytest.approx(1.0)
