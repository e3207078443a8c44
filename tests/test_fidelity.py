"""Fidelity metrics through torch-fidelity: FID against an independent Frechet distance, the cached
reference keyed by weights, the Inception path offline, the copy test and the comparability rule."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch import nn

from ebmbench.data.base import Dataset
from ebmbench.data.convert import for_extractor, to_uint8
from ebmbench.data.images import digits_dataset
from ebmbench.metrics import domain, fidelity
from ebmbench.metrics.fidelity import (
    INCEPTION_FILE,
    MissingWeightsError,
    TooFewSamples,
    comparability,
    copy_test,
    fidelity_metrics,
)
from ebmbench.metrics.registry import NotApplicable
from ebmbench.protocol import Box
from ebmbench.results import atomic_torch_save

N = 300  # samples per evaluation: above the default guard (2 x 64 features), small enough for a CPU test


@pytest.fixture(scope="module")
def digits():
    return digits_dataset()


@pytest.fixture(scope="module")
def cache(tmp_path_factory, digits):
    """A module cache (EBMBENCH_CACHE) with the digits classifier trained once, for 3 epochs."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBMBENCH_CACHE", str(root))
        mp.setitem(domain.DEFAULT_PARAMS, "digits", domain.DomainParams(epochs=3))
        domain.load_or_train(digits)
        yield root


def noisy_samples(ds: Dataset, n: int = N, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return ds.train[torch.randint(0, len(ds.train), (n,), generator=g)] + scale * torch.randn(n, 1, 8, 8, generator=g)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to two feature sets (Dowson & Landau 1982), scipy's sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def features(ds: Dataset, x: torch.Tensor, checkpoint: str) -> np.ndarray:
    """Penultimate features computed directly by the cached classifier, outside torch-fidelity."""
    ckpt = torch.load(checkpoint, weights_only=True)
    net = domain.DomainClassifier(**ckpt["arch"])
    net.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        return net.eval()(to_uint8(x, ds))[0].double().numpy()


def test_fid_equals_independent_frechet_distance_and_floor_is_train_vs_test(digits, cache):
    x = noisy_samples(digits)
    r = fidelity_metrics(x, digits, metrics=("fid",))
    path = r["meta"]["extractor_info"]["path"]
    ref = features(digits, digits.test, path)
    assert r["fid"] == pytest.approx(frechet(features(digits, x, path), ref), rel=1e-4)
    pick = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(fidelity.FLOOR_SEED))[:N]
    assert r["floor"]["fid"] == pytest.approx(frechet(features(digits, digits.train[pick], path), ref), rel=1e-4)
    assert r["fid"] > 2 * r["floor"]["fid"] > 0  # noisy samples are worse than real data at the same N
    meta = r["meta"]
    assert meta["extractor"] == f"ebmbench-domain-digits-{meta['weights_hash']}" and meta["reference"] == "test"
    assert (meta["n"], meta["n_floor"], meta["n_reference"]) == (N, N, 360)
    assert meta["extractor_info"]["test_accuracy"] > 0.9 and meta["torch_fidelity"] == "0.4.0"


def test_fid_of_a_set_with_itself_is_zero_and_order_free(digits, cache):
    same = fidelity_metrics(digits.test, digits, metrics=("fid",))["fid"]
    assert abs(same) < 1e-6
    x = noisy_samples(digits)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    a = fidelity_metrics(x, digits, metrics=("fid",))["fid"]
    assert fidelity_metrics(x[perm], digits, metrics=("fid",))["fid"] == pytest.approx(a, rel=1e-9)


def test_cached_reference_is_recomputed_when_the_weights_change(digits, cache, tmp_path):
    shutil.copytree(cache / "domain", tmp_path / "domain")  # a private copy of the trained checkpoint
    before = fidelity_metrics(digits.test, digits, metrics=("fid",), cache_dir=tmp_path)
    checkpoint = before["meta"]["extractor_info"]["path"]
    ckpt = torch.load(checkpoint, weights_only=True)
    g = torch.Generator().manual_seed(7)
    ckpt["state_dict"] = {k: v + 0.3 * v.std() * torch.randn(v.shape, generator=g)
                          for k, v in ckpt["state_dict"].items()}  # "retrained": other weights, same file
    atomic_torch_save(checkpoint, ckpt)
    after = fidelity_metrics(digits.test, digits, metrics=("fid",), cache_dir=tmp_path)
    assert after["meta"]["weights_hash"] != before["meta"]["weights_hash"]
    assert abs(after["fid"]) < 1e-6  # a stale reference (old weights) against new features would be far from 0
    cached = {p.name for p in (tmp_path / "fidelity").iterdir() if "-test-" in p.name}
    assert any(before["meta"]["weights_hash"] in n for n in cached) and any(
        after["meta"]["weights_hash"] in n for n in cached)
    x = noisy_samples(digits)
    fid = fidelity_metrics(x, digits, metrics=("fid",), cache_dir=tmp_path)["fid"]
    assert fid == pytest.approx(frechet(features(digits, x, checkpoint), features(digits, digits.test, checkpoint)),
                                rel=1e-4)


def test_all_metrics_with_kid_subset_clipped_to_the_smaller_set(digits, cache):
    r = fidelity_metrics(noisy_samples(digits, n=150), digits, kid_subset_size=10_000)
    meta = r["meta"]
    assert meta["kid_subset_size"] == 150 and meta["kid_subset_size_requested"] == 10_000
    assert 1.0 <= r["is"] < r["floor"]["is"] <= 10.0  # IS is at most the number of classes
    assert r["kid"] > r["floor"]["kid"] and r["kid_std"] > 0
    assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
    assert meta["comparable"]["fid"]["comparable"] is False and "digits" in meta["comparable"]["fid"]["reason"]
    domain_metrics = [m for m in fidelity.METRICS if not m.name.endswith("_inception")]
    rows = {m.name: m.fn(noisy_samples(digits, n=150), digits) for m in domain_metrics}  # the registry wiring
    value, stderr, row_meta = rows["fid_domain"]
    assert value == r["fid"] and row_meta["floor"] == r["floor"]["fid"] and row_meta["comparable"] is False
    assert row_meta["kid"] == r["kid"] and row_meta["reference"] == "test" and stderr is None
    assert rows["recall_domain"][0] == r["recall"] and rows["is_domain"][2]["floor"] == r["floor"]["is"]
    assert rows["nn_copy_fraction"][0] == r["memorization"]["copy_fraction"]


def test_inception_rows_without_weights_are_not_applicable_and_say_where_the_file_goes(digits, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub: no weights
    monkeypatch.delenv(fidelity.INCEPTION_WEIGHTS_ENV, raising=False)
    metric = next(m for m in fidelity.METRICS if m.name == "fid_inception")
    with pytest.raises(NotApplicable, match=r"weights-inception-2015-12-05-6726825d\.pth not found in .*hub"):
        metric.fn(noisy_samples(digits, n=150), digits)


def test_copy_test_flags_a_model_that_returns_training_images(digits, cache):
    g = torch.Generator().manual_seed(2)
    copies = digits.train[torch.randint(0, len(digits.train), (N,), generator=g)]
    mem = fidelity_metrics(copies, digits, metrics=("fid",))["memorization"]
    assert mem["flagged"] and mem["copy_fraction"] == 1.0 and mem["exact_copy_fraction"] == 1.0
    assert mem["p_value"] < 1e-30 and mem["reference_fraction"] < 0.2
    u8 = {s: to_uint8(digits.split(s), digits) for s in ("train", "val", "test")}
    fresh = copy_test(u8["test"], u8["train"], u8["val"], u8["test"], torch.device("cpu"))
    assert not fresh["flagged"] and fresh["copy_fraction"] == fresh["reference_fraction"]


def test_guards_and_not_applicable(digits, cache):
    with pytest.raises(TooFewSamples, match="min_samples=128"):
        fidelity_metrics(digits.test[:100], digits, metrics=("fid",))
    unlabelled = Dataset("patches", digits.train, digits.val, digits.test, digits.support, "bytes", 17)
    with pytest.raises(NotApplicable, match="no labels"):
        fidelity_metrics(digits.test, unlabelled)
    points = Dataset("toy", torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2), Box(-1, 1, (2,)), "2d")
    with pytest.raises(NotApplicable, match="need images"):
        fidelity.sample_metric("fid")(torch.zeros(4, 2), points)


def random_inception(path) -> tf_inception.FeatureExtractorInceptionV3:
    """A randomly initialized Inception (He-normal convs, so features neither vanish nor explode), saved at path."""

    class Unloaded(tf_inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            return None

    torch.save({}, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Unloaded("random", ["2048"], feature_extractor_weights_path=str(path))
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return net


def no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


def unbiased_poly_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with KID's kernel (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    k = lambda u, v: (u @ v.T / a.shape[1] + 1.0) ** 3  # noqa: E731
    m = len(a)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_inception_path_runs_offline_with_a_weights_file(digits, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", no_download)
    net = random_inception(tmp_path / "random-inception.pth")
    tiny = Dataset("digits_tiny", digits.train[:3], digits.val[:3], digits.test[:3], digits.support,
                   digits.convention, digits.levels, labels={s: digits.labels[s][:3] for s in ("train", "val", "test")})
    x = noisy_samples(digits, n=3)
    r = fidelity_metrics(x, tiny, extractor="inception", weights_path=tmp_path / "random-inception.pth",
                         metrics=("kid",), min_samples=2, kid_subset_size=3, device="cpu")
    assert r["meta"]["extractor"] == "inception-v3-compat" and r["meta"]["kid_subset_size"] == 3
    with torch.no_grad():
        fx, fr = (net.eval()(for_extractor(to_uint8(v, tiny), rgb=True))[0].double().numpy() for v in (x, tiny.test))
    # with the subset size equal to both set sizes every KID subset is the full set: KID is one exact MMD^2
    assert r["kid"] == pytest.approx(unbiased_poly_mmd2(fx, fr), rel=1e-3, abs=1e-7)
    assert r["kid_std"] == pytest.approx(0.0, abs=1e-6) and "fid" not in r


def test_inception_without_weights_gives_the_clear_error_without_downloading(digits, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError) as err:
        fidelity_metrics(digits.test, digits, extractor="inception")
    assert INCEPTION_FILE in str(err.value) and str(tmp_path / "torch" / "hub" / "checkpoints") in str(err.value)
    with pytest.raises(MissingWeightsError, match="nowhere.pth does not exist"):
        fidelity_metrics(digits.test, digits, extractor="inception", weights_path=tmp_path / "nowhere.pth")


def test_comparable_follows_the_published_protocol():
    ok = comparability("cifar10", "fid", "inception", "test", 50_000)
    assert ok["comparable"] and any("5.24" in m for m in ok["matches"])
    few = comparability("cifar10", "fid", "inception", "test", 10_000)
    assert not few["comparable"] and "50000 samples vs ours 10000" in few["reason"]
    assert "extractor" in comparability("cifar10", "fid", "domain", "test", 50_000)["reason"]
    assert comparability("cifar10", "is", "inception", "test", 50_000)["comparable"]
    assert not comparability("cifar10", "kid", "inception", "test", 50_000)["comparable"]
    assert not comparability("digits", "fid", "domain", "test", 1000)["comparable"]


def test_inception_url_is_torch_fidelitys_own():
    """fidelity.py spells the weights URL out (so torch-fidelity loads lazily); it must stay torch-fidelity's."""
    assert fidelity.URL_INCEPTION_V3 == tf_inception.URL_INCEPTION_V3
