"""The samplers' trace (samplers/trace.py): figures see the real chains; evaluation draws are unchanged by it."""

from __future__ import annotations

import torch

import ebmbench.builtins  # noqa: F401  (registers the samplers)
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.nets.mlp import EnergyMLP
from ebmbench.protocol import Box
from ebmbench.samplers.trace import recording


def test_trace_records_every_step_of_the_real_chain_and_changes_nothing():
    torch.manual_seed(0)
    model = EBM(EnergyMLP(2, 16, 1), Box(-4.0, 4.0, (2,)), PCDParams(buffer_size=4)).eval()
    plain = model.sample(8, generator=torch.Generator().manual_seed(1), sampler="langevin", steps=5)
    with recording() as frames:
        traced = model.sample(8, generator=torch.Generator().manual_seed(1), sampler="langevin", steps=5)
    assert torch.equal(plain.x, traced.x)
    assert [label for label, _ in frames] == [f"step {i}" for i in range(6)]
    assert torch.equal(frames[-1][1], traced.x)  # the last frame is what the sampler returned
    with recording() as outside:
        pass
    model.sample(8, generator=torch.Generator().manual_seed(1), sampler="mala", steps=3)
    assert outside == []  # nothing is kept outside the block
