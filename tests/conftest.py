"""Shared fixtures: small models and datasets that every test can build in milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ebmbench.data.base import Dataset
from ebmbench.methods.ebm import EBM, PCDParams
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
