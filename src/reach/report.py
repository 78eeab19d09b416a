"""Headline numbers that notebooks record for tests and for the summary notebook.

Only aggregates that passed :mod:`reach.disclosure` may be recorded: the files
land in ``output/<run>/headline/`` and leave the Remote Access environment.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from reach._checks import count_text  # re-exported for notebooks: the one wording of a small count

__all__ = ["record_headline", "read_headlines", "fmt_number", "fmt_count", "count_text", "fmt_share", "show_figure",
           "SummaryDisplay", "checks_statement", "html_table"]


def _plain(value: Any) -> Any:
    """Convert numpy/pandas scalars and containers to JSON-native values.

    NaN becomes ``None`` so the files are strict JSON (a suppressed number is null).
    """
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:  # pandas NA / NaT
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def record_headline(output_dir: str | Path, section: str, numbers: Mapping[str, Any]) -> Path:
    """Write ``numbers`` to ``<output_dir>/headline/<section>.json``.

    Parameters
    ----------
    output_dir : str or Path
        The run's output folder (``output/<run>``).
    section : str
        Name of the section, usually the notebook's topic (``reach``, ``matching``, ``effects``).
    numbers : mapping
        JSON-serialisable headline numbers (nested mappings and lists allowed).

    Returns
    -------
    Path
        The file written. Keys are sorted so two identical runs give identical files.

    Examples
    --------
    >>> import tempfile
    >>> p = record_headline(tempfile.mkdtemp(), "effects", {"att": 0.12})
    >>> read_headlines(p.parent.parent)["effects"]["att"]
    0.12
    """
    from reach.publish import register_numbers

    path = Path(output_dir) / "headline" / f"{section}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    register_numbers(f"headline:{section}", numbers)
    path.write_text(json.dumps(_plain(numbers), indent=2, sort_keys=True), encoding="utf-8")
    return path


def read_headlines(output_dir: str | Path) -> dict[str, Any]:
    """Read every ``headline/<section>.json`` of a run into ``{section: numbers}``."""
    folder = Path(output_dir) / "headline"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


# --------------------------------------------------------------------------- notebook display helpers
class SummaryDisplay:
    """Mixin: console and notebook display of a result from its ``summary()`` text.

    ``summary()`` shows counts and labels only, never rows of microdata, so a
    result printed in a notebook cannot leak a firm. Dataclasses using it need
    ``repr=False`` (the generated repr would print their DataFrames).
    """

    def summary(self) -> str:  # pragma: no cover - implemented by the result classes
        raise NotImplementedError

    def _repr_markdown_(self) -> str:
        return "```\n" + self.summary() + "\n```"

    def _repr_html_(self) -> str:
        return "<pre>" + self.summary().replace("&", "&amp;").replace("<", "&lt;") + "</pre>"

    def __repr__(self) -> str:
        return self.summary()


# Shared by the notebooks so that a suppressed number reads the same everywhere.

def fmt_number(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    """A published number as text; a suppressed (NaN/None) one as ``"suppressed"``.

    Examples
    --------
    >>> fmt_number(0.1234), fmt_number(float("nan")), fmt_number(0.1, 2, signed=True)
    ('0.123', 'suppressed', '+0.10')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "suppressed"
    try:
        import pandas as pd

        if pd.isna(value):
            return "suppressed"
    except (TypeError, ValueError):
        pass
    from reach.publish import register_numbers

    # what is formatted for narrative text is published: the output audit must know it
    register_numbers("text", [value])
    return f"{float(value):{'+' if signed else ''},.{digits}f}"


def fmt_count(value: Any) -> str:
    """A published count as text (thousands separated); a suppressed one as ``"suppressed"``.

    Examples
    --------
    >>> fmt_count(12345.0), fmt_count(None)
    ('12,345', 'suppressed')
    """
    return fmt_number(value, 0)


def fmt_share(value: Any, digits: int = 0) -> str:
    """A published share (0-1) as a percentage; a suppressed one as ``"suppressed"``.

    Examples
    --------
    >>> fmt_share(0.944), fmt_share(float("nan"))
    ('94%', 'suppressed')
    """
    text = fmt_number(value, digits + 2)
    return text if text == "suppressed" else f"{100 * float(value):.{digits}f}%"


def html_table(table: Any, *, digits: int = 3, counts: Sequence[str] = (), undefined: Any = None,
               kinds: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None) -> str:
    """A published table as HTML for a reader: no index column, integer counts, no ``NaN``/``<NA>``.

    Parameters
    ----------
    table : pandas.DataFrame
        The publishable copy (``OutputLog.table`` / ``Checked.suppress()``); a missing cell was
        either undefined or suppressed.
    digits : int
        Decimals of non-count numbers (the rounded copy of a registered cell).
    counts : sequence of str
        Columns shown as integers with thousands separators.
    undefined : pandas.DataFrame, optional
        True where the *unchecked* table was already missing (e.g. a variance ratio of a
        binary covariate): such a cell reads "–"; every other missing cell reads "suppressed".
    kinds : mapping, optional
        ``{column: kind}``: values labelled with :func:`reach.labels.label` (``"outcome"``, ``"covariate"``).
    headers : mapping, optional
        Header texts; other headers come from :func:`reach.labels.column`.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"variable": ["n_dest_lag1"], "n_treated": [12.0], "smd": [float("nan")]})
    >>> h = html_table(t, counts=["n_treated"], kinds={"variable": "covariate"})
    >>> "destination countries in the year before" in h and ">12<" in h and ">suppressed<" in h
    True
    """
    import pandas as pd

    from reach import labels

    t = table.reset_index(drop=True)
    und = (undefined.reset_index(drop=True) if undefined is not None and len(undefined) == len(t) else None)
    out = pd.DataFrame(index=range(len(t)))
    for c in t.columns:
        v = t[c]

        def missing(i: int, c: str = c) -> str:
            return "–" if und is not None and c in und.columns and bool(und.at[i, c]) else "suppressed"

        if kinds and c in kinds:
            out[c] = ["–" if pd.isna(x) else labels.label(x, kinds[c]) for x in v]
        elif c in counts:
            num = pd.to_numeric(v, errors="coerce")
            out[c] = [missing(i) if pd.isna(x) else f"{int(round(float(x))):,d}" for i, x in enumerate(num)]
        elif pd.api.types.is_bool_dtype(v):
            out[c] = ["yes" if x else "no" for x in v]
        elif pd.api.types.is_numeric_dtype(v):
            num = pd.to_numeric(v, errors="coerce")
            # + 0.0: an exact zero never reads "-0.000"
            out[c] = [missing(i) if pd.isna(x) else f"{round(float(x), digits) + 0.0:,.{digits}f}"
                      for i, x in enumerate(num)]
        else:
            out[c] = ["–" if x is None or (not isinstance(x, str) and pd.isna(x)) else str(x) for x in v]
    head = {c: (headers or {}).get(c) or labels.column(c) for c in out.columns}
    return out.rename(columns=head).to_html(index=False, escape=True)


def show_figure(log: Any, fig: Any, checked: Any, name: str, *, drawn_from_suppressed: bool = True) -> Path | None:
    """Export a figure through a :class:`reach.disclosure.OutputLog` and show it, or say why not.

    The figure must have been drawn from the publishable copy (``checked.suppress()``),
    which is what ``drawn_from_suppressed=True`` declares. A refused figure is not
    shown inline either, so the rendered notebook never displays what was not exported.
    """
    from IPython.display import Markdown, display

    path = log.figure(fig, checked, name, drawn_from_suppressed=drawn_from_suppressed)
    if path is None:
        display(Markdown(f"*Figure `{name}` not exported: {log.why(name)}*"))
    else:
        import io

        import matplotlib.pyplot as plt
        from IPython.display import Image

        # show exactly the exported PNG bytes: independent of the kernel's matplotlib backend
        # (display(fig) prints "<Figure size ...>" when the inline formatter is not active)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        display(Image(data=buf.getvalue(), format="png"))
        plt.close(fig)
    return path


def checks_statement(output_dir_or_report: Any) -> str:
    """The summary's sentence about the disclosure checks, computed from the verdicts.

    Accepts ``output/<run>`` (reads its ``disclosure_report.csv``) or a report
    DataFrame; see :func:`reach.publish.checks_statement`. Notebook 05 quotes
    this instead of a fixed "every number passed".

    Examples
    --------
    >>> import pandas as pd
    >>> checks_statement(pd.DataFrame({"file": ["t.csv"], "verdict": ["ok"]}))
    'All 1 outputs passed the disclosure checks.'
    """
    from reach import publish

    src = output_dir_or_report
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        src = Path(src) / "disclosure_report.csv"
    return publish.checks_statement(src)
