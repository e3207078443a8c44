"""Bernoulli-Bernoulli RBM (Hinton 2002; Tieleman 2008): exact log Z, free energy, Gibbs, CD/PCD training.

A tiny RBM (6 visible, 4 hidden) has only 2^10 joint states, so every exact quantity is
checked against a brute-force sum over all (v, h) of exp(-E(v, h)), E = -b.v - c.h - h.W v.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from scipy.stats import chi2
from torch import Tensor

from ebmbench.builtins import load_dataset
from ebmbench.methods.base import METHODS, training_step
from ebmbench.methods.rbm import RBM, RBMNet, RBMParams, RBMPCDParams, build_rbm_cd, build_rbm_pcd, pcd_loss
from ebmbench.protocol import Box

D, H = 6, 4


def all_binary(n: int) -> Tensor:
    """All 2^n binary vectors as rows (float64)."""
    idx = torch.arange(2**n).unsqueeze(1)
    return ((idx >> torch.arange(n)) & 1).double()


def tiny_rbm(seed: int = 0) -> RBM:
    """A 6x4 RBM with O(1) random weights and biases, so its distribution is far from uniform."""
    g = torch.Generator().manual_seed(seed)
    net = RBMNet(D, H)
    with torch.no_grad():
        net.W.copy_(torch.randn(H, D, generator=g))
        net.b.copy_(torch.randn(D, generator=g))
        net.c.copy_(torch.randn(H, generator=g))
    return RBM(net, Box(0.0, 1.0, (D,)), RBMParams(n_hidden=H))


def minus_joint_energy(model: RBM) -> Tensor:
    """-E(v, h) for every v (rows) and h (columns), in float64."""
    W, b, c = model.rbm.W.double(), model.rbm.b.double(), model.rbm.c.double()
    v, h = all_binary(D), all_binary(H)
    return (v @ b).unsqueeze(1) + (h @ c).unsqueeze(0) + v @ W.T @ h.T


def test_log_partition_equals_brute_force_over_all_visible_and_hidden_states():
    model = tiny_rbm()
    brute = torch.logsumexp(minus_joint_energy(model).flatten(), dim=0)
    with torch.no_grad():
        assert model.log_partition().dtype == torch.float64
        assert abs(float(model.log_partition() - brute)) < 1e-10


def test_free_energy_is_minus_log_sum_over_hidden_states():
    model = tiny_rbm(seed=1)
    brute = -torch.logsumexp(minus_joint_energy(model), dim=1)
    with torch.no_grad():
        assert torch.allclose(model.energy(all_binary(D)), brute, rtol=0, atol=1e-10)
        assert torch.allclose(model.energy(all_binary(D).float()).double(), brute, rtol=0, atol=1e-4)


def test_log_prob_is_the_exact_marginal_and_sums_to_one():
    model = tiny_rbm(seed=2)
    minus_e = minus_joint_energy(model)
    brute = torch.logsumexp(minus_e, dim=1) - torch.logsumexp(minus_e.flatten(), dim=0)
    with torch.no_grad():
        log_p = model.log_prob(all_binary(D).float())
    assert log_p.dtype == torch.float64
    assert torch.allclose(log_p, brute, rtol=0, atol=1e-10)
    assert abs(float(torch.logsumexp(log_p, dim=0))) < 1e-10
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(torch.full((1, D), 0.5))


def test_block_gibbs_reproduces_the_exact_marginal_of_v():
    """Chi-square over the 2^6 visible states of 40000 independent chains against exp(-F)/Z."""
    model, n, steps = tiny_rbm(seed=3), 40_000, 30
    samples = model.sample(n, generator=torch.Generator().manual_seed(0), sampler="gibbs", steps=steps)
    x = samples.x
    assert samples.cost.nfe == steps  # one counted net call per sweep, checked by sample() as well
    assert ((x == 0) | (x == 1)).all() and x.shape == (n, D)
    counts = torch.bincount((x.long() * (1 << torch.arange(D))).sum(dim=1), minlength=2**D).double()
    with torch.no_grad():
        p = model.log_prob(all_binary(D)).exp()
    stat = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2.sf(stat, df=2**D - 1) > 1e-4, stat
    uniform = torch.full_like(p, 1 / 2**D)  # the test has power: the uniform law is rejected outright
    assert chi2.sf(float(((counts - n * uniform) ** 2 / (n * uniform)).sum()), df=2**D - 1) < 1e-12
    again = model.sample(n, generator=torch.Generator().manual_seed(0), sampler="gibbs", steps=steps)
    assert torch.equal(again.x, x)  # all randomness from the passed generator


def test_pcd_surrogate_gradient_is_the_contrastive_gradient():
    """d/dW mean(F(v_i) - mean_j F(chain_j)) = -(<p(h|v) v^T>_data - <p(h|v) v^T>_chains) (Hinton 2002)."""
    model = tiny_rbm(seed=4)
    model = RBM(model.rbm, model.support, RBMPCDParams(n_hidden=H, n_chains=32))
    v = all_binary(D).float()[torch.randperm(2**D, generator=torch.Generator().manual_seed(0))[:16]]
    loss, diag = pcd_loss(model, v, torch.Generator().manual_seed(1), model.params)
    (grad,) = torch.autograd.grad(loss.mean(), model.rbm.W)
    chains = model.chains
    with torch.no_grad():
        stat = lambda u: (torch.sigmoid(u @ model.rbm.W.T + model.rbm.c).T @ u) / len(u)  # noqa: E731
        expected = -(stat(v) - stat(chains))
    assert torch.allclose(grad, expected, atol=1e-6)
    assert int(model.chain_sweeps) == 1 and diag["chain_sweeps"] == 1.0


@pytest.mark.parametrize("method", ["rbm_cd", "rbm_pcd"])
def test_training_on_binary_digits_improves_exact_test_likelihood(method):
    """300 steps, batch 64, Adam 1e-2: the exact test NLL drops well below the untrained (independent-pixel) one."""
    dataset, spec = load_dataset("digits_binary"), METHODS.get(method)
    torch.manual_seed(0)
    params = spec.params()
    model = spec.build(dataset, params)
    with torch.no_grad():
        before = float(-model.log_prob(dataset.test).mean())
    step, make_optimizers = training_step(spec)
    optimizers = make_optimizers(model, 1e-2, (0.9, 0.999))
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        step(model, lambda: dataset.train[torch.randint(len(dataset.train), (64,), generator=g)], optimizers, g,
             params)
    with torch.no_grad():
        after = float(-model.log_prob(dataset.test).mean())
    assert before == pytest.approx(24.937, abs=1e-3)  # untrained: W ~ 0.01, b = logit of pixel means, c = 0
    assert after < before - 2.0, (before, after)


def test_persistent_chains_survive_a_state_dict_round_trip():
    dataset = load_dataset("digits_binary")
    params = RBMPCDParams(n_chains=32)
    torch.manual_seed(0)
    model = build_rbm_pcd(dataset, params)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        pcd_loss(model, dataset.train[:16], g, params)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    torch.manual_seed(1)
    restored = build_rbm_pcd(dataset, params)
    restored.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert int(restored.chain_sweeps) == 3 and torch.equal(restored.chains, model.chains)
    assert 0 < float(model.chains.mean()) < 1  # the chains ran: not the zero initial buffer
    g_restored = torch.Generator().manual_seed(0)
    g_restored.set_state(g.get_state())
    loss, _ = pcd_loss(model, dataset.train[:16], g, params)
    loss_restored, _ = pcd_loss(restored, dataset.train[:16], g_restored, params)
    assert torch.equal(restored.chains, model.chains) and torch.equal(loss_restored, loss)


def test_more_than_20_hidden_units_refuse_exact_log_prob():
    dataset = load_dataset("digits_binary")
    model = build_rbm_cd(dataset, RBMParams(n_hidden=21))
    assert not model.has("log_prob") and model.has("energy") and model.has("gibbs")
    with pytest.raises(ValueError, match=r"n_hidden=21 exceeds the limit of 20"):
        model.log_prob(dataset.test[:2])
    assert model.energy(dataset.test[:2]).shape == (2,)


def test_builders_refuse_settings_that_contradict_the_method():
    binary, continuous = load_dataset("digits_binary"), load_dataset("digits")
    with pytest.raises(ValueError, match="rbm_pcd"):
        build_rbm_cd(binary, RBMParams(persistent=True))
    with pytest.raises(ValueError, match="rbm_cd"):
        build_rbm_pcd(binary, RBMPCDParams(persistent=False))
    with pytest.raises(ValueError, match="binary data"):
        build_rbm_cd(continuous, RBMParams())
    model = build_rbm_cd(binary, RBMParams())
    assert model.rbm.W.shape == (16, 64) and model.chains.shape[0] == 0
    p = (binary.train.flatten(1).sum(0) + 1) / (len(binary.train) + 2)  # Laplace-smoothed pixel means
    assert torch.allclose(torch.sigmoid(model.rbm.b), p.float(), atol=1e-6)
    with torch.no_grad():
        assert math.isclose(float(model.log_partition()), float(model.rbm.log_partition()))
