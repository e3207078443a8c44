"""The compiled sampler path (samplers/compiled.py): same chains as eager, same counts, FLOPs and NaN errors."""

from __future__ import annotations

import pytest
import torch

import ebmbench.builtins  # noqa: F401  (registers the samplers)
from ebmbench import config
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.metrics.cost import flops_per_sample
from ebmbench.nets.conv import ConvEnergy
from ebmbench.nets.mlp import EnergyMLP
from ebmbench.protocol import Box

BUDGETS = {"langevin": {"steps": 6}, "mala": {"steps": 6}, "hmc": {"steps": 2, "leapfrog_steps": 3}}


def mlp_ebm(mode: str) -> EBM:
    torch.manual_seed(0)
    model = EBM(EnergyMLP(2, 32, 2), Box(-4.0, 4.0, (2,)), PCDParams(buffer_size=8)).eval()
    model.compile_mode = mode
    return model


@pytest.mark.parametrize("sampler", sorted(BUDGETS))
def test_compiled_chains_equal_eager_chains_and_counts(sampler):
    eager, compiled = mlp_ebm("off"), mlp_ebm("default")
    a = eager.sample(64, generator=torch.Generator().manual_seed(3), sampler=sampler, **BUDGETS[sampler])
    b = compiled.sample(64, generator=torch.Generator().manual_seed(3), sampler=sampler, **BUDGETS[sampler])
    torch.testing.assert_close(b.x, a.x, rtol=1e-5, atol=1e-5)  # the same chains up to float reassociation
    assert (b.cost.nfe, b.cost.grad_evals) == (a.cost.nfe, a.cost.grad_evals)
    assert a.info["compile_s"] == 0.0
    assert b.info["compile_s"] > 0  # the first draw compiles, and that is kept out of the sampling wall clock
    again = compiled.sample(64, generator=torch.Generator().manual_seed(3), sampler=sampler, **BUDGETS[sampler])
    assert again.info["compile_s"] == 0.0 and torch.equal(again.x, b.x)  # cached graph, deterministic


def test_flops_are_counted_on_the_eager_path():
    eager, compiled = mlp_ebm("off"), mlp_ebm("default")
    assert flops_per_sample(compiled, "langevin", {"steps": 3}) == flops_per_sample(eager, "langevin", {"steps": 3})
    assert flops_per_sample(compiled, "langevin", {"steps": 3}) > 0


def test_compiled_conv_energy_matches_eager():
    torch.manual_seed(0)
    box = Box(-1.0, 1.0, (1, 8, 8))
    eager = EBM(ConvEnergy(1, (8, 16)), box, PCDParams(buffer_size=4)).eval()
    compiled = EBM(ConvEnergy(1, (8, 16)), box, PCDParams(buffer_size=4)).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_mode = "default"
    a = eager.sample(16, generator=torch.Generator().manual_seed(1), sampler="langevin", steps=4, eps=0.1)
    b = compiled.sample(16, generator=torch.Generator().manual_seed(1), sampler="langevin", steps=4, eps=0.1)
    torch.testing.assert_close(b.x, a.x, rtol=1e-5, atol=1e-5)


def test_nan_energy_is_a_clear_error_on_the_compiled_path():
    model = mlp_ebm("default")
    with torch.no_grad():
        model.net.net.f[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite energy during Langevin"):
        model.sample(4, generator=torch.Generator(), sampler="langevin", steps=2)


def test_compile_parameter_is_validated_and_reaches_the_model():
    with pytest.raises(config.ConfigError, match="'compile' must be one of"):
        config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "compile": "fast"})
    cfg = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "compile": "default"})
    assert cfg.compile == "default"


# ---------------------------------------------------------------- one name, one meaning (issue 13, item 4)
def test_no_method_parameter_shares_a_name_with_a_run_parameter():
    from ebmbench.builtins import METHODS

    common = set(config.COMMON)
    for name in METHODS.names():
        own = set(config.field_types(METHODS.get(name).params))
        assert not own & common, f"{name}: {sorted(own & common)} are run parameters too"


def test_optimizer_clip_and_langevin_clip_are_independent():
    cfg = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "grad_clip": 0.5})
    assert (cfg.grad_clip, cfg.method_params.langevin_grad_clip) == (0.5, 0.0)
    cfg = config.resolve({"dataset": "eight_gaussians", "method": "pcd_ebm", "langevin_grad_clip": 0.5})
    assert (cfg.grad_clip, cfg.method_params.langevin_grad_clip) == (0.0, 0.5)


def test_igebm_recipe_clips_the_chains_not_the_optimizer():
    from ebmbench.suites import load_suite

    _, runs = load_suite("cifar10", results_dir="/tmp/ebmbench-unused")
    igebm = [r.cfg for r in runs if r.cfg.method == "pcd_ebm"]
    assert igebm and all(c.grad_clip == 0.0 and c.method_params.langevin_grad_clip == 0.2771 for c in igebm)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_every_chain_raises_on_a_non_finite_energy_once_at_its_end(bad):
    from ebmbench.samplers.hmc import hmc_chain
    from ebmbench.samplers.langevin import ula
    from ebmbench.samplers.mala import mala_chain

    def energy(x):  # finite except in one corner that proposals reach
        return torch.where(x[:, 0] > 0.5, torch.full_like(x[:, 0], bad), x.pow(2).sum(1))

    box, g = Box(-1.0, 1.0, (2,)), torch.Generator().manual_seed(0)
    x0 = torch.zeros(8, 2)
    chains = [lambda: ula(energy, x0, steps=20, eps=0.1, temperature=1.0, generator=g, box=box),
              lambda: mala_chain(energy, x0, steps=20, eps=0.1, generator=g, box=box),
              lambda: hmc_chain(energy, x0, steps=5, leapfrog_steps=4, step_size=0.3, generator=g, box=box)]
    for chain in chains:
        with pytest.raises(FloatingPointError, match="non-finite energy"):
            chain()
