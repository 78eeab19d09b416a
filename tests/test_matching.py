"""Tests of reach.matching.

Truths used: R MatchIt's published Lalonde output (tests/golden/matchit_lalonde.json,
sources cited there), a brute-force re-implementation of MatchIt's greedy algorithm
written here independently of the vectorised code, statsmodels' cluster-robust WLS,
and synthetic data with planted selection on a covariate.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reach import matching as rm
from reach.matching import att, match, match_cohorts, overlap_data
from reach.matching_report import love_plot, overlap_plot

GOLDEN = Path(__file__).parent / "golden"
LALONDE_COV = ["age", "educ", "race", "married", "nodegree", "re74", "re75"]


@pytest.fixture(scope="module")
def lalonde():
    return pd.read_csv(GOLDEN / "matchit_lalonde.csv", index_col="id")


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "matchit_lalonde.json").read_text())


def _check_balance(bal: pd.DataFrame, ref: dict, phase: str, tol: float):
    b = bal.set_index("variable")
    for var, vals in ref.items():
        for stat, col in (("mean_treated", "mean_treated"), ("mean_control", "mean_control"),
                          ("smd", "smd"), ("var_ratio", "var_ratio"), ("ecdf_max", "ecdf_max")):
            got = b.loc[var, f"{col}_{phase}"]
            want = vals[stat]
            if want is None:  # MatchIt prints "." (no variance ratio for binary covariates)
                assert np.isnan(got), (var, stat)
            else:
                assert got == pytest.approx(want, abs=tol), (phase, var, stat, got, want)


# --------------------------------------------------------------------------- golden

@pytest.mark.parametrize("scenario", ["nearest_1to1", "nearest_replace"])
def test_golden_matchit_lalonde(lalonde, golden, scenario):
    sc = golden["scenarios"][scenario]
    tol = golden["tolerances"][sc["tolerance"]]["abs"]
    m = match(lalonde, "treat", LALONDE_COV, **sc["args"])
    c = m.counts().set_index("group")
    for grp in ("treated", "control"):
        for k in ("all", "matched", "unmatched", "discarded"):
            assert c.loc[grp, k] == sc["sample_sizes"][grp][k], (grp, k)
    bal = m.balance()
    if "balance_before" in sc:
        _check_balance(bal, sc["balance_before"], "before", tol)
    _check_balance(bal, sc["balance_after"], "after", tol)
    if "ess" in sc["sample_sizes"]["control"]:
        w = m.units.loc[~m.units["treated"] & (m.units["weights"] > 0), "weights"]
        ess = w.sum() ** 2 / (w ** 2).sum()
        assert ess == pytest.approx(sc["sample_sizes"]["control"]["ess"], abs=golden["tolerances"]["ess_2dp"]["abs"])
        # MatchIt rescales control weights to sum to the number of matched controls
        assert w.sum() == pytest.approx(sc["sample_sizes"]["control"]["matched"])


# --------------------------------------------------------------------------- brute force reference

def _brute_nearest(d, treat, stratum, ratio, replace, caliper, smallest=False):
    """Straight transcription of MatchIt's documented greedy rule, O(n^2): visit treated by
    descending distance (ties: data order); among available controls of the stratum pick the
    smallest |d_t - d_c|; on equal distance prefer the control that sorts first by (d, row)
    on the left of the treated unit, i.e. with the smaller distance, or the later row when tied."""
    n = len(d)
    order = sorted(np.flatnonzero(treat), key=lambda i: (d[i] if smallest else -d[i], i))
    used = np.zeros(n, dtype=bool)
    pairs = []
    got = {i: [] for i in order}
    sort_pos = {i: r for r, i in enumerate(sorted(range(n), key=lambda i: (stratum[i], d[i], i)))}
    for r in range(ratio):
        for i in order:
            if r > 0 and len(got[i]) < r:
                continue
            best = None
            for j in range(n):
                if treat[j] or stratum[j] != stratum[i] or (used[j] and not replace) or j in got[i]:
                    continue
                dist = abs(d[i] - d[j])
                if caliper is not None and dist > caliper:
                    continue
                left = sort_pos[j] < sort_pos[i]
                # key: distance, then left side first, then nearest in sort order
                key = (dist, 0 if left else 1, abs(sort_pos[j] - sort_pos[i]))
                if best is None or key < best[0]:
                    best = (key, j)
            if best is not None:
                j = best[1]
                pairs.append((i, j, r))
                got[i].append(j)
                if not replace:
                    used[j] = True
    return sorted(pairs)


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("ratio", [1, 2])
def test_greedy_equals_bruteforce_with_ties(replace, ratio):
    rng = np.random.default_rng(5)
    n = 160
    # coarse scores create many exact ties between and within groups
    d = np.round(rng.random(n), 1)
    treat = rng.random(n) < 0.3
    stratum = rng.integers(0, 3, n)
    df = pd.DataFrame({"t": treat.astype(int), "s": stratum, "score": d, "x": rng.normal(size=n)})
    cal = 0.15
    m = match(df, "t", ["x"], exact="s", distance="score", caliper=cal, std_caliper=False,
              ratio=ratio, replace=replace)
    got = sorted(zip(m.pairs["treated_index"], m.pairs["control_index"], m.pairs["round"] - 1))
    want = _brute_nearest(d, treat, stratum, ratio, replace, cal + 1e-12)
    assert got == [(int(a), int(b), int(c)) for a, b, c in want]


# --------------------------------------------------------------------------- invariants

def _synthetic(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    sec = rng.choice(list("ABCD"), size=n)
    lp = -1.8 + 1.0 * x1 + 0.5 * x2 + (sec == "A") * 0.5
    t = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    y = 1.0 + x1 + 0.5 * x2 + 2.0 * t + rng.normal(size=n)
    return pd.DataFrame({"t": t, "x1": x1, "x2": x2, "sec": sec, "y": y}, index=pd.RangeIndex(n) + 1000)


@pytest.mark.parametrize("replace", [False, True])
def test_invariants_caliper_exact_reuse(replace):
    df = _synthetic()
    m = match(df, "t", ["x1", "x2"], exact="sec", caliper=0.05, replace=replace, ratio=2)
    p = m.pairs
    u = m.units
    # caliper and exact constraints for every pair
    dd = np.abs(u.loc[p["treated_index"], "distance"].to_numpy() - u.loc[p["control_index"], "distance"].to_numpy())
    assert (dd <= m.caliper_width + 1e-12).all()
    assert m.caliper_width == pytest.approx(0.05 * np.std(u["distance"], ddof=1))
    assert (df.loc[p["treated_index"], "sec"].to_numpy() == df.loc[p["control_index"], "sec"].to_numpy()).all()
    # no control twice without replacement; no control twice for the same treated with it
    if not replace:
        assert not p["control_index"].duplicated().any()
    assert not p.duplicated(["treated_index", "control_index"]).any()
    # every treated unit is matched or reported unmatched with a reason
    treated = set(df.index[df["t"] == 1])
    matched = set(p["treated_index"])
    un = m.unmatched()
    assert matched.isdisjoint(set(un["index"]))
    assert matched | set(un["index"]) == treated
    assert (un["reason"].str.len() > 0).all()
    assert len(un) > 0  # the tight caliper leaves some treated units unmatched
    assert set(un["reason"]) <= {rm.R_CALIPER, rm.R_USED}
    # MatchIt weights: treated 1, controls sum to the number of matched controls
    md = m.matched_data()
    wt = md.loc[md["t"] == 1, "weights"]
    wc = md.loc[md["t"] == 0, "weights"]
    assert (wt == 1).all()
    assert wc.sum() == pytest.approx(len(wc))
    # independent weight computation from the pairs
    k = p.groupby("treated_index").size()
    raw = (1 / k.loc[p["treated_index"]].to_numpy())
    raw = pd.Series(raw).groupby(p["control_index"].to_numpy()).sum()
    raw = raw * len(raw) / raw.sum()
    assert np.allclose(wc.sort_index().to_numpy(), raw.sort_index().to_numpy())


def test_same_seed_same_matches():
    df = _synthetic(400, seed=3)
    kw = dict(ps_model="gbm", m_order="random", caliper=0.2, seed=11)
    a, b = match(df, "t", ["x1", "x2"], **kw), match(df, "t", ["x1", "x2"], **kw)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    # the seed matters where randomness is asked for (random matching order on a coarse score)
    df["score"] = np.round(df["x1"], 1)
    kw = dict(distance="score", m_order="random", caliper=None)
    r = [match(df, "t", ["x1"], seed=s, **kw).pairs for s in (1, 1, 2)]
    pd.testing.assert_frame_equal(r[0], r[1])
    assert not r[0].equals(r[2])


def test_discard_both_common_support():
    df = _synthetic(2000, seed=4)
    m = match(df, "t", ["x1", "x2"], discard="both", caliper=None)
    u = m.units
    dc = u.loc[~u["treated"], "distance"]
    dt = u.loc[u["treated"], "distance"]
    disc_t = u["treated"] & ((u["distance"] < dc.min()) | (u["distance"] > dc.max()))
    disc_c = ~u["treated"] & ((u["distance"] < dt.min()) | (u["distance"] > dt.max()))
    assert (u["discarded"] == (disc_t | disc_c)).all()
    assert disc_c.sum() > 0
    assert not set(m.pairs["control_index"]) & set(u.index[u["discarded"]])


def test_balance_improves_on_planted_selection():
    df = _synthetic(4000, seed=1)
    m = match(df, "t", ["x1", "x2", "sec"], caliper=0.2)
    b = m.balance().set_index("variable")
    assert abs(b.loc["x1", "smd_before"]) > 0.5  # planted selection on x1
    assert (b.drop(index="distance")["smd_after"].abs() < 0.1).all()
    assert not b.drop(index="distance")["smd_flag"].any()


def test_mahalanobis_within_caliper():
    df = _synthetic(1200, seed=2)
    m = match(df, "t", ["x1", "x2"], mahalanobis=True, caliper=0.25)
    p = m.pairs
    u = m.units
    dd = np.abs(u.loc[p["treated_index"], "distance"].to_numpy() - u.loc[p["control_index"], "distance"].to_numpy())
    assert (dd <= m.caliper_width + 1e-12).all()
    assert not p["control_index"].duplicated().any()
    # the first treated unit visited gets the Mahalanobis-nearest control among all within the caliper
    # pairs are stored in visiting order: the first pair's treated unit chose from all controls
    t0 = p["treated_index"].iloc[0]
    c = u.index[~u["treated"] & (np.abs(u["distance"] - u.loc[t0, "distance"]) <= m.caliper_width)]
    Z = df[["x1", "x2"]].to_numpy()
    Zt, Zc = Z[df["t"] == 1], Z[df["t"] == 0]
    S = (np.cov(Zt, rowvar=False) * (len(Zt) - 1) + np.cov(Zc, rowvar=False) * (len(Zc) - 1)) / (len(Z) - 2)
    Si = np.linalg.inv(S)
    diff = df.loc[c, ["x1", "x2"]].to_numpy() - df.loc[t0, ["x1", "x2"]].to_numpy()
    best = c[np.argmin(np.einsum("ij,jk,ik->i", diff, Si, diff))]
    assert p.loc[p["treated_index"] == t0, "control_index"].iloc[0] == best


# --------------------------------------------------------------------------- effect

def test_att_matches_statsmodels_cluster_and_planted_effect():
    sm = pytest.importorskip("statsmodels.api")
    df = _synthetic(3000, seed=6)
    m = match(df, "t", ["x1", "x2"], exact="sec", caliper=0.2)
    e = att(m, "y")
    md = m.matched_data()
    X = sm.add_constant(md["t"].astype(float))
    fit = sm.WLS(md["y"], X, weights=md["weights"]).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(md["subclass"])[0]})
    assert e.estimate == pytest.approx(fit.params["t"], rel=1e-10)
    assert e.std_error == pytest.approx(fit.bse["t"], rel=1e-8)
    assert abs(e.estimate - 2.0) < 4 * e.std_error  # planted effect 2
    assert e.n_treated == int((md["t"] == 1).sum()) and e.n == len(md)
    assert list(e.tidy().columns) == rm.EFFECT_COLUMNS


def test_att_with_replacement_hc1():
    sm = pytest.importorskip("statsmodels.api")
    df = _synthetic(2000, seed=7)
    m = match(df, "t", ["x1", "x2"], replace=True, ratio=2, caliper=None)
    md = m.matched_data()
    X = sm.add_constant(md["t"].astype(float))
    for vcov in ("HC1", "HC3"):
        e = att(m, "y", vcov=vcov)
        fit = sm.WLS(md["y"], X, weights=md["weights"]).fit(cov_type=vcov)
        assert e.estimate == pytest.approx(fit.params["t"], rel=1e-10)
        assert e.std_error == pytest.approx(fit.bse["t"], rel=1e-8), vcov
    # MatchIt's vignette: with replacement controls are in no single pair, use HC3 robust SEs
    assert att(m, "y").vcov == "HC3 robust"
    with pytest.raises(ValueError, match="vcov='CR1' clusters by matched pair"):
        att(m, "y", vcov="CR1")
    with pytest.raises(ValueError, match=r"vcov must be one of \['auto', 'CR1', 'HC1', 'HC3'\]; got 'HC0'"):
        att(m, "y", vcov="HC0")


# --------------------------------------------------------------------------- bad input

def test_constant_covariate_dropped_and_reported():
    df = _synthetic(1000, seed=8).assign(k=3.0)
    m = match(df, "t", ["x1", "k", "x2"], caliper=None)
    assert ("k", "constant") in m.dropped_terms
    assert "k" not in m.ps_coef.index
    b = m.balance().set_index("variable")
    assert b.loc["k", "smd_before"] == 0 and b.loc["k", "smd_after"] == 0
    assert "constant" in m.summary()


def test_perfect_separation_raises():
    df = _synthetic(500, seed=9)
    df["sep"] = np.where(df["t"] == 1, 1.0 + df["x1"].abs(), -df["x1"].abs())
    with pytest.raises(ValueError, match="perfect separation.*sep"):
        match(df, "t", ["x1", "sep"])


def test_stratum_without_controls_reported():
    df = _synthetic(1000, seed=10)
    df.loc[(df["sec"] == "D") & (df["t"] == 0), "sec"] = "C"
    m = match(df, "t", ["x1", "x2"], exact="sec", caliper=None)
    un = m.unmatched()
    td = set(df.index[(df["sec"] == "D") & (df["t"] == 1)])
    assert set(un.loc[un["reason"] == rm.R_NO_STRATUM, "index"]) == td


def test_missing_covariates_counted_or_error():
    df = _synthetic(1000, seed=11)
    df.loc[df.index[:7], "x2"] = np.nan
    n_t_missing = int(df.loc[df.index[:7], "t"].sum())
    m = match(df, "t", ["x1", "x2"], caliper=None)
    c = m.counts().set_index("group")
    assert c.loc["treated", "excluded_missing"] == n_t_missing
    assert c["excluded_missing"].sum() == 7
    assert c.loc["treated", "all"] == int(df["t"].sum())
    un = m.unmatched()
    assert (un["reason"] == f"{rm.R_MISSING} in x2").sum() == n_t_missing
    with pytest.raises(ValueError, match="missing values in \\['x2'\\]"):
        match(df, "t", ["x1", "x2"], missing="error")


@pytest.mark.parametrize("kw,msg", [
    ({"ps_model": "probit"}, r"ps_model must be one of \['logit', 'gbm'\]; got 'probit'"),
    ({"discard": "all"}, "discard must be one of"),
    ({"m_order": "closest"}, "m_order must be one of"),
    ({"ratio": 0}, "ratio must be a positive integer"),
    ({"caliper": -1}, "caliper must be a positive number"),
])
def test_bad_choices(kw, msg):
    with pytest.raises(ValueError, match=msg):
        match(_synthetic(200), "t", ["x1"], **kw)


def test_bad_treatment_and_columns():
    df = _synthetic(200).assign(t2=lambda d: d["t"] * 2)
    with pytest.raises(ValueError, match="must be 0/1"):
        match(df, "t2", ["x1"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['nope'\]"):
        match(df, "t", ["nope"])


# --------------------------------------------------------------------------- staggered adoption

def _panel(n=3000, seed=0):
    """Planted panel 2014-2020: cohorts 2017 and 2019 selected on last year's exports (x)."""
    rng = np.random.default_rng(seed)
    years = np.arange(2014, 2021)
    size = rng.normal(size=n)
    x = size[:, None] + np.cumsum(rng.normal(scale=0.3, size=(n, years.size)), axis=1)
    u = rng.random(n)
    # selection: the probability of becoming a user rises with x in 2016
    p = 1 / (1 + np.exp(-(-2.5 + 1.5 * x[:, 2])))
    user = rng.random(n) < p
    g = np.where(user, np.where(u < 0.5, 2017, 2019), 0)
    ids = np.char.add("BE", np.arange(n).astype(str))
    df = pd.DataFrame({
        "be_id": np.repeat(ids, years.size), "year": np.tile(years, n), "g": np.repeat(g, years.size),
        "x": x.ravel(), "sector": np.repeat(rng.choice(["A", "B"], n), years.size),
    })
    df["x_lag1"] = df.groupby("be_id")["x"].shift(1)
    df = df[~((df["be_id"] == ids[0]) & (df["year"] == 2016))]  # one unit missing a reference-year row
    return df.reset_index(drop=True)


def test_match_cohorts_balance_weights_and_timing():
    panel = _panel()
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"],
                       exact="sector", caliper=0.2)
    assert set(cm.matches) == {2017, 2019}
    assert cm.predetermined == ("x_lag1",)
    b = cm.balance(by_cohort=True)
    cov = b[b["variable"] == "x_lag1"]
    assert (cov["smd_before"].abs() > 0.3).all()
    assert (cov["smd_after"].abs() < 0.1).all()
    # covariates come from the row of year g (x_lag1 there = x in g-1)
    md = cm.matched_data()
    look = panel.set_index(["be_id", "year"])["x"]
    want = look.reindex(list(zip(md["be_id"], md["cohort"] - 1))).to_numpy()
    assert np.allclose(md["x_lag1"].to_numpy(), want)
    # controls: never or not yet treated at g
    g_of = panel.groupby("be_id")["g"].max()
    ctrl = md[md["treated"] == 0]
    gc = g_of.loc[ctrl["be_id"]].to_numpy()
    assert ((gc == 0) | (gc > ctrl["cohort"].to_numpy())).all()
    # stacked weights: treated 1, a control's weight = sum over cohorts
    w = cm.unit_weights().set_index("be_id")["weight"]
    tr = md.loc[md["treated"] == 1, "be_id"]
    assert (w.loc[tr] == 1).all()
    s = ctrl.groupby("be_id")["weights"].sum()
    s = s[~s.index.isin(set(tr))]  # treated later: weight stays 1 (checked above)
    assert len(s) > 0 and (s > 1).any()  # some controls serve both cohorts
    assert np.allclose(w.loc[s.index].to_numpy(), s.to_numpy())
    # every treated unit accounted for
    treated_ids = set(g_of.index[g_of > 0])
    un = cm.unmatched()
    assert set(tr) | set(un["be_id"]) == treated_ids
    c = cm.counts().set_index("cohort")
    assert c["n_treated"].sum() == len(treated_ids)
    assert (c["treated_matched"] + c["treated_unmatched"] + c["not_observed"] + c["excluded_missing"]
            + c["discarded"] == c["n_treated"]).all()


def test_match_cohorts_nevertreated_and_failure():
    panel = _panel(1500, seed=2)
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], control_group="nevertreated", caliper=None)
    md = cm.matched_data()
    g_of = panel.groupby("be_id")["g"].max()
    assert (g_of.loc[md.loc[md["treated"] == 0, "be_id"]] == 0).all()
    with pytest.raises(ValueError, match="control_group must be one of"):
        match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], control_group="all")
    # a cohort that cannot be matched (constant covariate only -> perfect separation impossible, use sep)
    p2 = panel.assign(sep=np.where(panel["g"] == 2017, 5.0, 0.0))
    cm2 = match_cohorts(p2, "g", "year", "be_id", ["x_lag1", "sep"], caliper=None)
    assert 2017 in cm2.failures and "separation" in cm2.failures[2017]
    assert (cm2.unmatched().query("cohort == 2017")["reason"].str.contains("propensity model failed")).all()


# --------------------------------------------------------------------------- plots / display

def test_plots_and_display(lalonde):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    m = match(lalonde, "treat", LALONDE_COV, caliper=None)
    assert isinstance(love_plot(m), Figure)
    assert isinstance(overlap_plot(m), Figure)
    od = overlap_data(m, bins=10)
    assert set(od["phase"]) == {"before", "after"}
    assert (od["phase"] == "before").sum() == 614 and (od["phase"] == "after").sum() == 370
    tab = od.groupby(["phase", "group", "bin"])["weight"].sum().rename("value").reset_index()
    assert isinstance(overlap_plot(tab), Figure)
    # round bin edges: no edge is a unit's own score (the smallest or largest would be published)
    scores = m.units["distance"].to_numpy()
    edges = np.sort(od["bin"].unique())
    assert not np.isin(edges, scores).any()
    assert edges.min() <= scores.min() and np.all(np.abs(edges / 0.05 - np.round(edges / 0.05)) < 1e-9)
    assert "nearest-neighbour" in m._repr_markdown_()
    assert list(m.counts().columns) == rm.COUNT_COLUMNS
    assert list(m.tidy().columns) == rm.COUNT_TIDY_COLUMNS
    assert list(m.balance().columns) == rm.BALANCE_COLUMNS
    with pytest.raises(Exception):
        m.ratio = 2  # frozen


# --------------------------------------------------------------------------- CohortMatch tables (notebook 03)

def _planted_cohorts():
    """The planted panel with three designed complications, and their independent truths.

    * one cohort-2017 user has no 2016 row (not observed in g-1);
    * ``MISSING`` units have x_lag1 missing in their 2017 row (read for cohort 2017): excluded;
    * cohort 2019 cannot be matched: ``sep`` separates its users from everyone else.
    """
    panel = _panel(1500, seed=3)
    g_of = panel.groupby("be_id")["g"].max()
    gone = g_of.index[g_of == 2017][-1]
    panel = panel[~((panel["be_id"] == gone) & (panel["year"] == 2016))].reset_index(drop=True)
    missing = list(g_of.index[g_of == 0][:7]) + list(g_of.index[g_of == 2017][:3])
    panel.loc[panel["be_id"].isin(missing) & (panel["year"] == 2017), "x_lag1"] = np.nan
    panel["sep"] = np.where(panel["g"] == 2019, 5.0, 0.0) + np.where(panel["g"] == 2017, 1.0, 0.0) * np.sin(
        np.arange(len(panel)))
    return panel, g_of, set(missing)


def test_status_units_counts_treated_and_controls():
    panel, g_of, missing = _planted_cohorts()
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1", "sep"], caliper=0.2)
    assert set(cm.matches) == {2017} and 2019 in cm.failures
    su = cm.status_units()
    assert list(su.columns) == ["be_id", "cohort", "group", "status"]
    assert set(su["status"]) <= set(rm.STATUSES)
    n = su.groupby(["cohort", "group", "status"]).size()
    # independent truths from the panel itself, not from the matcher
    present_2016 = set(panel.loc[panel["year"] == 2016, "be_id"])
    users17 = set(g_of.index[g_of == 2017])
    ctrl17 = {u for u in present_2016 if g_of[u] == 0 or g_of[u] > 2017}  # not yet treated at 2017
    assert su.query("cohort == 2017 and group == 'treated'")["be_id"].nunique() == len(users17)
    assert n[(2017, "treated", rm.S_NOT_OBSERVED)] == len(users17 - present_2016) >= 1
    assert n[(2017, "treated", rm.S_EXCLUDED)] == len(missing & users17 & present_2016)
    assert n[(2017, "control", rm.S_EXCLUDED)] == len(missing & ctrl17)
    assert su.query("cohort == 2017 and group == 'control'")["be_id"].nunique() == len(ctrl17)
    md = cm.matched_data()
    assert n[(2017, "treated", rm.S_MATCHED)] == (md["treated"] == 1).sum()
    assert n[(2017, "control", rm.S_MATCHED)] == (md["treated"] == 0).sum()
    # cohort 2019 failed: every one of its users observed in 2018 is "cohort not matched"
    users19 = set(g_of.index[g_of == 2019])
    obs19 = users19 & set(panel.loc[panel["year"] == 2018, "be_id"])
    assert set(su.query("cohort == 2019")["status"]) == {rm.S_COHORT_FAILED}
    assert set(su.query("cohort == 2019")["be_id"]) == obs19
    # every user exactly once per its cohort: the treated rows add up to the cohort sizes
    assert su.query("group == 'treated'").groupby("cohort").size().to_dict() == {
        g: int(k) for g, k in cm.n_cohort_treated.items()}


def test_balance_checked_blanks_a_covariate_failing_a_magnitude_rule():
    from reach.disclosure import Rules

    panel = _panel(2000, seed=4)
    rng = np.random.default_rng(4)
    # `spend`: small for everyone but one user and one non-user (both huge, every year), so
    # in each phase x group cell the top contributor dominates the mean: dominance fails
    g_of = panel.groupby("be_id")["g"].max()
    big = {g_of.index[g_of == 2017][5], g_of.index[g_of == 0][5]}
    panel["spend"] = np.where(panel["be_id"].isin(big), 1e7, rng.random(len(panel)))
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1", "spend"], cohorts=[2017], caliper=None)
    rules = Rules()
    micro = cm.balance_micro()
    cell = micro[(micro["phase"] == "before") & (micro["group"] == "treated")]
    contrib = cell.groupby("be_id")["spend"].sum().abs().sort_values(ascending=False)
    assert contrib.iloc[:2].sum() / contrib.sum() > rules.dominance_max  # the planted failure, by hand
    pub = cm.balance_checked(rules, name="bal").suppress().set_index("variable")
    value_cols = [c for c in rm.BALANCE_COLUMNS if c not in ("variable", "type", "smd_flag", "var_ratio_flag")]
    assert pub.loc["spend", value_cols].isna().all()
    assert pub.loc[["distance", "x_lag1"], value_cols].notna().all().all()
    # counts: distinct firms, the smaller of before/after (after = the matched users)
    md = cm.matched_data()
    assert (pub.loc["x_lag1", "n_treated"] == (md["treated"] == 1).sum())
    assert pub.loc["x_lag1", "n_control"] == (md["treated"] == 0).sum()
    unchecked = cm.balance().set_index("variable")
    assert pub.loc["x_lag1", "smd_after"] == pytest.approx(unchecked.loc["x_lag1", "smd_after"])


def test_matched_units_contract_and_weights():
    panel = _panel(2000, seed=5)
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], caliper=0.2, ratio=2)
    mu = cm.matched_units()
    assert list(mu.columns) == ["be_id", "cohort", "treated", "match_weight", "weight"]
    assert mu["cohort"].dtype == "int64" and mu["treated"].dtype == "int64" and mu["weight"].dtype == "float64"
    # weight: the deprecated alias of match_weight (one release), in every cohort-wise table
    assert mu["weight"].equals(mu["match_weight"])
    assert cm.unit_weights()["weight"].equals(cm.unit_weights()["match_weight"])
    assert cm.matched_data()["weights"].equals(cm.matched_data()["match_weight"])
    assert not mu.duplicated(["be_id", "cohort"]).any()
    for g, part in mu.groupby("cohort"):
        t, c = part[part["treated"] == 1], part[part["treated"] == 0]
        assert (t["weight"] == 1).all()
        # MatchIt ATT weights: controls rescaled to sum to the number of distinct matched controls
        assert c["weight"].sum() == pytest.approx(len(c))
    md = cm.matched_data()
    assert len(mu) == len(md) and set(zip(mu["be_id"], mu["cohort"])) == set(zip(md["be_id"], md["cohort"]))
    # summed over cohorts, a control's weight is unit_weights'
    uw = cm.unit_weights().set_index("be_id")["weight"]
    ctrl_only = mu.groupby("be_id").filter(lambda d: (d["treated"] == 0).all())
    s = ctrl_only.groupby("be_id")["weight"].sum()
    assert np.allclose(uw.loc[s.index].to_numpy(), s.to_numpy())
    empty = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], cohorts=[2030]).matched_units()
    assert list(empty.columns) == list(mu.columns) and len(empty) == 0


def test_ps_table_counts_and_coefficients():
    panel = _panel(1500, seed=6)
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], caliper=None)
    t = cm.ps_table()
    assert list(t.columns) == rm.PS_TABLE_COLUMNS
    for g, m in cm.matches.items():
        r = t[t["cohort"] == g].set_index("term")
        assert np.allclose(r["estimate"].to_numpy(), m.ps_coef.to_numpy())
        cs = m.units
        assert (r["n_treated"] == cs["treated"].sum()).all() and (r["n_control"] == (~cs["treated"]).sum()).all()
        assert (r["df_resid"] == len(cs) - 2).all()  # intercept + x_lag1
    gbm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], caliper=None, ps_model="gbm", cohorts=[2017])
    assert list(gbm.ps_table().columns) == rm.PS_TABLE_COLUMNS and gbm.ps_table().empty


def test_count_and_balance_summaries_from_published_tables():
    panel = _panel(1500, seed=7)
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], caliper=None)
    pub = pd.DataFrame({
        "cohort": [2017, 2017, 2017, 2019, 2019, 2019],
        "group": ["treated", "treated", "control", "treated", "treated", "control"],
        "status": ["matched", "unmatched", "matched", "matched", "not observed in g-1", "matched"],
        "value": [40.0, 12.0, 40.0, 35.0, np.nan, 35.0]})
    s = cm.count_summary(pub)
    assert s["n_treated_matched"] == 75 and isinstance(s["n_treated_matched"], int)
    assert s["n_treated"] is None  # adding up a suppressed cell would reveal it
    assert s["n_controls_matched"] == 75 and s["any_suppressed"]
    assert s["per_cohort"]["2017"]["n_treated"] == 52 and s["per_cohort"]["2019"]["n_treated"] is None
    assert s["per_cohort"]["2017"]["max_abs_smd_after"] == pytest.approx(
        cm.counts().set_index("cohort").loc[2017, "max_abs_smd_after"])
    pub.loc[0, "value"] = np.nan
    assert cm.count_summary(pub)["n_treated_matched"] is None
    assert "max_abs_smd_after" not in cm.count_summary(pub)["per_cohort"]["2017"]
    with pytest.raises(ValueError, match="published matched counts"):
        cm.count_summary(pub.drop(columns="status"))


def test_match_cohorts_rejects_bad_choices_up_front():
    panel = _panel(600, seed=8)
    with pytest.raises(ValueError, match=r"method must be one of \['nearest', 'cem', 'ebal'\]; got 'optimal'"):
        match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], method="optimal")
    with pytest.raises(ValueError, match="ratio must be a positive integer"):
        match_cohorts(panel, "g", "year", "be_id", ["x_lag1"], ratio=0)


# ----------------------------------------------------------------------------- the stub
#: |SMD| after matching counted as balanced (Stuart 2010; MatchIt's and cobalt's default threshold)
STUB_SMD_MAX = 0.1


def _stub_cohort_match(stub_panel, **extra):
    """Match the stub as notebook 03 does: analysis sample first, then the parameters of stub.yaml."""
    from reach.panel import analysis_sample
    from reach.params import load_params

    panel, _, _ = stub_panel
    p = load_params(Path(__file__).resolve().parents[1] / "params" / "stub.yaml", check_files=False)
    sample = analysis_sample(panel, p["programme"], first_year=p["first_year"], last_year=p["last_year"],
                             exclude_other_users=p["exclude_other_users"]).panel
    cm = match_cohorts(sample, f"g_{p['programme']}", "year", "be_id", p["covariates"], exact=p["exact"] or None,
                       ratio=p["ratio"], replace=p["replace"], caliper=p["caliper"], ps_model=p["ps_model"],
                       seed=p["seed"], **{"mahalanobis": p["mahalanobis"], **extra})
    return p, sample, cm


def test_stub_balance_after_cohort_matching(stub_panel):
    """With the stub's parameters, every covariate is balanced (|SMD| < 0.1) after matching,
    where the users differed strongly from other firms before (selection planted by reach.synth)."""
    p, sample, cm = _stub_cohort_match(stub_panel)
    bal = cm.balance().set_index("variable").drop(index="distance", errors="ignore")
    assert set(p["covariates"]) <= set(bal.index)
    assert bal["smd_before"].abs().max() > 1.0
    assert (bal["smd_after"].abs() < STUB_SMD_MAX).all(), bal[["smd_before", "smd_after"]]
    md = cm.matched_data()
    users = sample.groupby("be_id")[f"g_{p['programme']}"].first()
    assert md.loc[md["treated"] == 1, "be_id"].nunique() >= 0.9 * (users > p["first_year"]).sum()
    # the published counts of notebook 03 add up to the matched users
    su = cm.status_units()
    assert su.query("group == 'treated' and status == 'matched'")["be_id"].nunique() == \
        md.loc[md["treated"] == 1, "be_id"].nunique()


# ============================================================================ issue 16: MatchIt 4.7 parity, cem, ebal

@pytest.fixture(scope="module")
def golden47():
    return json.loads((GOLDEN / "matchit_lalonde_v47.json").read_text())


@pytest.mark.parametrize("scenario", ["cem_cutpoints_grouping", "mahvars_subset_replace_ratio3",
                                      "mahalanobis_all_within_caliper"])
def test_golden_matchit_47_lalonde(lalonde, golden47, scenario):
    """Published MatchIt 4.7.2 examples (reference pages; sources in the golden file)."""
    sc = golden47["scenarios"][scenario]
    tol = golden47["tolerances"][sc["tolerance"]]["abs"]
    m = match(lalonde, "treat", sc["covariates"], **sc["args"])
    c = m.counts().set_index("group")
    for grp in ("treated", "control"):
        for k in ("all", "matched", "unmatched", "discarded"):
            assert c.loc[grp, k] == sc["sample_sizes"][grp][k], (grp, k)
    bal = m.balance()
    if "balance_before" in sc:
        _check_balance(bal, sc["balance_before"], "before", tol)
    _check_balance(bal, sc["balance_after"], "after", tol)
    assert set(bal["variable"]) == set(sc["balance_after"])
    if "ess" in sc["sample_sizes"]["control"]:
        w = m.units.loc[~m.units["treated"] & (m.units["weights"] > 0), "weights"]
        ess = w.sum() ** 2 / (w ** 2).sum()
        ess_tol = golden47["tolerances"]["near_ties_ess" if sc["tolerance"] == "near_ties" else "ess_2dp"]["abs"]
        assert ess == pytest.approx(sc["sample_sizes"]["control"]["ess"], abs=ess_tol)


def test_mahalanobis_search_kdtree_equals_brute_force():
    """The k-d tree path returns exactly the pairs of the quadratic path (coarse covariates: many ties)."""
    rng = np.random.default_rng(12)
    n = 1500
    df = pd.DataFrame({"x1": np.round(rng.normal(size=n), 1), "x2": rng.integers(0, 4, n).astype(float),
                       "s": rng.integers(0, 3, n)})
    df["t"] = (rng.random(n) < 1 / (1 + np.exp(1.2 - 0.8 * df["x1"]))).astype(int)
    for kw in (dict(caliper=0.5, ratio=2), dict(caliper=None, ratio=3, replace=True), dict(caliper=None),
               dict(caliper=0.1, exact="s", ratio=2), dict(mahvars=["x1"], caliper=1.0)):
        kw = {"mahalanobis": "mahvars" not in kw, **kw}
        a = match(df, "t", ["x1", "x2"], algorithm="brute", **kw).pairs
        b = match(df, "t", ["x1", "x2"], algorithm="kdtree", **kw).pairs
        assert len(a) > 100
        pd.testing.assert_frame_equal(a, b, obj=str(kw))


def _tie_frame(x_t: float, rows: list[tuple[int, float]]) -> pd.DataFrame:
    """One treated unit at ``x_t`` between controls; a few far units keep the score model finite."""
    data = [(1, x_t)] + rows + [(1, -0.5), (0, 10.0), (1, 8.0), (0, -10.0)]
    return pd.DataFrame(data, columns=["t", "x"], index=[f"u{i}" for i in range(len(data))])


@pytest.mark.parametrize("x_t,rows,want", [
    # two identical controls *below* the treated unit: MatchIt scans downward from it, and a tie
    # replaces the current best, so the control met last - the earlier row - wins
    (0.0, [(0, -1.0), (0, -1.0), (0, 3.0)], "u1"),
    # identical controls *above*: scanned upward, the later row is met last and wins
    (0.0, [(0, 1.0), (0, 1.0), (0, -3.0)], "u2"),
    # equally far on both sides at the same scan offset: right is visited after left and wins
    (0.0, [(0, -1.0), (0, 1.0)], "u2"),
])
def test_mahalanobis_ties_follow_matchit_scan(x_t, rows, want):
    """Hand-built ties (no published number exists): MatchIt 4.7.2's find_control_mahcovs
    (src/internal.cpp) visits units outward from the treated one along the first Mahalanobis
    coordinate, alternating left/right, and replaces the best on ``<=``; with one covariate that
    coordinate is x itself."""
    df = _tie_frame(x_t, rows)
    m = match(df, "t", ["x"], mahalanobis=True, m_order="data")
    first = m.pairs.loc[m.pairs["treated_index"] == "u0", "control_index"]
    assert first.tolist() == [want]


def test_defaults_are_matchits():
    df = _synthetic(600, seed=13)
    m = match(df, "t", ["x1", "x2"])
    assert m.caliper is None and m.caliper_width is None and m.m_order == "largest"
    # MatchIt's distance = "mahalanobis": the score plays no part, order "data"
    assert match(df, "t", ["x1", "x2"], mahalanobis=True).m_order == "data"
    # Mahalanobis within a score caliper (mahvars): the score is the distance, order "largest"
    assert match(df, "t", ["x1", "x2"], mahalanobis=True, caliper=0.2).m_order == "largest"
    assert match(df, "t", ["x1", "x2"], mahvars="x1").m_order == "largest"


def _brute_mahalanobis(Z, treat, eligible, order, caliper_ok):
    """Independent greedy 1:1 Mahalanobis matching, covariance from the eligible units only,
    exact ties to the earliest row (no exact ties occur in the continuous data used)."""
    Ze, te = Z[eligible], treat[eligible]
    C = np.vstack([Ze[te] - Ze[te].mean(0), Ze[~te] - Ze[~te].mean(0)])
    Si = np.linalg.inv(C.T @ C)
    used = set()
    out = []
    for i in order:
        best = None
        for j in np.flatnonzero(~treat & eligible):
            if j in used or not caliper_ok(i, j):
                continue
            dz = Z[i] - Z[j]
            dd = dz @ Si @ dz
            if best is None or dd < best[0]:
                best = (dd, j)
        if best is not None:
            used.add(best[1])
            out.append((i, best[1]))
    return out


def test_discard_mahalanobis_uses_covariance_of_remaining_units():
    rng = np.random.default_rng(14)
    n = 400
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    t = rng.random(n) < 1 / (1 + np.exp(1.0 - 1.2 * x1))
    # controls far outside the users' score range, with a huge x2: discarded, and if they entered
    # the covariance they would shrink x2's weight in the distance and change the pairs
    far = np.flatnonzero(~t)[:25]
    x1[far] = -6.0 - rng.random(far.size)
    x2[far] = rng.choice([-40.0, 40.0], far.size)
    df = pd.DataFrame({"t": t.astype(int), "x1": x1, "x2": x2})
    m = match(df, "t", ["x1", "x2"], mahalanobis=True, discard="control")
    u = m.units
    assert u["discarded"].sum() >= 20
    eligible = ~u["discarded"].to_numpy()
    Z = df[["x1", "x2"]].to_numpy()
    order = np.flatnonzero(t & eligible)  # m_order "data" (no caliper, discard only on the score)
    assert m.m_order == "largest"  # discard uses the score: MatchIt's default order stays "largest"
    d = u["distance"].to_numpy()
    order = order[np.lexsort((order, -d[order]))]
    want = _brute_mahalanobis(Z, t, eligible, order, lambda i, j: True)
    got = list(zip(m.pairs["treated_index"], m.pairs["control_index"]))
    assert got == [(int(a), int(b)) for a, b in want]
    # the covariance of all complete cases (discarded included) gives other pairs
    other = _brute_mahalanobis(Z, t, np.ones(n, dtype=bool), order, lambda i, j: eligible[j])
    assert other != want


def test_reestimate_refits_score_on_units_left():
    sm = pytest.importorskip("statsmodels.api")
    df = _synthetic(1500, seed=15)
    m = match(df, "t", ["x1", "x2"], discard="both", reestimate=True)
    kept = ~m.units["discarded"]
    assert (~kept).sum() > 0
    fit = sm.Logit(df.loc[kept[kept].index, "t"], sm.add_constant(df.loc[kept[kept].index, ["x1", "x2"]])).fit(disp=0)
    assert np.allclose(m.ps_coef.to_numpy(), fit.params.to_numpy(), rtol=1e-6)
    p = fit.predict(sm.add_constant(df[["x1", "x2"]]))
    assert np.allclose(m.units["distance"].to_numpy(), p.loc[m.units.index].to_numpy(), rtol=1e-6)
    assert "re-estimated" in m.summary()


# ------------------------------------------------------------------------- cem

def test_cem_strata_never_mix_cells_and_weights_by_hand():
    rng = np.random.default_rng(16)
    n = 2000
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.exponential(size=n), "sec": rng.choice(list("abc"), n)})
    df["t"] = (rng.random(n) < 1 / (1 + np.exp(1.0 - df["x"]))).astype(int)
    m = match(df, "t", ["x", "z", "sec"], method="cem")
    # independent coarsening: Sturges' number of equal-width bins, R findInterval on the inner edges
    k = int(np.ceil(np.log2(n) + 1))
    cell = pd.DataFrame({c: np.digitize(df[c], np.linspace(df[c].min(), df[c].max(), k + 1)[1:-1], right=False)
                         for c in ("x", "z")}).assign(sec=df["sec"])
    key = cell.astype(str).agg("|".join, axis=1)
    u = m.units
    sub = u["subclass"].dropna()
    assert (key.loc[sub.index].groupby(sub.to_numpy()).nunique() == 1).all()  # one cell per stratum
    assert sub.groupby(key.loc[sub.index].to_numpy()).nunique().max() == 1     # one stratum per cell
    grp = pd.DataFrame({"key": key, "t": df["t"]})
    nt = grp[grp["t"] == 1].groupby("key").size()
    nc = grp[grp["t"] == 0].groupby("key").size()
    both = nt.index.intersection(nc.index)
    matched = key.isin(both)
    assert (u["weights"] > 0).equals(matched)
    wc = (nt / nc).reindex(key[(df["t"] == 0) & matched]).to_numpy()
    wc = wc * len(wc) / wc.sum()
    assert np.allclose(u.loc[(df["t"] == 0) & matched, "weights"].to_numpy(), wc)
    assert (u.loc[(df["t"] == 1) & matched, "weights"] == 1).all()
    un = m.unmatched()
    assert set(un["index"]) == set(df.index[(df["t"] == 1) & ~matched])
    assert (un["reason"] == rm.R_NO_CELL).all()
    assert "coarsened exact matching" in m.summary() and m.bins["sec"] == "exact"


def test_cem_cutpoints_constant_covariate_and_bad_input():
    df = _synthetic(800, seed=17).assign(k=1.0)
    m = match(df, "t", ["x1", "k"], method="cem", cutpoints={"x1": [-1.0, 0.0, 1.0]})
    assert ("k", "constant") in m.dropped_terms and "constant" in m.summary()
    b = np.searchsorted([-1.0, 0.0, 1.0], df["x1"], side="right")
    sub = m.units["subclass"].dropna()
    assert (pd.Series(b, index=df.index).loc[sub.index].groupby(sub.to_numpy()).nunique() == 1).all()
    assert m.units["subclass"].nunique() == 4
    with pytest.raises(ValueError, match="cutpoints for 'x1' must be 'sturges', a number of bins or a list"):
        match(df, "t", ["x1"], method="cem", cutpoints={"x1": "fd"})
    with pytest.raises(ValueError, match=r"cutpoints: \['nope'\] are not covariates"):
        match(df, "t", ["x1"], method="cem", cutpoints={"nope": 3})
    with pytest.raises(ValueError, match=r"method='cem' does not use \['caliper', 'ratio'\]"):
        match(df, "t", ["x1"], method="cem", caliper=0.2, ratio=2)
    with pytest.raises(ValueError, match="cutpoints is for method='cem' only"):
        match(df, "t", ["x1"], cutpoints=3)
    with pytest.raises(ValueError, match="no propensity score"):
        overlap_data(m)


# ------------------------------------------------------------------------- ebal

def _ebal_primal(X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Independent entropy balancing: the primal (minimum KL divergence from uniform subject to
    the moment constraints and sum 1) solved by scipy's SLSQP."""
    from scipy.optimize import minimize

    n = len(X)
    cons = [{"type": "eq", "fun": lambda w: X.T @ w - target}, {"type": "eq", "fun": lambda w: w.sum() - 1}]
    res = minimize(lambda w: np.sum(w * np.log(np.maximum(w, 1e-300) * n)), np.full(n, 1 / n),
                   jac=lambda w: np.log(np.maximum(w, 1e-300) * n) + 1, constraints=cons,
                   bounds=[(1e-12, 1)] * n, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    assert res.success, res.message
    return res.x


def test_ebal_hits_moments_and_matches_primal():
    rng = np.random.default_rng(18)
    n = 240
    df = pd.DataFrame({"x": rng.normal(size=n), "b": (rng.random(n) < 0.4).astype(float)})
    df["t"] = (rng.random(n) < 1 / (1 + np.exp(1.0 - 0.8 * df["x"] - df["b"]))).astype(int)
    m = match(df, "t", ["x", "b"], method="ebal")
    u = m.units
    wc = u.loc[~u["treated"], "weights"]
    Xt, Xc = df.loc[df["t"] == 1, ["x", "b"]], df.loc[wc.index, ["x", "b"]]
    # invariant: the weighted comparison means are the users' means (1e-8 of the covariate's SD)
    diff = (Xc.mul(wc, axis=0).sum() / wc.sum() - Xt.mean()) / Xc.std()
    assert diff.abs().max() < 1e-8
    assert wc.sum() == pytest.approx(len(Xt))  # WeightIt ATT: control weights sum to n treated
    assert (u.loc[u["treated"], "weights"] == 1).all()
    ref = _ebal_primal(Xc.to_numpy(), Xt.mean().to_numpy())
    assert np.allclose(wc.to_numpy() / wc.sum(), ref, atol=1e-6)  # SLSQP's own accuracy
    b = m.balance().set_index("variable")
    assert (b["smd_after"].abs() < 1e-8).all() and (b["smd_before"].abs() > 0.1).any()
    # moments=2: variances too
    m2 = match(df, "t", ["x", "b"], method="ebal", moments=2)
    w2 = m2.units.loc[~m2.units["treated"], "weights"].to_numpy()
    xc = df.loc[df["t"] == 0, "x"].to_numpy()
    xt = df.loc[df["t"] == 1, "x"].to_numpy()
    mu = np.sum(w2 * xc) / w2.sum()
    assert mu == pytest.approx(xt.mean(), abs=1e-8)
    assert np.sum(w2 * (xc - mu) ** 2) / w2.sum() == pytest.approx(np.mean((xt - xt.mean()) ** 2), abs=1e-8)


def test_ebal_planted_effect_and_exact_strata():
    df = _synthetic(3000, seed=19)
    m = match(df, "t", ["x1", "x2"], exact="sec", method="ebal")
    for s, part in df.groupby("sec"):
        u = m.units.loc[part.index]
        wc = u.loc[~u["treated"], "weights"]
        xt = part.loc[part["t"] == 1, ["x1", "x2"]].mean()
        xc = part.loc[wc.index, ["x1", "x2"]].mul(wc, axis=0).sum() / wc.sum()
        assert np.allclose(xc, xt, atol=1e-8), s
        assert wc.sum() == pytest.approx((part["t"] == 1).sum())
    e = att(m, "y")
    assert e.vcov == "HC3 robust" and abs(e.estimate - 2.0) < 4 * e.std_error  # planted effect 2


def test_ebal_bad_input():
    df = _synthetic(600, seed=20)
    with pytest.raises(ValueError, match=r"covariate column\(s\) \['k'\] have one value"):
        match(df.assign(k=2.0), "t", ["x1", "k"], method="ebal")
    # users' mean outside the comparison firms' range
    out = df.assign(z=np.where(df["t"] == 1, 5.0 + df["x1"].abs(), -df["x1"].abs()))
    with pytest.raises(ValueError, match="infeasible.*users' mean of 'z'.*not strictly inside"):
        match(out, "t", ["x1", "z"], method="ebal")
    # jointly infeasible: each mean inside its range, but no comparison firm has a and b together
    n = 300
    a = np.r_[np.ones(50), np.zeros(50), np.ones(100), np.zeros(100)]
    b = np.r_[np.ones(50), np.ones(50), np.zeros(100), np.ones(100)]
    t = np.r_[np.ones(100), np.zeros(200)].astype(int)
    j = pd.DataFrame({"t": t, "a": a, "b": b, "x": np.random.default_rng(0).normal(size=n)})
    with pytest.raises(ValueError, match="entropy balancing is infeasible: no positive weights"):
        match(j, "t", ["a", "b"], method="ebal")
    with pytest.raises(ValueError, match="moments must be 1"):
        match(df, "t", ["x1"], method="ebal", moments=3)
    # a stratum with users and no comparison firms: its users are unmatched, with the reason
    d2 = df.copy()
    d2.loc[(d2["sec"] == "D") & (d2["t"] == 0), "sec"] = "C"
    m = match(d2, "t", ["x1"], method="ebal", exact="sec")
    un = m.unmatched()
    assert set(un["index"]) == set(d2.index[(d2["sec"] == "D") & (d2["t"] == 1)])
    assert (un["reason"] == rm.R_NO_STRATUM).all()


@pytest.mark.parametrize("method", ["cem", "ebal"])
def test_match_cohorts_weighting_designs_contract(method):
    panel = _panel(2000, seed=21)
    cm = match_cohorts(panel, "g", "year", "be_id", ["x_lag1", "sector"], caliper=None, method=method)
    assert set(cm.matches) == {2017, 2019}
    mu = cm.matched_units()
    assert list(mu.columns) == ["be_id", "cohort", "treated", "match_weight", "weight"]
    for g, part in mu.groupby("cohort"):
        t, c = part[part["treated"] == 1], part[part["treated"] == 0]
        assert (t["weight"] == 1).all() and len(c) > 0
        if method == "cem":  # MatchIt normalize: matched controls' weights average 1
            assert c["weight"].sum() == pytest.approx(len(c))
        else:  # WeightIt ATT: control weights sum to the number of users
            assert c["weight"].sum() == pytest.approx(len(t))
    b = cm.balance(by_cohort=True)
    assert "distance" not in set(b["variable"])
    # the pooled table too (03's balance table and love plot showed an empty "propensity score" row)
    assert "distance" not in set(cm.balance()["variable"])
    assert "distance" in set(match_cohorts(panel, "g", "year", "be_id", ["x_lag1", "sector"]).balance()["variable"])
    assert cm.ps_table().empty
    assert ("coarsened exact" if method == "cem" else "entropy balancing") in cm.spec()


def test_plots_never_switch_the_backend(lalonde, monkeypatch):
    import matplotlib

    def forbidden(*a, **k):
        raise AssertionError("reach.matching must not call matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    before = matplotlib.get_backend()
    m = match(lalonde, "treat", LALONDE_COV)
    love_plot(m)
    overlap_plot(m)
    assert matplotlib.get_backend() == before


def test_params_match_method_accepts_designs_and_lists():
    from reach.params import load_params

    stub = Path(__file__).resolve().parents[1] / "params" / "stub.yaml"
    assert load_params(stub, {"match_method": ["nearest", "cem", "ebal"]}, check_files=False)["match_method"] == [
        "nearest", "cem", "ebal"]
    assert load_params(stub, {"match_method": "ebal"}, check_files=False)["match_method"] == "ebal"
    for bad in ("optimal", ["nearest", "nearest"], []):
        with pytest.raises(ValueError, match="match_method.*must be one of \\['nearest', 'cem', 'ebal'\\]"):
            load_params(stub, {"match_method": bad}, check_files=False)


@pytest.mark.parametrize("replace", [False, True])
def test_atc_matches_controls_to_users_as_bruteforce(replace):
    """estimand="ATC": every control (focal) gets the nearest available user, visited in MatchIt's
    ATC default order "smallest"; checked against the brute-force transcription with the roles of
    the groups swapped."""
    rng = np.random.default_rng(22)
    n = 160
    d = np.round(rng.random(n), 1)
    treat = rng.random(n) < 0.6  # more users than controls: the ATC can match every control
    stratum = rng.integers(0, 3, n)
    df = pd.DataFrame({"t": treat.astype(int), "s": stratum, "score": d, "x": rng.normal(size=n), "y": 0.0})
    m = match(df, "t", ["x"], exact="s", distance="score", caliper=0.15, std_caliper=False, replace=replace,
              estimand="ATC")
    assert m.m_order == "smallest"
    got = sorted(zip(m.pairs["treated_index"], m.pairs["control_index"], m.pairs["round"] - 1))
    want = _brute_nearest(d, ~treat, stratum, 1, replace, 0.15 + 1e-12, smallest=True)
    assert got == [(int(a), int(b), int(c)) for a, b, c in want]
    u = m.units
    assert (u.loc[~u["treated"] & (u["weights"] > 0), "weights"] == 1).all()  # focal units weigh 1
    un = m.unmatched()
    assert set(un["index"]) == set(u.index[~u["treated"] & (u["weights"] == 0)])
    df["y"] = df["x"] + 3.0 * df["t"]
    assert att(m, "y").tidy()["term"].iloc[0] == "ATC(y)"
    with pytest.raises(ValueError, match="estimand='ATC' is available for method='nearest' only"):
        match(df, "t", ["x"], method="cem", estimand="ATC")
    with pytest.raises(ValueError, match="estimand must be one of \\['ATT', 'ATC'\\]; got 'ATE'"):
        match(df, "t", ["x"], estimand="ATE")


def test_atc_balance_standardised_by_control_sd(lalonde):
    m = match(lalonde, "treat", LALONDE_COV, estimand="ATC", replace=True)
    b = m.balance().set_index("variable")
    c = lalonde[lalonde["treat"] == 0]
    t = lalonde[lalonde["treat"] == 1]
    assert b.loc["age", "smd_before"] == pytest.approx((t["age"].mean() - c["age"].mean()) / c["age"].std())
    p = c["married"].mean()
    assert b.loc["married", "smd_before"] == pytest.approx((t["married"].mean() - p) / np.sqrt(p * (1 - p)))
    assert m.counts().set_index("group").loc["control", "matched"] == len(c)  # with replacement: every control


def test_balance_figures_moved_to_matching_report_old_names_warn():
    """Presentation left the estimator module; the old import path works one more release, with a warning."""
    import reach.matching as matching
    import reach.matching_report as report

    for name in ("love_plot", "overlap_plot", "balance_summary"):
        with pytest.warns(DeprecationWarning, match=f"reach.matching_report.{name}"):
            assert getattr(matching, name) is getattr(report, name)


def _scan_mahalanobis(M, d, treat, stratum, order_t, ratio, replace, cal):
    """MatchIt 4.7.2's ``find_control_mahcovs`` rule, transcribed literally (O(n) per treated unit):
    units sorted by the first coordinate (ties in data order); from the treated unit's place visit
    offset 1, 2, ... left then right; a usable control (same stratum, inside the caliper, not used
    without replacement, not already this unit's) at least as close as the best so far replaces it.
    Rounds outer, treated units inner."""
    n = len(d)
    by_x = sorted(range(n), key=lambda i: (M[i, 0], i))
    at = {u: p for p, u in enumerate(by_x)}
    used = np.zeros(n, dtype=bool)
    got = {int(i): [] for i in order_t}
    pairs = []
    for r in range(ratio):
        for i in map(int, order_t):
            if len(got[i]) < r:
                continue
            best, pick = np.inf, -1
            for k in range(1, n):
                for p in (at[i] - k, at[i] + k):
                    if not 0 <= p < n:
                        continue
                    j = by_x[p]
                    if (treat[j] or stratum[j] != stratum[i] or (used[j] and not replace) or j in got[i]
                            or abs(d[j] - d[i]) > cal):
                        continue
                    dist = float(np.sum((M[j] - M[i]) ** 2))
                    if dist <= best:
                        best, pick = dist, j
            if pick >= 0:
                pairs.append((i, pick, r))
                got[i].append(pick)
                used[pick] = True
    return sorted(pairs)


@pytest.mark.parametrize("algorithm", ["kdtree", "brute"])
@pytest.mark.parametrize("replace,ratio,cal", [(False, 1, np.inf), (False, 3, 0.3), (True, 3, np.inf),
                                               (True, 2, 0.2)])
def test_mahalanobis_large_tie_groups_follow_matchit_scan(algorithm, replace, ratio, cal):
    """Register data: many firms share one covariate vector (e.g. every non-exporter of a size
    class). Controls in groups of up to ~150 identical rows, treated units inside the groups,
    scores partly shared within a group (a subset of the score's covariates), two strata; the
    pairs must be those of the literal scan above."""
    rng = np.random.default_rng(7)
    n = 700
    g = rng.choice(6, size=n, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    M = np.column_stack([g % 3, g // 3]).astype(float)
    M[g == 5] = rng.normal(size=((g == 5).sum(), 2))          # one group of distinct rows
    d = np.round(0.1 * g + rng.choice([0.0, 0.15], size=n), 2)
    treat = rng.random(n) < 0.15
    stratum = rng.integers(0, 2, n)
    eligible = np.ones(n, dtype=bool)
    order_t = np.flatnonzero(treat)[rng.permutation(treat.sum())]
    want = _scan_mahalanobis(M, d, treat, stratum, order_t, ratio, replace, cal)
    tp, cp, rd = rm._nn_mahalanobis(M, d, treat, stratum, eligible, order_t, ratio, replace,
                                    None if np.isinf(cal) else cal, algorithm)
    got = sorted(zip(tp.tolist(), cp.tolist(), rd.tolist()))
    assert len(got) > 50
    assert got == want


@pytest.mark.parametrize("algorithm", ["kdtree", "brute"])
def test_mahalanobis_stratum_without_controls_matches_nobody(algorithm):
    """A stratum whose treated units have no control at all: no pair there, the others unaffected."""
    M = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    treat = np.array([True, False, False, True])
    tp, cp, rd = rm._nn_mahalanobis(M, np.array([0.1, 0.2, 0.3, 0.4]), treat, np.array([0, 0, 0, 1]),
                                    np.ones(4, dtype=bool), np.array([0, 3]), 1, False, None, algorithm)
    assert (tp.tolist(), cp.tolist(), rd.tolist()) == ([0], [1], [0])


@pytest.mark.parametrize("design", ["nearest", "cem", "ebal"])
@pytest.mark.parametrize("control_group", ["nevertreated", "notyettreated"])
def test_comparison_size_text_says_only_what_holds_for_the_design(design, control_group):
    """03's paragraph on the comparison groups' sizes said "later cohorts have fewer not-yet users left"
    and "grows with its number of matched users" for every run; the first holds only when firms not yet
    using the programme are candidates, the second only when users pick their comparison firms."""
    from reach.matching_report import comparison_size_text

    t = comparison_size_text(design, control_group=control_group, ratio=3, replace=True)
    assert ("fewer not-yet users left" in t) == (control_group == "notyettreated")
    assert ("never users only" in t) == (control_group == "nevertreated")
    assert ("grows with its number of matched users" in t) == (design == "nearest")
    assert ("up to 3 comparison firm(s) that may serve several users" in t) == (design == "nearest")
    with pytest.raises(ValueError, match=r"\['nearest', 'cem', 'ebal'\].*'nn'"):
        comparison_size_text("nn", control_group=control_group)


@pytest.mark.parametrize("method", ["nearest", "cem", "ebal"])
def test_specification_line_names_covariates_by_their_labels(method):
    """03 prints each design's specification line in the rendered report; it showed the covariates as a Python
    list of column names (``['log_exports_lag1', ...]``)."""
    df = _synthetic(600, seed=3).rename(columns={"x1": "log_exports_lag1", "x2": "n_dest_lag1"})
    kw = {"mahvars": ["log_exports_lag1", "n_dest_lag1"]} if method == "nearest" else {}
    m = match(df, "t", ["log_exports_lag1", "n_dest_lag1"], exact="sec", method=method, **kw)
    spec = m.summary().splitlines()[0]
    assert "[" not in spec and "log_exports_lag1" not in spec, spec
    assert "exports in the year before (log), destination countries in the year before" in spec
    assert "exact on sec" in spec  # a column without a label keeps its name
