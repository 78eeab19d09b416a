"""Country and municipality crosswalks shipped with the package.

CBS trade files code the partner country as ISO-2 from 2016 on and as the
Eurostat GEONOM three-digit numeric code before that. :func:`to_iso2` maps
both onto ISO-2 so that one country column spans every year. Country groups
(growth markets, EU membership in a given year, World Bank income group) are
derived from ``src/reach/data/countries.csv``; municipalities map onto
provinces through ``src/reach/data/municipalities.csv``.
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "countries",
    "municipalities",
    "to_iso2",
    "is_growth_market",
    "eu_member",
    "income_group",
    "to_province",
    "sbi_section",
    "DEFAULT_GROWTH_MARKETS",
]

#: The ten growth markets of the 2023 evaluation (ISO-2), the default of ``growth_markets``.
DEFAULT_GROWTH_MARKETS: tuple[str, ...] = ("CN", "TR", "RO", "IN", "BG", "ZA", "RU", "MY", "MX", "TH")

_ISO2_RE = re.compile(r"^[A-Z]{2}$")
#: ISO 3166-1 alpha-2 codes officially assigned (249), the only two-letter codes read as countries.
ISO2_CODES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP
KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT
MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())
#: Codes Eurostat/CBS trade statistics use besides ISO 3166 (Kosovo, EL for Greece, GB/XI Northern Ireland,
#: Q* for stores and provisions, not specified or confidential): kept, they are part of total trade.
TRADE_SPECIAL_CODES = frozenset("XK XI EL QP QQ QR QS QT QU QV QW QX QY QZ".split())

# SBI 2008 divisions (first two digits) -> NACE section letter.
_SECTION_BOUNDS = [
    (1, 3, "A"), (5, 9, "B"), (10, 33, "C"), (35, 35, "D"), (36, 39, "E"),
    (41, 43, "F"), (45, 47, "G"), (49, 53, "H"), (55, 56, "I"), (58, 63, "J"),
    (64, 66, "K"), (68, 68, "L"), (69, 75, "M"), (77, 82, "N"), (84, 84, "O"),
    (85, 85, "P"), (86, 88, "Q"), (90, 93, "R"), (94, 96, "S"), (97, 98, "T"),
    (99, 99, "U"),
]


def _read_csv(name: str) -> pd.DataFrame:
    with resources.files("reach").joinpath("data", name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


@functools.cache
def countries() -> pd.DataFrame:
    """Return the country crosswalk (``iso2, geonom, name, eu_from, eu_to, wb_income``).

    ``eu_from``/``eu_to`` are nullable integers (``eu_to`` is the last year of
    membership), ``geonom`` a three-digit string.

    Examples
    --------
    >>> countries().set_index("iso2").loc["CN", "geonom"]
    '720'
    """
    df = _read_csv("countries.csv")
    for col in ("eu_from", "eu_to"):
        df[col] = pd.to_numeric(df[col].replace("", None)).astype("Int64")
    df["geonom"] = df["geonom"].str.zfill(3)
    return df


@functools.cache
def municipalities() -> pd.DataFrame:
    """Return the municipality crosswalk (``gemcode`` 4-digit str, ``name``, ``province``).

    Examples
    --------
    >>> municipalities().set_index("gemcode").loc["0363", "province"]
    'NH'
    """
    df = _read_csv("municipalities.csv")
    df["gemcode"] = df["gemcode"].str.zfill(4)
    return df


@functools.cache
def _code_map() -> dict[str, str]:
    cw = countries()
    mapping = dict(zip(cw["geonom"], cw["iso2"]))
    mapping.update({g.lstrip("0") or "0": i for g, i in zip(cw["geonom"], cw["iso2"])})
    return mapping


def _as_str_series(codes) -> pd.Series:
    s = codes if isinstance(codes, pd.Series) else pd.Series(codes)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        # numeric codes from SPSS arrive as floats: 720.0 -> "720"
        out = pd.Series(pd.NA, index=s.index, dtype="str")
        ok = s.notna()
        out[ok] = s[ok].astype("int64").astype(str)
        return out
    return s.astype("str")


def to_iso2(codes: Iterable | pd.Series) -> pd.Series:
    """Map country codes (ISO-2 or GEONOM numeric) onto ISO-2.

    Parameters
    ----------
    codes : array-like or Series
        ISO-2 codes (any case, surrounding spaces allowed) or GEONOM numeric
        codes as 3-digit strings, strings without leading zeros or integers.

    Returns
    -------
    Series of str
        ISO-2 codes, aligned with ``codes``; missing where the code is unknown.
        Two-letter codes must be officially assigned ISO 3166-1 codes
        (:data:`ISO2_CODES`) or Eurostat's trade codes (:data:`TRADE_SPECIAL_CODES`);
        a typo such as ``ZZ`` or ``N1`` is unknown (the loader counts and leaves it out);
        numeric codes must be in the crosswalk.

    Notes
    -----
    The mapping is done once per distinct code (categorical), so the cost is
    :math:`O(n)` in the rows plus :math:`O(k)` dictionary look-ups for the
    :math:`k` distinct codes.

    Examples
    --------
    >>> to_iso2(["720", "1", 3, " cn", "999", "ZZ"]).tolist()
    ['CN', 'FR', 'NL', 'CN', nan, nan]
    """
    s = _as_str_series(codes)
    cat = s.astype("category")
    cats = pd.Index(cat.cat.categories.astype(str))
    cleaned = cats.str.strip().str.upper()
    mapping = _code_map()
    numeric = cleaned.str.fullmatch(r"\d{1,3}")
    mapped = []
    for raw, num in zip(cleaned, numeric):  # loop over distinct codes only
        if num:
            mapped.append(mapping.get(raw.zfill(3), mapping.get(raw.lstrip("0") or "0")))
        elif raw in ISO2_CODES or raw in TRADE_SPECIAL_CODES:
            mapped.append(raw)
        else:
            mapped.append(None)
    lookup = pd.Series(mapped, index=cat.cat.categories, dtype="str")
    codes_ = cat.cat.codes.to_numpy()
    values = lookup.to_numpy(dtype=object, na_value=None)
    out = np.where(codes_ >= 0, values[np.clip(codes_, 0, None)] if len(values) else None, None)
    return pd.Series(out, index=s.index, dtype="str")


def is_growth_market(iso2: Iterable | pd.Series, markets: Sequence[str] = DEFAULT_GROWTH_MARKETS) -> pd.Series:
    """Return 0/1 (int64): is the ISO-2 code one of ``markets``.

    Examples
    --------
    >>> is_growth_market(["CN", "DE"]).tolist()
    [1, 0]
    """
    s = pd.Series(iso2) if not isinstance(iso2, pd.Series) else iso2
    return s.isin(list(markets)).astype("int64")


def eu_member(iso2: Iterable | pd.Series, year: int | Iterable | pd.Series) -> pd.Series:
    """Return 0/1 (int64): was the country an EU member in ``year``.

    Membership runs from ``eu_from`` through ``eu_to`` inclusive (the UK: 1973-2019).

    Examples
    --------
    >>> eu_member(["GB", "GB", "HR", "CN"], [2019, 2020, 2013, 2020]).tolist()
    [1, 0, 1, 0]
    """
    s = pd.Series(iso2) if not isinstance(iso2, pd.Series) else iso2
    yr = np.broadcast_to(np.asarray(year, dtype="int64"), (len(s),))
    cw = countries().set_index("iso2")
    start = s.map(cw["eu_from"]).astype("Float64").fillna(np.inf).to_numpy(dtype=float)
    end = s.map(cw["eu_to"]).astype("Float64").fillna(np.inf).to_numpy(dtype=float)
    has_start = np.isfinite(start)
    member = has_start & (yr >= start) & (yr <= end)
    return pd.Series(member.astype("int64"), index=s.index)


def income_group(iso2: Iterable | pd.Series) -> pd.Series:
    """World Bank income group (``high``, ``upper_middle``, ``lower_middle``, ``low``) of each country.

    The crosswalk holds one classification per country; unknown countries get NA.

    Examples
    --------
    >>> income_group(["CN", "NL"]).tolist()
    ['upper_middle', 'high']
    """
    s = pd.Series(iso2) if not isinstance(iso2, pd.Series) else iso2
    return s.map(countries().set_index("iso2")["wb_income"]).astype("str")


def to_province(gemcode: Iterable | pd.Series) -> pd.Series:
    """Map municipality codes (4-digit, leading zeros optional) onto province codes; NA if unknown.

    Examples
    --------
    >>> to_province(["363", "0599", "9999"]).tolist()
    ['NH', 'ZH', nan]
    """
    s = _as_str_series(gemcode)
    cat = s.astype("category")
    lut = municipalities().set_index("gemcode")["province"]
    cats = pd.Index(cat.cat.categories.astype(str)).str.strip().str.zfill(4)
    mapped = pd.Series(cats.map(lut), index=cat.cat.categories)
    return pd.Series(cat.map(mapped).astype("str"), index=s.index)


def sbi_section(sbi: Iterable | pd.Series) -> pd.Series:
    """Map SBI 2008 codes onto their section letter (A-U) via the two-digit division; NA if unknown.

    Examples
    --------
    >>> sbi_section(["01131", "46690", "7022", "xx"]).tolist()
    ['A', 'G', 'M', nan]
    """
    s = _as_str_series(sbi)
    cat = s.astype("category")
    cats = pd.Index(cat.cat.categories.astype(str)).str.strip()
    div = pd.to_numeric(cats.str.slice(0, 2).where(cats.str.match(r"^\d{2}")), errors="coerce")
    letters = np.full(len(cats), None, dtype=object)
    div_arr = np.asarray(div, dtype=float)
    for lo, hi, letter in _SECTION_BOUNDS:
        letters[(div_arr >= lo) & (div_arr <= hi)] = letter
    mapped = pd.Series(letters, index=cat.cat.categories, dtype="str")
    return pd.Series(cat.map(mapped).astype("str"), index=s.index)
