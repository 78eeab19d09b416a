"""Effect reports: what notebook 04 shows and publishes about one outcome in one sample.

Presentation of the estimators in :mod:`reach.did` (which hold no presentation): an
:class:`EffectReport` runs ``att_gt`` -> ``aggte`` (and the naive TWFE and before/after
comparisons beside them) through :func:`effect_report`, passes every table through
:mod:`reach.disclosure`, and carries the narrative, the verdict and the headline numbers that
notebook 05 quotes. :func:`event_study_plot` draws the event study from a checked table;
:func:`effects_intro` and :func:`samples_text` are 04's opening and sample comparison texts.

Examples
--------
>>> from reach.effects import REPORT_TABLES
>>> REPORT_TABLES
('att_gt', 'event_study', 'comparison', 'pretest')
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from reach._checks import check_choice, count_text, require_columns
from reach.did import (AGGTE_COLUMNS, ATT_GT_COLUMNS, _TINY, AggteResult, ATTgtResult, DiDEstimate,
                       _distinct_per_unit, _factorize_sorted, _period_codes, _without_cells, aggte, att_gt,
                       matched_att_gt, matched_user_count, naive_difference, parse_xformla, twfe,
                       users_off_common_change, with_matching_weights)

__all__ = ["EffectReport", "effect_report", "event_study_plot", "effects_intro", "samples_text", "REPORT_TABLES",
           "COMPARISON_METHODS", "panel_columns", "users_changed_after_use"]


def panel_columns(outcomes, *, xformla: str | None = None, covariates=(), subgroups=None,
                  idname: str = "firm_id") -> list[str]:
    """The panel columns notebook 04 reads: ``read_panel(..., columns=panel_columns(...))``.

    The unit id, the outcomes, the covariates of ``xformla``, the placebo's propensity
    covariates and the columns the subgroup rules classify on (keys and ``g_*`` come with every
    read). At register scale that is a third of the panel's columns, read in a third of the
    time and held in a third of the memory.

    Examples
    --------
    >>> panel_columns(["log_exports"], xformla="~ log_employees", subgroups={"exporter_before": "exporter_before"})
    ['firm_id', 'log_exports', 'log_employees', 'exports']
    """
    from reach.did import parse_xformla
    from reach.heterogeneity import _rule_columns

    rules = [] if not subgroups else [c for r in dict(subgroups).values() for c in _rule_columns(r)]
    return list(dict.fromkeys([idname, *outcomes, *parse_xformla(xformla), *covariates, *rules]))


# --------------------------------------------------------------------------- plot
def event_study_plot(agg: AggteResult, ax=None, title: str | None = None, data: pd.DataFrame | None = None):
    """Event-study figure: estimates with pointwise (thick) and simultaneous (thin) 95% bands.

    ``data`` may be a publishable (disclosure-checked) copy of ``agg.tidy()``;
    suppressed rows (NaN) are not drawn.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if agg.type != "dynamic":
        raise ValueError(f"event_study_plot needs aggte(type='dynamic'); got type={agg.type!r}")
    t = agg.tidy() if data is None else data
    t = t[t["level"] == "event_time"].dropna(subset=["estimate"])
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    e = t["key"].astype(float).to_numpy()
    pre = e < 0
    for mask, colour, label in ((pre, "tab:red", "before use"), (~pre, "tab:blue", "after use")):
        if mask.any():
            tt = t[mask]
            ax.vlines(e[mask], tt["conf_low"], tt["conf_high"], color=colour, lw=1, alpha=0.6)
            ax.vlines(e[mask], tt["pointwise_low"], tt["pointwise_high"], color=colour, lw=4, alpha=0.8)
            ax.plot(e[mask], tt["estimate"], "o", color=colour, label=label)
    n_tr = pd.to_numeric(t["n_treated"], errors="coerce").to_numpy() if "n_treated" in t else np.array([])
    counts = len(n_tr) and np.isfinite(n_tr).all() and len(np.unique(n_tr)) > 1
    if counts:
        # later event times rest on fewer (earlier) cohorts: say how many firms stand behind each point, in a
        # row of its own just above the x axis (room made below the lowest band)
        lo = float(np.nanmin(t["conf_low"].to_numpy(dtype=float)))
        hi = float(np.nanmax(t["conf_high"].to_numpy(dtype=float)))
        span = (hi - lo) or 1.0
        ax.set_ylim(lo - 0.24 * span, hi + 0.05 * span)
        for ei, ni in zip(e, n_tr):
            ax.annotate(f"{int(ni):,}", (ei, 0), xycoords=("data", "axes fraction"), textcoords="offset points",
                        xytext=(0, 3), ha="center", va="bottom", fontsize=7, color="dimgrey")
        ax.annotate("numbers: users behind each point", (1, 0), xycoords="axes fraction", textcoords="offset points",
                    xytext=(-3, 14), ha="right", va="bottom", fontsize=7, color="dimgrey")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(-0.5, color="grey", lw=0.8, ls="--")
    from reach import labels

    ax.set_xlabel("years since first use")
    ax.set_ylabel(labels.effect_axis(agg.yname))  # "Effect on exports (log points)", not the column name
    ax.set_title(title or f"Event study: {labels.label(agg.yname, 'outcome')} (thick: pointwise, thin: simultaneous "
                 f"{100 * (1 - agg.alp):.0f}% band)", fontsize=9)
    from matplotlib.lines import Line2D

    level = f"{100 * (1 - agg.alp):.0f}%"
    # the bands differ only in width: say which is which, also when the caller sets the title
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", lw=4, alpha=0.8, label=f"pointwise {level} CI"),
                Line2D([], [], color="grey", lw=1, alpha=0.6, label=f"simultaneous {level} band")]
    from reach.report import place_legend

    fig.tight_layout()
    # in a corner free of points, bands and counts (computed from the drawn figure), else beside the axes
    place_legend(ax, handles=handles, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- one outcome, one sample: the report
#: Numeric columns of the published estimate tables (suppressed cells come back as NaN).
_NUMERIC_PUB = ("estimate", "std_error", "conf_low", "conf_high", "pointwise_low", "pointwise_high",
                "n_treated", "n_control", "n_control_all", "statistic", "df", "p_value")
#: Rows of the comparison table, in order.
COMPARISON_METHODS = ("Callaway-Sant'Anna, simple average", "Callaway-Sant'Anna, event-study average",
                      "two-way fixed effects", "naive users vs others")
#: Tables of an :class:`EffectReport` (exported as ``<programme>_<outcome>_<sample>_<table>``).
REPORT_TABLES = ("att_gt", "event_study", "comparison", "pretest")


#: Columns shown as whole numbers.
_COUNT_COLS = ("n_treated", "n_control", "n_control_all", "df", "group", "time", "key", "n_units", "n_obs")
#: Header of ``n_control`` in the tables of aggregates: the disclosure count is the smallest comparison set behind
#: any group-time cell, which a reader would otherwise take for the number of comparison firms (``n_control_all``).
_AGGREGATE_HEADERS = {"n_control": "smallest comparison group in a cell", "n_control_all": "comparison firms (all)"}


def _html_table(t: pd.DataFrame, digits: int = 4, undefined: pd.DataFrame | None = None,
                headers: dict | None = None) -> str:
    """HTML of a publishable table: no index, integer counts, years without separators; a missing
    cell reads "–" when the estimator left it undefined (``undefined``: True where the unchecked
    table was already missing) and "suppressed" when the disclosure check removed it. Never NaN/<NA>."""
    out = pd.DataFrame(index=range(len(t)))
    numeric = set(_NUMERIC_PUB) | set(_COUNT_COLS)
    und = (undefined.reset_index(drop=True) if undefined is not None
           else pd.DataFrame(False, index=range(len(t)), columns=t.columns))

    def missing(c, i):
        return "–" if (c in ("key", "group", "time") or (c in und and bool(und.at[i, c]))) else "suppressed"

    for c in t.columns:
        v = t[c].reset_index(drop=True)
        if c in _COUNT_COLS:
            num = pd.to_numeric(v, errors="coerce")
            fmt = "{:d}" if c in ("key", "group", "time") else "{:,d}"
            out[c] = [missing(c, i) if pd.isna(x) else fmt.format(int(x)) for i, x in enumerate(num)]
        elif c in numeric or pd.api.types.is_float_dtype(v):
            num = pd.to_numeric(v, errors="coerce")
            out[c] = [missing(c, i) if pd.isna(x) else f"{x:.{digits}f}" for i, x in enumerate(num)]
        elif pd.api.types.is_bool_dtype(v):
            out[c] = ["yes" if x else "no" for x in v]
        else:
            out[c] = ["–" if pd.isna(x) else str(x) for x in v]
    return out.rename(columns=lambda c: (headers or {}).get(c) or _header(c)).to_html(index=False, escape=True)


#: Reader-facing headers of the report tables that reach.labels.COLUMNS does not name.
_HEADERS = {"group": "first-use year", "time": "year", "key": "years since first use", "type": "aggregation",
            "statistic": "test statistic", "df": "degrees of freedom", "p_value": "p-value",
            "pointwise_low": "lower bound (pointwise)", "pointwise_high": "upper bound (pointwise)"}


def _header(column: str) -> str:
    from reach import labels

    return _HEADERS.get(column) or labels.column(column)


def _outcome_label(code: str) -> str:
    """An outcome's reader-facing name (the code itself when the label table does not know it)."""
    from reach import labels

    return labels.label(code, "outcome")


def _covariates_text(xformla: str | None) -> str:
    """A covariate formula (``"~ log_employees + x"``) in words: "employees (log), x"; "none" for ``~ 1``."""
    from reach import labels

    terms = [t.strip() for t in (xformla or "~ 1").replace("~", " ").split("+") if t.strip() not in ("", "1")]
    return ", ".join(labels.COVARIATES.get(t) or labels.OUTCOMES.get(t) or labels.covariate(t) for t in terms) or "none"


def _publishable(checked) -> pd.DataFrame:
    pub = checked.suppress()
    for c in pub.columns:
        if c in _NUMERIC_PUB:
            pub[c] = pd.to_numeric(pub[c], errors="coerce").astype(float)
    return pub




@dataclass(frozen=True, eq=False)
class EffectReport:
    """Effect of a programme on one outcome in one sample: estimates, checked tables, narrative.

    Built by :func:`effect_report`. The estimator results (``att_gt``, ``dynamic``,
    ``simple``, ``twfe``, ``naive``) are microdata-derived and unchecked; everything a
    notebook shows or exports comes from ``checked`` (for :class:`reach.disclosure.OutputLog`)
    and ``tables`` (the publishable copies: suppressed cells are NaN).

    Attributes
    ----------
    checked : dict
        ``{table: Checked}`` for the tables of :data:`REPORT_TABLES`.
    tables : dict
        ``{table: DataFrame}``: the publishable copies of ``checked``.
    """

    programme: str
    outcome: str
    sample: str
    att_gt: ATTgtResult = field(repr=False)
    dynamic: AggteResult = field(repr=False)
    simple: AggteResult = field(repr=False)
    twfe: DiDEstimate = field(repr=False)
    naive: DiDEstimate = field(repr=False)
    checked: dict = field(repr=False)
    tables: dict = field(repr=False)
    alp: float = 0.05
    min_units: int = 10
    n_balanced_drop: int = 0
    not_estimable_reason: str = ""
    undefined: dict = field(default_factory=dict, repr=False)
    #: the ATT(g,t) the disclosure rules withhold (``group, time``), left out of every average
    withheld_cells: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"group": [], "time": []}), repr=False)

    @property
    def estimable(self) -> bool:
        """False when the effect is undefined (the outcome never changes, or every cell is missing)."""
        return not self.not_estimable_reason

    def na_cells(self) -> pd.DataFrame:
        """Group-time cells left missing (NA) with the reason (``group, time, reason``): overlap, no comparison firms."""
        return self.att_gt.na_cells.copy()

    @property
    def tag(self) -> str:
        return f"{self.programme}_{self.outcome}_{self.sample}"

    def name(self, table: str) -> str:
        """Export name of a table (and of the event-study figure): ``<programme>_<outcome>_<sample>_<table>``."""
        check_choice("table", table, REPORT_TABLES)
        return f"{self.tag}_{table}"

    def _cs(self) -> pd.Series:
        return self.tables["comparison"].set_index("method").loc[COMPARISON_METHODS[0]]

    def _cs_rules(self) -> set:
        """The disclosure rules the simple ATT's row of the comparison table failed or was flagged by."""
        cells = self.checked["comparison"].cells
        names = cells.loc[cells.index[0], "rule_names"] if len(cells) else ""
        return set(filter(None, str(names).split(",")))

    def withheld(self) -> str:
        """Why the simple ATT is not published ("" when it is): too few firms, or the users' own outcomes."""
        if np.isfinite(self._cs()["estimate"]) or not self.estimable:
            return ""
        rules = self._cs_rules()
        if rules & {"min_treated", "min_control", "min_dof"} or not rules & {"all_same", "few_changed"}:
            return "too few firms behind it"
        # every user's outcome changed alike, or all but 1-9: the estimate would be their own changes
        return "it would reveal individual users' outcomes"

    @property
    def detectable(self) -> bool:
        """True when the published simple ATT's confidence interval excludes zero."""
        cs = self._cs()
        return bool(np.isfinite(cs["estimate"]) and np.isfinite(cs["std_error"])
                    and (cs["conf_low"] > 0 or cs["conf_high"] < 0))

    def headline(self) -> dict:
        """Headline numbers, read only from the publishable tables (suppressed: NaN, recorded as null).

        Keys: ``simple_att, simple_se, simple_conf_low, simple_conf_high, detectable,
        pretest_p_value, naive, twfe, n_treated, dynamic`` (``{event time: estimate}``),
        ``withheld`` (why the estimate is suppressed, "" when published).
        """
        cmp_ = self.tables["comparison"].set_index("method")
        cs = cmp_.loc[COMPARISON_METHODS[0]]
        dyn = self.tables["event_study"].iloc[1:]
        return {
            "estimable": self.estimable, "not_estimable_reason": self.not_estimable_reason,
            "simple_att": float(cs["estimate"]), "simple_se": float(cs["std_error"]),
            "simple_conf_low": float(cs["conf_low"]), "simple_conf_high": float(cs["conf_high"]),
            "dynamic": {str(int(k)): float(v) for k, v in zip(dyn["key"], dyn["estimate"])},
            "twfe": float(cmp_.loc["two-way fixed effects", "estimate"]),
            "naive": float(cmp_.loc["naive users vs others", "estimate"]),
            "pretest_p_value": float(self.tables["pretest"]["p_value"].iloc[0]),
            "n_treated": float(cs["n_treated"]),
            # every comparison firm of the estimate, and the smallest comparison set behind any of its cells
            # (the disclosure count): a reader takes the latter for the former without both
            "n_control_all": float(cs["n_control_all"]) if "n_control_all" in cs else float("nan"),
            "n_control_min": float(cs["n_control"]),
            "detectable": self.detectable,
            "withheld": self.withheld(),
        }

    def verdict(self) -> str:
        """One phrase: the effect with its interval, "no detectable effect", or "not publishable"."""
        from reach.report import fmt_number

        cs = self._cs()
        if not self.estimable:
            return f"not estimable: {self.not_estimable_reason}"
        if not np.isfinite(cs["estimate"]):
            why = self.withheld()
            return "not publishable (too few firms)" if why.startswith("too few") else f"not publishable ({why})"
        if self.detectable:
            return (f"effect {fmt_number(cs['estimate'], signed=True)} (CI {fmt_number(cs['conf_low'])} to "
                    f"{fmt_number(cs['conf_high'])})")
        return "no detectable effect"

    def narrative(self) -> str:
        """Plain-language reading of the checked numbers (Markdown)."""
        from reach.report import fmt_number as f

        cmp_ = self.tables["comparison"].set_index("method")
        cs, tw, nv = cmp_.loc[COMPARISON_METHODS[0]], cmp_.loc[COMPARISON_METHODS[2]], cmp_.loc[COMPARISON_METHODS[3]]
        p = self.tables["pretest"]["p_value"].iloc[0]
        lvl = int(round(100 * (1 - self.alp)))
        from reach import labels

        name = _outcome_label(self.outcome)
        head = f"**{name}, {labels.label(self.sample, 'sample')}:**"
        if not self.estimable:
            return f"{head} not estimable: {self.not_estimable_reason}."
        if not np.isfinite(cs["estimate"]):
            why = self.withheld()
            text = (f"{head} the overall effect rests on too few firms to be published under the disclosure rules."
                    if why.startswith("too few") else
                    f"{head} the overall effect is not published under the disclosure rules: {why}.")
        elif not np.isfinite(cs["std_error"]):
            text = (f"{head} no detectable effect: users' and comparison firms' {name} changed identically "
                    f"(estimate {f(cs['estimate'])}, no variation to attach a confidence interval to).")
        elif self.detectable:
            direction = "higher" if cs["estimate"] > 0 else "lower"
            pct = (f" (about {f(100 * np.expm1(cs['estimate']), 0, signed=True)}%)"
                   if self.outcome.startswith(("log_", "ihs_")) else "")
            text = (f"{head} after first use, users' {name} was on average {f(cs['estimate'])}{pct} {direction} "
                    f"than it would have been without the programme ({lvl}% CI {f(cs['conf_low'])} to {f(cs['conf_high'])}).")
        else:
            text = (f"{head} no detectable effect: the average effect {f(cs['estimate'])} has a {lvl}% confidence "
                    f"interval from {f(cs['conf_low'])} to {f(cs['conf_high'])}, which includes zero.")
        text += self._counts_sentence(cs)
        if np.isfinite(nv["estimate"]):
            far = (np.isfinite(cs["estimate"]) and np.isfinite(nv["std_error"])
                   and abs(nv["estimate"]) > abs(cs["estimate"]) + 2 * nv["std_error"])
            text += (f" The naive users-vs-others difference is {f(nv['estimate'])}"
                     + (", far larger: it mostly reflects that users already differed before they used the programme."
                        if far else "."))
        if np.isfinite(tw["estimate"]):
            text += f" Two-way fixed effects gives {f(tw['estimate'])}."
        if np.isfinite(p):
            text += (f" Pre-trend test p = {f(p)}: "
                     + ("users' outcomes already moved differently before first use, so read the effect with caution."
                        if p < self.alp else "no evidence that users' outcomes moved differently before first use."))
        return text

    def _counts_sentence(self, cs: pd.Series) -> str:
        """Users and comparison firms behind the estimate, and the smallest comparison group of a cell (published)."""
        from reach.report import fmt_count

        n_all, n_min, n_tr = cs.get("n_control_all", np.nan), cs["n_control"], cs["n_treated"]
        if not (np.isfinite(n_all) and np.isfinite(n_min) and np.isfinite(n_tr)):
            return ""
        pairs = ""
        if self.sample == "matched":
            n_pairs = float(self.tables["comparison"].set_index("method").loc[COMPARISON_METHODS[2], "n_control"])
            if np.isfinite(n_pairs) and int(n_pairs) != int(n_all):
                pairs = f" in {fmt_count(n_pairs)} firm-cohort matches (a firm can be matched to several cohorts)"
        return (f" It compares {fmt_count(n_tr)} users with {fmt_count(n_all)} comparison firms{pairs}; the smallest "
                f"comparison group behind a single group-time effect has {fmt_count(n_min)} firms (the count the "
                "disclosure rules check).")

    def exclusions_text(self) -> str:
        """Which firms the estimates keep or leave out, counted safely; empty if nothing to say."""
        from reach.publish import register_counts

        ex = self.att_gt.exclusions
        register_counts([self.n_balanced_drop, *ex.values()], self.min_units)  # printed below: known to the audit
        parts = []
        if self.att_gt.allow_unbalanced_panel:
            how = ("each ATT(g,t) uses the firms observed in both its base year and year t"
                   if self.att_gt.unbalanced == "pairs" else
                   "each ATT(g,t) uses the firm-years of its base year and year t as repeated cross sections, "
                   "inference clustered by firm")
            parts.append(f"Firms not observed in every year are kept (unbalanced panel: {how}); a balanced "
                         f"panel would have dropped {count_text(self.n_balanced_drop, self.min_units)} firms.")
        if ex:
            parts.append("Counted: " + "; ".join(
                f"{k.replace('_', ' ')}: {count_text(int(v), self.min_units)}" for k, v in ex.items()) + ".")
        na = self.att_gt.na_cells
        if len(na):
            parts.append("Group-time cells not estimated (NA): " + "; ".join(
                f"ATT({r.group},{r.time}): {r.reason}" for r in na.itertuples()) + ".")
        w = self.withheld_cells
        if len(w):
            cells = ", ".join(f"ATT({a},{b})" for a, b in zip(w["group"].head(6), w["time"].head(6)))
            more = f" and {len(w) - 6} more" if len(w) > 6 else ""
            parts.append(f"Group-time effects {WITHHELD_CELL} ({cells}{more}) are left out of the averages, the "
                         "pre-trend test and the sensitivity analysis, so that they cannot be recovered from them.")
        return " ".join(parts)

    def figure(self, title: str | None = None):
        """Event-study figure drawn from the publishable event-study table (suppressed points absent)."""
        return event_study_plot(self.dynamic, data=self.tables["event_study"],
                                title=title or f"{_outcome_label(self.outcome)}, {self.sample} sample")

    def tidy(self) -> pd.DataFrame:
        """The publishable comparison table (methods side by side)."""
        return self.tables["comparison"].copy()

    def html(self, table: str, digits: int = 4) -> str:
        """A publishable table as HTML for the notebook: no index column, counts as integers,
        suppressed or undefined cells as "suppressed"/"–" (never ``NaN``/``<NA>``)."""
        check_choice("table", table, REPORT_TABLES)
        t, und = self.tables[table], self.undefined.get(table)
        if table == "comparison" and und is not None:
            # TWFE and the naive difference are one regression each, no group-time cells: no "smallest cell" ("–")
            t, und = t.copy(), und.copy()
            other = t["method"].isin(COMPARISON_METHODS[2:]).to_numpy()
            t.loc[other, "n_control"] = np.nan
            und.loc[other, "n_control"] = True
        return _html_table(t, digits, und, headers=None if table == "att_gt" else _AGGREGATE_HEADERS)

    def summary(self) -> str:
        return self.narrative().replace("**", "")

    def _repr_markdown_(self) -> str:
        return self.narrative()

    def __repr__(self) -> str:  # never shows unchecked numbers
        return f"EffectReport(programme={self.programme!r}, outcome={self.outcome!r}, sample={self.sample!r})"


def _or_nan(fit, method: str) -> DiDEstimate:
    """A comparison estimate, or an all-NaN one with the reason when the regression cannot run."""
    try:
        return fit()
    except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as e:
        return DiDEstimate(method, np.nan, np.nan, np.nan, np.nan, 0, 0, 0, 0, np.nan, note=f"not estimable: {e}")


def _constant_within(y: pd.Series, unit: pd.Series) -> bool:
    """Whether no unit's ``y`` takes two values (missing values left out), with at least one unit.

    ``y.groupby(unit).nunique() <= 1`` for every unit, as every value equals one of its unit's values:
    a hash of every (unit, value) pair took ~0.7 s per call on a stacked sample of 15M rows, one
    scatter and one comparison a fraction of that.
    """
    codes, uniques = _factorize_sorted(unit, sort=False)  # a sorted panel's units without a hash table
    if not len(uniques):
        return False
    v = pd.to_numeric(y, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    ok = (codes >= 0) & ~np.isnan(v)
    c, x = codes[ok], v[ok]
    one = np.empty(len(uniques))
    one[c] = x  # some value of each unit (which one does not matter: all equal it iff the unit has one value)
    return bool((x == one[c]).all())


def _balanced_panel_drop(data: pd.DataFrame, outcome: str, unit: str, tname: str, firm: str | None = None) -> int:
    """Firms a balanced panel would drop: not observed with ``outcome`` in every period of ``data``.

    Counted per ``unit`` (a firm, or a cohort x firm block of a stacked matched sample), or, with
    ``firm``, as the distinct firms of the units observed in some periods but not all (a firm in
    several blocks counts once). Periods are counted per unit in an array, not hashed by a grouped
    ``nunique`` (~1.2 s per report at 15M rows).
    """
    # codes by the sorted panel's order and by counting years (pd.factorize hashed 15M rows twice per report)
    uid, uniques = _factorize_sorted(data[unit], sort=False)
    tcode = _period_codes(data[tname])
    n_periods = int(tcode.max(initial=-1)) + 1  # codes are 0..k-1 over the k distinct periods, -1 missing
    ok = (uid >= 0) & data[outcome].notna().to_numpy()
    observed = np.bincount(uid[ok], minlength=len(uniques)) > 0
    okt = ok & (tcode >= 0)
    short = observed & (_distinct_per_unit(uid[okt], tcode[okt], len(uniques)) < n_periods)
    if firm is None:  # never observed with the outcome counts as dropped too
        return int(short.sum() + (~observed).sum())
    if not short.any():
        return 0
    rows = (uid >= 0) & short[np.maximum(uid, 0)]
    return int(data[firm][rows].nunique())  # the short units' rows only: a few, where the ids are millions


def _not_estimable(panel, outcome, idname, r, simple) -> str:
    """Why an effect is undefined, or "" (never report an undefined effect as a 0.0 'no effect')."""
    y = panel[outcome]
    if _constant_within(y, panel[idname]):
        vals = pd.unique(y.dropna())
        v = f" (every firm has {outcome} = {vals[0]:g} in every year)" if len(vals) == 1 else ""
        return f"{outcome} never changes over time within a firm in this sample{v}, so there is no change to compare"
    if r is None or not np.isfinite(np.asarray(r.att, dtype=float)).any():
        reasons = sorted(set(r.na_cells["reason"])) if r is not None and len(r.na_cells) else []
        return "no group-time effect could be estimated" + (f" ({'; '.join(reasons)})" if reasons else "")
    if simple is not None and not np.isfinite(simple.overall_se) and abs(simple.overall_att) < _TINY:
        return (f"{outcome} changed identically for every firm entering the post-use comparisons, "
                f"so the effect is not identified from variation")
    return ""


def effect_report(panel: pd.DataFrame, outcome: str, *, programme: str, sample: str = "full",
                  gname: str | None = None, tname: str = "year", idname: str = "firm_id",
                  weightsname: str | None = None, xformla: str | None = None,
                  control_group: str = "nevertreated", est_method: str = "dr", anticipation: int = 0,
                  biters: int = 999, alp: float = 0.05, seed: int = 0, rules=None,
                  matched_units: pd.DataFrame | None = None, key: str = "be_id",
                  allow_unbalanced_panel: bool = False, overlap_max: float = 0.999,
                  trim_level: float = 0.995, unbalanced: str = "pairs") -> EffectReport:
    r"""Estimate a programme's effect on one outcome and check every table for disclosure.

    Runs :func:`att_gt`, :func:`aggte` (dynamic and simple), :func:`twfe` and
    :func:`naive_difference`, the Wald pre-test, and checks the four tables of
    :data:`REPORT_TABLES` with :func:`reach.disclosure.check_estimates`.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel; users without a year before first use must be removed first
        (:func:`drop_without_pre_period`).
    outcome : str
        Outcome column (``yname``).
    programme : str
        Programme key; ``gname`` defaults to ``g_<programme>``.
    sample : str
        Label of the sample (``full``, ``matched``), used in names and text.
    weightsname : str, optional
        Unit weights (not with ``matched_units``).
    xformla, control_group, est_method, anticipation, alp, seed, allow_unbalanced_panel, overlap_max, trim_level
        As :func:`att_gt`.
    unbalanced : {"pairs", "rc"}
        As :func:`att_gt`; default ``"pairs"`` here (each ATT(g,t) on the firms observed in g-1
        and t): register panels have entry and exit that the repeated-cross-section form would
        read as an effect.
    matched_units : DataFrame, optional
        Notebook 03's matched units (``key, cohort, treated, weight``): the estimates are then
        the stacked cohort-wise matched design of :func:`matched_att_gt` (each cohort on its
        own matched set); TWFE and the naive comparison run on the same stacked sample.
    biters : int
        Bootstrap draws; 0 means analytic standard errors (the simultaneous band then uses
        999 draws).
    rules : reach.disclosure.Rules, optional

    Returns
    -------
    EffectReport

    Notes
    -----
    The simple average :math:`\theta = \sum_{g\le t} ATT(g,t)\,p_g / \sum_{g \le t} p_g` is the
    headline effect; the event-study average is the mean of :math:`\theta(e)` over
    :math:`e \ge 0`. A table row resting on fewer treated or comparison units than the
    rules allow is suppressed (NaN), never dropped or raised.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 300
    >>> p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), 3), "year": np.tile([2001, 2002, 2003], n),
    ...                   "g_x": np.repeat(rng.choice([0, 2003], n), 3)})
    >>> p["y"] = rng.normal(size=3 * n)
    >>> rep = effect_report(p, "y", programme="x", biters=99)
    >>> rep.name("comparison"), rep.headline()["detectable"]
    ('x_y_full_comparison', False)
    """
    from reach.disclosure import Rules, check_estimates

    rules = rules if rules is not None else Rules()
    gname = gname or f"g_{programme}"
    require_columns(panel, [outcome, gname, tname, idname], "panel")
    boot = int(biters) > 0
    kw = dict(xformla=xformla, control_group=control_group, est_method=est_method, anticipation=anticipation,
              bootstrap=boot, cband=True, biters=int(biters) if boot else 999, alp=alp, seed=seed,
              allow_unbalanced_panel=allow_unbalanced_panel, overlap_max=overlap_max, trim_level=trim_level,
              unbalanced=unbalanced)
    if matched_units is not None:
        # only what the estimates read: every kept column is repeated once per block a firm is in
        data = with_matching_weights(panel, matched_units, gname=gname, key=key, tname=tname,
                                     columns=[outcome, idname, *parse_xformla(xformla)])
        est_id, est_g, est_w = "stack_id", "g_stack", "weight"
        # TWFE and the naive comparison on the same stacked sample: a block's users are treated from its
        # cohort on; comparison firms leave their block once they start using the programme themselves
        cmp_data = data.loc[(data["treated"] == 1) | (data["g_stack"] == 0) | (data[tname] < data["g_stack"])]
        cmp_data = cmp_data.assign(_g_block=np.where(cmp_data["treated"] == 1, cmp_data["cohort"], 0))
        cmp_g = "_g_block"
    else:
        data, est_id, est_g, est_w = panel, idname, gname, weightsname
        cmp_data, cmp_g = panel, gname
    # firms a balanced panel would drop: not observed (with the outcome) in every year of the sample
    n_bal_drop = _balanced_panel_drop(data, outcome, est_id, tname,
                                      firm=key if matched_units is not None else None)  # matched: firms, not blocks
    r = simple = dyn = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if matched_units is not None:
                r = matched_att_gt(data, outcome, tname, key=key, **kw)
            else:
                r = att_gt(panel, outcome, tname, idname, gname, weightsname=weightsname, **kw)
        except ValueError:
            if not _not_estimable(data, outcome, est_id, None, None):
                raise
        r_agg, withheld, gt_changed = r, None, None
        if r is not None and np.isfinite(np.asarray(r.att, dtype=float)).any():
            users = ((data["treated"] == 1) if matched_units is not None else (data[gname] > 0)).to_numpy()
            off = _users_off(data, outcome, unit=est_id, cohort=est_g, tname=tname, users=users, periods=r.periods,
                             groups=r.groups, times=r.times, base_times=r.base_times)
            r_agg, withheld, gt_changed = _publishable_cells(r, off, rules, f"{programme}_{outcome}_{sample}_att_gt")
            dyn = aggte(r_agg, "dynamic", na_rm=True)
            simple = aggte(r_agg, "simple", na_rm=True)
        tw = _or_nan(lambda: twfe(cmp_data, outcome, tname, est_id, cmp_g, weightsname=est_w, alp=alp), "TWFE")
        nv = _or_nan(lambda: naive_difference(cmp_data, outcome, tname, est_id, cmp_g, alp=alp),
                     "naive users vs others")
    why = _not_estimable(data, outcome, est_id, r, simple)
    if why:
        return _not_estimable_report(programme, outcome, sample, r, tw, nv, why, alp, rules, n_bal_drop)
    cols = ["estimate", "std_error", "conf_low", "conf_high", "n_treated", "n_control"]
    comp = pd.concat([
        simple.tidy()[cols].assign(method=COMPARISON_METHODS[0]),
        dyn.tidy()[cols].iloc[[0]].assign(method=COMPARISON_METHODS[1]),
        tw.tidy()[cols].assign(method=COMPARISON_METHODS[2]),
        nv.tidy()[cols].assign(method=COMPARISON_METHODS[3]),
    ], ignore_index=True)[["method", *cols]]
    comp[["n_treated", "n_control"]] = comp[["n_treated", "n_control"]].astype("int64")
    n_all = _comparison_firms(data, outcome, r, matched=matched_units is not None, key=key, idname=idname,
                              gname=gname, control_group=control_group, anticipation=anticipation)
    # the Callaway-Sant'Anna rows: every firm that can serve as comparison; on the full sample TWFE and naive count
    # theirs already, on the stacked matched sample they count firm-cohort blocks: there distinct firms for all rows
    comp.insert(comp.columns.get_loc("n_control"), "n_control_all",
                [n_all] * 4 if matched_units is not None else
                [n_all, n_all, int(comp.at[2, "n_control"]), int(comp.at[3, "n_control"])])
    # the pre-test on the cells the averages keep: a withheld cell leaves it as it leaves them
    pre = r_agg.pretest()
    pre_cells = (r_agg.groups > r_agg.times) & np.isfinite(np.asarray(r_agg.att, dtype=float))
    pre_t = pd.DataFrame([{
        "test": "pre-trends (Wald, all pre-treatment ATT(g,t) = 0)", "statistic": pre["statistic"],
        "df": pre["df"], "p_value": pre["p_value"],
        "n_treated": int(r_agg.n_treated[pre_cells].min()) if pre_cells.any() else 0,
        "n_control": int(r_agg.n_control[pre_cells].min()) if pre_cells.any() else 0}])
    tag = f"{programme}_{outcome}_{sample}"
    raw = {"comparison": comp, "pretest": pre_t, "event_study": dyn.tidy(), "att_gt": r.tidy()}
    changed = _users_changed(r_agg, dyn, off, gt_changed)
    checked = {k: check_estimates(v, name=f"{tag}_{k}", n_treated="n_treated", n_control="n_control", rules=rules,
                                  columns=_value_columns(v), n_changed=changed[k])
               for k, v in raw.items()}
    tables = {k: _publishable(c) for k, c in checked.items()}
    # which cells the estimator left undefined (not which the disclosure check removed): shown as "–"
    undefined = {k: v.isna() for k, v in raw.items()}
    return EffectReport(programme=programme, outcome=outcome, sample=sample, att_gt=r, dynamic=dyn, simple=simple,
                        twfe=tw, naive=nv, checked=checked, tables=tables, alp=float(alp),
                        min_units=int(rules.min_units), n_balanced_drop=n_bal_drop, undefined=undefined,
                        withheld_cells=pd.DataFrame({"group": np.asarray(r.groups)[withheld].astype("int64"),
                                                     "time": np.asarray(r.times)[withheld].astype("int64")}))


def _users_off(data: pd.DataFrame, outcome: str, *, unit: str, cohort: str, tname: str, users: np.ndarray,
               periods, groups, times, base_times) -> np.ndarray:
    """:func:`reach.did.users_off_common_change` of the cells, from the long rows ``users`` of ``data`` (a mask)."""
    d = data.loc[users, [unit, cohort, tname, outcome]]
    uid, uniq = pd.factorize(d[unit])
    periods = np.asarray(periods, dtype=float)
    yr = d[tname].to_numpy(dtype=float)
    col = np.searchsorted(periods, yr)
    inside = (col < len(periods)) & (periods[np.minimum(col, len(periods) - 1)] == yr)
    Y = np.full((len(uniq), len(periods)), np.nan)
    Y[uid[inside], col[inside]] = pd.to_numeric(d[outcome], errors="coerce").to_numpy(dtype=float)[inside]
    coh = np.zeros(len(uniq))
    coh[uid] = d[cohort].to_numpy(dtype=float)
    off, _ = users_off_common_change(Y, coh, periods, np.asarray(groups, dtype=float), np.asarray(times, dtype=float),
                                     np.asarray(base_times, dtype=float))
    return off


#: Why a group-time effect is left out of the averages (in ``na_cells`` of the result the averages use).
WITHHELD_CELL = "withheld under the disclosure rules"


def _publishable_cells(r: ATTgtResult, off: np.ndarray, rules, name: str) -> tuple[ATTgtResult, np.ndarray, np.ndarray]:
    """The ATT(g,t) the disclosure rules withhold, and ``r`` without them for the averages.

    A withheld cell kept in an average could be recovered from it: the event-time and overall averages weigh
    cells by cohort size, and the other cohorts' cells and sizes are published (a cohort of 4 users: its
    ATT(g,g) = (n * theta(0) - sum of the others' n_g ATT(g,g)) / 4). So the averages, the pre-test and the
    sensitivity analysis's event study leave such cells out, as ``aggte(na_rm=True)`` leaves out missing ones;
    when that would leave no post-use cell, ``r`` is kept (every cell withheld: nothing to subtract).

    Returns ``(r for the averages, withheld mask, users off the common change per cell)``.
    """
    from reach.disclosure import check_estimates

    finite = np.isfinite(np.asarray(r.att, dtype=float))
    n_cell = np.where(finite, off.sum(axis=0).astype(float), np.nan)
    chk = check_estimates(r.tidy(), name=name, n_treated="n_treated", n_control="n_control", rules=rules,
                          columns=_value_columns(r.tidy()), n_changed=n_cell)
    withheld = chk.cells["verdict"].eq("suppress").to_numpy() & finite
    post = np.asarray(r.groups) <= np.asarray(r.times)
    if not withheld.any() or not (finite & post & ~withheld).any():
        return r, np.zeros(len(finite), dtype=bool), n_cell
    return _without_cells(r, withheld, WITHHELD_CELL), withheld, n_cell


def _users_changed(r_agg: ATTgtResult, dyn: AggteResult, off: np.ndarray, gt_changed: np.ndarray) -> dict:
    """Per table row, the users whose outcome change differs from their cell's most common change, over the
    cells the row rests on (NaN: no such rule for the row, as the pre-trend test: a test, not a users' mean).

    ``off``: :func:`reach.did.users_off_common_change` of every cell; the averages rest on the cells of
    ``r_agg`` (missing and withheld ones left out). 0 users off means every user's change was the same: the
    row is each user's own change, and check_estimates suppresses it.
    """
    g, t = np.asarray(r_agg.groups, dtype=float), np.asarray(r_agg.times, dtype=float)
    done = np.isfinite(np.asarray(r_agg.att, dtype=float))

    def n_off(cells: np.ndarray) -> float:
        return float(off[:, cells & done].any(axis=1).sum()) if (cells & done).any() else np.nan

    post = n_off(g <= t)
    e = t - g
    keys = [k for k in dyn.tidy()["key"].iloc[1:]]
    return {"att_gt": gt_changed,
            "event_study": np.array([post] + [n_off(e == float(k)) for k in keys]),
            # the simple and dynamic averages, TWFE and the naive difference all rest on the users' post-use changes
            "comparison": np.full(len(COMPARISON_METHODS), post),
            "pretest": np.array([np.nan])}


def users_changed_after_use(panel: pd.DataFrame, outcome: str, *, gname: str, tname: str = "year",
                            idname: str = "firm_id", anticipation: int = 0) -> dict:
    """Users whose outcome change from the year before (first use - anticipation) differs from the common
    change of their group-time cell, in some post-use cell (``"average"``) and in the year of first use (``0``).

    For estimates built from those cells elsewhere (the sensitivity analysis's event study): fewer than
    ``min_treated`` means the estimate would reveal the users' own changes, as in :func:`effect_report`.

    Examples
    --------
    >>> p = pd.DataFrame({"firm_id": [1, 1, 2, 2, 3, 3], "year": [2019, 2020] * 3, "g": [2020] * 4 + [0, 0],
    ...                   "y": [0, 1, 0, 1, 5, 7]})
    >>> users_changed_after_use(p, "y", gname="g")
    {'average': 0, 0: 0}
    """
    years = np.sort(pd.unique(panel[tname].dropna()).astype(float))
    coh = pd.unique(panel.loc[panel[gname] > 0, gname]).astype(float)
    cells = [(g, t, g - 1 - anticipation) for g in sorted(coh) for t in years
             if t >= g and (g - 1 - anticipation) in set(years)]
    if not cells:
        return {"average": 0, 0: 0}
    groups, times, bases = (np.array(c, dtype=float) for c in zip(*cells))
    off = _users_off(panel, outcome, unit=idname, cohort=gname, tname=tname, users=(panel[gname] > 0).to_numpy(),
                     periods=years, groups=groups, times=times, base_times=bases)
    return {"average": int(off.any(axis=1).sum()), 0: int(off[:, times == groups].any(axis=1).sum())}


def _value_columns(t: pd.DataFrame) -> list[str]:
    """Columns a failing row blanks: the estimates and both intervals (the pointwise one's midpoint is the
    estimate), and the count of every comparison firm (registered with them)."""
    return [c for c in ("estimate", "std_error", "conf_low", "conf_high", "pointwise_low", "pointwise_high",
                        "statistic", "p_value", "n_control_all") if c in t.columns]


def _comparison_firms(data: pd.DataFrame, outcome: str, r, *, matched: bool, key: str, idname: str, gname: str,
                      control_group: str, anticipation: int) -> int:
    r"""Every firm that serves as comparison in at least one group-time cell of the estimate.

    Matched (stacked) sample: the distinct comparison firms of the matched sets (``treated == 0``). Full sample:
    the never users with the outcome, and under ``notyettreated`` also the users whose first use lies after the
    earliest estimated cohort :math:`g_{min}` plus anticipation (each is a not-yet user in cell
    :math:`(g_{min}, g_{min})`). The tables' ``n_control`` of an aggregate is instead the smallest comparison set
    behind any cell (what the disclosure rule needs).
    """
    has_y = data[outcome].notna().to_numpy()  # a mask, not dropna: that copied every column of the panel
    if matched:
        return int(data.loc[has_y & (data["treated"] == 0).to_numpy(), key].nunique())
    g = data[gname].to_numpy(dtype=float)
    eligible = g == 0
    groups = np.asarray(r.groups, dtype=float) if r is not None else np.array([])
    if control_group == "notyettreated" and groups.size:
        eligible |= g > groups.min() + anticipation
    return int(data.loc[has_y & eligible, idname].nunique())


def _not_estimable_report(programme, outcome, sample, r, tw, nv, why, alp, rules, n_bal_drop) -> EffectReport:
    """An :class:`EffectReport` whose estimate tables are empty of numbers: the effect is undefined."""
    from reach.disclosure import check_estimates

    nan = np.nan
    cols = ["estimate", "std_error", "conf_low", "conf_high", "n_treated", "n_control"]
    comp = pd.DataFrame({"method": list(COMPARISON_METHODS), **{c: nan for c in cols[:4]},
                         "n_treated": 0, "n_control": 0, "n_control_all": 0})[["method", *cols[:5], "n_control_all", "n_control"]]
    # the same columns as an estimable report's tables (AGGTE_COLUMNS, ATT_GT_COLUMNS), all undefined
    es = pd.DataFrame({"term": ["ATT"], "type": ["dynamic"], "level": ["overall"],
                       "key": pd.array([pd.NA], dtype="Int64"),
                       **{c: [nan] for c in ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high",
                                              "pointwise_low", "pointwise_high")},
                       "n_treated": [0], "n_control": [0]})[list(AGGTE_COLUMNS)]
    pre = pd.DataFrame([{"test": "pre-trends (Wald, all pre-treatment ATT(g,t) = 0)", "statistic": nan, "df": 0,
                         "p_value": nan, "n_treated": 0, "n_control": 0}])
    gt = r.tidy() if r is not None else pd.DataFrame(columns=list(ATT_GT_COLUMNS))
    tag = f"{programme}_{outcome}_{sample}"
    raw = {"comparison": comp, "pretest": pre, "event_study": es, "att_gt": gt}
    checked = {k: check_estimates(v, name=f"{tag}_{k}", n_treated="n_treated", n_control="n_control", rules=rules,
                                  columns=_value_columns(v))
               for k, v in raw.items()}
    tables = {k: _publishable(c) for k, c in checked.items()}
    if r is None:
        r = ATTgtResult(groups=np.array([]), times=np.array([]), base_times=np.array([]), att=np.array([]),
                        se=np.array([]), se_analytic=np.array([]), crit_val=nan, n_treated=np.array([], dtype=np.int64),
                        n_control=np.array([], dtype=np.int64), inffunc=np.zeros((0, 0)), unit_cohort=np.array([]),
                        unit_weight=np.array([]), cluster=None, periods=np.array([]), yname=outcome)
    return EffectReport(programme=programme, outcome=outcome, sample=sample, att_gt=r, dynamic=None, simple=None,
                        twfe=tw, naive=nv, checked=checked, tables=tables, alp=float(alp),
                        min_units=int(rules.min_units), n_balanced_drop=n_bal_drop, not_estimable_reason=why)


def effects_intro(*, programme: str, first_year: int, last_year: int, control_group: str, est_method: str,
                  xformla: str | None, anticipation: int, n_no_pre: int, matched_units: pd.DataFrame | None,
                  allow_unbalanced_panel: bool, min_units: int = 10, key: str = "be_id",
                  label: str | None = None) -> str:
    """Markdown for notebook 04's opening: the design, the samples and who is left out (counts safe).

    Examples
    --------
    >>> print(effects_intro(programme="x", first_year=2014, last_year=2023, control_group="notyettreated",
    ...                     est_method="dr", xformla="~ size", anticipation=0, n_no_pre=3, matched_units=None,
    ...                     allow_unbalanced_panel=True)[:44])
    **Programme:** x, years 2014-2023; compariso

    ``label`` is the programme's reader-facing name (:func:`reach.labels.programme`); without it the
    key is shown.
    """
    from reach import labels

    comp = "firms that never used it" if control_group == "nevertreated" else "firms not yet using it"
    text = (f"**Programme:** {label or programme}, years {first_year}-{last_year}; comparison: {comp}; "
            f"method: {labels.label(est_method, 'method')}, covariates: {_covariates_text(xformla)} (base-year values), "
            f"anticipation {anticipation} years. Users whose first use "
            f"falls in the first year ({first_year}) have no year before use and are left out "
            f"({count_text(int(n_no_pre), min_units)} firms).\n\n")
    text += ("**Firms kept:** firms that are not in the register in every year (entry, exit) are kept: each "
             "group-time effect ATT(g,t) compares the firms observed both in the year before first use (g-1, "
             "the base year) and in year t. Dropping every firm not alive in all years (a balanced panel, R `did`'s "
             "default) would remove young and closing firms, the programmes' own target group; how many it would "
             "drop is given per outcome below.\n\n" if allow_unbalanced_panel else
             "**Firms kept:** only firms observed in every year of the window (a balanced panel, R `did`'s default); "
             "the number dropped is given per outcome below.\n\n")
    if matched_units is None:
        return text + "**Samples:** full (no matched sample from notebook 03 found)."
    n_users = matched_user_count(matched_units, key)
    n_cohorts = int(matched_units["cohort"].nunique())
    from reach.publish import register_counts

    register_counts([n_users, n_no_pre], min_units)  # printed below: known to the audit of rendered numbers
    return text + (
        f"**Samples:** the full analysis sample, and the matched sample of notebook 03: "
        f"{count_text(n_users, min_units)} matched users in {n_cohorts} cohort(s) (the same count as notebooks 03 "
        "and 05). The matched estimate is *stacked*: every cohort's effects are estimated on that cohort's own "
        "matched set (its matched users and their matched comparison firms, with that match's weights); a firm "
        "matched in several cohorts (as a comparison firm twice, or a comparison firm first and a user later) "
        "takes part in each in the role it was matched in, and the cohorts are averaged with standard errors "
        "clustered by firm, so such a firm is never counted twice nor as a user of a cohort it was not matched to.")


def samples_text(full: EffectReport | None, matched: EffectReport | None, *,
                 matching_covariates: Sequence[str] | None = None) -> str:
    """Why the full-sample and matched estimates of one outcome differ, read from the publishable numbers.

    ``matching_covariates``: what notebook 03 matched on (04's ``covariates`` parameter), named in
    the text; without them the text refers to notebook 03. Whether the two confidence intervals
    overlap is read from the published bounds (the samples share the users, so it is no test of a
    difference).
    """
    from reach import labels
    from reach.report import fmt_number as f

    if full is None or matched is None or not (full.estimable and matched.estimable):
        return ""
    a, b = full.headline(), matched.headline()
    if not (np.isfinite(a["simple_att"]) and np.isfinite(b["simple_att"])):
        return ""
    name = _outcome_label(full.outcome)
    on = ("; ".join(labels.covariate(c) for c in matching_covariates) if matching_covariates
          else "the covariates notebook 03 matched on")
    bounds = [a["simple_conf_low"], a["simple_conf_high"], b["simple_conf_low"], b["simple_conf_high"]]
    if not np.isfinite(bounds).all():
        reading = "The matched estimate is the one to quote: it also balances what the users were like before."
    elif a["simple_conf_high"] < b["simple_conf_low"] or b["simple_conf_high"] < a["simple_conf_low"]:
        reading = ("Their confidence intervals do not overlap: users differ from comparison firms in more than the "
                   "full sample's covariates capture (firms tend to take up a programme when their exports are "
                   "already moving), and the matched estimate, which balances that history too, is the one to quote.")
    else:
        reading = ("Their confidence intervals overlap (the samples share the users, so this is no test of a "
                   "difference); the matched estimate, which also balances the users' earlier history, is the one "
                   "to quote.")
    return (f"**Full vs matched ({name}):** the full-sample estimate {f(a['simple_att'])} "
            f"(CI {f(a['simple_conf_low'])} to {f(a['simple_conf_high'])}) assumes that users' {name} would "
            f"have moved like that of *all* comparison firms with the same base-year covariates "
            f"({_covariates_text(full.att_gt.xformla)}). The matched estimate {f(b['simple_att'])} (CI "
            f"{f(b['simple_conf_low'])} to {f(b['simple_conf_high'])}) compares each cohort's users with comparison "
            f"firms alike in the year before first use in: {on}. {reading}")
