"""`ebmbench evaluate`: samples from a file, scored with the suite's metric code; exact samples rank above noise on
every 2D density and on digits, and a malformed file is one line naming it and what to fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ebmbench import cli
from ebmbench.builtins import load_dataset
from ebmbench.data.convert import to_uint8
from ebmbench.data.toy2d import DENSITIES
from ebmbench.evaluate import SampleFileError, evaluate_file, read_samples, to_model_space

N = 1000  # the protocol's N (RunConfig.n_eval_samples): the floors cached by the suites' runs are reused


def value(record: dict, metric: str) -> float:
    (row,) = [r for r in record["rows"] if r["metric"] == metric]
    assert row["metric_status"] == "ok", row["reason"]
    return row["value"]


@pytest.mark.parametrize("name", list(DENSITIES))
def test_exact_samples_rank_above_uniform_noise_on_every_2d_density(name: str, tmp_path) -> None:
    ds = load_dataset(name)
    exact = ds.density.sample(N, torch.Generator().manual_seed(11)).float()
    noise = ds.support.uniform(N, torch.Generator().manual_seed(11))
    np.savez(tmp_path / "exact.npz", samples=exact.numpy(), nfe=7)
    torch.save({"samples": noise}, tmp_path / "noise.pt")
    kw = {"results_dir": str(tmp_path), "metrics": ["reverse_kl"]}
    a = evaluate_file(tmp_path / "exact.npz", name, "exact", **kw)
    b = evaluate_file(tmp_path / "noise.pt", name, "noise", **kw)
    assert value(a, "reverse_kl") < value(b, "reverse_kl")
    row = next(r for r in a["rows"] if r["metric"] == "reverse_kl")
    assert (row["family"], row["sampler"], row["nfe"], row["n_samples"]) == ("external", "external", None, N)
    assert row["meta"]["cost"] == "not counted" and row["meta"]["stated_nfe"] == 7
    # the floor is the same estimator on exact samples at equal N: exact samples sit within its spread
    assert abs(row["value"] - row["meta"]["floor"]) < 4 * row["meta"]["floor_sd"] + 0.05
    skipped = next(r for r in a["rows"] if r["metric"] == "mode_tv")
    assert skipped["metric_status"] == "not_applicable" and "--metrics" in skipped["reason"]


def test_digits_from_a_png_folder_rank_above_uniform_noise(tmp_path) -> None:
    """Training digits written as PNGs (bytes, as a user would save them) against uniform noise, by FID on the
    suite's domain extractor, N = 200."""
    ds = load_dataset("digits")
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(to_uint8(ds.train[:200], ds)):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:04d}.png")
    torch.save(ds.support.uniform(200, torch.Generator().manual_seed(3)), tmp_path / "noise.pt")
    kw = {"results_dir": str(tmp_path), "metrics": ["fid_domain"], "n": 200}
    real = evaluate_file(folder, "digits", "real", **kw)
    noise = evaluate_file(tmp_path / "noise.pt", "digits", "noise", **kw)
    assert value(real, "fid_domain") < value(noise, "fid_domain")
    x, _ = read_samples(folder)  # the PNG bytes come back as the same model-space images
    assert torch.equal(to_uint8(to_model_space(x, ds, folder), ds), to_uint8(ds.train[:200], ds))


def test_every_sample_metric_and_a_written_record(tmp_path) -> None:
    ds = load_dataset("eight_gaussians")
    np.save(tmp_path / "x.npy", ds.density.sample(N, torch.Generator().manual_seed(2)).numpy())
    record = evaluate_file(tmp_path / "x.npy", "eight_gaussians", "mine", results_dir=str(tmp_path), nfe=12.0)
    statuses = {r["metric"]: r["metric_status"] for r in record["rows"]}
    assert statuses["reverse_kl"] == statuses["mode_tv"] == statuses["mmd2_multiscale"] == "ok"
    assert statuses["fid_domain"] == "not_applicable"  # images only: recorded with its reason, not dropped
    written = list((tmp_path / "external" / "external").glob("*/result.json"))
    assert len(written) == 1 and (written[0].parent / "samples.pt").is_file()


def problem(tmp_path, capsys, arr, dataset: str = "digits", name: str = "bad.npy", *extra: str) -> str:
    np.save(tmp_path / name, arr)
    code = cli.main(["evaluate", str(tmp_path / name), "--dataset", dataset, "--name", "m",
                     "--results-dir", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and name in err, err
    return err


def test_a_malformed_sample_file_is_one_line_naming_it(tmp_path, capsys) -> None:
    ds = load_dataset("eight_gaussians")
    x = ds.density.sample(N, torch.Generator().manual_seed(2)).numpy()
    x[5, 0] = np.nan
    assert "1 of 1000 samples contain NaN" in problem(tmp_path, capsys, x, "eight_gaussians", "nan.npy")
    mnist_sized = np.zeros((500, 28, 28), dtype=np.float32)
    assert "shape 28×28" in problem(tmp_path, capsys, mnist_sized, "digits", "big.npy", "--n", "500")
    bytes_as_floats = np.full((500, 1, 8, 8), 255.0, dtype=np.float32)
    assert "[-1, 1]" in problem(tmp_path, capsys, bytes_as_floats, "digits", "range.npy", "--n", "500")
    few = np.zeros((100, 1, 8, 8), dtype=np.float32)
    assert "fewer than the N = 500" in problem(tmp_path, capsys, few, "digits", "few.npy", "--n", "500")
    assert "fewer than the 128 samples" in problem(tmp_path, capsys, few, "digits", "tiny.npy", "--n", "50")
    assert "integer dtype" in problem(tmp_path, capsys, np.zeros((500, 2), dtype=np.int64), "eight_gaussians",
                                      "ints.npy")
    (tmp_path / "s.csv").write_text("1,2\n")
    with pytest.raises(SampleFileError, match="unknown format '.csv'"):
        evaluate_file(tmp_path / "s.csv", "eight_gaussians", "m", results_dir=str(tmp_path))
    with pytest.raises(SampleFileError, match="is a registered method"):
        evaluate_file(tmp_path / "nan.npy", "eight_gaussians", "pcd_ebm", results_dir=str(tmp_path))
