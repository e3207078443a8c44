"""No training step reads a device value on the host (issue 12: no per-step host sync on any hot path).

float(t), int(t), bool(t) and t.item() all dispatch ``aten._local_scalar_dense``, on every device, so counting
that op under a dispatch mode finds a host sync on the CPU that would stall a GPU.

Blocking copies (issue 23) are free on the CPU and invisible to the dispatcher there (``.cpu()`` of a CPU tensor
dispatches nothing), so ``Blocking`` also counts, under a function mode, the calls that would copy across devices
and wait on an accelerator: ``.cpu()``, ``.tolist()``, ``.numpy()``, ``.item()``, ``.to()`` to another device or
to "cpu", and a tensor made on a device from host data (``torch.as_tensor(0.5, device=x.device)``); with
``moves=True`` every ``.to(device)`` too (a per-step move is at best a no-op).
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.overrides import TorchFunctionMode
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


READS = {torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.item}
MADE_FROM_HOST = {torch.as_tensor, torch.tensor}


def _target(args: tuple, kwargs: dict) -> torch.device | None:
    """The device a ``Tensor.to`` call names (positional or keyword), or None."""
    for a in (*args[1:], kwargs.get("device")):
        if isinstance(a, (str, torch.device)):
            return torch.device(a)
        if isinstance(a, torch.Tensor):  # .to(other): other's device
            return a.device
    return None


class Blocking(TorchFunctionMode):
    """Counts the calls that would block on an accelerator (see the module docstring), with where they were."""

    def __init__(self, moves: bool = False) -> None:
        super().__init__()
        self.moves, self.calls = moves, []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        hit = func in READS
        if func is torch.Tensor.to:
            dev = _target(args, kwargs)
            hit = dev is not None and (self.moves or dev != args[0].device or isinstance(
                (args[1:] or [kwargs.get("device")])[0], str) and dev.type == "cpu")
        if func in MADE_FROM_HOST and kwargs.get("device") is not None and not isinstance(args[0], torch.Tensor):
            hit = True
        if hit:
            import traceback

            self.calls.append(f"{getattr(func, '__name__', func)} at {traceback.format_stack(limit=3)[0].strip()}")
        return func(*args, **kwargs)


class Syncs:
    """Host reads (dispatch) and blocking copies (function calls) together: ``n`` counts both."""

    def __init__(self, moves: bool = False) -> None:
        self.reads, self.copies = HostReads(), Blocking(moves)

    def __enter__(self) -> Syncs:
        self.copies.__enter__()
        self.reads.__enter__()
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.reads.__exit__(*exc)
        self.copies.__exit__(*exc)

    @property
    def n(self) -> int:
        return self.reads.n + len(self.copies.calls)


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
        with Syncs() as syncs:  # host reads and blocking copies
            r.model.sample(16, generator=torch.Generator().manual_seed(0), sampler=sampler, **{key: steps})
        counts.append(syncs.n)
    assert counts[0] == counts[1], f"{sampler}: {counts} host syncs at 8 and 16 steps (a sync per step)"


def test_the_copy_counter_sees_every_kind_of_blocking_copy():
    x = torch.ones(3)
    for copy in (lambda: x.cpu(), lambda: x.to("cpu"), lambda: x.tolist(), lambda: x.numpy(),
                 lambda: torch.as_tensor(0.5, device=x.device), lambda: torch.tensor([1.0], device=x.device)):
        with Syncs() as syncs:
            copy()
        assert syncs.n == 1
    with Syncs() as syncs:  # on the device already: no copy (moves=True counts even these)
        x.to(x.device), x.to(torch.float64), torch.full((3,), 0.5, device=x.device)
    assert syncs.n == 0
    with Syncs(moves=True) as syncs:
        x.to(x.device)
    assert syncs.n == 1


def _model(method: str, tmp_path, **params):
    r = run_mod.start({"dataset": "eight_gaussians", "method": method, "seed": 0, "train_steps": 1,
                       "results_dir": str(tmp_path), **SMALL, **params})
    r.model.eval()
    return r


def test_likelihood_hot_paths_make_no_host_read_or_blocking_copy(tmp_path):
    """Per evaluation of the probability flow (its score: VP timestep lookup, sigma on the device) and per annealed
    Langevin level (its float sigma), nothing blocks: the old code made one host read or copy each."""
    from ebmbench.metrics.pf_ode import ProbabilityFlow

    for method in ("ddpm", "ncsn"):
        r = _model(method, tmp_path, **({"num_train_timesteps": 50} if method == "ddpm" else {}))
        x = torch.randn(8, 2)
        flow = ProbabilityFlow(r.model, None, torch.float32)
        state = (x.double(), torch.zeros(8, dtype=torch.float64))
        t = torch.tensor(-1.0, dtype=torch.float64)
        flow(t, state)  # first call: tables are put on the device once
        with Syncs() as syncs:
            for _ in range(3):
                flow(t, state)
                r.model.score(x, 0.5)
        assert syncs.n == 0, f"{method}: {syncs.copies.calls} and {syncs.reads.n} host reads"


def test_elbo_terms_draw_their_noise_where_it_is_used(tmp_path):
    """The ELBO's noise and timesteps are drawn on the model's device: no copy or move per term."""
    from ebmbench.metrics import elbo

    r = _model("ddpm", tmp_path, num_train_timesteps=50)
    x0 = r.dataset.test[:16].double()
    sch = elbo.model_schedule(r.model)
    counts = []
    for terms in (2, 4):
        g = torch.Generator(r.model.device).manual_seed(0)
        with Syncs(moves=True) as syncs:
            elbo.bound_terms(r.model, x0, sch, 0.0, -1.0, 1.0, elbo.ELBOParams(t_samples=terms), g)
        counts.append(syncs.n)
    assert counts[0] == counts[1], f"{counts} syncs or moves at 2 and 4 terms"


@pytest.mark.parametrize("sampler", ["ddpm_ula", "ddpm_mala"])
def test_corrected_sampler_reads_do_not_grow_with_its_levels(tmp_path, sampler):
    """The MCMC corrector adds no read per level to those of the ancestral sampler it corrects (diffusers' step
    reads its own schedule, which stays on the CPU on every device). MALA without step adaptation: adapting
    needs each level's acceptance on the host, one read a level by design."""
    r = _model("energy_ddpm", tmp_path, num_train_timesteps=50)
    extra = []
    for steps in (4, 8):
        counts = []
        for name, budget in ((sampler, {"mcmc_steps": 2, **({"adapt_rate": 0.0} if sampler == "ddpm_mala" else {})}),
                             ("ddpm", {})):
            with Syncs() as syncs:
                r.model.sample(8, generator=torch.Generator().manual_seed(0), sampler=name, steps=steps, **budget)
            counts.append(syncs.n)
        extra.append(counts[0] - counts[1])
    assert extra[0] == extra[1], f"{sampler}: {extra} syncs beyond the ancestral sampler's at 4 and 8 levels"


@pytest.mark.parametrize("path", ["energy", "diffusion"])
def test_ais_reads_do_not_grow_with_its_annealing_steps(tmp_path, path):
    from ebmbench.metrics import ais

    r = _model("energy_ddpm", tmp_path, num_train_timesteps=50)
    counts = []
    for n_steps in (5, 10):
        params = ais.AISParams(n_steps=n_steps, runs=2, chains=4)
        with Syncs() as syncs:
            if path == "energy":
                ais.estimate_log_z(r.model, r.dataset, params, reverse=False)
            else:
                ais.diffusion_log_z(r.model, params)
        counts.append(syncs.n)
    assert counts[0] == counts[1], f"{path} AIS: {counts} syncs at 5 and 10 steps"
