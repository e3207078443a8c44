"""MCMC diagnostics as pure functions: effective sample size, split R-hat, energy traces.

Conventions (those of Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC", as in Stan and
ArviZ):

- ``chains`` is shaped ``(n_chains, n_steps)`` for a scalar quantity or ``(n_chains, n_steps, dim)``
  for a vector, one result per coordinate; it is converted to float64 on the CPU.
- Both diagnostics **split** every chain into its first and second half (an odd middle draw is
  dropped), so a single chain is enough and a drifting chain shows up as disagreeing halves.
- ``ess`` is the basic (mean) ESS, not rank-normalized: Geyer's (1992) initial positive sequence
  with the initial monotone sequence, on the multi-chain autocorrelation of Vehtari et al. 2021
  (eq. 10), capped at ``S log10(S)`` for S draws like ArviZ. For stationary AR(1) chains with lag-1
  correlation rho it estimates ``S (1 - rho) / (1 + rho)``.
- ``split_rhat`` is the rank-normalized split R-hat of Vehtari et al. 2021: the larger of the
  bulk value (on normal scores of pooled ranks) and the tail value (on the folded draws
  ``|theta - median|``); ``rank=False`` gives the classical split R-hat (Gelman et al. 2013, BDA3).
  Values below 1.01 are what Vehtari et al. recommend before trusting the chains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ebmbench.samplers.metropolis import energy_trace  # noqa: F401  (the chains' thinned trace, re-exported)


def as_chains(chains: Tensor) -> Tensor:
    """``(n_chains, n_steps[, dim])`` as a float64 CPU tensor ``(n_chains, n_steps, dim)``."""
    x = torch.as_tensor(chains).detach().to("cpu", torch.float64)
    if x.dim() == 2:
        x = x.unsqueeze(-1)
    if x.dim() != 3:
        raise ValueError(f"chains of shape {tuple(x.shape)}: expected (n_chains, n_steps) or (n_chains, n_steps, dim)")
    if x.shape[1] < 4:
        raise ValueError(f"{x.shape[1]} steps per chain: split diagnostics need at least 4")
    return x


def split_chains(x: Tensor) -> Tensor:
    """Each chain's first and second half as two chains; (M, N, D) -> (2M, N // 2, D)."""
    half = x.shape[1] // 2
    return torch.cat([x[:, :half], x[:, -half:]], dim=0)


def _squeeze(out: Tensor, chains: Tensor) -> Tensor:
    return out.squeeze(-1) if torch.as_tensor(chains).dim() == 2 else out


def autocovariance(x: Tensor) -> Tensor:
    """Biased (divide by N) autocovariance of each chain at lags 0..N-1 along dim 1, by FFT."""
    n = x.shape[1]
    centered = x - x.mean(dim=1, keepdim=True)
    f = torch.fft.rfft(centered, n=2 * n, dim=1)  # zero-padded: linear, not circular, correlation
    return torch.fft.irfft(f * f.conj(), n=2 * n, dim=1)[:, :n] / n


def _ess(x: Tensor) -> Tensor:
    """ESS of already split chains (M, N, D): M N / tau with Geyer's initial monotone sequence."""
    m, n = x.shape[:2]
    acov = autocovariance(x)
    w = (acov[:, 0] * n / (n - 1)).mean(dim=0)  # mean within-chain variance
    var_plus = w * (n - 1) / n + x.mean(dim=1).var(dim=0)  # pooled variance (Vehtari et al. eq. 3)
    rho = 1.0 - (w - acov.mean(dim=0)) / var_plus  # (N, D) combined autocorrelation (eq. 10)
    pairs = rho[: 2 * (n // 2)].reshape(n // 2, 2, -1).sum(dim=1)  # Geyer's Gamma_k = rho_2k + rho_2k+1
    positive = torch.cumprod((pairs > 0).to(x.dtype), dim=0)  # initial positive sequence
    monotone = torch.cummin(pairs, dim=0).values  # initial monotone sequence
    tau = -1.0 + 2.0 * (positive * monotone).sum(dim=0)
    s = m * n
    return (s / tau).clamp(max=s * torch.log10(torch.tensor(float(s), dtype=x.dtype)))


def ess(chains: Tensor) -> Tensor:
    """Effective sample size per coordinate (basic split-chain ESS, Vehtari et al. 2021; Geyer 1992)."""
    return _squeeze(_ess(split_chains(as_chains(chains))), chains)


def _rhat(x: Tensor) -> Tensor:
    """sqrt(var_plus / W) of already split chains (M, N, D) (Gelman et al. 2013; Vehtari et al. eq. 4)."""
    n = x.shape[1]
    w = x.var(dim=1).mean(dim=0)
    b_over_n = x.mean(dim=1).var(dim=0)
    return torch.sqrt((w * (n - 1) / n + b_over_n) / w)


def rank_normalize(x: Tensor) -> Tensor:
    """Normal scores of the pooled average ranks, per coordinate (Blom's offsets; Vehtari et al. eq. 14)."""
    from scipy.stats import rankdata  # lazy: scipy.stats costs a second of import in every notebook

    m, n, d = x.shape
    ranks = torch.as_tensor(rankdata(x.reshape(m * n, d).numpy(), axis=0), dtype=x.dtype)
    z = torch.special.ndtri((ranks - 0.375) / (m * n + 0.25))
    return z.reshape(m, n, d)


def split_rhat(chains: Tensor, rank: bool = True) -> Tensor:
    """Split R-hat per coordinate: rank-normalized max(bulk, tail) of Vehtari et al. 2021, or classical."""
    x = split_chains(as_chains(chains))
    if not rank:
        return _squeeze(_rhat(x), chains)
    folded = (x - x.flatten(0, 1).median(dim=0).values).abs()
    out = torch.maximum(_rhat(rank_normalize(x)), _rhat(rank_normalize(folded)))
    return _squeeze(out, chains)


def chain_energies(energy: Callable[[Tensor], Tensor], states: Tensor) -> Tensor:
    """E at every stored state: ``states`` (n_steps, n_chains, *shape) -> energies (n_chains, n_steps)."""
    with torch.no_grad():
        return torch.stack([energy(s).detach() for s in states], dim=1)
