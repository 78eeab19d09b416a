"""Difference-in-differences with staggered adoption (Callaway & Sant'Anna 2021).

Group-time average treatment effects ``ATT(g, t)`` as R ``did`` 2.x computes
them for panel data (``att_gt``), their aggregations (``aggte``), a Wald
pre-test, and the naive estimators users should see beside them (``twfe``,
``did_2x2``, ``naive_difference``).

Vocabulary follows R ``did``: ``yname``, ``tname``, ``idname``, ``gname``,
``xformla``. ``gname`` holds the first treatment period of a unit, 0 for never
treated units.

Speed: the panel is reshaped once (integer codes, no pandas groupby) into a
units x periods array with units sorted by cohort, so a (g, t) cell reads
contiguous slices. Without covariates a cell is two weighted means; with
covariates a closed-form OLS and a Newton-Raphson logit on the cell's units
(:class:`_CovDesign`): cells sharing cohort, covariate period and control set
(a cohort's post-treatment cells) share the design, the logit and the Gram
matrix; each logit starts from the cohort's previous coefficients; the
``(m, k)``-shaped products are einsum (no BLAS level-2 calls, which stall on a
busy machine), and no ``(m, k)`` temporaries are made per cell.
Influence functions are kept as a dense ``(n_units, n_cells)`` array. The
multiplier bootstrap multiplies blocks of Rademacher bits (about 32 MB at a
time) with it; without covariates it needs only per-cohort sums of the weighted
outcomes (``T + 1`` columns instead of one per cell). :func:`aggte` reuses those
draws through linear maps, so it does not bootstrap again. With ``bootstrap=False, cband=False``
no bootstrap runs at all.

R ``did`` 2.5 behaviour (bcallaway11/did 2.5.1, DRDID 1.2.3):

* clustering: the influence function is *summed* within clusters, in the multiplier bootstrap and
  in the analytic cluster-robust standard error :math:`\\sqrt{\\sum_c S_c^2}/n` (Callaway & Sant'Anna
  2021, Remark 10); ``vcov()`` of the results gives the matching covariance;
* overlap guard: a cell whose unweighted propensity score reaches ``overlap_max`` (0.999) is NA with
  a warning and listed in ``result.na_cells``; comparison units with a score of ``trim_level`` (0.995)
  or more get weight zero (DRDID);
* unbalanced panels (``allow_unbalanced_panel=True``) and repeated cross sections (``panel=False``):
  DRDID's repeated-cross-section estimators with the influence function summed by unit
  (``unbalanced="rc"``, R's), or reach's ``unbalanced="pairs"``: each ATT(g,t) on the units observed
  in both its base period and t. A balanced panel always gets the panel estimator (as R).

Matched samples (:func:`with_matching_weights`, :func:`matched_att_gt`): a *stacked* design with
cohort-specific comparison sets. Each cohort's ATT(g,t) is estimated on that cohort's matched set
only (its matched users and their matched comparison firms, with that match's weights); the
blocks' influence functions are put on one row per firm and summed, so a firm in several cohorts'
sets (a comparison firm twice, or a comparison firm first and a user later) is clustered, never
double-weighted and never a user of a cohort it was not matched to.
"""
from __future__ import annotations

import contextlib
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from reach import _checks
from reach._checks import check_choice, examples, require_columns
from reach._display import ResultDisplay

__all__ = [
    "att_gt",
    "users_off_common_change",
    "aggte",
    "twfe",
    "did_2x2",
    "naive_difference",
    "cohort_from_treatment",
    "event_study_plot",
    "ATTgtResult",
    "AggteResult",
    "DiDEstimate",
    "NoPostTreatmentCells",
    "CONTROL_GROUPS",
    "EST_METHODS",
    "BASE_PERIODS",
    "UNBALANCED_MODES",
    "AGG_TYPES",
    "effect_report",
    "EffectReport",
    "drop_without_pre_period",
    "with_matching_weights",
    "matched_att_gt",
    "matched_user_count",
    "COMPARISON_METHODS",
    "REPORT_TABLES",
    "effects_intro",
    "samples_text",
    "TIDY_CORE",
    "ATT_GT_COLUMNS",
    "AGGTE_COLUMNS",
    "ESTIMATE_COLUMNS",
]

CONTROL_GROUPS = ("nevertreated", "notyettreated")
EST_METHODS = ("dr", "ipw", "reg")
BASE_PERIODS = ("varying", "universal")
AGG_TYPES = ("simple", "dynamic", "group", "calendar")
UNBALANCED_MODES = ("rc", "pairs")

#: The column core every estimate table of this module starts with (as broom/pyfixest): result-specific
#: columns follow it. ``statistic`` is ``estimate / std_error`` and ``p_value`` its two-sided normal p-value.
TIDY_CORE = ("term", "estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high", "n_treated", "n_control")
#: Columns of :meth:`ATTgtResult.tidy`.
ATT_GT_COLUMNS = TIDY_CORE + ("group", "time", "pointwise_low", "pointwise_high", "post")
#: Columns of :meth:`AggteResult.tidy`.
AGGTE_COLUMNS = TIDY_CORE + ("type", "level", "key", "pointwise_low", "pointwise_high")
#: Columns of :meth:`DiDEstimate.tidy`.
ESTIMATE_COLUMNS = TIDY_CORE + ("method", "n_obs", "n_units", "df_resid")

#: The standard normal. Not scipy at import: ``scipy.special`` costs about a second on the first call of a
#: fresh process, more than a whole ATT(g, t) of 50k firms (bench/did_shapes.py); the chi-square tail of
#: the pre-test imports it when asked.
_NORMAL = NormalDist()


def ndtri(p: float) -> float:
    """Standard normal quantile (``scipy.special.ndtri``; Wichura's AS241, about 1e-16 relative)."""
    return _NORMAL.inv_cdf(float(p))


def _two_sided_p(stat: np.ndarray) -> np.ndarray:
    """Two-sided normal p-values :math:`2\\Phi(-|z|) = \\mathrm{erfc}(|z|/\\sqrt 2)`; NaN stays NaN."""
    stat = np.asarray(stat, dtype=float)
    return np.array([math.erfc(abs(v) / math.sqrt(2.0)) for v in stat.ravel()]).reshape(stat.shape)


#: R's threshold for a degenerate standard error (sqrt(.Machine$double.eps) * 10).
_TINY = math.sqrt(np.finfo(float).eps) * 10
#: Bytes of one block of multiplier draws (as float64) in the bootstrap.
_BOOT_BLOCK_BYTES = 32 * 2**20
#: Units above which the bootstrap shows a progress bar.
_PROGRESS_MIN_UNITS = 200_000
#: Largest dense influence-function array we agree to hold (bytes).
_MAX_IF_BYTES = 8 * 2**30


# --------------------------------------------------------------------------- helpers
def parse_xformla(xformla: str | None) -> list[str]:
    """Covariate names of a one-sided formula such as ``"~ x1 + x2"``.

    Only simple additive terms are supported (as the covariates of R ``did``'s
    default specification). ``None``, ``"~1"`` and ``"~ 1"`` mean no covariates.

    Examples
    --------
    >>> parse_xformla("~ log_employees + exporter")
    ['log_employees', 'exporter']
    >>> parse_xformla("~1")
    []
    """
    if xformla is None:
        return []
    if not isinstance(xformla, str) or not xformla.strip().startswith("~"):
        raise ValueError(f"xformla must be a one-sided formula string like '~ x1 + x2' or None; got {xformla!r}")
    rhs = xformla.strip()[1:]
    terms = [t.strip() for t in rhs.split("+") if t.strip()]
    out = []
    for t in terms:
        if t == "1":
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", t):
            raise ValueError(
                f"xformla term {t!r} is not supported: use plain column names joined by '+' (got {xformla!r})"
            )
        out.append(t)
    return out


def _quantile1(x: np.ndarray, q: float, axis: int = 0) -> np.ndarray:
    """R's ``quantile(type = 1)`` (inverse of the empirical distribution function)."""
    return np.quantile(x, q, axis=axis, method="inverted_cdf")


# --------------------------------------------------------------------------- data preparation
@dataclass(frozen=True)
class _Panel:
    ids: np.ndarray          # unit identifiers (n)
    periods: np.ndarray      # sorted periods (T)
    Y: np.ndarray            # (n, T)
    G: np.ndarray            # first-treatment period per unit, 0 = never (n)
    w: np.ndarray            # sampling weights normalised to mean 1 (n)
    X: dict                  # covariate name -> (n, T)
    cluster: np.ndarray | None  # integer codes of the extra cluster variable (n)
    exclusions: dict


def _numeric_frame(df, cols: list, numeric: list, select: bool = True) -> pd.DataFrame:
    """The columns the estimator reads, checked: present, and numeric where they must be.

    ``select=False`` returns ``df`` itself (read column by column): selecting a list of columns
    copies them, a noticeable share of a call on millions of rows.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}")
    require_columns(df, cols)
    d = df[cols] if select else df
    for c in numeric:
        if not (pd.api.types.is_numeric_dtype(d[c]) or pd.api.types.is_bool_dtype(d[c])):
            raise TypeError(f"df: column {c!r} must be numeric; got dtype {d[c].dtype}")
    return d


def _extra_cluster(clustervars, idname: str) -> list:
    """The cluster variable besides ``idname`` (R did allows at most one)."""
    extra = [c for c in (clustervars or []) if c != idname]
    if len(extra) > 1:
        raise ValueError(f"clustervars: at most one variable besides idname ({idname!r}); got {clustervars!r}")
    return extra


@dataclass(frozen=True)
class _Codes:
    """Integer codes of the long rows: unit ``uid`` (of ``nid``) and period ``tcode`` (of ``periods_all``)."""

    uid: np.ndarray
    ids_all: np.ndarray
    tcode: np.ndarray
    periods_all: np.ndarray

    @property
    def nid(self) -> int:
        return len(self.ids_all)

    def varies(self, values: np.ndarray) -> np.ndarray:
        """Rows whose unit has more than one distinct value (NaN counted as a value, as nunique(dropna=False))."""
        return _rows_off_unit_value(self.uid, values, self.nid)


def _rows_off_unit_value(uid: np.ndarray, values: np.ndarray, n_units: int) -> np.ndarray:
    """Rows whose value differs from one value of their unit (NaN a value of its own): a unit has more than one
    value iff one of its rows is flagged. One scatter and one comparison, no hashing of (unit, value) pairs."""
    one = np.empty(n_units, dtype=values.dtype)
    one[uid] = values  # some value of each unit: all its rows equal it iff it has one value
    other = one[uid]
    off = values != other
    if values.dtype.kind == "f":
        off &= ~(np.isnan(values) & np.isnan(other))
    return off


def _unit_period_codes(d: pd.DataFrame, idname, tname, yname, gname) -> _Codes:
    """Factorise units and periods (no pandas groupby, which dominated at millions of rows); one row per pair."""
    uid, ids_all = pd.factorize(d[idname], sort=True)
    if (uid < 0).any():
        raise ValueError(f"df: column {idname!r} has missing values. Examples:\n{examples(d, uid < 0, [idname, tname, yname])}")
    tv = d[tname].to_numpy(dtype=float)
    if np.isnan(tv).any():
        raise ValueError(f"df: column {tname!r} has missing values. Examples:\n{examples(d, np.isnan(tv), [idname, tname, yname])}")
    tcode, periods_all = pd.factorize(tv, sort=True)  # hashing: 6x faster than np.unique's sort at 6M rows
    periods_all = np.asarray(periods_all, dtype=float)
    nid, Tall = len(ids_all), len(periods_all)
    cell = uid.astype(np.int64) * Tall + tcode
    dup = np.bincount(cell, minlength=nid * Tall)[cell] > 1
    if dup.any():
        raise ValueError(
            f"df: {int(dup.sum())} rows share a ({idname}, {tname}) pair; one row per unit and period is required. "
            f"Examples:\n{examples(d, dup, [idname, tname, yname, gname])}"
        )
    return _Codes(uid=uid, ids_all=np.asarray(ids_all), tcode=tcode, periods_all=periods_all)


def _check_unit_constants(d, k: _Codes, idname, tname, gname, weightsname) -> tuple[np.ndarray, np.ndarray | None]:
    """The first-treatment period and the weights per row, refused unless constant within unit and valid."""
    gv = d[gname].to_numpy(dtype=float)
    bad = k.varies(gv)
    if bad.any():
        bad = np.isin(k.uid, np.unique(k.uid[bad]))
        raise ValueError(
            f"df: column {gname!r} (first treatment period) varies within {idname} for "
            f"{len(np.unique(k.uid[bad]))} unit(s); it must be constant per unit. Examples:\n"
            f"{examples(d, bad, [idname, tname, gname])}"
        )
    if np.isnan(gv).any():
        raise ValueError(f"df: column {gname!r} has missing values (use 0 for never treated). Examples:\n{examples(d, np.isnan(gv), [idname, tname, gname])}")
    if (gv < 0).any():
        raise ValueError(f"df: column {gname!r} must be 0 (never treated) or a period; got negatives. Examples:\n{examples(d, gv < 0, [idname, tname, gname])}")
    wv = None
    if weightsname:
        wv = d[weightsname].to_numpy(dtype=float)
        bad = k.varies(wv)
        if bad.any():
            bad = np.isin(k.uid, np.unique(k.uid[bad]))
            raise ValueError(f"df: weights {weightsname!r} must be constant within unit. Examples:\n{examples(d, bad, [idname, tname, weightsname])}")
        if (wv < 0).any():
            raise ValueError(f"df: weights {weightsname!r} must be non-negative")
    return gv, wv


def _balanced_units(k: _Codes, vals: dict, excl: dict) -> tuple[np.ndarray, np.ndarray]:
    """Units kept in the balanced panel (observed, without missing values, in every period) and the periods.

    Units with a missing outcome, covariate or weight in some period leave, counted in ``excl``.
    """
    rowbad = np.zeros(len(k.uid), dtype=bool)
    for v in vals.values():
        rowbad |= np.isnan(v)
    unit_ok = np.ones(k.nid, dtype=bool)
    if rowbad.any():
        unit_ok[k.uid[rowbad]] = False
        excl["units_with_missing_values"] = int((~unit_ok).sum())
    present = np.zeros(len(k.periods_all), dtype=bool)
    present[k.tcode[unit_ok[k.uid]]] = True
    nper = np.bincount(k.uid[unit_ok[k.uid]], minlength=k.nid)
    short = unit_ok & (nper < present.sum())
    if short.any():
        excl["units_not_observed_every_period"] = int(short.sum())
    keep_unit = unit_ok & (nper == present.sum())
    if not keep_unit.any():
        raise ValueError("df: no unit is observed in every period with non-missing data; cannot form a balanced panel")
    return keep_unit, present


def _prepare(df, yname, tname, idname, gname, covs, weightsname, clustervars, allow_unbalanced_panel) -> _Panel:
    """The balanced units x periods arrays of :class:`_Panel` from the long frame (R did's ``pre_process_did``)."""
    extra_cluster = _extra_cluster(clustervars, idname)
    if allow_unbalanced_panel:
        raise NotImplementedError(
            "allow_unbalanced_panel=True (R did's repeated-cross-section estimator for unbalanced panels) is not "
            "implemented; use the default, which keeps units observed in every period and reports how many were dropped."
        )
    wcol = [weightsname] if weightsname else []
    cols = list(dict.fromkeys([yname, tname, idname, gname, *covs] + wcol + extra_cluster))
    d = _numeric_frame(df, cols, [yname, tname, gname, *covs] + wcol, select=False)
    fast = None if extra_cluster else _sorted_balanced(d, idname, tname, yname, gname, covs, weightsname)
    if fast is not None:
        return _panel_of(*fast, covs=covs, yname=yname, weightsname=weightsname, excl={})
    k = _unit_period_codes(d, idname, tname, yname, gname)
    gv, wv = _check_unit_constants(d, k, idname, tname, gname, weightsname)
    vals = {c: d[c].to_numpy(dtype=float) for c in [yname, *covs]}
    if weightsname:
        vals[weightsname] = wv
    excl: dict[str, int] = {}
    keep_unit, present = _balanced_units(k, vals, excl)
    periods = k.periods_all[present]
    rows = keep_unit[k.uid]
    r_u = (np.cumsum(keep_unit) - 1)[k.uid[rows]]
    r_t = np.cumsum(present)[k.tcode[rows]] - 1
    n, T = int(keep_unit.sum()), len(periods)

    def wide(v: np.ndarray) -> np.ndarray:
        # Fortran order: one period's column is contiguous, which is how every (g, t) cell reads it
        out = np.empty((n, T), order="F")
        out[r_u, r_t] = v[rows]
        return out

    def per_unit(v: np.ndarray) -> np.ndarray:
        out = np.empty(n)
        out[r_u] = v[rows]
        return out

    cluster = None
    if extra_cluster:
        ccode = pd.factorize(d[extra_cluster[0]])[0].astype(float)
        ccode[ccode < 0] = np.nan
        if k.varies(ccode).any():
            raise ValueError(f"clustervars: {extra_cluster[0]!r} varies over time within {idname}; it must be constant per unit")
        cluster = pd.factorize(per_unit(ccode))[0]
    return _panel_of(k.ids_all[keep_unit], periods, {c: wide(v) for c, v in vals.items() if c != weightsname},
                     per_unit(gv), per_unit(wv) if weightsname else None, covs=covs, yname=yname,
                     weightsname=weightsname, excl=excl, cluster=cluster)


def _panel_of(ids, periods, wide: dict, G, w, *, covs, yname, weightsname, excl, cluster=None) -> _Panel:
    """The :class:`_Panel` of per-unit arrays: late cohorts set never treated (counted), weights to mean one."""
    # R did: cohorts first treated after the last period are not-yet-treated throughout: never treated here.
    late = G > periods[-1]
    if late.any():
        excl["units_treated_after_last_period_set_never_treated"] = int(late.sum())
        G = np.where(late, 0.0, G)
    w = np.ones(len(G)) if w is None else w
    if w.sum() <= 0:
        raise ValueError(f"df: weights {weightsname!r} sum to zero")
    return _Panel(ids=ids, periods=periods, Y=wide[yname], G=G, w=w / w.mean(), X={c: wide[c] for c in covs},
                  cluster=cluster, exclusions=excl)


class _UnitArrays:
    """A balanced panel's unit x period arrays, prepared once, and ``att_gt`` on any subset of its units.

    The subgroup effects fit one ``att_gt`` per subgroup (and per cohort within it) on rows of the same
    balanced panel: at register scale, selecting those rows and rebuilding the arrays took most of each
    fit. A subset of the prepared arrays is what :func:`_prepare` gives for the subset's rows (the same
    units in the same order, the same periods), so the estimates are the same. Unit weights only.
    """

    def __init__(self, df: pd.DataFrame, yname: str, tname: str, idname: str, gname: str, covs: list):
        self.P = _prepare(df, yname, tname, idname, gname, list(covs), None, None, False)
        self.yname, self.tname, self.gname, self.covs = yname, tname, gname, list(covs)
        self.index = pd.Index(self.P.ids)

    def keep(self, ids) -> np.ndarray:
        """Units of ``ids`` as a mask over the prepared units (ids not in the panel are not units of it)."""
        pos = self.index.get_indexer(np.asarray(ids))
        out = np.zeros(len(self.index), dtype=bool)
        out[pos[pos >= 0]] = True
        return out

    def att_gt(self, keep: np.ndarray, *, xformla=None, control_group="nevertreated", est_method="dr",
               anticipation=0, alp=0.05, _cells="all") -> ATTgtResult:
        """``att_gt(rows of the kept units, ..., bootstrap=False)`` without going back to the rows.

        The units the preparation left out are counted once, in ``self.P.exclusions``; the result's
        ``exclusions`` are empty.
        """
        if parse_xformla(xformla) != self.covs:
            raise ValueError(f"xformla {xformla!r} is not the prepared covariates {self.covs}")
        _check_att_gt_args(control_group, est_method, "varying", anticipation, alp, 1, 0.999, 0.995, "rc", True)
        P = self.P
        sub = _Panel(ids=P.ids[keep], periods=P.periods, Y=P.Y[keep], G=P.G[keep], w=np.ones(int(keep.sum())),
                     X={c: v[keep] for c, v in P.X.items()}, cluster=None, exclusions={})
        if not len(sub.ids):
            raise ValueError("df: no unit is observed in every period with non-missing data; cannot form a balanced panel")
        sub, glist, notes = _pre_process_panel(sub, self.gname, self.tname, control_group, anticipation, None)
        return _att_gt_balanced(sub, glist, notes, self.covs, yname=self.yname, xformla=xformla,
                                control_group=control_group, est_method=est_method, anticipation=anticipation,
                                base_period="varying", bootstrap=False, biters=1, alp=alp, seed=0, progress=False,
                                cband=False, overlap_max=0.999, trim_level=0.995, _cells=_cells)


def _sorted_balanced(d, idname, tname, yname, gname, covs, weightsname):
    """Fast path for the common input: rows sorted by a numeric unit id, every unit in every period in the
    same (increasing) period order, nothing missing, unit-level columns constant. Then the long columns are
    the wide arrays, reshaped without a copy: no factorising, no scatter (most of a call's time otherwise).

    Returns ``(ids, periods, wide, G, w)`` or None, and then the general path runs (and raises what is wrong).
    """
    ida = d[idname].to_numpy()
    N = len(ida)
    if ida.dtype.kind not in "iuf" or N == 0 or not (ida[1:] >= ida[:-1]).all():
        return None
    starts = np.flatnonzero(np.r_[True, ida[1:] != ida[:-1]])
    n = len(starts)
    T = N // n
    if N != n * T or not (starts == np.arange(n) * T).all():
        return None
    tm = d[tname].to_numpy(dtype=float).reshape(n, T)
    periods = tm[0]
    if not (periods[1:] > periods[:-1]).all() or not (tm == periods).all():
        return None
    wide = {c: d[c].to_numpy(dtype=float).reshape(n, T) for c in [yname, *covs]}
    if any(np.isnan(v).any() for v in wide.values()):
        return None
    per_unit = {}
    for c in [gname] + ([weightsname] if weightsname else []):
        v = d[c].to_numpy(dtype=float).reshape(n, T)
        first = v[:, 0]
        if np.isnan(first).any() or (first < 0).any() or (v != first[:, None]).any():
            return None
        per_unit[c] = first.copy()
    return ida[starts], periods.copy(), wide, per_unit[gname], per_unit.get(weightsname)


# --------------------------------------------------------------------------- 2x2 estimators
def _logit(X, D, w, maxiter=50, tol=1e-10):
    """Weighted logit by Newton-Raphson (glm(binomial) with prior weights) on a design ``X`` (m, k).

    Returns the fitted probabilities and the Hessian ``X' diag(w p (1-p)) X`` at the
    solution, or ``(None, None)`` if a Newton step or the final Hessian is singular.
    The fit itself is :func:`_logit_rows`' (one Newton-Raphson in this module), cold-started.
    Kept in the package (not with the test-only references in ``tests/reference_drdid.py``):
    the repeated-cross-section cells (:func:`_rc_cell`) and the overlap guard of :func:`_rc_cells` use it.
    """
    p, H, _ = _logit_rows(np.ascontiguousarray(np.asarray(X, dtype=float).T), D, w, None, maxiter, tol)
    return p, H


def _overlap_problem(X: np.ndarray, D: np.ndarray, has_covs: bool, overlap_max: float) -> str | None:
    """Why a cell's propensity-score step cannot run (None when it can).

    As R did 2.5's ``compute.att_gt``: an unweighted logit of the cell's units, and the cell is left
    missing when the largest fitted score reaches ``overlap_max`` (did: 0.999) or the logit fails.
    """
    pu = _logit(X, D, np.ones(len(D)))[0] if has_covs else np.full(len(D), D.mean())
    if pu is None and np.linalg.matrix_rank(X) < X.shape[1]:
        return "covariate model could not be estimated (singular design)"
    if pu is None or pu.max() >= overlap_max:
        return (f"overlap fails: propensity score reaches {np.nan if pu is None else pu.max():.4f} "
                f">= overlap_max {overlap_max}")
    return None


def _xv(Xr, v):
    """``X'v`` for the transposed design ``Xr`` (k, m). einsum, not BLAS: a threaded level-2
    BLAS call on a long thin operand stalls on a busy shared machine (25x slower measured)."""
    return np.einsum("im,m->i", Xr, v)


def _bx(b, Xr):
    """``X b`` for the transposed design ``Xr`` (k, m), without BLAS (see :func:`_xv`)."""
    return np.einsum("i,im->m", b, Xr)


def _gram(Xr, q):
    """``X' diag(q) X`` for the transposed design ``Xr`` (k, m), without BLAS (see :func:`_xv`)."""
    k = Xr.shape[0]
    H = np.empty((k, k))
    for i in range(k):
        xq = Xr[i] * q
        for j in range(i + 1):
            H[i, j] = H[j, i] = np.einsum("i,i->", xq, Xr[j])
    return H


def _newton_logit(Xr, D, w, beta, maxiter, tol):
    """Newton-Raphson of the weighted logit on ``Xr`` (k, m) from ``beta``; stops when no coefficient moves by ``tol``.

    Returns ``(p, H, beta, converged)``, p and H at the final coefficients (the loop's
    last evaluation, not repeated after it), or None if a step is singular.
    """
    wD = w * D
    done = False
    for it in range(maxiter + 1):
        p = _bx(beta, Xr)
        np.negative(p, out=p)
        np.exp(p, out=p)
        p += 1.0
        np.reciprocal(p, out=p)
        wp = w * p
        q = wp * p
        np.subtract(wp, q, out=q)  # w p (1 - p)
        H = _gram(Xr, q)
        if done or it == maxiter:
            return p, H, beta, done
        np.subtract(wD, wp, out=wp)
        try:
            step = np.linalg.solve(H, _xv(Xr, wp))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        done = bool(np.max(np.abs(step)) < tol)


def _logit_rows(Xr, D, w, beta0=None, maxiter=50, tol=1e-10):
    """The module's one logit fitter: :func:`_newton_logit` on the transposed design ``Xr`` (k, m), optionally warm-started.

    Returns ``(p, H, beta)`` or ``(None, None, None)``. The warm start (a neighbouring
    cell's coefficients) saves iterations; if it fails or does not converge the fit is
    redone from zero, so the outcome is the cold start's whatever the start.
    (``matching._fit_logit`` is R ``glm.fit``'s IRLS with its start and deviance stopping rule,
    which MatchIt's golden numbers need; ``power._newton_logit`` is ridge-penalised for separated
    designs: different objectives or stopping rules, hence not this one.)
    """
    for b0 in ([] if beta0 is None else [np.asarray(beta0, dtype=float)]) + [np.zeros(Xr.shape[0])]:
        # a warm start that overflows is retried from zero: its warnings are not the fit's
        with np.errstate(over="ignore") if b0.any() else contextlib.nullcontext():
            res = _newton_logit(Xr, D, w, b0, maxiter, tol)
        if res is None or (not res[3] and b0.any()):
            continue
        p, H, beta, _ = res
        if not np.all(np.isfinite(H)) or np.linalg.matrix_rank(H) < H.shape[0]:
            continue
        return p, H, beta
    return None, None, None


def _row_codes(cols: list) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the distinct covariate rows: ``codes`` (n,) into ``U`` (k + 1, K), whose first row is the intercept.

    A missing value gives code -1. Register covariates (a size class, log employees of a whole
    number of employees) take a few thousand distinct values over millions of firms, so the
    propensity logit can be fitted on the distinct rows (see :func:`_logit_grouped`).
    """
    codes, _ = pd.factorize(np.asarray(cols[0]))
    for v in cols[1:]:
        c2, u2 = pd.factorize(np.asarray(v))
        bad = (codes < 0) | (c2 < 0)
        both = (codes.astype(np.int64) * len(u2) + c2).astype(float)  # exact below 2**53
        codes, _ = pd.factorize(np.where(bad, np.nan, both))  # a missing value: code -1
    K = int(codes.max()) + 1 if len(codes) else 0
    U = np.ones((len(cols) + 1, K))
    if K:
        first = np.empty(K, dtype=np.int64)
        valid = np.flatnonzero(codes >= 0)
        first[codes[valid[::-1]]] = valid[::-1]  # the last write wins: each code's first row
        for r, v in enumerate(cols, start=1):
            U[r] = np.asarray(v, dtype=float)[first]
    return codes, U


def _logit_grouped(U, codes, w, m_t, beta0=None):
    r""":func:`_logit_rows` on the distinct rows of a design: the same likelihood, hence the same fit.

    Rows ``:m_t`` have D = 1. The weighted log-likelihood :math:`\sum_i w_i[D_i\log p(x_i) + (1-D_i)\log(1-p(x_i))]`
    only depends on the sums of ``w`` per (distinct row, D), so the Newton-Raphson runs on at most
    2K rows. Returns ``(p, H, beta)`` with ``p`` for every row of the design, or Nones.
    """
    K = U.shape[1]
    W1 = np.bincount(codes[:m_t], weights=w[:m_t], minlength=K)
    W0 = np.bincount(codes[m_t:], weights=w[m_t:], minlength=K)
    k1, k0 = np.flatnonzero(W1 > 0), np.flatnonzero(W0 > 0)
    X2 = np.ascontiguousarray(np.concatenate([U[:, k1], U[:, k0]], axis=1))
    D2 = np.r_[np.ones(len(k1)), np.zeros(len(k0))]
    _, H, beta = _logit_rows(X2, D2, np.r_[W1[k1], W0[k0]], beta0)
    if beta is None:
        return None, None, None
    pk = _bx(beta, U)  # the same arithmetic as _newton_logit's p
    np.negative(pk, out=pk)
    np.exp(pk, out=pk)
    pk += 1.0
    np.reciprocal(pk, out=pk)
    return pk[codes], H, beta


def _worth_grouping(K: int, m: int) -> bool:
    """Fit the logit on K distinct rows instead of m rows (the grouping costs a few passes over m)."""
    return m >= 1000 and 4 * K <= m


def _design_groups(cache: dict, period, columns, rows, m: int):
    """``(U, codes of the design's rows)`` for :func:`_logit_grouped`, or None when grouping would not pay.

    ``cache`` keeps each covariate period's :func:`_row_codes` over all units (``columns()`` gives
    that period's covariate columns); ``rows(codes)`` picks the design's rows. A design row
    without covariates (code -1) is fitted row by row.
    """
    if period not in cache:
        cache[period] = _row_codes(columns())
    codes, U = cache[period]
    if not _worth_grouping(U.shape[1], m):
        return None
    dc = rows(codes)
    return (U, dc) if dc.min(initial=0) >= 0 else None


class _CovDesign:
    """What the covariate 2x2 estimators of one (cohort, covariate period, control set) share.

    Cells differ only in the outcome change ``dY``: the design, the weights, the propensity
    score (a logit on the cell's units) and the control units' Gram matrix are computed once
    and reused by every cell with the same key (all post-treatment cells of a cohort with a
    varying base period). Rows: the cohort's ``m_t`` units first, then the controls.
    """

    def __init__(self, Xr, w, m_t, method, beta0=None, overlap_max=0.999, trim_level=0.995, groups=None):
        m = Xr.shape[1]
        self.m, self.m_t, self.Xr = m, m_t, Xr
        self.ok, self.beta, self.reason, self.n_trimmed = True, None, "", 0
        wv = w / w.mean()
        self.wv_t, self.wv_c = wv[:m_t], wv[m_t:]
        self.Xt, self.Xc = Xr[:, :m_t], Xr[:, m_t:]
        self.mwt = self.wv_t.sum() / m
        if method in ("dr", "reg"):
            A = _gram(self.Xc, self.wv_c)
            if np.linalg.matrix_rank(A) < A.shape[0]:
                self.ok, self.reason = False, "singular covariate matrix of the comparison units"
                return
            self.A = A
            XpX_inv = np.linalg.inv(A / m)
            self.v1 = XpX_inv @ (_xv(self.Xt, self.wv_t) / m)  # XpX_inv @ mean(w_t X)
        if method in ("dr", "ipw"):
            D = np.zeros(m)
            D[:m_t] = 1.0
            if groups is not None:  # (U, codes) of the distinct rows: the same fit on far fewer rows
                U, codes = groups

                def logit(wts, b0=None):
                    return _logit_grouped(U, codes, wts, m_t, b0)
            else:
                def logit(wts, b0=None):
                    return _logit_rows(Xr, D, wts, b0)
            ps, H, self.beta = logit(wv, beta0)
            if ps is None:
                full_rank = np.linalg.matrix_rank(_gram(Xr, np.ones(m))) == Xr.shape[0]
                # a full-rank design whose logit diverges is separated: some scores reach 1 (R's guard fails too)
                self.ok, self.reason = False, ("overlap fails: the propensity score logit diverges (separation: "
                                               f"scores reach 1 >= overlap_max {overlap_max})" if full_rank else
                                               "propensity-score logit failed (singular design)")
                return
            # R did's overlap guard uses the unweighted score; with unit weights it is this one
            ps_u = ps if np.all(wv == 1.0) else logit(np.ones(m))[0]
            if ps_u is None or ps_u.max() >= overlap_max:
                pmax = np.nan if ps_u is None else float(ps_u.max())
                self.ok, self.reason = False, f"overlap fails: propensity score reaches {pmax:.4f} >= overlap_max {overlap_max}"
                return
            ps = np.minimum(ps, 1 - 1e-6)
            self.Hinv_n = np.linalg.inv(H) * m
            ps_c = ps[m_t:]
            self.wc_ps = self.wv_c * ps_c / (1 - ps_c)  # IPW weights of the controls
            trim = ps_c >= trim_level  # DRDID: comparison units this like the treated get no weight
            if trim.any():
                self.wc_ps[trim] = 0.0
                self.n_trimmed = int(trim.sum())
            self.mwc = self.wc_ps.sum() / m
            self.aps_t = self.wv_t * (1 - ps[:m_t])  # w (D - ps) on the cohort
            self.aps_c = -self.wv_c * ps_c           # ... and on the controls
            if method == "dr":
                self.v3 = XpX_inv @ (_xv(self.Xc, self.wc_ps) / m)  # XpX_inv @ mean(w_c X)

    def estimate(self, dY_t, dY_c, method):
        """ATT and the influence function on the cohort's and the controls' rows.

        The same algebra as DRDID's ``drdid_panel`` (transcribed directly in the tests'
        ``reference_drdid._drdid_cell``, which the tests check this against), but each ``alr @ M`` product is taken as
        ``a_i * (X_i @ (inv @ M))``: no (m, k) temporaries per cell.
        """
        m = self.m
        if method in ("dr", "reg"):
            coef = np.linalg.solve(self.A, _xv(self.Xc, self.wv_c * dY_c))
            r_c = dY_c - _bx(coef, self.Xc)
            out_t = _bx(coef, self.Xt)
        if method == "reg":
            eta_t = _dot(self.wv_t, dY_t) / m / self.mwt
            eta_c = _dot(self.wv_t, out_t) / m / self.mwt
            inf_t = self.wv_t * ((dY_t - eta_t) - (out_t - eta_c)) / self.mwt
            inf_c = -(self.wv_c * r_c) * _bx(self.v1, self.Xc) / self.mwt
            return eta_t - eta_c, inf_t, inf_c
        if method == "dr":
            r_t = dY_t - out_t
        else:
            r_t, r_c = dY_t, dY_c
        eta_t = _dot(self.wv_t, r_t) / m / self.mwt
        eta_c = _dot(self.wc_ps, r_c) / m / self.mwc
        dc = self.wc_ps * (r_c - eta_c)
        v2 = self.Hinv_n @ (_xv(self.Xc, dc) / m)
        inf_t = self.wv_t * (r_t - eta_t) / self.mwt - self.aps_t * _bx(v2, self.Xt) / self.mwc
        if method == "dr":
            u = _bx(self.v1 / self.mwt - self.v3 / self.mwc, self.Xc)
            inf_c = -(self.wv_c * r_c) * u - dc / self.mwc - self.aps_c * _bx(v2 / self.mwc, self.Xc)
        else:
            inf_c = -dc / self.mwc - self.aps_c * _bx(v2, self.Xc) / self.mwc
        return eta_t - eta_c, inf_t, inf_c

# --------------------------------------------------------------------------- bootstrap
def _cluster_sums(M: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Sum of the rows of ``M`` within each cluster (``rowsum`` in R did 2.5's ``mboot``).

    R did up to 2.4 averaged the influence function within clusters; 2.5 sums it
    (Callaway & Sant'Anna 2021, Remark 10): the estimator is a (1/n) average over units,
    so its cluster-robust variance is :math:`n^{-2}\\sum_c S_c^2` with :math:`S_c` the
    cluster sums. The two agree only when all clusters have the same size.
    """
    ncl = int(cluster.max()) + 1
    counts = np.bincount(cluster, minlength=ncl)
    order = np.argsort(cluster, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    return np.add.reduceat(M[order], starts, axis=0)


def _multiplier_bootstrap(IF, cluster, biters, seed, progress=None, extra=None, segments=None, dtype=np.float64):
    """Rademacher multiplier bootstrap of the columns of ``IF`` (as R did's ``mboot``).

    Parameters
    ----------
    IF : ndarray (n, k)
        Influence functions.
    cluster : ndarray of int or None
        Cluster code per unit; the influence function is summed within clusters first
        (R did 2.5), and one multiplier is drawn per cluster.
    extra : ndarray (n, q), optional
        More columns bootstrapped with the same draws (appended after ``IF``'s).
    segments : sequence of int, optional
        Row positions where a new segment (cohort) starts; the result then holds the
        draws of every column within every segment, ``(biters, n_segments * width)``,
        segment-major. Needs ``cluster=None``.
    dtype : numpy dtype
        Precision of the block products (the 0/1 draws are exact in either; per-block sums are
        accumulated in float64). float32 halves the memory traffic, which bounds the speed.

    Returns
    -------
    bres : ndarray (biters, k + q)
        Draws of :math:`n^{-1/2}\\sum_c U_c S_c` with :math:`S_c` the influence function summed
        within cluster c (a unit when there are no clusters) and n the number of units, so
        that the standard error is the draws' scale over :math:`\\sqrt n` with or without
        clusters (R did 2.5 scales by :math:`\\sqrt{C}` and multiplies the scale by
        :math:`\\sqrt{C}/n`: the same number).
    n : int
        Number of units (rows of ``IF``).

    Notes
    -----
    With :math:`U_i = 2B_i - 1`, :math:`B_i \\sim` Bernoulli(1/2),
    :math:`\\sum_i U_i\\psi_i = 2\\sum_i B_i\\psi_i - \\sum_i\\psi_i`. The bits :math:`B`
    come from random bytes unpacked per block of units, and each block is one BLAS
    product, so memory is bounded by the block (about 32 MB) whatever n and biters are.
    """
    IF = np.asarray(IF, dtype=float)
    if IF.ndim == 1:
        IF = IF[:, None]
    mats = [IF] if extra is None else [IF, np.asarray(extra, dtype=float).reshape(len(IF), -1)]
    n_units = mats[0].shape[0]
    if cluster is not None:
        mats = [_cluster_sums(M, cluster) for M in mats]
    if dtype != np.float64:
        mats = [np.asarray(M, dtype=dtype, order="F") for M in mats]
    m = mats[0].shape[0]
    widths = [M.shape[1] for M in mats]
    rng = np.random.default_rng(seed)
    block = max(8, (_BOOT_BLOCK_BYTES // (8 * max(1, biters))) // 8 * 8)
    width = sum(widths)
    bounds = np.unique(np.r_[0, np.asarray([] if segments is None else segments, dtype=np.int64), m])
    seg_of = []  # (start, end, segment) blocks that never straddle a segment boundary
    for si, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        seg_of += [(s, min(b, s + block), si) for s in range(int(a), int(b), block)]
    nseg = len(bounds) - 1 if segments is not None else 1
    acc = np.zeros((biters, nseg * width))
    totals = np.zeros(nseg * width)
    starts = seg_of
    show = progress if progress is not None else (m >= _PROGRESS_MIN_UNITS and not _checks.in_notebook_kernel())
    if show:
        try:
            from tqdm.auto import tqdm

            starts = tqdm(starts, total=len(seg_of), desc="multiplier bootstrap", leave=False)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    cached, store = _draw_cache_lookup(seed, biters, seg_of)
    # One BLAS thread for the block products, whatever the kernel's thread settings: OpenBLAS splits the sums
    # of a (draws x units) @ (units x cells) product differently with 2 threads than with 1, which moved the
    # standard errors in the 8th digit between `reach run --jobs 1` and `--jobs 2` (reach.runner.kernel_thread_env).
    with threadpool_limits(limits=1, user_api="blas"):
        for i, (s, e, si) in enumerate(starts):
            nb = e - s
            if cached is not None:
                packed = cached[i]
            else:
                packed = rng.integers(0, 256, size=(biters, (nb + 7) // 8), dtype=np.uint8)
                if store is not None:
                    store.append(packed)
            bits = np.unpackbits(packed, axis=1, count=nb)
            B = bits.astype(dtype)
            col = si * width if segments is not None else 0
            for M in mats:
                k = M.shape[1]
                Mb = M[s:e]
                # Units sorted by cohort: a block's influence functions are zero in every cell its
                # cohorts take no part in, and those columns would only add exact zeros.
                nz = np.flatnonzero(Mb.any(axis=0))
                if len(nz) == k:
                    acc[:, col:col + k] += B @ Mb
                elif len(nz):
                    acc[:, col + nz] += B @ Mb[:, nz]
                totals[col:col + k] += Mb.sum(axis=0, dtype=np.float64)
                col += k
    if store is not None:
        _draw_cache_store(seed, biters, seg_of, store)
    return (2.0 * acc - totals[None, :]) / math.sqrt(n_units), n_units


#: Multiplier draws kept for reuse: ``(seed, biters, blocks) -> packed Rademacher bits per block``.
#: Estimates on the same design (same units/clusters in the same cohort blocks, same biters and seed:
#: notebook 04's outcomes on one sample) draw the same multipliers; generating them again costs time and
#: gives the same numbers. Packed bits: biters x units / 8 bytes (125 MB at a million units, 999 draws).
_DRAW_CACHE: dict = {}
#: Most bytes the draw cache holds; the oldest design is forgotten first.
_DRAW_CACHE_BYTES = 512 * 2**20


def _draw_cache_key(seed, biters, blocks):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        return None  # no seed (or a Generator): the draws are meant to differ from call to call
    return ("rademacher", int(seed), int(biters), tuple((int(s), int(e)) for s, e, _ in blocks))


def _draw_cache_lookup(seed, biters, blocks):
    """``(cached packed blocks, None)`` on a hit; ``(None, [])`` to collect a new design's blocks when they fit
    in the cache; ``(None, None)`` when nothing is cached (no integer seed, or too large)."""
    key = _draw_cache_key(seed, biters, blocks)
    if key is None:
        return None, None
    if key in _DRAW_CACHE:
        _DRAW_CACHE[key] = _DRAW_CACHE.pop(key)  # most recently used last
        return _DRAW_CACHE[key], None
    size = biters * sum((e - s + 7) // 8 for s, e, _ in blocks)
    return None, ([] if size <= _DRAW_CACHE_BYTES else None)


def _draw_cache_store(seed, biters, blocks, packed: list) -> None:
    _DRAW_CACHE[_draw_cache_key(seed, biters, blocks)] = packed
    while sum(b.nbytes for v in _DRAW_CACHE.values() for b in v) > _DRAW_CACHE_BYTES:
        _DRAW_CACHE.pop(next(iter(_DRAW_CACHE)))


def _boot_summary(bres, m, alp):
    """Bootstrap standard errors (IQR-based) and the sup-t critical value, as R did's mboot."""
    k = bres.shape[1]
    se = np.full(k, np.nan)
    ok = np.isfinite(bres).all(axis=0) & ((bres**2).sum(axis=0) > _TINY)
    crit = np.nan
    if ok.any():
        b = bres[:, ok]
        q = _quantile1(b, 0.75) - _quantile1(b, 0.25)
        sig = q / (ndtri(0.75) - ndtri(0.25))
        sig = np.where(sig <= _TINY, np.nan, sig)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.abs(b / sig)
        bT = np.nanmax(np.where(np.isfinite(t), t, np.nan), axis=1) if np.isfinite(t).any() else np.array([])
        bT = bT[np.isfinite(bT)]
        if len(bT):
            crit = float(_quantile1(bT, 1 - alp))
        se[ok] = sig / math.sqrt(m)
    return se, crit


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS: a threaded level-1 BLAS call stalls on a busy shared machine."""
    return float(np.einsum("i,i->", a, b))


def _cohort_columns(G: np.ndarray, w: np.ndarray, cohorts: np.ndarray) -> np.ndarray:
    """``(n, C)``: column c is :math:`w_i 1\\{G_i = g_c\\}` (the aggregation weights' influence functions are linear in these)."""
    Z = np.zeros((len(G), len(cohorts)), order="F")
    for c, g in enumerate(cohorts):
        hit = G == g
        Z[hit, c] = w[hit]
    return Z


def _analytic_se(IF, cluster=None):
    """``sqrt(sum_i psi_i^2) / n``; with clusters the cluster-robust ``sqrt(sum_c S_c^2) / n``.

    The clustered form is R did 2.5's analytic (``bstrap = FALSE``) cluster-robust
    standard error (tests/testthat/test-cluster-analytic.R: ``sqrt(colSums(rowsum(inffunc, cl)^2)) / n``).
    """
    n = IF.shape[0]
    S = IF if cluster is None else _cluster_sums(IF, cluster)
    # einsum: no (n, k) temporary for the squares
    se = np.sqrt(np.einsum("ij,ij->j", S, S) / n / n)
    return np.where(se <= _TINY, np.nan, se)


def _vcov(IF, cluster=None):
    """Covariance matrix of the estimates whose influence functions are the columns of ``IF``
    (``S'S / n^2`` with S the rows, or the cluster sums of the rows)."""
    IF = np.asarray(IF, dtype=float)
    if IF.ndim == 1:
        IF = IF[:, None]
    n = IF.shape[0]
    S = IF if cluster is None else _cluster_sums(IF, cluster)
    return S.T @ S / n / n


# --------------------------------------------------------------------------- results
def _fmt(x, nd=4):
    return "NA" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _core(term, est, se, lo, hi, n_treated, n_control) -> dict:
    """The :data:`TIDY_CORE` columns of a tidy table, in order.

    ``statistic`` :math:`= \\hat\\theta/\\widehat{se}` and ``p_value`` :math:`= 2\\Phi(-|statistic|)`
    (normal, as R did's summaries); both NaN where the standard error is missing or zero.
    """
    est = np.asarray(est, dtype=float)
    se = np.asarray(se, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(np.isfinite(se) & (se > 0), est / se, np.nan)
    return {"term": term, "estimate": est, "std_error": se, "statistic": stat, "p_value": _two_sided_p(stat),
            "conf_low": lo, "conf_high": hi, "n_treated": n_treated, "n_control": n_control}


def _intervals(term, est, se, crit, z, n_treated, n_control) -> dict:
    """The core columns with simultaneous (``crit``) bands as ``conf_*``, and the pointwise (``z``) band."""
    core = _core(term, est, se, est - crit * se, est + crit * se, n_treated, n_control)
    return core, {"pointwise_low": est - z * se, "pointwise_high": est + z * se}


def _markdown_table(t: pd.DataFrame, cols: Sequence[str]) -> str:
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in t[list(cols)].itertuples(index=False):
        rows.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(rows)


def _readonly(a):
    a = np.asarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False, repr=False)
class ATTgtResult(ResultDisplay):
    """Group-time average treatment effects (immutable; see :func:`att_gt`).

    Arrays are read-only. ``inffunc`` is the ``(n_units, n_cells)`` influence
    function, scaled as R did's (``V = IF'IF/n``, ``se = sqrt(diag(V)/n)``); its rows
    (and ``unit_cohort``, ``unit_weight``, ``cluster``) are the units sorted by cohort.
    ``boot_draws`` (``biters x n_cells``) and ``boot_cohort_draws`` (``biters x`` cohorts
    ``boot_cohorts``) are the multiplier-bootstrap draws of the cells and of the cohort
    indicators :math:`w_i 1\\{G_i = g\\}`: :func:`aggte` maps them linearly instead of redrawing.
    """

    groups: np.ndarray
    times: np.ndarray
    base_times: np.ndarray
    att: np.ndarray
    se: np.ndarray
    se_analytic: np.ndarray
    crit_val: float
    n_treated: np.ndarray
    n_control: np.ndarray
    inffunc: np.ndarray = field(repr=False)
    unit_cohort: np.ndarray = field(repr=False)
    unit_weight: np.ndarray = field(repr=False)
    cluster: np.ndarray | None = field(repr=False)
    periods: np.ndarray = field(repr=False)
    n_units: int = 0
    yname: str = ""
    xformla: str | None = None
    control_group: str = "nevertreated"
    est_method: str = "dr"
    anticipation: int = 0
    base_period: str = "varying"
    bootstrap: bool = True
    biters: int = 999
    alp: float = 0.05
    seed: int = 0
    exclusions: dict = field(default_factory=dict)
    notes: tuple = ()
    boot_draws: np.ndarray | None = field(default=None, repr=False)
    boot_cohorts: np.ndarray | None = field(default=None, repr=False)
    boot_cohort_draws: np.ndarray | None = field(default=None, repr=False)
    n_boot_units: int = 0
    cband: bool = True
    na_cells: pd.DataFrame = field(default_factory=lambda: _na_frame([]), repr=False)
    unit_ids: np.ndarray | None = field(default=None, repr=False)
    panel: bool = True
    allow_unbalanced_panel: bool = False
    unbalanced: str = "rc"
    overlap_max: float = 0.999
    trim_level: float = 0.995
    data_signature: tuple = field(default=(), repr=False)

    @property
    def post(self) -> np.ndarray:
        return self.groups <= self.times

    def tidy(self) -> pd.DataFrame:
        """One row per (g, t): the :data:`TIDY_CORE` columns (``term`` is ``"ATT(g,t)"``), then
        ``group, time, pointwise_low, pointwise_high, post`` (:data:`ATT_GT_COLUMNS`).

        ``conf_low/conf_high`` use the simultaneous critical value (R did's
        default ``cband = TRUE``); ``pointwise_*``, ``statistic`` and ``p_value`` use the normal.
        """
        z = ndtri(1 - self.alp / 2)
        c = self.crit_val if np.isfinite(self.crit_val) else z
        g, t = self.groups.astype("int64"), self.times.astype("int64")
        core, band = _intervals([f"ATT({a},{b})" for a, b in zip(g, t)], self.att, self.se, c, z,
                                self.n_treated.astype("int64"), self.n_control.astype("int64"))
        return pd.DataFrame({**core, "group": g, "time": t, **band, "post": self.post}, columns=list(ATT_GT_COLUMNS))

    def pretest(self) -> dict:
        """Wald test that every pre-treatment ATT(g, t) is zero (R did's summary pre-test).

        Uses the analytic variance ``V = IF'IF/n`` of the pre-treatment cells with a
        non-degenerate variance. Returns ``{"statistic", "df", "p_value"}``
        (``p_value`` NaN if there are no pre-periods or ``V`` is singular). The key
        ``"pvalue"`` (same number) is a deprecated alias kept for one release.
        """
        pre = (self.groups > self.times) & np.isfinite(self.se_analytic) & np.isfinite(self.att)
        W, q = np.nan, int(pre.sum())
        if pre.any():
            IF = self.inffunc[:, pre]
            n = IF.shape[0]
            V = IF.T @ IF / n
            a = self.att[pre]
            if np.linalg.cond(V) <= 1 / np.finfo(float).eps:
                W = float(n * a @ np.linalg.solve(V, a))
        if np.isfinite(W):
            from scipy.special import chdtrc  # only here: see _NORMAL

            p = float(chdtrc(q, W))
        else:
            p = np.nan
        return {"statistic": W, "df": q, "p_value": p, "pvalue": p}

    def pretrend_test(self) -> dict:
        """Alias of :meth:`pretest`."""
        return self.pretest()

    def vcov(self) -> np.ndarray:
        """Covariance matrix of ``att`` (cells x cells) from the influence function.

        :math:`V = S'S/n^2` with S the rows of ``inffunc`` (one per unit), or their sums
        within the clusters of ``clustervars`` (cluster-robust). Missing cells give NaN rows.
        """
        V = _vcov(self.inffunc, self.cluster)
        bad = ~np.isfinite(self.att)
        V[bad, :] = np.nan
        V[:, bad] = np.nan
        return V

    def summary(self) -> str:
        t = self.tidy()
        band = "Simult." if np.isfinite(self.crit_val) else "Pointwise"
        lines = [
            f"Group-time average treatment effects: {self.yname}",
            f"(Callaway & Sant'Anna 2021; control group {self.control_group}, method {self.est_method}, "
            f"xformla {self.xformla or '~1'}, anticipation {self.anticipation}, base period {self.base_period})",
            f" group  time  ATT(g,t)  Std.Err  [{100 * (1 - self.alp):.0f}% {band} band]  n_treated n_control",
        ]
        for r in t.itertuples():
            lines.append(
                f" {r.group:5d} {r.time:5d} {_fmt(r.estimate):>9} {_fmt(r.std_error):>8} "
                f" {_fmt(r.conf_low):>8} {_fmt(r.conf_high):>8}  {r.n_treated:9d} {r.n_control:9d}"
            )
        p = self.pretest()
        lines.append(f"P-value for pre-test of parallel trends assumption: {_fmt(p['p_value'], 5)}")
        lines.append(
            f"Units: {self.n_units}; standard errors: "
            + (f"multiplier bootstrap ({self.biters} draws)" if self.bootstrap else "analytic (influence function)")
        )
        if self.exclusions:
            lines.append("Excluded: " + ", ".join(f"{k} = {v}" for k, v in self.exclusions.items()))
        for note in self.notes:
            lines.append("Note: " + note)
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        t = self.tidy()
        head = f"**ATT(g,t) for `{self.yname}`** ({self.est_method}, {self.control_group}); pre-test p = {_fmt(self.pretest()['p_value'], 3)}\n\n"
        return head + _markdown_table(t, ["group", "time", "estimate", "std_error", "conf_low", "conf_high",
                                          "n_treated", "n_control"])

    def _repr_html_(self) -> str:
        return self.tidy().to_html(index=False, float_format=lambda v: f"{v:.4f}")

    def __repr__(self) -> str:
        return (
            f"ATTgtResult(yname={self.yname!r}, cells={len(self.att)}, n_units={self.n_units}, "
            f"control_group={self.control_group!r}, est_method={self.est_method!r})"
        )


@dataclass(frozen=True, eq=False, repr=False)
class AggteResult(ResultDisplay):
    """Aggregated treatment effects (immutable; see :func:`aggte`)."""

    type: str
    overall_att: float
    overall_se: float
    keys: np.ndarray
    att: np.ndarray
    se: np.ndarray
    crit_val: float
    n_treated_keys: np.ndarray
    n_control_keys: np.ndarray
    n_treated: int
    n_control: int
    alp: float
    yname: str = ""
    bootstrap: bool = True
    inffunc: np.ndarray | None = field(default=None, repr=False)
    overall_inffunc: np.ndarray | None = field(default=None, repr=False)
    min_e: float = -np.inf
    max_e: float = np.inf
    balance_e: int | None = None
    cluster: np.ndarray | None = field(default=None, repr=False)

    def vcov(self) -> np.ndarray:
        """Covariance matrix of ``att`` (one row/column per key) from ``inffunc``.

        ``inffunc`` has one row per unit (a firm that enters several cohorts' matched sets
        in :func:`matched_att_gt` is one row: its contributions are already summed);
        with ``clustervars`` the rows are summed within clusters first, so this is the
        cluster-robust :math:`S'S/n^2` that R did 2.5's analytic standard errors use.
        Use it, not ``inffunc'inffunc/n^2``, when the result was clustered.
        """
        return _vcov(self.inffunc, self.cluster)

    _LEVEL = {"simple": "overall", "dynamic": "event_time", "group": "group", "calendar": "time"}

    def tidy(self) -> pd.DataFrame:
        """Overall row first (``key`` missing), then one row per event time / group / period.

        Columns (:data:`AGGTE_COLUMNS`): the :data:`TIDY_CORE` (``term`` ``"ATT"`` for the overall
        row, ``"ATT(e=k)"``, ``"ATT(g=k)"`` or ``"ATT(t=k)"`` for the keyed rows), then ``type, level,
        key, pointwise_low, pointwise_high``. ``conf_*`` of the keyed rows are simultaneous bands;
        the overall row's are pointwise.
        """
        z = ndtri(1 - self.alp / 2)
        c = self.crit_val if np.isfinite(self.crit_val) else z
        core, band = _intervals(["ATT"], np.array([self.overall_att]), np.array([self.overall_se]), z, z,
                                [self.n_treated], [self.n_control])
        overall = pd.DataFrame({**core, "type": [self.type], "level": ["overall"],
                                "key": pd.array([pd.NA], dtype="Int64"), **band}, columns=list(AGGTE_COLUMNS))
        if self.type == "simple" or len(self.keys) == 0:
            return overall
        keys = self.keys.astype("int64")
        letter = {"dynamic": "e", "group": "g", "calendar": "t"}[self.type]
        core, band = _intervals([f"ATT({letter}={k})" for k in keys], self.att, self.se, c, z,
                                self.n_treated_keys.astype("int64"), self.n_control_keys.astype("int64"))
        keyed = pd.DataFrame({**core, "type": self.type, "level": self._LEVEL[self.type],
                              "key": pd.array(keys, dtype="Int64"), **band}, columns=list(AGGTE_COLUMNS))
        return pd.concat([overall, keyed], ignore_index=True)

    def summary(self) -> str:
        z = ndtri(1 - self.alp / 2)
        lines = [
            f"Aggregated treatment effects ({self.type}): {self.yname}",
            f" overall ATT {_fmt(self.overall_att)}  Std.Err {_fmt(self.overall_se)}  "
            f"[{100 * (1 - self.alp):.0f}% CI {_fmt(self.overall_att - z * self.overall_se)}, {_fmt(self.overall_att + z * self.overall_se)}]",
        ]
        if self.type != "simple":
            lines.append(f" {self._LEVEL[self.type]:>10}  estimate  Std.Err  [simult. band]  n_treated")
            t = self.tidy().iloc[1:]
            for r in t.itertuples():
                lines.append(
                    f" {int(r.key):10d} {_fmt(r.estimate):>9} {_fmt(r.std_error):>8}  {_fmt(r.conf_low):>8} {_fmt(r.conf_high):>8}  {r.n_treated:9d}"
                )
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        t = self.tidy()
        return (f"**Aggregated ATT ({self.type}) for `{self.yname}`**\n\n"
                + _markdown_table(t, ["level", "key", "estimate", "std_error", "conf_low", "conf_high", "n_treated"]))

    def _repr_html_(self) -> str:
        return self.tidy().to_html(index=False, float_format=lambda v: f"{v:.4f}")

    def __repr__(self) -> str:
        return f"AggteResult(type={self.type!r}, overall_att={self.overall_att:.4f}, overall_se={self.overall_se:.4f})"


@dataclass(frozen=True, repr=False)
class DiDEstimate(ResultDisplay):
    """A single (naive or two-way fixed effects) estimate with its uncertainty."""

    method: str
    estimate: float
    std_error: float
    conf_low: float
    conf_high: float
    n_obs: int
    n_units: int
    n_treated: int
    n_control: int
    df_resid: float
    note: str = ""

    def tidy(self) -> pd.DataFrame:
        """One row (:data:`ESTIMATE_COLUMNS`): the :data:`TIDY_CORE` (``term`` is the method), then
        ``method, n_obs, n_units, df_resid``. ``p_value`` is the normal one, as the interval."""
        core = _core([self.method], [self.estimate], [self.std_error], [self.conf_low], [self.conf_high],
                     [self.n_treated], [self.n_control])
        return pd.DataFrame({**core, "method": [self.method], "n_obs": [self.n_obs], "n_units": [self.n_units],
                             "df_resid": [self.df_resid]}, columns=list(ESTIMATE_COLUMNS))

    def summary(self) -> str:
        return (f"{self.method}: {_fmt(self.estimate)} (s.e. {_fmt(self.std_error)}; CI {_fmt(self.conf_low)} to "
                f"{_fmt(self.conf_high)}); {self.n_units} units ({self.n_treated} treated, {self.n_control} control)"
                + (f". {self.note}" if self.note else ""))

    def _repr_markdown_(self) -> str:
        return self.summary()


# --------------------------------------------------------------------------- att_gt
def _is_balanced(df, idname, tname, need) -> bool:
    """Every unit observed (without missing values in ``need``) in every period, once."""
    if not isinstance(df, pd.DataFrame) or any(c not in df.columns for c in [idname, tname, *need]):
        return False  # let the estimator raise its own, clearer error
    d = df[[idname, tname, *need]]
    if d.isna().any().any():
        return False
    return len(d) == d[idname].nunique() * d[tname].nunique() and not d.duplicated([idname, tname]).any()


def _na_frame(na_cells) -> pd.DataFrame:
    """Cells left missing, one row each: ``group, time, reason``."""
    return pd.DataFrame({"group": pd.array([int(c[0]) for c in na_cells], dtype="int64"),
                         "time": pd.array([int(c[1]) for c in na_cells], dtype="int64"),
                         "reason": [str(c[2]) for c in na_cells]})


def _warn_na_cells(na_cells) -> None:
    if na_cells:
        shown = "; ".join(f"ATT({int(g)},{int(t)}): {r}" for g, t, r in na_cells[:5])
        more = f" (and {len(na_cells) - 5} more)" if len(na_cells) > 5 else ""
        warnings.warn(f"att_gt: {len(na_cells)} group-time cell(s) left missing (NA): {shown}{more}",
                      UserWarning, stacklevel=3)


def att_gt(
    df: pd.DataFrame,
    yname: str,
    tname: str,
    idname: str,
    gname: str,
    xformla: str | None = None,
    control_group: str = "nevertreated",
    est_method: str = "dr",
    anticipation: int = 0,
    base_period: str = "varying",
    weightsname: str | None = None,
    clustervars: Sequence[str] | None = None,
    bootstrap: bool = True,
    biters: int = 999,
    alp: float = 0.05,
    seed: int = 0,
    allow_unbalanced_panel: bool = False,
    progress: bool | None = None,
    panel: bool = True,
    cband: bool | None = None,
    overlap_max: float = 0.999,
    trim_level: float = 0.995,
    unbalanced: str = "rc",
    _groups: Sequence[float] | None = None,
    _cells: str = "all",
) -> ATTgtResult:
    r"""Group-time average treatment effects of Callaway & Sant'Anna (2021), panel data.

    Parameters
    ----------
    df : DataFrame
        Long panel: one row per unit and period.
    yname, tname, idname, gname : str
        Outcome, period, unit identifier and first-treatment period (0 = never treated).
    xformla : str, optional
        Covariates, ``"~ x1 + x2"``; values are taken at the earlier of the two
        periods of each comparison (the base period for post-treatment cells), as R did.
    control_group : {"nevertreated", "notyettreated"}
    est_method : {"dr", "ipw", "reg"}
        Doubly robust (DRDID ``drdid_panel``), IPW (``std_ipw_did_panel``) or
        outcome regression (``reg_did_panel``). Without covariates all three coincide.
    anticipation : int
        Periods of anticipation :math:`\delta`; the base period of cohort g is ``g - delta - 1``.
    base_period : {"varying", "universal"}
    weightsname : str, optional
        Time-invariant sampling weights (e.g. matching weights).
    clustervars : list of str, optional
        ``idname`` and at most one other time-invariant variable (a variable that varies
        within a unit raises). With ``bootstrap=True`` one multiplier is drawn per cluster
        and the influence function is summed within clusters (R did 2.5); with
        ``bootstrap=False`` the standard errors are the analytic cluster-robust ones,
        :math:`\sqrt{\sum_c S_c^2}/n`.
    bootstrap : bool
        Multiplier-bootstrap standard errors (Rademacher weights, IQR-based, as R did).
    cband : bool, optional
        Simultaneous (uniform) confidence band from the multiplier bootstrap's sup-t
        critical value. Default: ``bootstrap`` (R did's default ``cband = TRUE`` needs the
        bootstrap). With ``bootstrap=False, cband=False`` no bootstrap runs at all and
        ``conf_low/conf_high`` are pointwise.
    biters, alp, seed : int, float, int
        Bootstrap draws, significance level, random seed.
    allow_unbalanced_panel : bool
        Keep units not observed in every period (see :func:`_att_gt_unbalanced`).
        By default (``False``, as R did) they are dropped, counted in
        ``result.exclusions`` and a ``UserWarning`` says how many.
    panel : bool
        ``False``: the rows are repeated cross sections (no unit is followed); see
        :func:`_att_gt_unbalanced`.
    overlap_max : float
        R did's overlap guard (dr and ipw): a cell whose unweighted propensity score
        (logit of the cohort indicator on the covariates, intercept only without covariates)
        reaches ``overlap_max`` for some unit is left missing (NA) with a warning; the cell and the
        reason are listed in ``result.na_cells``.
    trim_level : float
        DRDID's trimming (dr and ipw): comparison units with a propensity score of
        ``trim_level`` or more get weight zero in that cell.
    unbalanced : {"rc", "pairs"}
        How ``allow_unbalanced_panel=True`` keeps the units: ``"rc"`` as R did 2.5 (the
        rows of each cell's two periods as repeated cross sections, influence function summed
        by unit); ``"pairs"`` (reach's extension) each ATT(g, t) on the units observed in both
        its base period and t, with the panel estimator. ``"pairs"`` is robust to firms
        entering and leaving the register; ``"rc"`` assumes those changes of composition are
        unrelated to the outcome.

    Returns
    -------
    ATTgtResult

    Notes
    -----
    For cohort :math:`g` and period :math:`t` with base period :math:`b`
    (:math:`b = g-\delta-1` if :math:`t \ge g-\delta`, else :math:`t-1` for a varying base),

    .. math:: ATT(g,t) = E[Y_t - Y_b \mid G=g] - E[Y_t - Y_b \mid C=1]

    with :math:`C` the never-treated units, or the units not yet treated by
    :math:`\max(t,b)+\delta` (other than cohort g). With covariates the second term
    is :math:`E[m(X)\mid G=g]` (regression), a propensity-reweighted control mean
    (IPW), or both (doubly robust, Sant'Anna & Zhao 2020). Each estimate has an
    influence function :math:`\psi_i` over all n units (zero outside the cell);
    the analytic standard error is :math:`\sqrt{\sum_i \psi_i^2}/n`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 400
    >>> g = np.repeat(rng.choice([0, 2003], n), 3)
    >>> panel = pd.DataFrame({"id": np.repeat(np.arange(n), 3), "year": np.tile([2001, 2002, 2003], n), "g": g})
    >>> panel["y"] = rng.normal(size=3 * n) + 1.0 * ((panel.year >= panel.g) & (panel.g > 0))
    >>> r = att_gt(panel, "y", "year", "id", "g", bootstrap=False)
    >>> r.tidy()[["group", "time"]].values.tolist()
    [[2003, 2002], [2003, 2003]]
    """
    _check_att_gt_args(control_group, est_method, base_period, anticipation, alp, biters, overlap_max, trim_level,
                       unbalanced, panel)
    cband = bool(bootstrap) if cband is None else bool(cband)
    clustervars = list(clustervars) if clustervars else []
    covs = parse_xformla(xformla)
    if allow_unbalanced_panel and panel and _is_balanced(df, idname, tname, [yname, *covs] + ([weightsname] if weightsname else [])):
        # R did 2.5 (NEWS 2.1): a balanced panel with allow_unbalanced_panel=TRUE uses the panel estimator
        allow_unbalanced_panel = False
    if allow_unbalanced_panel or not panel:
        return _att_gt_unbalanced(
            df, yname, tname, idname, gname, covs, xformla=xformla, control_group=control_group,
            est_method=est_method, anticipation=anticipation, base_period=base_period, weightsname=weightsname,
            clustervars=clustervars, bootstrap=bootstrap, biters=biters, alp=alp, seed=seed, panel=panel,
            cband=cband, overlap_max=overlap_max, trim_level=trim_level, _groups=_groups,
            unbalanced=unbalanced if panel else "rc", _cells=_cells)
    # the stages of R did: pre_process_did -> compute.att_gt -> mboot -> MP
    P, glist, notes = _pre_process(df, yname, tname, idname, gname, covs, weightsname, clustervars,
                                   control_group, anticipation, _groups)
    return _att_gt_balanced(P, glist, notes, covs, yname=yname, xformla=xformla, control_group=control_group,
                            est_method=est_method, anticipation=anticipation, base_period=base_period,
                            bootstrap=bootstrap, biters=biters, alp=alp, seed=seed, progress=progress, cband=cband,
                            overlap_max=overlap_max, trim_level=trim_level, _cells=_cells)


def _att_gt_balanced(P: _Panel, glist, notes, covs, *, yname, xformla, control_group, est_method, anticipation,
                     base_period, bootstrap, biters, alp, seed, progress, cband, overlap_max, trim_level,
                     _cells) -> ATTgtResult:
    """``att_gt`` on the balanced arrays of :func:`_pre_process`: the cells, the inference, the result."""
    cells = _cell_list(glist, P.periods, anticipation, base_period, _cells)
    S = _sort_by_cohort(P, len(cells))
    E = _estimate_cells(S, cells, covs, control_group, est_method, anticipation, overlap_max, trim_level)
    E.notes[:0] = notes
    small = [int(g) for g in glist if S.size[float(g)] < len(covs) + 5]
    if small:
        E.notes.append(f"small cohort(s) {small}: fewer than {len(covs) + 5} units (R did warns likewise)")
    _warn_na_cells(E.na_cells)
    if E.R is not None:
        draws = lambda: _draws_by_cohort(S, E.R, glist, int(biters), seed, progress)  # noqa: E731
    else:
        draws = lambda: _draws_dense(E.IF, S.cluster, _cohort_columns(S.G, S.w, glist), int(biters), seed, progress)  # noqa: E731
    inf = _inference(E.IF, S.cluster, E.att, draws, bootstrap=bootstrap, cband=cband, alp=alp)
    if np.isfinite(inf.crit) and inf.crit >= 7:
        E.notes.append(f"simultaneous critical value {inf.crit:.2f} is large; small cohorts or little outcome variation")
    return _att_gt_result(E, inf, S.G, S.w, S.cluster, S.periods, S.ids, glist, yname=yname, xformla=xformla,
                          control_group=control_group, est_method=est_method, anticipation=anticipation,
                          base_period=base_period, bootstrap=bootstrap, biters=biters, alp=alp, seed=seed,
                          cband=cband, exclusions=P.exclusions, overlap_max=float(overlap_max),
                          trim_level=float(trim_level),
                          data_signature=() if _cells == "post" else _wide_signature(S.Y, [S.X[c] for c in covs]))


def _check_att_gt_args(control_group, est_method, base_period, anticipation, alp, biters, overlap_max, trim_level,
                       unbalanced, panel) -> None:
    """Refuse an invalid choice or number, naming the argument, what is allowed and what was received."""
    check_choice("control_group", control_group, CONTROL_GROUPS)
    check_choice("est_method", est_method, EST_METHODS)
    check_choice("base_period", base_period, BASE_PERIODS)
    if not isinstance(anticipation, (int, np.integer)) or anticipation < 0:
        raise ValueError(f"anticipation must be a non-negative integer; got {anticipation!r}")
    if not 0 < alp < 1:
        raise ValueError(f"alp must be in (0, 1); got {alp!r}")
    if int(biters) < 1:
        raise ValueError(f"biters must be a positive integer; got {biters!r}")
    for name, v in (("overlap_max", overlap_max), ("trim_level", trim_level)):
        if not (isinstance(v, (int, float)) and 0.5 < float(v) <= 1.0):
            raise ValueError(f"{name} must be a probability in (0.5, 1]; got {v!r}")
    check_choice("unbalanced", unbalanced, UNBALANCED_MODES)
    if unbalanced == "pairs" and not panel:
        raise ValueError("unbalanced='pairs' follows units over time: it needs panel=True; got panel=False")


def _check_cohorts(G, periods, anticipation, gname, tname, control_group, _groups) -> np.ndarray:
    """The cohorts to estimate; refuses cohorts without a pre-period (R did drops them with a warning: we
    drop nothing silently), no treated units, and ``nevertreated`` without never-treated units."""
    glist_all = np.unique(G[G > 0])
    no_pre = [int(g) for g in glist_all if g - anticipation <= periods[0]]
    if no_pre:
        counts = {g: int((G == g).sum()) for g in no_pre}
        raise ValueError(
            f"df: cohort(s) {counts} (cohort: units) in {gname!r} have no pre-treatment period "
            f"within {tname} {int(periods[0])}-{int(periods[-1])} (anticipation {anticipation}); ATT(g,t) needs a "
            f"period before g - anticipation. Drop these units or start the panel earlier."
        )
    glist = glist_all if _groups is None else glist_all[np.isin(glist_all, np.asarray(_groups, dtype=float))]
    if len(glist) == 0:
        raise ValueError(f"df: no treated units (all {gname!r} are 0 or after the last period)")
    if control_group == "nevertreated" and not (G == 0).any():
        raise ValueError(
            f"df: control_group='nevertreated' but no unit has {gname!r} == 0 (never treated); "
            f"use control_group='notyettreated' or add never-treated units"
        )
    return glist


def _pre_process(df, yname, tname, idname, gname, covs, weightsname, clustervars, control_group, anticipation,
                 _groups) -> tuple[_Panel, np.ndarray, list]:
    """R did's ``pre_process_did`` for a balanced panel: the arrays, the cohorts, notes; warns when units are dropped."""
    P = _prepare(df, yname, tname, idname, gname, covs, weightsname, clustervars, False)
    return _pre_process_panel(P, gname, tname, control_group, anticipation, _groups)


def _pre_process_panel(P: _Panel, gname, tname, control_group, anticipation, _groups) -> tuple[_Panel, np.ndarray, list]:
    """:func:`_pre_process` from the prepared arrays: the warning on dropped units, the cohorts, the comparison
    cohort when no unit is never treated."""
    excl = dict(P.exclusions)
    notes: list[str] = []
    dropped = {k: v for k, v in excl.items() if k in ("units_not_observed_every_period", "units_with_missing_values")}
    if dropped:
        # R did warns when it balances the panel; a line in summary() is easy to miss
        warnings.warn(f"att_gt: balanced panel required (allow_unbalanced_panel=False): dropped "
                      + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items())
                      + "; pass allow_unbalanced_panel=True to keep them", UserWarning, stacklevel=3)
    glist = _check_cohorts(P.G, P.periods, anticipation, gname, tname, control_group, _groups)
    if control_group == "notyettreated" and not (P.G == 0).any():
        # R did: without never-treated units, the last cohort serves as the comparison and periods from it on are dropped.
        gmax = glist.max()
        keep_t = P.periods < gmax - anticipation
        excl["periods_dropped_no_never_treated"] = int((~keep_t).sum())
        notes.append(f"no never-treated units: cohort {int(gmax)} serves as not-yet-treated comparison; periods >= {int(gmax - anticipation)} dropped")
        P = _Panel(P.ids, P.periods[keep_t], P.Y[:, keep_t], np.where(P.G == gmax, 0.0, P.G), P.w,
                   {k: v[:, keep_t] for k, v in P.X.items()}, P.cluster, excl)
        glist = glist[glist < gmax]
        if len(P.periods) < 2 or len(glist) == 0:
            raise ValueError("df: without never-treated units too few periods/cohorts remain to estimate any ATT(g,t)")
    return _Panel(P.ids, P.periods, P.Y, P.G, P.w, P.X, P.cluster, excl), glist, notes


def _cell_list(glist, periods, anticipation, base_period, which="all") -> list[tuple]:
    """(g, target index, base index) of every ATT(g, t): the base is ``g - anticipation - 1`` for post
    cells (and every cell with a universal base), the previous period for pre cells with a varying base.

    ``which="post"``: only the cells with ``t >= g - anticipation``. Each cell is estimated on its own,
    so the post cells are the same without the pre cells; an ``aggte("simple")`` that only needs them
    (:func:`reach.power.fit_simple`, once per placebo draw or subgroup) skips the pre-period fits, which
    with a varying base and time-varying covariates each need a propensity design of their own.
    ``which="pre"``: only the others; with a universal base they are what a varying-base estimate of the
    same data does not already hold (see :func:`_universal_from_varying`).
    """
    if which not in ("all", "post", "pre"):
        raise ValueError(f"which must be 'all', 'post' or 'pre'; got {which!r}")
    cells = []
    T = len(periods)
    for g in glist:
        b_post = int(np.searchsorted(periods, g - anticipation, side="left")) - 1
        for ti in (range(1, T) if base_period == "varying" else range(T)):
            pre = periods[ti] < g - anticipation
            if (pre and which == "post") or (not pre and which == "pre"):
                continue
            cells.append((g, ti, ti - 1 if pre and base_period == "varying" else b_post))
    return cells


@dataclass(frozen=True)
class _Sorted:
    """The balanced panel with units sorted by cohort: every cohort is a contiguous block of rows,
    so a (g, t) cell reads slices (views) of the wide arrays instead of masking all n units."""

    ids: np.ndarray
    periods: np.ndarray
    Y: np.ndarray
    G: np.ndarray
    w: np.ndarray
    X: dict
    cluster: np.ndarray | None
    cvals: np.ndarray
    cstart: np.ndarray
    block: dict
    size: dict


def _sort_by_cohort(P: _Panel, n_cells: int) -> _Sorted:
    n = P.Y.shape[0]
    if n * n_cells * 8 > _MAX_IF_BYTES:
        raise MemoryError(
            f"influence functions would need {n * n_cells * 8 / 2**30:.1f} GiB ({n} units x {n_cells} cells); "
            f"restrict the periods or cohorts, or raise reach.did._MAX_IF_BYTES"
        )
    order = np.argsort(P.G, kind="stable")
    G = P.G[order]
    cvals, cstart, csize = np.unique(G, return_index=True, return_counts=True)
    return _Sorted(ids=np.asarray(P.ids)[order], periods=P.periods, Y=np.asfortranarray(P.Y[order]), G=G,
                   w=P.w[order], X={c: np.asfortranarray(v[order]) for c, v in P.X.items()},
                   cluster=None if P.cluster is None else P.cluster[order], cvals=cvals, cstart=cstart,
                   block={float(c): slice(int(s), int(s + m)) for c, s, m in zip(cvals, cstart, csize)},
                   size={float(c): int(m) for c, m in zip(cvals, csize)})


@dataclass
class _CellEstimates:
    """What the cell stage produces (filled cell by cell): estimates, influence functions, counts, NA cells."""

    groups: np.ndarray
    times: np.ndarray
    bases: np.ndarray
    att: np.ndarray
    IF: np.ndarray
    n_tr: np.ndarray
    n_co: np.ndarray
    R: np.ndarray | None = None  # no covariates: IF = (per-cohort columns of w Y) @ R (see _nocov_cell)
    na_cells: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @classmethod
    def empty(cls, cells, periods, n, order="F"):
        k = len(cells)
        return cls(groups=np.array([c[0] for c in cells], dtype=float),
                   times=np.array([periods[c[1]] for c in cells], dtype=float),
                   bases=np.array([periods[c[2]] for c in cells], dtype=float), att=np.full(k, np.nan),
                   IF=np.zeros((n, k), order=order),  # column = one cell, contiguous
                   n_tr=np.zeros(k, dtype=np.int64), n_co=np.zeros(k, dtype=np.int64))


def _estimate_cells(S: _Sorted, cells, covs, control_group, est_method, anticipation, overlap_max,
                    trim_level) -> _CellEstimates:
    """R did's ``compute.att_gt``: every ATT(g, t) and its influence function over all n units."""
    n, T = S.Y.shape
    E = _CellEstimates.empty(cells, S.periods, n)
    # Without covariates IF[:, j] = sum over cohorts c of R[(c, period), j] * w_i Y_i,period (and
    # R[(c, T), j] * w_i): the bootstrap then needs only the per-cohort sums of U w Y (T + 1 columns),
    # not all k cells. Y is centred per period first so the sums do not cancel.
    if not covs and S.cluster is None:
        E.R = np.zeros((len(S.cvals) * (T + 1), len(cells)))
    mu = S.Y.mean(axis=0)
    cpos = {float(c): i for i, c in enumerate(S.cvals)}
    never = S.block.get(0.0)
    designs = _DesignCache(S, covs, est_method, overlap_max, trim_level)
    for j, (g, ti, bi) in enumerate(cells):
        E.n_tr[j] = S.size[float(g)]
        if ti == bi:  # universal base: the reference period itself
            E.att[j] = 0.0
            E.n_co[j] = S.size.get(0.0, 0) if control_group == "nevertreated" else 0
            continue
        if control_group == "nevertreated":
            ctrl = [never] if never is not None else []
        else:
            tc = S.periods[max(ti, bi)]
            ctrl = [S.block[c] for c in S.cvals if c == 0 or (c > tc + anticipation and c != g)]
        E.n_co[j] = sum(s.stop - s.start for s in ctrl)
        if E.n_co[j] == 0:
            E.notes.append(f"ATT({int(g)},{int(S.periods[ti])}): no comparison units; left missing")
            E.na_cells.append((g, S.periods[ti], "no comparison units"))
            continue
        share = E.n_tr[j] / (E.n_tr[j] + E.n_co[j])
        if not covs and est_method in ("dr", "ipw") and share >= overlap_max:
            # R did's guard with an intercept-only score: the cohort's share of the cell
            E.na_cells.append((g, S.periods[ti], f"overlap fails: cohort is {share:.4f} >= overlap_max "
                                                  f"{overlap_max} of the cell's units"))
            continue
        if not covs:
            _nocov_cell(S, E, j, g, ti, bi, ctrl, mu, cpos)
        else:
            _cov_cell(S, E, j, g, ti, bi, ctrl, designs)
    return E


def _nocov_cell(S: _Sorted, E: _CellEstimates, j, g, ti, bi, ctrl, mu, cpos) -> None:
    """Closed form without covariates: all three methods reduce to a difference of weighted mean changes."""
    n, T = S.Y.shape
    Y, w = S.Y, S.w
    tr = S.block[float(g)]
    dY1 = Y[tr, ti] - Y[tr, bi]
    W1 = w[tr].sum()
    m1 = _dot(w[tr], dY1) / W1
    dY0 = [Y[s, ti] - Y[s, bi] for s in ctrl]
    W0 = sum(w[s].sum() for s in ctrl)
    m0 = sum(_dot(w[s], d) for s, d in zip(ctrl, dY0)) / W0
    E.att[j] = m1 - m0
    E.IF[tr, j] = (n / W1) * w[tr] * (dY1 - m1)
    for s, d in zip(ctrl, dY0):
        E.IF[s, j] = (-n / W0) * w[s] * (d - m0)
    if E.R is not None:
        shift = mu[ti] - mu[bi]
        for c, f, mm in [(float(g), n / W1, m1)] + [(float(S.G[s.start]), -n / W0, m0) for s in ctrl]:
            base = cpos[c] * (T + 1)
            E.R[base + ti, j] += f
            E.R[base + bi, j] -= f
            E.R[base + T, j] -= f * (mm - shift)


class _DesignCache:
    """The covariate design of the current (cohort, covariate period, control set); cells sharing the
    key (a cohort's post-treatment cells) reuse the fits, and each cohort's logit starts from its last one."""

    def __init__(self, S, covs, est_method, overlap_max, trim_level):
        self.S, self.covs, self.method = S, covs, est_method
        self.overlap_max, self.trim_level = overlap_max, trim_level
        self.key, self.des, self.last_beta, self.codes = None, None, {}, {}
        # Covariates constant over time (sector, a baseline size) give every period the same design: a cohort's
        # pre-treatment cells then share its post-treatment cells' fits instead of one logit per period.
        self.invariant = all(bool((S.X[c] == S.X[c][:, :1]).all()) for c in covs)

    def get(self, g, cov_t, tr, ctrl, notes) -> _CovDesign:
        key = (float(g), None if self.invariant else cov_t, tuple(s.start for s in ctrl))
        if key == self.key:
            return self.des
        S = self.S
        m_t = tr.stop - tr.start
        m = m_t + sum(s.stop - s.start for s in ctrl)
        Xr = np.empty((1 + len(self.covs), m))
        Xr[0] = 1.0
        for r_, c in enumerate(self.covs, start=1):
            Xr[r_] = np.concatenate([S.X[c][s, cov_t] for s in [tr, *ctrl]])
        wc = np.concatenate([S.w[s] for s in [tr, *ctrl]])
        t_cov = 0 if self.invariant else cov_t  # time-invariant covariates: one set of row codes for every period
        des = _CovDesign(Xr, wc, m_t, self.method, beta0=self.last_beta.get(float(g)),
                         overlap_max=self.overlap_max, trim_level=self.trim_level,
                         groups=None if self.method == "reg" else _design_groups(
                             self.codes, t_cov, lambda: [S.X[c][:, t_cov] for c in self.covs],
                             lambda codes: np.concatenate([codes[s] for s in [tr, *ctrl]]), m))
        if des.n_trimmed:
            notes.append(f"cohort {int(g)}, covariates of {int(S.periods[cov_t])}: {des.n_trimmed} comparison "
                         f"unit(s) with propensity score >= trim_level {self.trim_level} get weight zero (DRDID)")
        if des.beta is not None:
            self.last_beta[float(g)] = des.beta
        self.key, self.des = key, des
        return des


def _cov_cell(S: _Sorted, E: _CellEstimates, j, g, ti, bi, ctrl, designs: _DesignCache) -> None:
    """A cell with covariates (taken at the earlier of its two periods) through the shared :class:`_CovDesign`."""
    n = S.Y.shape[0]
    Y = S.Y
    tr = S.block[float(g)]
    des = designs.get(g, min(ti, bi), tr, ctrl, E.notes)
    if not des.ok:
        if des.reason.startswith("overlap"):
            E.na_cells.append((g, S.periods[ti], des.reason))
        else:
            E.notes.append(f"ATT({int(g)},{int(S.periods[ti])}): covariate model could not be estimated (singular design or separation); left missing")
            E.na_cells.append((g, S.periods[ti], des.reason or "covariate model could not be estimated"))
        return
    # controls may be several cohort blocks (not-yet-treated)
    dY_c = np.concatenate([Y[s, ti] - Y[s, bi] for s in ctrl]) if len(ctrl) > 1 else Y[ctrl[0], ti] - Y[ctrl[0], bi]
    a, inf_t, inf_c = des.estimate(Y[tr, ti] - Y[tr, bi], dY_c, designs.method)
    E.att[j] = a
    scale = n / des.m
    E.IF[tr, j] = scale * inf_t
    pos = 0
    for s in ctrl:
        E.IF[s, j] = scale * inf_c[pos:pos + s.stop - s.start]
        pos += s.stop - s.start


# --------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class _Inference:
    se: np.ndarray
    se_analytic: np.ndarray
    crit: float
    boot_draws: np.ndarray | None = None
    cohort_draws: np.ndarray | None = None
    m: int = 0


def _draws_by_cohort(S: _Sorted, R, glist, biters, seed, progress):
    """Bootstrap draws without covariates: only the per-cohort sums of U w (Y - mean) and of U w are drawn
    (``T + 1`` columns per cohort), then mapped to the cells by ``R`` and to the cohort indicators."""
    n, T = S.Y.shape
    mu = S.Y.mean(axis=0)
    WY = np.empty((n, T + 1), order="F")
    WY[:, :T] = (S.Y - mu) * S.w[:, None]
    WY[:, T] = S.w
    # float32 products: the centred sums lose ~1e-6 relative, far below the bootstrap's own noise
    D, m = _multiplier_bootstrap(WY, None, biters, seed, progress, segments=S.cstart[1:], dtype=np.float32)
    cpos = {float(c): i for i, c in enumerate(S.cvals)}
    zcols = np.array([cpos[float(g)] * (T + 1) + T for g in glist], dtype=np.int64)
    return D @ R, D[:, zcols], m


def _draws_dense(IF, cluster, Z, biters, seed, progress):
    """Bootstrap draws of the cells' influence functions and of the cohort columns ``Z``, with the same multipliers.

    The block products run in float32, as :func:`_draws_by_cohort`'s: each block's sums lose ~1e-6
    relative (summed over blocks in float64), three orders below the bootstrap's own noise with 999
    draws (~2%), and the 0/1 draws' conversion and the products, which held most of the bootstrap's
    time at register scale (~10 s per ``att_gt`` on 1.3M firms), take half as long.
    """
    k = IF.shape[1]
    bres_all, m = _multiplier_bootstrap(IF, cluster, biters, seed, progress, extra=Z, dtype=np.float32)
    return bres_all[:, :k], bres_all[:, k:], m


def _inference(IF, cluster, att, draws, *, bootstrap, cband, alp) -> _Inference:
    """Analytic standard errors; the multiplier bootstrap (``draws()``) only when its standard errors or the
    uniform band are asked for. The cohort indicators are drawn with the same multipliers: :func:`aggte`'s
    influence functions are linear in the cells' and theirs, so it maps these draws instead of redrawing."""
    se_an = np.where(np.isfinite(att), _analytic_se(IF, cluster), np.nan)
    if not (bootstrap or cband):  # nothing needs the multiplier bootstrap: do not run it
        return _Inference(se=se_an, se_analytic=se_an, crit=np.nan, m=IF.shape[0])
    bres, Zd, m = draws()
    se_b, crit = _boot_summary(bres, m, alp)
    se = np.where(np.isfinite(att), se_b, np.nan) if bootstrap else se_an
    return _Inference(se=se, se_analytic=se_an, crit=float(crit) if cband else np.nan, boot_draws=bres,
                      cohort_draws=Zd, m=int(m))


def _att_gt_result(E: _CellEstimates, inf: _Inference, G, w, cluster, periods, ids, glist, *, yname, xformla,
                   control_group, est_method, anticipation, base_period, bootstrap, biters, alp, seed, cband,
                   exclusions, **extra) -> ATTgtResult:
    """The immutable result of the stages (R did's ``MP`` object)."""
    ro = _readonly
    boot = inf.boot_draws is not None
    return ATTgtResult(
        groups=ro(E.groups), times=ro(E.times), base_times=ro(E.bases), att=ro(E.att), se=ro(inf.se),
        se_analytic=ro(inf.se_analytic), crit_val=float(inf.crit), n_treated=ro(E.n_tr), n_control=ro(E.n_co),
        inffunc=ro(E.IF), unit_cohort=ro(G), unit_weight=ro(w), cluster=None if cluster is None else ro(cluster),
        periods=ro(np.asarray(periods, dtype=float).copy()), n_units=int(E.IF.shape[0]), yname=yname,
        xformla=xformla, control_group=control_group, est_method=est_method, anticipation=int(anticipation),
        base_period=base_period, bootstrap=bool(bootstrap) and boot, biters=int(biters), alp=float(alp),
        seed=int(seed), exclusions=exclusions, notes=tuple(dict.fromkeys(E.notes)),
        boot_draws=ro(inf.boot_draws) if boot else None, boot_cohorts=ro(np.asarray(glist, dtype=float)),
        boot_cohort_draws=ro(inf.cohort_draws) if boot else None, n_boot_units=int(inf.m), cband=bool(cband) and boot,
        na_cells=_na_frame(E.na_cells), unit_ids=ro(np.asarray(ids)), **extra,
    )


def _data_signature(y: np.ndarray, X: list, key: np.ndarray) -> tuple:
    """Sums that tell two estimation samples apart: the outcome and covariate values, weighted by where they sit.

    ``key`` numbers each value's (unit, period) place. Not computed for ``_cells="post"`` fits (the
    placebo's and the subgroups' many ``fit_simple`` calls), which nothing takes cells from. Two estimates of the same data give the same tuple;
    :func:`_universal_from_varying` takes cells from one estimate into another only when they agree (ids,
    cohorts and weights are compared in full).
    """
    k = (np.asarray(key, dtype=np.int64) % 1_000_003).astype(np.float64) + 1.0
    return (int(y.size), _dot(y, np.ones_like(k)), _dot(y, k),
            *(_dot(np.ascontiguousarray(x, dtype=np.float64), k) for x in X))


def _wide_signature(Y: np.ndarray, X: list) -> tuple:
    """:func:`_data_signature` of a balanced panel's (units, periods) arrays: one pass per array, no row keys."""
    k = (np.arange(Y.shape[0]) % 1_000_003).astype(np.float64) + 1.0

    def one(a: np.ndarray) -> float:
        cols = [np.ascontiguousarray(a[:, t]) for t in range(a.shape[1])]
        return float(sum((t + 1.0) * _dot(c, k) + c.sum() for t, c in enumerate(cols)))

    return (Y.shape, *(one(a) for a in [Y, *X]))


def _same_estimation(a: ATTgtResult, b: ATTgtResult) -> str:
    """Why the cells of ``b`` are not cells of the estimate ``a`` could make of the same data, or ""."""
    for f in ("yname", "control_group", "est_method", "anticipation", "panel", "allow_unbalanced_panel",
              "unbalanced", "overlap_max", "trim_level"):
        if getattr(a, f) != getattr(b, f):
            return f"{f} differs ({getattr(a, f)!r} and {getattr(b, f)!r})"
    if parse_xformla(a.xformla) != parse_xformla(b.xformla):
        return f"xformla differs ({a.xformla!r} and {b.xformla!r})"
    for f in ("periods", "unit_ids", "unit_cohort", "unit_weight"):
        x, y = getattr(a, f), getattr(b, f)
        if x is None or y is None or x.shape != y.shape or not np.array_equal(x, y):
            return f"{f} differ"
    if (a.cluster is None) != (b.cluster is None) or (a.cluster is not None and not np.array_equal(a.cluster, b.cluster)):
        return "cluster differs"
    if not a.data_signature or a.data_signature != b.data_signature:
        return "the estimates are not of the same outcome and covariate values"
    return ""


def _universal_from_varying(pre: ATTgtResult, varying: ATTgtResult) -> ATTgtResult:
    r"""The universal-base ``att_gt`` from its pre-period cells and a varying-base estimate's post-period cells.

    ``pre`` is ``att_gt(..., base_period="universal", _cells="pre")``; ``varying`` an ``att_gt`` of the
    same data and settings with ``base_period="varying"`` (e.g. :func:`reach.effects.effect_report`'s).

    Notes
    -----
    A post-period cell :math:`t \ge g - \delta` has base :math:`g - \delta - 1` with either base period,
    so both estimate the same 2x2 comparison with the same influence function; the universal estimate
    then only needs its pre-period cells (:math:`t < g - \delta`, long differences to :math:`g - \delta - 1`).
    The result has analytic standard errors and no bootstrap draws, as ``att_gt(..., bootstrap=False)``.

    Raises
    ------
    ValueError
        When the two are not estimates of the same data and settings (the reason is named), or a post
        cell is missing from ``varying``.
    """
    if pre.base_period != "universal" or varying.base_period != "varying":
        raise ValueError(f"pre must have a universal and varying a varying base period; got {pre.base_period!r} "
                         f"and {varying.base_period!r}")
    why = _same_estimation(pre, varying)
    if why:
        raise ValueError(f"_universal_from_varying: not estimates of the same data and settings: {why}")
    glist = np.asarray(pre.boot_cohorts, dtype=float)
    periods = np.asarray(pre.periods, dtype=float)
    ant = int(pre.anticipation)
    cells = _cell_list(glist, periods, ant, "universal")
    at_pre = {(float(g), float(t)): j for j, (g, t) in enumerate(zip(pre.groups, pre.times))}
    at_var = {(float(g), float(t)): j for j, (g, t) in enumerate(zip(varying.groups, varying.times))}
    src = []  # (from the pre estimate?, column) of every universal cell, in att_gt's order
    for g, ti, bi in cells:
        key = (float(g), float(periods[ti]))
        if periods[ti] < g - ant:
            src.append((True, at_pre[key]))
            continue
        j = at_var.get(key)
        if j is None or varying.base_times[j] != periods[bi]:
            raise ValueError(f"_universal_from_varying: the varying estimate has no cell ATT({int(g)},{int(key[1])}) "
                             f"with base {int(periods[bi])}")
        src.append((False, j))
    n, k = pre.inffunc.shape[0], len(cells)
    IF = np.empty((n, k), order="F")
    out = {f: np.empty(k, dtype=getattr(pre, f).dtype) for f in ("att", "se_analytic", "n_treated", "n_control")}
    for c, (from_pre, j) in enumerate(src):
        r = pre if from_pre else varying
        IF[:, c] = r.inffunc[:, j]
        for f, v in out.items():
            v[c] = getattr(r, f)[j]
    pos = {key: c for c, key in enumerate((float(g), float(periods[ti])) for g, ti, _ in cells)}
    na = [row for r in (pre, varying) for row in r.na_cells.itertuples(index=False)
          if (float(row.group), float(row.time)) in pos and src[pos[(float(row.group), float(row.time))]][0] == (r is pre)]
    na.sort(key=lambda row: pos[(float(row.group), float(row.time))])
    cell_note = re.compile(r"^ATT\((-?\d+),(-?\d+)\)")
    notes = [x for x in pre.notes if not cell_note.match(x)]
    for r in (pre, varying):  # notes on one cell come with that cell
        for x in r.notes:
            m = cell_note.match(x)
            if m and (key := (float(m.group(1)), float(m.group(2)))) in pos and src[pos[key]][0] == (r is pre):
                notes.append(x)
    ro = _readonly
    return replace(pre, groups=ro(np.array([c[0] for c in cells], dtype=float)),
                   times=ro(periods[[c[1] for c in cells]]), base_times=ro(periods[[c[2] for c in cells]]),
                   att=ro(out["att"]), se=ro(out["se_analytic"].copy()), se_analytic=ro(out["se_analytic"]),
                   crit_val=np.nan, n_treated=ro(out["n_treated"]), n_control=ro(out["n_control"]), inffunc=ro(IF),
                   bootstrap=False, cband=False, boot_draws=None, boot_cohort_draws=None,
                   notes=tuple(dict.fromkeys(notes)), na_cells=_na_frame([tuple(r) for r in na]))


# --------------------------------------------------------------------------- unbalanced panels, repeated cross sections
def _ols_alr(X, y, wsel, n):
    """Weighted OLS on the rows with ``wsel > 0``: fitted values on all rows and the asymptotic
    linear representation of the coefficients (n x k), or (None, None) if singular."""
    A = (X.T * wsel) @ X / n
    if np.linalg.cond(A) > 1 / np.finfo(float).eps:
        return None, None
    beta = np.linalg.solve(A, (X.T * wsel) @ y / n)
    fit = X @ beta
    return fit, ((wsel * (y - fit))[:, None] * X) @ np.linalg.inv(A)


def _rc_cell(y, post, D, X, w, method, trim_level=0.995):
    r"""One 2x2 ATT from repeated cross sections (rows of two periods), as DRDID 1.2's
    ``reg_did_rc``, ``std_ipw_did_rc`` and ``drdid_rc`` (locally efficient doubly robust).

    Returns ``(att, influence function per row, n_trimmed)``; ``(nan, None, 0)`` when a
    regression is singular or the logit fails. Weights are normalised to mean one on the cell.
    With ``X`` a column of ones every method is the difference of the four weighted means.
    """
    n = len(y)
    w = w / w.mean()
    C = 1.0 - D
    pre = 1.0 - post
    mean = np.mean
    if method == "reg":
        o_pre, a_pre = _ols_alr(X, y, w * C * pre, n)
        o_post, a_post = _ols_alr(X, y, w * C * post, n)
        if o_pre is None or o_post is None:
            return np.nan, None, 0
        w_tp, w_t1, w_c = w * D * pre, w * D * post, w * D
        e_tp, e_t1 = mean(w_tp * y) / mean(w_tp), mean(w_t1 * y) / mean(w_t1)
        e_c = mean(w_c * (o_post - o_pre)) / mean(w_c)
        inf_t = (w_t1 * y - w_t1 * e_t1) / mean(w_t1) - (w_tp * y - w_tp * e_tp) / mean(w_tp)
        M1 = (w_c[:, None] * X).mean(axis=0)
        inf_c = (w_c * (o_post - o_pre) - w_c * e_c + a_post @ M1 - a_pre @ M1) / mean(w_c)
        return (e_t1 - e_tp) - e_c, inf_t - inf_c, 0
    ps, H = _logit(X, D, w)
    if ps is None:
        return np.nan, None, 0
    ps = np.minimum(ps, 1 - 1e-6)
    keep = np.where(D == 1, 1.0, (ps < trim_level).astype(float))
    n_trim = int(((D == 0) & (ps >= trim_level)).sum())
    alr_ps = ((w * (D - ps))[:, None] * X) @ (np.linalg.inv(H) * n)
    w_tp, w_t1 = keep * w * D * pre, keep * w * D * post
    odds = ps / (1 - ps)
    w_cp, w_c1 = keep * w * odds * C * pre, keep * w * odds * C * post
    if method == "ipw":
        out_c = np.zeros(n)
    else:
        o_cpre, a_cpre = _ols_alr(X, y, w * C * pre, n)
        o_cpost, a_cpost = _ols_alr(X, y, w * C * post, n)
        o_tpre, a_tpre = _ols_alr(X, y, w * D * pre, n)
        o_tpost, a_tpost = _ols_alr(X, y, w * D * post, n)
        if any(o is None for o in (o_cpre, o_cpost, o_tpre, o_tpost)):
            return np.nan, None, 0
        out_c = post * o_cpost + (1 - post) * o_cpre
    r = y - out_c

    def eta(wt, v):
        return wt * v / mean(wt)

    parts = {k: eta(wt, r) for k, wt in (("tp", w_tp), ("t1", w_t1), ("cp", w_cp), ("c1", w_c1))}
    att_ = {k: mean(v) for k, v in parts.items()}
    wts = {"tp": w_tp, "t1": w_t1, "cp": w_cp, "c1": w_c1}
    inf = {k: parts[k] - wts[k] * att_[k] / mean(wts[k]) for k in parts}
    M2p = ((w_cp * (r - att_["cp"]))[:, None] * X).mean(axis=0) / mean(w_cp)
    M2t = ((w_c1 * (r - att_["c1"]))[:, None] * X).mean(axis=0) / mean(w_c1)
    inf_cont_ps = alr_ps @ (M2t - M2p)
    est = (att_["t1"] - att_["tp"]) - (att_["c1"] - att_["cp"])
    if method == "ipw":
        return est, (inf["t1"] - inf["tp"]) - (inf["c1"] - inf["cp"] + inf_cont_ps), n_trim
    w_d, w_dt1, w_dt0 = keep * w * D, keep * w * D * post, keep * w * D * pre
    dpost, dpre = o_tpost - o_cpost, o_tpre - o_cpre
    e = {"d1": eta(w_d, dpost), "dt1": eta(w_dt1, dpost), "d0": eta(w_d, dpre), "dt0": eta(w_dt0, dpre)}
    ew = {"d1": w_d, "dt1": w_dt1, "d0": w_d, "dt0": w_dt0}
    ae = {k: mean(v) for k, v in e.items()}
    est += (ae["d1"] - ae["dt1"]) - (ae["d0"] - ae["dt0"])
    ie = {k: e[k] - ew[k] * ae[k] / mean(ew[k]) for k in e}
    M1t = -(w_t1[:, None] * post[:, None] * X).mean(axis=0) / mean(w_t1)
    M1p = -(w_tp[:, None] * pre[:, None] * X).mean(axis=0) / mean(w_tp)
    inf_treat_or = a_cpost @ M1t + a_cpre @ M1p
    M3t = -(w_c1[:, None] * post[:, None] * X).mean(axis=0) / mean(w_c1)
    M3p = -(w_cp[:, None] * pre[:, None] * X).mean(axis=0) / mean(w_cp)
    inf_cont_or = a_cpost @ M3t + a_cpre @ M3p
    inf_eff = (ie["d1"] - ie["dt1"]) - (ie["d0"] - ie["dt0"])
    mom_post = ((w_d / mean(w_d) - w_dt1 / mean(w_dt1))[:, None] * X).mean(axis=0)
    mom_pre = ((w_d / mean(w_d) - w_dt0 / mean(w_dt0))[:, None] * X).mean(axis=0)
    inf_or = (a_tpost - a_cpost) @ mom_post - (a_tpre - a_cpre) @ mom_pre
    inf_treat = inf["t1"] - inf["tp"] + inf_treat_or
    inf_cont = inf["c1"] - inf["cp"] + inf_cont_ps + inf_cont_or
    return est, inf_treat - inf_cont + inf_eff + inf_or, n_trim


def _att_gt_unbalanced(df, yname, tname, idname, gname, covs, *, xformla, control_group, est_method, anticipation,
                       base_period, weightsname, clustervars, bootstrap, biters, alp, seed, panel, cband,
                       overlap_max, trim_level, _groups=None, unbalanced="rc", _cells="all") -> ATTgtResult:
    r"""``att_gt`` for unbalanced panels (``allow_unbalanced_panel=True``) and repeated cross sections
    (``panel=False``), as R did 2.5.

    Every (g, t) cell takes the *rows* of cohort g and of the comparison cohorts in the base
    period b and in t (a firm enters a cell when it is observed in b, in t, or both) and applies
    DRDID's repeated-cross-section estimator (``reg_did_rc``, ``std_ipw_did_rc``, ``drdid_rc``;
    covariates are each row's own). The influence function, computed per row and scaled by
    :math:`n/n_1` (n units, :math:`n_1` rows in the cell), is summed over the rows of a unit,
    so inference is clustered by unit (R did's ``aggregate(inf.func, list(id), sum)``). With
    ``panel=False`` each row is its own unit. Without covariates the estimate is
    :math:`(\bar Y_{g,t}-\bar Y_{g,b})-(\bar Y_{C,t}-\bar Y_{C,b})` over the rows of each period.
    Note it differs from the balanced estimator even on a balanced panel (different influence
    function; the point estimate without covariates is the same).

    ``unbalanced="pairs"`` (panels only) instead takes, for every cell, the units observed
    (outcome and covariates) in *both* the base period and t, and applies the panel 2x2
    estimator (DRDID's ``drdid_panel`` etc.) to their changes: each unit is one row, so the
    influence function needs no summing. Unlike the repeated-cross-section form it is not
    moved by firms entering or leaving between the two periods (a change of composition),
    and on a balanced panel it is exactly the balanced estimator.
    """
    rows = _long_rows(df, yname, tname, idname, gname, covs, weightsname, clustervars, panel)
    glist = _check_cohorts(rows.G_unit, rows.periods, anticipation, gname, tname, control_group, _groups)
    cells = _cell_list(glist, rows.periods, anticipation, base_period, _cells)
    if unbalanced == "pairs":
        E = _pairs_cells(rows, cells, covs, control_group, est_method, anticipation, overlap_max, trim_level)
    else:
        E = _rc_cells(rows, cells, covs, control_group, est_method, anticipation, overlap_max, trim_level)
    _warn_na_cells(E.na_cells)
    w_unit = rows.w_unit / rows.w_unit.mean()
    inf = _inference(E.IF, rows.cluster, E.att, lambda: _draws_dense(
        E.IF, rows.cluster, _cohort_columns(rows.G_unit, w_unit, glist), int(biters), seed, None),
        bootstrap=bootstrap, cband=cband, alp=alp)
    return _att_gt_result(E, inf, rows.G_unit, w_unit, rows.cluster, rows.periods, rows.ids, glist, yname=yname,
                          xformla=xformla, control_group=control_group, est_method=est_method,
                          anticipation=anticipation, base_period=base_period, bootstrap=bootstrap, biters=biters,
                          alp=alp, seed=seed, cband=cband, exclusions=rows.exclusions, panel=bool(panel),
                          allow_unbalanced_panel=True, unbalanced=unbalanced, overlap_max=float(overlap_max),
                          trim_level=float(trim_level), data_signature=() if _cells == "post" else _data_signature(
                              rows.y, [rows.X[:, c] for c in range(1, rows.X.shape[1])],
                              rows.uid * len(rows.periods) + rows.tcode))


@dataclass(frozen=True)
class _Rows:
    """The long rows of an unbalanced panel or of repeated cross sections, as arrays (``uid``: unit of a row)."""

    uid: np.ndarray
    ids: np.ndarray
    periods: np.ndarray
    tcode: np.ndarray
    y: np.ndarray
    G: np.ndarray
    w: np.ndarray
    X: np.ndarray           # (rows, 1 + covariates), intercept first
    G_unit: np.ndarray
    w_unit: np.ndarray
    cluster: np.ndarray | None
    exclusions: dict

    @property
    def n(self) -> int:
        return len(self.ids)


def _pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 per row for the pair of non-negative integer codes ``(a, b)``: equal pairs, equal keys.

    At register scale (15M rows, string ids) pandas' ``duplicated`` / ``nunique`` on the columns takes
    seconds per call, on one integer key a fraction of that.
    """
    b = np.asarray(b, dtype=np.int64)
    return np.asarray(a, dtype=np.int64) * (int(b.max(initial=0)) + 1) + b


def _dense_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(key, bound)`` of :func:`_pair_key` when the key space is small enough to mark in an array (at most
    about eight slots per row), else None. Codes must be >= 0."""
    if len(a) == 0 or a.min() < 0 or b.min() < 0:
        return None
    bound = (int(a.max()) + 1) * (int(b.max()) + 1)
    return (_pair_key(a, b), bound) if bound <= 8 * len(a) + 1024 else None


def _increasing_pairs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the rows' pairs ``(a, b)`` strictly increase (a panel sorted by unit and period): then none repeats."""
    if len(a) < 2:
        return True
    a0, a1, b0, b1 = a[:-1], a[1:], b[:-1], b[1:]
    return bool(((a1 > a0) | ((a1 == a0) & (b1 > b0))).all())


def _repeated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows whose pair of codes ``(a, b)`` occurs more than once (``duplicated(keep=False)`` on the pairs).

    A panel's (unit, period) pairs fill a dense space: counting them in an array replaces the hash
    table of ``duplicated`` (~1.7 s per call at 15M rows). Rows sorted by the pairs (the usual panel)
    are recognised in a few comparisons (~0.05 s at 15M rows against ~0.45 s for the count).
    """
    if _increasing_pairs(a, b):
        return np.zeros(len(a), dtype=bool)
    dense = _dense_pairs(a, b)
    if dense is None:
        return pd.Series(_pair_key(a, b)).duplicated(keep=False).to_numpy()
    key, bound = dense
    return np.bincount(key, minlength=bound)[key] > 1


def _distinct_per_unit(uid: np.ndarray, code: np.ndarray, n_units: int) -> np.ndarray:
    """Distinct values of ``code`` per unit (``uid``): how many per unit, 0 for a unit without rows."""
    n_codes = int(code.max(initial=0)) + 1
    dense = _dense_pairs(uid, code)
    if dense is None:
        # distinct (unit, value) pairs per unit: the key's quotient by the number of codes is the unit
        pairs = pd.unique(_pair_key(uid, code))
        return np.bincount(pairs // n_codes, minlength=n_units)
    key, bound = dense
    seen = np.zeros(bound, dtype=bool)
    seen[key] = True
    per = seen.reshape(-1, n_codes).sum(axis=1)
    return np.pad(per, (0, max(0, n_units - len(per))))[:n_units]


def _isin(col: pd.Series, values: pd.Series) -> np.ndarray:
    """``col.isin(values)`` as a boolean array; Arrow-backed text through ``pyarrow.compute.is_in``.

    Selecting a stacked sample's firms from a 2M-firm panel (20M rows of Arrow text) took ~3 s per
    outcome with pandas' ``isin``, which builds a Python-level hash per value; Arrow's kernel takes
    under half of that. Missing values or values of another type take pandas' path (its rules).
    """
    if (isinstance(col.array, pd.arrays.ArrowStringArray) and isinstance(values.array, pd.arrays.ArrowStringArray)
            and not values.hasnans):
        import pyarrow as pa
        import pyarrow.compute as pc

        found = pc.is_in(pa.array(col.array), value_set=pa.array(values.array).unique())
        # a missing id is in no value set (pandas: only when the values hold a missing one too)
        return found.fill_null(False).to_numpy(zero_copy_only=False)
    return col.isin(values).to_numpy()


def _sorted_text_codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(col.astype(str), return_inverse=True)``, sorting the distinct values only.

    A stacked matched panel has ~15M rows of ~1M firms at register scale: sorting every row's
    id text took ~10 s per outcome; factorising first and sorting the distinct ids' text gives
    the same firms in the same (text) order and the same codes.
    """
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    firms, inv = np.unique(np.asarray(pd.Index(uniques).astype(str)), return_inverse=True)
    return firms, inv.reshape(-1)[codes]


def _factorize_sorted(col: pd.Series, sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(col, sort=sort)``; for numbers already in order (a panel sorted by unit) without hashing
    (sorted or not, the codes of numbers in order are the same).

    At register scale (15M rows) the hash and the sort took ~0.5 s per ``att_gt``; on sorted numbers the
    codes are the running count of changes.
    """
    a = col.to_numpy() if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iuf" else None
    if a is not None and len(a) and bool((a[1:] >= a[:-1]).all()):  # NaN compares False: factorized below
        new = np.empty(len(a), dtype=bool)
        new[0] = True
        np.not_equal(a[1:], a[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        codes = np.repeat(np.arange(len(starts), dtype=np.int64), np.diff(np.append(starts, len(a))))
        return codes, a[starts]
    codes, uniques = pd.factorize(col, sort=sort)
    return codes, np.asarray(uniques)


def _period_codes(col: pd.Series) -> np.ndarray:
    """``pd.factorize(col, sort=True)[0]``; for whole numbers in a short range (periods) by counting, not hashing."""
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu" and len(col):
        a = col.to_numpy()
        lo, hi = int(a.min()), int(a.max())
        if hi - lo < 4 * len(a) + 1024:
            off = (a - lo).astype(np.int64, copy=False)
            present = np.bincount(off, minlength=hi - lo + 1) > 0
            return (np.cumsum(present) - 1)[off]
    return pd.factorize(col, sort=True)[0]


def _varying_units(uid: np.ndarray, col: pd.Series, n_units: int) -> np.ndarray:
    """Per unit, whether ``col`` takes more than one value on its rows (a missing value is a value)."""
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iuf":
        out = np.zeros(n_units, dtype=bool)
        out[uid[_rows_off_unit_value(uid, col.to_numpy(), n_units)]] = True
        return out
    ccode = pd.factorize(col, use_na_sentinel=False)[0]
    return _distinct_per_unit(uid, ccode, n_units) > 1


def _unit_codes_checked(d, idname, tname, yname, gname, weightsname, extra_cluster):
    """Unit codes of the rows; refuses missing ids, repeated (unit, period) pairs and unit-level columns that vary."""
    uid, ids = _factorize_sorted(d[idname])
    if (uid < 0).any():
        raise ValueError(f"df: column {idname!r} has missing values. Examples:\n{examples(d, uid < 0, [idname, tname, yname])}")
    n_units = len(ids)
    t = d[tname]
    # sorted by unit and period (the usual panel): no pair repeats, without coding the periods
    dup = (None if isinstance(t.dtype, np.dtype) and t.dtype.kind in "iuf" and _increasing_pairs(uid, t.to_numpy())
           else _repeated(uid, _period_codes(t)))
    if dup is not None and dup.any():
        raise ValueError(f"df: {int(dup.sum())} rows share a ({idname}, {tname}) pair; one row per unit and period is "
                         f"required. Examples:\n{examples(d, dup, [idname, tname, yname, gname])}")
    for c in [gname] + ([weightsname] if weightsname else []) + extra_cluster:
        varies = _varying_units(uid, d[c], n_units)
        if varies.any():
            badu = varies[uid]
            what = "first treatment period" if c == gname else ("weights" if c == weightsname else "cluster variable")
            raise ValueError(f"df: column {c!r} ({what}) varies within {idname} for {int(varies.sum())} unit(s); "
                             f"it must be constant per unit. Examples:\n{examples(d, badu, [idname, tname, c])}")
    return uid, np.asarray(ids)


def _long_rows(df, yname, tname, idname, gname, covs, weightsname, clustervars, panel) -> _Rows:
    """Pre-processing of the unbalanced / repeated-cross-section path: rows with a missing value are dropped
    and counted (R did drops them with a warning), units observed in some periods only are kept and counted."""
    extra_cluster = _extra_cluster(clustervars, idname)
    wcol = [weightsname] if weightsname else []
    cols = list(dict.fromkeys([yname, tname, gname, *covs] + ([idname] if idname else []) + wcol + extra_cluster))
    need = [yname, tname, gname, *covs] + wcol
    d = _numeric_frame(df, cols, need)
    excl: dict[str, int] = {}
    bad = d[need].isna().any(axis=1).to_numpy()
    if bad.any():
        excl["rows_with_missing_values"] = int(bad.sum())
        warnings.warn(f"att_gt: {int(bad.sum())} row(s) with missing values in {need} dropped", UserWarning, stacklevel=4)
        d = d.loc[~bad]
    if panel:
        uid, ids = _unit_codes_checked(d, idname, tname, yname, gname, weightsname, extra_cluster)
    else:
        uid = ids = np.arange(len(d))
    n = len(ids)
    t_row = d[tname].to_numpy(dtype=float)
    periods = np.unique(t_row)
    G = d[gname].to_numpy(dtype=float)
    if (G < 0).any():
        raise ValueError(f"df: column {gname!r} must be 0 (never treated) or a period; got negatives")
    late = G > periods[-1]
    if late.any():
        excl["units_treated_after_last_period_set_never_treated"] = int(len(np.unique(uid[late])))
        G = np.where(late, 0.0, G)
    w = d[weightsname].to_numpy(dtype=float) if weightsname else np.ones(len(d))
    if (w < 0).any():
        raise ValueError(f"df: weights {weightsname!r} must be non-negative")
    if panel:
        nper = np.bincount(uid, minlength=n)
        if (nper < len(periods)).any():
            excl["units_not_observed_every_period_kept"] = int((nper < len(periods)).sum())
        if (nper == 1).any():
            excl["units_observed_once_kept"] = int((nper == 1).sum())
    G_unit, w_unit = np.zeros(n), np.zeros(n)
    G_unit[uid], w_unit[uid] = G, w
    cluster = None
    if extra_cluster:
        cc = pd.factorize(d[extra_cluster[0]])[0]
        if (cc < 0).any():
            raise ValueError(f"clustervars: {extra_cluster[0]!r} has missing values")
        cl_unit = np.zeros(n, dtype=np.int64)
        cl_unit[uid] = cc
        cluster = pd.factorize(cl_unit)[0]
    return _Rows(uid=uid, ids=ids, periods=periods, tcode=np.searchsorted(periods, t_row), y=d[yname].to_numpy(dtype=float),
                 G=G, w=w, X=_design_columns(d, covs),
                 G_unit=G_unit, w_unit=w_unit, cluster=cluster, exclusions=excl)


def _design_columns(d: pd.DataFrame, covs: list) -> np.ndarray:
    """``(rows, 1 + covariates)``, intercept first, column-major: the cells read it a column at a time (and
    ``np.column_stack`` interleaving 15M rows took ~0.3 s per call)."""
    X = np.empty((len(d), 1 + len(covs)), order="F")
    X[:, 0] = 1.0
    for j, c in enumerate(covs, start=1):
        X[:, j] = d[c].to_numpy(dtype=float)
    return X


def _is_control(G, g, tc, control_group, anticipation) -> np.ndarray:
    """Comparison units (or rows) of cohort g in a cell whose later period is ``tc``."""
    if control_group == "nevertreated":
        return G == 0
    return (G == 0) | ((G > tc + anticipation) & (G != g))


def _pairs_cells(rows: _Rows, cells, covs, control_group, est_method, anticipation, overlap_max,
                 trim_level) -> _CellEstimates:
    """``unbalanced="pairs"``: each cell on the units observed (outcome and covariates) in both its periods,
    with the panel estimator: the closed form without covariates, :class:`_CovDesign` with them."""
    n, T = rows.n, len(rows.periods)
    # Column-major: a cell reads two periods' columns and writes one column of the influence
    # functions at its units; row-major made each of those a strided gather (a third of the
    # cells' time at register scale).
    E = _CellEstimates.empty(cells, rows.periods, n, order="F")
    Yw = np.full((n, T), np.nan, order="F")
    Yw[rows.uid, rows.tcode] = rows.y
    Xw = [np.full((n, T), np.nan, order="F") for _ in covs]
    for c_, xw in enumerate(Xw):
        xw[rows.uid, rows.tcode] = rows.X[:, c_ + 1]
    obs = np.isfinite(Yw)
    G, w = rows.G_unit, rows.w_unit
    row_codes = {}  # per covariate period: codes of every unit's distinct covariate row
    for j, (g, ti, bi) in enumerate(cells):
        if ti == bi:
            E.att[j] = 0.0
            continue
        cov_t = min(ti, bi)
        ok = obs[:, ti] & obs[:, bi]
        for xw in Xw:  # a unit enters a cell only with its covariates of the cell's earlier period
            ok &= np.isfinite(xw[:, cov_t])
        is_g = G == g
        tr = np.flatnonzero(ok & is_g)
        co = np.flatnonzero(ok & ~is_g & _is_control(G, g, rows.periods[max(ti, bi)], control_group, anticipation))
        E.n_tr[j], E.n_co[j] = len(tr), len(co)
        if len(tr) == 0 or len(co) == 0:
            E.na_cells.append((g, rows.periods[ti], "no cohort or no comparison firm observed in both years"))
            continue
        share = len(tr) / (len(tr) + len(co))
        if not covs and est_method in ("dr", "ipw") and share >= overlap_max:
            E.na_cells.append((g, rows.periods[ti], f"overlap fails: propensity score reaches {share:.4f} "
                                                    f">= overlap_max {overlap_max}"))
            continue
        units = np.concatenate([tr, co])
        dY = Yw[units, ti] - Yw[units, bi]
        if not covs:  # difference of weighted mean changes, every method
            wt, wc = w[tr], w[co]
            m1, m0 = _dot(wt, dY[:len(tr)]) / wt.sum(), _dot(wc, dY[len(tr):]) / wc.sum()
            E.att[j] = m1 - m0
            E.IF[tr, j] = (n / wt.sum()) * wt * (dY[:len(tr)] - m1)
            E.IF[co, j] = (-n / wc.sum()) * wc * (dY[len(tr):] - m0)
            continue
        Xr = np.vstack([np.ones(len(units))] + [xw[units, cov_t] for xw in Xw])
        groups = None if est_method == "reg" else _design_groups(
            row_codes, cov_t, lambda: [xw[:, cov_t] for xw in Xw], lambda codes: codes[units], len(units))
        des = _CovDesign(Xr, w[units], len(tr), est_method, overlap_max=overlap_max, trim_level=trim_level,
                         groups=groups)
        if not des.ok:
            why = des.reason if des.reason.startswith("overlap") else (
                "covariate model could not be estimated (singular design or separation)")
            E.na_cells.append((g, rows.periods[ti], why))
            continue
        if des.n_trimmed:
            E.notes.append(f"ATT({int(g)},{int(rows.periods[ti])}): {des.n_trimmed} comparison unit(s) with "
                           f"propensity score >= trim_level {trim_level} get weight zero (DRDID)")
        a, inf_t, inf_c = des.estimate(dY[:len(tr)], dY[len(tr):], est_method)
        E.att[j] = a
        E.IF[tr, j] = (n / len(units)) * inf_t
        E.IF[co, j] = (n / len(units)) * inf_c
    return E


def _rc_cells(rows: _Rows, cells, covs, control_group, est_method, anticipation, overlap_max,
              trim_level) -> _CellEstimates:
    """``unbalanced="rc"`` (R did 2.5) and ``panel=False``: each cell on the rows of its two periods with
    DRDID's repeated-cross-section estimator; the per-row influence function is summed within unit."""
    n = rows.n
    E = _CellEstimates.empty(cells, rows.periods, n, order="C")
    G, uid, tcode = rows.G, rows.uid, rows.tcode
    for j, (g, ti, bi) in enumerate(cells):
        if ti == bi:
            E.att[j] = 0.0
            continue
        ctrl_row = _is_control(G, g, rows.periods[max(ti, bi)], control_group, anticipation)
        sel = np.flatnonzero(((tcode == ti) | (tcode == bi)) & ((G == g) | ctrl_row))
        Dr = (G[sel] == g).astype(float)
        postr = (tcode[sel] == ti).astype(float)
        E.n_tr[j] = len(np.unique(uid[sel][Dr == 1]))
        E.n_co[j] = len(np.unique(uid[sel][Dr == 0]))
        if min((Dr * postr).sum(), (Dr * (1 - postr)).sum(), ((1 - Dr) * postr).sum(), ((1 - Dr) * (1 - postr)).sum()) == 0:
            E.na_cells.append((g, rows.periods[ti], "no treated or no comparison rows in one of the two periods"))
            continue
        X = np.ascontiguousarray(rows.X[sel] if covs else rows.X[sel, :1])
        why = _overlap_problem(X, Dr, bool(covs), overlap_max) if est_method in ("dr", "ipw") else None
        if why:
            E.na_cells.append((g, rows.periods[ti], why))
            continue
        a, inf, ntrim = _rc_cell(rows.y[sel], postr, Dr, X, rows.w[sel], est_method, trim_level)
        if inf is None or not np.isfinite(a):
            E.na_cells.append((g, rows.periods[ti], "covariate model could not be estimated (singular design or separation)"))
            continue
        if ntrim:
            E.notes.append(f"ATT({int(g)},{int(rows.periods[ti])}): {ntrim} comparison row(s) with propensity score >= "
                           f"trim_level {trim_level} get weight zero (DRDID)")
        E.att[j] = a
        # per-row influence function, scaled to the n units, summed within unit (clustered by unit)
        E.IF[:, j] = np.bincount(uid[sel], weights=(n / len(sel)) * inf, minlength=n)
    return E


# --------------------------------------------------------------------------- matched samples: stacked, cohort-wise
#: Columns of the matched-units file written by notebook 03.
MATCHED_UNIT_COLUMNS = ("cohort", "treated", "weight")


def matched_user_count(matched_units: pd.DataFrame, key: str = "be_id") -> int:
    """Matched users: distinct firms that are a treated row of some cohort (notebook 03's definition).

    Examples
    --------
    >>> mu = pd.DataFrame({"be_id": ["a", "b", "a", "c"], "cohort": [2019, 2019, 2021, 2021],
    ...                    "treated": [0, 1, 1, 0], "weight": [1.0, 1.0, 1.0, 1.0]})
    >>> matched_user_count(mu)
    2
    """
    require_columns(matched_units, [key, "treated"], "matched_units")
    return int(matched_units.loc[matched_units["treated"].astype(int) == 1, key].nunique())


def with_matching_weights(panel: pd.DataFrame, matched_units: pd.DataFrame, *, gname: str, key: str = "be_id",
                          weight: str = "weight", tname: str = "year",
                          columns: Sequence[str] | None = None) -> pd.DataFrame:
    r"""The stacked matched panel: one block of rows per cohort, holding that cohort's matched set.

    Block g has the panel rows of cohort g's matched users and of *their* matched comparison
    firms, with that match's weights. A firm in several cohorts' sets (a comparison firm
    matched twice, or a comparison firm of 2019 that is a user in 2021) appears once per
    block, in the role it was matched in there: never with summed weights, never as a user
    of a cohort it was not matched as a user of.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel with ``key``, ``tname`` and ``gname`` (first use, 0 = never).
    matched_units : DataFrame
        ``key, cohort, treated, weight`` (notebook 03's ``matched_units.parquet``).
    gname : str
        First-use column of the panel.
    columns : sequence of str, optional
        The panel columns to keep besides ``key``, ``tname`` and ``gname`` (default: all). An estimate
        needs a few of a register panel's columns; the stacked sample repeats every row it keeps.

    Returns
    -------
    DataFrame
        The panel columns (``columns``) plus ``cohort`` (the block), ``treated`` (0/1, role in the block),
        ``weight`` (the match weight), ``stack_id`` (int64, one per cohort x firm) and
        ``g_stack``: the block's cohort for its users; for comparison firms 0, or their own
        first use if it comes later (they leave the not-yet-treated comparison set then).

    Raises
    ------
    ValueError
        A matched user whose first use in the panel is not its cohort, a comparison firm that
        had already used the programme by the cohort's year, or duplicated (cohort, firm) rows;
        the message lists examples.

    Examples
    --------
    >>> p = pd.DataFrame({"be_id": ["a"] * 2 + ["b"] * 2, "year": [2018, 2019] * 2, "g": [2019] * 2 + [0] * 2})
    >>> mu = pd.DataFrame({"be_id": ["a", "b"], "cohort": [2019, 2019], "treated": [1, 0], "weight": [1.0, 1.0]})
    >>> s = with_matching_weights(p, mu, gname="g")
    >>> s[["be_id", "cohort", "treated", "g_stack"]].drop_duplicates().values.tolist()
    [['a', 2019, 1, 2019], ['b', 2019, 0, 0]]
    """
    require_columns(matched_units, [key, *MATCHED_UNIT_COLUMNS], "matched_units")
    require_columns(panel, [key, tname, gname], "panel")
    mu = matched_units[[key, "cohort", "treated", weight]].rename(columns={weight: "weight"})
    dup = mu.duplicated([key, "cohort"], keep=False).to_numpy()
    if dup.any():
        raise ValueError(f"matched_units: {int(dup.sum())} rows repeat a ({key}, cohort) pair; one row per firm and "
                         f"cohort is required. Examples:\n{examples(mu, dup, [key, 'cohort', 'treated', 'weight'])}")
    # only the matched firms' rows: at register scale the panel has millions of firms and a thousandth of
    # them matched; grouping and merging the whole panel took seconds per outcome (same rows, same order)
    rows = _isin(panel[key], mu[key])
    if columns is None:
        panel = panel.loc[rows]
    else:
        require_columns(panel, list(columns), "panel")
        panel = panel.loc[rows, list(dict.fromkeys([key, tname, gname, *columns]))]
    g_firm = panel.groupby(key, sort=False)[gname].first()
    own = mu[key].map(g_firm)
    missing = own.isna().to_numpy()
    if missing.any():
        raise ValueError(f"matched_units: {int(missing.sum())} matched firm(s) are not in the panel (were the samples "
                         f"built from different runs?). Examples:\n{examples(mu, missing, [key, 'cohort', 'treated'])}")
    tr = mu["treated"].astype(int).to_numpy() == 1
    coh = mu["cohort"].to_numpy(dtype=float)
    ownv = own.to_numpy(dtype=float)
    bad_user = tr & (ownv != coh)
    if bad_user.any():
        ex = mu.assign(**{f"panel_{gname}": ownv})
        raise ValueError(f"matched_units: {int(bad_user.sum())} matched user(s) whose first use in the panel "
                         f"({gname}) is not their cohort. Examples:\n"
                         f"{examples(ex, bad_user, [key, 'cohort', 'treated', f'panel_{gname}'])}")
    bad_ctrl = ~tr & (ownv > 0) & (ownv <= coh)
    if bad_ctrl.any():
        ex = mu.assign(**{f"panel_{gname}": ownv})
        raise ValueError(f"matched_units: {int(bad_ctrl.sum())} comparison firm(s) had already used the programme by "
                         f"their cohort's first year. Examples:\n"
                         f"{examples(ex, bad_ctrl, [key, 'cohort', 'treated', f'panel_{gname}'])}")
    mu = mu.assign(treated=tr.astype("int64"), cohort=mu["cohort"].astype("int64"),
                   g_stack=np.where(tr, coh, np.where(ownv > coh, ownv, 0.0)).astype("int64"),
                   stack_id=np.arange(len(mu), dtype="int64"))
    out = panel.merge(mu, on=key, how="inner", suffixes=("", "_matched"))
    return out.sort_values(["stack_id", tname], kind="stable", ignore_index=True)


def matched_att_gt(stacked: pd.DataFrame, yname: str, tname: str = "year", *, key: str = "be_id",
                   xformla: str | None = None, control_group: str = "notyettreated", est_method: str = "dr",
                   anticipation: int = 0, allow_unbalanced_panel: bool = True, bootstrap: bool = True,
                   cband: bool | None = None, biters: int = 999, alp: float = 0.05, seed: int = 0,
                   overlap_max: float = 0.999, trim_level: float = 0.995, unbalanced: str = "pairs") -> ATTgtResult:
    r"""Group-time ATTs on a matched sample, each cohort on its own matched set (stacked design).

    For every cohort g of ``stacked`` (from :func:`with_matching_weights`), :func:`att_gt`
    estimates ATT(g, t) on block g only: its matched users against its matched comparison
    firms, weighted by that match's weights (comparison firms that start using the programme
    later leave the comparison set from then on with ``control_group="notyettreated"``, and
    take no part with ``"nevertreated"``). The blocks' influence functions are then put on
    one row per *firm* and summed over the blocks a firm belongs to, so :func:`aggte`'s
    standard errors are clustered by firm: a firm matched in several cohorts counts once,
    with its dependence across cohorts.

    Returns
    -------
    ATTgtResult
        As :func:`att_gt`; ``unit_ids`` are the firms, ``unit_cohort`` is a firm's cohort
        as a matched user (0 for firms that are only comparison firms), so
        :func:`aggte` weights cohorts by their number of matched users.

    Notes
    -----
    With :math:`n_g` units in block g and N distinct firms, block g's influence function
    :math:`\psi^{(g)}` (scaled to :math:`n_g`) becomes :math:`(N/n_g)\psi^{(g)}_i` on firm i's
    row; a cell's standard error :math:`\sqrt{\sum_i\psi_i^2}/N` is unchanged, and the
    covariance of cells of different cohorts comes from the firms they share. This is the
    stacked DiD with cohort-specific comparison sets (Cengiz et al. 2019; Wing, Freedman and
    Hollingsworth 2024) with Callaway-Sant'Anna cells inside each stack.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 200
    >>> p = pd.DataFrame({"be_id": np.repeat(np.arange(n).astype(str), 3), "year": np.tile([2017, 2018, 2019], n),
    ...                   "g": np.repeat(np.where(np.arange(n) < 50, 2019, 0), 3)})
    >>> p["y"] = rng.normal(size=3 * n) + 0.5 * ((p.g > 0) & (p.year >= p.g))
    >>> mu = pd.DataFrame({"be_id": np.arange(100).astype(str), "cohort": 2019,
    ...                    "treated": (np.arange(100) < 50).astype(int), "weight": 1.0})
    >>> r = matched_att_gt(with_matching_weights(p, mu, gname="g"), "y", bootstrap=False, cband=False)
    >>> r.n_units, r.tidy()["time"].tolist()
    (100, [2018, 2019])
    """
    require_columns(stacked, [key, tname, yname, "cohort", "treated", "weight", "stack_id", "g_stack"], "stacked")
    covs = parse_xformla(xformla)
    cband = bool(bootstrap) if cband is None else bool(cband)
    firms, firm_code = _sorted_text_codes(stacked[key])
    stacked = stacked.assign(_firm=firm_code)
    N = len(firms)
    parts, excl, notes, na = [], {}, [], []
    for g, blk in stacked.groupby("cohort", sort=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = att_gt(blk, yname, tname, "stack_id", "g_stack", xformla=xformla, control_group=control_group,
                       est_method=est_method, anticipation=anticipation, weightsname="weight", bootstrap=False,
                       cband=False, allow_unbalanced_panel=allow_unbalanced_panel, overlap_max=overlap_max,
                       trim_level=trim_level, unbalanced=unbalanced, _groups=[g])
        for c in caught:  # say which cohort's set a warning is about
            warnings.warn(f"cohort {int(g)} matched set: {c.message}", c.category, stacklevel=2)
        firm_of = blk.drop_duplicates("stack_id").set_index("stack_id")["_firm"]
        rows = firm_of.reindex(np.asarray(r.unit_ids)).to_numpy()
        parts.append((r, rows))
        for k_, v in r.exclusions.items():
            excl[k_] = excl.get(k_, 0) + int(v)
        notes += [f"cohort {int(g)}: {x}" for x in r.notes]
        na.append(r.na_cells)
    K = sum(len(r.att) for r, _ in parts)
    IF = np.zeros((N, K))
    j = 0
    for r, rows in parts:
        k = len(r.att)
        # rescale from the block's n_g units to the N firms, then add: a firm in several blocks is one row
        np.add.at(IF, (rows[:, None], np.arange(j, j + k)[None, :]), (N / r.n_units) * np.asarray(r.inffunc))
        j += k
    cat = lambda f: np.concatenate([np.asarray(getattr(r, f)) for r, _ in parts])  # noqa: E731
    att = cat("att")
    mu_t = stacked.loc[stacked["treated"] == 1].drop_duplicates("stack_id")
    G = np.zeros(N)
    G[mu_t["_firm"].to_numpy()] = mu_t["cohort"].to_numpy(dtype=float)
    w = np.ones(N)
    w[mu_t["_firm"].to_numpy()] = mu_t["weight"].to_numpy(dtype=float)
    w = w / w.mean()
    glist = np.unique(cat("groups"))
    inf = _inference(IF, None, att, lambda: _draws_dense(IF, None, _cohort_columns(G, w, glist), int(biters), seed, None),
                     bootstrap=bootstrap, cband=cband, alp=alp)
    na_cells = pd.concat(na, ignore_index=True) if na else _na_frame([])
    r0 = parts[0][0]
    boot = inf.boot_draws is not None
    return ATTgtResult(
        groups=_readonly(cat("groups")), times=_readonly(cat("times")), base_times=_readonly(cat("base_times")),
        att=_readonly(att), se=_readonly(inf.se), se_analytic=_readonly(inf.se_analytic), crit_val=float(inf.crit),
        n_treated=_readonly(cat("n_treated")), n_control=_readonly(cat("n_control")), inffunc=_readonly(IF),
        unit_cohort=_readonly(G), unit_weight=_readonly(w), cluster=None,
        periods=_readonly(np.unique(np.concatenate([np.asarray(r.periods) for r, _ in parts]))), n_units=int(N),
        yname=yname, xformla=xformla, control_group=control_group, est_method=est_method,
        anticipation=int(anticipation), base_period="varying", bootstrap=bool(bootstrap), biters=int(biters),
        alp=float(alp), seed=int(seed), exclusions=excl, notes=tuple(dict.fromkeys(notes)),
        boot_draws=_readonly(inf.boot_draws) if boot else None, boot_cohorts=_readonly(glist),
        boot_cohort_draws=_readonly(inf.cohort_draws) if boot else None, n_boot_units=int(inf.m), cband=cband,
        na_cells=na_cells, unit_ids=_readonly(firms), panel=True, allow_unbalanced_panel=r0.allow_unbalanced_panel,
        unbalanced=r0.unbalanced,
    )


# --------------------------------------------------------------------------- aggte
def aggte(
    result: ATTgtResult,
    type: str = "simple",
    min_e: float = -np.inf,
    max_e: float = np.inf,
    balance_e: int | None = None,
    na_rm: bool = False,
    bootstrap: bool | None = None,
    biters: int | None = None,
    alp: float | None = None,
    cband: bool | None = None,
) -> AggteResult:
    r"""Aggregate group-time ATTs as R did's ``aggte``.

    Parameters
    ----------
    result : ATTgtResult
    type : {"simple", "dynamic", "group", "calendar"}
    min_e, max_e : float
        Event-time window (``dynamic``; ``max_e`` also limits the post cells of the other types, as in R).
    balance_e : int, optional
        Keep only cohorts observed for at least ``balance_e`` periods after treatment (``dynamic``).
    na_rm : bool
        Drop cells with a missing ATT instead of raising.
    bootstrap, biters, alp, cband : optional
        Override the settings of ``result``. Without ``bootstrap`` and ``cband`` no
        bootstrap runs and the keyed rows' ``conf_*`` are pointwise.

    Returns
    -------
    AggteResult

    Notes
    -----
    With :math:`\hat p_g` the (weighted) share of units in cohort g,

    * simple: :math:`\theta = \sum_{g \le t} ATT(g,t)\, p_g / \sum_{g\le t} p_g`;
    * dynamic: :math:`\theta(e) = \sum_g 1\{t-g=e\} ATT(g,t)\, p_g / \sum_g 1\{t-g=e\} p_g`,
      overall = mean of :math:`\theta(e)` over :math:`e \ge 0`;
    * group: :math:`\theta(g)` = mean of post-treatment :math:`ATT(g,t)`, overall weighted by :math:`p_g`;
    * calendar: :math:`\theta(t)` = :math:`p_g`-weighted mean over cohorts treated by t, overall = mean over t.

    The influence function of an aggregate is the weighted sum of the cell influence
    functions plus a term for the estimated weights :math:`p_g`.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> n = 300
    >>> panel = pd.DataFrame({"id": np.repeat(np.arange(n), 4), "year": np.tile([1, 2, 3, 4], n),
    ...                       "g": np.repeat(rng.choice([0, 3, 4], n), 4)})
    >>> panel["y"] = rng.normal(size=4 * n) + 2.0 * ((panel.year >= panel.g) & (panel.g > 0))
    >>> a = aggte(att_gt(panel, "y", "year", "id", "g", biters=99), type="dynamic")
    >>> a.tidy()["level"].tolist()[0]
    'overall'
    """
    check_choice("type", type, AGG_TYPES)
    if not isinstance(result, ATTgtResult):
        raise TypeError(f"result must be an ATTgtResult from att_gt; got {builtins_type(result).__name__}")
    bootstrap = result.bootstrap if bootstrap is None else bool(bootstrap)
    cband = result.cband if cband is None else bool(cband)
    biters = result.biters if biters is None else int(biters)
    alp = result.alp if alp is None else float(alp)
    c = _AggCells.of(result, na_rm, max_e)
    agg = _AGGREGATIONS[type](c, min_e=min_e, max_e=max_e, balance_e=balance_e)
    A_full, C, allif = _aggregate_if(result, c, agg)
    se_all, crit = _aggregate_inference(result, A_full, C, allif, bootstrap=bootstrap, cband=cband, biters=biters,
                                        alp=alp, keyed=len(agg.cols) > 0)
    return AggteResult(
        type=type, overall_att=agg.overall, overall_se=float(se_all[0]), keys=_readonly(np.asarray(agg.keys)),
        att=_readonly(np.asarray(agg.key_att, dtype=float)), se=_readonly(se_all[1:]), crit_val=float(crit),
        n_treated_keys=_readonly(agg.key_ntr), n_control_keys=_readonly(agg.key_nco), n_treated=int(agg.n_treated),
        n_control=int(agg.n_control), alp=alp, yname=result.yname, bootstrap=bootstrap,
        inffunc=_readonly(allif[:, 1:]), overall_inffunc=_readonly(allif[:, 0]), min_e=min_e, max_e=max_e,
        balance_e=balance_e, cluster=result.cluster,
    )


@dataclass(frozen=True)
class _AggCells:
    """The cells an aggregation uses (missing ones dropped with ``na_rm``) and the cohorts' weighted shares."""

    kidx: np.ndarray        # positions of the used cells among all cells
    n_all: int
    group: np.ndarray
    t: np.ndarray
    att: np.ndarray
    n_co: np.ndarray
    cohorts: np.ndarray     # cohorts of the influence-function columns Z (att_gt's boot_cohorts)
    glist: np.ndarray       # cohorts of the used cells
    pgg: np.ndarray         # weighted share p_g of each cohort of glist
    pg: np.ndarray          # p_g of each used cell's cohort
    cohort_n: dict          # units per cohort
    keepers: np.ndarray     # post-treatment cells within max_e
    missing: str = ""       # why post-treatment cells were dropped (na_rm): the reasons' heads, no values

    @classmethod
    def of(cls, result: ATTgtResult, na_rm: bool, max_e: float) -> "_AggCells":
        att_all = np.asarray(result.att)
        keep = np.ones(len(att_all), dtype=bool)
        if np.isnan(att_all).any():
            if not na_rm:
                nan = np.isnan(att_all)
                bad = [(int(a), int(b)) for a, b in zip(result.groups[nan], result.times[nan])]
                raise ValueError(f"missing ATT(g,t) for cells {bad[:5]}; pass na_rm=True to aggregate without them")
            keep = ~np.isnan(att_all)
        kidx = np.flatnonzero(keep)
        missing = _missing_post(result, max_e) if not keep.all() else ""
        group, t = np.asarray(result.groups)[kidx], np.asarray(result.times)[kidx]
        G, w = result.unit_cohort, result.unit_weight
        # per cohort: weighted share p_g and unit count, from one pass over the units
        gval, ginv = np.unique(G, return_inverse=True)
        wsum, cnt = np.bincount(ginv, weights=w) / len(G), np.bincount(ginv)
        glist = np.unique(group)
        pgg = wsum[np.searchsorted(gval, glist)]
        return cls(kidx=kidx, n_all=len(att_all), group=group, t=t, att=att_all[kidx],
                   n_co=np.asarray(result.n_control)[kidx],
                   cohorts=result.boot_cohorts if result.boot_cohorts is not None else np.unique(G[G > 0]),
                   glist=glist, pgg=pgg, pg=pgg[np.searchsorted(glist, group)],
                   cohort_n=dict(zip(glist.tolist(), cnt[np.searchsorted(gval, glist)].tolist())),
                   keepers=np.flatnonzero((group <= t) & (t <= group + max_e)), missing=missing)

    def combo(self, which, wts, wif_w=None) -> tuple[np.ndarray, np.ndarray]:
        """Column of A (cells) and of C (cohorts) of one aggregate :math:`\\sum_j a_j ATT_j`.

        Every aggregate is linear in the cells' influence functions and in the cohort columns Z
        (:math:`w_i 1\\{G_i = g\\}`, which carry the estimated weights' uncertainty): cheap to build,
        and att_gt's bootstrap draws are mapped through the same matrices instead of drawing again.
        ``wif_w`` = (p_g of the cells, their ATTs, their cohorts) adds the weights' term.
        """
        a = np.zeros(len(self.att))
        a[which] = wts
        c = np.zeros(len(self.cohorts))
        if wif_w is not None:
            p, a_, gk = wif_w
            s = p.sum()
            np.add.at(c, np.searchsorted(self.cohorts, gk), a_ / s - (a_ @ p) / s**2)
        return a, c


@dataclass
class _Agg:
    """One aggregation: the overall estimate and its (A, C) column, the keyed estimates and theirs."""

    overall: float
    over: tuple
    n_treated: int
    n_control: int
    keys: np.ndarray = field(default_factory=lambda: np.array([]))
    key_att: np.ndarray = field(default_factory=lambda: np.array([]))
    cols: list = field(default_factory=list)
    key_ntr: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    key_nco: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))


class NoPostTreatmentCells(ValueError):
    """``aggte("simple")`` found no estimated post-treatment cell (every one left missing, e.g. by separation).

    ``missing``: why they were left missing (the reasons' heads, e.g. ``"overlap fails"``; ``""`` when there
    were no post-treatment cells at all)."""

    def __init__(self, message: str, missing: str = ""):
        super().__init__(message)
        self.missing = missing


def _missing_post(result: ATTgtResult, max_e: float) -> str:
    """Why post-treatment cells were left missing: the reasons' heads, e.g. ``"overlap fails"``.

    Only the head of each reason (before its colon), and no counts: the rest can quote a value of
    one firm (the largest propensity score), and this text reaches published status columns
    (subgroups, placebo) and rendered reports."""
    att = np.asarray(result.att)
    g, t = np.asarray(result.groups), np.asarray(result.times)
    post = np.isnan(att) & (g <= t) & (t <= g + max_e)
    if not post.any():
        return ""
    na = getattr(result, "na_cells", None)
    why = {} if na is None else {(int(a), int(b)): str(r).split(":")[0].strip()
                                 for a, b, r in zip(na["group"], na["time"], na["reason"])}
    heads = dict.fromkeys(why.get((int(a), int(b)), "not estimated") for a, b in zip(g[post], t[post]))
    return "; ".join(heads)


def _agg_simple(c: _AggCells, **_) -> _Agg:
    """:math:`\\theta = \\sum_{g \\le t} ATT(g,t) p_g / \\sum_{g \\le t} p_g`."""
    k = c.keepers
    if len(k) == 0:
        raise NoPostTreatmentCells("no post-treatment ATT(g,t) to aggregate"
                                   + (f": every one was left missing ({c.missing})" if c.missing else ""), c.missing)
    wts = c.pg[k] / c.pg[k].sum()
    return _Agg(overall=float(c.att[k] @ wts), over=c.combo(k, wts, (c.pg[k], c.att[k], c.group[k])),
                n_treated=sum(c.cohort_n[g] for g in np.unique(c.group[k])), n_control=int(c.n_co[k].min()))


def _keyed(c: _AggCells, keys, units, within_cohort: bool) -> _Agg:
    """The keyed estimates: a p_g-weighted mean of the cells of each key (no weight term within one cohort)."""
    atts, ntr, nco, cols = [], [], [], []
    for key, sel in units:
        if len(sel) == 0:  # only for type="group": a cohort without post cells in the window
            atts.append(np.nan)
            cols.append((np.zeros(len(c.att)), np.zeros(len(c.cohorts))))
            ntr.append(c.cohort_n[key])
            nco.append(0)
            continue
        wts = c.pg[sel] / c.pg[sel].sum()
        atts.append(float(c.att[sel] @ wts))
        cols.append(c.combo(sel, wts, None if within_cohort else (c.pg[sel], c.att[sel], c.group[sel])))
        ntr.append(c.cohort_n[key] if within_cohort else sum(c.cohort_n[g] for g in np.unique(c.group[sel])))
        nco.append(int(c.n_co[sel].min()))
    return _Agg(overall=np.nan, over=(), n_treated=0, n_control=0, keys=keys, key_att=np.array(atts, dtype=float),
                cols=cols, key_ntr=np.array(ntr, dtype=np.int64), key_nco=np.array(nco, dtype=np.int64))


def _agg_mean_of_keys(c: _AggCells, agg: _Agg, use) -> _Agg:
    """Overall = the plain mean of the keyed estimates ``use`` (dynamic: e >= 0; calendar: every period)."""
    if len(use) == 0:
        raise ValueError("no event time >= 0 within [min_e, max_e] to aggregate")
    KA = np.column_stack([a for a, _ in agg.cols])
    KC = np.column_stack([cc for _, cc in agg.cols])
    agg.overall = float(agg.key_att[use].mean())
    agg.over = (KA[:, use].mean(axis=1), KC[:, use].mean(axis=1))
    agg.n_treated, agg.n_control = int(agg.key_ntr[use].max()), int(agg.key_nco[use].min())
    return agg


def _agg_group(c: _AggCells, max_e, **_) -> _Agg:
    """:math:`\\theta(g)` = mean of the post-treatment ATT(g, t); overall weighted by :math:`p_g`."""
    g_, t_ = c.group, c.t
    agg = _keyed(c, c.glist, [(g, np.flatnonzero((g_ == g) & (g <= t_) & (t_ <= g_ + max_e))) for g in c.glist], True)
    KA = np.column_stack([a for a, _ in agg.cols]) if agg.cols else np.zeros((len(c.att), 0))
    KC = np.column_stack([cc for _, cc in agg.cols]) if agg.cols else np.zeros((len(c.cohorts), 0))
    sel = np.flatnonzero(np.isfinite(agg.key_att))
    wts = c.pgg[sel] / c.pgg[sel].sum()
    agg.overall = float(agg.key_att[sel] @ wts)
    _, c_w = c.combo(sel, wts, (c.pgg[sel], agg.key_att[sel], c.glist[sel]))
    agg.over = (KA[:, sel] @ wts, KC[:, sel] @ wts + c_w)
    agg.n_treated, agg.n_control = int(agg.key_ntr[sel].sum()), int(agg.key_nco[sel].min())
    return agg


def _agg_dynamic(c: _AggCells, min_e, max_e, balance_e, **_) -> _Agg:
    """:math:`\\theta(e)` = p_g-weighted mean of the cells with :math:`t - g = e`; overall = mean over e >= 0."""
    e_all = c.t - c.group
    include = np.ones(len(c.att), dtype=bool)
    eseq = np.unique(e_all)
    if balance_e is not None:
        include = (c.t.max() - c.group) >= balance_e
        eseq = np.unique(e_all[include])
        eseq = eseq[(eseq <= balance_e) & (eseq >= balance_e - c.t.max() + c.t.min())]
    keys = eseq[(eseq >= min_e) & (eseq <= max_e)]
    agg = _keyed(c, keys, [(e, np.flatnonzero((e_all == e) & include)) for e in keys], False)
    return _agg_mean_of_keys(c, agg, np.flatnonzero(keys >= 0))


def _agg_calendar(c: _AggCells, **_) -> _Agg:
    """:math:`\\theta(t)` = p_g-weighted mean over cohorts treated by t; overall = mean over t."""
    tlist = np.unique(c.t)
    keys = tlist[tlist >= c.group.min()]
    agg = _keyed(c, keys, [(t1, np.flatnonzero((c.t == t1) & (c.group <= c.t))) for t1 in keys], False)
    return _agg_mean_of_keys(c, agg, np.arange(len(keys)))


_AGGREGATIONS = {"simple": _agg_simple, "group": _agg_group, "dynamic": _agg_dynamic, "calendar": _agg_calendar}


def _aggregate_if(result: ATTgtResult, c: _AggCells, agg: _Agg):
    """Influence functions of the overall (column 0) and keyed aggregates: ``IF_cells @ A + w * C[cohort]``."""
    A = np.column_stack([agg.over[0]] + [a for a, _ in agg.cols])
    C = np.column_stack([agg.over[1]] + [cc for _, cc in agg.cols])
    A_full = np.zeros((c.n_all, A.shape[1]))
    A_full[c.kidx] = A
    G, w, cohorts = result.unit_cohort, result.unit_weight, c.cohorts
    cpos = np.searchsorted(cohorts, G)
    on = ((cpos < len(cohorts)) & (cohorts[np.minimum(cpos, len(cohorts) - 1)] == G) if len(cohorts)
          else np.zeros(len(G), bool))
    C_ext = np.vstack([C, np.zeros((1, C.shape[1]))])
    return A_full, C, result.inffunc @ A_full + w[:, None] * C_ext[np.where(on, cpos, len(cohorts))]


def _aggregate_inference(result: ATTgtResult, A_full, C, allif, *, bootstrap, cband, biters, alp, keyed):
    """Standard errors (bootstrap: att_gt's draws mapped through A and C, drawn again only for another
    ``biters``; else analytic) and the keyed rows' simultaneous critical value (at least the normal one)."""
    crit = np.nan
    z = ndtri(1 - alp / 2)
    if bootstrap or cband:
        if result.boot_draws is not None and biters == result.biters:
            bres = result.boot_draws @ A_full + result.boot_cohort_draws @ C
            m = result.n_boot_units
        else:
            bres, m = _multiplier_bootstrap(allif, result.cluster, biters, result.seed + 1, None)
        se_b, _ = _boot_summary(bres, m, alp)
        if keyed and cband:
            _, crit = _boot_summary(bres[:, 1:], m, alp)
            if not np.isfinite(crit) or crit < z:
                crit = z
    se_all = se_b if bootstrap else _analytic_se(allif, result.cluster)
    return se_all, crit


import builtins as _builtins  # noqa: E402  (aggte has a parameter named ``type``)

builtins_type = _builtins.type


# --------------------------------------------------------------------------- naive estimators
def _treat_indicator(df, tname, treat, idname):
    col = df[treat]
    vals = pd.unique(col.dropna())
    if set(np.asarray(vals, dtype=float)) <= {0.0, 1.0}:
        return col.astype(float).to_numpy()
    # a first-treatment column: treated from g on
    g = col.to_numpy(dtype=float)
    return ((g > 0) & (df[tname].to_numpy(dtype=float) >= g)).astype(float)


def _twfe_fit(y: np.ndarray, D: np.ndarray, ent: np.ndarray, tc: np.ndarray,
              w: np.ndarray | None) -> tuple[float, float, int]:
    r"""Coefficient, entity-clustered standard error and residual df of :math:`D` in the (weighted) regression of
    :math:`y` on :math:`D`, unit and year effects: linearmodels ``PanelOLS(entity_effects=True, time_effects=True)
    .fit(cov_type="clustered", cluster_entity=True)``, computed in closed form.

    By Frisch-Waugh-Lovell, with :math:`\tilde{\cdot}` the (weighted) within-unit deviation and :math:`A` the
    within-unit deviations of the year dummies (the first year left out), :math:`\check D = \tilde D - A\pi`
    (:math:`\pi` from the weighted regression of :math:`\tilde D` on :math:`A`) is :math:`D` with both effects
    partialled out, :math:`\hat\beta = \sum w \check D \tilde y / \sum w \check D^2`. The year block needs only
    :math:`T \times T` sums: :math:`A'WA = \mathrm{diag}(W_\tau) - \sum_i w_{i\cdot} w_{i\cdot}' / W_i`,
    :math:`A'W\tilde x = (\sum_{t=\tau} w \tilde x)_\tau`. Residuals
    :math:`\hat e = \tilde y - A\gamma - \hat\beta \check D` (:math:`\gamma` the year coefficients), and, as
    linearmodels 7.1 does for two-way effects (rows over residual df, no cluster-count factor),
    :math:`V = \frac{n}{n - N - T} \sum_i (\sum_t w \check D \hat e)^2 / (\sum w \check D^2)^2` with
    :math:`n` rows, :math:`N` units and :math:`T` years; residual df :math:`n - N - T`.
    No iteration and no dummy matrix: a few passes over the rows, where ``PanelOLS`` needs minutes at
    register scale (2M units). ``w=None`` is every weight 1, to the bit, without the row-sized products by
    the weights (at register scale each is fresh memory the operating system maps in).
    """
    n_ent = int(ent.max()) + 1
    n_t = int(tc.max()) + 1

    def wt(x):  # x * 1.0 is x: the unweighted sums below are the weighted ones' to the bit
        return x if w is None else w * x

    W = np.bincount(ent, weights=w, minlength=n_ent).astype(float, copy=False)

    def within(x):
        return x - (np.bincount(ent, weights=wt(x), minlength=n_ent) / W)[ent]

    y_t, d_t = within(y), within(D)
    E = np.bincount(ent * n_t + tc, weights=w, minlength=n_ent * n_t).astype(float, copy=False).reshape(n_ent, n_t)
    P = E / W[:, None]                                    # share of a unit's weight in each year
    # sums over units by einsum's own loops (optimize=False), not a BLAS product: a threaded product splits them
    # by the thread count, and the same run with one kernel (two BLAS threads) and two kernels (one each)
    # differed in the last digits of this estimate
    H = (np.diag(E.sum(axis=0)) - np.einsum("is,it->st", E, P, optimize=False))[1:, 1:]

    def year_part(x):
        """Fitted values (per row) of the weighted regression of the within-deviation x on the year block A."""
        if n_t == 1:
            return np.zeros_like(x)
        c = np.linalg.solve(H, np.bincount(tc, weights=wt(x), minlength=n_t)[1:])
        full = np.concatenate([[0.0], c])
        return full[tc] - np.einsum("it,t->i", P, full, optimize=False)[ent]

    d_c = d_t - year_part(d_t)
    y_c = y_t - year_part(y_t)
    sdd = float(np.sum(wt(d_c) * d_c))
    if not sdd > 1e-10 * float(np.sum(wt(D) * D)):
        raise ValueError("the treatment indicator is fully absorbed by the unit and year effects "
                         "(no unit changes treatment status relative to the others)")
    b = float(np.sum(wt(d_c) * y_c)) / sdd
    e = y_c - b * d_c
    score = np.bincount(ent, weights=wt(d_c) * e, minlength=n_ent)
    nobs = y.size
    df_resid = nobs - n_ent - n_t
    if df_resid <= 0:
        raise ValueError(f"no residual degrees of freedom: {nobs} rows, {n_ent} units and {n_t} years")
    var = nobs / df_resid * float(np.sum(score ** 2)) / sdd ** 2
    return b, math.sqrt(var), df_resid


def twfe(df: pd.DataFrame, yname: str, tname: str, idname: str, treat: str, weightsname: str | None = None,
         alp: float = 0.05) -> DiDEstimate:
    r"""Two-way fixed effects regression :math:`y_{it} = \alpha_i + \lambda_t + \beta D_{it} + e_{it}`.

    ``treat`` is either a 0/1 treatment column or a first-treatment column (0 = never),
    from which :math:`D_{it} = 1\{g_i > 0, t \ge g_i\}`. The numbers of linearmodels ``PanelOLS`` (entity and
    time effects, standard errors clustered by unit), computed in closed form (:func:`_twfe_fit`).

    Notes
    -----
    With staggered adoption and heterogeneous effects :math:`\beta` is a weighted average of
    2x2 comparisons, some using already-treated units as controls (Goodman-Bacon 2021);
    it is shown beside :func:`att_gt` for that reason, not as the preferred estimate.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> p = pd.DataFrame({"id": np.repeat(np.arange(200), 2), "t": np.tile([1, 2], 200),
    ...                   "g": np.repeat(rng.choice([0, 2], 200), 2)})
    >>> p["y"] = rng.normal(size=400) + 1.5 * ((p.t >= p.g) & (p.g > 0))
    >>> abs(twfe(p, "y", "t", "id", "g").estimate - 1.5) < 0.3
    True
    """
    cols = [yname, tname, idname, treat] + ([weightsname] if weightsname else [])
    require_columns(df, cols)
    d = df[cols].dropna()
    if not len(d):
        raise ValueError("df: no rows with the outcome, period, unit and treatment all observed")
    ent, _ = _factorize_sorted(d[idname], sort=False)  # codes in order of appearance, as always
    tc = _period_codes(d[tname])
    dup = _repeated(ent, tc)
    if dup.any():
        raise ValueError(f"df: duplicate ({idname}, {tname}) rows. Examples:\n{examples(d, dup, [idname, tname])}")
    D = _treat_indicator(d, tname, treat, idname)
    w = d[weightsname].to_numpy(dtype=float) if weightsname else None
    try:
        b, se, df_resid = _twfe_fit(d[yname].to_numpy(dtype=float), D, np.asarray(ent, dtype=np.int64),
                                    np.asarray(tc, dtype=np.int64), w)
    except ValueError as exc:
        raise ValueError(f"df: TWFE of {yname!r} on the treatment from {treat!r} by ({idname}, {tname}): {exc}") from None
    z = ndtri(1 - alp / 2)
    ever = np.bincount(ent, weights=D) > 0  # units treated in some year
    return DiDEstimate("TWFE (unit and year effects)", b, se, b - z * se, b + z * se, int(len(d)),
                       int(ever.size), int(ever.sum()), int((~ever).sum()), float(df_resid))


def did_2x2(df: pd.DataFrame, yname: str, tname: str, idname: str, treated: str, post: str,
            alp: float = 0.05) -> DiDEstimate:
    r"""Classic two-group, two-period difference in differences.

    OLS of :math:`y = a + b\,treated + c\,post + \beta\, treated \times post`,
    standard errors clustered by unit (statsmodels). ``treated`` and ``post`` are 0/1 columns.

    Notes
    -----
    :math:`\hat\beta = (\bar y_{1,post}-\bar y_{1,pre}) - (\bar y_{0,post}-\bar y_{0,pre})`;
    on a balanced panel this equals ``att_gt`` for one cohort and two periods.

    Examples
    --------
    >>> p = pd.DataFrame({"id": [1, 1, 2, 2, 3, 3, 4, 4], "t": [0, 1] * 4, "tr": [1, 1, 1, 1, 0, 0, 0, 0],
    ...                   "y": [1.0, 3.0, 2.0, 4.5, 1.0, 1.5, 2.0, 2.5]})
    >>> p["post"] = p.t
    >>> round(did_2x2(p, "y", "t", "id", "tr", "post").estimate, 6)
    1.75
    """
    import statsmodels.api as sm

    require_columns(df, [yname, tname, idname, treated, post])
    d = df[[yname, tname, idname, treated, post]].dropna()
    for c in (treated, post):
        bad = ~d[c].isin([0, 1])
        if bad.any():
            raise ValueError(f"df: column {c!r} must be 0/1. Examples:\n{examples(d, bad, [idname, tname, c])}")
    tr = d[treated].to_numpy(dtype=float)
    po = d[post].to_numpy(dtype=float)
    X = np.column_stack([np.ones(len(d)), tr, po, tr * po])
    groups = pd.factorize(d[idname])[0]
    res = sm.OLS(d[yname].to_numpy(dtype=float), X).fit(cov_type="cluster", cov_kwds={"groups": groups})
    b, se = float(res.params[3]), float(res.bse[3])
    z = ndtri(1 - alp / 2)
    units = d.groupby(idname)[treated].max()
    return DiDEstimate("2x2 DiD", b, se, b - z * se, b + z * se, int(len(d)), int(units.size),
                       int((units == 1).sum()), int((units == 0).sum()), float(res.df_resid))


def naive_difference(df: pd.DataFrame, yname: str, tname: str, idname: str, gname: str,
                     alp: float = 0.05) -> DiDEstimate:
    r"""Naive users-versus-others comparison, as the 2023 evaluation made it.

    Mean outcome of users in their years since first use minus the mean outcome of
    never-users in the same years; OLS of y on a user dummy over those rows,
    standard errors clustered by unit.

    Notes
    -----
    :math:`\hat\Delta = \bar y_{users,\,t\ge g} - \bar y_{never,\,t \ge \min g}`. It attributes
    every pre-existing difference between users and others to the programme.

    Examples
    --------
    >>> p = pd.DataFrame({"id": [1, 1, 2, 2, 3, 3, 4, 4], "t": [1, 2] * 4, "g": [2, 2, 2, 2, 0, 0, 0, 0],
    ...                   "y": [5.0, 6.0, 5.0, 7.0, 1.0, 2.0, 1.0, 3.0]})
    >>> round(naive_difference(p, "y", "t", "id", "g").estimate, 6)
    4.0
    """
    require_columns(df, [yname, tname, idname, gname])
    d = df[[yname, tname, idname, gname]].dropna()
    g = d[gname].to_numpy(dtype=float)
    t = d[tname].to_numpy(dtype=float)
    if not (g > 0).any() or not (g == 0).any():
        raise ValueError(f"df: naive comparison needs users ({gname} > 0) and never-users ({gname} == 0)")
    gmin = g[g > 0].min()
    rows = ((g > 0) & (t >= g)) | ((g == 0) & (t >= gmin))
    d = d[rows]
    user = d[gname].to_numpy(dtype=float) > 0
    groups, uniq = pd.factorize(d[idname])
    b, se, df_resid = _mean_difference_cluster(d[yname].to_numpy(dtype=float), user, groups, len(uniq))
    z = ndtri(1 - alp / 2)
    unit_user = np.zeros(len(uniq), dtype=bool)
    unit_user[groups[user]] = True
    return DiDEstimate("naive users vs others", b, se, b - z * se, b + z * se, int(len(d)), int(len(uniq)),
                       int(unit_user.sum()), int((~unit_user).sum()), df_resid)


def _mean_difference_cluster(y: np.ndarray, user: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple:
    r"""OLS of ``y`` on an intercept and ``user`` with cluster-robust variance, in closed form.

    The same numbers as statsmodels 0.14 ``OLS(...).fit(cov_type="cluster")`` (test), without its
    (n, 2) design and per-cluster loops (4 s per call at 2M firms). With residuals :math:`e_i` from
    the two group means, cluster scores :math:`s_c = \sum_{i \in c} e_i (1, u_i)'` and
    :math:`A = X'X`, :math:`V = \frac{C}{C-1}\frac{N-1}{N-2} A^{-1} (\sum_c s_c s_c') A^{-1}`.
    Returns ``(b, se, df_resid)``.
    """
    n, n1 = len(y), int(user.sum())
    if n1 == 0 or n1 == n:
        raise ValueError("naive comparison needs rows of users and of others")
    m1, m0 = y[user].mean(), y[~user].mean()
    e = y - np.where(user, m1, m0)
    s0 = np.bincount(groups, weights=e, minlength=n_groups)
    s1 = np.bincount(groups, weights=e * user, minlength=n_groups)
    meat = np.array([[s0 @ s0, s0 @ s1], [s0 @ s1, s1 @ s1]])
    Ainv = np.linalg.inv(np.array([[n, n1], [n1, n1]], dtype=float))
    V = Ainv @ meat @ Ainv * (n_groups / (n_groups - 1)) * ((n - 1) / (n - 2))
    return float(m1 - m0), float(np.sqrt(V[1, 1])), float(n - 2)


def cohort_from_treatment(df: pd.DataFrame, idname: str, tname: str, dname: str) -> pd.Series:
    """First-treatment period per row (0 = never) from a 0/1 treatment column.

    Staggered adoption requires treatment to be absorbing: once on, it stays on.
    A unit whose treatment switches off raises ``ValueError`` listing examples.

    Examples
    --------
    >>> d = pd.DataFrame({"id": [1, 1, 2, 2], "t": [1, 2, 1, 2], "d": [0, 1, 0, 0]})
    >>> cohort_from_treatment(d, "id", "t", "d").tolist()
    [2, 2, 0, 0]
    """
    require_columns(df, [idname, tname, dname])
    d = df[[idname, tname, dname]]
    bad = ~d[dname].isin([0, 1])
    if bad.any():
        raise ValueError(f"df: column {dname!r} must be 0/1. Examples:\n{examples(d, bad, [idname, tname, dname])}")
    s = d.sort_values([idname, tname], kind="stable")
    off = s.groupby(idname, sort=False)[dname].cummax().astype(int) > s[dname].astype(int)
    if off.any():
        ids = s.loc[off, idname].unique()
        ex = d[d[idname].isin(ids[:5])]
        raise ValueError(
            f"df: treatment {dname!r} switches off (1 then 0) for {len(ids)} unit(s); staggered DiD needs "
            f"absorbing treatment. Examples:\n{ex.head(10).to_string(index=False)}"
        )
    first = d[tname].where(d[dname] == 1).groupby(d[idname]).transform("min")
    return first.fillna(0).astype("int64")


def _without_cells(result: ATTgtResult, mask: np.ndarray, reason: str) -> ATTgtResult:
    """``result`` with the cells of ``mask`` left missing (``att`` NaN, listed in ``na_cells`` with ``reason``),
    so that :func:`aggte` (``na_rm=True``) and the pre-test leave them out. The influence functions and draws
    stay: they are only read for the cells kept."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return result
    att = np.array(result.att, dtype=float)
    att[mask] = np.nan
    att.setflags(write=False)
    g, t = np.asarray(result.groups)[mask], np.asarray(result.times)[mask]
    na = pd.concat([result.na_cells, _na_frame([(a, b, reason) for a, b in zip(g, t)])], ignore_index=True)
    return replace(result, att=att, na_cells=na)


def users_off_common_change(Y: np.ndarray, cohort: np.ndarray, periods: np.ndarray, groups: np.ndarray,
                            times: np.ndarray, base_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Which users' outcome change in each group-time cell differs from the cell's most common change.

    The users' side of :math:`ATT(g,t)` is the mean of :math:`\Delta Y_i = Y_{i,t} - Y_{i,b}` over the users
    of cohort :math:`g` (:math:`b` the cell's base period). When every user's change is the same (a 0/1
    outcome nobody switches, log exports of firms that never export), that mean is each user's own change:
    publishing it is a group disclosure (ACRO's "all-values-are-same"), and the influence function's users'
    side is identically zero, so the standard error reflects the comparison firms alone and the Wald
    interval is far too narrow. With 1-9 users off the common change the mean rests on those few firms
    (and a Wald interval with so few "events" is unreliable: Brown, Cai & DasGupta 2001).

    Parameters
    ----------
    Y : ndarray (n_users, n_periods)
        The users' outcome by period (NaN: not observed; a cell uses the users observed in both years).
    cohort : ndarray (n_users,)
        Each user's cohort (first period of use).
    periods : ndarray
        The columns' periods, increasing.
    groups, times, base_times : ndarray (n_cells,)
        The cells (:attr:`ATTgtResult.groups`, ``times``, ``base_times``).

    Returns
    -------
    off, member : ndarray of bool (n_users, n_cells)
        ``member``: the user enters the cell; ``off``: and its change differs from the cell's most common
        change (ties: any of the most common values; the number off is the same).

    Examples
    --------
    >>> Y = np.array([[0., 0.], [0., 0.], [0., 1.]])
    >>> off, member = users_off_common_change(Y, np.array([2, 2, 2]), np.array([1, 2]), np.array([2]),
    ...                                       np.array([2]), np.array([1]))
    >>> off[:, 0].tolist(), int(member.sum())
    ([False, False, True], 3)
    """
    Y = np.asarray(Y, dtype=float)
    cohort = np.asarray(cohort, dtype=float)
    periods = np.asarray(periods, dtype=float)
    n, k = len(cohort), len(groups)
    off = np.zeros((n, k), dtype=bool)
    member = np.zeros((n, k), dtype=bool)
    rows_of = {g: np.flatnonzero(cohort == g) for g in np.unique(np.asarray(groups, dtype=float))}
    pt = np.searchsorted(periods, np.asarray(times, dtype=float))
    pb = np.searchsorted(periods, np.asarray(base_times, dtype=float))
    for j, g in enumerate(np.asarray(groups, dtype=float)):
        rows = rows_of[g]
        if not len(rows) or pt[j] >= len(periods) or pb[j] >= len(periods):
            continue
        d = Y[rows, pt[j]] - Y[rows, pb[j]]
        ok = np.isfinite(d)
        if not ok.any():
            continue
        _, inv, cnt = np.unique(d[ok], return_inverse=True, return_counts=True)
        member[rows[ok], j] = True
        off[rows[ok], j] = inv != int(np.argmax(cnt))
    return off, member


def drop_without_pre_period(panel: pd.DataFrame, gname: str, anticipation: int = 0, *, tname: str = "year",
                            idname: str = "firm_id") -> tuple[pd.DataFrame, int]:
    """Leave out users whose first use falls in the first year (no year before use in the window).

    Returns the remaining rows and the number of units left out (show it with a threshold:
    it can be small). :func:`att_gt` refuses such cohorts rather than dropping them silently.

    Examples
    --------
    >>> p = pd.DataFrame({"firm_id": [1, 1, 2, 2], "year": [2014, 2015] * 2, "g": [2014, 2014, 0, 0]})
    >>> rest, n = drop_without_pre_period(p, "g")
    >>> rest["firm_id"].unique().tolist(), n
    ([2], 1)
    """
    require_columns(panel, [gname, tname, idname], "panel")
    first = panel[tname].min()
    g = panel[gname].to_numpy(dtype=float)
    no_pre = (g > 0) & (g - anticipation <= first)
    return panel.loc[~no_pre], int(panel.loc[no_pre, idname].nunique())


# The effect reports moved to :mod:`reach.effects` (presentation is not estimation). The old names
# stay importable from here for one release.
_MOVED_TO_EFFECTS = ("EffectReport", "effect_report", "event_study_plot", "effects_intro", "samples_text",
                     "REPORT_TABLES", "COMPARISON_METHODS")


def __getattr__(name: str):
    if name in _MOVED_TO_EFFECTS:
        warnings.warn(f"reach.did.{name} moved to reach.effects.{name}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        from reach import effects

        return getattr(effects, name)
    raise AttributeError(f"module 'reach.did' has no attribute {name!r}")
