"""Statistical disclosure control: every exported number passes output checking.

CBS lets results leave the Remote Access environment only after output
checking. This module checks the suite's own outputs first, following ACRO's
default rules and the ESSnet/SDAP output guidelines that CBS builds on:

* frequency and magnitude cells need at least ``min_units`` distinct units
  (firms, never rows);
* dominance (N-k): the ``dominance_k`` largest unit contributions at most
  ``dominance_max`` of the cell total;
* p-ratio (p% rule): ``(total - x1 - x2) / x1 >= p_ratio_min``;
* zero cells and negative contributions in magnitude tables go to human review;
* no minima or maxima of microdata; medians/quantiles only with at least
  ``min_units_each_side`` units strictly on each side;
* estimates: at least ``min_dof`` residual degrees of freedom and at least
  ``min_treated`` treated and ``min_control`` control units per reported row.

:func:`check_table` and :func:`check_estimates` return an immutable
:class:`Checked`; :meth:`Checked.suppress` is the only copy that may be
exported (primary plus secondary suppression). :class:`OutputLog` writes that
copy, refuses figures drawn from failing tables and keeps
``disclosure_report.csv``, what a CBS output checker reads.
:func:`scan_for_identifiers` searches written outputs for firm identifiers.

The report never contains a disclosive number: it names the cells and the
rules they failed, never their unit counts or contributions.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import html
import itertools
import math
import os
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from reach._checks import check_choice, require_columns

__all__ = [
    "Rules",
    "Checked",
    "check_table",
    "check_estimates",
    "join_checked",
    "OutputLog",
    "scan_for_identifiers",
    "STATS",
    "REPORT_COLUMNS",
]

#: Statistics that :func:`check_table` can check.
STATS = ("count", "sum", "mean", "share", "median", "quantile")
_REFUSED_STATS = ("min", "max", "minimum", "maximum", "range")
_MAGNITUDE = ("sum", "mean")
_TOTAL = "Total"
_REL_TOL = 1e-12  # float slack so that a value exactly at a threshold passes

#: Columns of ``disclosure_report.csv`` (in this order).
REPORT_COLUMNS = (
    "notebook",
    "object",
    "kind",
    "file",
    "check",
    "stat",
    "n_cells",
    "n_suppressed_primary",
    "n_suppressed_secondary",
    "n_review",
    "n_rows_excluded",
    "rules_failed",
    "verdict",
    "reason",
    "suppressed_cells",
    "review_cells",
    "rules",
)


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rounding:
    r"""Published precision of shares, money and counts.

    Parameters
    ----------
    share_pp : float, default 0.1
        Shares are rounded to this many percentage points (0.1 pp = 0.001).
    money : float, default 1000
        Money amounts (units ``"EUR"``) are rounded to this many euros.
    count_base : int, default 1
        Counts are rounded to a multiple of this base (5 where CBS asks for it; 1 = exact).

    Notes
    -----
    Rounding :math:`x` to step :math:`s` publishes :math:`s \cdot \mathrm{round}(x / s)`
    (half away from zero), so a reader knows :math:`x` only within :math:`\pm s/2`,
    which is the interval the run-level audit uses for rounded cells.

    Examples
    --------
    >>> Rounding(share_pp=0.1).apply(0.035714, "share")
    0.036
    >>> Rounding(money=1000).apply(123456.0, "EUR")
    123000.0
    """

    share_pp: float = 0.1
    money: float = 1000.0
    count_base: int = 1

    def __post_init__(self) -> None:
        for name, lo, hi in (("share_pp", 0.0, 100.0), ("money", 0.0, math.inf)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (lo < float(v) <= hi):
                raise ValueError(f"Rules.rounding.{name} must be a number in ({lo:g}, {hi:g}]; got {v!r}")
            object.__setattr__(self, name, float(v))
        v = self.count_base
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"Rules.rounding.count_base must be an integer >= 1; got {v!r}")
        object.__setattr__(self, "count_base", int(v))

    def step(self, units: str | None) -> float | None:
        """Rounding step for a value in ``units`` (``share``, ``EUR``, ``count``), None for other units."""
        if units == "share":
            return self.share_pp / 100.0
        if units == "EUR":
            return self.money
        if units == "count":
            return float(self.count_base) if self.count_base > 1 else None
        return None

    def apply(self, value: Any, units: str | None) -> Any:
        """Round ``value`` (scalar or array) to the published precision of ``units``."""
        step = self.step(units)
        if step is None:
            return value
        arr = np.asarray(value, dtype="float64")
        out = np.sign(arr) * np.floor(np.abs(arr) / step + 0.5) * step
        # a clean decimal representation (0.036, not 0.036000000000000004)
        digits = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
        out = np.round(out, digits + 1)
        return float(out) if np.ndim(out) == 0 else out


UNITS = ("count", "share", "EUR", "log", "index", "ratio", "number")


@dataclass(frozen=True)
class Rules:
    """Thresholds of output checking (ACRO defaults, ESSnet/SDAP guidelines).

    Parameters
    ----------
    min_units : int, default 10
        Minimum distinct units (firms) behind every published cell.
    dominance_k : int, default 2
        Number of largest contributors in the N-k dominance rule.
    dominance_max : float, default 0.90
        Maximum share of the cell total held by the ``dominance_k`` largest.
    p_ratio_min : float, default 0.10
        Minimum of ``(total - x1 - x2) / x1`` (p% rule with p = 10%).
    min_dof : int, default 10
        Minimum residual degrees of freedom of a regression.
    min_treated, min_control : int, default 10
        Minimum treated / control units behind every reported estimate.
    min_units_each_side : int, default 10
        Medians and quantiles: minimum units strictly below and strictly above.
    rounding : Rounding or dict, optional
        Published precision (:class:`Rounding`): shares to ``share_pp``
        percentage points, money to ``money`` euros, counts to ``count_base``.

    Notes
    -----
    Every threshold is inclusive on the safe side: a cell with exactly
    ``min_units`` units, a top-k share of exactly ``dominance_max`` or a p-ratio
    of exactly ``p_ratio_min`` passes.

    Examples
    --------
    >>> Rules(**{"min_units": 10, "dominance_k": 2, "dominance_max": 0.9,
    ...          "p_ratio_min": 0.1, "min_dof": 10, "min_treated": 10,
    ...          "min_control": 10}).min_units
    10
    """

    min_units: int = 10
    dominance_k: int = 2
    dominance_max: float = 0.90
    p_ratio_min: float = 0.10
    min_dof: int = 10
    min_treated: int = 10
    min_control: int = 10
    min_units_each_side: int = 10
    rounding: Rounding = field(default_factory=Rounding)

    def __post_init__(self) -> None:
        for name in ("min_units", "dominance_k", "min_dof", "min_treated", "min_control", "min_units_each_side"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Rules.{name} must be an integer >= 1; got {v!r}")
            object.__setattr__(self, name, int(v))
        v = self.dominance_max
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (0.0 < float(v) <= 1.0):
            raise ValueError(f"Rules.dominance_max must be a number in (0, 1]; got {v!r}")
        object.__setattr__(self, "dominance_max", float(v))
        v = self.p_ratio_min  # 0 switches the p% rule off; a ratio above 1 is no p% rule
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (0.0 <= float(v) <= 1.0):
            raise ValueError(f"Rules.p_ratio_min must be a number in [0, 1]; got {v!r}")
        object.__setattr__(self, "p_ratio_min", float(v))
        r = self.rounding
        if isinstance(r, Mapping):
            bad = [k for k in r if k not in ("share_pp", "money", "count_base")]
            if bad:
                raise ValueError(f"Rules.rounding: unknown keys {bad}; allowed: ['share_pp', 'money', 'count_base']")
            r = Rounding(**dict(r))
        if not isinstance(r, Rounding):
            raise ValueError(f"Rules.rounding must be a Rounding or a dict; got {r!r}")
        object.__setattr__(self, "rounding", r)

    def describe(self) -> str:
        """One-line statement of the thresholds, for the report."""
        return (
            f"min_units={self.min_units}; dominance top-{self.dominance_k}<={self.dominance_max:g}; "
            f"p_ratio>={self.p_ratio_min:g}; min_dof={self.min_dof}; min_treated={self.min_treated}; "
            f"min_control={self.min_control}; min_units_each_side={self.min_units_each_side}; "
            f"rounding shares {self.rounding.share_pp:g}pp, money {self.rounding.money:g}, counts base {self.rounding.count_base}"
        )


def _as_rules(rules: Any, name: str) -> Rules:
    """Accept Rules, a mapping such as ``params["disclosure"]``, or None (defaults)."""
    if rules is None:
        return Rules()
    if isinstance(rules, Rules):
        return rules
    if isinstance(rules, Mapping):
        bad = [k for k in rules if k not in Rules.__dataclass_fields__]
        if bad:
            raise ValueError(f"check '{name}': unknown disclosure rules {bad}; allowed: {list(Rules.__dataclass_fields__)}")
        return Rules(**dict(rules))
    raise TypeError(f"check '{name}': rules must be a reach.disclosure.Rules or a mapping; got {type(rules).__name__}")


# --------------------------------------------------------------------------- result
_RULE_TEXT = {
    "fail_min_units": "fewer than min_units distinct units",
    "fail_dominance": "dominance (N-k)",
    "fail_p_ratio": "p-ratio",
    "fail_each_side": "too few units on a side of the median/quantile",
    "fail_all_same": "all units contribute the same value",
    "fail_numerator": "share: fewer than min_units units with the trait (numerator)",
    "fail_complement": "share: fewer than min_units units without the trait (complement)",
    "fail_min_treated": "fewer than min_treated treated units",
    "fail_min_control": "fewer than min_control control units",
    "fail_min_dof": "fewer than min_dof residual degrees of freedom",
    "fail_few_changed": "fewer than min_treated treated units whose outcome change differs from the rest",
    "review_zero_negative": "zero cell or negative contribution (review)",
    "review_share_0_1": "share of exactly 0 or 1: group disclosure (review)",
}


@dataclass(frozen=True)
class Checked:
    """A checked table or estimates table: per-cell verdicts and a publishable copy.

    Do not construct directly; use :func:`check_table` or :func:`check_estimates`.

    Attributes
    ----------
    name : str
        Name of the check (usually the exported object's name).
    stat : str
        Statistic of the table (``count``, ``sum``, ..., ``estimates``).
    by : tuple of str
        Cell-defining columns.
    kind : str
        ``"table"`` or ``"estimates"``.
    rules : Rules
        Thresholds used.
    n_rows_excluded : int
        Input rows left out (missing value), counted, never silent.

    Notes
    -----
    Verdict of a cell: ``"suppress"`` when any ``fail_*`` rule holds (primary)
    or when it was chosen to protect another cell (secondary, column
    ``suppression == "secondary"``), else ``"review"`` when any ``review_*``
    flag holds, else ``"ok"``.
    """

    name: str
    stat: str
    by: tuple[str, ...]
    kind: str
    rules: Rules
    _table: pd.DataFrame = field(repr=False)
    _cells: pd.DataFrame = field(repr=False)
    value_columns: tuple[str, ...] = ("value",)
    count_columns: tuple[str, ...] = ("n_units",)
    n_rows_excluded: int = 0
    unprotectable: tuple[int, ...] = ()
    units: str | None = None
    #: Unit membership of the cells (for the run-level audit of :mod:`reach.publish`):
    #: ``{"cell": cell position, "unit": uint64 hash of the unit id, "trait": bool,
    #: "rows": rows of the unit in the cell}``, one entry per (cell, unit); positions and row counts in the
    #: smallest unsigned type that holds them. Never exported: it identifies the units of each cell.
    members: Mapping[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a run's second pass: cells the run-level audit of the first pass suppressed are suppressed here,
        # where the check is made, so tables, figures and text drawn from it all leave them out
        from reach.publish import audit_suppressions

        rows = audit_suppressions(self)
        if rows:
            cells = self._cells.copy()
            cells.loc[cells.index[rows], "verdict"] = "suppress"
            cells.loc[cells.index[rows], "suppression"] = "audit"
            cells.loc[cells.index[rows], "reason"] = "suppressed by the run-level differencing audit"
            object.__setattr__(self, "_cells", cells)

    # -- data ------------------------------------------------------------------
    @property
    def table(self) -> pd.DataFrame:
        """Unsuppressed table (by-columns, ``value``, ``n_units``). NEVER export this."""
        return self._table.copy()

    @property
    def cells(self) -> pd.DataFrame:
        """Per cell: by-columns, ``n_units``, one bool column per rule, ``verdict``, ``reason``."""
        return self._cells.copy()

    @property
    def _suppressed(self) -> np.ndarray:
        return (self._cells["verdict"] == "suppress").to_numpy()

    @property
    def ok(self) -> bool:
        """True when no cell is suppressed (primary or secondary)."""
        return not bool(self._suppressed.any())

    @property
    def n_primary(self) -> int:
        return int((self._cells["suppression"] == "primary").sum())

    @property
    def n_secondary(self) -> int:
        """Cells suppressed to protect others: within the table, or by the run-level audit."""
        return int(self._cells["suppression"].isin(["secondary", "audit"]).sum())

    @property
    def n_review(self) -> int:
        return int((self._cells["verdict"] == "review").sum())

    def suppress(self) -> pd.DataFrame:
        """Publishable copy: suppressed cells' values and counts set to missing.

        Returns
        -------
        DataFrame
            Same columns as :attr:`table`; value columns are float with NaN,
            count columns nullable ``Int64`` with ``<NA>`` in suppressed cells.
        """
        out = self._table.copy()
        mask = self._suppressed
        rounding = self.rules.rounding
        for col in self.value_columns:
            if col in out.columns:
                out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
                out.loc[mask, col] = np.nan
                # published precision: a share to 0.1 pp cannot be read back into its numerator
                out[col] = rounding.apply(out[col].to_numpy(), self.units)
        for col in self.count_columns:
            if col in out.columns:
                vals = pd.to_numeric(out[col], errors="coerce").astype("Float64")
                vals[mask] = pd.NA
                if rounding.count_base > 1:
                    vals = pd.array(rounding.apply(vals.to_numpy(dtype="float64", na_value=np.nan), "count"), dtype="Float64")
                # counts are integers unless the input held fractional values
                out[col] = vals.astype("Int64") if bool((vals.dropna() % 1 == 0).all()) else vals
        return out

    # -- reporting -------------------------------------------------------------
    def rules_failed(self) -> list[str]:
        """Names of the rules at least one cell failed or was flagged by."""
        cols = [c for c in self._cells.columns if c.startswith(("fail_", "review_"))]
        return [c for c in cols if bool(self._cells[c].any())]

    def verdict(self) -> str:
        """``"review"`` if any cell needs review, else ``"suppressed"`` if any was suppressed, else ``"ok"``."""
        if self.n_review:
            return "review"
        return "suppressed" if not self.ok else "ok"

    def _cell_labels(self, mask: np.ndarray) -> str:
        if not mask.any():
            return ""
        sub = self._cells.loc[mask]
        if self.by:
            keys = sub[list(self.by)].astype("object").astype(str)
            labels = keys.apply(lambda r: "|".join(f"{c}={r[c]}" for c in self.by), axis=1).tolist()
        else:
            labels = [f"row={i}" for i in sub.index] if self.kind == "estimates" else ["all"] * len(sub)
        reasons = sub["rule_names"].tolist()
        return "; ".join(f"{lab} [{why}]" for lab, why in zip(labels, reasons))

    def report_rows(self) -> pd.DataFrame:
        """One row for ``disclosure_report.csv`` (columns of :data:`REPORT_COLUMNS` minus notebook/object/kind/file).

        Names cells and rules only: no unit counts or contributions, which would
        themselves be disclosive.
        """
        supp = self._suppressed
        review = (self._cells["verdict"] == "review").to_numpy()
        reason = ""
        if self.unprotectable:
            reason = f"{len(self.unprotectable)} suppressed cell(s) recoverable from totals published elsewhere"
        row = {
            "check": self.name,
            "stat": self.stat,
            "n_cells": len(self._cells),
            "n_suppressed_primary": self.n_primary,
            "n_suppressed_secondary": self.n_secondary,
            "n_review": self.n_review,
            "n_rows_excluded": self.n_rows_excluded,
            "rules_failed": ";".join(r.removeprefix("fail_").removeprefix("review_") for r in self.rules_failed()),
            "verdict": self.verdict(),
            "reason": reason,
            "suppressed_cells": self._cell_labels(supp),
            "review_cells": self._cell_labels(review),
            "rules": self.rules.describe(),
        }
        return pd.DataFrame([row])

    def tidy(self) -> pd.DataFrame:
        """Rule-level summary: columns ``rule, description, n_cells, n_flagged``."""
        cols = [c for c in self._cells.columns if c.startswith(("fail_", "review_"))]
        return pd.DataFrame(
            {
                "rule": cols,
                "description": [_RULE_TEXT.get(c, c) for c in cols],
                "n_cells": [len(self._cells)] * len(cols),
                "n_flagged": [int(self._cells[c].sum()) for c in cols],
            }
        )

    def summary(self) -> str:
        """Short text: cells, suppressed (primary/secondary), review, rules failed."""
        failed = ", ".join(self.rules_failed()) or "none"
        return (
            f"Disclosure check '{self.name}' ({self.kind}, stat={self.stat}): {len(self._cells)} cells; "
            f"suppressed {self.n_primary} primary + {self.n_secondary} secondary; "
            f"{self.n_review} for review; excluded rows {self.n_rows_excluded}; rules flagged: {failed}; "
            f"verdict: {self.verdict()}"
        )

    def __repr__(self) -> str:  # never show cell values
        return f"<Checked {self.summary()}>"

    def _repr_html_(self) -> str:
        # Only the publishable copy is ever rendered: rendered notebooks leave RA.
        head = html.escape(self.summary())
        return f"<p><b>{head}</b></p>" + self.suppress().to_html(index=False, na_rep="x")

    def _repr_markdown_(self) -> str:
        pub = self.suppress()
        try:
            body = pub.to_markdown(index=False)
        except ImportError:  # tabulate is optional
            body = "```\n" + pub.to_string(index=False, na_rep="x") + "\n```"
        return f"**{self.summary()}**\n\n{body}"


# --------------------------------------------------------------------------- check_table
def _validate_frame(micro: Any, name: str, cols: Sequence[str]) -> pd.DataFrame:
    require_columns(micro, cols, f"check '{name}': micro")
    return micro


def _row_positions(mask: pd.Series) -> list[int]:
    # Positions only, never values: an error message may end up in a rendered notebook.
    return np.flatnonzero(mask.to_numpy())[:5].tolist()


#: Hashes of the integer unit codes 0..n-1 computed so far (see :func:`_unit_hashes`).
_INT_HASHES = np.zeros(0, dtype=np.uint64)


def _unit_hashes(uniques) -> np.ndarray:
    """``pd.util.hash_array`` of each unit identifier's text, as the run-level audit keys units.

    The same numbers as ``hash_array(np.asarray(uniques, dtype=object).astype(str))``, faster:
    identifiers are hashed once each (they are distinct already, so no categorising), and
    non-negative integer codes (the indicators' firm codes, millions per table at register
    scale, the same codes table after table) are looked up in hashes of ``0..n-1`` kept for the
    process, computed once.
    """
    global _INT_HASHES
    arr = np.asarray(uniques)
    top = int(arr.max()) + 1 if arr.dtype.kind in "iu" and len(arr) and int(arr.min()) >= 0 else 0
    # dense codes only (not sparse identifiers stored as integers), and at most 2**25 of them (256 MB)
    if 0 < top <= min(max(2 * len(arr), 1024), 2**25):
        if top > len(_INT_HASHES):
            new = np.arange(len(_INT_HASHES), top, dtype=np.int64)
            _INT_HASHES = np.concatenate([_INT_HASHES, _hash_text(new.astype(str).astype(object))])
        return _INT_HASHES[arr]
    return _hash_text(np.asarray(uniques, dtype=object).astype(str).astype(object))


def _hash_text(text: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(text, categorize=False)


def _sorted_codes(key: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(key, sort=True)`` for non-negative integer keys below ``bound``.

    When ``bound`` is at most 8 times the number of keys (cells x units of a table: the
    indicators' tables at register scale), the distinct keys are marked in a dense array and
    numbered in order: linear time, where factorising hashes every key and sorts
    the distinct ones. Same codes and uniques; otherwise ``pd.factorize`` itself.
    """
    if len(key) == 0 or bound > min(8 * len(key) + 1024, 2**27):
        codes, uniq = pd.factorize(key, sort=True)
        return codes, np.asarray(uniq)
    present = np.zeros(bound, dtype=bool)
    present[key] = True
    uniq = np.flatnonzero(present)
    # only the marked positions are ever read: no need to fill the rest (int32 halves the random reads)
    rank = np.empty(bound, dtype=np.int32 if len(uniq) < 2**31 else np.int64)
    rank[uniq] = np.arange(len(uniq), dtype=rank.dtype)
    return rank[key].astype(np.int64), uniq.astype(np.int64)


def _cell_extremes(c: np.ndarray, ucell: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell the smallest and largest of ``c`` (NaN ignored; NaN for a cell without values).

    ``ucell`` is sorted (each cell's units are one run), so one ``reduceat`` per extreme does
    what ``groupby(ucell).agg(["min", "max"])`` does without hashing millions of unit rows.
    """
    lo, hi = np.full(n_cells, np.nan), np.full(n_cells, np.nan)
    if len(c):
        has = np.bincount(ucell, minlength=n_cells) > 0
        starts = np.searchsorted(ucell, np.flatnonzero(has), side="left")
        lo[has] = np.fmin.reduceat(c, starts)
        hi[has] = np.fmax.reduceat(c, starts)
    return lo, hi


def _group_codes(df: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Cell number of every row and the cells' labels, as
    ``df.groupby(keys, dropna=False, sort=True, observed=True)``'s ``ngroup()`` and ``size().index``.

    Each key is coded on its own (a categorical by its category order, anything else by
    ``pd.factorize(sort=True)``, missing values last, as groupby sorts them) and the codes are combined
    into one integer numbered densely by :func:`_sorted_codes`: pandas' grouper spent a tenth of
    notebook 02's time at register scale (``ngroup`` over tens of millions of rows) combining and
    sorting the same codes. Falls back to groupby when the code space would overflow.
    """
    codes, sizes, uniques = [], [], []
    for k in keys:
        col = df[k]
        if isinstance(col.dtype, pd.CategoricalDtype):
            c = col.cat.codes.to_numpy().astype(np.int64)
            n = len(col.cat.categories)
            c[c < 0] = n
            uniques.append(col.dtype)
            sizes.append(n + 1)
        else:
            c, u = pd.factorize(col, sort=True, use_na_sentinel=False)
            c = c.astype(np.int64)
            uniques.append(u)
            sizes.append(max(len(u), 1))
        codes.append(c)
    # an all-missing column: groupby infers the labels' dtype from nothing (float64 for object NaN)
    all_missing = any(not isinstance(u, pd.CategoricalDtype) and len(u) and bool(pd.isna(u).all()) for u in uniques)
    if all_missing or math.prod(sizes) >= 2**62:
        grouper = df.groupby(keys, dropna=False, sort=True, observed=True)
        return grouper.ngroup().to_numpy(), grouper.size().index.to_frame(index=False)
    combined = np.zeros(len(df), dtype=np.int64)
    for c, n in zip(codes, sizes):
        combined = combined * n + c
    cell, uniq = _sorted_codes(combined, math.prod(sizes))
    labels = {}
    for k, n, u in zip(reversed(keys), reversed(sizes), reversed(uniques)):
        code = uniq % n
        uniq = uniq // n
        if isinstance(u, pd.CategoricalDtype):
            labels[k] = pd.Categorical.from_codes(np.where(code == n - 1, -1, code), dtype=u)
        else:
            labels[k] = u.take(code)
    return cell, pd.DataFrame({k: labels[k] for k in keys})


def _top_sums(a: np.ndarray, ucell: np.ndarray, n_cells: int, k: int) -> np.ndarray:
    """Per cell the sum of its ``j`` largest values of ``a``, for ``j = 1..k``: an array ``(k, n_cells)``
    (all of a cell's values when it has fewer than ``j``).

    ``ucell`` is sorted (each cell's units one run), so each level is one ``maximum.reduceat``: the largest
    value left, taken as often as it occurs (ties) while fewer than ``k`` are taken, then removed. The sums
    add the values largest first, as summing the ranked values would. No sort of the units: a ``lexsort``
    by cell and size took 9 s of 02_reach_tinl at 2M firms for the dominance rule's top two.
    """
    out = np.zeros((k, n_cells))
    if len(a) == 0:
        return out
    counts = np.bincount(ucell, minlength=n_cells)
    cells = np.flatnonzero(counts)
    seg = np.repeat(np.arange(len(cells)), counts[cells])
    starts = np.r_[0, np.cumsum(counts[cells])[:-1]]
    left = np.asarray(a, dtype=float).copy()
    acc = np.zeros(len(cells))
    taken = np.zeros(len(cells), dtype=np.int64)
    for _ in range(k):  # every level takes at least one value of each cell that has values left
        top = np.maximum.reduceat(left, starts)
        valid = top > -np.inf
        if not (valid & (taken < k)).any():
            break
        is_top = (left == top[seg]) & valid[seg]
        ties = np.bincount(seg, weights=is_top, minlength=len(cells))
        for r in range(k):
            more = valid & (ties > r) & (taken < k)
            if not more.any():
                break
            acc[more] += top[more]
            out[taken[more], cells[more]] = acc[more]
            taken[more] += 1
        left[is_top] = -np.inf
    for j in range(1, k):  # fewer than j + 1 values: the sum of all of them
        short = taken <= j
        out[j, cells[short]] = out[j - 1, cells[short]]
    return out


@dataclass(frozen=True, eq=False)
class _Coding:
    """A table's rows numbered once: cells, (cell, unit) pairs and unit keys; everything a check needs but the values.

    ``cell`` numbers each row's cell in the order of the cells' sorted labels (``labels``, observed cells
    only, as ``groupby(sort=True, observed=True)``); ``pair`` numbers each row's (cell, unit) pair, pairs
    ordered by cell, then unit code; ``pair_cell`` and ``pair_unit`` give each pair's cell and unit key
    (the hash the run-level audit intersects). Several tables over the same rows (the indicators' measures,
    event times and statistics over one set of reference firms) are numbered once and checked with their
    own values, or with a subset of the rows (:meth:`take`), instead of hashing and sorting millions of
    rows per table.
    """

    cell: np.ndarray
    labels: pd.DataFrame
    pair: np.ndarray
    pair_cell: np.ndarray
    pair_unit: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.labels)

    # counts that depend on the rows only, shared by every table checked over them
    @cached_property
    def rows_per_pair(self) -> np.ndarray:
        return np.bincount(self.pair, minlength=len(self.pair_cell))

    @cached_property
    def units_per_cell(self) -> np.ndarray:
        return np.bincount(self.pair_cell, minlength=self.n_cells)

    @cached_property
    def rows_per_cell(self) -> np.ndarray:
        return np.bincount(self.cell, minlength=self.n_cells)

    def count_per_cell(self, flag: np.ndarray) -> np.ndarray:
        """Per cell, the pairs where boolean ``flag`` (one per pair) holds: pairs are sorted by cell and every
        cell has pairs, so each cell's count is one sum over its run, exact and without float weights."""
        if not len(flag):
            return np.zeros(self.n_cells, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(self.units_per_cell)[:-1]])
        return np.add.reduceat(flag.view(np.uint8), starts, dtype=np.int64)

    def take(self, rows: np.ndarray) -> "_Coding":
        """The coding of the rows where boolean ``rows`` holds: cells and pairs without rows left out, the rest
        renumbered in the same order (what coding those rows afresh gives, without hashing or sorting)."""
        cell, pair = self.cell[rows], self.pair[rows]
        kept_cells = np.bincount(cell, minlength=self.n_cells) > 0
        kept_pairs = np.bincount(pair, minlength=len(self.pair_cell)) > 0
        new_cell = np.cumsum(kept_cells) - 1
        new_pair = np.cumsum(kept_pairs) - 1
        labels = self.labels
        if not kept_cells.all() and len(labels.columns):
            labels = labels.loc[kept_cells].reset_index(drop=True)
        return _Coding(new_cell[cell], labels, new_pair[pair], new_cell[self.pair_cell[kept_pairs]],
                       self.pair_unit[kept_pairs])

    def with_label(self, column: str, label: pd.Categorical, position: int) -> "_Coding":
        """The same rows with one more by-column, constant over them (``label``: one value, categorical)."""
        labels = self.labels.copy() if len(self.labels.columns) else pd.DataFrame(index=range(self.n_cells))
        labels.insert(position, column, pd.Categorical.from_codes(np.full(self.n_cells, label.codes[0]),
                                                                  dtype=label.dtype))
        out = _Coding(self.cell, labels, self.pair, self.pair_cell, self.pair_unit)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k in _CODING_COUNTS})  # same rows, same counts
        return out


_CODING_COUNTS = ("rows_per_pair", "units_per_cell", "rows_per_cell")


def _code(df: pd.DataFrame, keys: list[str], ucode: np.ndarray, unit_keys: np.ndarray) -> _Coding:
    """Cells of ``keys`` and (cell, unit) pairs of integer unit codes ``ucode`` (``unit_keys[code]``: the unit's key)."""
    if keys:
        cell, labels = _group_codes(df, keys)
    else:
        cell = np.zeros(len(df), dtype=np.int64)
        labels = pd.DataFrame(index=[0])
    n_cells = len(labels)
    # grouping on one int64 key (cell x unit code) is an order of magnitude faster than on (cell, string id) pairs
    n_codes = int(ucode.max()) + 1 if len(ucode) else 1
    pair, uniq = _sorted_codes(cell.astype(np.int64) * n_codes + ucode, n_cells * n_codes)
    return _Coding(cell, labels, pair, (uniq // n_codes).astype(np.int64), np.asarray(unit_keys)[uniq % n_codes])


def _cell_stats(coding: _Coding, v: np.ndarray | None, stat: str, rules: Rules, q: float) -> pd.DataFrame:
    """Per-cell statistic and rule results of coded rows with values ``v`` (float64; None for counts)."""
    cell, labels, ukey, ucell = coding.cell, coding.labels, coding.pair, coding.pair_cell
    n_cells, n_pairs = len(labels), len(ucell)
    c = vmin = vmax = None  # per pair: the unit's sum over its rows in the cell, smallest and largest row
    if v is not None:
        c = np.bincount(ukey, weights=v, minlength=n_pairs)
        if stat in ("median", "quantile"):
            if n_pairs == len(v):  # one row per unit and cell (the usual case): its value is both extremes
                vmin = vmax = c
            else:
                mm = pd.Series(v).groupby(ukey).agg(["min", "max"])
                vmin, vmax = mm["min"].to_numpy(), mm["max"].to_numpy()
    n_units, n_rows = coding.units_per_cell, coding.rows_per_cell
    out = labels.reset_index(drop=True).copy()
    out["n_units"] = n_units.astype("int64")
    out["n_rows"] = n_rows.astype("int64")
    out["fail_min_units"] = n_units < rules.min_units

    if stat == "count":
        out["value"] = n_units.astype("float64")
    else:
        vsum = np.bincount(cell, weights=v, minlength=n_cells)
        if stat == "sum":
            out["value"] = vsum
        elif stat in ("mean", "share"):
            out["value"] = vsum / np.where(n_rows > 0, n_rows, np.nan)
        else:  # median / quantile over rows, sides over units
            if stat == "median":
                qv = _central_mean(cell, v, n_cells)
            else:
                qv = pd.Series(v).groupby(cell).quantile(q).reindex(range(n_cells)).to_numpy()
            out["value"] = qv
            uq = qv[ucell]
            below = np.bincount(ucell, weights=(vmax < uq), minlength=n_cells)
            above = np.bincount(ucell, weights=(vmin > uq), minlength=n_cells)
            out["n_below"] = below.astype("int64")
            out["n_above"] = above.astype("int64")
            need = rules.min_units_each_side
            out["fail_each_side"] = (below < need) | (above < need)

    if stat in _MAGNITUDE:
        a = np.abs(c)
        total = np.bincount(ucell, weights=a, minlength=n_cells)
        tops = _top_sums(a, ucell, n_cells, max(int(rules.dominance_k), 2))
        top1, top2, topk = tops[0], tops[1], tops[int(rules.dominance_k) - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(total > 0, topk / total, 0.0)
            pratio = np.where(top1 > 0, (total - top2) / top1, np.inf)
        out["top_k_share"] = share
        # the largest unit alone (reach.report.dominated_cells: a plotted point resting on one firm)
        out["top_1_share"] = np.where(total > 0, top1 / np.where(total > 0, total, 1.0), 0.0)
        out["p_ratio"] = pratio
        out["fail_dominance"] = share > rules.dominance_max * (1 + _REL_TOL)
        out["fail_p_ratio"] = pratio < rules.p_ratio_min * (1 - _REL_TOL)
        # every unit contributes the same value: the mean is each unit's value (ACRO "all-values-are-same")
        lo, hi = _cell_extremes(c, ucell, n_cells)
        out["fail_all_same"] = (lo == hi) & (n_units > 1)
        neg = np.bincount(ucell, weights=(c < 0), minlength=n_cells) > 0
        out["review_zero_negative"] = (out["value"].to_numpy() == 0) | neg
    trait = np.zeros(len(ucell), dtype=bool)
    if stat == "share":
        # a share is a frequency table: the units with the trait and those without
        # are both cells a reader can compute (share x n), so both need min_units
        rows_per_unit = coding.rows_per_pair
        trait = c > 0
        n_num = coding.count_per_cell(trait)
        n_comp = coding.count_per_cell((rows_per_unit - c) > 0)
        out["fail_numerator"] = n_num < rules.min_units
        out["fail_complement"] = n_comp < rules.min_units
        v = out["value"].to_numpy()
        out["review_share_0_1"] = (v == 0) | (v == 1)
    # unit keys per cell: what the run-level audit intersects across tables
    # rows per unit and cell: a share over rows (participations) rather than units is no firm count
    out.attrs["members"] = {"cell": _narrow(ucell), "unit": coding.pair_unit, "trait": trait,
                            "rows": _narrow(coding.rows_per_pair)}
    return out


def _narrow(a: np.ndarray) -> np.ndarray:
    """Non-negative integers in the smallest unsigned type holding them.

    Memberships run to tens of millions of (cell, unit) pairs per table at register scale, and the
    registry deflates each array: cell numbers and row counts in one byte instead of eight and four.
    """
    a = np.asarray(a)
    top = int(a.max()) if len(a) else 0
    for t in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(t).max:
            return a.astype(t, copy=False)
    return a.astype(np.int64, copy=False)


def _central_mean(cell: np.ndarray, v: np.ndarray, n_cells: int) -> np.ndarray:
    """Median published as the mean of the central observations: never one unit's value.

    Odd :math:`n`: mean of the three central order statistics; even :math:`n`: of the two.
    """
    out = np.full(n_cells, np.nan)
    # rows grouped by cell (a radix sort when the cell number fits 16 bits), then only each cell's central
    # order statistics found by partitioning: a full sort of the values (lexsort) took ten times as long
    order = np.argsort(cell.astype(np.uint16) if n_cells <= 2**16 else cell, kind="stable")
    cs, vs = cell[order], v[order]
    starts = np.searchsorted(cs, np.arange(n_cells))
    ends = np.searchsorted(cs, np.arange(n_cells), side="right")
    for c in range(n_cells):
        n = ends[c] - starts[c]
        if n == 0:
            continue
        mid = n // 2
        lo, hi = (mid - 1, mid + 2) if n % 2 else (mid - 1, mid + 1)
        central = list(range(max(lo, 0), min(hi, n)))
        part = np.partition(vs[starts[c]:ends[c]], central)
        out[c] = np.sort(part[central]).mean()  # in sorted order, as the mean of the sorted slice
    return out


def _verdicts(cells: pd.DataFrame) -> pd.DataFrame:
    fail_cols = [c for c in cells.columns if c.startswith("fail_")]
    review_cols = [c for c in cells.columns if c.startswith("review_")]
    fail = cells[fail_cols].to_numpy(dtype=bool).any(axis=1) if fail_cols else np.zeros(len(cells), bool)
    rev = cells[review_cols].to_numpy(dtype=bool).any(axis=1) if review_cols else np.zeros(len(cells), bool)
    cells["verdict"] = np.where(fail, "suppress", np.where(rev, "review", "ok"))
    cells["suppression"] = np.where(fail, "primary", "")
    flag_cols = fail_cols + review_cols
    flags = cells[flag_cols].to_numpy(dtype=bool) if flag_cols else np.zeros((len(cells), 0), bool)
    names = np.array([c.removeprefix("fail_").removeprefix("review_") for c in flag_cols], dtype=object)
    cells["rule_names"] = [",".join(names[r]) for r in flags]
    texts = np.array([_RULE_TEXT[c] for c in flag_cols], dtype=object)
    cells["reason"] = ["; ".join(texts[r]) for r in flags]
    return cells


def _lines(cells: pd.DataFrame, by: list[str], margins: bool,
           along: Sequence[str] | None = None) -> list[tuple[list[int], int | None]]:
    """Additive lines of the table: (member cell positions, total cell position or None).

    With ``margins`` the total is a cell of the table labelled ``Total``; without,
    the total is published elsewhere (declared additive) and is a known constant.
    ``along``: only the lines along these by-columns (default: every by-column).
    """
    out: list[tuple[list[int], int | None]] = []
    pos = np.arange(len(cells))
    for j, col in enumerate(by):
        if along is not None and col not in along:
            continue
        others = [c for c in by if c != col]
        is_total = cells[col].astype("object").eq(_TOTAL).to_numpy() if margins else np.zeros(len(cells), bool)
        key = (
            cells[others].astype("object").astype(str).agg("\x1f".join, axis=1)
            if others
            else pd.Series([""] * len(cells))
        ).to_numpy()
        for k in pd.unique(key):
            in_line = key == k
            members = pos[in_line & ~is_total].tolist()
            totals = pos[in_line & is_total].tolist()
            if margins and not totals:
                continue
            out.append((members, totals[0] if totals else None))
    return out


def _determined(A: np.ndarray, suppressed: np.ndarray) -> np.ndarray:
    """Suppressed cells whose value is fixed by the published linear constraints.

    ``A x = b`` with known cells moved to ``b``; unknown ``x_j`` is determined
    iff every null-space vector of ``A[:, U]`` has a zero ``j``-th component.
    """
    from scipy.linalg import null_space

    U = np.flatnonzero(suppressed)
    if len(U) == 0 or A.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    sub = A[:, U]
    sub = sub[np.abs(sub).sum(axis=1) > 0]
    if sub.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    N = null_space(sub)
    if N.shape[1] == 0:
        return U
    return U[np.linalg.norm(N, axis=1) < 1e-9]


def _secondary(cells: pd.DataFrame, lines: list[tuple[list[int], int | None]]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Secondary suppression until no suppressed cell can be recovered exactly.

    First the classic pass (a line with a single unknown gets a second
    suppression, the smallest other cell), then an exact check on the whole
    system of line equations (catches e.g. a cell joining two suppressed
    cycles), repeated until stable.
    """
    n = len(cells)
    supp = (cells["verdict"] == "suppress").to_numpy().copy()
    if not lines or not supp.any():
        return np.zeros(n, bool), ()
    # Cost: fewest units first, then smallest |value|, then table order (deterministic).
    cost = np.lexsort((np.arange(n), np.abs(np.nan_to_num(cells["value"].to_numpy(dtype=float))), cells["n_units"].to_numpy()))
    rank = np.empty(n, dtype=np.int64)
    rank[cost] = np.arange(n)
    line_members = [members + ([t] if t is not None else []) for members, t in lines]
    A = np.zeros((len(lines), n))
    for i, (members, t) in enumerate(lines):
        A[i, members] = -1.0
        if t is not None:
            A[i, t] = 1.0
    cell_lines: list[list[int]] = [[] for _ in range(n)]
    for i, mem in enumerate(line_members):
        for c in mem:
            cell_lines[c].append(i)
    initial = supp.copy()
    unprotectable: set[int] = set()
    for _ in range(n + 1):
        changed = True
        while changed:
            changed = False
            for mem in line_members:
                m = np.asarray(mem)
                k = int(supp[m].sum())
                if k == 1:
                    cand = m[~supp[m]]
                    if len(cand) == 0:
                        continue
                    supp[cand[np.argmin(rank[cand])]] = True
                    changed = True
        det = [c for c in _determined(A, supp).tolist() if c not in unprotectable]
        if not det:
            break
        target = det[0]
        cand = sorted({c for i in cell_lines[target] for c in line_members[i] if not supp[c]}, key=lambda c: rank[c])
        if not cand:
            unprotectable.add(target)  # only published-elsewhere totals pin it down
            continue
        chosen = cand[0]
        for c in cand:
            trial = supp.copy()
            trial[c] = True
            if target not in set(_determined(A, trial).tolist()):
                chosen = c
                break
        supp[chosen] = True
    return supp & ~initial, tuple(sorted(unprotectable))


def check_table(
    micro: pd.DataFrame,
    by: Sequence[str] | str = (),
    value: str | None = None,
    unit: str = "be_id",
    stat: str = "count",
    rules: Rules | None = None,
    name: str = "table",
    *,
    margins: bool = False,
    additive: bool = False,
    q: float = 0.5,
    units: str | None = None,
) -> Checked:
    """Tabulate unit-level rows and check every cell against the disclosure rules.

    Parameters
    ----------
    micro : DataFrame
        Unit-level rows; a unit may have several rows (it counts once per cell).
    by : sequence of str
        Cell-defining columns; ``[]`` gives a single overall cell.
    value : str, optional
        Column tabulated (required unless ``stat="count"``).
    unit : str, default "be_id"
        Unit identifier; distinct units are counted, never rows.
    stat : {"count", "sum", "mean", "share", "median", "quantile"}
        ``count``: distinct units. ``sum``/``mean``: magnitude table over rows.
        ``share``: mean of a 0/1 ``value``. ``median``/``quantile``: over rows
        (quantile ``q``, linear interpolation). ``min``/``max`` are refused.
    rules : Rules or dict, optional
        Thresholds (a dict such as ``params["disclosure"]`` is accepted);
        defaults to ``Rules()``.
    name : str
        Name of the check, used in the report.
    margins : bool, default False
        Add totals: every by-column also takes the label ``"Total"`` (all
        combinations, so a 2-D table gets row, column and grand totals). The
        by-columns then have object dtype. Totals are computed from the rows,
        so a unit in several cells counts once in the total.
    additive : bool or sequence of str, default False
        Declare that totals of this table are published elsewhere (without
        ``margins``): secondary suppression then protects against them too.
        ``True``: totals along every by-column; a list of by-columns: only the
        totals along those (e.g. ``["bin"]`` for a histogram whose group sizes
        another table publishes, but whose bins are not summed over groups).
    q : float, default 0.5
        Quantile for ``stat="quantile"``.
    units : {"count", "share", "EUR", "log", "index", "ratio", "number"}, optional
        Units of ``value`` (default: ``count`` for counts, ``share`` for shares,
        none otherwise); :attr:`Rules.rounding` rounds shares, ``EUR`` and counts
        in :meth:`Checked.suppress`.

    Returns
    -------
    Checked

    Notes
    -----
    Per cell :math:`c` with units :math:`i` and unit contributions
    :math:`x_i = \\sum_{r \\in i} y_r` (absolute values, sorted
    :math:`x_{(1)} \\ge x_{(2)} \\ge \\dots`), total :math:`T = \\sum_i |x_i|`:

    * frequency: :math:`n_c \\ge` ``min_units``;
    * dominance (N-k): :math:`\\sum_{j \\le k} x_{(j)} / T \\le` ``dominance_max``;
    * p-ratio (p% rule, ACRO form): :math:`(T - x_{(1)} - x_{(2)}) / x_{(1)} \\ge`
      ``p_ratio_min``, i.e. the second largest contributor cannot estimate the
      largest to within p%;
    * review: a zero cell value or any negative :math:`x_i` (magnitude tables);
      a share of exactly 0 or 1 (everyone or no one in the cell has the trait);
    * median/quantile :math:`m`: at least ``min_units_each_side`` units with
      *all* their rows strictly below :math:`m` and as many with all rows
      strictly above (a unit straddling :math:`m` or on it counts on no side);
      the published median is the mean of the central order statistics (two
      for an even number of rows, three for an odd one), never one row's value;
    * share: the units with the trait (numerator) and those without
      (complement) each number at least ``min_units``.

    Rows with a missing ``value`` are excluded and counted
    (``Checked.n_rows_excluded``). Secondary suppression (with ``margins`` or
    ``additive``): in every line (cells varying along one by-column, others
    fixed, with its total), no suppressed cell may be the only unknown; the
    cheapest other cell (fewest units, then smallest value) is added, and an
    exact linear-algebra check on all lines at once is repeated until no
    suppressed cell is determined. Interval (LP) protection is not attempted.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"be_id": [str(i) for i in range(25)],
    ...                    "g": ["a"] * 12 + ["b"] * 13})
    >>> chk = check_table(df, by=["g"], name="firms")
    >>> chk.ok, chk.suppress()["n_units"].tolist()
    (True, [12, 13])
    """
    rules = _as_rules(rules, name)
    q = _stat_settings(name, stat, value is not None, q)
    by = [by] if isinstance(by, str) else list(by)
    additive_cols = None
    if not isinstance(additive, (bool, np.bool_)):
        additive_cols = [additive] if isinstance(additive, str) else list(additive)
        wrong = [c for c in additive_cols if c not in by]
        if wrong or not additive_cols:
            raise ValueError(f"check '{name}': additive must be True/False or by-columns along which totals are "
                             f"published elsewhere, among {by}; got {additive!r}")
    if unit in by:
        raise ValueError(f"check '{name}': cannot tabulate by the unit identifier {unit!r}: that publishes identifiers")
    if units is not None:
        check_choice(f"check '{name}': units", units, UNITS)
    cols = by + [unit] + ([value] if value is not None else [])
    df = _validate_frame(micro, name, cols)
    df = df[cols]
    bad_unit = df[unit].isna()
    if bad_unit.any():
        raise ValueError(
            f"check '{name}': column {unit!r} has {int(bad_unit.sum())} missing unit identifiers "
            f"(row positions {_row_positions(bad_unit)}); every row must belong to a unit"
        )
    codes, uniques = pd.factorize(df[unit])
    ucode = codes.astype(np.int64)
    unit_keys = _unit_hashes(uniques)
    v, keep = (None, None) if value is None else _checked_values(df[value], name, value, stat)
    if keep is not None and not keep.all():  # a boolean selection copies every column, also when it keeps every row
        df, ucode, v = df.loc[keep], ucode[keep], v[keep]
    n_excluded = 0 if keep is None else int((~keep).sum())

    if margins and by:
        if len(by) > 6:
            raise ValueError(f"check '{name}': margins over {len(by)} by-columns (max 6) would be 2^{len(by)} tables")
        parts = []
        member_parts: list[dict[str, np.ndarray]] = []
        offset = 0
        # every subset of by-columns summed over (the empty subset = interior cells)
        for r in range(len(by) + 1):
            for sub in itertools.combinations(by, r):
                keep_cols = [c for c in by if c not in sub]
                part = _cell_stats(_code(df, keep_cols, ucode, unit_keys), v, stat, rules, q)
                m = part.attrs.pop("members")
                member_parts.append({**m, "cell": m["cell"].astype(np.int64) + offset})
                offset += len(part)
                for c in sub:
                    part[c] = _TOTAL
                for c in keep_cols:
                    part[c] = part[c].astype("object")
                parts.append(part)
        cells = pd.concat(parts, ignore_index=True)
        cells = cells[by + [c for c in cells.columns if c not in by]]
        members = {k: np.concatenate([m[k] for m in member_parts]) for k in member_parts[0]}
        members = {**members, "cell": _narrow(members["cell"]), "rows": _narrow(members["rows"])}
    else:
        cells = _cell_stats(_code(df, by, ucode, unit_keys), v, stat, rules, q)
        members = cells.attrs.pop("members")
    return _checked(cells, members, name, by, stat, q, rules, n_excluded, units,
                    secondary=bool((margins or additive) and by), margins=margins,
                    along=None if margins or additive is True else additive_cols)


def _stat_settings(name: str, stat: str, has_value: bool, q: float) -> float:
    """The statistic checked (minima and maxima refused) and its quantile (0.5 for the median)."""
    if isinstance(stat, str) and stat.lower() in _REFUSED_STATS:
        raise ValueError(
            f"check '{name}': stat={stat!r} refused: minima and maxima of microdata are the value of a single "
            f"unit and are never publishable (ESSnet/SDAP output guidelines); allowed: {list(STATS)}"
        )
    check_choice(f"check '{name}': stat", stat, STATS)
    if not has_value and stat != "count":
        raise ValueError(f"check '{name}': stat={stat!r} needs a value column")
    if not (0 < q < 1):
        raise ValueError(f"check '{name}': q must be in (0, 1); got {q!r}")
    return 0.5 if stat == "median" else q


def _checked_values(col: pd.Series, name: str, value: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """A value column as float64 and which rows have a value; anything but numbers (and 0/1 for a share) refused."""
    vals = pd.to_numeric(col, errors="coerce")
    nonnum = vals.isna() & col.notna()
    if nonnum.any():
        raise ValueError(
            f"check '{name}': column {value!r} is not numeric ({int(nonnum.sum())} rows, "
            f"row positions {_row_positions(nonnum)})"
        )
    v = vals.to_numpy(dtype="float64", na_value=np.nan)
    keep = ~np.isnan(v)
    if stat == "share":
        bad = keep & (v != 0) & (v != 1)
        if bad.any():
            raise ValueError(
                f"check '{name}': stat='share' needs a 0/1 column; {value!r} has {int(bad.sum())} other values "
                f"(row positions {_row_positions(pd.Series(bad))})"
            )
    return v, keep


def _checked(cells: pd.DataFrame, members: Mapping[str, np.ndarray], name: str, by: list[str], stat: str, q: float,
             rules: Rules, n_excluded: int, units: str | None, *, secondary: bool = False, margins: bool = False,
             along: list[str] | None = None) -> Checked:
    """Verdicts (and secondary suppression along ``along``) of per-cell statistics, as a Checked."""
    cells.attrs.clear()
    for c in [c for c in cells.columns if c.startswith(("fail_", "review_"))]:
        cells[c] = cells[c].fillna(False).astype(bool)
    cells = _verdicts(cells)
    unprotectable: tuple[int, ...] = ()
    if secondary:
        lines = _lines(cells, by, margins, along=along)
        second, unprotectable = _secondary(cells, lines)
        cells.loc[second, "verdict"] = "suppress"
        cells.loc[second, "suppression"] = "secondary"
        cells.loc[second, "rule_names"] = "secondary"
        cells.loc[second, "reason"] = "secondary suppression: protects a suppressed cell from recovery via totals"
    table = cells[by + ["value", "n_units"]].copy()
    front = by + ["n_units", "n_rows", "value"]
    cells = cells[front + [c for c in cells.columns if c not in front]]
    table.columns = pd.Index([str(c) for c in table.columns])  # plain string labels, as a CSV round trip
    return Checked(
        name=name,
        stat=stat if stat != "quantile" else f"quantile({q:g})",
        by=tuple(by),
        kind="table",
        rules=rules,
        _table=table,
        _cells=cells,
        n_rows_excluded=n_excluded,
        unprotectable=unprotectable,
        units=units if units is not None else {"count": "count", "share": "share"}.get(stat),
        members=members,
    )


def _check_coded(coding: _Coding, values: np.ndarray | None, stat: str, rules: Rules | Mapping | None, name: str, *,
                 value: str = "value", q: float = 0.5) -> Checked:
    """:func:`check_table` of rows numbered once (:class:`_Coding`) with their ``values`` (None for a count).

    The same checks, verdicts and Checked as ``check_table`` on a frame of those rows (by-columns the
    coding's labels, no margins, no declared totals), and the same value rules: not numeric, or not 0/1 for
    a share, is refused; a missing value leaves its row out and is counted. For several tables over the
    same rows: the notebook-02 indicators check each measure and statistic of one set of reference firms.
    """
    rules = _as_rules(rules, name)
    q = _stat_settings(name, stat, values is not None, q)
    v = keep = None
    if values is not None:
        v, keep = _checked_values(pd.Series(np.asarray(values)), name, value, stat)
        if not keep.all():
            coding, v = coding.take(keep), v[keep]
    cells = _cell_stats(coding, v, stat, rules, q)
    members = cells.attrs.pop("members")
    return _checked(cells, members, name, list(coding.labels.columns), stat, q, rules,
                    0 if keep is None else int((~keep).sum()), None)


# --------------------------------------------------------------------------- check_estimates
_ESTIMATE_COLS = (
    "estimate", "std_error", "conf_low", "conf_high", "statistic", "t_stat", "z_stat", "p_value", "pvalue",
    "att", "se", "ci_low", "ci_high", "coef", "pointwise_low", "pointwise_high",
)


_DOF_COLS = ("df_resid", "df", "dof", "df_denom")


def _count_column(tidy: pd.DataFrame, spec: Any, what: str, name: str) -> np.ndarray | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in tidy.columns:
            raise ValueError(
                f"check '{name}': {what} column {spec!r} not in the estimates table; available: {list(tidy.columns)}"
            )
        return pd.to_numeric(tidy[spec], errors="coerce").to_numpy(dtype="float64")
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return np.full(len(tidy), float(spec))
    arr = np.asarray(spec, dtype="float64")
    if arr.shape != (len(tidy),):
        raise ValueError(f"check '{name}': {what} must be a column name, a number or {len(tidy)} numbers; got shape {arr.shape}")
    return arr


def check_estimates(
    tidy: pd.DataFrame,
    name: str = "estimates",
    n_treated: str | int | Sequence[float] | None = "n_treated",
    n_control: str | int | Sequence[float] | None = "n_control",
    df_resid: str | int | Sequence[float] | None = None,
    rules: Rules | None = None,
    *,
    columns: Sequence[str] | None = None,
    n_changed: str | Sequence[float] | None = None,
) -> Checked:
    """Check an estimates table: every row is a reported cell.

    Parameters
    ----------
    tidy : DataFrame
        One row per reported estimate (ATT(g,t), event-time point, coefficient).
    name : str
        Name of the check.
    n_treated, n_control : str, number, sequence or None
        Column name (or constant, or per-row values) of treated / control units
        behind each row; ``None`` skips that rule.
    df_resid : str, number, sequence or None
        Residual degrees of freedom; ``None`` uses a column named ``df_resid``,
        ``df``, ``dof`` or ``df_denom`` if the table has one, else skips the rule.
    rules : Rules, optional
    columns : sequence of str, optional
        Columns blanked in failing rows; default: those of
        ``estimate, std_error, conf_low, conf_high, statistic, p_value, ...``
        present. The count columns of failing rows are blanked too.
    n_changed : str, sequence or None
        Per row, the treated units whose outcome change differs from the most common change
        among them (:func:`reach.did.users_off_common_change`); NaN for a row the rule does not
        apply to, ``None`` skips it. 0 fails (every treated unit's change is the same: the
        estimate is each unit's own change, ACRO's "all-values-are-same", and its standard
        error reflects the comparison units alone), and so does 1 to ``min_treated - 1``: the
        treated side is the common change plus those few units' deviations, which the estimate
        reveals as a share reveals its 1-9 units (and a Wald interval on so few "events" is
        unreliable: Brown, Cai & DasGupta 2001).

    Returns
    -------
    Checked

    Notes
    -----
    Row :math:`r` passes iff :math:`n^T_r \\ge` ``min_treated``,
    :math:`n^C_r \\ge` ``min_control`` and :math:`df_r \\ge` ``min_dof``
    (for the rules given), and, with ``n_changed``, at least ``min_treated`` treated units'
    changes differ from the most common one. A missing count fails (unknown support).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"group": [2018, 2019], "estimate": [0.1, 0.2],
    ...                   "n_treated": [12, 4], "n_control": [50, 50]})
    >>> check_estimates(t, "att_gt").suppress()["estimate"].tolist()
    [0.1, nan]
    """
    rules = _as_rules(rules, name)
    if not isinstance(tidy, pd.DataFrame):
        raise TypeError(f"check '{name}': tidy must be a pandas DataFrame; got {type(tidy).__name__}")
    if df_resid is None:
        # a degrees-of-freedom column the caller did not name still binds: a pre-trend
        # test on 0 degrees of freedom is not "ok"
        df_resid = next((c for c in _DOF_COLS if c in tidy.columns), None)
    specs = {"n_treated": n_treated, "n_control": n_control, "df_resid": df_resid}
    if all(v is None for v in specs.values()):
        raise ValueError(f"check '{name}': give at least one of n_treated, n_control, df_resid")
    table = tidy.reset_index(drop=True)
    cells = pd.DataFrame(index=table.index)
    id_cols = [c for c in table.columns if c not in _ESTIMATE_COLS and c not in
               [s for s in specs.values() if isinstance(s, str)]]
    for c in id_cols:
        cells[c] = table[c]
    thresholds = {"n_treated": rules.min_treated, "n_control": rules.min_control, "df_resid": rules.min_dof}
    rule_col = {"n_treated": "fail_min_treated", "n_control": "fail_min_control", "df_resid": "fail_min_dof"}
    count_cols: list[str] = []
    for what, spec in specs.items():
        arr = _count_column(table, spec, what, name)
        if arr is None:
            continue
        if isinstance(spec, str):
            count_cols.append(spec)
        cells[what] = arr
        cells[rule_col[what]] = ~(arr >= thresholds[what])  # NaN fails
    cells["n_units"] = cells.get("n_treated", pd.Series(np.nan, index=cells.index)).to_numpy() + (
        cells["n_control"].to_numpy() if "n_control" in cells else 0
    )
    if n_changed is not None:
        ch = _count_column(table, n_changed, "n_changed", name)
        cells["n_changed"] = ch
        # NaN: the rule does not apply to the row
        cells["fail_all_same"] = ch == 0
        cells["fail_few_changed"] = (ch > 0) & (ch < rules.min_treated)
    cells = _verdicts(cells)
    value_cols = tuple(columns) if columns is not None else tuple(c for c in _ESTIMATE_COLS if c in table.columns)
    require_columns(table, value_cols, f"check '{name}': the estimates table")
    return Checked(
        name=name,
        stat="estimates",
        by=(),
        kind="estimates",
        rules=rules,
        _table=table,
        _cells=cells,
        value_columns=value_cols,
        count_columns=tuple(count_cols),
    )


# --------------------------------------------------------------------------- OutputLog
def join_checked(parts: Sequence[Checked]) -> Checked:
    """One Checked from checks of disjoint cell sets (same name, stat, by-columns and rules).

    Lets a large table be checked in parts (bounded memory) and exported as one.
    Exact only without margins or declared totals: then no cell's verdict depends
    on another cell, which is why parts with secondary suppression are refused.
    Cells are ordered as :func:`check_table` orders them (by the by-columns).

    Examples
    --------
    >>> a = pd.DataFrame({"be_id": [str(i) for i in range(12)], "g": "a"})
    >>> b = pd.DataFrame({"be_id": [str(i) for i in range(3)], "g": "b"})
    >>> both = join_checked([check_table(a, by="g", name="t"), check_table(b, by="g", name="t")])
    >>> both.suppress()["value"].isna().tolist()
    [False, True]
    """
    from dataclasses import replace

    first = parts[0]
    if len(parts) == 1:
        return first
    for p in parts:
        if (p.name, p.stat, p.by, p.rules) != (first.name, first.stat, first.by, first.rules) or \
                (p._cells["suppression"] == "secondary").any() or p.unprotectable:
            raise ValueError(f"cannot join checks {first.name!r} and {p.name!r}: different tables or secondary suppression")
    by = list(first.by)
    table = pd.concat([p.table for p in parts], ignore_index=True)
    cells = pd.concat([p.cells for p in parts], ignore_index=True)
    order = table.sort_values(by, kind="stable").index  # categorical by-columns sort in label order
    members = None
    if all(p.members is not None for p in parts):
        offsets = np.cumsum([0] + [len(p.table) for p in parts[:-1]])
        cell = np.concatenate([p.members["cell"].astype(np.int64) + o for p, o in zip(parts, offsets)])
        new_pos = np.empty(len(order), dtype=np.int64)
        new_pos[np.asarray(order)] = np.arange(len(order))
        members = {"cell": _narrow(new_pos[cell]), **{k: np.concatenate([p.members[k] for p in parts])
                                                      for k in first.members if k != "cell"}}
        members["rows"] = _narrow(members["rows"])
    return replace(first, _table=table.loc[order].reset_index(drop=True), _cells=cells.loc[order].reset_index(drop=True),
                   n_rows_excluded=sum(p.n_rows_excluded for p in parts), members=members)



@contextlib.contextmanager
def _file_lock(path: Path, stale: float = 30.0, timeout: float = 600.0):
    """Exclusive lock on ``path`` across processes: notebooks of a run executed side by side
    (``reach run --jobs``) read, change and rewrite the same ``disclosure_report.csv``.

    The lock is a file created with ``O_EXCL`` (atomic on POSIX and Windows, no extra package).
    A read-modify-write takes milliseconds, so a lock older than ``stale`` seconds was left by a
    killed kernel and is broken.
    """
    lock = path.with_name(f".{path.name}.lock")
    t0 = time.monotonic()
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > stale:
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{path}: locked by {lock} for more than {timeout:.0f} s") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


class OutputLog:
    """Export point of a notebook: writes checked tables and figures, keeps the report.

    Parameters
    ----------
    output_dir : str or Path
        The run's output folder (``output/<run>``).
    notebook : str
        Notebook name (``"03_matching"``).
    reset : bool, optional
        Drop this notebook's earlier report rows. Default: on the first
        ``OutputLog`` of this notebook in the process (a fresh papermill kernel),
        so re-running a notebook replaces its rows; objects written again
        within a run replace their own row.

    Notes
    -----
    Every call appends one row per object to ``output_dir/disclosure_report.csv``
    (columns :data:`REPORT_COLUMNS`, no timestamps, rows ordered by notebook
    then call order: two identical runs give byte-identical reports).
    A figure is written only when none of its checked tables has a suppressed
    cell, or when the caller declares ``drawn_from_suppressed=True`` (it
    plotted ``suppress()``). A refused figure is closed, so it is not rendered
    inline into the notebook either.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> out = tempfile.mkdtemp()
    >>> df = pd.DataFrame({"be_id": [str(i) for i in range(12)], "g": "a"})
    >>> log = OutputLog(out, notebook="02_reach")
    >>> log.table(check_table(df, by=["g"], name="n"), "n_firms")["n_units"].tolist()
    [12]
    """

    REPORT = "disclosure_report.csv"
    _started: set[tuple[str, str]] = set()  # (report path, notebook) already reset in this process

    def __init__(self, output_dir: str | Path, notebook: str, *, reset: bool | None = None):
        if not isinstance(notebook, str) or not notebook:
            raise ValueError(f"OutputLog: notebook must be a non-empty string; got {notebook!r}")
        self.output_dir = Path(output_dir)
        self.notebook = notebook
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._reasons: dict[str, str] = {}
        key = (str(self.report_path.resolve()), notebook)
        # A fresh kernel (papermill run) starts the notebook's rows afresh; a second
        # OutputLog in the same kernel must not wipe what the first one recorded.
        if reset is None:
            reset = key not in OutputLog._started
        OutputLog._started.add(key)
        if reset:
            with _file_lock(self.report_path):
                rep = self._read()
                if len(rep):
                    self._write(rep.loc[rep["notebook"] != notebook])

    @property
    def report_path(self) -> Path:
        return self.output_dir / self.REPORT

    def _read(self) -> pd.DataFrame:
        if not self.report_path.exists():
            return pd.DataFrame(columns=list(REPORT_COLUMNS))
        return pd.read_csv(self.report_path, dtype=str, keep_default_na=False)

    def _write(self, rep: pd.DataFrame) -> None:
        rep = rep.reindex(columns=list(REPORT_COLUMNS)).fillna("")
        rep = rep.sort_values("notebook", kind="stable")
        # written aside and moved in: a reader never sees half a file
        tmp = self.report_path.with_name(f".{self.REPORT}.{os.getpid()}.tmp")
        rep.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, self.report_path)

    def _record(self, object_name: str, kind: str, file: str, checks: Sequence[Checked], verdict: str | None, reason: str) -> None:
        rows = [c.report_rows() for c in checks]
        if len(rows) == 1:
            row = rows[0].iloc[0].to_dict()
        else:  # a figure drawn from several checked tables: one row, pooled counts
            all_rows = pd.concat(rows, ignore_index=True)
            row = {
                "check": ";".join(all_rows["check"]),
                "stat": ";".join(all_rows["stat"]),
                "n_rows_excluded": int(all_rows["n_rows_excluded"].sum()),
                "rules_failed": ";".join(sorted({r for s in all_rows["rules_failed"] for r in s.split(";") if r})),
                "verdict": "review" if (all_rows["verdict"] == "review").any() else (
                    "suppressed" if (all_rows["verdict"] == "suppressed").any() else "ok"),
                "suppressed_cells": " || ".join(s for s in all_rows["suppressed_cells"] if s),
                "review_cells": " || ".join(s for s in all_rows["review_cells"] if s),
                "rules": all_rows["rules"].iloc[0],
                "reason": "; ".join(s for s in all_rows["reason"] if s),
            }
            for col in ("n_cells", "n_suppressed_primary", "n_suppressed_secondary", "n_review"):
                row[col] = int(all_rows[col].sum())
        row.update(notebook=self.notebook, object=object_name, kind=kind, file=file)
        if verdict is not None:
            row["verdict"] = verdict
        if reason:
            row["reason"] = "; ".join(s for s in (row.get("reason", ""), reason) if s)
        new = pd.DataFrame([{k: str(row.get(k, "")) for k in REPORT_COLUMNS}])
        with _file_lock(self.report_path):  # notebooks running side by side share the report
            rep = self._read()
            # a table and the figure drawn from it may share a name: each keeps its own row
            rep = rep.loc[~((rep["notebook"] == self.notebook) & (rep["object"] == object_name) & (rep["kind"] == kind))]
            self._write(pd.concat([rep, new], ignore_index=True) if len(rep) else new)
        self._reasons[object_name] = row["reason"] or row["verdict"]

    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ValueError(f"OutputLog: object name must be letters, digits, '_', '-', '.'; got {name!r}")
        return name

    def table(self, checked: Checked, name: str, *, index: bool = False) -> pd.DataFrame:
        """Write ``tables/<name>.csv`` (the suppressed copy), record it, return it.

        Parameters
        ----------
        checked : Checked
        name : str
            File stem and report object name.
        index : bool, default False
            Write the DataFrame index.

        Returns
        -------
        DataFrame
            The publishable copy (``checked.suppress()``).
        """
        if not isinstance(checked, Checked):
            raise TypeError(f"OutputLog.table('{name}'): expected a Checked; got {type(checked).__name__} "
                            "(run reach.disclosure.check_table first)")
        name = self._check_name(name)
        pub = checked.suppress()
        path = self.output_dir / "tables" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pub.to_csv(path, index=index, lineterminator="\n")
        file = path.relative_to(self.output_dir).as_posix()
        self._record(name, checked.kind, file, [checked], None, "")
        from reach.publish import register_table

        # every exported cell goes to the run's registry for the run-level differencing audit
        register_table(self.notebook, name, file, checked, pub)
        return pub

    def figure(
        self,
        fig: Any,
        checked: Checked | Sequence[Checked],
        name: str,
        drawn_from_suppressed: bool = False,
        *,
        dpi: int = 150,
    ) -> Path | None:
        """Write ``figures/<name>.png`` if its tables allow it; else return None and record why.

        Parameters
        ----------
        fig : matplotlib Figure (or seaborn grid with ``savefig``)
        checked : Checked or sequence of Checked
            The checked table(s) the figure was drawn from.
        name : str
        drawn_from_suppressed : bool, default False
            True if the figure plots ``suppress()`` copies (suppressed cells are
            absent from the plot); then it is written even if cells were suppressed.
        dpi : int, default 150

        Returns
        -------
        Path or None
        """
        checks = [checked] if isinstance(checked, Checked) else list(checked)
        if not checks or not all(isinstance(c, Checked) for c in checks):
            raise TypeError(f"OutputLog.figure('{name}'): checked must be a Checked or a list of Checked")
        name = self._check_name(name)
        failing = [c.name for c in checks if not c.ok]
        if failing and not drawn_from_suppressed:
            reason = (f"figure not written: checked table(s) {failing} have suppressed cells and the figure "
                      "was not declared drawn from suppress()")
            self._record(name, "figure", "", checks, "not_written", reason)
            _close(fig)
            return None
        path = self.output_dir / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
        note = "drawn from suppressed copy" if failing else ""
        self._record(name, "figure", path.relative_to(self.output_dir).as_posix(), checks, None, note)
        return path

    def why(self, name: str) -> str:
        """Reason recorded for an object of this notebook (e.g. why a figure was not written)."""
        return self._reasons.get(name, "")

    def report(self) -> pd.DataFrame:
        """The report as written so far (all notebooks)."""
        return self._read()


def _close(fig: Any) -> None:
    """Close a refused figure so the notebook does not render it inline either."""
    try:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        target = fig if isinstance(fig, Figure) else getattr(fig, "figure", None)  # seaborn grids hold .figure
        if isinstance(target, Figure):
            plt.close(target)
    except ImportError:  # without matplotlib there is nothing to render
        pass


# --------------------------------------------------------------------------- identifier scan
_TEXT_EXT = ("csv", "html", "htm", "ipynb", "json", "md", "txt", "tsv")
_SEP = "[ .\u00a0\u202f]"
_RUN = re.compile(rf"\d+(?:{_SEP}\d+)*")
_SPLIT = re.compile(_SEP)
_ENTITIES = re.compile(r"&nbsp;|&#160;|&#xa0;|\\u00a0", re.IGNORECASE)
#: SHA-256 digests (checksums/, manifest): hexadecimal, they carry no identifier, but their digit runs
#: can match one by chance
_HEX_DIGEST = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{64}(?![0-9A-Za-z])")
# file metadata in JSON records (manifest, results.json): a file's byte size can equal a KvK number at register
# scale (a 26 MB file, 8 digits); the key says what the number is
_FILE_METADATA = re.compile(r'"(?:size|size_bytes|bytes|mtime|mtime_ns|peak_rss_mb|seconds|cpu_seconds)"\s*:\s*[0-9.]+')

#: base64 payloads: figures embedded in HTML as data URIs and the image bundles of notebook outputs are
#: encoded bytes, not text anyone reads; their digit runs match a KvK number's 7-digit form by chance at
#: register scale (seen at 2M firms: "+3993759w" inside a PNG of 04_effects_nlw failed the run)
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<payload>[A-Za-z0-9+/=]+)")
_NOTEBOOK_BINARY = re.compile(r'"(?:image/(?:png|jpeg|gif|webp|bmp)|application/pdf)"\s*:\s*"(?:[A-Za-z0-9+/=]|\\n)*"')
#: pictures and PDFs: nothing to read in them as text. SVG pictures included: the report template's icons
#: are base64 SVGs whose path coordinates ("M 8.99 13.01") read as digit groups of a split identifier
#: (decoded, they matched two KvK numbers in every report at 2M firms). Other encoded payloads (a CSV or
#: JSON data URI) are decoded and searched like the file around them.
_PICTURE_MIMES = ("image/", "application/pdf")


def _decoded_payloads(text: str, notebook: bool) -> str:
    """``text`` with base64 pictures left out and other encoded payloads (CSV, JSON...) decoded in place."""
    def data_uri(m: re.Match) -> str:
        if m.group("mime").lower().startswith(_PICTURE_MIMES):
            return " "
        try:
            return " " + base64.b64decode(m.group("payload"), validate=True).decode("utf-8", errors="replace") + " "
        except (binascii.Error, ValueError):
            return m.group(0)  # not valid base64: searched as it is

    text = _DATA_URI.sub(data_uri, text)
    return _NOTEBOOK_BINARY.sub(" ", text) if notebook else text


def _normalise_ids(identifiers: Iterable[Any], kind: str) -> list[str]:
    ids = pd.Series(list(identifiers), dtype="object")
    if ids.isna().any():
        raise ValueError(f"scan_for_identifiers: {int(ids.isna().sum())} missing identifiers")
    s = ids.map(lambda v: str(int(v)) if isinstance(v, (int, np.integer)) else str(v).strip())
    bad = ~s.str.fullmatch(r"\d+")
    if bad.any():
        raise ValueError(
            f"scan_for_identifiers: identifiers must be digit strings; {int(bad.sum())} are not "
            f"(positions {np.flatnonzero(bad.to_numpy())[:5].tolist()})"
        )
    if kind == "kvk":
        s = s.str.zfill(8)
    return sorted(set(s.tolist()))


def scan_for_identifiers(
    paths: str | Path | Iterable[str | Path],
    identifiers: Iterable[Any],
    *,
    kind: str = "be_id",
    extensions: Sequence[str] = _TEXT_EXT,
    min_stripped_digits: int = 7,
) -> pd.DataFrame:
    """Search text outputs for firm identifiers in any formatting.

    Parameters
    ----------
    paths : path or iterable of paths
        Files or folders (searched recursively for ``extensions``).
    identifiers : iterable of str or int
        Identifiers as digit strings (leading zeros significant).
    kind : {"be_id", "kvk"}
        ``kvk`` restores leading zeros to 8 digits first.
    extensions : sequence of str
        File types searched (csv, html, htm, ipynb, json, md, txt, tsv).
    min_stripped_digits : int, default 7
        The form without leading zeros is searched only if it keeps this many
        digits (short numbers occur everywhere).

    Returns
    -------
    DataFrame
        Columns ``file, identifier, form, n``; ``form`` is ``as_is``,
        ``no_leading_zeros`` or ``separated`` (digit groups split by single
        spaces/dots, e.g. ``1234 5678`` or ``12.34.56.78``; two groups joined by one dot
        are a decimal number, not a split identifier). Empty if clean.

    Notes
    -----
    Each file is read once; one compiled regex extracts every maximal digit
    run, allowing single embedded separators (space, dot, no-break space).
    A run is split into groups; a candidate is a single group, or a contiguous
    sequence of groups of 1-4 digits (the first may be 1-4, the others 2-4)
    concatenated. Candidates are looked up in a set of the searched forms, so
    the cost is linear in the text size, not in identifiers x files. A digit
    run inside a longer digit run is not a hit (another number).

    Base64 payloads are not text a reader sees: pictures and PDFs (data URIs,
    notebook image outputs) are left out, other encoded payloads (a CSV or
    JSON data URI) are decoded and searched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "t.csv").write_text("kvk\\n1234 5678\\n2019\\n")
    >>> scan_for_identifiers(d, ["12345678"], kind="kvk")[["identifier", "form"]].values.tolist()
    [['12345678', 'separated']]
    """
    check_choice("scan_for_identifiers: kind", kind, ("be_id", "kvk"))
    ids = _normalise_ids(identifiers, kind)
    lookup: dict[str, list[tuple[str, str]]] = {}
    for i in ids:
        lookup.setdefault(i, []).append((i, "as_is"))
        stripped = i.lstrip("0")
        if stripped != i and len(stripped) >= min_stripped_digits:
            lookup.setdefault(stripped, []).append((i, "no_leading_zeros"))
    cols = ["file", "identifier", "form", "n"]
    if not lookup:
        return pd.DataFrame(columns=cols)
    min_len = min(len(k) for k in lookup)
    max_len = max(len(k) for k in lookup)
    exts = {e.lower().lstrip(".") for e in extensions}
    roots = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for r in roots:
        p = Path(r)
        if p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and f.suffix.lower().lstrip(".") in exts)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"scan_for_identifiers: {p} does not exist")
    hits: dict[tuple[str, str, str], int] = {}
    for f in sorted(set(files)):
        text = f.read_bytes().decode("utf-8", errors="replace")
        text = _decoded_payloads(text, notebook=f.suffix.lower() in (".json", ".ipynb"))
        text = _HEX_DIGEST.sub(" ", _ENTITIES.sub(" ", text))
        if f.suffix.lower() in (".json", ".ipynb"):
            text = _FILE_METADATA.sub(" ", text)
        for run in _RUN.findall(text):
            if len(run) < min_len:
                continue  # fast path: the run cannot hold an identifier
            groups = _SPLIT.split(run)
            if len(groups) == 1:
                for ident, form in lookup.get(run, ()):
                    key = (f.as_posix(), ident, form)
                    hits[key] = hits.get(key, 0) + 1
                continue
            for g in groups:  # each group on its own (an id next to another number)
                for ident, form in lookup.get(g, ()):
                    key = (f.as_posix(), ident, form)
                    hits[key] = hits.get(key, 0) + 1
            if len(groups) == 2 and run[len(groups[0])] == ".":
                # one dot between two digit groups is a decimal number (a test statistic "101.9262"), not an id
                # written in groups: at register scale (10^5 KvK numbers, searched without their leading zero
                # too) a run of 7 digits matches one by chance every few hundred numbers
                continue
            lens = [len(g) for g in groups]
            for a in range(len(groups)):
                if lens[a] > 4:
                    continue
                acc = groups[a]
                for b in range(a + 1, len(groups)):
                    if not 2 <= lens[b] <= 4:
                        break
                    acc += groups[b]
                    if len(acc) > max_len:
                        break
                    if len(acc) >= min_len and acc in lookup:
                        for ident, _ in lookup[acc]:
                            key = (f.as_posix(), ident, "separated")
                            hits[key] = hits.get(key, 0) + 1
    if not hits:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame([(*k, v) for k, v in hits.items()], columns=cols)
    return out.sort_values(cols[:3], kind="stable").reset_index(drop=True)
