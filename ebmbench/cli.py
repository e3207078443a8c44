"""Command line: `ebmbench run SUITE`, `ebmbench report SUITE`, `ebmbench list`, `ebmbench fetch ITEM`,
`ebmbench evaluate SAMPLES`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ebmbench.builtins import DATASETS, METHODS, SAMPLERS
from ebmbench.config import split_names
from ebmbench.params import shown


def cmd_list(args: argparse.Namespace) -> int:
    from ebmbench import plugins
    from ebmbench.metrics.registry import MODEL_METRICS, SAMPLE_METRICS
    from ebmbench.suites import SUITES_DIR

    plugins.load()  # installed plugins (entry-point group ebmbench.plugins) are listed with the built-ins
    print("\n".join(plugins.described()) or "plugins: none installed")

    print("datasets:", ", ".join(DATASETS.names()))
    for name in METHODS.names():
        spec = METHODS.get(name)
        print(f"method {name} ({spec.family}; notebook {plugins.notebook_for(spec).name}): {spec.cite}")
    for name in SAMPLERS.names():
        spec = SAMPLERS.get(name)
        print(f"sampler {name} (needs {spec.requires}): {spec.cite}")
    print("metrics:", ", ".join(SAMPLE_METRICS.names() + MODEL_METRICS.names()))
    print("suites:", ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))))
    return 0


REPORTS = ("reproduce", "likelihood", "report")


def render_reports(suite_dir: Path) -> bool:
    """Render every report notebook, each on its own: one that fails does not stop the others. True if all did."""
    from ebmbench.report import RenderError, render

    ok = True
    study = ("study",) if (suite_dir / "study.json").exists() else ()  # a tuning study's page (ebmbench/study.py)
    compose = ("compose",) if (suite_dir / "compositions").is_dir() else ()  # compositions' page (ebmbench/compose.py)
    for name in REPORTS + study + compose:
        try:
            print(f"{name}: {render(suite_dir, f'{name}.ipynb')}")
        except RenderError as err:
            print(f"error: report {name!r} did not render cleanly: {err}", file=sys.stderr)
            ok = False
    return ok


def check_writable(folder: Path) -> None:
    """Refuse a results folder that cannot be written before anything runs."""
    probe = folder / ".write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"results folder {folder} is not writable ({err.strerror}); "
                         "pass a writable --results-dir") from None


def cmd_run(args: argparse.Namespace) -> int:
    from ebmbench.suites import load_suite, run_suite, suite_lock

    overrides = {"device": args.device} if args.device else {}
    name, runs = load_suite(args.suite, args.results_dir, overrides, trials=args.trials)
    if args.trials and not any(r.trial for r in runs):
        print(f"error: --trials sets the K of a study entry (study: {{trials: K}}); suite {name!r} has none",
              file=sys.stderr)
        return 2
    every = [r.cfg.run_id for r in runs]  # the suite's manifest lists all its runs, also when a slice runs
    for field, wanted in (("method", args.methods), ("dataset", args.datasets)):
        if wanted:
            keep, valid = set(split_names(wanted)), sorted({getattr(r.cfg, field) for r in runs})
            unknown = sorted(keep - set(valid))
            if unknown or not keep:
                print(f"error: --{field}s: {shown(unknown or wanted)} not in suite {name!r}; its {field}s are: "
                      f"{', '.join(valid)}", file=sys.stderr)
                return 2
            runs = [r for r in runs if getattr(r.cfg, field) in keep]
    if args.only:  # one recipe (its entry's label), a method or a run id (ebmbench/estimate.py)
        from ebmbench.estimate import select

        runs = select(runs, args.only)
    if args.dry_run:
        for spec in runs:
            print(spec.cfg.run_id, spec.notebook.name, f"device={spec.cfg.device}", f"precision={spec.cfg.precision}")
        if not args.no_estimate:
            from ebmbench.estimate import report

            report(runs, workers=args.workers)
        return 0
    suite_dir = Path(args.results_dir).resolve() / name
    check_writable(suite_dir)
    with suite_lock(suite_dir):
        estimates = None if args.no_estimate else announce(runs, args.workers)
        summary = run_suite(runs, name, workers=args.workers, scheduler=args.scheduler, retries=args.retries,
                            timeout_s=args.timeout, manifest=every, estimates=estimates)
        print("\n".join(summary.lines()))
        reports_ok = args.no_report or bool(summary.stopped) or render_reports(summary.suite_dir)
    if summary.stopped:
        print(f"error: suite stopped: {summary.stopped}; reports not rendered (`ebmbench report {name}` renders "
              "what finished)", file=sys.stderr)
    return 1 if summary.failed or summary.stopped or not reports_ok else 0


def announce(runs: list, workers: int = 0) -> dict[str, float]:
    """Print the estimated hours of the runs not yet finished, before any starts (ebmbench/estimate.py)."""
    from ebmbench.estimate import report
    from ebmbench.results import provenance
    from ebmbench.suites import is_finished

    code = provenance("cpu")
    todo = [r for r in runs if not is_finished(r, code)]
    print(f"{len(todo)} of {len(runs)} runs to do; estimating their cost (--no-estimate skips this)", flush=True)
    return report(todo, workers=workers) if todo else {}


def cmd_report(args: argparse.Namespace) -> int:
    from ebmbench.results import aggregate

    suite_dir = Path(args.results_dir) / args.suite
    if not (suite_dir / "runs").is_dir():
        print(f"no runs under {suite_dir}: run `ebmbench run {args.suite}` first", file=sys.stderr)
        return 2
    from ebmbench.report import partial_line

    aggregate(suite_dir)
    partial = partial_line(suite_dir)
    if partial:
        print(f"warning: {partial}", file=sys.stderr)
    return 0 if render_reports(suite_dir) else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ebmbench import evaluate, plugins
    from ebmbench.results import aggregate

    plugins.load()  # a plugin's dataset or metric applies to external samples too
    record = evaluate.evaluate_file(args.samples, args.dataset, args.name, suite=args.suite, n=args.n, nfe=args.nfe,
                                    seed=args.seed, results_dir=args.results_dir,
                                    metrics=args.metrics.split(",") if args.metrics else None)
    print("\n".join(evaluate.lines(record)))
    if args.suite:
        suite_dir = Path(args.results_dir) / record["rows"][0]["suite"]
        aggregate(suite_dir)
        print(f"added to {suite_dir}: `ebmbench report {record['rows'][0]['suite']}` ranks it beside the suite's runs")
    return 0


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebmbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a suite's notebooks, then its report")
    run.add_argument("suite", help="suite name under suites/ or a path to a .yaml file")
    run.add_argument("--results-dir", default="results")
    run.add_argument("--device", choices=("cpu", "cuda", "auto"), help="override every run's device")
    run.add_argument("--dry-run", action="store_true", help="list the runs and their estimated hours, and exit")
    run.add_argument("--only", help="run only these recipes (entry labels), methods or run ids (comma-separated)")
    run.add_argument("--no-estimate", action="store_true", help="skip the cost estimate (a few seconds per network)")
    run.add_argument("--methods", help="run only these methods (comma-separated): a slice of the suite")
    run.add_argument("--datasets", help="run only these datasets (comma-separated)")
    run.add_argument("--no-report", action="store_true")
    run.add_argument("--trials", type=count(1), default=None,
                     help="a study suite's K, trials per method and seed, over its entries' `study: {trials: K}`")
    run.add_argument("--workers", type=count(0), default=0,
                     help="run on a Dask LocalCluster of N worker processes (0 = serial, in this process)")
    run.add_argument("--scheduler", help="address of an existing Dask scheduler (e.g. a dask-jobqueue cluster)")
    run.add_argument("--retries", type=count(0), default=2, help="retries of a run whose kernel died")
    run.add_argument("--timeout", type=count(1), default=None,
                     help="every run's wall-clock limit in seconds, over the suite's `timeout` keys (default "
                          "24 h); a run past it is a failed row")
    run.set_defaults(fn=cmd_run)
    rep = sub.add_parser("report", help="aggregate a suite's results and render report.html")
    rep.add_argument("suite")
    rep.add_argument("--results-dir", default="results")
    rep.set_defaults(fn=cmd_report)
    sub.add_parser("list", help="datasets, methods, samplers, metrics and suites").set_defaults(fn=cmd_list)
    from ebmbench import fetch  # `ebmbench fetch`: datasets and Inception weights (ebmbench/fetch.py)

    fetch.configure_parser(sub.add_parser("fetch", help="download datasets and the Inception weights"), fetch.main)
    ev = sub.add_parser("evaluate", help="score samples from a file (.npz/.npy/.pt or a folder of PNGs)")
    ev.add_argument("samples", help="the samples: .npz (key 'samples', optional 'nfe'), .npy, .pt, or a PNG folder")
    ev.add_argument("--dataset", required=True, help="the dataset the samples model (see `ebmbench list`)")
    ev.add_argument("--name", required=True, help="the method name the rows carry (e.g. my-gan)")
    ev.add_argument("--suite", help="add the rows to this suite's results (same N), ranked on its leaderboard")
    ev.add_argument("--n", type=count(1), help="samples scored (default: the suite's n_eval_samples, else 1000)")
    ev.add_argument("--nfe", type=float, help="NFE per sample as stated by you: shown as stated, not counted")
    ev.add_argument("--seed", type=count(0), default=0, help="the seed the samples were drawn with (rows per seed)")
    ev.add_argument("--metrics", help="score only these sample metrics (comma-separated; the rest: not_applicable)")
    ev.add_argument("--results-dir", default="results")
    ev.set_defaults(fn=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # this process only saves figures; kernels choose their own (inline) backend
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, KeyError) as err:  # configuration and suite errors: say what and how to fix, a line each
        for line in str(err).splitlines():
            print(f"error: {line[:MAX_LINE]}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be written (read-only, full disk): no raw traceback
        where = err.filename or getattr(args, "results_dir", None) or "the results folder"
        print(f"error: {where}: {err.strerror or err}; check the folder's permissions and space "
              "(or pass another --results-dir)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # one line: what is kept and how to go on
        print(f"\ninterrupted: {interrupted_hint(args)}", file=sys.stderr)
        return 130


MAX_LINE = 1000  # a printed error line is cut here (values in it are already cut, params.shown)


def interrupted_hint(args: argparse.Namespace) -> str:
    if args.command != "run":
        return "nothing was changed"
    again = " ".join(["ebmbench run", args.suite, *(["--results-dir", args.results_dir] if args.results_dir !=
                                                      "results" else [])])
    return (f"finished runs are saved under {args.results_dir}/ and interrupted ones resume from their last "
            f"checkpoint: run `{again}` again to go on")


if __name__ == "__main__":
    sys.exit(main())
