"""Yearly monitoring: the headline numbers of two runs side by side, differences flagged.

``python -m reach compare output/<run_a> output/<run_b>`` reads the headline files
(``headline/*.json``, already disclosure-checked) of two runs, e.g. last year's and
this year's, and writes one table with every number of both runs, its difference
and a flag. The same analysis repeated each year then shows the trend.

A difference of two published counts can itself disclose: if run A counts 360
firms and run B 357, the three firms that changed form a cell of their own. So a
*count* whose difference is non-zero but smaller than the disclosure rule's
``min_units`` is exported as "suppressed" (the two counts stay, as they were
already published; the difference is not spelled out and is flagged for the
output checker). Shares, estimates and other non-count numbers are differenced freely.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from reach._display import ESTIMATE_CORE, ResultDisplay, estimate_table
from reach.report import read_headlines

__all__ = ["RunComparison", "compare_runs", "flatten", "COLUMNS", "STATUSES"]

#: Columns of one compared number (:attr:`RunComparison.table`).
_ROW_COLUMNS = ("section", "key", "value_a", "value_b", "difference", "status", "disclosure")
#: Columns of :meth:`RunComparison.tidy`: the estimate core (``reach._display.ESTIMATE_CORE``; ``term``
#: is ``section.key``, ``estimate`` the difference b - a as a number, missing when it is suppressed
#: or one run lacks the number; no standard error, test or counts), then the compared numbers.
COLUMNS = (*ESTIMATE_CORE, *_ROW_COLUMNS)
#: Values of the ``status`` column.
STATUSES = ("same", "different", "only in a", "only in b", "suppressed in a", "suppressed in b")
#: Sections not compared: 05's sentences repeat numbers of the other sections.
SKIP_SECTIONS = ("summary",)


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, leaf)`` of every number (or null) in a headline tree; strings and booleans are skipped.

    Examples
    --------
    >>> dict(flatten({"a": {"b": 1, "c": "x"}, "d": [0.5, None], "e": True}))
    {'a.b': 1, 'd.0': 0.5, 'd.1': None}
    """
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from flatten(v, f"{prefix}.{i}" if prefix else str(i))
    elif node is None or (isinstance(node, (int, float)) and not isinstance(node, bool)):
        yield prefix, node


def _is_count(key: str) -> bool:
    """A count of firms or records, by the headline naming convention (``n_firms``, ``per_cohort.2019.n_treated``)."""
    last = [p for p in key.split(".") if not p.isdigit()]
    leaf = last[-1] if last else key
    return leaf.startswith("n_") or leaf in {"users", "firms", "linked", "total"}


@dataclass(frozen=True, repr=False)
class RunComparison(ResultDisplay):
    """Two runs' headline numbers side by side.

    Attributes
    ----------
    run_a, run_b : Path
        The two run folders (``output/<run>``).
    table : DataFrame
        One row per number of either run: ``section, key, value_a, value_b, difference, status,
        disclosure`` (``difference`` is ``"suppressed"`` for a withheld difference of counts).
    parameters : DataFrame
        Parameters that differ between the runs' manifests (``parameter, value_a, value_b``).
    min_units : int
        Disclosure threshold used for differences of counts.
    """

    run_a: Path
    run_b: Path
    table: pd.DataFrame = field(repr=False)
    parameters: pd.DataFrame = field(repr=False)
    min_units: int = 10

    def tidy(self) -> pd.DataFrame:
        """One row per number, columns :data:`COLUMNS`."""
        t = self.table.loc[:, list(_ROW_COLUMNS)].copy()
        t.insert(0, "term", t["section"].astype(str) + "." + t["key"].astype(str))
        t.insert(1, "estimate", pd.to_numeric(t["difference"], errors="coerce").astype("float64"))
        return estimate_table(t, _ROW_COLUMNS, tests=False)

    @property
    def differences(self) -> pd.DataFrame:
        """Rows whose status is not ``same``."""
        return self.tidy().loc[lambda t: t["status"] != "same"].reset_index(drop=True)

    @property
    def n_different(self) -> int:
        return int((self.table["status"] != "same").sum())

    def summary(self) -> str:
        n = len(self.table)
        lines = [f"Comparison of {self.run_a.name} (a) and {self.run_b.name} (b): {n:,} headline numbers, "
                 f"{self.n_different:,} differ."]
        counts = self.table["status"].value_counts()
        lines += [f"  {s}: {int(counts[s]):,}" for s in STATUSES if s in counts]
        n_sup = int((self.table["disclosure"] != "ok").sum())
        if n_sup:
            lines.append(f"  differences of counts below {self.min_units} firms not shown (disclosure): {n_sup:,}")
        if len(self.parameters):
            lines.append("Parameters that differ: " + ", ".join(
                f"{r.parameter} ({r.value_a} -> {r.value_b})" for r in self.parameters.itertuples(index=False)))
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``comparison.csv`` (every number), ``differences.csv`` and ``comparison.md`` to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "comparison.csv", out / "differences.csv", out / "comparison.md"]
        self.tidy().to_csv(paths[0], index=False, lineterminator="\n")
        self.differences.to_csv(paths[1], index=False, lineterminator="\n")
        md = ["# Comparison of two runs", "", f"- run a: `{self.run_a}`", f"- run b: `{self.run_b}`", "",
              "```", self.summary(), "```", ""]
        if self.n_different:
            md += ["| section | number | a | b | difference | status |", "|---|---|---|---|---|---|"]
            for r in self.differences.itertuples(index=False):
                md.append(f"| {r.section} | {r.key} | {_text(r.value_a)} | {_text(r.value_b)} | "
                          f"{r.difference if isinstance(r.difference, str) else _text(r.difference)} | {r.status} |")
        paths[2].write_text("\n".join(md) + "\n", encoding="utf-8")
        return paths


def _text(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _manifest(run: Path) -> dict:
    path = run / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# headline keys renamed between releases: last year's run still compares with this year's
RENAMED_KEYS = {"pretest_pvalue": "pretest_p_value"}


def _current_key(key: str) -> str:
    """``key`` with a renamed last segment replaced by its current name (:data:`RENAMED_KEYS`).

    Examples
    --------
    >>> _current_key("outcomes.log_exports.full.pretest_pvalue")
    'outcomes.log_exports.full.pretest_p_value'
    """
    head, _, last = key.rpartition(".")
    return f"{head}.{RENAMED_KEYS[last]}" if last in RENAMED_KEYS else key


def compare_runs(run_a: str | Path, run_b: str | Path, *, tolerance: float = 1e-9,
                 min_units: int | None = None) -> RunComparison:
    """Compare the headline numbers of two runs.

    Parameters
    ----------
    run_a, run_b : str or Path
        Run folders ``output/<run>`` holding ``headline/*.json``.
    tolerance : float, default 1e-9
        Numbers with :math:`|b - a| \\le tol \\cdot \\max(1, |a|)` are the same (JSON round trip).
    min_units : int, optional
        Differences of counts smaller than this (and non-zero) are suppressed. Default: the
        ``disclosure.min_units`` of run a's manifest, else 10.

    Returns
    -------
    RunComparison

    Raises
    ------
    FileNotFoundError
        When a folder has no ``headline/`` files (naming the folder).

    Notes
    -----
    ``difference`` is :math:`b - a`. Status: ``same`` / ``different``; ``only in a`` /
    ``only in b`` for numbers one run did not record (e.g. a programme added this year);
    ``suppressed in a`` / ``suppressed in b`` when one run recorded null (suppressed).

    Examples
    --------
    >>> import tempfile
    >>> from reach.report import record_headline
    >>> a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> _ = record_headline(a, "reach_tinl", {"n_firms": 360, "share": 0.5})
    >>> _ = record_headline(b, "reach_tinl", {"n_firms": 363, "share": 0.52})
    >>> compare_runs(a, b).tidy()[["key", "difference", "status", "disclosure"]].to_dict("list")
    {'key': ['n_firms', 'share'], 'difference': ['suppressed', 0.02], 'status': ['different', 'different'], 'disclosure': ['difference of a count below 10 units', 'ok']}
    """
    run_a, run_b = Path(run_a), Path(run_b)
    heads = []
    for run in (run_a, run_b):
        h = {k: v for k, v in read_headlines(run).items() if k not in SKIP_SECTIONS}
        if not h:
            raise FileNotFoundError(f"{run}: no headline/*.json files; run `python -m reach run` for it first "
                                    "(compare takes two run folders such as output/stub)")
        heads.append(h)
    ma, mb = _manifest(run_a), _manifest(run_b)
    if min_units is None:
        min_units = int(((ma.get("parameters") or {}).get("disclosure") or {}).get("min_units", 10))
    flat_a = {(s, _current_key(k)): v for s, tree in heads[0].items() for k, v in flatten(tree)}
    flat_b = {(s, _current_key(k)): v for s, tree in heads[1].items() for k, v in flatten(tree)}
    rows = []
    for key in sorted(set(flat_a) | set(flat_b)):
        a, b = flat_a.get(key, math.nan), flat_b.get(key, math.nan)
        in_a, in_b = key in flat_a, key in flat_b
        diff: Any = math.nan
        disclosure = "ok"
        if not in_a:
            status = "only in b"
        elif not in_b:
            status = "only in a"
        elif a is None and b is None:
            status = "same"
        elif a is None:
            status = "suppressed in a"
        elif b is None:
            status = "suppressed in b"
        else:
            diff = round(b - a, 12)  # JSON floats: no 0.020000000000000018
            status = "same" if abs(diff) <= tolerance * max(1.0, abs(a)) else "different"
            if status == "same":
                diff = 0.0
            elif _is_count(key[1]) and abs(diff) < min_units:
                diff, disclosure = "suppressed", f"difference of a count below {min_units} units"
        rows.append({"section": key[0], "key": key[1], "value_a": math.nan if a is None else a,
                     "value_b": math.nan if b is None else b, "difference": diff, "status": status,
                     "disclosure": disclosure})
    table = pd.DataFrame(rows, columns=list(_ROW_COLUMNS))
    pa, pb = ma.get("parameters") or {}, mb.get("parameters") or {}
    skip = {"data_dir", "run_name"}
    prm = [{"parameter": k, "value_a": json.dumps(pa.get(k), default=str), "value_b": json.dumps(pb.get(k), default=str)}
           for k in sorted(set(pa) | set(pb)) if k not in skip and pa.get(k) != pb.get(k)]
    return RunComparison(run_a, run_b, table, pd.DataFrame(prm, columns=["parameter", "value_a", "value_b"]), min_units)
