"""Design-based placebo (reach.power.placebo) and subgroup effects (reach.heterogeneity): timing and results.

Not a test. Runs on the committed stub (both programmes, with the settings of params/stub.yaml) and on
synthetic balanced panels of growing size (time per placebo draw), and writes bench/placebo.md.

    PYTHONPATH=src python bench/placebo_bench.py [--draws 100] [--sizes 20000,100000] [--out bench/placebo.md]

Every placebo draw reuses the never-user panel built once and the vectorised estimator
(reach.did.att_gt + aggte); only the cohort column changes between draws.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def stub_panel():
    from reach.io import load_inputs
    from reach.link import link_participants
    from reach.panel import build_panel
    from reach.params import load_params

    params = load_params(ROOT / "params" / "stub.yaml")
    inputs = load_inputs(params)
    link = link_participants(inputs)
    return params, build_panel(inputs, link), link


def synthetic(n: int, T: int = 10, n_users: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Balanced panel: x selects users and tilts trends (parallel trends given x); no effect."""
    rng = np.random.default_rng(seed)
    n_users = n_users or max(40, n // 30)
    x = rng.normal(size=n)
    users = np.argsort(-(x + rng.logistic(size=n)))[:n_users]
    g = np.zeros(n, dtype=np.int64)
    g[users] = rng.choice([2018, 2019, 2020, 2021], n_users)
    years = np.arange(2014, 2014 + T)
    p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "year": np.tile(years, n), "g": np.repeat(g, T),
                      "x": np.repeat(x, T)})
    p["y"] = np.repeat(rng.normal(size=n) + x, T) + 0.2 * p["x"] * (p["year"] - 2014) + rng.normal(size=n * T)
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=100, help="placebo draws per stub configuration")
    ap.add_argument("--size-draws", type=int, default=10, help="draws per synthetic size (timing only)")
    ap.add_argument("--sizes", default="20000,100000", help="synthetic firms, comma separated")
    ap.add_argument("--out", default=str(ROOT / "bench" / "placebo.md"))
    a = ap.parse_args(argv)

    from reach import did
    from reach.heterogeneity import DEFAULT_SUBGROUPS, dose_split, heterogeneity
    from reach.panel import analysis_sample
    from reach.power import analytic_mde, placebo

    params, panel, link = stub_panel()
    kw = dict(xformla=params["xformla"], control_group=params["control_group"], est_method=params["est_method"])
    stub_rows, het_rows = [], []
    for prog in ("tinl", "nlib"):
        s = analysis_sample(panel, prog, first_year=params["first_year"], last_year=params["last_year"])
        est, _ = did.drop_without_pre_period(s.panel, f"g_{prog}")
        r = did.att_gt(est, "log_exports", "year", "firm_id", f"g_{prog}", biters=params["biters"], seed=params["seed"],
                       progress=False, **kw)
        simple = did.aggte(r, "simple")
        r_an = did.att_gt(est, "log_exports", "year", "firm_id", f"g_{prog}", bootstrap=False, biters=1, progress=False, **kw)
        m_boot, m_an = analytic_mde(simple), analytic_mde(did.aggte(r_an, "simple"))
        for label, covs in (("uniform", None), ("profile: size, instruments", ["log_employees", "instr_ever_before"]),
                            ("profile: notebook 03 covariates", params["covariates"])):
            t0 = time.perf_counter()
            res = placebo(est, "log_exports", gname=f"g_{prog}", covariates=covs, n_draws=a.draws, seed=0,
                          progress=False, **kw)
            sec = time.perf_counter() - t0
            t = res.tidy().set_index("measure")["value"]
            stub_rows.append({"programme": prog, "draws": label, "n_draws": a.draws, "seconds": round(sec, 1),
                              "s_per_draw": round(sec / a.draws, 3), "false_positive_rate": t["false_positive_rate"],
                              "band": f"[{res.band[0]:.3f}, {res.band[1]:.3f}]", "calibrated": res.calibrated,
                              "mean_placebo": round(t["mean_placebo_estimate"], 4),
                              "analytic_mde": round(t["analytic_mde"], 4), "empirical_mde_sd": round(t["empirical_mde_sd"], 4),
                              "empirical_mde_planted": round(t["empirical_mde_planted"], 4),
                              "run_mde_bootstrap_se": round(m_boot.mde, 4), "run_mde_analytic_se": round(m_an.mde, 4)})
            print(stub_rows[-1], flush=True)
        t0 = time.perf_counter()
        h = heterogeneity(est, "log_exports", DEFAULT_SUBGROUPS, gname=f"g_{prog}", target_group=params["target_group"],
                          rules=params["disclosure"], **kw)
        het_rows.append({"programme": prog, "what": "4 default subgroup dimensions", "seconds": round(time.perf_counter() - t0, 1),
                         "rows": len(h.tidy()), "suppressed": int(h.tidy()["status"].str.startswith("suppressed").sum())})
        if prog == "tinl":
            t0 = time.perf_counter()
            d = dose_split(est, "log_exports", link, programme="tinl", rules=params["disclosure"], **kw)
            het_rows.append({"programme": prog, "what": "dose split 1 vs 2+", "seconds": round(time.perf_counter() - t0, 1),
                             "rows": len(d.tidy()), "suppressed": int(d.tidy()["status"].str.startswith("suppressed").sum())})
            dose_pub = d.publishable()
        if prog == "tinl":
            het_pub = h.publishable()

    size_rows = []
    for n in [int(s) for s in a.sizes.split(",") if s]:
        p = synthetic(n)
        for xf, covs in ((None, None), ("~ x", ["x"])):
            t0 = time.perf_counter()
            res = placebo(p, "y", gname="g", covariates=covs, xformla=xf, n_draws=a.size_draws, seed=0, progress=False)
            sec = time.perf_counter() - t0
            size_rows.append({"firms": n, "years": 10, "pseudo_users": res.n_treated, "xformla": xf or "~1",
                              "n_draws": a.size_draws, "seconds": round(sec, 1), "s_per_draw": round(sec / a.size_draws, 3)})
            print(size_rows[-1], flush=True)

    def md(df: pd.DataFrame) -> str:
        return df.to_markdown(index=False, floatfmt=".4g") if _has_tabulate() else "```\n" + df.to_string(index=False) + "\n```"

    lines = [
        "# Placebo programmes, power and subgroup effects: benchmark",
        "",
        f"Generated by `bench/placebo_bench.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}. "
        "The machine is shared: times are indicative.",
        "",
        "## Placebo programmes on the stub",
        "",
        f"Estimator as `params/stub.yaml` (att_gt `{params['control_group']}`, `{params['est_method']}`, xformla "
        f"`{params['xformla']}`), outcome `log_exports`, analytic (influence-function) standard errors per draw. "
        "Pseudo-users are drawn among never-users with the programme's cohort sizes: uniformly, or proportional "
        "to the odds of a propensity model of users vs never-users. `run_mde_*`: the analytic MDE "
        "(2.80 x SE) of the real estimate with the bootstrap SE of notebook 04 and with the analytic SE.",
        "",
        md(pd.DataFrame(stub_rows)),
        "",
        "Reading (of the run committed here): with uniform draws the design's inference is calibrated for both "
        "programmes. Pseudo-users with TINL's profile on size and instrument use (TINL users are selected strongly "
        "on size) give placebo estimates centred above zero and a false-positive rate above its band: the "
        "conditional-parallel-trends adjustment (`~ log_employees`, base-year employees) does not fully absorb the "
        "size-dependent trends among the largest never-users. Drawing pseudo-users on lagged export outcomes "
        "(notebook 03's matching covariates) adds mean reversion: false-positive rates far above alpha for both "
        "programmes, a warning for any design that selects comparison firms on pre-period export levels and growth. "
        "The placebo MDEs (0.04-0.06 log points) are 2-4 times smaller than the real estimates' (`run_mde_*`): "
        "pseudo-users are drawn from the never-user pool itself, so they always have comparison firms like them, "
        "while the real users are larger than almost all never-users and the DR weights of the real estimate are far "
        "more extreme. Quote the analytic MDE of the real estimate; read the placebo as a check of the inference.",
        "",
        "## Time per placebo draw at larger scale (synthetic balanced panels, 10 years)",
        "",
        md(pd.DataFrame(size_rows)),
        "",
        "## Subgroup effects and dose split on the stub",
        "",
        md(pd.DataFrame(het_rows)),
        "",
        "TINL, default subgroups (publishable copy; suppressed rows blank):",
        "",
        md(het_pub[["dimension", "subgroup", "reference", "kind", "estimate", "std_error", "conf_low", "conf_high",
                    "n_treated", "status"]]),
        "",
        "TINL, dose split (descriptive, not causal for the dose):",
        "",
        md(dose_pub[["dimension", "subgroup", "reference", "kind", "estimate", "std_error", "conf_low", "conf_high",
                     "n_treated", "status"]]),
        "",
    ]
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
