"""Generates the committed notebooks (outputs empty): ``python tools/make_notebooks.py [NAME ...]``.

The parameters cell of each training notebook is written from the dataclasses, never copied by hand: the
common parameters from ``ebmbench.config.RunConfig`` and the method's own from its params dataclass (the
fields every method of that notebook shares with the same default), each with its type and the help of its
field (its ``help`` metadata, declared with ``ebmbench.params.param``). Cell ids are ``<notebook>-<index>``, so
regenerating an unchanged notebook rewrites the same bytes; ``tests/test_notebooks.py`` checks that the
committed notebooks are exactly this script's output. Rerun it after a dataclass changes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, get_type_hints

import nbformat as nbf
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ebmbench.builtins import METHODS
from ebmbench.config import RunConfig
from ebmbench.params import meta

OUT = Path(__file__).resolve().parent.parent / "notebooks"


def nb(cells):
    n = new_notebook(cells=cells)
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    n.metadata["language_info"] = {"name": "python"}
    return n


def params(src):
    c = new_code_cell(src.strip())
    c.metadata["tags"] = ["parameters"]
    return c


# ---------------------------------------------------------------- parameters cells from the dataclasses

# RunConfig fields every training notebook lists (names only: their defaults and help come from RunConfig)
COMMON_FIELDS = ("seed", "suite", "results_dir", "device", "precision", "threads", "train_steps", "batch_size", "lr",
                 "n_eval_samples", "samplers")
# the one notebook value that differs from the dataclass default, and why: notebooks run from notebooks/
NOTEBOOK_VALUES = {"results_dir": ("../results", "relative to notebooks/, where the notebook runs")}
INJECT = ("Parameters not listed here (see `ebmbench list`, `ebmbench/config.py` and the method's params "
          "dataclass) can be injected too; an unknown name or a wrong type stops the run with an error naming it.")


def field_help(cls: type) -> dict[str, str]:
    """The help of every field of a dataclass, from its metadata (``ebmbench.params.param``)."""
    return {f.name: meta(f)[0] for f in dataclasses.fields(cls)}


def default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# papermill reads ``name = value  # type: T - help`` and skips (with a warning per run) a line with a second "="
NO_EQUALS = (("!=", "≠"), (">=", "≥"), ("<=", "≤"), (" = ", ": "), ("=", ":"))


def line(name: str, value: Any, kind: type, help_: str) -> str:
    """``name = value  # type: T - help``, strings in double quotes, no "=" in the help."""
    literal = json.dumps(value) if isinstance(value, str) else repr(value)
    for old, new in NO_EQUALS:
        help_ = help_.replace(old, new)
    return f"{name} = {literal}  # type: {kind.__name__}" + (f" - {help_}" if help_ else "")


def methods_of(notebook: str) -> list[str]:
    """The registered methods whose notebook this is."""
    return [m for m in METHODS.names() if METHODS.get(m).notebook == f"{notebook}.ipynb"]


def shared_method_fields(notebook: str, method: str) -> tuple[type, list[dataclasses.Field]]:
    """The params dataclass of ``method``, and its fields that every method of the notebook has with the same
    default (a field one method lacks would be an unknown parameter there, one whose default differs would
    override that method's default). A field that is also a RunConfig field is left out: listing it would set
    both."""
    cls = METHODS.get(method).params
    mine = {f.name: default(f) for f in dataclasses.fields(cls)}
    others = [{f.name: default(f) for f in dataclasses.fields(METHODS.get(m).params)} for m in methods_of(notebook)]
    common = {f.name for f in dataclasses.fields(RunConfig)}
    keep = [f for f in dataclasses.fields(cls)
            if f.name not in common and all(f.name in d and d[f.name] == mine[f.name] for d in others)]
    return cls, keep


def parameters_cell(notebook: str, dataset: str, method: str, extra: tuple[str, ...] = ()):
    """dataset, method, the common RunConfig fields (+ ``extra``) and the method's shared fields."""
    names = methods_of(notebook)
    if method not in names:
        raise ValueError(f"method {method!r} does not use {notebook}.ipynb; these do: {names}")
    types_, helps = get_type_hints(RunConfig), field_help(RunConfig)
    fields_ = {f.name: f for f in dataclasses.fields(RunConfig)}
    lines = [line("dataset", dataset, str, helps["dataset"]),
             line("method", method, str, f"{helps['method']}: {', '.join(names)}")]
    for name in (*COMMON_FIELDS, *extra):
        value, why = NOTEBOOK_VALUES.get(name, (default(fields_[name]), ""))
        lines.append(line(name, value, types_[name], helps[name] + (f" ({why})" if why else "")))
    cls, shared = shared_method_fields(notebook, method)
    m_types, m_helps = get_type_hints(cls), field_help(cls)
    lines.append(f"# the method's own parameters ({cls.__name__}"
                 + (", the ones every method of this notebook shares" if len(names) > 1 else "") + "):")
    lines += [line(f.name, default(f), m_types[f.name], m_helps[f.name]) for f in shared]
    return params("\n".join(lines))


def train_nb(name, title, intro, param_cell, family_cells, curve_keys=None):
    curves = f"plots.training_curves(r.run_dir, {curve_keys!r});" if curve_keys else "plots.training_curves(r.run_dir);"
    return nb([
        new_markdown_cell(f"# {title}\n\n{intro} Evaluated with the same metric code as every other family. {INJECT}"),
        param_cell,
        new_code_cell("from ebmbench import plots, run"),
        new_code_cell("r = run.start(globals())\nr.run_dir"),
        new_code_cell("run.fit(r)"),
        new_code_cell(curves),
        *family_cells,
        new_markdown_cell("## Shared evaluation (identical for every family)"),
        new_code_cell("run.draw_samples(r)\nplots.samples_figure(r);"),
        new_code_cell("run.evaluate(r)\nrun.table(r)"),
        new_markdown_cell("The last cell writes `result.json`, the run's completion marker."),
        new_code_cell('run.finish(r)["run_status"]'),
    ])


ebm = train_nb(
    "train_ebm",
    "Energy-based model: train, look, evaluate",
    "Trains an EBM with the chosen objective (`method`: pcd_ebm, short_run_ebm, cdk_ebm, dsm_ebm, ssm_ebm, "
    "nce_ebm) and evaluates it with the chosen samplers (`samplers`: langevin, mala, hmc, replay_buffer). "
    "Langevin noise is `sqrt(2 * eps * T)`; samples drawn at `T != 1` are labelled tempered. Each objective's own "
    "parameters (e.g. `langevin_steps` K for the MCMC-trained ones, `sigma` for DSM, `noise_ratio` for NCE, "
    "`sample_steps` of the evaluation chains) are injected by name.",
    parameters_cell("train_ebm", "eight_gaussians", "pcd_ebm"),
    [
        new_markdown_cell("## Energy landscape and Langevin chains"),
        new_code_cell("plots.energy_landscape(r);"),
        new_code_cell("plots.chain_snapshots(r);"),
        new_markdown_cell("Long-run chains: a short-run model is defined by its K-step sampler and its samples "
                          "degrade far beyond K; a persistent (PCD) model is meant to hold."),
        new_code_cell("plots.long_run_chains(r);"),
        new_code_cell("plots.energy_histograms(r);"),
    ],
    curve_keys=("loss", "energy_gap", "energy_pos", "energy_neg"),
)

diff = train_nb(
    "train_diffusion",
    "Diffusion model: train, look, evaluate",
    "DDPM (Ho et al. 2020) with diffusers' `DDPMScheduler`, `DDIMScheduler` and `DPMSolverMultistepScheduler`, "
    "settings pinned and recorded (`clip_sample=False`, `leading` timestep spacing, `fixed_small` variance).",
    parameters_cell("train_diffusion", "eight_gaussians", "ddpm"),
    [new_markdown_cell("## Denoising trajectory"), new_code_cell("plots.denoising_trajectory(r);")],
)

score = train_nb(
    "train_score",
    "Score-based model (NCSN): train, look, evaluate",
    "NCSN (Song & Ermon 2019): multi-sigma denoising score matching on a geometric sigma schedule, sampled by "
    "annealed Langevin dynamics; the model exposes `score(x, sigma)` on a continuous noise level.",
    parameters_cell("train_score", "eight_gaussians", "ncsn"),
    [new_markdown_cell("## Annealed Langevin across sigma"), new_code_cell("plots.annealed_trajectory(r);")],
)

gan = train_nb(
    "train_gan",
    "GAN: train, look, evaluate",
    "DCGAN (non-saturating), WGAN-GP and SNGAN (hinge, spectral norm): one generator forward per sample.",
    parameters_cell("train_gan", "eight_gaussians", "dcgan", extra=("ema_decay", "snapshot_every")),
    [new_markdown_cell("## Generator samples over training"), new_code_cell("plots.samples_over_training(r);")],
    curve_keys=("loss", "d_loss", "g_loss"),
)

flow = train_nb(
    "train_flow",
    "Flow (RealNVP): train, look, evaluate",
    "RealNVP (Dinh et al. 2017): exact log-likelihood and exact sampling; the exact-likelihood reference that "
    "the other families' likelihood estimators are read against.",
    parameters_cell("train_flow", "eight_gaussians", "realnvp"),
    [new_markdown_cell("## The learned density"), new_code_cell("plots.energy_landscape(r);")],
)

rbm = train_nb(
    "train_rbm",
    "RBM: train, look, evaluate",
    "A Bernoulli-Bernoulli RBM on binarized digits trained by CD-k (Hinton 2002) or PCD (Tieleman 2008), "
    "sampled by block Gibbs; with at most 20 hidden units its log Z, and so its likelihood, is exact.",
    parameters_cell("train_rbm", "digits_binary", "rbm_cd"),
    [],
    curve_keys=("loss", "free_energy_gap", "recon_error"),
)

rep = nb([  # notebooks/report.ipynb
    new_markdown_cell(
        "# Suite report\n"
        "\n"
        "One leaderboard per dataset, then the figures, then the long tables in a collapsible appendix. "
        "Every number comes from the rows in `results/<suite>/runs/*/result.json`, and every sentence of "
        "the summaries is generated from them. Quality is the dataset's headline metric (one that ranks "
        "a ladder of known degradations in order: see the appendix), as the mean over seeds [95 % "
        "bootstrap interval over seeds]; **bold** is the best of a column and ≈ marks a setting whose "
        "interval overlaps the best one's (a tie). Likelihoods are labelled by kind (exact, upper bound, "
        "lower bound, estimate) and never ranked across kinds. The leaderboards are also in `tables/` "
        "(CSV and LaTeX), the figures in `figures/` (PNG, SVG, PDF)."
    ),
    params(
        "suite_dir = \"../results/quick\"  # type: str - the suite folder to report on"
    ),
    new_code_cell(
        "from IPython.display import HTML, Markdown, display\n"
        "\n"
        "from ebmbench import report\n"
        "from ebmbench.results import load_results\n"
        "\n"
        "frame = load_results(suite_dir)\n"
        "Markdown(report.header(frame, suite_dir))"
    ),
    new_markdown_cell("## Leaderboards"),
    new_code_cell("display(*report.leaderboard_sections(frame, suite_dir))"),
    new_markdown_cell("## Sample quality against sampling cost"),
    new_code_cell(
        "figures = report.figures(suite_dir)\n"
        "curve_table, budget_table = report.learning_curves(suite_dir)\n"
        "report.show(figures, \"quality_vs_cost\", frame)"
    ),
    new_markdown_cell("## Learning curves: quality against counted training compute"),
    new_code_cell("report.show(figures, \"learning_curves\", frame, curve_table)"),
    new_markdown_cell("## Samples of every method"),
    new_code_cell("report.show(figures, \"sample_grids\", frame)"),
    new_markdown_cell("## 2D: every method's density against the truth"),
    new_code_cell("report.show(figures, \"landscapes\", frame)"),
    new_markdown_cell("## Training losses"),
    new_code_cell("report.show(figures, \"training_curves\", frame)"),
    new_markdown_cell(
        "## Appendix: the long tables\n"
        "\n"
        "Each table opens on a click, and inside it each dataset."
    ),
    new_code_cell("HTML(report.appendix(frame, suite_dir, budget_table))"),
])

repro = nb([  # notebooks/reproduce.ipynb
    new_markdown_cell(
        "# Reproduction: published numbers beside measured ones\n"
        "\n"
        "Published headline numbers (`results/published/`, from the project's shared table) beside this "
        "suite's rows for the same model, dataset and metric, with the protocol differences spelled out. "
        "A measured number is `comparable` only when extractor, reference set and sample count match the "
        "published protocol. At CPU scale the suite checks two published qualitative findings itself."
    ),
    params(
        "suite_dir = \"../results/quick\"  # type: str - the suite folder to compare"
    ),
    new_code_cell(
        "import pandas as pd\n"
        "\n"
        "from ebmbench import plots, reproduce\n"
        "from ebmbench.results import load_results\n"
        "\n"
        "pd.set_option(\"display.width\", 200)\n"
        "frame = load_results(suite_dir)\n"
        "table = reproduce.published(reproduce.copy_published())\n"
        "print(f\"{len(table)} published rows\")"
    ),
    new_markdown_cell(
        "## CIFAR-10 FID against sampling cost, as published (unconditional rows)"
    ),
    new_code_cell(
        "cifar = table[(table.dataset == \"CIFAR-10 32x32\") & (table.metric == \"FID\")\n"
        "              & (table.conditional == \"no\")]\n"
        "cifar[[\"model\", \"family\", \"value\", \"nfe_or_mcmc_steps\", \"first_author\", \"year\", "
        "\"paper_location\", \"result_kind\"]]"
    ),
    new_markdown_cell("## Measured beside published (same model, dataset and metric)"),
    new_code_cell(
        "matched = reproduce.side_by_side(frame, table)\n"
        "matched if len(matched) else print(\"this suite has no run that matches a published row \"\n"
        "                                  \"(they are CIFAR-10 runs: see suites/cifar10.yaml)\")"
    ),
    new_markdown_cell(
        "## Finding 1: DDIM quality falls as its steps shrink (Song et al. 2021, Table 1)"
    ),
    new_code_cell(
        "steps = reproduce.ddim_quality_by_steps(frame)\n"
        "plots.quality_by_steps(steps)\n"
        "reproduce.finding_holds(steps) if len(steps) else print(\"no DDPM rows at several step counts \"\n"
        "                                                       \"(set step_sweep, as cpu-full does)\")"
    ),
    new_markdown_cell(
        "## Finding 2: short-run EBM samples degrade under long-run chains (Nijkamp et al. 2019)"
    ),
    new_code_cell(
        "long = reproduce.long_run_degradation(frame)\n"
        "long if len(long) else print(\"no EBM rows with \"\n"
        "                                                 \"long_run_factor set (cpu-full sets it)\")"
    ),    new_markdown_cell(
        "## Findings of the tuning study (`suites/study-2d.yaml`, study.html)\n"
        "\n"
        "Three findings, evaluated from the study's rows (`not enough rows` when this suite is no study): "
        "fresh short-run chains from a short-run EBM sample well while long-run chains from the same energy "
        "degrade (Nijkamp et al. 2019); PCD with a replay buffer diverges less often than short-run training at "
        "equal step size; with the same number of trials, the best configurations of the methods lie closer "
        "together than their default settings (Lucic et al. 2018)."
    ),
    new_code_cell("reproduce.study_findings(suite_dir, frame)"),
    new_markdown_cell(
        "## Composition with corrected sampling (Du et al. 2023; `suites/compose.yaml`, compose.html)\n"
        "\n"
        "Metropolis-corrected sampling of composed energy-parameterized diffusion models against plain reverse "
        "diffusion on summed scores, per exact product target: the reverse-KL difference paired by seed with its "
        "95 % interval, the verdict and the cost multiple (empty when this suite has no compositions)."
    ),
    new_code_cell(
        "from ebmbench.compose import load_compositions\n"
        "\n"
        "compositions = load_compositions(suite_dir)\n"
        "reproduce.composition_finding(compositions) if len(compositions) else print(\"no compositions in this suite\")"
    ),
    new_markdown_cell(
        "## Samplers and log Z on analytic targets (`suites/samplers.yaml`)\n"
        "\n"
        "Published rows (`results/published/sampling_results.csv`, read from the papers' repositories: file and "
        "commit in `source`) beside this suite's rows: DDS's SMC on the funnel (30 seeds per K), FAB's maximum-"
        "likelihood flow on GMM-40 (3 seeds), FAB's own numbers. Verdict: `reproduced` when the interquartile "
        "ranges over seeds overlap (the ranges for 5 seeds or fewer), `differs` with the gap, `not comparable` "
        "with the reason. Cost: gradient evaluations per particle, measured; the published SMC's count assumes "
        "AFT's settings (DDS does not state its own)."
    ),
    new_code_cell(
        "from ebmbench import reproduce_sampling\n"
        "from ebmbench.plots import sampling as sampling_plots\n"
        "\n"
        "pd.set_option(\"display.max_colwidth\", 120)\n"
        "sampling_table = reproduce_sampling.published()\n"
        "reproduce_sampling.side_by_side(suite_dir, sampling_table)"
    ),
    new_markdown_cell(
        "Every measured AIS/SMC cell: the log Z error over the replicates (mean, median, IQR), its cost, and "
        "how many replicates failed (a non-finite estimate)."
    ),
    new_code_cell(
        "summary = reproduce_sampling.measured_summary(suite_dir)\n"
        "summary if len(summary) else print(\"no sampling runs in this suite (suites/samplers.yaml has them)\")"
    ),
    new_code_cell(
        "sampling_plots.log_z_error_vs_cost(summary, sampling_table) if len(summary) else None;"
    ),
])

lik = nb([  # notebooks/likelihood.ipynb
    new_markdown_cell(
        "# Likelihoods: every estimator against an exact value, then the tables\n"
        "\n"
        "Exact references: quadrature of exp(-E) over the support box (2D energies), change of variables "
        "(flows), enumeration of the hidden units (RBMs). Estimators: forward AIS (a stochastic lower "
        "bound on log Z, so an optimistic NLL), reverse AIS (conservative), the probability-flow ODE and "
        "the DDPM ELBO (an upper bound). Each row states its `likelihood_kind` and data convention; "
        "numbers of different kinds are never ranked against each other."
    ),
    params(
        "suite_dir = \"../results/quick\"  # type: str - the suite folder to read"
    ),
    new_code_cell(
        "from pathlib import Path\n"
        "\n"
        "from IPython.display import HTML, Markdown, display\n"
        "\n"
        "from ebmbench import plots, report\n"
        "from ebmbench.results import load_results\n"
        "\n"
        "frame = load_results(suite_dir)\n"
        "Markdown(f\"{len(frame)} result rows of suite **{Path(suite_dir).name}**.\")"
    ),
    new_markdown_cell(
        "## Estimators against the exact value of the same model\n"
        "\n"
        "Error = estimate - exact value of the same run (nats), mean over seeds [95 % bootstrap interval "
        "over seeds]; a negative error on a lower bound is what the bound promises. Each seed's row is "
        "in the collapsed table below."
    ),
    new_code_cell(
        "errors = report.estimator_vs_exact(frame)\n"
        "report.shown(report.estimator_summary(errors), \"no run has both an exact likelihood "
        "(quadrature, flow, RBM) \"\n"
        "             \"and an estimate (AIS, PF-ODE, ELBO) of the same model: nothing to compare\", 4)"
    ),
    new_code_cell(
        "HTML(report.collapsed(\"Every seed's estimate beside its exact value\", errors.round(4),\n"
        "                     \"no estimate beside an exact value\"))"
    ),
    new_markdown_cell(
        "## Estimator cost against its error\n"
        "\n"
        "Each point is one seed's estimate: its wall clock (one thread) against its distance from the "
        "exact value of the same model. Lower is better, and further left is cheaper."
    ),
    new_code_cell(
        "fig = plots.estimator_error_vs_cost(errors)  # drawn once, by the inline backend\n"
        "if fig is None:\n"
        "    print(\"no estimator beside an exact value: no figure\")"
    ),
    new_markdown_cell(
        "## Likelihoods by kind\n"
        "\n"
        "Mean over seeds [interval]; numbers of different kinds (exact, upper bound, lower bound, "
        "estimate) are never ranked against each other."
    ),
    new_code_cell(
        "tables = report.likelihood_tables(frame)\n"
        "for kind, table in tables.items():\n"
        "    display(Markdown(f\"### {kind}\"), table.round(4))\n"
        "if not tables:\n"
        "    print(\"no ok likelihood row: every likelihood metric was skipped (skip_metrics), \"\n"
        "          \"failed or does not apply to these models (see 'Not measured' in report.html)\")"
    ),
])

study_nb = nb([  # notebooks/study.ipynb
    new_markdown_cell(
        "# Are EBMs created equal? Quality against tuning budget, and how often each objective diverges\n"
        "\n"
        "Random search after Lucic et al. 2018: every method's K trials draw their hyperparameters from the "
        "search space declared beside its params dataclass, each trained with the same counted training FLOPs "
        "(`suites/study-2d.yaml`, `docs/study.md`). Every trial is an ordinary row of the suite; `study.json` "
        "says which run is which trial. Quality is the final reverse KL(q || p) of the method's cheapest "
        "sampler (lower is better)."
    ),
    params(
        "suite_dir = \"../results/study-2d\"  # type: str - the study suite's folder"
    ),
    new_code_cell(
        "import pandas as pd\n"
        "from IPython.display import Markdown\n"
        "\n"
        "from ebmbench import report, study\n"
        "from ebmbench.plots import study as figures\n"
        "from ebmbench.results import load_results\n"
        "\n"
        "pd.set_option(\"display.width\", 200)\n"
        "frame = load_results(suite_dir)\n"
        "trials = study.trial_table(suite_dir, frame)\n"
        "missing = \"no study rows: run `ebmbench run study-2d` (this suite has no study.json)\"\n"
        "Markdown(f\"**Divergence rule.** {study.RULE}\")"
    ),
    new_markdown_cell("## The trials"),
    new_code_cell(
        "report.shown(study.trial_summary(trials), missing, digits=4)"
    ),
    new_markdown_cell("## Final quality over trials"),
    new_code_cell(
        "figures.show(figures.quality_ecdf(trials), \"quality_ecdf\", suite_dir, missing)"
    ),
    new_markdown_cell(
        "## Expected best quality against the number of trials\n"
        "\n"
        "The expected best reverse KL of k trials drawn without replacement from the K run (exact, by order "
        "statistics), with the 95 % band of 2000 bootstrap draws; a diverged trial is a wasted one. "
        "A cross at k = 0 marks the method at the suite's own (default) setting."
    ),
    new_code_cell(
        "curves = study.budget_curves(trials) if len(trials) else pd.DataFrame()\n"
        "figures.show(figures.budget_plot(curves, trials), \"budget\", suite_dir, missing)\n"
        "report.shown(curves, missing, digits=4)"
    ),
    new_markdown_cell("## Divergence rate per objective, with Wilson 95 % intervals, and where in training"),
    new_code_cell(
        "divergence = study.divergence_table(trials) if len(trials) else pd.DataFrame()\n"
        "figures.show(figures.divergence_plot(divergence, trials), \"divergence\", suite_dir, missing)\n"
        "report.shown(divergence, missing, digits=3)"
    ),
    new_markdown_cell("## Sensitivity to each hyperparameter (crosses: diverged trials; line: running median)"),
    new_code_cell(
        "long = study.sensitivity(trials) if len(trials) else pd.DataFrame()\n"
        "figures.show_each(figures.sensitivity_plots(long), \"sensitivity\", suite_dir, missing)"
    ),
    new_markdown_cell(
        "## The trained EBMs under other samplers\n"
        "\n"
        "The best non-diverged trial of each EBM objective, sampled by ULA at each step size and chain length, "
        "MALA at the same, and HMC at matched gradient evaluations; the x axis is the counted gradient "
        "evaluations per sample."
    ),
    new_code_cell(
        "sweep = study.sampler_sweep(suite_dir, trials) if len(trials) else pd.DataFrame()\n"
        "figures.show(figures.sweep_plot(sweep), \"sampler_sweep\", suite_dir, missing)\n"
        "report.shown(sweep, missing, digits=4)"
    ),
    new_markdown_cell("## The study's findings, evaluated from the rows (also in reproduce.html)"),
    new_code_cell("study.findings(trials, frame)"),
])

compose_run = nb([  # notebooks/compose_run.ipynb: one composition run (ebmbench/compose.py), executed by a suite
    new_markdown_cell(
        "# Composition: two trained models against the exact composed density\n"
        "\n"
        "Loads the two component runs' checkpoints (by run id and config hash; nothing is trained here), composes "
        "them (product: summed energies or summed eps, Du et al. 2023; mixture: a fair coin per sample), draws with "
        "each sampler and scores the samples against the exact composed target (product: p_a p_b / Z with Z by "
        "quadrature; mixture: (p_a + p_b) / 2). A suite sets every parameter (`compositions:` in its file)."
    ),
    params(
        "operation = \"product\"  # type: str - product (p_a p_b / Z) | mixture ((p_a + p_b) / 2)\n"
        "dataset_a = \"eight_gaussians\"  # type: str - the first component's dataset\n"
        "dataset_b = \"diagonal_blobs\"  # type: str - the second component's dataset\n"
        "method = \"energy_ddpm\"  # type: str - the method of both components\n"
        "seed = 0  # type: int - the components' seed, and the seed of every sampler's draw\n"
        "components = \"\"  # type: str - run ids of the two component runs, comma-separated (set by the suite)\n"
        "component_hashes = \"\"  # type: str - their config hashes, comma-separated (set by the suite)\n"
        "samplers = \"{}\"  # type: str - JSON mapping of sampler name to its budget\n"
        "n_samples = 2000  # type: int - samples per sampler\n"
        "threads = 1  # type: int - torch intra-op threads, recorded with every timing\n"
        "suite = \"adhoc\"  # type: str - the suite whose runs are composed\n"
        "results_dir = \"../results\"  # type: str - root folder of all suites (relative to notebooks/)"
    ),
    new_code_cell("from ebmbench import compose\nfrom ebmbench.plots import compose as figures"),
    new_code_cell("c = compose.start(globals())\nc.cfg.run_id"),
    new_code_cell("compose.draw(c);"),
    new_markdown_cell("## The exact composed density and each sampler's samples"),
    new_code_cell("figures.target_vs_samples(c);"),
    new_code_cell("compose.evaluate(c)\ncompose.table(c)"),
    new_markdown_cell("The last cell writes `result.json`, the run's completion marker."),
    new_code_cell('compose.finish(c)["run_status"]'),
])

sampling_run = nb([  # notebooks/sampling_run.ipynb: one sampling run (ebmbench/sampling.py), executed by a suite
    new_markdown_cell(
        "# AIS or SMC on an analytic target, against its exact log Z\n"
        "\n"
        "One target (funnel, gmm40, many_well: `ebmbench/data/targets.py`), one algorithm (AIS, Neal 2001; SMC, "
        "Del Moral et al. 2006), one kernel (ULA, MALA, HMC), every K of the list, R replicates each. Nothing is "
        "trained. A suite sets every parameter (`sampling:` in its file)."
    ),
    params(
        "target = \"funnel\"  # type: str - funnel | gmm40 | many_well\n"
        "algorithm = \"smc\"  # type: str - ais | smc\n"
        "kernel = \"hmc\"  # type: str - ula | mala | hmc\n"
        "steps = \"64\"  # type: str - comma-separated numbers of temperatures K\n"
        "particles = 2000  # type: int - particles per replicate\n"
        "replicates = 30  # type: int - independent estimates per K (the rows' seeds)\n"
        "seed = 0  # type: int - seed of the run (K is added per step count)\n"
        "step_times = \"0,1\"  # type: str - beta at which step_sizes are given\n"
        "step_sizes = \"0.1,0.1\"  # type: str - HMC h or MALA/ULA eps at step_times\n"
        "leapfrog_steps = 10  # type: int - HMC leapfrog steps\n"
        "adapt_rate = 0.0  # type: float - step adaptation rate between temperatures (0: fixed)\n"
        "target_accept = 0.65  # type: float - acceptance the adaptation aims at\n"
        "ess_threshold = 0.3  # type: float - SMC resamples below this ESS / N\n"
        "settings = \"\"  # type: str - where the settings come from\n"
        "threads = 1  # type: int - torch intra-op threads\n"
        "suite = \"adhoc\"  # type: str - the suite\n"
        "results_dir = \"../results\"  # type: str - root folder of all suites (relative to notebooks/)"
    ),
    new_code_cell("from ebmbench import sampling"),
    new_code_cell("run = sampling.start(globals())\nrun.cfg.run_id"),
    new_code_cell("sampling.estimate(run);"),
    new_code_cell("sampling.evaluate(run)\nsampling.table(run)"),
    new_markdown_cell("The last cell writes `result.json`, the run's completion marker."),
    new_code_cell('sampling.finish(run)["run_status"]'),
])

compose_nb = nb([  # notebooks/compose.ipynb: the composition benchmark's page, rendered as compose.html
    new_markdown_cell(
        "# Composition with exact targets: products and mixtures of trained models\n"
        "\n"
        "Two models per family, trained on two 2D densities, composed: the product p_a p_b / Z (EBMs: summed "
        "energies with ULA, MALA, HMC; DDPM: summed eps with plain reverse diffusion; energy-parameterized "
        "diffusion: summed energies with reverse diffusion corrected by ULA, MALA or HMC at every noise level, "
        "Du et al. 2023) and the mixture (p_a + p_b) / 2. The targets are exact (the datasets' log-densities, Z by "
        "quadrature), so reverse KL, mode-weight TV and the high-quality fraction are measured against the truth, "
        "each beside its floor (exact samples at equal N). Mean [95 % Student-t interval] over seeds; cost is "
        "counted network evaluations per sample, both components counted."
    ),
    params("suite_dir = \"../results/compose\"  # type: str - the suite folder with compositions/"),
    new_code_cell(
        "import pandas as pd\n"
        "\n"
        "from ebmbench import compose, reproduce\n"
        "from ebmbench.plots import compose as figures\n"
        "\n"
        "pd.set_option(\"display.width\", 200)\n"
        "frame = compose.load_compositions(suite_dir)\n"
        "table = compose.summary(frame) if len(frame) else pd.DataFrame()\n"
        "print(f\"{frame.run_id.nunique() if len(frame) else 0} composition runs, {len(frame)} rows\")"
    ),
    new_markdown_cell("## The exact composed targets and every method's samples (seed 0)"),
    new_code_cell("figures.suite_grid(suite_dir, frame) if len(frame) else print(\"no composition rows\");"),
    new_markdown_cell("## Reverse KL to the exact target against sampling cost"),
    new_code_cell("figures.quality_vs_cost(table) if len(table) else print(\"no composition rows\");"),
    new_markdown_cell("## Quality and cost (mean [95 % interval] over seeds)"),
    new_code_cell(
        "for metric in (\"reverse_kl\", \"mode_tv\", \"high_quality_fraction\") if len(table) else ():\n"
        "    display(table[table.metric == metric].drop(columns=\"metric\").round(4))"
    ),
    new_markdown_cell(
        "## Finding: corrected sampling of composed energy-diffusion models (Du et al. 2023), checked from rows\n"
        "\n"
        "Per product target: baseline minus corrected reverse KL, paired by seed; `holds` when its 95 % interval "
        "lies above 0. The cost multiple is in network evaluations per sample."
    ),
    new_code_cell("reproduce.composition_finding(frame).round(4) if len(frame) else print(\"no composition rows\")"),
    new_markdown_cell(
        "## Likelihood through the learned path (energy_ddpm components)\n"
        "\n"
        "The test NLL of exp(-E(x, 0)) / Z on the box: exact by quadrature, bracketed by AIS along the model's own "
        "noise levels (forward: lower bound on log Z, so a lower NLL; reverse: upper), beside the PF-ODE NLL of the "
        "same network (the ODE's density, equal to the energy's only if the learned scores are consistent). Cost: "
        "network evaluations for the whole test set, and the metric's wall clock."
    ),
    new_code_cell(
        "from ebmbench.results import load_results\n"
        "\n"
        "compose.likelihood_agreement(load_results(suite_dir)).round(4)"
    ),
    new_markdown_cell("## Not measured, with the reasons"),
    new_code_cell("compose.not_measured(frame) if len(frame) else print(\"no composition rows\")"),
])

def generic_parameters_cell():
    """dataset, method and the common RunConfig fields: a plugin's method injects its own parameters by name."""
    types_, helps = get_type_hints(RunConfig), field_help(RunConfig)
    fields_ = {f.name: f for f in dataclasses.fields(RunConfig)}
    lines = [line("dataset", "eight_gaussians", str, helps["dataset"]),
             line("method", "", str, f"{helps['method']} (set by the suite: a plugin's method)")]
    for name in COMMON_FIELDS:
        value, why = NOTEBOOK_VALUES.get(name, (default(fields_[name]), ""))
        lines.append(line(name, value, types_[name], helps[name] + (f" ({why})" if why else "")))
    return params("\n".join(lines))


generic = train_nb(  # notebooks/run_generic.ipynb: ebmbench/plugins.py GENERIC_NOTEBOOK
    "run_generic",
    "A method of any family: train, evaluate",
    "The notebook of a method whose family has no notebook of its own (a plugin's method, see "
    "`ebmbench/plugins.py`): the shared training loop, its curves and the shared evaluation; no family pictures.",
    generic_parameters_cell(),
    [],
)

NOTEBOOKS = {"train_ebm": ebm, "train_diffusion": diff, "train_score": score, "train_gan": gan, "train_flow": flow,
             "train_rbm": rbm, "report": rep, "reproduce": repro, "likelihood": lik,
             "study": study_nb, "compose_run": compose_run, "compose": compose_nb,
             "run_generic": generic, "sampling_run": sampling_run}


def build(name: str):
    """The notebook ``name`` with stable cell ids ``<name>-<index>`` (nbformat 4.5 ids)."""
    n = copy.deepcopy(NOTEBOOKS[name])
    for i, cell in enumerate(n.cells):
        cell["id"] = f"{name}-{i:02d}"
    nbf.validate(n)
    return n


def render(name: str) -> str:
    """The exact text ``notebooks/<name>.ipynb`` must have."""
    return nbf.writes(build(name)) + "\n"


if __name__ == "__main__":
    for key in sys.argv[1:] or NOTEBOOKS:
        (OUT / f"{key}.ipynb").write_text(render(key))
