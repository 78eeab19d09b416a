"""The shape every result shares: the column core of its tables and its display.

Every estimate table (``tidy()`` of an estimator's result) starts with the same nine
columns, :data:`ESTIMATE_CORE`, as R ``broom::tidy`` / ``did::tidy`` and pyfixest do;
result-specific columns (subgroup, grid value, measure, ...) follow them. Count tables
start with their grouping columns, then :data:`COUNT_CORE`. A reader who knows one table
can then read, stack and compare all of them.

Every result object displays itself through :class:`ResultDisplay`: its console repr and its
notebook display are built from ``summary()`` (text of labels and aggregate numbers), never
from a DataFrame, so printing a result cannot show a row of microdata or a firm identifier.

This module sits below every estimator and imports nothing from ``reach``.
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["ESTIMATE_CORE", "COUNT_CORE", "ResultDisplay", "Headline", "estimate_table", "count_table", "has_core"]

#: First columns of every estimate table, in this order.
ESTIMATE_CORE = ("term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high",
                 "n_treated", "n_control")
#: Last columns of every count table, after its grouping columns (``group..., n_units, value``).
COUNT_CORE = ("n_units", "value")


class Headline(Mapping):
    """A result's headline numbers: a read-only mapping that is also called as ``headline()``.

    Every result offers its headline numbers as ``result.headline()`` (``EffectReport``,
    ``HowSure``, ``MDE``, ``PlaceboResult``); stage results whose headline is data
    (``IndicatorResult.headline``, the publishing shape's ``headline`` field) hold one of these,
    so ``r.headline()`` works on every result and ``r.headline["key"]`` keeps working where it did.

    Examples
    --------
    >>> h = Headline({"n_firms": 360})
    >>> h["n_firms"], h(), len(h)
    (360, {'n_firms': 360}, 1)
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping | None = None):
        self._data = dict(data or {})

    def __call__(self) -> dict:
        return dict(self._data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Headline({self._data!r})"


def _normal_sf2(z: np.ndarray) -> np.ndarray:
    """Two-sided normal p-value :math:`2\\,(1 - \\Phi(|z|))` (``erfc(|z|/\\sqrt 2)``), NaN where z is."""
    z = np.abs(np.asarray(z, dtype="float64"))
    out = np.full(z.shape, np.nan)
    ok = np.isfinite(z)
    out[ok] = [math.erfc(v / math.sqrt(2.0)) for v in z[ok]]
    return out


def estimate_table(table: pd.DataFrame, extra: Sequence[str] = (), *, tests: bool = True) -> pd.DataFrame:
    """``table`` with the :data:`ESTIMATE_CORE` columns first, then ``extra``, then the rest.

    Parameters
    ----------
    table : DataFrame
        Has at least ``term`` and ``estimate``. Core columns it lacks are added: counts
        and intervals as missing; ``statistic`` and ``p_value`` (when ``tests``) from
        ``estimate`` and ``std_error``.
    extra : sequence of str
        Result-specific columns, in the order they follow the core (every other column
        of ``table`` comes after them, in its own order).
    tests : bool, default True
        Compute a missing ``statistic`` / ``p_value`` as a two-sided normal (Wald) test of
        zero. ``False`` leaves them missing, for rows that are not estimates with a sampling
        distribution (a minimum detectable effect, a placebo summary, a run difference).

    Returns
    -------
    DataFrame
        A new frame (``table`` is not modified).

    Notes
    -----
    With :math:`\\hat\\theta` the estimate and :math:`s` its standard error,
    ``statistic`` :math:`= \\hat\\theta / s` (missing when :math:`s` is missing or not positive)
    and ``p_value`` :math:`= 2(1 - \\Phi(|\\hat\\theta / s|))`.

    Examples
    --------
    >>> t = pd.DataFrame({"term": ["a"], "estimate": [0.2], "std_error": [0.1], "group": ["x"]})
    >>> out = estimate_table(t, ["group"])
    >>> list(out.columns) == [*ESTIMATE_CORE, "group"]
    True
    >>> round(float(out["statistic"].iloc[0]), 6), round(float(out["p_value"].iloc[0]), 4)
    (2.0, 0.0455)
    """
    missing = [c for c in ("term", "estimate") if c not in table.columns]
    if missing:
        raise ValueError(f"an estimate table needs the columns {missing}; it has {list(table.columns)}")
    out = table.copy()
    for c in ("std_error", "conf_low", "conf_high", "n_treated", "n_control"):
        if c not in out.columns:
            out[c] = np.nan
    if "statistic" not in out.columns:
        est, se = out["estimate"].to_numpy(dtype="float64"), out["std_error"].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            out["statistic"] = np.where(tests & (se > 0), est / se, np.nan)
    if "p_value" not in out.columns:
        out["p_value"] = _normal_sf2(out["statistic"].to_numpy(dtype="float64")) if tests else np.nan
    extra = [c for c in extra if c not in ESTIMATE_CORE]
    absent = [c for c in extra if c not in out.columns]
    if absent:
        raise ValueError(f"estimate_table: extra columns {absent} are not in the table {list(out.columns)}")
    rest = [c for c in out.columns if c not in ESTIMATE_CORE and c not in extra]
    return out.loc[:, [*ESTIMATE_CORE, *extra, *rest]].reset_index(drop=True)


def count_table(table: pd.DataFrame, groups: Sequence[str], extra: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` ordered as a count table: ``groups``, then :data:`COUNT_CORE`, then ``extra``.

    Examples
    --------
    >>> t = pd.DataFrame({"value": [3], "group": ["treated"], "n_units": [3]})
    >>> list(count_table(t, ["group"]).columns)
    ['group', 'n_units', 'value']
    """
    cols = [*groups, *COUNT_CORE, *extra]
    absent = [c for c in cols if c not in table.columns]
    if absent:
        raise ValueError(f"count_table: columns {absent} are not in the table {list(table.columns)}")
    return table.loc[:, cols].reset_index(drop=True)


def has_core(columns: Iterable[str], kind: str = "estimate") -> bool:
    """True when ``columns`` start with the estimate core (``kind="estimate"``) or end a
    count table's leading block with ``n_units, value`` (``kind="count"``).

    Examples
    --------
    >>> has_core([*ESTIMATE_CORE, "group"]), has_core(["group", "n_units", "value"], "count")
    (True, True)
    """
    cols = list(columns)
    if kind == "estimate":
        return tuple(cols[:len(ESTIMATE_CORE)]) == ESTIMATE_CORE
    if kind == "count":
        i = cols.index("n_units") if "n_units" in cols else -1
        return i >= 0 and tuple(cols[i:i + 2]) == COUNT_CORE
    raise ValueError(f"kind must be one of ['estimate', 'count']; got {kind!r}")


class ResultDisplay:
    """Mixin: console and notebook display of a result from its ``summary()`` text.

    ``summary()`` shows labels, settings and aggregate numbers only, never rows of
    microdata or firm identifiers, and every display below is built from it, so a result
    printed or left as the last expression of a notebook cell cannot leak a firm.
    Dataclasses using it need ``repr=False`` (the generated repr would print their
    DataFrames and arrays). Subclasses may override ``_repr_markdown_`` with a richer
    view of the same aggregate numbers.

    Examples
    --------
    >>> class R(ResultDisplay):
    ...     def summary(self):
    ...         return "3 users, effect 0.12"
    >>> repr(R())
    'R: 3 users, effect 0.12'
    >>> R()._repr_html_()
    '<pre>R: 3 users, effect 0.12</pre>'
    """

    def summary(self) -> str:  # pragma: no cover - implemented by the result classes
        raise NotImplementedError

    def _display_text(self) -> str:
        text = self.summary()
        sep = "\n" if "\n" in text else " "
        return f"{type(self).__name__}:{sep}{text}"

    def __repr__(self) -> str:
        return self._display_text()

    def __str__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        return "```\n" + self._display_text() + "\n```"

    def _repr_html_(self) -> str | None:
        # A class with its own Markdown view keeps it: HTML outranks Markdown in notebook
        # front ends, and returning None hands the display to the Markdown view.
        if type(self)._repr_markdown_ is not ResultDisplay._repr_markdown_:
            return None
        return "<pre>" + html.escape(self._display_text(), quote=False) + "</pre>"
