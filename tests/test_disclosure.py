"""Tests of reach.disclosure: every rule at, just below and just above its threshold.

All expected verdicts follow from the rule definitions applied by hand to
hand-made tables (the numbers are chosen so the arithmetic is exact), or from
an independent computation (linear algebra on the published margins,
brute-force enumeration of protection patterns).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reach.disclosure import (
    REPORT_COLUMNS,
    Checked,
    OutputLog,
    Rules,
    check_estimates,
    check_table,
    join_checked,
    scan_for_identifiers,
)

ROOT = Path(__file__).resolve().parents[1]


def _recoverable(A: np.ndarray, pub: pd.DataFrame, labels) -> list:
    """Suppressed cells whose value the published equations ``A x = margins`` determine.

    Cell j is determined iff the unit vector e_j lies in the row space of A restricted
    to the suppressed columns (adding it does not raise the rank).
    """
    U = np.flatnonzero(pub["n_units"].isna().to_numpy())
    if len(U) == 0:
        return []
    AU = A[:, U]
    base = np.linalg.matrix_rank(AU)
    out = []
    for k, j in enumerate(U):
        e = np.zeros(len(U))
        e[k] = 1
        if np.linalg.matrix_rank(np.vstack([AU, e])) == base:
            out.append(labels[j])
    return out


# ----------------------------------------------------------------------------- helpers
def units_table(contrib: dict[str, list[float]], rows_per_unit: int = 1) -> pd.DataFrame:
    """Micro rows: cell -> list of unit contributions; each unit split over rows_per_unit equal rows."""
    recs = []
    for cell, xs in contrib.items():
        for i, x in enumerate(xs):
            for _ in range(rows_per_unit):
                recs.append({"g": cell, "be_id": f"{cell}{i:04d}", "x": x / rows_per_unit})
    return pd.DataFrame(recs)


def verdicts(chk: Checked, by: str = "g") -> dict:
    c = chk.cells
    return dict(zip(c[by], c["verdict"]))


def count_micro(matrix: np.ndarray) -> pd.DataFrame:
    """Distinct units per (r, c) cell as given by matrix."""
    r_idx, c_idx = np.indices(matrix.shape)
    reps = matrix.ravel()
    r = np.repeat(r_idx.ravel(), reps)
    c = np.repeat(c_idx.ravel(), reps)
    return pd.DataFrame({"r": [f"r{i}" for i in r], "c": [f"c{j}" for j in c], "be_id": [str(k) for k in range(len(r))]})


def recoverable_cells(pub: pd.DataFrame, by=("r", "c")) -> list[tuple]:
    """Suppressed cells whose value is fixed by the published row/column/grand totals.

    Independent of the library: build A x = b for all additive lines of a 2-D
    table with margins; unknown x_j is determined iff e_j lies in the row space of
    A restricted to the unknowns, i.e. rank([A_U; e_j]) == rank(A_U).
    """
    r, c = by
    cells = list(zip(pub[r], pub[c]))
    idx = {k: i for i, k in enumerate(cells)}
    rows_ = [x for x in pd.unique(pub[r]) if x != "Total"]
    cols_ = [x for x in pd.unique(pub[c]) if x != "Total"]
    eqs = []
    for rr in rows_ + ["Total"]:
        e = np.zeros(len(cells))
        e[idx[(rr, "Total")]] = 1
        for cc in cols_:
            e[idx[(rr, cc)]] = -1
        eqs.append(e)
    for cc in cols_ + ["Total"]:
        e = np.zeros(len(cells))
        e[idx[("Total", cc)]] = 1
        for rr in rows_:
            e[idx[(rr, cc)]] = -1
        eqs.append(e)
    return _recoverable(np.array(eqs), pub, cells)


def single_unknown_lines(pub: pd.DataFrame, by=("r", "c")) -> list:
    """Rows/columns (with their total) that contain exactly one suppressed entry."""
    r, c = by
    bad = []
    for key, grp in itertools.chain(pub.groupby(r, sort=False), pub.groupby(c, sort=False)):
        if grp["n_units"].isna().sum() == 1:
            bad.append(key)
    return bad


# ----------------------------------------------------------------------------- Rules
def test_rules_accept_stub_params_and_defaults():
    params = yaml.safe_load((ROOT / "params" / "stub.yaml").read_text())
    r = Rules(**params["disclosure"])
    assert r == Rules()
    assert (r.min_units, r.dominance_k, r.dominance_max, r.p_ratio_min) == (10, 2, 0.90, 0.10)
    assert (r.min_dof, r.min_treated, r.min_control, r.min_units_each_side) == (10, 10, 10, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.min_units = 3
    # the params dict is accepted directly as well
    micro = units_table({"a": [1] * 9})
    assert not check_table(micro, by="g", rules=params["disclosure"]).ok
    assert check_table(micro, by="g", rules={**params["disclosure"], "min_units": 9}).ok


@pytest.mark.parametrize(
    "kwargs",
    [{"min_units": 0}, {"min_units": 2.5}, {"dominance_max": 1.2}, {"dominance_max": 0}, {"p_ratio_min": -0.1},
     {"dominance_k": True}, {"min_dof": "10"}],
)
def test_rules_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match=list(kwargs)[0]):
        Rules(**kwargs)


# ----------------------------------------------------------------------------- frequency
def test_frequency_threshold_at_below_above():
    micro = units_table({"below": [1] * 9, "at": [1] * 10, "above": [1] * 11})
    chk = check_table(micro, by=["g"], stat="count", name="freq")
    assert verdicts(chk) == {"above": "ok", "at": "ok", "below": "suppress"}
    assert dict(zip(chk.table["g"], chk.table["n_units"])) == {"above": 11, "at": 10, "below": 9}
    assert not chk.ok
    pub = chk.suppress()
    assert pub.loc[pub["g"] == "below", ["value", "n_units"]].isna().all(axis=None)
    assert pub.loc[pub["g"] == "at", "n_units"].item() == 10


def test_units_not_rows():
    # 9 firms with 6 rows each: 54 rows but 9 units -> suppressed
    micro = units_table({"a": [1] * 9, "b": [1] * 10}, rows_per_unit=6)
    chk = check_table(micro, by="g", stat="count")
    cells = chk.cells.set_index("g")
    assert cells.loc["a", "n_units"] == 9 and cells.loc["a", "n_rows"] == 54
    assert verdicts(chk) == {"a": "suppress", "b": "ok"}


def test_single_overall_cell():
    micro = units_table({"a": [1.0] * 10, "b": [2.0] * 5})
    chk = check_table(micro, by=[], value="x", stat="sum")
    assert len(chk.table) == 1
    assert chk.table["n_units"].item() == 15
    assert chk.table["value"].item() == pytest.approx(20.0)
    assert chk.ok


def test_min_max_refused_and_bad_stat():
    micro = units_table({"a": [1] * 12})
    for stat in ("min", "max"):
        with pytest.raises(ValueError, match="minima and maxima"):
            check_table(micro, by=["g"], value="x", stat=stat)
    with pytest.raises(ValueError, match=r"got 'avg'"):
        check_table(micro, by=["g"], value="x", stat="avg")
    with pytest.raises(ValueError, match="unit identifier"):
        check_table(micro, by=["be_id"], stat="count")
    with pytest.raises(ValueError, match=r"micro lacks column\(s\)"):
        check_table(micro, by=["nope"], stat="count", name="tbl")


def test_missing_unit_raises_without_echoing_values():
    micro = units_table({"a": [1] * 12})
    micro.loc[3, "be_id"] = None
    with pytest.raises(ValueError, match=r"row positions \[3\]"):
        check_table(micro, by=["g"])


def test_missing_values_are_counted_not_silent():
    micro = units_table({"a": [1.0] * 12})
    micro.loc[[0, 1], "x"] = np.nan
    chk = check_table(micro, by=["g"], value="x", stat="sum")
    assert chk.n_rows_excluded == 2
    assert chk.table["n_units"].item() == 10
    assert chk.report_rows()["n_rows_excluded"].item() == 2


# ----------------------------------------------------------------------------- dominance
def test_dominance_at_below_above():
    # two largest 45 + 45 = 90; ten small units sum to 10 (at), 9.9 (just above 0.90), 11 (below)
    micro = units_table({
        "at": [45, 45] + [1.0] * 10,        # 90/100 = 0.90 -> passes (inclusive)
        "over": [45, 45] + [0.99] * 10,     # 90/99.9 = 0.9009 -> fails
        "under": [45, 45] + [1.1] * 10,     # 90/101 = 0.891 -> passes
    })
    chk = check_table(micro, by=["g"], value="x", stat="sum")
    c = chk.cells.set_index("g")
    assert c.loc["at", "top_k_share"] == pytest.approx(0.90)
    assert c["fail_dominance"].to_dict() == {"at": False, "over": True, "under": False}
    assert verdicts(chk) == {"at": "ok", "over": "suppress", "under": "ok"}


def test_dominance_sums_rows_per_unit_first():
    # firm A: ten rows of 10 (=100); ten other firms 1 each. Unit view: (100+1)/110 = 0.918 > 0.9.
    # A row view would see top-2 rows 20/110 = 0.18 and wrongly pass.
    a = pd.DataFrame({"g": "c", "be_id": "A", "x": [10.0] * 10})
    others = pd.DataFrame({"g": "c", "be_id": [f"o{i}" for i in range(10)], "x": 1.0})
    chk = check_table(pd.concat([a, others]), by=["g"], value="x", stat="mean")
    c = chk.cells.iloc[0]
    assert c["n_units"] == 11
    assert c["top_k_share"] == pytest.approx(101 / 110)
    assert bool(c["fail_dominance"]) and c["verdict"] == "suppress"
    assert chk.table["value"].item() == pytest.approx(110 / 20)  # mean over rows


def test_dominance_k_parameter():
    micro = units_table({"a": [30, 30, 30] + [1.0] * 10})  # top-2 = 60/100, top-3 = 90/100
    assert check_table(micro, by="g", value="x", stat="sum").ok
    chk3 = check_table(micro, by="g", value="x", stat="sum", rules=Rules(dominance_k=3, dominance_max=0.85))
    assert not chk3.ok and chk3.cells["fail_dominance"].item()


# ----------------------------------------------------------------------------- p-ratio
def test_p_ratio_at_below_above():
    # dominance switched off (max 1.0) to isolate the p% rule: with the defaults a
    # p-ratio failure always implies a dominance failure ((x1+x2)/T > 1/1.1).
    rules = Rules(dominance_max=1.0)
    micro = units_table({
        "at": [100, 50] + [1.0] * 10,      # (160-150)/100 = 0.10 -> passes (inclusive)
        "below": [100, 50] + [0.99] * 10,  # 9.9/100 = 0.099 -> fails
        "above": [100, 50] + [1.01] * 10,  # 10.1/100 = 0.101 -> passes
    })
    chk = check_table(micro, by=["g"], value="x", stat="sum", rules=rules)
    c = chk.cells.set_index("g")
    assert c.loc["at", "p_ratio"] == pytest.approx(0.10)
    assert c["fail_p_ratio"].to_dict() == {"above": False, "at": False, "below": True}
    assert not c["fail_dominance"].any()
    assert verdicts(chk) == {"above": "ok", "at": "ok", "below": "suppress"}


# ----------------------------------------------------------------------------- zeros, negatives
def test_zero_and_negative_magnitudes_go_to_review():
    micro = units_table({
        "zero": [1.0, -1.0] * 6,
        "neg": [-1.0] + [5.0 + i for i in range(11)],
        "fine": [5.0 + i for i in range(12)],
        "same": [5.0] * 12,
    })
    chk = check_table(micro, by=["g"], value="x", stat="sum")
    # "same": every firm contributes 5, so the mean is each firm's value (ACRO's all-values-are-same): suppressed
    assert verdicts(chk) == {"fine": "ok", "neg": "review", "same": "suppress", "zero": "review"}
    assert not chk.cells.set_index("g").loc[["fine", "neg", "zero"], "fail_all_same"].any()
    assert chk.verdict() == "review"
    # negative contributions count by absolute value in dominance: |-100| dominates
    dom = check_table(units_table({"n": [-100.0] + [1.0] * 10}), by="g", value="x", stat="sum")
    assert dom.cells["fail_dominance"].item()


# ----------------------------------------------------------------------------- median
def test_median_units_each_side():
    # n distinct values 1..n: units strictly below the median = units above = floor(n/2)
    micro = units_table({"n19": list(range(1, 20)), "n20": list(range(1, 21)), "n21": list(range(1, 22))})
    chk = check_table(micro, by=["g"], value="x", stat="median")
    c = chk.cells.set_index("g")
    assert c["value"].to_dict() == {"n19": 10.0, "n20": 10.5, "n21": 11.0}
    assert c["n_below"].to_dict() == {"n19": 9, "n20": 10, "n21": 10}
    assert verdicts(chk) == {"n19": "suppress", "n20": "ok", "n21": "ok"}


def test_median_ties_and_straddling_units():
    # 24 units: 1..9, five at 10, 11..20 -> median 10, only 9 strictly below -> fails
    tied = units_table({"t": list(range(1, 10)) + [10] * 5 + list(range(11, 21))})
    chk = check_table(tied, by="g", value="x", stat="median")
    assert chk.table["value"].item() == 10
    assert chk.cells["n_below"].item() == 9 and chk.cells["n_above"].item() == 10
    assert not chk.ok
    # a unit with rows on both sides counts on neither side
    base = units_table({"s": list(range(1, 11)) + list(range(12, 22))})  # 20 units, median 11
    straddle = pd.DataFrame({"g": "s", "be_id": "S", "x": [0.5, 30.0]})
    chk2 = check_table(pd.concat([base, straddle]), by="g", value="x", stat="median")
    assert chk2.table["value"].item() == 11
    assert (chk2.cells["n_below"].item(), chk2.cells["n_above"].item()) == (10, 10)
    assert chk2.cells["n_units"].item() == 21


def test_quantile_each_side():
    micro = units_table({"a": list(range(1, 41))})  # 40 units; q=0.25 -> 10.75: 10 below, 30 above
    assert check_table(micro, by="g", value="x", stat="quantile", q=0.25).ok
    chk = check_table(micro, by="g", value="x", stat="quantile", q=0.2)  # 8.8: 8 below
    assert not chk.ok and chk.cells["n_below"].item() == 8


# ----------------------------------------------------------------------------- share
def test_share_rules():
    # a share is a frequency table: numerator and complement each need min_units firms (issue 13)
    micro = units_table({
        "n9": [1, 0] * 4 + [1],
        "n10": [1, 0] * 5,
        "both10": [1, 0] * 10,
        "num9": [1] * 9 + [0] * 30,
        "comp9": [1] * 30 + [0] * 9,
        "all": [1] * 12,
        "none": [0] * 12,
    })
    chk = check_table(micro, by=["g"], value="x", stat="share")
    c = chk.cells.set_index("g")
    assert c.loc["n10", "value"] == 0.5
    assert verdicts(chk) == {"all": "suppress", "both10": "ok", "comp9": "suppress", "n10": "suppress",
                             "n9": "suppress", "none": "suppress", "num9": "suppress"}
    assert c.loc["num9", "fail_numerator"] and not c.loc["num9", "fail_complement"]
    assert c.loc["comp9", "fail_complement"] and not c.loc["comp9", "fail_numerator"]
    bad = micro.assign(x=micro["x"] * 2)
    with pytest.raises(ValueError, match="0/1"):
        check_table(bad, by=["g"], value="x", stat="share")


# ----------------------------------------------------------------------------- secondary suppression
def test_secondary_suppression_hand_table():
    m = np.array([[3, 20, 30], [15, 40, 50], [25, 35, 60]])
    chk = check_table(count_micro(m), by=["r", "c"], stat="count", margins=True, name="hand")
    pub = chk.suppress()
    supp = set(map(tuple, pub.loc[pub["n_units"].isna(), ["r", "c"]].to_numpy().tolist()))
    # independent: the cheapest rectangle through (r0, c0) (sum of the three other cells' units)
    best = min(
        ((m[0, j] + m[i, 0] + m[i, j]), i, j) for i in (1, 2) for j in (1, 2)
    )
    _, i, j = best
    assert supp == {("r0", "c0"), ("r0", f"c{j}"), (f"r{i}", "c0"), (f"r{i}", f"c{j}")}
    assert chk.n_primary == 1 and chk.n_secondary == 3
    assert recoverable_cells(pub) == [] and single_unknown_lines(pub) == []
    # totals come from the rows, and are published
    assert pub.loc[(pub["r"] == "Total") & (pub["c"] == "Total"), "n_units"].item() == m.sum()


def test_secondary_suppression_catches_bridge_between_cycles():
    # Primary cells form two suppressed 2x2 blocks joined by (r0, c2): every line
    # has >= 2 unknowns, yet (r0,c2) = R0 + R1 - C0 - C1 + known cells.
    m = np.full((4, 4), 40)
    for rc in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3), (0, 2)]:
        m[rc] = 5
    chk = check_table(count_micro(m), by=["r", "c"], stat="count", margins=True)
    pub = chk.suppress()
    assert chk.n_primary == 9
    assert chk.n_secondary >= 1
    assert recoverable_cells(pub) == []


@pytest.mark.parametrize("seed", range(12))
def test_secondary_suppression_random_tables(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(2, 6, size=2))
    m = rng.integers(10, 60, size=shape)
    small = rng.random(shape) < 0.25
    m[small] = rng.integers(1, 10, size=small.sum())
    chk = check_table(count_micro(m), by=["r", "c"], stat="count", margins=True)
    pub = chk.suppress()
    cells = chk.cells
    primary = cells["suppression"] == "primary"
    # every primary cell (including totals under 10 units) is blanked
    assert pub.loc[primary.to_numpy(), "n_units"].isna().all()
    assert chk.n_primary == int(small.sum()) + int((m.sum(axis=1) < 10).sum()) + int((m.sum(axis=0) < 10).sum())
    assert single_unknown_lines(pub) == []
    assert recoverable_cells(pub) == []


def test_margins_count_units_once():
    # firm F is in both cells of row r0: row total counts it once
    micro = pd.DataFrame({"r": ["r0"] * 2, "c": ["c0", "c1"], "be_id": ["F", "F"]})
    more = count_micro(np.array([[12, 12]]))
    chk = check_table(pd.concat([micro, more]), by=["r", "c"], stat="count", margins=True)
    t = chk.table.set_index(["r", "c"])["n_units"]
    assert t[("r0", "c0")] == 13 and t[("r0", "c1")] == 13 and t[("r0", "Total")] == 25


def test_additive_without_margins_one_dimension():
    micro = units_table({"a": [1] * 5, "b": [1] * 30, "c": [1] * 20})
    plain = check_table(micro, by="g")
    assert plain.n_secondary == 0
    chk = check_table(micro, by="g", additive=True)
    assert verdicts(chk) == {"a": "suppress", "b": "ok", "c": "suppress"}  # c: smallest other cell
    assert chk.cells.set_index("g").loc["c", "suppression"] == "secondary"


# ----------------------------------------------------------------------------- Checked object
def test_checked_is_immutable_and_repr_shows_only_publishable():
    micro = units_table({"a": [123.456] * 3, "b": [7.0 + i for i in range(12)]})
    chk = check_table(micro, by="g", value="x", stat="sum")
    with pytest.raises(dataclasses.FrozenInstanceError):
        chk.name = "x"
    t = chk.table
    t.loc[0, "value"] = -1
    assert chk.table.loc[0, "value"] != -1
    html_ = chk._repr_html_()
    assert "370.368" not in html_ and "150" in html_  # suppressed sum 3*123.456 hidden, b's sum shown
    assert "1 primary" in chk.summary()
    tidy = chk.tidy()
    assert list(tidy.columns) == ["rule", "description", "n_cells", "n_flagged"]
    assert tidy.set_index("rule").loc["fail_min_units", "n_flagged"] == 1


# ----------------------------------------------------------------------------- estimates
def test_check_estimates_thresholds_and_blanking():
    tidy = pd.DataFrame({
        "group": [2018, 2018, 2019, 2019, 2020],
        "time": [2018, 2019, 2019, 2020, 2020],
        "estimate": [0.1, 0.2, 0.3, 0.4, 0.5],
        "std_error": [0.01] * 5,
        "conf_low": [0.0] * 5,
        "conf_high": [1.0] * 5,
        "n_treated": [9, 10, 11, 30, 30],
        "n_control": [50, 50, 50, 9, 10],
    })
    chk = check_estimates(tidy, name="att_gt")
    assert chk.cells["verdict"].tolist() == ["suppress", "ok", "ok", "suppress", "ok"]
    pub = chk.suppress()
    for col in ("estimate", "std_error", "conf_low", "conf_high", "n_treated", "n_control"):
        assert pub[col].isna().tolist() == [True, False, False, True, False]
    assert pub["group"].tolist() == tidy["group"].tolist()
    dof = check_estimates(tidy.assign(df=[9, 10, 11, 100, 100]), "reg", n_treated=None, n_control=None, df_resid="df")
    assert dof.cells["verdict"].tolist() == ["suppress", "ok", "ok", "ok", "ok"]
    missing = check_estimates(tidy.assign(n_treated=[np.nan, 10, 11, 30, 30]), "att")
    assert missing.cells["verdict"].iloc[0] == "suppress"
    with pytest.raises(ValueError, match="n_units_t"):
        check_estimates(tidy, "att", n_treated="n_units_t")


# ----------------------------------------------------------------------------- OutputLog
@pytest.fixture
def mpl():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_output_log_tables_figures_and_report(tmp_path, mpl):
    good = check_table(units_table({"a": [1.0 + i for i in range(12)], "b": [2.0 + i for i in range(15)]}), by="g",
                       value="x", stat="sum", name="good")
    bad = check_table(units_table({"a": [1.0, 2.0, 3.0], "b": [2.0 + i for i in range(15)]}), by="g", value="x", stat="sum",
                      name="bad")
    log = OutputLog(tmp_path, notebook="02_reach")
    pub = log.table(bad, "bad_table")
    written = pd.read_csv(tmp_path / "tables" / "bad_table.csv")
    assert written["value"].isna().tolist() == [True, False]
    pd.testing.assert_frame_equal(written, bad.suppress(), check_dtype=False)
    assert pub["n_units"].isna().tolist() == [True, False]

    fig, ax = mpl.subplots()
    ax.bar(["a", "b"], [1, 2])
    assert log.figure(fig, good, "good_fig") == tmp_path / "figures" / "good_fig.png"
    assert (tmp_path / "figures" / "good_fig.png").exists()
    fig2, _ = mpl.subplots()
    assert log.figure(fig2, bad, "bad_fig") is None
    assert not (tmp_path / "figures" / "bad_fig.png").exists()
    assert "not written" in log.why("bad_fig")
    assert not mpl.fignum_exists(fig2.number)  # refused figure closed: not rendered inline
    fig3, _ = mpl.subplots()
    assert log.figure(fig3, [good, bad], "from_suppressed", drawn_from_suppressed=True) is not None

    rep = pd.read_csv(tmp_path / "disclosure_report.csv", dtype=str, keep_default_na=False)
    assert list(rep.columns) == list(REPORT_COLUMNS)
    assert rep["object"].tolist() == ["bad_table", "good_fig", "bad_fig", "from_suppressed"]
    r = rep.set_index("object")
    assert r.loc["bad_table", "file"] == "tables/bad_table.csv"
    assert r.loc["bad_table", "n_suppressed_primary"] == "1" and r.loc["bad_table", "verdict"] == "suppressed"
    assert r.loc["bad_table", "rules_failed"] == "min_units"  # 3 equal units: top-2 share 2/3, p-ratio 1
    assert r.loc["bad_table", "suppressed_cells"] == "g=a [min_units]"
    assert r.loc["good_fig", "verdict"] == "ok" and r.loc["good_fig", "kind"] == "figure"
    assert r.loc["bad_fig", "verdict"] == "not_written" and r.loc["bad_fig", "file"] == ""
    assert r.loc["from_suppressed", "n_cells"] == "4"
    # no unit counts of suppressed cells in the report (the 3 of cell a)
    assert "=3" not in (tmp_path / "disclosure_report.csv").read_text()


def test_table_and_figure_of_one_name_keep_both_rows(tmp_path, mpl):
    good = check_table(units_table({"a": [1.0 + i for i in range(12)], "b": [2.0 + i for i in range(15)]}), by="g",
                       value="x", stat="sum", name="good")
    log = OutputLog(tmp_path, notebook="04_effects")
    log.table(good, "event_study")
    fig, _ = mpl.subplots()
    log.figure(fig, good, "event_study")
    log.table(good, "event_study")  # written again: replaces only the table's row
    rep = pd.read_csv(tmp_path / "disclosure_report.csv", dtype=str, keep_default_na=False)
    assert sorted(rep["file"]) == ["figures/event_study.png", "tables/event_study.csv"]


def test_output_log_reruns_give_identical_report(tmp_path):
    chk = check_table(units_table({"a": [1.0 + i for i in range(12)]}), by="g", value="x", stat="sum", name="t")
    est = check_estimates(pd.DataFrame({"estimate": [0.1], "n_treated": [20], "n_control": [20]}), "e")

    def run():
        a = OutputLog(tmp_path, notebook="02_reach")
        a.table(chk, "t1")
        b = OutputLog(tmp_path, notebook="04_effects")
        b.table(est, "att")
        b.table(est, "att")  # re-executed cell: replaced, not duplicated
        return (tmp_path / "disclosure_report.csv").read_bytes()

    first = run()
    second = run()
    assert first == second
    rep = pd.read_csv(tmp_path / "disclosure_report.csv")
    assert rep["object"].tolist() == ["t1", "att"]
    # re-running one notebook alone keeps the report in notebook order
    OutputLog(tmp_path, notebook="02_reach").table(chk, "t1")
    assert (tmp_path / "disclosure_report.csv").read_bytes() == first
    with pytest.raises(ValueError, match="object name"):
        OutputLog(tmp_path, notebook="x").table(chk, "../escape")
    with pytest.raises(TypeError, match="check_table"):
        OutputLog(tmp_path, notebook="x").table(chk.table, "raw")


# ----------------------------------------------------------------------------- identifier scan
def test_scan_finds_planted_ids_in_every_format(tmp_path):
    kvk = ["01234567", "87654321", "00012345"]
    be = ["0123456789", "98765432101", "000004321"]
    (tmp_path / "t.csv").write_text("a,b\n2019,01234567\n3,4\n", encoding="utf-8")
    (tmp_path / "n.ipynb").write_text(json.dumps({"cells": [{"source": ["firm 8765 4321 joined"]}]}), encoding="utf-8")
    (tmp_path / "p.html").write_text("<td>987.654.321.01</td><td>1.23.45.67</td>", encoding="utf-8")
    (tmp_path / "q.md").write_text("id 123456789 in text", encoding="utf-8")
    (tmp_path / "r.json").write_text('{"x": "1234&nbsp;567"}', encoding="utf-8")
    (tmp_path / "img.png").write_bytes(b"01234567")  # not a text output: skipped
    p = lambda n: (tmp_path / n).as_posix()  # noqa: E731
    hk = scan_for_identifiers(tmp_path, kvk, kind="kvk")
    got = set(map(tuple, hk[["file", "identifier", "form"]].to_numpy().tolist()))
    assert got == {
        (p("t.csv"), "01234567", "as_is"),
        (p("n.ipynb"), "87654321", "separated"),   # 8765 4321
        (p("p.html"), "01234567", "separated"),    # 1.23.45.67 = 1234567 = 01234567 without its zero
        (p("r.json"), "01234567", "separated"),    # 1234&nbsp;567
    }  # q.md's 123456789 is another (longer) number; 00012345 -> '12345' too short to search
    hb = scan_for_identifiers(tmp_path, be, kind="be_id")
    gotb = set(map(tuple, hb[["file", "identifier", "form"]].to_numpy().tolist()))
    assert gotb == {
        (p("q.md"), "0123456789", "no_leading_zeros"),
        (p("p.html"), "98765432101", "separated"),
    }
    # kvk given as int without its leading zero is restored to 8 digits
    assert set(scan_for_identifiers(tmp_path, [1234567], kind="kvk")["identifier"]) == {"01234567"}
    assert list(hb.columns) == ["file", "identifier", "form", "n"]


def test_scan_ignores_unrelated_numbers(tmp_path):
    ids = ["12345678", "00012345"]  # stripped '12345' is too short to search
    text = (
        "912345678 123456789 12345 2019 2020 0.5 3.14159 1234567 "  # longer runs / short numbers
        "1.234.567.8901 12-34-56-78 12345678901234 "
    )
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    assert scan_for_identifiers(tmp_path, ids).empty
    (tmp_path / "b.txt").write_text("x 12345678 2019", encoding="utf-8")  # id next to a year
    hits = scan_for_identifiers([tmp_path / "b.txt"], ids)
    assert hits[["identifier", "form", "n"]].to_numpy().tolist() == [["12345678", "as_is", 1]]
    with pytest.raises(ValueError, match="digit strings"):
        scan_for_identifiers(tmp_path, ["12AB5678"])
    with pytest.raises(ValueError, match="kind"):
        scan_for_identifiers(tmp_path, ids, kind="bsn")


def test_scan_decimal_numbers_are_not_split_identifiers(tmp_path):
    """Seen at 2M firms: 04's estimate table printed a test statistic "101.9262", whose digits are the KvK
    number 01019262 without its leading zero; the runner quarantined a correct report. One dot between two
    digit groups is a decimal number; the same digits split by spaces or by several dots still hit."""
    ids = ["01019262", "87654321"]
    (tmp_path / "est.html").write_text("<td>101.9262</td><td>1019.262</td><td>8765.4321</td>", encoding="utf-8")
    assert scan_for_identifiers(tmp_path, ids, kind="kvk").empty
    (tmp_path / "leak.txt").write_text("firm 1019 262, firm 1.01.92.62, firm 8765 4321", encoding="utf-8")
    hits = scan_for_identifiers(tmp_path, ids, kind="kvk")
    assert hits[["identifier", "form", "n"]].to_numpy().tolist() == [
        ["01019262", "separated", 2], ["87654321", "separated", 1]]


def test_scan_many_identifiers_big_text(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"{v:09d}" for v in rng.choice(10**9, size=3000, replace=False)]
    planted = ids[::500]
    # ~4 MB of unrelated numbers: 12-digit runs never contain a 9-digit id as a maximal run
    filler = " ".join(f"{v:012d}" for v in rng.integers(10**11, 10**12 - 1, size=300_000))
    body = filler + " " + " ".join(planted) + "\n"
    (tmp_path / "big.csv").write_text(body, encoding="utf-8")
    hits = scan_for_identifiers(tmp_path, ids)
    assert sorted(hits.loc[hits["form"] == "as_is", "identifier"]) == sorted(planted)


def test_output_log_second_instance_keeps_rows_reset_drops_them(tmp_path):
    chk = check_table(units_table({"a": [1.0 + i for i in range(12)]}), by="g", value="x", stat="sum", name="t")
    OutputLog(tmp_path, notebook="03_matching").table(chk, "first")
    OutputLog(tmp_path, notebook="03_matching").table(chk, "second")  # same kernel: keeps "first"
    assert pd.read_csv(tmp_path / "disclosure_report.csv")["object"].tolist() == ["first", "second"]
    OutputLog(tmp_path, notebook="03_matching", reset=True).table(chk, "third")
    assert pd.read_csv(tmp_path / "disclosure_report.csv")["object"].tolist() == ["third"]


def recoverable_nd(pub: pd.DataFrame, by: list[str]) -> list[tuple]:
    """As recoverable_cells, for any number of by-columns (every 1-D line of the hypercube)."""
    keys = list(map(tuple, pub[by].astype(str).to_numpy().tolist()))
    idx = {k: i for i, k in enumerate(keys)}
    eqs = []
    for d in range(len(by)):
        for k in keys:
            if k[d] != "Total":
                continue
            e = np.zeros(len(keys))
            e[idx[k]] = 1
            for other in keys:
                if other[d] != "Total" and all(other[j] == k[j] for j in range(len(by)) if j != d):
                    e[idx[other]] = -1
            eqs.append(e)
    return _recoverable(np.array(eqs), pub, keys)


@pytest.mark.parametrize("seed", range(4))
def test_secondary_suppression_three_dimensions(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (3, 3, 2)
    m = rng.integers(10, 40, size=shape)
    small = rng.random(shape) < 0.2
    m[small] = rng.integers(1, 10, size=small.sum())
    idx = np.indices(shape).reshape(3, -1)
    reps = m.ravel()
    micro = pd.DataFrame({
        "a": np.repeat(idx[0], reps).astype(str), "b": np.repeat(idx[1], reps).astype(str),
        "y": np.repeat(idx[2], reps).astype(str),
    })
    micro["be_id"] = np.arange(len(micro)).astype(str)
    chk = check_table(micro, by=["a", "b", "y"], stat="count", margins=True)
    pub = chk.suppress()
    assert len(pub) == 4 * 4 * 3  # interior plus every margin
    assert pub.loc[(chk.cells["suppression"] == "primary").to_numpy(), "n_units"].isna().all()
    assert recoverable_nd(pub, ["a", "b", "y"]) == []


def test_join_checked_equals_one_check_and_refuses_dependent_parts():
    rng = np.random.default_rng(3)
    micro = pd.DataFrame({"be_id": [str(i) for i in range(60)], "g": rng.choice(list("abcde"), 60),
                          "x": rng.gamma(2.0, 10.0, 60)})
    whole = check_table(micro, by="g", value="x", stat="sum", name="t")
    parts = [check_table(micro[micro["g"].isin(list(s))], by="g", value="x", stat="sum", name="t") for s in ("ab", "cde")]
    joined = join_checked(parts)
    pd.testing.assert_frame_equal(joined.suppress(), whole.suppress())
    assert joined.cells["verdict"].tolist() == whole.cells["verdict"].tolist()
    with pytest.raises(ValueError, match="cannot join"):
        join_checked([whole, check_table(micro, by="g", value="x", stat="mean", name="t")])


# ----------------------------------------------------------------------------- ACRO cross-check (issue 13)
def _acro_flags(values: np.ndarray) -> bool:
    """ACRO 1.0.1's default table checks of one magnitude cell (acro/default.yaml, acro/sdc_agg_funcs.py of
    github:AI-SDC/ACRO): threshold 10, nk-rule n=2 k=0.90, p-ratio 0.10, all values the same, zeros disclosive."""
    v = np.sort(np.abs(values))[::-1]
    total = v.sum()
    if len(v) < 10:
        return True
    if total == 0:
        return True
    if v[:2].sum() / total > 0.90:
        return True
    if (total - v[0] - v[1]) / v[0] < 0.10:
        return True
    return bool((values == values[0]).all())


@pytest.mark.parametrize("seed", range(5))
def test_reach_is_at_least_as_strict_as_acro_on_magnitude_tables(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(40):
        n = int(rng.integers(1, 25))
        kind = rng.choice(["lognormal", "dominant", "same", "zero"])
        x = {"lognormal": rng.lognormal(10, 1, n), "dominant": np.r_[1e6, rng.uniform(1, 10, n - 1)],
             "same": np.full(n, 500.0), "zero": np.zeros(n)}[kind]
        rows += [{"be_id": f"{g}-{i}", "g": f"g{g:02d}", "x": float(v)} for i, v in enumerate(x)]
    micro = pd.DataFrame(rows)
    for stat in ("sum", "mean"):
        chk = check_table(micro, by="g", value="x", stat=stat)
        cells = chk.cells.set_index("g")
        for g, part in micro.groupby("g"):
            if _acro_flags(part["x"].to_numpy()):
                assert cells.loc[g, "verdict"] in ("suppress", "review"), (stat, g)
    # frequency tables: ACRO's threshold rule on counts
    counts = check_table(micro, by="g", stat="count").cells.set_index("g")
    for g, part in micro.groupby("g"):
        if len(part) < 10:
            assert counts.loc[g, "verdict"] == "suppress"


def test_identifier_scan_ignores_sha256_digests(tmp_path):
    """A checksum file's hex digest can hold a digit run equal to a KvK number by chance: not a leak.
    The same number in a table is still found."""
    from reach.disclosure import scan_for_identifiers

    (tmp_path / "manifest.json.txt").write_text("a" * 20 + "07546635" + "b" * 36, encoding="utf-8")
    (tmp_path / "t.csv").write_text("x\n7546635\n", encoding="utf-8")
    hits = scan_for_identifiers(tmp_path, ["07546635"], kind="kvk")
    assert [p.split("/")[-1] for p in hits["file"]] == ["t.csv"]


def test_identifier_scan_ignores_file_sizes_in_json_records(tmp_path):
    """At register scale a file's byte size in manifest.json (26,128,107 bytes) equals a KvK number by chance:
    file metadata is not a leak; the same number as any other JSON value, or in a table, still is."""
    import json

    from reach.disclosure import scan_for_identifiers

    (tmp_path / "manifest.json").write_text(json.dumps({"inputs": [{"path": "IHG/x.sav", "size": 26128107,
                                                                    "seconds": 26128107.0}]}), encoding="utf-8")
    (tmp_path / "headline.json").write_text(json.dumps({"n_firms": 26128107}), encoding="utf-8")
    (tmp_path / "t.csv").write_text("size\n26128107\n", encoding="utf-8")
    hits = scan_for_identifiers(tmp_path, ["26128107"], kind="kvk")
    assert sorted(p.split("/")[-1] for p in hits["file"]) == ["headline.json", "t.csv"]


@pytest.mark.parametrize("seed", range(3))
def test_reach_is_at_least_as_strict_as_the_real_acro(seed):
    """The same cross-check against ACRO itself (PyPI ``acro`` 1.0.2) where it is installed.

    ``pip install acro`` downgrades pandas (it pins ``pandas<=2.3.3``), so ACRO is no test dependency; with
    ``pip install --no-deps acro tabulate lxml rdflib`` (checked with pandas 3.1) it imports and runs.
    Every cell ACRO suppresses (frequency threshold; mean: threshold, nk-rule, p-ratio, all values the same)
    must be suppressed or go to review in reach.
    """
    acro = pytest.importorskip("acro")
    import logging

    logging.getLogger("acro").setLevel(logging.ERROR)
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(8):
        for h in range(3):
            n = int(rng.integers(1, 30))
            kind = rng.choice(["lognormal", "dominant", "same"])
            x = {"lognormal": rng.lognormal(10, 1, n), "dominant": np.r_[1e6, rng.uniform(1, 10, n - 1)],
                 "same": np.full(n, 500.0)}[kind]
            rows += [{"be_id": f"{g}-{h}-{i}", "g": f"g{g}", "h": f"h{h}", "x": float(v)} for i, v in enumerate(x)]
    micro = pd.DataFrame(rows)
    session = acro.ACRO(suppress=True)
    counts = session.crosstab(micro["g"], micro["h"])
    means = session.crosstab(micro["g"], micro["h"], values=micro["x"], aggfunc="mean")
    for table, stat in ((counts, "count"), (means, "mean")):
        chk = check_table(micro, by=["g", "h"], value=None if stat == "count" else "x", stat=stat)
        verdict = chk.cells.set_index(["g", "h"])["verdict"]
        for g in table.index:
            for h in table.columns:
                if pd.isna(table.loc[g, h]):
                    assert verdict.loc[(g, h)] in ("suppress", "review"), (stat, g, h)


def _additive_table():
    sizes = {("x", 1): 5, ("x", 2): 12, ("x", 3): 20, ("y", 1): 11, ("y", 2): 30, ("y", 3): 40}
    rows, k = [], 0
    for (g, b), n in sizes.items():
        for _ in range(n):
            rows.append({"be_id": f"u{k}", "g": g, "b": b})
            k += 1
    return pd.DataFrame(rows)


def test_additive_along_named_columns_only():
    """additive=["b"]: the groups' totals are published elsewhere, the bins' totals over groups are not."""
    df = _additive_table()
    along_b = check_table(df, by=["g", "b"], stat="count", name="hist", additive=["b"]).cells
    sup = {(r.g, r.b) for r in along_b.itertuples() if r.verdict == "suppress"}
    # the lone small bin of group x and the cheapest other bin of x; group y untouched
    assert sup == {("x", 1), ("x", 2)}
    assert set(along_b.loc[along_b.verdict == "suppress", "suppression"]) == {"primary", "secondary"}
    # every line with a known total (a group's bins) has no suppressed cell or at least two
    assert along_b[along_b.verdict == "suppress"].groupby("g").size().min() >= 2
    # with totals along every by-column, the bin columns are lines too: more cells go
    every = check_table(df, by=["g", "b"], stat="count", name="hist", additive=True).cells
    assert (every.verdict == "suppress").sum() > len(sup)


def test_additive_names_by_columns():
    with pytest.raises(ValueError, match=r"additive must be True/False or by-columns.*\['g', 'b'\].*'zzz'"):
        check_table(_additive_table(), by=["g", "b"], stat="count", name="hist", additive=["zzz"])


def test_scan_leaves_out_pictures_and_decodes_other_encoded_payloads(tmp_path):
    """Seen at 2M firms (tinl.yaml-like run): a PNG embedded in 04_effects_nlw held "+3993759w" in its base64,
    the KvK number 03993759 without its leading zero, and the runner quarantined the report and failed the run.
    Pictures and PDFs (data URIs, notebook image outputs) are not text; SVG pictures neither (the report
    template's icons are base64 SVGs whose path coordinates read as split identifiers once decoded); a payload
    that is text (a CSV or JSON data URI) is decoded and searched, so an identifier cannot hide in it."""
    import base64
    import json

    ids = ["03993759", "12345678"]
    png = "iVBORw0KGgoAAAANSUhEUgXpW4L7/8Uti+3993759woIFC4SioiLltlOnTgnz588X+12345678w=="
    (tmp_path / "r.html").write_text(f'<img src="data:image/png;base64,{png}"><p>2019</p>', encoding="utf-8")
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "display_data", "data": {
        "image/png": png + "\n", "text/plain": ["<Figure size 640x480 with 1 Axes>"]}}]}]}
    (tmp_path / "r.ipynb").write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert scan_for_identifiers(tmp_path, ids, kind="kvk").empty
    # the same digits as text are found (the scan itself is unchanged)
    (tmp_path / "t.html").write_text("<p>firm 3993759 exported</p>", encoding="utf-8")
    hits = scan_for_identifiers(tmp_path, ids, kind="kvk")
    assert hits[["file", "identifier", "form"]].to_numpy().tolist() == [
        [(tmp_path / "t.html").as_posix(), "03993759", "no_leading_zeros"]]
    (tmp_path / "t.html").unlink()
    # encoded text is decoded and searched (a CSV or JSON data URI); an SVG icon's coordinates are not read
    csv = base64.b64encode(b"kvk\n12345678\n").decode()
    js = base64.b64encode(b'{"kvk": "03993759"}').decode()
    svg = base64.b64encode(b'<svg><path d="M 0 8 99 13 01 L 3 99 37 59"/></svg>').decode()
    (tmp_path / "d.html").write_text(f'<a href="data:text/csv;base64,{csv}">x</a><img src="data:image/svg+xml;base64,{svg}">'
                                     f'<a href="data:application/json;charset=utf-8;base64,{js}">y</a>', encoding="utf-8")
    hits = scan_for_identifiers(tmp_path, ids, kind="kvk")
    assert sorted(hits["identifier"]) == ["03993759", "12345678"] and set(hits["file"]) == {(tmp_path / "d.html").as_posix()}
    assert scan_for_identifiers(tmp_path, ["08991301"], kind="kvk").empty  # the SVG's "0 8 99 13 01"
    # a notebook's text outputs are still searched
    nb["cells"][0]["outputs"][0]["data"]["text/plain"] = ["12345678"]
    (tmp_path / "d.html").unlink()
    (tmp_path / "r.ipynb").write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert scan_for_identifiers(tmp_path, ids, kind="kvk")["identifier"].tolist() == ["12345678"]
