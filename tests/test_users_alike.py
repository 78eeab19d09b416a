"""Estimates whose users' side is each user's own outcome change (or that of 1-9 users) are not published.

The users' side of ATT(g,t) is the mean of the users' changes Y_t - Y_base. When every user's change is the
same (a 0/1 outcome nobody switches; log exports of users that never export), that mean is each user's own
change: a group disclosure (ACRO's "all-values-are-same"), and the influence function's users' side is zero,
so the Wald interval reflects the comparison firms alone. On the stub, all 14 tinl users that did not export
before first use still exported nothing after it, and the effect on exporting read "-0.002 (-0.003 to
-0.000): no, fewer of them export" where the truth is 0. With 1-9 users off the common change the estimate
reveals their changes as a share reveals 1-9 firms.

Counts here come from an independent computation: a pandas merge of each cell's years and a value count.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reach.did import att_gt, users_off_common_change
from reach.disclosure import Rules, check_estimates
from reach.effects import effect_report
from reach.heterogeneity import REVEALS_USERS, heterogeneity

YEARS = np.arange(2014, 2021)


def _panel(n: int = 600, n_users: int = 150, seed: int = 0, switchers: int = 0, stoppers: int = 0) -> pd.DataFrame:
    """Never users switch exporting at random; users keep their status, except ``switchers`` of the
    users that do not export, who start exporting in their first year of use, and ``stoppers`` of those
    that do, who stop then."""
    rng = np.random.default_rng(seed)
    T = len(YEARS)
    status = np.zeros((n, T))
    status[:, 0] = rng.random(n) < 0.5
    for t in range(1, T):
        flip = rng.random(n) < 0.15
        status[:, t] = np.where(flip, 1 - status[:, t - 1], status[:, t - 1])
    g = np.zeros(n, dtype=np.int64)
    users = np.arange(n_users)
    g[users] = rng.choice([2017, 2018], n_users)
    status[users] = status[users, :1]  # users keep their first status...
    quiet = users[status[users, 0] == 0]
    for i in quiet[:switchers]:  # ...except these, who start exporting when they first use the programme
        status[i, YEARS >= g[i]] = 1.0
    for i in users[status[users, 0] == 1][:stoppers]:
        status[i, YEARS >= g[i]] = 0.0
    p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "year": np.tile(YEARS, n), "g_x": np.repeat(g, T),
                      "exporter": status.ravel()})
    p["exports"] = p["exporter"] * np.exp(rng.normal(10, 1, size=n * T))
    p["log_exports"] = np.log1p(p["exports"])
    p["size"] = np.repeat(rng.normal(size=n), T)
    return p


def _brute_off(p: pd.DataFrame, y: str, g: int, t: int, b: int) -> tuple[int, int]:
    """(users off the cell's most common change, users in the cell) by merge and value_counts."""
    u = p[p["g_x"] == g]
    d = u[u["year"] == t].merge(u[u["year"] == b], on="firm_id", suffixes=("_t", "_b"))
    ch = (d[f"{y}_t"] - d[f"{y}_b"]).dropna()
    return int(len(ch) - ch.value_counts().max()), int(len(ch))


def test_users_off_common_change_matches_a_merge_and_value_count():
    p = _panel(switchers=7)
    p.loc[p.sample(frac=0.05, random_state=1).index, "exporter"] = np.nan  # unobserved years leave the cell
    p["exporter"] = np.where(p["g_x"] > 0, p["exporter"] + 0.5 * (p["firm_id"] % 3 == 0) * (p["year"] > 2018),
                             p["exporter"])  # ties and several values
    r = att_gt(p.dropna(subset=["exporter"]), "exporter", "year", "firm_id", "g_x", bootstrap=False,
               allow_unbalanced_panel=True, unbalanced="pairs")
    users = p[p["g_x"] > 0]
    Y = users.pivot(index="firm_id", columns="year", values="exporter")
    coh = users.groupby("firm_id")["g_x"].first().reindex(Y.index).to_numpy()
    off, member = users_off_common_change(Y.to_numpy(), coh, Y.columns.to_numpy(), r.groups, r.times, r.base_times)
    for j, (g, t, b) in enumerate(zip(r.groups, r.times, r.base_times)):
        assert (int(off[:, j].sum()), int(member[:, j].sum())) == _brute_off(p, "exporter", g, t, b), (g, t, b)
    assert off.any() and (~off.any(axis=0)).any()  # both kinds of cells occur


def test_check_estimates_fails_rows_whose_users_changed_alike_or_all_but_a_few():
    t = pd.DataFrame({"term": list("abcd"), "estimate": [0.1, 0.2, 0.3, 0.4], "std_error": 0.1,
                      "n_treated": 50, "n_control": 500})
    chk = check_estimates(t, "x", n_changed=[0, 4, 10, np.nan])
    assert chk.cells["verdict"].tolist() == ["suppress", "suppress", "ok", "ok"]
    assert chk.cells["rule_names"].tolist() == ["all_same", "few_changed", "", ""]
    assert chk.suppress()["estimate"].isna().tolist() == [True, True, False, False]
    assert "all_same" in chk.report_rows()["rules_failed"].iloc[0]
    # without the column the rule does not exist: the old behaviour
    assert check_estimates(t, "x").cells["verdict"].tolist() == ["ok"] * 4


@pytest.mark.parametrize("switchers, published", [(0, False), (6, False), (40, True)])
def test_effect_on_an_outcome_no_user_changes_is_withheld(switchers, published):
    """0 switchers: every user's change is 0 (all alike); 6: all but six; 40: published. The old code
    published all three, the first with an interval that reflects the comparison firms only."""
    p = _panel(switchers=switchers)
    rep = effect_report(p, "exporter", programme="x", biters=0, rules=Rules())
    cmp_ = rep.tables["comparison"]
    raw = rep.simple
    assert np.isfinite(raw.overall_att)  # the estimator itself still estimates
    assert np.isfinite(cmp_["estimate"].iloc[0]) == published
    rules = rep.checked["comparison"].cells["rule_names"].iloc[0]
    if published:
        assert rules == "" and "reveal" not in rep.narrative() and rep.headline()["withheld"] == ""
        return
    assert rules == ("all_same" if switchers == 0 else "few_changed")
    # every users' mean of the report goes, the pre-trend test (a test, not a users' mean) stays
    for table in ("att_gt", "event_study"):
        post = rep.tables[table]
        if table == "att_gt":
            post = post[post["post"]]
        assert post["estimate"].isna().all(), table
        # the pointwise interval too: its midpoint is the estimate
        assert post[["pointwise_low", "pointwise_high"]].isna().all().all(), table
    assert "all_same" not in rep.checked["pretest"].cells["rule_names"].iloc[0]
    assert rep.verdict() == "not publishable (it would reveal individual users' outcomes)"
    assert "would reveal individual users' outcomes" in rep.narrative() and "too few firms" not in rep.narrative()
    h = rep.headline()
    assert h["withheld"] == "it would reveal individual users' outcomes" and np.isnan(h["simple_att"])
    # the pre-period cells: users keep their status, so every pre cell is alike too
    pre = rep.tables["att_gt"][~rep.tables["att_gt"]["post"]]
    assert pre["estimate"].isna().all()


def test_cells_count_the_users_off_the_common_change_cell_by_cell():
    """With 12 switchers, every post cell has 12 users off the common change 0 (the switchers' change is 1
    in every year from first use): published. Their cohorts split them, so a cohort's cells hold fewer
    than 10 of them and are withheld, while the event-time rows pool both cohorts."""
    p = _panel(switchers=12)
    rep = effect_report(p, "exporter", programme="x", biters=0, rules=Rules())
    gt = rep.att_gt
    quiet = p[(p["g_x"] > 0) & (p["year"] == 2014) & (p["exporter"] == 0)]["firm_id"].to_numpy()[:12]
    per_cohort = p[p["firm_id"].isin(quiet)].groupby("firm_id")["g_x"].first().value_counts()
    tab = rep.tables["att_gt"]
    for g, t, pub in zip(tab["group"], tab["time"], tab["estimate"]):
        expect = per_cohort.get(g, 0) if t >= g else 0
        assert np.isfinite(pub) == (expect >= 10), (g, t, expect)
    assert np.isfinite(rep.tables["comparison"]["estimate"].iloc[0])  # 12 users off: enough
    assert set(per_cohort.index) == set(gt.groups)  # both cohorts hold some of them


def test_matched_sample_counts_users_per_block():
    """On the stacked matched sample, a block's users are its ``treated == 1`` rows (``stack_id``)."""
    p = _panel(switchers=0)
    p["be_id"] = p["firm_id"].map(lambda i: f"{i:09d}")
    users = p[p["g_x"] > 0].groupby("be_id")["g_x"].first()
    never = p.loc[p["g_x"] == 0, "be_id"].unique()
    rows = [{"be_id": b, "cohort": g, "treated": 1, "weight": 1.0} for b, g in users.items()]
    rows += [{"be_id": b, "cohort": g, "treated": 0, "weight": 1.0} for g in (2017, 2018) for b in never[:200]]
    rep = effect_report(p, "exporter", programme="x", sample="matched", matched_units=pd.DataFrame(rows),
                        biters=0, rules=Rules())
    assert rep.checked["comparison"].cells["rule_names"].iloc[0] == "all_same"
    assert np.isnan(rep.tables["comparison"]["estimate"].iloc[0])


def test_subgroup_whose_users_never_export_is_suppressed_and_its_complement_protected():
    """The stub's case: users that did not export before first use never export, so their log exports are 0
    in every year: that subgroup's effect on log exports is each user's own change (0) minus the comparison
    firms'. It is suppressed before the secondary suppression, so the exporters' level, from which the
    overall row would recover it, is withheld too."""
    p = _panel(switchers=0)
    rules = Rules()
    res = heterogeneity(p, "log_exports", {"exporter_before": "exporter_before"}, gname="g_x",
                        control_group="nevertreated", rules=rules)
    pub = res.publishable().set_index(["kind", "subgroup"])
    assert pub.loc[("subgroup", "non-exporter"), "status"] == REVEALS_USERS
    assert "secondary" in pub.loc[("subgroup", "exporter"), "status"]
    assert np.isnan(pub.loc[("subgroup", "exporter"), "estimate"])
    assert np.isfinite(pub.loc[("overall", "all users"), "estimate"])
    chk = res.checked()
    rows = chk.cells.set_index(res.rows["subgroup"] + "/" + res.rows["kind"])
    assert rows.loc["non-exporter/subgroup", "rule_names"] == "all_same"
    # with enough starters among them (and stoppers among the exporters, who would otherwise be alike) the
    # subgroup is estimated, its effect positive (they all start, where comparison firms start at random)
    q = _panel(switchers=40, stoppers=40)
    res2 = heterogeneity(q, "exporter", {"exporter_before": "exporter_before"}, gname="g_x",
                         control_group="nevertreated", rules=rules)
    ne = res2.publishable().set_index(["kind", "subgroup"]).loc[("subgroup", "non-exporter")]
    assert ne["status"] == "estimated" and ne["conf_low"] > 0


def test_the_starting_question_says_why_it_cannot_be_answered():
    """The stub's case end to end: no user that did not export before first use exports after it. The
    answer names the reason once, without the numbers (the old text read "no, fewer of them export")."""
    from reach import robustness

    p = _panel(switchers=0)
    s = robustness.how_sure(p, {}, programme="x", label="Programme X",
                            primary={"sample": "full", "outcome": "log_exports"}, outcomes=["log_exports"],
                            xformla=None, control_group="nevertreated", placebo_draws=0,
                            subgroups={"exporter_before": "exporter_before"}, rules=Rules(), progress=False)
    answer = s.heterogeneity_text().split("**Does it help firms that were not exporting yet?**")[1]
    assert answer.strip() == ("This cannot be answered here: that subgroup is suppressed (it would reveal "
                              "individual users' outcomes).")
    assert s.headline()["starting"]["exporter_before"]["non-exporter"]["estimate"] is None  # recorded as null
    # the hidden difference names that reason among the possible ones, in one line for every hidden comparison
    assert ("- **Not publishable**: 1 by exporting in the year before first use (it rests on a subgroup with too few "
            "users or comparison firms, one that would reveal individual users' outcomes, or one that would reveal "
            "such a subgroup).") in s.heterogeneity_text()


def test_sensitivity_of_an_outcome_no_user_changes_is_withheld():
    """HonestDiD's robust sets are intervals around the event study's post-use estimates; the "original"
    row is its confidence interval, whose midpoint is the withheld estimate. Withheld the same way, and
    said so; an outcome whose users' changes vary keeps its sensitivity rows."""
    from reach import robustness

    p = _panel(switchers=0)
    s = robustness.how_sure(p, {}, programme="x", primary={"sample": "full", "outcome": "log_exports"},
                            outcomes=["log_exports", "exporter"],
                            xformla=None, control_group="nevertreated", placebo_draws=0, subgroups={},
                            rules=Rules(), progress=False)
    pub = s.publishable("sensitivity")
    ex, lx = pub[pub["outcome"] == "exporter"], pub[pub["outcome"] == "log_exports"]
    assert len(ex) and ex[["estimate", "conf_low", "conf_high"]].isna().all().all()
    assert set(s.checked["sensitivity"].cells.loc[s.checked["sensitivity"].cells["outcome"] == "exporter",
                                                  "rule_names"]) == {"all_same"}
    assert "suppressed (it would reveal individual users' outcomes)." in s.sensitivity_text()
    # log exports: the users that never export are alike, the exporters are not: published
    assert lx["estimate"].notna().all()
