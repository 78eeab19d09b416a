"""The summary quotes recorded numbers only, and says 'suppressed' or 'missing' rather than inventing one."""
from __future__ import annotations

from reach.summary import lookup, summarise

HEAD = {
    "reach": {"n_firms": 360, "share_exporter_before_users": 0.94, "share_exporter_before_comparison": 0.40,
              "share_instr_before_users": 0.6, "share_instr_before_comparison": None, "share_in_target_group": 0.44},
    "effects": {"outcomes": {"log_exports": {"full": {"simple_att": 0.19, "simple_conf_low": 0.15, "simple_conf_high": 0.23,
                                                      "detectable": True, "pretest_pvalue": 0.28, "naive": 8.0, "twfe": 0.59}}}},
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
