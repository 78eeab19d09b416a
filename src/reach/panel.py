"""The firm-year panel every analysis uses (CONTRACTS.md section 4), and its storage.

One row per business unit (``be_id``) and year in which it is in the register
within the window; trade absent from the trade files is zero; instruments,
programme cohorts and lagged pre-treatment covariates are attached with dense
integer look-ups (no merges of the big tables, no loops over firms).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reach import _checks
from reach._display import ResultDisplay
from reach.io import InputError, InputsRecord, input_files, load_inputs
from reach.link import LinkResult, link_participants

log = logging.getLogger(__name__)

__all__ = ["build_panel", "build_run", "PanelRun", "panel_cache_key", "PANEL_CACHE_VERSION", "save_run", "stale_reason", "PANEL_KEYS", "BUILD_FILE", "read_panel", "read_sample", "read_link", "panel_columns", "analysis_sample", "Sample"]

#: dtypes of the panel's 0/1 indicators and counts: exact (0/1 and counts below 2**31), an eighth
#: and a half of int64's memory; sums and means of them are taken in int64/float64 by numpy and pandas.
#: Keys (year, firm_id, g_*) stay int64 and every continuous column float64: float32 would change
#: estimates in the 7th digit, which the golden tests (and a replication) would see.
_FLAG = "int8"
_COUNT = "int32"

_LAGS = [("log_exports", 1), ("log_exports", 2), ("exporter", 1), ("n_dest", 1), ("log_employees", 1),
         ("importer", 1)]


def panel_columns(programmes, growth_markets) -> list[str]:
    """The panel's columns, in order, for the given programme keys and growth markets.

    Examples
    --------
    >>> panel_columns(["tinl"], ["CN"])[:3]
    ['be_id', 'year', 'firm_id']
    """
    cols = ["be_id", "year", "firm_id", "sbi", "sbi_section", "size_class", "employees", "log_employees", "region",
            "exports", "imports", "exports_gm", "imports_gm", "exporter", "importer", "intl_active", "n_dest",
            "n_orig"]
    cols += [f"gm_{c}" for c in growth_markets]
    cols += ["log_exports", "ihs_exports", "log_exports_gm", "log_imports",
             "instr_n", "instr_any", "instr_n_before", "instr_ever_before"]
    for p in programmes:
        cols += [f"g_{p}", f"d_{p}"]
    cols += [f"{v}_lag{k}" for v, k in _LAGS] + ["export_growth_lag1"]
    return cols


def build_panel(inputs, link: LinkResult) -> pd.DataFrame:
    """Build the firm-year panel.

    Parameters
    ----------
    inputs : reach.io.Inputs
        Register, trade and instruments, the window and the growth markets.
    link : reach.link.LinkResult
        Gives each programme's first-use year per ``be_id``.

    Returns
    -------
    DataFrame
        Columns of :func:`panel_columns`, sorted by ``be_id, year``.

    Notes
    -----
    For unit :math:`i` and year :math:`t`, with :math:`X_{itc}` exports to country :math:`c`:
    ``exports`` :math:`=\\sum_c X_{itc}` (0 if no trade record), ``n_dest`` :math:`=\\#\\{c: X_{itc}>0\\}`,
    ``log_exports`` :math:`=\\log(1+X_{it})`, ``ihs_exports`` :math:`=\\operatorname{asinh}(X_{it})`;
    ``instr_n_before`` :math:`=\\sum_{s<t} R_{is}` over registrations since the first window year;
    ``g_p`` :math:`=\\min\\{t: i \\text{ linked in } p \\text{ in } t\\}` (0 = never), ``d_p = 1[t\\ge g_p>0]``,
    the minimum over every participation record, also those before the window (then :math:`g_p` lies
    before ``first_year``: such firms are left out by :func:`analysis_sample`, never re-cohorted);
    a lag :math:`v_{i,t-k}` is NaN when :math:`i` has no register row in :math:`t-k`.

    Examples
    --------
    >>> panel = build_panel(inputs, link)                                  # doctest: +SKIP
    >>> panel.groupby("year")["exporter"].mean()                           # doctest: +SKIP
    """
    tables = {name: getattr(inputs, name) for name in ("register", "trade", "instruments")}
    programmes = list(inputs.programmes) if inputs.programmes else sorted(link.firms["programme"].unique())
    return _assemble(tables, link, int(inputs.first_year), int(inputs.last_year), list(inputs.growth_markets),
                     programmes)


def _assemble(tables: dict, link: LinkResult, first: int, last: int, gm: list, programmes: list) -> pd.DataFrame:
    """:func:`build_panel` from ``tables`` (``register, trade, instruments``), which it empties as it goes.

    Each table is taken out of the dict once its columns are built: when the caller holds no
    other reference (:func:`build_run`), its memory is freed before the next columns are made,
    so the inputs and the panel never coexist whole.
    """
    reg = tables.pop("register")
    in_window = (reg["year"] >= first) & (reg["year"] <= last)
    # reach.io already cut the register to the window: then no filtered copy is needed
    grid = _PanelGrid(reg if in_window.all() else reg.loc[in_window], first, last)
    del reg, in_window
    cols = _register_columns(grid)
    grid.reg = None  # the register's columns are in `cols` now
    cols.update(_trade_columns(grid, tables.pop("trade"), gm))
    cols.update(_instrument_columns(grid, tables.pop("instruments")))
    cols.update(_cohort_columns(grid, link, programmes, cols["year"]))
    for v, k in _LAGS:
        cols[f"{v}_lag{k}"] = grid.lag_of(np.asarray(cols[v], dtype="float64"), k)
    cols["export_growth_lag1"] = cols["log_exports_lag1"] - cols["log_exports_lag2"]
    for c in ("be_id", "sbi", "sbi_section", "size_class", "region"):
        if cols[c].dtype != "str":
            cols[c] = cols[c].astype("str")
    del grid
    # one copy of the panel: the frame takes the arrays as they are, in the contract's order
    # (a DataFrame from a dict copies every column by default, and a reordering copies them again)
    return pd.DataFrame({c: cols.pop(c) for c in panel_columns(programmes, gm)}, copy=False)


_REGISTER_COLUMNS = ["be_id", "year", "sbi", "sbi_section", "size_class", "employees", "region"]


def _is_identity(order: np.ndarray) -> bool:
    return bool(len(order) == 0 or (order[0] == 0 and np.all(np.diff(order) == 1)))


class _PanelGrid:
    """The register rows of the window sorted by (be_id, year), and a dense (firm, year) -> row lookup."""

    def __init__(self, reg: pd.DataFrame, first: int, last: int):
        self.first, self.ny = first, last - first + 1
        # factorize keeps the Arrow strings (no round trip through Python objects); sort=True makes
        # firm_id the rank of be_id, stable across runs
        fid, firms = pd.factorize(reg["be_id"], sort=True)
        self.firms = pd.Index(firms)
        fid = fid.astype("int64")
        yoff = reg["year"].to_numpy(dtype="int64") - first
        order = np.lexsort((yoff, fid))
        self.fid, self.yoff = fid[order], yoff[order]
        # reach.io delivers the register sorted by (be_id, year): then the rows need no reordered copy
        used = reg[_REGISTER_COLUMNS]
        self.reg = used.reset_index(drop=True) if _is_identity(order) else used.iloc[order].reset_index(drop=True)
        self.n = len(self.reg)
        self.n_firms = len(self.firms)
        # -1 where the unit is not in the register that year
        self.lookup = np.full(self.n_firms * self.ny, -1, dtype=np.int64)
        self.key = self.fid * self.ny + self.yoff
        self.lookup[self.key] = np.arange(self.n)

    def firm_of(self, be_id: pd.Series) -> np.ndarray:
        """Dense firm number of each ``be_id``; -1 when it has no register row in the window.

        Same as ``firms.get_indexer(be_id)``, but looks up each distinct value once: a lookup of
        every row turns millions of Arrow strings into Python objects first.
        """
        codes, uniques = pd.factorize(be_id)
        found = np.append(self.firms.get_indexer(uniques), -1)  # code -1 (missing) -> -1
        return found[codes]

    def rows_of(self, be_id: pd.Series, year: np.ndarray) -> np.ndarray:
        """Panel row of each (be_id, year); -1 outside the register or the window."""
        f = self.firm_of(be_id)
        y = np.asarray(year, dtype="int64") - self.first
        ok = (f >= 0) & (y >= 0) & (y < self.ny)
        out = np.full(len(f), -1, dtype=np.int64)
        out[ok] = self.lookup[f[ok] * self.ny + y[ok]]
        return out

    def lag_of(self, values: np.ndarray, k: int) -> np.ndarray:
        """``values`` of the same unit k years earlier; NaN without a register row then."""
        out = np.full(self.n, np.nan)
        ok = self.yoff >= k
        src = np.full(self.n, -1, dtype=np.int64)
        src[ok] = self.lookup[self.key[ok] - k]
        has = src >= 0
        out[has] = values[src[has]]
        return out


def _register_columns(grid: _PanelGrid) -> dict:
    reg = grid.reg
    cols: dict[str, np.ndarray | pd.Series] = {
        "be_id": reg["be_id"],
        "year": reg["year"].to_numpy(dtype="int64"),
        "firm_id": grid.fid,
    }
    for c in ("sbi", "sbi_section", "size_class"):
        cols[c] = reg[c]
    emp = reg["employees"].to_numpy(dtype="float64")
    cols["employees"] = emp
    cols["log_employees"] = np.log1p(emp)
    cols["region"] = reg["region"]
    return cols


def _trade_columns(grid: _PanelGrid, tr: pd.DataFrame, gm: list) -> dict:
    n = grid.n
    trow = grid.rows_of(tr["be_id"], tr["year"].to_numpy())
    inpanel = trow >= 0
    tr_rows = trow[inpanel]
    ex = tr["exports"].to_numpy(dtype="float64")[inpanel]
    im = tr["imports"].to_numpy(dtype="float64")[inpanel]
    # country as integer codes: an object array of every row's country string costs more than the panel's
    # trade columns together at register scale
    codes, uniques = pd.factorize(tr["country"])
    del tr
    country = codes[inpanel]
    gm_code = {c: (int(np.flatnonzero(uniques == c)[0]) if (uniques == c).any() else -2) for c in gm}
    is_gm = np.isin(country, list(gm_code.values()))
    cols: dict[str, np.ndarray] = {}
    cols["exports"] = np.bincount(tr_rows, weights=ex, minlength=n)
    cols["imports"] = np.bincount(tr_rows, weights=im, minlength=n)
    cols["exports_gm"] = np.bincount(tr_rows[is_gm], weights=ex[is_gm], minlength=n)
    cols["imports_gm"] = np.bincount(tr_rows[is_gm], weights=im[is_gm], minlength=n)
    cols["exporter"] = (cols["exports"] > 0).astype(_FLAG)
    cols["importer"] = (cols["imports"] > 0).astype(_FLAG)
    cols["intl_active"] = (cols["exporter"] | cols["importer"]).astype(_FLAG)
    # trade rows are unique per (be_id, year, country), so counting positive rows counts countries
    cols["n_dest"] = np.bincount(tr_rows[ex > 0], minlength=n).astype(_COUNT)
    cols["n_orig"] = np.bincount(tr_rows[im > 0], minlength=n).astype(_COUNT)
    for c in gm:
        sel = (country == gm_code[c]) & ((ex > 0) | (im > 0))
        cols[f"gm_{c}"] = (np.bincount(tr_rows[sel], minlength=n) > 0).astype(_FLAG)
    cols["log_exports"] = np.log1p(cols["exports"])
    cols["ihs_exports"] = np.arcsinh(cols["exports"])
    cols["log_exports_gm"] = np.log1p(cols["exports_gm"])
    cols["log_imports"] = np.log1p(cols["imports"])
    return cols


def _instrument_columns(grid: _PanelGrid, ins: pd.DataFrame) -> dict:
    first, ny = grid.first, grid.ny
    ins = ins.loc[ins["be_id"].notna() & (ins["year"] >= first) & (ins["year"] < first + ny)]
    f_ins = grid.firm_of(ins["be_id"])
    ok = f_ins >= 0
    # a dense firm x year grid, because registrations in years without a register row still count "before"
    dense = np.bincount(f_ins[ok] * ny + (ins["year"].to_numpy(dtype="int64")[ok] - first),
                        minlength=grid.n_firms * ny).reshape(grid.n_firms, ny)
    before = np.cumsum(dense, axis=1) - dense
    cols = {"instr_n": dense.ravel()[grid.key].astype(_COUNT)}
    cols["instr_any"] = (cols["instr_n"] > 0).astype(_FLAG)
    cols["instr_n_before"] = before.ravel()[grid.key].astype(_COUNT)
    cols["instr_ever_before"] = (cols["instr_n_before"] > 0).astype(_FLAG)
    return cols


def _cohort_columns(grid: _PanelGrid, link: LinkResult, programmes: list, year: np.ndarray) -> dict:
    fr = link.firms[["programme", "be_id", "first_use"]]
    early = getattr(link, "early", None)
    if early is not None and len(early):
        # firms whose only records lie before the window are users too (first use before it)
        fr = pd.concat([fr, early[["programme", "be_id", "first_use"]]], ignore_index=True)
        fr = fr.groupby(["programme", "be_id"], as_index=False, sort=False)["first_use"].min()
    cols = {}
    for p in programmes:
        sub = fr.loc[fr["programme"] == p]
        g_firm = np.zeros(grid.n_firms, dtype="int64")
        f_p = grid.firm_of(sub["be_id"])
        okp = f_p >= 0
        g_firm[f_p[okp]] = sub["first_use"].to_numpy(dtype="int64")[okp]
        g = g_firm[grid.fid]
        cols[f"g_{p}"] = g
        cols[f"d_{p}"] = ((g > 0) & (year >= g)).astype(_FLAG)
    return cols


@dataclass(frozen=True)
class Sample:
    """The panel rows one programme's analysis uses, and what was left out and why.

    Attributes
    ----------
    panel : DataFrame
        Rows within the window, without the left-out firms.
    excluded : DataFrame
        ``reason, n_firms``: every firm left out, counted once with its first reason.
    n_other_users_kept : int
        Comparison firms that used another programme and were kept
        (``exclude_other_users=False``); the summary says so, since they may carry that
        programme's effect.
    """

    panel: pd.DataFrame
    excluded: pd.DataFrame
    n_other_users_kept: int = 0

    def tidy(self) -> pd.DataFrame:
        return self.excluded.copy()

    def summary(self, min_units: int = 10) -> str:
        """Counts below ``min_units`` are said as "fewer than" (this text lands in rendered notebooks)."""
        from reach.publish import register_counts

        register_counts(self.excluded["n_firms"], min_units)  # printed exactly: known to the output audit
        parts = [f"{_checks.count_text(r.n_firms, min_units, 'firms')}: {r.reason}" for r in self.excluded.itertuples()]
        text = "Left out of the analysis sample: " + ("; ".join(parts) if parts else "none") + "."
        if self.n_other_users_kept:
            register_counts([self.n_other_users_kept], min_units)
            text += (f" Kept as comparison firms although they used another programme (a parameter of the run): "
                     f"{_checks.count_text(self.n_other_users_kept, min_units, 'firms')}; they may carry that "
                     "programme's effect.")
        return text

    def _repr_markdown_(self) -> str:
        return self.summary()


def analysis_sample(panel: pd.DataFrame, programme: str, *, first_year: int | None = None,
                    last_year: int | None = None, exclude_other_users: bool = True) -> Sample:
    """Restrict the panel to what one programme's matching and effect estimation use.

    Parameters
    ----------
    panel : DataFrame
        The firm-year panel (:func:`build_panel`), with ``g_<programme>`` columns.
    programme : str
        The programme analysed.
    first_year, last_year : int, optional
        Window; rows outside it are dropped (no firm is counted for that alone).
    exclude_other_users : bool, default True
        Leave out firms that never used ``programme`` but used another programme of the
        panel: as comparison firms they would carry the other programme's effect.

    Returns
    -------
    Sample

    Notes
    -----
    Users of the programme stay even when they also used another programme: the
    estimate is then the effect of this programme for its users, whatever else
    they used, which is what an evaluation of the programme asks.

    Examples
    --------
    >>> p = pd.DataFrame({"be_id": ["1", "2", "3"], "year": 2019, "g_a": [2019, 0, 0], "g_b": [0, 2018, 0]})
    >>> s = analysis_sample(p, "a")
    >>> s.panel["be_id"].tolist(), s.summary()
    (['1', '3'], 'Left out of the analysis sample: fewer than 10 firms: comparison firm used another programme.')
    """
    gcol = f"g_{programme}"
    if gcol not in panel.columns:
        known = [c[2:] for c in panel.columns if c.startswith("g_")]
        raise ValueError(f"programme {programme!r} is not in the panel; programmes: {known}")
    keep = np.ones(len(panel), bool)
    if first_year is not None:
        keep &= panel["year"].to_numpy() >= first_year
    if last_year is not None:
        keep &= panel["year"].to_numpy() <= last_year
    rows = []
    start = first_year if first_year is not None else (int(panel["year"].min()) if len(panel) else 0)
    g_own = panel[gcol].to_numpy()
    early = (g_own > 0) & (g_own < start)
    if early.any():
        # their years in the window are all treated: no "before" to compare with, and no valid control
        rows.append((f"first used the programme before the window ({start}): no untreated years to compare",
                     panel.loc[early, "be_id"].nunique()))
        keep &= ~early
    others = [c for c in panel.columns if c.startswith("g_") and c != gcol]
    n_kept = 0
    if others:
        other_user = (panel[others].to_numpy() > 0).any(axis=1) & (panel[gcol].to_numpy() == 0) & ~early
        if exclude_other_users:
            n = panel.loc[other_user, "be_id"].nunique()
            if n:
                # the other programmes are named in the run's parameters; a reader-facing reason carries no keys
                rows.append(("comparison firm used another programme", n))
            keep &= ~other_user
        else:
            n_kept = int(panel.loc[other_user & keep, "be_id"].nunique())
    return Sample(panel.loc[keep].reset_index(drop=True),
                  pd.DataFrame(rows, columns=["reason", "n_firms"]).astype({"n_firms": "int64"}), n_kept)


#: Rows converted to Arrow at a time when writing a table: ``DataFrame.to_parquet`` converts the whole
#: frame first, which at register scale is a second copy of the panel (GBs) next to the first.
WRITE_ROWS = 1_000_000


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    """``df.to_parquet(path, index=False)`` in slices of :data:`WRITE_ROWS` rows (one row group each).

    Same file contents and the same frame when read back (the pandas metadata of the first slice,
    without an index, describes every slice); memory is one slice in Arrow form, not the table.
    """
    if len(df) <= WRITE_ROWS:
        df.to_parquet(path, index=False)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for start in range(0, len(df), WRITE_ROWS):
            table = pa.Table.from_pandas(df.iloc[start:start + WRITE_ROWS], preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(schema) if not table.schema.equals(schema) else table)
            del table
    finally:
        if writer is not None:
            writer.close()


def write_parquet_if_changed(df: pd.DataFrame, path: str | Path) -> bool:
    """Write ``df`` to ``path`` as parquet unless the file already holds exactly these bytes; True if written.

    The new file is written beside the old one and moved into place, so a reader never sees a part
    of it. A notebook run again by a later pass of ``reach run`` (its tables' cells suppressed by the
    run-level audit) writes the same data: the file a later notebook may be reading right then
    (``reach run --jobs``) is left alone.

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "m.parquet"
    >>> df = pd.DataFrame({"be_id": ["1"], "weight": [1.0]})
    >>> write_parquet_if_changed(df, f), write_parquet_if_changed(df, f)
    (True, False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".parquet.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        df.to_parquet(tmp, index=False)
        if path.is_file() and path.stat().st_size == tmp.stat().st_size and path.read_bytes() == tmp.read_bytes():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_parquet(frames: dict[str, pd.DataFrame], work_dir: Path) -> dict[str, Path]:
    """Write every frame to a temporary file first, then rename: a failure leaves no partial run."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = {}
    try:
        for name, df in frames.items():
            fd, p = tempfile.mkstemp(prefix=f".{name}.", suffix=".parquet.tmp", dir=work_dir)
            os.close(fd)
            tmp[name] = Path(p)
            _write_parquet(df, tmp[name])
    except Exception:
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    out = {}
    for name, p in tmp.items():
        final = work_dir / f"{name}.parquet"
        os.replace(p, final)
        out[name] = final
    return out


def save_run(work_dir, panel: pd.DataFrame, link: LinkResult, inputs=None, params=None) -> dict[str, Path]:
    """Write the panel and the linkage to ``work_dir`` (microdata: never to ``output/``).

    Files: ``panel.parquet``, ``participants.parquet`` (``link.records``),
    ``firms.parquet``, ``waterfall.parquet``, ``activities.parquet``, ``early.parquet``
    and, when ``inputs`` (:class:`reach.io.Inputs` or its :class:`~reach.io.InputsRecord`)
    and ``params`` are given, ``panel_build.json``: the parameters (:data:`PANEL_KEYS`)
    and input checksums the panel was built from, which :func:`stale_reason` compares
    with a later run's, and the cache key, the inputs' record and the size of every file
    written, with which :func:`build_run` reuses this run instead of building it again.

    Returns
    -------
    dict
        Name -> path written.

    Examples
    --------
    >>> save_run("work/stub", panel, link)                                  # doctest: +SKIP
    """
    work_dir = Path(work_dir)
    records = link.records.copy()
    records["bucket"] = records["bucket"].astype(str)
    frames = {"panel": panel, "participants": records, "firms": link.firms, "waterfall": link.waterfall,
              "activities": link.activities, "early": link.early}
    (work_dir / BUILD_FILE).unlink(missing_ok=True)  # a half-written run must not look up to date
    paths = _atomic_parquet(frames, work_dir)
    meta = pd.DataFrame({"first_year": [link.first_year], "last_year": [link.last_year]})
    _atomic_parquet({"link_meta": meta}, work_dir)
    if inputs is not None and params is not None:
        record = inputs.record() if hasattr(inputs, "record") else inputs
        written = {p.name: p.stat().st_size for p in [*paths.values(), work_dir / "link_meta.parquet"]}
        build = {"params": {k: params.get(k) for k in PANEL_KEYS},
                 "inputs": [_file_entry(f["role"], f["year"], Path(f["path"]), f["sha256"]) for f in inputs.files],
                 "cache": {"key": panel_cache_key(params, inputs.files), "version": PANEL_CACHE_VERSION,
                           "written": written, "panel_rows": len(panel), "record": _record_json(record)}}
        tmp = work_dir / (BUILD_FILE + ".tmp")
        tmp.write_text(json.dumps(build, indent=1, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, work_dir / BUILD_FILE)
        paths["panel_build"] = work_dir / BUILD_FILE
    return paths


#: Parameters the panel depends on: a change in any of them makes a saved panel stale.
PANEL_KEYS = ("data_dir", "first_year", "last_year", "inputs", "programmes", "growth_markets")
#: File in ``work/<run>/`` recording what the panel was built from.
BUILD_FILE = "panel_build.json"


def _file_entry(role, year, path: Path, sha256: str | None) -> dict:
    st = path.stat()
    return {"role": role, "year": year, "path": str(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "sha256": sha256}


def stale_reason(work_dir, params, files: list[dict] | None = None) -> str | None:
    """Why the panel saved in ``work_dir`` does not fit ``params`` (None when it does).

    Parameters
    ----------
    work_dir : path
        Folder written by :func:`save_run`.
    params : mapping
        The parameters of the run about to use the panel.
    files : list of dict, optional
        The input files the run would read now (``role, year, path``; as
        ``reach.runner``'s input list); their checksums are compared with those
        recorded. A file whose size and modification time are unchanged is not
        hashed again.

    Returns
    -------
    str or None
        A sentence naming what changed: a parameter, an input file (added,
        removed, other version, changed contents), or a missing record.

    Examples
    --------
    >>> stale_reason("work/stub", params)                                  # doctest: +SKIP
    "parameter 'first_year' changed: 2014 -> 2019"
    """
    work_dir = Path(work_dir)
    if not (work_dir / "panel.parquet").is_file():
        return f"no panel in {work_dir}"
    build_path = work_dir / BUILD_FILE
    if not build_path.is_file():
        return f"{build_path.name} is missing: the panel does not record what it was built from"
    try:
        build = json.loads(build_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{build_path.name} cannot be read ({exc})"
    now = json.loads(json.dumps({k: params.get(k) for k in PANEL_KEYS}, sort_keys=True, default=str))
    for k in PANEL_KEYS:
        if build["params"].get(k) != now.get(k):
            return f"parameter {k!r} changed: {build['params'].get(k)!r} -> {now.get(k)!r}"
    if files is None:
        return None
    old = {(f["role"], f["year"]): f for f in build["inputs"]}
    new = {(f["role"], f["year"]): f for f in files}
    for key in sorted(set(old) | set(new), key=str):
        if key not in new or key not in old:
            return f"input {key[0]} {key[1] or ''} {'added' if key in new else 'no longer read'}".replace("  ", " ")
        a, b = old[key], new[key]
        # the runner's manifest lists paths relative to data_dir; the panel's record may hold absolute ones
        pa, pb = (Path(x["path"]) if Path(x["path"]).is_absolute() else Path(params["data_dir"]) / x["path"]
                  for x in (a, b))
        pa, pb = pa.resolve(), pb.resolve()
        if pa != pb:
            return f"input {key[0]} {key[1] or ''}: now {pb.name}, the panel was built from {pa.name}"
        st = pb.stat()
        if st.st_size == a["size"] and st.st_mtime_ns == a["mtime_ns"]:
            continue
        if (b.get("sha256") or _checks.sha256(pb)) != a["sha256"]:
            return f"input {pb.name} changed since the panel was built (checksum differs)"
    return None


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run notebook 01_build_panel (or reach.panel.save_run) first")
    return pd.read_parquet(path)


def read_panel(work_dir, first_year: int | None = None, last_year: int | None = None,
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``work_dir/panel.parquet`` written by :func:`save_run`.

    Parameters
    ----------
    work_dir : path
        The run's work folder.
    first_year, last_year : int, optional
        Keep only the years in this window. The rows are filtered while the file is
        read, so the caller never holds the whole panel and a windowed copy of it
        (a ``panel[panel["year"] >= ...]`` afterwards copies every column).
    columns : sequence of str, optional
        Read only these columns, plus the keys (``be_id``, ``year``) and every
        programme's first-use year (``g_*``, which :func:`analysis_sample` needs).
        At register scale the panel has ~60 columns and a stage uses a dozen: reading
        only those takes a fraction of the time and memory. Default: every column.

    Examples
    --------
    >>> panel = read_panel("work/stub", first_year=2014, last_year=2023)  # doctest: +SKIP
    >>> panel = read_panel("work/stub", columns=["log_exports_lag1"])    # doctest: +SKIP
    """
    path = Path(work_dir) / "panel.parquet"
    if not path.is_file():
        return _read(path)
    return _read_filtered(path, _panel_file_columns(path, columns), _year_filter(first_year, last_year))


_TO_PANDAS = {"split_blocks": True, "self_destruct": True}


def _panel_file_columns(path: Path, columns: Sequence[str] | None) -> list[str] | None:
    """The file's columns :func:`read_panel` reads for ``columns``: those, the keys and every ``g_*``."""
    if columns is None:
        return None
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; the panel has {sorted(names)}")
    wanted = {"be_id", "year", *columns}
    return [c for c in names if c in wanted or c.startswith("g_")]  # the file's order


def _read_filtered(path: Path, cols: list[str] | None, filters) -> pd.DataFrame:
    # Arrow's buffers are released column by column as the frame is made (not after the whole frame):
    # 2M firms: the panel is ~4 GB and would otherwise exist twice; same frame, column per block
    df = pd.read_parquet(path, columns=cols, filters=filters, to_pandas_kwargs=_TO_PANDAS)
    _join_text_pieces(df)
    return df


def read_sample(work_dir, programme: str, *, first_year: int | None = None, last_year: int | None = None,
                exclude_other_users: bool = True, columns: Sequence[str] | None = None) -> Sample:
    """:func:`analysis_sample` of the saved panel, with its rows chosen while the file is read.

    The same :class:`Sample` as ``analysis_sample(read_panel(work_dir, first_year, last_year, columns),
    programme, first_year=first_year, last_year=last_year, exclude_other_users=exclude_other_users)``:
    the same rows in the same order, dtypes and counts of left-out firms. That composition reads the
    window and then copies every column without the left-out rows; here the file's reader drops them
    batch by batch, so the sample is the only copy ever made. At register scale (2M firms, ~15M rows)
    the copy cost ~20 s per notebook, nearly all of it the operating system mapping in fresh memory.

    Parameters
    ----------
    work_dir : path
        The run's work folder (``panel.parquet`` written by :func:`save_run`).
    programme : str
        The programme analysed.
    first_year, last_year : int, optional
        Window, as in :func:`read_panel` and :func:`analysis_sample`.
    exclude_other_users : bool, default True
        As in :func:`analysis_sample`.
    columns : sequence of str, optional
        As in :func:`read_panel` (the keys and every ``g_*`` are always read).

    Returns
    -------
    Sample

    Notes
    -----
    The left-out firms are counted on the rows that leave (read with their keys and cohorts only),
    by :func:`analysis_sample` itself, so the counts cannot drift from it. The row filter is the same
    rule written for the file's reader: a row stays when it lies in the window, its firm did not first
    use ``programme`` before the window's first year (``0 < g < first_year``), and, with
    ``exclude_other_users``, it is not a never-user of ``programme`` (``g = 0``) with another ``g_* > 0``.
    A missing cohort compares as false, as NumPy's ``NaN > 0`` does.

    Examples
    --------
    >>> s = read_sample("work/stub", "nlib", first_year=2014, last_year=2023)  # doctest: +SKIP
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(work_dir) / "panel.parquet"
    if not path.is_file():
        _read(path)  # the error that says which notebook writes it
    names = pq.read_schema(path).names
    gcol = f"g_{programme}"
    if gcol not in names:
        known = [c[2:] for c in names if c.startswith("g_")]
        raise ValueError(f"programme {programme!r} is not in the panel; programmes: {known}")
    cols = _panel_file_columns(path, columns)
    others = [c for c in names if c.startswith("g_") and c != gcol]
    start = first_year
    if start is None:  # analysis_sample's default: the first year of the rows it is given
        years = _read_filtered(path, ["year"], _year_filter(None, last_year))["year"]
        start = int(years.min()) if len(years) else 0

    def cmp(expr):  # a missing value compares as false (NaN > 0 in NumPy)
        return pc.coalesce(expr, False)

    g_own = pc.field(gcol)
    window = _year_filter(first_year, last_year)
    early = cmp(g_own > 0) & cmp(g_own < start)
    other_user = pc.scalar(False)
    for c in others:
        other_user = other_user | cmp(pc.field(c) > 0)
    other_user = other_user & cmp(g_own == 0) & ~early
    # analysis_sample counts the leaving firms; run it on the leaving rows alone (their keys and cohorts)
    leaving = _read_filtered(path, [c for c in names if c in ("be_id", "year") or c.startswith("g_")],
                             _and(window, early | other_user))
    counted = analysis_sample(leaving, programme, first_year=start, last_year=last_year,
                              exclude_other_users=exclude_other_users)
    keep = ~early & ~other_user if exclude_other_users else ~early
    rows = _read_filtered(path, cols, _and(window, keep))
    # the reader's pool keeps the freed batches of the scan (2M firms: ~2 GB beside a 2.4 GB sample), space
    # NumPy's arrays cannot reuse: handed back, as notebook 01 does between its big steps
    _checks.release_memory()
    return Sample(rows, counted.excluded, counted.n_other_users_kept)


def _join_text_pieces(df: pd.DataFrame) -> None:
    """Each Arrow-backed column of ``df`` (text: keys and codes) in one piece, in place.

    A read of the panel gives such a column in one piece per batch read (125 for the 2M-firm panel); every later
    operation on it (codes, ``isin``, grouping) then joins the pieces in a temporary copy (~0.3 GB more at
    notebook 04's peak at 2M). Joined once here, for every reader of the panel. Values and dtype unchanged.
    """
    import pyarrow as pa

    for c in df.columns:
        dtype = df[c].dtype
        if isinstance(dtype, np.dtype) or not hasattr(dtype, "__from_arrow__"):
            continue
        arr = pa.array(df[c])  # the column's own Arrow data (pandas' __arrow_array__), not a conversion
        if isinstance(arr, pa.ChunkedArray) and arr.num_chunks > 1:
            df[c] = pd.Series(dtype.__from_arrow__(arr.combine_chunks()), index=df.index, name=c)


def _year_filter(first_year: int | None, last_year: int | None):
    import pyarrow.compute as pc

    expr = None
    if first_year is not None:
        expr = pc.field("year") >= int(first_year)
    if last_year is not None:
        expr = _and(expr, pc.field("year") <= int(last_year))
    return expr


def _and(a, b):
    return b if a is None else (a if b is None else a & b)


def read_link(work_dir) -> LinkResult:
    """Read the :class:`~reach.link.LinkResult` written by :func:`save_run`.

    Examples
    --------
    >>> link = read_link("work/stub")                                       # doctest: +SKIP
    """
    from reach.link import BUCKETS

    work_dir = Path(work_dir)
    records = _read(work_dir / "participants.parquet")
    records["bucket"] = pd.Categorical(records["bucket"], categories=list(BUCKETS))
    meta_path = work_dir / "link_meta.parquet"
    first = last = 0
    if meta_path.is_file():
        meta = pd.read_parquet(meta_path)
        first, last = int(meta["first_year"].iloc[0]), int(meta["last_year"].iloc[0])
    extra = {}
    if (work_dir / "early.parquet").is_file():
        extra["early"] = pd.read_parquet(work_dir / "early.parquet")
    return LinkResult(records=records, waterfall=_read(work_dir / "waterfall.parquet"),
                      firms=_read(work_dir / "firms.parquet"), activities=_read(work_dir / "activities.parquet"),
                      first_year=first, last_year=last, **extra)


# ----------------------------------------------------------------------------- the saved run as a cache

#: Bump when the panel or the linkage built from the same inputs changes (reach.link, this module):
#: a saved run of another version is built again, never reused.
PANEL_CACHE_VERSION = "1"


def panel_cache_key(params, files: list[dict]) -> str:
    """The key of a built panel: parameters, every input file's identity and contents, the code versions.

    Parameters
    ----------
    params : mapping
        The run's parameters; :data:`PANEL_KEYS` are used (data folder, window, every input's
        pattern and column mapping, the programmes' lists and mappings, growth markets).
    files : list of dict
        The files read (:attr:`reach.io.Inputs.files` or :func:`reach.io.input_files` plus
        ``sha256``): role, year, path, version chosen, every version found, SHA-256.

    Returns
    -------
    str
        Hex digest; equal keys mean the same panel and linkage would be built.

    Notes
    -----
    The versions found count as well as the version chosen: notebook 01 shows them. The
    reading rules' version (:data:`reach.cache.CACHE_VERSION`) and :data:`PANEL_CACHE_VERSION`
    are part of the key, so a change of the code that builds the panel invalidates it.

    Examples
    --------
    >>> f = [{"role": "register", "year": 2019, "path": "/d/ABR_BE_2019V1.sav", "version": 1,
    ...       "candidates": ["ABR_BE_2019V1.sav"], "sha256": "ab" * 32}]
    >>> p = {"first_year": 2019, "last_year": 2019}
    >>> panel_cache_key(p, f) == panel_cache_key(dict(p), [dict(f[0])])
    True
    >>> panel_cache_key(p, f) == panel_cache_key({**p, "first_year": 2018}, f)
    False
    """
    from reach.cache import CACHE_VERSION

    ident = sorted(([f["role"], f["year"], str(f["path"]), f["version"], sorted(f["candidates"]), f["sha256"]]
                    for f in files), key=lambda r: (r[0], -1 if r[1] is None else r[1]))
    payload = {"panel": PANEL_CACHE_VERSION, "reading": CACHE_VERSION,
               "params": {k: params.get(k) for k in PANEL_KEYS}, "files": ident}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _record_json(record: InputsRecord) -> dict:
    return {"files": record.files, "exclusions": record.exclusions.to_dict("records"),
            "repairs": record.repairs.to_dict("records"), "first_year": record.first_year,
            "last_year": record.last_year, "programmes": record.programmes,
            "growth_markets": list(record.growth_markets), "rows": record.n_rows()}


def _record_from(saved: dict) -> InputsRecord:
    # the frames as reach.io builds them (reach.io._Log.frame / repair_frame)
    excl = pd.DataFrame(saved["exclusions"], columns=["table", "reason", "n"]).astype({"n": "int64"})
    rep = pd.DataFrame(saved["repairs"], columns=["table", "column", "reason", "n"]).astype({"n": "int64"})
    return InputsRecord(files=saved["files"], exclusions=excl, repairs=rep, first_year=int(saved["first_year"]),
                        last_year=int(saved["last_year"]), programmes=saved["programmes"],
                        growth_markets=tuple(saved["growth_markets"]), rows={k: int(v) for k, v in saved["rows"].items()})


@dataclass(frozen=True, repr=False)
class PanelRun(ResultDisplay):
    """Notebook 01's result: what was read, the linkage and the panel, built or reused.

    Attributes
    ----------
    inputs : reach.io.InputsRecord
        Files read, exclusions, repairs and row counts (the tables themselves are not kept).
    link : reach.link.LinkResult
    panel : DataFrame
        The firm-year panel (:func:`build_panel`).
    paths : dict
        Name -> file in the work folder, as :func:`save_run` returns it.
    reused : bool
        True when the saved run was loaded instead of built.
    reason : str
        Why it was reused, or why it was built.
    """

    inputs: InputsRecord
    link: LinkResult
    panel: pd.DataFrame
    paths: dict
    reused: bool
    reason: str

    def summary(self) -> str:
        how = "reused from the work folder" if self.reused else "built and saved to the work folder"
        return (f"panel of {len(self.panel):,} firm-years, {self.panel.shape[1]} columns, {how} ({self.reason}); "
                f"{len(self.inputs.files)} input files")


def build_run(params, work_dir, cache_dir=None, *, reuse: bool = True) -> PanelRun:
    """Read the inputs, link the participants, build and save the panel; or reuse the saved run.

    Parameters
    ----------
    params : mapping
        The run's parameters (``data_dir`` absolute), as for :func:`reach.io.load_inputs`.
    work_dir : path
        The run's work folder: the panel and the linkage are saved there (:func:`save_run`).
    cache_dir : path, optional
        Folder for the typed copies of the input files (:func:`reach.io.load_inputs`).
    reuse : bool, default True
        Load the run saved in ``work_dir`` when its key (:func:`panel_cache_key`) equals the
        key of the inputs and parameters now; False always builds.

    Returns
    -------
    PanelRun

    Notes
    -----
    *Reuse.* The key covers every input file's SHA-256 (hashed in full each time: about
    1 GB/s, a second for the 2M-firm data set, so size and modification time are not
    trusted instead), every column mapping, every parameter the build reads and the code
    versions. A saved file whose size differs from its record, or that cannot be read,
    is logged as a warning and the run is built again; a reused run never skips a check.

    *Memory.* The inputs' tables are held only here: linkage first, then the link file and
    the participant lists are dropped, and the register, trade and instrument tables are
    freed one by one as the panel's columns are made (:func:`_assemble`).

    Examples
    --------
    >>> run = build_run(params, "work/stub", cache_dir="work/stub/cache")      # doctest: +SKIP
    >>> run.reused, run.link.waterfall.shape                                  # doctest: +SKIP
    """
    work_dir = Path(work_dir)
    if reuse:
        saved, reason = _saved_run(params, work_dir)
        if saved is not None:
            return saved
    else:
        reason = "reuse switched off"
    log.info("building the panel: %s", reason)
    inputs = load_inputs(params, cache_dir=cache_dir)
    link = link_participants(inputs)
    record = inputs.record()
    programmes = list(inputs.programmes) if inputs.programmes else sorted(link.firms["programme"].unique())
    tables = {name: getattr(inputs, name) for name in ("register", "trade", "instruments")}
    del inputs  # the link file and the participant lists go now; _assemble frees the rest as it goes
    _checks.release_memory()
    panel = _assemble(tables, link, record.first_year, record.last_year, list(record.growth_markets), programmes)
    _checks.release_memory()
    paths = save_run(work_dir, panel, link, record, params)
    return PanelRun(inputs=record, link=link, panel=panel, paths=paths, reused=False, reason=reason)


def _saved_run(params, work_dir: Path) -> tuple[PanelRun | None, str]:
    """The run saved in ``work_dir`` if its key fits ``params`` and the inputs now, else (None, why not)."""
    build_path = work_dir / BUILD_FILE
    if not build_path.is_file():
        return None, f"no saved panel in the work folder ({BUILD_FILE} absent)"
    try:
        saved = json.loads(build_path.read_text(encoding="utf-8"))["cache"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s: %s); building the panel again", build_path, type(exc).__name__, exc)
        return None, f"{BUILD_FILE} cannot be read"
    try:
        files = input_files(params)
    except InputError as exc:
        return None, f"input files cannot be listed ({exc})"  # the build raises it where it belongs
    for f in files:
        f["sha256"] = _checks.sha256(f["path"])
    if saved.get("key") != panel_cache_key(params, files):
        return None, "inputs, column mappings, parameters or code version changed since the saved build"
    try:
        for name, size in saved["written"].items():
            if (work_dir / name).stat().st_size != size:
                raise ValueError(f"{name} has {(work_dir / name).stat().st_size} bytes, its record says {size}")
        panel = read_panel(work_dir)
        if len(panel) != saved["panel_rows"]:
            raise ValueError(f"panel has {len(panel)} rows, its record says {saved['panel_rows']}")
        link = read_link(work_dir)
        record = _record_from(saved["record"])
    except Exception as exc:  # noqa: BLE001 - any unreadable saved file means: build again
        log.warning("the saved panel in %s is unreadable (%s: %s); building it again",
                    work_dir, type(exc).__name__, exc)
        build_path.unlink(missing_ok=True)
        return None, "the saved panel was unreadable"
    paths = {name: work_dir / f"{name}.parquet"
             for name in ("panel", "participants", "firms", "waterfall", "activities", "early")}
    paths["panel_build"] = build_path
    reason = "same inputs, column mappings, parameters and code version as the saved build"
    log.info("reusing the saved panel: %s", reason)
    return PanelRun(inputs=record, link=link, panel=panel, paths=paths, reused=True, reason=reason), reason

