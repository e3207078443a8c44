"""ULA reaches its discretized stationary law; NFE, gradients and FLOPs are counted, not assumed."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.metrics.cost import flops_per_sample, sample_with_cost
from ebmbench.nets.mlp import EnergyMLP
from ebmbench.protocol import SAMPLERS, Box, SamplerOutput, SamplerSpec
from ebmbench.samplers.langevin import energy_and_grad


def test_ula_reaches_discretized_stationary_variance(gaussian_ebm):
    # x' = x - eps x / s2 + sqrt(2 eps T) xi is AR(1) with a = 1 - eps/s2 and stationary
    # variance 2 eps T / (1 - a^2), which differs from the target's s2 * T: the test tells them apart.
    model, eps, temp = gaussian_ebm(mu=(0.0, 0.0), var=(1.0, 0.25)), 0.1, 1.0
    s = model.sample(20000, generator=torch.Generator().manual_seed(0), sampler="langevin",
                     steps=300, eps=eps, temperature=temp, support_mode="none")
    var = s.x.var(dim=0)
    for d, s2 in enumerate((1.0, 0.25)):
        a = 1.0 - eps / s2
        exact = 2 * eps * temp / (1 - a * a)
        se = exact * math.sqrt(2 / 20000)
        assert abs(var[d] - exact) < 4 * se, (d, float(var[d]), exact)
    assert abs(var[1] - 0.25) > 10 * 0.25 * math.sqrt(2 / 20000)  # the target's variance is not reached
    assert s.temperature == 1.0 and not s.tempered


def test_tempered_samples_are_labelled(gaussian_ebm):
    s = gaussian_ebm().sample(8, generator=torch.Generator().manual_seed(0), sampler="langevin",
                              steps=3, temperature=0.5)
    assert s.tempered and s.temperature == 0.5


def test_reported_nfe_and_grad_evals_equal_counted_calls(gaussian_ebm):
    model = gaussian_ebm()
    s = model.sample(10, generator=torch.Generator().manual_seed(0), sampler="langevin", steps=7)
    assert (s.cost.nfe, s.cost.grad_evals) == (7, 7)
    chunked = model.sample(10, generator=torch.Generator().manual_seed(0), sampler="langevin", steps=7,
                           batch_size=4)
    assert chunked.cost.nfe == 7 and chunked.cost.batch_size == 4


def liar(model, n, generator, steps: int = 3) -> SamplerOutput:
    """A sampler that claims more NFE than it spends."""
    x = model.support.uniform(n, generator)
    model.energy(x)
    return SamplerOutput(x, nfe=steps)


SAMPLERS.register("test_liar", SamplerSpec("test_liar", requires="energy", fn=liar, cite="test"))


def test_a_sampler_claiming_wrong_nfe_is_caught(gaussian_ebm):
    with pytest.raises(RuntimeError, match="claims 3 NFE but the network was called 1 times"):
        gaussian_ebm().sample(4, generator=torch.Generator(), sampler="test_liar")


def test_unknown_sampler_parameter_is_named(gaussian_ebm):
    with pytest.raises(TypeError, match="stpes"):
        gaussian_ebm().sample(4, generator=torch.Generator(), sampler="langevin", stpes=3)


def test_flops_of_one_langevin_step_equal_forward_plus_backward():
    dims = [(2, 64), (64, 64), (64, 1)]
    model = EBM(EnergyMLP(2, hidden=64, depth=2), Box(-4.0, 4.0, (2,)), PCDParams(buffer_size=8))
    per_step = flops_per_sample(model, "langevin", {"steps": 1}, n=4)
    matmul = sum(2 * a * b for a, b in dims)  # multiply-adds of one forward pass, per sample
    assert per_step == 2 * matmul  # forward + input-gradient backward, each one matmul per layer
    assert flops_per_sample(model, "langevin", {"steps": 5}, n=4) == 5 * per_step
    x = torch.randn(4, 2)
    with FlopCounterMode(display=False) as fc:  # the same step counted directly
        energy_and_grad(model.energy, x)
    assert fc.get_total_flops() / 4 == per_step


def test_sample_with_cost_fills_every_field(gaussian_ebm):
    s = sample_with_cost(gaussian_ebm(), 16, sampler="langevin", budget={"steps": 4},
                         generator=torch.Generator().manual_seed(1))
    c = s.cost
    assert c.nfe == 4 and c.flops_per_sample > 0 and c.wall_s_per_sample > 0
    assert c.threads == torch.get_num_threads() and c.device == "cpu" and c.peak_mem_bytes is None


def test_nan_energy_is_a_clear_error(gaussian_ebm):
    model = gaussian_ebm()
    with torch.no_grad():
        model.net.net.mu.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite energy"):
        model.sample(4, generator=torch.Generator(), sampler="langevin", steps=2)


def _step_flops_of(method: str, tmp_path) -> tuple[float | None, float]:
    """(training.step_flops of one step, FlopCounterMode's count of the same step or NaN where it raises)."""
    import copy

    from ebmbench import run as run_mod
    from ebmbench.methods.base import training_step
    from ebmbench.training import step_flops

    r = run_mod.start({"dataset": "eight_gaussians", "method": method, "seed": 0, "train_steps": 1, "batch_size": 32,
                       "results_dir": str(tmp_path)})
    step_fn, make_optimizers = training_step(r.spec, r.cfg.grad_clip)
    ours = step_flops(step_fn, r.model, make_optimizers, r.cfg, r.dataset.train)
    twin, g = copy.deepcopy(r.model), torch.Generator().manual_seed(r.cfg.seed)
    optimizers = make_optimizers(twin, r.cfg.lr, (r.cfg.adam_beta1, r.cfg.adam_beta2))
    try:
        with FlopCounterMode(display=False) as fc:
            step_fn(twin, lambda: r.dataset.train[torch.randint(len(r.dataset.train), (32,), generator=g)],
                    optimizers, g, r.cfg.method_params)
        return ours, float(fc.get_total_flops())
    except RuntimeError:  # its module hooks break autograd.grad(create_graph=True)
        return ours, float("nan")


@pytest.mark.parametrize("method", ["pcd_ebm", "ddpm", "sngan", "realnvp"])
def test_training_step_flops_equal_torch_flop_counter(method, tmp_path):
    ours, theirs = _step_flops_of(method, tmp_path)
    assert ours == theirs and ours > 0


@pytest.mark.parametrize("method", ["dsm_ebm", "ssm_ebm", "wgan_gp"])
def test_training_steps_that_differentiate_a_gradient_are_counted(method, tmp_path):
    ours, theirs = _step_flops_of(method, tmp_path)
    assert math.isnan(theirs)  # torch's FlopCounterMode cannot count these steps (why FlopCount exists)
    assert ours is not None and ours > 0


def test_flop_count_equals_torch_counter_on_a_double_backward_without_modules():
    """DSM's pattern (E, its input gradient with create_graph, the backward of both) on a plain graph, where
    FlopCounterMode works (no module hooks): both count the same."""
    from ebmbench.metrics.cost import count_flops

    torch.manual_seed(0)
    w1, w2 = torch.randn(8, 2, requires_grad=True), torch.randn(1, 8, requires_grad=True)
    x = torch.randn(16, 2, requires_grad=True)

    def step() -> None:
        e = torch.nn.functional.linear(torch.nn.functional.silu(torch.nn.functional.linear(x, w1)), w2)
        (g,) = torch.autograd.grad(e.sum(), x, create_graph=True)
        g.pow(2).sum().backward()

    with FlopCounterMode(display=False) as fc:
        step()
    forward = 2 * 16 * (2 * 8 + 8 * 1)
    assert count_flops(step) == fc.get_total_flops() > 3 * forward  # forward, gradient, and the backward of both
