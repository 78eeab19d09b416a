"""One result shape (issue 19): the column core of every estimate and count table, one display.

Every public estimate table starts with ``reach._display.ESTIMATE_CORE`` (``term, estimate,
std_error, statistic, p_value, conf_low, conf_high, n_treated, n_control``); count tables end
their leading block with ``n_units, value``. Every result displays itself from ``summary()``:
no repr prints a DataFrame or a firm identifier. No library module switches matplotlib's backend.

The did results are listed here too; they pass once ``reach.did`` adopts the core (issue 19,
did part), and are deliberately not marked xfail.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reach import did
from reach._display import COUNT_CORE, ESTIMATE_CORE, ResultDisplay, count_table, estimate_table, has_core
from reach.compare import compare_runs
from reach.heterogeneity import heterogeneity
from reach.matching import att, match, match_cohorts
from reach.power import analytic_mde, placebo
from reach.report import record_headline
from reach.sensitivity import sensitivity_results

SRC = Path(__file__).resolve().parents[1] / "src" / "reach"
YEARS = np.arange(2014, 2020)
ID_PREFIX = "firm_"  # firm identifiers of the cross-section: must never appear in a display


# --------------------------------------------------------------------------- data
def _panel(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Firm-year panel, cohorts 2017/2018 (60 users each), planted effect 0.3 after first use."""
    rng = np.random.default_rng(seed)
    g = np.zeros(n, dtype=np.int64)
    users = rng.choice(n, 120, replace=False)
    g[users[:60]], g[users[60:]] = 2017, 2018
    T = YEARS.size
    p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "year": np.tile(YEARS, n), "g": np.repeat(g, T)})
    x = rng.normal(size=n)
    p["x"] = np.repeat(x, T) + rng.normal(scale=0.1, size=n * T)
    p["size_class"] = np.repeat(np.where(x > 0, "large", "small"), T)
    post = (p["g"] > 0) & (p["year"] >= p["g"])
    p["y"] = np.repeat(rng.normal(size=n), T) + 0.1 * (p["year"] - 2014) + 0.3 * post + rng.normal(scale=0.5, size=n * T)
    return p


def _cross_section(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = (rng.random(n) < 1 / (1 + np.exp(1.5 - 0.8 * x))).astype(int)
    return pd.DataFrame({"t": t, "x": x, "y": 0.5 * x + 0.4 * t + rng.normal(size=n)},
                        index=pd.Index([f"{ID_PREFIX}{i:06d}" for i in range(n)], name="be_id"))


@pytest.fixture(scope="module")
def results() -> dict:
    """One instance of every public result with a table, built on small synthetic data."""
    p = _panel()
    cs = _cross_section()
    gt = did.att_gt(p, "y", "year", "firm_id", "g", bootstrap=False, biters=1)
    simple = did.aggte(gt, "simple")
    m = match(cs, "t", ["x"])
    cm = match_cohorts(p, "g", "year", "firm_id", ["x"], caliper=None)
    betahat = np.array([0.01, -0.02, 0.3, 0.35])
    sens = sensitivity_results(betahat, np.eye(4) * 0.01, 2, 2, "smoothness", grid=[0.0, 0.05])
    return {
        "ATTgtResult": gt,
        "AggteResult": simple,
        "DiDEstimate": did.twfe(p.assign(d=((p["g"] > 0) & (p["year"] >= p["g"])).astype(int)),
                                "y", "year", "firm_id", "d"),
        "HeterogeneityResult": heterogeneity(p, "y", {"size": "size_class"}, gname="g", idname="firm_id"),
        "MDE": analytic_mde(simple),
        "PlaceboResult": placebo(p, "y", gname="g", n_draws=12, seed=3, progress=False),
        "SensitivityResult": sens,
        "Effect": att(m, "y"),
        "Match": m,
        "CohortMatch": cm,
    }


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, n in (("a", 360), ("b", 372)):
        record_headline(root / name, "reach_tinl", {"n_firms": n, "share": 0.5 if name == "a" else 0.55})
    return compare_runs(root / "a", root / "b")


def _estimate_tables(results: dict, comparison) -> dict:
    r = results
    return {
        "did.ATTgtResult.tidy": lambda: r["ATTgtResult"].tidy(),
        "did.AggteResult.tidy": lambda: r["AggteResult"].tidy(),
        "did.DiDEstimate.tidy": lambda: r["DiDEstimate"].tidy(),
        "heterogeneity.HeterogeneityResult.tidy": lambda: r["HeterogeneityResult"].tidy(),
        "heterogeneity.HeterogeneityResult.publishable": lambda: r["HeterogeneityResult"].publishable(),
        "power.MDE.tidy": lambda: r["MDE"].tidy(),
        "power.PlaceboResult.tidy": lambda: r["PlaceboResult"].tidy(),
        "sensitivity.SensitivityResult.tidy": lambda: r["SensitivityResult"].tidy(include_original=True),
        "matching.Effect.tidy": lambda: r["Effect"].tidy(),
        "matching.CohortMatch.ps_table": lambda: r["CohortMatch"].ps_table(),
        "compare.RunComparison.tidy": lambda: comparison.tidy(),
    }


ESTIMATE_TABLES = ["did.ATTgtResult.tidy", "did.AggteResult.tidy", "did.DiDEstimate.tidy",
                   "heterogeneity.HeterogeneityResult.tidy", "heterogeneity.HeterogeneityResult.publishable",
                   "power.MDE.tidy", "power.PlaceboResult.tidy", "sensitivity.SensitivityResult.tidy",
                   "matching.Effect.tidy", "matching.CohortMatch.ps_table", "compare.RunComparison.tidy"]


# --------------------------------------------------------------------------- the column core
@pytest.mark.parametrize("name", ESTIMATE_TABLES)
def test_every_public_estimate_table_starts_with_the_core(name, results, comparison):
    t = _estimate_tables(results, comparison)[name]()
    assert isinstance(t, pd.DataFrame) and len(t), name
    assert tuple(t.columns[:len(ESTIMATE_CORE)]) == ESTIMATE_CORE, f"{name}: columns {list(t.columns)}"
    assert t["term"].map(lambda v: isinstance(v, str) and v != "").all(), f"{name}: every row names its term"
    for c in ESTIMATE_CORE[1:]:
        assert pd.api.types.is_numeric_dtype(t[c]), f"{name}: {c} is {t[c].dtype}, not numeric"


@pytest.mark.parametrize("name", ["heterogeneity.HeterogeneityResult.tidy", "matching.Effect.tidy"])
def test_statistic_and_p_value_are_the_wald_test_of_the_row(name, results, comparison):
    """Independent computation: z = estimate / std_error, p = 2 (1 - Phi(|z|)) (math.erfc)."""
    t = _estimate_tables(results, comparison)[name]()
    ok = t["std_error"].to_numpy(float) > 0
    assert ok.any()
    z = t["estimate"].to_numpy(float)[ok] / t["std_error"].to_numpy(float)[ok]
    np.testing.assert_allclose(t["statistic"].to_numpy(float)[ok], z, rtol=1e-12)
    np.testing.assert_allclose(t["p_value"].to_numpy(float)[ok], [math.erfc(abs(v) / math.sqrt(2)) for v in z],
                               rtol=1e-9)


def test_old_column_names_stay_as_deprecated_aliases(results, comparison):
    pl = results["PlaceboResult"].tidy()
    assert (pl["measure"] == pl["term"]).all() and pl["value"].equals(pl["estimate"])
    s = results["SensitivityResult"].tidy()
    assert s["lb"].equals(s["conf_low"]) and s["ub"].equals(s["conf_high"])
    c = comparison.tidy().set_index("key")
    assert c.loc["share", "estimate"] == pytest.approx(0.05) and c.loc["share", "difference"] == pytest.approx(0.05)
    # a difference of counts of at least min_units (12 >= 10) is shown: a number in both columns
    assert c.loc["n_firms", "estimate"] == 12 and c.loc["n_firms", "term"] == "reach_tinl.n_firms"


def test_suppressed_difference_is_missing_in_the_estimate_column(tmp_path):
    for name, n in (("a", 360), ("b", 363)):
        record_headline(tmp_path / name, "reach_tinl", {"n_firms": n})
    t = compare_runs(tmp_path / "a", tmp_path / "b").tidy()
    assert t["difference"].tolist() == ["suppressed"] and np.isnan(t["estimate"].iloc[0])


@pytest.mark.parametrize("name", ["Match", "CohortMatch"])
def test_count_tables_share_the_count_core(name, results):
    r = results[name]
    t = r.tidy()
    assert has_core(t.columns, "count") and list(t.columns[-2:]) == list(COUNT_CORE)
    assert (t["n_units"] == t["value"]).all()
    # the long table holds the same numbers as the wide counts() table
    wide = r.counts()
    if name == "Match":
        got = t.set_index(["group", "sample"])["value"]
        for row in wide.itertuples(index=False):
            for col in ("all", "excluded_missing", "discarded", "matched", "unmatched"):
                assert got[(row.group, col)] == getattr(row, col)
    else:
        got = t[(t["group"] == "treated") & (t["sample"] == "matched")].set_index("cohort")["value"]
        assert got.to_dict() == wide.set_index("cohort")["treated_matched"].to_dict()


def test_estimate_table_helper_orders_and_rejects():
    t = pd.DataFrame({"extra": [1], "estimate": [1.0], "term": ["a"], "std_error": [0.5], "other": [2]})
    out = estimate_table(t, ["extra"])
    assert list(out.columns) == [*ESTIMATE_CORE, "extra", "other"]
    assert out["statistic"].iloc[0] == 2.0
    assert np.isnan(estimate_table(t, tests=False)["p_value"].iloc[0])
    with pytest.raises(ValueError, match=r"needs the columns \['term'\]"):
        estimate_table(t.drop(columns="term"))
    with pytest.raises(ValueError, match="extra columns"):
        estimate_table(t, ["nope"])
    with pytest.raises(ValueError, match="count_table: columns"):
        count_table(t, ["group"])
    with pytest.raises(ValueError, match="kind must be one of"):
        has_core(t.columns, "share")


# --------------------------------------------------------------------------- display
OWN = ["HeterogeneityResult", "MDE", "PlaceboResult", "SensitivityResult", "Effect", "Match", "CohortMatch"]


def _displays(obj) -> dict:
    out = {"repr": repr(obj), "str": str(obj)}
    for meth in ("_repr_html_", "_repr_markdown_"):
        f = getattr(obj, meth, None)
        if f is not None:
            out[meth] = f() or ""
    return out


def _frames(obj) -> list:
    """DataFrames and Series an object holds (attributes and dataclass fields)."""
    names = list(getattr(obj, "__dataclass_fields__", {})) + list(vars(obj))
    return [getattr(obj, n) for n in dict.fromkeys(names)
            if isinstance(getattr(obj, n, None), (pd.DataFrame, pd.Series))]


@pytest.mark.parametrize("name", OWN)
def test_results_use_the_display_mixin_and_never_print_a_frame(name, results):
    r = results[name]
    assert isinstance(r, ResultDisplay), f"{name} does not use reach._display.ResultDisplay"
    # a dataclass-generated repr (it would print every field, DataFrames included) is wrapped by reprlib
    assert not hasattr(type(r).__repr__, "__wrapped__"), f"{name} keeps the dataclass repr"
    shown = _displays(r)
    for kind, text in shown.items():
        assert ID_PREFIX not in text, f"{name}.{kind} shows a firm identifier"
        assert "<table" not in text, f"{name}.{kind} renders a DataFrame as HTML"
        for frame in _frames(r):
            if len(frame) >= 2:
                assert repr(frame) not in text and frame.to_string() not in text, f"{name}.{kind} prints a DataFrame"
    assert shown["str"] == r.summary()


def test_comparison_display(comparison):
    assert isinstance(comparison, ResultDisplay)
    text = repr(comparison)
    assert text.startswith("RunComparison:") and "headline numbers" in text
    assert comparison._repr_html_().startswith("<pre>RunComparison:")


def test_mixin_escapes_html_and_defers_to_a_markdown_view():
    class Plain(ResultDisplay):
        def summary(self):
            return "a < b & c"

    class Rich(Plain):
        def _repr_markdown_(self):
            return "**rich**"

    assert Plain()._repr_html_() == "<pre>Plain: a &lt; b &amp; c</pre>"
    assert Plain()._repr_markdown_() == "```\nPlain: a < b & c\n```"
    assert Rich()._repr_html_() is None and repr(Rich()) == "Rich: a < b & c"


# --------------------------------------------------------------------------- backend
def _calls_matplotlib_use(tree: ast.AST) -> list[int]:
    aliases = {"matplotlib"}
    used_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "matplotlib"}
        elif isinstance(node, ast.ImportFrom) and node.module == "matplotlib":
            used_names |= {a.asname or a.name for a in node.names if a.name == "use"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "use" and isinstance(f.value, ast.Name) and f.value.id in aliases:
                lines.append(node.lineno)
            elif isinstance(f, ast.Name) and f.id in used_names:
                lines.append(node.lineno)
    return lines


def test_no_library_module_switches_the_matplotlib_backend():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = {str(f.relative_to(SRC)): ln for f in files
             if (ln := _calls_matplotlib_use(ast.parse(f.read_text(encoding="utf-8"))))}
    assert not found, f"library modules call matplotlib.use (a library must not switch the user's backend): {found}"
    # the detector itself finds the three spellings
    for code in ("import matplotlib\nmatplotlib.use('Agg')", "import matplotlib as mpl\nmpl.use('Agg')",
                 "from matplotlib import use\nuse('Agg')"):
        assert _calls_matplotlib_use(ast.parse(code)) == [2]


def test_headline_is_called_the_same_way_on_every_result():
    """``headline()`` on every result; the stage results whose headline is data still index as a mapping."""
    from reach._display import Headline
    from reach.publish import StageOutput

    stage = StageOutput(headline={"n": 12})
    assert stage.headline() == {"n": 12} and stage.headline["n"] == 12
    with pytest.raises(TypeError):
        stage.headline["n"] = 13  # read-only, as the frozen result it belongs to
    h = Headline({"a": 1})
    h()["a"] = 2  # a copy: the result's numbers do not change
    assert h["a"] == 1
