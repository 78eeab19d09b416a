"""The summary quotes recorded numbers only, and says 'suppressed' or 'missing' rather than inventing one."""
from __future__ import annotations

from reach.summary import lookup, summarise

HEAD = {
    "reach": {"n_firms": 360, "share_exporter_before_users": 0.94, "share_exporter_before_comparison": 0.40,
              "share_instr_before_users": 0.6, "share_instr_before_comparison": None, "share_in_target_group": 0.44},
    "effects": {"outcomes": {"log_exports": {"full": {"simple_att": 0.19, "simple_conf_low": 0.15, "simple_conf_high": 0.23,
                                                      "detectable": True, "pretest_p_value": 0.28, "naive": 8.0, "twfe": 0.59}}}},
}


def test_every_quoted_number_is_a_recorded_number():
    s = summarise(HEAD, programme="tinl", label="TINL")
    for section, numbers in s.quoted.items():
        for key, value in numbers.items():
            assert lookup(HEAD, section, key) == value
    assert s.quoted["effects"]["outcomes.log_exports.full.simple_att"] == 0.19
    assert any("+0.190" in x and "+0.150 to +0.230" in x and "an effect" in x for x in s.effect)
    assert any("94% of users" in x and "40% of the comparison" in x for x in s.reach)
    # a suppressed comparison share is not quoted, the users' share is said without it
    assert any(x.startswith("60% of users had already used a public instrument before.") for x in s.reach)
    assert "share_instr_before_comparison" not in s.quoted["reach"]


def test_no_effect_and_suppressed_and_missing():
    head = {"reach": {"n_firms": None}, "effects": {"outcomes": {"log_exports": {
        "full": {"simple_att": 0.01, "simple_conf_low": -0.05, "simple_conf_high": 0.07, "detectable": False},
        "matched": {"simple_att": None}}}}}
    s = summarise(head, programme="nlib")
    assert "suppressed" in s.reach[0]
    assert any("no detectable effect" in x for x in s.effect)
    assert any("matched sample is suppressed" in x for x in s.effect)
    s2 = summarise({}, programme="nlib")
    assert "did not record" in s2.reach[0] and "did not record" in s2.effect[0]


def test_lookup():
    assert lookup(HEAD, "effects", "outcomes.log_exports.full.twfe") == 0.59
    assert lookup(HEAD, "effects", "outcomes.n_dest.full.twfe") is None
    assert lookup(HEAD, "matching", "x") is None


# --------------------------------------------------------------------------- every programme side by side
import math

import pytest

from reach.summary import EFFECT_COLUMNS, REACH_COLUMNS, compare_programmes, pct_change


def _eff(att, lo, hi, n, det):
    return {"simple_att": att, "simple_conf_low": lo, "simple_conf_high": hi, "n_treated": n, "detectable": det,
            "simple_se": (hi - lo) / 3.92 if att is not None else None, "pretest_p_value": 0.4}


# The example: matched 0.18 (0.12-0.24) "an effect", full 0.14 (-0.01-0.28) "no detectable effect".
HEADS = {
    "reach_tinl": {"n_firms": 360.0, "share_exporter_before_users": 0.96, "share_exporter_before_comparison": 0.41,
                   "share_in_target_group": 0.41, "share_own_region": 0.53},
    "reach_nlib": {"n_firms": 320.0, "share_exporter_before_users": 0.76, "share_exporter_before_comparison": 0.41,
                   "share_in_target_group": 0.32},
    "effects_tinl": {"outcomes": {"log_exports": {"matched": _eff(0.18, 0.12, 0.24, 270.0, True),
                                                  "full": _eff(0.14, -0.01, 0.28, 360.0, False)}}},
    "effects_nlib": {"outcomes": {"log_exports": {"matched": _eff(0.01, -0.05, 0.07, 300.0, False),
                                                  "full": _eff(None, None, None, None, None)}}},
}
NAMES = {"tinl": "Trade and Innovate NL", "nlib": "NLinBusiness"}


def test_comparison_leads_with_the_primary_and_explains_the_other_sample():
    c = compare_programmes(HEADS, ["nlib", "tinl"], names=NAMES, primary={"sample": "matched", "outcome": "log_exports"})
    assert c.lead[0].startswith("NLinBusiness: change in exports after first use +1%") and "no detectable effect" in c.lead[0]
    tinl = c.lead[1]
    # exp(0.18)-1 = 19.7%, exp(0.12)-1 = 12.7%, exp(0.24)-1 = 27.1% (printed rounded)
    assert "first use +20%" in tinl and "+13% to +27%" in tinl and "270 users" in tinl and "an effect" in tinl
    assert c.derived["tinl.pct_change"]["value"] == pytest.approx(100 * math.expm1(0.18))
    (diff,) = c.differences  # NLiB's full-sample estimate is suppressed: nothing to compare
    assert diff.startswith("Trade and Innovate NL on all firms: +0.140") and "no detectable effect" in diff
    assert "360 users instead of 270" in diff
    # interval widths 0.29 / 0.12 = 2.4: the full-sample estimate is less precise
    assert "2.4 times as wide" in diff and "less precise" in diff
    assert c.derived["tinl.width_ratio"]["value"] == pytest.approx(0.29 / 0.12)
    assert "intervals overlap" in diff
    for section, numbers in c.quoted.items():
        for key, value in numbers.items():
            assert lookup(HEADS, section, key) == value


def test_comparison_tables_have_fixed_columns_integers_and_no_code_names():
    c = compare_programmes(HEADS, ["nlib", "tinl"], names=NAMES)
    assert tuple(c.tidy().columns) == EFFECT_COLUMNS and tuple(c.reach_tidy().columns) == REACH_COLUMNS
    assert len(c.tidy()) == 4 and c.tidy()["primary"].sum() == 2
    t = c.effect_table()
    assert list(t.index) == list(range(len(t)))
    assert t["users"].tolist() == ["300", "suppressed", "270", "360"]
    assert "sample" in t and t["sample"].tolist()[0] == "matched sample (primary)"
    text = t.to_string() + c.reach_table().to_string()
    for code in ("log_exports", "tinl", "nlib", "nan", "NaN", "None"):
        assert code not in text
    r = c.reach_table()
    own = r[r["indicator"] == "participations in the organiser's own region"]
    assert own["NLinBusiness: users"].item() == "not measured"  # absent from the headline: not suppressed
    assert own["Trade and Innovate NL: comparison group"].item() == "not measured"
    heads = {**HEADS, "reach_nlib": {**HEADS["reach_nlib"], "share_exporter_before_users": None}}
    r2 = compare_programmes(heads, ["nlib", "tinl"], names=NAMES).reach_table()
    assert r2.loc[0, "NLinBusiness: users"] == "suppressed"  # recorded as null: suppressed
    assert r.loc[0, "Trade and Innovate NL: comparison group"] == "41%"


def test_comparison_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = compare_programmes(HEADS, ["nlib", "tinl"], names=NAMES)
    f1, f2 = c.reach_figure(), c.effect_figure()
    labels_ = [t.get_text() for t in f2.axes[0].get_yticklabels()]
    assert "Trade and Innovate NL, matched sample (270 users)" in labels_
    assert "NLinBusiness, all firms (suppressed)" in labels_
    assert f1.legends and not f1.axes[0].get_legend()  # legend outside the panels
    plt.close(f1)
    plt.close(f2)


def test_comparison_missing_and_suppressed_primary():
    heads = {"effects_tinl": {"outcomes": {"log_exports": {"matched": {"simple_att": None}}}}}
    c = compare_programmes(heads, ["tinl", "nlib"], names=NAMES)
    assert "suppressed" in c.lead[0] and "was not recorded" in c.lead[1]
    assert any("did not record" in s for s in c.reach_text)
    assert pct_change(None) is None and pct_change(float("nan")) is None


def test_per_programme_sections_in_summarise():
    s = summarise(HEADS, programme="tinl", label="TINL", outcome="log_exports")
    assert "reach_tinl" in s.quoted and "effects_tinl" in s.quoted
    assert any("exports (log)" in x for x in s.effect)
