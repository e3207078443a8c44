"""How long a run takes, before it runs: counted FLOPs times a few seconds of measured throughput per network.

For each run: the FLOPs of one training step are counted (``metrics.cost.count_flops``, as ``training.step_flops``)
at a small batch on data of the dataset's shape (random bytes where the files are absent: no download needed) and
scaled linearly to the run's batch; a few real steps at that batch are timed on the run's device where they are cheap
(else the step is priced at the network's measured FLOP/s). Each evaluation
sampler is run once at its full budget with a zero-cost stand-in for the network, so that the model's own
``CountingNet`` counts its network evaluations and input gradients per sample; one evaluation of the real network
(forward, and forward plus input gradient) is counted and timed at a small batch. Metrics add what they feed
through a network: Inception-v3 (torchvision's architecture, counted) for the ``*_inception`` rows, the domain
classifier for ``*_domain`` rows, and the likelihood metrics by their stated number of network evaluations per test
point (ELBO: T - 1 forwards; PF-ODE: ``PF_ODE_NFE`` input gradients, an assumption; AIS: its chains, steps and
leapfrog steps). Seconds on this device come from the measured throughput; hours on other hardware from the counted
FLOPs at an assumed sustained rate (``ASSUMED_FLOPS``), labelled as such.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ebmbench import config as config_mod
from ebmbench.builtins import METHODS, load_dataset
from ebmbench.config import RunConfig
from ebmbench.data.base import Dataset
from ebmbench.data.images import OFFICIAL_COUNTS, MissingDataError, byte_dataset
from ebmbench.methods.base import training_step
from ebmbench.metrics.cost import count_flops
from ebmbench.metrics.registry import MODEL_METRICS, SAMPLE_METRICS
from ebmbench.protocol import GenerativeModel
from ebmbench.training import curve_steps

# Sustained FLOP/s assumed for hardware this machine cannot measure (an assumption, not a measurement):
# fp32 training with TF32 convolutions (PyTorch's default) on one H100 SXM reaches a fraction of its 495 TFLOP/s
# dense TF32 peak on these small CIFAR-10 networks; 40 TFLOP/s (8 %) is the stated guess. benchmarks/gpu_check.py
# measures the real rate on a GPU; $EBMBENCH_ASSUMED_TFLOPS ("H100=40,A100=15") replaces these.
ASSUMED_FLOPS = {"H100": 40e12}
ASSUMED_ENV = "EBMBENCH_ASSUMED_TFLOPS"
PF_ODE_NFE = 200  # assumed network evaluations per point of an adaptive dopri5 solve at tol 1e-5 (not measured)
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
PROXY_TRAIN = 2000  # images of a stand-in dataset (random bytes) when the real files are absent
CPU_STEP_FLOPS = 2e10  # on a CPU, count and time the training step at a batch of about this many FLOPs
MEASURE_S = 0.5  # seconds of timed repetitions per measurement (after one warm-up)


@dataclass
class NetCost:
    """One network evaluation per sample: counted FLOPs and measured seconds, forward and with the input gradient."""

    fwd_flops: float
    grad_flops: float
    fwd_s: float
    grad_s: float
    batch: int


@dataclass
class Part:
    """One costed piece of a run: FLOPs and seconds on this device, and how they were obtained."""

    name: str
    flops: float
    seconds: float
    basis: str


@dataclass
class RunEstimate:
    """A run's estimated cost on its resolved device, piece by piece."""

    run_id: str
    method: str
    device: str
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def total(self, prefix: str = "") -> tuple[float, float]:
        """(FLOPs, seconds) of the parts whose name starts with ``prefix``."""
        chosen = [p for p in self.parts if p.name.startswith(prefix)]
        return sum(p.flops for p in chosen), sum(p.seconds for p in chosen)

    @property
    def seconds(self) -> float:
        return self.total()[1]

    @property
    def flops(self) -> float:
        return self.total()[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, budget_s: float = MEASURE_S, max_reps: int = 20) -> float:
    """Seconds per call of ``fn`` on ``device``: one warm-up call, then repetitions for about ``budget_s``."""
    fn()
    _sync(device)
    reps, start = 0, time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - start < budget_s):
        fn()
        reps += 1
        _sync(device)
    return (time.perf_counter() - start) / reps


# --- data of the dataset's shape, without its files -----------------------------------------------------------

@cache
def proxy_dataset(name: str) -> tuple[Dataset, int, str]:
    """The dataset if it loads here, else random bytes of its shape; (dataset, test points of the real one, how)."""
    try:
        ds = load_dataset(name)
        return ds, len(ds.test), "real data"
    except MissingDataError:
        if name not in IMAGE_SHAPES:
            raise
    rng = np.random.default_rng(0)
    shape, n_test = IMAGE_SHAPES[name], OFFICIAL_COUNTS[name][1]
    squeeze = shape[0] == 1
    splits = {split: (rng.integers(0, 256, size=(n, *(shape[1:] if squeeze else shape)), dtype=np.uint8),
                      rng.integers(0, 10, size=n).astype(np.int64))
              for split, n in (("train", PROXY_TRAIN), ("test", 500))}
    return byte_dataset(name, splits), n_test, "random bytes of the dataset's shape (its files are absent)"


# --- the network: counted once, timed at a small batch ----------------------------------------------------------

class StandIn(nn.Module):
    """Returns zeros shaped like the real network's output (found at one sample), connected to the input so
    gradients exist: a sampler runs at its full budget for nothing, and ``CountingNet`` counts its calls."""

    def __init__(self, real: nn.Module) -> None:
        super().__init__()
        self.real, self.out_shape, self.example = real, None, None
        self.anchor = nn.Parameter(torch.zeros(()))  # keeps .parameters() non-empty (model.device)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = args[0]
        if self.out_shape is None:
            one = [a[:1] if isinstance(a, Tensor) and a.dim() and len(a) == len(x) else a for a in args]
            self.example = ([a.detach() if isinstance(a, Tensor) else a for a in one], kwargs)
            with torch.no_grad():
                out = self.real(*one, **kwargs)
            self.out_shape = [tuple(t.shape[1:]) for t in out] if isinstance(out, tuple) else tuple(out.shape[1:])
        link = x.reshape(len(x), -1)[:, :1].sum(1) * 0.0  # zero, but on the input's autograd graph

        def zeros(shape: tuple[int, ...]) -> Tensor:
            return torch.zeros(len(x), *shape, device=x.device) + link.reshape(-1, *[1] * len(shape))
        return tuple(zeros(s) for s in self.out_shape) if isinstance(self.out_shape, list) else zeros(self.out_shape)


def sampler_calls(model: GenerativeModel, sampler: str, budget: dict[str, Any], n: int = 2
                  ) -> tuple[float, float, StandIn]:
    """(network evaluations, input gradients) per sample of ``sampler`` at its full budget, counted by the model's
    ``CountingNet`` around a stand-in; the stand-in keeps the real network's first inputs."""
    real = model.net.net
    stand_in = StandIn(real).to(model.device)
    model.net.net = stand_in
    try:
        samples = model.sample(n, generator=torch.Generator(model.device).manual_seed(0), sampler=sampler, **budget)
    finally:
        model.net.net = real
    return samples.cost.nfe, samples.cost.grad_evals, stand_in


def net_cost(net: nn.Module, example: tuple[list[Any], dict[str, Any]], device: torch.device,
             max_flops: float | None) -> NetCost:
    """Count one evaluation of ``net`` per sample, forward and with the input gradient, and time it at a batch
    (the largest power of two up to 256 under ``max_flops`` per call; None: 256)."""
    args, kwargs = example

    def batch_of(b: int) -> list[Any]:
        return [a.expand(b, *a.shape[1:]).clone() if isinstance(a, Tensor) and a.dim() else a for a in args]

    def forward(b: int) -> Callable[[], Any]:
        inputs = batch_of(b)

        def run() -> Any:
            with torch.no_grad():
                return net(*inputs, **kwargs)
        return run

    def with_grad(b: int) -> Callable[[], Any]:
        inputs = batch_of(b)

        def run() -> Any:
            x = inputs[0].detach().requires_grad_(True)
            out = net(x, *inputs[1:], **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            return torch.autograd.grad(out.float().sum(), x)[0]  # the input's gradient only, as samplers take it
        return run

    fwd1, grad1 = float(count_flops(forward(1))), float(count_flops(with_grad(1)))
    b = 256
    while b > 1 and max_flops is not None and grad1 * b > max_flops:
        b //= 2
    return NetCost(fwd1, grad1, timed(forward(b), device) / b, timed(with_grad(b), device) / b, b)


@cache
def inception_cost(device: str) -> NetCost:
    """Inception-v3 at 299 x 299 (torchvision's architecture; torch-fidelity's port has the same layers), counted
    and timed without its weights."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False).eval().to(device)
    example = ([torch.zeros(1, 3, 299, 299, device=device)], {})
    return net_cost(net, example, torch.device(device), 2 * CPU_STEP_FLOPS if device == "cpu" else None)


def inception_present() -> bool:
    """Whether the Inception weights are where runs look: without them the *_inception rows are not_applicable
    (no cost)."""
    import os

    from ebmbench.metrics.fidelity import INCEPTION_WEIGHTS_ENV, MissingWeightsError, inception_weights

    try:
        inception_weights(os.environ.get(INCEPTION_WEIGHTS_ENV))
        return True
    except MissingWeightsError:
        return False


@cache
def domain_cost(name: str, device: str) -> NetCost:
    """The domain classifier of ``name`` (untrained: the same layers), on uint8 images."""
    from ebmbench.metrics.domain import DEFAULT_PARAMS, DomainClassifier, DomainParams, arch_of

    ds, _, _ = proxy_dataset(name)
    net = DomainClassifier(**arch_of(ds, DEFAULT_PARAMS.get(name, DomainParams()))).to(device)
    example = ([torch.zeros(1, *ds.shape, device=device)], {})
    return net_cost(net, example, torch.device(device), CPU_STEP_FLOPS if device == "cpu" else None)


# --- training ------------------------------------------------------------------------------------------------

def train_part(model: GenerativeModel, cfg: RunConfig, data: Tensor, rate: Callable[[], float]
               ) -> tuple[Part, GenerativeModel]:
    """Counted FLOPs of one training step at a small batch, scaled to the run's batch; seconds from real steps
    timed at that batch where they are cheap here, else from ``rate()`` (the network's measured FLOP/s with the
    input gradient). Returns the part and the copy of the model those steps trained (its replay buffer filled)."""
    spec = METHODS.get(cfg.method)
    step_fn, make_optimizers = training_step(spec, cfg.grad_clip)
    device = model.device
    twin = copy.deepcopy(model).train()
    optimizers = make_optimizers(twin, cfg.lr, (cfg.adam_beta1, cfg.adam_beta2))
    generator = torch.Generator(device).manual_seed(cfg.seed)
    data = data.to(device)
    batch = [cfg.batch_size if device.type != "cpu" else 1]

    def step() -> Any:
        def next_batch() -> Tensor:
            return data[torch.randint(len(data), (batch[0],), generator=generator, device=device)]
        return step_fn(twin, next_batch, optimizers, generator, cfg.method_params)

    flops_b = float(count_flops(step)) / batch[0]  # per example
    if device.type == "cpu" and cfg.batch_size > 1 and 2 * flops_b <= CPU_STEP_FLOPS:  # a larger batch is cheap
        batch[0] = min(cfg.batch_size, 2 ** int(math.log2(CPU_STEP_FLOPS / max(flops_b, 1.0))))
        flops_b = float(count_flops(step)) / batch[0]
    step_flops = flops_b * cfg.batch_size
    if device.type != "cpu" or flops_b * batch[0] <= CPU_STEP_FLOPS:
        seconds = timed(step, device, max_reps=5) * cfg.batch_size / batch[0]
        how = f"timed at batch {batch[0]}" + (f", x {cfg.batch_size / batch[0]:g}" if batch[0] < cfg.batch_size else "")
    else:
        per_s = rate()
        seconds, how = step_flops / per_s, f"counted FLOPs at the network's measured {per_s / 1e9:.3g} GFLOP/s"
    scaled = f", scaled to {cfg.batch_size}" if batch[0] < cfg.batch_size else ""
    basis = (f"{cfg.train_steps} steps x {step_flops:.3g} FLOPs (counted at batch {batch[0]}{scaled}); "
             f"{seconds:.3g} s/step ({how})")
    return Part("train", cfg.train_steps * step_flops, cfg.train_steps * seconds, basis), twin


# --- sampling and metrics -------------------------------------------------------------------------------------

def plan(cfg: RunConfig, curve: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, sampler, budget) of the run's evaluation samplers (as ``run.sampler_plan``), or of its curve points."""
    spec = METHODS.get(cfg.method)
    full = spec.eval_samplers(cfg.method_params)
    wanted = config_mod.split_names(cfg.samplers)
    full = [(n, b) for n, b in full if not wanted or n in wanted]
    names = [n for n, _ in full]
    out = [(n if names.count(n) == 1 else f"{n}@{b.get('steps')}", n, b) for n, b in full]
    chosen = config_mod.split_names(cfg.curve_samplers) if curve else []
    return [p for p in out if not chosen or p[0] in chosen or p[1] in chosen]


def per_sample(calls: tuple[float, float], cost: NetCost) -> tuple[float, float]:
    """(FLOPs, seconds) of one sample from its (network evaluations, input gradients)."""
    nfe, grads = calls
    plain = max(nfe - grads, 0.0)
    return plain * cost.fwd_flops + grads * cost.grad_flops, plain * cost.fwd_s + grads * cost.grad_s


def fidelity_part(name: str, cfg: RunConfig, dataset_name: str, images: int, n_test: int, device: str,
                  wanted: list[str]) -> list[Part]:
    """Feature extraction of ``images`` generated images (+ the test reference and the training floor) by the
    networks of the fidelity metrics in ``wanted``."""
    if dataset_name not in IMAGE_SHAPES and dataset_name != "digits":
        return []
    parts = []
    extractors: list[tuple[str, Callable[[], NetCost]]] = [("domain", lambda: domain_cost(dataset_name, device))]
    if inception_present():  # else its rows are not_applicable: no cost
        extractors.insert(0, ("inception", lambda: inception_cost(device)))
    for suffix, cost_of in extractors:
        if any(m.endswith(f"_{suffix}") and not cfg.skipped(m) for m in wanted):
            cost = cost_of()
            parts.append(Part(f"{name}:{suffix}", images * cost.fwd_flops, images * cost.fwd_s,
                              f"{images} images through the {suffix} extractor ({cost.fwd_flops:.3g} FLOPs each)"))
    return parts


def model_metric_parts(model: GenerativeModel, cfg: RunConfig, net: NetCost, n_test: int
                       ) -> tuple[list[Part], list[str]]:
    """The likelihood metrics' network evaluations, by their parameters; the ones not estimated are named."""
    points = cfg.likelihood_points or n_test
    parts, skipped = [], []
    for name in MODEL_METRICS.names():
        metric = MODEL_METRICS.get(name)
        needs = [c.strip() for c in (metric.requires or "").split("|") if c.strip()]
        if cfg.skipped(name) or (needs and not any(model.has(c) for c in needs)):
            continue
        if name == "nll_elbo":
            terms = cfg.elbo_t_samples or (getattr(cfg.method_params, "num_train_timesteps", 1000) - 1)
            fwd, grads, how = points * terms, 0, f"{points} test points x {terms} forward passes"
        elif name == "nll_pf_ode":
            fwd, grads, how = 0, points * PF_ODE_NFE, f"{points} test points x {PF_ODE_NFE} input gradients (assumed)"
        elif name in ("nll_ais_forward", "nll_ais_reverse") and name == "nll_ais_forward":
            from ebmbench.metrics.ais import AISParams

            ais = AISParams()
            per_chain = cfg.ais_steps * ais.mcmc_steps * (ais.leapfrog_steps + 1)
            reverse = 0 if cfg.skipped("nll_ais_reverse") else per_chain + ais.start_steps * (ais.leapfrog_steps + 1)
            grads = cfg.ais_runs * cfg.ais_chains * (per_chain + reverse)
            fwd, how = points, (f"{cfg.ais_runs} x {cfg.ais_chains} chains x {cfg.ais_steps} HMC steps "
                                f"({ais.leapfrog_steps} leapfrogs), forward and reverse, + {points} test energies")
        elif name == "nll_ais_reverse":
            continue  # in nll_ais_forward's count (one AIS computation gives both rows)
        else:
            skipped.append(name)
            continue
        parts.append(Part(f"eval:{name}", fwd * net.fwd_flops + grads * net.grad_flops,
                          fwd * net.fwd_s + grads * net.grad_s, how))
    return parts, skipped


def sampling_parts(model: GenerativeModel, cfg: RunConfig, n_test: int, dataset_name: str, net: NetCost
                   ) -> tuple[list[Part], list[str]]:
    """Curve points and the final evaluation: samples of each sampler and the metrics fed by them."""
    device, notes = model.device, []
    calls = {}
    for label, name, budget in plan(cfg):
        try:
            nfe, grads, stand_in = sampler_calls(model, name, budget)
        except (ValueError, RuntimeError, TypeError) as err:
            notes.append(f"sampler {label} not estimated ({err})")
            continue
        calls[label] = (nfe, grads)
    parts = []
    points = curve_steps(cfg.train_steps, cfg.curve_points)
    n_curve = cfg.curve_n or cfg.n_eval_samples
    curve_metrics = config_mod.split_names(cfg.curve_metrics)
    for label in [p[0] for p in plan(cfg, curve=True) if p[0] in calls] if points else []:
        f, s = per_sample(calls[label], net)
        k = len(points) * n_curve
        parts.append(Part(f"curve:{label}", k * f, k * s, f"{len(points)} points x {n_curve} samples x "
                                                          f"{calls[label][0]:g} NFE ({calls[label][1]:g} gradients)"))
        parts += fidelity_part(f"curve:{label}", cfg, dataset_name, k, n_test, str(device), curve_metrics)
    sample_metrics = SAMPLE_METRICS.names()
    for label, (nfe, grads) in calls.items():
        f, s = per_sample((nfe, grads), net)
        n = cfg.n_eval_samples
        parts.append(Part(f"eval:{label}", n * f, n * s, f"{n} samples x {nfe:g} NFE ({grads:g} input gradients)"))
        parts += fidelity_part(f"eval:{label}", cfg, dataset_name, n, n_test, str(device), sample_metrics)
    if len(model.support.shape) == 3 and not inception_present():
        notes.append("the *_inception rows cost nothing here: the Inception weights are absent, so they are "
                     "not_applicable (`ebmbench fetch inception` gets them)")
    # the test reference and the training-data floor: computed once (cached across runs; counted per run here)
    parts += fidelity_part("eval:reference+floor", cfg, dataset_name, n_test + cfg.n_eval_samples, n_test,
                           str(device), sample_metrics)
    metric_parts, skipped = model_metric_parts(model, cfg, net, n_test)
    if skipped:
        notes.append(f"not estimated: {', '.join(skipped)} (quadrature on a 2D grid; not applicable to images)")
    return parts + metric_parts, notes


def network_cost(model: GenerativeModel, cfg: RunConfig) -> NetCost:
    """The model's network counted and timed at a small batch on its device, on its real inputs."""
    example = ([torch.zeros(1, *model.support.shape, device=model.device)], {})
    if plan(cfg):  # the network's real inputs (a time or noise level too), from a stand-in draw
        try:
            example = sampler_calls(model, plan(cfg)[0][1], plan(cfg)[0][2])[2].example or example
        except (ValueError, RuntimeError, TypeError):
            pass
    return net_cost(model.net.net, example, model.device, CPU_STEP_FLOPS if model.device.type == "cpu" else None)


@cache
def startup_seconds() -> float:
    """Seconds a fresh Python takes to import the run machinery here: each run pays it in its kernel (measured once
    per process; the kernel's own start, about a second more, is not counted)."""
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ebmbench.run"], check=False, capture_output=True, timeout=300)
    return time.perf_counter() - start


def estimate_run(cfg: RunConfig) -> RunEstimate:
    """The run's cost on its resolved device, measured here for a few seconds; global RNG and threads restored."""
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        dataset, n_test, data_kind = proxy_dataset(cfg.dataset)
        model = METHODS.get(cfg.method).build(dataset, cfg.method_params).to(cfg.device)
        est = RunEstimate(cfg.run_id, cfg.method, cfg.device, notes=[f"data: {data_kind}"])
        start = startup_seconds()
        est.parts.append(Part("start", 0.0, start, f"imports in a fresh Python: {start:.1f} s (measured)"))
        net = network_cost(model, cfg)
        train, trained = train_part(model, cfg, dataset.train, lambda: net.grad_flops / net.grad_s)
        est.parts.append(train)
        parts, notes = sampling_parts(trained.eval(), cfg, n_test, cfg.dataset, net)
        est.parts += parts
        est.notes += notes
        return est
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)


# --- suites ---------------------------------------------------------------------------------------------------

def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def assumed_hours(flops: float, rate: float) -> float:
    return flops / rate / 3600


def estimate_suite(configs: list[RunConfig], progress: Callable[[str], None] | None = None
                   ) -> dict[str, RunEstimate]:
    """Every run's estimate, by run id (one that cannot be estimated is left out, with its reason printed)."""
    out = {}
    for cfg in configs:
        if progress:
            progress(cfg.run_id)
        try:
            out[cfg.run_id] = estimate_run(cfg)
        except Exception as err:  # an estimate that breaks never stops a suite; it is reported
            if progress:
                progress(f"  no estimate for {cfg.run_id}: {type(err).__name__}: {err}")
    return out


def assumed_rates() -> dict[str, float]:
    """``ASSUMED_FLOPS``, or the rates of $EBMBENCH_ASSUMED_TFLOPS (name=TFLOP/s, comma-separated)."""
    import os

    text = os.environ.get(ASSUMED_ENV, "").strip()
    if not text:
        return ASSUMED_FLOPS
    try:
        return {k.strip(): float(v) * 1e12 for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError:
        raise ValueError(f"${ASSUMED_ENV}={text!r}: write name=TFLOP/s pairs, e.g. H100=40,A100=15") from None


def table(estimates: dict[str, RunEstimate], assumed: dict[str, float] | None = None,
          labels: dict[str, str] | None = None) -> list[str]:
    """Lines: each run's hours (train, curve points, evaluation, total) on its device, its FLOPs, the assumed-rate
    hours, and the totals."""
    assumed, labels = assumed_rates() if assumed is None else assumed, labels or {}
    heads = [f"{k} h (assumed {v / 1e12:g} TFLOP/s)" for k, v in assumed.items()]
    lines = [" | ".join(["run", "device", "train h", "curve h", "eval h", "total h", "PFLOP", *heads])]
    tot_s = tot_f = 0.0
    for e in estimates.values():
        (_, tr), (_, cu), (_, ev) = e.total("train"), e.total("curve"), e.total("eval")
        tot_s, tot_f = tot_s + e.seconds, tot_f + e.flops
        name = f"{labels[e.run_id]}: {e.run_id}" if labels.get(e.run_id) else e.run_id
        at_rates = (f"{assumed_hours(e.flops, v):.3g}" for v in assumed.values())
        lines.append(" | ".join([name, e.device, *(f"{x / 3600:.3g}" for x in (tr, cu, ev, e.seconds)),
                                 f"{e.flops / 1e15:.3g}", *at_rates]))
    lines.append(" | ".join(["total", "", "", "", "", f"{tot_s / 3600:.3g}", f"{tot_f / 1e15:.3g}",
                             *(f"{assumed_hours(tot_f, v):.3g}" for v in assumed.values())]))
    return lines


def seed_free_key(cfg: RunConfig) -> str:
    """Runs that differ only in their seed cost the same: one estimate serves them all."""
    return dataclasses.replace(cfg, seed=0).config_hash


def estimate_specs(configs: list[RunConfig], log: Callable[[str], None] | None = None) -> dict[str, RunEstimate]:
    """``estimate_suite`` measuring each seed-free configuration once."""
    by_key: dict[str, RunEstimate] = {}
    out = {}
    for cfg in configs:
        key = seed_free_key(cfg)
        if key not in by_key:
            found = estimate_suite([cfg], log)
            if not found:
                continue
            by_key[key] = found[cfg.run_id]
        out[cfg.run_id] = dataclasses.replace(by_key[key], run_id=cfg.run_id)
    return out


class EtaBar:
    """A suite's progress bar whose ETA is the estimate of the runs left (``estimate_run``), scaled by how long the
    finished runs took against their estimates; tqdm's own ETA (runs left x mean time per run) is not shown."""

    def __init__(self, run_ids: list[str], estimates: dict[str, float] | None, desc: str, disable: bool = False,
                 workers: int | None = None) -> None:
        from tqdm.auto import tqdm

        self.left = {r: (estimates or {}).get(r) for r in run_ids}
        self.workers, self.spent_est, self.start = workers or 1, 0.0, time.perf_counter()
        fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
        self.bar = tqdm(total=len(run_ids), desc=desc, unit="run", disable=disable, bar_format=fmt)
        self.bar.set_postfix_str(self.eta())

    def eta(self) -> str:
        known = [v for v in self.left.values() if v is not None]
        if not self.left:
            return "done"
        if not known:
            return "no estimate"
        elapsed = time.perf_counter() - self.start
        ratio = elapsed * self.workers / self.spent_est if self.spent_est > 0 else 1.0
        unknown = len(self.left) - len(known)
        return (f"ETA by estimate {fmt_duration(sum(known) * ratio / self.workers)}"
                + (f" + {unknown} run(s) without one" if unknown else ""))

    def done(self, run_id: str) -> None:
        self.spent_est += self.left.pop(run_id, None) or 0.0
        self.bar.update(1)
        self.bar.set_postfix_str(self.eta())

    def __enter__(self) -> EtaBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()


def fmt_duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


# --- --only and --dry-run ---------------------------------------------------------------------------------------

def select(runs: list[Any], only: str) -> list[Any]:
    """The runs whose entry label, method or run id is among ``only`` (comma-separated); an unknown name is an
    error that lists the valid ones."""
    wanted = config_mod.split_names(only)
    labels = sorted({r.label for r in runs if getattr(r, "label", "")})
    methods = sorted({r.cfg.method for r in runs})
    ids = {r.cfg.run_id for r in runs}
    unknown = [w for w in wanted if w not in labels and w not in methods and w not in ids]
    if unknown or not wanted:
        raise ValueError(f"--only {only!r}: {unknown or 'nothing'} is not a label, method or run id of this suite; "
                         f"labels: {', '.join(labels) or '(none)'}; methods: {', '.join(methods)}")
    return [r for r in runs if r.label in wanted or r.cfg.method in wanted or r.cfg.run_id in wanted]


def report(runs: list[Any], assumed: dict[str, float] | None = None, log: Callable[[str], None] = print,
           workers: int = 0) -> dict[str, float]:
    """Estimate every run (compositions excluded), print the table and the basis; seconds by run id."""
    configs = [r.cfg for r in runs if not getattr(r, "needs", None)]
    t0 = time.perf_counter()
    estimates = estimate_specs(configs, lambda line: log(line) if line.startswith("  no estimate") else None)
    devices = sorted({e.device for e in estimates.values()})
    log(f"estimated cost ({time.perf_counter() - t0:.0f} s of measurement on {', '.join(devices) or 'no device'}, "
        f"{torch.get_num_threads()} threads here):")
    labels = {r.cfg.run_id: r.label for r in runs if getattr(r, "label", "")}
    for line in table(estimates, assumed, labels):
        log("  " + line)
    if workers > 1:
        total = sum(e.seconds for e in estimates.values())
        log(f"  on {workers} workers: about {fmt_duration(total / workers)} if the machine has cores for all of them "
            "(the hours above are one run after another)")
    rate = ", ".join(f"{k}: {v / 1e12:g} TFLOP/s" for k, v in (assumed or assumed_rates()).items())
    log(f"  device hours are counted FLOPs at the throughput measured here; the assumed-rate columns ({rate}) are "
        "an assumption, not a measurement (benchmarks/gpu_check.py measures a GPU)")
    notes = sorted({n for e in estimates.values() for n in e.notes})
    for note in notes:
        log(f"  note: {note}")
    return {rid: e.seconds for rid, e in estimates.items()}
