"""The perplexity signal: one example's value does not depend on its batch, and on CPU its
forward passes run on one thread (docs/reliability.md, "Determinism")."""

import numpy as np
import pytest
import torch

from ifexp.signals import one_thread, perplexities


def test_one_thread_inside_and_the_count_restored_after_also_on_an_error():
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_thread():
            raise RuntimeError("a failing forward pass")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads_before)


def test_perplexity_runs_on_one_thread_and_does_not_depend_on_the_batch(
    tiny_model, tiny_model_cfg, small_splits, monkeypatch
):
    examples = small_splits["train"][:10]
    threads_seen: list[int] = []
    real_forward = torch.nn.Module.__call__

    def recording_call(module, *args, **kwargs):
        if type(module).__name__.endswith("ForCausalLM"):
            threads_seen.append(torch.get_num_threads())
        return real_forward(module, *args, **kwargs)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(torch.nn.Module, "__call__", recording_call)
    try:
        batched = perplexities(tiny_model, examples, tiny_model_cfg, batch_size=4)
        threads_after = torch.get_num_threads()
    finally:
        monkeypatch.undo()
        torch.set_num_threads(threads_before)

    assert threads_seen and set(threads_seen) == {1}
    assert threads_after == 2
    one_by_one = np.array([perplexities(tiny_model, [ex], tiny_model_cfg)[0] for ex in examples])
    assert batched.shape == (10,) and np.all(np.isfinite(batched)) and np.all(batched > 1.0)
    # padding and the length-sorted batching must not change a value beyond float32 rounding
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4)
