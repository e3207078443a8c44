"""The Metropolis-Hastings machinery MALA and HMC share: the accept step, per-chain selects, the support rule,
and what an adjusted chain reports (Metropolis et al. 1953; Hastings 1970).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ebmbench.protocol import Box


@dataclass
class MCMCStats:
    """Diagnostics of a Metropolis-adjusted run over a batch of chains."""

    acceptance: float | None  # fraction of accepted proposals, mean over steps and chains (None: sync=False)
    energies: Tensor  # (n_chains, steps + 1): E(x_t) of every chain at every state, t = 0 the start
    nfe: int  # energy-and-gradient evaluations the loop made (one network call each, whole batch)
    accepted: Tensor | None = None  # 0-d device tensor: accepted proposals (read by whoever syncs, sync=False)
    proposals: int = 0  # steps * chains: the acceptance is float(accepted) / proposals
    probe: Tensor | None = None  # compiled.finite_probe summed over the chain (NaN: a non-finite energy)


def settle(stats: list[MCMCStats], what: str) -> list[float]:
    """Check and read the device-side results of several ``sync=False`` chains at once: raise FloatingPointError
    if an energy along any was NaN or inf, else return each chain's acceptance (one host read for all)."""
    if not stats:
        return []
    values = torch.stack([torch.stack([s.probe.float(), s.accepted.float()]) for s in stats]).tolist()
    if any(v[0] != v[0] or abs(v[0]) == float("inf") for v in values):
        raise FloatingPointError(f"non-finite energy during {what} (NaN or inf in E(x)); lower the step size "
                                 f"or check the model for divergence")
    return [v[1] / s.proposals if s.proposals else float("nan") for v, s in zip(values, stats, strict=True)]


def rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample select: row i of ``a`` where mask[i], else row i of ``b``."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def inside(box: Box | None, x: Tensor) -> Tensor:
    """Per-sample support indicator (all True without a box)."""
    if box is None:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return box.contains(x)


def check_args(box: Box | None, x0: Tensor, **positive: float) -> None:
    """Step sizes and temperature must be positive; chains must start where the density is."""
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"{name}={value}: must be positive")
    if box is None:
        return
    try:  # a device-side assert: an accelerator raises when it gets there, with no host read per chain
        torch._assert_async(inside(box, x0).all(), "MCMC chains must start inside the support box")
    except RuntimeError:  # the CPU checks at once
        raise ValueError("MCMC chains must start inside the support box (the density is zero outside it)") from None


def sq_norm(v: Tensor) -> Tensor:
    return v.flatten(1).pow(2).sum(dim=1)


def mh_accept(log_alpha: Tensor, allowed: Tensor, generator: torch.Generator) -> Tensor:
    """Metropolis-Hastings decision per chain: log u < log alpha, and the proposal in the support."""
    u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
    return allowed & (torch.log(u) < log_alpha)


def support_box(support: Box, mode: str) -> Box | None:
    """'reject': proposals outside the support are rejected (exact); 'none': ignore the support."""
    if mode == "reject":
        return support
    if mode == "none":
        return None
    raise ValueError(f"support mode {mode!r}: Metropolis-adjusted samplers take 'reject' or 'none'")


def mcmc_info(stats: MCMCStats, temperature: float, support_mode: str) -> dict[str, Any]:
    """What a Metropolis-adjusted sampler reports: acceptance, thinned mean-energy trace, temperature."""
    trace = energy_trace(stats.energies)
    return {"init": "uniform on support", "support_mode": support_mode, "acceptance": stats.acceptance,
            "energy_trace": trace["mean_energy"], "energy_trace_steps": trace["steps"],
            "temperature": temperature}


def energy_trace(energies: Tensor, max_points: int = 21) -> dict[str, list]:
    """Mean energy over chains at up to ``max_points`` evenly spaced steps (first and last kept).

    ``energies`` is (n_chains, n_steps), e.g. ``MCMCStats.energies`` or ``chain_energies``.
    """
    e = torch.as_tensor(energies).detach().to("cpu", torch.float64)
    n_steps = e.shape[1]
    steps = torch.linspace(0, n_steps - 1, min(max_points, n_steps)).round().long().unique()
    return {"steps": steps.tolist(), "mean_energy": e[:, steps].mean(dim=0).tolist()}
