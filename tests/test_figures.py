"""Figures a reviewer reads (issue 14): no legend over data, firms behind each point, a note on one-firm points.

Every library plotting function is drawn on small synthetic data and read back through
matplotlib's renderer (:func:`reach.report.legend_overlaps`: the legend's box in display pixels
against every data vertex, bar and text). The dominance note is tested on a series where one
firm is planted to hold most of one point's total.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests draw off-screen; the library itself never switches the backend

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from reach import indicators as ind
from reach import labels
from reach.disclosure import Rules, check_table
from reach.report import (DOMINANT_SHARE, dominance_note, dominated_cells, legend_overlaps, place_legend,
                          tidy_legends)
from test_indicators import COMMON, _link, _panel


def _all_texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


# --------------------------------------------------------------------------- the overlap check itself
def test_overlap_check_sees_a_legend_over_points_and_place_legend_finds_a_free_corner():
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    x = np.linspace(0, 1, 30)
    ax.plot(x, x, "o-", label="rising")  # the diagonal: upper left and lower right are free
    ax.legend(loc="upper right")  # ... but not upper right, where the line ends
    assert legend_overlaps(fig), "a legend on the line's last points must be seen"
    leg = place_legend(ax)
    assert leg is not None and legend_overlaps(fig) == []
    assert leg._loc in (2, 4)  # upper left or lower right


def test_place_legend_goes_outside_when_every_corner_is_taken():
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    gx, gy = np.meshgrid(np.linspace(0, 1, 25), np.linspace(0, 1, 25))  # points everywhere
    ax.scatter(gx.ravel(), gy.ravel(), s=4, label="everywhere")
    ax.plot([0, 1], [0.5, 0.5], label="a line")
    place_legend(ax)
    fig.tight_layout()
    assert legend_overlaps(fig) == []
    box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= ax.get_window_extent().x1  # beside the axes, not on them


def test_a_wide_legend_that_fits_no_corner_leaves_the_axes_their_width():
    """At 2M firms 02's instrument-use chart found no free corner for its legend (three entries in one row, group
    sizes of five digits in the labels): placed beside the axes in that row, it took most of the figure and the
    category labels overlapped. The chart drawn by the library from such published shares:"""
    import types

    from reach.indicators import ALL, INSTRUMENT_CATEGORIES, PRIOR_USE, _data_after, _draw_after

    tot = {ALL: 64000, PRIOR_USE[0]: 30806, PRIOR_USE[1]: 33194}
    shares = {ALL: [0.52, 0.28, 0.05, 0.14], PRIOR_USE[0]: [0.42, 0.30, 0.11, 0.17],
              PRIOR_USE[1]: [0.62, 0.26, 0.0, 0.12]}
    rows = [{"prior_use": p, "category": ALL, "value": n, "share": 1.0} for p, n in tot.items()]
    rows += [{"prior_use": p, "category": c, "value": s * tot[p], "share": s}
             for p in tot for c, s in zip(INSTRUMENT_CATEGORIES, shares[p])]
    r = types.SimpleNamespace(published=pd.DataFrame(rows))
    fig = _draw_after(r, _data_after(r), "NLinBusiness")
    ax, rend = fig.axes[0], fig.canvas.get_renderer()
    assert legend_overlaps(fig) == []
    assert ax.get_window_extent(rend).width >= 0.6 * fig.bbox.width  # was 0.23
    ticks = [t.get_window_extent(rend) for t in ax.get_xticklabels() if t.get_text()]
    assert len(ticks) == 4 and all(a.x1 <= b.x0 for a, b in zip(ticks, ticks[1:])), "category labels overlap"


def test_a_legend_beside_the_axes_is_one_column_and_narrow_else_below():
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    gx, gy = np.meshgrid(np.linspace(0, 1, 25), np.linspace(0, 1, 25))  # no corner is free
    ax.scatter(gx.ravel(), gy.ravel(), s=4, label="a")
    ax.plot([0, 1], [0.5, 0.5], label="b")
    leg = place_legend(ax, ncol=2)
    fig.tight_layout()
    r = fig.canvas.get_renderer()
    assert leg._ncols == 1 and leg.get_window_extent(r).x0 >= ax.get_window_extent(r).x1  # short: beside
    fig2 = Figure(figsize=(10, 4))
    ax2 = fig2.subplots()
    ax2.scatter(gx.ravel(), gy.ravel(), s=4, label="a label long enough to take a fifth of the figure: " * 2)
    leg2 = place_legend(ax2)
    fig2.tight_layout()
    r2 = fig2.canvas.get_renderer()
    assert leg2.get_window_extent(r2).y1 <= ax2.get_window_extent(r2).y0  # too wide beside: below
    assert legend_overlaps(fig2) == []


def test_tidy_legends_moves_only_legends_over_data():
    fig = Figure(figsize=(8, 3))
    left, right = fig.subplots(1, 2)
    left.plot([0, 1], [0, 1], "o-", label="a")
    left.legend(loc="lower right")  # free on a rising line
    x = np.linspace(0, 1, 21)
    right.plot(x, 1 - (x - 0.5) ** 2, "o", label="a peak in the middle")
    right.set_ylim(0.7, 1.01)
    right.legend(loc="upper center")  # on the peak
    assert len(legend_overlaps(fig)) == 1
    assert tidy_legends(fig) == 1
    assert legend_overlaps(fig) == []


def _inside_figure(fig) -> list[str]:
    """Titles (axes and figure) and legends whose box reaches past the figure's edges, in display pixels."""
    r = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    items = [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title) if t.get_text()]
    items += [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out = []
    for it in items:
        b = it.get_window_extent(r)
        if b.x0 < -0.5 or b.y0 < -0.5 or b.x1 > W + 0.5 or b.y1 > H + 0.5:
            out.append(getattr(it, "get_text", lambda: "legend")())
    return out


def test_an_exported_figure_keeps_a_title_wider_than_the_figure_inside_it(tmp_path):
    """The stub's nlw love plot: programme name and matching method in the title, axes pushed right by the
    covariate labels; the exported PNG (the figure's own canvas) cut the title at the right edge."""
    import matplotlib.image as mpimg

    from reach.disclosure import OutputLog
    from reach.matching_report import love_plot
    from reach.report import fit_titles, show_figure

    bal = pd.DataFrame({"variable": ["log_exports_lag1", "n_dest_lag1", "instr_ever_before", "distance"],
                        "smd_before": [0.4, 0.3, 0.2, 0.5], "smd_after": [0.01, 0.02, 0.01, 0.03]})
    title = "NLWorks: covariate balance (all cohorts, nearest-neighbour matching on the propensity score)"
    fig = love_plot(bal, title=title)
    fig.canvas.draw()
    assert _inside_figure(fig) == [title], "the plot this test is about: its title reaches past the edge"
    micro = pd.DataFrame({"be_id": np.arange(60), "group": np.repeat(["users", "others"], 30)})
    checked = check_table(micro, by=["group"], rules=Rules(min_units=10), name="balance")
    path = show_figure(OutputLog(tmp_path, notebook="03_matching"), fig, checked, "nlw_love_plot")
    assert path is not None and _inside_figure(fig) == []
    assert " ".join(fig.axes[0].get_title().split()) == title  # wrapped between words, nothing lost
    assert 1 <= fig.axes[0].get_title().count("\n") <= 2  # a few lines, not a word per line
    png = mpimg.imread(path)
    # the export is the whole canvas checked above (no tight crop that would hide a cut title)
    assert png.shape[1] / png.shape[0] == pytest.approx(fig.bbox.width / fig.bbox.height, rel=0.01)
    small = Figure(figsize=(5, 3))
    small.subplots().set_title("fits")
    assert fit_titles(small) == 0 and small.axes[0].get_title() == "fits"


def test_tidy_legends_lays_out_again_a_figure_laid_out_before():
    """A figure laid out once with tight_layout holds a placeholder layout engine, not None: a legend moved
    beside the axes afterwards must still get its room (it was outside the canvas, cut from the PNG)."""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    gx, gy = np.meshgrid(np.linspace(0, 1, 25), np.linspace(0, 1, 25))  # no corner is free
    ax.scatter(gx.ravel(), gy.ravel(), s=4, label="everywhere")
    ax.legend(loc="upper right")
    fig.tight_layout()
    assert fig.get_layout_engine() is not None
    assert tidy_legends(fig) == 1
    fig.canvas.draw()
    assert legend_overlaps(fig) == [] and _inside_figure(fig) == []


# --------------------------------------------------------------------------- every library plotting function
@pytest.fixture(scope="module")
def panel():
    return _panel()


@pytest.mark.parametrize("name", ["international_activity", "growth_market_presence", "target_group_fit",
                                  "prior_instrument_use", "instrument_use_after", "regional_reach", "export_values",
                                  "participant_counts"])
def test_reach_figures_have_no_legend_over_data(panel, name):
    link = _link()
    calls = {
        "international_activity": lambda: ind.international_activity(panel, "p", **COMMON),
        "growth_market_presence": lambda: ind.growth_market_presence(panel, "p", ["CN", "TR"], **COMMON),
        "target_group_fit": lambda: ind.target_group_fit(panel, "p", rules=COMMON["rules"]),
        "prior_instrument_use": lambda: ind.prior_instrument_use(panel, "p", **COMMON),
        "instrument_use_after": lambda: ind.instrument_use_after(panel, "p", reach_window=5, last_year=2023,
                                                                 rules=COMMON["rules"]),
        "regional_reach": lambda: ind.regional_reach(panel, "t", link, rules=Rules(min_units=5)),
        "export_values": lambda: ind.export_values(panel, "p", **COMMON),
        "participant_counts": lambda: ind.participant_counts(link, "t", rules=Rules(min_units=5)),
    }
    r = calls[name]()
    if not r.plottable:
        pytest.skip(f"{name}: nothing publishable on the synthetic panel")
    fig = r.figure("P")
    assert legend_overlaps(fig) == [], name
    text = _all_texts(fig)
    assert "size_class" not in text and "organiser_region" not in text  # plain names, not codes


def test_regional_reach_n_counts_what_it_plots(panel):
    """The bars are shares of participations: the n beside them counts participations (firms in brackets)."""
    r = ind.regional_reach(panel, "t", _link(), rules=Rules(min_units=5))
    fig = r.figure("T")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    # 12 firms in a1 (two persons each count once) + 6 of them in a2: 18 participations of 12 firms
    assert "all organisers (n=18 participations, 12 firms)" in ticks
    assert "Zuid-Holland (n suppressed)" in ticks  # every firm from the own region: the complement is too small


def test_instrument_use_after_labels_an_impossible_bar_not_possible(panel):
    """'several, not more than before' cannot happen without earlier registrations: a structural zero."""
    r = ind.instrument_use_after(panel, "p", reach_window=5, last_year=2023, rules=Rules(min_units=3))
    fig = r.figure("P")
    bar_texts = [t.get_text() for t in fig.axes[0].texts]
    assert "not possible" in bar_texts


def test_export_values_state_the_firms_behind_each_point_where_they_vary(panel):
    r = ind.export_values(panel, "p", **COMMON)
    fig = r.figure("P")
    pub = r.published[(r.published["stat"] == "mean") & (r.published["cohort"] == "all")
                      & (r.published["group"] == "users")]
    n = pub["n_units"].dropna().astype(int)
    assert n.nunique() > 1  # the synthetic cohorts enter in different years
    annotated = [t.get_text() for t in fig.axes[0].texts]
    for v in n.unique():
        assert f"{v:,}" in annotated
    assert "firms behind each point" in _all_texts(fig)


def test_waterfall_figure_plain_labels_and_legend():
    from reach.link import BUCKETS, waterfall_figure

    rows = [("a", b, v) for b, v in zip(BUCKETS, [30, np.nan, None, 40, np.nan, 25, 500])]
    rows += [("b", b, v) for b, v in zip(BUCKETS, [12, 15, None, 60, 44, 20, 700])]
    pub = pd.DataFrame([r for r in rows if r[2] is not None], columns=["programme", "bucket", "value"])
    fig = waterfall_figure(pub, names={"a": "Programme A", "b": "Programme B"})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [labels.bucket(b) for b in BUCKETS[::-1]]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["Programme A", "Programme B"]
    notes = [t.get_text().strip() for t in ax.texts]
    assert notes.count("suppressed") == 2 and notes.count("0") == 2  # a cell of the check vs a bucket nobody reached
    assert legend_overlaps(fig) == []


def test_matching_figures_have_no_legend_over_data():
    from reach.matching_report import love_plot, overlap_plot

    bal = pd.DataFrame({"variable": ["log_exports_lag1", "n_dest_lag1", "instr_ever_before", "distance"],
                        "smd_before": [2.8, 0.9, 0.4, 1.9], "smd_after": [0.05, 0.02, 0.01, 0.03]})
    fig = love_plot(bal)
    assert legend_overlaps(fig) == []
    assert labels.covariate("log_exports_lag1") in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    bins = np.linspace(0, 0.95, 20)
    tab = pd.concat([pd.DataFrame({"phase": ph, "group": grp, "bin": bins,
                                   "value": np.exp(-((bins - mu) ** 2) / 0.02) * 100 + 10})
                     for ph in ("before", "after") for grp, mu in (("treated", 0.6), ("control", 0.1 if ph == "before" else 0.6))])
    fig = overlap_plot(tab)
    assert legend_overlaps(fig) == []
    assert sorted(t.get_text() for t in fig.axes[1].get_legend().get_texts()) == ["comparison firms", "users"]


def test_event_study_plot_axis_from_the_label_table_counts_and_legend():
    from reach.effects import effect_report

    rng = np.random.default_rng(0)
    n, years = 400, np.arange(2001, 2009)
    g = np.repeat(rng.choice([0, 2004, 2006], n, p=[0.5, 0.25, 0.25]), len(years))
    p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), len(years)), "year": np.tile(years, n), "g_x": g})
    p["log_exports"] = rng.normal(size=len(p)) + 0.3 * ((p["g_x"] > 0) & (p["year"] >= p["g_x"]))
    rep = effect_report(p, "log_exports", programme="x", biters=99)
    fig = rep.figure("X")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Effect on exports (log points)" == labels.effect_axis("log_exports")
    assert legend_overlaps(fig) == []
    n_tr = rep.tables["event_study"].iloc[1:]["n_treated"].dropna().astype(int)
    assert n_tr.nunique() > 1 and {f"{v:,}" for v in n_tr} <= {t.get_text() for t in ax.texts}
    # both comparison counts: every comparison firm and the smallest comparison set of a cell
    cmp_ = rep.tables["comparison"].set_index("method").iloc[0]
    assert cmp_["n_control_all"] == (p.loc[p["g_x"] == 0, "firm_id"].nunique()
                                     + 0)  # never-treated comparison: the never users
    assert cmp_["n_control_all"] >= cmp_["n_control"]
    html = rep.html("comparison")
    assert "comparison firms (all)" in html and "smallest comparison group in a cell" in html
    h = rep.headline()
    assert h["n_control_all"] == cmp_["n_control_all"] and h["n_control_min"] == cmp_["n_control"]


def test_summary_figures_have_no_legend_over_data():
    from reach.summary import compare_programmes

    def eff(b, lo, hi, n):
        return {"simple_att": b, "simple_conf_low": lo, "simple_conf_high": hi, "detectable": lo > 0,
                "n_treated": n, "n_control_all": 5 * n, "n_control_min": n // 2}

    heads = {f"effects_{p}": {"outcomes": {"log_exports": {"matched": eff(b, b - 0.1, b + 0.1, 300),
                                                           "full": eff(b / 2, b / 2 - 0.2, b / 2 + 0.2, 320)}}}
             for p, b in (("a", 0.2), ("b", 0.0))}
    for p in ("a", "b"):
        heads[f"reach_{p}"] = {"n_firms": 300, "share_exporter_before_users": 0.8,
                               "share_exporter_before_comparison": 0.4, "share_in_target_group": 0.3}
    c = compare_programmes(heads, ["a", "b"], names={"a": "A", "b": "B"})
    for fig in (c.effect_figure(), c.reach_figure()):
        assert legend_overlaps(fig) == []
    table = c.effect_table()
    assert table["comparison firms (all)"].tolist() == ["1,500", "1,600"] * 2
    assert table["smallest comparison group in a cell"].tolist() == ["150", "160"] * 2


# --------------------------------------------------------------------------- one firm behind a point
def test_dominated_cells_on_a_planted_series():
    """Year 3 rests mostly on one firm (planted); the other years are spread evenly: only year 3 is named."""
    rng = np.random.default_rng(1)
    micro = pd.DataFrame({"unit": np.tile(np.arange(40), 5), "year": np.repeat(np.arange(1, 6), 40),
                          "x": rng.uniform(90, 110, 200)})
    micro.loc[(micro["year"] == 3) & (micro["unit"] == 7), "x"] = 3000.0  # 3000 / (3000 + 39 x ~100): ~44%
    c = check_table(micro, by=["year"], unit="unit", value="x", stat="mean", rules=Rules(min_units=10))
    assert c.ok  # it passes the N-k rule (top two < 90%): it is published, and needs a note
    dom = dominated_cells(c)
    assert dom["year"].tolist() == [3] and "unit" not in dom.columns  # the point, never the firm
    assert dominated_cells(c, share=0.5).empty  # the threshold is a parameter
    assert dominance_note(len(dom)).startswith("Ringed point: one firm holds more than a quarter")
    assert DOMINANT_SHARE == 0.25


def test_export_values_figure_rings_a_point_one_firm_dominates(panel):
    """One user's exports planted at ~30x in 2021 (event time +2 of cohort 2019): about a third of that point's total,
    published (the two largest hold < 90%), ringed and noted."""
    p = panel.copy()
    big = (p["be_id"] == "1000000001") & (p["year"] == 2021)
    p.loc[big, "exports"] = 30_000.0
    r = ind.export_values(p, "p", **COMMON)
    dom = dominated_cells(r.checked["mean"])
    assert {(g, int(e)) for g, e, c in zip(dom["group"], dom["event_time"], dom["cohort"].astype(str))
            if c == "all"} == {("users", 2)}
    fig = r.figure("P")
    rings = [c for c in fig.axes[0].collections if c.get_sizes().size and c.get_sizes()[0] > 100]
    assert len(rings) == 1 and rings[0].get_offsets()[:, 0].tolist() == [2.0]
    assert "one firm holds more than a quarter" in _all_texts(fig)
    assert "1000000001" not in _all_texts(fig)
    assert legend_overlaps(fig) == []
    # without the planted firm: no ring, no note
    fig0 = ind.export_values(panel, "p", **COMMON).figure("P")
    assert "one firm holds" not in _all_texts(fig0)


def test_firm_counts_beside_export_points_stay_inside_the_axes():
    """At 2M firms the comparison group's mean exports were a flat line at the bottom of the axes, and the firm
    counts written under its points (1,286,959 ...) ran across the bottom spine; the users' count above the
    highest point touched the top one. Every count now lies inside the axes."""
    import types

    from reach.indicators import COMPARISON, USERS, _draw_exports

    ev = np.arange(-5, 6)
    users = 670.0 * 1.18 ** (ev + 5)  # rising steeply, highest point at the top edge
    comp = 70.0 + 4 * (ev + 5)          # flat at the bottom edge
    rows = []
    for stat in ("mean", "median"):
        for grp, y, n in ((USERS, users, np.r_[54000, [72000] * 6, 54000, 36000, 36000, 18000]),
                          (COMPARISON, comp, 1_286_959 + 35_000 * np.arange(11))):
            rows += [{"stat": stat, "group": grp, "cohort": "all", "event_time": e, "value": 1000.0 * v,
                      "n_units": float(k), "group_label": grp} for e, v, k in zip(ev, y, n)]
    fig = _draw_exports(types.SimpleNamespace(checked={}), pd.DataFrame(rows), "T")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(r)
        assert len(ax.texts) == 22
        for t in ax.texts:
            b = t.get_window_extent(r)
            assert box.y0 <= b.y0 and b.y1 <= box.y1, (t.get_text(), b, box)
