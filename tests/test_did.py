"""Tests of reach.did: golden numbers from R did, identities, planted effects, bad input."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reach.did import aggte, att_gt, cohort_from_treatment, did_2x2, naive_difference, twfe
from reach.effects import event_study_plot

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
    assert abs(p["p_value"] - REF["scenarios"][scenario]["pretest_pvalue"]) <= PVAL
    assert p["pvalue"] == p["p_value"]  # deprecated alias, one release


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
    assert list(t.columns) == ["term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high",
                               "n_treated", "n_control", "type", "level", "key", "pointwise_low", "pointwise_high"]
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


@pytest.mark.parametrize("kw", [dict(xformla="~ lpop", control_group="notyettreated"),
                                dict(base_period="universal"),
                                dict(xformla="~ lpop", allow_unbalanced_panel=True, unbalanced="pairs", drop=7),
                                dict(allow_unbalanced_panel=True, drop=7)])
def test_post_only_cells_equal_the_full_fit(mpdta, kw):
    """``_cells="post"`` (fit_simple's shortcut) leaves out exactly the pre cells; the post cells are unchanged."""
    kw = dict(kw)
    d = mpdta.iloc[kw.pop("drop", 0):]  # drop=7: a few rows fewer, an unbalanced panel
    full = att_gt(d, "lemp", "year", "countyreal", "first.treat", bootstrap=False, **kw).tidy()
    post = att_gt(d, "lemp", "year", "countyreal", "first.treat", bootstrap=False, _cells="post", **kw).tidy()
    ant = kw.get("anticipation", 0)
    keep = full[full["time"] >= full["group"] - ant].reset_index(drop=True)
    assert len(post) == len(keep) < len(full)
    pd.testing.assert_frame_equal(post[["group", "time"]], keep[["group", "time"]])
    np.testing.assert_allclose(post["estimate"], keep["estimate"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post["std_error"], keep["std_error"], rtol=1e-9)


def _with_varying_covariate(d: pd.DataFrame) -> pd.DataFrame:
    """mpdta with ``x`` (lpop plus noise: varies over time) and ``sep`` (nearly separates the 2007 cohort: its
    propensity scores reach R did's 0.999 guard, so its cells are left missing, before and after first use)."""
    rng = np.random.default_rng(3)
    return d.assign(x=d["lpop"] + rng.normal(scale=0.3, size=len(d)),
                    sep=d["lpop"] + 8.0 * (d["first.treat"] == 2007) + rng.normal(scale=0.5, size=len(d)))


UNIVERSAL_CASES = {
    "balanced, no covariates": dict(),
    "balanced, dr, not-yet-treated": dict(xformla="~ lpop", control_group="notyettreated"),
    "pairs, time-varying covariate": dict(xformla="~ x", allow_unbalanced_panel=True, unbalanced="pairs", drop=7),
    "pairs, anticipation 1, ipw": dict(xformla="~ x", est_method="ipw", anticipation=1, no2004=True,
                                       allow_unbalanced_panel=True, unbalanced="pairs", drop=7),
    "repeated cross sections of an unbalanced panel": dict(allow_unbalanced_panel=True, drop=7),
    "balanced, cells missing": dict(xformla="~ sep"),
    "pairs, cells missing": dict(xformla="~ sep", allow_unbalanced_panel=True, unbalanced="pairs", drop=7),
}


@pytest.mark.parametrize("case", list(UNIVERSAL_CASES))
def test_universal_from_varying_equals_the_universal_fit(mpdta, case):
    """The universal-base att_gt from its pre cells and a varying-base fit's post cells is the direct universal fit:
    every cell's estimate, influence function, counts and missing-cell reasons, and the dynamic aggregate."""
    from reach.did import _universal_from_varying

    kw = dict(UNIVERSAL_CASES[case])
    d = _with_varying_covariate(mpdta).iloc[kw.pop("drop", 0):]
    if kw.pop("no2004", False):  # with anticipation 1 the 2004 cohort has no year before 2003
        d = d[d["first.treat"] != 2004]
    fit = lambda **k: att_gt(d, "lemp", "year", "countyreal", "first.treat", **kw, **k)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # missing cells are compared below
        direct = fit(base_period="universal", bootstrap=False)
        varying = fit(bootstrap=True, biters=99)  # the effect report's call: draws do not enter the cells
        pre = fit(base_period="universal", bootstrap=False, _cells="pre")
    got = _universal_from_varying(pre, varying)
    assert pre.att.size < got.att.size == direct.att.size
    for f in ("groups", "times", "base_times", "n_treated", "n_control"):
        np.testing.assert_array_equal(getattr(got, f), getattr(direct, f), err_msg=f)
    # balanced covariate fits warm-start each cohort's logit from its previous cell (converged to 1e-10)
    np.testing.assert_allclose(got.att, direct.att, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.se, direct.se, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.inffunc, direct.inffunc, rtol=1e-8, atol=1e-10)
    pd.testing.assert_frame_equal(got.na_cells, direct.na_cells)
    if case.endswith("missing"):
        pre_cell = (direct.groups > direct.times)[~np.isfinite(direct.att)]
        assert pre_cell.any() and not pre_cell.all()  # missing cells among both the pre and the post cells
    assert set(got.notes) == set(direct.notes)
    assert not got.bootstrap and got.boot_draws is None and np.isnan(got.crit_val)
    pd.testing.assert_frame_equal(aggte(got, "dynamic", na_rm=True).tidy(), aggte(direct, "dynamic", na_rm=True).tidy(),
                                  rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("change, reason", [
    (dict(yname="lpop"), "yname differs"),
    (dict(control_group="notyettreated"), "control_group differs"),
    (dict(unbalanced="rc"), "unbalanced differs"),
    (dict(xformla="~ lpop"), "xformla differs"),
    (dict(data=lambda d: d.assign(lemp=d["lemp"] + (d["year"] == 2005) * 0.01)), "not of the same outcome"),
    (dict(data=lambda d: d.assign(lemp=np.where(np.arange(len(d)) == 100, d["lemp"] + 1e-6, d["lemp"]))),
     "not of the same outcome"),
    (dict(data=lambda d: d.assign(**{"first.treat": np.where(d["countyreal"] == 8001, 0, d["first.treat"])})),
     "unit_cohort differ"),
    (dict(data=lambda d: d.iloc[5:]), "unit_ids differ"),
])
def test_universal_from_varying_refuses_another_estimate(mpdta, change, reason):
    """Cells are only taken from an estimate of the same data and settings; the reason is named. An outcome
    changed in one row (same firms, cohorts and settings) is told apart by the data signature."""
    from reach.did import _universal_from_varying

    d0 = mpdta.drop(index=7)  # unbalanced: the firms observed in both years of each cell (pairs)
    kw = dict(yname="lemp", control_group="nevertreated", unbalanced="pairs", xformla=None)
    pre = att_gt(d0, "lemp", "year", "countyreal", "first.treat", base_period="universal", bootstrap=False,
                 allow_unbalanced_panel=True, unbalanced="pairs", _cells="pre")
    change = dict(change)
    d = change.pop("data", lambda d: d)(d0)
    kw |= change
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        other = att_gt(d, kw.pop("yname"), "year", "countyreal", "first.treat", bootstrap=False,
                       allow_unbalanced_panel=True, **kw)
    with pytest.raises(ValueError, match=reason):
        _universal_from_varying(pre, other)
    same = att_gt(d0, "lemp", "year", "countyreal", "first.treat", bootstrap=False, allow_unbalanced_panel=True,
                  unbalanced="pairs")
    assert _universal_from_varying(pre, same).att.size > pre.att.size


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
    assert r.pretest()["p_value"] > 0.01


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
    from reach.effects import effect_report

    rep = effect_report(_report_panel(0.0), "y", programme="x", control_group="notyettreated", biters=199)
    cs = rep.tidy().set_index("method").loc["Callaway-Sant'Anna, simple average"]
    assert cs["conf_low"] <= 0.0 <= cs["conf_high"]  # the planted effect is zero
    assert not rep.detectable and rep.verdict() == "no detectable effect"
    assert "no detectable effect" in rep.narrative()
    # the naive comparison is far off: users are bigger by construction (level +2)
    assert "far larger" in rep.narrative()


def test_effect_report_planted_effect_detected():
    from reach.effects import effect_report

    rep = effect_report(_report_panel(0.5), "y", programme="x", control_group="notyettreated", biters=199)
    h = rep.headline()
    assert h["detectable"] and h["simple_conf_low"] <= 0.5 <= h["simple_conf_high"]
    assert rep.verdict().startswith("effect +")
    assert "higher than it would have been" in rep.narrative()


def test_samples_text_names_the_matching_covariates_and_reads_the_intervals():
    """The text described the matching as "export history (level, growth, destinations), size, imports and earlier
    use of public instruments" whatever 03 matched on, and closed one parenthesis too many."""
    from reach.effects import effect_report, samples_text

    null = effect_report(_report_panel(0.0), "y", programme="x", control_group="notyettreated", biters=99)
    planted = effect_report(_report_panel(0.5), "y", programme="x", control_group="notyettreated", biters=99)
    a, b = null.headline(), planted.headline()
    assert a["simple_conf_high"] < b["simple_conf_low"]  # the planted 0.5 is far outside the null's interval
    apart = samples_text(null, planted, matching_covariates=["log_exports_lag1", "instr_ever_before"])
    assert "exports in the year before (log); used a public instrument before" in apart
    assert "imports" not in apart and "do not overlap" in apart
    assert apart.count("(") == apart.count(")")
    same = samples_text(null, null)
    assert "the covariates notebook 03 matched on" in same and "intervals overlap" in same
    assert samples_text(null, None) == ""


def test_withheld_cells_cannot_be_recovered_from_the_averages():
    """A cohort of 4 users: its ATT(g,t) are withheld. Were they kept in the event-time averages, which weigh
    cohorts by size, the published averages, the other cohorts' cells and their user counts would give them
    back exactly: ATT(2015,2015) = (n_0 theta(0) - sum_g n_g ATT(g,g)) / (n_0 - sum_g n_g). Every published
    average is instead the size-weighted mean of the published cells alone (an independent computation from
    the published tables), its user count their sum, and the pre-test leaves the withheld cells out."""
    from reach.disclosure import Rules
    from reach.effects import WITHHELD_CELL, effect_report

    rep = effect_report(_report_panel(0.3, tiny=4), "y", programme="x", control_group="notyettreated", biters=99,
                        rules=Rules())
    gt, es = rep.tables["att_gt"], rep.tables["event_study"].iloc[1:]
    pub = gt[gt["estimate"].notna()].assign(e=lambda d: d["time"] - d["group"])
    assert set(gt.loc[gt["estimate"].isna(), "group"]) == {2015}
    for k, row in zip(es["key"], es.itertuples()):
        cells = pub[pub["e"] == int(k)]
        assert row.n_treated == cells["n_treated"].sum()
        assert row.estimate == pytest.approx((cells["estimate"] * cells["n_treated"]).sum() / cells["n_treated"].sum(),
                                             rel=1e-9, abs=1e-12)
    # the simple average: every published post cell weighted by its cohort's users
    post = pub[pub["post"]]
    cs = rep.tables["comparison"].iloc[0]
    assert cs["estimate"] == pytest.approx((post["estimate"] * post["n_treated"]).sum() / post["n_treated"].sum(),
                                           rel=1e-9)
    assert cs["n_treated"] == post.groupby("group")["n_treated"].first().sum()
    assert rep.tables["pretest"]["n_treated"].iloc[0] >= 10  # the tiny cohort's pre cells no longer bind it
    assert list(rep.withheld_cells["group"].unique()) == [2015] and WITHHELD_CELL in rep.exclusions_text()
    # the sensitivity analysis's event study (universal base) leaves the same cells out: its average after first
    # use, the "original" interval's centre, rests on the published cohorts only
    from reach.robustness import event_study_universal, how_sure

    panel = _report_panel(0.3, tiny=4)
    es_u = event_study_universal(panel, "y", gname="g_x", xformla=None, control_group="notyettreated",
                                 varying=rep.att_gt, leave_out=rep.withheld_cells)
    full_u = event_study_universal(panel, "y", gname="g_x", xformla=None, control_group="notyettreated")
    k0 = list(es_u.keys).index(0)
    assert es_u.n_treated_keys[k0] == es.loc[es["key"] == 0, "n_treated"].iloc[0] == 774
    assert full_u.n_treated_keys[list(full_u.keys).index(0)] == 778  # without leave_out: the tiny cohort is in
    assert 5 not in list(es_u.keys) and 5 in list(full_u.keys)
    s = how_sure(panel, {("y", "full"): rep}, programme="x", primary={"sample": "full", "outcome": "y"},
                 outcomes=["y"], xformla=None, control_group="notyettreated", placebo_draws=0, subgroups={},
                 rules=Rules(), progress=False)
    orig = s.publishable("sensitivity")
    orig = orig[(orig["method"] == "Original") & (orig["target"] == "average")].iloc[0]
    post_u = np.asarray(es_u.keys) >= 0
    assert (orig["conf_low"] + orig["conf_high"]) / 2 == pytest.approx(np.asarray(es_u.att)[post_u].mean(), rel=1e-9)


def test_effect_report_small_cohort_suppressed_not_crashed():
    from reach.effects import REPORT_TABLES, effect_report
    from reach.disclosure import Rules

    rep = effect_report(_report_panel(0.3, tiny=4), "y", programme="x", control_group="notyettreated", biters=99,
                        rules=Rules())
    gt = rep.tables["att_gt"]
    assert gt.loc[gt["group"] == 2015, "estimate"].isna().all()  # 4 users < min_treated
    # and its pointwise interval, whose midpoint is the estimate (was published beside the blanked estimate)
    assert gt.loc[gt["group"] == 2015, ["pointwise_low", "pointwise_high"]].isna().all().all()
    es = rep.tables["event_study"]
    assert es.loc[es["estimate"].isna(), ["pointwise_low", "pointwise_high"]].isna().all().all()
    assert gt.loc[gt["group"] == 2017, "estimate"].notna().all()
    assert set(rep.checked) == set(REPORT_TABLES) and rep.name("att_gt") == "x_y_full_att_gt"
    # the headline reads the publishable tables only: equal to them, never to the raw estimates
    h = rep.headline()
    cs = rep.tables["comparison"].set_index("method").loc["Callaway-Sant'Anna, simple average"]
    assert h["simple_att"] == cs["estimate"] and h["n_treated"] == cs["n_treated"]
    es = rep.tables["event_study"].iloc[1:]
    expected = pd.Series({str(int(k)): v for k, v in zip(es["key"], es["estimate"])})
    assert pd.Series(h["dynamic"]).equals(expected)
    # only the tiny cohort reaches 5-6 years after use: with its cells left out of the averages, no such row
    assert "6" not in h["dynamic"] and "5" not in h["dynamic"]
    import matplotlib.pyplot as plt

    plt.close(rep.figure())
    # rules nobody meets: every headline number is suppressed, and the text says so
    strict = effect_report(_report_panel(0.3), "y", programme="x", biters=99, rules=Rules(min_treated=10**6))
    hs = strict.headline()
    assert all(np.isnan(hs[k]) for k in ("simple_att", "simple_se", "naive", "twfe", "pretest_p_value", "n_treated"))
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
    from reference_drdid import _drdid_cell

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


# =========================================================================== issue 12
# --------------------------------------------------------------------------- golden: DRDID repeated cross sections
RC = json.loads((GOLDEN / "did_sim_rc.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("method", ["dr", "reg", "ipw"])
def test_repeated_cross_sections_match_drdid_docs(method):
    """att_gt(panel=False) on DRDID's sim_rc equals drdid_rc / reg_did_rc / std_ipw_did_rc's documented output."""
    d = pd.read_csv(GOLDEN / "did_sim_rc.csv")
    d = d.assign(period=d["post"].astype(int) + 1, g=np.where(d["d"] == 1, 2, 0))
    r = att_gt(d, "y", "period", "id", "g", xformla="~ x1 + x2 + x3 + x4", est_method=method, panel=False,
               bootstrap=False, cband=False)
    ref = RC["estimates"][method]
    tol = RC["tolerances"]
    assert len(r.att) == 1 and r.n_units == 1000
    assert abs(r.att[0] - ref["att"]) <= tol["point_reg" if method == "reg" else "point"]["abs"]
    assert r.se[0] == pytest.approx(ref["se"], rel=tol["se_rel"]["rel"])


# --------------------------------------------------------------------------- unbalanced panels
def _unbalanced(seed=0, n=1500, years=range(2014, 2022), drop=0.25):
    """_planted() with rows removed at random (entry, exit, gaps); a few units keep one row only."""
    df = _planted(seed=seed, n=n, years=years)
    rng = np.random.default_rng(seed + 100)
    keep = rng.uniform(size=len(df)) > drop
    once = df["id"].isin(df.loc[df["g"] == 0, "id"].unique()[:5])
    keep &= ~once | (df["year"] == 2016)
    return df[keep].reset_index(drop=True)


def test_unbalanced_on_balanced_panel_is_the_panel_estimator(mpdta):
    """R did 2.5: allow_unbalanced_panel=TRUE on a balanced panel uses the panel estimator; R's numbers stand."""
    ref = np.array(REF["scenarios"]["dr_lpop"]["att_gt"])
    for mode in ("rc", "pairs"):
        r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", xformla="~ lpop", allow_unbalanced_panel=True,
                   unbalanced=mode, bootstrap=False, cband=False)
        np.testing.assert_allclose(r.att, ref[:, 2], atol=POINT)
        np.testing.assert_allclose(r.se_analytic, ref[:, 3], rtol=SE_REL)


def test_pairs_mode_equals_balanced_estimator_on_each_cells_units():
    """Independent computation: every pairs-mode cell equals the balanced estimator run on the units observed
    in both of the cell's years (no covariates: the difference of mean changes)."""
    df = _unbalanced()
    with pytest.warns(UserWarning, match="dropped"):  # the balanced default drops units, with a warning
        att_gt(df, "y", "year", "id", "g", bootstrap=False, cband=False)
    r = att_gt(df, "y", "year", "id", "g", allow_unbalanced_panel=True, unbalanced="pairs", bootstrap=False, cband=False)
    assert r.exclusions["units_observed_once_kept"] == 5  # kept, counted
    wide = df.pivot(index="id", columns="year", values="y")
    G = df.groupby("id")["g"].first().reindex(wide.index)
    for j in range(len(r.att)):
        g, t, b = r.groups[j], r.times[j], r.base_times[j]
        dy = wide[t] - wide[b]
        both = dy.notna()
        d1, d0 = dy[both & (G == g)], dy[both & (G == 0)]
        assert r.att[j] == pytest.approx(d1.mean() - d0.mean(), abs=1e-12)
        se = np.sqrt(d1.var(ddof=0) / len(d1) + d0.var(ddof=0) / len(d0)) * np.sqrt(len(both) / r.n_units) ** 0
        # the influence function lives on the n units; its SE is the two-sample formula on the cell's units
        assert r.se_analytic[j] == pytest.approx(se, rel=1e-9)
        assert r.n_treated[j] == len(d1) and r.n_control[j] == len(d0)


def test_rc_mode_sums_influence_function_by_unit():
    """R did's unbalanced estimator: each cell's row-level influence function summed within unit.
    Independent computation without covariates: four period-group means; the SE from the per-unit sums."""
    df = _unbalanced(seed=2)
    r = att_gt(df, "y", "year", "id", "g", allow_unbalanced_panel=True, unbalanced="rc", bootstrap=False, cband=False)
    ids = np.sort(df["id"].unique())
    n = len(ids)
    for j in [0, 5, len(r.att) - 1]:
        g, t, b = r.groups[j], r.times[j], r.base_times[j]
        cell = df[df["year"].isin([t, b]) & df["g"].isin([g, 0])]
        D, post, y = (cell["g"] == g).to_numpy(), (cell["year"] == t).to_numpy(), cell["y"].to_numpy()
        means = {(a, p): y[(D == a) & (post == p)].mean() for a in (0, 1) for p in (0, 1)}
        assert r.att[j] == pytest.approx((means[1, 1] - means[1, 0]) - (means[0, 1] - means[0, 0]), abs=1e-12)
        n1 = len(cell)
        cnt = {(a, p): ((D == a) & (post == p)).sum() for a in (0, 1) for p in (0, 1)}
        sign = {(1, 1): 1, (1, 0): -1, (0, 1): -1, (0, 0): 1}
        psi = np.zeros(len(cell))
        for key in cnt:
            m = (D == key[0]) & (post == key[1])
            psi[m] = sign[key] * n1 / cnt[key] * (y[m] - means[key])
        S = pd.Series((n / n1) * psi).groupby(cell["id"].to_numpy()).sum().reindex(ids, fill_value=0.0)
        assert r.se_analytic[j] == pytest.approx(np.sqrt((S**2).sum()) / n, rel=1e-9)


def test_unbalanced_recovers_planted_effect_with_covariates():
    df = _unbalanced(seed=4, n=3000)
    r = att_gt(df, "y", "year", "id", "g", xformla="~ x", control_group="notyettreated", allow_unbalanced_panel=True,
               unbalanced="pairs", biters=299)
    t = r.tidy()
    truth = np.where(t["post"], 0.2 + 0.1 * (t["time"] - t["group"]), 0.0)
    assert ((t["conf_low"] <= truth) & (truth <= t["conf_high"])).mean() >= 0.95
    s = aggte(r, "simple")
    post = t[t["post"]]
    sizes = df.drop_duplicates("id")["g"].value_counts()
    true_simple = np.average(0.2 + 0.1 * (post["time"] - post["group"]), weights=post["group"].map(sizes))
    assert abs(s.overall_att - true_simple) < 2.58 * s.overall_se


# --------------------------------------------------------------------------- cband and the bootstrap
def test_no_bootstrap_without_bootstrap_and_cband(mpdta, monkeypatch):
    import reach.did as rd

    def boom(*a, **k):
        raise AssertionError("the multiplier bootstrap ran")

    monkeypatch.setattr(rd, "_multiplier_bootstrap", boom)
    for kw in ({}, {"xformla": "~ lpop"}):
        r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False, cband=False, **kw)
        assert r.boot_draws is None and not np.isfinite(r.crit_val)
        t = r.tidy()
        np.testing.assert_allclose(t["conf_low"], t["pointwise_low"])
        for kind in ("simple", "dynamic", "group", "calendar"):
            a = aggte(r, kind)
            tt = a.tidy()
            np.testing.assert_allclose(tt["conf_high"], tt["pointwise_high"])
    with pytest.raises(AssertionError, match="bootstrap ran"):  # the band (R's default cband) needs the bootstrap
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False, cband=True)


def test_cband_false_keeps_bootstrap_se_but_pointwise_intervals(mpdta):
    r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", cband=False, biters=499)
    t = r.tidy()
    assert not np.isfinite(r.crit_val)
    np.testing.assert_allclose(t["conf_low"], t["pointwise_low"])
    np.testing.assert_allclose(r.se, r.se_analytic, rtol=SE_REL)  # bootstrap SEs, not the analytic ones
    assert not np.allclose(r.se, r.se_analytic, rtol=1e-6)


# --------------------------------------------------------------------------- clustering as R did 2.5
def _clustered(seed=404, G=60):
    """R did's tests/testthat/test-cluster-analytic.R design: clusters of sizes 1, 2, 4, 10 with a common
    shock per cluster and period, treatment assigned by cluster."""
    rng = np.random.default_rng(seed)
    sz = np.resize([1, 2, 4, 10], G)
    cl = np.repeat(np.arange(G), sz)
    N = len(cl)
    alpha = rng.normal(size=G)[cl]
    eta = rng.normal(scale=1.5, size=(G, 4))
    g = rng.choice([2, 3, 0], size=G, p=[0.34, 0.33, 0.33])[cl]
    per = np.arange(1, 5)
    y = alpha[:, None] + rng.normal(size=N)[:, None] + 0.3 * per + eta[cl] + ((g[:, None] != 0) & (per >= g[:, None])) \
        + rng.normal(size=(N, 4))
    return pd.DataFrame({"id": np.repeat(np.arange(N), 4), "t": np.tile(per, N), "cl": np.repeat(cl, 4),
                         "g": np.repeat(g, 4), "y": y.ravel()})


def test_analytic_cluster_se_is_cluster_sum_crve():
    """R did 2.5 (test-cluster-analytic.R): with bstrap = FALSE the SE is sqrt(colSums(rowsum(inffunc, cl)^2)) / n."""
    d = _clustered()
    r = att_gt(d, "y", "t", "id", "g", clustervars=["id", "cl"], bootstrap=False, cband=False)
    iid = att_gt(d, "y", "t", "id", "g", bootstrap=False, cband=False)
    cl = d.groupby("id")["cl"].first().to_numpy()[np.argsort(d.groupby("id")["g"].first().to_numpy(), kind="stable")]
    S = pd.DataFrame(np.asarray(r.inffunc)).groupby(cl).sum().to_numpy()
    n = r.inffunc.shape[0]
    np.testing.assert_allclose(r.se, np.sqrt((S**2).sum(axis=0)) / n, rtol=1e-10)
    k = np.flatnonzero((r.groups == 2) & (r.times == 2))[0]
    assert abs(r.se[k] - iid.se[k]) / iid.se[k] > 0.05
    # aggregation: clustered SEs flow through aggte, and vcov() is the cluster-robust covariance
    for kind in ("simple", "group", "dynamic"):
        a, ai = aggte(r, kind), aggte(iid, kind)
        assert abs(a.overall_se - ai.overall_se) / ai.overall_se > 0.02
        if kind != "simple":
            np.testing.assert_allclose(np.sqrt(np.diag(a.vcov())), a.se, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.diag(r.vcov())), r.se, rtol=1e-10)


def test_bootstrap_cluster_se_uses_sums_not_means():
    """Unequal cluster sizes: the clustered multiplier bootstrap's SE is the cluster-sum CRVE
    sqrt(sum_c S_c^2) / n (R did 2.5, mboot.R), not the cluster-mean version of R did <= 2.4."""
    from reach.did import _boot_summary, _multiplier_bootstrap

    rng = np.random.default_rng(0)
    sizes = np.resize([1, 2, 40], 150)
    cl = np.repeat(np.arange(len(sizes)), sizes)
    shock = rng.normal(size=len(sizes))[cl]
    IF = (shock + rng.normal(size=len(cl)))[:, None] * np.array([[1.0, 2.0]])
    bres, m = _multiplier_bootstrap(IF, cl, 4999, 1)
    se, crit = _boot_summary(bres, m, 0.05)
    S = pd.DataFrame(IF).groupby(cl).sum().to_numpy()
    crve = np.sqrt((S**2).sum(axis=0)) / len(IF)
    np.testing.assert_allclose(se, crve, rtol=0.05)
    M = pd.DataFrame(IF).groupby(cl).mean().to_numpy()
    old = np.sqrt((M**2).sum(axis=0)) / len(M)  # R did <= 2.4: IQR scale of cluster means over sqrt(C)
    assert (np.abs(se / old - 1) > 0.2).all()  # 28% apart here, 4x the bootstrap tolerance above
    # and att_gt's clustered bootstrap agrees with its analytic cluster-robust SE
    d = _clustered(seed=11, G=120)
    an = att_gt(d, "y", "t", "id", "g", clustervars=["cl"], bootstrap=False, cband=False)
    bs = att_gt(d, "y", "t", "id", "g", clustervars=["cl"], biters=2999, seed=3)
    np.testing.assert_allclose(bs.se, an.se, rtol=0.15)


def test_cluster_variable_varying_within_unit_is_refused():
    d = _clustered()
    d.loc[d.index[:3], "cl"] = 999  # unit 0 changes cluster in periods 1-3
    for kw in ({}, {"allow_unbalanced_panel": True}):
        with pytest.raises(ValueError, match="cl.*(varies|constant)"):
            att_gt(d.iloc[1:] if kw else d, "y", "t", "id", "g", clustervars=["cl"], bootstrap=False, **kw)


# --------------------------------------------------------------------------- overlap guard and trimming
def _poor_overlap(seed=0, n=2000):
    """Cohort 2017 (a few hundred) far from the comparison firms on x; cohort 2019 with good overlap."""
    rng = np.random.default_rng(seed)
    g = rng.choice([0, 2017, 2019], size=n, p=[0.7, 0.15, 0.15])
    x = rng.normal(size=n) + np.where(g == 2017, 4.5, 0.0)
    years = np.arange(2015, 2021)
    y = x[:, None] + rng.normal(size=(n, len(years))) + 0.5 * ((g[:, None] > 0) & (years >= g[:, None]))
    return pd.DataFrame({"id": np.repeat(np.arange(n), len(years)), "year": np.tile(years, n),
                         "g": np.repeat(g, len(years)), "x": np.repeat(x, len(years)), "y": y.ravel()})


@pytest.mark.parametrize("unbalanced", [False, True])
def test_overlap_guard_sets_cells_na_with_reason(unbalanced):
    df = _poor_overlap()
    kw = {"allow_unbalanced_panel": True, "unbalanced": "rc"} if unbalanced else {}
    if unbalanced:
        df = df.drop(index=df.index[::7])
    with pytest.warns(UserWarning, match="left missing"):
        r = att_gt(df, "y", "year", "id", "g", xformla="~ x", bootstrap=False, cband=False, **kw)
    t = r.tidy()
    assert t.loc[t["group"] == 2017, "estimate"].isna().all()
    assert t.loc[t["group"] == 2019, "estimate"].notna().all()
    na = r.na_cells
    assert set(na["group"]) == {2017} and len(na) == (t["group"] == 2017).sum()
    assert na["reason"].str.contains("overlap").all() and na["reason"].str.contains("0.999").all()
    a = aggte(r, "simple", na_rm=True)
    assert np.isfinite(a.overall_att)
    # overlap_max = 1 switches the guard off (the logit's scores stay below 1 without separation)
    r1 = att_gt(df, "y", "year", "id", "g", xformla="~ x", bootstrap=False, cband=False, overlap_max=1.0, **kw)
    assert len(r1.na_cells) < len(na) or np.isfinite(r1.att).sum() > np.isfinite(r.att).sum()


def test_no_post_cell_left_says_why_without_a_firms_value():
    """At 2M firms a subgroup of 67,701 users read "not estimable: no post-treatment ATT(g,t) to aggregate": every
    cell had failed the overlap guard. The error now says so, by reason, but never the propensity
    score the cell's reason quotes (one firm's value; the text reaches published status columns)."""
    from reach.did import NoPostTreatmentCells

    df = _poor_overlap()
    df = df[df["g"] != 2019]  # only the cohort far from the comparison firms
    with pytest.warns(UserWarning, match="left missing"):
        r = att_gt(df, "y", "year", "id", "g", xformla="~ x", bootstrap=False, cband=False)
    n_post = int(((r.groups <= r.times) & np.isnan(r.att)).sum())
    assert n_post == 4 and r.na_cells["reason"].str.contains(r"0\.99").all()
    with pytest.raises(NoPostTreatmentCells) as e:
        aggte(r, "simple", na_rm=True)
    msg = str(e.value)
    assert msg == "no post-treatment ATT(g,t) to aggregate: every one was left missing (overlap fails)"
    assert "0.99" not in msg


def test_intercept_only_overlap_guard(mpdta):
    """Without covariates R did's guard reduces to the cohort's share of the cell (>= 0.999 -> NA)."""
    d = mpdta[(mpdta["first.treat"] != 0) | (mpdta["countyreal"] == mpdta.loc[mpdta["first.treat"] == 0, "countyreal"].min())]
    big = pd.concat([d[d["first.treat"] == 2007].assign(countyreal=lambda x, k=k: x["countyreal"] * 100 + k)
                     for k in range(8)])  # 1048 units of cohort 2007, 1 never-treated unit
    d = pd.concat([d[d["first.treat"] != 2007], big])
    with pytest.warns(UserWarning, match="overlap"):
        r = att_gt(d, "lemp", "year", "countyreal", "first.treat", bootstrap=False, cband=False)
    assert r.tidy().loc[lambda t: t["group"] == 2007, "estimate"].isna().all()
    assert r.tidy().loc[lambda t: t["group"] == 2004, "estimate"].notna().all()
    reg = att_gt(d, "lemp", "year", "countyreal", "first.treat", est_method="reg", bootstrap=False, cband=False)
    assert np.isfinite(reg.att).all()  # the guard is for propensity-score methods only, as in R


@pytest.mark.parametrize("method", ["dr", "ipw"])
def test_trimming_equals_direct_drdid_with_trim(method):
    """Comparison units with score >= trim_level get weight zero (DRDID); the fast path equals the direct one."""
    from reference_drdid import _drdid_cell

    df = _poor_overlap(n=1500)
    df = df[df["g"] != 2017].copy()
    df["x"] = df["x"] + np.where(df["g"] == 2019, 1.5, 0.0)
    r_def = att_gt(df, "y", "year", "id", "g", xformla="~ x", est_method=method, bootstrap=False, cband=False)
    r = att_gt(df, "y", "year", "id", "g", xformla="~ x", est_method=method, bootstrap=False, cband=False, trim_level=0.6)
    assert any("trim_level 0.6" in n for n in r.notes)
    assert not np.allclose(r.att, r_def.att)
    wide = df.pivot(index="id", columns="year", values="y")
    xw = df.pivot(index="id", columns="year", values="x")
    G = df.groupby("id")["g"].first().reindex(wide.index).to_numpy()
    for j in np.flatnonzero(r.times >= 2019)[:2]:
        t, b = r.times[j], r.base_times[j]
        idx = np.r_[np.flatnonzero(G == 2019), np.flatnonzero(G == 0)]
        X = np.column_stack([np.ones(len(idx)), xw[min(t, b)].to_numpy()[idx]])
        a, _ = _drdid_cell((wide[t] - wide[b]).to_numpy()[idx], (G[idx] == 2019).astype(float), X, np.ones(len(idx)),
                           method, trim_level=0.6)
        assert r.att[j] == pytest.approx(a, abs=1e-10)


def test_bad_overlap_parameters(mpdta):
    with pytest.raises(ValueError, match="overlap_max.*1.5"):
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", overlap_max=1.5)
    with pytest.raises(ValueError, match=r"\['rc', 'pairs'\].*'both'"):
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", allow_unbalanced_panel=True, unbalanced="both")
    with pytest.raises(ValueError, match="panel=True"):
        att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", panel=False, unbalanced="pairs")


# --------------------------------------------------------------------------- matched samples: stacked, cohort-wise
def _hand_matched():
    """Six firms, 2017-2022. 'a' is a comparison firm of cohort 2019 and a user in 2021; 'b' a comparison firm
    of both cohorts (weights 0.5 and 1.5); 'u19' the 2019 user; 'u21' a 2021 user; 'c', 'n' never users."""
    years = np.arange(2017, 2023)
    g = {"a": 2021, "b": 0, "u19": 2019, "u21": 2021, "c": 0, "n": 0}
    rng = np.random.default_rng(7)
    rows = []
    for f, gf in g.items():
        base = rng.normal()
        for t in years:
            rows.append({"be_id": f, "year": t, "g_x": gf, "y": base + 0.1 * (t - 2017) + rng.normal(scale=0.1)
                         + (0.4 if gf and t >= gf else 0.0)})
    panel = pd.DataFrame(rows)
    mu = pd.DataFrame({"be_id": ["u19", "a", "b", "u21", "b", "c"], "cohort": [2019, 2019, 2019, 2021, 2021, 2021],
                       "treated": [1, 0, 0, 1, 0, 0], "weight": [1.0, 1.0, 0.5, 1.0, 1.5, 0.5]})
    return panel, mu


def test_matched_stack_roles_and_weights_hand_built():
    from reach.did import matched_user_count, with_matching_weights

    panel, mu = _hand_matched()
    s = with_matching_weights(panel, mu, gname="g_x")
    roles = s.drop_duplicates("stack_id").set_index(["cohort", "be_id"])[["treated", "weight", "g_stack"]]
    # 'a': comparison firm (weight 1, leaves the comparison set in 2021) in 2019; user only in its own cohort
    assert roles.loc[(2019, "a")].tolist() == [0, 1.0, 2021]
    assert (2021, "a") not in roles.index  # never a user of a cohort it was not matched as a user of
    # 'b': its own weight in each cohort, never summed
    assert roles.loc[(2019, "b"), "weight"] == 0.5 and roles.loc[(2021, "b"), "weight"] == 1.5
    assert roles.loc[(2019, "u19")].tolist() == [1, 1.0, 2019] and roles.loc[(2021, "u21")].tolist() == [1, 1.0, 2021]
    assert len(s) == len(mu) * 6  # every (cohort, firm) block keeps all its years
    assert matched_user_count(mu) == 2 == s.loc[s["treated"] == 1, "be_id"].nunique()


def test_matched_stack_keeps_only_the_columns_asked_for():
    """``columns=``: the same rows, roles and values as the full stack, with the asked columns only; a column the
    panel lacks is named."""
    from reach.did import with_matching_weights

    panel, mu = _hand_matched()
    panel = panel.assign(extra=1.0, y2=panel["y"] * 2)
    full = with_matching_weights(panel, mu, gname="g_x")
    few = with_matching_weights(panel, mu, gname="g_x", columns=["y"])
    assert "extra" not in few and "y2" not in few
    pd.testing.assert_frame_equal(few, full[list(few.columns)])
    with pytest.raises(ValueError, match="nope"):
        with_matching_weights(panel, mu, gname="g_x", columns=["nope"])


def test_matched_att_gt_is_per_cohort_and_clustered_by_firm():
    """Independent computation: each cohort's cells are the weighted DiD on that cohort's own matched set, and
    the aggregate's SE is the firm-clustered sum of the per-cohort influence functions."""
    from reach.did import matched_att_gt, with_matching_weights

    panel, mu = _hand_matched()
    s = with_matching_weights(panel, mu, gname="g_x")
    r = matched_att_gt(s, "y", control_group="notyettreated", bootstrap=False, cband=False)
    # one row per matched firm ('n' is in no matched set); 'a' counts as a user nowhere: it was matched
    # only as a comparison firm (its own cohort-2021 user row is not in the matched sample)
    assert r.n_units == 5 and sorted(r.unit_ids) == ["a", "b", "c", "u19", "u21"]
    assert dict(zip(r.unit_ids, r.unit_cohort)) == {"a": 0, "b": 0, "c": 0, "u19": 2019, "u21": 2021}
    wide = panel.pivot(index="be_id", columns="year", values="y")
    t = r.tidy().set_index(["group", "time"])
    # ATT(2019, 2020): u19 vs a (1.0) and b (0.5); ATT(2019, 2021): 'a' is treated from 2021 -> only b
    for (g, tt, ctrl) in [(2019, 2020, {"a": 1.0, "b": 0.5}), (2019, 2021, {"b": 0.5}), (2021, 2022, {"b": 1.5, "c": 0.5})]:
        user = "u19" if g == 2019 else "u21"
        dy = wide[tt] - wide[g - 1]
        expect = dy[user] - sum(w * dy[f] for f, w in ctrl.items()) / sum(ctrl.values())
        assert t.loc[(g, tt), "estimate"] == pytest.approx(expect, abs=1e-12)
        assert t.loc[(g, tt), "n_control"] == len(ctrl) and t.loc[(g, tt), "n_treated"] == 1
    # firm-clustered aggregation: the simple ATT's influence function has one row per firm
    a = aggte(r, "simple")
    assert a.overall_inffunc.shape == (5,)
    assert a.overall_se == pytest.approx(np.sqrt((a.overall_inffunc**2).sum()) / 5, rel=1e-12)
    # 'b' enters both cohorts' sets: its row carries both contributions (summed, not duplicated)
    IF = np.asarray(r.inffunc)
    b = list(r.unit_ids).index("b")
    assert (np.abs(IF[b, r.groups == 2019]).sum() > 0) and (np.abs(IF[b, r.groups == 2021]).sum() > 0)
    # cohorts are weighted by their matched users (one each), not by rows of the stack
    post = t[t["post"]]
    assert a.overall_att == pytest.approx(post["estimate"].mean(), abs=1e-12)


def test_matched_stack_bad_input():
    from reach.did import with_matching_weights

    panel, mu = _hand_matched()
    wrong = mu.copy()
    wrong.loc[wrong["be_id"] == "u21", "cohort"] = 2019  # matched as a user of a cohort it did not start in
    wrong = wrong.drop_duplicates(["be_id", "cohort"])
    with pytest.raises(ValueError, match="(?s)first use in the panel.*u21"):
        with_matching_weights(panel, wrong, gname="g_x")
    late = pd.concat([mu, pd.DataFrame({"be_id": ["u19"], "cohort": [2021], "treated": [0], "weight": [1.0]})])
    with pytest.raises(ValueError, match="already used the programme"):
        with_matching_weights(panel, late, gname="g_x")
    with pytest.raises(ValueError, match="repeat a"):
        with_matching_weights(panel, pd.concat([mu, mu.iloc[[0]]]), gname="g_x")
    with pytest.raises(KeyError, match="weight"):
        with_matching_weights(panel, mu.drop(columns="weight"), gname="g_x")


def test_stub_matched_count_equals_notebook_03(stub_panel):
    """The matched-user count of 04 (matched_user_count) is 03's (distinct treated be_id); the stacked estimate
    covers the planted effect without dropping firms that are not alive in every year."""
    from reach.did import drop_without_pre_period, matched_user_count
    from reach.effects import effect_report
    from reach.matching import match_cohorts
    from reach.panel import analysis_sample
    import yaml

    panel, _, truth = stub_panel
    p = yaml.safe_load((ROOT / "params" / "stub.yaml").read_text(encoding="utf-8"))
    sample = analysis_sample(panel, "tinl", first_year=p["first_year"], last_year=p["last_year"],
                             exclude_other_users=p["exclude_other_users"]).panel
    cm = match_cohorts(sample, gname="g_tinl", tname="year", idname="be_id", covariates=p["covariates"],
                       control_group=p["control_group"], method=p["match_method"], ratio=p["ratio"],
                       replace=p["replace"], caliper=p["caliper"], ps_model=p["ps_model"], seed=p["seed"],
                       mahalanobis=p["mahalanobis"])
    mu = cm.matched_units()
    est, _ = drop_without_pre_period(sample, "g_tinl")
    rep = effect_report(est, "log_exports", programme="tinl", sample="matched", xformla=p["xformla"],
                        control_group=p["control_group"], biters=499, matched_units=mu, allow_unbalanced_panel=True)
    assert rep.headline()["n_treated"] == matched_user_count(mu) == mu.loc[mu["treated"] == 1, "be_id"].nunique()
    assert rep.n_balanced_drop > 0 and "would have dropped" in rep.exclusions_text()
    h = rep.headline()
    assert h["simple_conf_low"] <= truth["effects"]["tinl"]["simple"] <= h["simple_conf_high"]


# --------------------------------------------------------------------------- not estimable
def test_outcome_that_never_changes_is_not_estimable():
    from reach.effects import effect_report

    df = _report_panel(0.3, n=600)
    df["always"] = 1.0  # every firm exports in every year
    rep = effect_report(df, "always", programme="x", control_group="notyettreated", biters=99)
    assert not rep.estimable and rep.verdict().startswith("not estimable: always never changes")
    assert "no detectable effect" not in rep.narrative() and "not estimable" in rep.narrative()
    h = rep.headline()
    assert h["estimable"] is False and np.isnan(h["simple_att"])  # never a 0.0 estimate
    assert rep.tables["comparison"]["estimate"].isna().all()
    ok = effect_report(_report_panel(0.3, n=600), "y", programme="x", control_group="notyettreated", biters=99)
    assert ok.estimable and ok.headline()["not_estimable_reason"] == ""
    for name in ("event_study", "att_gt", "pretest", "comparison"):  # one table shape, estimable or not
        assert list(rep.tables[name].columns) == list(ok.tables[name].columns), name


def test_report_tables_html_no_index_no_nan_and_figure_counts():
    from reach.effects import effect_report
    from reach.disclosure import Rules

    rep = effect_report(_report_panel(0.3, tiny=4), "y", programme="x", control_group="notyettreated", biters=99,
                        rules=Rules())
    for table in ("comparison", "event_study", "att_gt", "pretest"):
        h = rep.html(table)
        assert "NaN" not in h and "&lt;NA&gt;" not in h and "<NA>" not in h and "nan" not in h
        head = h.split("</thead>")[0]
        assert "<th></th>" not in head  # no index column
    gt = rep.html("att_gt")
    assert "suppressed" in gt  # the tiny cohort's cells (disclosure), not "undefined"
    assert ">2015<" in gt and "2,015" not in gt  # years without thousands separators
    cmp_ = rep.html("comparison")
    assert ">1,500<" not in cmp_ and ".0<" not in cmp_.split(">users<")[-1]  # counts are integers
    es = rep.html("event_study")
    assert "<td>–</td>" in es  # the overall row has no event time
    import matplotlib.pyplot as plt

    fig = rep.figure()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "numbers: users behind each point" in texts  # the number of users differs between event times
    plt.close(fig)
    with pytest.raises(ValueError, match="table"):
        rep.html("nope")


def test_report_lists_na_cells_and_balanced_drop():
    from reach.effects import effect_report

    df = _poor_overlap()
    df = df.drop(index=df.index[::9]).rename(columns={"id": "firm_id", "g": "g_x"})
    rep = effect_report(df, "y", programme="x", xformla="~ x", biters=99, allow_unbalanced_panel=True)
    txt = rep.exclusions_text()
    assert "would have dropped" in txt and f"{rep.n_balanced_drop:,}" in txt and rep.n_balanced_drop > 100
    assert "ATT(2017," in txt and "overlap" in txt
    assert set(rep.na_cells()["group"]) == {2017}
    assert rep.estimable  # cohort 2019 is estimated


# --------------------------------------------------------------------------- one tidy column core
CORE = ["term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high", "n_treated", "n_control"]


def test_every_did_estimate_table_starts_with_the_column_core(mpdta):
    """att_gt (balanced, unbalanced, matched), every aggte type, twfe/did_2x2/naive: the same core first."""
    from reach import did

    assert list(did.TIDY_CORE) == CORE
    r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False)
    un = att_gt(mpdta.drop(index=mpdta.index[::7]), "lemp", "year", "countyreal", "first.treat",
                allow_unbalanced_panel=True, bootstrap=False)
    d2 = mpdta[mpdta["year"].isin([2003, 2004]) & mpdta["first.treat"].isin([0, 2004])].assign(
        tr=lambda d: (d["first.treat"] > 0).astype(int), post=lambda d: (d["year"] == 2004).astype(int))
    tables = {
        "att_gt": (r.tidy(), did.ATT_GT_COLUMNS),
        "att_gt_unbalanced": (un.tidy(), did.ATT_GT_COLUMNS),
        **{f"aggte_{k}": (aggte(r, k).tidy(), did.AGGTE_COLUMNS) for k in did.AGG_TYPES},
        "twfe": (twfe(mpdta, "lemp", "year", "countyreal", "first.treat").tidy(), did.ESTIMATE_COLUMNS),
        "did_2x2": (did_2x2(d2, "lemp", "year", "countyreal", "tr", "post").tidy(), did.ESTIMATE_COLUMNS),
        "naive": (naive_difference(mpdta, "lemp", "year", "countyreal", "first.treat").tidy(), did.ESTIMATE_COLUMNS),
    }
    for name, (t, cols) in tables.items():
        assert list(t.columns[:len(CORE)]) == CORE, name
        assert list(t.columns) == list(cols), name
        ok = t["std_error"] > 0
        # statistic and p-value from an independent computation (the normal tail by erfc)
        z = (t["estimate"] / t["std_error"])[ok]
        np.testing.assert_allclose(t.loc[ok, "statistic"], z, rtol=1e-12, err_msg=name)
        from math import erfc, sqrt

        np.testing.assert_allclose(t.loc[ok, "p_value"], [erfc(abs(v) / sqrt(2)) for v in z], rtol=1e-9, atol=1e-300,
                                   err_msg=name)
        assert t["term"].map(type).eq(str).all() and t["term"].is_unique, name
    assert r.tidy()["term"].iloc[0] == "ATT(2004,2004)"
    assert aggte(r, "dynamic").tidy()["term"].tolist()[:2] == ["ATT", "ATT(e=-3)"]


# --------------------------------------------------------------------------- stages and speed paths: same numbers
@pytest.mark.parametrize("method", ["dr", "ipw", "reg"])
def test_pairs_mode_with_covariates_equals_direct_drdid_on_each_cells_units(method):
    """Independent computation: every pairs-mode cell with a covariate equals the direct DRDID transcription
    (tests/reference_drdid.py) on the units observed in both of the cell's years, with the covariate of the
    earlier year; the influence function too (so the analytic SE)."""
    from reference_drdid import _drdid_cell

    df = _unbalanced(seed=4)
    df["x"] = df["x"] + 0.1 * (df["year"] - 2014)  # time-varying: the covariate's year matters
    r = att_gt(df, "y", "year", "id", "g", xformla="~ x", est_method=method, allow_unbalanced_panel=True,
               unbalanced="pairs", bootstrap=False, cband=False)
    wide = {c: df.pivot(index="id", columns="year", values=c) for c in ("y", "x")}
    G = df.groupby("id")["g"].first().reindex(wide["y"].index).to_numpy()
    checked = 0
    for j in range(len(r.att)):
        g, t, b = r.groups[j], r.times[j], r.base_times[j]
        if t == b:
            continue
        both = (wide["y"][t].notna() & wide["y"][b].notna() & wide["x"][min(t, b)].notna()).to_numpy()
        idx = np.flatnonzero(both & ((G == g) | (G == 0)))
        X = np.column_stack([np.ones(len(idx)), wide["x"][min(t, b)].to_numpy()[idx]])
        a, inf = _drdid_cell((wide["y"][t] - wide["y"][b]).to_numpy()[idx], (G[idx] == g).astype(float), X,
                             np.ones(len(idx)), method)
        assert r.att[j] == pytest.approx(a, abs=1e-10)
        assert r.se_analytic[j] == pytest.approx(np.sqrt(np.sum(inf**2)) / len(idx), rel=1e-8)
        checked += 1
    assert checked > 10


def test_sorted_fast_path_equals_general_path():
    """The reshaped fast path (rows sorted by unit and year) and the general path (shuffled rows) agree exactly,
    with covariates, weights and the not-yet-treated comparison group."""
    df = _planted(seed=8, n=600)
    df["w"] = np.repeat(np.random.default_rng(1).uniform(0.5, 2, 600), df["year"].nunique())
    shuffled = df.sample(frac=1, random_state=3)
    for kw in ({}, {"xformla": "~ x", "weightsname": "w", "control_group": "notyettreated"}):
        a = att_gt(df, "y", "year", "id", "g", bootstrap=False, cband=False, **kw)
        b = att_gt(shuffled, "y", "year", "id", "g", bootstrap=False, cband=False, **kw)
        np.testing.assert_array_equal(a.att, b.att)
        np.testing.assert_array_equal(a.se, b.se)
        np.testing.assert_array_equal(np.asarray(a.unit_ids), np.asarray(b.unit_ids))
        np.testing.assert_array_equal(a.inffunc, b.inffunc)


@pytest.mark.parametrize("xformla", [None, "~ x"])
def test_shared_bootstrap_draws_give_the_same_ses_as_fresh_draws(monkeypatch, xformla):
    """A second outcome on the same design reuses the first one's multiplier draws (no new draws are made)
    and its bootstrap SEs, critical value and aggregated SEs equal those from fresh draws with the same seed;
    another seed draws anew."""
    from reach import did

    df = _planted(seed=9, n=800)
    df["y2"] = df["y"] * 0.5 + np.random.default_rng(2).normal(size=len(df))
    stores = []
    real_store = did._draw_cache_store
    monkeypatch.setattr(did, "_draw_cache_store", lambda *a: (stores.append(a[:2]), real_store(*a)))
    did._DRAW_CACHE.clear()
    att_gt(df, "y", "year", "id", "g", xformla=xformla, biters=299, seed=11)
    assert len(stores) == 1 and len(did._DRAW_CACHE) == 1
    shared = att_gt(df, "y2", "year", "id", "g", xformla=xformla, biters=299, seed=11)
    assert len(stores) == 1  # a hit: nothing drawn, nothing stored
    did._DRAW_CACHE.clear()
    fresh = att_gt(df, "y2", "year", "id", "g", xformla=xformla, biters=299, seed=11)
    assert len(stores) == 2
    np.testing.assert_array_equal(shared.se, fresh.se)
    np.testing.assert_array_equal(shared.boot_draws, fresh.boot_draws)
    assert shared.crit_val == fresh.crit_val
    for k in ("simple", "dynamic"):
        assert aggte(shared, k).overall_se == aggte(fresh, k).overall_se
    other = att_gt(df, "y2", "year", "id", "g", xformla=xformla, biters=299, seed=12)
    assert len(stores) == 3 and not np.array_equal(other.boot_draws, fresh.boot_draws)
    # the bootstrap SEs are still the bootstrap's: close to the analytic ones
    np.testing.assert_allclose(fresh.se, fresh.se_analytic, rtol=0.3)  # 299 draws: ~7% noise per cell, 21 cells


def test_draw_cache_is_bounded(monkeypatch):
    """The cache forgets the oldest design beyond its byte budget and never caches unseeded draws."""
    from reach import did

    did._DRAW_CACHE.clear()
    monkeypatch.setattr(did, "_DRAW_CACHE_BYTES", 3 * 99 * (500 // 8 + 1))
    IF = np.random.default_rng(0).normal(size=(500, 2))
    for seed in range(5):
        did._multiplier_bootstrap(IF, None, 99, seed, progress=False)
    assert len(did._DRAW_CACHE) == 3 and [k[1] for k in did._DRAW_CACHE] == [2, 3, 4]
    did._multiplier_bootstrap(IF, None, 99, None, progress=False)
    assert len(did._DRAW_CACHE) == 3
    did._DRAW_CACHE.clear()


def test_effect_reports_moved_to_effects_old_names_warn():
    """Presentation left the estimator module; the old import path works one more release, with a warning."""
    import reach.did as did
    import reach.effects as effects

    for name in ("effect_report", "EffectReport", "event_study_plot", "effects_intro", "samples_text"):
        with pytest.warns(DeprecationWarning, match=f"reach.effects.{name}"):
            assert getattr(did, name) is getattr(effects, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        did.no_such_name


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("treat", ["g", "d01"])
def test_twfe_equals_linearmodels_panelols(mpdta, weighted, treat):
    """twfe's closed form against linearmodels 7.1 ``PanelOLS(entity_effects, time_effects)`` clustered by unit
    (an independent implementation): on mpdta made unbalanced (10% of rows dropped) with firm weights."""
    from linearmodels.panel import PanelOLS

    rng = np.random.default_rng(3)
    d = mpdta.loc[rng.random(len(mpdta)) > 0.1].copy()
    d["w"] = d["countyreal"].map(pd.Series(rng.uniform(0.2, 3.0, d["countyreal"].nunique()),
                                           index=d["countyreal"].unique()))
    d["g"] = d["first.treat"]
    d["d01"] = ((d["g"] > 0) & (d["year"] >= d["g"])).astype(int)
    got = twfe(d, "lemp", "year", "countyreal", treat, weightsname="w" if weighted else None)
    idx = pd.MultiIndex.from_arrays([d["countyreal"], d["year"]])
    kw = {"weights": pd.Series(d["w"].to_numpy(), index=idx)} if weighted else {}
    ref = PanelOLS(pd.Series(d["lemp"].to_numpy(), index=idx), pd.DataFrame({"D": d["d01"].to_numpy(float)}, index=idx),
                   entity_effects=True, time_effects=True, **kw).fit(cov_type="clustered", cluster_entity=True)
    assert got.estimate == pytest.approx(float(ref.params["D"]), rel=1e-9, abs=1e-12)
    assert got.std_error == pytest.approx(float(ref.std_errors["D"]), rel=1e-9)
    assert got.n_obs == ref.nobs and got.df_resid == ref.df_resid


def _twfe_rows(rng, keep_share: float):
    """(y, D, unit codes, period codes) of a random unbalanced panel with staggered treatment, for ``_twfe_fit``."""
    n_ent, n_t = int(rng.integers(200, 30000)), int(rng.integers(4, 12))
    ent, tc = np.repeat(np.arange(n_ent), n_t), np.tile(np.arange(n_t), n_ent)
    keep = rng.random(ent.size) < keep_share
    ent, tc = np.unique(ent[keep], return_inverse=True)[1], tc[keep]
    D = (tc >= rng.integers(2, n_t + 2, size=n_ent)[ent]).astype(float)
    return rng.normal(size=ent.size) + 0.3 * D, D, ent, tc


@pytest.mark.parametrize("seed", [17, 31])  # shapes where a BLAS product's last digits moved with the threads
def test_twfe_is_the_same_to_the_bit_with_one_or_two_blas_threads(seed):
    """The same run with one kernel (two BLAS threads) and with two kernels side by side (one each) must give
    identical tables: the closed form's sums over units do not depend on the thread count."""
    from threadpoolctl import threadpool_limits

    from reach.did import _twfe_fit

    rng = np.random.default_rng(seed)
    y, D, ent, tc = _twfe_rows(rng, 0.9)
    w = np.ones(ent.size) if seed % 2 else rng.integers(1, 4, size=ent.size).astype(float)
    fits = []
    for threads in (1, 2, 4):
        with threadpool_limits(threads):
            fits.append(_twfe_fit(y, D, ent, tc, w))
    assert fits[0] == fits[1] == fits[2]


@pytest.mark.parametrize("seed", [17, 31, 5])
def test_twfe_without_weights_is_unit_weights_to_the_bit(seed):
    """``w=None`` (``twfe`` without a weights column) skips the row-sized products by the weights; the fit is the
    one with every weight 1, to the bit, and it is not the fit with other weights (the comparison has power)."""
    from reach.did import _twfe_fit

    rng = np.random.default_rng(seed)
    y, D, ent, tc = _twfe_rows(rng, 0.85)
    assert _twfe_fit(y, D, ent, tc, None) == _twfe_fit(y, D, ent, tc, np.ones(ent.size))
    assert _twfe_fit(y, D, ent, tc, None) != _twfe_fit(y, D, ent, tc, rng.integers(1, 4, size=ent.size).astype(float))


def test_twfe_absorbed_treatment_is_a_clear_error(mpdta):
    d = mpdta.assign(d01=(mpdta["first.treat"] > 0).astype(int))  # constant within every unit
    with pytest.raises(ValueError, match="'d01'.*absorbed"):
        twfe(d, "lemp", "year", "countyreal", "d01")


def test_no_progress_bar_inside_a_notebook_kernel(monkeypatch, capsys):
    """Seen at 2M firms: the bootstrap's and matching's tqdm bars went to stderr in the executed notebooks
    and were rendered as red boxes quoting tqdm's installation path. In a kernel the bar is left out; in a
    terminal it stays."""
    from reach import _checks, did

    assert not _checks.in_notebook_kernel()  # pytest is no Jupyter kernel
    monkeypatch.setattr(did, "_PROGRESS_MIN_UNITS", 10)
    IF = np.random.default_rng(0).normal(size=(50, 2))
    did._multiplier_bootstrap(IF, None, 9, 0)
    assert "multiplier bootstrap" in capsys.readouterr().err
    monkeypatch.setattr(_checks, "in_notebook_kernel", lambda: True)
    did._multiplier_bootstrap(IF, None, 9, 0)
    assert capsys.readouterr().err == ""


def test_dense_draws_in_float32_agree_with_float64_far_below_the_bootstrap_noise():
    """_draws_dense multiplies in float32: its draws and standard errors against the same draws in float64."""
    from reach.did import _boot_summary, _draws_dense, _multiplier_bootstrap

    rng = np.random.default_rng(11)
    n, k = 30_000, 12
    IF = rng.standard_t(3, size=(n, k)) * rng.lognormal(size=k) * 40  # heavy tails, unequal scales
    IF -= IF.mean(axis=0)
    Z = (rng.random((n, 3)) < 0.2).astype(float)
    b32, z32, m = _draws_dense(IF, None, Z, 999, 5, False)
    b64, m64 = _multiplier_bootstrap(IF, None, 999, 5, False, extra=Z)
    assert m == m64
    scale = b64.std(axis=0)
    assert np.max(np.abs(b32 - b64[:, :k]) / scale[:k]) < 1e-4
    assert np.max(np.abs(z32 - b64[:, k:]) / scale[k:]) < 1e-4
    se32, _ = _boot_summary(b32, m, 0.05)
    se64, _ = _boot_summary(b64[:, :k], m, 0.05)
    assert np.allclose(se32, se64, rtol=1e-5, atol=0)  # the bootstrap's own noise at 999 draws is ~2%


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_pair_checks_equal_the_hash_based_ones(seed):
    from reach.did import _distinct_per_unit, _pair_key, _repeated

    rng = np.random.default_rng(seed)
    n = 5_000
    a = rng.integers(0, 900, n)
    b = rng.integers(0, 6, n)
    assert np.array_equal(_repeated(a, b), pd.Series(_pair_key(a, b)).duplicated(keep=False).to_numpy())
    sparse_b = b * 10**7  # a key space too large to mark: the hash path
    assert np.array_equal(_repeated(a, sparse_b), pd.Series(_pair_key(a, sparse_b)).duplicated(keep=False).to_numpy())
    want = pd.DataFrame({"a": a, "b": b}).groupby("a")["b"].nunique().reindex(range(1000), fill_value=0).to_numpy()
    assert np.array_equal(_distinct_per_unit(a, b, 1000), want)
    assert np.array_equal(_distinct_per_unit(a, sparse_b, 1000), want)


@pytest.mark.parametrize("n,k", [(9000, 33), (20000, 90), (5000, 1)])
def test_multiplier_bootstrap_does_not_depend_on_the_blas_threads(n, k):
    """`reach run --jobs 2` gives each kernel fewer BLAS threads than `--jobs 1`; OpenBLAS splits a product's sums
    differently by thread count, which moved bootstrap standard errors in the 8th digit between the two. The block
    products run on one thread whatever the setting: the draws are bit for bit the same."""
    from threadpoolctl import threadpool_limits

    from reach import did

    IF = np.random.default_rng(n).normal(size=(n, k))
    out = []
    for threads in (1, 2, 4):
        with threadpool_limits(limits=threads, user_api="blas"):
            out.append(did._multiplier_bootstrap(IF, None, 999, 11, progress=False, dtype=np.float32)[0])
    assert all(np.array_equal(out[0], o) for o in out[1:])


@pytest.mark.parametrize("values", [
    np.repeat(np.array([3, 5, 9, 12]), 3),                       # sorted integers: the shortcut
    np.repeat(np.array([3.0, 5.5, 9.0]), 2),                     # sorted floats
    np.array([5, 3, 3, 9, 5]),                                   # unsorted: pandas
    np.array([1.0, np.nan, 2.0, 2.0]),                           # a missing value: code -1, as pandas
    np.array(["b", "a", "a", "c"], dtype=object),                # text
])
def test_factorize_sorted_equals_pandas(values):
    from reach.did import _factorize_sorted

    for sort in (True, False):
        codes, uniques = _factorize_sorted(pd.Series(values), sort=sort)
        ref_codes, ref_uniques = pd.factorize(pd.Series(values), sort=sort)
        np.testing.assert_array_equal(codes, ref_codes)
        np.testing.assert_array_equal(uniques, np.asarray(ref_uniques))


@pytest.mark.parametrize("values", [np.array([2019, 2014, 2023, 2014, 2019]),  # gaps: codes 0..k-1 in order
                                    np.array([7, 7, 7]), np.array([2.5, 1.0, 2.5]), np.array([10**12, 0, 5])])
def test_period_codes_equal_pandas_sorted_codes(values):
    from reach.did import _period_codes

    np.testing.assert_array_equal(_period_codes(pd.Series(values)), pd.factorize(pd.Series(values), sort=True)[0])


def test_unit_level_columns_that_vary_are_refused_with_the_units(mpdta):
    """The per-unit checks of the unbalanced path (sorted-id shortcut included): a cohort or weight that changes
    within a unit is named with its count of units; a missing weight is a value of its own."""
    d = mpdta.drop(index=7).assign(w=1.0)
    bad = d.assign(**{"first.treat": np.where((d["countyreal"] == 8001) & (d["year"] == 2005), 2006, d["first.treat"])})
    with pytest.raises(ValueError, match=r"'first.treat' \(first treatment period\) varies within countyreal for 1 unit"):
        att_gt(bad, "lemp", "year", "countyreal", "first.treat", allow_unbalanced_panel=True, bootstrap=False)
    w = d.assign(w=np.where(d["countyreal"].isin([8001, 8019]) & (d["year"] == 2007), 2.0, 1.0))
    with pytest.raises(ValueError, match=r"'w' \(weights\) varies within countyreal for 2 unit"):
        att_gt(w, "lemp", "year", "countyreal", "first.treat", weightsname="w", allow_unbalanced_panel=True,
               bootstrap=False)
    from reach.did import _varying_units

    uid = np.array([0, 0, 1, 1, 2])
    col = pd.Series([1.0, np.nan, np.nan, np.nan, 3.0])
    np.testing.assert_array_equal(_varying_units(uid, col, 3), [True, False, False])
    # an infinite value is not a missing one; whole numbers and text take their own paths
    np.testing.assert_array_equal(_varying_units(np.array([0, 0, 1]), pd.Series([np.inf, np.nan, 2.0]), 2), [True, False])
    np.testing.assert_array_equal(_varying_units(uid, pd.Series([4, 4, 5, 6, 7]), 3), [False, True, False])
    np.testing.assert_array_equal(_varying_units(uid, pd.Series(["a", None, None, None, "b"]), 3), [True, False, False])


@pytest.mark.parametrize("a, b", [
    ([0, 0, 1, 1, 2], [2014, 2015, 2014, 2016, 2015]),   # sorted by unit and period: no repeats, shortcut
    ([0, 0, 1, 1, 1], [2014, 2015, 2014, 2014, 2016]),   # sorted with a repeated pair: counted
    ([1, 0, 1, 0, 2], [2015, 2014, 2015, 2016, 2014]),   # unsorted with a repeated pair
    ([0, 0, 0], [2016, 2015, 2014]),                     # periods in decreasing order: counted, none repeats
])
def test_repeated_pairs_equal_pandas_duplicated(a, b):
    from reach.did import _repeated

    a, b = np.array(a), np.array(b) - 2014
    ref = pd.DataFrame({"a": a, "b": b}).duplicated(keep=False).to_numpy()
    np.testing.assert_array_equal(_repeated(a, b), ref)


def test_repeated_unit_period_rows_are_refused_in_a_sorted_panel(mpdta):
    """A panel sorted by unit and year with one row twice: the unbalanced path names the repeated pair."""
    d = pd.concat([mpdta, mpdta.iloc[[12]]]).sort_values(["countyreal", "year"], kind="stable").drop(index=3)
    with pytest.raises(ValueError, match=r"2 rows share a \(countyreal, year\) pair"):
        att_gt(d, "lemp", "year", "countyreal", "first.treat", allow_unbalanced_panel=True, bootstrap=False)
