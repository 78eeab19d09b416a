"""Tests of reach.did: golden numbers from R did, identities, planted effects, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reach.did import aggte, att_gt, cohort_from_treatment, did_2x2, event_study_plot, naive_difference, twfe

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
MPDTA = GOLDEN / "did_mpdta.csv"
REF = json.loads((GOLDEN / "did_mpdta.json").read_text(encoding="utf-8"))
TOL = REF["tolerances"]
POINT = TOL["point"]["abs"]
PVAL = TOL["pvalue"]["abs"]
SE_REL = TOL["bootstrap_se_rel"]["rel"]


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    return pd.read_csv(MPDTA)


def _fit(mpdta, scenario, **kw):
    call = REF["scenarios"][scenario]["call"]
    return att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", xformla=call["xformla"],
                  est_method=call["est_method"], control_group=call["control_group"], **kw)


@pytest.fixture(scope="module")
def fits(mpdta):
    return {s: _fit(mpdta, s, biters=999, seed=1) for s in ("reg_nocov", "dr_lpop", "dr_nocov_calendar")}


# --------------------------------------------------------------------------- golden: R did on mpdta
def test_mpdta_data_shape(mpdta):
    assert mpdta.shape == (2500, 6)
    assert mpdta.groupby("first.treat")["countyreal"].nunique().to_dict() == {0: 309, 2004: 20, 2006: 40, 2007: 131}


@pytest.mark.parametrize("scenario", ["reg_nocov", "dr_lpop"])
def test_att_gt_matches_r_did(fits, scenario):
    ref = np.array(REF["scenarios"][scenario]["att_gt"])
    t = fits[scenario].tidy()
    assert t[["group", "time"]].to_numpy().tolist() == ref[:, :2].astype(int).tolist()
    np.testing.assert_allclose(t["estimate"], ref[:, 2], atol=POINT)
    # R printed bootstrap SEs (one random run): our analytic SE, the bootstrap's large-biters limit, must agree
    # within that run's noise; our own bootstrap SE is checked against our analytic one (its own noise only:
    # comparing two independent bootstrap runs at a fixed tolerance would make the test depend on the seed)
    np.testing.assert_allclose(fits[scenario].se_analytic, ref[:, 3], rtol=SE_REL)
    np.testing.assert_allclose(t["std_error"], fits[scenario].se_analytic, rtol=SE_REL)


@pytest.mark.parametrize("scenario", ["reg_nocov", "dr_lpop"])
def test_pretest_matches_r_did(fits, scenario):
    p = fits[scenario].pretest()
    assert p["df"] == 5
    assert abs(p["pvalue"] - REF["scenarios"][scenario]["pretest_pvalue"]) <= PVAL


@pytest.mark.parametrize(
    "scenario,kind", [("reg_nocov", "dynamic"), ("reg_nocov", "group"), ("dr_lpop", "dynamic"), ("dr_nocov_calendar", "calendar")]
)
def test_aggte_matches_reference(fits, scenario, kind):
    ref = REF["scenarios"][scenario][kind]
    a = aggte(fits[scenario], type=kind, bootstrap=False)
    assert abs(a.overall_att - ref["overall"][0]) <= POINT
    assert a.overall_se == pytest.approx(ref["overall"][1], rel=SE_REL)
    by = np.array(ref["by_key"])
    assert a.keys.astype(int).tolist() == by[:, 0].astype(int).tolist()
    np.testing.assert_allclose(a.att, by[:, 1], atol=POINT)
    np.testing.assert_allclose(a.se, by[:, 2], rtol=SE_REL)
    t = a.tidy()
    assert list(t.columns) == ["type", "level", "key", "estimate", "std_error", "conf_low", "conf_high",
                               "pointwise_low", "pointwise_high", "n_treated", "n_control"]
    # simultaneous bands are at least as wide as pointwise ones
    assert (t["conf_high"] - t["conf_low"] >= t["pointwise_high"] - t["pointwise_low"] - 1e-12).all()


def test_simple_aggregation_is_cohort_size_weighted_mean(fits, mpdta):
    """Independent computation: simple ATT = post-cell ATTs weighted by cohort size."""
    r = fits["reg_nocov"]
    t = r.tidy()
    size = mpdta.drop_duplicates("countyreal")["first.treat"].value_counts()
    post = t[t["post"]]
    w = post["group"].map(size).to_numpy(dtype=float)
    expected = float(np.sum(post["estimate"] * w) / w.sum())
    a = aggte(r, "simple")
    assert a.overall_att == pytest.approx(expected, abs=1e-12)
    assert a.overall_att == pytest.approx(-0.0400, abs=POINT)  # R did vignette value for mpdta without covariates


def test_analytic_se_equals_two_sample_formula(mpdta):
    """Independent computation: without covariates se^2 = var1/n1 + var0/n0 of the outcome changes."""
    r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    wide = mpdta.pivot(index="countyreal", columns="year", values="lemp")
    g = mpdta.drop_duplicates("countyreal").set_index("countyreal")["first.treat"].reindex(wide.index)
    dy = wide[2006] - wide[2003]  # ATT(2004, 2006): base 2003
    d1, d0 = dy[g == 2004], dy[g == 0]
    expected = np.sqrt(d1.var(ddof=0) / len(d1) + d0.var(ddof=0) / len(d0))
    t = r.tidy().set_index(["group", "time"])
    assert t.loc[(2004, 2006), "std_error"] == pytest.approx(expected, rel=1e-10)
    assert t.loc[(2004, 2006), "estimate"] == pytest.approx(d1.mean() - d0.mean(), abs=1e-12)
    assert t.loc[(2004, 2006), "n_treated"] == 20 and t.loc[(2004, 2006), "n_control"] == 309


def test_bootstrap_se_close_to_analytic(fits):
    r = fits["dr_lpop"]
    np.testing.assert_allclose(r.se, r.se_analytic, rtol=SE_REL)
    assert 2.0 < r.crit_val < 4.0  # sup-t over 12 cells lies between the pointwise 1.96 and Bonferroni 2.87-ish region


# --------------------------------------------------------------------------- identities
def test_methods_identical_without_covariates(mpdta):
    est = {m: att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", est_method=m, bootstrap=False)
           for m in ("reg", "ipw", "dr")}
    for m in ("ipw", "dr"):
        np.testing.assert_allclose(est[m].att, est["reg"].att, atol=1e-12)
        np.testing.assert_allclose(est[m].se_analytic, est["reg"].se_analytic, rtol=1e-10)


def test_collinear_covariate_reported_not_crashed(mpdta):
    """A covariate collinear with the intercept leaves the cells missing, with a note (R would stop)."""
    d = mpdta.assign(c2=1.0)
    for m in ("reg", "ipw", "dr"):
        r = att_gt(d, "lemp", "year", "countyreal", "first.treat", xformla="~ c2", est_method=m, bootstrap=False)
        assert np.isnan(r.att).all() and any("could not be estimated" in n for n in r.notes)
    with pytest.raises(ValueError, match="na_rm"):
        aggte(r, "simple")


def test_covariate_methods_differ_but_agree_roughly(mpdta):
    est = {m: att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", xformla="~ lpop", est_method=m,
                     bootstrap=False).att for m in ("reg", "ipw", "dr")}
    assert not np.allclose(est["reg"], est["ipw"], atol=1e-6)
    np.testing.assert_allclose(est["reg"], est["dr"], atol=0.01)
    np.testing.assert_allclose(est["ipw"], est["dr"], atol=0.01)


def test_one_cohort_two_periods_equals_did_2x2(mpdta):
    d = mpdta[mpdta["year"].isin([2003, 2004]) & mpdta["first.treat"].isin([0, 2004])].copy()
    r = att_gt(d, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    assert len(r.att) == 1
    d["treated"] = (d["first.treat"] == 2004).astype(int)
    d["post"] = (d["year"] == 2004).astype(int)
    c = did_2x2(d, "lemp", "year", "countyreal", "treated", "post")
    assert r.att[0] == pytest.approx(c.estimate, abs=1e-12)
    # cluster-robust OLS SE differs from the influence-function SE only by the small-sample factor
    assert r.se_analytic[0] == pytest.approx(c.std_error, rel=0.02)
    tw = twfe(d, "lemp", "year", "countyreal", "first.treat")
    assert tw.estimate == pytest.approx(c.estimate, abs=1e-10)


def test_weights_equal_duplicated_units(mpdta):
    """Integer sampling weights give the same ATT as physically duplicating the units."""
    ids = mpdta["countyreal"].unique()
    wt = pd.Series((ids % 3) + 1, index=ids)
    d = mpdta.assign(w=mpdta["countyreal"].map(wt).astype(float))
    r_w = att_gt(d, "lemp", "year", "countyreal", "first.treat", xformla="~ lpop", weightsname="w", bootstrap=False)
    reps = [d[d["w"] >= k].assign(countyreal=lambda x, k=k: x["countyreal"] * 10 + k) for k in (1, 2, 3)]
    dup = pd.concat(reps, ignore_index=True)
    r_d = att_gt(dup, "lemp", "year", "countyreal", "first.treat", xformla="~ lpop", bootstrap=False)
    np.testing.assert_allclose(r_w.att, r_d.att, atol=1e-9)


def test_universal_base_period(mpdta):
    v = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    u = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", base_period="universal", bootstrap=False)
    tv, tu = v.tidy().set_index(["group", "time"]), u.tidy().set_index(["group", "time"])
    post = tv.index[tv["post"]]
    np.testing.assert_allclose(tu.loc[post, "estimate"], tv.loc[post, "estimate"], atol=1e-12)
    assert tu.loc[(2006, 2005), "estimate"] == 0.0  # the reference period g - 1
    # universal pre-period effects are cumulated varying ones: ATT_u(2007,2004) = -(v(2007,2005)+v(2007,2006))
    assert tu.loc[(2007, 2004), "estimate"] == pytest.approx(-(tv.loc[(2007, 2005), "estimate"] + tv.loc[(2007, 2006), "estimate"]), abs=1e-12)


def test_notyettreated_last_cohort_equals_nevertreated(mpdta):
    ny = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", control_group="notyettreated", bootstrap=False).tidy()
    nv = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False).tidy()
    a = ny.set_index(["group", "time"]).loc[(2007, 2007)]
    b = nv.set_index(["group", "time"]).loc[(2007, 2007)]
    assert a["estimate"] == pytest.approx(b["estimate"], abs=1e-12)
    # for 2004 at 2005 the not-yet-treated 2006/2007 cohorts join the comparison group
    assert ny.set_index(["group", "time"]).loc[(2004, 2005), "n_control"] == 309 + 40 + 131


# --------------------------------------------------------------------------- planted effects
def _planted(seed=0, n=3000, years=range(2014, 2022)):
    """Staggered panel with known dynamic effects and selection on levels and on a covariate trend."""
    rng = np.random.default_rng(seed)
    years = np.array(list(years))
    T = len(years)
    g = rng.choice([0, 2017, 2019, 2020], size=n, p=[0.5, 0.2, 0.15, 0.15])
    size = rng.normal(size=n)
    level = 2.0 * (g > 0) + size + rng.normal(size=n)  # users are bigger exporters already
    e = years[None, :] - g[:, None]
    effect = np.where((g[:, None] > 0) & (e >= 0), 0.2 + 0.1 * e, 0.0)
    y = level[:, None] + 0.05 * (years - years[0])[None, :] + rng.normal(scale=0.3, size=(n, T)) + effect
    df = pd.DataFrame({"id": np.repeat(np.arange(n), T), "year": np.tile(years, n), "g": np.repeat(g, T),
                       "x": np.repeat(size, T), "y": y.ravel()})
    return df


def test_planted_effects_recovered_naive_is_not():
    df = _planted()
    r = att_gt(df, "y", "year", "id", "g", control_group="notyettreated", xformla="~ x", biters=499)
    t = r.tidy()
    truth = np.where(t["post"], 0.2 + 0.1 * (t["time"] - t["group"]), 0.0)
    inside = (t["conf_low"] <= truth) & (truth <= t["conf_high"])
    # a 95% simultaneous band misses somewhere in 5% of samples; allow one miss of 21 cells
    # (30 replications of this design covered all cells every time)
    assert (~inside).sum() <= 1, t[~inside]
    a = aggte(r, "dynamic")
    tt = a.tidy().iloc[1:]
    e = tt["key"].astype(int).to_numpy()
    truth_e = np.where(e >= 0, 0.2 + 0.1 * e, 0.0)
    assert ((tt["conf_low"] <= truth_e) & (truth_e <= tt["conf_high"])).all()
    s = aggte(r, "simple")
    # true simple ATT: cohort-size weighted mean of the post cells' true effects
    post = t[t["post"]]
    sizes = df.drop_duplicates("id")["g"].value_counts()
    true_simple = np.average(0.2 + 0.1 * (post["time"] - post["group"]), weights=post["group"].map(sizes))
    assert abs(s.overall_att - true_simple) < 1.96 * s.overall_se
    naive = naive_difference(df, "y", "year", "id", "g")
    assert not (naive.conf_low <= true_simple <= naive.conf_high)
    assert r.pretest()["pvalue"] > 0.01


def test_event_study_plot_has_two_bands():
    df = _planted(seed=3, n=800)
    a = aggte(att_gt(df, "y", "year", "id", "g", biters=199), "dynamic")
    fig = event_study_plot(a)
    import matplotlib.pyplot as plt

    ax = fig.axes[0]
    assert len(ax.collections) == 4  # pointwise and simultaneous bands, before and after use
    plt.close(fig)
    with pytest.raises(ValueError, match="dynamic"):
        event_study_plot(aggte(att_gt(df, "y", "year", "id", "g", biters=99), "group"))


# --------------------------------------------------------------------------- bad input
def test_no_never_treated_with_nevertreated(mpdta):
    d = mpdta[mpdta["first.treat"] > 0]
    with pytest.raises(ValueError, match="never treated"):
        att_gt(d, "lemp", "year", "countyreal", "first.treat")
    # not-yet-treated works (the last cohort becomes the comparison group, as in R did)
    r = att_gt(d, "lemp", "year", "countyreal", "first.treat", control_group="notyettreated", bootstrap=False)
    assert set(r.groups) == {2004, 2006} and r.times.max() == 2006


def test_cohort_without_pre_period(mpdta):
    d = mpdta.copy()
    d.loc[d["countyreal"].isin(d["countyreal"].unique()[:3]), "first.treat"] = 2003
    with pytest.raises(ValueError, match="no pre-treatment period"):
        att_gt(d, "lemp", "year", "countyreal", "first.treat")
    with pytest.raises(ValueError, match="no pre-treatment period"):  # 2004 - 1 anticipation = first year
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", anticipation=1)


def test_treatment_switching_off():
    d = pd.DataFrame({"id": [1, 1, 1, 2, 2, 2], "year": [1, 2, 3] * 2, "d": [0, 1, 0, 0, 0, 0]})
    with pytest.raises(ValueError, match="switches off"):
        cohort_from_treatment(d, "id", "year", "d")
    ok = cohort_from_treatment(d.assign(d=[0, 1, 1, 0, 0, 0]), "id", "year", "d")
    assert ok.tolist() == [2, 2, 2, 0, 0, 0]
    # a first-treatment column that changes within a unit is refused by att_gt
    p = d.assign(g=[2, 2, 3, 0, 0, 0], y=1.0)
    with pytest.raises(ValueError, match="varies within"):
        att_gt(p, "y", "year", "id", "g")


def test_duplicate_firm_years(mpdta):
    d = pd.concat([mpdta, mpdta.iloc[[0]]])
    with pytest.raises(ValueError, match="share a"):
        att_gt(d, "lemp", "year", "countyreal", "first.treat")


def test_bad_choices(mpdta):
    with pytest.raises(ValueError, match=r"\['nevertreated', 'notyettreated'\].*'never'"):
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", control_group="never")
    with pytest.raises(ValueError, match="est_method"):
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", est_method="ols")
    with pytest.raises(KeyError, match="nope"):
        att_gt(mpdta, "nope", "year", "countyreal", "first.treat")
    r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    with pytest.raises(ValueError, match="simple"):
        aggte(r, type="overall")


def test_unbalanced_units_dropped_and_counted(mpdta):
    d = mpdta.drop(index=mpdta.index[(mpdta["countyreal"] == 8001) & (mpdta["year"] == 2005)])
    r = att_gt(d, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    assert r.exclusions == {"units_not_observed_every_period": 1}
    assert r.n_units == 499


def test_tiny_cohort_reported_not_crashed(mpdta):
    from reach.disclosure import Rules, check_estimates

    d = mpdta.copy()
    tiny = d["countyreal"].isin(d.loc[d["first.treat"] == 0, "countyreal"].unique()[:3])
    d.loc[tiny, "first.treat"] = 2005
    r = att_gt(d, "lemp", "year", "countyreal", "first.treat", xformla="~ lpop", biters=199)
    assert any("small cohort" in n for n in r.notes)
    t = r.tidy()
    assert (t.loc[t["group"] == 2005, "n_treated"] == 3).all()
    chk = check_estimates(t, name="att_gt", rules=Rules())
    pub = chk.suppress()
    assert pub.loc[t["group"] == 2005, "estimate"].isna().all()
    assert pub.loc[t["group"] == 2004, "estimate"].notna().all()
    a = aggte(r, "dynamic")
    assert np.isfinite(a.overall_att)


def test_clustering_by_unit_level_variable(mpdta):
    d = mpdta.assign(cl=mpdta["countyreal"])
    r = att_gt(d, "lemp", "year", "countyreal", "first.treat", clustervars=["countyreal", "cl"], biters=999)
    np.testing.assert_allclose(r.se, r.se_analytic, rtol=SE_REL)
    # a unit-level cluster variable gives the unclustered analytic SEs exactly (R did 2.5: bstrap = FALSE allowed)
    a = att_gt(d, "lemp", "year", "countyreal", "first.treat", clustervars=["cl"], bootstrap=False)
    b = att_gt(d, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-12)


def test_result_is_immutable(fits):
    r = fits["reg_nocov"]
    with pytest.raises(Exception):
        r.att[0] = 1.0
    with pytest.raises(Exception):
        r.yname = "x"
    assert "P-value for pre-test" in r.summary()
    assert "ATT(g,t)" in r._repr_markdown_()


# --------------------------------------------------------------------------- the stub
def test_stub_tinl_recovers_truth(stub_panel):
    panel, _, truth = stub_panel
    truth = truth["effects"]["tinl"]
    first = int(panel["year"].min())
    panel = panel[(panel["g_tinl"] == 0) | (panel["g_tinl"] > first)]
    r = att_gt(panel, truth["outcome"], "year", "firm_id", "g_tinl", xformla="~ log_employees",
               control_group="notyettreated", biters=999)
    t = r.tidy().set_index(["group", "time"])
    hits = []
    for cell in truth["att_gt"]:
        key = (cell["group"], cell["time"])
        if key in t.index:
            row = t.loc[key]
            hits.append(row["conf_low"] <= cell["att"] <= row["conf_high"])
    assert hits and np.mean(hits) >= 0.9
    a = aggte(r, "dynamic").tidy().iloc[1:].set_index("key")
    for e, val in truth["dynamic"].items():
        if int(e) in a.index:
            assert a.loc[int(e), "conf_low"] - 0.02 <= val <= a.loc[int(e), "conf_high"] + 0.02
    s = aggte(r, "simple")
    assert abs(s.overall_att - truth["simple"]) <= 2.58 * s.overall_se
    naive = naive_difference(panel, truth["outcome"], "year", "firm_id", "g_tinl")
    assert not (naive.conf_low <= truth["simple"] <= naive.conf_high)


# --------------------------------------------------------------------------- EffectReport (what notebook 04 shows)
def _report_panel(effect: float, seed: int = 0, n: int = 1500, tiny: int = 0) -> pd.DataFrame:
    """Planted staggered panel in panel-column names; ``tiny`` units form a cohort 2019 below the thresholds."""
    df = _planted(seed=seed, n=n)
    df["y"] = df["y"] - np.where((df["g"] > 0) & (df["year"] >= df["g"]), 0.2 + 0.1 * (df["year"] - df["g"]), 0.0)
    df["y"] += effect * ((df["g"] > 0) & (df["year"] >= df["g"]))
    if tiny:
        ids = df.loc[df["g"] == 0, "id"].unique()[:tiny]
        df.loc[df["id"].isin(ids), "g"] = 2015
    return df.rename(columns={"id": "firm_id", "g": "g_x"})


def test_effect_report_planted_null_says_no_detectable_effect():
    from reach.did import effect_report

    rep = effect_report(_report_panel(0.0), "y", programme="x", control_group="notyettreated", biters=199)
    cs = rep.tidy().set_index("method").loc["Callaway-Sant'Anna, simple average"]
    assert cs["conf_low"] <= 0.0 <= cs["conf_high"]  # the planted effect is zero
    assert not rep.detectable and rep.verdict() == "no detectable effect"
    assert "no detectable effect" in rep.narrative()
    # the naive comparison is far off: users are bigger by construction (level +2)
    assert "far larger" in rep.narrative()


def test_effect_report_planted_effect_detected():
    from reach.did import effect_report

    rep = effect_report(_report_panel(0.5), "y", programme="x", control_group="notyettreated", biters=199)
    h = rep.headline()
    assert h["detectable"] and h["simple_conf_low"] <= 0.5 <= h["simple_conf_high"]
    assert rep.verdict().startswith("effect +")
    assert "higher than it would have been" in rep.narrative()


def test_effect_report_small_cohort_suppressed_not_crashed():
    from reach.did import REPORT_TABLES, effect_report
    from reach.disclosure import Rules

    rep = effect_report(_report_panel(0.3, tiny=4), "y", programme="x", control_group="notyettreated", biters=99,
                        rules=Rules())
    gt = rep.tables["att_gt"]
    assert gt.loc[gt["group"] == 2015, "estimate"].isna().all()  # 4 users < min_treated
    assert gt.loc[gt["group"] == 2017, "estimate"].notna().all()
    assert set(rep.checked) == set(REPORT_TABLES) and rep.name("att_gt") == "x_y_full_att_gt"
    # the headline reads the publishable tables only: equal to them, never to the raw estimates
    h = rep.headline()
    cs = rep.tables["comparison"].set_index("method").loc["Callaway-Sant'Anna, simple average"]
    assert h["simple_att"] == cs["estimate"] and h["n_treated"] == cs["n_treated"]
    es = rep.tables["event_study"].iloc[1:]
    expected = pd.Series({str(int(k)): v for k, v in zip(es["key"], es["estimate"])})
    assert pd.Series(h["dynamic"]).equals(expected)
    assert np.isnan(h["dynamic"]["6"])  # only the tiny cohort reaches 6 years after use: suppressed
    import matplotlib.pyplot as plt

    plt.close(rep.figure())
    # rules nobody meets: every headline number is suppressed, and the text says so
    strict = effect_report(_report_panel(0.3), "y", programme="x", biters=99, rules=Rules(min_treated=10**6))
    hs = strict.headline()
    assert all(np.isnan(hs[k]) for k in ("simple_att", "simple_se", "naive", "twfe", "pretest_pvalue", "n_treated"))
    assert all(np.isnan(v) for v in hs["dynamic"].values()) and not hs["detectable"]
    assert strict.verdict() == "not publishable (too few firms)" and "too few firms" in strict.narrative()
    assert "0." not in repr(strict)


def test_effect_report_helpers_count_exclusions():
    from reach.did import drop_without_pre_period

    p = _report_panel(0.0, n=300).assign(be_id=lambda d: d["firm_id"].astype(str))
    first_users = p["firm_id"].unique()[:3]
    p.loc[p["firm_id"].isin(first_users), "g_x"] = 2014  # first year of the window: no pre-period
    rest, n = drop_without_pre_period(p, "g_x")
    assert n == 3 and not rest["firm_id"].isin(first_users).any() and len(rest) == len(p) - 3 * 8


# --------------------------------------------------------------------------- fast covariate path
def _cov_panel(n=1200, seed=3):
    """Balanced panel, ids already sorted by cohort (so att_gt's unit order is the id order)."""
    rng = np.random.default_rng(seed)
    years = np.arange(2010, 2016)
    g = np.sort(rng.choice([0, 2012, 2013, 2015], size=n, p=[0.4, 0.2, 0.2, 0.2]))
    T = len(years)
    x1 = rng.normal(size=(n, T)) + 0.5 * (g[:, None] > 0)
    x2 = rng.gamma(2.0, size=(n, T))
    y = 0.4 * x1 - 0.2 * x2 + 0.1 * (years - 2010) * x1 + rng.normal(size=(n, T)) + ((g[:, None] > 0) & (years >= g[:, None]))
    return pd.DataFrame({"id": np.repeat(np.arange(n), T), "year": np.tile(years, n), "g": np.repeat(g, T),
                         "x1": x1.ravel(), "x2": x2.ravel(), "y": y.ravel(), "w": np.repeat(rng.uniform(0.5, 2, n), T)})


@pytest.mark.parametrize("method", ["dr", "ipw", "reg"])
@pytest.mark.parametrize("control_group", ["nevertreated", "notyettreated"])
def test_covariate_cells_equal_direct_drdid(method, control_group):
    """Cached designs, warm-started logits and the rearranged influence function give what the
    direct per-cell estimator (DRDID's formulas on the cell's stacked units, logit from zero) gives."""
    from reach.did import _drdid_cell

    df = _cov_panel()
    r = att_gt(df, "y", "year", "id", "g", xformla="~ x1 + x2", est_method=method, control_group=control_group,
               weightsname="w", bootstrap=False)
    wide = {c: df.pivot(index="id", columns="year", values=c).to_numpy() for c in ("y", "x1", "x2")}
    G = df.groupby("id")["g"].first().to_numpy().astype(float)
    w = df.groupby("id")["w"].first().to_numpy()
    w = w / w.mean()
    periods = np.sort(df["year"].unique())
    n = len(G)
    assert np.array_equal(r.unit_cohort, G)
    for j, (g, t, b) in enumerate(zip(r.groups, r.times, r.base_times)):
        ti, bi = np.searchsorted(periods, t), np.searchsorted(periods, b)
        ctrl = G == 0 if control_group == "nevertreated" else (G == 0) | ((G > max(t, b)) & (G != g))
        idx = np.r_[np.flatnonzero(G == g), np.flatnonzero(ctrl)]
        D = (G[idx] == g).astype(float)
        X = np.column_stack([np.ones(len(idx)), wide["x1"][idx, min(ti, bi)], wide["x2"][idx, min(ti, bi)]])
        a, inf = _drdid_cell(wide["y"][idx, ti] - wide["y"][idx, bi], D, X, w[idx], method)
        assert r.att[j] == pytest.approx(a, abs=1e-10)
        expect = np.zeros(n)
        expect[idx] = n / len(idx) * inf
        np.testing.assert_allclose(r.inffunc[:, j], expect, atol=1e-10 * np.abs(expect).max())


def test_warm_started_logit_equals_cold_start():
    from reach.did import _logit, _logit_rows

    rng = np.random.default_rng(5)
    X = np.column_stack([np.ones(500), rng.normal(size=(500, 2))])
    D = (rng.uniform(size=500) < 1 / (1 + np.exp(-(X @ [-1.0, 0.8, -0.5])))).astype(float)
    w = rng.uniform(0.5, 2, 500)
    p0, H0 = _logit(X, D, w)
    for start in (None, [-0.9, 0.7, -0.4], [50.0, -50.0, 50.0]):  # the last diverges and falls back to zero
        p, H, _ = _logit_rows(np.ascontiguousarray(X.T), D, w, start)
        np.testing.assert_allclose(p, p0, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(H, H0, rtol=1e-12)
