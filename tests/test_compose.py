"""Composition (ebmbench/compose.py) against closed forms: a product of two isotropic Gaussian mixtures is a Gaussian
mixture, and a product of two Gaussians is a Gaussian; the suite's compositions run after their components."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import GAUSS_BOX, GAUSS_EYE
from torch import Tensor, nn

from ebmbench import compose
from ebmbench.methods.diffusion import DDPM
from ebmbench.methods.energy_diffusion import EnergyDDPM, EnergyDDPMParams
from ebmbench.metrics.likelihood import log_partition_refined
from ebmbench.suites import SuiteError, is_finished, load_suite, run_suite


def gaussian_product_mixture(t: compose.ProductDensity) -> tuple[Tensor, Tensor]:
    """log weights [I, J] of the components N(c_ij, v I) of p_a p_b / Z for isotropic mixtures a and b."""
    a, b = t.a, t.b
    s2 = a.std**2 + b.std**2
    d2 = ((a.means[:, None] - b.means[None]) ** 2).sum(-1)
    log_w = a.log_weights[:, None] + b.log_weights[None] - d2 / (2 * s2) - math.log(2 * math.pi * s2)
    return log_w, torch.logsumexp(log_w, (0, 1))


def test_product_target_matches_the_closed_form() -> None:
    """log Z by quadrature equals the closed form; exact samples fall in the product's four modes with the
    closed-form weights (within 4 SE at n = 20000); log_prob integrates to 1 on the box."""
    t = compose.target("product", "eight_gaussians", "diagonal_blobs")
    log_w, log_z = gaussian_product_mixture(t)
    assert t.log_z == pytest.approx(float(log_z), abs=1e-8)
    x = t.sample(20_000, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 2) and bool(t.box.contains(x).all())
    pairs = t.modes(x.double())
    weights = (log_w - log_z).exp().flatten()  # pair id = i * 4 + j, as ProductDensity.modes
    freq = torch.bincount(pairs, minlength=32).double() / len(x)
    se = (weights * (1 - weights) / len(x)).sqrt()
    assert ((freq - weights).abs() < 4 * se + 1e-3).all(), (freq, weights)
    assert int((weights > 0.01).sum()) == 4  # four well-separated modes carry the mass
    mass, _, _ = log_partition_refined(lambda y: -t.log_prob(y), t.box, tol=1e-7, dtype=torch.float64)
    assert mass == pytest.approx(0.0, abs=1e-6)


def test_mixture_target_is_normalized_and_samples_each_half() -> None:
    t = compose.target("mixture", "eight_gaussians", "diagonal_blobs")
    mass, _, _ = log_partition_refined(lambda y: -t.log_prob(y), t.box, tol=1e-7, dtype=torch.float64)
    assert mass == pytest.approx(0.0, abs=1e-5)
    x = t.sample(4000, torch.Generator().manual_seed(1))
    near_axis = (t.a.natural_mode(x.double()) % 2 == 0).double().mean()  # eight_gaussians' axis modes: 1/4 of it
    assert abs(float(near_axis) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 4000)


def test_exact_samples_score_at_their_floor_and_a_shifted_set_does_not() -> None:
    t = compose.target("product", "eight_gaussians", "diagonal_blobs")
    x = t.sample(1000, torch.Generator().manual_seed(5))
    good = {m: (v, meta) for m, v, _, meta in compose.score(x, t)}
    kl, meta = good["reverse_kl"]
    assert abs(kl - meta["floor"]) < 4 * meta["floor_sd"] + 0.02
    bad = {m: v for m, v, _, _ in compose.score(x * 1.3, t)}
    assert bad["reverse_kl"] > kl + 0.5 and bad["mode_tv"] > good["mode_tv"][0]


class TimeGaussianEnergy(nn.Module):
    """E(x, t) = (x - sqrt(ab) m)^T (ab S + (1 - ab) I)^-1 (x - sqrt(ab) m) / 2: exact for data N(m, S), integer t."""

    def __init__(self, m: Tensor, s: Tensor, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.m, self.s, self.ab = m.double(), s.double(), alphas_cumprod.double()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.ab[t.long()][:, None, None]
        k = ab * self.s + (1 - ab) * GAUSS_EYE
        d = x.double() - ab[:, :, 0].sqrt() * self.m
        return (0.5 * (d * torch.linalg.solve(k, d.unsqueeze(-1)).squeeze(-1)).sum(1)).to(x.dtype)


def gaussian_model(m: list[float], s: list[list[float]]) -> EnergyDDPM:
    params = EnergyDDPMParams(num_train_timesteps=200)
    ab = DDPM(nn.Linear(1, 1), GAUSS_BOX, params).make_ddpm_scheduler().alphas_cumprod
    return EnergyDDPM(TimeGaussianEnergy(torch.tensor(m), torch.tensor(s), ab), GAUSS_BOX, params)


def test_summed_scores_miss_the_product_and_mcmc_corrects_it() -> None:
    """Two exact Gaussian energy models; their product at t = 0 is N(c, C) in closed form. Plain reverse diffusion
    on summed eps is biased (the sum of noised scores is not the noised product's score), MALA per level on the
    summed energies is not: its error in the mean is under half the plain sampler's; costs are counted per part."""
    sa, sb = [[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [0.0, 0.5]]
    a, b = gaussian_model([1.0, 0.0], sa), gaussian_model([-1.0, 1.0], sb)
    pa, pb = torch.linalg.inv(torch.tensor(sa).double()), torch.linalg.inv(torch.tensor(sb).double())
    cov = torch.linalg.inv(pa + pb)
    mean = cov @ (pa @ torch.tensor([1.0, 0.0]).double() + pb @ torch.tensor([-1.0, 1.0]).double())
    model = compose.ComposedModel(a, b)
    assert model.capabilities == {"energy", "eps_prediction", "time_energy"}
    plain = model.sample(4000, generator=torch.Generator().manual_seed(0), sampler="ddpm", steps=50)
    a.net.reset(), b.net.reset()
    fixed = model.sample(4000, generator=torch.Generator().manual_seed(0), sampler="ddpm_mala", steps=50,
                         mcmc_steps=4)
    err_plain = float((plain.x.double().mean(0) - mean).norm())
    err_fixed = float((fixed.x.double().mean(0) - mean).norm())
    se = math.sqrt(float(cov.trace()) / 4000)
    assert err_plain > 6 * se and err_fixed < 0.5 * err_plain, (err_plain, err_fixed, se)
    assert (torch.cov(fixed.x.double().T) - cov).abs().max() < 0.05
    assert plain.cost.nfe == 50 and fixed.cost.nfe == 50 * 6  # composed calls: MALA K + 1 and one eps per level
    assert a.net.forward_calls == b.net.forward_calls == a.net.backward_calls == 50 * 6  # each part, each call


def test_a_composition_needs_its_components_in_the_suite(tmp_path) -> None:
    suite = tmp_path / "c.yaml"
    for budget, problem in (("{steps: 5}", "no run of energy_ddpm on diagonal_blobs with seed 0 in this suite's runs"),
                            ("{steps: 5, bogus: 1}", "sampler 'ddpm_mala' takes no parameter ['bogus']")):
        suite.write_text(
            "name: c\nruns:\n  - datasets: [eight_gaussians]\n    methods: [energy_ddpm]\n"
            "compositions:\n  - operations: [product]\n    pairs: [[eight_gaussians, diagonal_blobs]]\n"
            f"    methods: [energy_ddpm]\n    samplers: {{energy_ddpm: {{ddpm_mala: {budget}}}}}\n")
        with pytest.raises(SuiteError, match=re.escape(problem)):
            load_suite(str(suite), str(tmp_path))


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    """Two tiny component runs and their product, executed through the suite (papermill notebooks)."""
    root = tmp_path_factory.mktemp("compose")
    suite = root / "tiny.yaml"
    suite.write_text(
        "name: tiny\ndefaults: {threads: 1, train_steps: 20, batch_size: 64, checkpoint_every: 20, curve_points: 0,"
        " n_eval_samples: 50, samplers: ddim, ddim_steps: 5, num_train_timesteps: 50,"
        " skip_metrics: 'nll_ais_forward,nll_ais_reverse,kl_data_model,kl_model_data,nll_elbo,nll_pf_ode,"
        "nll_heldout,nll_ais_diffusion_forward,nll_ais_diffusion_reverse,mmd2_multiscale'}\n"
        "runs:\n  - datasets: [eight_gaussians, diagonal_blobs]\n    methods: [energy_ddpm]\n"
        "compositions:\n  - operations: [product]\n    pairs: [[eight_gaussians, diagonal_blobs]]\n"
        "    methods: [energy_ddpm]\n    n_samples: 200\n"
        "    samplers: {energy_ddpm: {ddpm: {steps: 10}, ddpm_mala: {steps: 10, mcmc_steps: 1},"
        " langevin: {steps: 5}}}\n")
    name, runs = load_suite(str(suite), str(root))
    summary = run_suite(runs, name, progress=False)
    return root, runs, summary


def test_compositions_run_after_their_components_from_their_checkpoints(tiny_suite) -> None:
    root, runs, summary = tiny_suite
    comp = runs[-1]
    assert isinstance(comp, compose.CompositionSpec) and set(comp.needs) == {r.cfg.run_id for r in runs[:2]}
    assert set(summary.statuses.values()) == {"ok"}, summary.statuses
    frame = compose.load_compositions(root / "tiny")
    ok = frame[frame.metric_status == "ok"]
    assert set(ok.sampler) == {"ddpm", "ddpm_mala", "langevin"}
    assert set(ok.dataset) == {"eight_gaussians*diagonal_blobs"}
    kl = ok[ok.metric == "reverse_kl"]
    assert kl.value.notna().all() and (kl.nfe > 0).all()
    assert (kl.component_net_calls == 2 * kl.nfe).all()  # one composed evaluation = two network evaluations
    # the energy at t = 0 makes the EBM samplers applicable to the composed energy_ddpm too
    assert frame[frame.sampler == "langevin"].metric_status.eq("ok").all()
    saved = json.loads((comp.run_dir / "config.json").read_text())
    assert saved["component_hashes"] == ",".join(r.cfg.config_hash for r in runs[:2])


def test_a_rerun_skips_finished_components_and_compositions(tiny_suite) -> None:
    from ebmbench.results import provenance

    root, runs, _ = tiny_suite
    code = provenance("cpu")
    assert all(is_finished(spec, code) for spec in runs)
    summary = run_suite(runs, "tiny", progress=False)
    assert set(summary.statuses.values()) == {"skipped (finished)"}
