"""The 2D floors on disk (metrics/floor_cache.py): the same numbers as computing them, recomputed when unreadable."""

from __future__ import annotations

import json

import torch

from ebmbench.metrics import floor_cache, sample_metrics
from ebmbench.metrics.sample_metrics import FLOOR_SEEDS, exact_sample_sets, toy_density


def test_cached_floor_is_computed_once_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMBENCH_CACHE", str(tmp_path))
    calls = []
    key = {"metric": "test_floor", "n": 3}
    first = floor_cache.cached_floor(key, lambda: calls.append(1) or {"floor": 0.1 + 0.2})
    again = floor_cache.cached_floor(key, lambda: calls.append(1) or {"floor": -1.0})
    assert first == again == {"floor": 0.1 + 0.2} and len(calls) == 1  # floats round-trip exactly
    floor_cache.floor_path({**key, "version": floor_cache.FLOOR_CACHE_VERSION}).write_text("{trunc")
    assert floor_cache.cached_floor(key, lambda: {"floor": 2.0}) == {"floor": 2.0}  # unreadable: recomputed


def test_reverse_kl_floor_from_disk_equals_a_fresh_computation(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMBENCH_CACHE", str(tmp_path))
    sample_metrics.reverse_kl_floor.cache_clear()
    stored = sample_metrics.reverse_kl_floor("eight_gaussians", 200)
    density = toy_density("eight_gaussians")
    fresh = [sample_metrics._kl(x, density)["kl"] for x in exact_sample_sets("eight_gaussians", 200)]
    assert stored["floor"] == float(torch.tensor(fresh, dtype=torch.float64).mean())
    assert stored["floor_seeds"] == list(FLOOR_SEEDS)
    files = list((tmp_path / "floors").glob("reverse_kl-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["key"]["n"] == 200
    sample_metrics.reverse_kl_floor.cache_clear()
    assert sample_metrics.reverse_kl_floor("eight_gaussians", 200) == stored  # read back, not recomputed
