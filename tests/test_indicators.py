"""Tests of reach.indicators.

Unit tests use a small hand-built panel whose answers are known by construction
(the planted rules are spelled out in ``_panel``); the stub tests compare every
indicator with the realised shares the generator wrote to ``data_stub/truth.json``
(CONTRACTS.md section 5), an independent computation.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from reach import indicators as ind

ROOT = Path(__file__).resolve().parents[1]
YEARS = np.arange(2014, 2024)
RULES = {"min_units": 10, "dominance_k": 2, "dominance_max": 0.90, "p_ratio_min": 0.10,
         "min_dof": 10, "min_treated": 10, "min_control": 10}
COMMON = dict(comparison_group="business_economy", never_treated_only=True, reach_window=5, rules=RULES)

# ----------------------------------------------------------------------------- hand-built panel
# Users (programme "p"): i = 0..19 cohort 2019, i = 20..49 cohort 2020, all present 2014-2023;
#   i = 50, 51 cohort 2020 but entering in 2020 (no row in g-1, no trade).
#   exporter every year iff i % 5 != 0 (40 of the 50 with a row in g-1), exports 1000 + 10 i (+100 from g on)
#   imports only in g-3 iff i % 10 == 0 (5 firms: internationally active in the window, not in g-1)
#   gm_CN = 1 in g-2 iff i % 4 == 0 (13 of 52); gm_CN = 1 in g-6 iff i % 4 == 1 (outside W = 5)
#   employees 50 iff i even else 5; n_dest 3 iff exporter else 0  -> in target: i even and i % 5 != 0
#   instruments: one registration in 2016 iff i < 15; i = 10..19: one in g; i = 20..29: 3 in g-1, 2 in g;
#   i = 30..39: 2 in g.
# Comparison (j = 0..69; 0..59 SBI section C, 60..69 SBI 95xxx section S) + 20 firms in section K:
#   exporter (exports 500) iff j < 35, except in 2019 iff j < 21; gm_CN in 2014 iff j < 14;
#   one instrument registration in 2017 iff j < 7. The K firms export and trade with CN every year
#   and have instruments: including them would move every comparison share.


def _panel(n_comp: int = 70, no_trade_year: int | None = None) -> pd.DataFrame:
    rows = []
    for i in range(52):
        g = 2019 if i < 20 else 2020
        years = YEARS if i < 50 else YEARS[YEARS >= 2020]
        rows.append(pd.DataFrame({"kind": "user", "i": i, "year": years, "g": g}))
    for j in range(n_comp):
        rows.append(pd.DataFrame({"kind": "comp", "i": j, "year": YEARS, "g": 0}))
    for k in range(20):
        rows.append(pd.DataFrame({"kind": "fin", "i": k, "year": YEARS, "g": 0}))
    p = pd.concat(rows, ignore_index=True)
    user, comp, fin = (p["kind"] == k for k in ("user", "comp", "fin"))
    i, t, g = p["i"].to_numpy(), p["year"].to_numpy(), p["g"].to_numpy()
    p["be_id"] = np.select([user, comp], [1000000000 + i, 2000000000 + i], 3000000000 + i).astype(str)
    p["be_id"] = p["be_id"].astype("str")
    p["sbi_section"] = np.where(fin, "K", np.where(comp & (i >= 60), "S", "C"))
    p["sbi"] = np.where(fin, "64191", np.where(comp & (i >= 60), "95110", "10110"))
    exp_user = user & (i % 5 != 0) & (i < 50)
    exp_comp = comp & np.where(t == 2019, i < 21, i < 35)
    p["exports"] = np.where(exp_user, 1000 + 10 * i + np.where(t >= g, 100, 0), np.where(exp_comp, 500.0, np.where(fin, 9000.0, 0.0)))
    p["imports"] = np.where(user & (i % 10 == 0) & (t == g - 3) & (i < 50), 300.0, np.where(fin, 50.0, 0.0))
    if no_trade_year is not None:
        p.loc[p["year"] == no_trade_year, ["exports", "imports"]] = 0.0
    p["exporter"] = (p["exports"] > 0).astype("int64")
    p["importer"] = (p["imports"] > 0).astype("int64")
    p["intl_active"] = ((p["exports"] + p["imports"]) > 0).astype("int64")
    p["n_dest"] = np.where(p["exporter"] == 1, 3, 0).astype("int64")
    p["gm_CN"] = (((user & (i % 4 == 0) & (t == g - 2)) | (user & (i % 4 == 1) & (t == g - 6)) | (comp & (i < 14) & (t == 2014)) | fin)
                  & (p["year"] != (no_trade_year or 0))).astype("int64")
    p["gm_TR"] = 0
    p["employees"] = np.where(user, np.where(i % 2 == 0, 50.0, 5.0), 20.0)
    p["size_class"] = np.where(p["employees"] >= 10, "40", "21")
    p["region"] = "ZH"
    # instrument registrations per firm-year
    n = np.zeros(len(p))
    n += user & (i < 15) & (t == 2016)
    n += user & (i >= 10) & (i < 20) & (t == g)
    n += (user & (i >= 20) & (i < 30)) * (np.where(t == g - 1, 3, 0) + np.where(t == g, 2, 0))
    n += (user & (i >= 30) & (i < 40)) * np.where(t == g, 2, 0)
    n += comp & (i < 7) & (t == 2017)
    n += fin & (t == 2015)
    p["instr_n"] = n.astype("int64")
    p["instr_any"] = (p["instr_n"] > 0).astype("int64")
    p = p.sort_values(["be_id", "year"]).reset_index(drop=True)
    p["instr_n_before"] = p.groupby("be_id")["instr_n"].cumsum() - p["instr_n"]
    p["instr_ever_before"] = (p["instr_n_before"] > 0).astype("int64")
    p["g_p"] = p["g"].astype("int64")
    p["g_q"] = 0  # a programme without linked users
    p["year"] = p["year"].astype("int64")
    return p.drop(columns=["kind", "i", "g"])


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return _panel()


def _cell(res, **where) -> tuple[float, float]:
    """(value, n_units) of one cell of the published table."""
    pub = res.published
    m = np.ones(len(pub), bool)
    for k, v in where.items():
        m &= (pub[k].astype(str) == str(v)).to_numpy()
    assert m.sum() == 1, f"expected one cell for {where}, found {m.sum()}"
    row = pub[m].iloc[0]
    return float(row["value"]), float(row["n_units"])


# ----------------------------------------------------------------------------- 1-2


def test_international_activity_by_construction(panel):
    r = ind.international_activity(panel, "p", **COMMON)
    assert _cell(r, measure="exporter_before", group="users", cohort="all") == (40 / 50, 50)
    assert _cell(r, measure="intl_before", group="users", cohort="all") == (40 / 50, 50)
    # all users are the denominator of the window measure; the two entrants count as not active
    # 45 of 52 active: the complement (7 firms) is below min_units, so the share is suppressed (issue 13)
    assert np.isnan(_cell(r, measure="intl_window", group="users", cohort="all")[0])
    # comparison: 0.5 in 2018 (cohort 2019, 20 users), 0.3 in 2019 (cohort 2020, 30 users with a row)
    assert _cell(r, measure="exporter_before", group="comparison", cohort="2019") == (0.5, 70)
    assert _cell(r, measure="exporter_before", group="comparison", cohort="2020") == pytest.approx((0.3, 70))
    assert _cell(r, measure="exporter_before", group="comparison", cohort="all")[0] == pytest.approx((20 * 0.5 + 30 * 0.3) / 50)
    # window measure: weights are all users per cohort (20 and 32); comparison exports every window year j < 35
    assert _cell(r, measure="intl_window", group="comparison", cohort="all")[0] == pytest.approx(0.5)
    assert r.headline["intl_before"]["users"] == pytest.approx(0.8)
    assert r.headline() == dict(r.headline)  # called as on every other result
    assert "80%" in r.narrative
    assert list(r.tidy().columns) == ["measure", "group", "cohort", "value", "n_units"]


def test_not_yet_treated_comparison_includes_later_users(panel):
    r = ind.international_activity(panel, "p", **{**COMMON, "never_treated_only": False})
    # cohort 2019: 70 never users + the 30 cohort-2020 users with a row in 2018 (the entrants have none)
    assert _cell(r, measure="exporter_before", group="comparison", cohort="2019")[1] == 100
    assert _cell(r, measure="exporter_before", group="comparison", cohort="2020")[1] == 70


def test_target_group_comparison(panel):
    tg = {"min_employees": 10, "max_employees": 250, "min_destinations": 1, "max_destinations": 5}
    r = ind.international_activity(panel, "p", **{**COMMON, "comparison_group": "target_group"}, target_group=tg)
    # comparison firms in the target group in g-1 are exactly the exporters (20 employees each), K firms too
    # a share of 1: the complement is 0 firms, so it is suppressed (issue 13: numerator and complement >= min_units)
    assert np.isnan(_cell(r, measure="exporter_before", group="comparison", cohort="2019")[0])


def test_growth_markets_window(panel):
    r = ind.growth_market_presence(panel, "p", ["CN", "TR"], **COMMON)
    assert _cell(r, measure="CN", group="users", cohort="all") == pytest.approx((13 / 52, 52))
    assert np.isnan(_cell(r, measure="TR", group="users", cohort="all")[0])  # numerator 0 < min_units: suppressed
    # comparison CN only in 2014: inside cohort 2019's window 2014-2018, outside cohort 2020's 2015-2019
    assert _cell(r, measure="CN", group="comparison", cohort="2019")[0] == pytest.approx(0.2)
    assert np.isnan(_cell(r, measure="CN", group="comparison", cohort="2020")[0])  # numerator 0: suppressed
    assert np.isnan(_cell(r, measure="CN", group="comparison", cohort="all")[0])  # 4 of 52: numerator < min_units
    r3 = ind.growth_market_presence(panel, "p", ["CN"], **{**COMMON, "reach_window": 3})
    assert np.isnan(_cell(r3, measure="CN", group="comparison", cohort="all")[0])  # numerator 0: suppressed


# ----------------------------------------------------------------------------- 3-5


def test_target_group_fit_and_profile(panel):
    r = ind.target_group_fit(panel, "p", rules=RULES)
    # with a row in g-1: i = 0..49; inside: even and i % 5 != 0 -> 25 - 5 = 20
    assert _cell(r, table="fit", cohort="all") == (20 / 50, 50)
    # the 2 users without a row in g-1 are a suppressed cell of their own (see the test below)
    assert np.isnan(r.headline["n_no_row_before"])
    assert r.headline["n_outside"] == 30
    # outside: 25 odd (5 employees; 20 of them export) + 5 even non-exporters
    assert _cell(r, table="profile", characteristic="exporter", category="exporter")[0] == 20
    assert np.isnan(_cell(r, table="profile", characteristic="reason (first applying)", category="fewer destinations than target")[0])  # 5 < 10: suppressed
    # ... and the only other reason (25) too: the reasons add up to the 30 firms outside, published in the same
    # table, so 30 - 25 would give the suppressed 5 back
    assert np.isnan(_cell(r, table="profile", characteristic="reason (first applying)", category="fewer employees than target")[0])
    cells = r.checked["profile"].cells.set_index(["characteristic", "category"])
    assert cells.loc[("reason (first applying)", "fewer employees than target"), "suppression"] == "secondary"


def test_users_without_a_register_record_are_a_checked_cell(panel):
    """Users without a row in g-1 (i = 50, 51 in _panel) were printed and recorded as they were: '2 users had no ...'."""
    r = ind.target_group_fit(panel, "p", rules=RULES)
    cells = r.checked["coverage"].cells.astype({"cohort": str}).set_index(["category", "cohort"])
    # both are in cohort 2020 (30 users with a row); cohort 2019 has none without a row: no "no" cell
    assert ("no", "2019") not in cells.index and cells.loc[("yes", "2019"), "n_units"] == 20
    for cohort, n_yes in (("2020", 30), ("all", 50)):
        assert cells.loc[("no", cohort), "n_units"] == 2 and cells.loc[("no", cohort), "suppression"] == "primary"
        # yes + no is the cohort's users, a count the other indicators publish: "yes" would give "no" back
        assert cells.loc[("yes", cohort), "n_units"] == n_yes
        assert cells.loc[("yes", cohort), "suppression"] == "secondary"
    assert np.isnan(r.headline["n_no_row_before"])
    assert not re.search(r"\b2 users", r.text)
    assert "A suppressed number of users had no register record in that year" in r.text
    # with min_units 2 the cell may be published, and is said as it is
    loose = ind.target_group_fit(panel, "p", rules={**RULES, "min_units": 2})
    assert loose.headline["n_no_row_before"] == 2 and "2 users had no register record in that year" in loose.text
    everyone = ind.target_group_fit(panel[~panel["be_id"].isin(["1000000050", "1000000051"])], "p", rules=RULES)
    assert everyone.headline["n_no_row_before"] == 0 and "Every user had a register record in that year." in everyone.text


def test_run_audit_protects_users_without_a_register_record(results, tmp_path, monkeypatch):
    """All users (52, published by the other indicators) minus those with a row (50, the fit's n) is the
    suppressed 2: the run's differencing audit must see it and suppress more."""
    import matplotlib

    from reach import publish
    from reach.disclosure import OutputLog

    matplotlib.use("Agg")
    monkeypatch.setenv(publish.ENV_REGISTRY, str(tmp_path / "work" / "registry"))
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "nb")
    log = OutputLog(tmp_path / "output", notebook="nb", reset=True)
    for r in results:
        if r.programme == "p":
            r.stage_output("P").publish(log)
    audit = publish.audit_run(tmp_path / "output", tmp_path / "work")
    t = audit.targets
    mine = t[t["object"].eq("p_target_group_fit_coverage") & t["cell"].str.contains("category=no")]
    # cohort 2020 and all; the first found recoverable is protected by suppressions that protect the other too
    assert len(mine) == 2 and not mine["safe_before"].all() and mine["safe_after"].all(), t
    assert audit.n_unprotected == 0, t


# "suppressed" may only stand as a word of a phrase ("a suppressed share of the users", "was suppressed"),
# never where a number would ("suppressed of suppressed users", "EUR suppressed", "from suppressed to")
_NUMBER_SLOT = re.compile(r"(?<!a )(?<!was )(?<!were )(?<!are )\bsuppressed\b(?! (share|number|amount|by the))")


@pytest.mark.parametrize("min_units", [10, 60, 10_000])
def test_narratives_read_as_sentences_when_numbers_are_suppressed(panel, min_units):
    """Seen in a stub render: 'In the year before first use, suppressed of suppressed users traded internationally'."""
    rules = {**RULES, "min_units": min_units}
    common = {**COMMON, "rules": rules}
    p = panel.copy()
    p.loc[p["be_id"].isin([str(1000000000 + k) for k in range(4)]), "region"] = "NH"
    rs = [ind.international_activity(panel, "p", **common), ind.growth_market_presence(panel, "p", ["CN", "TR"], **common),
          ind.target_group_fit(panel, "p", rules=rules), ind.prior_instrument_use(panel, "p", **common),
          ind.instrument_use_after(panel, "p", reach_window=2, rules=rules), ind.regional_reach(p, "t", _link(), rules=rules),
          ind.export_values(panel, "p", **common), ind.participant_counts(_link(), "t", rules=rules)]
    if min_units == 10_000:
        assert all(np.isnan(r.published["value"]).all() for r in rs if "value" in r.published)
    for r in rs:
        bad = [r.narrative[max(0, m.start() - 40):m.end() + 20] for m in _NUMBER_SLOT.finditer(r.narrative)]
        assert not bad, (r.name, bad)
        assert not re.search(r"\b(nan|NaN|None)\b", r.narrative), r.narrative


def test_prior_instrument_use(panel):
    r = ind.prior_instrument_use(panel, "p", **COMMON)
    # before g: i < 15 (2016) and i = 20..29 (3 in g-1) -> 25 of 52
    assert _cell(r, group="users", cohort="all") == pytest.approx((25 / 52, 52), abs=5e-4)  # published to 0.1 pp
    assert np.isnan(_cell(r, group="comparison", cohort="all")[0])  # 0.1 of 70 firms: numerator 7 < min_units


def test_instrument_use_after_categories(panel):
    r = ind.instrument_use_after(panel, "p", reach_window=2, rules=RULES)
    allrow = {c: _cell(r, prior_use="all", category=c)[0] for c in ind.INSTRUMENT_CATEGORIES}
    assert allrow == {"none": 22, "one": 10, "several, not more than before": 10, "more than before": 10}
    assert _cell(r, prior_use="all", category="all")[0] == 52
    assert _cell(r, prior_use="used instruments before", category="none")[0] == 10
    assert _cell(r, prior_use="used instruments before", category="several, not more than before")[0] == 10
    assert np.isnan(_cell(r, prior_use="used instruments before", category="one")[0])  # 5 firms: suppressed
    assert r.headline["all"]["none"] == pytest.approx(22 / 52)


def test_instrument_after_windows_have_equal_length(panel):
    # cohort 2023 would have an after window of one year: the before window shrinks to one year too
    p = panel.copy()
    late = p["be_id"].isin(p.loc[p["g_p"] == 2019, "be_id"].unique()[:12])
    p.loc[late, "g_p"] = 2023
    p.loc[late & (p["year"] == 2021), "instr_n"] = 5  # two years before: outside the shortened window
    p.loc[late & (p["year"] == 2023), "instr_n"] = 2
    r = ind.instrument_use_after(p, "p", reach_window=5, last_year=2023, rules=RULES)
    tab = r.table.table
    late_more = tab[(tab["prior_use"] == "all") & (tab["category"] == "more than before")]["value"].iloc[0]
    # the 12 late firms: after = 2 > before (2022 only, 0) -> "more than before" (plus the 10 of i = 30..39)
    assert late_more == 22


# ----------------------------------------------------------------------------- 6, 8 (link records)


def _link(regions: dict[str, str] | None = None) -> SimpleNamespace:
    """Linked records: firms u0..u11 (be_id 1000000000+k) in activities a1 (org ZH) and a2 (org NH), 2019.

    Each firm sends two persons to a1 (duplicates of the same pair); firms 0..5 also attend a2.
    """
    recs = []
    for k in range(12):
        for person in range(2):
            recs.append(dict(programme="t", bucket="linked", be_id=str(1000000000 + k), year=2019,
                             activity_id="a1", activity_type="beurs", organiser_region="ZH"))
        if k < 6:
            recs.append(dict(programme="t", bucket="linked", be_id=str(1000000000 + k), year=2019,
                             activity_id="a2", activity_type="webinar", organiser_region="NH"))
    recs.append(dict(programme="t", bucket="invalid_kvk", be_id=None, year=2019, activity_id="a1",
                     activity_type="beurs", organiser_region="ZH"))
    recs += [dict(programme="n", bucket="linked", be_id=str(1000000000 + k), year=2019, activity_id=None,
                  activity_type=None, organiser_region=None) for k in range(15)]
    return SimpleNamespace(records=pd.DataFrame(recs))


def test_regional_reach(panel):
    p = panel.copy()
    # firms 0..3 are in NH, the rest in ZH (as registered in 2019)
    p.loc[p["be_id"].isin([str(1000000000 + k) for k in range(4)]), "region"] = "NH"
    r = ind.regional_reach(p, "t", _link(), rules=RULES)
    # pairs: a1 x 12 firms (8 own region ZH), a2 x 6 firms (4 own region NH) -> 12 of 18
    # 12 of 18 pairs and 8 of 12: complements 6 and 4 < min_units, suppressed (issue 13)
    assert np.isnan(_cell(r, organiser_region="all")[0])
    assert np.isnan(r.headline["n_participations"])  # read from the suppressed cell
    assert np.isnan(_cell(r, organiser_region="ZH")[0])
    assert np.isnan(_cell(r, organiser_region="NH")[0])  # 6 firms: suppressed


def test_all_users_in_one_region(panel):
    r = ind.regional_reach(panel, "t", _link(), rules=RULES)  # every firm in ZH
    assert np.isnan(_cell(r, organiser_region="all")[0])  # 12 of 18: complement 6 < min_units
    # every region's cell is suppressed too: the text said "Only one organiser region has a publishable cell"
    assert r.published.query("organiser_region != 'all'")["value"].isna().all()
    assert "No organiser region has a publishable cell." in r.narrative


def test_regional_reach_without_organiser_data(panel):
    r = ind.regional_reach(panel, "n", _link(), rules=RULES)
    assert r.empty and "no organiser-region data" in r.message
    assert list(r.tidy().columns) == list(ind.REGION_COLUMNS)


def test_participant_counts(panel):
    r = ind.participant_counts(_link(), "t", rules=RULES)
    assert _cell(r, dimension="all", measure="firms")[0] == 12
    assert _cell(r, dimension="all", measure="participations")[0] == 18  # persons do not count twice
    # every one of these firms took part once: all contributions equal, so the sum reveals each firm's
    # value (ACRO's all-values-are-same rule, issue 13): suppressed
    assert np.isnan(_cell(r, dimension="activity_type", category="beurs", measure="participations")[0])
    assert r.headline["participations_per_firm"] == pytest.approx(1.5)
    rn = ind.participant_counts(_link(), "n", rules=RULES)
    assert _cell(rn, dimension="activity_type", category="portal", measure="firms")[0] == 15


# ----------------------------------------------------------------------------- 7


def test_export_values(panel):
    r = ind.export_values(panel, "p", **COMMON)
    i = np.arange(50)
    x_before = np.where(i % 5 != 0, 1000 + 10 * i, 0)
    assert _cell(r, stat="mean", group="users", cohort="all", event_time=-1)[0] == pytest.approx(x_before.mean())
    x_after = np.where(i % 5 != 0, 1100 + 10 * i, 0)
    # event time +1: the two entrants are present (exports 0)
    assert _cell(r, stat="mean", group="users", cohort="all", event_time=1)[0] == pytest.approx(x_after.sum() / 52)
    # comparison: 0.5 x 500 in 2018 (cohort 2019), 0.3 x 500 in 2019 (cohort 2020), weights 20 and 30
    assert _cell(r, stat="mean", group="comparison", cohort="all", event_time=-1)[0] == pytest.approx((20 * 250 + 30 * 150) / 50)
    assert "not an effect" in r.narrative


# ----------------------------------------------------------------------------- edge cases, bad input


def test_programme_without_users(panel):
    link = _link()
    for r in (
        ind.international_activity(panel, "q", **COMMON),
        ind.growth_market_presence(panel, "q", ["CN"], **COMMON),
        ind.target_group_fit(panel, "q", rules=RULES),
        ind.prior_instrument_use(panel, "q", **COMMON),
        ind.instrument_use_after(panel, "q", rules=RULES),
        ind.export_values(panel, "q", **COMMON),
        ind.participant_counts(link, "q", rules=RULES),
    ):
        assert r.empty and "no linked users" in r.message, r.name
        assert r.tidy().empty and r.headline == {}
        assert r.name in r.summary()


def test_comparison_group_below_threshold():
    p = _panel(n_comp=6)  # 6 comparison firms < min_units = 10
    r = ind.international_activity(p, "p", **COMMON)
    assert np.isnan(r.headline["intl_before"]["comparison"])
    assert r.headline["intl_before"]["users"] == pytest.approx(0.8)
    assert "suppressed" in r.narrative
    e = ind.export_values(p, "p", **COMMON)
    assert np.isnan(e.headline["comparison_mean_before"]) and "suppressed" in e.narrative


def test_year_without_trade():
    p = _panel(no_trade_year=2018)  # cohort 2019's g-1
    r = ind.international_activity(p, "p", **COMMON)
    assert np.isnan(_cell(r, measure="exporter_before", group="users", cohort="2019")[0])  # numerator 0: suppressed
    assert np.isnan(_cell(r, measure="exporter_before", group="users", cohort="2020")[0])  # complement 6 < min_units
    assert np.isnan(_cell(r, measure="exporter_before", group="comparison", cohort="2019")[0])  # numerator 0
    # the window still sees the other years' trade
    # (16 exporters in the other years + i = 0, 10 importing in 2016)
    # 18 of 20: the complement (2 firms) is below min_units, so the share is suppressed (issue 13)
    assert np.isnan(_cell(r, measure="intl_window", group="users", cohort="2019")[0])


def test_bad_input_messages(panel):
    with pytest.raises(ValueError, match=r"comparison_group must be one of \['business_economy', 'target_group'\]; got 'everyone'"):
        ind.international_activity(panel, "p", comparison_group="everyone")
    with pytest.raises(ValueError, match="programme 'zz' unknown"):
        ind.prior_instrument_use(panel, "zz")
    with pytest.raises(ValueError, match=r"panel lacks column\(s\) \['gm_RU'\]"):
        ind.growth_market_presence(panel, "p", ["RU"])
    with pytest.raises(ValueError, match="reach_window must be a positive integer"):
        ind.export_values(panel, "p", reach_window=0)
    with pytest.raises(ValueError, match="target_group needs exactly the keys"):
        ind.target_group_fit(panel, "p", target_group={"min_employees": 10})
    bad = panel.copy()
    bad.loc[bad.index[0], "g_p"] = 2015
    with pytest.raises(ValueError, match="not constant within be_id"):
        ind.prior_instrument_use(bad, "p")


def test_result_is_immutable(panel):
    r = ind.prior_instrument_use(panel, "p", **COMMON)
    with pytest.raises(AttributeError):
        r.name = "x"
    with pytest.raises(TypeError):
        r.headline["users"] = 1.0
    assert "prior_instrument_use" in r._repr_markdown_()


# ----------------------------------------------------------------------------- stub vs truth.json


@pytest.fixture(scope="module")
def stub(stub_panel):
    from reach.params import load_params

    panel, link, truth = stub_panel
    return truth, panel, link, load_params(ROOT / "params" / "stub.yaml")


def _raw(res, key=None, **where) -> float:
    """Unsuppressed cell (the truth is compared before disclosure control)."""
    tab = (res.checked[key] if key else res.table).table
    m = np.ones(len(tab), bool)
    for k, v in where.items():
        m &= (tab[k].astype(str) == str(v)).to_numpy()
    assert m.sum() == 1, where
    return float(tab.loc[m, "value"].iloc[0])


@pytest.mark.parametrize("programme", ["nlib", "tinl"])
def test_stub_matches_truth(stub, programme):
    truth, panel, link, params = stub
    t = truth["reach"][programme]
    kw = dict(comparison_group=params["comparison_group"], never_treated_only=params["never_treated_only"],
              reach_window=5, target_group=params["target_group"], rules=params["disclosure"])
    tol = 1e-6  # truth shares are exact ratios of firm counts; allow float rounding only
    r1 = ind.international_activity(panel, programme, **kw)
    assert _raw(r1, measure="exporter_before", group="users", cohort="all") == pytest.approx(t["share_exporter_before"], abs=tol)
    assert _raw(r1, measure="intl_before", group="users", cohort="all") == pytest.approx(t["share_intl_before"], abs=tol)
    assert _raw(r1, measure="intl_window", group="users", cohort="all") == pytest.approx(t["share_intl_5y"], abs=tol)
    r2 = ind.growth_market_presence(panel, programme, params["growth_markets"], **kw)
    for m, share in t["share_gm_5y"].items():
        assert _raw(r2, measure=m, group="users", cohort="all") == pytest.approx(share, abs=tol), m
    r3 = ind.target_group_fit(panel, programme, target_group=params["target_group"], rules=params["disclosure"])
    assert _raw(r3, "fit", cohort="all") == pytest.approx(t["share_target_group"], abs=tol)
    r4 = ind.prior_instrument_use(panel, programme, **kw)
    assert _raw(r4, group="users", cohort="all") == pytest.approx(t["share_instr_before"], abs=tol)
    r6 = ind.regional_reach(panel, programme, link, rules=params["disclosure"])
    if "share_own_region" in t and t["share_own_region"] is not None:
        assert _raw(r6, organiser_region="all") == pytest.approx(t["share_own_region"], abs=tol)
    else:
        assert r6.empty
    r8 = ind.participant_counts(link, programme, rules=params["disclosure"])
    assert _raw(r8, "firms", dimension="all") == truth["n_users"][programme]


# ----------------------------------------------------------------------------- notebook helpers: figures, text, headline


@pytest.fixture(scope="module")
def results(panel):
    """Every indicator on the hand-built panel (programme p; link programme t for 6 and 8)."""
    p = panel.copy()
    p.loc[p["be_id"].isin([str(1000000000 + k) for k in range(4)]), "region"] = "NH"
    return [
        ind.international_activity(panel, "p", **COMMON),
        ind.growth_market_presence(panel, "p", ["CN", "TR"], **COMMON),
        ind.target_group_fit(panel, "p", rules=RULES),
        ind.prior_instrument_use(panel, "p", **COMMON),
        ind.instrument_use_after(panel, "p", reach_window=2, rules=RULES),
        ind.regional_reach(p, "t", _link(), rules=RULES),
        ind.export_values(panel, "p", **COMMON),
        ind.participant_counts(_link(), "t", rules=RULES),
    ]


def _texts(fig) -> list[str]:
    out = []
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
        leg = ax.get_legend()
        out += [t.get_text() for t in leg.get_texts()] if leg else []
    return out


def test_every_figure_is_labelled_and_drawn_from_published(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    # on the small hand-built panel the share rules of issue 13 may suppress every cell of a result
    assert sum(r.plottable for r in results) >= len(results) - 2
    for r in results:
        if not r.plottable:
            continue
        fig = r.figure("Programme P")
        try:
            assert isinstance(fig, Figure), r.name
            titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
            assert any("Programme P" in t for t in titles), r.name
            for ax in fig.axes:
                assert ax.get_ylabel() and ax.get_xlabel(), (r.name, ax.get_xlabel(), ax.get_ylabel())
            assert r.figure_name == f"{r.programme}_{ind.FIGURE_NAMES[r.name]}"
        finally:
            plt.close(fig)


def test_figure_legends_carry_published_group_sizes(results):
    import matplotlib.pyplot as plt

    r1 = results[0]
    fig = r1.figure("P")
    try:
        texts = _texts(fig)
    finally:
        plt.close(fig)
    # 52 users in the window measure's denominator, 70 comparison firms (hand-built panel)
    # legends carry the published group sizes (a group whose cells are all suppressed has no bar)
    assert any("(n=" in t for t in texts), texts
    # every share bar is labelled with its published value
    assert "80%" in texts


def test_suppressed_cell_is_marked_not_drawn(results):
    import matplotlib.pyplot as plt

    r5 = results[4]  # 'used instruments before' x 'one' holds 5 firms: suppressed
    assert np.isnan(_cell(r5, prior_use="used instruments before", category="one")[0])
    fig = r5.figure("P")
    try:
        texts = _texts(fig)
        heights = [b.get_height() for b in fig.axes[0].patches]
    finally:
        plt.close(fig)
    assert "suppressed" in texts
    assert "used instruments before (n=25)" in texts  # 25 users registered before (see _panel)
    assert max(heights) <= 1.0


def test_nothing_to_plot_when_everything_is_suppressed(panel):
    strict = {**RULES, "min_units": 10_000}
    r = ind.prior_instrument_use(panel, "p", **{**COMMON, "rules": strict})
    assert not r.plottable and "every cell was suppressed" in r.text
    with pytest.raises(ValueError, match="no figure"):
        r.figure()
    empty = ind.regional_reach(panel, "n", _link(), rules=RULES)
    assert not empty.plottable and empty.text.startswith("**Regional reach:**") and "no organiser-region data" in empty.text


def test_export_names(results):
    names = {r.name: list(r.exports) for r in results}
    assert names["international_activity"] == ["p_international_activity"]
    assert names["target_group_fit"] == ["p_target_group_fit_fit", "p_target_group_fit_coverage",
                                         "p_target_group_fit_profile"]
    assert names["export_values"] == ["p_export_values_mean", "p_export_values_median"]
    assert names["participant_counts"] == ["t_participant_counts_firms", "t_participant_counts_participations"]
    assert all(isinstance(c, ind.Checked) for r in results for c in r.checks)


def test_reach_headline_reads_published_cells(results):
    h = ind.reach_headline(results, programme="p")
    assert h["programme"] == "p" and h["comparison_group"] == "business_economy" and h["reach_window"] == 5
    # the numbers planted in _panel (see the by-construction tests above)
    assert h["share_exporter_before_users"] == pytest.approx(40 / 50, abs=5e-4)
    assert h["share_exporter_before_comparison"] == pytest.approx((20 * 0.5 + 30 * 0.3) / 50, abs=5e-4)
    assert h["share_any_growth_market_users"] == pytest.approx(13 / 52, abs=5e-4)
    assert h["share_in_target_group"] == pytest.approx(20 / 50, abs=5e-4)
    assert h["share_instr_before_users"] == pytest.approx(25 / 52, abs=5e-4)
    assert h["share_after_none"] == pytest.approx(22 / 52, abs=5e-4)
    assert h["share_own_region"] is None or np.isnan(h["share_own_region"])  # 12 of 18: complement 6, suppressed
    assert h["n_firms"] == 12
    import json

    json.dumps(h)  # plain JSON values only


def test_reach_headline_suppressed_is_none_and_empty_is_missing(panel):
    small = _panel(n_comp=6)  # 6 comparison firms < min_units: every comparison cell suppressed
    rs = [ind.international_activity(small, "p", **COMMON), ind.regional_reach(small, "n", _link(), rules=RULES)]
    h = ind.reach_headline(rs)
    assert h["share_exporter_before_comparison"] is None
    assert h["share_exporter_before_users"] == pytest.approx(0.8)
    assert "share_own_region" not in h  # no organiser data: the indicator is empty, nothing recorded
    with pytest.raises(TypeError, match="IndicatorResult"):
        ind.reach_headline([{"share": 1.0}])


def test_comparison_description():
    assert ind.comparison_description("business_economy", True) == (
        "the business economy (SBI sections A-N without K, plus division 95), firms that never used the programme")
    assert ind.comparison_description("target_group", False, short=True) == "the programme's target group, not yet users"
    with pytest.raises(ValueError, match=r"comparison_group must be one of .*got 'all'"):
        ind.comparison_description("all", True)


def test_duplicate_firm_years_are_refused(panel):
    dup = pd.concat([panel, panel.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"1 \(be_id, year\) pairs with several rows; examples \(be_id, year\): \[\('1000000000', 2014\)\]"):
        ind.international_activity(dup, "p", **COMMON)


def test_grid_engine_matches_direct_merge():
    """Comparison cells on a random panel (gaps, entry/exit, not-yet users) against plain pandas merges."""
    rng = np.random.default_rng(7)
    n, years = 400, np.arange(2014, 2024)
    p = pd.DataFrame({"f": np.repeat(np.arange(n), len(years)), "year": np.tile(years, n)})
    p = p[rng.random(len(p)) > 0.15].reset_index(drop=True)
    p["be_id"] = (500000000 + p["f"]).astype(str)
    p["sbi_section"] = np.where(p["f"] % 9 == 0, "K", "C")
    p["sbi"] = "10110"
    p["intl_active"] = (rng.random(len(p)) < 0.4).astype("int64")
    p["exporter"] = p["intl_active"] * (rng.random(len(p)) < 0.8)
    g = np.where(p["f"] < 60, 2018 + p["f"] % 4, 0)
    p["g_p"] = g.astype("int64")
    r = ind.international_activity(p, "p", **{**COMMON, "never_treated_only": False})
    for cohort in (2018, 2021):
        ref = p[(p["year"] == cohort - 1) & (p["sbi_section"] != "K") & ((p["g_p"] == 0) | (p["g_p"] > cohort))]
        # intl_window: any trade in cohort-5 .. cohort-1, years without a row count as none
        win = p[(p["year"] >= cohort - 5) & (p["year"] <= cohort - 1)].groupby("be_id")["intl_active"].max()
        expected = win.reindex(ref["be_id"]).fillna(0).gt(0).mean()
        raw = r.checked["international_activity"].table
        got = raw[(raw["measure"] == "intl_window") & (raw["group"] == "comparison") & (raw["cohort"].astype(str) == str(cohort))]
        assert float(got["value"].iloc[0]) == pytest.approx(expected)
        assert int(got["n_units"].iloc[0]) == len(ref)
        exp_before = ref["exporter"].gt(0).mean()
        got_b = raw[(raw["measure"] == "exporter_before") & (raw["group"] == "comparison") & (raw["cohort"].astype(str) == str(cohort))]
        assert float(got_b["value"].iloc[0]) == pytest.approx(exp_before)


def _part_frames(rows, grid) -> list[pd.DataFrame]:
    """Each part of ``rows`` as the unit-level frame ``check_table`` takes: the kept reference firms by
    ``be_id`` text, then each user again under cohort ``all`` (independent of the coded path)."""
    labels = sorted(lab for lab, *_ in rows.parts)
    cohorts = rows.cohorts()
    out = []
    for label, ref, value, keep in rows.parts:
        ref = ref if keep is None else ref.take(keep)
        u = ref.user
        ids = grid.ids.to_numpy()
        out.append(pd.DataFrame({
            "be_id": np.concatenate([ids[ref.firm], ids[ref.firm[u]]]),
            rows.key: pd.Categorical([label] * (len(ref) + int(u.sum())), categories=labels),
            "group": pd.Categorical(np.where(np.concatenate([u, u[u]]), ind.USERS, ind.COMPARISON),
                                    categories=[ind.COMPARISON, ind.USERS]),
            "cohort": pd.Categorical(np.concatenate([ref.cohort.astype(str), np.full(int(u.sum()), ind.ALL)]),
                                     categories=[str(c) for c in cohorts] + [ind.ALL]),
            "value": np.concatenate([value, value[u]]),
        }))
    return out


def _members_by_cell(chk) -> pd.DataFrame:
    m = chk.members
    return pd.DataFrame({k: np.asarray(v) for k, v in m.items()}).sort_values(["cell", "unit"], ignore_index=True)


def _same_check(got, want) -> None:
    pd.testing.assert_frame_equal(got.table.astype({c: str for c in got.by}), want.table.astype({c: str for c in want.by}))
    pd.testing.assert_frame_equal(got.cells.astype({c: str for c in got.by}), want.cells.astype({c: str for c in want.by}))
    assert got.n_rows_excluded == want.n_rows_excluded and got.units == want.units
    # the order of a cell's units carries nothing (the audit reads each cell as a set)
    pd.testing.assert_frame_equal(_members_by_cell(got), _members_by_cell(want))


def test_part_by_part_check_equals_one_check_table(panel):
    """The indicators check one measure at a time on rows coded once and join the verdicts: the same
    table, cells, verdicts and unit memberships as one check_table call on all the rows."""
    from reach.disclosure import check_table

    rules = {**RULES, "min_units": 25}
    r = ind.growth_market_presence(panel, "p", ["CN", "TR"], **{**COMMON, "rules": rules})
    grid = ind._Grid.of(panel)
    ref = ind._reference(grid, "p", "business_economy", True, None)
    rows = ind._Rows("measure")
    any_market = np.zeros(len(ref), "int8")
    for m in ("CN", "TR"):
        traded = grid.positive_in(grid.values(f"gm_{m}"), ref.firm, ref.cohort, -5, -1).astype("int8")
        any_market |= traded
        rows.add(m, ref, traded)
    rows.add("any", ref, any_market)
    whole = pd.concat(_part_frames(rows, grid), ignore_index=True)
    one = check_table(whole, by=["measure", "group", "cohort"], value="value", unit="be_id", stat="share",
                      rules=rules, name="reach_growth_markets_p")
    _same_check(r.table, one)
    assert r.table.n_primary == one.n_primary and one.n_primary > 0


@pytest.mark.parametrize("gaps", [False, True])
def test_coded_checks_with_kept_rows_equal_check_table(panel, gaps):
    """Event times keep different firms (those with a row that year) and the median needs each cell's
    central rows: each part's coded check equals check_table on that part's own frame."""
    from reach.disclosure import check_table, join_checked

    p = panel
    if gaps:  # firms missing in some years, and a missing export value in a present row (left out, counted)
        rng = np.random.default_rng(3)
        p = panel[rng.random(len(panel)) > 0.2].reset_index(drop=True)
        p.loc[p.index[::37], "exports"] = np.nan
    grid = ind._Grid.of(p)
    ref = ind._reference(grid, "p", "business_economy", True, None)
    rows = ind._Rows("event_time", key_last=True)
    exports = grid.values("exports")
    for e in range(-3, 4):
        x, present = grid.at(exports, ref.firm, ref.cohort + e)
        rows.add(e, ref, x, present)
    rules = {**RULES, "min_units": 12}
    got = rows.check(["mean", "median"], ind._rules(rules), {"mean": "m", "median": "d"})
    frames = _part_frames(rows, grid)
    for stat, name in (("mean", "m"), ("median", "d")):
        want = [check_table(f, by=rows.by, value="value", unit="be_id", stat=stat, rules=rules, name=name) for f in frames]
        _same_check(got[stat][0], join_checked(want))
    assert (got["mean"][0].n_rows_excluded > 0) == gaps


def test_stage_output_shape(panel):
    """Indicators offer the publishing layer's shape: tables / figures / headline / narrative (issue 13)."""
    import matplotlib

    matplotlib.use("Agg")
    r = ind.international_activity(panel, "p", **COMMON)
    stage = r.stage_output("P")
    assert set(stage.tables) == set(r.exports) and stage.headline == dict(r.headline)
    assert stage.narrative == (r.narrative,)
    assert list(stage.figures) == ([r.figure_name] if r.plottable else [])
    assert stage.tidy()["kind"].value_counts()["table"] == len(r.exports)


@pytest.mark.parametrize("programme", ["nlib", "tinl", "nlw"])
def test_panel_columns_are_all_the_indicators_read(stub_panel, stub_params, programme):
    """Notebook 02 reads only ``panel_columns``: every table of every indicator equals the full panel's."""
    import warnings

    from reach.disclosure import Rules

    full, link, _ = stub_panel
    full = full[full["year"].between(stub_params["first_year"], stub_params["last_year"])]
    cols = ["be_id", "year", *[c for c in full.columns if c.startswith("g_")],
            *ind.panel_columns(stub_params["growth_markets"])]
    assert set(cols) <= set(full.columns) and len(set(cols)) < full.shape[1]
    rules = Rules(**stub_params["disclosure"])
    common = dict(comparison_group=stub_params["comparison_group"], never_treated_only=stub_params["never_treated_only"],
                  reach_window=stub_params["reach_window"], target_group=stub_params["target_group"], rules=rules)

    def tables(panel):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rs = [ind.international_activity(panel, programme, **common),
                  ind.growth_market_presence(panel, programme, stub_params["growth_markets"], **common),
                  ind.target_group_fit(panel, programme, target_group=stub_params["target_group"], rules=rules),
                  ind.prior_instrument_use(panel, programme, **common),
                  ind.instrument_use_after(panel, programme, reach_window=stub_params["reach_window"],
                                           last_year=stub_params["last_year"], rules=rules),
                  ind.regional_reach(panel, programme, link, rules=rules),
                  ind.export_values(panel, programme, **common)]
        return {(i, k): c.cells for i, r in enumerate(rs) for k, c in r.exports.items()}

    want, got = tables(full), tables(full[list(dict.fromkeys(cols))].copy())
    assert want.keys() == got.keys()
    for k in want:
        pd.testing.assert_frame_equal(got[k], want[k], obj=str(k))


def test_indicator_tables_key_firms_as_every_other_table_does(panel):
    """The run audit intersects cells of all tables of all notebooks by unit key. Seen at register scale:
    the indicators keyed firms by their row number in the grid (hash of "0", "1", ...) while 01, 03, 04 and
    regional reach key them by ``be_id``, so no indicator cell could ever be differenced against another
    notebook's cell. Every indicator's units must carry the keys ``check_table`` gives the same ``be_id``."""
    from reach.disclosure import check_table

    firms = panel[["be_id"]].drop_duplicates().assign(all="all")
    key_of = dict(zip(firms["be_id"], check_table(firms, by=["all"], name="k").members["unit"]))
    users = set(panel.loc[panel["g_p"] > 0, "be_id"])
    results = [ind.international_activity(panel, "p", **COMMON), ind.growth_market_presence(panel, "p", ["CN"], **COMMON),
               ind.target_group_fit(panel, "p", rules=RULES), ind.prior_instrument_use(panel, "p", **COMMON),
               ind.instrument_use_after(panel, "p", rules=RULES), ind.export_values(panel, "p", **COMMON)]
    for r in results:
        for chk in r.checks:
            got = set(chk.members["unit"].tolist())
            assert got <= set(key_of.values()), (r.name, chk.name)
            # the users are the same firms, under the same keys, in every table
            assert {key_of[u] for u in users} & got, (r.name, chk.name)


@pytest.mark.parametrize("many_starts", [False, True])
def test_positive_in_a_window_equals_a_direct_lookup(many_starts):
    """_Grid.positive_in (per-cohort columns of the dense grid; running counts for many start years) against
    a year-by-year lookup of each (firm, start): missing values, negative values and absent years count as no."""
    rng = np.random.default_rng(11)
    n, years = 300, np.arange(2014, 2024)
    p = pd.DataFrame({"be_id": np.repeat(np.arange(n), len(years)).astype(str), "year": np.tile(years, n)})
    p = p[rng.random(len(p)) > 0.25].reset_index(drop=True)
    x = rng.choice([0.0, 1.0, -2.0, np.nan], size=len(p), p=[0.6, 0.2, 0.1, 0.1])
    grid = ind._Grid.of(p)
    m = 2_000
    firm = rng.integers(0, grid.n_firms, m)
    start = rng.integers(1970, 2060, m) if many_starts else rng.choice([2017, 2019, 2021, 2024], m)
    assert (len(np.unique(start)) > 64) == many_starts
    value = {(f, y): v for f, y, v in zip(grid.firm, grid.year, x)}
    assert grid.positive_in(x, firm[:0], start[:0], -5, -1).shape == (0,)
    for lo, hi in ((-5, -1), (0, 2), (-1, -1)):
        want = np.array([any(value.get((f, s + k), 0) > 0 for k in range(lo, hi + 1)) for f, s in zip(firm, start)])
        assert np.array_equal(grid.positive_in(x, firm, start, lo, hi), want), (lo, hi)


def test_run_audit_differences_indicator_cells_against_other_notebooks_tables(panel, tmp_path, monkeypatch):
    """The 52 users, counted by ``be_id`` as notebook 01 counts them, minus the users with a register row
    that target_group_fit publishes per cohort, give its suppressed "no" cell (the 2 cohort-2020 users who
    entered in 2020). The audit sees that only when both notebooks' tables key the same firms alike; with
    the indicators keying firms by grid row numbers it judged the cell safe."""
    import matplotlib

    from reach import publish
    from reach.disclosure import OutputLog, check_table

    matplotlib.use("Agg")
    monkeypatch.setenv(publish.ENV_REGISTRY, str(tmp_path / "work" / "registry"))
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "nb")
    log = OutputLog(tmp_path / "output", notebook="nb", reset=True)
    users = panel.loc[panel["g_p"] > 0, ["be_id"]].drop_duplicates().assign(programme="p")
    log.table(check_table(users, by=["programme"], unit="be_id", stat="count", rules=RULES, name="users"), "users")
    ind.target_group_fit(panel, "p", rules=RULES).stage_output("P").publish(log)
    audit = publish.audit_run(tmp_path / "output", tmp_path / "work")
    t = audit.targets.set_index(["object", "cell"])
    no_2020 = t.loc[("p_target_group_fit_coverage",
                     "characteristic=register record in the year before first use|category=no|cohort=2020")]
    assert not no_2020["safe_before"] and no_2020["safe_after"], t
    assert audit.n_unprotected == 0, t


def test_an_indexed_panel_gives_what_the_dataframe_gives(panel):
    """Notebook 02 indexes the panel once (index_panel) and passes the index to every indicator: each
    result equals the DataFrame's, also when one index serves several settings (the reference firms are
    kept per programme and settings, never reused across them)."""
    import warnings

    indexed = ind.index_panel(panel)
    assert ind.index_panel(indexed) is indexed
    link = SimpleNamespace(records=pd.DataFrame({"programme": "p", "bucket": "linked", "be_id": ["1000000000", "1000000001"],
                                                 "year": [2019, 2019], "activity_id": ["a", "b"],
                                                 "organiser_region": ["ZH", "NH"]}))
    target = {"min_employees": 10, "max_employees": 250, "min_destinations": 1, "max_destinations": 5}
    calls = [
        lambda p: ind.international_activity(p, "p", **COMMON),
        lambda p: ind.international_activity(p, "p", **{**COMMON, "comparison_group": "target_group", "target_group": target}),
        lambda p: ind.international_activity(p, "p", **{**COMMON, "never_treated_only": False}),
        lambda p: ind.growth_market_presence(p, "p", ["CN", "TR"], **COMMON),
        lambda p: ind.target_group_fit(p, "p", rules=RULES),
        lambda p: ind.prior_instrument_use(p, "p", **COMMON),
        lambda p: ind.instrument_use_after(p, "p", rules=RULES),
        lambda p: ind.regional_reach(p, "p", link, rules=RULES),
        lambda p: ind.export_values(p, "p", **COMMON),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in calls:
            a, b = call(panel), call(indexed)
            pd.testing.assert_frame_equal(a.tidy(), b.tidy())
            assert a.text == b.text and a.name == b.name
    assert len(indexed._refs) == 4  # business economy, target group, not-yet-treated, users only
    with pytest.raises(ValueError, match=r"panel lacks column\(s\) \['gm_XX'\]"):  # the same error as for a DataFrame
        ind.growth_market_presence(indexed, "p", ["XX"], **COMMON)


def test_regional_reach_never_reveals_the_participations_left_out_by_difference(panel):
    """participant_counts publishes every participation; regional_reach leaves out those without an organiser
    region. Had it given its own count exactly, the difference would be those 1-9 participations."""
    link = _link()
    recs = link.records
    extra = [dict(programme="t", bucket="linked", be_id=str(1000000000 + k), year=2019, activity_id="a3",
                  activity_type="webinar", organiser_region=None) for k in range(3)]
    link = SimpleNamespace(records=pd.concat([recs, pd.DataFrame(extra)], ignore_index=True))
    rules = {**RULES, "min_units": 5}
    counts = ind.participant_counts(link, "t", rules=rules)
    total = counts.headline["n_participations"]
    assert total == 21  # 18 pairs with an organiser region + the 3 without, published
    r = ind.regional_reach(panel, "t", link, rules=rules)
    assert r.headline["share_own_region"] == pytest.approx(12 / 18, abs=5e-4)  # published (rounded): the share itself is no risk
    assert np.isnan(r.headline["n_participations"])
    assert r.published["n_participations"].isna().all()  # nor per region: their sum is the total
    assert "18" not in r.narrative and "fewer than" in r.message
    fig = r.figure("T")
    labels_ = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "all organisers (12 firms)" in labels_ and not any("18" in t for t in labels_)
    # ten or more left out: the count is published (the difference is then itself publishable)
    many = [dict(programme="t", bucket="linked", be_id=str(1000000000 + k), year=2019, activity_id="a3",
                 activity_type="webinar", organiser_region=None) for k in range(12)]
    link2 = SimpleNamespace(records=pd.concat([recs, pd.DataFrame(many)], ignore_index=True))
    r2 = ind.regional_reach(panel, "t", link2, rules=rules)
    assert r2.headline["n_participations"] == 18 and "the 18 participations" in r2.narrative


def test_mean_and_median_share_one_membership_object(panel, monkeypatch, tmp_path):
    """An indicator's mean and median keep the same rows: their unit memberships (firms x cohorts, 0.5 GB per
    table at 2M firms) are one object, joined once over the event-time parts and registered once (the second
    table's file is a hard link to the first's). The control, with sharing turned off, computes each on its
    own: the same arrays and the same published tables."""
    import os

    from reach import publish
    from reach.disclosure import OutputLog

    shared = ind.export_values(panel, "p", **COMMON)
    mean, median = (shared.exports[f"p_export_values_{s}"] for s in ("mean", "median"))
    assert mean.members is median.members
    monkeypatch.setattr(ind, "_same_members", lambda a, b: False)
    alone = ind.export_values(panel, "p", **COMMON)
    for s in ("mean", "median"):
        own = alone.exports[f"p_export_values_{s}"]
        assert own.members.keys() == mean.members.keys()
        for k in own.members:
            assert own.members[k].dtype == mean.members[k].dtype and np.array_equal(own.members[k], mean.members[k]), k
        pd.testing.assert_frame_equal(own.suppress(), shared.exports[f"p_export_values_{s}"].suppress())
    assert alone.exports["p_export_values_mean"].members is not alone.exports["p_export_values_median"].members

    monkeypatch.setenv(publish.ENV_REGISTRY, str(tmp_path / "registry"))
    log = OutputLog(tmp_path / "output", notebook="nb", reset=True)
    for name, checked in shared.exports.items():
        log.table(checked, name)
    folder = tmp_path / "registry" / "tables"
    files = [folder / f"nb__p_export_values_{s}.npz" for s in ("mean", "median")]
    assert os.path.samefile(*files)
    with np.load(files[1]) as z:
        assert all(np.array_equal(z[k], mean.members[k]) for k in mean.members)
    # another table written under the first name gets a new file: the linked one keeps its memberships
    other = ind.international_activity(panel, "p", **COMMON).exports["p_international_activity"]
    log.table(other, "p_export_values_mean")
    assert not os.path.samefile(*files)
    with np.load(files[0]) as z:
        assert len(z["unit"]) == len(other.members["unit"]) != len(mean.members["unit"])
    with np.load(files[1]) as z:
        assert all(np.array_equal(z[k], mean.members[k]) for k in mean.members)


def test_show_indicator_publishes_each_table_then_the_figure_then_the_narrative(results, tmp_path, monkeypatch):
    """``show_indicator`` (one section of notebook 02, also run by ``bench/reach_steps.py``) writes the same files
    as writing each checked table with ``OutputLog.table`` and the figure with ``show_figure``, and shows the
    figure (or why it was refused) before the narrative."""
    import IPython.display

    from reach.disclosure import OutputLog
    from reach.report import show_figure, show_indicator

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    assert any(r.plottable for r in results) and any(not r.plottable for r in results)  # both branches run
    for i, r in enumerate(results):
        got, ref = (OutputLog(tmp_path / f"{side}{i}", notebook="nb") for side in ("got", "ref"))
        shown.clear()
        show_indicator(got, r, "Programme P")
        assert isinstance(shown[-1], IPython.display.Markdown) and shown[-1].data == r.text
        assert len(shown) == 1 + r.plottable, r.name
        for name, checked in r.exports.items():
            ref.table(checked, name)
        if r.plottable:
            show_figure(ref, r.figure("Programme P"), r.checks, r.figure_name)
        written = sorted(p.relative_to(tmp_path / f"got{i}").as_posix()
                         for p in (tmp_path / f"got{i}").rglob("*") if p.is_file() and p.suffix != ".png")
        assert written == sorted(p.relative_to(tmp_path / f"ref{i}").as_posix()
                                 for p in (tmp_path / f"ref{i}").rglob("*") if p.is_file() and p.suffix != ".png")
        assert {f"tables/{name}.csv" for name in r.exports} <= set(written), r.name
        for rel in written:
            if rel.endswith(".csv"):
                assert (tmp_path / f"got{i}" / rel).read_bytes() == (tmp_path / f"ref{i}" / rel).read_bytes(), rel
        pngs = [sorted(p.name for p in (tmp_path / f"{side}{i}").rglob("*.png")) for side in ("got", "ref")]
        assert pngs[0] == pngs[1] and len(pngs[0]) <= r.plottable, r.name
    assert list(tmp_path.rglob("got*/**/*.png"))  # some figure was exported, so the comparison is not vacuous
