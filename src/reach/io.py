"""Read the run's microdata: locate files, map CBS names, validate, aggregate trade while streaming.

Every input named in ``params["inputs"]`` and ``params["programmes"]`` is read
from ``params["data_dir"]``: SPSS ``.sav``/``.zsav`` (pyreadstat), ``.csv``,
``.parquet`` or Excel ``.xlsx`` (first sheet, openpyxl; meant for participant lists). Per-year files are found through a pattern with ``{year}``; a
``V*`` in the pattern matches CBS's version suffix and the highest version
wins (logged, and recorded in :attr:`Inputs.files`).

Problems a user must fix (missing column, wrong type, unreadable or empty
file, a year without a file) raise :class:`InputError` naming the file, the
column, the count and up to five example rows, numbered as the file numbers
them (1 = first data row). Problems a user can live with (negative trade
values, unknown country codes, registrations outside the window, ...) are
excluded, logged and counted in :attr:`Inputs.exclusions`; values repaired on
the way in (what Excel and SPSS do to codes, numbers, dates: see
:mod:`reach.normalise`) are counted with their reason in :attr:`Inputs.repairs`.
Example rows quote microdata: they go to the console (the error) and the DEBUG
log, never to a table of the run.

CBS special values (sentinels) handled
--------------------------------------

=============  ==========================================  =====================================
column         value                                       treatment
=============  ==========================================  =====================================
employees      negative (``-1``, ``-5``, ...: CBS unknown)  missing, counted (``Inputs.repairs``)
employees      SPSS user-missing values                     missing (pyreadstat's default), counted
exports,       negative (CBS unknown / correction codes)    trade row left out, counted
imports                                                     (``Inputs.exclusions``): never summed
country        code not ISO 3166 / Eurostat / GEONOM        trade row left out, counted
=============  ==========================================  =====================================

Column names are matched as given; when a year's file spells one differently
only by case, spaces or a byte-order mark (``WPACTUEEL``, ``wpactueel``), it is
used and the match counted. CSV files are read in their detected encoding
(UTF-8, UTF-8 with BOM, cp1252) and separator, numbers in Dutch notation are
detected per column (:func:`reach.normalise.parse_dutch_numbers`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from reach import _checks
from reach import countries as _countries
from reach import normalise as _norm
from reach._display import ResultDisplay

__all__ = ["InputError", "Inputs", "InputsRecord", "TABLES", "load_inputs", "input_files", "locate", "read_columns", "ROLES", "ROLE_IDS", "SENTINELS",
           "PROGRAMME_COLUMNS", "missing_role_columns"]

log = logging.getLogger(__name__)

#: Internal columns each input role must map (CONTRACTS.md section 2).
ROLES: dict[str, tuple[str, ...]] = {
    "register": ("be_id", "sbi", "size_class", "employees", "municipality"),
    "kvk_link": ("kvk", "be_id"),
    "trade": ("be_id", "country", "exports", "imports"),
    "instruments": ("year", "instrument"),  # plus one of ROLE_IDS["instruments"]
}
#: Identifier columns of which a role must map at least one (instruments come by KvK or by be_id).
ROLE_IDS: dict[str, tuple[str, ...]] = {"instruments": ("kvk", "be_id")}
PER_YEAR_ROLES = ("register", "kvk_link", "trade")
PROGRAMME_COLUMNS = ("kvk", "activity_id", "date", "year", "organiser_region", "activity_type")

# Internal column -> kind used for type coercion.
_KIND = {
    "be_id": "id", "kvk": "id", "sbi": "code", "size_class": "code", "municipality": "code",
    "country": "code", "instrument": "text", "activity_id": "id", "activity_type": "text",
    "organiser_region": "text", "employees": "float", "exports": "float", "imports": "float",
    "year": "int", "date": "date",
}
#: CBS sentinels handled: column -> (rule, treatment); the module docstring has the table.
SENTINELS = {
    "employees": ("< 0", "missing"),
    "exports": ("< 0", "row left out"),
    "imports": ("< 0", "row left out"),
}
_DEFAULT_CHUNKSIZE = 500_000
_SUFFIXES = {".sav": "sav", ".zsav": "sav", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".xlsx": "xlsx"}


class InputError(ValueError):
    """An input file that cannot be used as it is; the message names file, column and examples."""


@dataclass(frozen=True, repr=False)
class Inputs(ResultDisplay):
    """The run's typed input tables (CONTRACTS.md section 2).

    Attributes
    ----------
    register, kvk_link, trade, instruments, participants : DataFrame
        Tables with reach's internal column names and dtypes.
    files : list of dict
        One entry per file read: ``role, year, path, size, sha256, version, n_rows``.
    exclusions : DataFrame
        ``table, reason, n``: rows left out (or values recoded) and why.
    repairs : DataFrame
        ``table, column, reason, n``: values read after a repair (codes zero-padded,
        KvK numbers from Excel floats, Dutch number notation, day-first dates,
        sentinels made missing, column names matched ignoring case), with counts.
    first_year, last_year : int
        The analysis window.
    programmes : dict
        Per programme key: ``label`` and ``default_year``.
    growth_markets : tuple of str
        ISO-2 codes of the growth markets.
    """

    register: pd.DataFrame
    kvk_link: pd.DataFrame
    trade: pd.DataFrame
    instruments: pd.DataFrame
    participants: pd.DataFrame
    files: list = field(default_factory=list)
    exclusions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["table", "reason", "n"]))
    first_year: int = 0
    last_year: int = 0
    programmes: dict = field(default_factory=dict)
    growth_markets: tuple = _countries.DEFAULT_GROWTH_MARKETS
    repairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["table", "column", "reason", "n"]))

    def tidy(self) -> pd.DataFrame:
        """Files read: ``role, year, file, version, n_rows, size`` (no microdata)."""
        return _files_table(self.files)

    def summary(self) -> str:
        """One line per table with its row count, then the exclusions."""
        return _inputs_summary(self.first_year, self.last_year, self.files, self.n_rows(), self.exclusions,
                               self.repairs)

    def n_rows(self) -> dict[str, int]:
        """Rows per table (``register, kvk_link, trade, instruments, participants``)."""
        return {name: len(getattr(self, name)) for name in TABLES}

    def record(self) -> "InputsRecord":
        """What was read, without the tables: files, exclusions, repairs, row counts.

        Notebook 01 shows only this; the panel build holds the tables themselves, so they
        can be freed while the panel's columns are built (:func:`reach.panel.build_run`).

        Examples
        --------
        >>> inputs.record().tidy().equals(inputs.tidy())                    # doctest: +SKIP
        True
        """
        return InputsRecord(files=[dict(f) for f in self.files], exclusions=self.exclusions.copy(),
                            repairs=self.repairs.copy(), first_year=self.first_year, last_year=self.last_year,
                            programmes=dict(self.programmes), growth_markets=tuple(self.growth_markets),
                            rows=self.n_rows())


#: The typed tables of :class:`Inputs`, in the order :func:`load_inputs` reads them.
TABLES = ("register", "kvk_link", "trade", "instruments", "participants")


@dataclass(frozen=True, repr=False)
class InputsRecord(ResultDisplay):
    """What a load of the inputs read, without the tables (:meth:`Inputs.record`).

    Attributes
    ----------
    files, exclusions, repairs, first_year, last_year, programmes, growth_markets
        As in :class:`Inputs`.
    rows : dict
        Rows per table of :data:`TABLES`.
    """

    files: list = field(default_factory=list)
    exclusions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["table", "reason", "n"]))
    repairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["table", "column", "reason", "n"]))
    first_year: int = 0
    last_year: int = 0
    programmes: dict = field(default_factory=dict)
    growth_markets: tuple = _countries.DEFAULT_GROWTH_MARKETS
    rows: dict = field(default_factory=dict)

    def tidy(self) -> pd.DataFrame:
        """Files read: ``role, year, file, version, n_rows, size`` (no microdata)."""
        return _files_table(self.files)

    def summary(self) -> str:
        """One line per table with its row count, then the exclusions."""
        return _inputs_summary(self.first_year, self.last_year, self.files, self.rows, self.exclusions, self.repairs)

    def n_rows(self) -> dict[str, int]:
        """Rows per table, as :meth:`Inputs.n_rows`."""
        return dict(self.rows)


def _files_table(files: list[dict]) -> pd.DataFrame:
    cols = ["role", "year", "file", "version", "n_rows", "size"]
    rows = [{**f, "file": Path(f["path"]).name} for f in files]
    out = pd.DataFrame(rows, columns=cols + [c for c in (rows[0] if rows else {}) if c not in cols])[cols]
    return out.astype({"year": "Int64", "version": "Int64", "n_rows": "int64", "size": "int64"})


def _inputs_summary(first_year: int, last_year: int, files: list, rows: Mapping[str, int], exclusions: pd.DataFrame,
                    repairs: pd.DataFrame) -> str:
    lines = [f"Inputs {first_year}-{last_year}: {len(files)} files read"]
    for name in TABLES:
        lines.append(f"  {name:<13} {rows.get(name, 0):>12,} rows")
    if len(exclusions):
        lines.append("Exclusions:")
        for r in exclusions.itertuples(index=False):
            lines.append(f"  {r.table:<13} {r.reason}: {r.n:,}")
    if len(repairs):
        lines.append("Repairs:")
        for r in repairs.itertuples(index=False):
            lines.append(f"  {r.table:<13} {r.column}: {r.reason}: {r.n:,}")
    return "\n".join(lines)



# ----------------------------------------------------------------------------- files


def _version_regex(pattern: str, year: int) -> re.Pattern:
    parts = re.split(r"(\{year\}|V\*|\*)", pattern)
    out = []
    for p in parts:
        if p == "{year}":
            out.append(re.escape(str(year)))
        elif p == "V*":
            out.append(r"[Vv](\d+)")
        elif p == "*":
            out.append(".*")
        else:
            out.append(re.escape(p))
    return re.compile("^" + "".join(out) + "$")


def locate(data_dir: str | Path, pattern: str, year: int, role: str = "input") -> tuple[Path, int | None, list[Path]]:
    """Find the file of ``year`` matching ``pattern``; the highest ``V<n>`` version wins.

    Parameters
    ----------
    data_dir : str or Path
        Folder the pattern is relative to.
    pattern : str
        Glob pattern with ``{year}``; ``V*`` matches a numeric version suffix.
    year : int
    role : str
        Name of the input, used in messages.

    Returns
    -------
    (path, version, candidates)
        ``version`` is None when the pattern has no ``V*``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for v in (1, 2, 10): _ = (d / f"IHG2019V{v}.sav").write_bytes(b"x")
    >>> p, v, c = locate(d, "IHG{year}V*.sav", 2019)
    >>> p.name, v, len(c)
    ('IHG2019V10.sav', 10, 3)
    """
    data_dir = Path(data_dir)
    glob = pattern.replace("{year}", str(year))
    rx = _version_regex(Path(pattern).name, year)
    candidates = sorted(p for p in data_dir.glob(glob) if p.is_file())
    if not candidates:
        raise InputError(
            f"{role}: no file for year {year}: nothing matches {glob!r} in {str(data_dir)!r} "
            f"(pattern {pattern!r}); every year of the window needs one"
        )
    versioned = []
    for p in candidates:
        m = rx.match(p.name)
        v = int(m.group(1)) if (m and m.groups() and m.group(1) is not None) else None
        versioned.append((v if v is not None else -1, p.name, p, v))
    versioned.sort()
    _, _, path, version = versioned[-1]
    if len(candidates) > 1:
        log.info("%s %d: %d versions %s; using %s", role, year, len(candidates),
                 [p.name for p in candidates], path.name)
    return path, version, candidates


def _kind(path: Path) -> str:
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None and path.suffix.lower() in (".xls", ".xlsm", ".xlsb", ".ods"):
        raise InputError(f"{path}: spreadsheet type {path.suffix!r} is not read; save it as .xlsx "
                         f"(Excel workbook) or .csv; allowed: {sorted(_SUFFIXES)}")
    if kind is None:
        raise InputError(f"{path}: unsupported file type {path.suffix!r}; allowed: {sorted(_SUFFIXES)}")
    return kind


def _csv_encoding(path: Path) -> str:
    with path.open("rb") as fh:
        return _norm.detect_encoding(fh.read(1 << 16))


def _csv_sep(path: Path) -> str:
    with path.open("r", encoding=_csv_encoding(path), errors="replace") as fh:
        head = fh.readline()
    return ";" if head.count(";") > head.count(",") else ","


def read_columns(path: str | Path) -> list[str]:
    """Column names of a .sav/.csv/.parquet file without reading its rows.

    Raises :class:`InputError` for an empty or unreadable file.
    """
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise InputError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    try:
        if kind == "sav":
            import pyreadstat

            _, meta = pyreadstat.read_sav(str(path), metadataonly=True)
            return list(meta.column_names)
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        if kind == "xlsx":
            return [str(c) for c in pd.read_excel(path, sheet_name=0, nrows=0, engine="openpyxl").columns]
        return list(pd.read_csv(path, nrows=0, sep=_csv_sep(path), encoding=_csv_encoding(path)).columns)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear message
        raise InputError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc}); is the file corrupt?") from None


def _sav_column(values: list) -> Any:
    """One column of pyreadstat's dict output as pyreadstat's pandas output would type it."""
    import pyarrow as pa

    try:
        arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return pd.Series(values)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return pd.array(arr, dtype="str")
    if pa.types.is_floating(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype("float64", copy=False)
    return pd.Series(values)


def _sav_frame(cols: Mapping[str, list]) -> pd.DataFrame:
    return pd.DataFrame({name: _sav_column(v) for name, v in cols.items()})


def _xlsx_cell_text(v: Any) -> Any:
    """One cell of a mixed-type Excel column as the text a CSV export of it would hold."""
    import datetime as _dtm

    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, (_dtm.datetime, _dtm.date)):
        # a date cell (time part 00:00 in Excel) written ISO: parse_dates reads it without guessing
        return v.strftime("%Y-%m-%d") if not isinstance(v, _dtm.datetime) or v.time() == _dtm.time(0) \
            else v.isoformat(sep=" ")
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        # an integral float is what Excel stores for a number typed as 12345678: the digits, as
        # the numeric reading path writes it (no spurious ".0" for normalise to repair)
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v)


def _xlsx_frame(path: Path, usecols: list[str]) -> pd.DataFrame:
    """The first sheet's mapped columns, typed as the other readers type them.

    A column whose cells are all numbers stays numeric (KvK numbers stored as numbers
    take the same route as an SPSS numeric KvK: digits, leading zeros restored and
    counted by :func:`reach.normalise.normalise_kvk`; a date column of serial numbers is
    read as Excel serials), a column of date cells stays datetime, and a column that
    mixes kinds becomes text cell by cell (dates ISO, integral numbers as digits),
    so the CSV rules apply to it: day-first ``d-m-yyyy``, Dutch number notation.
    """
    # header=0 on the first sheet; names compared as text (a header cell may be a number)
    df = pd.read_excel(path, sheet_name=0, engine="openpyxl", dtype=object)
    df.columns = [str(c) for c in df.columns]
    out = {}
    for c in usecols:
        col = df[c]
        vals = [v for v in col.tolist() if _xlsx_cell_text(v) is not None]
        if vals and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                        for v in vals):
            out[c] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif vals and all(isinstance(v, (pd.Timestamp,)) or hasattr(v, "strftime") for v in vals):
            out[c] = pd.to_datetime(col)
        else:
            out[c] = pd.Series([_xlsx_cell_text(v) for v in col.tolist()], index=df.index, dtype="str")
    return pd.DataFrame(out, index=df.index)


def _iter_raw(path: Path, usecols: list[str], chunksize: int) -> Iterator[pd.DataFrame]:
    kind = _kind(path)
    try:
        if kind == "sav":
            import pyreadstat

            # dict output skips pyreadstat's per-value pandas conversion (half the read time on
            # goods-level files); _sav_frame builds the same frame from the lists in one pass per column
            _, meta = pyreadstat.read_sav(str(path), metadataonly=True)
            if meta.number_rows == 0:  # dict output cannot represent a file without rows
                return
            for cols, _ in pyreadstat.read_file_in_chunks(
                pyreadstat.read_sav, str(path), chunksize=chunksize, usecols=usecols, output_format="dict"
            ):
                yield _sav_frame(cols)
                del cols
        elif kind == "parquet":
            import pyarrow.parquet as pq

            # pre_buffer would read whole row groups ahead and keep them in arrow's pool: peak memory
            # then grows with the file (5M -> 20M rows: 330 -> 530 MB); without it it stays flat (~300 MB)
            pf = pq.ParquetFile(path, pre_buffer=False)
            for batch in pf.iter_batches(batch_size=chunksize, columns=usecols):
                yield batch.to_pandas()
        elif kind == "xlsx":
            # a workbook cannot be streamed by rows through pandas; participant lists are small
            df = _xlsx_frame(path, usecols)
            for start in range(0, len(df), chunksize):
                yield df.iloc[start:start + chunksize].reset_index(drop=True)
        else:
            # strings throughout: identifiers keep their leading zeros; types are checked afterwards
            yield from pd.read_csv(path, usecols=usecols, dtype=str, chunksize=chunksize, sep=_csv_sep(path),
                                   encoding=_csv_encoding(path), keep_default_na=False, na_values=[""])
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: reading failed ({type(exc).__name__}: {exc}); is the file corrupt?") from None


# ----------------------------------------------------------------------------- coercion


def _row_examples(df: pd.DataFrame, mask: np.ndarray, cols: list[str]) -> str:
    """:func:`reach._checks.examples` with rows as the file numbers them (1 = first data row).

    Tables read with per-file ``_file``/``_row`` columns are named by those; others by position + 1.
    """
    if "_row" in df.columns:
        named = df.rename(columns={"_file": "file", "_row": "row"})
        return _checks.examples(named, mask, [c for c in ("file", "row") if c in named.columns] + cols)
    return _checks.examples(df, mask, cols, offset=1)


class _BadValues(Exception):
    """Values of one column that do not fit its type, in one chunk (totalled over the file later)."""

    def __init__(self, path, col, what, problem, frame, mask, offset):
        super().__init__(problem)
        self.path, self.col, self.what, self.problem = path, col, what, problem
        self.n = int(mask.sum())
        idx = np.flatnonzero(mask)[:_checks.N_EXAMPLES]
        # rows as the file numbers them: 1 = first data row (a spreadsheet shows it one lower, under the header)
        self.examples = frame.iloc[idx].set_axis(idx + offset + 1).rename_axis("row")

    def error(self, n: int, examples: pd.DataFrame) -> InputError:
        return InputError(f"{self.path}: column {self.col!r} ({self.what}) has {n} {self.problem}; "
                          f"examples (row 1 = first data row of the file):\n{examples.head(_checks.N_EXAMPLES).to_string()}")


class _FileState:
    """What one file's reading learns as it goes: repairs counted, the number notation of each column."""

    def __init__(self) -> None:
        self.repairs: dict[tuple[str, str], int] = {}
        self.notation: dict[str, str] = {}

    def count(self, column: str, reason: str, n: int) -> None:
        if n > 0:
            self.repairs[(column, reason)] = self.repairs.get((column, reason), 0) + int(n)


def _str_id(s: pd.Series, what: str, path: Path, col: str, offset: int, zfill: int | None = None,
            state: _FileState | None = None) -> pd.Series:
    """Identifiers/codes as stripped strings; integral numbers are written without decimals."""
    if pd.api.types.is_bool_dtype(s.dtype):
        raise InputError(f"{path}: column {col!r} ({what}) is boolean; expected codes or identifiers")
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isfinite(vals) & (vals != np.round(vals))
        if bad.any():
            raise _BadValues(path, col, what, "non-integer numeric values (expected identifiers/codes)",
                             s.to_frame(col), bad, offset)
        out = pd.Series(pd.NA, index=s.index, dtype="str")
        ok = np.isfinite(vals)
        out[ok] = pd.Series(vals[ok].astype("int64"), index=s.index[ok]).astype(str)
    elif pd.api.types.is_datetime64_any_dtype(s.dtype):
        raise InputError(f"{path}: column {col!r} ({what}) holds dates; expected codes or identifiers")
    else:
        out = s.astype("str").str.strip()
        out = out.mask(out == "")
    if zfill:
        out, n = _norm.pad_codes(out, zfill)
        if state is not None:
            state.count(what, f"code stored as a number or without leading zeros: zero-padded to {zfill} digits", n)
    return out


def _float(s: pd.Series, what: str, path: Path, col: str, offset: int, state: _FileState | None = None) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        raise InputError(f"{path}: column {col!r} ({what}) has type {s.dtype}; expected numbers")
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype("float64")
    txt = s.astype("str").str.strip()
    txt = txt.mask(txt == "")
    before = (state.notation.get(col) if state is not None else None)
    try:
        num, how = _norm.parse_dutch_numbers(txt, before)
    except _norm.NumberFormatError as exc:
        raise _BadValues(path, col, what, exc.problem, s.to_frame(col), exc.mask, offset) from None
    if state is not None and how:
        state.notation[col] = how
        if how == "nl":
            n = int((txt.str.contains(r"[.,]", regex=True).fillna(False)).sum())
            state.count(what, "number in Dutch notation (thousands dot, decimal comma) read as such", n)
    bad = (num.isna() & txt.notna()).to_numpy()
    if bad.any():
        raise _BadValues(path, col, what, f"values that are not numbers (wrong type: {s.dtype})",
                         s.to_frame(col), bad, offset)
    return num.astype("float64")


def _int(s: pd.Series, what: str, path: Path, col: str, offset: int, state: _FileState | None = None) -> pd.Series:
    f = _float(s, what, path, col, offset, state)
    vals = f.to_numpy()
    bad = ~np.isfinite(vals) | (vals != np.round(vals))
    if bad.any():
        raise _BadValues(path, col, what, "missing or non-integer values", s.to_frame(col), bad, offset)
    return pd.Series(vals.astype("int64"), index=s.index)


def _date(s: pd.Series, what: str, path: Path, col: str, offset: int, state: _FileState | None = None) -> pd.Series:
    try:
        out, repairs, bad = _norm.parse_dates(s)
    except _norm.DateFormatError as exc:
        raise _BadValues(path, col, what, exc.problem, s.to_frame(col), exc.mask, offset) from None
    if bad.any():
        what_bad = ("numbers that are not Excel date serials (expected dates)"
                    if pd.api.types.is_numeric_dtype(s.dtype) else "values that are not dates")
        raise _BadValues(path, col, what, what_bad, s.to_frame(col), bad, offset)
    if state is not None:
        for k, n in repairs.items():
            state.count(what, {"excel_serial": "Excel date serial number converted to a date",
                               "day_first": "date d-m-yyyy read day-first"}[k], n)
    # one unit whatever the source (SPSS gives us, text parsing ns): dates are days, exact in both
    return pd.to_datetime(out).astype("datetime64[us]")


_ZFILL = {"kvk": None, **_norm.CODE_WIDTH}


def _coerce(df: pd.DataFrame, colmap: Mapping[str, str], path: Path, offset: int,
            state: _FileState | None = None) -> pd.DataFrame:
    """Rename CBS -> internal names and coerce types; the error names the CBS column."""
    out = {}
    for internal, cbs in colmap.items():
        kind = _KIND.get(internal, "text")
        s = df[cbs]
        if kind in ("id", "code", "text"):
            out[internal] = _str_id(s, internal, path, cbs, offset, _ZFILL.get(internal), state)
        elif kind == "float":
            out[internal] = _float(s, internal, path, cbs, offset, state)
        elif kind == "int":
            out[internal] = _int(s, internal, path, cbs, offset, state)
        else:
            out[internal] = _date(s, internal, path, cbs, offset, state)
    return pd.DataFrame(out, index=df.index)


def _name_key(name: str) -> str:
    return re.sub(r"\s+", "", str(name).replace("\ufeff", "")).casefold()


def _check_columns(path: Path, colmap: Mapping[str, str], role: str,
                   state: _FileState | None = None) -> dict[str, str]:
    """The mapping as this file spells it: exact names, else names equal up to case, spaces and a BOM.

    CBS changes the capitals of a column between years (``WPActueel``/``WPACTUEEL``); the
    mapping stays one per role and each tolerated spelling is counted.
    """
    present = read_columns(path)
    by_key: dict[str, list[str]] = {}
    for c in present:
        by_key.setdefault(_name_key(c), []).append(c)
    resolved, missing = {}, []
    for internal, cbs in colmap.items():
        if cbs in present:
            resolved[internal] = cbs
            continue
        cands = by_key.get(_name_key(cbs), [])
        if len(cands) == 1:
            resolved[internal] = cands[0]
            log.info("%s: %s: column %r matched as %r (case/spaces differ)", role, path.name, cbs, cands[0])
            if state is not None:
                state.count(internal, f"column name matched ignoring case and spaces ({cands[0]!r} for {cbs!r})", 1)
        else:
            missing.append((internal, cbs))
    if missing:
        what = ", ".join(f"{c!r} (for {i})" for i, c in missing)
        raise InputError(f"{role}: {path}: column {what} not found; columns present: {present}")
    return resolved


def _csv_notation(path: Path, cols: list[str], chunksize: int, state: _FileState) -> None:
    """Number notation (Dutch/English) of each numeric CSV column, from the whole file.

    One pass over the numeric columns only: a chunk holding only ``4.632``-like values
    cannot tell, a later one may; the typed read then uses the notation found and
    still refuses values of the other notation or a column that never tells.
    """
    if not cols:
        return
    for raw in _iter_raw(path, cols, chunksize):
        for c in cols:
            if c in state.notation:
                continue
            txt = raw[c].astype("str").str.strip()
            try:
                _, how = _norm.parse_dutch_numbers(txt.mask(txt == ""))
            except _norm.NumberFormatError:
                continue  # mixed or ambiguous: the typed read reports it with examples
            if how:
                state.notation[c] = how
        if all(c in state.notation for c in cols):
            return


def _read_table(path: Path, colmap: Mapping[str, str], role: str, chunksize: int,
                state: _FileState | None = None, cache_dir: Path | None = None,
                sha256: str | None = None) -> Iterator[pd.DataFrame]:
    """Yield typed chunks with internal names and ``_row`` (1-based row in the file); raise for an empty file.

    With ``cache_dir``, a typed copy of the file is kept there and used while the
    file and the mapping are unchanged (:mod:`reach.cache`); ``sha256`` is the file's
    checksum when the caller has it already.
    """
    state = state if state is not None else _FileState()
    if cache_dir is not None:
        from reach.cache import cached_chunks

        def state_out() -> dict:
            return {"repairs": [[c, r, n] for (c, r), n in state.repairs.items()], "notation": state.notation}

        def state_in(saved: dict) -> None:
            for c, r, n in saved.get("repairs", []):
                state.count(c, r, n)
            state.notation.update(saved.get("notation", {}))

        yield from cached_chunks(path, sha256 or _checks.sha256(path), colmap, role, chunksize, Path(cache_dir),
                                 lambda: _read_table(path, colmap, role, chunksize, state), state_out, state_in)
        return
    colmap = _check_columns(path, colmap, role, state)
    offset = 0
    usecols = list(dict.fromkeys(colmap.values()))
    if _kind(path) == "csv":
        _csv_notation(path, [c for i, c in colmap.items() if _KIND.get(i) in ("float", "int")], chunksize, state)
    bad: _BadValues | None = None
    n_bad, examples = 0, []
    for raw in _iter_raw(path, usecols, chunksize):
        if len(raw) == 0:
            continue
        try:
            chunk = _coerce(raw, colmap, path, offset, state)
        except _BadValues as exc:
            # keep reading: the message gives the file-wide count, not the first chunk's
            if bad is None or exc.col == bad.col:
                bad = bad or exc
                n_bad += exc.n
                examples.append(exc.examples)
            offset += len(raw)
            continue
        if bad is not None:
            offset += len(raw)
            continue
        chunk["_row"] = np.arange(offset + 1, offset + len(raw) + 1, dtype="int64")
        offset += len(raw)
        yield chunk
    if bad is not None:
        raise bad.error(n_bad, pd.concat(examples))
    if offset == 0:
        raise InputError(f"{role}: {path}: file has no rows")



# ----------------------------------------------------------------------------- loader state


class _Log:
    """Collects files read and exclusions during one load."""

    def __init__(self) -> None:
        self.files: list[dict] = []
        self.excl: dict[tuple[str, str], int] = {}
        self.rep: dict[tuple[str, str, str], int] = {}
        self.cache_dir: Path | None = None
        self._sums: dict[Path, str] = {}

    def checksum(self, path: Path) -> str:
        """SHA-256 of ``path``, computed once per load (the copy's key and :attr:`Inputs.files` share it)."""
        if path not in self._sums:
            self._sums[path] = _checks.sha256(path)
        return self._sums[path]

    def read(self, path: Path, colmap: Mapping[str, str], role: str, chunksize: int,
             state: "_FileState") -> Iterator[pd.DataFrame]:
        """:func:`_read_table` through this load's cache folder (if any)."""
        sha = self.checksum(path) if self.cache_dir is not None else None
        return _read_table(path, colmap, role, chunksize, state, self.cache_dir, sha)

    def repair(self, table: str, column: str, reason: str, n: int) -> None:
        if n <= 0:
            return
        self.rep[(table, column, reason)] = self.rep.get((table, column, reason), 0) + int(n)
        # DEBUG: a rendered notebook shows INFO, and small counts there would bypass disclosure control
        log.debug("%s.%s: %d values: %s", table, column, n, reason)

    def repairs_of(self, table: str, state: "_FileState") -> None:
        for (col, reason), n in state.repairs.items():
            self.repair(table, col, reason, n)
        state.repairs.clear()

    def repair_frame(self) -> pd.DataFrame:
        rows = [{"table": t, "column": c, "reason": r, "n": n} for (t, c, r), n in self.rep.items()]
        return pd.DataFrame(rows, columns=["table", "column", "reason", "n"]).astype({"n": "int64"})

    def file(self, role: str, year: int | None, path: Path, version: int | None, n_rows: int,
             candidates: list[Path] | None = None) -> None:
        self.files.append({
            "role": role, "year": year, "path": str(path), "size": path.stat().st_size,
            "sha256": self.checksum(path), "version": version, "n_rows": int(n_rows),
            "candidates": [p.name for p in (candidates or [path])],
        })

    def exclude(self, table: str, reason: str, n: int, examples: str = "") -> None:
        if n <= 0:
            return
        self.excl[(table, reason)] = self.excl.get((table, reason), 0) + int(n)
        log.warning("%s: %d rows: %s", table, n, reason)
        if examples:  # example rows are microdata: only at debug level, never in a rendered notebook by default
            log.debug("%s: %s; examples:\n%s", table, reason, examples)

    def frame(self) -> pd.DataFrame:
        rows = [{"table": t, "reason": r, "n": n} for (t, r), n in self.excl.items()]
        return pd.DataFrame(rows, columns=["table", "reason", "n"]).astype({"n": "int64"})


def missing_role_columns(role: str, mapped: Iterable[str]) -> list[str]:
    """Internal columns of input ``role`` that a ``columns`` mapping leaves out (``[]`` when complete).

    The one statement of what each input table must provide: :mod:`reach.params` validates
    a parameter file with it before any notebook runs, and :func:`load_inputs` again.

    Examples
    --------
    >>> missing_role_columns("instruments", ["be_id", "year"])
    ['instrument']
    >>> missing_role_columns("instruments", ["year", "instrument"])
    ['kvk or be_id']
    """
    mapped = set(mapped)
    missing = [c for c in ROLES[role] if c not in mapped]
    ids = ROLE_IDS.get(role)
    if ids and not mapped & set(ids):
        missing.append(" or ".join(ids))
    return missing


def _spec(params: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    try:
        spec = params["inputs"][role]
    except KeyError:
        raise InputError(f"params: inputs.{role} is missing; needed: {list(ROLES)}") from None
    cols = spec.get("columns") or {}
    missing = missing_role_columns(role, cols)
    if missing:
        raise InputError(f"params: inputs.{role}.columns must map {missing}; got {dict(cols)}")
    return spec


def _role_files(params, role, years) -> list[tuple[int | None, Path, int | None, list[Path]]]:
    data_dir = Path(params["data_dir"])
    spec = _spec(params, role)
    if "pattern" in spec:
        out = []
        for y in years:
            p, v, c = locate(data_dir, spec["pattern"], y, role)
            out.append((y, p, v, c))
        return out
    p = data_dir / spec["path"]
    if not p.is_file():
        raise InputError(f"{role}: file {str(p)!r} does not exist")
    return [(None, p, None, [p])]


def input_files(params: Mapping[str, Any]) -> list[dict]:
    """The files :func:`load_inputs` would read, found but not read.

    Returns
    -------
    list of dict
        ``role, year, path, version, candidates`` per file, in the order and with the values of
        :attr:`Inputs.files` (``path`` absolute, ``candidates`` the names of every version found).

    Raises
    ------
    InputError
        As :func:`load_inputs` for a missing file or year.

    Examples
    --------
    >>> [f["role"] for f in input_files(params)][:2]                      # doctest: +SKIP
    ['programme:nlib', 'programme:tinl']
    """
    data_dir = Path(params["data_dir"])
    first, last = int(params["first_year"]), int(params["last_year"])
    years = list(range(first, last + 1))
    out = [{"role": f"programme:{name}", "year": None, "path": str(data_dir / spec["path"]), "version": None,
            "candidates": [Path(spec["path"]).name]} for name, spec in (params.get("programmes") or {}).items()]
    for role in ("register", "kvk_link", "trade", "instruments"):
        for year, path, version, cands in _role_files(params, role, years):
            out.append({"role": role, "year": year, "path": str(path), "version": version,
                        "candidates": [p.name for p in cands]})
    for f in out:
        if not Path(f["path"]).is_file():
            raise InputError(f"{f['role']}: file {f['path']!r} does not exist")
    return out


def _year_column(chunk: pd.DataFrame, year: int | None, role: str, path: Path) -> pd.DataFrame:
    if year is not None:
        chunk["year"] = np.int64(year)
    elif "year" not in chunk:
        raise InputError(f"{role}: {path} is one file for all years; map a 'year' column in inputs.{role}.columns")
    return chunk


def _window(df: pd.DataFrame, table: str, first: int, last: int, lg: _Log) -> pd.DataFrame:
    out = (df["year"] < first) | (df["year"] > last)
    if out.any():
        lg.exclude(table, f"year outside window {first}-{last}", int(out.sum()),
                   _row_examples(df, out.to_numpy(), ["year"]))
        df = df.loc[~out]
    return df


# ----------------------------------------------------------------------------- tables


def _read_role(params, role: str, years, lg: _Log) -> pd.DataFrame:
    """Every file of ``role`` read in chunks, with its year, logged, concatenated and cut to the window."""
    spec = _spec(params, role)
    chunksize = int(spec.get("chunksize", _DEFAULT_CHUNKSIZE))
    parts = []
    for year, path, version, cands in _role_files(params, role, years):
        n = 0
        state = _FileState()
        for ch in lg.read(path, dict(spec["columns"]), role, chunksize, state):
            n += len(ch)
            # file and row stay with each record until the checks are done: errors name them, not
            # a position in the combined all-years table
            parts.append(_year_column(ch, year, role, path).assign(_file=path.name))
        lg.file(role, year, path, version, n, cands)
        lg.repairs_of(role, state)
    df = pd.concat(parts, ignore_index=True)
    parts.clear()  # the chunks are copied into df: free them before the caller's checks copy df again
    df["year"] = df["year"].astype("int64")
    return _window(df, role, years[0], years[-1], lg)


def _order_codes(s: pd.Series) -> np.ndarray | None:
    """Integers that order like ``s`` sorts (None when no cheap exact coding exists).

    CBS identifiers are digit strings of one width (BE_ID, KvK): for those, string order
    is numeric order, and sorting int64 is ~10x cheaper than sorting Arrow strings at
    register scale. Other text is ranked by a sorted factorisation; missing values fall
    back to pandas' own sort.
    """
    if pd.api.types.is_integer_dtype(s.dtype) and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        return s.to_numpy(dtype="int64")
    if s.isna().any():
        return None
    if s.dtype == "str" or s.dtype == object:
        lens = s.str.len()
        if len(s) and lens.min() == lens.max() and lens.iloc[0] <= 18 and bool(s.str.isdigit().all()):
            return s.astype("int64").to_numpy()
        codes, _ = pd.factorize(s, sort=True)
        return codes.astype("int64")
    return None


def _stable_order(codes: list[np.ndarray]) -> np.ndarray:
    """Stable order of rows by several integer keys (first key most significant).

    The keys are packed into one int64 (mixed radix over each key's range) when the
    product of the ranges fits, and argsorted once: ~15x cheaper than ``np.lexsort``
    over three keys on a trade table, and the same permutation.
    """
    key = np.zeros(len(codes[0]), dtype=np.int64)
    total = 1
    for c in codes:
        lo = int(c.min()) if len(c) else 0
        span = (int(c.max()) - lo + 1) if len(c) else 1
        total *= span
        if total >= 2**62:
            return np.lexsort(codes[::-1])
        key = key * span + (c - lo)
    return np.argsort(key, kind="stable")


def _sort_rows(df: pd.DataFrame, keys: list[str], consume: bool = False) -> pd.DataFrame:
    """``df.sort_values(keys, ignore_index=True)`` through integer keys where exact (same order, stable).

    With ``consume``, ``df`` is emptied column by column as the sorted copy is made, so a table the
    caller drops afterwards (the trade aggregate: GBs at register scale) never exists twice.
    """
    codes = [_order_codes(df[k]) for k in keys]
    if any(c is None for c in codes):
        return df.sort_values(keys, ignore_index=True)
    order = _stable_order(codes)
    del codes
    if not consume:
        return df.take(order).reset_index(drop=True)
    cols = {}
    for c in list(df.columns):
        cols[c] = df.pop(c).take(order).reset_index(drop=True)
    return pd.DataFrame(cols, copy=False)


def _duplicated(df: pd.DataFrame, keys: list[str], keep: str | bool = "first") -> np.ndarray:
    """``df.duplicated(keys, keep=keep).to_numpy()`` through integer keys where exact."""
    codes = [_order_codes(df[k]) for k in keys]
    if any(c is None for c in codes):
        return df.duplicated(keys, keep=keep).to_numpy()
    n = len(df)
    out = np.zeros(n, bool)
    if n < 2:
        return out
    order = _stable_order(codes)  # stable: equal keys stay in row order
    same = np.ones(n - 1, bool)
    for c in codes:
        cs = c[order]
        same &= cs[1:] == cs[:-1]
    if keep == "first":
        out[order[1:][same]] = True
    elif keep == "last":
        out[order[:-1][same]] = True
    else:
        out[order[1:][same]] = True
        out[order[:-1][same]] = True
    return out


def _normalise_kvk(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """:func:`reach.normalise.normalise_kvk`, with values already 8 ASCII digits passed through.

    The link file holds one KvK number per firm and year (millions at register scale), almost all
    clean: one vectorised test takes those (the first rule of ``normalise_kvk``: kept, ``ok``)
    and only the rest go through its per-distinct-value rules.
    """
    from reach.link import normalise_kvk

    if values.dtype != "str":
        return normalise_kvk(values)
    clean = values.str.fullmatch(r"[0-9]{8}").fillna(False).to_numpy(dtype=bool)
    kvk = pd.Series(values.to_numpy(), index=values.index, dtype="str", name="kvk")
    why = pd.Series(_norm.KVK_OK, index=values.index, dtype="str", name="kvk_reason")
    if not clean.all():
        k2, w2 = normalise_kvk(values[~clean])
        kvk[~clean] = k2.to_numpy()
        why[~clean] = w2.to_numpy()
    return kvk, why


def _load_register(params, years, lg: _Log) -> pd.DataFrame:
    reg = _read_role(params, "register", years, lg)
    miss = reg["be_id"].isna()
    lg.exclude("register", "missing be_id", int(miss.sum()))
    reg = reg.loc[~miss]
    dup = _duplicated(reg, ["be_id", "year"], keep=False)
    if dup.any():
        raise InputError(
            f"register: {int(dup.sum())} rows share a (be_id, year) key; one row per business unit "
            f"and year is required. Examples (row 1 = first data row of the file):\n"
            f"{_row_examples(reg, dup, ['be_id', 'year'])}"
        )
    # CBS writes unknown employment as a negative code (-1, -5): a number no firm can have
    neg = (reg["employees"] < 0).to_numpy()
    lg.repair("register", "employees", "negative value (CBS code for unknown) set to missing", int(neg.sum()))
    if neg.any():
        reg.loc[neg, "employees"] = np.nan
    reg = reg.drop(columns=["_file", "_row"])
    reg["sbi_section"] = _countries.sbi_section(reg["sbi"]).fillna("unknown")
    n_sec = int((reg["sbi_section"] == "unknown").sum())
    lg.exclude("register", "sbi code without section (sbi_section 'unknown')", n_sec)
    reg["region"] = _countries.to_province(reg["municipality"]).fillna("unknown")
    lg.exclude("register", "municipality not in crosswalk (region 'unknown')", int((reg["region"] == "unknown").sum()))
    order = ["be_id", "year", "sbi", "sbi_section", "size_class", "employees", "municipality", "region"]
    extra = [c for c in reg.columns if c not in order]
    return _sort_rows(reg[order + extra], ["be_id", "year"])


def _load_kvk_link(params, years, lg: _Log) -> pd.DataFrame:
    kl = _read_role(params, "kvk_link", years, lg)[["kvk", "be_id", "year"]]
    norm, why = _normalise_kvk(kl["kvk"])
    for reason, n in why[why.isin(_norm.KVK_REPAIRED)].value_counts().items():
        lg.repair("kvk_link", "kvk", f"KvK number repaired: {reason}", int(n))
    bad = norm.isna() | kl["be_id"].isna()
    lg.exclude("kvk_link", "invalid kvk or missing be_id", int(bad.sum()),
               _row_examples(kl, bad.to_numpy(), ["kvk", "be_id", "year"]))
    kl = kl.assign(kvk=norm).loc[~bad]
    dup = _duplicated(kl, ["kvk", "be_id", "year"])
    lg.exclude("kvk_link", "exact duplicate rows", int(dup.sum()))
    kl = _sort_rows(kl.loc[~dup], ["kvk", "year", "be_id"])
    amb = _duplicated(kl, ["kvk", "year"])
    # one KvK number owning two business units in a year cannot be resolved from the link file:
    # keep the lowest BE_ID so the linkage is deterministic, and count it
    lg.exclude("kvk_link", "kvk linked to several be_id in one year (kept lowest be_id)", int(amb.sum()),
               _row_examples(kl, _duplicated(kl, ["kvk", "year"], keep=False), ["kvk", "be_id", "year"]))
    return kl.loc[~amb].reset_index(drop=True)


def _combine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(parts, ignore_index=True)
    return df.groupby(["be_id", "country"], sort=False, observed=True, as_index=False)[["exports", "imports"]].sum()


def _load_trade(params, years, lg: _Log) -> pd.DataFrame:
    spec = _spec(params, "trade")
    chunksize = int(spec.get("chunksize", _DEFAULT_CHUNKSIZE))
    cols = {k: spec["columns"][k] for k in ("be_id", "country", "exports", "imports")}
    if "year" in spec["columns"]:
        cols["year"] = spec["columns"]["year"]
    out = []
    for year, path, version, cands in _role_files(params, "trade", years):
        n = 0
        n_mapped = 0
        acc: list[pd.DataFrame] = []
        acc_rows = 0
        state = _FileState()
        for ch in lg.read(path, cols, "trade", chunksize, state):
            n += len(ch)
            ch = _year_column(ch, year, "trade", path)
            if year is None:
                ch = _window(ch, "trade", years[0], years[-1], lg)
            iso = _countries.to_iso2(ch["country"])
            unknown = iso.isna().to_numpy()
            if unknown.any():
                lg.exclude("trade", "unknown country code", int(unknown.sum()),
                           f"{path}:\n" + _row_examples(ch.assign(_code=ch["country"]), unknown, ["country"]))
            neg = ((ch["exports"] < 0) | (ch["imports"] < 0)).to_numpy()
            if neg.any():
                lg.exclude("trade", "negative exports or imports", int(neg.sum()),
                           f"{path}:\n" + _row_examples(ch, neg, ["exports", "imports"]))
            nob = ch["be_id"].isna().to_numpy()
            lg.exclude("trade", "missing be_id", int(nob.sum()))
            keep = ~(unknown | neg | nob)
            n_mapped += int((~unknown).sum())
            ch = ch.loc[keep, ["be_id", "year", "country", "exports", "imports"]].assign(country=iso[keep])
            ch[["exports", "imports"]] = ch[["exports", "imports"]].fillna(0.0)
            # aggregate goods codes per chunk, and fold partial sums once they outgrow the chunk:
            # memory stays O(chunksize + distinct be_id x country), whatever the file's length
            keys = ["be_id", "year", "country"]
            acc.append(ch.groupby(keys, sort=False, as_index=False)[["exports", "imports"]].sum())
            acc_rows += len(acc[-1])
            if acc_rows > 2 * chunksize and len(acc) > 1:
                folded = pd.concat(acc, ignore_index=True).groupby(keys, sort=False, as_index=False)[
                    ["exports", "imports"]].sum()
                acc, acc_rows = [folded], len(folded)
        if n_mapped == 0:
            raise InputError(
                f"trade: {path}: none of the {n} country codes in column {cols['country']!r} is ISO-2 or a known "
                f"numeric (GEONOM) code; wrong column mapped?"
            )
        lg.file("trade", year, path, version, n, cands)
        lg.repairs_of("trade", state)
        out.append(pd.concat(acc, ignore_index=True).groupby(["be_id", "year", "country"], sort=False, as_index=False)[
            ["exports", "imports"]].sum())
    trade = pd.concat(out, ignore_index=True)
    out.clear()  # the yearly aggregates are copied into trade: free them before the sort copies it again
    trade["year"] = trade["year"].astype("int64")
    return _sort_rows(trade, ["be_id", "year", "country"], consume=True)


def _load_instruments(params, years, kvk_link: pd.DataFrame, lg: _Log) -> pd.DataFrame:
    from reach.link import normalise_kvk

    ins = _read_role(params, "instruments", years, lg).drop(columns=["_file", "_row"])
    if "be_id" not in ins:
        norm, why = normalise_kvk(ins["kvk"])
        for reason, n in why[why.isin(_norm.KVK_REPAIRED)].value_counts().items():
            lg.repair("instruments", "kvk", f"KvK number repaired: {reason}", int(n))
        bad = norm.isna()
        lg.exclude("instruments", "invalid kvk", int(bad.sum()), _row_examples(ins, bad.to_numpy(), ["kvk", "year"]))
        ins = ins.assign(kvk=norm).loc[~bad]
        ins = ins.merge(kvk_link, on=["kvk", "year"], how="left", validate="many_to_one")
    elif "kvk" not in ins:
        ins["kvk"] = pd.Series(pd.NA, index=ins.index, dtype="str")
    return ins[["kvk", "be_id", "year", "instrument"]].reset_index(drop=True)


def _load_participants(params, years, lg: _Log) -> pd.DataFrame:
    from reach.link import normalise_kvk

    progs = params.get("programmes") or {}
    if not progs:
        raise InputError("params: 'programmes' is empty; at least one participant list is needed")
    parts = []
    for name, spec in progs.items():
        cols = dict(spec.get("columns") or {})
        if "kvk" not in cols:
            raise InputError(f"params: programmes.{name}.columns must map 'kvk'; got {cols}")
        unknown = [c for c in cols if c not in PROGRAMME_COLUMNS]
        if unknown:
            raise InputError(f"params: programmes.{name}.columns: unknown {unknown}; allowed {list(PROGRAMME_COLUMNS)}")
        path = Path(params["data_dir"]) / spec["path"]
        if not path.is_file():
            raise InputError(f"programme {name}: file {str(path)!r} does not exist")
        state = _FileState()
        chunks = list(lg.read(path, cols, f"programme {name}", int(spec.get("chunksize", _DEFAULT_CHUNKSIZE)),
                              state))
        df = pd.concat(chunks, ignore_index=True)
        lg.file(f"programme:{name}", None, path, None, len(df))
        lg.repairs_of(f"participants:{name}", state)
        # `row` is 0-based (CONTRACTS.md section 2); messages add 1
        df = df.rename(columns={"kvk": "kvk_raw"})
        df["row"] = df.pop("_row") - 1
        df["kvk"], _ = normalise_kvk(df["kvk_raw"])
        if df["kvk"].isna().all():
            raise InputError(
                f"programme {name}: {path}: none of the {len(df)} values in column {cols['kvk']!r} is a valid "
                f"KvK number (8 digits after removing spaces, dots and dashes); examples:\n"
                f"{_row_examples(df, np.ones(len(df), bool), ['kvk_raw'])}"
            )
        default_year = spec.get("default_year")
        if default_year is not None and (isinstance(default_year, bool) or not isinstance(default_year, (int, np.integer))):
            raise InputError(f"params: programmes.{name}.default_year must be an integer year (or null), "
                             f"got {type(default_year).__name__} {default_year!r}")
        if "year" in df:
            year = df["year"].astype("int64")
        elif "date" in df:
            year = df["date"].dt.year.astype("Float64")
            missing = year.isna().to_numpy()
            if missing.any():
                if default_year is None:
                    raise InputError(
                        f"programme {name}: {path}: {int(missing.sum())} records without a date in column "
                        f"{cols['date']!r} and no default_year; set programmes.{name}.default_year. Examples:\n"
                        f"{_row_examples(df, missing, ['date'])}"
                    )
                lg.exclude(f"participants:{name}", f"no date: year set to default_year {default_year}",
                           int(missing.sum()))
                year = year.fillna(default_year)
            year = year.astype("int64")
        elif default_year is not None:
            year = pd.Series(np.int64(default_year), index=df.index)
        else:
            raise InputError(f"programme {name}: no 'date' or 'year' column mapped and default_year is null")
        df["year"] = year.to_numpy(dtype="int64")
        df["programme"] = name
        for c in ("activity_id", "activity_type", "organiser_region"):
            if c not in df:
                df[c] = pd.Series(pd.NA, index=df.index, dtype="str")
        if "date" not in df:
            df["date"] = pd.Series(pd.NaT, index=df.index, dtype="datetime64[us]")
        parts.append(df[["programme", "kvk_raw", "kvk", "year", "date", "activity_id", "activity_type",
                         "organiser_region", "row"]])
    out = pd.concat(parts, ignore_index=True)
    out["date"] = pd.to_datetime(out["date"])
    return out


def load_inputs(params: Mapping[str, Any], cache_dir: str | Path | None = None) -> Inputs:
    """Read, map and validate every input of a run.

    Parameters
    ----------
    params : mapping
        Parsed parameter file (``params/*.yaml``) with ``data_dir`` an absolute
        path; uses ``first_year``, ``last_year``, ``inputs``, ``programmes`` and
        ``growth_markets``.
    cache_dir : str or Path, optional
        Folder for typed parquet copies of the input files (microdata: give a folder
        under ``work/<run>/``). A copy is keyed by the file's checksum and its column
        mapping: a changed file or mapping is read from the source again, an
        unreadable copy is rebuilt with a warning. None: no copies.

    Returns
    -------
    Inputs
        Typed tables with internal names (CONTRACTS.md section 2), the files
        read (version chosen, sha256) and the counted exclusions.

    Raises
    ------
    InputError
        For a missing file or year, a missing mapped column, a wrong type, an
        unreadable or empty file, duplicate register keys, or a participant
        list without any valid KvK number.

    Notes
    -----
    Trade is aggregated over goods codes while the file is streamed in chunks
    of ``inputs.trade.chunksize`` rows:
    :math:`X_{b,t,c} = \\sum_{k} x_{b,t,c,k}` over goods codes :math:`k` for
    business unit :math:`b`, year :math:`t`, country :math:`c`; partial sums are
    folded whenever they exceed twice the chunk size.

    Examples
    --------
    >>> inputs = load_inputs(params)                      # doctest: +SKIP
    >>> inputs.trade.columns.tolist()                     # doctest: +SKIP
    ['be_id', 'year', 'country', 'exports', 'imports']
    """
    try:
        first, last = int(params["first_year"]), int(params["last_year"])
        data_dir = Path(params["data_dir"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"params: first_year, last_year and data_dir are required ({exc})") from None
    if last < first:
        raise InputError(f"params: last_year {last} is before first_year {first}")
    if not data_dir.is_dir():
        raise InputError(f"params: data_dir {str(data_dir)!r} is not a folder")
    years = list(range(first, last + 1))
    lg = _Log()
    lg.cache_dir = Path(cache_dir) if cache_dir is not None else None
    # each loader leaves freed chunks and sort buffers behind in the allocators' pools: handed back
    # after each table, the next table's peak does not stack on the previous one's garbage
    participants = _load_participants(params, years, lg)
    register = _load_register(params, years, lg)
    _checks.release_memory()
    kvk_link = _load_kvk_link(params, years, lg)
    _checks.release_memory()
    trade = _load_trade(params, years, lg)
    _checks.release_memory()
    instruments = _load_instruments(params, years, kvk_link, lg)
    progs = {k: {"label": v.get("label", k), "default_year": v.get("default_year")}
             for k, v in params["programmes"].items()}
    return Inputs(
        register=register, kvk_link=kvk_link, trade=trade, instruments=instruments,
        participants=participants, files=lg.files, exclusions=lg.frame(), repairs=lg.repair_frame(),
        first_year=first, last_year=last,
        programmes=progs, growth_markets=tuple(params.get("growth_markets") or _countries.DEFAULT_GROWTH_MARKETS),
    )
