"""No training step reads a device value on the host (issue 12: no per-step host sync on any hot path).

float(t), int(t), bool(t) and t.item() all dispatch ``aten._local_scalar_dense``, on every device, so counting
that op under a dispatch mode finds a host sync on the CPU that would stall a GPU.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ebmbench.builtins  # noqa: F401  (registers every method)
from ebmbench import run as run_mod
from ebmbench.config import field_types
from ebmbench.methods import ebm
from ebmbench.methods.base import METHODS, training_step
from ebmbench.protocol import Box
from ebmbench.training import divergence, host_values


class HostReads(TorchDispatchMode):
    """Counts device-to-host scalar reads (``aten._local_scalar_dense``)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.ops.aten._local_scalar_dense.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


def test_the_counter_sees_every_kind_of_host_read():
    t = torch.ones(3)
    for read in (lambda: float(t.sum()), lambda: int(t.sum()), lambda: bool(t.sum() > 0), lambda: t.sum().item()):
        with HostReads() as reads:
            read()
        assert reads.n == 1


METHOD_DATA = {"rbm_cd": "digits_binary", "rbm_pcd": "digits_binary"}
SMALL = {"hidden": 16, "depth": 2}


CASES = [(m, METHOD_DATA.get(m, "eight_gaussians")) for m in sorted(METHODS.names())]
CASES += [(m, "digits") for m in ("pcd_ebm", "ncsn", "ddpm", "sngan", "realnvp")]  # the conv nets of the quick suite


@pytest.mark.parametrize("method,dataset", CASES)
def test_a_training_step_reads_nothing_on_the_host(method, dataset, tmp_path, monkeypatch):
    # the CPU's restart path counts the restarted chains on the host (free there); accelerators take this one
    monkeypatch.setattr(ebm, "restart_chains", functools.partial(ebm.restart_chains, sync_free=True))
    params = {k: v for k, v in SMALL.items() if k in field_types(METHODS.get(method).params)}
    r = run_mod.start({"dataset": dataset, "method": method, "seed": 0, "train_steps": 3, "batch_size": 32,
                       "results_dir": str(tmp_path), **params})
    step_fn, make_optimizers = training_step(r.spec, r.cfg.grad_clip)
    optimizers = make_optimizers(r.model, r.cfg.lr, (r.cfg.adam_beta1, r.cfg.adam_beta2))
    data, g = r.dataset.train, torch.Generator().manual_seed(0)

    def next_batch():
        return data[torch.randint(len(data), (32,), generator=g)]

    for _ in range(2):  # first use: buffers and persistent chains are filled (one read per model)
        step_fn(r.model, next_batch, optimizers, g, r.cfg.method_params)
    with HostReads() as reads:
        diag = step_fn(r.model, next_batch, optimizers, g, r.cfg.method_params)
    assert reads.n == 0, f"{method}: {reads.n} host reads in one training step"
    assert not divergence(host_values([diag])[0], r.cfg)


def test_sync_free_restarts_replace_exactly_the_flagged_chains():
    box, g = Box(-4.0, 4.0, (2,)), torch.Generator().manual_seed(0)
    x0 = torch.full((1000, 2), 9.0)  # outside the box: a restarted chain is visible
    restart = torch.rand(1000, generator=g) < 0.3
    with HostReads() as reads:
        x = ebm.restart_chains(x0.clone(), restart, box, g, sync_free=True)
    assert reads.n == 0
    assert torch.equal(x[~restart], x0[~restart])
    assert ((x[restart] >= -4) & (x[restart] <= 4)).all() and x[restart].std() > 1.5  # uniform on [-4, 4]: sd 2.31


def test_a_nan_energy_in_a_training_chain_is_a_divergence_not_a_crash(tmp_path):
    r = run_mod.start({"dataset": "eight_gaussians", "method": "pcd_ebm", "seed": 0, "train_steps": 1,
                       "batch_size": 16, "buffer_size": 64, "hidden": 8, "depth": 1, "results_dir": str(tmp_path)})
    with torch.no_grad():
        next(r.model.net.parameters()).fill_(float("nan"))
    x_pos = r.dataset.train[:16]
    _, diag = ebm.pcd_loss(r.model, x_pos, torch.Generator().manual_seed(0), r.cfg.method_params)
    reason = divergence(host_values([diag])[0], r.cfg)
    assert "chain_probe" in reason and "non-finite" in reason


SAMPLER_CASES = [("pcd_ebm", "langevin", "eight_gaussians"), ("pcd_ebm", "mala", "eight_gaussians"),
                 ("pcd_ebm", "hmc", "eight_gaussians"), ("ncsn", "annealed_langevin", "eight_gaussians"),
                 ("ddpm", "ddpm", "eight_gaussians"), ("ddpm", "ddim", "eight_gaussians"),
                 ("ddpm", "dpm_solver", "eight_gaussians"), ("rbm_cd", "gibbs", "digits_binary")]


@pytest.mark.parametrize("method,sampler,dataset", SAMPLER_CASES)
def test_sampler_host_reads_do_not_grow_with_its_steps(method, sampler, dataset, tmp_path):
    r = run_mod.start({"dataset": dataset, "method": method, "seed": 0, "train_steps": 1, "results_dir": str(tmp_path),
                       **{k: v for k, v in SMALL.items() if k in field_types(METHODS.get(method).params)}})
    r.model.eval()
    counts = []
    key = "steps_per_sigma" if sampler == "annealed_langevin" else "steps"
    for steps in (8, 16):
        with HostReads() as reads:
            r.model.sample(16, generator=torch.Generator().manual_seed(0), sampler=sampler, **{key: steps})
        counts.append(reads.n)
    assert counts[0] == counts[1], f"{sampler}: {counts} host reads at 8 and 16 steps (a read per step)"
