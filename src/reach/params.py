"""Run parameters: load a ``params/*.yaml``, apply overrides, validate before any notebook runs.

Papermill only warns about parameters a notebook does not declare, and a typo in
a YAML key would silently fall back to the notebook's default. Every key is
therefore checked here against :data:`SCHEMA`, each with its type, its allowed
values and one line of documentation (the README's parameter table is built
from the same schema).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from reach import io as _io
from reach._checks import choice_error

__all__ = [
    "SCHEMA",
    "RUNNER_KEYS",
    "ParamsError",
    "load_params",
    "apply_overrides",
    "validate_params",
    "parse_override",
    "markdown_table",
]

#: Panel columns an outcome may name (CONTRACTS.md section 4).
OUTCOMES = (
    "log_exports",
    "ihs_exports",
    "exporter",
    "n_dest",
    "log_exports_gm",
    "exports",
    "exports_gm",
    "log_imports",
    "importer",
    "intl_active",
)
#: Panel columns usable as matching covariates (pre-treatment by construction).
COVARIATES = (
    "log_exports_lag1",
    "log_exports_lag2",
    "export_growth_lag1",
    "exporter_lag1",
    "n_dest_lag1",
    "log_employees_lag1",
    "importer_lag1",
    "instr_ever_before",
    "instr_n_before",
)
#: Panel columns usable as exact-matching strata.
STRATA = ("sbi_section", "size_class", "region")
#: Panel columns usable in ``xformla`` (values are taken at the base period).
XFORMLA_TERMS = ("log_employees", "employees", "log_exports", "exporter", "n_dest", "importer", "instr_ever_before")

DISCLOSURE_KEYS = ("min_units", "dominance_k", "dominance_max", "p_ratio_min", "min_dof", "min_treated", "min_control", "min_units_each_side", "rounding")
#: Input tables and the columns each must map, programme-list columns: :mod:`reach.io` reads them, so it says.
INPUT_ROLES = _io.ROLES
PROGRAMME_COLUMNS = _io.PROGRAMME_COLUMNS

#: Keys the runner uses itself; they need not be notebook parameters.
RUNNER_KEYS = ("show_code",)
#: Keys the runner injects into every notebook (absolute folders of the run).
INJECTED_KEYS = ("output_dir", "work_dir")


class ParamsError(ValueError):
    """A parameter file or override that cannot run; the message says what is allowed."""


@dataclass(frozen=True)
class Spec:
    """Type, check and one line of documentation for one top-level key."""

    kind: type | tuple[type, ...]
    doc: str
    check: Callable[[Any, dict], str | None] | None = None


def _choice(*allowed: str) -> Callable[[Any, dict], str | None]:
    def check(value: Any, _: dict) -> str | None:
        return choice_error(value, allowed)

    return check


def _match_methods(value: Any, _: dict) -> str | None:
    allowed = ["nearest", "cem", "ebal"]
    vals = [value] if isinstance(value, str) else list(value)
    if not vals or any(v not in allowed for v in vals) or len(set(vals)) != len(vals):
        return f"must be one of {allowed} or a list of distinct ones, got {value!r}"
    return None


def _subset(allowed: Iterable[str]) -> Callable[[Any, dict], str | None]:
    allowed = tuple(allowed)

    def check(value: Any, _: dict) -> str | None:
        bad = [v for v in value if v not in allowed]
        if bad:
            return f"unknown entries {bad}; allowed: {list(allowed)}"
        return None

    return check


def _positive(value: Any, _: dict) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _nonnegative(value: Any, _: dict) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value!r}"


def _year(value: Any, _: dict) -> str | None:
    return None if 1990 <= value <= 2100 else f"must be a year between 1990 and 2100, got {value!r}"


def _alpha(value: Any, _: dict) -> str | None:
    return None if 0 < value < 1 else f"must lie strictly between 0 and 1, got {value!r}"


def _ratio(value: Any, _: dict) -> str | None:
    return None if value >= 1 else f"must be an integer >= 1, got {value!r}"


def _programme(value: Any, params: dict) -> str | None:
    known = list((params.get("programmes") or {}).keys())
    return None if value in known else f"must name one of the programmes {known}, got {value!r}"


def _iso2_list(value: Any, _: dict) -> str | None:
    bad = [v for v in value if not (isinstance(v, str) and re.fullmatch(r"[A-Z]{2}", v))]
    return f"entries must be ISO-2 country codes (two capitals), got {bad}" if bad else None


def _xformla(value: Any, _: dict) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text.startswith("~"):
        return f"must look like '~ x1 + x2' (or null), got {value!r}"
    terms = [t.strip() for t in text[1:].split("+") if t.strip() and t.strip() != "1"]
    bad = [t for t in terms if t not in XFORMLA_TERMS]
    if bad:
        return f"unknown terms {bad}; allowed: {list(XFORMLA_TERMS)}"
    return None


def _disclosure(value: Any, _: dict) -> str | None:
    bad = [k for k in value if k not in DISCLOSURE_KEYS]
    if bad:
        return f"unknown rules {bad}; allowed: {list(DISCLOSURE_KEYS)}"
    try:  # the same validation the notebooks meet, before any notebook runs (issue 13)
        from reach.disclosure import Rules

        Rules(**value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    for k, v in value.items():
        if k == "rounding":
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            return f"rule {k!r} must be a non-negative number, got {v!r}"
    for k in ("dominance_max", "p_ratio_min"):
        if k in value and not 0 < value[k] <= 1:
            return f"rule {k!r} must lie in (0, 1], got {value[k]!r}"
    return None


def _target_group(value: Any, _: dict) -> str | None:
    need = ("min_employees", "max_employees", "min_destinations", "max_destinations")
    missing = [k for k in need if k not in value]
    extra = [k for k in value if k not in need]
    if missing or extra:
        return f"needs exactly the keys {list(need)}; missing {missing}, unknown {extra}"
    if value["min_employees"] > value["max_employees"] or value["min_destinations"] > value["max_destinations"]:
        return f"minimum above maximum in {value}"
    return None


def _inputs(value: Any, _: dict) -> str | None:
    missing = [r for r in INPUT_ROLES if r not in value]
    extra = [r for r in value if r not in INPUT_ROLES]
    if missing or extra:
        return f"needs the tables {list(INPUT_ROLES)}; missing {missing}, unknown {extra}"
    for role, spec in value.items():
        if not isinstance(spec, Mapping):
            return f"{role}: must be a mapping with 'pattern' or 'path' and 'columns'"
        if ("pattern" in spec) == ("path" in spec):
            return f"{role}: give exactly one of 'pattern' (per-year files, with {{year}}) or 'path'"
        if "pattern" in spec and "{year}" not in spec["pattern"]:
            return f"{role}: pattern {spec['pattern']!r} must contain {{year}}"
        cols = spec.get("columns")
        if not isinstance(cols, Mapping):
            return f"{role}: 'columns' must map reach names to the file's column names"
        need = _io.missing_role_columns(role, cols)
        if need:
            return f"{role}: columns must map {list(INPUT_ROLES[role])}; missing {need}"
        unknown = [k for k in spec if k not in ("pattern", "path", "columns", "chunksize")]
        if unknown:
            return f"{role}: unknown keys {unknown}; allowed: ['pattern', 'path', 'columns', 'chunksize']"
    return None


def _programmes(value: Any, _: dict) -> str | None:
    if not value:
        return "must name at least one programme"
    for name, spec in value.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
            return f"programme key {name!r} must be lower-case letters, digits, underscores"
        if not isinstance(spec, Mapping) or "path" not in spec or "columns" not in spec:
            return f"{name}: needs 'path' and 'columns'"
        unknown = [k for k in spec if k not in ("label", "path", "columns", "default_year")]
        if unknown:
            return f"{name}: unknown keys {unknown}; allowed: ['label', 'path', 'columns', 'default_year']"
        cols = spec["columns"]
        bad = [k for k in cols if k not in PROGRAMME_COLUMNS]
        if bad or "kvk" not in cols:
            return f"{name}: columns must include 'kvk' and may map {list(PROGRAMME_COLUMNS)}; unknown {bad}"
        if "date" not in cols and "year" not in cols and spec.get("default_year") is None:
            return f"{name}: a list without 'date' or 'year' needs 'default_year'"
        dy = spec.get("default_year")
        if dy is not None and (isinstance(dy, bool) or not isinstance(dy, int)):
            # 2019.5 would silently become 2019 further on
            return f"{name}: default_year must be an integer year (or null), got {type(dy).__name__} {dy!r}"
        if dy is not None and not 1990 <= dy <= 2100:
            return f"{name}: default_year must be a year between 1990 and 2100, got {dy!r}"
    return None


def _analyse(value: Any, params: dict) -> str | None:
    known = list((params.get("programmes") or {}).keys())
    if value == "all":
        return None
    if isinstance(value, str) or not value:
        return f"must be 'all' or a non-empty list of programme keys among {known}, got {value!r}"
    bad = [v for v in value if v not in known]
    return f"unknown programmes {bad}; known programmes: {known}" if bad else None


def _primary(value: Any, params: dict) -> str | None:
    need = ("sample", "outcome")
    missing, extra = [k for k in need if k not in value], [k for k in value if k not in need]
    if missing or extra:
        return f"needs exactly the keys {list(need)}; missing {missing}, unknown {extra}"
    if value["sample"] not in ("matched", "full"):
        return f"sample must be one of ['matched', 'full'], got {value['sample']!r}"
    outs = params.get("outcomes") or list(OUTCOMES)
    if value["outcome"] not in outs:
        return f"outcome must be one of the run's outcomes {list(outs)}, got {value['outcome']!r}"
    return None


def _mbar_grid(value: Any, _: dict) -> str | None:
    ok = bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
    if not ok or list(value) != sorted(value):
        return f"must be a non-empty increasing list of numbers >= 0 (e.g. [0, 0.5, 1, 1.5, 2]), got {value!r}"
    return None


#: Named subgroup rules of reach.heterogeneity (any other string is a panel column).
SUBGROUP_RULES = ("target_group", "exporter_before", "gm_exporter_before")


def _subgroups(value: Any, _: dict) -> str | None:
    for dim, rule in value.items():
        if isinstance(rule, str) and rule:
            continue
        if isinstance(rule, dict) and "column" in rule and set(rule) <= {"column", "threshold", "labels"}:
            continue
        return (f"{dim}: a rule is one of {list(SUBGROUP_RULES)}, a panel column name, or "
                f"{{column: name, threshold: x, labels: [at_or_below, above]}}; got {rule!r}")
    return None


SCHEMA: dict[str, Spec] = {
    "run_name": Spec(str, "name of the run: output goes to output/<run_name>/, panels to work/<run_name>/",
                     lambda v, _: None if re.fullmatch(r"[A-Za-z0-9_.-]+", v) else f"must be letters, digits, '_', '-', '.', got {v!r}"),
    "data_dir": Spec(str, "folder holding the microdata; relative paths are resolved against the YAML file's folder"),
    "first_year": Spec(int, "first year of the analysis window", _year),
    "last_year": Spec(int, "last year of the analysis window", _year),
    "inputs": Spec(dict, "register, kvk_link, trade, instruments: file pattern or path and CBS column mapping", _inputs),
    "programmes": Spec(dict, "participant lists per programme: path, column mapping, label, default_year", _programmes),
    "growth_markets": Spec(list, "ISO-2 codes of the growth markets", _iso2_list),
    "programme": Spec(str, "the programme that notebooks 02-05 analyse", _programme),
    "analyse": Spec((str, list), "programmes the run analyses (02-04 once each, 05 side by side): 'all' or a list of keys", _analyse),
    "primary": Spec(dict, "the primary estimate, declared in advance: {sample: matched|full, outcome: <outcome>}", _primary),
    "comparison_group": Spec(str, "reach comparison group", _choice("business_economy", "target_group")),
    "never_treated_only": Spec(bool, "comparison firms are never users of the programme"),
    "reach_window": Spec(int, "years before first use that count as 'before'", _positive),
    "target_group": Spec(dict, "the programme's target group: employee and export-destination bounds", _target_group),
    "exclude_other_users": Spec(bool, "matching and effects leave out comparison firms that used another programme"),
    "covariates": Spec(list, "matching covariates (pre-treatment panel columns)", _subset(COVARIATES)),
    "exact": Spec(list, "exact-matching strata within each cohort", _subset(STRATA)),
    "match_method": Spec((str, list), "matching design(s): nearest, cem or ebal; a list compares them (the first feeds notebook 04)", _match_methods),
    "ratio": Spec(int, "controls per treated firm", _ratio),
    "replace": Spec(bool, "match with replacement"),
    "caliper": Spec((int, float), "caliper in standard deviations of the propensity score (MatchIt default: the score itself, not its logit)", _positive),
    "ps_model": Spec(str, "propensity-score model", _choice("logit", "gbm")),
    "mahalanobis": Spec(bool, "match on the Mahalanobis distance of the covariates within the propensity-score caliper (MatchIt's mahvars)"),
    "outcomes": Spec(list, "outcomes of the effect notebook (panel columns)", _subset(OUTCOMES)),
    "control_group": Spec(str, "DiD comparison units", _choice("nevertreated", "notyettreated")),
    "est_method": Spec(str, "DiD estimator: doubly robust, inverse probability weighting, outcome regression", _choice("dr", "ipw", "reg")),
    "xformla": Spec((str, type(None)), "covariates for conditional parallel trends, e.g. '~ log_employees' (or null)", _xformla),
    "anticipation": Spec(int, "years of anticipation before first use", _nonnegative),
    "allow_unbalanced_panel": Spec(bool, "effects keep firms not observed in every year (each ATT(g,t) on the firms observed in g-1 and t); false: balanced panel as R did's default"),
    "biters": Spec(int, "multiplier-bootstrap draws (0: analytic standard errors only)", _nonnegative),
    "alpha": Spec(float, "significance level of confidence intervals and tests", _alpha),
    "seed": Spec(int, "seed for matching ties and the bootstrap", _nonnegative),
    "power": Spec(float, "power of the minimum detectable effects (notebook 04: 'How sure are we?')", _alpha),
    "placebo_draws": Spec(int, "placebo programmes drawn among never-users to check the inference (0: none)", _nonnegative),
    "sensitivity_mbar": Spec(list, "Mbar grid of the relative-magnitudes sensitivity to parallel trends (HonestDiD)", _mbar_grid),
    "subgroups": Spec(dict, "pre-declared subgroups for heterogeneity: name -> target_group, exporter_before, gm_exporter_before or a panel column", _subgroups),
    "disclosure": Spec(dict, "statistical disclosure control rules (reach.disclosure.Rules)", _disclosure),
    "show_code": Spec(bool, "rendered HTML shows the code cells (runner option)"),
}


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def validate_params(params: Mapping[str, Any], *, source: str = "parameters", check_files: bool = True) -> None:
    """Check every key of ``params``; raise one :class:`ParamsError` listing all problems.

    Parameters
    ----------
    params : mapping
        Parsed parameters (``data_dir`` already absolute when ``check_files``).
    source : str
        Name of the file the parameters came from, used in messages.
    check_files : bool
        Also check that ``data_dir`` exists and that every input and programme file is there.
    """
    problems: list[str] = []
    unknown = [k for k in params if k not in SCHEMA]
    if unknown:
        problems.append(f"unknown keys {unknown}; allowed keys: {sorted(SCHEMA)}")
    missing = [k for k in SCHEMA if k not in params]
    if missing:
        problems.append(f"missing keys {missing}")
    for key, spec in SCHEMA.items():
        if key not in params:
            continue
        value = params[key]
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        # bool is an int in Python; a YAML 'yes' where a number belongs is a mistake
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            problems.append(f"{key}: must be {_type_name(spec.kind)}, got {type(value).__name__} {value!r}")
            continue
        if spec.check is not None:
            msg = spec.check(value, dict(params))
            if msg:
                problems.append(f"{key}: {msg}")
    if not problems and params["first_year"] > params["last_year"]:
        problems.append(f"first_year ({params['first_year']}) is after last_year ({params['last_year']})")
    if not problems and check_files:
        problems.extend(_check_files(params))
    if problems:
        raise ParamsError(f"{source}: " + ("\n  - " if len(problems) > 1 else "") + "\n  - ".join(problems))


def _check_files(params: Mapping[str, Any]) -> list[str]:
    problems = []
    data_dir = Path(params["data_dir"])
    if not data_dir.is_dir():
        return [f"data_dir: folder {str(data_dir)!r} does not exist"]
    years = range(params["first_year"], params["last_year"] + 1)
    for role, spec in params["inputs"].items():
        if "path" in spec:
            if not (data_dir / spec["path"]).is_file():
                problems.append(f"inputs.{role}: file {str(data_dir / spec['path'])!r} does not exist")
            continue
        absent = [y for y in years if not list(data_dir.glob(spec["pattern"].format(year=y)))]
        if absent:
            problems.append(
                f"inputs.{role}: no file matches {spec['pattern']!r} in {str(data_dir)!r} for years {absent}"
            )
    for name, spec in params["programmes"].items():
        if not (data_dir / spec["path"]).is_file():
            problems.append(f"programmes.{name}: file {str(data_dir / spec['path'])!r} does not exist")
    return problems


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key=value`` or ``a.b=value``; the value is read as YAML (``5``, ``true``, ``[a, b]``)."""
    if "=" not in text:
        raise ParamsError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ParamsError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return path, value


def apply_overrides(params: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any] | None) -> dict:
    """Return a copy of ``params`` with ``key=value`` overrides applied (dots reach into mappings)."""
    out = copy.deepcopy(dict(params))
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for path, value in items:
        path = path.split(".") if isinstance(path, str) else list(path)
        target = out
        for i, part in enumerate(path[:-1]):
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                raise ParamsError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])!r} is not a mapping")
            target = nxt
        target[path[-1]] = value
    return out


def load_params(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] | None = None,
                *, check_files: bool = True) -> dict:
    """Read a parameter file, apply overrides, resolve ``data_dir`` and validate.

    Parameters
    ----------
    path : str or Path
        A ``params/*.yaml`` file.
    overrides : iterable of "key=value" strings or mapping, optional
        Values that replace those of the file (``--set`` on the command line).
    check_files : bool
        Check that the input files exist (off for tests of the schema alone).

    Returns
    -------
    dict
        The parameters, with ``data_dir`` an absolute path string.

    Examples
    --------
    >>> from pathlib import Path
    >>> import reach
    >>> root = Path(reach.__file__).resolve().parents[2]
    >>> p = load_params(root / "params" / "stub.yaml", ["biters=99"], check_files=False)
    >>> p["biters"], Path(p["data_dir"]).name
    (99, 'data_stub')
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameter file {str(path)!r} does not exist")
    from reach.normalise import read_text

    # Windows Notepad saves cp1252 (or UTF-8 with a BOM): read what the file is, not what we hope
    text, _ = read_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of parameter names to values")
    params = apply_overrides(raw, overrides)
    if isinstance(params.get("data_dir"), str):
        data_dir = Path(params["data_dir"])
        if not data_dir.is_absolute():
            data_dir = (path.parent / data_dir).resolve()
        params["data_dir"] = str(data_dir)
    validate_params(params, source=str(path), check_files=check_files)
    return params


def markdown_table() -> str:
    """The parameter reference as a Markdown table (README's "Parameters" section is this text).

    Examples
    --------
    >>> markdown_table().splitlines()[0]
    '| key | type | meaning |'
    """
    lines = ["| key | type | meaning |", "|---|---|---|"]
    for key, spec in SCHEMA.items():
        lines.append(f"| `{key}` | {_type_name(spec.kind)} | {spec.doc} |")
    return "\n".join(lines)
