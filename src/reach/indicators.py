"""Reach indicators: who do the programmes reach? (notebook ``02_reach``).

Each public function computes one indicator of the 2023 evaluation's descriptive
study (chapter 6) for one programme, from the firm-year panel
(:func:`reach.panel.build_panel`, CONTRACTS.md section 4) and, where needed, the
link result (:class:`reach.link.LinkResult`). Every function returns an
:class:`IndicatorResult`: the disclosure-checked tables
(:class:`reach.disclosure.Checked`, built on unit-level rows so that a notebook
exports them through :class:`reach.disclosure.OutputLog`), a tidy publishable
table, headline numbers taken only from the publishable copy, a short narrative
computed from those numbers, and a figure drawn from the publishable table
(:meth:`IndicatorResult.figure`). :func:`reach_headline` collects the flat
headline numbers of notebook 02 (``headline/reach.json``) from the results.

Comparison group and pseudo first-use years
-------------------------------------------
Users are the firms with ``g_<programme> > 0``; their first-use year is ``g``.
Comparison firms have no first-use year, so each users' cohort ``g`` lends its
reference years: a firm belongs to the comparison group *for cohort g* when it has a
register row in ``g-1`` that satisfies the population criterion
(``comparison_group``):

* ``"business_economy"``: SBI sections A-N except K, plus SBI division 95
  (``sbi_section`` and the first two digits of ``sbi``), in ``g-1``;
* ``"target_group"``: the programme's target group (``target_group`` bounds on
  ``employees`` and ``n_dest``) in ``g-1``;

and it is not a user by ``g``: with ``never_treated_only=True`` it never uses the
programme (``g_<programme> == 0``), otherwise ``g_<programme> == 0`` or
``g_<programme> > g`` (not yet a user). The comparison firm's values are measured
in the same reference years as cohort ``g``'s users. Cells are computed per cohort;
the comparison's all-cohort figure is the users-weighted average

.. math:: \\bar s_C = \\sum_g w_g\\, s_C(g), \\qquad w_g = n_U(g) / \\sum_h n_U(h),

where :math:`n_U(g)` is the number of cohort-``g`` users in the indicator's
denominator, so that users and comparison have the same calendar-year mix. It is
computed from the publishable cohort cells only (NaN when a needed cell was
suppressed). The users' all-cohort figure is a checked cell of its own (and
equals the same weighted average of the users' cohort cells).

Scale
-----
The panel is indexed on a firm x year grid (an ``int32`` row index per firm and
year), once per call or once per notebook (:func:`index_panel`, which the
functions take in place of the DataFrame), so a firm's value in any reference year
is one vectorised gather, and whether it traded in a window is one look-up in a
per-cohort column of the dense grid: no merges of reference rows with the panel and
no Python loop over firms. The disclosure checks count distinct units per cell, so
the comparison's cohort cells still need one row per (comparison firm, cohort,
measure). Those rows are numbered once per set of reference firms (cells, firm
codes and the firms' audit keys, the hash of their ``be_id`` as in every other
table), checked one measure (or event time) at a time and the per-cell verdicts
joined, so memory holds firms x cohorts rows, never firms x cohorts x measures.

Nothing here is an effect: these are descriptive contrasts (see ``reach.did``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from reach._checks import check_choice, count_text, require_columns
from reach._display import Headline
from reach.disclosure import Checked, Rules, _check_coded, _code, _unit_hashes, check_table, join_checked
from reach.report import count_of, fmt_count, fmt_share, share_of, share_text

__all__ = [
    "IndicatorResult",
    "IndexedPanel",
    "index_panel",
    "COMPARISON_GROUPS",
    "FIGURE_NAMES",
    "international_activity",
    "growth_market_presence",
    "target_group_fit",
    "prior_instrument_use",
    "instrument_use_after",
    "regional_reach",
    "export_values",
    "participant_counts",
    "comparison_mask",
    "comparison_description",
    "reach_headline",
    "panel_columns",
]

COMPARISON_GROUPS = ("business_economy", "target_group")
#: SBI 2008 sections of the business economy (A-N without K); division 95 is added.
BUSINESS_ECONOMY_SECTIONS = tuple("ABCDEFGHIJLMN")
BUSINESS_ECONOMY_DIVISIONS = ("95",)
TARGET_GROUP_KEYS = ("min_employees", "max_employees", "min_destinations", "max_destinations")
DEFAULT_TARGET_GROUP = {"min_employees": 10, "max_employees": 250, "min_destinations": 1, "max_destinations": 5}
ALL = "all"
USERS = "users"
COMPARISON = "comparison"
INSTRUMENT_CATEGORIES = ("none", "one", "several, not more than before", "more than before")
#: Where a missing-column error points the analyst.
_PANEL_HINT = "see CONTRACTS.md section 4 for the panel's columns"
#: Stem of each indicator's figure (exported as ``<programme>_<stem>.png``).
FIGURE_NAMES = MappingProxyType({
    "international_activity": "intl_activity",
    "growth_market_presence": "growth_markets",
    "target_group_fit": "target_group_profile",
    "prior_instrument_use": "prior_instruments",
    "instrument_use_after": "instruments_after",
    "regional_reach": "own_region_share",
    "export_values": "export_values",
    "participant_counts": "participant_counts",
})


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class IndicatorResult:
    """One reach indicator for one programme: checked tables, publishable table, headline.

    Attributes
    ----------
    name : str
        Indicator key (``"international_activity"``, ...); also the default export name.
    programme : str
        Programme key from the parameters (``"nlib"``, ``"tinl"``).
    checked : Mapping[str, Checked]
        The disclosure-checked tables (unsuppressed inside; export with ``OutputLog``).
        Empty when the indicator could not be computed (see ``message``).
    published : pandas.DataFrame
        Tidy publishable table (suppressed cells are NaN), with derived rows.
    headline : Headline
        Headline numbers, read from ``published`` only (suppressed -> None/NaN): a read-only
        mapping, also called as ``headline()`` like every other result's.
    narrative : str
        Two or three sentences computed from the headline numbers.
    definition : str
        One-line definition of the indicator.
    message : str or None
        Why the indicator is empty or incomplete (no users, no organiser data, ...).
    columns : tuple of str
        Columns of :meth:`tidy`.
    settings : Mapping[str, Any]
        The settings the indicator was computed with (``reach_window``, ...), for labels.

    Examples
    --------
    In a notebook, one section per indicator::

        r = international_activity(panel, "tinl", rules=rules)
        show_indicator(log, r, "Trade and Innovate NL")   # reach.report: tables, figure, narrative
    """

    name: str
    programme: str
    checked: Mapping[str, Checked]
    published: pd.DataFrame
    headline: Mapping[str, Any]
    narrative: str
    definition: str
    message: str | None = None
    columns: tuple[str, ...] = field(default=())
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def empty(self) -> bool:
        """True when no table could be computed (the ``message`` says why)."""
        return len(self.checked) == 0

    @property
    def table(self) -> Checked | None:
        """The main checked table (the first one), or None when empty."""
        return next(iter(self.checked.values()), None)

    @property
    def checks(self) -> list[Checked]:
        """Every checked table (what a figure of this indicator is drawn from)."""
        return list(self.checked.values())

    @property
    def exports(self) -> dict[str, Checked]:
        """Export name -> checked table: ``<programme>_<name>`` (``_<key>`` for secondary tables)."""
        stem = f"{self.programme}_{self.name}"
        return {stem + ("" if key == self.name else f"_{key}"): chk for key, chk in self.checked.items()}

    @property
    def figure_name(self) -> str:
        """Export name of the figure: ``<programme>_<FIGURE_NAMES[name]>``."""
        return f"{self.programme}_{FIGURE_NAMES.get(self.name, self.name)}"

    @property
    def plottable(self) -> bool:
        """True when :meth:`figure` has at least one publishable number to draw."""
        if self.empty or self.name not in _FIGURES:
            return False
        data = _FIGURES[self.name][0](self)
        return bool(len(data)) and bool(data["value"].notna().any())

    def figure(self, label: str | None = None):
        """Figure of the indicator, drawn from the publishable table only.

        Parameters
        ----------
        label : str, optional
            Programme label for the title (default: the programme key).

        Returns
        -------
        matplotlib.figure.Figure
            Axes labelled with units (shares in %, EUR 1,000, counts); legends carry
            the publishable group sizes (``n suppressed`` otherwise); suppressed cells
            are absent from the plot and marked ``suppressed``.

        Raises
        ------
        ValueError
            When there is nothing to draw (``plottable`` is False): no table, or every
            plotted cell suppressed.
        """
        if not self.plottable:
            why = self.message if self.empty else "every cell it would plot was suppressed by the disclosure rules"
            raise ValueError(f"{self.name} [{self.programme}]: no figure: {why}")
        prepare, draw = _FIGURES[self.name]
        return draw(self, prepare(self), label or self.programme)

    @property
    def text(self) -> str:
        """Markdown for the notebook: the narrative plus notes (why empty, why no figure)."""
        title = self.name.replace("_", " ").capitalize()
        if self.empty:
            return f"**{title}:** {self.message}"
        out = [self.narrative]
        if self.message:
            out.append(f"*Note:* {self.message}")
        if self.headline.get("n_organiser_regions") == 1:
            out.append("*All participations are in activities of a single organiser region.*")
        if not self.plottable:
            out.append(f"*No figure for {title.lower()}: every cell was suppressed by the disclosure rules.*")
        return "\n\n".join(out)

    def stage_output(self, label: str | None = None) -> "StageOutput":
        """The indicator in the publishing layer's shape (:class:`reach.publish.StageOutput`).

        ``tables`` are the checked exports, ``figures`` the figure drawn from the
        published table (when plottable), ``headline`` and ``narrative`` as computed.
        """
        from reach.publish import StageOutput

        figures = {self.figure_name: (self.figure(label), self.checks)} if self.plottable else {}
        return StageOutput(tables=dict(self.exports), figures=figures, headline=dict(self.headline),
                           narrative=(self.narrative,) if self.narrative else ())

    def tidy(self) -> pd.DataFrame:
        """Publishable table with this indicator's fixed columns (``columns``)."""
        return self.published.loc[:, list(self.columns)].reset_index(drop=True).copy()

    def summary(self) -> str:
        head = f"{self.name} [{self.programme}]: {self.definition}"
        body = self.message if self.empty else self.narrative
        return f"{head}\n{body}"

    def _repr_markdown_(self) -> str:
        out = [f"**{self.name}** ({self.programme}) — {self.definition}", "", self.narrative]
        if self.message and not self.empty:
            out += ["", f"*Note:* {self.message}"]
        if not self.empty:
            out += ["", self.tidy().to_markdown(index=False) if _has_tabulate() else self.tidy().to_string(index=False)]
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"IndicatorResult(name={self.name!r}, programme={self.programme!r}, tables={list(self.checked)}, message={self.message!r})"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _result(name, programme, checked, published, headline, narrative, definition, columns, message=None, settings=None):
    published = published.copy()
    for c in columns:
        if c not in published.columns:
            published[c] = np.nan
    for c in ("value", "n_units", "share", "n_participations"):
        if c in published.columns:  # nullable Int64 from suppress(): plain floats with NaN for the notebook
            published[c] = pd.to_numeric(published[c], errors="coerce").astype("float64")
    return IndicatorResult(
        name=name,
        programme=programme,
        checked=MappingProxyType(dict(checked)),
        published=published.reset_index(drop=True),
        headline=Headline(headline),
        narrative=narrative,
        definition=definition,
        message=message,
        columns=tuple(columns),
        settings=MappingProxyType(dict(settings or {})),
    )


def _empty(name, programme, definition, columns, message) -> IndicatorResult:
    return _result(name, programme, {}, pd.DataFrame(columns=list(columns)), {}, message, definition, columns, message)


def _no_users(name, programme, definition, columns) -> IndicatorResult:
    return _empty(
        name, programme, definition, columns,
        f"The programme has no linked users in the panel, so {name.replace('_', ' ')} cannot be computed.",
    )


# ----------------------------------------------------------------------------- validation


def _rules(rules: Rules | Mapping | None) -> Rules:
    if rules is None:
        return Rules()
    if isinstance(rules, Mapping):
        return Rules(**dict(rules))
    return rules


def _target(target_group: Mapping | None) -> dict:
    if target_group is None:
        return dict(DEFAULT_TARGET_GROUP)
    missing = [k for k in TARGET_GROUP_KEYS if k not in target_group]
    extra = [k for k in target_group if k not in TARGET_GROUP_KEYS]
    if missing or extra:
        raise ValueError(
            f"target_group needs exactly the keys {list(TARGET_GROUP_KEYS)}; "
            f"missing {missing}, unknown {extra} (got {dict(target_group)!r})"
        )
    tg = {k: float(target_group[k]) for k in TARGET_GROUP_KEYS}
    if tg["min_employees"] > tg["max_employees"] or tg["min_destinations"] > tg["max_destinations"]:
        raise ValueError(f"target_group bounds must satisfy min <= max; got {dict(target_group)!r}")
    return tg


def _window(reach_window: Any) -> int:
    if isinstance(reach_window, bool) or not isinstance(reach_window, (int, np.integer)) or reach_window < 1:
        raise ValueError(f"reach_window must be a positive integer number of years; got {reach_window!r}")
    return int(reach_window)


def _gcol(panel: pd.DataFrame, programme: str) -> str:
    if not isinstance(programme, str) or not programme:
        raise ValueError(f"programme must be a non-empty programme key such as 'nlib'; got {programme!r}")
    col = f"g_{programme}"
    if col not in panel.columns:
        have = [c[2:] for c in panel.columns if isinstance(c, str) and c.startswith("g_")]
        raise ValueError(f"panel has no first-use column {col!r}: programme {programme!r} unknown; panel has programmes {have}")
    return col


def comparison_mask(
    panel: pd.DataFrame,
    comparison_group: str = "business_economy",
    target_group: Mapping | None = None,
) -> pd.Series:
    """Firm-year rows that belong to the comparison population.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel with ``sbi_section`` and ``sbi`` (business economy) or
        ``employees`` and ``n_dest`` (target group).
    comparison_group : {"business_economy", "target_group"}
        The population criterion, applied to each row's own year.
    target_group : mapping, optional
        Bounds ``min_employees, max_employees, min_destinations, max_destinations``.

    Returns
    -------
    Series of bool, aligned with ``panel``.

    Notes
    -----
    Business economy: :math:`\\text{section} \\in \\{A,\\dots,N\\}\\setminus\\{K\\}`
    or the SBI division (first two digits) is 95. Target group:
    :math:`e_{min} \\le \\text{employees} \\le e_{max}` and
    :math:`d_{min} \\le \\text{n\\_dest} \\le d_{max}`.

    Examples
    --------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"sbi_section": ["C", "K", "S"], "sbi": ["10110", "64191", "95110"]})
    >>> comparison_mask(p).tolist()
    [True, False, True]
    """
    check_choice("comparison_group", comparison_group, COMPARISON_GROUPS)
    if comparison_group == "business_economy":
        require_columns(panel, ["sbi_section", "sbi"], "panel", _PANEL_HINT)
        sec = panel["sbi_section"].astype("str")
        division = panel["sbi"].astype("str").str.startswith(BUSINESS_ECONOMY_DIVISIONS)  # first two digits
        return (sec.isin(BUSINESS_ECONOMY_SECTIONS) | division).fillna(False).astype(bool)
    tg = _target(target_group)
    require_columns(panel, ["employees", "n_dest"], "panel", _PANEL_HINT)
    return _in_target(panel["employees"], panel["n_dest"], tg)


def _in_target(employees: Any, n_dest: Any, tg: Mapping) -> pd.Series:
    emp = pd.Series(employees).astype("float64")
    dest = pd.Series(n_dest).astype("float64")
    ok = emp.between(tg["min_employees"], tg["max_employees"]) & dest.between(tg["min_destinations"], tg["max_destinations"])
    return ok.fillna(False).astype(bool)


#: Panel columns the indicators of notebook 02 read, besides the keys, the ``g_*`` first-use years
#: (which :func:`reach.panel.read_panel` always reads) and one ``gm_<ISO>`` column per growth market.
PANEL_COLUMNS = ("sbi", "sbi_section", "size_class", "employees", "region", "exports", "exporter", "intl_active",
                 "n_dest", "instr_n", "instr_any", "instr_ever_before")


def panel_columns(growth_markets: Sequence[str]) -> list[str]:
    """The panel columns notebook 02's indicators read: ``read_panel(..., columns=panel_columns(gm))``.

    At register scale the panel has ~50 columns (lags, logs, imports, outcome transforms) and
    the reach indicators use half of them; reading only those saves time and memory in both
    passes of a run. Keys (``be_id``, ``year``) and ``g_*`` come with every read.

    Examples
    --------
    >>> panel_columns(["CN", "TR"])[-2:]
    ['gm_CN', 'gm_TR']
    """
    return [*PANEL_COLUMNS, *(f"gm_{c}" for c in growth_markets)]


def comparison_description(comparison_group: str, never_treated_only: bool, *, short: bool = False) -> str:
    """Plain-language description of the comparison group, for narratives and notebooks.

    Parameters
    ----------
    comparison_group : {"business_economy", "target_group"}
    never_treated_only : bool
    short : bool, default False
        The compact form used inside narrative sentences.

    Examples
    --------
    >>> comparison_description("business_economy", True, short=True)
    'the business economy (SBI A-N excl. K, plus 95), never users'
    >>> comparison_description("target_group", False)
    "the programme's target group, firms not (yet) using the programme"
    """
    check_choice("comparison_group", comparison_group, COMPARISON_GROUPS)
    if comparison_group == "business_economy":
        pop = "the business economy (SBI A-N excl. K, plus 95)" if short else \
            "the business economy (SBI sections A-N without K, plus division 95)"
    else:
        pop = "the programme's target group"
    if short:
        return pop + (", never users" if never_treated_only else ", not yet users")
    return pop + (", firms that never used the programme" if never_treated_only else ", firms not (yet) using the programme")


def _settings(comparison_group, never_treated_only, reach_window, target_group, rules):
    check_choice("comparison_group", comparison_group, COMPARISON_GROUPS)
    if not isinstance(never_treated_only, (bool, np.bool_)):
        raise ValueError(f"never_treated_only must be True or False; got {never_treated_only!r}")
    return _window(reach_window), _target(target_group), _rules(rules)


# ----------------------------------------------------------------------------- firm x year grid


@dataclass(frozen=True, eq=False)
class _Grid:
    """The panel indexed on a firm x year grid (``row[f, y - y0]`` = panel row or -1)."""

    panel: pd.DataFrame
    firm: np.ndarray  # panel row -> firm code
    year: np.ndarray  # panel row -> year
    ids: pd.Index  # firm code -> be_id (str)
    y0: int
    row: np.ndarray  # (n_firms, n_years) int32

    @classmethod
    def of(cls, panel: pd.DataFrame) -> "_Grid":
        require_columns(panel, ["be_id", "year"], "panel", _PANEL_HINT)
        firm, ids = pd.factorize(panel["be_id"].astype("str"), sort=False)
        if (firm < 0).any():
            bad = np.flatnonzero(firm < 0)[:5].tolist()
            raise ValueError(f"panel column 'be_id' has {int((firm < 0).sum())} missing identifiers (row positions {bad})")
        year = pd.to_numeric(panel["year"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if np.isnan(year).any():
            bad = np.flatnonzero(np.isnan(year))[:5].tolist()
            raise ValueError(f"panel column 'year' has {int(np.isnan(year).sum())} missing or non-numeric values (row positions {bad})")
        year = year.astype("int64")
        y0 = int(year.min()) if len(year) else 0
        n_years = int(year.max()) - y0 + 1 if len(year) else 1
        key = firm.astype("int64") * n_years + (year - y0)
        count = np.bincount(key, minlength=len(ids) * n_years)
        if (count > 1).any():
            dup = np.flatnonzero(count > 1)
            ex = [(str(ids[k // n_years]), int(k % n_years + y0)) for k in dup[:5]]
            raise ValueError(f"panel has {len(dup)} (be_id, year) pairs with several rows; examples (be_id, year): {ex}")
        row = np.full((len(ids), n_years), -1, dtype=np.int32 if len(year) < 2**31 else np.int64)
        row[firm, year - y0] = np.arange(len(year))
        return cls(panel, firm.astype("int64"), year, pd.Index(ids.astype(str)), y0, row)

    @property
    def n_firms(self) -> int:
        return len(self.ids)

    def values(self, col: str, dtype: str = "float64") -> np.ndarray:
        """A panel column as a numpy array (missing -> NaN for numbers, kept for text)."""
        s = self.panel[col]
        if dtype == "object":
            return s.astype("object").to_numpy()
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=dtype, na_value=np.nan)

    def rows(self, firm: np.ndarray, year: np.ndarray) -> np.ndarray:
        """Panel row of each (firm, year), -1 when the firm has no row that year."""
        idx = np.asarray(year, dtype="int64") - self.y0
        ok = (idx >= 0) & (idx < self.row.shape[1]) & (firm >= 0)
        out = np.full(len(idx), -1, dtype="int64")
        out[ok] = self.row[firm[ok], idx[ok]]
        return out

    def at(self, values: np.ndarray, firm: np.ndarray, year: np.ndarray, fill: Any = np.nan) -> tuple[np.ndarray, np.ndarray]:
        """(value, present) of each (firm, year); ``fill`` where the firm has no row."""
        r = self.rows(firm, year)
        present = r >= 0
        out = values[np.maximum(r, 0)] if len(values) else np.full(len(r), fill)
        if out.dtype == object:
            out = out.copy()
            out[~present] = fill
            return out, present
        return np.where(present, out, fill), present

    @cached_property
    def keys(self) -> np.ndarray:
        """Firm code -> the firm's key in the run-level audit: the hash of its ``be_id`` text, as every
        ``check_table`` over ``be_id`` keys it, so indicator cells meet other tables' cells firm by firm."""
        return _unit_hashes(self.ids.to_numpy())

    def positive_in(self, values: np.ndarray, firm: np.ndarray, start: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Per (firm, start): whether ``values`` is positive in any year ``start+lo .. start+hi`` (absent years: no).

        The start years are a few cohorts: each one's window is reduced over all firms of the dense firm x year
        grid at once (a 2-million-long column per cohort), and each (firm, start) reads its answer there, one
        gather from a small table instead of a gather per year of the window from the whole panel.
        """
        with np.errstate(invalid="ignore"):
            positive = np.asarray(values) > 0  # a missing value is no
        start = np.asarray(start, dtype="int64")
        starts = _distinct(start)
        if not len(starts):
            return np.zeros(0, dtype=bool)
        if len(starts) > 64:  # many distinct starts (not cohorts): per-firm running counts instead
            counts = _prefix(self, positive, "sum", dtype="int32")
            return _span_sum(counts, self, firm, start + lo, start + hi) > 0
        row, present = self.by_year
        dense = positive[row] & present  # (year, firm): positive; absent = no
        table = np.zeros((len(starts), self.n_firms), dtype=bool)
        for i, s in enumerate(starts):
            a, b = max(int(s) + lo - self.y0, 0), min(int(s) + hi - self.y0, len(dense) - 1)
            if a <= b:
                np.logical_or.reduce(dense[a:b + 1], axis=0, out=table[i])
        lut = np.zeros(int(starts[-1] - starts[0]) + 1, dtype=np.int64)
        lut[starts - starts[0]] = np.arange(len(starts))
        return table.ravel()[lut[start - starts[0]] * self.n_firms + firm]

    @cached_property
    def by_year(self) -> tuple[np.ndarray, np.ndarray]:
        """(year, firm) -> panel row (0 where absent) and whether the firm has a row: one year's firms contiguous."""
        row = np.ascontiguousarray(self.row.T)
        return np.maximum(row, 0), row >= 0

    def first_use(self, programme: str) -> np.ndarray:
        """First-use year per firm code (0 = never); it must be constant within a firm."""
        gcol = _gcol(self.panel, programme)
        g = np.nan_to_num(self.values(gcol)).astype("int64")
        per = np.zeros(self.n_firms, dtype="int64")
        per[self.firm] = g
        bad = per[self.firm] != g
        if bad.any():
            codes = np.unique(self.firm[bad])
            sub = pd.Series(g[np.isin(self.firm, codes[:5])]).groupby(self.firm[np.isin(self.firm, codes[:5])]).agg(["min", "max"])
            ex = [[str(self.ids[k]), int(r["min"]), int(r["max"])] for k, r in sub.iterrows()]
            raise ValueError(
                f"panel column {gcol!r} is not constant within be_id for {len(codes)} firm(s); "
                f"examples (be_id, min, max): {ex}"
            )
        return per


@dataclass(frozen=True, eq=False)
class _Ref:
    """Reference units: users (all) and, per user cohort g, the comparison firms of g."""

    firm: np.ndarray
    cohort: np.ndarray
    user: np.ndarray  # bool
    keys: np.ndarray  # firm code -> audit key (_Grid.keys)
    #: the coded rows of this reference's tables, per list of cohorts (see _Rows.check)
    codings: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.firm)

    def take(self, mask: np.ndarray) -> "_Ref":
        return _Ref(self.firm[mask], self.cohort[mask], self.user[mask], self.keys)


def _reference(
    grid: _Grid,
    programme: str,
    comparison_group: str | None,
    never_treated_only: bool,
    target_group: Mapping | None,
) -> _Ref:
    """Users (all) and, per user cohort g, firms qualifying through their register row in g-1."""
    g = grid.first_use(programme)
    users = np.flatnonzero(g > 0)
    firms, cohorts = [users], [g[users]]
    if comparison_group is not None and len(users):
        pop = comparison_mask(grid.panel, comparison_group, target_group).to_numpy()
        for cohort in np.unique(g[users]):  # loop over cohorts (a handful), never firms
            col = int(cohort) - 1 - grid.y0
            ok = np.zeros(grid.n_firms, dtype=bool)
            if 0 <= col < grid.row.shape[1]:  # each firm's row in g-1 (a column of the grid, not a pass over the panel)
                r = grid.row[:, col]
                ok = r >= 0
                ok[ok] = pop[r[ok]]
            ok &= (g == 0) if never_treated_only else (g == 0) | (g > cohort)
            comp = np.flatnonzero(ok)  # by firm code: the panel's order when it is sorted by firm
            firms.append(comp)
            cohorts.append(np.full(len(comp), cohort, dtype="int64"))
    user = np.zeros(sum(len(f) for f in firms), dtype=bool)
    user[: len(users)] = True
    return _Ref(np.concatenate(firms).astype("int64"), np.concatenate(cohorts).astype("int64"), user, grid.keys)


@dataclass(frozen=True, eq=False)
class IndexedPanel:
    """A firm-year panel indexed once for all the indicators of a programme (notebook 02).

    Every indicator function takes the panel as a DataFrame or as this. Indexing it is most of an
    indicator's cost at register scale (15 million firm-years: the firm x year grid, each programme's
    reference firms per cohort, the cells and unit keys of their tables), and a notebook's indicators
    share one index instead of building it eight times. The index keeps the panel's firms, years and
    reference firms as they were when indexed: a panel changed afterwards needs a new index.

    Examples
    --------
    >>> indexed = index_panel(panel)                                     # doctest: +SKIP
    >>> international_activity(indexed, "tinl").headline["intl_window"]   # doctest: +SKIP
    """

    panel: pd.DataFrame = field(repr=False)
    grid: _Grid = field(repr=False)
    _refs: dict = field(default_factory=dict, repr=False)

    def reference(self, programme: str, comparison_group: str | None, never_treated_only: bool,
                  target_group: Mapping) -> _Ref:
        """The reference units of ``programme`` under these settings, found once per index."""
        key = (programme, comparison_group, bool(never_treated_only), tuple(sorted(target_group.items())))
        if key not in self._refs:
            self._refs[key] = _reference(self.grid, programme, comparison_group, never_treated_only, target_group)
        return self._refs[key]

    def __repr__(self) -> str:
        return f"IndexedPanel({self.grid.n_firms} firms, {len(self.panel)} firm-years)"


def index_panel(panel: pd.DataFrame | IndexedPanel) -> IndexedPanel:
    """The panel indexed for the indicator functions (see :class:`IndexedPanel`); an index is returned as it is."""
    if isinstance(panel, IndexedPanel):
        return panel
    return IndexedPanel(panel, _Grid.of(panel))


def _frame(panel: pd.DataFrame | IndexedPanel) -> pd.DataFrame:
    return panel.panel if isinstance(panel, IndexedPanel) else panel


def _prepare(panel, programme, columns, comparison_group="business_economy", never_treated_only=True,
             reach_window=5, target_group=None, rules=None, *, comparison=True):
    """Validated settings, the grid and the reference units shared by the indicator functions."""
    W, tg, rules = _settings(comparison_group, never_treated_only, reach_window, target_group, rules)
    require_columns(_frame(panel), ["be_id", "year", *columns], "panel", _PANEL_HINT)
    indexed = index_panel(panel)
    grid = indexed.grid
    ref = indexed.reference(programme, comparison_group if comparison else None, never_treated_only, tg)
    settings = dict(comparison_group=comparison_group, never_treated_only=bool(never_treated_only), reach_window=W, target_group=tg)
    return W, tg, rules, grid, ref, settings


# ----------------------------------------------------------------------------- unit-level rows for check_table


def _categorical(codes: np.ndarray, labels: Sequence[Any]) -> pd.Categorical:
    """Codes into sorted labels, so check_table's cell order equals sorting the labels."""
    labels = list(labels)
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    rank = np.empty(len(labels), dtype="int64")
    rank[order] = np.arange(len(labels))
    return pd.Categorical.from_codes(rank[codes] if len(labels) else codes, [labels[i] for i in order])


def _distinct(ints: np.ndarray) -> np.ndarray:
    """Sorted distinct values of integers spanning a small range (years): a count, not a sort of millions."""
    if not len(ints):
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(ints.min()), int(ints.max())
    if hi - lo > 10 * len(ints) + 1024:
        return np.unique(ints)
    return np.flatnonzero(np.bincount(ints - lo)) + lo


@dataclass
class _Rows:
    """Unit-level rows of one checked table, collected per part (a measure, an event time...).

    A part is a set of reference units sharing one label of ``key``, with one value each: rows
    ``be_id, key, group, cohort, value``, the reference units plus each user once more under cohort
    ``all``. :meth:`check` runs the disclosure checks part by part and joins the results:
    without margins or declared totals every cell's verdict depends on its own rows only, so the joined
    table is the one a single ``check_table`` call would give, while memory stays at one part's rows
    (firms x cohorts, not firms x cohorts x parts). The parts' rows are numbered (cells, firms, audit
    keys) once per reference (:class:`reach.disclosure._Coding`), not once per part and statistic.
    """

    key: str
    key_last: bool = False  # by-columns (group, cohort, key) instead of (key, group, cohort)
    parts: list = field(default_factory=list)  # (label, reference, value of the kept units, kept or None)
    _cohorts: tuple | None = field(default=None, repr=False, compare=False)  # (parts seen, cohorts)

    def add(self, label: Any, ref: _Ref, value: np.ndarray, keep: np.ndarray | None = None) -> None:
        value = np.asarray(value)
        self.parts.append((label, ref, value if keep is None else value[keep], keep))

    @property
    def by(self) -> list[str]:
        return ["group", "cohort", self.key] if self.key_last else [self.key, "group", "cohort"]

    def cohorts(self) -> list[int]:
        """Every cohort of every part, sorted (one pass over the parts, not one per part's frame)."""
        if self._cohorts is None or self._cohorts[0] != len(self.parts):
            found: set[int] = set()
            for _, ref, _, keep in self.parts:
                found.update(int(c) for c in _distinct(ref.cohort if keep is None else ref.cohort[keep]))
            self._cohorts = (len(self.parts), sorted(found))
        return self._cohorts[1]

    def _labels(self, k: int) -> pd.Categorical:
        """Part ``k``'s label among every part's, as the categorical a frame of all parts would carry."""
        return _categorical(np.array([k]), [lab for lab, _, _, _ in self.parts])

    def _columns(self, ref: _Ref) -> dict[str, Any]:
        """The reference's rows (its units, then the users again under ``all``): unit codes, group, cohort."""
        cohorts = self.cohorts()
        lut = np.zeros(max(cohorts, default=0) + 1, dtype="int64")
        lut[cohorts] = np.arange(len(cohorts))
        u = ref.user
        return {
            "be_id": np.concatenate([ref.firm, ref.firm[u]]),
            "group": _categorical(np.concatenate([u, u[u]]).astype("int64"), [COMPARISON, USERS]),
            "cohort": _categorical(np.concatenate([lut[ref.cohort], np.full(int(u.sum()), len(cohorts))]),
                                   [str(c) for c in cohorts] + [ALL]),
        }

    def _coding(self, ref: _Ref):
        """The rows of ``ref`` (all its units) coded once: cells of group x cohort, firms, audit keys."""
        cohorts = tuple(self.cohorts())
        if cohorts not in ref.codings:
            cols = self._columns(ref)
            df = pd.DataFrame({"group": cols["group"], "cohort": cols["cohort"]})
            ref.codings[cohorts] = _code(df, ["group", "cohort"], cols["be_id"], ref.keys)
        return ref.codings[cohorts]

    def weighted_comparison(self, pub: pd.DataFrame) -> pd.DataFrame:
        """Comparison all-cohort rows: users-weighted average of publishable comparison cohort cells.

        Weights are the users' counts per cohort in each part's denominator; ``n_units`` counts the
        distinct comparison firms over the cohorts (NaN when the value is).
        """
        comp = pub[(pub["group"].astype(str) == COMPARISON) & (pub["cohort"].astype(str) != ALL)]
        comp = comp.assign(_k=comp[self.key].astype(str), _c=comp["cohort"].astype(str)).set_index(["_k", "_c"])["value"]
        rows = []
        for label, ref, _, keep in self.parts:
            user = ref.user if keep is None else ref.user & keep
            coh, w = np.unique(ref.cohort[user], return_counts=True)
            if not len(coh):  # no users in this part's denominator: nothing to weight
                continue
            vals = np.array([comp.get((str(label), str(c)), np.nan) for c in coh], dtype="float64")
            ok = not np.isnan(vals).any()
            others = ~ref.user if keep is None else ~ref.user & keep
            n = np.count_nonzero(np.bincount(ref.firm[others])) if others.any() else 0
            rows.append({self.key: label, "group": COMPARISON, "cohort": ALL,
                         "value": float(np.average(vals, weights=w)) if ok else np.nan, "n_units": float(n) if ok else np.nan})
        out = pd.DataFrame(rows, columns=[self.key, "group", "cohort", "value", "n_units"])
        return out.sort_values(self.key, kind="stable", key=lambda s: s.map(str) if s.dtype == object else s, ignore_index=True)

    def check(self, stats: Sequence[str], rules: Rules, names: Mapping[str, str]) -> dict[str, tuple[Checked, pd.DataFrame]]:
        """Per stat: the checked table over ``by`` and its publishable copy with weighted comparison rows."""
        pieces: dict[str, list[Checked]] = {stat: [] for stat in stats}
        position = len(self.by) - 1 if self.key_last else 0
        for k, (_, ref, value, keep) in enumerate(self.parts):  # a few parts; each check is vectorised over its rows
            coding = self._coding(ref)
            user = ref.user
            if keep is not None:
                coding, user = coding.take(np.concatenate([keep, keep[ref.user]])), ref.user[keep]
            coding = coding.with_label(self.key, self._labels(k), position)
            values = np.concatenate([value, value[user]])
            first = None
            for stat in stats:
                chk = _check_coded(coding, values, stat, rules, names[stat])
                # the statistics of one measure (mean, median) keep the same rows, so their unit memberships
                # (firms x cohorts: 48M pairs, 0.5 GB, at 2M firms) are one object, joined and registered once
                if first is not None and _same_members(chk.members, first.members):
                    chk = replace(chk, members=first.members)
                if first is None:
                    first = chk
                pieces[stat].append(chk)
            del coding, values, first
        out = {}
        joined: dict[tuple[int, ...], Any] = {}  # the parts' membership objects -> their joined memberships
        for stat in stats:
            # taken out of `pieces`: a stat's parts (their unit memberships: firms x cohorts each) are freed
            # once joined, before the next stat's join copies its own
            parts = pieces.pop(stat)
            key = tuple(id(p.members) for p in parts)  # alive while `parts` holds them: ids are not reused
            if key in joined and len(parts) > 1:
                # same cells in the same order as the stat joined before: only the tables are joined again
                chk = replace(join_checked([replace(p, members=None) for p in parts]), members=joined[key])
            else:
                chk = join_checked(parts)
                joined[key] = chk.members
            del parts
            pub = _published(chk)
            cols = [*self.by, "value", "n_units"]
            out[stat] = chk, pd.concat([pub[cols], self.weighted_comparison(pub)[cols]], ignore_index=True)
        return out


def _same_members(a: Mapping[str, np.ndarray] | None, b: Mapping[str, np.ndarray] | None) -> bool:
    """Whether two checks' unit memberships are equal, array by array (dtype included)."""
    if a is None or b is None or a.keys() != b.keys():
        return False
    return all(a[k] is b[k] or (a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])) for k in a)


def _published(chk: Checked) -> pd.DataFrame:
    """``suppress()`` with plain (non-categorical) label columns; cohort as text."""
    pub = chk.suppress().copy()
    for c in chk.by:
        if isinstance(pub[c].dtype, pd.CategoricalDtype):
            pub[c] = pub[c].astype(pub[c].cat.categories.dtype)
    if "cohort" in pub.columns:
        pub["cohort"] = pub["cohort"].astype(str)
    return pub


def _cell(pub: pd.DataFrame, column: str = "value", **where) -> float:
    """One publishable number (NaN when suppressed or absent)."""
    m = pd.Series(True, index=pub.index)
    for k, v in where.items():
        m &= pub[k].astype(str) == str(v)
    vals = pub.loc[m, column]
    return float(vals.iloc[0]) if len(vals) and pd.notna(vals.iloc[0]) else float("nan")


def _val(pub: pd.DataFrame, **where) -> float:
    return _cell(pub, "value", **where)


def _n(pub: pd.DataFrame, **where) -> float:
    return _cell(pub, "n_units", **where)


def _groups(pub: pd.DataFrame, **where) -> dict[str, float]:
    """Users' and comparison's all-cohort share and size for one measure."""
    return {"users": _val(pub, group=USERS, cohort=ALL, **where), "comparison": _val(pub, group=COMPARISON, cohort=ALL, **where),
            "n_users": _n(pub, group=USERS, cohort=ALL, **where), "n_comparison": _n(pub, group=COMPARISON, cohort=ALL, **where)}


# Narratives format numbers as every notebook does; where a number may be suppressed the phrase around it
# changes (reach.report.share_of / count_of / share_text), so no sentence reads "suppressed of suppressed users".
_pct, _int = fmt_share, fmt_count


def _money(value: Any) -> str:
    """An amount in euros for running text: "EUR 1,234", or "a suppressed amount"."""
    return "a suppressed amount" if not np.isfinite(value) else f"EUR {fmt_count(value)}"



SHARE_COLUMNS = ("measure", "group", "cohort", "value", "n_units")


def _stack_all(long: pd.DataFrame) -> pd.DataFrame:
    """Users-only rows: cohort label as text plus each user once more under cohort 'all'."""
    long = long.assign(cohort=long["cohort"].astype("int64").astype(str))
    return pd.concat([long, long.assign(cohort=ALL)], ignore_index=True)


def _prefix(grid: _Grid, values: np.ndarray, how: str, dtype: str = "float64") -> np.ndarray:
    """Dense ``(n_firms, n_years + 1)`` prefix: column k = sum or max over the years before ``y0 + k``."""
    dense = np.zeros((grid.n_firms, grid.row.shape[1] + 1), dtype=dtype)
    dense[grid.firm, grid.year - grid.y0 + 1] = np.nan_to_num(values)
    return np.cumsum(dense, axis=1, dtype=dtype) if how == "sum" else np.maximum.accumulate(dense, axis=1)


def _before(prefix: np.ndarray, grid: _Grid, firm: np.ndarray, year: np.ndarray) -> np.ndarray:
    """Prefix value over the years before ``year`` (clipped to the panel's years)."""
    return prefix[firm, np.clip(year - grid.y0, 0, prefix.shape[1] - 1)]


def _span_sum(prefix: np.ndarray, grid: _Grid, firm: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Sum over years ``first .. last`` (inclusive; 0 when empty) from a sum prefix."""
    return np.where(last >= first, _before(prefix, grid, firm, last + 1) - _before(prefix, grid, firm, first), 0.0)


def _prior_flag(grid: _Grid, ref: _Ref) -> np.ndarray:
    """1 when the firm registered for any instrument in a year before its (pseudo) first-use year.

    ``instr_any`` in years < g and ``instr_ever_before`` in years <= g both only see years < g;
    using both covers registrations in years without a register row.
    """
    ever = grid.values("instr_ever_before")
    seen = _prefix(grid, np.fmax(np.nan_to_num(grid.values("instr_any")), np.nan_to_num(ever)), "max")
    at_g, _ = grid.at(ever, ref.firm, ref.cohort, 0.0)
    return ((_before(seen, grid, ref.firm, ref.cohort) > 0) | (np.nan_to_num(at_g) > 0)).astype("int8")


# ----------------------------------------------------------------------------- 1. international activity


def international_activity(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    *,
    comparison_group: str = "business_economy",
    never_treated_only: bool = True,
    reach_window: int = 5,
    target_group: Mapping | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of users internationally active before first use, against a comparison group.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Firm-year panel (CONTRACTS.md section 4): ``be_id, year, g_<programme>,
        exporter, intl_active`` and the comparison-group columns; indexed once
        (:func:`index_panel`) when several indicators read it.
    programme : str
        Programme key (``g_<programme>`` must exist).
    comparison_group : {"business_economy", "target_group"}
    never_treated_only : bool
        Comparison firms never use the programme (else: not yet by the reference year).
    reach_window : int
        Years before first use that count as "before" (W).
    target_group : mapping, optional
        Target-group bounds (used when ``comparison_group="target_group"``).
    rules : reach.disclosure.Rules or mapping, optional

    Returns
    -------
    IndicatorResult
        ``tidy()`` columns ``measure, group, cohort, value, n_units``; measures
        ``exporter_before``, ``intl_before``, ``intl_window``.

    Notes
    -----
    For user :math:`i` with first-use year :math:`g_i`:

    * ``exporter_before`` :math:`= 1[X_{i,g_i-1} > 0]`, among users with a register row in :math:`g_i-1`;
    * ``intl_before`` :math:`= 1[X_{i,g_i-1} + M_{i,g_i-1} > 0]`, same denominator;
    * ``intl_window`` :math:`= 1[\\exists t \\in [g_i-W, g_i-1]: X_{it}+M_{it} > 0]`, among **all**
      users (years without a register row count as no trade).

    Comparison firms use the pseudo first-use years of the users' cohorts (module docstring).

    Examples
    --------
    >>> r = international_activity(panel, "tinl")            # doctest: +SKIP
    >>> r.headline["intl_window"]["users"]                   # doctest: +SKIP
    0.81
    """
    name = "international_activity"
    definition = "share of firms that exported or imported in the year before first use, and at any time in the window before"
    W, tg, rules, grid, ref, settings = _prepare(panel, programme, ["exporter", "intl_active"], comparison_group,
                                                 never_treated_only, reach_window, target_group, rules)
    if not ref.user.any():
        return _no_users(name, programme, definition, SHARE_COLUMNS)
    intl = grid.values("intl_active")
    exporter, present = grid.at(grid.values("exporter"), ref.firm, ref.cohort - 1, 0.0)
    intl_before, _ = grid.at(intl, ref.firm, ref.cohort - 1, 0.0)
    rows = _Rows("measure")
    rows.add("exporter_before", ref, (exporter > 0).astype("int8"), present)
    rows.add("intl_before", ref, (intl_before > 0).astype("int8"), present)
    rows.add("intl_window", ref, grid.positive_in(intl, ref.firm, ref.cohort, -W, -1).astype("int8"))
    chk, pub = rows.check(["share"], rules, {"share": f"reach_intl_{programme}"})["share"]
    head = {m: _groups(pub, measure=m) for m in ("exporter_before", "intl_before", "intl_window")}
    h1, hw = head["intl_before"], head["intl_window"]
    text = (
        f"In the year before first use, {share_of(h1['users'], h1['n_users'], 'users')} traded internationally "
        f"(exports or imports), against {share_text(h1['comparison'])} of the comparison group "
        f"({comparison_description(comparison_group, never_treated_only, short=True)}, "
        f"same reference years). Over the {W} years before first use, {share_of(hw['users'], None, 'users')} traded at "
        f"some point (comparison: {share_text(hw['comparison'])}). "
        f"{share_of(head['exporter_before']['users'], None, 'users', start=True)} already exported in the year before."
    )
    return _result(name, programme, {name: chk}, pub, head, text, definition, SHARE_COLUMNS, settings=settings)


# ----------------------------------------------------------------------------- 2. growth markets


def growth_market_presence(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    growth_markets: Sequence[str],
    *,
    comparison_group: str = "business_economy",
    never_treated_only: bool = True,
    reach_window: int = 5,
    target_group: Mapping | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of firms that traded with each growth market in the window before first use.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Needs ``gm_<ISO2>`` (0/1) for every market in ``growth_markets``.
    programme : str
    growth_markets : sequence of str
        ISO-2 codes (the evaluation's ten by default in the parameters).
    comparison_group, never_treated_only, reach_window, target_group, rules
        As in :func:`international_activity`.

    Returns
    -------
    IndicatorResult
        ``tidy()`` columns ``measure, group, cohort, value, n_units``; measure is the ISO-2
        code, plus ``any`` (any of the markets).

    Notes
    -----
    For market :math:`m`: :math:`s_m = \\frac{1}{N_U}\\sum_i 1[\\exists t\\in[g_i-W, g_i-1]: \\text{gm}_{m,it}=1]`
    over **all** users (no register row = no trade); ``gm_<m>`` is 1 when exports to or
    imports from :math:`m` are positive.

    Examples
    --------
    >>> growth_market_presence(panel, "tinl", ["CN", "TR"]).headline["CN"]   # doctest: +SKIP
    {'users': 0.25, 'comparison': 0.04, ...}
    """
    name = "growth_market_presence"
    definition = "share of firms that exported to or imported from each growth market in the window before first use"
    if isinstance(growth_markets, str):
        raise ValueError(f"growth_markets must be a list of ISO-2 codes, not a single string; got {growth_markets!r}")
    markets = [str(m) for m in growth_markets]
    if not markets:
        raise ValueError("growth_markets must list at least one ISO-2 code; got []")
    W, tg, rules, grid, ref, settings = _prepare(panel, programme, [f"gm_{m}" for m in markets], comparison_group,
                                                 never_treated_only, reach_window, target_group, rules)
    if not ref.user.any():
        return _no_users(name, programme, definition, SHARE_COLUMNS)
    rows = _Rows("measure")
    any_market = np.zeros(len(ref), dtype="int8")
    for m in markets:  # a handful of markets, each vectorised over firms
        traded = grid.positive_in(grid.values(f"gm_{m}"), ref.firm, ref.cohort, -W, -1).astype("int8")
        any_market |= traded
        rows.add(m, ref, traded)
    rows.add("any", ref, any_market)
    chk, pub = rows.check(["share"], rules, {"share": f"reach_growth_markets_{programme}"})["share"]
    head = {m: _groups(pub, measure=m) for m in [*markets, "any"]}
    shares = pd.Series({m: head[m]["users"] for m in markets}).dropna()
    per_market = (f"The most frequent growth market among users was {shares.idxmax()} ({_pct(shares.max())}); per market, "
                  f"users' shares range from {_pct(shares.min())} to {_pct(shares.max())}." if len(shares)
                  else "Every per-market share of users was suppressed.")
    text = (
        f"In the {W} years before first use, {share_of(head['any']['users'], None, 'users')} traded with at least one "
        f"of the {len(markets)} growth markets, against {share_text(head['any']['comparison'])} of the comparison group. "
        f"{per_market}"
    )
    return _result(name, programme, {name: chk}, pub, head, text, definition, SHARE_COLUMNS,
                   settings={**settings, "growth_markets": tuple(markets)})


# ----------------------------------------------------------------------------- 3. target group

TARGET_COLUMNS = ("table", "characteristic", "category", "cohort", "value", "n_units")
#: characteristic of target_group_fit's ``coverage`` table: users with ("yes") and without ("no") a register row
COVERAGE = "register record in the year before first use"
DEST_BANDS = ("0", "1-5", "6-10", "11+")


def _size_label(code: Any) -> str:
    """A size-class code as its employee range (:func:`reach.labels.size_class`); unknown codes as text."""
    from reach import labels

    if code is None or (not isinstance(code, str) and pd.isna(code)):
        return "size class unknown"
    text = str(code).strip()
    key = f"{int(float(text)):02d}" if text.replace(".", "", 1).isdigit() else text
    return labels.SIZE_CLASSES.get(key, text)


def _dest_band(n: Any) -> np.ndarray:
    return pd.cut(pd.Series(n).astype(float).fillna(0), [-np.inf, 0, 5, 10, np.inf], labels=list(DEST_BANDS)).astype(str).to_numpy()


def target_group_fit(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    *,
    target_group: Mapping | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of users inside the programme's target group, and the profile of those outside.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Needs ``employees, n_dest, size_class, exporter`` and ``g_<programme>``.
    programme : str
    target_group : mapping
        ``min_employees, max_employees, min_destinations, max_destinations``
        (NLiB: 10-250 employees, 1-5 export destinations).
    rules : reach.disclosure.Rules or mapping, optional

    Returns
    -------
    IndicatorResult
        Tables ``fit`` (share per cohort and all), ``profile`` (counts of users outside
        the target group by size class, exporter status, destinations band and reason) and
        ``coverage`` (users with and without a register row in the year before first use, per
        cohort and all).
        ``tidy()`` columns ``table, characteristic, category, cohort, value, n_units, share``.

    Notes
    -----
    Among users with a register row in :math:`g_i-1`:
    :math:`\\text{fit}_i = 1[e_{min}\\le \\text{employees}_{i,g_i-1}\\le e_{max}]\\cdot
    1[d_{min}\\le \\text{n\\_dest}_{i,g_i-1}\\le d_{max}]`. Users without a row in
    :math:`g_i-1` (new firms) are not dropped silently: they are the ``coverage`` table's cells
    ``no`` (per cohort and all), checked like every count and declared additive (``yes + no`` is a
    cohort's users, published by the other indicators), and ``headline["n_no_row_before"]`` is the
    published all-cohort cell (NaN when suppressed, 0 when every user has a row).
    Profile shares are counts over the number of users outside the target group.

    Examples
    --------
    >>> target_group_fit(panel, "nlib").headline["share_in_target"]   # doctest: +SKIP
    0.35
    """
    name = "target_group_fit"
    definition = "share of users inside the target group in the year before first use; profile of users outside it"
    _, tg, rules, grid, ref, settings = _prepare(panel, programme, ["employees", "n_dest", "size_class", "exporter"],
                                                 target_group=target_group, rules=rules, comparison=False)
    if not len(ref):
        return _no_users(name, programme, definition, TARGET_COLUMNS)
    year = ref.cohort - 1
    emp, present = grid.at(grid.values("employees"), ref.firm, year)
    if not present.any():
        return _empty(name, programme, definition, TARGET_COLUMNS,
                      "No user has a register row in the year before first use.")
    # Users without a row in g-1 (new firms) are a cell of firms like any other: 1-9 of them must not be
    # printed, nor follow from the users counted here and the users published by the other indicators
    # (a cohort's users minus those with a row, per cohort as in the fit table). A count table whose lines
    # add up to each cohort's users (additive) lets the table's own check and the run's differencing audit
    # protect it.
    be_id = grid.ids.to_numpy()[ref.firm]  # users only: by their be_id, the key every table's audit uses
    cover = check_table(_stack_all(pd.DataFrame({"be_id": be_id, "cohort": ref.cohort, "characteristic": COVERAGE,
                                                 "category": np.where(present, "yes", "no")})),
                        by=["characteristic", "category", "cohort"], unit="be_id", stat="count", rules=rules,
                        name=f"reach_target_coverage_{programme}", additive=["category"])
    at = pd.DataFrame({
        "be_id": be_id, "cohort": ref.cohort, "employees": emp,
        "n_dest": grid.at(grid.values("n_dest"), ref.firm, year)[0],
        "size_class": grid.at(grid.values("size_class", "object"), ref.firm, year, None)[0],
        "exporter": grid.at(grid.values("exporter"), ref.firm, year)[0],
    })[present]
    at["value"] = _in_target(at["employees"], at["n_dest"], tg).to_numpy().astype("int64")
    fit_long = _stack_all(at[["be_id", "cohort", "value"]].assign(characteristic="in_target_group", category="yes"))
    fit = check_table(fit_long, by=["characteristic", "category", "cohort"], value="value", unit="be_id", stat="share",
                      rules=rules, name=f"reach_target_fit_{programme}")
    out = at[at["value"] == 0]
    emp_out = out["employees"].astype(float)
    nd = out["n_dest"].astype(float).fillna(0)
    reason = np.select(
        [emp_out < tg["min_employees"], emp_out > tg["max_employees"], nd < tg["min_destinations"], nd > tg["max_destinations"]],
        ["fewer employees than target", "more employees than target", "fewer destinations than target", "more destinations than target"],
        "employees unknown",
    )
    profile_of = {
        # CBS size-class codes (10, 21, 71) mean nothing to a reader: the table and figure carry their labels
        "size_class": np.array([_size_label(c) for c in out["size_class"]], dtype=object),
        "exporter": np.where(out["exporter"] > 0, "exporter", "non-exporter"),
        "destinations": _dest_band(out["n_dest"]),
        "reason (first applying)": reason,
        "all outside target group": np.full(len(out), ALL),
    }
    prof = pd.concat([pd.DataFrame({"be_id": out["be_id"].to_numpy(), "characteristic": c, "category": v})
                      for c, v in profile_of.items()], ignore_index=True)
    frames = {"fit": fit, "coverage": cover}
    pub_fit = _published(fit).assign(table="fit")
    pub_cover = _published(cover).assign(table="coverage")
    if len(out):
        # each characteristic's categories add up to the firms outside the target group, published in the
        # same table: a single suppressed category would be that total minus the others
        profile = check_table(prof, by=["characteristic", "category"], unit="be_id", stat="count", rules=rules,
                              name=f"reach_target_profile_{programme}", additive=["category"])
        frames["profile"] = profile
        pub_prof = _published(profile).assign(table="profile", cohort=ALL)
        pub_prof["share"] = pub_prof["value"] / _val(pub_prof, characteristic="all outside target group", category=ALL)
    else:
        pub_prof = pd.DataFrame(columns=[*TARGET_COLUMNS, "share"])
    pub = pd.concat([pub_fit, pub_prof, pub_cover], ignore_index=True)
    share, n_users = _val(pub_fit, cohort=ALL), _n(pub_fit, cohort=ALL)
    # no "no" cell: every user had a row (a zero reveals no firm)
    n_missing = _val(pub_cover, category="no", cohort=ALL) if (pub_cover["category"] == "no").any() else 0.0
    head = {"share_in_target": share, "n_users_with_row_before": n_users, "n_no_row_before": n_missing,
            "n_outside": _val(pub_prof, characteristic="all outside target group", category=ALL) if len(out) else 0.0}
    exp_out = _val(pub_prof, characteristic="exporter", category="exporter") / head["n_outside"] if len(out) else np.nan
    if n_missing == 0:
        missing = "Every user had a register record in that year."
    else:
        missing = f"{count_of(n_missing, 'users', start=True)} had no register record in that year and are not classified."
    text = (
        f"{share_of(share, n_users, 'users with a register record in the year before first use', start=True)} were "
        f"inside the target group ({tg['min_employees']:.0f}-{tg['max_employees']:.0f} employees and "
        f"{tg['min_destinations']:.0f}-{tg['max_destinations']:.0f} export destinations)"
        + (f", so {_pct(1 - share)} were outside it. " if np.isfinite(share) else ". ")
        + f"Of those outside, {share_text(exp_out)} exported. {missing}"
    )
    return _result(name, programme, frames, pub, head, text, definition, (*TARGET_COLUMNS, "share"), settings=settings)


# ----------------------------------------------------------------------------- 4. prior instruments


def prior_instrument_use(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    *,
    comparison_group: str = "business_economy",
    never_treated_only: bool = True,
    reach_window: int = 5,
    target_group: Mapping | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of firms registered for any public instrument before first use.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Needs ``instr_any`` and ``instr_ever_before``.
    programme, comparison_group, never_treated_only, reach_window, target_group, rules
        As in :func:`international_activity` (``reach_window`` is not used: "before" means
        any year before g since the first data year).

    Returns
    -------
    IndicatorResult
        ``tidy()`` columns ``measure, group, cohort, value, n_units`` (measure ``instr_before``).

    Notes
    -----
    :math:`s = \\frac{1}{N_U}\\sum_i 1[\\exists\\ \\text{registration of } i \\text{ in a year} < g_i]`,
    over all users; comparison firms at their pseudo first-use year.

    Examples
    --------
    >>> prior_instrument_use(panel, "tinl").headline["users"]    # doctest: +SKIP
    0.52
    """
    name = "prior_instrument_use"
    definition = "share of firms registered for any public instrument (RVO/Achilles) in a year before first use"
    _, tg, rules, grid, ref, settings = _prepare(panel, programme, ["instr_any", "instr_ever_before"], comparison_group,
                                                 never_treated_only, reach_window, target_group, rules)
    if not ref.user.any():
        return _no_users(name, programme, definition, SHARE_COLUMNS)
    rows = _Rows("measure")
    rows.add("instr_before", ref, _prior_flag(grid, ref))
    chk, pub = rows.check(["share"], rules, {"share": f"reach_prior_instruments_{programme}"})["share"]
    head = _groups(pub)
    text = (
        f"{share_of(head['users'], head['n_users'], 'users', start=True)} had registered for a public instrument before "
        f"first use, against {share_text(head['comparison'])} of the comparison group "
        f"({comparison_description(comparison_group, never_treated_only, short=True)}, same reference years)."
    )
    return _result(name, programme, {name: chk}, pub, head, text, definition, SHARE_COLUMNS, settings=settings)


# ----------------------------------------------------------------------------- 5. instruments after

AFTER_COLUMNS = ("prior_use", "category", "value", "n_units", "share")
PRIOR_USE = ("used instruments before", "no instruments before")


def instrument_use_after(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    *,
    reach_window: int = 5,
    last_year: int | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Instrument use after first use, in the evaluation's four categories, split by prior use.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Needs ``instr_n, instr_any, instr_ever_before``.
    programme : str
    reach_window : int
        Maximum length W of the before and after windows.
    last_year : int, optional
        Last year of data (default: the panel's last year); bounds the after window.
    rules : reach.disclosure.Rules or mapping, optional

    Returns
    -------
    IndicatorResult
        ``tidy()`` columns ``prior_use, category, value, n_units, share``: ``value`` is the
        number of users in the category; ``share`` its share of the ``all`` row.

    Notes
    -----
    Windows of equal length :math:`L_i = \\min(W, T - g_i + 1)` (:math:`T` = last year):
    before :math:`= [g_i - L_i, g_i - 1]`, after :math:`= [g_i, g_i + L_i - 1]` (the year of
    first use counts as *after*: a programme is meant to lead firms onto instruments at once).
    With :math:`A_i, B_i` the registrations in the after and before windows, the category is
    the first that applies: ``none`` (:math:`A_i = 0`), ``one`` (:math:`A_i = 1`),
    ``several, not more than before`` (:math:`A_i\\ge2,\\ A_i\\le B_i`),
    ``more than before`` (:math:`A_i \\ge 2,\\ A_i > B_i`). ``prior_use`` splits users by any
    registration before :math:`g_i` (as :func:`prior_instrument_use`). Years without a register
    row count as no registrations.

    Examples
    --------
    >>> instrument_use_after(panel, "tinl").tidy()     # doctest: +SKIP
    """
    name = "instrument_use_after"
    definition = "users by instrument registrations after first use versus an equally long window before"
    W, _, rules, grid, ref, settings = _prepare(panel, programme, ["instr_n", "instr_any", "instr_ever_before"],
                                                reach_window=reach_window, rules=rules, comparison=False)
    if not len(ref):
        return _no_users(name, programme, definition, AFTER_COLUMNS)
    T = int(grid.year.max()) if last_year is None else int(last_year)
    L = np.clip(np.minimum(W, T - ref.cohort + 1), 0, None)
    counts = _prefix(grid, grid.values("instr_n"), "sum")
    B = _span_sum(counts, grid, ref.firm, ref.cohort - L, ref.cohort - 1)
    A = _span_sum(counts, grid, ref.firm, ref.cohort, ref.cohort + L - 1)
    base = pd.DataFrame({
        "be_id": grid.ids.to_numpy()[ref.firm],  # users only: by their be_id, the key every table's audit uses
        "prior_use": np.where(_prior_flag(grid, ref) > 0, PRIOR_USE[0], PRIOR_USE[1]),
        "category": np.select([A == 0, A == 1, A <= B], list(INSTRUMENT_CATEGORIES[:3]), INSTRUMENT_CATEGORIES[3]),
    })
    long = pd.concat([base, base.assign(category=ALL), base.assign(prior_use=ALL), base.assign(prior_use=ALL, category=ALL)],
                     ignore_index=True)
    chk = check_table(long, by=["prior_use", "category"], unit="be_id", stat="count", rules=rules,
                      name=f"reach_instruments_after_{programme}")
    pub = _published(chk)
    tot = pub[pub["category"] == ALL].set_index("prior_use")["value"]
    pub["share"] = pub["value"] / pub["prior_use"].map(tot).astype(float)
    order = {c: i for i, c in enumerate([*INSTRUMENT_CATEGORIES, ALL])}
    pub = pub.sort_values(["prior_use", "category"], key=lambda s: s.map(order) if s.name == "category" else s)
    head = {pu: {c: _cell(pub, "share", prior_use=pu, category=c) for c in INSTRUMENT_CATEGORIES} for pu in [ALL, *PRIOR_USE]}
    head["n_users"] = _val(pub, prior_use=ALL, category=ALL)
    text = (
        f"After first use, {share_of(head[ALL]['none'], None, 'users')} registered for no further public instrument, "
        f"{share_text(head[ALL]['one'])} for one, {share_text(head[ALL]['several, not more than before'])} for several but "
        f"not more than before, and {share_text(head[ALL]['more than before'])} for more than before (windows of up to "
        f"{W} years on each side). Among users without earlier instruments, "
        f"{share_text(head['no instruments before']['none'])} registered for none."
    )
    return _result(name, programme, {name: chk}, pub, head, text, definition, AFTER_COLUMNS, settings=settings)


# ----------------------------------------------------------------------------- 6. regional reach

REGION_COLUMNS = ("organiser_region", "value", "n_units", "n_participations")


def _unique_pairs(link: Any, programme: str) -> pd.DataFrame:
    """Linked records of ``programme`` as unique (firm, activity) pairs, earliest year first.

    Without an activity id every linked record is its own participation (NLiB portal users).
    """
    recs = getattr(link, "records", link)
    require_columns(recs, ["programme", "bucket", "be_id", "year"], "link.records", _PANEL_HINT)
    r = recs[(recs["programme"].astype(str) == programme) & (recs["bucket"].astype(str) == "linked")].copy()
    r["be_id"] = r["be_id"].astype(str)
    r["year"] = r["year"].astype("int64")
    for col in ("activity_id", "activity_type", "organiser_region"):
        if col not in r.columns:
            r[col] = pd.NA
    aid = r["activity_id"].astype("str")
    r["activity_key"] = aid.where(r["activity_id"].notna(), "row:" + r.index.astype(str))
    return r.sort_values("year", kind="stable").drop_duplicates(["be_id", "activity_key"])


def regional_reach(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    link: Any,
    *,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of participations from the organiser's own region, per organiser region.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Needs ``be_id, year, region`` (province code, register of the activity year).
    programme : str
    link : reach.link.LinkResult
        Its ``records`` (``programme, bucket, be_id, year, activity_id, organiser_region``).
    rules : reach.disclosure.Rules or mapping, optional

    Returns
    -------
    IndicatorResult
        ``tidy()`` columns ``organiser_region, value, n_units, n_participations``: ``value`` the
        share from the own region, ``n_units`` distinct firms, per organiser and ``all``. Empty
        (with a ``message``) for programmes without organiser data (NLiB). ``n_participations``
        is not given (NaN) when 1 to ``min_units - 1`` participations have no organiser region:
        :func:`participant_counts` publishes every participation, so the difference would be theirs.

    Notes
    -----
    Over unique linked (firm, activity) pairs :math:`(i, a)` with organiser region :math:`o_a`
    and activity year :math:`t_a`: :math:`s = \\frac{1}{|P|}\\sum_{(i,a)\\in P} 1[\\text{region}_{i,t_a} = o_a]`
    (a firm without region counts as elsewhere). Disclosure counts distinct firms per cell.

    Examples
    --------
    >>> regional_reach(panel, "tinl", link).headline["share_own_region"]   # doctest: +SKIP
    0.4
    """
    name = "regional_reach"
    definition = "share of firm participations in activities organised by the firm's own region"
    rules = _rules(rules)
    require_columns(_frame(panel), ["be_id", "year", "region"], "panel", _PANEL_HINT)
    pairs = _unique_pairs(link, programme)
    if pairs["organiser_region"].notna().sum() == 0:
        return _empty(name, programme, definition, REGION_COLUMNS,
                      "The programme has no organiser-region data, so regional reach does not apply.")
    n_no_org = int(pairs["organiser_region"].isna().sum())
    pairs = pairs[pairs["organiser_region"].notna()]
    grid = index_panel(panel).grid
    region, _ = grid.at(grid.values("region", "object"), grid.ids.get_indexer(pairs["be_id"]), pairs["year"].to_numpy(), None)
    org = pairs["organiser_region"].astype(str).to_numpy()
    pairs = pairs.assign(organiser_region=org, value=(pd.Series(region).astype(str).to_numpy() == org).astype("int64"))
    long = pd.concat([pairs, pairs.assign(organiser_region=ALL)], ignore_index=True)[["be_id", "organiser_region", "value", "activity_key"]]
    chk = check_table(long, by=["organiser_region"], value="value", unit="be_id", stat="share", rules=rules,
                      name=f"reach_regional_{programme}")
    pub = _published(chk)
    npart = long.groupby("organiser_region").size().rename("n_participations")
    # participant_counts publishes every participation: beside this table's exact count, the difference would
    # be the 1-9 participations (of at most as many firms) without an organiser region
    hidden = 0 < n_no_org < rules.min_units
    pub["n_participations"] = (pub["organiser_region"].map(npart).astype(float)
                               .where(pub["value"].notna() & (not hidden)))
    share = _val(pub, organiser_region=ALL)
    per = pub[(pub["organiser_region"] != ALL)].set_index("organiser_region")["value"].dropna()
    head = {"share_own_region": share,
            "n_participations": float(npart.get(ALL, 0)) if np.isfinite(share) and not hidden else np.nan,
            "n_firms": _n(pub, organiser_region=ALL), "n_organiser_regions": int((pub["organiser_region"] != ALL).sum()),
            # an unchecked count of participations: 1-9 are not given
            "n_without_organiser": float(n_no_org) if n_no_org == 0 or n_no_org >= rules.min_units else np.nan}
    spread = (f"Across organiser regions the own-region share ranges from {_pct(per.min())} to {_pct(per.max())}."
              if len(per) > 1 else "Only one organiser region has a publishable cell." if len(per)
              else "No organiser region has a publishable cell.")
    text = (
        f"{share_of(share, head['n_participations'], 'participations', start=True)} (unique firm-activity pairs) came "
        f"from firms located in the organiser's own province; the rest came from elsewhere. {spread}"
    )
    # an unchecked count: never exact below min_units
    msg = (f"{count_text(n_no_org, rules.min_units, 'participations')} without organiser region were left out."
           if n_no_org else None)
    return _result(name, programme, {name: chk}, pub, head, text, definition, REGION_COLUMNS, msg)


# ----------------------------------------------------------------------------- 7. export values

EXPORT_COLUMNS = ("stat", "group", "cohort", "event_time", "value", "n_units")


def export_values(
    panel: pd.DataFrame | IndexedPanel,
    programme: str,
    *,
    comparison_group: str = "business_economy",
    never_treated_only: bool = True,
    reach_window: int = 5,
    target_group: Mapping | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Export value (EUR) before and after first use, users vs comparison group: descriptive only.

    Parameters
    ----------
    panel : DataFrame or IndexedPanel
        Needs ``exports`` (EUR, 0 when no trade).
    programme, comparison_group, never_treated_only, reach_window, target_group, rules
        As in :func:`international_activity`; event times run from ``-W`` to ``W``.

    Returns
    -------
    IndicatorResult
        Tables ``mean`` and ``median``; ``tidy()`` columns ``stat, group, cohort, event_time,
        value, n_units``. Median cells are published only where the disclosure rules allow.

    Notes
    -----
    For event time :math:`e = t - g`: users' mean
    :math:`\\bar X_U(e) = \\frac{1}{|U_e|}\\sum_{i\\in U_e} X_{i,g_i+e}` over users with a register row
    in :math:`g_i+e`; comparison cells per cohort at :math:`g+e`, combined with weights
    :math:`n_U(g,e)` (module docstring). For the median the comparison's all-cohort value is the
    users-weighted average of cohort medians. A difference between the groups is **not an
    effect** of the programme: users differ from the comparison group before first use (see
    the matching and DiD notebooks for effects).

    Examples
    --------
    >>> export_values(panel, "tinl").headline["users_mean_before"]   # doctest: +SKIP
    """
    name = "export_values"
    definition = "mean and median export value (EUR) by year relative to first use, users vs comparison (descriptive, not an effect)"
    W, tg, rules, grid, ref, settings = _prepare(panel, programme, ["exports"], comparison_group, never_treated_only,
                                                 reach_window, target_group, rules)
    if not ref.user.any():
        return _no_users(name, programme, definition, EXPORT_COLUMNS)
    exports = grid.values("exports")
    rows = _Rows("event_time", key_last=True)
    for e in range(-W, W + 1):  # a few event times; each step is vectorised over firms
        x, present = grid.at(exports, ref.firm, ref.cohort + e)
        rows.add(e, ref, x, present)
    checked = rows.check(["mean", "median"], rules, {s: f"reach_exports_{s}_{programme}" for s in ("mean", "median")})
    frames = {stat: chk for stat, (chk, _) in checked.items()}
    pub = pd.concat([pub.assign(stat=stat) for stat, (_, pub) in checked.items()], ignore_index=True)
    pub["event_time"] = pub["event_time"].astype("int64")
    head = {f"{g}_{s}_{lab}": _val(pub, stat=s, group=g, cohort=ALL, event_time=e)
            for g in (USERS, COMPARISON) for s in ("mean", "median") for lab, e in (("before", -1), ("after", 1))}
    text = (
        f"In the year before first use, users exported on average {_money(head['users_mean_before'])} "
        f"(comparison group: {_money(head['comparison_mean_before'])}); one year after, {_money(head['users_mean_after'])} "
        f"(comparison: {_money(head['comparison_mean_after'])}). These are descriptive averages of different firms, "
        f"not an effect of the programme: users already differed before first use."
    )
    return _result(name, programme, frames, pub, head, text, definition, EXPORT_COLUMNS, settings=settings)


# ----------------------------------------------------------------------------- 8. participant counts

COUNT_COLUMNS = ("dimension", "category", "measure", "value", "n_units")


def participant_counts(
    link: Any,
    programme: str,
    *,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Unique firms versus per-activity participations, per year and per activity type.

    Parameters
    ----------
    link : reach.link.LinkResult
        Its ``records`` (linked records carry ``be_id``, ``year``, ``activity_id``, ``activity_type``).
    programme : str
    rules : reach.disclosure.Rules or mapping, optional

    Returns
    -------
    IndicatorResult
        Tables ``firms`` (count of distinct firms) and ``participations`` (sum of unique
        firm-activity pairs, a magnitude table checked for dominance); ``tidy()`` columns
        ``dimension, category, measure, value, n_units`` with dimension ``year``,
        ``activity_type`` or ``all``.

    Notes
    -----
    Participations :math:`P_c = |\\{(i, a): \\text{linked}, (i,a) \\in c\\}|` (several persons of a
    firm at one activity count once); firms :math:`F_c = |\\{i: \\exists a, (i,a)\\in c\\}|`.
    :math:`P_c / F_c` is the number of activities per participating firm. Without activity ids
    (NLiB) each linked record is one participation and the activity type is ``portal``.

    Examples
    --------
    >>> participant_counts(link, "tinl").headline["n_firms"]    # doctest: +SKIP
    """
    name = "participant_counts"
    definition = "unique firms versus participations (unique firm-activity pairs) per year and activity type"
    rules = _rules(rules)
    pairs = _unique_pairs(link, programme)
    if pairs.empty:
        return _no_users(name, programme, definition, COUNT_COLUMNS)
    kind = pairs["activity_type"].astype("str").where(pairs["activity_type"].notna(), "portal")
    base = pd.DataFrame({"be_id": pairs["be_id"], "year": pairs["year"].astype(str), "activity_type": kind, "one": 1.0})
    long = pd.concat(
        [
            base.assign(dimension="year", category=base["year"]),
            base.assign(dimension="activity_type", category=base["activity_type"]),
            base.assign(dimension=ALL, category=ALL),
        ],
        ignore_index=True,
    )[["be_id", "dimension", "category", "one"]]
    firms = check_table(long, by=["dimension", "category"], unit="be_id", stat="count", rules=rules, name=f"reach_firms_{programme}")
    parts = check_table(long, by=["dimension", "category"], value="one", unit="be_id", stat="sum", rules=rules,
                        name=f"reach_participations_{programme}")
    pub = pd.concat([firms.suppress().assign(measure="firms"), parts.suppress().assign(measure="participations")], ignore_index=True)
    head = {"n_firms": _val(pub, dimension=ALL, measure="firms"), "n_participations": _val(pub, dimension=ALL, measure="participations")}
    head["participations_per_firm"] = head["n_participations"] / head["n_firms"] if head["n_firms"] else np.nan
    years = pub[(pub["dimension"] == "year") & (pub["measure"] == "firms")].dropna(subset=["value"])
    busiest = f" The year with most participating firms was {years.loc[years['value'].idxmax(), 'category']}." if len(years) else ""
    ratio = head["participations_per_firm"]
    from reach.report import fmt_number  # registers the derived numbers it prints (output audit)

    if not np.isfinite(ratio):
        verdict = "the ratio cannot be published."
    elif ratio > 1.005:
        verdict = f"counting participations instead of firms would overstate reach by {fmt_number(100 * (ratio - 1), 0)}%."
    else:
        verdict = "each firm took part once, so participations and firms coincide."
    text = (
        f"{count_of(head['n_firms'], 'distinct firms', start=True)} took part in the programme, with "
        f"{count_of(head['n_participations'], 'participations')} (unique firm-activity pairs)"
        + (f", i.e. {fmt_number(ratio, 2)} per firm: {verdict}" if np.isfinite(ratio) else f": {verdict}") + busiest
    )
    return _result(name, programme, {"firms": firms, "participations": parts}, pub, head, text, definition, COUNT_COLUMNS)


# ----------------------------------------------------------------------------- figures
# Every figure is drawn from ``published`` (the suppress() copies plus derived rows), so a
# suppressed cell is absent from the plot: its bar is empty and labelled "suppressed".

GROUP_NAMES = {USERS: "users", COMPARISON: "comparison group"}


def _n_label(name: str, n: Any, unit: str = "") -> str:
    """Legend label with a publishable group size ('n suppressed' otherwise)."""
    unit = f" {unit}" if unit else ""
    return f"{name} (n={int(n):,}{unit})" if pd.notna(n) else f"{name} (n suppressed)"


def _group_labels(pub: pd.DataFrame, **where) -> pd.Series:
    """Per row: its group's name with the group's size in the cell(s) ``where``."""
    sizes = {g: _n(pub, group=g, **where) for g in GROUP_NAMES}
    return pub["group"].astype(str).map({g: _n_label(GROUP_NAMES[g], sizes[g]) for g in GROUP_NAMES})


def _pct_axis(ax, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    getattr(ax, f"set_{axis}lim")(0, 1.25 if axis == "y" else 1.12)  # headroom for bar labels and legend
    getattr(ax, f"set_{axis}ticks")(np.linspace(0, 1, 6))  # no tick beyond 100% in the headroom


def _bars(ax, data: pd.DataFrame, x: str, hue: str | None, *, y: str = "value", order: Sequence | None = None,
          horizontal: bool = False, pct: bool = True, colors: Sequence | None = None) -> None:
    """Grouped bars from a tidy table; a suppressed (NaN) bar stays empty and is labelled so.

    A row with a ``missing_text`` column says why its bar is empty instead (e.g. "not possible" for a
    combination that cannot occur: a structural zero is no suppression)."""
    from reach.report import place_legend

    xs = list(order) if order is not None else list(dict.fromkeys(data[x]))
    hues = list(dict.fromkeys(data[hue])) if hue else [None]
    width = 0.8 / len(hues)
    pos = np.arange(len(xs))
    for j, h in enumerate(hues):
        sub = data if h is None else data[data[hue] == h]
        vals = sub.groupby(x, sort=False)[y].first().reindex(xs).astype(float).to_numpy()
        why = (sub.groupby(x, sort=False)["missing_text"].first().reindex(xs) if "missing_text" in sub
               else pd.Series(np.nan, index=xs))
        where = pos - 0.4 + width * (j + 0.5)
        draw = ax.barh if horizontal else ax.bar
        bars = draw(where, np.nan_to_num(vals), width, label=h, color=colors)
        text = [(w if isinstance(w, str) else "suppressed") if np.isnan(v) else (f"{100 * v:.0f}%" if pct else f"{v:,.0f}")
                for v, w in zip(vals, why)]
        ax.bar_label(bars, labels=text, fontsize=7, padding=2)
    (ax.set_yticks if horizontal else ax.set_xticks)(pos, [str(v) for v in xs])
    if horizontal:
        ax.invert_yaxis()  # first category on top, as read
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    if hue:  # in a corner free of bars and labels, else outside the axes
        place_legend(ax, title="", fontsize=8, ncol=min(len(hues), 3))


def _new_figure(width: float, height: float, ncols: int = 1):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def _share_figure(data: pd.DataFrame, x: str, title: str, xlabel: str, ylabel: str, width: float = 9):
    from reach.report import place_legend

    fig, (ax,) = _new_figure(width, 4.5)
    _bars(ax, data.sort_values("group", ascending=False, kind="stable"), x, "group_label", order=list(dict.fromkeys(data[x])))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _pct_axis(ax)
    fig.tight_layout()
    place_legend(ax, title="", fontsize=8, ncol=2)  # again: the percent axis changed the free space
    fig.tight_layout()
    return fig


def _data_intl(r: IndicatorResult) -> pd.DataFrame:
    pub = r.published[r.published["cohort"] == ALL].copy()
    W = r.settings.get("reach_window", 5)
    names = {"exporter_before": "exported in g-1", "intl_before": "exported or imported\nin g-1",
             "intl_window": f"exported or imported\nin any of g-{W}..g-1"}
    return pub.assign(x=pub["measure"].map(names), group_label=_group_labels(pub, measure="intl_window"))


def _draw_intl(r, data, label):
    return _share_figure(data, "x", f"{label}: international activity before first use",
                         "trade in the reference period (g = year of first use)", "share of firms (%)")


def _data_markets(r: IndicatorResult) -> pd.DataFrame:
    pub = r.published[r.published["cohort"] == ALL].copy()
    return pub.assign(x=pub["measure"].replace({"any": "any of them"}), group_label=_group_labels(pub, measure="any"))


def _draw_markets(r, data, label):
    W = r.settings.get("reach_window", 5)
    return _share_figure(data, "x", f"{label}: traded with the market in the {W} years before first use",
                         "growth market (ISO-2)", "share of firms (%)", width=11)


def _data_prior(r: IndicatorResult) -> pd.DataFrame:
    pub = r.published.copy()
    # cohorts differ in size: each bar pair says how many users it rests on (the legend gives all cohorts)
    def name(c):
        n = _n(pub, group=USERS, cohort=c)
        head = "all cohorts" if c == ALL else str(c)
        return f"{head}\n({int(n):,} users)" if pd.notna(n) else f"{head}\n(users suppressed)"

    names = {c: name(c) for c in pub["cohort"].unique()}
    return pub.assign(x=pub["cohort"].map(names), group_label=_group_labels(pub, cohort=ALL))


def _draw_prior(r, data, label):
    return _share_figure(data, "x", f"{label}: registered for a public instrument before first use",
                         "first-use year (cohort)", "share registered for an instrument before (%)")


def _data_profile(r: IndicatorResult) -> pd.DataFrame:
    pub = r.published
    prof = pub[(pub["table"] == "profile") & (pub["category"] != ALL)].copy()
    from reach import labels

    # destination bands and size classes in their natural order, not alphabetically
    band = {**{b: i for i, b in enumerate(DEST_BANDS)}, **{t: i for i, t in enumerate(labels.SIZE_CLASSES.values())}}
    prof = prof.assign(_o=prof["category"].map(band).fillna(0)).sort_values(["characteristic", "_o", "category"])
    return prof.assign(x=prof["characteristic"].map(labels.characteristic) + ": " + prof["category"].astype(str),
                       value=prof["share"])


def _draw_profile(r, data, label):
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(data["characteristic"]))
    palette = dict(zip(kinds, plt.get_cmap("tab10").colors))
    fig, (ax,) = _new_figure(10, 0.32 * len(data) + 1.8)
    _bars(ax, data, "x", None, horizontal=True, colors=[palette[k] for k in data["characteristic"]])
    n_out = _int(r.headline.get("n_outside", np.nan))
    ax.set(ylabel="characteristic in the year before first use", xlabel="share of users outside the target group (%)",
           title=f"{label}:\nprofile of users outside the target group (n={n_out})")
    _pct_axis(ax, "x")
    fig.tight_layout()
    return fig


def _data_after(r: IndicatorResult) -> pd.DataFrame:
    pub = r.published
    tot = pub[pub["category"] == ALL].set_index("prior_use")["value"]
    data = pub[pub["category"] != ALL].copy()
    names = {p: _n_label("all users" if p == ALL else p, tot.get(p, np.nan)) for p in data["prior_use"].unique()}
    data = data.assign(prior_label=data["prior_use"].map(names), value=data["share"])
    # "several, not more than before" needs at least two registrations before: impossible without any
    # (a structural zero, labelled as such rather than "suppressed")
    impossible = pd.DataFrame({"prior_use": [PRIOR_USE[1]], "category": [INSTRUMENT_CATEGORIES[2]],
                               "prior_label": [names.get(PRIOR_USE[1], PRIOR_USE[1])], "value": [np.nan],
                               "missing_text": ["not possible"]})
    keep = ~((data["prior_use"] == PRIOR_USE[1]) & (data["category"] == INSTRUMENT_CATEGORIES[2]))
    if PRIOR_USE[1] not in names:
        return data
    return pd.concat([data[keep], impossible], ignore_index=True)


def _draw_after(r, data, label):
    fig, (ax,) = _new_figure(10, 4.5)
    from reach.report import tidy_legends

    _bars(ax, data, "category", "prior_label", order=INSTRUMENT_CATEGORIES)
    ax.set(xlabel="instrument registrations after first use", ylabel="share of users (%)",
           title=f"{label}: instrument use after first use, by earlier use")
    _pct_axis(ax)
    fig.tight_layout()
    tidy_legends(fig)  # the percent axis changed the free space
    return fig


def _data_region(r: IndicatorResult) -> pd.DataFrame:
    from reach import labels

    pub = r.published.copy()
    names = pub["organiser_region"].map(lambda o: "all organisers" if o == ALL else labels.label(o, "region"))
    # the bars are shares of participations: the n beside them counts participations too (firms in brackets)
    # (without the participations where their exact count would reveal those left out: regional_reach)
    return pub.assign(x=[f"{o} (n={int(p):,} participations, {int(f):,} firms)" if pd.notna(p) and pd.notna(f)
                         else f"{o} ({int(f):,} firms)" if pd.notna(f)
                         else f"{o} (n suppressed)" for o, p, f in zip(names, pub["n_participations"], pub["n_units"])])


def _draw_region(r, data, label):
    from reach.publish import register_numbers

    register_numbers("figure", data["n_participations"].dropna().tolist())  # printed beside the bars
    fig, (ax,) = _new_figure(9, 0.4 * len(data) + 1.8)
    _bars(ax, data, "x", None, horizontal=True)
    ax.set(ylabel="organiser region (province)", xlabel="participations from the organiser's own province (%)",
           title=f"{label}:\nparticipants from the organiser's own region")
    _pct_axis(ax, "x")
    fig.tight_layout()
    return fig


def _data_exports(r: IndicatorResult) -> pd.DataFrame:
    pub = r.published[r.published["cohort"] == ALL].copy()
    return pub.assign(group_label=_group_labels(pub, event_time=-1, stat="mean"))


def _room_for_counts(ax, counted: list, fontsize: float = 6.0) -> None:
    """Widen the y range so counts written ``offset`` points above (> 0) or below (< 0) their points stay inside
    the axes: at 2M firms the comparison group's flat line sat on the bottom spine, its counts written across it.

    ``counted``: ``(y values, offset in points)`` per annotated line. Sizes in points of the axes as laid out
    now (the figure's own size); a later ``tight_layout`` changes the height little."""
    if not counted:
        return
    lo, hi = ax.get_ylim()
    height_pt = ax.get_position().height * ax.figure.get_figheight() * 72
    # widening the top shrinks the bottom's share of the range and back: settle in a few rounds
    for yv, offset in [c for _ in range(3) for c in counted]:
        y = np.asarray(yv, dtype=float)
        y = y[np.isfinite(y)]
        if not len(y) or height_pt <= 0:
            continue
        need = (abs(offset) + fontsize + 2) / height_pt  # the label's far edge, as a share of the axes' height
        if need >= 0.5:
            continue
        if offset < 0 and (y.min() - lo) / (hi - lo) < need:
            lo = (y.min() - need * hi) / (1 - need)
        elif offset > 0 and (hi - y.max()) / (hi - lo) < need:
            hi = (y.max() - need * lo) / (1 - need)
    ax.set_ylim(lo, hi)


def _draw_exports(r, data, label):
    from matplotlib.lines import Line2D

    from reach.report import dominance_note, dominated_cells, place_legend

    # points where one firm holds more than half of the total (the dominance check of the mean table)
    dom = dominated_cells([c for k, c in r.checked.items() if k == "mean"])
    dom = dom[dom["cohort"].astype(str) == ALL] if len(dom) else dom
    ringed = {(g, int(e)) for g, e in zip(dom.get("group", []), dom.get("event_time", []))}
    n_ringed, legends = 0, []
    fig, axes = _new_figure(12, 4.8, ncols=2)
    for ax, stat in zip(axes, ("mean", "median")):
        sub = data[data["stat"] == stat]
        hidden, extra, counted = [], [], []
        for color, grp, offset in (("tab:blue", USERS, 7), ("tab:orange", COMPARISON, -11)):  # users first
            line = sub[sub["group"] == grp].sort_values("event_time")
            if not line["value"].notna().any():
                hidden.append(GROUP_NAMES[grp])
                continue
            x, yv = line["event_time"].to_numpy(dtype=float), line["value"].to_numpy(dtype=float) / 1000
            n = pd.to_numeric(line["n_units"], errors="coerce").to_numpy(dtype=float)
            varies = len(np.unique(n[np.isfinite(n)])) > 1
            name = (f"{GROUP_NAMES[grp]} (small numbers: firms behind each point)" if varies
                    else line["group_label"].iloc[0])
            ax.plot(x, yv, marker="o", color=color, label=name)
            if varies:  # later years rest on fewer (earlier) cohorts: say how many firms each point rests on
                for xi, yi, ni in zip(x, yv, n):
                    if np.isfinite(yi) and np.isfinite(ni):
                        ax.annotate(f"{int(ni):,}", (xi, yi), textcoords="offset points", xytext=(0, offset),
                                    ha="center", fontsize=6, color=color)
                counted.append((yv, offset))
            if stat == "mean":
                hit = [(xi, yi) for xi, yi in zip(x, yv) if (grp, int(xi)) in ringed and np.isfinite(yi)]
                if hit:
                    n_ringed += len(hit)
                    ax.scatter(*zip(*hit), s=160, facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)
        if hidden:  # a legend entry, not a text over the data
            extra.append(Line2D([], [], color="none", label=f"suppressed: {', '.join(hidden)}"))
        if stat == "mean" and n_ringed:
            extra.append(Line2D([], [], ls="none", marker="o", markersize=10, markerfacecolor="none",
                                markeredgecolor="black", label="one firm holds more than a quarter of the point's total"))
        ax.axvline(-0.5, color="grey", ls=":")
        ax.grid(alpha=0.3)
        ax.set(xlabel="years since first use (0 = year of first use)", ylabel=f"{stat} exports (EUR 1,000)",
               title=f"{stat.capitalize()} export value")
        _room_for_counts(ax, counted)
        handles, names = ax.get_legend_handles_labels()
        legends.append((ax, handles + extra, names + [h.get_label() for h in extra]))
    fig.suptitle(f"{label}: export value around first use (descriptive, not an effect)")
    note = dominance_note(n_ringed)
    if note:
        fig.text(0.01, 0.005, note + " A spike there is that firm, not the group.", fontsize=8, color="dimgrey",
                 ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    for ax, handles, names in legends:
        if handles:
            place_legend(ax, handles=handles, labels=names, fontsize=7, ncol=1)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


def _data_counts(r: IndicatorResult) -> pd.DataFrame:
    from reach import labels

    pub = r.published[r.published["dimension"] != ALL].copy()
    acts = pub["dimension"] == "activity_type"
    pub.loc[acts, "category"] = pub.loc[acts, "category"].map(lambda c: labels.label(c, "activity_type"))
    return pub.assign(measure_label=pub["measure"].map({"firms": "unique firms", "participations": "participations (firm x activity)"}))


def _draw_counts(r, data, label):
    dims = [d for d in ("year", "activity_type") if (data["dimension"] == d).any()]
    fig, axes = _new_figure(6 * len(dims), 4.5, ncols=len(dims))
    for ax, dim in zip(axes, dims):
        _bars(ax, data[data["dimension"] == dim], "category", "measure_label", pct=False)
        ax.set(xlabel="year of participation" if dim == "year" else "activity type",
               ylabel="number (firms or participations)", title=f"per {dim.replace('_', ' ')}")
        ax.set_ylim(0, 1.12 * max(1.0, float(np.nanmax(data["value"].to_numpy(dtype=float)))))
        ax.tick_params(axis="x", rotation=45 if dim == "activity_type" else 0)
    fig.suptitle(f"{label}: linked firms versus participations")
    fig.tight_layout()
    from reach.report import tidy_legends

    tidy_legends(fig)  # the axis limits changed the free space
    return fig


#: indicator name -> (publishable data to plot, drawing function)
_FIGURES: dict[str, tuple[Callable, Callable]] = {
    "international_activity": (_data_intl, _draw_intl),
    "growth_market_presence": (_data_markets, _draw_markets),
    "target_group_fit": (_data_profile, _draw_profile),
    "prior_instrument_use": (_data_prior, _draw_prior),
    "instrument_use_after": (_data_after, _draw_after),
    "regional_reach": (_data_region, _draw_region),
    "export_values": (_data_exports, _draw_exports),
    "participant_counts": (_data_counts, _draw_counts),
}


# ----------------------------------------------------------------------------- headline numbers


def _after_key(category: str) -> str:
    return "share_after_" + category.replace(", ", "_").replace(" ", "_")


#: indicator name -> its flat ``headline/reach.json`` entries (from the result's publishable headline)
_HEADLINE: dict[str, Callable[[Mapping], dict]] = {
    "international_activity": lambda h: {
        **{f"share_{m}_{g}": h[m][g] for m in ("exporter_before", "intl_before", "intl_window") for g in ("users", "comparison")},
        "n_users_window": h["intl_window"]["n_users"]},
    "growth_market_presence": lambda h: {f"share_any_growth_market_{g}": h["any"][g] for g in ("users", "comparison")},
    "target_group_fit": lambda h: {"share_in_target_group": h["share_in_target"], "n_users_outside_target_group": h["n_outside"]},
    "prior_instrument_use": lambda h: {f"share_instr_before_{g}": h[g] for g in ("users", "comparison")},
    "instrument_use_after": lambda h: {_after_key(c): h[ALL][c] for c in INSTRUMENT_CATEGORIES},
    "regional_reach": lambda h: {"share_own_region": h["share_own_region"]},
    "export_values": lambda h: {f"exports_{k}": v for k, v in h.items()},
    "participant_counts": lambda h: {"n_firms": h["n_firms"], "n_participations": h["n_participations"]},
}


def _publishable(x: Any) -> Any:
    """A suppressed (NaN) number becomes None, so reach.json says null, never a value."""
    if isinstance(x, (float, np.floating)) and not np.isfinite(x):
        return None
    return x.item() if isinstance(x, np.generic) else x


def reach_headline(
    results: Iterable[IndicatorResult],
    *,
    programme: str | None = None,
    comparison_group: str | None = None,
    reach_window: int | None = None,
) -> dict[str, Any]:
    """Flat headline numbers of the reach notebook (``headline/reach.json``) from indicator results.

    Parameters
    ----------
    results : iterable of IndicatorResult
        The indicators of one programme; empty ones (no users, no organiser data) add no keys.
    programme, comparison_group, reach_window : optional
        Recorded as they are; by default taken from the results.

    Returns
    -------
    dict
        Keys such as ``share_exporter_before_users``, ``share_exporter_before_comparison``,
        ``share_intl_before_users``, ``share_any_growth_market_users``,
        ``share_instr_before_users``, ``share_in_target_group``, ``share_own_region``,
        ``n_firms`` (read by notebook 05). Every number comes from a result's ``headline``,
        which is read from the publishable table: a suppressed cell gives ``None``.

    Notes
    -----
    Nothing is recomputed here: :math:`h_k = \\text{published}(c_k)` for the cell :math:`c_k`
    behind key :math:`k`, or ``None`` when that cell was suppressed.

    Examples
    --------
    >>> reach_headline([], programme="tinl", comparison_group="business_economy", reach_window=5)
    {'programme': 'tinl', 'comparison_group': 'business_economy', 'reach_window': 5}
    """
    results = list(results)
    for r in results:
        if not isinstance(r, IndicatorResult):
            raise TypeError(f"reach_headline expects IndicatorResult objects; got {type(r).__name__}")
    first = next((r for r in results if r.settings), None)
    settings = dict(first.settings) if first is not None else {}
    out: dict[str, Any] = {
        "programme": programme if programme is not None else (results[0].programme if results else None),
        "comparison_group": comparison_group if comparison_group is not None else settings.get("comparison_group"),
        "reach_window": reach_window if reach_window is not None else settings.get("reach_window"),
    }
    for r in results:
        if r.empty or r.name not in _HEADLINE:
            continue
        out.update({k: _publishable(v) for k, v in _HEADLINE[r.name](r.headline).items()})
    return out
