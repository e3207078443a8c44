"""The published CIFAR-10 recipes: parameter counts vs the papers, two training steps on fake data, suites, docs."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

from ebmbench import config, recipes
from ebmbench.builtins import METHODS
from ebmbench.data.base import Dataset
from ebmbench.methods.base import training_step
from ebmbench.methods.diffusion import DDPM
from ebmbench.methods.ebm import EBM
from ebmbench.methods.ebm_objectives import EnergyModel
from ebmbench.methods.gan import GAN, VARIANTS
from ebmbench.methods.score import NCSN
from ebmbench.nets import cifar
from ebmbench.protocol import Box, GenerativeModel
from ebmbench.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
SHAPE = recipes.CIFAR10_SHAPE
KEYS = list(recipes.RECIPES)
# Test-only cuts, so that two steps fit the time budget: chains of 2 Langevin steps instead of 60/100, and a
# replay buffer of 8 entries instead of 50,000 (600 MB of float chains). Every other value is the recipe's.
FAST = {"langevin_steps": 2, "buffer_size": 8}


# ---------------------------------------------------------------- parameter counts from the layer tables


def conv(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def igebm_count(w: int = 128) -> int:
    """ResNet32Large: bias-free SN convs, input shift b (c_in) and output gain g (c_out) on each block's convs."""
    def block(c_in: int, c_out: int) -> int:
        skip = conv(3, c_in, c_out, bias=False) if c_in != c_out else 0
        return conv(3, c_in, c_out, False) + c_in + conv(3, c_out, c_out, False) + 2 * c_out + skip
    widths = [(w, w)] * 3 + [(w, 2 * w)] + [(2 * w, 2 * w)] * 2 + [(2 * w, 4 * w)] + [(4 * w, 4 * w)] * 2
    return conv(3, 3, w, bias=False) + sum(block(a, b) for a, b in widths) + 4 * w + 1


def shortrun_count(n_f: int = 64) -> int:
    return (conv(3, 3, n_f) + conv(4, n_f, 2 * n_f) + conv(4, 2 * n_f, 4 * n_f) + conv(4, 4 * n_f, 8 * n_f)
            + conv(4, 8 * n_f, 1))


def refinenet_count(ngf: int = 128, levels: int = 10, c: int = 3) -> int:
    """CondRefineNetDilated: CondInstanceNorm++ has gamma, alpha, beta per channel and noise level."""
    def norm(ch: int) -> int:
        return 3 * ch * levels

    def res(c_in: int, c_out: int, down: bool = False, dilated: bool = False) -> int:
        mid = c_in if down else c_out
        if down and not dilated:
            skip = conv(1, c_in, c_out)
        else:
            skip = conv(3, c_in, c_out) if (down or c_in != c_out) else 0
        return norm(c_in) + conv(3, c_in, mid) + norm(mid) + conv(3, mid, c_out) + skip

    def rcu(ch: int, blocks: int) -> int:
        return blocks * 2 * (norm(ch) + conv(3, ch, ch, bias=False))

    def refine(ins: list[int], f: int, end: bool = False) -> int:
        fuse = sum(norm(ch) + conv(3, ch, f) for ch in ins) if len(ins) > 1 else 0
        return sum(rcu(ch, 2) for ch in ins) + fuse + 2 * (norm(f) + conv(3, f, f, bias=False)) + rcu(f, 3 if end
                                                                                                       else 1)
    g, g2 = ngf, 2 * ngf
    stages = (2 * res(g, g) + res(g, g2, down=True) + res(g2, g2) + 2 * (res(g2, g2, True, True)
                                                                         + res(g2, g2, dilated=True)))
    refines = refine([g2], g2) + refine([g2, g2], g2) + refine([g2, g2], g) + refine([g, g], g, end=True)
    return conv(3, c, g) + stages + refines + norm(g) + conv(3, g, c)


def generator_count(ch: int, z: int = 128, c: int = 3, s0: int = 4, ups: int = 3) -> int:
    """Linear to s0 x s0 x ch; per up-block two BNs (2 ch each), two 3x3 convs, a 1x1 skip; BN; 3x3 conv out."""
    block = 2 * (2 * ch) + 2 * conv(3, ch, ch) + conv(1, ch, ch)
    return z * s0 * s0 * ch + s0 * s0 * ch + ups * block + 2 * ch + conv(3, ch, c)


def discriminator_count(ch: int, head_bias: bool, c: int = 3) -> int:
    first = conv(3, c, ch) + conv(3, ch, ch) + conv(1, c, ch)
    down = 2 * conv(3, ch, ch) + conv(1, ch, ch)
    return first + down + 2 * (2 * conv(3, ch, ch)) + ch + int(head_bias)


LAYER_TABLE_COUNTS = {  # (recipe, network) -> count from the layer tables of the papers / reference code
    ("igebm", "energy"): igebm_count(),
    ("short_run", "energy"): shortrun_count(),
    ("ncsn", "score"): refinenet_count(),
    ("wgan_gp", "generator"): generator_count(128),
    ("wgan_gp", "discriminator"): discriminator_count(128, head_bias=True),
    ("sngan", "generator"): generator_count(256),
    ("sngan", "discriminator"): discriminator_count(128, head_bias=False),
}


@pytest.mark.parametrize("key", KEYS)
def test_networks_have_the_specified_and_published_parameter_counts(key):
    recipe = recipes.RECIPES[key]
    nets = recipes.networks(recipe)
    assert sorted(nets) == sorted(c.network for c in recipe.counts)
    for count in recipe.counts:
        ours = recipes.parameter_count(nets[count.network])
        assert ours == count.ours, (key, count.network)  # exact: the architecture is fully specified
        if (key, count.network) in LAYER_TABLE_COUNTS:
            assert count.ours == LAYER_TABLE_COUNTS[(key, count.network)], (key, count.network)
        if count.paper is not None:  # the paper's printed (rounded) count
            assert abs(ours - count.paper) <= count.rounding, (key, ours, count.paper)


def test_every_recipe_network_without_a_published_count_has_a_layer_table():
    for recipe in recipes.RECIPES.values():
        for count in recipe.counts:
            assert count.paper is not None or (recipe.key, count.network) in LAYER_TABLE_COUNTS


# ---------------------------------------------------------------- two training steps on fake data


def fake_cifar(n: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *SHAPE, generator=g) * 2 - 1
    return Dataset("fake_cifar10", x, x[:4], x[:4], Box(-1.0, 1.0, SHAPE), "continuous")


def split_params(recipe: recipes.Recipe) -> tuple[dict[str, Any], Any]:
    """(the run's common parameters, the method's params dataclass) of the recipe, with the test cuts."""
    spec = METHODS.get(recipe.method)
    own = {f.name for f in dataclasses.fields(spec.params)}
    values = {k: v.value for k, v in recipe.params.items()}
    common = {k: v for k, v in values.items() if k in config.COMMON}
    method = {k: FAST.get(k, v) for k, v in values.items() if k in own}
    assert set(common) | set(method) == set(values), "every recipe value is a run or a method parameter"
    return common, spec.params(**method)


def paper_model(recipe: recipes.Recipe, dataset: Dataset, params: Any) -> GenerativeModel:
    """The method's model class around the recipe's networks (what the builders make once they read `arch`)."""
    nets, box = recipes.networks(recipe), dataset.support
    if recipe.method == "pcd_ebm":
        return EBM(nets["energy"], box, params)
    if recipe.method == "short_run_ebm":
        return EnergyModel(nets["energy"], box, params)
    if recipe.method == "ncsn":
        return NCSN(nets["score"], box, params)
    if recipe.method == "ddpm":
        return DDPM(nets["eps"], box, params, shape=dataset.shape)
    return GAN(nets["generator"], nets["discriminator"], box, params, VARIANTS[recipe.method][1])


def flat_parameters(module: nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_two_training_steps_on_fake_data(key):
    recipe = recipes.RECIPES[key]
    common, params = split_params(recipe)
    data = fake_cifar()
    model = paper_model(recipe, data, params)
    spec = METHODS.get(recipe.method)
    step, make_optimizers = training_step(spec, common.get("grad_clip", 0.0))
    optimizers = make_optimizers(model, common["lr"], (common.get("adam_beta1", 0.9), common.get("adam_beta2", 0.999)))
    gen = torch.Generator().manual_seed(0)
    before = {name: flat_parameters(m) for name, m in [("net", model.net)] + list(model.named_children())}

    def next_batch() -> Tensor:  # batch 2
        return data.train[torch.randint(len(data.train), (2,), generator=gen)]

    model.train()
    diags = [step(model, next_batch, optimizers, gen, params) for _ in range(2)]
    for diag in diags:
        assert math.isfinite(diag["loss"]), diag
    assert not torch.equal(before["net"], flat_parameters(model.net)), "the counted network was not updated"
    if isinstance(model, GAN):  # both players moved
        assert not torch.equal(before["discriminator"], flat_parameters(model.discriminator))


@pytest.mark.parametrize("key", KEYS)
def test_method_builders_honour_the_recipe_arch(key):
    recipe = recipes.RECIPES[key]
    spec = METHODS.get(recipe.method)
    if "arch" not in {f.name for f in dataclasses.fields(spec.params)}:
        pytest.skip(f"{spec.params.__name__} has no `arch` field yet (the lead adds it; see the recipes report)")
    _, params = split_params(recipe)
    model = spec.build(fake_cifar(), dataclasses.replace(params, arch=recipe.arch))
    for count in recipe.counts:  # the discriminator is the GAN's second network; every other role is `net`
        net = model.discriminator if count.network == "discriminator" else model.net.net
        assert recipes.parameter_count(net) == count.ours, (key, count.network)


# ---------------------------------------------------------------- the score network's noise conditioning


def test_refinenet_uses_the_papers_per_level_parameters_on_the_grid():
    levels = cifar.NoiseLevels(sigma_max=2.0, sigma_min=0.02, n_sigmas=10)
    sigmas = torch.logspace(math.log10(2.0), math.log10(0.02), 10)
    u = levels(100.0 * sigmas.log())
    assert torch.allclose(u, torch.arange(10.0), atol=1e-4)  # sigma_i -> level i
    table = torch.randn(10, 6)
    assert torch.allclose(cifar.interpolate_rows(table, u), table, atol=1e-3)
    mid = levels(100.0 * (sigmas[3] * sigmas[4]).sqrt().log().reshape(1))  # geometric midpoint of levels 3, 4
    assert torch.allclose(cifar.interpolate_rows(table, mid), (table[3] + table[4]) / 2, atol=1e-3)


def test_cond_instance_norm_plus_matches_its_formula():
    norm = cifar.CondInstanceNormPlus(4, n_levels=3)
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    u = torch.tensor([0.0, 2.0])
    gamma, alpha, beta = norm.embed.detach()[[0, 2]].chunk(3, dim=1)
    mu = x.mean(dim=(2, 3))
    sd = x.var(dim=(2, 3), unbiased=False, keepdim=True).add(1e-5).sqrt()
    mu_tilde = (mu - mu.mean(1, keepdim=True)) / (mu.var(1, keepdim=True) + 1e-5).sqrt()  # unbiased var, as in NCSN
    expected = gamma[..., None, None] * ((x - mu[..., None, None]) / sd + (alpha * mu_tilde)[..., None, None]) \
        + beta[..., None, None]
    assert torch.allclose(norm(x, u), expected, atol=1e-4)


# ---------------------------------------------------------------- suites and docs


def suite_file(name: str) -> Path:
    """suites/<name>.yaml, or suites/_pending_<name>.yaml until the methods have their `arch` field."""
    path = ROOT / "suites" / f"{name}.yaml"
    return path if path.exists() else ROOT / "suites" / f"_pending_{name}.yaml"


def suite_doc(name: str) -> dict:
    return yaml.safe_load(suite_file(name).read_text())


def network_kind(method: str) -> str:
    """The kind of network a method's `arch` names (ebmbench.nets.cifar.ALL_ARCHS)."""
    family = METHODS.get(method).family
    return {"diffusion": "eps", "score": "score", "gan": "gan", "ebm": "energy"}[family]


def without_arch(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for entry in doc["runs"]:
        for block in (entry.get("method_params") or {}).values():
            block.pop("arch", None)
    return doc


@pytest.mark.parametrize("name, budgeted", [("cifar10-paper", False), ("cifar10", True)])
def test_cifar10_suites_carry_exactly_the_recipes(name, budgeted):
    """The papers' suite runs every recipe as published; the one-GPU suite runs the budget variant of the recipes
    that have one, labelled <key>_budget, and the others as published. Both with the cheap curve protocol."""
    doc = suite_doc(name)
    assert {k: doc["defaults"][k] for k in recipes.CURVE_PROTOCOL} == recipes.CURVE_PROTOCOL
    assert [e["label"] for e in doc["runs"]] == [
        f"{k}_budget" if budgeted and k in recipes.BUDGETS else k for k in recipes.RECIPES]
    for entry, recipe in zip(doc["runs"], recipes.RECIPES.values(), strict=True):
        budget = budgeted and recipe.key in recipes.BUDGETS
        assert entry["datasets"] == ["cifar10"] and entry["methods"] == [recipe.method]
        assert entry["method_params"] == {recipe.method: recipes.suite_block(recipe, budget)}, recipe.key
        if budget:  # every override changes the recipe's value (or adds a run parameter it left at the default)
            assert all(recipes.suite_params(recipe).get(k) != v.value
                       for k, v in recipes.BUDGETS[recipe.key].overrides.items()), recipe.key


@pytest.mark.parametrize("name", ["cifar10", "cifar10-paper", "mnist"])
def test_gpu_suites_validate_apart_from_arch(tmp_path, name):
    doc = suite_doc(name)
    for entry in doc["runs"]:
        for method, block in (entry.get("method_params") or {}).items():
            if "arch" in block:  # a known network, of the kind the method takes
                assert cifar.ALL_ARCHS[block["arch"]] == network_kind(method), (method, block["arch"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(without_arch(doc)))
    _, runs = load_suite(str(path), str(tmp_path / "results"))
    assert {r.cfg.dataset for r in runs} == {doc["runs"][0]["datasets"][0]}
    assert len(runs) == sum(len(e["methods"]) * len(e.get("seeds", [0])) for e in doc["runs"])


def test_docs_table_is_generated_from_the_recipes():
    assert (ROOT / "docs" / "recipes.md").read_text() == recipes.markdown(), \
        "regenerate with: python -m ebmbench.recipes > docs/recipes.md"
