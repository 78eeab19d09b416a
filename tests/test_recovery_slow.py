"""Slow tier: on a 100,000-firm synthetic register the suite's estimators recover the planted effect.

The committed stub is small (10,000 firms), so its confidence intervals are wide; here the same
generator, parameters and pipeline give intervals tight enough to expose bias. The matched estimate
(notebook 03's matched sample, stacked cohort-wise DiD of notebook 04) must cover the truth the
generator planted *without* the balanced-panel drop (firms not alive in every year are kept), while
the naive comparison stays far off. The full-sample dr estimate with ``~ log_employees`` is not
required to agree: it assumes size alone explains who starts using the programme (see notebook 04).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    from reach.did import drop_without_pre_period
    from reach.io import load_inputs
    from reach.link import link_participants
    from reach.matching import match_cohorts
    from reach.panel import analysis_sample, build_panel
    from reach.params import load_params
    from reach.synth import make_stub

    tmp = tmp_path_factory.mktemp("big")
    truth = make_stub(tmp / "data", n_firms=100_000, seed=1)
    p = load_params(ROOT / "params" / "stub.yaml", [f"data_dir={tmp / 'data'}"])
    inputs = load_inputs(p)
    panel = build_panel(inputs, link_participants(inputs))
    sample = analysis_sample(panel, "tinl", first_year=p["first_year"], last_year=p["last_year"],
                             exclude_other_users=p["exclude_other_users"]).panel
    cm = match_cohorts(sample, gname="g_tinl", tname="year", idname="be_id", covariates=p["covariates"],
                       control_group=p["control_group"], method=p["match_method"], ratio=p["ratio"],
                       replace=p["replace"], caliper=p["caliper"], ps_model=p["ps_model"], seed=p["seed"],
                       mahalanobis=p["mahalanobis"])
    est, _ = drop_without_pre_period(sample, "g_tinl")
    return p, truth, est, cm.matched_units()


def test_matched_stacked_estimate_recovers_planted_effect_unbalanced(big):
    from reach.did import aggte, matched_att_gt, matched_user_count, naive_difference, with_matching_weights

    p, truth, est, mu = big
    stacked = with_matching_weights(est, mu, gname="g_tinl")
    r = matched_att_gt(stacked, "log_exports", xformla=p["xformla"], control_group=p["control_group"],
                       est_method=p["est_method"], allow_unbalanced_panel=True, biters=199, seed=0)
    # firms not alive in every year are in the estimate
    years = est["year"].nunique()
    short = est.groupby("be_id")["year"].nunique() < years
    assert short[short].index.isin(mu["be_id"]).sum() > 0
    simple = aggte(r, "simple")
    planted = truth.effects["tinl"]["simple"]
    assert simple.n_treated == matched_user_count(mu)
    assert abs(simple.overall_att - planted) < 2.58 * simple.overall_se, (simple.overall_att, simple.overall_se, planted)
    assert simple.overall_se < 0.02  # tight enough to expose a bias of the order of the full-sample one
    naive = naive_difference(est, "log_exports", "year", "firm_id", "g_tinl")
    assert not (naive.conf_low <= planted <= naive.conf_high)


def test_dynamic_effects_covered_by_simultaneous_band(big):
    from reach.did import aggte, matched_att_gt, with_matching_weights

    p, truth, est, mu = big
    r = matched_att_gt(with_matching_weights(est, mu, gname="g_tinl"), "log_exports", xformla=p["xformla"],
                       control_group=p["control_group"], est_method=p["est_method"], biters=499, seed=1)
    t = aggte(r, "dynamic").tidy().iloc[1:].set_index("key")
    planted = {int(e): v for e, v in truth.effects["tinl"]["dynamic"].items()}
    hits = [t.loc[e, "conf_low"] <= v <= t.loc[e, "conf_high"] for e, v in planted.items() if e in t.index]
    assert len(hits) >= 3 and np.mean(hits) >= 0.8
    pre = t[t.index < 0]
    assert ((pre["conf_low"] <= 0) & (0 <= pre["conf_high"])).mean() >= 0.8
