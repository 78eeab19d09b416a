"""Command line: ``python -m reach ...``; every Make target has its equivalent here.

    python -m reach run --params params/stub.yaml [--only reach] [--set key=value ...]
    python -m reach render --params params/stub.yaml [--show-code]
    python -m reach stub --out data_stub [--n-firms 10000] [--seed 0]
    python -m reach check-params params/nlib.yaml
    python -m reach compare output/<run_a> output/<run_b> [--out DIR]
    python -m reach bench --sizes 10000,100000
    python -m reach clean
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from reach.params import ParamsError

MAKE_EQUIVALENTS = """\
make targets and their python -m reach equivalents (CBS Remote Access may have no make):
  make all      PARAMS=p   python -m reach run --params p
  make panel    PARAMS=p   python -m reach run --params p --only panel
  make reach    PARAMS=p   python -m reach run --params p --only reach
  make matching PARAMS=p   python -m reach run --params p --only matching
  make effects  PARAMS=p   python -m reach run --params p --only effects
  make summary  PARAMS=p   python -m reach run --params p --only summary
  make render   PARAMS=p   python -m reach render --params p
  make stub                python -m reach stub --out data_stub
  make bench               python -m reach bench --sizes 10000,100000
  make clean               python -m reach clean
  (yearly monitoring)      python -m reach compare output/<run_a> output/<run_b>
  make test                python -m pytest -m "not slow"
"""


def load_bench_harness():
    """Import the benchmark harness from the checkout's ``bench/harness.py``.

    Benchmarks are not part of the installed package (nothing in Remote Access
    needs them): the harness is looked up in the current folder's ``bench/``,
    then beside the source tree this package was imported from (an editable
    install or ``PYTHONPATH=src``).
    """
    import importlib.util

    candidates = [Path.cwd() / "bench" / "harness.py", Path(__file__).resolve().parents[2] / "bench" / "harness.py"]
    for path in candidates:
        if path.is_file():
            spec = importlib.util.spec_from_file_location("harness", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["harness"] = module  # the harness's worker processes import it by this name
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError("the benchmark harness is not installed with reach; run `python -m reach bench` from the "
                            "repository folder (looked for " + ", ".join(str(c) for c in candidates) + ")")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reach", description="reach: reach and effect of export promotion, from microdata.",
                                epilog=MAKE_EQUIVALENTS, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the notebook suite (or some stages) for a parameter file")
    run.add_argument("--params", default="params/stub.yaml", help="parameter file (default: params/stub.yaml)")
    run.add_argument("--only", nargs="+", choices=["panel", "reach", "matching", "effects", "summary"],
                     help="run only these stages (the panel is built first when missing)")
    run.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override parameters, e.g. --set biters=99 disclosure.min_units=15")
    run.add_argument("--output-root", default="output", help="parent of output/<run> (default: output)")
    run.add_argument("--work-root", default="work", help="parent of work/<run> (default: work)")
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="notebooks run side by side (default 1; each needs its own memory)")

    render = sub.add_parser("render", help="render the executed notebooks of a run to HTML again")
    render.add_argument("--params", default="params/stub.yaml")
    render.add_argument("--output-root", default="output")
    render.add_argument("--show-code", action="store_true", help="include the code cells")

    check = sub.add_parser("check-params", help="validate a parameter file without running anything")
    check.add_argument("params", nargs="?", default="params/stub.yaml")
    check.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides")

    stub = sub.add_parser("stub", help="(re)generate the synthetic CBS-shaped microdata and truth.json")
    stub.add_argument("--out", default="data_stub")
    stub.add_argument("--n-firms", type=int, default=None, help="number of business units (default: the committed stub's)")
    stub.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="benchmarks at several sizes, side by side with peer packages")
    bench.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of firms")
    bench.add_argument("--out", default="bench/results", help="folder for the results table and plot")
    bench.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True, help="also time peer packages when installed")

    cmp_ = sub.add_parser("compare", help="compare two runs' headline numbers (yearly monitoring), differences flagged")
    cmp_.add_argument("run_a", help="first run folder, e.g. output/stub_2023")
    cmp_.add_argument("run_b", help="second run folder, e.g. output/stub_2024")
    cmp_.add_argument("--out", default=None,
                      help="folder for comparison.csv, differences.csv, comparison.md (default: output/compare/<a>_vs_<b>)")
    cmp_.add_argument("--tolerance", type=float, default=1e-9, help="relative tolerance for 'same' (default 1e-9)")

    sub.add_parser("clean", help="remove output/ and work/")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from reach.runner import SuiteError, run_suite

            try:
                run_suite(args.params, only=args.only, overrides=args.overrides, output_root=args.output_root,
                          work_root=args.work_root, progress=not args.no_progress, jobs=args.jobs)
            except SuiteError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        elif args.command == "render":
            from reach.params import load_params
            from reach.runner import executed_name, executed_names, render_html

            params = load_params(args.params, check_files=False)
            out = Path(args.output_root) / params["run_name"]
            stems = [executed_name(nb, p) for nb, p in executed_names(params)]
            found = [out / "notebooks" / f"{n}.ipynb" for n in stems if (out / "notebooks" / f"{n}.ipynb").is_file()]
            if not found:
                print(f"error: no executed notebooks in {out / 'notebooks'}; run `python -m reach run --params {args.params}` first",
                      file=sys.stderr)
                return 1
            for nb in found:
                print(render_html(nb, out / f"{nb.stem}.html", show_code=args.show_code or bool(params.get("show_code"))))
        elif args.command == "check-params":
            from reach.params import load_params

            load_params(args.params, args.overrides)
            print(f"{args.params}: ok")
        elif args.command == "stub":
            from reach.synth import make_stub

            kwargs = {"seed": args.seed}
            if args.n_firms is not None:
                kwargs["n_firms"] = args.n_firms
            make_stub(args.out, **kwargs)
            print(f"stub written to {args.out}")
        elif args.command == "bench":
            run_bench = load_bench_harness().run_bench
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
            run_bench(sizes, out_dir=args.out, peers=args.peers)
        elif args.command == "compare":
            from reach.compare import compare_runs

            try:
                res = compare_runs(args.run_a, args.run_b, tolerance=args.tolerance)
            except FileNotFoundError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            out = Path(args.out) if args.out else Path("output") / "compare" / f"{Path(args.run_a).name}_vs_{Path(args.run_b).name}"
            paths = res.write(out)
            print(res.summary())
            print("written: " + ", ".join(str(p) for p in paths))
        elif args.command == "clean":
            for folder in ("output", "work"):
                shutil.rmtree(folder, ignore_errors=True)
            print("removed output/ and work/")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        if args.command != "bench":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
