"""Input checks and wording shared by every module: one place for each helper.

Validated method choices, required columns, example rows in error messages,
file checksums and the wording of counts that may be too small to publish.
Each used to be written in several modules, with small differences (two
disagreed on what a zero count reads like); these are the only versions.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["ColumnError", "check_choice", "choice_error", "require_columns", "examples", "sha256", "count_text", "N_EXAMPLES", "release_memory"]

#: Example rows quoted in an error message (they go to the analyst's console, never to output/).
N_EXAMPLES = 5


class ColumnError(KeyError, ValueError):
    """A table lacks columns it needs.

    Both a ``KeyError`` (a name was not found) and a ``ValueError`` (the
    argument is unusable), so callers catching either keep working. The
    message is plain text (``KeyError`` would otherwise quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; else a ``ValueError`` listing them and echoing ``value``.

    Examples
    --------
    >>> check_choice("method", "nearest", ("nearest", "cem"))
    'nearest'
    >>> check_choice("method", "optimal", ("nearest", "cem"))
    Traceback (most recent call last):
    ...
    ValueError: method must be one of ['nearest', 'cem']; got 'optimal'
    """
    problem = choice_error(value, allowed)
    if problem:
        raise ValueError(f"{name} {problem}")
    return value


def choice_error(value: Any, allowed: Sequence[str]) -> str | None:
    """What is wrong with a choice, for validators that collect messages rather than raise (``None``: fine).

    Examples
    --------
    >>> choice_error("ols", ("dr", "ipw", "reg"))
    "must be one of ['dr', 'ipw', 'reg']; got 'ols'"
    >>> choice_error("dr", ("dr", "ipw", "reg")) is None
    True
    """
    if not isinstance(value, str) or value not in allowed:
        return f"must be one of {list(allowed)}; got {value!r}"
    return None


def require_columns(df: Any, cols: Iterable[str], table: str = "df", hint: str = "") -> None:
    """Raise :class:`ColumnError` naming the table, the missing columns and the columns it has.

    Examples
    --------
    >>> require_columns(pd.DataFrame({"be_id": []}), ["be_id", "year"], "panel")
    Traceback (most recent call last):
    ...
    reach._checks.ColumnError: panel lacks column(s) ['year']; it has ['be_id']
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{table} must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in dict.fromkeys(cols) if c not in df.columns]
    if missing:
        raise ColumnError(f"{table} lacks column(s) {missing}; it has {list(df.columns)[:30]}"
                          + (f" ({hint})" if hint else ""))


def examples(df: pd.DataFrame, mask: Any, cols: Sequence[str], *, offset: int | None = None,
             n: int = N_EXAMPLES) -> str:
    """Up to ``n`` example rows where ``mask`` holds, as text for an error message.

    With ``offset`` the rows are labelled ``row`` = position + offset (e.g. ``offset=2`` gives the
    1-based line of a file with a header line, as a spreadsheet shows it); without, no index is shown.

    Examples
    --------
    >>> df = pd.DataFrame({"kvk": ["1", "22", "333"]})
    >>> print(examples(df, df["kvk"].str.len() > 1, ["kvk"], offset=2))
         kvk
    row
    3     22
    4    333
    """
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))[:n]
    rows = df.iloc[idx][list(cols)].copy()
    if offset is None:
        return rows.to_string(index=False, max_cols=12)
    rows.index = idx + offset
    rows.index.name = "row"
    return rows.to_string(max_cols=12)


def sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (inputs can be several GB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_text(n: Any, min_units: int, unit: str = "") -> str:
    """A count for running text: below ``min_units`` (but above zero) never given exactly.

    A zero is said as "0": an empty cell reveals no unit. A missing (suppressed) count reads
    "a suppressed number of".

    Examples
    --------
    >>> count_text(1234, 10, "firms"), count_text(3, 10, "firms"), count_text(0, 10, "firms")
    ('1,234 firms', 'fewer than 10 firms', '0 firms')
    """
    suffix = f" {unit}" if unit else ""
    if n is None or (isinstance(n, float) and not np.isfinite(n)) or pd.isna(n):
        return f"a suppressed number of{suffix}"
    n = int(round(float(n)))
    if 0 < n < min_units:
        return f"fewer than {min_units}{suffix}"
    return f"{n:,}{suffix}"


def release_memory() -> None:
    """Hand memory freed by dropped tables back to the system.

    Arrow (pandas' string columns) keeps freed blocks in its own pool, which numpy's
    allocations cannot reuse, and glibc keeps freed heap pages: measured at 200k firms, 45%
    of the loaded inputs' resident memory was such freed space. Called between the big
    steps of notebook 01 (each input table, linkage, panel), it lowers the peak; it changes
    no value.
    """
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # noqa: BLE001 - only an optimisation
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: return freed heap pages
    except (OSError, AttributeError):
        pass


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, also one papermill executes).

    A library progress bar there goes to stderr and is rendered as a red error box in the
    report, with tqdm's warning about ipywidgets and its installation path; the runner prints
    each notebook's progress itself, so long library loops show their bar only in a terminal.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
