"""Devices, precision and resume across devices (issue 23): device auto by default without changing CPU hashes,
checkpoints read onto the CPU whatever device wrote them, CUDA RNG states saved and restored, the precision
policy, and one GPU per Dask worker."""

from __future__ import annotations

import json

import pytest
import torch

from ebmbench import config, devices, run, training
from ebmbench.metrics import domain
from ebmbench.serialization import load_checkpoint

TINY = {"dataset": "eight_gaussians", "method": "ddpm", "train_steps": 12, "checkpoint_every": 6, "log_every": 3,
        "batch_size": 32, "n_eval_samples": 64, "threads": 1, "curve_points": 0, "num_train_timesteps": 50,
        "ddpm_steps": 10, "ddim_steps": 5}


def test_device_defaults_to_auto_and_hashes_as_the_resolved_device():
    assert config.RunConfig.__dataclass_fields__["device"].default == "auto"
    auto = config.resolve({"dataset": "eight_gaussians", "method": "ddpm"})
    named = config.resolve({"dataset": "eight_gaussians", "method": "ddpm", "device": devices.resolve_device("auto")})
    assert auto.device == devices.resolve_device("auto") and auto.config_hash == named.config_hash


def test_new_numerics_parameters_at_their_defaults_keep_old_hashes():
    """precision and deterministic postdate the hash: at fp32 / False they are left out of it, else they count."""
    cfg = config.resolve({"dataset": "eight_gaussians", "method": "ddpm", "device": "cpu"})
    d = cfg.to_dict()
    for k in ("suite", "results_dir", "precision", "deterministic"):
        d.pop(k)
    import hashlib

    assert cfg.config_hash == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    for change in ({"precision": "bf16"}, {"precision": "tf32"}, {"deterministic": True}):
        other = config.resolve({"dataset": "eight_gaussians", "method": "ddpm", "device": "cpu", **change})
        assert other.config_hash != cfg.config_hash, change
    with pytest.raises(config.ConfigError, match="precision"):
        config.resolve({"dataset": "eight_gaussians", "method": "ddpm", "precision": "fp16"})


def _as_if_saved_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save writes every storage with the location tag cuda:0, as a checkpoint written on a GPU is."""
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")


def test_a_gpu_written_checkpoint_loads_onto_the_cpu_with_cpu_rng_states(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    with monkeypatch.context() as m:
        _as_if_saved_on_cuda(m)
        training.save_checkpoint(tmp_path / "c.pt", 4, torch.nn.Linear(2, 2), {}, {}, gen, 1.0, {"k": "v"})
    raw = (tmp_path / "c.pt").read_bytes()
    assert b"cuda:0" in raw  # the file does say cuda, and torch.load without a map would refuse it here
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "c.pt", weights_only=True)
    ckpt = load_checkpoint(tmp_path / "c.pt", expect={"k": "v"})
    for key in ("generator", "torch_rng"):
        assert ckpt[key].device.type == "cpu" and ckpt[key].dtype == torch.uint8, key
    fresh = torch.Generator()
    training.restore_rng(ckpt, fresh, torch.device("cpu"))  # Generator.set_state takes CPU ByteTensors only
    assert torch.equal(torch.rand(5, generator=fresh), torch.rand(5, generator=gen))


def test_cuda_rng_states_are_saved_as_cpu_bytes_and_restored_on_cuda(monkeypatch):
    """On CUDA every GPU's default generator is saved beside the CPU states and set back (fake CUDA calls)."""
    gpu_states = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    restored: list = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpu_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gen = torch.Generator().manual_seed(0)
    states = training.rng_states(gen, torch.device("cuda"))
    assert [s.device.type for s in states["cuda_rng"]] == ["cpu", "cpu"]
    assert "cuda_rng" not in training.rng_states(gen, torch.device("cpu"))  # CPU checkpoints as before
    training.restore_rng(states, torch.Generator(), torch.device("cpu"))
    assert restored == []  # a CPU resume of a GPU checkpoint leaves CUDA alone
    training.restore_rng(states, torch.Generator(), torch.device("cuda"))
    assert len(restored) == 1 and torch.equal(restored[0], gpu_states[0])  # the GPUs that exist now


def test_a_run_resumed_from_a_gpu_tagged_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    full = run.start({**TINY, "suite": "full", "results_dir": str(tmp_path)})
    run.fit(full, progress=False)
    first = run.start({**TINY, "suite": "resumed", "results_dir": str(tmp_path)})
    with monkeypatch.context() as m:
        _as_if_saved_on_cuda(m)
        assert run.fit(first, stop_after=8, progress=False).status == "interrupted"
    again = run.start({**TINY, "suite": "resumed", "results_dir": str(tmp_path)})
    assert run.fit(again, progress=False).resumed_from == 6
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name


def test_fp32_on_the_cpu_changes_nothing_and_bf16_autocasts():
    before = (devices.tf32_flags(), torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    meta = devices.apply_policy("cpu", "fp32", False)
    assert (devices.tf32_flags(), torch.backends.cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled()) == before
    assert meta["precision"] == "fp32" and meta["autocast"] is None
    lin = torch.nn.Linear(4, 4)
    with devices.autocast("cpu", "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
        with devices.fp32_extraction():  # feature extraction ignores the run's autocast
            assert lin(torch.randn(2, 4)).dtype == torch.float32
    with devices.autocast("cpu", "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32


def test_deterministic_sets_torch_and_cublas(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        meta = devices.apply_policy("cpu", "fp32", True)
        assert meta["deterministic_algorithms"] and meta["cublas_workspace_config"] == devices.CUBLAS_WORKSPACE
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_provenance_names_cuda_cudnn_driver_and_tf32_flags():
    from ebmbench.results import provenance

    cuda = provenance("cpu")["versions"]["cuda"]
    assert {"cuda_runtime", "cudnn", "driver", "matmul_allow_tf32", "cudnn_allow_tf32"} <= set(cuda)
    assert cuda["cuda_runtime"] == torch.version.cuda


def test_domain_classifier_cache_key_includes_the_device_type_off_the_cpu(tmp_path):
    from ebmbench.builtins import load_dataset

    digits, params = load_dataset("digits"), domain.DomainParams(epochs=1)
    cpu = domain.checkpoint_path(digits, params, tmp_path, "cpu")
    assert cpu == domain.checkpoint_path(digits, params, tmp_path)  # the CPU's key is unchanged
    assert domain.checkpoint_path(digits, params, tmp_path, "meta") != cpu  # another device type, other weights


def test_workers_get_one_gpu_each_round_robin(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.worker_gpus(5, 2) == ["0", "1", "0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert devices.worker_gpus(4, 3) == ["3", "5", "6", "3"]
    with pytest.raises(ValueError):
        devices.worker_gpus(2, 0)


@pytest.mark.slow
def test_a_multi_gpu_cluster_starts_each_worker_on_its_own_gpu(monkeypatch):
    """The cluster a suite starts on a 2-GPU node: each worker process sees one GPU id (no GPU needed to check)."""
    import os

    from distributed import Client

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with devices.local_cluster(3, gpus=2) as cluster, Client(cluster) as client:
        seen = sorted(client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values())
    assert seen == ["0", "0", "1"]


def test_feature_metrics_take_the_runs_device():
    from ebmbench.metrics.registry import SAMPLE_METRICS

    cfg = config.resolve({"dataset": "digits", "method": "ddpm", "device": "cpu"})
    for name in ("fid_domain", "kid_domain", "is_domain", "precision_domain", "recall_domain", "nn_copy_fraction",
                 "fid_inception"):
        assert SAMPLE_METRICS.get(name).kwargs(cfg) == {"device": "cpu"}, name
