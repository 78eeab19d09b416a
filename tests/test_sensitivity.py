"""Tests of reach.sensitivity (Rambachan & Roth 2023; R HonestDiD).

Golden numbers (sources and tolerances recorded beside them):

* ``golden/honestdid_bc.json``: Benzarti & Carloni event study shipped with HonestDiD 0.2.8,
  R outputs as recorded in HonestDiD.jl's test/reference.jl;
* ``golden/honestdid_medicaid.json``: the Medicaid example of the HonestDiD README (printed
  tables), with betahat / sigma rebuilt from the public data.

Independent checks: known truth at a population point (no sampling noise), the M = 0
FLCI as a minimum-variance problem solved in another parameterisation, brute-force
minimisation of the FLCI half-length, the dual vertices against scipy's LP, and the
quantile helpers against scipy.stats.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from reach._display import ESTIMATE_CORE
from reach import sensitivity as sens
from reach.sensitivity import SensitivityResult, honest_did, original_ci, sensitivity_results

GOLDEN = Path(__file__).parent / "golden"
BC = json.loads((GOLDEN / "honestdid_bc.json").read_text(encoding="utf-8"))
MED = json.loads((GOLDEN / "honestdid_medicaid.json").read_text(encoding="utf-8"))
EXACT = BC["tolerances"]["exact"]["abs"]
FLCI_REL = BC["tolerances"]["flci_rel_halflength"]["rel"]
LF_STEPS = BC["tolerances"]["lf_grid"]["steps"]
PRINTED = MED["tolerances"]["printed"]["abs"]
RM_CLF = MED["tolerances"]["rm_clf"]["abs"]


def _bc():
    b = np.array(BC["betahat"])
    S = np.array(BC["sigma_colmajor"]).reshape(8, 8, order="F")
    return b, S, BC["num_pre_periods"], BC["num_post_periods"]


def _med():
    return np.array(MED["betahat"]), np.array(MED["sigma"]), MED["num_pre_periods"], MED["num_post_periods"]


def _sd_theta(S, npre, l_vec):
    l_vec = np.asarray(l_vec, float)
    return math.sqrt(l_vec @ S[npre:, npre:] @ l_vec)


# --------------------------------------------------------------------------- golden: R HonestDiD, BC data
def test_bc_original_ci_exact():
    b, S, npre, npost = _bc()
    np.testing.assert_allclose(original_ci(b, S, npre, npost), BC["original_ci"], atol=EXACT)


def test_bc_conditional_smoothness_default_theta_grid_exact():
    b, S, npre, npost = _bc()
    ref = BC["sd_conditional_default_grid"]
    r = sensitivity_results(b, S, npre, npost, "smoothness", grid=ref["M"], method="Conditional")
    np.testing.assert_allclose(r.lb, ref["lb"], atol=EXACT)
    np.testing.assert_allclose(r.ub, ref["ub"], atol=EXACT)


@pytest.mark.parametrize("search, coarse_step", [("grid", 1), ("grid", 10), ("bracket", 10)])
def test_bc_conditional_single_cases_exact(search, coarse_step):
    b, S, npre, npost = _bc()
    kw = dict(method="Conditional", search=search, coarse_step=coarse_step)
    r = sensitivity_results(b, S, npre, npost, "smoothness", grid=[0.1], grid_points=200, **kw)
    np.testing.assert_allclose([r.lb[0], r.ub[0]], BC["sd_conditional_M0.1_grid200"], atol=EXACT)
    r = sensitivity_results(b, S, npre, npost, "relative_magnitude", grid=[1.0], grid_points=200, **kw)
    np.testing.assert_allclose([r.lb[0], r.ub[0]], BC["rm_conditional_Mbar1_grid200"], atol=EXACT)
    # one post period: the test without nuisance parameters
    r = sensitivity_results(b[:3], S[:3, :3], 2, 1, "smoothness", grid=[0.1], grid_points=200, **kw)
    np.testing.assert_allclose([r.lb[0], r.ub[0]], BC["sd_conditional_2pre1post_M0.1_grid200"], atol=EXACT)


def test_bc_conditional_average_open_end():
    b, S, npre, npost = _bc()
    kw = dict(grid=[0.1], grid_points=100, l_vec=np.full(4, 0.25), method="Conditional")
    lb_ref, ub_grid_end = BC["sd_conditional_average_M0.1_grid100"]
    # on HonestDiD's grid: R returns the last grid point (with a warning) where the set is open
    hi = sens._sd_id_set_at_zero(npre, npost, np.full(4, 0.25), 0.1)[1] + 20 * _sd_theta(S, npre, np.full(4, 0.25))
    assert hi == pytest.approx(ub_grid_end, abs=1e-6)
    r = sensitivity_results(b, S, npre, npost, "smoothness", grid_ub=hi, **kw)
    assert r.lb[0] == pytest.approx(lb_ref, abs=EXACT) and r.ub[0] == np.inf
    # the default grid is extended with the same step, keeping the lower bound
    r = sensitivity_results(b, S, npre, npost, "smoothness", **kw)
    assert r.lb[0] == pytest.approx(lb_ref, abs=EXACT) and ub_grid_end < r.ub[0] < np.inf


@pytest.mark.parametrize("stype, key, grid", [("smoothness", "sd_clf_M0.1_grid200", 0.1),
                                               ("relative_magnitude", "rm_clf_Mbar1_grid200", 1.0)])
def test_bc_clf_within_grid_steps(stype, key, grid):
    b, S, npre, npost = _bc()
    r = sensitivity_results(b, S, npre, npost, stype, grid=[grid], grid_points=200, method="C-LF")
    if stype == "relative_magnitude":
        step = 40 * _sd_theta(S, npre, [1, 0, 0, 0]) / 199
    else:  # grid: identified set at beta = 0 (here [-0.1, 0.1] * M-scale) +/- 20 sd
        lo, hi = sens._sd_id_set_at_zero(npre, npost, np.array([1.0, 0, 0, 0]), 0.1)
        step = (hi - lo + 40 * _sd_theta(S, npre, [1, 0, 0, 0])) / 199
    np.testing.assert_allclose([r.lb[0], r.ub[0]], BC[key], atol=LF_STEPS * step + 1e-12)


def test_bc_flci_within_simulation_tolerance():
    b, S, npre, npost = _bc()
    ref = BC["flci"]
    r = sensitivity_results(b, S, npre, npost, "smoothness", grid=ref["M"])
    assert r.method == "FLCI" and r.delta == "DeltaSD"
    half = (np.array(ref["ub"]) - np.array(ref["lb"])) / 2
    assert np.all(np.abs(r.lb - ref["lb"]) <= FLCI_REL * half)
    assert np.all(np.abs(r.ub - ref["ub"]) <= FLCI_REL * half)
    # the centre does not involve the simulated critical value: much tighter
    np.testing.assert_allclose((r.lb + r.ub) / 2, (np.array(ref["lb"]) + ref["ub"]) / 2, atol=1e-6)


def test_bc_default_smoothness_grid_ends_at_pre_period_bound():
    b, S, npre, npost = _bc()
    r = sensitivity_results(b, S, npre, npost, "smoothness", method="Conditional", grid_points=50)
    assert len(r.grid) == 10 and r.grid[0] == 0
    assert r.grid[-1] == pytest.approx(BC["sd_m_upper_bound"], abs=EXACT)


# --------------------------------------------------------------------------- golden: README Medicaid example
def test_medicaid_original_ci_matches_printed():
    b, S, npre, npost = _med()
    lo, hi = original_ci(b, S, npre, npost)
    np.testing.assert_allclose([round(lo, 3), round(hi, 3)], MED["original_ci_printed"], atol=1e-12)


def test_medicaid_relative_magnitudes_clf_table():
    b, S, npre, npost = _med()
    ref = MED["rm_clf"]
    r = sensitivity_results(b, S, npre, npost, "relative_magnitude", grid=ref["Mbar"])
    assert r.method == "C-LF" and r.delta == "DeltaRM"
    np.testing.assert_allclose(r.lb, ref["lb"], atol=RM_CLF)
    np.testing.assert_allclose(r.ub, ref["ub"], atol=RM_CLF)
    assert r.breakdown_value == MED["breakdown_rm_on_grid"]


def test_medicaid_smoothness_flci_table():
    b, S, npre, npost = _med()
    ref = MED["sd_flci"]
    r = sensitivity_results(b, S, npre, npost, "smoothness", grid=ref["M"])
    np.testing.assert_allclose(r.lb, ref["lb"], atol=PRINTED)
    np.testing.assert_allclose(r.ub, ref["ub"], atol=PRINTED)
    assert r.breakdown_value == MED["breakdown_sd_on_grid"]


# --------------------------------------------------------------------------- known truth and independent computations
def _population(npre, npost, tau, delta, seed=0):
    rng = np.random.default_rng(seed)
    n = npre + npost
    L = rng.normal(size=(n, n)) * 0.003
    S = L @ L.T + np.eye(n) * 1e-5
    beta = delta + np.concatenate([np.zeros(npre), tau])
    return beta, S


def test_flci_m0_centre_is_truth_under_a_linear_trend():
    npre, npost = 4, 3
    t = np.r_[np.arange(-npre, 0), np.arange(1, npost + 1)]
    tau = np.array([0.3, 0.1, -0.2])
    beta, S = _population(npre, npost, tau, 0.05 * t)  # a linear violation of parallel trends
    for l_vec in ([1, 0, 0], [0, 0, 1], [1 / 3] * 3):
        r = sensitivity_results(beta, S, npre, npost, "smoothness", grid=[0.0], l_vec=l_vec)
        theta = float(np.asarray(l_vec) @ tau)
        assert (r.lb[0] + r.ub[0]) / 2 == pytest.approx(theta, abs=1e-9)
        # the naive interval is centred on theta + the extrapolated trend, and misses theta
        lo, hi = original_ci(beta, S, npre, npost, l_vec)
        assert not (lo <= theta <= hi)


def test_flci_m0_is_the_minimum_variance_trend_robust_estimator():
    """At M = 0 the FLCI is v'b +/- z sd(v'b) with v minimising var subject to v'(linear trend) = 0
    and post weights l: solved here directly in v (not in HonestDiD's cumulative-sum form)."""
    b, S, npre, npost = _med()
    t = np.r_[np.arange(-npre, 0), np.arange(1, npost + 1)].astype(float)
    for l_vec in (np.array([1.0, 0.0]), np.array([0.5, 0.5])):
        # minimise [v_pre, l]' S [v_pre, l] s.t. t_pre'v_pre + t_post'l = 0
        Spp, Spq = S[:npre, :npre], S[:npre, npre:]
        kkt = np.block([[2 * Spp, t[:npre, None]], [t[None, :npre], np.zeros((1, 1))]])
        rhs = np.r_[-2 * Spq @ l_vec, -t[npre:] @ l_vec]
        v = np.r_[np.linalg.solve(kkt, rhs)[:npre], l_vec]
        z = stats.norm.ppf(0.975)
        expect = (v @ b - z * math.sqrt(v @ S @ v), v @ b + z * math.sqrt(v @ S @ v))
        r = sensitivity_results(b, S, npre, npost, "smoothness", grid=[0.0], l_vec=l_vec)
        np.testing.assert_allclose([r.lb[0], r.ub[0]], expect, atol=1e-9)


def test_flci_half_length_is_the_brute_force_minimum():
    b, S, npre, npost = _bc()
    prob = sens._FLCIProblem(S, npre, npost, np.array([1.0, 0, 0, 0]))
    for M in (0.05, 0.2):
        chi, _ = prob.optimal(M, 0.05)
        f = lambda u: prob._hl(u, M, 0.05)  # noqa: E731
        starts = [np.zeros(npre - 1), np.full(npre - 1, 0.5), np.array([-1.0, 1.0, 2.0])]
        brute = min(optimize.minimize(f, x0, method="Nelder-Mead",
                                      options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).fun for x0 in starts)
        assert chi <= brute + 1e-9
        assert chi == pytest.approx(brute, rel=1e-6)


def test_relative_magnitudes_cover_truth_at_population_point():
    npre, npost = 3, 3
    # pre-trend changes of at most 0.04; post changes of 0.03 <= Mbar * 0.04 for Mbar >= 0.75
    delta = np.array([0.02, 0.06, 0.04, 0.03, 0.06, 0.09])  # periods -3,-2,-1 | 1,2,3 (0 is the reference)
    tau = np.array([0.2, 0.25, 0.3])
    beta, S = _population(npre, npost, tau, delta, seed=3)
    for method in ("Conditional", "C-LF"):
        r = sensitivity_results(beta, S, npre, npost, "relative_magnitude", grid=[1.0, 2.0], method=method)
        assert np.all(r.lb <= tau[0]) and np.all(tau[0] <= r.ub)
        r = sensitivity_results(beta, S, npre, npost, "relative_magnitude", grid=[1.0], method=method,
                                l_vec=[1 / 3] * 3)
        assert r.lb[0] <= tau.mean() <= r.ub[0]
    # under exact parallel trends the truth is estimate - bias: the naive interval misses it
    lo, hi = original_ci(beta, S, npre, npost)
    assert not (lo <= tau[0] <= hi)


@pytest.mark.parametrize("stype, method", [("relative_magnitude", "C-LF"), ("relative_magnitude", "Conditional"),
                                           ("smoothness", "FLCI"), ("smoothness", "Conditional")])
def test_sets_widen_with_m(stype, method):
    b, S, npre, npost = _med()
    grid = [0.0, 0.5, 1.0, 2.0] if stype == "relative_magnitude" else [0.0, 0.01, 0.02, 0.04]
    r = sensitivity_results(b, S, npre, npost, stype, grid=grid, method=method)
    assert np.all(np.diff(r.lb) <= 1e-12) and np.all(np.diff(r.ub) >= -1e-12)


@pytest.mark.parametrize("fast", [dict(search="grid"), dict(search="bracket")])
def test_fast_inversions_equal_the_full_grid(fast):
    b, S, npre, npost = _med()
    kw = dict(grid=[0.0, 0.5, 2.0], l_vec=[0.5, 0.5])
    full = sensitivity_results(b, S, npre, npost, "relative_magnitude", search="grid", coarse_step=1, **kw)
    quick = sensitivity_results(b, S, npre, npost, "relative_magnitude", **fast, **kw)
    np.testing.assert_array_equal(full.lb, quick.lb)
    np.testing.assert_array_equal(full.ub, quick.ub)


def test_bracketing_extends_the_grid_to_a_large_estimate():
    npre, npost = 3, 2
    rng = np.random.default_rng(5)
    L = rng.normal(size=(5, 5)) * 0.01
    S = L @ L.T + np.eye(5) * 1e-4
    b = np.array([0.01, -0.01, 0.005, 1.0, 1.1])  # effect of ~ 60 standard errors
    kw = dict(grid=[0.0, 1.0], method="Conditional")
    full = sensitivity_results(b, S, npre, npost, "relative_magnitude", search="grid", coarse_step=1, **kw)
    quick = sensitivity_results(b, S, npre, npost, "relative_magnitude", **kw)
    assert np.all(np.isfinite(quick.lb)) and np.all(quick.lb > 0.5)
    np.testing.assert_allclose(quick.lb, full.lb, atol=1e-12)
    np.testing.assert_allclose(quick.ub, full.ub, atol=1e-12)


def test_dual_vertices_give_the_lp_value():
    rng = np.random.default_rng(1)
    m, k = 8, 3
    X = rng.normal(size=(m, k))
    sd = rng.uniform(0.5, 2.0, m)
    V = sens._dual_vertices(np.column_stack([sd, X]))
    for _ in range(5):
        y = rng.normal(size=m)
        # min eta s.t. y - X g <= eta sd
        res = optimize.linprog(np.r_[1.0, np.zeros(k)], A_ub=-np.column_stack([sd, X]), b_ub=-y,
                               bounds=[(None, None)] * (k + 1), method="highs")
        assert (V @ y).max() == pytest.approx(res.fun, abs=1e-9)


def test_quantile_helpers_against_scipy():
    for mu in (0.0, 0.3, 2.0, 8.0):
        c = sens._folded_normal_quantile(0.95, mu)
        assert stats.foldnorm.cdf(c, mu) == pytest.approx(0.95, abs=1e-12)
    lo = np.array([-3.0, -1.0, 0.5, 4.0, 9.0])
    hi = np.array([3.0, 0.2, np.inf, 6.0, 12.0])
    np.testing.assert_allclose(sens._truncnorm_ppf(0.97, lo, hi), stats.truncnorm.ppf(0.97, lo, hi), rtol=1e-9)


# --------------------------------------------------------------------------- honest_did on reach.did results
@pytest.fixture(scope="module")
def mpdta_es():
    from reach.did import aggte, att_gt

    mpdta = pd.read_csv(GOLDEN / "did_mpdta.csv")
    r = att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", base_period="universal", bootstrap=False)
    return r, aggte(r, type="dynamic")


def test_honest_did_uses_the_event_study_and_its_covariance(mpdta_es):
    _, es = mpdta_es
    res = honest_did(es, event_time=2, sensitivity_type="smoothness", grid=[0.0, 0.02])
    i = list(es.keys).index(2)
    z = stats.norm.ppf(0.975)
    assert res.estimate == pytest.approx(es.att[i], abs=1e-12)
    np.testing.assert_allclose(res.original_ci, [es.att[i] - z * es.se[i], es.att[i] + z * es.se[i]], rtol=1e-10)
    assert res.target == "event time 2" and res.yname == "lemp"
    used = np.asarray(es.keys) != -1  # the reference period is not an estimate
    assert res.n_treated == int(np.asarray(es.n_treated_keys)[used].min())
    assert res.n_control == int(np.asarray(es.n_control_keys)[used].min())


def test_honest_did_equals_raw_route(mpdta_es):
    _, es = mpdta_es
    keep = np.asarray(es.keys) != -1  # universal base: -1 is the reference, an exact zero
    IF = np.asarray(es.inffunc)[:, keep]
    V = IF.T @ IF / IF.shape[0] ** 2
    att = np.asarray(es.att)[keep]
    npre = int((np.asarray(es.keys)[keep] < 0).sum())
    for et, l_vec in ((0, [1, 0, 0, 0]), ("average", [0.25] * 4)):
        a = honest_did(es, event_time=et, grid=[0.0, 1.0])
        b = sensitivity_results(att, V, npre, len(att) - npre, grid=[0.0, 1.0], l_vec=l_vec)
        np.testing.assert_array_equal(a.lb, b.lb)
        np.testing.assert_array_equal(a.ub, b.ub)
    assert a.estimate == pytest.approx(np.mean(att[npre:]))


def test_result_is_immutable_with_fixed_tidy_columns(mpdta_es):
    _, es = mpdta_es
    res = honest_did(es, event_time="average", sensitivity_type="smoothness", grid=[0.0, 0.01])
    assert list(res.tidy().columns) == [*ESTIMATE_CORE, "M", "method", "delta", "excludes_zero", "lb", "ub"]
    assert list(res.tidy().columns) == list(sens.SENSITIVITY_COLUMNS)
    t = res.tidy(include_original=True)
    assert len(t) == 3 and t.loc[0, "method"] == "Original" and np.isnan(t.loc[0, "M"])
    # the core: the robust set is the interval, the point estimate repeats on every row; the
    # deprecated aliases lb / ub equal conf_low / conf_high
    np.testing.assert_array_equal(t["conf_low"].to_numpy(), np.r_[res.original_ci[0], res.lb])
    np.testing.assert_array_equal(t["lb"].to_numpy(), t["conf_low"].to_numpy())
    np.testing.assert_array_equal(t["ub"].to_numpy(), t["conf_high"].to_numpy())
    assert res.target == "average of event times 0..3"
    assert (t["estimate"] == res.estimate).all() and (t["term"] == res.target).all()
    assert t[["std_error", "statistic", "p_value"]].isna().all().all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.method = "x"
    with pytest.raises(ValueError):
        res.lb[0] = 0.0
    text = res.summary()
    assert "breakdown value (M)" in text and "DeltaSD" in text
    assert "| M | lb | ub | method |" in res._repr_markdown_()
    assert res._repr_html_() is None  # the notebook shows the Markdown view, never a DataFrame
    assert repr(res).startswith("SensitivityResult:") and "DeltaSD" in repr(res)


def test_breakdown_value_rules():
    def make(lb, ub):
        g = np.array([0.0, 0.5, 1.0, 1.5])
        return SensitivityResult("relative_magnitude", "C-LF", "DeltaRM", g, np.array(lb, float),
                                 np.array(ub, float), (0.1, 0.2), 0.15, 0.05)

    assert make([0.1, 0.05, -0.01, -0.1], [1, 1, 1, 1]).breakdown_value == 0.5
    assert make([-1, -1, -1, -1], [-0.1, -0.05, 0.01, 0.1]).breakdown_value == 0.5  # negative effects
    assert make([0.1, 0.1, 0.1, 0.1], [1, 1, 1, 1]).breakdown_value == 1.5
    assert np.isnan(make([-0.1, -0.2, -0.3, -0.4], [1, 1, 1, 1]).breakdown_value)
    # a later grid value excluding zero again does not extend the breakdown value
    assert make([0.1, -0.1, 0.1, 0.1], [1, 1, 1, 1]).breakdown_value == 0.0


def test_choices_are_validated_with_allowed_values(mpdta_es):
    _, es = mpdta_es
    with pytest.raises(ValueError, match=r"sensitivity_type must be one of \['relative_magnitude', 'smoothness'\]; got 'rm'"):
        honest_did(es, sensitivity_type="rm")
    with pytest.raises(ValueError, match=r"method must be one of \['C-LF', 'Conditional'\]; got 'FLCI'"):
        honest_did(es, method="FLCI")
    with pytest.raises(ValueError, match=r"event_time must be 'average' or one of \[0, 1, 2, 3\]; got 7"):
        honest_did(es, event_time=7)
    with pytest.raises(ValueError, match=r"event_time must be one of \['average'\]; got 'mean'"):
        honest_did(es, event_time="mean")


def test_event_study_without_pre_periods_is_refused(mpdta_es):
    from reach.did import aggte

    r, _ = mpdta_es
    es = aggte(r, type="dynamic", min_e=-1)  # only the reference period before treatment
    with pytest.raises(ValueError, match="no pre-period estimates"):
        honest_did(es)
    with pytest.raises(ValueError, match="type='dynamic'"):
        honest_did(aggte(r, type="group"))
    with pytest.raises(TypeError, match="AggteResult"):
        honest_did(r)


def test_varying_base_period_warns():
    from reach.did import aggte, att_gt

    mpdta = pd.read_csv(GOLDEN / "did_mpdta.csv")
    es = aggte(att_gt(mpdta, "lemp", "year", "countyreal", "first.treat", bootstrap=False), type="dynamic")
    with pytest.warns(UserWarning, match="base_period='universal'"):
        honest_did(es, sensitivity_type="smoothness", grid=[0.0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_pre_periods=0, num_post_periods=3), "num_pre_periods must be at least 1"),
    (dict(num_pre_periods=2, num_post_periods=2), "betahat has 3 entries"),
    (dict(num_pre_periods=1, num_post_periods=2, l_vec=[1, 0, 0]), "l_vec must have num_post_periods = 2"),
    (dict(num_pre_periods=1, num_post_periods=2, grid=[-1.0]), "grid must be"),
    (dict(num_pre_periods=1, num_post_periods=2, alpha=1.5), "alpha must be in"),
])
def test_raw_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sensitivity_results([0.1, 0.2, 0.3], np.eye(3) * 0.01, **kwargs)


def test_sigma_must_be_symmetric_psd():
    with pytest.raises(ValueError, match="symmetric"):
        sensitivity_results([0.1, 0.2], [[1.0, 0.5], [0.0, 1.0]], 1, 1)
    with pytest.raises(ValueError, match="positive semi-definite"):
        sensitivity_results([0.1, 0.2], [[1.0, 2.0], [2.0, 1.0]], 1, 1)


# --------------------------------------------------------------------------- publishing
def test_sensitivity_table_passes_and_suppresses_by_rules(mpdta_es):
    from reach.disclosure import Rules

    _, es = mpdta_es
    res = honest_did(es, event_time=0, grid=[0.0, 1.0])
    ok = sens.sensitivity_table(res)
    assert ok.ok
    pub = ok.suppress()
    assert list(pub.columns) == [*ESTIMATE_CORE, "outcome", "target", "M", "method", "delta", "excludes_zero",
                                 "lb", "ub"]
    assert pub["method"].tolist() == ["Original", "C-LF", "C-LF"]
    np.testing.assert_allclose(pub["lb"].to_numpy(), np.r_[res.original_ci[0], res.lb])
    strict = sens.sensitivity_table(res, rules=Rules(min_treated=res.n_treated + 1))
    assert not strict.ok
    blank = strict.suppress()
    assert len(blank) == 3  # suppressed, not dropped
    assert blank[["lb", "ub", "excludes_zero", "estimate", "conf_low", "conf_high"]].isna().all().all()
    assert blank["M"].tolist()[1:] == [0.0, 1.0]
    with pytest.raises(ValueError, match="n_treated / n_control"):
        sens.sensitivity_table(sensitivity_results([0.0, 0.1, 0.2], np.eye(3) * 0.01, 1, 2, grid=[0.0]))


def test_sensitivity_plot_draws_only_published_rows(mpdta_es):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from reach.disclosure import Rules

    _, es = mpdta_es
    res = honest_did(es, event_time="average", sensitivity_type="smoothness", grid=[0.0, 0.01, 0.02])
    fig = sens.sensitivity_plot(res)
    ax = fig.axes[0]
    segs = [seg for c in ax.collections for seg in c.get_segments()]
    assert len(segs) == 4  # original + three grid values
    assert ax.get_xlabel() == "M"
    plt.close(fig)
    pub = sens.sensitivity_table(res, rules=Rules(min_control=10 ** 9)).suppress()
    fig = sens.sensitivity_plot(res, data=pub)
    assert sum(len(c.get_segments()) for c in fig.axes[0].collections) == 0
    plt.close(fig)


# --------------------------------------------------------------------------- coverage (known truth, simulated)
def _coverage_band(n, alpha=0.05):
    # one-sided 3-sigma binomial band below the nominal level
    return (1 - alpha) - 3 * math.sqrt(alpha * (1 - alpha) / n)


def test_flci_coverage_at_the_worst_case_bias():
    """The FLCI is an affine estimator with a fixed half-length: its coverage under any delta in
    Delta^SD(M) is at least 1 - alpha, and about 1 - alpha at the worst case. Checked by simulation
    with delta the largest allowed second differences (alternating sign in the post periods)."""
    npre, npost, M = 3, 3, 0.05
    rng = np.random.default_rng(11)
    L = rng.normal(size=(6, 6)) * 0.03
    S = L @ L.T + np.eye(6) * 1e-3
    # periods -3..-1, 1..3 (0 the reference): linear pre-trend, then curvature +/-M
    d = {-3: -0.03, -2: -0.02, -1: -0.01, 0: 0.0}
    slope = 0.01
    for t, curv in ((1, M), (2, -M), (3, M)):
        slope += curv
        d[t] = d[t - 1] + slope
    delta = np.array([d[t] for t in (-3, -2, -1, 1, 2, 3)])
    tau = np.array([0.1, 0.2, 0.3])
    beta = delta + np.r_[np.zeros(npre), tau]
    prob = sens._FLCIProblem(S, npre, npost, np.array([1.0, 0, 0]))
    chi, v = prob.optimal(M, 0.05)
    draws = rng.multivariate_normal(beta, S, size=20000)
    covered = np.abs(draws @ v - tau[0]) <= chi
    assert covered.mean() >= _coverage_band(len(draws))
    # power of the check: the same estimator without the bias allowance undercovers
    naive = np.abs(draws @ v - tau[0]) <= stats.norm.ppf(0.975) * math.sqrt(v @ S @ v)
    assert naive.mean() < _coverage_band(len(draws))
    # and the interval is the one sensitivity_results reports for a draw
    r = sensitivity_results(draws[0], S, npre, npost, "smoothness", grid=[M])
    np.testing.assert_allclose([r.lb[0], r.ub[0]], [draws[0] @ v - chi, draws[0] @ v + chi], atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["C-LF", "Conditional"])
def test_relative_magnitudes_coverage_at_the_boundary(method):
    """Coverage of the robust set for theta = tau_1 when the post-period change equals Mbar times
    the largest pre-period change (the boundary of Delta^RM(Mbar))."""
    npre, npost, mbar = 3, 2, 1.0
    rng = np.random.default_rng(12)
    L = rng.normal(size=(5, 5)) * 0.02
    S = L @ L.T + np.eye(5) * 4e-4
    # periods -3, -2, -1 | 1, 2 (0 the reference): pre changes 0, 0, -0.06 (largest 0.06);
    # post changes +0.06, +0.06 = Mbar * 0.06. The bias of tau_1's estimate, 0.06, is 1.2 sd:
    # the usual interval covers only about 78% of the time.
    delta = np.array([0.06, 0.06, 0.06, 0.06, 0.12])
    tau = np.array([0.2, 0.2])
    beta = delta + np.r_[np.zeros(npre), tau]
    n = 300
    draws = rng.multivariate_normal(beta, S, size=n)
    hits = 0
    for b in draws:
        r = sensitivity_results(b, S, npre, npost, "relative_magnitude", grid=[mbar], method=method)
        hits += bool(r.lb[0] <= tau[0] <= r.ub[0])
    assert hits / n >= _coverage_band(n)
    naive = np.mean([original_ci(b, S, npre, npost)[0] <= tau[0] <= original_ci(b, S, npre, npost)[1] for b in draws])
    assert naive < _coverage_band(n)  # the check has power against ignoring the violation
