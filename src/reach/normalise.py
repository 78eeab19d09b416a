"""Undo what Excel, SPSS and hand editing do to codes, numbers, dates and text files.

Analysts get participant lists exported from Excel, registers whose storage type
changes between years and CSV files written with Dutch regional settings. Each
function here either repairs a value (and says which repair it made, so that the
caller can count it) or refuses it with a reason; it never guesses silently.

Repairs and refusals
--------------------

=========================  ==========================================  ======================================
input (as analysts get it) example                                     result
=========================  ==========================================  ======================================
KvK as Excel float         ``12345678.0``, ``1234567,0``               ``12345678``, ``01234567`` (excel_decimal)
KvK in scientific notation ``1.2345678E+07``                           ``12345678`` (scientific_notation)
  ... with digits lost     ``1.23457E+07``                             refused (scientific_digits_lost)
KvK with separators        ``1234 5678``, ``12.34.56.78``              ``12345678`` (separators_removed)
KvK without leading zeros  ``1234567``                                 ``01234567`` (leading_zeros_restored)
KvK + establishment suffix ``12345678-0001``, ``123456780001``         ``12345678`` (establishment_suffix)
codes stored as numbers    SBI ``1110``, ``1110.0``; gemcode ``14``    ``01110``, ``0014`` (zero_padded)
Dutch number notation      ``4.632.100``, ``4.632,5``                  4632100, 4632.5 (per column)
  ... ambiguous column     only values like ``4.632``                  refused with examples
dates day-first            ``05-03-2019``, ``5/3/2019``                5 March 2019
  ... not day-first        ``03/25/2019``; two-digit year ``05-03-19`` refused with examples
Excel date serials         ``43529`` in a date column                  5 March 2019 (origin 1899-12-30)
text encodings             UTF-8, UTF-8 with BOM, cp1252               decoded (:func:`read_text`)
=========================  ==========================================  ======================================

CBS special values (sentinels) are handled where the tables are read
(:mod:`reach.io`, table ``SENTINELS`` there).
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["KVK_OK", "KVK_REPAIRED", "KVK_INVALID", "normalise_kvk", "pad_codes", "parse_dutch_numbers",
           "NumberFormatError", "parse_dates", "DateFormatError", "detect_encoding", "read_text", "CODE_WIDTH"]

#: Reason of a KvK number that needed nothing (8 digits as given).
KVK_OK = "ok"
#: Reasons of a KvK number that was repaired (the repair is counted, the number is kept).
KVK_REPAIRED = ("separators_removed", "leading_zeros_restored", "excel_decimal", "scientific_notation",
                "establishment_suffix")
#: Reasons of a KvK number that cannot be used.
KVK_INVALID = ("empty", "non_digit", "too_long", "scientific_digits_lost")

#: CBS width of codes that Excel/SPSS store as numbers (leading zeros lost).
CODE_WIDTH = {"sbi": 5, "municipality": 4, "size_class": 2}

_SEP = re.compile(r"[\s.\-_/]")
_EXCEL_DECIMAL = re.compile(r"^(\d{1,12})[.,]0+$")
_SCIENTIFIC = re.compile(r"^(\d)(?:[.,](\d+))?[eE]\+?(\d{1,2})$")
_SUFFIX = re.compile(r"^(\d{1,8})[\s.\-_/]+(\d{4})$")
_FRACTION = re.compile(r"^-?\d{5,}[.,]\d{1,3}$|^-\d")


def _one_kvk(raw: str) -> tuple[str | None, str]:
    """Normalise one distinct raw value (called once per distinct value)."""
    s = raw.strip().replace("\u00a0", " ")
    if not s or s.lower() in ("nan", "none", "<na>"):
        return None, "empty"
    if re.fullmatch(r"\d{8}", s):
        return s, KVK_OK
    m = _EXCEL_DECIMAL.match(s)
    if m and len(m.group(1)) <= 8:
        return m.group(1).zfill(8), "excel_decimal"
    m = _SCIENTIFIC.match(s)
    if m:
        mantissa = m.group(1) + (m.group(2) or "")
        try:
            value = Decimal(s.replace(",", "."))
        except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
            return None, "non_digit"
        if value != value.to_integral_value():
            return None, "non_digit"
        digits = str(int(value))
        # Excel shows 6 significant digits: 1.23457E+07 is 12345700, a different (valid-looking) KvK
        if len(mantissa) < len(digits):
            return None, "scientific_digits_lost"
        if len(digits) > 8:
            return None, "too_long"
        return digits.zfill(8), "scientific_notation"
    if _FRACTION.match(s):
        # 1234567.5: a number with a fraction is no identifier (removing the dot would invent one)
        return None, "non_digit"
    m = _SUFFIX.match(s)
    if m and len(m.group(1)) + 4 > 8:
        return m.group(1).zfill(8), "establishment_suffix"
    clean = _SEP.sub("", s)
    if not clean:
        return None, "empty"
    if not clean.isdigit() or not clean.isascii():
        return None, "non_digit"
    if len(clean) == 12 and clean == s:
        # 8-digit KvK followed by a 4-digit establishment suffix, written without separator
        return clean[:8], "establishment_suffix"
    if len(clean) > 8:
        return None, "too_long"
    if clean != s:
        return clean.zfill(8), "separators_removed"
    return clean.zfill(8), "leading_zeros_restored"


def normalise_kvk(values) -> tuple[pd.Series, pd.Series]:
    """Normalise KvK numbers to 8-digit strings, with the repair or refusal of each value.

    Parameters
    ----------
    values : array-like or Series
        Raw KvK numbers: strings as typed or exported, or numbers (SPSS/Excel numeric storage).

    Returns
    -------
    (kvk, reason) : tuple of Series of str
        ``kvk`` the 8-digit number or NA; ``reason`` :data:`KVK_OK`, one of
        :data:`KVK_REPAIRED` (number kept) or one of :data:`KVK_INVALID` (NA).

    Notes
    -----
    Rules, first that applies: 8 digits as given (``ok``); an integer written
    with a zero decimal part ``12345678.0``/``1234567,0`` (``excel_decimal``:
    the dot is a decimal point, not a separator, else ``1234567.0`` would become
    the valid-looking ``12345670``); scientific notation, accepted only when
    every digit is in the mantissa (Excel's ``1.23457E+07`` has lost two);
    1-8 digits, a separator and 4 digits (``12345678-0001``: KvK plus
    establishment suffix); otherwise spaces, dots, dashes, underscores and
    slashes are removed, 12 plain digits are a KvK plus suffix, more than 8
    digits are refused and fewer get their leading zeros back. Numbers stored
    as numbers are written without decimals first. Each distinct value is
    handled once, so the cost is :math:`O(n + k)` for :math:`k` distinct values.

    Examples
    --------
    >>> kvk, why = normalise_kvk(["12345678", "1234567.0", "1.2345678E+07", "12345678-0001", "1.23457E+07", "A1"])
    >>> kvk.tolist()
    ['12345678', '01234567', '12345678', '12345678', nan, nan]
    >>> why.tolist()
    ['ok', 'excel_decimal', 'scientific_notation', 'establishment_suffix', 'scientific_digits_lost', 'non_digit']
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object if not len(values) else None)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        f = s.astype("float64")
        txt = pd.Series(pd.NA, index=s.index, dtype=object)
        fin = np.isfinite(f.to_numpy())
        whole = fin & (f.to_numpy() == np.round(f.to_numpy())) & (f.to_numpy() >= 0)
        txt[whole] = f[whole].astype("int64").astype(str).to_numpy()
        # negative or fractional numbers are refused, never turned into digits
        txt[fin & ~whole] = ("x" + f[fin & ~whole].astype(str)).to_numpy()
        s = txt
        numeric = True
    else:
        numeric = False
    codes, uniques = pd.factorize(s.astype(object).where(s.notna(), None), use_na_sentinel=True)
    kv = np.empty(len(uniques) + 1, dtype=object)
    why = np.empty(len(uniques) + 1, dtype=object)
    for i, u in enumerate(uniques):
        kv[i], why[i] = _one_kvk(str(u))
    kv[-1], why[-1] = None, "empty"
    out_k = kv[codes]
    out_r = why[codes]
    if numeric:
        # a number cannot carry separators: a short one lost its leading zeros in numeric storage
        out_r = np.where(out_r == "separators_removed", "leading_zeros_restored", out_r)
    return (pd.Series(out_k, index=s.index, dtype="str", name="kvk"),
            pd.Series(out_r, index=s.index, dtype="str", name="kvk_reason"))


def pad_codes(values: pd.Series, width: int) -> tuple[pd.Series, int]:
    """Codes as strings of their CBS ``width``, whatever the storage type.

    Parameters
    ----------
    values : Series of str
        Codes as text (numbers already written without decimals, or text such as ``"1110.0"``).
    width : int
        CBS width (:data:`CODE_WIDTH`).

    Returns
    -------
    (codes, n_repaired)
        Digit-only codes shorter than ``width`` get their leading zeros back;
        ``1110.0`` (a float written as text) loses its zero decimals first.
        ``n_repaired`` counts changed values. Other codes are left as they are.

    Examples
    --------
    >>> codes, n = pad_codes(pd.Series(["1110", "46690", "1110.0", None, "x1"]), 5)
    >>> codes.tolist(), n
    (['01110', '46690', '01110', nan, 'x1'], 2)
    """
    s = values.astype("str")
    stripped = s.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    digits = stripped.str.fullmatch(r"\d+").fillna(False).astype(bool)
    out = stripped.where(~digits, stripped.str.zfill(width))
    changed = (out != s).fillna(False).astype(bool) & s.notna()
    return out, int(changed.sum())


class NumberFormatError(ValueError):
    """A column whose number notation cannot be told (Dutch or English) or mixes both."""

    def __init__(self, problem: str, mask: np.ndarray):
        super().__init__(problem)
        self.problem, self.mask = problem, mask


_NL_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(\.\d{3})+(,\d*)?$")
_NL_DECIMAL = re.compile(r"^[-+]?\d+,\d*$")
_EN_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")
_PLAIN = re.compile(r"^[-+]?\d+$")
_DOT_DECIMAL = re.compile(r"^[-+]?\d*\.\d+([eE][-+]?\d+)?$|^[-+]?\d+\.?[eE][-+]?\d+$|^[-+]?\d+\.$")
_AMBIGUOUS = re.compile(r"^[-+]?\d{1,3}\.\d{3}$")


def parse_dutch_numbers(text: pd.Series, notation: str | None = None) -> tuple[pd.Series, str | None]:
    """Numbers written as text, in Dutch (``4.632.100,5``) or English (``4632100.5``) notation.

    Parameters
    ----------
    text : Series of str
        Stripped text, NA for empty cells.
    notation : {"nl", "en"} or None
        Notation already established for this column (earlier chunks of the file).

    Returns
    -------
    (numbers, notation)
        Float64 values (NA where not a number: the caller reports them) and the
        notation the column turned out to use (None when nothing told).

    Raises
    ------
    NumberFormatError
        When the column has both Dutch and English evidence, or only values such
        as ``4.632`` that read 4.632 in English and 4632 in Dutch.

    Notes
    -----
    Dutch evidence: a decimal comma (``4,5``) or dot-grouped thousands with more
    than one group or a comma after them (``4.632.100``, ``4.632,5``). English
    evidence: a dot followed by other than three digits (``4.5``), comma-grouped
    thousands (``4,632,100``) or an exponent. A column is read in one notation.

    Examples
    --------
    >>> nums, how = parse_dutch_numbers(pd.Series(["4.632", "1.250.000", "7,5"]))
    >>> nums.tolist(), how
    ([4632.0, 1250000.0, 7.5], 'nl')
    >>> nums, how = parse_dutch_numbers(pd.Series(["4.632", "17.25"]))
    >>> nums.tolist(), how
    ([4.632, 17.25], 'en')
    """
    t = text.astype("str")
    plain = t.str.fullmatch(_PLAIN.pattern).fillna(False).to_numpy(dtype=bool)
    amb = t.str.fullmatch(_AMBIGUOUS.pattern).fillna(False).to_numpy(dtype=bool)
    nl = (t.str.fullmatch(_NL_THOUSANDS.pattern).fillna(False).to_numpy(dtype=bool)
          | t.str.fullmatch(_NL_DECIMAL.pattern).fillna(False).to_numpy(dtype=bool)) & ~amb
    en = (t.str.fullmatch(_EN_THOUSANDS.pattern).fillna(False).to_numpy(dtype=bool)
          | t.str.fullmatch(_DOT_DECIMAL.pattern).fillna(False).to_numpy(dtype=bool)) & ~amb & ~nl
    if nl.any() and en.any():
        raise NumberFormatError("values in both Dutch (4.632,5) and English (4,632.5 or 4.5) notation", nl | en)
    how = notation or ("nl" if nl.any() else "en" if en.any() else None)
    if notation and ((notation == "nl" and en.any()) or (notation == "en" and nl.any())):
        raise NumberFormatError(f"values in {'English' if notation == 'nl' else 'Dutch'} notation after earlier "
                                f"rows in {'Dutch' if notation == 'nl' else 'English'} notation", en if notation == "nl" else nl)
    if how is None and amb.any():
        raise NumberFormatError("values such as 4.632 that read 4.632 in English and 4632 in Dutch notation "
                                "(thousands dot), and no other value tells which; export the file without "
                                "thousands separators", amb)
    if how == "nl":
        conv = t.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        conv = t.str.replace(",", "", regex=False) if how == "en" else t
    num = pd.to_numeric(conv.where(plain | nl | en | amb | t.isna(), "x"), errors="coerce")
    return pd.Series(np.asarray(num, dtype="float64"), index=text.index), how


class DateFormatError(ValueError):
    """Dates that cannot be read without guessing (not day-first, two-digit years)."""

    def __init__(self, problem: str, mask: np.ndarray):
        super().__init__(problem)
        self.problem, self.mask = problem, mask


_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")
_DMY = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?$")
_DMY2 = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{2})$")
_SERIAL = re.compile(r"^\d{4,5}(\.\d+)?$")
#: Excel serial numbers accepted as dates: 1954-10-14 .. 2064-01-31 (outside: not a serial of this century's data)
SERIAL_RANGE = (20_000, 60_000)
_EXCEL_ORIGIN = pd.Timestamp("1899-12-30")


def _serials(values: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    ok = np.isfinite(values) & (values >= SERIAL_RANGE[0]) & (values <= SERIAL_RANGE[1])
    days = np.where(ok, np.floor(np.where(ok, values, 0)), 0).astype("int64")
    out = pd.Series(_EXCEL_ORIGIN + pd.to_timedelta(days, unit="D")).where(ok)
    return out, ok


def parse_dates(values: pd.Series) -> tuple[pd.Series, dict[str, int], np.ndarray]:
    """Dates from a column declared as dates: datetimes, ISO, Dutch day-first text or Excel serials.

    Parameters
    ----------
    values : Series
        Datetimes, numbers (Excel serials) or text.

    Returns
    -------
    (dates, repairs, bad)
        ``dates`` datetime64 (NaT for empty cells and for ``bad``), ``repairs``
        counts per kind (``excel_serial``, ``day_first``), ``bad`` a mask of
        values that are not dates (the caller reports them with examples).

    Raises
    ------
    DateFormatError
        For ``dd-mm-yy`` (century unknown) and for ``a-b-yyyy`` values with
        ``b > 12`` (written month-first: the column's convention is not Dutch).

    Notes
    -----
    Text ``d-m-yyyy`` / ``d/m/yyyy`` / ``d.m.yyyy`` is read day-first, always,
    never by a parser's guess (pandas' default reads ``05-03-2019`` as 3 May).
    An Excel serial :math:`s` is the date :math:`1899\\text{-}12\\text{-}30 + \\lfloor s \\rfloor`
    days, accepted for :math:`s` in :data:`SERIAL_RANGE`.

    Examples
    --------
    >>> d, rep, bad = parse_dates(pd.Series(["05-03-2019", "2019-03-05", "43529", None]))
    >>> d.dt.strftime("%Y-%m-%d").tolist(), rep, bad.tolist()
    (['2019-03-05', '2019-03-05', '2019-03-05', nan], {'day_first': 1, 'excel_serial': 1}, [False, False, False, False])
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values, {}, np.zeros(len(values), bool)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        v = values.to_numpy(dtype="float64", na_value=np.nan)
        out, ok = _serials(v)
        out.index = values.index
        bad = np.isfinite(v) & ~ok
        return out, {"excel_serial": int(ok.sum())}, bad
    t = values.astype("str").str.strip()
    t = t.mask(t == "")
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    iso = t.str.extract(_ISO)
    dmy = t.str.extract(_DMY)
    dmy2 = t.str.fullmatch(_DMY2.pattern).fillna(False).to_numpy(dtype=bool)
    if dmy2.any():
        raise DateFormatError("dates with a two-digit year (dd-mm-yy): the century is not known; "
                              "write four-digit years", dmy2)
    is_dmy = dmy[0].notna().to_numpy()
    month_first = is_dmy & (pd.to_numeric(dmy[1], errors="coerce").to_numpy() > 12) \
        & (pd.to_numeric(dmy[0], errors="coerce").to_numpy() <= 12)
    if month_first.any():
        raise DateFormatError("dates written month-first (mm-dd-yyyy; e.g. the second number above 12); "
                              "reach reads d-m-yyyy day-first as Dutch files write them and will not guess "
                              "per value", month_first)
    is_iso = iso[0].notna().to_numpy()
    is_serial = t.str.fullmatch(_SERIAL.pattern).fillna(False).to_numpy(dtype=bool)
    parts = []
    for mask, y, m, d in ((is_iso, iso[0], iso[1], iso[2]), (is_dmy, dmy[2], dmy[1], dmy[0])):
        if mask.any():
            frame = pd.DataFrame({"year": pd.to_numeric(y[mask]), "month": pd.to_numeric(m[mask]),
                                  "day": pd.to_numeric(d[mask])})
            parts.append((mask, pd.to_datetime(frame, errors="coerce")))
    for mask, parsed in parts:
        out[mask] = parsed.to_numpy()
    n_serial = 0
    if is_serial.any():
        ser, ok = _serials(pd.to_numeric(t[is_serial]).to_numpy(dtype="float64"))
        idx = np.flatnonzero(is_serial)
        out.iloc[idx[ok]] = ser[ok].to_numpy()
        n_serial = int(ok.sum())
    bad = (out.isna() & t.notna()).to_numpy()
    repairs = {}
    n_dmy = int((is_dmy & ~bad).sum())
    if n_dmy:
        repairs["day_first"] = n_dmy
    if n_serial:
        repairs["excel_serial"] = n_serial
    return out, repairs, bad


def detect_encoding(raw: bytes) -> str:
    """The encoding of a text file's bytes: ``utf-8-sig`` (BOM), ``utf-8`` or ``cp1252``.

    Notes
    -----
    UTF-8 is strict: bytes such as ``0xe9`` (cp1252 ``é``) alone are not valid UTF-8,
    so a file that decodes as UTF-8 is UTF-8. cp1252 is what Windows Notepad and
    Excel ("CSV (comma delimited)") write on a Dutch Windows.

    Examples
    --------
    >>> detect_encoding("Curaçao".encode("cp1252")), detect_encoding("Curaçao".encode("utf-8"))
    ('cp1252', 'utf-8')
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    try:
        raw.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # a chunked read can cut a multi-byte character at the end: that alone is still UTF-8
        if exc.start >= len(raw) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
        return "cp1252"


def read_text(path: str | Path) -> tuple[str, str]:
    """Read a text file in its detected encoding; returns ``(text, encoding)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.yaml"
    >>> _ = p.write_bytes("label: Curaçao\\n".encode("cp1252"))
    >>> read_text(p)
    ('label: Curaçao\\n', 'cp1252')
    """
    raw = Path(path).read_bytes()
    enc = detect_encoding(raw)
    try:
        return raw.decode(enc), enc
    except UnicodeDecodeError:  # pragma: no cover - cp1252 leaves 5 bytes undefined
        return raw.decode("latin-1"), "latin-1"
