"""GAN baselines: gradient penalty vs finite differences, losses, conv shapes, spectral norm, cost, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import mmd_before_and_after
from torch import nn

import ebmbench.methods.gan  # noqa: F401  (registers dcgan, wgan_gp, sngan before builtins import them)
from ebmbench import run
from ebmbench.data.base import Dataset
from ebmbench.methods.base import METHODS
from ebmbench.methods.gan import (
    D_LOSSES,
    G_LOSSES,
    GAN,
    WGANGPParams,
    critic_update,
    gan_optimizers,
    gan_train_step,
    gradient_penalty,
    interpolate,
)
from ebmbench.metrics.cost import sample_with_cost
from ebmbench.nets.gan import ConvDiscriminator, ConvGenerator, MLPDiscriminator, spatial_plan
from ebmbench.protocol import Box

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def image_dataset(shape: tuple[int, ...]) -> Dataset:
    x = torch.rand(8, *shape) * 2 - 1
    return Dataset("img", x, x, x, Box(-1.0, 1.0, shape), "continuous")


def small_critic() -> MLPDiscriminator:
    torch.manual_seed(0)
    return MLPDiscriminator((3,), hidden=8, depth=2).double()


def central_difference_grad_norm(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """|grad f(x_i)| per sample by central differences along each coordinate."""
    grads = torch.zeros_like(x)
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        grads[:, j] = (f(x + e) - f(x - e)) / (2 * h)
    return grads.norm(dim=1)


def test_gradient_penalty_matches_finite_differences():
    critic = small_critic()
    g = torch.Generator().manual_seed(0)
    x_real = torch.randn(16, 3, generator=g, dtype=torch.float64)
    x_fake = torch.randn(16, 3, generator=g, dtype=torch.float64) * 2
    x_hat = interpolate(x_real, x_fake, g)
    # x_hat lies on the segment from x_fake to x_real: x_hat - x_fake = eps (x_real - x_fake), eps in [0, 1]
    eps = ((x_hat - x_fake) / (x_real - x_fake))
    torch.testing.assert_close(eps, eps[:, :1].expand_as(eps))
    assert eps.min() >= 0 and eps.max() <= 1 and eps[:, 0].std() > 0.1
    gp = gradient_penalty(critic, x_hat)
    with torch.no_grad():
        norm = central_difference_grad_norm(critic, x_hat)
    torch.testing.assert_close(gp.detach(), (norm - 1.0) ** 2, rtol=0, atol=1e-8)
    assert (norm - 1.0).abs().min() > 1e-3  # the penalty is not trivially zero
    gp.sum().backward()  # created with create_graph: it trains the critic's weights
    weights = [p for p in critic.parameters() if p.dim() == 2]
    assert len(weights) == 3 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_wgan_gp_critic_loss_adds_ten_times_the_penalty():
    data = Dataset("t", torch.randn(64, 2), torch.randn(8, 2), torch.randn(8, 2), Box(-4.0, 4.0, (2,)), "c")
    params = WGANGPParams(hidden=8, depth=1)
    model = METHODS.get("wgan_gp").build(data, params)
    assert params.gp_weight == 10.0 and params.n_critic == 5
    x = data.train[:16]
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    opt = torch.optim.SGD(model.discriminator.parameters(), lr=0.0)
    diag = critic_update(model, x, opt, g, params)
    g.set_state(state)  # replay the same draws
    with torch.no_grad():
        x_fake = model.generate(model.prior(16, g))
    x_hat = interpolate(x, x_fake, g)
    d = model.discriminator
    expected = (d(x_fake) - d(x) + 10.0 * gradient_penalty(d, x_hat)).mean()
    assert diag["d_loss"] == pytest.approx(float(expected.detach()), rel=1e-6)
    assert diag["gp"] == pytest.approx(float(gradient_penalty(d, x_hat).detach().mean()), rel=1e-6)


def test_losses_match_closed_forms():
    r, f = torch.tensor([0.3, -2.0, 4.0]), torch.tensor([-0.5, 1.5, 0.2])
    bce = (F.binary_cross_entropy_with_logits(r, torch.ones(3), reduction="none")
           + F.binary_cross_entropy_with_logits(f, torch.zeros(3), reduction="none"))
    torch.testing.assert_close(D_LOSSES["non_saturating"](r, f), bce)
    torch.testing.assert_close(G_LOSSES["non_saturating"](f), -torch.log(torch.sigmoid(f)))
    torch.testing.assert_close(D_LOSSES["hinge"](r, f), torch.tensor([0.7 + 0.5, 3.0 + 2.5, 0.0 + 1.2]))
    torch.testing.assert_close(D_LOSSES["wasserstein"](r, f), f - r)
    torch.testing.assert_close(G_LOSSES["hinge"](f), -f)


@pytest.mark.parametrize("method,n_critic", [("dcgan", 1), ("wgan_gp", 5), ("sngan", 1)])
def test_train_step_does_n_critic_d_updates_on_fresh_batches_then_one_g_update(method, n_critic):
    data = Dataset("t", torch.randn(64, 2), torch.randn(8, 2), torch.randn(8, 2), Box(-4.0, 4.0, (2,)), "c")
    spec = METHODS.get(method)
    params = spec.params(hidden=8, depth=1)
    model = spec.build(data, params)
    opts = gan_optimizers(model, 1e-3, (0.9, 0.999))
    assert opts["g"].defaults["betas"] == (params.beta1, params.beta2)  # the method's betas override the run's
    g_before = [p.detach().clone() for p in model.net.parameters()]
    batches = []

    def next_batch():
        batches.append(data.train[len(batches) * 8:(len(batches) + 1) * 8])
        return batches[-1]

    diag = gan_train_step(model, next_batch, opts, torch.Generator().manual_seed(0), params)
    assert len(batches) == n_critic
    assert {"loss", "d_loss", "g_loss", "d_real", "d_fake"} <= set(diag) and diag["loss"] == diag["d_loss"]
    assert ("gp" in diag) == (method == "wgan_gp")
    assert all(math.isfinite(v) for v in diag.values())
    assert any((p - q).abs().max() > 0 for p, q in zip(model.net.parameters(), g_before, strict=True))


def test_conv_generator_and_discriminator_shapes():
    assert [spatial_plan(s[1]) for s in IMAGE_SHAPES] == [(4, 1), (7, 2), (4, 3)]
    for shape in IMAGE_SHAPES:
        gen = ConvGenerator(16, shape, channels=8)
        x = gen(torch.randn(4, 16))
        assert x.shape == (4, *shape) and x.min() >= -1 and x.max() <= 1
        for norm in ("batch", "none", "spectral"):
            assert ConvDiscriminator(shape, channels=8, norm=norm)(x).shape == (4,)
    box01 = ConvGenerator(16, (1, 8, 8), channels=8, low=0.0, high=1.0)(torch.randn(4, 16))
    assert box01.min() >= 0 and box01.max() <= 1


@pytest.mark.parametrize("method,norm_layers", [("dcgan", nn.BatchNorm2d), ("wgan_gp", None), ("sngan", None)])
def test_discriminator_normalization_per_method(method, norm_layers):
    model = METHODS.get(method).build(image_dataset((3, 32, 32)), METHODS.get(method).params(d_channels=8))
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    assert has_bn == (norm_layers is not None)  # no batch norm in a WGAN-GP critic
    has_sn = any(hasattr(m, "parametrizations") for m in model.discriminator.modules())
    assert has_sn == (method == "sngan")


def test_sngan_discriminator_weights_have_spectral_norm_one():
    torch.manual_seed(0)
    model = METHODS.get("sngan").build(image_dataset((3, 32, 32)), METHODS.get("sngan").params(d_channels=8))
    d = model.discriminator.train()
    x = torch.randn(2, 3, 32, 32)
    for _ in range(30):  # one power iteration per training-mode forward
        d(x)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        w = conv.weight.detach()  # the normalized weight W / sigma(W)
        raw = conv.parametrizations.weight.original.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=1e-3)
        assert torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2) != pytest.approx(1.0, abs=0.05)


def test_gan_sample_is_one_generator_call_with_flops():
    data = Dataset("t", torch.randn(64, 2), torch.randn(8, 2), torch.randn(8, 2), Box(-1.0, 1.0, (2,)), "c")
    model = METHODS.get("dcgan").build(data, METHODS.get("dcgan").params(hidden=8, depth=1)).eval()
    s = sample_with_cost(model, 32, sampler="generator", budget={}, generator=torch.Generator().manual_seed(0))
    assert isinstance(model, GAN) and model.capabilities == {"generate"}
    assert s.cost.nfe == 1 and s.cost.grad_evals == 0 and s.cost.flops_per_sample > 0
    again = model.sample(32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.x, s.x)  # all noise from the generator
    wide = model.sample(4000, generator=torch.Generator().manual_seed(0)).x * 50
    assert not data.support.contains(wide).all()  # sanity: scaling leaves the box
    clamped = model.sample(4000, generator=torch.Generator().manual_seed(0), support_mode="clamp").x
    assert data.support.contains(clamped).all()


@pytest.mark.slow
@pytest.mark.parametrize("method,steps", [("dcgan", 300), ("wgan_gp", 300), ("sngan", 300)])
def test_trained_gan_closes_half_the_mmd_gap(tmp_path, method, steps):
    params = {"dataset": "eight_gaussians", "method": method, "suite": "gan", "threads": 1, "train_steps": steps,
              "batch_size": 128, "lr": 1e-3, "ema_decay": 0.99, "log_every": 50, "checkpoint_every": 1000,
              "hidden": 64, "depth": 2}
    untrained, trained, _ = mmd_before_and_after(tmp_path, params)
    floor = trained["floor"]
    assert trained["mmd2"] - floor < 0.5 * (untrained["mmd2"] - floor)


@pytest.mark.parametrize("dataset,method", [("eight_gaussians", "sngan"), ("digits", "dcgan")])
def test_resumed_gan_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, dataset, method):
    """Both optimizers, spectral-norm power-iteration vectors and batch-norm statistics are checkpointed."""
    params = {"dataset": dataset, "method": method, "results_dir": str(tmp_path), "train_steps": 8,
              "checkpoint_every": 4, "log_every": 2, "batch_size": 16, "n_eval_samples": 32, "threads": 1,
              "hidden": 16, "depth": 1, "g_channels": 8, "d_channels": 8}
    full = run.start({**params, "suite": "full"})
    run.fit(full, progress=False)
    first = run.start({**params, "suite": "resumed"})
    assert run.fit(first, stop_after=6, progress=False).status == "interrupted"
    again = run.start({**params, "suite": "resumed"})
    assert run.fit(again, progress=False).status == "ok"
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    x_full = full.model.sample(32, generator=torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(again.model.sample(32, generator=torch.Generator().manual_seed(0)).x, x_full)
