"""Benchmarks at register scale, side by side with peer packages (``python -m reach bench``).

The harness lives in the repository's ``bench/`` folder, not in the installed
package: an analyst's Remote Access installation carries no benchmark code.
``python -m reach bench`` loads it from the checkout (see
:func:`reach.__main__.load_bench_harness`); ``python bench/harness.py 10000``
runs it directly.

For each number of firms the harness generates CBS-shaped microdata with
:func:`reach.synth.make_stub`, then runs every stage of the suite in a **fresh
subprocess** and records its wall-clock time and its peak resident memory:

========================  ===========================================================
stage                     what is timed
========================  ===========================================================
``synth``                 :func:`reach.synth.make_stub` (context only)
``load_link_panel``       :func:`reach.io.load_inputs` + :func:`reach.link.link_participants`
                          + :func:`reach.panel.build_panel`
``indicators``            every indicator of :mod:`reach.indicators` for one programme
``matching``              :func:`reach.matching.match` (exact strata) + :func:`reach.matching.att`
                          on one cohort, and peer propensity-score matchers
``att_gt``                :func:`reach.did.att_gt` per specification, and the peers'
                          Callaway & Sant'Anna ports on the same file
``aggte``                 :func:`reach.did.aggte` (simple and dynamic)
``trade``                 streaming aggregation of a goods-level trade file of growing
                          length through :func:`reach.io.load_inputs`, against reading
                          it whole (``naive``)
========================  ===========================================================

Peers run on identical data (one parquet file per size, written once) and in
the same run. A peer is looked up in the interpreter running the bench, then
in ``$REACH_BENCH_PYTHON`` and ``<repo>/.venv-bench/bin/python`` (a separate
environment, so that bench-only packages never enter the runtime one); a peer
that is not importable anywhere is reported as ``skipped``. A stage that runs
past its timeout is killed and recorded as ``timeout`` (and the same
implementation is not tried at larger sizes); a stage that fails is recorded
as ``error`` with the last line of its message, and the run goes on.

Memory is the peak resident set size (``ru_maxrss``) of the stage's own
process, which counts numpy/pyarrow buffers that ``tracemalloc`` misses; it
includes the interpreter and the stage's input data, so ``rss_before_mb``
(resident memory just before the timed call) is reported too.

This module imports only the standard library at module level, so that a
peer interpreter without reach's dependencies can run its worker.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = ["run_bench", "RESULT_COLUMNS", "PEERS_DID", "PEERS_MATCHING", "DID_SPECS", "machine_info"]

RESULT_COLUMNS = (
    "n_firms", "n_rows", "stage", "spec", "impl", "status", "seconds", "peak_rss_mb", "rss_before_mb",
    "ratio_ours_theirs", "max_abs_diff", "agreement", "note",
)
#: Peer packages for group-time ATTs (Callaway & Sant'Anna ports) and for propensity-score matching.
PEERS_DID = ("csdid", "moderndid", "differences")
PEERS_MATCHING = ("psmpy", "causalinference")
#: att_gt specifications: name -> (control_group, xformla, bootstrap).
DID_SPECS = {
    "nevertreated": ("nevertreated", None, False),
    "notyettreated": ("notyettreated", None, False),
    "nevertreated+boot": ("nevertreated", None, True),
    "nevertreated+xformla": ("nevertreated", "~ log_employees", False),
}
#: Specifications peers are also run on (identical numbers are checked on these).
PEER_DID_SPECS = ("nevertreated", "notyettreated", "nevertreated+xformla")
DID_TOL = 1e-6
PROGRAMME = "tinl"
OUTCOME = "log_exports"
MATCH_COVARIATES = ["log_exports_lag1", "export_growth_lag1", "n_dest_lag1", "log_employees_lag1", "importer_lag1",
                    "instr_ever_before"]
MATCH_EXACT = ["sbi_section"]
_BENCH = Path(__file__).resolve().parent
_REPO = _BENCH.parent
_SRC = _REPO / "src"
_MB = 1024.0  # ru_maxrss is in KiB on Linux


# ----------------------------------------------------------------------------- worker side (child processes)
def _rss_now_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: fall back on the peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MB


class _Clock:
    """Time one block and note the resident memory just before it."""

    def __enter__(self):
        self.rss_before = _rss_now_mb()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        return False


def _stub_params(data_dir: str, **overrides) -> dict:
    from reach.params import load_params

    return load_params(_REPO / "params" / "stub.yaml", {"data_dir": str(data_dir), **overrides})


def _w_synth(spec: dict) -> dict:
    from reach.synth import make_stub

    with _Clock() as c:
        make_stub(spec["data_dir"], n_firms=int(spec["n_firms"]), seed=0)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before}


def _w_load_link_panel(spec: dict) -> dict:
    from reach.io import load_inputs
    from reach.link import link_participants
    from reach.panel import build_panel, save_run

    params = _stub_params(spec["data_dir"])
    with _Clock() as c:
        t0 = time.perf_counter()
        inputs = load_inputs(params)
        t1 = time.perf_counter()
        link = link_participants(inputs)
        t2 = time.perf_counter()
        panel = build_panel(inputs, link)
        t3 = time.perf_counter()
    save_run(spec["work_dir"], panel, link)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(panel),
            "note": f"load {t1 - t0:.1f}s, link {t2 - t1:.1f}s, panel {t3 - t2:.1f}s; trade rows "
                    f"{len(inputs.trade):,} after aggregation"}


def _w_indicators(spec: dict) -> dict:
    from reach import indicators as ind
    from reach.panel import read_link, read_panel

    params = _stub_params(spec["data_dir"])
    panel, link = read_panel(spec["work_dir"]), read_link(spec["work_dir"])
    prog = params["programme"]
    common = dict(comparison_group=params["comparison_group"], never_treated_only=params["never_treated_only"],
                  reach_window=params["reach_window"], target_group=params["target_group"],
                  rules=params["disclosure"])
    calls = [
        ("international_activity", lambda: ind.international_activity(panel, prog, **common)),
        ("growth_market_presence", lambda: ind.growth_market_presence(panel, prog, params["growth_markets"], **common)),
        ("target_group_fit", lambda: ind.target_group_fit(panel, prog, target_group=params["target_group"],
                                                           rules=params["disclosure"])),
        ("prior_instrument_use", lambda: ind.prior_instrument_use(panel, prog, **common)),
        ("instrument_use_after", lambda: ind.instrument_use_after(panel, prog, reach_window=params["reach_window"],
                                                                   last_year=params["last_year"],
                                                                   rules=params["disclosure"])),
        ("regional_reach", lambda: ind.regional_reach(panel, prog, link, rules=params["disclosure"])),
        ("export_values", lambda: ind.export_values(panel, prog, **common)),
        ("participant_counts", lambda: ind.participant_counts(link, prog, rules=params["disclosure"])),
    ]
    parts = []
    with _Clock() as c:
        for name, call in calls:
            t0 = time.perf_counter()
            call()
            parts.append(f"{name} {time.perf_counter() - t0:.1f}s")
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(panel), "note": "; ".join(parts)}


def _w_prep(spec: dict) -> dict:
    """Write the identical input files every implementation reads: did.parquet, match.parquet, reference ATTs."""
    import numpy as np
    import pandas as pd

    from reach.panel import read_panel

    gcol = f"g_{PROGRAMME}"
    cols = ["firm_id", "be_id", "year", gcol, OUTCOME, "log_employees", "sbi_section", *MATCH_COVARIATES]
    panel = read_panel(spec["work_dir"])[list(dict.fromkeys(cols))]
    years = np.sort(panel["year"].unique())
    # a balanced panel: R did (and its ports) drop units not observed in every period when panel=True,
    # so every implementation gets the same balanced file and nobody's balancing is timed
    n_years = panel.groupby("firm_id")["year"].transform("size")
    did = panel.loc[n_years == len(years), ["firm_id", "year", gcol, OUTCOME, "log_employees"]]
    did = did.rename(columns={gcol: "g"}).sort_values(["firm_id", "year"], ignore_index=True)
    did["firm_id"] = did["firm_id"].astype("int64")
    did["year"] = did["year"].astype("int64")
    did["g"] = did["g"].astype("int64")
    did[[OUTCOME, "log_employees"]] = did[[OUTCOME, "log_employees"]].astype("float64")
    did.to_parquet(Path(spec["out_dir"]) / "did.parquet", index=False)
    ref = {name: _reference_att_gt(did, cg).to_dict("list")
           for name, (cg, xf, _) in DID_SPECS.items() if xf is None and name in ("nevertreated", "notyettreated")}
    (Path(spec["out_dir"]) / "reference_att_gt.json").write_text(json.dumps(ref))

    # one cohort for matching: its firms in their first-use year (covariates are lags, i.e. measured before)
    # against never-users in the same year
    users = panel.loc[(panel[gcol] > 0) & (panel["year"] == panel[gcol])]
    cohort = int(users[gcol].value_counts().idxmax()) if len(users) else int(years[len(years) // 2])
    m = panel.loc[(panel["year"] == cohort) & ((panel[gcol] == cohort) | (panel[gcol] == 0))].copy()
    m["treated"] = (m[gcol] == cohort).astype("int64")
    n_all = len(m)
    m = m.dropna(subset=MATCH_COVARIATES + MATCH_EXACT + [OUTCOME])
    m = m[["firm_id", "treated", *MATCH_EXACT, *MATCH_COVARIATES, OUTCOME]].reset_index(drop=True)
    m["sbi_section"] = m["sbi_section"].astype(str)
    m.to_parquet(Path(spec["out_dir"]) / "match.parquet", index=False)
    return {"seconds": 0.0, "rss_before_mb": _rss_now_mb(), "n_rows": len(did),
            "note": f"did: {did['firm_id'].nunique():,} firms balanced over {len(years)} years; matching: cohort "
                    f"{cohort}, {int(m['treated'].sum()):,} treated, {int((m['treated'] == 0).sum()):,} controls "
                    f"({n_all - len(m):,} rows with missing covariates excluded)",
            "cohort": cohort, "n_did_firms": int(did["firm_id"].nunique()), "n_match": len(m)}


def _reference_att_gt(did, control_group: str):
    """Independent no-covariate ATT(g,t), varying base period, as R ``did`` defines it.

    Without covariates the doubly robust, IPW and regression estimators all
    reduce to a difference of mean changes,

    .. math:: \\widehat{ATT}(g,t) = \\bar{\\Delta Y}_{G=g} - \\bar{\\Delta Y}_{C}, \\quad
              \\Delta Y = Y_t - Y_b,

    with base :math:`b = g-1` for :math:`t \\ge g` and :math:`b = t-1` before
    (varying base), and controls :math:`C` the never-treated (``G = 0``) or
    also the not-yet-treated (``G > \\max(t, b)``, not in cohort g). Units first
    treated in the first period are dropped, as in R ``did``.
    """
    import numpy as np
    import pandas as pd

    years = np.sort(did["year"].unique())
    wide = did.pivot(index="firm_id", columns="year", values=OUTCOME).to_numpy()
    g = did.groupby("firm_id", sort=True)["g"].first().to_numpy()
    g = np.where(g > years[-1], 0, g)
    keep = ~((g > 0) & (g <= years[0]))
    wide, g = wide[keep], g[keep]
    out = {"group": [], "time": [], "estimate": []}
    for gg in np.sort(np.unique(g[g > 0])):
        treated = g == gg
        for j in range(1, len(years)):
            t = years[j]
            b = years[j - 1] if t < gg else gg - 1
            if b < years[0]:
                continue
            jb = int(np.searchsorted(years, b))
            ctrl = (g == 0) if control_group == "nevertreated" else ((g == 0) | ((g > max(t, b)) & (g != gg)))
            dy = wide[:, j] - wide[:, jb]
            out["group"].append(int(gg))
            out["time"].append(int(t))
            out["estimate"].append(float(dy[treated].mean() - dy[ctrl].mean()))
    return pd.DataFrame(out)


def _did_frame(spec: dict):
    import pandas as pd

    return pd.read_parquet(Path(spec["out_dir"]) / "did.parquet")


def _w_att_gt_reach(spec: dict) -> dict:
    from reach.did import att_gt

    df = _did_frame(spec)
    cg, xf, boot = DID_SPECS[spec["spec"]]
    with _Clock() as c:
        r = att_gt(df, yname=OUTCOME, tname="year", idname="firm_id", gname="g", xformla=xf, control_group=cg,
                   est_method="dr", bootstrap=boot, biters=int(spec.get("biters", 999)), seed=0)
    t = r.tidy()
    t[["group", "time", "estimate", "std_error"]].to_csv(spec["estimates"], index=False)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df)}


def _w_att_gt_reference(spec: dict) -> dict:
    df = _did_frame(spec)
    cg, _, _ = DID_SPECS[spec["spec"]]
    with _Clock() as c:
        r = _reference_att_gt(df, cg)
    r.assign(std_error=float("nan")).to_csv(spec["estimates"], index=False)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df)}


def _w_att_gt_csdid(spec: dict) -> dict:
    import pandas as pd
    from csdid.att_gt import ATTgt

    df = _did_frame(spec)
    cg, xf, boot = DID_SPECS[spec["spec"]]
    with _Clock() as c:
        m = ATTgt(yname=OUTCOME, tname="year", idname="firm_id", gname="g", data=df, control_group=[cg],
                  xformla=None if xf is None else f"{OUTCOME} {xf}",
                  biters=int(spec.get("biters", 999))).fit(est_method="dr", bstrap=boot)
    r = m.results
    pd.DataFrame({"group": r["group"], "time": r["year"], "estimate": r["att"], "std_error": r["se"]}).to_csv(
        spec["estimates"], index=False)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df)}


def _w_att_gt_moderndid(spec: dict) -> dict:
    import pandas as pd
    from moderndid import att_gt

    df = _did_frame(spec)
    cg, xf, boot = DID_SPECS[spec["spec"]]
    with _Clock() as c:
        r = att_gt(df, yname=OUTCOME, tname="year", idname="firm_id", gname="g", xformla=xf, control_group=cg,
                   est_method="dr", boot=boot, cband=False, biters=int(spec.get("biters", 999)), random_state=0)
    pd.DataFrame({"group": r.groups, "time": r.times, "estimate": r.att_gt, "std_error": r.se_gt}).to_csv(
        spec["estimates"], index=False)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df)}


def _w_att_gt_differences(spec: dict) -> dict:
    import numpy as np
    import pandas as pd
    from differences import ATTgt

    df = _did_frame(spec)
    cg, xf, boot = DID_SPECS[spec["spec"]]
    # differences codes never-treated as a missing cohort and needs the (entity, time) index
    d = df.assign(cohort=df["g"].where(df["g"] > 0).astype("float64")).set_index(["firm_id", "year"])
    formula = OUTCOME if xf is None else f"{OUTCOME} {xf}"
    with _Clock() as c:
        m = ATTgt(data=d, cohort_column="cohort")
        m.fit(formula=formula, est_method="dr", control_group={"nevertreated": "never_treated",
                                                                "notyettreated": "not_yet_treated"}[cg],
              boot_iterations=int(spec.get("biters", 999)) if boot else 0, random_state=0, progress_bar=False)
        res = m.results()
    res = res.reset_index()
    res.columns = ["_".join(str(x) for x in c if str(x)) if isinstance(c, tuple) else str(c) for c in res.columns]
    gcol = next(c for c in res.columns if c.lower().startswith("cohort"))
    tcol = next(c for c in res.columns if c.lower().startswith("time") or c.lower() == "year")
    ecol = next(c for c in res.columns if c.lower().endswith("att"))
    scol = next((c for c in res.columns if "std" in c.lower()), None)
    pd.DataFrame({"group": res[gcol].astype("int64"), "time": res[tcol].astype("int64"), "estimate": res[ecol],
                  "std_error": res[scol] if scol else np.nan}).to_csv(spec["estimates"], index=False)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df)}


def _w_aggte_reach(spec: dict) -> dict:
    from reach.did import aggte, att_gt

    df = _did_frame(spec)
    r = att_gt(df, yname=OUTCOME, tname="year", idname="firm_id", gname="g", control_group="nevertreated",
               est_method="dr", bootstrap=False, seed=0)
    with _Clock() as c:
        a = aggte(r, type="simple")
        d = aggte(r, type="dynamic")
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df),
            "note": f"simple ATT {a.overall_att:.4f} (se {a.overall_se:.4f}); dynamic overall {d.overall_att:.4f}"}


def _match_frame(spec: dict):
    import pandas as pd

    return pd.read_parquet(Path(spec["out_dir"]) / "match.parquet")


def _w_matching_reach(spec: dict) -> dict:
    from reach.matching import att, match

    df = _match_frame(spec)
    with _Clock() as c:
        m = match(df, treatment="treated", covariates=MATCH_COVARIATES, exact=MATCH_EXACT, method="nearest", ratio=1,
                  replace=False, caliper=0.2, ps_model="logit", seed=0)
        e = att(m, OUTCOME)
    md = m.matched_data()
    n_t = int((md["treated"] == 1).sum()) if "treated" in md else -1
    _write_json(spec["estimates"], {"att": float(e.estimate), "n_treated_matched": n_t, "n_matched_rows": len(md)})
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df),
            "note": f"ATT {e.estimate:.4f}; {n_t:,} treated matched of {int(df['treated'].sum()):,}"}


def _w_matching_psmpy(spec: dict) -> dict:
    """psmpy has no exact strata: it runs once per stratum (a loop over ~20 strata, not over firms)."""
    import numpy as np
    from psmpy import PsmPy

    df = _match_frame(spec)
    n_matched, diffs, skipped = 0, [], 0
    with _Clock() as c:
        for _, s in df.groupby(MATCH_EXACT[0], sort=True):
            if s["treated"].sum() < 2 or (s["treated"] == 0).sum() < 2:
                skipped += int(s["treated"].sum())
                continue
            d = s[["firm_id", "treated", *MATCH_COVARIATES]].reset_index(drop=True)
            psm = PsmPy(d, treatment="treated", indx="firm_id", exclude=[])
            psm.logistic_ps(balance=False)
            psm.kdtree_matched(matcher="propensity_logit", replacement=False, caliper=None, drop_unmatched=True)
            pairs = psm.matched_ids.dropna()
            y = s.set_index("firm_id")[OUTCOME]
            ids_t = pairs.iloc[:, 0].astype("int64").to_numpy()
            ids_c = pairs.iloc[:, 1].astype("int64").to_numpy()
            diffs.append(y.loc[ids_t].to_numpy() - y.loc[ids_c].to_numpy())
            n_matched += len(pairs)
    est = float(np.concatenate(diffs).mean()) if diffs else float("nan")
    _write_json(spec["estimates"], {"att": est, "n_treated_matched": n_matched})
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df),
            "note": f"ATT {est:.4f}; {n_matched:,} pairs; L2-penalised liblinear logit, no caliper, per stratum; "
                    f"{skipped} treated in strata with < 2 treated or controls not matched"}


def _w_matching_causalinference(spec: dict) -> dict:
    """causalinference matches on covariates (with replacement), not on a propensity score: a different spec."""
    import numpy as np
    from causalinference import CausalModel

    df = _match_frame(spec)
    ests, ns, skipped = [], [], 0
    k = len(MATCH_COVARIATES)
    with _Clock() as c:
        for _, s in df.groupby(MATCH_EXACT[0], sort=True):
            # causalinference needs more units than covariates in each group
            if s["treated"].sum() < k + 1 or (s["treated"] == 0).sum() < k + 1:
                skipped += int(s["treated"].sum())
                continue
            cm = CausalModel(s[OUTCOME].to_numpy(float), s["treated"].to_numpy(int),
                             s[MATCH_COVARIATES].to_numpy(float))
            cm.est_via_matching(matches=1)
            ests.append(float(cm.estimates["matching"]["att"]))
            ns.append(int(s["treated"].sum()))
    est = float(np.average(ests, weights=ns)) if ests else float("nan")
    _write_json(spec["estimates"], {"att": est, "n_treated_matched": int(sum(ns))})
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": len(df),
            "note": f"ATT {est:.4f}; covariate (not PS) 1-NN with replacement per stratum; {skipped} treated in "
                    f"strata with <= {k} treated or controls not matched"}


def _w_trade_file(spec: dict) -> dict:
    """Write a goods-level trade file of n rows: fixed firm x country pairs, growing goods lines."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, n_firms = int(spec["n_rows"]), int(spec["n_trade_firms"])
    rng = np.random.default_rng(0)
    iso = np.array(["DE", "BE", "FR", "GB", "US", "CN", "TR", "RO", "IN", "BG", "ZA", "RU", "MY", "MX", "TH",
                    "IT", "ES", "PL", "SE", "DK", "NO", "JP", "KR", "BR", "CA", "AU", "CH", "AT", "CZ", "HU"])
    be = np.array([f"{100000000 + i:09d}" for i in range(n_firms)])
    gs2 = np.array([f"{k:02d}" for k in range(1, 98)])
    path = Path(spec["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("BE_ID", pa.string()), ("Land_HB", pa.string()), ("GS2", pa.string()),
                        ("Uitvoer", pa.float64()), ("Invoer", pa.float64())])
    step = 1_000_000
    with _Clock() as c, pq.ParquetWriter(path, schema) as w:
        for lo in range(0, n, step):
            k = min(step, n - lo)
            f = rng.integers(0, n_firms, k)
            # each firm trades with at most 6 countries: the aggregate has <= 6 x n_firms rows whatever n
            ctry = (f * 7 + rng.integers(0, 6, k)) % len(iso)
            w.write_table(pa.table({"BE_ID": be[f], "Land_HB": iso[ctry], "GS2": gs2[rng.integers(0, 97, k)],
                                    "Uitvoer": rng.exponential(1e4, k), "Invoer": rng.exponential(1e4, k)},
                                   schema=schema), row_group_size=250_000)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": n}


def _w_trade_reach(spec: dict) -> dict:
    from reach.io import load_inputs

    params = _stub_params(spec["data_dir"], **{"first_year": int(spec["year"]), "last_year": int(spec["year"]),
                                               "inputs.trade.pattern": "IHG/IHG_per_BE_ID{year}V*.parquet",
                                               "inputs.trade.chunksize": int(spec.get("chunksize", 500_000))})
    with _Clock() as c:
        inputs = load_inputs(params)
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": int(spec["n_rows"]),
            "note": f"{len(inputs.trade):,} be_id x country rows after aggregation (whole load_inputs timed)"}


def _w_trade_naive(spec: dict) -> dict:
    import pandas as pd

    path = next((Path(spec["data_dir"]) / "IHG").glob(f"IHG_per_BE_ID{spec['year']}V*.parquet"))
    with _Clock() as c:
        df = pd.read_parquet(path, columns=["BE_ID", "Land_HB", "Uitvoer", "Invoer"])
        agg = df.groupby(["BE_ID", "Land_HB"], sort=False)[["Uitvoer", "Invoer"]].sum()
    return {"seconds": c.seconds, "rss_before_mb": c.rss_before, "n_rows": int(spec["n_rows"]),
            "note": f"{len(agg):,} rows after aggregation; whole file read into pandas"}


def _write_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj))


_WORKERS: dict[str, Callable[[dict], dict]] = {
    "synth": _w_synth, "load_link_panel": _w_load_link_panel, "indicators": _w_indicators, "prep": _w_prep,
    "att_gt:reach": _w_att_gt_reach, "att_gt:numpy-reference": _w_att_gt_reference, "att_gt:csdid": _w_att_gt_csdid,
    "att_gt:moderndid": _w_att_gt_moderndid, "att_gt:differences": _w_att_gt_differences, "aggte": _w_aggte_reach,
    "matching:reach": _w_matching_reach, "matching:psmpy": _w_matching_psmpy,
    "matching:causalinference": _w_matching_causalinference, "trade_file": _w_trade_file,
    "trade:reach": _w_trade_reach, "trade:naive": _w_trade_naive,
}


def _worker_main(spec_path: str) -> int:
    """Entry point of a stage subprocess: run one worker, write its result (or its error) next to the spec."""
    spec = json.loads(Path(spec_path).read_text())
    cap = spec.get("mem_cap_gb")
    if cap:
        # a runaway peer gets a MemoryError instead of taking the (shared) machine down
        lim = int(float(cap) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    out: dict[str, Any]
    try:
        import warnings

        warnings.simplefilter("ignore")
        out = {"status": "ok", **_WORKERS[spec["worker"]](spec)}
    except BaseException as exc:  # a benchmark records every failure and goes on
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out = {"status": "error", "error": last[:300], "traceback": traceback.format_exc()[-3000:]}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MB
    Path(spec["result"]).write_text(json.dumps(out, default=str))
    return 0


# ----------------------------------------------------------------------------- parent side
def _probe(python: str, modules: Sequence[str]) -> dict[str, str | None]:
    """Version of each module importable by ``python`` (None when it is not)."""
    code = ("import importlib.util, importlib.metadata, json, sys\n"
            "out = {}\n"
            "for m in sys.argv[1:]:\n"
            "    ok = importlib.util.find_spec(m) is not None\n"
            "    try: v = importlib.metadata.version(m) if ok else None\n"
            "    except Exception: v = 'unknown' if ok else None\n"
            "    out[m] = v\n"
            "print(json.dumps(out))\n")
    try:
        r = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=60,
                           cwd=tempfile.gettempdir())
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {m: None for m in modules}


def _candidate_pythons() -> list[str]:
    out = [sys.executable]
    env = os.environ.get("REACH_BENCH_PYTHON")
    if env:
        out.append(env)
    venv = _REPO / ".venv-bench" / "bin" / "python"
    if venv.is_file():
        out.append(str(venv))
    return list(dict.fromkeys(out))


def _find_peers(modules: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Module -> (python, version), first interpreter that imports it."""
    found: dict[str, tuple[str, str]] = {}
    for py in _candidate_pythons():
        missing = [m for m in modules if m not in found]
        if not missing:
            break
        for m, v in _probe(py, missing).items():
            if v is not None:
                found[m] = (py, v)
    return found


def _run_stage(worker: str, spec: dict, scratch: Path, *, python: str | None = None, timeout: float = 600,
               mem_cap_gb: float | None = None) -> dict:
    """Run one worker in a fresh subprocess; return its result with status ok/error/timeout and wall time."""
    scratch.mkdir(parents=True, exist_ok=True)
    tag = f"{worker.replace(':', '_')}_{spec.get('spec', '')}_{time.monotonic_ns()}".replace("+", "_")
    spec = {**spec, "worker": worker, "result": str(scratch / f"{tag}.result.json"), "mem_cap_gb": mem_cap_gb}
    spec_path = scratch / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    # import reach from this checkout even in a peer interpreter that does not have it installed
    code = f"import sys; sys.path[:0] = [{str(_SRC)!r}, {str(_BENCH)!r}]; from harness import _worker_main; " \
           f"sys.exit(_worker_main(sys.argv[1]))"
    t0 = time.perf_counter()
    proc = subprocess.Popen([python or sys.executable, "-c", code, str(spec_path)], cwd=str(scratch),
                            stdout=subprocess.DEVNULL, stderr=open(scratch / f"{tag}.stderr", "w"),
                            start_new_session=True)
    ru = None
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group, which we started
            except ProcessLookupError:
                pass
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return {"status": "timeout", "wall": time.perf_counter() - t0, "peak_rss_mb": ru.ru_maxrss / _MB,
                    "error": f"killed after {timeout:.0f} s"}
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    res_path = Path(spec["result"])
    if res_path.is_file():
        out = json.loads(res_path.read_text())
    else:
        err = (scratch / f"{tag}.stderr").read_text()[-300:].strip().splitlines()
        out = {"status": "error", "error": f"exit code {proc.returncode}" + (f": {err[-1]}" if err else ""),
               "peak_rss_mb": ru.ru_maxrss / _MB}
    out["wall"] = wall
    return out


def machine_info(peer_versions: dict[str, str] | None = None) -> dict:
    """The machine and versions a bench ran on (nproc, memory, CPU model, Python and package versions)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    versions = {}
    for m in ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "statsmodels", "pyreadstat"):
        try:
            from importlib.metadata import version

            versions[m] = version(m)
        except Exception:
            versions[m] = None
    from reach import __version__

    return {"nproc": os.cpu_count(), "memory_gb": mem_gb, "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "reach": __version__, "versions": versions,
            "peers": dict(peer_versions or {}), "date": time.strftime("%Y-%m-%d %H:%M")}


def _compare_att(ours: Path, theirs: Path) -> tuple[float, str]:
    """Max |ATT(g,t) difference| over cells both estimate, and a verdict that also counts one-sided cells."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_csv(ours), pd.read_csv(theirs)
    m = a.merge(b, on=["group", "time"], how="outer", suffixes=("_a", "_b"))
    for c in ("estimate_a", "estimate_b", "std_error_a", "std_error_b"):
        # a peer may write None/objects for cells it could not estimate
        m[c] = pd.to_numeric(m[c], errors="coerce").astype("float64")
    fa, fb = np.isfinite(m["estimate_a"]), np.isfinite(m["estimate_b"])
    both = fa & fb
    if not both.any():
        return float("nan"), f"no (g,t) cell estimated by both ({int(fa.sum())} vs {int(fb.sum())})"
    diff = float((m.loc[both, "estimate_a"] - m.loc[both, "estimate_b"]).abs().max())
    se = (m.loc[both, "std_error_a"] - m.loc[both, "std_error_b"]).abs()
    txt = f"{int(both.sum())} cells estimated by both"
    if se.notna().any():
        txt += f", max |se diff| {float(se.max()):.2g}"
    only_a, only_b = int((fa & ~fb).sum()), int((fb & ~fa).sum())
    if only_a:
        txt += f"; {only_a} cells estimated by reach only (peer NaN or absent)"
    if only_b:
        txt += f"; {only_b} cells estimated by the peer only"
    verdict = "identical" if diff <= DID_TOL else "DIFFERENT"
    return diff, f"{verdict} (tol {DID_TOL:g}): {txt}"


def _row(n_firms, stage, spec, impl, res: dict, *, n_rows=None, note="") -> dict:
    status = res.get("status", "error")
    note = "; ".join(x for x in (res.get("note", ""), note, res.get("error", "") if status != "ok" else "") if x)
    return {"n_firms": n_firms, "n_rows": res.get("n_rows", n_rows), "stage": stage, "spec": spec, "impl": impl,
            "status": status, "seconds": res.get("seconds") if status == "ok" else None,
            "peak_rss_mb": res.get("peak_rss_mb"), "rss_before_mb": res.get("rss_before_mb"),
            "ratio_ours_theirs": None, "max_abs_diff": None, "agreement": "", "note": note}


def _check_sizes(sizes: Iterable[int]) -> list[int]:
    try:
        out = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise ValueError(f"sizes must be positive integers (numbers of firms); got {sizes!r}") from None
    if not out or any(s <= 0 for s in out):
        raise ValueError(f"sizes must be positive integers (numbers of firms); got {out!r}")
    return sorted(set(out))


def run_bench(sizes: Sequence[int], out_dir: str | Path = "bench/results", peers: bool = True, *,
              trade_rows: Sequence[int] = (1_000_000, 5_000_000, 20_000_000), n_trade_firms: int = 100_000,
              timeout: float = 1800, peer_timeout: float = 300, biters: int = 999,
              did_specs: Sequence[str] = tuple(DID_SPECS), full_suite_max: int | None = None, work_dir: str | Path | None = None, merge: bool = True,
              mem_cap_gb: float = 16.0, log: Callable[[str], None] = print):
    """Run the benchmarks and write ``results.csv``, ``results.md`` and ``scaling.png``.

    Parameters
    ----------
    sizes : sequence of int
        Numbers of firms (``reach.synth.make_stub(n_firms=...)``).
    out_dir : str or Path
        Folder for the results (created).
    peers : bool
        Also run the peer packages (:data:`PEERS_DID`, :data:`PEERS_MATCHING`)
        that are importable (see module docstring); ``False`` runs reach only.
    trade_rows : sequence of int
        Lengths of the goods-level trade file for the ``trade`` stage (empty: skip it).
    n_trade_firms : int
        Distinct firms in the trade file; each trades with at most six countries,
        so the aggregate stays the same size as the file grows.
    timeout, peer_timeout : float
        Seconds after which a stage of reach / of a peer is killed and recorded as ``timeout``.
    biters : int
        Bootstrap draws for the ``nevertreated+boot`` specification.
    did_specs : sequence of str
        Which :data:`DID_SPECS` to run (default: all).
    full_suite_max : int, optional
        Above this many firms only the fast stages run (panel build, att_gt
        without bootstrap, aggte, matching); None runs every stage at every size.
    work_dir : str or Path, optional
        Scratch folder for generated data (default: a temporary folder, removed afterwards).
    merge : bool
        Keep rows of an existing ``results.csv`` for sizes not run now.
    mem_cap_gb : float
        Address-space limit of each stage process (a runaway peer fails instead of exhausting memory).
    log : callable
        Progress messages.

    Returns
    -------
    DataFrame
        One row per size x stage x specification x implementation, columns
        :data:`RESULT_COLUMNS`.

    Notes
    -----
    ``ratio_ours_theirs`` is :math:`t_{reach} / t_{peer}` on the same file and
    specification (below 1: reach is faster). For ``att_gt``, ``max_abs_diff``
    is :math:`\\max_{g,t} |\\widehat{ATT}_{reach}(g,t) - \\widehat{ATT}_{peer}(g,t)|`
    over common cells, and the estimates agree when it is at most
    :data:`DID_TOL`. Matching peers cannot run the same specification (no
    exact strata, other propensity models), so their row reports the matched
    ATT side by side rather than an identity check.

    Examples
    --------
    >>> run_bench([10_000], out_dir="bench/results", peers=False, trade_rows=())   # doctest: +SKIP
    """
    import pandas as pd

    sizes = _check_sizes(sizes)
    unknown = [x for x in did_specs if x not in DID_SPECS]
    if unknown:
        raise ValueError(f"did_specs: unknown {unknown}; allowed {list(DID_SPECS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trade_rows = sorted({int(r) for r in trade_rows})
    own_tmp = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="reach-bench-")) if own_tmp else Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    found = _find_peers(PEERS_DID + PEERS_MATCHING) if peers else {}
    if peers:
        missing = [m for m in PEERS_DID + PEERS_MATCHING if m not in found]
        log(f"peers found: {', '.join(f'{m} {v[1]}' for m, v in found.items()) or 'none'}"
            + (f"; not importable (skipped): {', '.join(missing)}" if missing else ""))
    rows: list[dict] = []
    gave_up: set[str] = set()  # implementations that timed out: not tried at larger sizes

    def stage(worker, spec, scratch, *, python=None, to=None, key=None):
        if key and key in gave_up:
            return {"status": "skipped", "error": "timed out at a smaller size"}
        log(f"  {worker} {spec.get('spec', '')}".rstrip() + " ...")
        res = _run_stage(worker, spec, scratch, python=python, timeout=to or timeout, mem_cap_gb=mem_cap_gb)
        log(f"    {res['status']}" + (f" {res.get('seconds', 0):.2f}s, peak {res.get('peak_rss_mb', 0):.0f} MB"
                                      if res["status"] == "ok" else f": {res.get('error', '')}"))
        if res["status"] == "timeout" and key:
            gave_up.add(key)
        return res

    try:
        for n in sizes:
            log(f"size {n:,} firms")
            base = root / f"n{n}"
            data_dir, work, scratch = base / "data", base / "work", base / "scratch"
            for d in (data_dir, work, scratch):
                d.mkdir(parents=True, exist_ok=True)
            common = {"n_firms": n, "data_dir": str(data_dir), "work_dir": str(work), "out_dir": str(base),
                      "biters": biters}
            full = full_suite_max is None or n <= full_suite_max
            res = stage("synth", common, scratch)
            rows.append(_row(n, "synth", "", "reach", res))
            if res["status"] != "ok":
                continue
            res = stage("load_link_panel", common, scratch)
            rows.append(_row(n, "load_link_panel", "", "reach", res))
            if res["status"] != "ok":
                continue
            if full:
                rows.append(_row(n, "indicators", PROGRAMME, "reach", stage("indicators", common, scratch)))
            prep = stage("prep", common, scratch)
            if prep["status"] != "ok":
                rows.append(_row(n, "prep", "", "reach", prep))
                continue
            log(f"    {prep.get('note', '')}")
            n_did = prep.get("n_rows")

            # --- att_gt: reach, an independent numpy reference, and the peers, on did.parquet
            for spec_name, (_, xf, boot) in DID_SPECS.items():
                if spec_name not in did_specs or (not full and (boot or xf)):
                    continue
                est = {}
                sp = {**common, "spec": spec_name}
                res = stage("att_gt:reach", {**sp, "estimates": str(scratch / f"att_reach_{spec_name}.csv")}, scratch)
                rows.append(_row(n, "att_gt", spec_name, "reach", res, n_rows=n_did))
                ours = rows[-1]
                if res["status"] == "ok":
                    est["reach"] = scratch / f"att_reach_{spec_name}.csv"
                impls = []
                if xf is None and not boot:
                    impls.append(("numpy-reference", sys.executable))
                if peers and spec_name in PEER_DID_SPECS:
                    impls += [(m, found[m][0]) for m in PEERS_DID if m in found]
                for impl, py in impls:
                    path = scratch / f"att_{impl}_{spec_name}.csv"
                    r = stage(f"att_gt:{impl}", {**sp, "estimates": str(path)}, scratch, python=py,
                              to=peer_timeout if impl != "numpy-reference" else timeout, key=f"att_gt:{impl}:{spec_name}")
                    row = _row(n, "att_gt", spec_name, impl, r, n_rows=n_did)
                    if r["status"] == "ok" and "reach" in est:
                        if ours["seconds"] and row["seconds"]:
                            row["ratio_ours_theirs"] = ours["seconds"] / row["seconds"]
                        try:
                            row["max_abs_diff"], row["agreement"] = _compare_att(est["reach"], path)
                        except Exception as exc:  # a comparison failure must not lose the run
                            row["agreement"] = f"comparison failed: {type(exc).__name__}: {exc}"[:200]
                    elif r["status"] in ("timeout", "skipped") and ours["seconds"]:
                        row["agreement"] = f"peer > {peer_timeout:.0f} s: ratio < {ours['seconds'] / peer_timeout:.3g}"
                    rows.append(row)
                    if r["status"] == "ok" and impl in PEERS_DID and "reach" in est:
                        log(f"    vs reach: ratio {row['ratio_ours_theirs'] or float('nan'):.3g}, {row['agreement']}")
            rows.append(_row(n, "aggte", "simple+dynamic", "reach", stage("aggte", common, scratch), n_rows=n_did))

            # --- matching on one cohort with exact strata
            res = stage("matching:reach", {**common, "estimates": str(scratch / "match_reach.json")}, scratch)
            rows.append(_row(n, "matching", "nearest 1:1, exact sbi_section, caliper 0.2", "reach", res,
                             n_rows=prep.get("n_match")))
            ours = rows[-1]
            if peers and full:
                for impl in PEERS_MATCHING:
                    if impl not in found:
                        continue
                    path = scratch / f"match_{impl}.json"
                    r = stage(f"matching:{impl}", {**common, "estimates": str(path)}, scratch,
                              python=found[impl][0], to=peer_timeout, key=f"matching:{impl}")
                    row = _row(n, "matching", "per stratum (no exact option)", impl, r, n_rows=prep.get("n_match"))
                    if r["status"] == "ok" and ours["status"] == "ok":
                        row["ratio_ours_theirs"] = ours["seconds"] / row["seconds"] if row["seconds"] else None
                        try:
                            a = json.loads((scratch / "match_reach.json").read_text())
                            b = json.loads(path.read_text())
                            row["max_abs_diff"] = abs(a["att"] - b["att"])
                            row["agreement"] = (f"not the same spec: matched ATT {a['att']:.4f} (reach) vs "
                                                f"{b['att']:.4f}; treated matched {a['n_treated_matched']:,} vs "
                                                f"{b['n_treated_matched']:,}")
                        except Exception as exc:  # a comparison failure must not lose the run
                            row["agreement"] = f"comparison failed: {type(exc).__name__}: {exc}"[:200]
                    elif r["status"] in ("timeout", "skipped") and ours["seconds"]:
                        row["agreement"] = f"peer > {peer_timeout:.0f} s"
                    rows.append(row)
            if own_tmp:
                shutil.rmtree(base, ignore_errors=True)
            _write_outputs(rows, out_dir, sizes, trade_rows, merge, found)  # a crash later keeps this size

        # --- trade: streaming aggregation, bounded memory as rows grow (reuses the smallest size's stub)
        if trade_rows:
            log("trade scaling")
            tbase = root / "trade"
            stub = tbase / "stub"
            scratch = tbase / "scratch"
            scratch.mkdir(parents=True, exist_ok=True)
            res = _run_stage("synth", {"n_firms": min(2_000, sizes[0]), "data_dir": str(stub)}, scratch)
            if res["status"] != "ok":
                rows.append(_row(None, "trade", "stub for trade", "reach", res))
            else:
                for nr in trade_rows:
                    data = tbase / f"rows{nr}"
                    for sub in ("ABR", "KvK", "RVO", "Programmas"):
                        if not (data / sub).exists():
                            data.mkdir(parents=True, exist_ok=True)
                            (data / sub).symlink_to(stub / sub)
                    spec = {"n_rows": nr, "n_trade_firms": n_trade_firms, "year": 2019, "data_dir": str(data),
                            "path": str(data / "IHG" / "IHG_per_BE_ID2019V1.parquet")}
                    f = stage("trade_file", spec, scratch)
                    if f["status"] != "ok":
                        rows.append(_row(None, "trade", "write file", "reach", f, n_rows=nr))
                        continue
                    for impl in ("reach", "naive"):
                        r = stage(f"trade:{impl}", spec, scratch, key=f"trade:{impl}")
                        rows.append(_row(None, "trade", "goods lines -> be_id x country (parquet, chunks 500k)",
                                         impl, r, n_rows=nr))
                    shutil.rmtree(data / "IHG", ignore_errors=True)
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)

    df = _write_outputs(rows, out_dir, sizes, trade_rows, merge, found)
    log(f"wrote {out_dir / 'results.csv'}, {out_dir / 'results.md'}, {out_dir / 'scaling.png'}")
    return df


def _write_outputs(rows, out_dir: Path, sizes, trade_rows, merge: bool, found: dict):
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    csv = out_dir / "results.csv"
    if merge and csv.is_file():
        old = pd.read_csv(csv)
        if list(old.columns) == list(RESULT_COLUMNS):
            keep_old = ~old["n_firms"].isin(sizes)
            if trade_rows:
                keep_old &= ~((old["stage"] == "trade") & old["n_rows"].isin(trade_rows))
            df = pd.concat([old[keep_old], df], ignore_index=True)
    df = df.sort_values(["stage", "n_firms", "n_rows"], kind="stable", na_position="last", ignore_index=True)
    df.to_csv(csv, index=False)
    info = machine_info({m: v for m, (_, v) in found.items()})
    (out_dir / "machine.json").write_text(json.dumps(info, indent=2))
    (out_dir / "results.md").write_text(_markdown(df, info))
    _plot(df, out_dir / "scaling.png")
    return df


def _fmt(x, spec: str) -> str:
    try:
        if x is None or x != x:
            return ""
    except TypeError:
        return str(x)
    return format(x, spec)


def _markdown(df, info: dict) -> str:
    lines = [
        "# reach benchmarks", "",
        f"Machine: {info['nproc']} cores, {info['memory_gb']} GB, {info['cpu']}; {info['platform']}; "
        f"Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v) + ".",
        "Peers: " + (", ".join(f"{k} {v}" for k, v in info["peers"].items()) or "none") + f". Run {info['date']}.",
        "",
        "`seconds`: the stage's timed call only (data already in memory); `peak MB`: peak resident memory of the "
        "stage's own process (interpreter + its input data + the call); `ratio`: reach seconds / peer seconds "
        "(< 1: reach faster); `max |diff|`: largest absolute difference of ATT(g,t) from reach's.", "",
        "| stage | firms | rows | spec | impl | status | seconds | peak MB | ratio | max abs diff | agreement | note |",
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join([
            r.stage, _fmt(r.n_firms, ",.0f"), _fmt(r.n_rows, ",.0f"), str(r.spec if r.spec == r.spec else ""),
            r.impl, r.status, _fmt(r.seconds, ".3g"), _fmt(r.peak_rss_mb, ",.0f"), _fmt(r.ratio_ours_theirs, ".3g"),
            _fmt(r.max_abs_diff, ".2g"), str(r.agreement if r.agreement == r.agreement else ""),
            str(r.note if r.note == r.note else "").replace("|", "/"),
        ]) + " |")
    return "\n".join(lines) + "\n"


def _plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df["status"] == "ok") & (df["stage"] != "prep")]
    firm = ok[ok["stage"] != "trade"].dropna(subset=["n_firms"])
    # every reach stage; peers only on the headline att_gt spec and for matching, to keep the plot readable
    show = (firm["impl"] == "reach") | (firm["stage"] == "matching") | (
        (firm["stage"] == "att_gt") & (firm["spec"] == "nevertreated"))
    firm = firm[show]
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.5))
    colours = plt.get_cmap("tab20").colors
    handles = []
    for i, ((stage, spec, impl), g) in enumerate(firm.groupby(["stage", "spec", "impl"], dropna=False, sort=True)):
        g = g.sort_values("n_firms")
        spec_txt = spec if isinstance(spec, str) and spec else ""
        label = f"{stage} {spec_txt} [{impl}]".replace("  ", " ")
        style = "-" if impl == "reach" else ("--" if stage == "att_gt" else ":")
        kw = dict(color=colours[i % len(colours)], marker="o" if impl == "reach" else "s", ms=4, lw=1.6)
        (h,) = axes[0].plot(g["n_firms"], g["seconds"].clip(lower=1e-3), style, label=label, **kw)
        axes[1].plot(g["n_firms"], g["peak_rss_mb"], style, **kw)
        handles.append(h)
    for ax, ylab, title in zip(axes[:2], ("seconds (timed call)", "peak RSS of the stage process (MB)"),
                               ("time vs firms (solid: reach; dashed/dotted: peers)", "memory vs firms")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("firms")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    tr = ok[ok["stage"] == "trade"]
    for impl, g in tr.groupby("impl"):
        g = g.sort_values("n_rows")
        axes[2].plot(g["n_rows"], g["peak_rss_mb"], marker="o", label=f"peak RSS, MB [{impl}]")
        axes[2].plot(g["n_rows"], g["seconds"], ":", marker="s", label=f"seconds [{impl}]")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("goods-level trade rows (one year)")
    axes[2].set_title("trade file: streaming (reach) vs whole-file read (naive)")
    axes[2].grid(True, which="both", alpha=0.3)
    if len(tr):
        axes[2].legend(fontsize=8)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.02 + 0.028 * ((len(handles) + 3) // 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # python bench/harness.py --stage spec.json (internal), or sizes for a quick run
    if len(sys.argv) == 3 and sys.argv[1] == "--stage":
        sys.exit(_worker_main(sys.argv[2]))
    run_bench([int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "10000").split(",")])
