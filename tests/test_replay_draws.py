"""The replay-buffer sampler's batches of one draw are distinct chains (issue 23, item 9)."""

from __future__ import annotations

import pytest
import torch

from ebmbench.builtins import METHODS, load_dataset


def buffer_model(size: int):
    """A PCD EBM whose buffer chain i holds the point (i, 0), so a sample names the chain it came from."""
    spec = METHODS.get("pcd_ebm")
    model = spec.build(load_dataset("eight_gaussians"), spec.params(buffer_size=size, hidden=8, depth=1))
    with torch.no_grad():
        model.buffer.zero_()
        model.buffer[:, 0] = torch.arange(size, dtype=torch.float32)
        model.buffer_age.zero_()
    return model.eval()


def chains(x: torch.Tensor) -> list[int]:
    return x[:, 0].round().long().tolist()


def test_batches_of_one_draw_never_repeat_a_chain():
    model = buffer_model(1000)
    x = model.sample(1000, generator=torch.Generator().manual_seed(0), sampler="replay_buffer", batch_size=100).x
    assert sorted(chains(x)) == list(range(1000))  # each batch drew its own permutation: ~632 distinct before


def test_a_single_batch_draw_is_unchanged():
    """Unbatched draws (every quick-suite run) take the first n of one permutation, as before."""
    model = buffer_model(500)
    x = model.sample(200, generator=torch.Generator().manual_seed(3), sampler="replay_buffer").x
    assert chains(x) == torch.randperm(500, generator=torch.Generator().manual_seed(3))[:200].tolist()


def test_more_samples_than_chains_is_refused():
    model = buffer_model(300)
    with pytest.raises(ValueError, match="exceed buffer_size=300"):
        model.sample(400, generator=torch.Generator().manual_seed(0), sampler="replay_buffer", batch_size=100)
