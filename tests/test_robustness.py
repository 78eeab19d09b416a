"""reach.robustness: the "How sure are we?" section of notebook 04, and its sentences in 05.

Known truths: synthetic panels with parallel trends and a planted effect (1.0 for users that exported
in the year before first use, 0 for the others), so the robust sets exclude zero, the exporters'
subgroup effect and the difference are recovered within their intervals; numbers recorded in the
headline are checked against independent computations (honest_did on the same event study,
(z_{1-a/2} + z_power) * SE with scipy's quantiles, the subgroup rows of heterogeneity()).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reach import robustness
from reach.disclosure import Rules
from reach.heterogeneity import heterogeneity
from reach.labels import code_names
from reach.sensitivity import honest_did
from reach.summary import _how_sure_sentences, compare_programmes, lookup

YEARS = np.arange(2014, 2021)
RULES = Rules(min_units=10, min_treated=10, min_control=10)


def make_panel(n: int = 900, n_users: int = 240, tau_exporter: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Parallel trends hold; exporters (persistent status) gain tau_exporter from first use, others nothing."""
    rng = np.random.default_rng(seed)
    T = len(YEARS)
    status = np.zeros((n, T), dtype=bool)
    status[:, 0] = rng.random(n) < 0.6
    for t in range(1, T):
        stay = rng.random(n) < 0.9
        status[:, t] = np.where(stay, status[:, t - 1], ~status[:, t - 1])
    users = rng.choice(n, n_users, replace=False)
    g = np.zeros(n, dtype=np.int64)
    g[users] = rng.choice([2017, 2018], n_users)
    p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "be_id": np.repeat([f"{i:09d}" for i in range(n)], T),
                      "year": np.tile(YEARS, n), "g_x": np.repeat(g, T)})
    p["exports"] = status.ravel() * np.exp(rng.normal(10, 1, size=n * T))
    p["exports_gm"] = p["exports"] * (rng.random(n * T) < 0.3)
    p["employees"] = np.repeat(np.exp(rng.normal(3, 1.2, size=n)), T).round()
    p["n_dest"] = np.where(status.ravel(), rng.integers(1, 9, size=n * T), 0)
    # a rare level: only a handful of users fall in it (must be suppressed, not crash)
    p["rare"] = np.where(np.repeat(np.arange(n) % 60 == 0, T), "rare", "common")
    exp_ref = np.zeros(n, dtype=bool)
    exp_ref[users] = status[users, np.searchsorted(YEARS, g[users] - 1)]
    post = (p["g_x"].to_numpy() > 0) & (p["year"].to_numpy() >= p["g_x"].to_numpy())
    p["y"] = (np.repeat(rng.normal(size=n), T) + np.tile(0.1 * np.arange(T), n)
              + rng.normal(scale=0.3, size=n * T) + post * np.repeat(np.where(exp_ref, tau_exporter, 0.0), T))
    return p


@pytest.fixture(scope="module")
def panel():
    return make_panel()


@pytest.fixture(scope="module")
def firms(panel):
    ids = panel.loc[panel.g_x > 0, "be_id"].unique()
    return pd.DataFrame({"programme": "x", "be_id": ids, "n_activities": 1 + np.arange(len(ids)) % 3})


@pytest.fixture(scope="module")
def sure(panel, firms):
    return robustness.how_sure(
        panel, {}, programme="x", label="Programme X", primary={"sample": "full", "outcome": "y"}, outcomes=["y"],
        xformla=None, control_group="nevertreated", alpha=0.05, power=0.8, sensitivity_mbar=[0, 0.5, 1, 2],
        placebo_draws=20, subgroups={"exporter_before": "exporter_before", "rare": "rare"}, firms=firms,
        rules=RULES, progress=False)


def test_sensitivity_headline_equals_honest_did_on_the_same_event_study(panel, sure):
    """The breakdown value read back from the publishable table equals honest_did's own (independent path)."""
    es = robustness.event_study_universal(panel, "y", gname="g_x", xformla=None, control_group="nevertreated")
    h = sure.headline()["sensitivity"]["y"]
    for stype, grid in (("relative_magnitude", [0, 0.5, 1, 2]), ("smoothness", None)):
        for target in ("average", 0):
            ref = honest_did(es, event_time=target, sensitivity_type=stype, grid=grid)
            node = h[stype][str(target)]
            bv = ref.breakdown_value
            assert (node["breakdown_value"] is None) if math.isnan(bv) else node["breakdown_value"] == bv
            assert node["lb_at_zero"] == pytest.approx(ref.lb[0], rel=1e-12)
            assert node["ub_at_max"] == pytest.approx(ref.ub[-1], rel=1e-12)
    # planted effect 0.5 on average, parallel trends true: significant at Mbar = 0
    assert h["relative_magnitude"]["average"]["significant_at_zero"] is True
    assert es.keys[0] < 0 and 0.0 in list(es.att)  # universal base period: the reference year is an exact zero


def test_placebo_and_heterogeneity_headlines_are_the_published_numbers(panel, sure):
    h = sure.headline()
    pl = sure.placebo
    assert h["placebo"]["n_draws"] == 20 == pl.n_draws
    assert h["placebo"]["false_positive_rate"] == pytest.approx(pl.false_positive_rate)
    assert h["placebo"]["empirical_mde"] == pytest.approx(pl.empirical_mde_planted)
    assert (h["placebo"]["band_low"], h["placebo"]["band_high"]) == pytest.approx(pl.band)
    # subgroups: same numbers as heterogeneity() called directly (independent call)
    ref = heterogeneity(panel, "y", {"exporter_before": "exporter_before"}, gname="g_x",
                        control_group="nevertreated", rules=RULES).publishable()
    row = ref[(ref.kind == "subgroup") & (ref.subgroup == "exporter")].iloc[0]
    got = h["heterogeneity"]["exporter_before"]["exporter"]
    assert got["estimate"] == pytest.approx(row.estimate, rel=1e-12)
    # planted: exporters gain 1.0, non-exporters 0; the difference is recovered within its interval
    d = h["heterogeneity"]["exporter_before"]["exporter minus non-exporter"]
    assert d["conf_low"] <= 1.0 <= d["conf_high"] and d["conf_low"] > 0
    ne = h["heterogeneity"]["exporter_before"]["non-exporter"]
    assert ne["conf_low"] <= 0.0 <= ne["conf_high"]


def test_small_subgroup_is_suppressed_not_crashed(sure):
    h = sure.headline()["heterogeneity"]["rare"]
    assert h["rare"]["estimate"] is None and h["rare"]["status"].startswith("suppressed")
    assert "**Not publishable**: 1 by" in sure.heterogeneity_text()
    assert "suppressed" in sure.heterogeneity_html()


def test_dose_split_only_where_there_are_activities(panel, firms, sure):
    assert sure.dose is not None and "not causal for the dose" in sure.dose_text()
    assert set(sure.headline()["dose"]["n_activities"]) >= {"1", "2+"}
    ones = firms.assign(n_activities=1)
    no_dose = robustness.how_sure(panel, {}, programme="x", label="Programme X",
                                  primary={"sample": "full", "outcome": "y"}, outcomes=["y"], xformla=None,
                                  control_group="nevertreated", placebo_draws=0, subgroups={}, firms=ones,
                                  rules=RULES, progress=False)
    assert no_dose.dose is None and "one activity" in no_dose.dose_text()
    assert no_dose.placebo is None and "placebo" not in no_dose.headline()
    assert no_dose.heterogeneity is None and "heterogeneity" not in no_dose.headline()


def test_reader_texts_have_no_code_names_or_missing_markers(sure):
    texts = [sure.intro(), sure.sensitivity_text(), sure.sensitivity_html(), sure.power_text(),
             sure.placebo_html(), sure.heterogeneity_text(), sure.heterogeneity_html(), sure.dose_html()]
    codes = [c for c in code_names() if c not in ("rare",)] + ["exporter_before", "relative_magnitude"]
    for t in texts:
        assert not re.search(r"(?<![\w])(NaN|nan|<NA>|None)(?![\w])", t), t[:200]
        for c in codes:
            assert not re.search(rf"(?<![\w./-]){re.escape(c)}(?![\w])", t), (c, t[:200])
        assert "index" not in t.lower() or "<th></th>" not in t


def test_mde_from_the_primary_report_standard_error(stub_panel, stub_params):
    """MDE = (z_0.975 + z_0.8) * SE of the recorded primary estimate; percent = exp(MDE) - 1 (Bloom 1995)."""
    from reach import did, effects
    from reach.panel import analysis_sample

    panel, _, _ = stub_panel
    s = analysis_sample(panel, "nlib", first_year=stub_params["first_year"], last_year=stub_params["last_year"])
    est, _ = did.drop_without_pre_period(s.panel, "g_nlib")
    rep = effects.effect_report(est, "log_exports", programme="nlib", sample="full", xformla=stub_params["xformla"],
                                control_group=stub_params["control_group"], biters=0,
                                rules=Rules(**stub_params["disclosure"]), allow_unbalanced_panel=True)
    res = robustness.how_sure(est, {("log_exports", "full"): rep}, programme="nlib",
                              primary={"sample": "full", "outcome": "log_exports"}, outcomes=["log_exports"],
                              xformla=stub_params["xformla"], control_group=stub_params["control_group"],
                              placebo_draws=0, subgroups={}, rules=stub_params["disclosure"], progress=False)
    h = res.headline()["mde"]["log_exports"]
    se = rep.headline()["simple_se"]
    k = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert h["mde"] == pytest.approx(k * se, rel=1e-12)
    assert h["mde_percent"] == pytest.approx(math.expm1(k * se), rel=1e-12)
    assert h["n_treated"] == rep.headline()["n_treated"]
    # NLiB has no planted effect: its interval covers zero (stub truth) and the MDE is what it could have seen
    assert rep.headline()["simple_conf_low"] <= 0 <= rep.headline()["simple_conf_high"]
    assert f"{100 * h['mde_percent']:.0f}% of exports cannot be told apart from zero" in res.power_text()


@pytest.mark.parametrize("kw, msg", [
    ({"power": 1.5}, "power must be a number strictly between 0 and 1; got 1.5"),
    ({"placebo_draws": -1}, "placebo_draws must be a whole number >= 0; got -1"),
    ({"primary": {"sample": "full", "outcome": "z"}}, "primary outcome 'z' is not among the outcomes \\['y'\\]"),
    ({"primary": {"outcome": "y"}}, "primary must be a dict with keys 'sample' and 'outcome'"),
])
def test_bad_arguments_are_named(panel, kw, msg):
    args = dict(programme="x", primary={"sample": "full", "outcome": "y"}, outcomes=["y"], xformla=None,
                placebo_draws=0, subgroups={}, progress=False)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        robustness.how_sure(panel, {}, **args)


# --------------------------------------------------------------------------- 05's sentences
def _heads(bv, sig=True, mde=0.104):
    return {"effects_x": {"mde": {"log_exports": {"n_treated": 270.0, "mde_percent": None if mde is None else
                                                  math.expm1(mde), "mde": mde, "power": 0.8, "alpha": 0.05}},
                          "sensitivity": {"log_exports": {"relative_magnitude": {"average": {
                              "significant_at_zero": sig, "breakdown_value": bv}}}}}}


@pytest.mark.parametrize("bv, sig, expect", [
    (0.75, True, "at most 75% of the largest change of the pre-trend"),
    (0.0, True, "breakdown value 0 of the relative-magnitudes"),
    (None, False, "not significant even if parallel trends hold exactly"),
    (None, None, "suppressed"),
])
def test_summary_sentences_quote_only_recorded_numbers(bv, sig, expect):
    h = _heads(bv, sig)
    quoted = {}

    def q(sec, path):
        v = lookup(h, sec, path)
        if v is not None:
            quoted.setdefault(sec, {})[path] = v
        return v

    s = _how_sure_sentences(h, "effects_x", "X", "log_exports", q)
    assert s[0] == ("X: with 270 users, effects smaller than 11% of exports cannot be told apart from zero "
                    "(80% power, 5% significance).")
    assert expect in s[1]
    assert quoted["effects_x"]["mde.log_exports.mde_percent"] == pytest.approx(math.expm1(0.104))


def test_suppressed_mde_is_said_and_comparison_carries_the_sentences():
    s = _how_sure_sentences(_heads(0.5, mde=None), "effects_x", "X", "log_exports", lambda a, b: lookup(_heads(0.5, mde=None), a, b))
    assert s[0] == "X: the minimum detectable effect is suppressed (the estimate behind it is)."
    h = _heads(0.5)
    h["effects_x"]["outcomes"] = {"log_exports": {"matched": {"simple_att": 0.2, "simple_conf_low": 0.1,
                                                              "simple_conf_high": 0.3, "detectable": True,
                                                              "n_treated": 270.0}}}
    c = compare_programmes(h, ["x"], names={"x": "X"})
    assert len(c.how_sure) == 2 and set(c.how_sure) <= set(c.sentences)
    assert c.quoted["effects_x"]["sensitivity.log_exports.relative_magnitude.average.breakdown_value"] == 0.5
    assert c.record()["sentences"] == list(c.sentences)
    # no how-sure numbers recorded (older run): nothing said, nothing invented
    del h["effects_x"]["mde"], h["effects_x"]["sensitivity"]
    assert compare_programmes(h, ["x"], names={"x": "X"}).how_sure == ()


def test_sensitivity_cells_left_missing_are_said_not_warned():
    """At 2M firms the universal-base event study left cells missing (overlap guard): its warnings reached the
    rendered report as stderr boxes quoting the library's path and the largest propensity score (one firm's
    value). They are now the reason in the text, without the score."""
    import warnings

    rng = np.random.default_rng(0)
    n, T = 600, 6
    g = np.repeat(rng.choice([0, 0, 0, 2019, 2020], n), T)
    d = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "year": np.tile(np.arange(2016, 2016 + T), n), "g_x": g})
    # cohort 2019 lies far outside the comparison firms in 2016-2017: its pre-period cells fail the overlap guard
    d["lemp"] = rng.normal(size=n * T) + np.where((d.g_x == 2019) & (d.year <= 2017), 40.0, 0.0)
    d["y"] = rng.normal(size=n * T)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = robustness.how_sure(d, {}, programme="x", primary={"sample": "full", "outcome": "y"}, outcomes=["y"],
                                  xformla="~ lemp", control_group="notyettreated", placebo_draws=0, subgroups={},
                                  progress=False)
    assert not [w for w in caught if "att_gt" in str(w.message)]
    text = res.sensitivity_text()
    assert "event study not estimable: 2 group-time effects could not be estimated, e.g. first-use year 2019 in 2016: " \
           "too little overlap" in text
    assert not re.search(r"0\.999[0-9]|1\.000", text)  # the guard, never a firm's score


@pytest.mark.parametrize("unbalanced", [False, True])
def test_sensitivity_takes_the_full_reports_post_cells_and_gives_the_same_sets(panel, monkeypatch, unbalanced):
    """With the effect reports of the same panel, the universal event study takes their post-period cells (only its
    pre-period cells are estimated) and every robust set is the one estimated from scratch."""
    from reach import did
    from reach.effects import effect_report

    p = panel.assign(size=np.log1p(panel["employees"]))
    if unbalanced:  # firms entering and leaving: each cell on the firms observed in both years
        p = p[(p["firm_id"] % 7 != 0) | (p["year"] != 2015)]
    kw = dict(xformla="~ size", control_group="notyettreated", est_method="dr", anticipation=0,
              allow_unbalanced_panel=True, alpha=0.05)
    reports = {("y", "full"): effect_report(p, "y", programme="x", biters=99, rules=RULES, **{
        k: v for k, v in kw.items() if k != "alpha"})}
    used = []
    real = did._universal_from_varying
    monkeypatch.setattr(did, "_universal_from_varying", lambda pre, v: used.append(v) or real(pre, v))
    common = dict(programme="x", primary={"sample": "full", "outcome": "y"}, outcomes=["y"],
                  sensitivity_mbar=[0, 0.5, 1], placebo_draws=0, subgroups={}, rules=RULES, progress=False, **kw)
    got = robustness.how_sure(p, reports, **common)
    assert used == [reports[("y", "full")].att_gt]
    ref = robustness.how_sure(p, {}, **common)
    assert len(used) == 1  # without reports: estimated in full
    # balanced: each cohort's logit starts from its previous cell's fit (converged to 1e-10), hence rtol
    pd.testing.assert_frame_equal(got.checked["sensitivity"].table, ref.checked["sensitivity"].table, rtol=1e-8)
    a, b = _flat(got.headline()["sensitivity"]), _flat(ref.headline()["sensitivity"])
    assert a.keys() == b.keys()
    for k in a:
        num = isinstance(b[k], float)
        assert a[k] == (pytest.approx(b[k], rel=1e-8, nan_ok=True) if num else b[k]), k
    # another panel's report (an outcome changed in a base year) is not used: the sets are this panel's own
    q = p.assign(y=p["y"] + 0.5 * ((p["year"] == 2017) & (p["g_x"] == 2018)))  # a base year of the post cells
    other = robustness.how_sure(q, reports, **common)
    fresh = robustness.how_sure(q, {}, **common)
    pd.testing.assert_frame_equal(other.checked["sensitivity"].table, fresh.checked["sensitivity"].table, rtol=1e-8)
    assert got.checked["sensitivity"].table["estimate"].iloc[0] != other.checked["sensitivity"].table["estimate"].iloc[0]


def _flat(node, prefix=""):
    """A nested headline as ``{path: value}`` (numbers compared with a tolerance, the rest exactly)."""
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _flat(sub, f"{prefix}/{key}").items()}
    return {prefix: node}


def test_firms_not_exporting_yet_are_answered_on_exporting_not_on_a_log_outcome():
    """Planted: every user that did not export in the year before first use exports in each year from first
    use on with probability 0.7 (other firms keep their own status; the primary outcome moves only for
    exporters). The answer to "does it help firms that were not exporting yet?" is the effect on exporting:
    the subgroup's estimate covers the true effect (from the planted status process, known exactly) and
    equals heterogeneity() on exporting called directly; the primary outcome's number for them is not the
    answer. (Had every one of them exported, each user's change would be the same 0 -> 1 and the estimate
    each user's own change: suppressed, see test_heterogeneity.)"""
    p = make_panel(seed=3)
    status = (p["exports"] > 0).to_numpy()
    g, year = p["g_x"].to_numpy(), p["year"].to_numpy()
    ref = p.loc[p["year"] == p["g_x"] - 1].set_index("firm_id")["exports"].gt(0)
    non_exp = p["firm_id"].map(~ref).fillna(False).to_numpy(dtype=bool) & (g > 0)
    post = (g > 0) & (year >= g)
    starts = np.random.default_rng(11).random(len(p)) < 0.7
    p["exporter"] = np.where(non_exp & post, starts.astype(float), status.astype(float))
    # status flips with probability 0.1 a year (make_panel): from no exports in g - 1, a firm exports k years
    # later with probability (1 - 0.8^k) / 2; the effect is 0.7 minus that, averaged over the users' post
    # years as the simple aggregation weights them (by users)
    k = (year - g + 1)[non_exp & post]
    truth = float(np.mean(0.7 - (1.0 - 0.8 ** k) / 2))
    s = robustness.how_sure(p, {}, programme="x", label="Programme X", primary={"sample": "full", "outcome": "y"},
                            outcomes=["y"], xformla=None, control_group="nevertreated", placebo_draws=0,
                            subgroups={"exporter_before": "exporter_before"}, rules=RULES, progress=False)
    got = s.headline()["starting"]
    assert got["outcome"] == "exporter" and "starting" in s.checked
    ne = got["exporter_before"]["non-exporter"]
    assert ne["conf_low"] <= truth <= ne["conf_high"] and ne["conf_low"] > 0.2
    direct = heterogeneity(p, "exporter", {"exporter_before": "exporter_before"}, gname="g_x",
                           control_group="nevertreated", rules=RULES).publishable()
    row = direct[(direct.kind == "subgroup") & (direct.subgroup == "non-exporter")].iloc[0]
    assert ne["estimate"] == pytest.approx(row.estimate, rel=1e-12)
    text = s.heterogeneity_text()
    answer = text.split("**Does it help firms that were not exporting yet?**")[1]
    assert f"{row.estimate:+.3f}" in answer and "yes, more of them export." in answer and "Chen & Roth" in answer
    assert "start to export" in s.intro()
    y_ne = s.headline()["heterogeneity"]["exporter_before"]["non-exporter"]["estimate"]
    assert f"{y_ne:+.3f}" not in answer  # the log-type outcome's number is not the answer
    # the primary outcome is exporting itself: the subgroup table answers, once, without the caveat
    s2 = robustness.how_sure(p, {}, programme="x", primary={"sample": "full", "outcome": "exporter"},
                             outcomes=["exporter"], xformla=None, control_group="nevertreated", placebo_draws=0,
                             subgroups={"exporter_before": "exporter_before"}, rules=RULES, progress=False)
    assert s2.starting is None and "starting" not in s2.checked and "start to export" not in s2.intro()
    assert f"{row.estimate:+.3f}" in s2.heterogeneity_text() and "Chen & Roth" not in s2.heterogeneity_text()


def test_a_miscalibrated_placebo_does_not_quote_its_empirical_mde_as_a_detectable_size():
    """Never-users with a high covariate value trend upwards, users have high values, and the placebo draws
    pseudo-users on that covariate: the placebo estimates (no covariate in the estimator) are biased upwards, so
    a planted effect is 'found' by the bias. The text then says so instead of 'effects smaller than X would have
    gone undetected' (at 2M firms it read 'effects smaller than 0% of exports'). A calibrated placebo keeps it."""
    rng = np.random.default_rng(5)
    p = make_panel(seed=5)
    firm_x = pd.Series(rng.normal(size=p["firm_id"].nunique()))
    firm_x[p.groupby("firm_id")["g_x"].first().to_numpy() > 0] += 1.5  # users sit high on x
    p["xc"] = p["firm_id"].map(firm_x)
    p["y"] = p["y"] + 0.3 * p["xc"] * (p["year"] - YEARS[0])  # a trend that grows with x
    s = robustness.how_sure(p, {}, programme="x", primary={"sample": "full", "outcome": "y"}, outcomes=["y"],
                            xformla=None, control_group="nevertreated", placebo_draws=20, placebo_covariates=["xc"],
                            subgroups={}, rules=RULES, progress=False)
    assert not s.placebo.calibrated and s.placebo.false_positive_rate > s.placebo.band[1]
    text = s.power_text()
    assert "would have gone undetected" not in text
    assert "measures that bias rather than what the design can detect" in text
    assert "went undetected" not in s.placebo.sentence() and "measures that bias" in s.placebo.sentence()
    # the uniform draws of the module's fixture are calibrated: the empirical MDE is read as a size there
    calibrated = robustness.how_sure(make_panel(), {}, programme="x", primary={"sample": "full", "outcome": "y"},
                                     outcomes=["y"], xformla=None, control_group="nevertreated", placebo_draws=20,
                                     subgroups={}, rules=RULES, progress=False)
    assert calibrated.placebo.calibrated and "would have gone undetected" in calibrated.power_text()
    assert "went undetected" in calibrated.placebo.sentence()


def test_a_secondarily_suppressed_subgroup_reads_once_why():
    """The reader's status of a secondary suppression said the reason twice ("suppressed (would reveal a suppressed
    subgroup): protects a suppressed subgroup", 2M run's tinl text)."""
    got = robustness._status("suppressed (secondary): protects a suppressed subgroup")
    assert got == "suppressed (it would reveal another, suppressed subgroup)"
    assert robustness._status("estimated") == "estimated"
