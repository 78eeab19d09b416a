"""Slow tier: on a larger synthetic register (60,000 firms) the suite's estimator recovers the planted effect.

The committed stub is small (10,000 firms), so its confidence intervals are wide;
here the same generator, the same parameters and the same pipeline must land close
to the truth the generator planted, while the naive comparison stays far off.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_dr_recovers_planted_effect_at_60k_firms(tmp_path):
    from reach.did import aggte, att_gt, naive_difference
    from reach.io import load_inputs
    from reach.link import link_participants
    from reach.panel import analysis_sample, build_panel
    from reach.params import load_params
    from reach.synth import make_stub

    truth = make_stub(tmp_path / "data", n_firms=60_000, seed=1)
    p = load_params(ROOT / "params" / "stub.yaml", [f"data_dir={tmp_path / 'data'}"])
    inputs = load_inputs(p)
    panel = build_panel(inputs, link_participants(inputs))
    sample = analysis_sample(panel, "tinl", exclude_other_users=p["exclude_other_users"]).panel
    sample = sample[(sample["g_tinl"] == 0) | (sample["g_tinl"] > p["first_year"])]
    r = att_gt(sample, "log_exports", "year", "firm_id", "g_tinl", xformla=p["xformla"],
               control_group=p["control_group"], est_method=p["est_method"], biters=199, seed=0)
    simple = aggte(r, "simple")
    planted = truth.effects["tinl"]["simple"]
    assert abs(simple.overall_att - planted) < 2.5 * simple.overall_se, (simple.overall_att, simple.overall_se, planted)
    assert simple.overall_se < 0.03
    naive = naive_difference(sample, "log_exports", "year", "firm_id", "g_tinl")
    assert not (naive.conf_low <= planted <= naive.conf_high)
