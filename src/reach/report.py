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
from reach._display import ResultDisplay

__all__ = ["record_headline", "read_headlines", "fmt_number", "fmt_count", "count_text", "fmt_share", "share_text",
           "share_of", "count_of", "show_figure", "show_indicator",
           "SummaryDisplay", "checks_statement", "html_table", "place_legend", "legend_overlaps", "tidy_legends",
           "fit_titles",
           "dominated_cells", "dominance_note", "DOMINANT_SHARE", "figure_html", "details_html", "markdown_html"]


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
# The one display mixin of every result lives in reach._display; the old name stays for one release.
SummaryDisplay = ResultDisplay


# Shared by the notebooks so that a suppressed number reads the same everywhere.

def _missing(value: Any) -> bool:
    """Suppressed (or absent): ``None``, NaN, ``pd.NA``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt_number(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    """A published number as text; a suppressed (NaN/None) one as ``"suppressed"``.

    Examples
    --------
    >>> fmt_number(0.1234), fmt_number(float("nan")), fmt_number(0.1, 2, signed=True)
    ('0.123', 'suppressed', '+0.10')
    """
    if _missing(value):
        return "suppressed"
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


# Running text: a suppressed number cannot stand where a number would ("suppressed of suppressed users"),
# so the phrase around it changes instead.

def _start(text: str, start: bool) -> str:
    return text[:1].upper() + text[1:] if start else text


def share_text(value: Any, digits: int = 0, *, start: bool = False) -> str:
    """A published share in running text: ``"81%"``, or ``"a suppressed share"``.

    ``start=True`` capitalises it for the start of a sentence.

    Examples
    --------
    >>> share_text(0.81), share_text(float("nan")), share_text(None, start=True)
    ('81%', 'a suppressed share', 'A suppressed share')
    """
    return _start("a suppressed share" if _missing(value) else fmt_share(value, digits), start)


def count_of(n: Any, noun: str, *, start: bool = False) -> str:
    """A published count of ``noun`` in running text: ``"1,234 users"``, or ``"a suppressed number of users"``.

    Only for published (checked) counts; an unchecked count goes through :func:`count_text`.

    Examples
    --------
    >>> count_of(1234.0, "users"), count_of(float("nan"), "participations", start=True)
    ('1,234 users', 'A suppressed number of participations')
    """
    if not _missing(n):
        fmt_count(n)  # registers the published count the text prints (the output audit must know it)
    # the one wording of a count in text (a published count is never 1-9: min_units 1 adds no rounding)
    return _start(count_text(n, 1, noun), start)


def share_of(share: Any, n: Any, noun: str, *, digits: int = 0, start: bool = False) -> str:
    """A published share of a published group in running text, grammatical when either is suppressed.

    ``n=None`` leaves the group's size out.

    Examples
    --------
    >>> share_of(0.81, 1234, "users"), share_of(float("nan"), 1234, "users")
    ('81% of the 1,234 users', 'a suppressed share of the 1,234 users')
    >>> share_of(0.81, float("nan"), "users"), share_of(None, None, "users", start=True)
    ('81% of the users', 'A suppressed share of the users')
    """
    group = noun if n is None or _missing(n) else f"{fmt_count(n)} {noun}"
    return f"{share_text(share, digits, start=start)} of the {group}"


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
    Before export, a title wider than the figure is wrapped (:func:`fit_titles`) and every legend
    that covers plotted data is moved (:func:`tidy_legends`).
    """
    from IPython.display import Markdown, display

    fit_titles(fig)
    tidy_legends(fig)
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


def show_indicator(log: Any, result: Any, label: str) -> None:
    """Publish a :class:`reach.indicators.IndicatorResult` through ``log`` and show it: one section of notebook 02.

    Every table of ``result.exports`` is written with ``log.table`` (the suppressed copy), then the figure, when
    the result has one to draw, goes through :func:`show_figure`, then the narrative is displayed. Notebook 02
    does this for each of its indicators; ``bench/reach_steps.py`` does it outside a notebook.

    Parameters
    ----------
    log : reach.disclosure.OutputLog
    result : reach.indicators.IndicatorResult
    label : str
        The programme's name in the figure's title.

    Examples
    --------
    >>> r = ind.international_activity(panel, "tinl", rules=rules)     # doctest: +SKIP
    >>> show_indicator(log, r, "Trade and Innovate NL")                # doctest: +SKIP
    """
    from IPython.display import Markdown, display

    for name, checked in result.exports.items():
        log.table(checked, name)
    if result.plottable:
        show_figure(log, result.figure(label), result.checks, result.figure_name)
    display(Markdown(result.text))


def figure_html(log: Any, fig: Any, checked: Any, name: str, *, drawn_from_suppressed: bool = True) -> str:
    """Export a figure like :func:`show_figure` and return it as an inline ``<img>`` (for a ``<details>`` block).

    The image is the exported PNG's bytes; a refused figure returns the reason instead, so the
    report never shows what was not exported.
    """
    import base64
    import html as _html

    import matplotlib.pyplot as plt

    fit_titles(fig)
    tidy_legends(fig)
    path = log.figure(fig, checked, name, drawn_from_suppressed=drawn_from_suppressed)
    if path is None:
        return f"<p><em>Figure not exported: {_html.escape(log.why(name))}</em></p>"
    plt.close(fig)
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%" alt="{_html.escape(name)}"/>'


def details_html(summary: str, *parts: str, open_: bool = False) -> str:
    """A collapsed ``<details>`` block: ``summary`` (plain text, escaped) and HTML ``parts`` inside.

    Examples
    --------
    >>> details_html("tables & figure", "<p>x</p>")
    '<details><summary>tables &amp; figure</summary><p>x</p></details>'
    """
    import html as _html

    return (f"<details{' open' if open_ else ''}><summary>{_html.escape(summary)}</summary>"
            + "".join(parts) + "</details>")


def markdown_html(text: str) -> str:
    """The notebooks' narrative Markdown (``**bold**``, ``*italic*``, ```code```) as HTML, escaped otherwise.

    Examples
    --------
    >>> markdown_html("**a:** b *c* <d>")
    '<p><b>a:</b> b <i>c</i> &lt;d&gt;</p>'
    """
    import html as _html
    import re

    out = _html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return "".join(f"<p>{p}</p>" for p in out.split("\n\n") if p.strip())


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


# --------------------------------------------------------------------------- legends that never hide data
#: Places tried for a legend inside the axes, in order of preference (matplotlib ``loc`` names).
_CORNERS = ("upper right", "upper left", "lower right", "lower left", "upper center", "lower center",
            "center right", "center left")


def _renderer(fig: Any) -> Any:
    """A renderer for ``fig`` (a bare :class:`matplotlib.figure.Figure` gets an Agg canvas)."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def _data_extents(ax: Any, renderer: Any) -> tuple[np.ndarray, list[Any]]:
    """What a legend of ``ax`` must not cover, in display pixels: points and boxes.

    Points: the vertices of data lines (with 16 points between two vertices, so a line crossing
    the legend between two markers counts), scatter offsets and the ends of interval bars.
    Boxes: bars with a non-zero extent and the texts of the axes (bar labels, counts, notes).
    Reference lines (``axhline``/``axvline``: not in data coordinates) are no data.
    """
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection
    from matplotlib.patches import Rectangle

    pts: list[np.ndarray] = []

    def dense(xy: np.ndarray) -> np.ndarray:
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) < 2:
            return xy
        t = np.linspace(0, 1, 17)[:-1, None]
        segs = [a + t * (b - a) for a, b in zip(xy[:-1], xy[1:])]
        return np.vstack(segs + [xy[-1:]])

    for line in ax.get_lines():
        if not line.get_visible() or line.get_transform() != ax.transData:
            continue
        xy = np.asarray(line.get_xydata(), dtype=float)
        if len(xy):
            pts.append(dense(ax.transData.transform(xy)))
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        if isinstance(coll, PathCollection):
            off = np.asarray(coll.get_offsets(), dtype=float)
            if len(off):
                pts.append(coll.get_offset_transform().transform(off))
        elif isinstance(coll, (LineCollection, PolyCollection)):
            tr = coll.get_transform()
            for path in coll.get_paths():
                v = np.asarray(path.vertices, dtype=float)
                if len(v):
                    pts.append(dense(tr.transform(v)))
    boxes = []
    for patch in ax.patches:
        if isinstance(patch, Rectangle) and patch.get_visible() and patch.get_width() and patch.get_height():
            boxes.append(patch.get_window_extent(renderer))
    # texts of the axes (bar labels, counts, notes) and its titles and tick labels: a legend moved
    # outside the axes must not sit on the axis label either
    texts = [*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]
    for text in texts:
        if text.get_visible() and text.get_text().strip():
            boxes.append(text.get_window_extent(renderer))
    points = np.vstack(pts) if pts else np.zeros((0, 2))
    return points, boxes


def _covers(bbox: Any, points: np.ndarray, boxes: list[Any], pad: float = 2.0) -> list[str]:
    """What of (points, boxes) lies inside ``bbox`` grown by ``pad`` pixels."""
    x0, y0, x1, y1 = bbox.x0 - pad, bbox.y0 - pad, bbox.x1 + pad, bbox.y1 + pad
    hits = []
    if len(points):
        inside = (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
        if inside.any():
            hits.append(f"{int(inside.sum())} plotted point(s)")
    n_box = sum(1 for b in boxes if b.x0 < x1 and b.x1 > x0 and b.y0 < y1 and b.y1 > y0)
    if n_box:
        hits.append(f"{n_box} bar(s) or label(s)")
    return hits


def legend_overlaps(fig_or_ax: Any) -> list[str]:
    """Every legend of a figure that covers plotted data, described; empty when none does.

    Reads the drawn figure through matplotlib's renderer: a legend's box (display pixels)
    against the vertices of data lines, scatter points, interval bars, bars and the axes'
    texts (see :func:`place_legend`). Figure-level legends are checked against every axes.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(); ax = fig.subplots()
    >>> _ = ax.plot([0, 1], [0, 1], "o-", label="a"); _ = ax.legend(loc="upper left")
    >>> legend_overlaps(fig)
    []
    >>> _ = ax.plot([0, 0.05], [1, 0.95], "o", label="b"); _ = ax.legend(loc="upper left")
    >>> legend_overlaps(fig)[0].startswith("axes 0")
    True
    """
    if hasattr(fig_or_ax, "transData"):  # one Axes
        fig, axes, fig_legends = fig_or_ax.figure, [fig_or_ax], []
    else:
        fig = fig_or_ax
        axes, fig_legends = list(fig.axes), list(getattr(fig, "legends", []))
    renderer = _renderer(fig)
    fig.draw_without_rendering()
    out = []
    extents = {id(ax): _data_extents(ax, renderer) for ax in fig.axes}
    for i, ax in enumerate(axes):
        leg = ax.get_legend()
        if leg is not None and leg.get_visible():
            hits = _covers(leg.get_window_extent(renderer), *extents[id(ax)])
            if hits:
                out.append(f"axes {i} ({ax.get_title() or 'untitled'}): legend covers " + ", ".join(hits))
    for leg in fig_legends:
        box = leg.get_window_extent(renderer)
        for i, ax in enumerate(fig.axes):
            hits = _covers(box, *extents[id(ax)])
            if hits:
                out.append(f"figure legend over axes {i}: covers " + ", ".join(hits))
    return out


def place_legend(ax: Any, *, outside: str = "auto", **kwargs: Any) -> Any:
    """Draw the legend of ``ax`` where it covers no data: a free corner, else outside the axes.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes whose labelled artists make the legend (or pass ``handles``/``labels``).
    outside : {"auto", "right", "below"}
        Where the legend goes when no corner inside the axes is free: to the right of the axes
        (one entry per line), or below its axis label. ``"auto"``: right for a figure with one
        axes, below otherwise (a legend to the right of the left panel would sit on the right
        panel), and below too when the legend beside the axes would be wider than a fifth of the
        figure and 1.5 in (the re-layout would squeeze the axes).
    **kwargs
        Passed to :meth:`~matplotlib.axes.Axes.legend` (``handles``, ``labels``, ``fontsize``,
        ``ncol``, ``frameon``, ``title``); ``loc`` and ``bbox_to_anchor`` are chosen here.

    Returns
    -------
    matplotlib.legend.Legend or None
        None when the axes have nothing to label.

    Notes
    -----
    The figure is drawn once per candidate place: the legend's box in display pixels is
    compared with every data vertex, bar and text of the axes (:func:`legend_overlaps`). Corners
    are tried in the order of ``_CORNERS``; the first that covers nothing wins. Outside the axes
    the legend is anchored in points from the axes' own tight box (tick labels and axis label
    included), so a later ``tight_layout`` that resizes the axes does not move it onto them.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(); ax = fig.subplots()
    >>> _ = ax.plot(range(10), range(10), "o", label="rising")
    >>> leg = place_legend(ax)
    >>> leg._loc in (2, 4)  # upper left or lower right: the diagonal leaves those free
    True
    >>> legend_overlaps(fig)
    []
    """
    from matplotlib import transforms

    handles, labels_ = ax.get_legend_handles_labels()
    if "handles" in kwargs:
        handles = kwargs.pop("handles")
        labels_ = kwargs.pop("labels", [h.get_label() for h in handles])
    elif "labels" in kwargs:
        labels_ = kwargs.pop("labels")
    kwargs.pop("loc", None)
    kwargs.pop("bbox_to_anchor", None)
    if not handles:
        return None
    fig = ax.figure
    renderer = _renderer(fig)
    fig.draw_without_rendering()
    points, boxes = _data_extents(ax, renderer)
    for loc in _CORNERS:
        leg = ax.legend(handles, labels_, loc=loc, **kwargs)
        if not _covers(leg.get_window_extent(renderer), points, boxes):
            return leg
    side = outside if outside != "auto" else ("right" if len(fig.axes) == 1 else "below")
    tight = ax.get_tightbbox(renderer, for_layout_only=True)
    box = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72.0
    if side == "right":
        gap = (max(tight.x1 - box.x1, 0) / px_per_pt) + 4
        anchor = transforms.offset_copy(ax.transAxes, fig=fig, x=gap, y=0, units="points")
        # one entry per line beside the axes: a row of entries there took half a figure and the re-layout
        # squeezed the axes until their category labels overlapped (02's instrument-use chart at 2M firms)
        leg = ax.legend(handles, labels_, loc="upper left", bbox_to_anchor=(1.0, 1.0), bbox_transform=anchor,
                        borderaxespad=0, **{**kwargs, "ncol": 1})
        if outside != "auto" or leg.get_window_extent(renderer).width <= max(0.2 * fig.bbox.width, 1.5 * fig.dpi):
            return leg
        side = "below"  # still wide (a fifth of the figure and 1.5 in): under the axes, where the width is free
    if side != "below":
        raise ValueError(f"place_legend: outside must be 'auto', 'right' or 'below'; got {outside!r}")
    gap = (max(box.y0 - tight.y0, 0) / px_per_pt) + 4
    anchor = transforms.offset_copy(ax.transAxes, fig=fig, x=0, y=-gap, units="points")
    kwargs.setdefault("ncol", min(len(handles), 3))
    return ax.legend(handles, labels_, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=anchor,
                     borderaxespad=0, **kwargs)


def tidy_legends(fig: Any) -> int:
    """Move every axes legend of ``fig`` that covers plotted data (:func:`place_legend`); re-layout.

    Returns the number of legends moved. Figure-level legends (placed below the panels by
    their authors) are left alone. A figure laid out with ``tight_layout`` is laid out again
    so a legend moved outside the axes is inside the saved image.
    """
    if not hasattr(fig, "axes"):
        fig = getattr(fig, "figure", fig)  # seaborn grids hold .figure
    if not hasattr(fig, "axes"):
        return 0
    moved = 0
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None or not leg.get_visible():
            continue
        if not legend_overlaps(ax):
            continue
        props = {"fontsize": leg._fontsize, "frameon": leg.get_frame_on(), "ncol": leg._ncols,
                 "title": leg.get_title().get_text() or None}
        place_legend(ax, handles=leg.legend_handles, labels=[t.get_text() for t in leg.get_texts()], **props)
        moved += 1
    if moved:
        _relayout(fig)
    return moved


def _relayout(fig: Any) -> None:
    """``tight_layout`` again, unless the figure has a layout engine of its own (constrained layout
    lays out at every draw). A figure laid out once with ``tight_layout`` holds a placeholder engine,
    not None: testing for None skipped exactly the figures that needed it."""
    from matplotlib.layout_engine import PlaceHolderLayoutEngine, TightLayoutEngine

    engine = fig.get_layout_engine()
    if engine is None or isinstance(engine, (PlaceHolderLayoutEngine, TightLayoutEngine)):
        fig.tight_layout()


def _titles(fig: Any) -> list[Any]:
    out = [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title)]
    if getattr(fig, "_suptitle", None) is not None:
        out.append(fig._suptitle)
    return [t for t in out if t.get_visible() and t.get_text()]


def fit_titles(fig: Any, pad: float = 4.0) -> int:
    """Wrap every title of ``fig`` that reaches past the figure's left or right edge; re-layout.

    The exported PNG is the figure's own canvas: a title wider than it is cut at the edge
    (a programme's long name with the matching method, above axes pushed right by long
    covariate labels). Each such title gets the fewest lines (broken between words) whose
    widest line fits inside the figure from where the title is anchored; a title that fits
    is left as it is. Returns the number of titles wrapped.
    """
    import textwrap

    if not hasattr(fig, "axes"):
        fig = getattr(fig, "figure", fig)  # seaborn grids hold .figure
    if not hasattr(fig, "axes"):
        return 0
    renderer = _renderer(fig)
    width = fig.bbox.width

    def fits(t: Any) -> bool:
        bb = t.get_window_extent(renderer)
        return bb.x0 >= pad - 0.5 and bb.x1 <= width - pad + 0.5

    def wrap(t: Any) -> None:
        # fewest lines first: the longest line one character shorter each time, until it fits
        text = " ".join(t.get_text().split())
        for chars in range(max(len(line) for line in t.get_text().splitlines()) - 1, 7, -1):
            t.set_text(textwrap.fill(text, chars, break_long_words=False, break_on_hyphens=False))
            if fits(t):
                return

    wrapped = 0
    for t in _titles(fig):
        if not fits(t):
            wrap(t)
            wrapped += 1
    if wrapped:
        _relayout(fig)  # the taller title needs its room above the axes
        for t in _titles(fig):  # the layout can move the axes, and with them a centred title
            if not fits(t):
                wrap(t)
                _relayout(fig)
    return wrapped


# --------------------------------------------------------------------------- one firm behind a plotted point
#: A plotted magnitude (mean, sum) gets a note when one firm holds more than this share of its total:
#: a quarter of a mean of 180 firms is 45 firms' worth, enough to make a spike (the stub's TINL line).
DOMINANT_SHARE = 0.25


def dominated_cells(checked: Any, share: float = DOMINANT_SHARE) -> pd.DataFrame:
    """Cells of a magnitude table whose largest single contributor holds more than ``share`` of the total.

    Parameters
    ----------
    checked : reach.disclosure.Checked or sequence of them
        Checks of ``sum``/``mean`` tables (other statistics have no contributions and give no rows).
    share : float
        Threshold on the largest unit's share of the cell total, in (0, 1].

    Returns
    -------
    pandas.DataFrame
        The by-columns of the dominated cells that were **published** (suppressed cells are not
        plotted), plus ``check``. Never the share itself nor the unit: only *that* one firm
        dominates, which is what a reader of the figure needs.

    Notes
    -----
    Reads the dominance check of :func:`reach.disclosure.check_table` (``top_1_share``: the
    largest unit's :math:`|x_{(1)}| / \\sum_i |x_i|`). A cell can pass the N-k rule (the two largest
    at most 90%) and still rest mostly on one firm: a spike in a line of means is then that firm,
    not the group.

    Examples
    --------
    >>> import pandas as pd
    >>> from reach.disclosure import Rules, check_table
    >>> micro = pd.DataFrame({"unit": range(24), "year": [1] * 12 + [2] * 12,
    ...                       "x": [1.0] * 11 + [30.0] + [1.0] * 12})
    >>> c = check_table(micro, by=["year"], unit="unit", value="x", stat="mean", rules=Rules(min_units=10))
    >>> dominated_cells(c)["year"].tolist()
    [1]
    """
    import pandas as pd

    if not 0 < float(share) <= 1:
        raise ValueError(f"dominated_cells: share must be in (0, 1]; got {share!r}")
    checks = checked if isinstance(checked, (list, tuple)) else [checked]
    parts = []
    for c in checks:
        cells = c.cells
        if "top_1_share" not in cells.columns:
            continue
        hit = (cells["top_1_share"] > share) & (cells["verdict"] != "suppress")
        if hit.any():
            parts.append(cells.loc[hit, list(c.by)].assign(check=c.name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["check"])


def dominance_note(n_points: int, share: float = DOMINANT_SHARE, marker: str = "ringed") -> str:
    """The note under a figure with ``n_points`` dominated points ("" for none); names no firm.

    Examples
    --------
    >>> dominance_note(1)
    'Ringed point: one firm holds more than a quarter of the total behind it.'
    >>> dominance_note(2, 0.5)
    'Ringed points: one firm holds more than half of the total behind each.'
    >>> dominance_note(0)
    ''
    """
    if n_points <= 0:
        return ""
    what = {0.5: "half", 0.25: "a quarter"}.get(float(share), f"{100 * share:.0f}%")
    lead = f"{marker.capitalize()} point" + ("s" if n_points > 1 else "")
    return f"{lead}: one firm holds more than {what} of the total behind {'each' if n_points > 1 else 'it'}."
