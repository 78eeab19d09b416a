"""reach.heterogeneity: subgroup effects, their differences, the dose split.

Known truths: synthetic panels built below plant an effect only for users that exported in the year
before first use (exporter status changes from year to year, so reading any other year mixes the
groups); the standard error of a difference is checked against closed-form two-sample formulas (an
independent computation) where the design makes them exact.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reach.heterogeneity import (DOSE_NOTE, HET_COLUMNS, UNKNOWN, classify_users, dose_split, heterogeneity)

YEARS = np.arange(2014, 2021)
Z = stats.norm.ppf(0.975)


def make_panel(n: int = 1500, cohorts=(2017, 2018), n_users: int = 300, tau_exporter: float = 0.6,
               tau_non: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Exporter status is a persistent Markov chain; the effect depends on status in g - 1 only."""
    rng = np.random.default_rng(seed)
    T = len(YEARS)
    status = np.zeros((n, T), dtype=bool)
    status[:, 0] = rng.random(n) < 0.5
    for t in range(1, T):
        stay = rng.random(n) < 0.8
        status[:, t] = np.where(stay, status[:, t - 1], ~status[:, t - 1])
    users = rng.choice(n, n_users, replace=False)
    g = np.zeros(n, dtype=np.int64)
    g[users] = rng.choice(cohorts, n_users)
    emp = np.exp(rng.normal(3, 1.2, size=n))
    p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "be_id": np.repeat([f"{i:09d}" for i in range(n)], T),
                      "year": np.tile(YEARS, n), "g_x": np.repeat(g, T)})
    p["exports"] = status.ravel() * np.exp(rng.normal(10, 1, size=n * T))
    p["exports_gm"] = p["exports"] * (rng.random(n * T) < 0.3)
    p["employees"] = np.repeat(emp, T).round()
    p["n_dest"] = np.where(status.ravel(), rng.integers(1, 9, size=n * T), 0)
    p["size_class"] = np.where(p["employees"] < 20, "small", "large")
    ref = {i: g[i] - 1 for i in users}
    exp_ref = np.zeros(n, dtype=bool)
    exp_ref[users] = status[users, np.searchsorted(YEARS, [ref[i] for i in users])]
    tau = np.where(exp_ref, tau_exporter, tau_non)
    fe = np.repeat(rng.normal(size=n), T)
    gam = np.tile(0.1 * np.arange(T), n)
    post = (p["g_x"].to_numpy() > 0) & (p["year"].to_numpy() >= p["g_x"].to_numpy())
    p["y"] = fe + gam + rng.normal(scale=0.5, size=n * T) + post * np.repeat(tau, T)
    return p


def _row(res, kind, dimension, subgroup):
    t = res.tidy()
    return t[(t.kind == kind) & (t.dimension == dimension) & (t.subgroup == subgroup)].iloc[0]


# --------------------------------------------------------------------------- classification
def test_classify_users_reads_the_year_before_first_use():
    p = pd.DataFrame({"firm_id": np.repeat([1, 2, 3, 4], 2), "year": [2018, 2019] * 4,
                      "g": np.repeat([2019, 2019, 2019, 0], 2),
                      "exports": [0, 5, 3, 0, 0, 0, 1, 1], "exports_gm": [0, 0, 2, 0, 0, 0, 0, 0],
                      "employees": [10, 9, 250, 300, 251, 10, 5, 5], "n_dest": [0, 1, 5, 0, 0, 0, 1, 1]})
    lab = classify_users(p, {"e": "exporter_before", "gm": "gm_exporter_before", "tg": "target_group"}, gname="g")
    assert lab["firm_id"].tolist() == [1, 2, 3]
    assert lab["ref_year"].tolist() == [2018] * 3
    assert lab["e"].tolist() == ["non-exporter", "exporter", "non-exporter"]  # firm 1 exports only in g
    assert lab["gm"].tolist() == ["no growth-market exports", "growth-market exporter", "no growth-market exports"]
    # bounds inclusive: 10 employees but no destination -> outside; 250 and 5 -> inside; 251 -> outside
    assert lab["tg"].tolist() == ["outside", "inside", "outside"]
    lab2 = classify_users(p, {"tg": "target_group"}, gname="g", target_group={"min_destinations": 0})
    assert lab2["tg"].tolist() == ["inside", "inside", "outside"]


def test_classify_users_without_reference_row_are_unknown_not_dropped():
    p = pd.DataFrame({"firm_id": [1, 2, 2], "year": [2019, 2018, 2019], "g": [2019, 2019, 2019],
                      "size_class": ["10", "21", "21"], "exports": [1.0, 0.0, 1.0]})
    lab = classify_users(p, {"size_class": "size_class", "thr": {"column": "exports", "threshold": 0,
                                                                  "labels": ["none", "some"]}}, gname="g")
    assert lab["size_class"].tolist() == [UNKNOWN, "21"]
    assert lab["thr"].tolist() == [UNKNOWN, "none"]


@pytest.mark.parametrize("rule", [3, {"col": "x"}, {"column": "exports", "labels": ["a"]}])
def test_bad_subgroup_rule_names_allowed_forms(rule):
    p = make_panel(n=50, n_users=10)
    with pytest.raises(ValueError, match=r"subgroups\['d'\]: .*got"):
        classify_users(p, {"d": rule}, gname="g_x")


def test_bad_comparison_and_missing_column():
    p = make_panel(n=200, n_users=40)
    with pytest.raises(ValueError, match="comparison must be one of \\['same_subgroup', 'all'\\]; got 'none'"):
        heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x", comparison="none")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['nope'\]"):
        heterogeneity(p, "y", {"e": "nope"}, gname="g_x")


# --------------------------------------------------------------------------- planted subgroup effect
@pytest.mark.parametrize("comparison", ["same_subgroup", "all"])
def test_planted_subgroup_effect_recovered_within_ci(comparison):
    p = make_panel(seed=1)
    res = heterogeneity(p, "y", {"exporter_before": "exporter_before"}, gname="g_x", comparison=comparison)
    ex, non = _row(res, "subgroup", "exporter_before", "exporter"), _row(res, "subgroup", "exporter_before", "non-exporter")
    d = _row(res, "difference", "exporter_before", "exporter")
    assert ex.conf_low <= 0.6 <= ex.conf_high, ex.to_dict()
    assert non.conf_low <= 0.0 <= non.conf_high, non.to_dict()
    assert d.reference == "non-exporter" and d.conf_low <= 0.6 <= d.conf_high and d.conf_low > 0
    assert d.estimate == pytest.approx(ex.estimate - non.estimate, abs=1e-12)
    assert ex.n_treated + non.n_treated == _row(res, "overall", "all", "all users").n_treated == 300
    assert res.settings["comparison"] == comparison


def test_difference_se_equals_two_sample_formula_with_shared_comparison():
    """One cohort, two periods, no covariates, shared comparison firms: the comparison mean cancels in
    the difference, which is a two-sample difference of mean changes with SE sqrt(s_a^2/n_a + s_b^2/n_b)."""
    p = make_panel(n=800, cohorts=(2015,), n_users=200, seed=2)
    p = p[p.year.isin([2014, 2015])]
    res = heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x", comparison="all")
    w = p.pivot(index="firm_id", columns="year", values="y")
    dy = w[2015] - w[2014]
    lab = classify_users(p, {"e": "exporter_before"}, gname="g_x").set_index("firm_id")["e"]
    a, b = dy[lab.index[lab == "exporter"]], dy[lab.index[lab == "non-exporter"]]
    se = np.sqrt(a.var(ddof=0) / len(a) + b.var(ddof=0) / len(b))
    d = _row(res, "difference", "e", "exporter")
    assert d.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-10)
    assert d.std_error == pytest.approx(se, rel=1e-9)
    # the naive independent-samples SE would be larger: the covariance is used
    sa, sb = _row(res, "subgroup", "e", "exporter").std_error, _row(res, "subgroup", "e", "non-exporter").std_error
    assert d.std_error < np.hypot(sa, sb)


def test_difference_se_with_disjoint_comparison_sets_is_root_sum_of_squares():
    """Comparison within the subgroup (one cohort: disjoint comparison sets): the estimates are independent."""
    p = make_panel(n=800, cohorts=(2016,), n_users=200, seed=3)
    # log size: a linear index in raw (log-normal) employees puts one firm's score above did's overlap limit
    # of 0.999, and R did 2.5 (as reach.did) then leaves the cells missing
    p["log_employees"] = np.log1p(p["employees"])
    res = heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x", xformla="~ log_employees")
    sa, sb = _row(res, "subgroup", "e", "exporter").std_error, _row(res, "subgroup", "e", "non-exporter").std_error
    assert _row(res, "difference", "e", "exporter").std_error == pytest.approx(np.hypot(sa, sb), rel=1e-9)


# --------------------------------------------------------------------------- disclosure
def test_small_subgroup_is_suppressed_not_raised_with_secondary_protection():
    p = make_panel(n=600, n_users=120, seed=4)
    p["tiny"] = np.where(p.firm_id.isin(p.loc[p.g_x > 0, "firm_id"].unique()[:6]), "rare", "common")
    res = heterogeneity(p, "y", {"tiny": "tiny", "e": "exporter_before"}, gname="g_x", rules={"min_treated": 10})
    t = res.tidy()
    rare, common = _row(res, "subgroup", "tiny", "rare"), _row(res, "subgroup", "tiny", "common")
    assert rare.status.startswith("suppressed: fewer than 10") and np.isnan(rare.estimate)
    # the other level would reveal the rare group by difference from the overall row
    assert common.status.startswith("suppressed (secondary)") and np.isnan(common.estimate)
    assert _row(res, "difference", "tiny", "rare").status.startswith("suppressed")
    pub = res.publishable()
    tiny = pub[pub.dimension == "tiny"]
    assert tiny["estimate"].isna().all() and tiny["n_treated"].isna().all()
    assert pub.loc[pub.dimension == "e", "estimate"].notna().all()
    assert list(t.columns) == list(HET_COLUMNS)
    assert "rare" in res.summary() and "suppressed" in res.narrative()


def test_result_is_immutable_and_repr_shows_no_numbers():
    p = make_panel(n=400, n_users=80, seed=5)
    res = heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.yname = "z"
    assert repr(res) == "HeterogeneityResult(yname='y', dimensions=['e'])"
    assert res._repr_markdown_().startswith("**Subgroup effects")
    assert res.difference("e")["subgroup"] == "exporter"
    with pytest.raises(ValueError, match="no difference for dimension 'x'"):
        res.difference("x")


# --------------------------------------------------------------------------- dose split
def test_dose_split_synthetic_labels_and_note():
    p = make_panel(n=600, n_users=150, seed=6)
    users = p.loc[p.g_x > 0, "be_id"].unique()
    firms = pd.DataFrame({"programme": "x", "be_id": users, "n_activities": 1 + np.arange(len(users)) % 3})
    res = dose_split(p, "y", firms[:-5], programme="x")  # 5 users without a count: excluded and counted
    t = res.tidy()
    assert t.loc[t.kind == "subgroup", "subgroup"].tolist() == ["1", "2+"]
    assert res.note == DOSE_NOTE and "not causal" in res.note and "not causal" in res.summary()
    assert res.exclusions["users_without_activity_count"] == 5
    one, more = _row(res, "subgroup", "n_activities", "1"), _row(res, "subgroup", "n_activities", "2+")
    assert (one.n_treated, more.n_treated) == (sum(1 + np.arange(145) % 3 == 1), sum(1 + np.arange(145) % 3 >= 2))


def test_dose_split_rejects_unknown_programme():
    p = make_panel(n=200, n_users=40)
    firms = pd.DataFrame({"programme": "y", "be_id": ["1"], "n_activities": [1]})
    with pytest.raises(ValueError, match="no rows for programme 'x'; programmes: \\['y'\\]"):
        dose_split(p, "y", firms, programme="x")


# --------------------------------------------------------------------------- the committed stub
def _stub_est(stub_panel, stub_params, programme):
    from reach import did
    from reach.panel import analysis_sample

    panel, link, truth = stub_panel
    s = analysis_sample(panel, programme, first_year=stub_params["first_year"], last_year=stub_params["last_year"])
    est, _ = did.drop_without_pre_period(s.panel, f"g_{programme}")
    return est, link, truth


def _stub_kw(stub_params):
    return dict(xformla=stub_params["xformla"], control_group=stub_params["control_group"],
                est_method=stub_params["est_method"], alpha=stub_params["alpha"], rules=stub_params["disclosure"])


def test_stub_tinl_dose_split(stub_panel, stub_params):
    est, link, truth = _stub_est(stub_panel, stub_params, "tinl")
    res = dose_split(est, "log_exports", link, programme="tinl", **_stub_kw(stub_params))
    f = link.firms[link.firms.programme == "tinl"]
    one, more = _row(res, "subgroup", "n_activities", "1"), _row(res, "subgroup", "n_activities", "2+")
    assert (one.n_treated, more.n_treated) == ((f.n_activities == 1).sum(), (f.n_activities >= 2).sum())
    assert one.n_treated + more.n_treated == truth["n_users"]["tinl"]
    assert res.checked().ok and "not causal" in res.narrative()


def test_stub_default_subgroups_run_with_suppression(stub_panel, stub_params):
    est, _, _ = _stub_est(stub_panel, stub_params, "nlib")
    res = heterogeneity(est, "log_exports", gname="g_nlib", target_group=stub_params["target_group"],
                        **_stub_kw(stub_params))
    t = res.tidy()
    assert set(t.dimension) == {"all", "target_group", "exporter_before", "size_class", "gm_exporter_before"}
    small = t[(t.kind == "subgroup") & (t.n_treated < 10)]
    assert len(small) and small.status.str.startswith("suppressed").all()
    pub = res.publishable()
    assert pub.loc[pub.status.str.startswith("suppressed"), "estimate"].isna().all()
    assert _row(res, "overall", "all", "all users").conf_low <= 0  # NLiB: zero effect


# truth.json names subgroups as the stub generator does; the library's named rules and their labels
_TRUTH_RULES = {"target_group_before": ("target_group", {"inside target group": "inside",
                                                         "outside target group": "outside"})}


def test_stub_planted_subgroup_effect_recovered(stub_panel, stub_params):
    """The stub plants an extra effect (truth planted_extra) for TINL users inside the target group in g-1:
    each subgroup's true simple ATT (truth.json heterogeneity.tinl.simple) is inside its 95% CI, the subgroup
    sizes are the planted ones, and the planted difference is inside the difference's CI."""
    _, _, truth = stub_panel
    het = truth["heterogeneity"]["tinl"]
    est, _, _ = _stub_est(stub_panel, stub_params, "tinl")
    by = het["by"]
    rule, names = _TRUTH_RULES[by]
    res = heterogeneity(est, truth["effects"]["tinl"]["outcome"], {by: rule}, gname="g_tinl",
                        target_group=stub_params["target_group"], **_stub_kw(stub_params))
    for group, att in het["simple"].items():
        r = _row(res, "subgroup", by, names[group])
        assert r.status == "estimated", r.to_dict()
        assert r.n_treated == het["n_users"][group]
        assert r.conf_low <= att <= r.conf_high, (group, att, r.to_dict())
    d = _row(res, "difference", by, "inside")
    true_diff = het["simple"]["inside target group"] - het["simple"]["outside target group"]
    assert d.conf_low <= true_diff <= d.conf_high, d.to_dict()


def test_users_first_using_after_the_window_are_counted_not_compared():
    p = make_panel(n=400, n_users=80, seed=7)
    late = p.loc[p.g_x > 0, "firm_id"].unique()[:4]
    p.loc[p.firm_id.isin(late), "g_x"] = 2030
    res = heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x")
    assert res.exclusions["users_first_use_after_window"] == 4
    assert _row(res, "overall", "all", "all users").n_treated == 76
    sub = res.tidy()
    assert sub.loc[sub.kind == "subgroup", "n_treated"].sum() == 76


def test_subgroup_with_too_few_comparison_firms_is_suppressed():
    """Comparison within the subgroup: a level whose never-users are too few is suppressed, not published."""
    p = make_panel(n=400, n_users=100, seed=8)
    users = p.loc[p.g_x > 0, "firm_id"].unique()
    never = p.loc[p.g_x == 0, "firm_id"].unique()
    p["kind"] = np.where(p.firm_id.isin(np.r_[users[:30], never[:5]]), "a", "b")
    res = heterogeneity(p, "y", {"kind": "kind"}, gname="g_x")
    a = _row(res, "subgroup", "kind", "a")
    assert a.status == "suppressed: fewer than 10 comparison firms" and np.isnan(a.estimate)
    assert _row(res, "subgroup", "kind", "b").status.startswith("suppressed (secondary)")
    assert res.publishable().loc[lambda t: t.dimension == "kind", "estimate"].isna().all()


@pytest.mark.slow
@pytest.mark.parametrize("comparison", ["same_subgroup", "all"])
def test_difference_se_matches_monte_carlo_spread(comparison):
    """Over 80 independent synthetic panels (two cohorts, planted difference 0.6), the mean reported SE
    of the difference is within 20% of the SD of the estimates (80 draws: the SD's relative error is ~8%),
    and the 95% CIs cover the planted difference in 85-100% of panels (binomial band for 80 draws)."""
    est, se = [], []
    for seed in range(80):
        p = make_panel(n=600, n_users=150, seed=100 + seed)
        d = _row(heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x", comparison=comparison),
                 "difference", "e", "exporter")
        est.append(d.estimate)
        se.append(d.std_error)
    est, se = np.array(est), np.array(se)
    assert 0.8 < se.mean() / est.std(ddof=1) < 1.2, (se.mean(), est.std(ddof=1))
    cover = np.mean(np.abs(est - 0.6) <= Z * se)
    assert 0.85 <= cover <= 1.0, cover


@pytest.mark.parametrize("kw", [dict(xformla=None, control_group="nevertreated"),
                                dict(xformla="~ x", control_group="notyettreated", est_method="dr"),
                                dict(xformla="~ x", control_group="nevertreated", est_method="ipw", anticipation=1),
                                dict(xformla=None, control_group="notyettreated", users_only=True)])
def test_fit_on_prepared_units_equals_fit_simple_on_their_rows(kw):
    """A subgroup fit on the prepared arrays is fit_simple on the subgroup's rows, bit for bit: estimate, standard
    error, counts, the units and their influence contributions; also without never-users (the last cohort then
    compares) and for a subset that cannot be estimated (the same error)."""
    from reach.did import _UnitArrays
    from reach.power import _fit_simple_units, fit_simple

    kw = dict(kw)
    users_only = kw.pop("users_only", False)
    p = make_panel(n=600, cohorts=(2017, 2018, 2019), n_users=200)
    rng = np.random.default_rng(1)
    p["x"] = np.log1p(p["employees"]) + rng.normal(scale=0.2, size=len(p))  # varies over time
    arrays = _UnitArrays(p, "y", "year", "firm_id", "g_x", [] if kw["xformla"] is None else ["x"])
    firms = p.drop_duplicates("firm_id")
    users = firms.loc[firms.g_x > 0, "firm_id"].to_numpy()
    never = firms.loc[firms.g_x == 0, "firm_id"].to_numpy()
    subsets = [np.concatenate([users[::2], never[::3]]), users[users % 5 == 0]] if users_only else \
        [np.concatenate([users[::2], never[::3]]), np.concatenate([users[1::4], never])]
    for ids in subsets:
        got = _fit_simple_units(arrays, arrays.keep(ids), **kw)
        ref = fit_simple(p[p["firm_id"].isin(ids)], "y", "year", "firm_id", "g_x", **kw)
        assert (got.att, got.se, got.n_treated, got.n_control) == (ref.att, ref.se, ref.n_treated, ref.n_control)
        np.testing.assert_array_equal(got.ids, ref.ids)
        np.testing.assert_array_equal(got.phi, ref.phi)
    with pytest.raises(ValueError, match="no treated units"):
        fit_simple(p[p["firm_id"].isin(never)], "y", "year", "firm_id", "g_x", **kw)
    with pytest.raises(ValueError, match="no treated units"):
        _fit_simple_units(arrays, arrays.keep(never), **kw)


def test_stacked_influence_over_a_universe_equals_the_sorted_union():
    """The subgroup differences and cohort combinations mark their units in the sorted ids of the panel instead of
    sorting the concatenated ids: the same ids and sums, bit for bit."""
    from reach.heterogeneity import _stacked
    from reach.power import _Fit

    rng = np.random.default_rng(0)
    universe = np.sort(rng.choice(10**6, 5000, replace=False))
    fits = [_Fit(0.0, 0.0, 0, 0, ids=rng.permutation(rng.choice(universe, m, replace=False)), phi=rng.normal(size=m))
            for m in (3000, 1200, 4000)]
    for signs in ([1.0, -1.0, 0.5], [0.2, 0.3, 0.5]):
        ids_u, phi_u = _stacked(fits, signs, universe)
        ids_s, phi_s = _stacked(fits, signs)
        np.testing.assert_array_equal(ids_u, ids_s)
        np.testing.assert_array_equal(phi_u, phi_s)


def test_group_time_effects_left_out_are_named_in_the_status_never_silently():
    """Cohort 2017's users sit far from every never-user on x: with xformla ~ x, its group-time effects fail the
    overlap guard. The overall row aggregates the others (na_rm) and says that some were left out and why; so do the
    subgroups, whose cohort-by-cohort fits leave that cohort out instead of failing as a whole; no propensity score
    is quoted (at 2M firms tinl's table read 'estimated' for 36,000 of its users and 'not estimable', without a
    reason, for subgroups of 67,701)."""
    p = make_panel(seed=11)
    rng = np.random.default_rng(11)
    firm_g = p.groupby("firm_id")["g_x"].first()
    x = pd.Series(rng.normal(size=len(firm_g)) + np.where(firm_g.to_numpy() == 2017, 8.0, 0.0), index=firm_g.index)
    p["x"] = p["firm_id"].map(x)
    res = heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x", xformla="~ x")
    overall = _row(res, "overall", "all", "all users")
    assert np.isfinite(overall.estimate)
    assert overall.status == "estimated, some group-time effects left out (overlap fails)"
    assert overall.n_treated == (firm_g == 2018).sum()  # the users of the cohort whose effects were aggregated
    subs = res.tidy().query("kind == 'subgroup'")
    assert (subs["status"] == "estimated, some group-time effects left out (overlap fails)").all(), subs["status"]
    assert not res.tidy()["status"].str.contains(r"0\.99|>=").any()
    # the cohort left out, as aggte(na_rm=True) leaves its cells out: the same numbers as without its users
    # (an independent fit: cohort 2018's cells do not involve cohort 2017 with never-treated comparisons)
    ref = heterogeneity(p[p["g_x"] != 2017], "y", {"e": "exporter_before"}, gname="g_x", xformla="~ x").tidy()
    got = res.tidy()
    assert set(ref["status"]) == {"estimated"}
    for col in ("estimate", "std_error", "n_treated", "n_control"):
        np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-12, err_msg=col)
    # without the covariate nothing is left out: the plain status
    plain = heterogeneity(p, "y", {"e": "exporter_before"}, gname="g_x")
    assert set(plain.tidy()["status"]) == {"estimated"}


def test_a_subgroup_left_with_too_few_users_after_a_cohort_is_left_out_is_suppressed_and_protected():
    """A level of 16 users passes the users' threshold, but 12 are in a cohort whose effects all fail the overlap
    guard: its estimate would rest on 4 users. It is suppressed like any level under min_treated, decided before
    the secondary suppression, so the other level is withheld too (else overall minus it would recover it)."""
    p = make_panel(seed=12)
    rng = np.random.default_rng(12)
    firm_g = p.groupby("firm_id")["g_x"].first()
    x = pd.Series(rng.normal(size=len(firm_g)) + np.where(firm_g.to_numpy() == 2017, 8.0, 0.0), index=firm_g.index)
    p["x"] = p["firm_id"].map(x)
    u17 = firm_g.index[firm_g.to_numpy() == 2017][:12]
    u18 = firm_g.index[firm_g.to_numpy() == 2018][:4]
    never = firm_g.index[firm_g.to_numpy() == 0]
    p["kind"] = np.where(p["firm_id"].isin(np.r_[u17, u18, never[::2]]), "a", "b")
    res = heterogeneity(p, "y", {"kind": "kind"}, gname="g_x", xformla="~ x",
                        rules={"min_units": 10, "min_treated": 10, "min_control": 10})
    a = _row(res, "subgroup", "kind", "a")
    assert np.isnan(a.estimate) and a.status.startswith("suppressed: fewer than 10 users"), a.to_dict()
    assert _row(res, "subgroup", "kind", "b").status.startswith("suppressed (secondary)")
    assert res.publishable().loc[lambda t: t.dimension == "kind", "estimate"].isna().all()
