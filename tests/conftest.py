"""Shared fixtures and stand-ins: small models and datasets that every test can build in milliseconds.

Test files import the stand-ins by name (``from conftest import GaussianEpsNet``): the Gaussian score and
noise-prediction nets with exact answers, and the brief training run that a baseline must learn from.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.diffusion import DDPM, DDPMParams
from ebmbench.methods.ebm import EBM, PCDParams
from ebmbench.methods.score import NOISE_LABEL_SCALE
from ebmbench.protocol import Box


class QuadraticEnergy(nn.Module):
    """E(x) = 0.5 (x - mu)^T P (x - mu): the energy of N(mu, P^-1)."""

    def __init__(self, mu: Tensor, precision: Tensor) -> None:
        super().__init__()
        self.mu = nn.Parameter(mu.clone())
        self.register_buffer("precision", precision.clone())

    def forward(self, x: Tensor) -> Tensor:
        d = x.flatten(1) - self.mu
        return 0.5 * ((d @ self.precision) * d).sum(dim=1)


@pytest.fixture
def gaussian_ebm():
    """An EBM whose energy is a 2D Gaussian with covariance diag(1, 0.25), on a wide box."""

    def make(mu=(0.5, -1.0), var=(1.0, 0.25)) -> EBM:
        precision = torch.diag(1.0 / torch.tensor(var))
        net = QuadraticEnergy(torch.tensor(mu), precision)
        return EBM(net, Box(-50.0, 50.0, (2,)), PCDParams(buffer_size=16))

    return make


@pytest.fixture
def tiny_dataset():
    """A 2D Gaussian dataset with fixed splits (no exact density attached)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=g)
    return Dataset("tiny", x[:400], x[400:500], x[500:], Box(-6.0, 6.0, (2,)), "continuous")


def pytest_collection_modifyitems(items):
    """Cells of notebooks that nbval executes (notebooks/quickstart.ipynb) are slow tests, as the suites are."""
    for item in items:
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Small tensors run faster on one thread on a 2-core machine; runs record their own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_serial(tmp_path_factory):
    """The smoke suite run once, serially, through the CLI: (exit code, printed output, results dir)."""
    import contextlib
    import io

    from ebmbench import cli

    res = tmp_path_factory.mktemp("smoke_serial")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["run", "smoke", "--results-dir", str(res)])
    return code, out.getvalue(), res


# ---------------------------------------------------------------- Gaussian data: every noised score is exact
# x0 ~ N(GAUSS_MU, GAUSS_SIGMA) on R^2, so p_sigma = N(GAUSS_MU, GAUSS_SIGMA + sigma^2 I) in closed form.

GAUSS_MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
GAUSS_SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)  # eigenvalues 0.292, 1.508
GAUSS_EYE = torch.eye(2, dtype=torch.float64)
GAUSS_LAM, GAUSS_U = torch.linalg.eigh(GAUSS_SIGMA)
GAUSS_BOX = Box(-4.0, 4.0, (2,))


def noised_score(x: Tensor, sigma: Tensor) -> Tensor:
    """grad log N(x; mu, Sigma + sigma^2 I) = -(Sigma + sigma^2 I)^{-1} (x - mu), sigma of shape (B,).

    Inverted in Sigma's eigenbasis, where Sigma + sigma^2 I is diagonal (lam + sigma^2).
    """
    x, sigma = x.double(), sigma.double()
    y = (x - GAUSS_MU) @ GAUSS_U
    return -(y / (GAUSS_LAM + sigma[:, None] ** 2)) @ GAUSS_U.T


class GaussianScoreNet(nn.Module):
    """An NCSN net f(x, c) with f / sigma = the noised Gaussian's score, sigma = exp(c / NOISE_LABEL_SCALE)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # model.device needs a parameter

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        sigma = (c.double() / NOISE_LABEL_SCALE).exp()
        return (sigma[:, None] * noised_score(x, sigma)).to(x.dtype)


class GaussianEpsNet(nn.Module):
    """E[eps | x_t] = sqrt(1-ab) (ab Sigma + (1-ab) I)^{-1} (x_t - sqrt(ab) mu) at fractional t.

    ab(t) = 1 / (1 + sigma(t)^2) with log sigma(t) interpolated linearly in t by numpy.interp,
    independently of ebmbench.noise; at integer t it is the scheduler's alphas_cumprod.
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # model.device needs a parameter
        ab = alphas_cumprod.double().numpy()
        self.log_sigmas = 0.5 * np.log((1 - ab) / ab)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        log_sigma = np.interp(t.double().cpu().numpy(), np.arange(len(self.log_sigmas)), self.log_sigmas)
        ab = 1 / (1 + torch.from_numpy(np.exp(2 * log_sigma)))[:, None]
        xd = x.double()
        k = ab[:, :, None] * GAUSS_SIGMA + (1 - ab)[:, :, None] * GAUSS_EYE
        eps = (1 - ab).sqrt() * torch.linalg.solve(k, (xd - ab.sqrt() * GAUSS_MU).unsqueeze(-1)).squeeze(-1)
        return eps.to(x.dtype)


def gaussian_ddpm(params: DDPMParams | None = None, net: type[nn.Module] = GaussianEpsNet,
                  box: Box = GAUSS_BOX) -> DDPM:
    """A DDPM whose eps net is exact for the Gaussian data (``net`` takes the schedule's alphas_cumprod)."""
    params = params or DDPMParams()
    probe = DDPM(nn.Linear(1, 1), box, params)
    return DDPM(net(probe.make_ddpm_scheduler().alphas_cumprod), box, params)


# ---------------------------------------------------------------- a baseline trained briefly must learn


def mmd_before_and_after(results_dir, params: dict, sampler: str | None = None, budget: dict | None = None,
                         eval_untrained: bool = False) -> tuple[dict, dict, float]:
    """Train the run ``params`` (through run.start and run.fit); MMD^2 to the test split (with the train-vs-test
    floor) of 1000 samples before and after, and the training wall clock. ``eval_untrained``: put the model in
    eval mode before drawing the untrained samples (as a run's evaluation does)."""
    from ebmbench import run
    from ebmbench.metrics.sample_stats import mmd_with_floor

    r = run.start({**params, "results_dir": str(results_dir)})
    if eval_untrained:
        r.model.eval()

    def mmd() -> dict:
        x = r.model.sample(1000, generator=torch.Generator().manual_seed(1), sampler=sampler, **(budget or {})).x
        return mmd_with_floor(x, r.dataset.test, r.dataset.train)

    before = mmd()
    t0 = time.perf_counter()
    assert run.fit(r, progress=False).status == "ok"
    wall = time.perf_counter() - t0
    after = mmd()
    print(f"{params['method']}: untrained {before['mmd2']:.4f} trained {after['mmd2']:.4f} "
          f"floor {after['floor']:.5f} train wall {wall:.1f}s")
    return before, after, wall
