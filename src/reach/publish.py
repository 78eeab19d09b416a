r"""The publishing layer: every number that leaves a run is registered, audited and recorded.

Notebooks keep calling :class:`reach.disclosure.OutputLog` (``table``,
``figure``), :func:`reach.report.show_figure`, :func:`reach.report.record_headline`
and the ``fmt_*`` formatters; each of them registers what it publishes here.
The runner points the layer at ``work/<run>/registry/`` (environment variables
:data:`ENV_REGISTRY` and :data:`ENV_NOTEBOOK`, inherited by the papermill
kernels), so the registry, which holds the unit memberships of every cell,
stays with the microdata. After the last notebook the runner calls
:func:`audit_run` and :func:`record_run`, which

1. audits the registered cells of the whole run together (:func:`audit_cells`):
   an interval (LP) attack over nested and overlapping populations, as
   tau-ARGUS's audit, and a search for published totals of table lines;
   it suppresses more cells until no cell below ``min_units`` can be bounded
   inside its protection interval, rewrites the affected tables and withdraws
   figures drawn from them;
2. audits the numbers of the rendered outputs (HTML, executed notebooks,
   headline JSON) against the registered numbers (:func:`audit_numbers`);
3. replaces machine paths, user and host names (:func:`scrub_paths`);
4. writes ``disclosure_audit.csv``, completes ``disclosure_report.csv`` with a
   row per output file and writes a SACRO-compatible ``results.json`` and
   ``checksums/`` in the format of ACRO's ``finalise`` (:func:`write_results_json`).

Stage results offer one shape, :class:`StageOutput` (``tables``, ``figures``,
``headline``, ``narrative``), published by :meth:`StageOutput.publish`.
:func:`checks_statement` gives the summary's sentence about the checks,
computed from the verdicts.
"""
from __future__ import annotations

import getpass
import html as _html
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from reach import _checks

__all__ = [
    "ENV_REGISTRY", "ENV_NOTEBOOK", "ENV_AUDIT_SUPPRESS", "StageOutput", "register_table", "register_numbers", "text",
    "registered_numbers", "load_registry", "audit_cells", "Audit", "audit_numbers", "scrub_paths",
    "scan_for_machine_paths", "write_results_json", "checks_statement", "audit_run", "record_run", "FILE_VERDICTS",
    "row_labels", "audit_suppressions", "write_audit_suppressions",
]

#: Folder of the run's registry (set by the runner; unset: nothing is registered).
ENV_REGISTRY = "REACH_REGISTRY"
#: Name of the notebook being executed (set by the runner).
ENV_NOTEBOOK = "REACH_NOTEBOOK"
#: Verdicts a file can get in ``disclosure_report.csv``.
FILE_VERDICTS = ("ok", "suppressed", "review", "not_written", "fail")
_SAFE_VERDICTS = ("ok", "suppressed")


def _registry() -> Path | None:
    path = os.environ.get(ENV_REGISTRY)
    return Path(path) if path else None


def _notebook(default: str = "session") -> str:
    return os.environ.get(ENV_NOTEBOOK) or default


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    try:
        if v is not pd.NA and not isinstance(v, (str, bytes)) and pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if v is pd.NA:
        return None
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


# =========================================================================== registration
def register_table(notebook: str, name: str, file: str, checked: Any, published: pd.DataFrame) -> Path | None:
    """Register the cells of an exported table (called by :meth:`reach.disclosure.OutputLog.table`).

    Writes ``<registry>/tables/<notebook>__<name>.json`` (labels, published
    values, true unit counts, verdicts) and, when the check kept unit
    memberships, ``.npz`` with them. Nothing is written outside a run.
    """
    reg = _registry()
    if reg is None:
        return None
    folder = reg / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    cells = checked.cells
    by = list(checked.by)
    fails = [c for c in cells.columns if c.startswith("fail_")]
    rows = []
    for i, labels in enumerate(row_labels(checked)):
        rows.append({
            "labels": labels,
            "published": {c: _plain(published.iloc[i][c]) for c in published.columns
                          if c in checked.value_columns or c in checked.count_columns},
            "n_true": _plain(cells.iloc[i].get("n_units")),
            "suppressed": bool(cells.iloc[i]["verdict"] == "suppress"),
            "failed": [c for c in fails if bool(cells.iloc[i][c])],
        })
    meta = {"notebook": notebook, "object": name, "check": checked.name, "file": file, "kind": checked.kind,
            "stat": checked.stat, "units": checked.units, "by": by, "min_units": checked.rules.min_units,
            "share_step": checked.rules.rounding.step("share") if checked.units == "share" else None,
            "count_base": checked.rules.rounding.count_base,
            "value_columns": list(checked.value_columns), "count_columns": list(checked.count_columns),
            "rows": rows}
    stem = f"{notebook}__{name}"
    (folder / f"{stem}.json").write_text(json.dumps(meta, default=str), encoding="utf-8")
    # the other numeric columns of the published copy (standard errors, bounds, test statistics) leave the
    # run in the same file and are shown in the reports: known to the audit of rendered numbers
    other = [c for c in published.columns if c not in meta["value_columns"] and c not in meta["count_columns"]
             and c not in by and pd.api.types.is_numeric_dtype(published[c])
             and not pd.api.types.is_bool_dtype(published[c])]
    if other:
        register_numbers(f"table:{name}", published[other].to_numpy(dtype=float, na_value=np.nan).ravel().tolist(),
                         notebook=notebook)
    if checked.members is not None:
        _write_members_once(folder / f"{stem}.npz", checked.members)
    return folder / f"{stem}.json"


#: The last memberships this process wrote: weak references to their arrays and the file. Tables that share
#: one membership object (an indicator's mean and median over the same rows) get a hard link to that file.
_LAST_MEMBERS: list[tuple[dict[str, Any], Path]] = []


def _write_members_once(path: Path, members: Mapping[str, Any]) -> Path:
    """:func:`write_members`, or a hard link to the file just written for the very same arrays.

    At register scale one membership file is ~0.4 GB; an indicator's mean and median tables share
    theirs. The link is made beside a temporary name and moved over ``path`` (never an in-place
    write of a file that may be linked: :func:`write_members` always writes a new file too). Where
    links are not possible (a file system without them), the file is written again.
    """
    import weakref

    if _LAST_MEMBERS:
        refs, earlier = _LAST_MEMBERS[0]
        same = refs.keys() == members.keys() and all(refs[k]() is members[k] for k in members)
        if same and earlier.is_file() and earlier != path:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
            try:
                tmp.unlink(missing_ok=True)
                os.link(earlier, tmp)
                os.replace(tmp, path)
                return path
            except OSError:
                tmp.unlink(missing_ok=True)
    write_members(path, members)
    try:
        _LAST_MEMBERS[:] = [({k: weakref.ref(v) for k, v in members.items()}, path)]
    except TypeError:  # not arrays (no weak references): nothing to share
        _LAST_MEMBERS.clear()
    return path


#: Membership arrays written without compression: the units' 64-bit hashes are random bytes, which deflate
#: cannot shrink (ratio 1.0003 on the 2M-firm registry) but spent ~2 s per 50 MB on.
_STORED_MEMBERS = frozenset({"unit"})


def write_members(path: str | Path, members: Mapping[str, Any]) -> Path:
    """Write a check's unit memberships as an ``.npz`` that :func:`numpy.load` reads.

    The cell codes, traits and row counts are long runs of a few values: deflated at level 1
    (fast; within a few percent of the default level's size on them). The unit hashes are stored
    as they are. ``np.savez_compressed`` deflated everything at level 6 and took a third of
    notebook 02's time at register scale (73 of 231 s in 02_reach_tinl at 2M firms).
    """
    import zipfile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as zf:
            for key, value in members.items():
                name: str | zipfile.ZipInfo = f"{key}.npy"
                if key in _STORED_MEMBERS:
                    name = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    name.compress_type = zipfile.ZIP_STORED
                with zf.open(name, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asarray(value), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def row_labels(checked: Any) -> list[dict[str, Any]]:
    """The labels of each cell of a check, as registered (by-columns; an estimates table's text columns)."""
    cells, table, by = checked._cells, checked._table, list(checked.by)
    if by:
        return [{c: _plain(v) for c, v in zip(by, vals)} for vals in cells[by].itertuples(index=False)]
    if checked.kind != "estimates":
        return [{} for _ in range(len(cells))]
    cols = [c for c in table.columns if c not in checked.value_columns and c not in checked.count_columns
            and not pd.api.types.is_float_dtype(table[c])]
    return [{c: _plain(v) for c, v in zip(cols, vals)} for vals in table[cols].itertuples(index=False)]


#: File of a run's second pass: the cells its first pass's audit suppressed (set by the runner).
ENV_AUDIT_SUPPRESS = "REACH_AUDIT_SUPPRESS"
_SUPPRESS_CACHE: dict[tuple[str, float], dict[tuple[str, str], list[dict[str, Any]]]] = {}


def audit_suppressions(checked: Any) -> list[int]:
    """Row positions of ``checked`` that the first pass's run-level audit suppressed (second pass only).

    Matched by notebook, check name and the row's labels (not its position alone), so
    a check made the same way finds its rows again.
    """
    path = os.environ.get(ENV_AUDIT_SUPPRESS)
    if not path or not Path(path).is_file():
        return []
    key = (path, Path(path).stat().st_mtime)
    if key not in _SUPPRESS_CACHE:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        table: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in entries:
            table.setdefault((e["notebook"], e["check"]), []).append(e["labels"])
        _SUPPRESS_CACHE.clear()
        _SUPPRESS_CACHE[key] = table
    wanted = _SUPPRESS_CACHE[key].get((_notebook(), checked.name))
    if not wanted:
        return []
    want = {json.dumps(w, sort_keys=True, default=str) for w in wanted}
    return [i for i, lab in enumerate(row_labels(checked)) if json.dumps(lab, sort_keys=True, default=str) in want]


def write_audit_suppressions(work_dir: str | Path, audit: "Audit",
                             cells: Mapping[tuple[str, str], list[int]] | None = None,
                             notebooks: Iterable[str] | None = None) -> Path:
    """Add the cells ``audit`` suppressed (or ``cells`` of it), by notebook, check and labels, to the file
    the run's next pass reads; the registry's row numbers are those of the pass ``audit`` ran on
    (``notebooks``: the notebooks it audited, when others may still be writing their entries)."""
    work_dir = Path(work_dir)
    tables, _ = load_registry(work_dir / "registry", members=False, notebooks=notebooks)
    by_object = {(t["notebook"], t["object"]): t for t in tables}
    path = work_dir / "audit_suppress.json"
    entries = []
    if path.is_file():  # cells of earlier passes stay suppressed
        entries = json.loads(path.read_text(encoding="utf-8"))
    for (nb, obj), rows in (audit.suppressed if cells is None else cells).items():
        t = by_object[(nb, obj)]
        entries += [{"notebook": nb, "check": t["check"], "object": obj, "labels": t["rows"][r]["labels"]}
                    for r in rows]
    path.write_text(json.dumps(entries, default=str), encoding="utf-8")
    return path


def register_numbers(source: str, numbers: Any, *, notebook: str | None = None) -> None:
    """Register published numbers (headline JSON, narrative text) so the output audit knows them.

    ``numbers`` may be nested mappings/lists; every int/float leaf is registered.
    """
    reg = _registry()
    if reg is None:
        return
    leaves: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        else:
            v = _plain(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                leaves.append(float(v))

    walk(numbers)
    if not leaves:
        return
    folder = reg / "numbers"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{notebook or _notebook()}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"source": source, "values": leaves}) + "\n")


def register_counts(counts: Iterable[Any], min_units: int) -> None:
    """Register counts that running text prints exactly (those of at least ``min_units``; smaller ones
    read "fewer than ..." and a zero reveals no unit), so the audit of rendered numbers knows them.

    Examples
    --------
    >>> register_counts([3, 470, None], 10)  # outside a run: nothing is written
    """
    shown = []
    for n in counts:
        v = _plain(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= min_units:
            shown.append(int(round(v)))
    if shown:
        register_numbers("text", shown)


def text(template: str, **numbers: Any) -> str:
    """Narrative text whose numbers are registered: ``text("{n} firms", n=fmt_count(x))``.

    Numbers passed as values (not pre-formatted strings) are formatted with
    :func:`reach.report.fmt_number` and registered.

    Examples
    --------
    >>> text("{n} firms used {p}", n=120, p="TINL")
    '120 firms used TINL'
    """
    from reach.report import fmt_number

    out: dict[str, Any] = {}
    for k, v in numbers.items():
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            digits = 0 if float(v).is_integer() else 3
            out[k] = fmt_number(v, digits).replace(",", "") if digits == 0 else fmt_number(v, digits)
            register_numbers("text", [v])
        else:
            out[k] = v
    return template.format(**out)


def load_registry(registry: str | Path, members: bool = True,
                  notebooks: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], list[float]]:
    """Registered tables (meta with ``members`` arrays when kept) and registered loose numbers.

    ``members=False`` gives each table's ``members_path`` instead: the audit reads
    them one table at a time (at register scale they hold every firm of every cell).
    ``notebooks``: only the entries of these executed notebooks (by file name, so that entries
    other notebooks are still writing are never opened).
    """
    registry = Path(registry)
    only = None if notebooks is None else set(notebooks)
    tables = []
    for path in sorted((registry / "tables").glob("*.json")):
        if only is not None and path.stem.split("__", 1)[0] not in only:
            continue
        meta = json.loads(path.read_text(encoding="utf-8"))
        npz = path.with_suffix(".npz")
        if npz.is_file():
            if members:
                with np.load(npz) as z:
                    meta["members"] = {k: z[k] for k in z.files}
            else:
                meta["members_path"] = str(npz)
        tables.append(meta)
    numbers: list[float] = []
    for path in sorted((registry / "numbers").glob("*.jsonl")):
        if only is not None and path.stem not in only:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                numbers.extend(json.loads(line)["values"])
    return tables, numbers


def registered_numbers(tables: Sequence[Mapping[str, Any]], numbers: Iterable[float]) -> set[float]:
    """Every published number of the run: table cells (values and counts), labels, headline/narrative numbers."""
    out = {float(v) for v in numbers if v is not None}
    for t in tables:
        for row in t["rows"]:
            for v in row["published"].values():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.add(float(v))
            for v in row["labels"].values():
                try:
                    out.add(float(v))
                except (TypeError, ValueError):
                    pass
    return {v for v in out if math.isfinite(v)}


# =========================================================================== stage shape
@dataclass(frozen=True)
class StageOutput:
    """What a stage offers for publishing: checked tables, figures, headline numbers, narrative.

    Attributes
    ----------
    tables : mapping name -> Checked
    figures : mapping name -> (figure, Checked or list of Checked)
        Figures drawn from the ``suppress()`` copies of their tables.
    headline : mapping
        Numbers for ``headline/<section>.json``; each must also be a published cell.
    narrative : tuple of str
        Sentences built with :func:`text` or the ``fmt_*`` formatters (registered).

    Examples
    --------
    >>> StageOutput(headline={"n": 12}).summary()
    'StageOutput: 0 tables, 0 figures, 1 headline numbers, 0 sentences'
    """

    tables: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    headline: Mapping[str, Any] = field(default_factory=dict)
    narrative: tuple[str, ...] = ()

    def __post_init__(self):
        from reach._display import Headline

        # read-only, and ``stage.headline()`` as on every result
        object.__setattr__(self, "headline", Headline(self.headline))

    def publish(self, log: Any, section: str | None = None) -> dict[str, Any]:
        """Export everything through ``log`` (:class:`reach.disclosure.OutputLog`); returns the published tables."""
        from reach.report import record_headline

        out = {name: log.table(chk, name) for name, chk in self.tables.items()}
        for name, (fig, checks) in self.figures.items():
            log.figure(fig, checks, name, drawn_from_suppressed=True)
        if section and self.headline:
            record_headline(log.output_dir, section, self.headline)
        register_numbers("narrative", [])
        return out

    def tidy(self) -> pd.DataFrame:
        """One row per published object: ``kind, name``."""
        rows = [("table", n) for n in self.tables] + [("figure", n) for n in self.figures]
        rows += [("headline", n) for n in self.headline] + [("narrative", str(i)) for i in range(len(self.narrative))]
        return pd.DataFrame(rows, columns=["kind", "name"])

    def summary(self) -> str:
        return (f"StageOutput: {len(self.tables)} tables, {len(self.figures)} figures, "
                f"{len(self.headline)} headline numbers, {len(self.narrative)} sentences")

    def __repr__(self) -> str:
        return self.summary()


# =========================================================================== run-level differencing audit
@dataclass(frozen=True)
class Audit:
    """Result of the run-level differencing audit.

    Attributes
    ----------
    constraints : DataFrame
        One row per published constraint used: ``source, kind, object, cell``.
    targets : DataFrame
        One row per protected cell: ``object, cell, set, safe_before, safe_after, action``
        (never its value or bounds: those would themselves be disclosive).
    suppressed : dict
        ``{(notebook, object): [row positions]}`` newly suppressed by the audit.
    """

    constraints: pd.DataFrame
    targets: pd.DataFrame
    suppressed: Mapping[tuple[str, str], list[int]]
    #: the cells this pass's audit suppressed (``suppressed`` also holds earlier passes')
    this_pass: Mapping[tuple[str, str], list[int]] = field(default_factory=dict)

    @property
    def n_unprotected(self) -> int:
        return int((~self.targets["safe_after"]).sum()) if len(self.targets) else 0

    def tidy(self) -> pd.DataFrame:
        return self.targets.copy()

    def summary(self) -> str:
        # ``suppressed`` holds earlier passes' cells too: a last audit that adds nothing must not read as if it did
        n_all = sum(len(v) for v in self.suppressed.values())
        n_new = sum(len(v) for v in self.this_pass.values())
        return (f"Run-level differencing audit: {len(self.constraints)} published constraints, "
                f"{len(self.targets)} protected cells, {n_all} cells suppressed by the audit "
                f"({n_new} new in this pass), {self.n_unprotected} cells still recoverable")

    def __repr__(self) -> str:
        return self.summary()


def _label(labels: Mapping[str, Any], i: int) -> str:
    return "|".join(f"{k}={v}" for k, v in labels.items()) or f"row={i}"


def _safe(lo: float, hi: float, n_true: float, min_units: int) -> bool:
    """Protection interval: the attacker cannot show the cell is below ``min_units`` nor pin its lower end."""
    if math.isnan(lo) or math.isnan(hi):
        return False
    return hi >= min_units - 1e-6 and (n_true <= 0 or lo <= n_true - 1 + 1e-6)


@dataclass
class _System:
    """Published cells of a run as linear constraints on the sizes of firm atoms (the interval attack).

    ``M`` is the sets x atoms incidence (a set is a cell's firms or a share cell's
    numerator); ``A x (=|<=) b`` holds every published constraint, equalities in
    the first ``n_eq`` rows. ``owners`` (rows x sets) marks the cells publishing
    each row (one constraint published by several cells, e.g. the same
    population's size in two tables, is one row): a row stays while any of its
    cells is published.
    """

    set_meta: list[tuple[int, int, str]]
    M: Any
    true_size: np.ndarray
    index: dict[tuple[int, int, str], int]
    A: Any
    b: np.ndarray
    n_eq: int
    owners: Any
    srcs: list[tuple[int, int, str]]
    x_true: np.ndarray
    _components: dict[frozenset[int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    n_lp: int = 0
    _pool: np.ndarray | None = None
    _slice: tuple[Any, ...] | None = None
    _seen: list[tuple[frozenset[int], np.ndarray]] = field(default_factory=list)

    def feasible(self, removed: frozenset[int]) -> np.ndarray:
        """A point (atom sizes) satisfying every constraint active with ``removed`` suppressed.

        The true sizes satisfy every published constraint; a programme's optimum with the
        constraints of ``R`` removed satisfies those of any ``R' >= R`` (suppressing only
        removes constraints). The latest kept optimum with the most removals that qualifies
        is taken: after the first programmes its support is a few hundred atoms, not the true
        sizes' tens of thousands.
        """
        best, point = -1, self.x_true
        for r, x in self._seen:  # later optima win ties
            if len(r) >= best and r <= removed:
                best, point = len(r), x
        return point

    def remember(self, removed: frozenset[int], cols: np.ndarray, x: np.ndarray) -> None:
        """Keep an optimum on ``cols`` (a union of components under ``removed``) as a feasible point."""
        point = self.feasible(removed).copy()
        point[cols] = x
        self._seen.append((removed, point))
        del self._seen[:-200]  # the latest optima (memory: atoms x 200 floats)
        if self._pool is None:
            self._pool = np.zeros(self.A.shape[1], bool)
        self._pool[cols[x > 0]] = True

    def certified(self, c: np.ndarray, removed: frozenset[int], n_true: float, min_units: float) -> bool:
        """Whether earlier optima already prove the cell protected (no programme of its own needed).

        Every optimum kept satisfies the constraints active under its removals, hence under
        ``removed`` when those are a subset. One with ``c @ x >= min_units`` shows the
        attacker's upper end reaches ``min_units``; one with ``c @ x <= n_true - 1`` shows
        the lower end cannot be pinned: together :func:`_safe`'s verdict, as the cell's
        own two programmes would give it.
        """
        points = [x for r, x in self._seen if r <= removed]
        if not points:
            return False
        v = np.vstack(points) @ c
        return bool((v >= min_units - 1e-6).any() and (n_true <= 0 or (v <= n_true - 1 + 1e-6).any()))

    def start(self, removed: frozenset[int], cols: np.ndarray) -> np.ndarray:
        """Atoms of the first restricted programme on ``cols``: a feasible point's support and earlier optima's."""
        start = self.feasible(removed)[cols] > 0
        if self._pool is not None:
            start |= self._pool[cols]
        return start

    def active(self, removed: frozenset[int]) -> np.ndarray:
        if not removed:
            return np.ones(self.A.shape[0], bool)
        keep = np.ones(self.owners.shape[1])
        keep[list(removed)] = 0.0
        # a row no cell owns (a set size's definition) always holds
        return ((self.owners @ keep) > 0) | (self.owners.getnnz(axis=1) == 0)

    def components(self, removed: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
        """Connected components of the active constraints: label per row, label per atom."""
        if removed not in self._components:
            from scipy import sparse
            from scipy.sparse.csgraph import connected_components

            B = self.A[self.active(removed)]
            B = sparse.csr_matrix((np.ones(B.nnz), B.indices, B.indptr), shape=B.shape)
            r, k = B.shape
            G = sparse.bmat([[None, B], [B.T, None]], format="csr")
            _, lab = connected_components(G, directed=False)
            row_lab = np.full(self.A.shape[0], -1)
            row_lab[self.active(removed)] = lab[:r]
            self._components[removed] = (row_lab, lab[r:])
        return self._components[removed]

    def interval(self, c: np.ndarray, removed: frozenset[int], min_units: float
                 ) -> tuple[float, float, dict[str, np.ndarray]]:
        """The attacker's interval ``[lo, hi]`` of ``c @ x`` and the cells whose constraints bind each end.

        Only the connected component(s) of the constraints holding the cell's atoms
        enter the linear programmes (the rest cannot move it). ``binding["hi"]`` /
        ``binding["lo"]`` are the rows with a non-zero dual value in the
        programme giving that end: suppressing one of them is what can widen it.
        """
        row_lab, atom_lab = self.components(removed)
        comps = np.unique(atom_lab[np.flatnonzero(c)])
        key = (removed, comps.tobytes())
        if self._slice is None or self._slice[0] != key:
            cols = np.flatnonzero(np.isin(atom_lab, comps))
            rows = np.flatnonzero(np.isin(row_lab, comps))
            self._slice = (key, rows, cols, self.A[rows][:, cols].tocsc())
        _, rows, cols, A = self._slice
        b = self.b[rows]
        eq = rows < self.n_eq
        cc = c[cols]
        lb, ub = np.zeros(len(cols)), np.full(len(cols), np.inf)
        out: dict[str, float] = {}
        binding: dict[str, np.ndarray] = {}
        for side, sign in (("hi", -1.0), ("lo", 1.0)):  # the upper end first: below min_units already decides
            if side == "lo" and out["hi"] < min_units - 1e-6:
                out["lo"] = 0.0
                break
            self.n_lp += 1
            res = _column_lp(sign * cc, A, b, eq, lb, ub, self.start(removed, cols), time_limit=30.0)
            if res.status == 3:  # unbounded above
                out[side] = math.inf
                continue
            if res.status != 0:
                # infeasible only through float slack of rounded constraints: unprotected, so the caller
                # suppresses more (the safe side)
                out[side] = math.nan
                continue
            self.remember(removed, cols, res.x)
            out[side] = sign * res.fun
            binding[side] = rows[np.abs(res.marginals) > 1e-9]
        return out["lo"], out["hi"], binding


# HiGHS without presolve: the audit's programmes are small and sparse, and presolve took more than half of each
# solve (71 -> 31 s over the stub's 102 programmes, the same optimal values). Where an optimum has several dual
# solutions (degenerate), HiGHS may now name other binding constraints; any of them is a valid reason to suppress.
_HIGHS = {"presolve": False}


@dataclass(frozen=True)
class _LPResult:
    status: int  # scipy's linprog codes: 0 optimal, 1 limit, 2 infeasible, 3 unbounded
    fun: float
    x: np.ndarray
    marginals: np.ndarray  # per row of the programme: d fun / d b
    n_restricted: int  # restricted programmes solved


def _sparse_feasible(A: Any, b: np.ndarray, eq: np.ndarray, lb: np.ndarray, ub: np.ndarray,
                     time_limit: float) -> np.ndarray | None:
    """The support of a basic feasible point of ``A x (= | <=) b``, ``lb <= x <= ub`` (phase one), or None.

    Minimises the artificial slack of every constraint that ``x = 0`` violates, by
    :func:`_column_lp` from the artificial columns (and the columns not bounded by
    ``[0, inf)``) alone: an optimum of value zero is a feasible point on at most as
    many columns as there are constraints. None when HiGHS leaves slack above float
    tolerance (no verdict: the caller takes every column).
    """
    from scipy import sparse

    n, m = A.shape[1], A.shape[0]
    sign = np.where(eq, np.where(b < 0, -1.0, 1.0), -1.0)
    need = np.flatnonzero(eq | (b < 0))
    art = sparse.csc_matrix((sign[need], (need, np.arange(len(need)))), shape=(m, len(need)))
    A1 = sparse.hstack([A, art]).tocsc()
    free = (lb != 0) | np.isfinite(ub)
    start = np.concatenate([free, np.ones(len(need), bool)])
    res = _column_lp(np.concatenate([np.zeros(n), np.ones(len(need))]), A1, b, eq,
                     np.concatenate([lb, np.zeros(len(need))]), np.concatenate([ub, np.full(len(need), np.inf)]),
                     start, time_limit=time_limit, phase_one=False)
    if res.status != 0 or res.fun > 1e-6 * max(1.0, float(np.abs(b).max(initial=0.0))):
        return None
    return (res.x[:n] > 0) | free


def _column_lp(cost: np.ndarray, A: Any, b: np.ndarray, eq: np.ndarray, lb: np.ndarray, ub: np.ndarray,
               start: np.ndarray, time_limit: float, max_rounds: int = 100, phase_one: bool = True) -> _LPResult:
    r"""``min cost x`` s.t. ``A x (= | <=) b`` (equalities where ``eq``), ``lb <= x <= ub``, by column generation.

    The audit's programmes have a few hundred constraints and up to ~10^5 atoms
    (columns); an optimum uses at most as many atoms as there are constraints.
    HiGHS solves the programme restricted to the atoms in ``start`` (which must hold
    a feasible point's support); the restricted optimum's duals :math:`y` price
    every other atom, :math:`d_j = c_j - A_j^\top y`. Atoms with :math:`d_j < 0`
    join and the programme is solved again; when none is left, the restricted
    optimum and its duals are optimal for the whole programme (the simplex
    optimality condition), so the value and the binding constraints are those of
    the full programme. A restricted programme that is infeasible (only through
    float slack) or unbounded is settled on every atom: unbounded is then the
    whole programme's verdict too, and a restricted one that is unbounded
    already proves it.

    When ``start`` covers most atoms (the true sizes), a feasible point on few
    atoms is found first (:func:`_sparse_feasible`); after ``max_rounds`` the
    programme is settled on every atom. Atoms outside ``start`` must have bounds
    ``[0, inf)`` (priced at their lower bound).
    """
    import time

    from scipy.optimize import linprog

    A = A.tocsc()
    n = A.shape[1]
    start = np.asarray(start, bool).copy()
    if (~start).any() and ((lb[~start] != 0).any() or np.isfinite(ub[~start]).any()):
        raise ValueError("atoms outside the start set must be bounded by [0, inf)")
    if not start.any():
        start[0] = True
    if start.sum() * 2 >= n and phase_one and n >= 2000:
        # the feasible point spreads over most atoms (the true sizes, before any optimum): look for one on
        # at most as many atoms as there are constraints first, else restricting would only add rounds
        start = _sparse_feasible(A, b, eq, lb, ub, time_limit)
        if start is None or start.sum() * 2 >= n:
            start = np.ones(n, bool)
    elif start.sum() * 2 >= n:  # nearly every atom already: restricting would only add rounds
        start[:] = True
    A_eq, A_ub = A[np.flatnonzero(eq)], A[np.flatnonzero(~eq)]
    deadline = time.monotonic() + time_limit
    J = np.flatnonzero(start)
    round_ = 0
    while True:
        round_ += 1
        left = max(deadline - time.monotonic(), 1.0)
        res = linprog(cost[J], A_ub=A_ub[:, J] if A_ub.shape[0] else None, b_ub=b[~eq] if A_ub.shape[0] else None,
                      A_eq=A_eq[:, J] if A_eq.shape[0] else None, b_eq=b[eq] if A_eq.shape[0] else None,
                      bounds=np.column_stack([lb[J], ub[J]]), method="highs", options={**_HIGHS, "time_limit": left})
        if res.status not in (0, 3) and len(J) < n:
            # infeasible (a feasible point's support held only within float slack) or HiGHS's numerical
            # trouble on the restricted programme: settle it on every atom
            J = np.arange(n)
            continue
        if res.status != 0:
            return _LPResult(res.status, math.nan, np.zeros(n), np.zeros(len(b)), round_)
        y = np.zeros(len(b))
        if A_eq.shape[0]:
            y[eq] = res.eqlin.marginals
        if A_ub.shape[0]:
            y[~eq] = res.ineqlin.marginals
        d = cost - A.T @ y
        d[J] = 0.0
        enter = np.flatnonzero(d < -1e-7 * max(1.0, float(np.abs(cost).max(initial=0.0))))
        if not len(enter) or time.monotonic() > deadline:
            if len(enter):  # out of time with atoms left to price: no verdict
                return _LPResult(1, math.nan, np.zeros(n), np.zeros(len(b)), round_)
            x = np.zeros(n)
            x[J] = res.x
            return _LPResult(0, float(res.fun), x, y, round_)
        if round_ >= max_rounds:  # tailing off: settle it on every atom (no entering atom is left there)
            J = np.arange(n)
            continue
        # the most improving atoms first, as many as half the restricted programme (at least 100): fewer
        # per round tailed off over dozens of rounds at register scale, each solved from scratch
        enter = enter[np.argsort(d[enter], kind="stable")[:max(100, len(J) // 2)]]
        J = np.union1d(J, enter)


def _prove_protected(system: _System, targets: Sequence[tuple[Any, ...]], min_units: np.ndarray,
                     max_rounds: int = 20) -> np.ndarray:
    r"""Targets shown protected by programmes over many targets at once (most need no programme of their own).

    One feasible point with :math:`c_T x \ge` ``min_units`` proves the upper end of
    target :math:`T`; one with :math:`c_T x \le n_T - 1` proves its lower end.
    Maximising :math:`\sum_T z_T` with :math:`z_T \le c_T x`,
    :math:`0 \le z_T \le` ``min_units`` (and minimising :math:`\sum_T w_T` with
    :math:`w_T \ge c_T x - (n_T - 1)`, :math:`w_T \ge 0`) gives such points for
    many targets together; repeated on the targets not yet proven until a round
    proves none. The rest get their own programmes. Published constraints are
    only ever removed afterwards, so a point found here stays feasible.
    """
    from scipy import sparse

    k = len(targets)
    if not k:
        return np.zeros(0, bool)
    C_all = sparse.csr_matrix(np.vstack([t[3] for t in targets]))
    n_all = np.array([t[4] for t in targets], dtype=float)
    n_x, n_rows = C_all.shape[1], system.A.shape[0]
    eq_x = np.arange(n_rows) < system.n_eq
    proven = {"hi": np.zeros(k, bool), "lo": n_all <= 0}
    for side in ("hi", "lo"):
        for _ in range(max_rounds):
            todo = np.flatnonzero(~proven[side])
            if not len(todo):
                break
            C, n, m = C_all[todo], n_all[todo], len(todo)
            I = sparse.identity(m, format="csr")
            if side == "hi":  # z - C x <= 0, maximise sum z, 0 <= z <= min_units
                extra, b_t, cost_t, ub_t = sparse.hstack([-C, I]), np.zeros(m), -np.ones(m), min_units[todo]
            else:  # C x - w <= n - 1, minimise sum w, w >= 0
                extra, b_t, cost_t, ub_t = sparse.hstack([C, -I]), n - 1, np.ones(m), np.full(m, np.inf)
            A = sparse.vstack([sparse.hstack([system.A, sparse.csr_matrix((n_rows, m))]), extra]).tocsc()
            start = np.concatenate([system.start(frozenset(), np.arange(n_x)), np.ones(m, bool)])
            system.n_lp += 1
            res = _column_lp(np.concatenate([np.zeros(n_x), cost_t]), A, np.concatenate([system.b, b_t]),
                             np.concatenate([eq_x, np.zeros(m, bool)]), np.zeros(n_x + m),
                             np.concatenate([np.full(n_x, np.inf), ub_t.astype(float)]), start, time_limit=120.0)
            if res.status != 0:
                break
            system.remember(frozenset(), np.arange(n_x), res.x[:n_x])
            v = res.x[n_x:]
            done = v >= min_units[todo] - 1e-6 if side == "hi" else v <= 1e-6
            if not done.any():
                break
            proven[side][todo[done]] = True
    return proven["hi"] & proven["lo"]


def _members(t: Mapping[str, Any]) -> Mapping[str, np.ndarray] | None:
    """A registered table's unit memberships: in memory, or read from its ``.npz`` one table at a time."""
    if t.get("members") is not None:
        return t["members"]
    path = t.get("members_path")
    if not path:
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _table_sets(t: Mapping[str, Any], m: Mapping[str, np.ndarray]):
    """Per row of a table: its units and, for a share of firms, the units with the trait (else None)."""
    cell, unit, trait = np.asarray(m["cell"]), np.asarray(m["unit"]), np.asarray(m["trait"]).astype(bool)
    order = np.argsort(cell, kind="stable")
    cell, unit, trait = cell[order], unit[order], trait[order]
    starts = np.searchsorted(cell, np.arange(len(t["rows"]) + 1))
    # a share over rows (firm-activity pairs), not over firms, says nothing linear about firm counts:
    # only its firm count enters
    firm_share = t["stat"] == "share" and not (np.asarray(m.get("rows", [1])) > 1).any()
    for r in range(len(t["rows"])):
        u = unit[starts[r]:starts[r + 1]]
        yield r, u, (u[trait[starts[r]:starts[r + 1]]] if firm_share else None)


def _lp_tables(tables: Sequence[Mapping[str, Any]], lp_stats: Sequence[str]) -> list[int]:
    """The tables whose cells enter the interval attack: a statistic in ``lp_stats``, with unit membership."""
    return [ti for ti, t in enumerate(tables) if t["stat"] in lp_stats and
            (t.get("members") is not None or t.get("members_path"))]


def _build_system(tables: Sequence[Mapping[str, Any]], sup_now: set[tuple[int, int]], lp_stats: Sequence[str],
                  max_set_units: int) -> _System | None:
    """Sets (cells, numerators) with unit membership -> atoms -> the published constraints on them.

    Two passes over the tables, one table's memberships in memory at a time. The
    first finds the *small universe*: the firms of every set of at most
    ``max_set_units`` firms and of every protected complement. The second keeps
    each set's firms inside it; a larger set's firms outside it are known to the
    attacker (their number moves to the right-hand sides). That attacker is
    stronger, never weaker, than one who must also bound those firms: a cell
    protected against it is protected. Large populations (a whole comparison
    group) still enter, without splitting millions of firms into atoms.
    """
    from scipy import sparse

    used = _lp_tables(tables, lp_stats)
    set_meta: list[tuple[int, int, str]] = []  # (table index, row, "cell" | "num")
    true_size: list[float] = []
    small_parts: list[np.ndarray] = []
    for ti in used:
        t = tables[ti]
        for r, u, num in _table_sets(t, _members(t)):
            set_meta.append((ti, r, "cell"))
            true_size.append(float(len(u)))
            if len(u) <= max_set_units:
                small_parts.append(u)
            if num is None:
                continue
            set_meta.append((ti, r, "num"))
            true_size.append(float(len(num)))
            if len(num) <= max_set_units:
                small_parts.append(num)
            if t["rows"][r]["suppressed"] and len(u) - len(num) < t["min_units"]:
                small_parts.append(np.setdiff1d(u, num))  # a protected complement
    if not set_meta:
        return None
    universe = np.unique(np.concatenate(small_parts)) if small_parts else np.zeros(0, np.uint64)
    # a hash table of the universe: at register scale a comparison group's million firms are looked up
    # in it per set, and binary search (random access into a large array) took most of the audit's set-up
    where = pd.Index(universe)
    set_units: list[np.ndarray] = []
    for ti in used:
        t = tables[ti]
        for r, u, num in _table_sets(t, _members(t)):
            for part in (u, num):
                if part is None:
                    continue
                pos = where.get_indexer(part)
                set_units.append(pos[pos >= 0])
    true_size_a = np.array(true_size)
    outside = true_size_a - np.array([len(u) for u in set_units], dtype=float)
    index = {(ti, r, k): s for s, (ti, r, k) in enumerate(set_meta)}

    # atom of a unit: the sets holding it, identified by a sum of random 64-bit keys of those sets
    # (vectorised; two different signatures collide with probability ~2^-64 per pair)
    sid = np.repeat(np.arange(len(set_units)), [len(u) for u in set_units])
    inv = np.concatenate(set_units) if set_units else np.zeros(0, np.int64)
    key = np.random.default_rng(0).integers(1, 2**63, size=len(set_units), dtype=np.uint64)
    order = np.argsort(inv, kind="stable")
    inv_s, sid_s = inv[order], sid[order]
    starts = np.flatnonzero(np.r_[True, inv_s[1:] != inv_s[:-1]]) if len(inv_s) else np.zeros(0, np.int64)
    sigs: list[np.ndarray] = []
    if len(starts):
        with np.errstate(over="ignore"):
            h = np.add.reduceat(key[sid_s], starts)
        _, first, n_real = np.unique(h, return_index=True, return_counts=True)
        ends = np.append(starts[1:], len(sid_s))
        sigs = [np.unique(sid_s[starts[u]:ends[u]]) for u in first]
    else:
        n_real = np.zeros(0, np.int64)
    sig_of: dict[bytes, int] = {g.tobytes(): a for a, g in enumerate(sigs)}
    # An empty numerator or complement has no firm, hence no atom; the attacker does not know it is
    # empty. Phantom atoms: every observed signature with the trait switched off (out of every
    # numerator) and on (into the numerator of every share cell holding it).
    num_of = {s: index[(ti, r, "num")] for s, (ti, r, k) in enumerate(set_meta)
              if k == "cell" and (ti, r, "num") in index}
    is_num = np.array([k == "num" for _, _, k in set_meta])
    for sig in list(sigs):
        off = sig[~is_num[sig]]
        on = np.unique(np.concatenate([off, np.array([num_of[c] for c in off if c in num_of], dtype=off.dtype)]))
        for variant in (off, on):
            vkey = variant.tobytes()
            if vkey not in sig_of:
                sig_of[vkey] = len(sigs)
                sigs.append(variant)
    rows_i = np.concatenate(sigs) if sigs else np.zeros(0, np.int64)
    cols_i = np.repeat(np.arange(len(sigs)), [len(g) for g in sigs])
    M = sparse.csr_matrix((np.ones(len(rows_i)), (rows_i, cols_i)), shape=(len(set_units), max(len(sigs), 1)))

    # A set whose atom sum enters several constraints (a rounded count's two bounds, a share's numerator and
    # denominator in two bounds, one cohort's firms as the denominator of every market's share) gets a size variable
    # sigma_S = sum of its atoms, defined once; its constraints then hold one non-zero for it instead of
    # every atom of the set (the same programme: substitute the definition back). At register scale
    # the denominators' atoms were most of the non-zeros, and the simplex's work grows with them.
    def published_size(ti: int, r: int) -> tuple[Any, float]:
        t = tables[ti]
        pub = t["rows"][r]["published"]
        n = pub.get("n_units")
        if n is None and t["stat"] == "count":
            n = pub.get("value")
        return n, (t["count_base"] / 2 if t["count_base"] > 1 else 0.0)

    Mr = M.tocsr()
    sigma_of: dict[bytes, int] = {}
    sigma_set: list[int] = []
    for s, (ti, r, k) in enumerate(set_meta):
        if k != "cell" or (ti, r) in sup_now:
            continue
        n, half = published_size(ti, r)
        share = (ti, r, "num") in index and tables[ti]["rows"][r]["published"].get("value") is not None
        exact = n is not None and not half
        # the cell's size in a rounded count's two bounds or a share's two bounds (an exact size bounds the
        # numerator alone); a share's numerator always in two bounds
        sizes = ([s] if (n is not None and half) or (share and not exact) else []) + \
            ([index[(ti, r, "num")]] if share else [])
        for s_ in sizes:
            content = Mr.indices[Mr.indptr[s_]:Mr.indptr[s_ + 1]].tobytes()
            if content not in sigma_of:
                sigma_of[content] = len(sigma_set)
                sigma_set.append(s_)
    n_atoms, n_sig = M.shape[1], len(sigma_set)
    M = sparse.hstack([Mr, sparse.csr_matrix((M.shape[0], n_sig))]).tocsr()

    def size_of(s: int) -> Any:
        j = sigma_of.get(Mr.indices[Mr.indptr[s]:Mr.indptr[s + 1]].tobytes())
        if j is None:
            return M[s]
        return sparse.csr_matrix(([1.0], ([0], [n_atoms + j])), shape=(1, M.shape[1]))

    # every published constraint once, owned by the cell that publishes it (a size's definition by none: it
    # is no published number and always holds); firms outside the small universe enter the right-hand side
    # at their true number
    eq_rows = [M[s] - size_of(s) for s in sigma_set]
    eq_b, eq_own = [0.0] * n_sig, [-1] * n_sig
    ub_rows, ub_b, ub_own, srcs = [], [], [], []
    for s, (ti, r, k) in enumerate(set_meta):
        if k != "cell" or (ti, r) in sup_now:
            continue
        t = tables[ti]
        pub = t["rows"][r]["published"]
        n, half = published_size(ti, r)
        if n is not None:
            size = size_of(s)
            if half:
                ub_rows += [size, -size]
                ub_b += [n + half - outside[s], -(n - half - outside[s])]
                ub_own += [s, s]
            else:
                eq_rows.append(size)
                eq_b.append(float(n) - outside[s])
                eq_own.append(s)
            srcs.append((ti, r, "count"))
        p_ = pub.get("value")
        if (ti, r, "num") in index and p_ is not None:
            h = (t["share_step"] or 0.0) / 2 + 1e-9
            ns = index[(ti, r, "num")]
            num = size_of(ns)
            if n is not None and not half:
                # with the cell's size published exactly the share bounds the numerator alone: the same
                # constraint (add the size's equality), on the numerator's atoms only (fewer non-zeros)
                ub_rows += [num, -num]
                ub_b += [(p_ + h) * float(n) - outside[ns], -((p_ - h) * float(n) - outside[ns])]
            else:
                size = size_of(s)
                ub_rows += [num - (p_ + h) * size, (p_ - h) * size - num]
                ub_b += [(p_ + h) * outside[s] - outside[ns], outside[ns] - (p_ - h) * outside[s]]
            ub_own += [s, s]
            srcs.append((ti, r, "share"))
    rows = eq_rows + ub_rows
    A = sparse.vstack(rows).tocsr() if rows else sparse.csr_matrix((0, M.shape[1]))
    own = np.array(eq_own + ub_own, dtype=np.int64)
    owned = np.flatnonzero(own >= 0)
    owners = sparse.csr_matrix((np.ones(len(owned)), (owned, own[owned])), shape=(len(own), len(set_meta)))
    # the true atom sizes (phantoms hold no firm) and set sizes: a feasible point of every programme
    x_true = np.zeros(M.shape[1])
    x_true[:len(n_real)] = n_real
    x_true[n_atoms:] = Mr[sigma_set] @ x_true[:n_atoms] if n_sig else 0.0
    system = _System(set_meta, M, true_size_a, index, A, np.array(eq_b + ub_b, dtype=float), len(eq_rows),
                     owners, srcs, x_true)
    return _merge_duplicate_rows(system)


def _merge_duplicate_rows(system: _System) -> _System:
    """One row per distinct constraint, owned by every cell that publishes it (fewer non-zeros per programme)."""
    from scipy import sparse

    A = system.A.tocsr()
    A.sort_indices()
    first: dict[tuple[bytes, bytes, float, bool], int] = {}
    target = np.empty(A.shape[0], dtype=np.int64)
    for i in range(A.shape[0]):
        lo, hi = A.indptr[i], A.indptr[i + 1]
        key = (A.indices[lo:hi].tobytes(), np.round(A.data[lo:hi], 12).tobytes(), round(float(system.b[i]), 9),
               i < system.n_eq)
        target[i] = first.setdefault(key, i)
    kept = np.unique(target)
    if len(kept) == A.shape[0]:
        return system
    pos = np.searchsorted(kept, target)
    merge = sparse.csr_matrix((np.ones(len(target)), (pos, np.arange(len(target)))), shape=(len(kept), len(target)))
    owners = ((merge @ system.owners) > 0).astype(float).tocsr()
    return replace(system, A=A[kept], b=system.b[kept], n_eq=int((kept < system.n_eq).sum()), owners=owners,
                   _components={})


def _protected_cells(system: _System, tables: Sequence[Mapping[str, Any]]
                     ) -> list[tuple[int, int, str, np.ndarray, float]]:
    """Suppressed cells below ``min_units`` and the small numerators/complements of suppressed shares."""
    out = []
    M, size = system.M, system.true_size
    for s, (ti, r, k) in enumerate(system.set_meta):
        t = tables[ti]
        if not t["rows"][r]["suppressed"] or k != "cell":
            continue
        mu = t["min_units"]
        if size[s] < mu:
            out.append((ti, r, "cell", M[s].toarray().ravel(), size[s]))
        if (ti, r, "num") in system.index:
            ns = system.index[(ti, r, "num")]
            if size[ns] < mu:
                out.append((ti, r, "numerator", M[ns].toarray().ravel(), size[ns]))
            if size[s] - size[ns] < mu:
                out.append((ti, r, "complement", (M[s] - M[ns]).toarray().ravel(), size[s] - size[ns]))
    # the smallest cells first: they are the easiest to recover
    return sorted(out, key=lambda x: x[4])


def _interval_attack(tables: Sequence[Mapping[str, Any]], system: _System, sup_now: set[tuple[int, int]],
                     suppressed: dict[tuple[str, str], list[int]], target_rows: list[dict[str, Any]],
                     max_rounds: int, lp_budget: int, tries: int) -> None:
    """Protect every protected cell against the interval attack, suppressing binding cells as needed."""
    published = np.array([k == "cell" and (ti, r) not in sup_now for ti, r, k in system.set_meta])
    removed: frozenset[int] = frozenset()
    targets = _protected_cells(system, tables)
    proven = _prove_protected(system, targets, np.array([tables[t[0]]["min_units"] for t in targets], dtype=float))
    for (ti, r, what, c, n), done in zip(targets, proven):
        t = tables[ti]
        mu = t["min_units"]
        row = {"object": t["object"], "cell": _label(t["rows"][r]["labels"], r), "set": what}
        if done or system.certified(c, removed, n, mu):
            target_rows.append({**row, "attack": "interval LP over published cells", "safe_before": True,
                                "safe_after": True, "action": ""})
            continue
        if system.n_lp >= lp_budget:
            target_rows.append({**row, "attack": "interval LP not run (LP budget)", "safe_before": False,
                                "safe_after": False, "action": "review by the output checker"})
            continue
        lo, hi, binding = system.interval(c, removed, mu)
        before = safe = _safe(lo, hi, n, mu)
        actions: list[str] = []
        while not safe and len(actions) < max_rounds and system.n_lp < lp_budget:
            # the constraints that pin the failing end: only dropping one of them can widen it; dropping a
            # constraint means suppressing every published cell that publishes it
            side = "hi" if not hi >= mu - 1e-6 else "lo"
            groups = {frozenset(g) for g in (np.flatnonzero(published & (system.owners[i].toarray().ravel() > 0))
                                             for i in binding.get(side, ())) if len(g)}
            if not groups:  # no dual to go by (an infeasible programme): every overlapping cell alone
                groups = {frozenset([s]) for s in np.flatnonzero((np.asarray(system.M @ c).ravel() > 0) & published)}
            if not groups:
                break
            cand = sorted(groups, key=lambda g: (sum(system.true_size[s] for s in g), sorted(g)))
            chosen, found = cand[0], None
            for g in cand[:tries]:  # a single suppression that protects the cell, the smallest first
                if system.n_lp >= lp_budget:
                    break
                trial = system.interval(c, removed | g, mu)
                if _safe(trial[0], trial[1], n, mu):
                    chosen, found = g, trial
                    break
            removed = removed | chosen
            for s_ in sorted(chosen):
                tj, rr, _ = system.set_meta[s_]
                sup_now.add((tj, rr))
                published[s_] = False
                suppressed.setdefault((tables[tj]["notebook"], tables[tj]["object"]), []).append(rr)
                actions.append(f"suppressed {tables[tj]['object']}:{_label(tables[tj]['rows'][rr]['labels'], rr)}")
            lo, hi, binding = found if found is not None else system.interval(c, removed, mu)
            safe = _safe(lo, hi, n, mu)
        target_rows.append({**row, "attack": "interval LP over published cells", "safe_before": before,
                            "safe_after": safe, "action": "; ".join(actions)})


def _line_total_attack(tables: Sequence[Mapping[str, Any]], sup_now: set[tuple[int, int]],
                       suppressed: dict[tuple[str, str], list[int]], cons_rows: list[dict[str, Any]],
                       target_rows: list[dict[str, Any]], in_lp: Sequence[int]) -> None:
    """A line with one suppressed cell whose total is published without membership: suppress a second cell.

    Every suppressed cell is protected, not only those below ``min_units``: a cell the interval
    attack suppressed to protect a small cell elsewhere (10 or more firms itself) given back by
    subtraction gives that small cell back too. Repeated until no line has one suppressed cell
    left, since a cell suppressed here may be the only suppressed cell of another line.
    The totals are the counts of the tables outside the interval attack (``in_lp``: those in it,
    whose cells the linear programmes already hold with their firms, not just their number).
    """
    published_counts: set[float] = set()
    skip = set(in_lp)
    for ti, t in enumerate(tables):
        if ti in skip:
            continue
        for row in t["rows"]:
            for col, v in row["published"].items():
                if col in t["count_columns"] and isinstance(v, (int, float)) and v is not None:
                    published_counts.add(float(v))
    while _line_total_pass(tables, sup_now, suppressed, cons_rows, target_rows, published_counts):
        pass


def _line_total_pass(tables: Sequence[Mapping[str, Any]], sup_now: set[tuple[int, int]],
                     suppressed: dict[tuple[str, str], list[int]], cons_rows: list[dict[str, Any]],
                     target_rows: list[dict[str, Any]], published_counts: set[float]) -> bool:
    """One sweep of :func:`_line_total_attack` over every line; whether it suppressed anything."""
    changed = False
    for ti, t in enumerate(tables):
        if t["kind"] != "table" or not t["by"] or t["stat"] != "count":
            continue
        rows = t["rows"]
        for col in t["by"]:
            others = [c for c in t["by"] if c != col]
            lines: dict[str, list[int]] = {}
            for r, row in enumerate(rows):
                if row["labels"].get(col) == "Total":
                    continue
                lines.setdefault("\x1f".join(str(row["labels"].get(c)) for c in others), []).append(r)
            for key, members in lines.items():
                unknown = [r for r in members if (ti, r) in sup_now]
                if len(unknown) != 1 or len(members) < 2:
                    continue
                r0 = unknown[0]
                if rows[r0]["n_true"] is None:
                    continue
                total = sum(float(rows[r]["n_true"] or 0) for r in members)
                if total not in published_counts:
                    continue
                known = [r for r in members if (ti, r) not in sup_now]
                cheapest = min(known, key=lambda r: (rows[r]["n_true"] or 0, r))
                sup_now.add((ti, cheapest))
                suppressed.setdefault((t["notebook"], t["object"]), []).append(cheapest)
                cons_rows.append({"source": "published total elsewhere", "kind": "line total", "object": t["object"],
                                  "cell": f"line {col} at {key.replace(chr(31), '|') or 'all'}"})
                target_rows.append({"object": t["object"], "cell": _label(rows[r0]["labels"], r0), "set": "cell",
                                    "attack": "line total published elsewhere", "safe_before": False,
                                    "safe_after": True,
                                    "action": f"suppressed {t['object']}:{_label(rows[cheapest]['labels'], cheapest)}"})
                changed = True
    return changed


def audit_cells(tables: Sequence[Mapping[str, Any]], *, max_rounds: int = 25,
                lp_stats: Sequence[str] = ("count", "share"), lp_budget: int = 20_000,
                max_set_units: int = 2000, tries: int = 2) -> Audit:
    r"""Audit all registered cells of a run together against differencing; suppress more where needed.

    Parameters
    ----------
    tables : sequence of dict
        From :func:`load_registry` (each with ``rows`` and, for ``check_table``
        tables, ``members``).
    max_rounds : int
        Most extra suppressions per protected cell.
    lp_stats : sequence of str
        Statistics whose tables enter the interval attack (frequency tables by
        default; the unit counts of magnitude tables enter the line-total attack).
    lp_budget : int
        Most linear programmes solved (a count, not seconds: two runs give the same
        result); protected cells not reached within it are listed as ``not
        audited`` and count as unprotected (the output goes to review).
    max_set_units : int
        Firms that are only in cells of more units (and in no protected set) are
        known to the attacker at their true numbers: large populations enter the
        attack without splitting millions of firms into atoms (a stronger
        attacker, so a protected cell stays protected; it may suppress more).
    tries : int
        Binding cells tried one by one before the smallest binding cell is
        suppressed (a single suppression that protects the cell is preferred).

    Returns
    -------
    Audit
        ``suppressed`` lists the extra cells to blank; the caller rewrites the files.

    Notes
    -----
    Every published cell with unit membership is a set :math:`S` of firms.
    The firms split into *atoms* (firms in exactly the same published sets);
    :math:`x_a \ge 0` is the size of atom :math:`a`. Published counts give
    :math:`\sum_{a \subseteq S} x_a = n_S` (within :math:`\pm b/2` for counts
    rounded to base :math:`b`); a published share :math:`p` of :math:`S` with
    numerator set :math:`N` gives :math:`(p - h) n_S \le n_N \le (p + h) n_S`
    with :math:`h` half the rounding step (a share over rows with several
    rows per firm, e.g. firm-activity pairs, is no share of firms: only its
    firm count enters). Protected cells are the suppressed
    cells with fewer than ``min_units`` firms and the numerators/complements
    below ``min_units`` of suppressed shares. For each, two linear programmes
    (HiGHS, on the connected component of the constraints holding the cell)
    give the attacker's interval :math:`[l, u]`; the cell is protected iff
    :math:`u \ge` ``min_units`` and :math:`l \le n - 1` (``n`` its true size).

    How the programmes are solved does not change what they give. A set whose
    size enters several constraints (a share's numerator and denominator, a
    rounded count's two bounds) has a size variable defined once. Each
    programme is solved by column generation: HiGHS on the atoms of a feasible
    point's support and earlier optima, the other atoms priced with its duals
    until none improves (then value and duals are the whole programme's). A
    cell that earlier optima, all feasible under the current suppressions,
    already show protected needs no programme of its own. At two million firms
    this took the audit of notebooks 01-03 from ~8 min to under a minute.

    Otherwise the audit suppresses a published cell whose constraint *binds*
    the failing end (a non-zero dual value in that programme: only removing
    such a constraint can widen the interval, as in tau-ARGUS's LP-based
    secondary suppression), preferring one whose removal alone protects the
    cell, else the binding cell with the fewest firms, and repeats. Removing a
    constraint only widens every interval, so cells protected earlier stay
    protected.

    A second attack covers totals published without unit membership
    (estimates tables' ``n_treated``/``n_control``, the unit counts of tables
    outside the programmes): a line of a count table (cells varying along one
    by-column) with one suppressed cell, small or suppressed to protect another,
    whose true line total equals such a count anywhere in the run gives that
    cell back by subtraction; the cheapest other cell of the line is suppressed,
    until no such line is left.
    """
    suppressed: dict[tuple[str, str], list[int]] = {}
    sup_now = {(ti, r) for ti, t in enumerate(tables) for r, row in enumerate(t["rows"]) if row["suppressed"]}
    cons_rows: list[dict[str, Any]] = []
    target_rows: list[dict[str, Any]] = []
    system = _build_system(tables, sup_now, lp_stats, max_set_units)
    if system is not None:
        for ti, r, k in system.srcs:
            cons_rows.append({"source": "published cell", "kind": k, "object": tables[ti]["object"],
                              "cell": _label(tables[ti]["rows"][r]["labels"], r)})
        _interval_attack(tables, system, sup_now, suppressed, target_rows, max_rounds, lp_budget, tries)
    _line_total_attack(tables, sup_now, suppressed, cons_rows, target_rows,
                       _lp_tables(tables, lp_stats) if system is not None else ())
    cons = pd.DataFrame(cons_rows, columns=["source", "kind", "object", "cell"])
    targ = pd.DataFrame(target_rows, columns=["object", "cell", "set", "attack", "safe_before", "safe_after", "action"])
    out = {k: sorted(set(v)) for k, v in suppressed.items()}
    return Audit(cons, targ, out, out)


def _apply_suppression(output_dir: Path, tables: Sequence[Mapping[str, Any]], audit: Audit) -> list[str]:
    """Blank the newly suppressed cells in the written tables and update their report rows; returns changed checks."""
    changed: list[str] = []
    blanked = []
    for t in tables:
        rows = audit.suppressed.get((t["notebook"], t["object"]))
        if not rows or not t["file"]:
            continue
        path = output_dir / t["file"]
        if path.is_file():
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            for col in t["value_columns"] + t["count_columns"]:
                if col in df.columns:
                    df.loc[rows, col] = ""
            df.to_csv(path, index=False, lineterminator="\n")
        for r in rows:
            t["rows"][r]["suppressed"] = True
            t["rows"][r]["published"] = {k: None for k in t["rows"][r]["published"]}
        changed.append(t["check"])
        blanked.append((t, rows))
    report_path = output_dir / "disclosure_report.csv"
    if not report_path.is_file():
        return changed
    from reach.disclosure import _file_lock

    with _file_lock(report_path):  # notebooks still running (reach run --jobs) add rows to the same report
        _report_suppression(output_dir, report_path, blanked, changed)
    return changed


def _report_suppression(output_dir: Path, report_path: Path, blanked, changed: list[str]) -> None:
    """The report rows of the tables the audit blanked cells in, and the figures drawn from them withdrawn."""
    rep = pd.read_csv(report_path, dtype=str, keep_default_na=False)
    for t, rows in blanked:
        sel = (rep["notebook"] == t["notebook"]) & (rep["object"] == t["object"]) & (rep["kind"] == t["kind"])
        for i in rep.index[sel]:
            n2 = int(rep.at[i, "n_suppressed_secondary"] or 0) + len(rows)
            rep.at[i, "n_suppressed_secondary"] = str(n2)
            if rep.at[i, "verdict"] == "ok":
                rep.at[i, "verdict"] = "suppressed"
            labels = "; ".join(f"{_label(t['rows'][r]['labels'], r)} [run audit]" for r in rows)
            rep.at[i, "suppressed_cells"] = "; ".join(s for s in (rep.at[i, "suppressed_cells"], labels) if s)
            note = f"run-level audit: {len(rows)} more cell(s) suppressed against differencing across tables"
            rep.at[i, "reason"] = "; ".join(s for s in (rep.at[i, "reason"], note) if s)
    # figures drawn from a table the audit changed show cells that are now suppressed: withdraw them
    for i in rep.index[rep["kind"] == "figure"]:
        checks = set(rep.at[i, "check"].split(";"))
        if checks & set(changed) and rep.at[i, "file"]:
            (output_dir / rep.at[i, "file"]).unlink(missing_ok=True)
            rep.at[i, "verdict"] = "not_written"
            rep.at[i, "reason"] = "; ".join(s for s in (rep.at[i, "reason"],
                                                          "withdrawn by the run-level audit: drawn from cells suppressed later") if s)
            rep.at[i, "file"] = ""
    rep.to_csv(report_path, index=False, lineterminator="\n")


# =========================================================================== audit of rendered outputs
_NUM = re.compile(r"(?<![\w.])[-+\u2212]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?"
                  r"|(?<![\w.])[-+\u2212]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
_TAGS = re.compile(r"<script.*?</script>|<style.*?</style>|data:image/[a-z]+;base64,[A-Za-z0-9+/=]+|<[^>]+>",
                   re.DOTALL | re.IGNORECASE)


def _tokens(text: str) -> list[str]:
    return _NUM.findall(text)


def _near(arr: np.ndarray, v: float, tol: float) -> bool:
    """Is any value of the sorted ``arr`` within ``tol`` of ``v``?"""
    i = np.searchsorted(arr, v - tol)
    return bool(i < len(arr) and arr[i] <= v + tol)


def _matches(token: str, known: np.ndarray) -> bool:
    """Does a registered number round to ``token`` (``94%`` also matches the share 0.94)?"""
    tok = token.replace(",", "").replace("\u2212", "-").lstrip("+").rstrip("%")
    try:
        v = float(tok)
    except ValueError:
        return True
    mant = tok.lower().split("e")[0]
    exp = int(tok.lower().split("e")[1]) if "e" in tok.lower() else 0
    digits = (len(mant.split(".")[1]) if "." in mant else 0) - exp
    tol = 0.5 * 10 ** (-digits) * (1 + 1e-9)
    for w in {v, -v, abs(v)}:
        if _near(known, w, tol) or _near(known, w / 100.0, tol / 100.0):
            return True
    return False


def _rendered_text(path: Path) -> str:
    """The text a reader sees: HTML without scripts, styles, images and tags; a notebook's outputs and markdown."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        return _html.unescape(_TAGS.sub(" ", raw))
    if path.suffix.lower() == ".ipynb":
        nb = json.loads(raw)
        parts = []
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "markdown":
                parts.append("".join(cell.get("source", "")))
            for out in cell.get("outputs", []):
                if "text" in out:
                    parts.append("".join(out["text"]))
                data = out.get("data", {})
                for mime in ("text/markdown", "text/plain", "text/html"):
                    if mime in data:
                        body = "".join(data[mime])
                        parts.append(_html.unescape(_TAGS.sub(" ", body)) if mime == "text/html" else body)
                        break
        return "\n".join(parts)
    return raw


def audit_numbers(files: Iterable[str | Path], known: Iterable[float], *, whitelist_text: str = "",
                  first_year: int = 1990, last_year: int = 2040) -> pd.DataFrame:
    """Numbers in rendered outputs that are no registered cell: ``file, n_numbers, n_unregistered, context``.

    A token (``3,831``, ``0.12``, ``94%``) is registered when a registered number
    rounds to it (a percentage also as a share). Years, and numbers occurring in
    ``whitelist_text`` (the unexecuted notebooks: text written by the authors,
    not computed from data; parameter values) are whitelisted. ``context`` shows
    where with every number masked as ``#``: the report itself discloses nothing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.md"
    >>> _ = p.write_text("We reached 1,234 firms (12.5%) in 2019; 7 were left out.")
    >>> row = audit_numbers([p], [1234, 0.125]).iloc[0]
    >>> int(row["n_numbers"]), int(row["n_unregistered"])
    (4, 1)
    """
    arr = np.array(sorted(set(float(v) for v in known)), dtype=float)
    white = {t.replace(",", "").rstrip("%") for t in _tokens(whitelist_text)}
    rows = []
    for f in files:
        path = Path(f)
        body = _rendered_text(path)
        found = 0
        bad: list[str] = []
        for m in _NUM.finditer(body):
            tok = m.group(0)
            found += 1
            plain = tok.replace(",", "").replace("\u2212", "-").lstrip("+-").rstrip("%")
            if plain in white or (plain.isdigit() and first_year <= int(plain) <= last_year):
                continue
            if _matches(tok, arr):
                continue
            ctx = body[max(0, m.start() - 40):m.end() + 20].replace("\n", " ")
            bad.append(_NUM.sub("#", ctx).strip())
        rows.append({"file": path.name, "n_numbers": found, "n_unregistered": len(bad),
                     "context": " | ".join(bad[:5])})
    return pd.DataFrame(rows, columns=["file", "n_numbers", "n_unregistered", "context"])


# =========================================================================== machine paths
def _machine_strings(roots: Mapping[str, str | Path]) -> list[tuple[str, str]]:
    """(absolute string, replacement) pairs, longest first, in POSIX, native and JSON-escaped forms."""
    pairs: list[tuple[str, str]] = []
    for path, repl in roots.items():
        p = str(path)
        if not p or len(p) < 2:
            continue
        forms = {p, p.replace("\\", "/"), p.replace("/", "\\"), p.replace("\\", "\\\\"),
                 Path(p).as_posix(), str(Path(p).resolve())}
        pairs.extend((f, repl) for f in forms if len(f) > 1)
    return sorted(set(pairs), key=lambda x: -len(x[0]))


def scrub_paths(files: Iterable[str | Path], roots: Mapping[str, str]) -> dict[str, int]:
    """Replace absolute paths (output, work, data, repository, home) in text files; returns replacements per file.

    Also drops papermill's and the kernel's machine details from executed notebooks.
    """
    pairs = _machine_strings(roots)
    done: dict[str, int] = {}
    for f in files:
        path = Path(f)
        text = path.read_text(encoding="utf-8", errors="replace")
        n = 0
        for old, new in pairs:
            k = text.count(old)
            if k:
                text = text.replace(old, new)
                n += k
        if path.suffix == ".ipynb":
            nb = json.loads(text)
            pm = nb.get("metadata", {}).get("papermill", {})
            for key in ("input_path", "output_path"):
                if key in pm and pm[key]:
                    pm[key] = Path(str(pm[key])).name
            pm.pop("environment_variables", None)
            li = nb.get("metadata", {}).get("language_info", {})
            for key in list(li):
                if key not in ("name", "version", "file_extension", "mimetype"):
                    li.pop(key)
            text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        done[path.name] = n
    return done


def scan_for_machine_paths(files: Iterable[str | Path], *, home: str | None = None, user: str | None = None,
                           host: str | None = None, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Files holding the analyst's home directory, user name (as a path component), host name or ``extra`` strings.

    Returns ``file, what, n`` (empty when clean).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "m.json").write_text('{"p": "C:\\\\Users\\\\jdoe\\\\run"}')
    >>> scan_for_machine_paths([d / "m.json"], home="/nowhere", user="jdoe")["what"].tolist()
    ['user']
    """
    home = home if home is not None else str(Path.home())
    user = user if user is not None else getpass.getuser()
    host = host if host is not None else socket.gethostname()
    pats: dict[str, re.Pattern] = {}
    if home and len(home) > 1:
        pats["home"] = re.compile(re.escape(home))
    if user and len(user) >= 2:
        pats["user"] = re.compile(rf"[/\\]{re.escape(user)}(?:[/\\]|$|\")", re.IGNORECASE)
    if host and len(host) >= 4:
        pats["host"] = re.compile(rf"(?<![\w-]){re.escape(host)}(?![\w-])", re.IGNORECASE)
    for i, s in enumerate(extra):
        if s and len(s) > 1:
            pats[f"path{i}"] = re.compile(re.escape(s))
    rows = []
    for f in files:
        text = Path(f).read_text(encoding="utf-8", errors="replace")
        for what, pat in pats.items():
            n = len(pat.findall(text))
            if n:
                rows.append({"file": Path(f).as_posix(), "what": what, "n": n})
    return pd.DataFrame(rows, columns=["file", "what", "n"])


# =========================================================================== SACRO record
_ACRO_STATUS = {"ok": "pass", "suppressed": "review", "review": "review", "not_written": "fail", "fail": "fail"}


def _acro_sdc(row: Mapping[str, str]) -> dict[str, Any]:
    """ACRO's ``sdc`` block (summary counts per check and cell lists) from a report row."""
    failed = set(filter(None, (row.get("rules_failed") or "").split(";")))
    n_sup = int(row.get("n_suppressed_primary") or 0) + int(row.get("n_suppressed_secondary") or 0)
    summary = {"suppressed": n_sup > 0, "negative": int("zero_negative" in failed),
               "missing": 0, "threshold": int("min_units" in failed or "numerator" in failed or "complement" in failed),
               "p-ratio": int("p_ratio" in failed), "nk-rule": int("dominance" in failed),
               "all-values-are-same": int("all_same" in failed or "share_0_1" in failed)}
    cells = {k: [] for k in ("negative", "missing", "threshold", "p-ratio", "nk-rule", "all-values-are-same")}
    return {"summary": summary, "cells": cells}


def write_results_json(output_dir: str | Path, report: pd.DataFrame, *, version: str = "reach") -> Path:
    """Write ``results.json`` and ``checksums/`` in the format of ACRO's ``Records.finalise(path, "json")``.

    One result per row of ``disclosure_report.csv`` (every output file has one):
    ``uid, status (pass|review|fail), type, properties, files [{name, sdc}],
    outcome, command, summary, timestamp, comments, exception``. A file whose
    reach verdict is ``suppressed`` gets ACRO status ``review`` (ACRO marks a
    table with suppressed cells "review"), ``ok`` gets ``pass``.
    """
    from importlib import metadata

    output_dir = Path(output_dir)
    results: dict[str, Any] = {}
    for i, row in enumerate(report.fillna("").to_dict("records")):
        verdict = row.get("verdict", "")
        status = _ACRO_STATUS.get(verdict, "review")
        kind = row.get("kind", "")
        acro_type = {"table": "table", "estimates": "regression", "figure": "histogram"}.get(kind, "custom")
        file = row.get("file", "")
        summary = f"{status}; {row.get('rules_failed', '')}".rstrip("; ") if row.get("rules_failed") else status
        results[f"output_{i}"] = {
            "uid": f"output_{i}",
            "status": status,
            "type": acro_type,
            "properties": {"method": row.get("stat") or kind, "notebook": row.get("notebook", ""),
                           "object": row.get("object", ""), "reach_verdict": verdict},
            "files": [{"name": file, "sdc": _acro_sdc(row)}] if file else [],
            "outcome": {},
            "command": f"{row.get('notebook', '')}: {row.get('object', '')}",
            "summary": summary,
            "timestamp": "",
            "comments": [c for c in (row.get("reason", ""), row.get("suppressed_cells", ""),
                                     row.get("review_cells", "")) if c],
            "exception": "",
        }
    try:
        reach_version = metadata.version("reach")
    except metadata.PackageNotFoundError:
        reach_version = "unknown"
    out = {"version": reach_version, "tool": "reach", "results": results}
    path = output_dir / "results.json"
    path.write_text(json.dumps(out, indent=4), encoding="utf-8")
    checksums = output_dir / "checksums"
    checksums.mkdir(exist_ok=True)
    for f in sorted(output_dir.rglob("*")):
        if f.is_file() and checksums not in f.parents:
            target = checksums / (f.relative_to(output_dir).as_posix() + ".txt")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_checks.sha256(f), encoding="utf-8")
    return path


# =========================================================================== summary statement
def checks_statement(report: pd.DataFrame | str | Path) -> str:
    """The summary's sentence about the disclosure checks, computed from the verdicts of the report.

    Examples
    --------
    >>> rep = pd.DataFrame({"file": ["a.csv", "b.csv"], "verdict": ["ok", "review"]})
    >>> checks_statement(rep)
    '1 of 2 outputs passed the disclosure checks; 1 need review by the output checker (b.csv).'
    """
    if not isinstance(report, pd.DataFrame):
        report = pd.read_csv(report, dtype=str, keep_default_na=False)
    rep = report.fillna("")
    # an object that was not written is no output (a refused or withdrawn figure)
    withheld = int((rep["verdict"] == "not_written").sum())
    rep = rep.loc[rep["verdict"] != "not_written"]
    n = len(rep)
    if n == 0:
        return "No output was checked."
    safe = rep["verdict"].isin(_SAFE_VERDICTS)
    review = rep.loc[~safe]
    # counts of outputs (not of firms): registered so that the summary that quotes them is no "review"
    register_numbers("text", [n, int(safe.sum()), len(review), withheld, int((rep["verdict"] == "suppressed").sum())])
    # the summary notebook runs before the run-level differencing audit: say so instead of claiming the run passed
    pending = ("" if "kind" not in rep.columns or (rep["kind"] == "audit").any() else
               " The run-level differencing audit (all outputs read together) runs after this summary: its verdict is"
               " the run_audit row of disclosure_report.csv.")
    if review.empty:
        n_sup = int((rep["verdict"] == "suppressed").sum())
        extra = f" ({n_sup} with suppressed cells)" if n_sup else ""
        held = f" {withheld} figure(s) were not released." if withheld else ""
        return f"All {n} outputs passed the disclosure checks{extra}.{held}{pending}"
    names = ", ".join((r["file"] or r.get("object", "")) for _, r in review.head(6).iterrows())
    more = ", ..." if len(review) > 6 else ""
    return (f"{int(safe.sum())} of {n} outputs passed the disclosure checks; {len(review)} need review by the "
            f"output checker ({names}{more}).{pending}")


# =========================================================================== finalise
def _file_rows(output_dir: Path, report: pd.DataFrame, numbers: pd.DataFrame, leaks: pd.DataFrame) -> pd.DataFrame:
    """Report rows for every file under output_dir not yet in the report (HTML, notebooks, JSON, manifest)."""
    listed = set(report["file"]) if len(report) else set()
    rows = []
    num = numbers.set_index("file") if len(numbers) else pd.DataFrame()
    leak_files = set(Path(f).name for f in leaks["file"]) if len(leaks) else set()
    for f in sorted(output_dir.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(output_dir).as_posix()
        if rel in listed or rel.startswith("checksums/") or rel in ("results.json", "disclosure_report.csv"):
            continue
        kind = {".html": "report", ".ipynb": "notebook", ".json": "record", ".csv": "table", ".png": "figure"}.get(
            f.suffix.lower(), "other")
        verdict, reason = "ok", ""
        if f.name in num.index:
            k = int(num.loc[f.name, "n_unregistered"])
            if k:
                verdict = "review"
                reason = (f"{k} number(s) not among the registered cells (audit of rendered numbers): "
                          f"{num.loc[f.name, 'context']}")
        elif kind in ("table", "figure", "other"):
            verdict, reason = "review", "file not written through the publishing layer"
        if f.name in leak_files:
            verdict = "fail"
            reason = "; ".join(s for s in (reason, "machine path, user or host name found") if s)
        rows.append({"notebook": "", "object": f.stem, "kind": kind, "file": rel, "check": "", "stat": "",
                     "verdict": verdict, "reason": reason})
    return pd.DataFrame(rows)


def audit_run(output_dir: str | Path, work_dir: str | Path, earlier: Audit | None = None,
              notebooks: Iterable[str] | None = None) -> Audit:
    """Step 1 of finalising: audit the registered cells, blank what must go, write ``disclosure_audit.csv``.

    ``earlier``: the audit of the run's first pass, whose suppressions this pass's
    checks already made; the record keeps what it found and did for each protected
    cell, this audit's verdict decides.
    ``notebooks``: audit only these executed notebooks' cells (the runner's early audit of
    notebooks 01-03 while the effects notebooks still run; the run's last audit takes every cell).
    """
    output_dir, work_dir = Path(output_dir), Path(work_dir)
    tables, _ = load_registry(work_dir / "registry", members=False, notebooks=notebooks)
    audit = audit_cells(tables)
    _apply_suppression(output_dir, tables, audit)
    if earlier is not None:
        key = ["object", "cell", "set", "attack"]
        first = earlier.targets.drop_duplicates(key).set_index(key)
        targ = audit.targets.set_index(key)
        both = targ.index.isin(first.index)
        targ.loc[both, "safe_before"] = first.loc[targ.index[both], "safe_before"].to_numpy()
        targ.loc[both, "action"] = [
            "; ".join(x for x in (a, f"(first pass) {b}" if b else "") if x)
            for a, b in zip(targ.loc[both, "action"], first.loc[targ.index[both], "action"])]
        # protected cells of the first pass that are no longer suppressed cells of their own here
        rest = first.loc[~first.index.isin(targ.index)]
        targ = pd.concat([targ, rest]).reset_index()
        merged = {k: sorted(set(earlier.suppressed.get(k, [])) | set(audit.suppressed.get(k, [])))
                  for k in set(earlier.suppressed) | set(audit.suppressed)}
        audit = Audit(audit.constraints, targ.reindex(columns=audit.targets.columns), merged, audit.suppressed)
    # the audit's record: which constraints, which protected cells, what was done (never values or bounds)
    rec = pd.concat([audit.constraints.assign(record="constraint"), audit.targets.assign(record="protected cell")],
                    ignore_index=True)
    rec = rec.reindex(columns=["record", "source", "kind", "object", "cell", "set", "attack", "safe_before",
                               "safe_after", "action"])
    rec.to_csv(output_dir / "disclosure_audit.csv", index=False, lineterminator="\n")
    return audit


def record_run(output_dir: str | Path, work_dir: str | Path, audit: Audit, *, roots: Mapping[str, str] | None = None,
               whitelist_text: str = "", first_year: int = 1990, last_year: int = 2040,
               extra_known: Iterable[float] = ()) -> pd.DataFrame:
    """Step 2: scrub machine paths, audit rendered numbers, give every file a verdict, write results.json.

    Parameters
    ----------
    roots : mapping absolute path -> replacement, optional
        Machine paths to replace in every text output.
    whitelist_text : str
        Text of the unexecuted notebooks and parameter values (numbers there are not data).
    extra_known : iterable of float
        Further published numbers (e.g. parameter values).

    Returns
    -------
    DataFrame
        The final disclosure report (one row per output file, at least).
    """
    from reach.disclosure import REPORT_COLUMNS

    output_dir, work_dir = Path(output_dir), Path(work_dir)
    tables, numbers = load_registry(work_dir / "registry", members=False)
    text_files = [f for f in sorted(output_dir.rglob("*")) if f.is_file()
                  and f.suffix.lower() in (".html", ".ipynb", ".json", ".csv", ".md", ".txt")
                  and "checksums" not in f.relative_to(output_dir).parts]
    scrub_paths([f for f in text_files if f.suffix.lower() in (".html", ".ipynb", ".json")], roots or {})
    known = np.array(sorted(registered_numbers(tables, list(numbers) + list(extra_known))))
    rendered = [f for f in text_files if f.suffix.lower() in (".html", ".ipynb")
                or (f.suffix.lower() == ".json" and f.parent.name == "headline")]
    nums = audit_numbers(rendered, known, whitelist_text=whitelist_text, first_year=first_year, last_year=last_year)
    leaks = scan_for_machine_paths(text_files, extra=[str(p) for p in (roots or {}) if len(str(p)) > 3])
    report_path = output_dir / "disclosure_report.csv"
    rep = pd.read_csv(report_path, dtype=str, keep_default_na=False) if report_path.is_file() else \
        pd.DataFrame(columns=list(REPORT_COLUMNS))
    rep = rep.loc[~rep["kind"].isin(["report", "notebook", "record", "audit"])]
    audit_row = pd.DataFrame([{"notebook": "", "object": "run_audit", "kind": "audit", "file": "disclosure_audit.csv",
                               "check": "run audit",
                               # cells suppressed after the reports were rendered: the reports may show them
                               "verdict": "ok" if audit.n_unprotected == 0 and not any(audit.this_pass.values())
                               else "review",
                               "reason": audit.summary() + ("; the reports were rendered before the last of "
                                                            "these suppressions" if any(audit.this_pass.values())
                                                            else "")}])
    rep = pd.concat([rep, audit_row], ignore_index=True)
    rep = pd.concat([rep, _file_rows(output_dir, rep, nums, leaks)], ignore_index=True)
    rep = rep.reindex(columns=list(REPORT_COLUMNS)).fillna("")
    _check_summary_statement(output_dir, rep)
    rep.to_csv(report_path, index=False, lineterminator="\n")
    write_results_json(output_dir, rep)
    return rep


def _check_summary_statement(output_dir: Path, rep: pd.DataFrame) -> None:
    """A summary that claims every check passed while some output needs review goes to review itself."""
    final = checks_statement(rep)
    if final.startswith("All "):
        return
    summary = output_dir / "headline" / "summary.json"
    if not summary.is_file():
        return
    text = summary.read_text(encoding="utf-8")
    # "All 240 outputs passed ...": the count sits between "All" and "outputs"
    if not re.search(r"(All|all|Every|every) (?:[0-9][0-9,]* )?(numbers?|outputs?)[^\"]{0,40}passed", text):
        return
    for name in ("headline/summary.json", "05_summary.html", "notebooks/05_summary.ipynb"):
        sel = rep["file"] == name
        rep.loc[sel, "verdict"] = "review"
        rep.loc[sel, "reason"] = rep.loc[sel, "reason"].map(lambda r: "; ".join(
            x for x in (r, f"the summary says every check passed, the verdicts say: {final}") if x))
