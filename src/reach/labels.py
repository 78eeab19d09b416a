"""The one label table: code names of the analysis -> words a policy reviewer knows.

Every reader-facing text (narrative, table headers, figure titles and axes) takes
its names from here, so a reviewer never reads ``log_exports``, ``dr``,
``notyettreated`` or a size-class code, and a renamed label changes everywhere
at once. Lookups are one call per use::

    labels.outcome("log_exports")        # 'exports (log)'
    labels.method("dr")                  # 'doubly robust'
    labels.control_group("notyettreated")
    labels.size_class("21")              # '2 employees'
    labels.programme(params, "tinl")     # the label in params, else the key
    labels.region("NH")                  # 'Noord-Holland'

An unknown code is an error that lists the known ones (a silent fallback would
let a code name slip into a report); :func:`label` is the lenient look-up for
columns of mixed content.
"""
from __future__ import annotations


from typing import Any, Mapping

import pandas as pd

__all__ = ["OUTCOMES", "METHODS", "CONTROL_GROUPS", "SAMPLES", "SIZE_CLASSES", "REGIONS", "COMPARISON_GROUPS",
           "COLUMNS", "TABLE", "outcome", "method", "control_group", "sample", "size_class", "region",
           "comparison_group", "column", "covariate", "COVARIATES", "programme", "label", "relabel", "code_names",
           "is_log_outcome", "BUCKETS", "bucket", "EFFECT_AXES", "effect_axis", "CHARACTERISTICS", "characteristic",
           "ACTIVITY_TYPES"]

#: Outcomes of the effect notebook (reach.panel columns).
OUTCOMES: dict[str, str] = {
    "log_exports": "exports (log)",
    "ihs_exports": "exports (inverse hyperbolic sine)",
    "exports": "exports (EUR)",
    "exporter": "exporting (share of firms)",
    "n_dest": "number of destination countries",
    "log_exports_gm": "exports to growth markets (log)",
    "exports_gm": "exports to growth markets (EUR)",
    "log_imports": "imports (log)",
    "importer": "importing (share of firms)",
    "intl_active": "trading internationally (share of firms)",
    "log_employees": "employees (log)",
    "employees": "employees",
}
#: Estimation methods (did est_method, matching methods, aggregations).
METHODS: dict[str, str] = {
    "dr": "doubly robust",
    "ipw": "inverse probability weighting",
    "reg": "outcome regression",
    "nearest": "nearest-neighbour matching",
    "cem": "coarsened exact matching",
    "ebal": "entropy balancing",
    "logit": "logistic regression",
    "gbm": "gradient boosting",
    "twfe": "two-way fixed effects",
    "naive": "users minus non-users (naive)",
    "simple": "average over all years after first use",
    "dynamic": "by years since first use",
    "group": "by first-use year",
    "calendar": "by calendar year",
}
#: Comparison groups of the difference-in-differences estimator.
CONTROL_GROUPS: dict[str, str] = {
    "nevertreated": "firms that never used the programme",
    "notyettreated": "firms not yet using the programme",
}
#: Estimation samples of the effect notebook.
SAMPLES: dict[str, str] = {
    "matched": "matched sample",
    "full": "all firms",
}
#: Comparison groups of the reach notebook.
COMPARISON_GROUPS: dict[str, str] = {
    "business_economy": "all firms of the business economy",
    "target_group": "firms in the programme's target group",
}
#: CBS size classes (GkSbsGecoordineerd) -> employees.
SIZE_CLASSES: dict[str, str] = {
    "00": "0 employees", "10": "1 employee", "21": "2 employees", "22": "3-4 employees",
    "30": "5-9 employees", "40": "10-19 employees", "50": "20-49 employees", "60": "50-99 employees",
    "71": "100-149 employees", "72": "150-199 employees", "81": "200-249 employees",
    "82": "250-499 employees", "91": "500-999 employees", "92": "1,000-1,999 employees",
    "93": "2,000 employees or more",
}
#: Province codes (reach/data/municipalities.csv) -> names.
REGIONS: dict[str, str] = {
    "GR": "Groningen", "FR": "Fryslân", "DR": "Drenthe", "OV": "Overijssel", "FL": "Flevoland",
    "GE": "Gelderland", "UT": "Utrecht", "NH": "Noord-Holland", "ZH": "Zuid-Holland", "ZE": "Zeeland",
    "NB": "Noord-Brabant", "LI": "Limburg", "unknown": "region unknown",
}
#: Matching and effect covariates (reach.panel columns, measured before first use).
COVARIATES: dict[str, str] = {
    "log_exports_lag1": "exports in the year before (log)",
    "export_growth_lag1": "export growth in the year before",
    "n_dest_lag1": "destination countries in the year before",
    "log_employees_lag1": "employees in the year before (log)",
    "importer_lag1": "importing in the year before",
    "exporter_lag1": "exporting in the year before",
    "instr_ever_before": "used a public instrument before",
    "log_employees": "employees (log)",
    "sbi_section": "sector (SBI section)",
    "size_class": "size class",
    "distance": "propensity score",
    "(Intercept)": "intercept",
}
#: Linkage waterfall buckets (reach.link.BUCKETS, docs/CONTRACTS.md section 3) -> what happened to a record.
BUCKETS: dict[str, str] = {
    "invalid_kvk": "KvK number invalid",
    "duplicate_record": "duplicate record",
    "outside_window": "outside the analysis years",
    "kvk_not_found": "KvK number in no KvK link file",
    "not_linked_that_year": "KvK number not linked that year",
    "not_in_register": "business unit not in the register that year",
    "linked": "linked to a business unit",
    "Total": "all records",
}
#: The effect's unit on a figure axis, per outcome (log outcomes: log points, about a percent change for small values).
EFFECT_AXES: dict[str, str] = {
    "log_exports": "Effect on exports (log points)",
    "ihs_exports": "Effect on exports (inverse hyperbolic sine points)",
    "exports": "Effect on exports (EUR)",
    "exporter": "Effect on the share of firms exporting (proportion)",
    "n_dest": "Effect on the number of destination countries",
    "log_exports_gm": "Effect on exports to growth markets (log points)",
    "exports_gm": "Effect on exports to growth markets (EUR)",
    "log_imports": "Effect on imports (log points)",
    "importer": "Effect on the share of firms importing (proportion)",
    "intl_active": "Effect on the share of firms trading internationally (proportion)",
    "log_employees": "Effect on employees (log points)",
    "employees": "Effect on employees",
}
#: TINL activity types (participant list ``Activiteit_type``) -> English.
ACTIVITY_TYPES: dict[str, str] = {
    "handelsmissie": "trade mission", "beurs": "trade fair", "webinar": "webinar", "matchmaking": "matchmaking",
    "portal": "portal", "consortium": "consortium",
}
#: Firm characteristics of the reach notebook's target-group profile.
CHARACTERISTICS: dict[str, str] = {
    "size_class": "size class", "destinations": "destinations", "exporter": "exporting",
    "reason (first applying)": "reason (first applying)",
}
#: Column names of tables shown to readers.
COLUMNS: dict[str, str] = {
    "n_firms": "firms", "n_users": "users", "n_treated": "users", "n_control": "comparison firms",
    "estimate": "estimate", "std_error": "standard error", "conf_low": "lower bound", "conf_high": "upper bound",
    "pct_change": "change in exports (%)", "pct_low": "lower bound (%)", "pct_high": "upper bound (%)",
    "share_users": "users", "share_comparison": "comparison group",
    "simple_att": "effect", "simple_se": "standard error",
    "simple_conf_low": "lower bound", "simple_conf_high": "upper bound",
    "pretest_p_value": "pre-trend test p-value", "detectable": "effect detectable",
    "n_control_all": "comparison firms (all)", "n_control_min": "smallest comparison group in a cell",
}

#: Every table, by kind (the lint of rendered reports searches for these code names).
TABLE: dict[str, dict[str, str]] = {
    "outcome": OUTCOMES, "method": METHODS, "control_group": CONTROL_GROUPS, "sample": SAMPLES,
    "comparison_group": COMPARISON_GROUPS, "size_class": SIZE_CLASSES, "region": REGIONS, "column": COLUMNS,
    "covariate": COVARIATES, "bucket": BUCKETS, "effect_axis": EFFECT_AXES, "characteristic": CHARACTERISTICS,
    "activity_type": ACTIVITY_TYPES,
}


def _get(kind: str, code: Any) -> str:
    table = TABLE[kind]
    key = str(code)
    if key not in table:
        raise ValueError(f"no {kind.replace('_', ' ')} label for {code!r}; known codes: {sorted(table)}")
    return table[key]


def outcome(code: str) -> str:
    """Reader-facing name of an outcome.

    Examples
    --------
    >>> outcome("log_exports"), outcome("n_dest")
    ('exports (log)', 'number of destination countries')
    """
    return _get("outcome", code)


def method(code: str) -> str:
    """Reader-facing name of an estimation method.

    Examples
    --------
    >>> method("dr")
    'doubly robust'
    """
    return _get("method", code)


def control_group(code: str) -> str:
    """Reader-facing name of a difference-in-differences comparison group.

    Examples
    --------
    >>> control_group("notyettreated")
    'firms not yet using the programme'
    """
    return _get("control_group", code)


def sample(code: str) -> str:
    """Reader-facing name of an estimation sample (``matched``, ``full``).

    Examples
    --------
    >>> sample("full")
    'all firms'
    """
    return _get("sample", code)


def comparison_group(code: str) -> str:
    """Reader-facing name of the reach notebook's comparison group.

    Examples
    --------
    >>> comparison_group("business_economy")
    'all firms of the business economy'
    """
    return _get("comparison_group", code)


def size_class(code: Any) -> str:
    """Employees of a CBS size class (``GkSbsGecoordineerd``); integer codes are zero-padded.

    Examples
    --------
    >>> size_class("21"), size_class(0)
    ('2 employees', '0 employees')
    """
    key = f"{int(code):02d}" if isinstance(code, (int,)) or (isinstance(code, str) and code.isdigit()) else code
    return _get("size_class", key)


def region(code: str) -> str:
    """Province name of a region code.

    Examples
    --------
    >>> region("NH")
    'Noord-Holland'
    """
    return _get("region", code)


def bucket(code: str) -> str:
    """What happened to a participant record, for a linkage-waterfall bucket code.

    Examples
    --------
    >>> bucket("not_linked_that_year"), bucket("Total")
    ('KvK number not linked that year', 'all records')
    """
    return _get("bucket", code)


def effect_axis(code: str) -> str:
    """Axis title of an effect on outcome ``code``, with its unit; an unlisted outcome reads "Effect on <label>".

    Examples
    --------
    >>> effect_axis("log_exports"), effect_axis("my_var")
    ('Effect on exports (log points)', 'Effect on my var')
    """
    return EFFECT_AXES.get(str(code)) or f"Effect on {label(code, 'outcome').replace('_', ' ')}"


def characteristic(code: str) -> str:
    """A characteristic of the target-group profile (``size_class`` -> "size class").

    Examples
    --------
    >>> characteristic("size_class")
    'size class'
    """
    return CHARACTERISTICS.get(str(code), str(code).replace("_", " "))


def column(code: str) -> str:
    """Reader-facing header of a table column; unknown columns are returned with ``_`` as spaces.

    Examples
    --------
    >>> column("n_control"), column("cohort_year")
    ('comparison firms', 'cohort year')
    """
    return COLUMNS.get(code, str(code).replace("_", " "))


def covariate(code: str) -> str:
    """A covariate's label; an unlisted covariate reads as its name with spaces for underscores.

    Examples
    --------
    >>> covariate("log_exports_lag1"), covariate("my_var")
    ('exports in the year before (log)', 'my var')
    """
    return COVARIATES.get(code, str(code).replace("_", " "))


def programme(params: Mapping[str, Any] | None, key: str) -> str:
    """A programme's label from the parameters (``programmes.<key>.label``).

    Parameters
    ----------
    params : mapping or None
        The run's parameters, or just their ``programmes`` mapping.
    key : str
        Programme key (``tinl``).

    Examples
    --------
    >>> programme({"programmes": {"tinl": {"label": "Trade and Innovate NL"}}}, "tinl")
    'Trade and Innovate NL'
    """
    progs = (params or {}).get("programmes", params) or {}
    if key not in progs:
        raise ValueError(f"no programme {key!r} in the parameters; known programmes: {sorted(progs)}")
    spec = progs[key] or {}
    text = spec.get("label") if isinstance(spec, Mapping) else None
    if not text:
        raise ValueError(f"programme {key!r} has no label: set programmes.{key}.label in the parameter file")
    return str(text)


def label(code: Any, kind: str | None = None) -> str:
    """Lenient look-up: the label of ``code`` in table ``kind`` (or in any table), else ``code`` itself.

    Examples
    --------
    >>> label("dr"), label("unlisted")
    ('doubly robust', 'unlisted')
    """
    tables = [TABLE[kind]] if kind else list(TABLE.values())
    for t in tables:
        if str(code) in t:
            return t[str(code)]
    return str(code)


def is_log_outcome(code: str) -> bool:
    """Whether an effect on ``code`` is in log points (then ``exp(b) - 1`` is a relative change).

    Examples
    --------
    >>> is_log_outcome("log_exports"), is_log_outcome("n_dest")
    (True, False)
    """
    return str(code).startswith(("log_", "ihs_"))


def relabel(df: pd.DataFrame, kinds: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A copy of ``df`` for readers: values of the named columns and every header labelled.

    Parameters
    ----------
    df : DataFrame
    kinds : mapping, optional
        ``{column: kind}``: the values of ``column`` are labelled with table ``kind``.

    Examples
    --------
    >>> relabel(pd.DataFrame({"outcome": ["n_dest"], "n_firms": [3]}), {"outcome": "outcome"}).to_dict("list")
    {'outcome': ['number of destination countries'], 'firms': [3]}
    """
    out = df.copy()
    for col, kind in (kinds or {}).items():
        out[col] = out[col].map(lambda v: label(v, kind))
    return out.rename(columns=column)


def code_names(min_length: int = 4) -> list[str]:
    """Code names a reader must not see in prose or titles (the lint of rendered reports uses these).

    Only codes that are not ordinary words themselves (they contain ``_`` or are a
    known jargon token): ``full``, ``group`` or ``simple`` are plain English.

    Examples
    --------
    >>> "log_exports" in code_names() and "notyettreated" in code_names() and "full" not in code_names()
    True
    """
    jargon = {"notyettreated", "nevertreated", "ihs_exports", "n_dest"}
    found = set()
    for kind in ("outcome", "control_group", "comparison_group", "bucket"):
        for code in TABLE[kind]:
            if ("_" in code or code in jargon) and len(code) >= min_length:
                found.add(code)
    found |= {c for c in COLUMNS if "_" in c}
    return sorted(found | (jargon & set().union(*TABLE.values())))



