"""Write results/published/sampling_results.csv from the papers' own repositories (raw numbers, read, never typed).

Needs local git mirrors of the three repositories (the ``fetch`` tool puts them under /work/.mirror/<owner>+<name>/repo;
pass another root as the first argument). Every row names its repository, commit and file. Files are parsed with
``ast.literal_eval`` (literals only) and pandas; nothing is executed.

- DDS (Vargas et al. 2023), franciscovargas/denoising_diffusion_samplers: dds_data/results/smc_results.py
  (``exp_smc_data``: 30 SMC log Z estimates per target and label) and dds_data/results/dds_results.py
  (``results_full``: DDS = "ou" and PIS); notebooks/line_plots_results.ipynb maps the labels '3.2', '6.4', '12.8',
  '25.6' to K = 64, 128, 256, 512 (``steps_name`` / ``steps_num``) and gives log Z = 0 for the funnel
  (``exp_truth_data``).
- FAB (Midgley et al. 2023), lollcat/fab-torch: examples/paper_results/gmm/gmm_results.csv (3 seeds per model).
- fab-jax, lollcat/fab-jax: README.md, the table of FAB's mean absolute log Z error (5 seeds, 2000 samples).
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "published" / "sampling_results.csv"
DDS = ("franciscovargas/denoising_diffusion_samplers", "d3607890da2708c5ba0bd072f04bf4acaf48f2cf")
FAB = ("lollcat/fab-torch", "c8ae67bb47a7e765595d154be597bf9a8e75f238")
FAB_JAX = ("lollcat/fab-jax", "c9f991366ca94b2678a7ed620bc9e12655cfef1d")


def show(mirrors: Path, repo: tuple[str, str], path: str) -> str:
    git_dir = mirrors / repo[0].replace("/", "+") / "repo"
    return subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{repo[1]}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def literal(source: str, name: str):
    """The literal assigned to ``name`` at the module's top level."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def notebook_literal(source: str, name: str):
    """The literal assigned to ``name`` in any code cell of a notebook."""
    for cell in json.loads(source)["cells"]:
        if cell["cell_type"] == "code":
            try:
                return literal("".join(cell["source"]), name)
            except (KeyError, SyntaxError, ValueError):
                continue
    raise KeyError(name)


def stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"n": len(v), "mean": v.mean(), "std": v.std(), "median": np.median(v), "q25": np.quantile(v, 0.25),
            "q75": np.quantile(v, 0.75), "values": ";".join(f"{x:.6g}" for x in v)}


def dds_rows(mirrors: Path) -> list[dict]:
    nb = show(mirrors, DDS, "notebooks/line_plots_results.ipynb")
    labels, ks = notebook_literal(nb, "steps_name"), notebook_literal(nb, "steps_num")
    truth = notebook_literal(nb, "exp_truth_data")["funnel"]
    smc = literal(show(mirrors, DDS, "dds_data/results/smc_results.py"), "exp_smc_data")
    full = literal(show(mirrors, DDS, "dds_data/results/dds_results.py"), "results_full")
    base = {"paper": "Denoising Diffusion Samplers", "first_author": "Vargas", "year": 2023, "arxiv_id": "2302.13834",
            "source_repo": DDS[0], "source_commit": DDS[1], "target": "funnel", "metric": "log_z_error",
            "log_z_reference": truth, "particles": "", "std_kind": "population std (numpy np.std, as the notebook)"}
    rows = []
    for label, k in zip(labels, ks, strict=True):
        rows.append({**base, "method": "smc", "kernel": "hmc (settings not in the repository)", "K": k,
                     "source_file": "dds_data/results/smc_results.py; notebooks/line_plots_results.ipynb",
                     **stats([x - truth for x in smc[f"funnel_smc_{label}"]])})
        for key, method in (("ou", "dds"), ("pis", "pis")):
            rows.append({**base, "method": method, "kernel": "", "K": k,
                         "source_file": "dds_data/results/dds_results.py (results_full)",
                         **stats([x - truth for x in full["funnel"][key][label]])})
    return rows


def fab_rows(mirrors: Path) -> list[dict]:
    table = pd.read_csv(io.StringIO(show(mirrors, FAB, "examples/paper_results/gmm/gmm_results.csv")))
    base = {"paper": "Flow Annealed Importance Sampling Bootstrap", "first_author": "Midgley", "year": 2023,
            "arxiv_id": "2208.01893", "source_repo": FAB[0], "source_commit": FAB[1], "target": "gmm40",
            "source_file": "examples/paper_results/gmm/gmm_results.csv", "kernel": "", "K": "",
            "particles": 50000, "log_z_reference": "", "std_kind": "population std over seeds"}
    rows = []
    for model, method in (("target_kld", "realnvp_ml"), ("fab_buffer", "fab_buffer")):
        g = table[table.model_name == model]
        rows.append({**base, "method": method, "metric": "test_mean_log_p", **stats(g.test_set_mean_log_prob.tolist())})
        rows.append({**base, "method": method, "metric": "is_ess", **stats(g.eval_ess_flow.tolist())})
    return rows


def fab_jax_rows(mirrors: Path) -> list[dict]:
    readme = show(mirrors, FAB_JAX, "README.md")
    header = next(line for line in readme.splitlines() if line.startswith("| GMM"))
    lines = readme.splitlines()
    values = lines[lines.index(header) + 2]
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in values.strip("|").split("|")]
    targets = {"GMM  (`gmm_v1`)": "gmm40", "Funnel": "funnel", "Many Well": "many_well"}
    rows = []
    for name, cell in zip(names, cells, strict=True):
        if name not in targets:
            continue
        mean, se = (float(x) for x in re.findall(r"[\d.]+", cell))
        rows.append({"paper": "fab-jax README (FAB, Midgley et al. 2023)", "first_author": "Midgley", "year": 2023,
                     "arxiv_id": "2208.01893", "source_repo": FAB_JAX[0], "source_commit": FAB_JAX[1],
                     "source_file": "README.md", "target": targets[name], "method": "fab", "kernel": "", "K": "",
                     "particles": 2000, "metric": "abs_log_z_error", "log_z_reference": "", "n": 5, "mean": mean,
                     "std": "", "stderr": se, "std_kind": "standard error across 5 seeds",
                     "notes": "gmm_v1 of fab-jax; MAE averaged over 10 batches per seed"})
    return rows


def main(mirrors: Path) -> None:
    rows = dds_rows(mirrors) + fab_rows(mirrors) + fab_jax_rows(mirrors)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(OUT, index=False, float_format="%.6g")
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/.mirror"))
