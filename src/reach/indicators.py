"""Reach indicators: who do the programmes reach? (notebook ``02_reach``).

Each public function computes one indicator of the 2023 evaluation's descriptive
study (chapter 6) for one programme, from the firm-year panel
(:func:`reach.panel.build_panel`, CONTRACTS.md section 4) and, where needed, the
link result (:class:`reach.link.LinkResult`). Every function returns an
:class:`IndicatorResult`: the disclosure-checked tables
(:class:`reach.disclosure.Checked`, built on unit-level rows so that a notebook
exports them through :class:`reach.disclosure.OutputLog`), a tidy publishable
table, headline numbers taken only from the publishable copy, and a short
narrative computed from those numbers.

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

Nothing here is an effect: these are descriptive contrasts (see ``reach.did``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from reach.disclosure import Checked, Rules, check_table

__all__ = [
    "IndicatorResult",
    "COMPARISON_GROUPS",
    "international_activity",
    "growth_market_presence",
    "target_group_fit",
    "prior_instrument_use",
    "instrument_use_after",
    "regional_reach",
    "export_values",
    "participant_counts",
    "comparison_mask",
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
    headline : Mapping[str, Any]
        Headline numbers, read from ``published`` only (suppressed -> None/NaN).
    narrative : str
        Two or three sentences computed from the headline numbers.
    definition : str
        One-line definition of the indicator.
    message : str or None
        Why the indicator is empty or incomplete (no users, no organiser data, ...).
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

    @property
    def empty(self) -> bool:
        """True when no table could be computed (the ``message`` says why)."""
        return len(self.checked) == 0

    @property
    def table(self) -> Checked | None:
        """The main checked table (the first one), or None when empty."""
        return next(iter(self.checked.values()), None)

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


def _result(name, programme, checked, published, headline, narrative, definition, columns, message=None):
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
        headline=MappingProxyType(dict(headline)),
        narrative=narrative,
        definition=definition,
        message=message,
        columns=tuple(columns),
    )


def _empty(name, programme, definition, columns, message) -> IndicatorResult:
    return _result(name, programme, {}, pd.DataFrame(columns=list(columns)), {}, message, definition, columns, message)


# ----------------------------------------------------------------------------- validation


def _rules(rules: Rules | Mapping | None) -> Rules:
    if rules is None:
        return Rules()
    if isinstance(rules, Mapping):
        return Rules(**dict(rules))
    return rules


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


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


def _require(df: pd.DataFrame, cols: Iterable[str], table: str = "panel") -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{table} must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(
            f"{table} lacks column(s) {missing}; it has {list(df.columns)[:30]} "
            "(see CONTRACTS.md section 4 for the panel's columns)"
        )


def _gcol(panel: pd.DataFrame, programme: str) -> str:
    if not isinstance(programme, str) or not programme:
        raise ValueError(f"programme must be a non-empty programme key such as 'nlib'; got {programme!r}")
    col = f"g_{programme}"
    if col not in panel.columns:
        have = [c[2:] for c in panel.columns if isinstance(c, str) and c.startswith("g_")]
        raise ValueError(f"panel has no first-use column {col!r}: programme {programme!r} unknown; panel has programmes {have}")
    return col


def _users(panel: pd.DataFrame, programme: str) -> pd.DataFrame:
    """One row per user: ``be_id``, ``cohort`` (first-use year g)."""
    gcol = _gcol(panel, programme)
    u = panel.loc[panel[gcol].fillna(0) > 0, ["be_id", gcol]]
    per = u.groupby("be_id", sort=True)[gcol].agg(["min", "max"])
    bad = per[per["min"] != per["max"]]
    if len(bad):
        raise ValueError(
            f"panel column {gcol!r} is not constant within be_id for {len(bad)} firm(s); "
            f"examples (be_id, min, max): {bad.head(5).reset_index().values.tolist()}"
        )
    return pd.DataFrame({"be_id": per.index.astype(str), "cohort": per["min"].astype("int64").to_numpy()})


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
    _check_choice("comparison_group", comparison_group, COMPARISON_GROUPS)
    if comparison_group == "business_economy":
        _require(panel, ["sbi_section", "sbi"])
        sec = panel["sbi_section"].astype("str")
        div = panel["sbi"].astype("str").str[:2]
        return (sec.isin(BUSINESS_ECONOMY_SECTIONS) | div.isin(BUSINESS_ECONOMY_DIVISIONS)).fillna(False).astype(bool)
    tg = _target(target_group)
    _require(panel, ["employees", "n_dest"])
    return _in_target(panel["employees"], panel["n_dest"], tg)


def _in_target(employees: pd.Series, n_dest: pd.Series, tg: Mapping) -> pd.Series:
    emp = employees.astype("float64")
    dest = n_dest.astype("float64")
    ok = emp.between(tg["min_employees"], tg["max_employees"]) & dest.between(tg["min_destinations"], tg["max_destinations"])
    return ok.fillna(False).astype(bool)


# ----------------------------------------------------------------------------- reference frames


def _reference(
    panel: pd.DataFrame,
    programme: str,
    comparison_group: str | None,
    never_treated_only: bool,
    target_group: Mapping | None,
) -> pd.DataFrame:
    """Rows ``be_id, group, cohort``: users (all) and, per user cohort g, comparison firms.

    Comparison firms qualify for cohort g through their register row in g-1 (module docstring).
    """
    users = _users(panel, programme)
    users.insert(1, "group", USERS)
    if comparison_group is None or users.empty:
        return users
    gcol = _gcol(panel, programme)
    pop = comparison_mask(panel, comparison_group, target_group)
    g = panel[gcol].fillna(0).astype("int64")
    base = panel.loc[pop, ["be_id", "year"]].assign(_g=g[pop].to_numpy())
    parts = []
    for cohort in np.sort(users["cohort"].unique()):  # loop over cohorts (a handful), never firms
        rows = base[base["year"] == cohort - 1]
        eligible = rows["_g"] == 0 if never_treated_only else (rows["_g"] == 0) | (rows["_g"] > cohort)
        parts.append(pd.DataFrame({"be_id": rows.loc[eligible, "be_id"].astype(str).to_numpy(), "group": COMPARISON, "cohort": cohort}))
    comp = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["be_id", "group", "cohort"])
    comp["cohort"] = comp["cohort"].astype("int64")
    return pd.concat([users, comp], ignore_index=True)


def _at(panel: pd.DataFrame, ref: pd.DataFrame, cols: Sequence[str], offset: int) -> pd.DataFrame:
    """``ref`` plus the panel's ``cols`` in year ``cohort + offset`` (NaN, ``_present`` False if no row)."""
    left = ref.assign(year=ref["cohort"].astype("int64") + offset)
    right = panel.loc[:, ["be_id", "year", *cols]].assign(_present=True)
    right["be_id"] = right["be_id"].astype(str)
    right["year"] = right["year"].astype("int64")
    out = left.merge(right, on=["be_id", "year"], how="left", validate="many_to_one")
    out["_present"] = out["_present"].fillna(False).astype(bool)
    return out


def _window_max(panel: pd.DataFrame, ref: pd.DataFrame, cols: Sequence[str], lo: int, hi: int, how: str = "max") -> pd.DataFrame:
    """``ref`` plus per-firm aggregate of ``cols`` over years ``cohort+lo .. cohort+hi``; absent years count as 0."""
    p = panel.loc[:, ["be_id", "year", *cols]].copy()
    p["be_id"] = p["be_id"].astype(str)
    out = []
    for cohort, r in ref.groupby("cohort", sort=True):  # per cohort: the window slice, not a loop over firms
        sl = p[(p["year"] >= cohort + lo) & (p["year"] <= cohort + hi)]
        agg = sl.groupby("be_id")[list(cols)].agg(how)
        merged = r.merge(agg, left_on="be_id", right_index=True, how="left")
        out.append(merged)
    res = pd.concat(out, ignore_index=True) if out else ref.assign(**{c: np.nan for c in cols})
    res[list(cols)] = res[list(cols)].astype("float64").fillna(0.0)
    return res


def _stack_all(long: pd.DataFrame) -> pd.DataFrame:
    """Cohort label as str plus the users' all-cohort rows (each user once more, cohort 'all')."""
    long = long.copy()
    long["cohort"] = long["cohort"].astype("int64").astype(str)
    users_all = long[long["group"] == USERS].assign(cohort=ALL)
    return pd.concat([long, users_all], ignore_index=True)


def _weighted_comparison(pub: pd.DataFrame, long: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Comparison all-cohort rows: users-weighted average of publishable comparison cohort cells.

    ``keys`` are the by-columns other than group and cohort. Weights are the users'
    cohort counts in each key's denominator (from the unit-level rows).
    """
    keys = list(keys)
    u = long[(long["group"] == USERS) & (long["cohort"] != ALL)]
    w = u.groupby(keys + ["cohort"], dropna=False)["be_id"].nunique().rename("w").reset_index()
    c = pub[(pub["group"] == COMPARISON) & (pub["cohort"] != ALL)]
    m = w.merge(c[keys + ["cohort", "value"]], on=keys + ["cohort"], how="left")
    comp_long = long[(long["group"] == COMPARISON)]
    n = comp_long.groupby(keys, dropna=False)["be_id"].nunique().rename("n_units").reset_index()

    def combine(df):
        if df["value"].isna().any() or df["w"].sum() == 0:
            return np.nan
        return float(np.average(df["value"].astype(float), weights=df["w"].astype(float)))

    if m.empty:
        return pd.DataFrame(columns=[*keys, "group", "cohort", "value", "n_units"])
    vals = m.groupby(keys, dropna=False)[["w", "value"]].apply(combine).rename("value").reset_index()
    out = vals.merge(n, on=keys, how="left").assign(group=COMPARISON, cohort=ALL)
    out.loc[out["value"].isna(), "n_units"] = np.nan
    return out[[*keys, "group", "cohort", "value", "n_units"]]


def _published(chk: Checked) -> pd.DataFrame:
    pub = chk.suppress().copy()
    if "cohort" in pub.columns:
        pub["cohort"] = pub["cohort"].astype(str)
    return pub


def _val(pub: pd.DataFrame, **where) -> float:
    m = pd.Series(True, index=pub.index)
    for k, v in where.items():
        m &= pub[k].astype(str) == str(v)
    vals = pub.loc[m, "value"]
    return float(vals.iloc[0]) if len(vals) and pd.notna(vals.iloc[0]) else float("nan")


def _n(pub: pd.DataFrame, **where) -> float:
    m = pd.Series(True, index=pub.index)
    for k, v in where.items():
        m &= pub[k].astype(str) == str(v)
    vals = pub.loc[m, "n_units"]
    return float(vals.iloc[0]) if len(vals) and pd.notna(vals.iloc[0]) else float("nan")


def _pct(x: float) -> str:
    return "suppressed" if not np.isfinite(x) else f"{100 * x:.0f}%"


def _int(x: float) -> str:
    return "suppressed" if not np.isfinite(x) else f"{int(round(x)):,}"


def _group_comparison_text(comparison_group: str, never_treated_only: bool) -> str:
    pop = "the business economy (SBI A-N excl. K, plus 95)" if comparison_group == "business_economy" else "the programme's target group"
    return pop + (", never users" if never_treated_only else ", not yet users")


def _no_users(name, programme, definition, columns) -> IndicatorResult:
    return _empty(
        name, programme, definition, columns,
        f"Programme {programme!r} has no linked users in the panel, so {name.replace('_', ' ')} cannot be computed.",
    )


def _settings(comparison_group, never_treated_only, reach_window, target_group, rules):
    _check_choice("comparison_group", comparison_group, COMPARISON_GROUPS)
    if not isinstance(never_treated_only, (bool, np.bool_)):
        raise ValueError(f"never_treated_only must be True or False; got {never_treated_only!r}")
    return _window(reach_window), _target(target_group), _rules(rules)


SHARE_COLUMNS = ("measure", "group", "cohort", "value", "n_units")


def _share_indicator(long: pd.DataFrame, rules: Rules, name: str) -> tuple[Checked, pd.DataFrame]:
    """check_table(share) on ``measure x group x cohort`` plus the weighted comparison rows."""
    long = _stack_all(long)
    chk = check_table(long, by=["measure", "group", "cohort"], value="value", unit="be_id", stat="share", rules=rules, name=name)
    pub = _published(chk)
    derived = _weighted_comparison(pub, long, ["measure"])
    pub = pd.concat([pub[list(SHARE_COLUMNS)], derived], ignore_index=True)
    return chk, pub


# ----------------------------------------------------------------------------- 1. international activity


def international_activity(
    panel: pd.DataFrame,
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
    panel : DataFrame
        Firm-year panel (CONTRACTS.md section 4): ``be_id, year, g_<programme>,
        exporter, intl_active`` and the comparison-group columns.
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
    W, tg, rules = _settings(comparison_group, never_treated_only, reach_window, target_group, rules)
    _require(panel, ["be_id", "year", "exporter", "intl_active"])
    ref = _reference(panel, programme, comparison_group, never_treated_only, tg)
    if not (ref["group"] == USERS).any():
        return _no_users(name, programme, definition, SHARE_COLUMNS)
    at = _at(panel, ref, ["exporter", "intl_active"], -1)
    at = at[at["_present"]]
    win = _window_max(panel, ref, ["intl_active"], -W, -1)
    long = pd.concat(
        [
            at.assign(measure="exporter_before", value=(at["exporter"] > 0).astype("int64")),
            at.assign(measure="intl_before", value=(at["intl_active"] > 0).astype("int64")),
            win.assign(measure="intl_window", value=(win["intl_active"] > 0).astype("int64")),
        ],
        ignore_index=True,
    )[["be_id", "group", "cohort", "measure", "value"]]
    chk, pub = _share_indicator(long, rules, f"reach_intl_{programme}")
    head = {
        m: {"users": _val(pub, measure=m, group=USERS, cohort=ALL), "comparison": _val(pub, measure=m, group=COMPARISON, cohort=ALL),
            "n_users": _n(pub, measure=m, group=USERS, cohort=ALL), "n_comparison": _n(pub, measure=m, group=COMPARISON, cohort=ALL)}
        for m in ("exporter_before", "intl_before", "intl_window")
    }
    h1, hw = head["intl_before"], head["intl_window"]
    text = (
        f"In the year before first use, {_pct(h1['users'])} of {_int(h1['n_users'])} {programme} users traded internationally "
        f"(exports or imports), against {_pct(h1['comparison'])} of the comparison group ({_group_comparison_text(comparison_group, never_treated_only)}, "
        f"same reference years). Over the {W} years before first use, {_pct(hw['users'])} of users traded at some point "
        f"(comparison: {_pct(hw['comparison'])}). {_pct(head['exporter_before']['users'])} of users already exported in the year before."
    )
    return _result(name, programme, {"international_activity": chk}, pub, head, text, definition, SHARE_COLUMNS)


# ----------------------------------------------------------------------------- 2. growth markets


def growth_market_presence(
    panel: pd.DataFrame,
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
    panel : DataFrame
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
    W, tg, rules = _settings(comparison_group, never_treated_only, reach_window, target_group, rules)
    if isinstance(growth_markets, str):
        raise ValueError(f"growth_markets must be a list of ISO-2 codes, not a single string; got {growth_markets!r}")
    markets = [str(m) for m in growth_markets]
    if not markets:
        raise ValueError("growth_markets must list at least one ISO-2 code; got []")
    cols = [f"gm_{m}" for m in markets]
    _require(panel, ["be_id", "year", *cols])
    ref = _reference(panel, programme, comparison_group, never_treated_only, tg)
    if not (ref["group"] == USERS).any():
        return _no_users(name, programme, definition, SHARE_COLUMNS)
    win = _window_max(panel, ref, cols, -W, -1)
    win["gm_any"] = win[cols].max(axis=1)
    parts = [win.assign(measure=m, value=(win[f"gm_{m}"] > 0).astype("int64")) for m in [*markets, "any"]]
    long = pd.concat(parts, ignore_index=True)[["be_id", "group", "cohort", "measure", "value"]]
    chk, pub = _share_indicator(long, rules, f"reach_growth_markets_{programme}")
    head = {m: {"users": _val(pub, measure=m, group=USERS, cohort=ALL), "comparison": _val(pub, measure=m, group=COMPARISON, cohort=ALL)}
            for m in [*markets, "any"]}
    shares = pd.Series({m: head[m]["users"] for m in markets}).dropna()
    top = f"The most frequent growth market among users was {shares.idxmax()} ({_pct(shares.max())})" if len(shares) else "All market cells were suppressed"
    text = (
        f"In the {W} years before first use, {_pct(head['any']['users'])} of {programme} users traded with at least one of the "
        f"{len(markets)} growth markets, against {_pct(head['any']['comparison'])} of the comparison group. "
        f"{top}; per market, users' shares range from {_pct(shares.min() if len(shares) else np.nan)} to {_pct(shares.max() if len(shares) else np.nan)}."
    )
    return _result(name, programme, {"growth_market_presence": chk}, pub, head, text, definition, SHARE_COLUMNS)


# ----------------------------------------------------------------------------- 3. target group

TARGET_COLUMNS = ("table", "characteristic", "category", "cohort", "value", "n_units")


def _dest_band(n: pd.Series) -> pd.Series:
    return pd.cut(n.astype(float).fillna(0), [-np.inf, 0, 5, 10, np.inf], labels=["0", "1-5", "6-10", "11+"]).astype(str)


def target_group_fit(
    panel: pd.DataFrame,
    programme: str,
    *,
    target_group: Mapping | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of users inside the programme's target group, and the profile of those outside.

    Parameters
    ----------
    panel : DataFrame
        Needs ``employees, n_dest, size_class, exporter`` and ``g_<programme>``.
    programme : str
    target_group : mapping
        ``min_employees, max_employees, min_destinations, max_destinations``
        (NLiB: 10-250 employees, 1-5 export destinations).
    rules : reach.disclosure.Rules or mapping, optional

    Returns
    -------
    IndicatorResult
        Tables ``fit`` (share per cohort and all) and ``profile`` (counts of users outside
        the target group by size class, exporter status, destinations band and reason).
        ``tidy()`` columns ``table, characteristic, category, cohort, value, n_units``.

    Notes
    -----
    Among users with a register row in :math:`g_i-1`:
    :math:`\\text{fit}_i = 1[e_{min}\\le \\text{employees}_{i,g_i-1}\\le e_{max}]\\cdot
    1[d_{min}\\le \\text{n\\_dest}_{i,g_i-1}\\le d_{max}]`. Users without a row in
    :math:`g_i-1` (new firms) are counted in ``headline["n_no_row_before"]``, not dropped silently.
    Profile shares are counts over the number of users outside the target group.

    Examples
    --------
    >>> target_group_fit(panel, "nlib").headline["share_in_target"]   # doctest: +SKIP
    0.35
    """
    name = "target_group_fit"
    definition = "share of users inside the target group in the year before first use; profile of users outside it"
    tg, rules = _target(target_group), _rules(rules)
    _require(panel, ["be_id", "year", "employees", "n_dest", "size_class", "exporter"])
    ref = _reference(panel, programme, None, True, tg)
    if ref.empty:
        return _no_users(name, programme, definition, TARGET_COLUMNS)
    at = _at(panel, ref, ["employees", "n_dest", "size_class", "exporter"], -1)
    n_missing = int((~at["_present"]).sum())
    at = at[at["_present"]].copy()
    if at.empty:
        return _empty(name, programme, definition, TARGET_COLUMNS,
                      f"None of the {len(ref)} users of {programme!r} has a register row in the year before first use.")
    at["value"] = _in_target(at["employees"], at["n_dest"], tg).astype("int64")
    fit_long = _stack_all(at[["be_id", "group", "cohort", "value"]].assign(characteristic="in_target_group", category="yes"))
    fit = check_table(fit_long, by=["characteristic", "category", "cohort"], value="value", unit="be_id", stat="share",
                      rules=rules, name=f"reach_target_fit_{programme}")
    out = at[at["value"] == 0].copy()
    emp = out["employees"].astype(float)
    nd = out["n_dest"].astype(float).fillna(0)
    reason = np.select(
        [emp < tg["min_employees"], emp > tg["max_employees"], nd < tg["min_destinations"], nd > tg["max_destinations"]],
        ["fewer employees than target", "more employees than target", "fewer destinations than target", "more destinations than target"],
        "employees unknown",
    )
    prof = pd.concat(
        [
            pd.DataFrame({"be_id": out["be_id"], "characteristic": "size_class", "category": out["size_class"].astype(str)}),
            pd.DataFrame({"be_id": out["be_id"], "characteristic": "exporter",
                          "category": np.where(out["exporter"] > 0, "exporter", "non-exporter")}),
            pd.DataFrame({"be_id": out["be_id"], "characteristic": "destinations", "category": _dest_band(out["n_dest"])}),
            pd.DataFrame({"be_id": out["be_id"], "characteristic": "reason (first applying)", "category": reason}),
            pd.DataFrame({"be_id": out["be_id"], "characteristic": "all outside target group", "category": ALL}),
        ],
        ignore_index=True,
    )
    frames = {"fit": fit}
    pub_fit = _published(fit).assign(table="fit")
    if len(prof):
        profile = check_table(prof, by=["characteristic", "category"], unit="be_id", stat="count", rules=rules,
                              name=f"reach_target_profile_{programme}")
        frames["profile"] = profile
        pub_prof = profile.suppress().assign(table="profile", cohort=ALL)
        total = _val(pub_prof, characteristic="all outside target group", category=ALL)
        pub_prof["share"] = pub_prof["value"] / total
    else:
        pub_prof = pd.DataFrame(columns=list(TARGET_COLUMNS))
    pub = pd.concat([pub_fit, pub_prof], ignore_index=True)
    share = _val(pub_fit, cohort=ALL)
    n_users = _n(pub_fit, cohort=ALL)
    head = {"share_in_target": share, "n_users_with_row_before": n_users, "n_no_row_before": n_missing,
            "n_outside": _val(pub_prof, characteristic="all outside target group", category=ALL) if len(prof) else 0.0}
    exp_out = _val(pub_prof, characteristic="exporter", category="exporter") / head["n_outside"] if len(prof) else np.nan
    text = (
        f"{_pct(share)} of the {_int(n_users)} {programme} users with a register record in the year before first use were inside "
        f"the target group ({tg['min_employees']:.0f}-{tg['max_employees']:.0f} employees and {tg['min_destinations']:.0f}-"
        f"{tg['max_destinations']:.0f} export destinations), so {_pct(1 - share)} were outside it. "
        f"Of those outside, {_pct(exp_out)} exported. {n_missing} users had no register record in that year and are not classified."
    )
    columns = (*TARGET_COLUMNS, "share")
    return _result(name, programme, frames, pub, head, text, definition, columns)


# ----------------------------------------------------------------------------- 4. prior instruments


def _prior_instruments(panel: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """``ref`` plus ``prior`` = any instrument registration in a year < cohort."""
    p = panel.loc[:, ["be_id", "year", "instr_any", "instr_ever_before"]].copy()
    p["be_id"] = p["be_id"].astype(str)
    out = []
    for cohort, r in ref.groupby("cohort", sort=True):
        # instr_ever_before (year <= g) and instr_any (year <= g-1) both only see years < g;
        # using both covers registrations in years without a register row.
        sl = p[p["year"] <= cohort]
        flag = np.where(sl["year"] < cohort, np.maximum(sl["instr_any"].fillna(0), sl["instr_ever_before"].fillna(0)),
                        sl["instr_ever_before"].fillna(0))
        agg = pd.Series(flag, index=sl.index).groupby(sl["be_id"]).max().rename("prior")
        out.append(r.merge(agg, left_on="be_id", right_index=True, how="left"))
    res = pd.concat(out, ignore_index=True)
    res["prior"] = (res["prior"].fillna(0) > 0).astype("int64")
    return res


def prior_instrument_use(
    panel: pd.DataFrame,
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
    panel : DataFrame
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
    W, tg, rules = _settings(comparison_group, never_treated_only, reach_window, target_group, rules)
    _require(panel, ["be_id", "year", "instr_any", "instr_ever_before"])
    ref = _reference(panel, programme, comparison_group, never_treated_only, tg)
    if not (ref["group"] == USERS).any():
        return _no_users(name, programme, definition, SHARE_COLUMNS)
    pr = _prior_instruments(panel, ref)
    long = pr.assign(measure="instr_before", value=pr["prior"])[["be_id", "group", "cohort", "measure", "value"]]
    chk, pub = _share_indicator(long, rules, f"reach_prior_instruments_{programme}")
    head = {"users": _val(pub, group=USERS, cohort=ALL), "comparison": _val(pub, group=COMPARISON, cohort=ALL),
            "n_users": _n(pub, group=USERS, cohort=ALL), "n_comparison": _n(pub, group=COMPARISON, cohort=ALL)}
    text = (
        f"{_pct(head['users'])} of the {_int(head['n_users'])} {programme} users had registered for a public instrument before "
        f"first use, against {_pct(head['comparison'])} of the comparison group "
        f"({_group_comparison_text(comparison_group, never_treated_only)}, same reference years)."
    )
    return _result(name, programme, {"prior_instrument_use": chk}, pub, head, text, definition, SHARE_COLUMNS)


# ----------------------------------------------------------------------------- 5. instruments after

AFTER_COLUMNS = ("prior_use", "category", "value", "n_units", "share")


def instrument_use_after(
    panel: pd.DataFrame,
    programme: str,
    *,
    reach_window: int = 5,
    last_year: int | None = None,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Instrument use after first use, in the evaluation's four categories, split by prior use.

    Parameters
    ----------
    panel : DataFrame
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
    W, rules = _window(reach_window), _rules(rules)
    _require(panel, ["be_id", "year", "instr_n", "instr_any", "instr_ever_before"])
    ref = _reference(panel, programme, None, True, None)
    if ref.empty:
        return _no_users(name, programme, definition, AFTER_COLUMNS)
    T = int(panel["year"].max()) if last_year is None else int(last_year)
    ref = ref.assign(L=np.clip(np.minimum(W, T - ref["cohort"] + 1), 0, None))
    p = panel.loc[:, ["be_id", "year", "instr_n"]].copy()
    p["be_id"] = p["be_id"].astype(str)
    m = ref[["be_id", "cohort", "L"]].merge(p, on="be_id", how="left")
    rel = m["year"] - m["cohort"]
    n = m["instr_n"].fillna(0)
    m["before"] = np.where((rel >= -m["L"]) & (rel <= -1), n, 0)
    m["after"] = np.where((rel >= 0) & (rel <= m["L"] - 1), n, 0)
    cnt = m.groupby("be_id")[["before", "after"]].sum()
    r = ref.merge(cnt, left_on="be_id", right_index=True, how="left").fillna({"before": 0, "after": 0})
    r = r.merge(_prior_instruments(panel, ref)[["be_id", "prior"]], on="be_id", how="left")
    A, B = r["after"].to_numpy(), r["before"].to_numpy()
    r["category"] = np.select([A == 0, A == 1, A <= B], list(INSTRUMENT_CATEGORIES[:3]), INSTRUMENT_CATEGORIES[3])
    r["prior_use"] = np.where(r["prior"] > 0, "used instruments before", "no instruments before")
    base = r[["be_id", "prior_use", "category"]]
    long = pd.concat([base, base.assign(category=ALL), base.assign(prior_use=ALL), base.assign(prior_use=ALL, category=ALL)],
                     ignore_index=True)
    chk = check_table(long, by=["prior_use", "category"], unit="be_id", stat="count", rules=rules,
                      name=f"reach_instruments_after_{programme}")
    pub = chk.suppress().copy()
    tot = pub[pub["category"] == ALL].set_index("prior_use")["value"]
    pub["share"] = pub["value"] / pub["prior_use"].map(tot).astype(float)
    order = {c: i for i, c in enumerate([*INSTRUMENT_CATEGORIES, ALL])}
    pub = pub.sort_values(["prior_use", "category"], key=lambda s: s.map(order) if s.name == "category" else s)
    sh = lambda pu, c: float(pub.loc[(pub["prior_use"] == pu) & (pub["category"] == c), "share"].squeeze()) if ((pub["prior_use"] == pu) & (pub["category"] == c)).any() else np.nan  # noqa: E731
    head = {pu: {c: sh(pu, c) for c in INSTRUMENT_CATEGORIES} for pu in [ALL, "used instruments before", "no instruments before"]}
    head["n_users"] = _val(pub, prior_use=ALL, category=ALL)
    text = (
        f"After first use, {_pct(head[ALL]['none'])} of {programme} users registered for no further public instrument, "
        f"{_pct(head[ALL]['one'])} for one, {_pct(head[ALL]['several, not more than before'])} for several but not more than before, "
        f"and {_pct(head[ALL]['more than before'])} for more than before (windows of up to {W} years on each side). "
        f"Among users without earlier instruments, {_pct(head['no instruments before']['none'])} registered for none."
    )
    return _result(name, programme, {"instrument_use_after": chk}, pub, head, text, definition, AFTER_COLUMNS)


# ----------------------------------------------------------------------------- 6. regional reach

REGION_COLUMNS = ("organiser_region", "value", "n_units", "n_participations")


def _linked_pairs(link: Any, programme: str) -> pd.DataFrame:
    recs = getattr(link, "records", link)
    _require(recs, ["programme", "bucket", "be_id", "year"], table="link.records")
    r = recs[(recs["programme"].astype(str) == programme) & (recs["bucket"].astype(str) == "linked")].copy()
    r["be_id"] = r["be_id"].astype(str)
    if "activity_id" not in r.columns:
        r["activity_id"] = pd.NA
    # Without an activity id every linked record is its own participation (NLiB portal users).
    aid = r["activity_id"].astype("str")
    r["activity_key"] = aid.where(r["activity_id"].notna(), "row:" + r.index.astype(str))
    return r


def regional_reach(
    panel: pd.DataFrame,
    programme: str,
    link: Any,
    *,
    rules: Rules | Mapping | None = None,
) -> IndicatorResult:
    """Share of participations from the organiser's own region, per organiser region.

    Parameters
    ----------
    panel : DataFrame
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
        (with a ``message``) for programmes without organiser data (NLiB).

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
    _require(panel, ["be_id", "year", "region"])
    r = _linked_pairs(link, programme)
    if "organiser_region" not in r.columns or r["organiser_region"].notna().sum() == 0:
        return _empty(name, programme, definition, REGION_COLUMNS,
                      f"Programme {programme!r} has no organiser-region data, so regional reach does not apply.")
    if r.empty:
        return _no_users(name, programme, definition, REGION_COLUMNS)
    pairs = r.sort_values(["year"]).drop_duplicates(["be_id", "activity_key"])
    n_no_org = int(pairs["organiser_region"].isna().sum())
    pairs = pairs[pairs["organiser_region"].notna()]
    reg = panel.loc[:, ["be_id", "year", "region"]].copy()
    reg["be_id"] = reg["be_id"].astype(str)
    reg["year"] = reg["year"].astype("int64")
    pairs = pairs.assign(year=pairs["year"].astype("int64")).merge(reg, on=["be_id", "year"], how="left")
    pairs["value"] = (pairs["region"].astype(str) == pairs["organiser_region"].astype(str)).astype("int64")
    pairs["organiser_region"] = pairs["organiser_region"].astype(str)
    long = pd.concat([pairs, pairs.assign(organiser_region=ALL)], ignore_index=True)[["be_id", "organiser_region", "value", "activity_key"]]
    chk = check_table(long, by=["organiser_region"], value="value", unit="be_id", stat="share", rules=rules,
                      name=f"reach_regional_{programme}")
    pub = chk.suppress().copy()
    npart = long.groupby("organiser_region").size().rename("n_participations")
    pub["n_participations"] = pub["organiser_region"].map(npart).astype(float).where(pub["value"].notna())
    share = _val(pub, organiser_region=ALL)
    per = pub[(pub["organiser_region"] != ALL)].set_index("organiser_region")["value"].dropna()
    head = {"share_own_region": share, "n_participations": float(npart.get(ALL, 0)) if np.isfinite(share) else np.nan,
            "n_firms": _n(pub, organiser_region=ALL), "n_organiser_regions": int((pub["organiser_region"] != ALL).sum()),
            "n_without_organiser": n_no_org}
    spread = (f"Across organiser regions the own-region share ranges from {_pct(per.min())} to {_pct(per.max())}."
              if len(per) > 1 else "Only one organiser region has a publishable cell.")
    text = (
        f"{_pct(share)} of the {_int(head['n_participations'])} {programme} participations (unique firm-activity pairs) came "
        f"from firms located in the organiser's own province; the rest came from elsewhere. {spread}"
    )
    msg = f"{n_no_org} participations without organiser region were left out." if n_no_org else None
    return _result(name, programme, {"regional_reach": chk}, pub, head, text, definition, REGION_COLUMNS, msg)


# ----------------------------------------------------------------------------- 7. export values

EXPORT_COLUMNS = ("stat", "group", "cohort", "event_time", "value", "n_units")


def export_values(
    panel: pd.DataFrame,
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
    panel : DataFrame
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
    W, tg, rules = _settings(comparison_group, never_treated_only, reach_window, target_group, rules)
    _require(panel, ["be_id", "year", "exports"])
    ref = _reference(panel, programme, comparison_group, never_treated_only, tg)
    if not (ref["group"] == USERS).any():
        return _no_users(name, programme, definition, EXPORT_COLUMNS)
    parts = []
    for e in range(-W, W + 1):  # a few event times; each step is vectorised over firms
        a = _at(panel, ref, ["exports"], e)
        parts.append(a[a["_present"]].assign(event_time=e))
    long = pd.concat(parts, ignore_index=True)[["be_id", "group", "cohort", "event_time", "exports"]]
    long["exports"] = long["exports"].astype("float64")
    long = _stack_all(long)
    frames, pubs = {}, []
    for stat in ("mean", "median"):
        chk = check_table(long, by=["group", "cohort", "event_time"], value="exports", unit="be_id", stat=stat, rules=rules,
                          name=f"reach_exports_{stat}_{programme}")
        frames[stat] = chk
        pub = _published(chk)
        derived = _weighted_comparison(pub, long, ["event_time"])
        pubs.append(pd.concat([pub[["group", "cohort", "event_time", "value", "n_units"]], derived], ignore_index=True).assign(stat=stat))
    pub = pd.concat(pubs, ignore_index=True)
    pub["event_time"] = pub["event_time"].astype("int64")
    v = lambda stat, grp, e: _val(pub, stat=stat, group=grp, cohort=ALL, event_time=e)  # noqa: E731
    head = {f"{g}_{s}_{lab}": v(s, g, e) for g in (USERS, COMPARISON) for s in ("mean", "median") for lab, e in (("before", -1), ("after", 1))}
    text = (
        f"In the year before first use, {programme} users exported on average EUR {_money(head['users_mean_before'])} "
        f"(comparison group: EUR {_money(head['comparison_mean_before'])}); one year after, EUR {_money(head['users_mean_after'])} "
        f"(comparison: EUR {_money(head['comparison_mean_after'])}). These are descriptive averages of different firms, "
        f"not an effect of the programme: users already differed before first use."
    )
    return _result(name, programme, frames, pub, head, text, definition, EXPORT_COLUMNS)


def _money(x: float) -> str:
    return "suppressed" if not np.isfinite(x) else f"{x:,.0f}"


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
    r = _linked_pairs(link, programme)
    if r.empty:
        return _no_users(name, programme, definition, COUNT_COLUMNS)
    pairs = r.sort_values("year").drop_duplicates(["be_id", "activity_key"]).copy()
    if "activity_type" not in pairs.columns:
        pairs["activity_type"] = pd.NA
    pairs["activity_type"] = pairs["activity_type"].astype("str").where(pairs["activity_type"].notna(), "portal")
    pairs["one"] = 1.0
    base = pairs[["be_id", "year", "activity_type", "one"]]
    long = pd.concat(
        [
            base.assign(dimension="year", category=base["year"].astype("int64").astype(str)),
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
    if not np.isfinite(ratio):
        verdict = "the ratio cannot be published."
    elif ratio > 1.005:
        verdict = f"counting participations instead of firms would overstate reach by {100 * (ratio - 1):.0f}%."
    else:
        verdict = "each firm took part once, so participations and firms coincide."
    text = (
        f"{_int(head['n_firms'])} distinct firms took part in {programme}, with {_int(head['n_participations'])} participations "
        f"(unique firm-activity pairs), i.e. {ratio:.2f} per firm: {verdict}{busiest}"
    )
    return _result(name, programme, {"firms": firms, "participations": parts}, pub, head, text, definition, COUNT_COLUMNS)
