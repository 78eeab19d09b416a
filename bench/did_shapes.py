"""``att_gt`` against csdid on panel shapes nobody tuned for, one fresh process per call.

Run: ``python bench/did_shapes.py [--sizes 50000 200000 1000000] [--peer-python PATH] [--repeat N]``;
``--report JSONL WORK`` prints the table (medians over every run in JSONL; one sweep per repeat).

What it measures (issue 17, target 4): the **wall time of a whole fresh process** that
imports the estimator, reads the panel from parquet and estimates ATT(g, t): first-call
imports and file reads count, because that is what an analyst's call costs. The child
also reports its own split (import, read, fit) so a profile shows where time goes.

Shapes: ``few`` (3 cohorts) and ``many`` (9 cohorts) adoption over 11 years, 50k / 200k /
1M units, 40% never treated; outcome = unit effect + common trend + a covariate-dependent
trend + a planted effect growing with exposure + noise; one time-invariant covariate ``x``
(time-invariant so that "covariate of the base period" means the same in every package).
Specs: ``nocov`` (no covariates) and ``dr_x`` (``~ x``, doubly robust), both
``control_group="nevertreated"``, analytic standard errors on both sides (reach:
``bootstrap=False, cband=False``; csdid: ``bstrap=False``, ``cband=False``).
Agreement: every ATT(g, t) of reach equals csdid's within 1e-6 (asserted; a failure is
recorded as ``DIFFERENT`` in the table, never hidden).

csdid (PyPI 0.4.3) is a bench-only peer: it lives in its own venv (``--peer-python``,
default ``/work/wt/peers-venv/bin/python`` or ``$REACH_BENCH_PYTHON``), never in reach's
runtime dependencies. Only the standard library is imported at module level so that the
same file is the worker in either interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHAPES = {"few": (2013, 2016, 2019), "many": tuple(range(2012, 2021))}
YEARS = tuple(range(2010, 2021))
SPECS = {"nocov": None, "dr_x": "~ x"}
TOL = 1e-6


# ----------------------------------------------------------------------------- data
def make_panel(n: int, shape: str, seed: int = 17):
    """Balanced panel of ``n`` units over :data:`YEARS` with the cohorts of ``shape``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cohorts = np.asarray(SHAPES[shape])
    g = np.where(rng.random(n) < 0.4, 0, rng.choice(cohorts, n))
    x = rng.normal(size=n) + 0.3 * (g > 0)  # users differ in x: the covariate matters
    T = len(YEARS)
    year = np.tile(np.asarray(YEARS), n)
    gg = np.repeat(g, T)
    e = year - gg
    eff = np.where((gg > 0) & (e >= 0), 0.05 + 0.02 * e, 0.0)
    y = (np.repeat(rng.normal(size=n), T) + 0.02 * (year - YEARS[0]) * (1 + np.repeat(x, T))
         + eff + rng.normal(scale=0.5, size=n * T))
    return pd.DataFrame({"id": np.repeat(np.arange(1, n + 1), T).astype("int64"), "year": year.astype("int64"),
                         "g": gg.astype("int64"), "x": np.repeat(x, T), "y": y})


# ----------------------------------------------------------------------------- workers (fresh processes)
def _worker(impl: str, path: str, spec: str, out: str) -> None:
    t0 = time.perf_counter()
    if impl == "reach":
        from reach.did import att_gt
    else:
        from csdid.att_gt import ATTgt
    import pandas as pd

    t1 = time.perf_counter()
    df = pd.read_parquet(path)
    t2 = time.perf_counter()
    xf = SPECS[spec]
    if impl == "reach":
        r = att_gt(df, "y", "year", "id", "g", xformla=xf, est_method="dr", bootstrap=False, cband=False)
        est = pd.DataFrame({"group": r.groups, "time": r.times, "att": r.att, "se": r.se})
    else:
        m = ATTgt(yname="y", tname="year", idname="id", gname="g", data=df, control_group=["nevertreated"],
                  xformla=None if xf is None else f"y {xf}", cband=False).fit(est_method="dr", bstrap=False)
        res = m.results
        est = pd.DataFrame({"group": res["group"], "time": res["year"], "att": res["att"], "se": res["se"]})
    t3 = time.perf_counter()
    est.to_csv(out, index=False)
    Path(out + ".json").write_text(json.dumps({"import": t1 - t0, "read": t2 - t1, "fit": t3 - t2}))


def _run(python: str, impl: str, path: Path, spec: str, out: Path, timeout: float) -> dict:
    # bytecode caches as an installed package has them (a source checkout with PYTHONDONTWRITEBYTECODE
    # would recompile reach on every call, which no analyst's installation does)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")})
    t0 = time.perf_counter()
    try:
        p = subprocess.run([python, str(Path(__file__).resolve()), "--worker", impl, str(path), spec, str(out)],
                           env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall": timeout}
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"status": "error", "wall": wall, "note": (p.stderr.strip().splitlines() or [""])[-1][:200]}
    return {"status": "ok", "wall": wall, **json.loads(Path(str(out) + ".json").read_text())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--specs", nargs="+", default=list(SPECS))
    ap.add_argument("--impls", nargs="+", default=["reach", "csdid"])
    ap.add_argument("--peer-python", default=os.environ.get("REACH_BENCH_PYTHON", "/work/wt/peers-venv/bin/python"))
    ap.add_argument("--work", default=str(BENCH / "results" / "tmp" / "did_shapes"))
    ap.add_argument("--out", default=str(BENCH / "results" / "did_shapes.jsonl"))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--repeat", type=int, default=1, help="sweeps over all shapes, one after the other")
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    pythons = {"reach": sys.executable, "csdid": a.peer_python}
    for i in range(a.repeat):
        # the first process on a shape pays first-touch costs of its memory (on this VM up to 1 s at 1M units,
        # in the read and in the fit): alternate who goes first so neither side always pays it
        _sweep(a, work, pythons, a.impls if i % 2 == 0 else a.impls[::-1])
    return 0


def _sweep(a, work: Path, pythons: dict, impls: list) -> None:
    for n in a.sizes:
        for shape in a.shapes:
            path = work / f"{shape}_{n}.parquet"
            if not path.exists():
                make_panel(n, shape).to_parquet(path, index=False)
            for spec in a.specs:
                for impl in impls:
                    out = work / f"{shape}_{n}_{spec}_{impl}.csv"
                    r = _run(pythons[impl], impl, path, spec, out, a.timeout)
                    row = {"n_units": n, "shape": shape, "spec": spec, "impl": impl, **r,
                           "machine": f"{platform.node()} {os.cpu_count()} cores", "when": time.strftime("%FT%TZ", time.gmtime())}
                    print(json.dumps(row), flush=True)
                    with open(a.out, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")


def compare(work: Path, shape: str, n: int, spec: str) -> float:
    """Largest |ATT_reach - ATT_csdid| over the cells both estimate (asserts the same cells)."""
    import pandas as pd

    a = pd.read_csv(work / f"{shape}_{n}_{spec}_reach.csv").set_index(["group", "time"]).sort_index()
    b = pd.read_csv(work / f"{shape}_{n}_{spec}_csdid.csv").set_index(["group", "time"]).sort_index()
    assert a.index.equals(b.index), f"{shape} {n} {spec}: different cells"
    return float((a["att"] - b["att"]).abs().max())


def report(jsonl: Path, work: Path) -> str:
    """Markdown table per (units, shape, spec): medians over all successful runs in ``jsonl`` of the wall and
    fit times, their ratios, the range of the per-sweep wall ratio (reach's run against the csdid run that
    followed it), and agreement of the last run's estimates."""
    from statistics import median

    runs: dict = {}
    for line in Path(jsonl).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        runs.setdefault((r["n_units"], r["shape"], r["spec"], r["impl"]), []).append(r)
    out = ["| units | cohorts | spec | runs | reach wall s | csdid wall s | ratio (wall) | per-run wall ratios "
           "| reach fit s | csdid fit s | ratio (fit) | max abs diff ATT |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (n, shape, spec, impl), rs in sorted(runs.items()):
        if impl != "reach" or (n, shape, spec, "csdid") not in runs:
            continue
        cs = runs[(n, shape, spec, "csdid")]
        pairs = [(r, c) for r, c in zip(rs, cs) if r["status"] == "ok" and c["status"] == "ok"]
        if not pairs:
            out.append(f"| {n:,} | {len(SHAPES[shape])} | {spec} | 0 | {rs[-1]['status']} | {cs[-1]['status']} "
                       "| | | | | | |")
            continue
        rw, cw = median(r["wall"] for r, _ in pairs), median(c["wall"] for _, c in pairs)
        rf, cf = median(r["fit"] for r, _ in pairs), median(c["fit"] for _, c in pairs)
        ratios = [r["wall"] / c["wall"] for r, c in pairs]
        diff = compare(Path(work), shape, n, spec)
        agree = f"{diff:.1e}" if diff <= TOL else f"DIFFERENT ({diff:.3g})"
        out.append(f"| {n:,} | {len(SHAPES[shape])} | {spec} | {len(pairs)} | {rw:.2f} | {cw:.1f} | {rw / cw:.3f} | "
                   f"{min(ratios):.3f}-{max(ratios):.3f} | {rf:.2f} | {cf:.1f} | {rf / cf:.3f} | {agree} |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--report":
        print(report(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(main())
