"""Matching at register scale: nearest (incl. Mahalanobis within a caliper, ratio > 1), cem, ebal.

Not a test: run by hand, results go to ``bench/matching.md``::

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/matching_scale.py --n 2000000 --cohorts 3
    PYTHONPATH=src python bench/matching_scale.py --n 200000 --compare-brute   # k-d tree vs quadratic path

Synthetic firms (no files): per cohort a cross-section of ``n`` firms with six covariates of
the kind notebook 03 uses (log exports, growth, destinations, log employees, importer, prior
instruments), ~20 sectors as exact strata and a user share that rises with size and exports
(selection on observables). Each cohort is matched separately, as ``match_cohorts`` does; the
time is the ``match()`` call (propensity model, matching, weights), data generation excluded.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np
import pandas as pd

from reach.matching import match

COVARIATES = ["log_exports", "export_growth", "n_dest", "log_employees", "importer", "instr_before"]


def cohort_frame(n: int, seed: int, share: float) -> pd.DataFrame:
    """One cohort's cross-section: ``n`` firms, a fraction ``share`` (about) users."""
    rng = np.random.default_rng(seed)
    size = rng.normal(size=n)
    df = pd.DataFrame({
        "log_exports": np.round(8 + 2 * size + rng.normal(size=n), 2),
        "export_growth": np.round(rng.normal(scale=0.3, size=n), 3),
        "n_dest": rng.poisson(np.exp(1 + 0.4 * size)).astype(float),
        "log_employees": np.round(2 + size + rng.normal(scale=0.5, size=n), 2),
        "importer": (rng.random(n) < 1 / (1 + np.exp(-size))).astype(float),
        "instr_before": rng.poisson(0.3, n).astype(float),
        "sector": rng.integers(0, 20, n),
    })
    lp = np.log(share / (1 - share)) - 0.6 + 0.5 * size + 0.2 * (df["log_exports"] - 8) + 0.3 * df["importer"]
    df["treated"] = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    return df


SPECS = {
    "nearest 1:1 (score, caliper 0.2, exact sector)":
        dict(method="nearest", caliper=0.2, exact="sector"),
    "nearest 2:1 Mahalanobis within caliper 0.2, exact sector":
        dict(method="nearest", ratio=2, caliper=0.2, mahalanobis=True, exact="sector"),
    "nearest 2:1 Mahalanobis, no caliper (MatchIt distance='mahalanobis')":
        dict(method="nearest", ratio=2, mahalanobis=True, exact="sector"),
    "cem (Sturges bins), exact sector":
        dict(method="cem", exact="sector"),
    "ebal (means), exact sector":
        dict(method="ebal", exact="sector"),
}


def peak_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 1024 ** 2


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000, help="firms per cohort cross-section")
    ap.add_argument("--cohorts", type=int, default=3)
    ap.add_argument("--share", type=float, default=0.01, help="approximate user share per cohort")
    ap.add_argument("--specs", default="all", help="comma-separated spec numbers (1-based) or 'all'")
    ap.add_argument("--compare-brute", action="store_true",
                    help="also time the quadratic Mahalanobis path and check identical pairs")
    a = ap.parse_args(argv)
    names = list(SPECS)
    pick = names if a.specs == "all" else [names[int(i) - 1] for i in a.specs.split(",")]
    print(f"# {a.n:,} firms x {a.cohorts} cohorts, user share ~{a.share}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print("| specification | cohort | users | users matched | controls with weight | seconds |")
    print("|---|---|---|---|---|---|")
    for c in range(a.cohorts):
        df = cohort_frame(a.n, seed=100 + c, share=a.share)
        for name in pick:
            kw = SPECS[name]
            algos = ["auto", "brute"] if a.compare_brute and kw.get("mahalanobis") else ["auto"]
            pairs = {}
            for algo in algos:
                extra = {"algorithm": algo} if kw.get("mahalanobis") else {}
                t0 = time.perf_counter()
                m = match(df, "treated", COVARIATES, **kw, **extra)
                sec = time.perf_counter() - t0
                cnt = m.counts().set_index("group")
                label = name + (" [brute force]" if algo == "brute" else "")
                print(f"| {label} | {c + 1} | {int(cnt.loc['treated', 'all']):,} | "
                      f"{int(cnt.loc['treated', 'matched']):,} | {int(cnt.loc['control', 'matched']):,} | {sec:.1f} |",
                      flush=True)
                pairs[algo] = m.pairs
            if len(pairs) == 2:
                same = pairs["auto"].equals(pairs["brute"])
                print(f"|   identical pairs k-d tree vs brute force: {same} | | | | | |", flush=True)
    print(f"\npeak RSS {peak_mb():,.0f} MB")


if __name__ == "__main__":
    main()
