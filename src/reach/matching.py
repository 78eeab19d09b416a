"""Matched control groups: nearest-neighbour matching, coarsened exact matching, entropy balancing.

This module builds the control group the 2023 evaluation lacked. It follows R
*MatchIt* 4.7 (``matchit(method = "nearest" | "cem")``), *WeightIt* (``method = "ebal"``)
and *cobalt* (``bal.tab``) closely enough that the same specification gives the same
matched sets and balance numbers (tested against the packages' published Lalonde
output, see ``tests/golden/matchit_lalonde*.json``):

* **propensity score** (``ps_model="logit"``): unpenalised logistic regression
  fitted by iteratively reweighted least squares, as R ``glm(family = binomial)``
  (same convergence rule); ``"gbm"`` is scikit-learn's histogram gradient boosting;
  or a user-given score column (``distance=``). ``reestimate=True`` refits it on the
  units left after ``discard`` (MatchIt).
* **distance** used for matching and the caliper: as MatchIt's ``distance = "glm"``,
  the propensity score *itself* with ``link="logit"`` (MatchIt's default), or its
  logit (the linear predictor) with ``link="linear.logit"``. MatchIt's manual:
  "``link = "linear.logit"``: the linear predictor is used as the distance".
  The often quoted "0.2 SD of the logit" (Austin 2011) therefore needs
  ``link="linear.logit"``; the default reproduces MatchIt's default.
* **caliper**: none by default (MatchIt). With ``std_caliper=True`` the width is
  ``caliper * sd(distance)`` over all non-discarded units (treated and control, R's
  ``sd`` with n-1), exactly as MatchIt's ``process_caliper``.
* **greedy nearest neighbour** (MatchIt's ``nn_matchC_vec``): all units are ordered
  by distance (stable: ties keep data order); treated units are visited in
  ``m_order`` (default "largest" = descending score, MatchIt's default for a
  propensity score; "data" for plain Mahalanobis matching); each takes the nearest
  *available* control on the left or right of it in that order; when both are equally
  far the left one (lower distance, or for equal distance the earlier row) wins. A side
  whose nearest available control lies outside the caliper has no candidate. With
  ``ratio=k`` matching runs in ``k`` rounds (every treated unit gets its first control
  before any gets its second). Exact strata (``exact=``) are matched separately.
* **Mahalanobis distance** (``mahalanobis=True`` on all covariates, or ``mahvars=`` on a
  subset, within the score caliper: MatchIt's ``mahvars``; without caliper MatchIt's
  ``distance = "mahalanobis"``): covariates scaled, pooled within-group covariance of the
  units *not discarded*, generalized inverse, pivoted Cholesky coordinates; exact ties
  are broken as MatchIt 4.7's scan along the first coordinate (``_pick``). Neighbours are
  found with a k-d tree per stratum (no quadratic step) whose points are *tie groups*:
  controls with identical coordinates and score, searched as one point (register data
  hold groups of 100,000s of identical firms); ``algorithm="brute"`` is the plain search
  over every group in the caliper window and gives identical pairs.
* **weights** (MatchIt's ``get_weights_from_mm``, ATT): a matched treated unit has
  weight 1; a control gets :math:`\\sum_{t} 1/k_t` over the treated units ``t`` it
  is matched to (``k_t`` = number of controls of ``t``); control weights are then
  rescaled to sum to the number of distinct matched controls.
* **coarsened exact matching** (``method="cem"``, Iacus, King & Porro 2012; MatchIt's
  in-house ``cem_matchit``): Sturges' (or given) equal-width bins per numeric covariate,
  categories exact (``grouping=`` merges values), strata with both groups kept, weights
  :math:`n_{T,s}/n_{C,s}` normalised to mean 1 over matched controls.
* **entropy balancing** (``method="ebal"``, Hainmueller 2012; WeightIt): control weights
  :math:`\\propto e^{\\lambda' x}` reproducing the users' means (``moments=2``: and
  variances) exactly, from the convex dual by Newton's method; sum = number of users.
* **balance** (cobalt / ``summary.matchit``): means, the standardised mean
  difference ``(mean_T - mean_C) / s_T`` where ``s_T`` is the treated group's
  standard deviation in the *unmatched* sample (n-1 for continuous covariates,
  :math:`\\sqrt{p(1-p)}` for binary ones) and is the same before and after
  matching; the variance ratio ``var_T / var_C`` (weighted, continuous covariates
  only) and the maximum eCDF difference (Kolmogorov-Smirnov statistic).

Implementation for scale: units are sorted once per call by
``(stratum, distance, row)``; the insertion position of every treated unit among
the controls of its stratum is one ``numpy.searchsorted``; "nearest available
control" is a pair of union-find pointers with path compression, so the only
Python loop runs over *treated* units (never over controls) at amortised O(1)
each. Matching with replacement is fully vectorised. 2 million rows with exact
strata match in seconds (see ``bench/matching.md``).

Missing values in the treatment, covariates or exact variables are a *counted
exclusion*: those rows take no part in the propensity model or matching, are
counted in :meth:`Match.summary`, and excluded treated units are listed by
:meth:`Match.unmatched` with the reason. Constant and collinear covariates are
dropped from the propensity model (as R ``glm`` aliases them) and reported (cem:
dropped with a note; ebal: an error); complete separation of treated and controls
raises ``ValueError``; infeasible balance constraints (ebal) raise ``ValueError``.

Staggered adoption: :func:`match_cohorts` matches each adoption cohort on
covariates measured before its first use and returns weights for
``reach.did.att_gt(weightsname=...)``, for every method.
"""
from __future__ import annotations

import math
import warnings
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from reach import _checks
from reach._checks import check_choice, examples, require_columns
from reach._display import COUNT_CORE, ESTIMATE_CORE, ResultDisplay, count_table, estimate_table

__all__ = [
    "Match",
    "CohortMatch",
    "Effect",
    "match",
    "match_cohorts",
    "att",
    "overlap_data",
    "STATUSES",
    "METHODS",
    "VCOV_TYPES",
    "ALGORITHMS",
    "PS_MODELS",
    "DISCARD",
    "M_ORDERS",
    "LINKS",
    "CONTROL_GROUPS",
    "SMD_THRESHOLD",
    "VR_BOUNDS",
    "EFFECT_COLUMNS",
    "PS_TABLE_COLUMNS",
    "COUNT_TIDY_COLUMNS",
    "MATCHED_UNITS_COLUMNS",
    "MATCH_WEIGHT",
]

METHODS = ("nearest", "cem", "ebal")
#: sandwich variance types of :func:`att` ("auto": MatchIt's vignette recommendation per design)
VCOV_TYPES = ("auto", "CR1", "HC1", "HC3")
#: nearest-neighbour search for Mahalanobis matching ("brute": every control inside the caliper window)
ALGORITHMS = ("auto", "kdtree", "brute")
ESTIMANDS = ("ATT", "ATC")
PS_MODELS = ("logit", "gbm")
DISCARD = ("none", "both", "control", "treated")
M_ORDERS = ("largest", "smallest", "data", "random")
LINKS = ("logit", "linear.logit")
CONTROL_GROUPS = ("notyettreated", "nevertreated")
MISSING = ("exclude", "error")
#: balance thresholds flagged in :meth:`Match.balance` (Stuart 2010; Austin 2009; MatchIt docs)
SMD_THRESHOLD = 0.1
VR_BOUNDS = (0.5, 2.0)

BALANCE_COLUMNS = [
    "variable", "type",
    "mean_treated_before", "mean_control_before", "smd_before", "var_ratio_before", "ecdf_max_before",
    "mean_treated_after", "mean_control_after", "smd_after", "var_ratio_after", "ecdf_max_after",
    "smd_flag", "var_ratio_flag",
]
COUNT_COLUMNS = ["group", "all", "excluded_missing", "discarded", "matched", "unmatched"]
#: Columns of :meth:`Effect.tidy`: the estimate core (``reach._display.ESTIMATE_CORE``; normal test of
#: zero), then the outcome, the number of units and clusters, and the variance type.
EFFECT_COLUMNS = [*ESTIMATE_CORE, "outcome", "n", "n_clusters", "vcov"]
#: Columns of :meth:`CohortMatch.ps_table`: the estimate core (``term`` the covariate; the logistic
#: coefficients have no standard error here), then ``cohort`` and ``df_resid``.
PS_TABLE_COLUMNS = [*ESTIMATE_CORE, "cohort", "df_resid"]
#: Columns of :meth:`Match.tidy` and :meth:`CohortMatch.tidy` (the count core ``group..., n_units,
#: value``): ``group`` treated / control, ``sample`` all / excluded_missing / discarded / matched /
#: unmatched (cohort-wise: also ``cohort`` first and ``not_observed``); ``n_units`` = ``value``, the
#: number of firms.
COUNT_TIDY_COLUMNS = ["group", "sample", *COUNT_CORE]
#: after the id column (``idname``): the matched sample handed to the effect estimates
#: ``weight`` is the deprecated alias of ``match_weight`` (one release; ``reach.did.with_matching_weights``
#: still reads it).
MATCHED_UNITS_COLUMNS = ["cohort", "treated", "match_weight", "weight"]
#: The matching weight is ``match_weight`` in every table of this module (``Match.units``,
#: ``matched_data``, ``unit_weights``, ``matched_units``); ``weights`` / ``weight`` (MatchIt's name and
#: the old one of the cohort-wise tables) stay one release as alias columns. ``reach.did``'s
#: ``weightsname`` keeps R did's name: it is any weight column (sampling or matching).
MATCH_WEIGHT = "match_weight"

# status of a unit x cohort in CohortMatch.status_units (the labels of the published counts table)
S_MATCHED = "matched"
S_UNMATCHED = "unmatched"
S_DISCARDED = "discarded"
S_EXCLUDED = "excluded (missing)"
S_NOT_OBSERVED = "not observed in g-1"
S_COHORT_FAILED = "cohort not matched"
STATUSES = (S_MATCHED, S_UNMATCHED, S_DISCARDED, S_EXCLUDED, S_NOT_OBSERVED, S_COHORT_FAILED)

# reasons a treated unit is not matched (Match.unmatched)
R_MISSING = "missing values"
R_DISCARDED = "discarded: outside common support"
R_NO_STRATUM = "no control in exact stratum"
R_NO_CELL = "no control in coarsened stratum"
R_CALIPER = "no control within caliper"
R_USED = "controls within reach already used"
R_NOT_OBSERVED = "not observed in the reference year"
R_MODEL = "propensity model failed"


# ============================================================================ helpers

def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def _treatment_vector(s: pd.Series, table: str, name: str) -> np.ndarray:
    """0/1 float vector with NaN for missing; anything else is an error."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype("float64").to_numpy()
    v = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
    bad = ~np.isnan(v) & ~np.isin(v, (0.0, 1.0))
    bad |= np.isnan(v) & s.notna().to_numpy()
    if bad.any():
        raise ValueError(
            f"{table}: treatment column {name!r} must be 0/1 or boolean; "
            f"{int(bad.sum())} row(s) are not, e.g.:\n" + examples(s.to_frame(), bad, [name])
        )
    return v


@dataclass(frozen=True)
class _Design:
    """Covariates expanded to numeric columns."""

    model: pd.DataFrame      # for the propensity model (categoricals: first level dropped)
    balance: pd.DataFrame    # for balance (categoricals: every level, MatchIt naming "racewhite")
    binary: dict             # balance column -> bool


def _rows_of(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """``frame.loc[index]``; ``frame`` itself when it holds those rows in that order already (a match's
    design holds its complete-case units: no lookup of millions of text ids)."""
    return frame if frame.index.equals(index) else frame.loc[index]


def _design(df: pd.DataFrame, covariates: Sequence[str]) -> _Design:
    model_cols: dict[str, np.ndarray] = {}
    bal_cols: dict[str, np.ndarray] = {}
    binary: dict[str, bool] = {}
    for c in covariates:
        s = df[c]
        if _is_categorical(s):
            levels = sorted(pd.unique(s.dropna().astype(str)))
            sv = s.astype("object")
            na = s.isna().to_numpy()
            for i, lev in enumerate(levels):
                col = np.where(na, np.nan, (sv.astype(str) == lev).to_numpy().astype("float64"))
                bal_cols[f"{c}{lev}"] = col
                binary[f"{c}{lev}"] = True
                if i > 0:  # R's treatment contrasts: first (sorted) level is the reference
                    model_cols[f"{c}{lev}"] = col
        else:
            v = s.astype("float64").to_numpy() if not pd.api.types.is_bool_dtype(s) else s.astype("float64").to_numpy()
            v = np.asarray(v, dtype="float64")
            model_cols[c] = v
            bal_cols[c] = v
            fin = v[~np.isnan(v)]
            binary[c] = bool(fin.size) and bool(np.isin(fin, (0.0, 1.0)).all())
    idx = df.index
    return _Design(pd.DataFrame(model_cols, index=idx), pd.DataFrame(bal_cols, index=idx), binary)


def _reduce_rank(X: np.ndarray, names: list[str], tol: float = 1e-7) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Drop constant and (sequentially) collinear columns, keeping data order as R's lm/glm does.

    Column ``j`` is collinear when its residual on the intercept and the columns before it
    has norm at most ``tol`` times its centred norm. One Householder QR of the centred
    columns gives every residual norm (:math:`|R_{jj}|`) at once; a column found collinear
    lies in the span of the earlier ones, so keeping it in the factorisation changes none
    of the later residuals beyond that tolerance.
    """
    n, k = X.shape
    dropped: list[tuple[str, str]] = []
    if k == 0:
        return X, [], dropped
    Xc = X - X.mean(axis=0)
    nx = np.linalg.norm(Xc, axis=0)
    const = [bool(nx[j] <= tol * max(1.0, np.abs(X[:, j]).max()) * math.sqrt(n) or np.ptp(X[:, j]) == 0)
             for j in range(k)]
    cols = [j for j in range(k) if not const[j]]
    diag = np.abs(np.diag(np.linalg.qr(Xc[:, cols], mode="r"))) if cols else np.zeros(0)
    res = dict(zip(cols, diag))
    keep: list[int] = []
    for j in range(k):
        if const[j]:
            dropped.append((names[j], "constant"))
        elif res[j] <= tol * nx[j]:
            dropped.append((names[j], "collinear"))
        else:
            keep.append(j)
    return X[:, keep], [names[j] for j in keep], dropped


def _fit_logit(X: np.ndarray, y: np.ndarray, maxit: int = 25, epsilon: float = 1e-8) -> tuple[np.ndarray, np.ndarray, bool]:
    """Unpenalised logistic regression by IRLS, R ``glm.fit``'s algorithm and stopping rule.

    Returns (linear predictor, coefficients on the given scale incl. intercept first, converged).
    Columns are centred and scaled internally for conditioning; that changes no fitted value.
    Not ``did._logit_rows`` (Newton from zero, step tolerance): MatchIt's numbers come from
    ``glm``'s start (``mustart``), deviance stopping rule and convergence flag, reproduced here.
    """
    n = X.shape[0]
    mu_x = X.mean(axis=0) if X.shape[1] else np.zeros(0)
    sd_x = X.std(axis=0) if X.shape[1] else np.zeros(0)
    sd_x = np.where(sd_x > 0, sd_x, 1.0)
    Z = np.column_stack([np.ones(n), (X - mu_x) / sd_x])
    mu = (y + 0.5) / 2.0  # glm's mustart for binomial
    eta = np.log(mu / (1 - mu))
    dev_old = np.inf
    beta = np.zeros(Z.shape[1])
    converged = False

    def deviance(p):
        p = np.clip(p, 1e-300, 1 - 1e-16)
        return -2.0 * np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))

    for _ in range(maxit):
        w = mu * (1 - mu)
        w = np.maximum(w, 1e-300)
        z = eta + (y - mu) / w
        ZW = Z * w[:, None]
        beta = np.linalg.solve(Z.T @ ZW, ZW.T @ z)
        eta = Z @ beta
        mu = 1.0 / (1.0 + np.exp(-eta))
        dev = deviance(mu)
        if abs(dev - dev_old) / (abs(dev) + 0.1) < epsilon:
            converged = True
            break
        dev_old = dev
    coef = np.empty_like(beta)
    coef[1:] = beta[1:] / sd_x
    coef[0] = beta[0] - np.sum(beta[1:] * mu_x / sd_x)
    return eta, coef, converged


def _separating(X: pd.DataFrame, treat: np.ndarray) -> list[str]:
    out = []
    for c in X.columns:
        v = X[c].to_numpy()
        t, u = v[treat == 1], v[treat == 0]
        if t.size and u.size and (t.min() > u.max() or t.max() < u.min()):
            out.append(c)
    return out


def _wmean(x, w):
    return float(np.sum(w * x) / np.sum(w))


def _wvar(x, w):
    """Weighted variance with the reliability-weights correction (cobalt's/MatchIt's ``wvar``)."""
    sw = np.sum(w)
    sw2 = np.sum(w ** 2)
    if sw ** 2 - sw2 <= 0:
        return np.nan
    m = np.sum(w * x) / sw
    return float(sw / (sw ** 2 - sw2) * np.sum(w * (x - m) ** 2))


def _ecdf_max(xt, wt, xc, wc) -> float:
    if xt.size == 0 or xc.size == 0:
        return np.nan
    grid = np.unique(np.concatenate([xt, xc]))

    def F(x, w):
        o = np.argsort(x, kind="stable")
        xs = x[o]
        cw = np.cumsum(w[o]) / np.sum(w)
        i = np.searchsorted(xs, grid, side="right")
        return np.where(i > 0, cw[np.maximum(i - 1, 0)], 0.0)

    return float(np.max(np.abs(F(xt, wt) - F(xc, wc))))


def _balance_table(
    X: pd.DataFrame, binary: Mapping[str, bool], treat: np.ndarray,
    w_after: np.ndarray, focal: int = 1,
) -> pd.DataFrame:
    """Balance before (all rows, weight 1) and after (rows with w_after > 0, weighted)."""
    t = treat == 1
    c = ~t
    ta = t & (w_after > 0)
    ca = c & (w_after > 0)
    rows = []
    for col in X.columns:
        x = X[col].to_numpy(dtype="float64")
        is_bin = bool(binary.get(col, False))
        xt, xc = x[t], x[c]
        ones_t, ones_c = np.ones(xt.size), np.ones(xc.size)
        mt, mc = (_wmean(xt, ones_t) if xt.size else np.nan), (_wmean(xc, ones_c) if xc.size else np.nan)
        # standardised by the focal group's SD (cobalt's s.d.denom: treated for the ATT, control for the ATC)
        xf, mf, ones_f = (xt, mt, ones_t) if focal == 1 else (xc, mc, ones_c)
        if is_bin:
            sd = math.sqrt(mf * (1 - mf)) if xf.size else np.nan
        else:
            sd = math.sqrt(_wvar(xf, ones_f)) if xf.size > 1 else np.nan
        if not (sd > 0):
            # constant among treated: fall back on the pooled SD so the SMD stays finite
            vt = mt * (1 - mt) if is_bin else (_wvar(xt, ones_t) if xt.size > 1 else 0.0)
            vc = mc * (1 - mc) if is_bin else (_wvar(xc, ones_c) if xc.size > 1 else 0.0)
            sd = math.sqrt((np.nan_to_num(vt) + np.nan_to_num(vc)) / 2.0)

        def smd(a, b):
            if not (sd > 0):
                return 0.0 if a == b else np.nan
            return (a - b) / sd

        def vr(xa, wa, xb, wb):
            if is_bin or xa.size < 2 or xb.size < 2:
                return np.nan
            vb = _wvar(xb, wb)
            return _wvar(xa, wa) / vb if vb and vb > 0 else np.nan

        xta, wta, xca, wca = x[ta], w_after[ta], x[ca], w_after[ca]
        mta = _wmean(xta, wta) if xta.size else np.nan
        mca = _wmean(xca, wca) if xca.size else np.nan
        vr_after = vr(xta, wta, xca, wca)
        s_after = smd(mta, mca)
        rows.append({
            "variable": col,
            "type": "binary" if is_bin else "continuous",
            "mean_treated_before": mt, "mean_control_before": mc,
            "smd_before": smd(mt, mc), "var_ratio_before": vr(xt, ones_t, xc, ones_c),
            "ecdf_max_before": _ecdf_max(xt, ones_t, xc, ones_c),
            "mean_treated_after": mta, "mean_control_after": mca,
            "smd_after": s_after, "var_ratio_after": vr_after,
            "ecdf_max_after": _ecdf_max(xta, wta, xca, wca),
            "smd_flag": bool(np.isfinite(s_after) and abs(s_after) > SMD_THRESHOLD),
            "var_ratio_flag": bool(np.isfinite(vr_after) and not (VR_BOUNDS[0] <= vr_after <= VR_BOUNDS[1])),
        })
    return pd.DataFrame(rows, columns=BALANCE_COLUMNS)


def _long_counts(counts: pd.DataFrame, groups: list) -> pd.DataFrame:
    """A wide sample-size table (one column per sample) as a count table ``groups, sample, n_units, value``."""
    long = counts.melt(id_vars=groups, var_name="sample", value_name="value")
    long["value"] = long["value"].astype("int64")
    long["n_units"] = long["value"]  # every count is a count of firms
    order = {g: i for i, g in enumerate(counts[groups[0]])}
    long = long.sort_values(groups[0], key=lambda s: s.map(order), kind="stable")
    return count_table(long, [*groups, "sample"])


def _names(columns: Sequence[str]) -> str:
    """Covariates by their reader-facing labels (:func:`reach.labels.covariate`), as 04 names its covariates.

    Examples
    --------
    >>> _names(["log_exports_lag1", "my_var"])
    'exports in the year before (log), my var'
    """
    from reach import labels

    return ", ".join(labels.covariate(c) for c in columns) or "none"


def _md_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for v in r:
            if isinstance(v, (float, np.floating)):
                cells.append("" if not np.isfinite(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ============================================================================ Match

@dataclass(frozen=True, repr=False)
class Match(ResultDisplay):
    """Result of :func:`match` (immutable).

    Attributes
    ----------
    treatment, covariates, exact, method, ratio, replace, caliper, ps_model, seed,
    distance, mahalanobis, discard, m_order, std_caliper, link
        The specification, as given.
    caliper_width : float or None
        The caliper in distance units actually applied (``caliper * sd(distance)``
        when ``std_caliper``).
    dropped_terms : tuple of (term, reason)
        Covariate columns left out of the propensity model (``constant``/``collinear``).
    ps_coef : pandas.Series
        Logistic-regression coefficients on the covariates' own scale (``ps_model="logit"``).
    units : pandas.DataFrame
        One row per complete-case input row (index = input index): ``treated``,
        ``distance``, ``discarded``, ``match_weight`` (``weights``: its deprecated alias, MatchIt's
        name), ``subclass``, ``stratum``, ``status``, ``reason``.
    pairs : pandas.DataFrame
        ``treated_index, control_index, subclass, round``: one row per matched pair.
    excluded : pandas.DataFrame
        Rows left out for missing values: ``treated`` (float, NaN if unknown), ``reason``.
    """

    treatment: str
    covariates: tuple
    exact: tuple
    method: str
    ratio: int
    replace: bool
    caliper: float | None
    ps_model: str
    seed: int
    distance: str | None
    mahalanobis: bool
    discard: str
    m_order: str
    std_caliper: bool
    link: str
    caliper_width: float | None
    dropped_terms: tuple
    ps_coef: pd.Series
    units: pd.DataFrame
    pairs: pd.DataFrame
    excluded: pd.DataFrame
    _data: pd.DataFrame = field(repr=False)
    _design: _Design = field(repr=False)
    mahvars: tuple = ()
    estimand: str = "ATT"
    reestimate: bool = False
    algorithm: str = "auto"
    cutpoints: Any = None
    grouping: Any = None
    moments: int = 1
    #: cem: the inner cut points used per numeric covariate ("exact" for categorical ones)
    bins: Mapping = field(default_factory=dict)

    # ---------------------------------------------------------------- tables
    def balance(self) -> pd.DataFrame:
        """Covariate balance before and after matching (cobalt ``bal.tab`` columns).

        Returns
        -------
        pandas.DataFrame
            Columns ``BALANCE_COLUMNS``: one row for ``distance`` (when a score
            exists) and one per covariate column (categoricals: one per level,
            named as MatchIt does, e.g. ``racewhite``). "Before" uses every
            complete-case unit (also discarded ones, as MatchIt's "All Data");
            "after" the matched units with their weights. ``smd_flag`` marks
            ``|SMD after| > 0.1``, ``var_ratio_flag`` a variance ratio after
            matching outside ``[0.5, 2]``.

        Notes
        -----
        .. math:: \\mathrm{SMD} = \\frac{\\bar x_T^w - \\bar x_C^w}{s_T},\\qquad
                  s_T = \\mathrm{sd}(x \\mid T=1)\\ \\text{(unmatched sample)}

        with :math:`s_T = \\sqrt{p_T(1-p_T)}` for binary covariates. When
        :math:`s_T = 0` the pooled SD :math:`\\sqrt{(s_T^2+s_C^2)/2}` is used.
        """
        X = _rows_of(self._design.balance, self.units.index)
        binary = dict(self._design.binary)
        if self.units["distance"].notna().all():
            X = pd.concat([self.units[["distance"]], X], axis=1)
            binary["distance"] = False
        return _balance_table(
            X, binary, self.units["treated"].to_numpy().astype(int), self.units[MATCH_WEIGHT].to_numpy(),
            focal=0 if self.estimand == "ATC" else 1,
        )

    def matched_data(self) -> pd.DataFrame:
        """Matched rows of the input with ``match_weight``, ``subclass`` and ``distance``.

        As MatchIt's ``match_data()``: one row per matched unit (with replacement a
        control appears once, its weight counting its uses). ``subclass`` is the
        pair/set id of treated units and, without replacement, of their controls;
        with replacement controls may belong to several sets and get ``<NA>``.
        """
        u = self.units[self.units[MATCH_WEIGHT] > 0]
        out = self._data.loc[u.index].copy()
        out["distance"] = u["distance"].to_numpy()
        out[MATCH_WEIGHT] = u[MATCH_WEIGHT].to_numpy()
        out["weights"] = out[MATCH_WEIGHT]  # deprecated alias (MatchIt's name), one release
        out["subclass"] = u["subclass"].to_numpy()
        return out

    def unmatched(self) -> pd.DataFrame:
        """Focal units (treated; controls for the ATC) without any match, with the reason
        (``index``, ``reason``)."""
        focal = self.estimand != "ATC"
        u = self.units[(self.units["treated"] == focal) & (self.units[MATCH_WEIGHT] == 0)]
        a = pd.DataFrame({"index": u.index, "reason": u["reason"].to_numpy()})
        e = self.excluded[self.excluded["treated"] == (1 if focal else 0)]
        b = pd.DataFrame({"index": e.index, "reason": e["reason"].to_numpy()})
        return pd.concat([a, b], ignore_index=True)

    def counts(self) -> pd.DataFrame:
        """Sample sizes as MatchIt's summary: per group all / excluded / discarded / matched / unmatched."""
        rows = []
        for g, flag in (("treated", True), ("control", False)):
            u = self.units[self.units["treated"] == flag]
            ex = int((self.excluded["treated"] == (1 if flag else 0)).sum())
            disc = int(u["discarded"].sum())
            matched = int((u[MATCH_WEIGHT] > 0).sum())
            rows.append({
                "group": g, "all": len(u) + ex, "excluded_missing": ex, "discarded": disc,
                "matched": matched, "unmatched": len(u) - disc - matched,
            })
        return pd.DataFrame(rows, columns=COUNT_COLUMNS)

    def tidy(self) -> pd.DataFrame:
        """The sample sizes of :meth:`counts` as a count table, columns :data:`COUNT_TIDY_COLUMNS`."""
        return _long_counts(self.counts(), ["group"])

    def ps_summary(self) -> pd.DataFrame:
        """Propensity-model coefficients (logit only): ``term, estimate``."""
        return pd.DataFrame({"term": self.ps_coef.index, "estimate": self.ps_coef.to_numpy()})

    def _spec(self) -> str:
        # shown in rendered notebooks: the covariates by their labels, not their column names
        ex = f"exact on {_names(self.exact)}" if self.exact else "no exact strata"
        if self.method == "cem":
            cut = "Sturges bins" if self.cutpoints in (None, "sturges") else f"cut points {self.cutpoints!r}"
            return (f"coarsened exact matching on {_names(self.covariates)} ({cut}; categorical covariates exactly); "
                    f"{ex}; MatchIt's ATT stratum weights")
        if self.method == "ebal":
            mom = "means" if self.moments == 1 else "means and variances"
            return (f"entropy balancing: comparison-firm weights reproducing the users' {mom} of "
                    f"{_names(self.covariates)}; {ex}; WeightIt's ATT weights")
        rep = "with" if self.replace else "without"
        dist = (f"user score {self.distance!r}" if self.distance else
                f"propensity score ({self.ps_model}{', linear predictor' if self.link == 'linear.logit' else ''})")
        mah = ((f"; Mahalanobis distance on {_names(self.mahvars)}" if self.mahvars else "; Mahalanobis distance")
               + (" within the caliper" if self.caliper_width is not None else "")) if self.mahalanobis else ""
        cal = (f"caliper {self.caliper} {'SD' if self.std_caliper else 'units'} of the distance (= {self.caliper_width:.4g})"
               if self.caliper_width is not None else "no caliper")
        if self.caliper_width is not None:
            from reach.publish import register_numbers

            register_numbers("text", [self.caliper_width])  # printed in the specification line
        return (f"{self.ratio}:1 nearest-neighbour matching {rep} replacement on the {dist}{mah}; "
                f"{cal}; {ex}; order {self.m_order}; discard {self.discard}"
                + ("; score re-estimated after discarding" if self.reestimate else "")
                + ("; estimand ATC (controls matched to users)" if self.estimand == "ATC" else ""))

    def summary(self) -> str:
        """Specification, sample sizes, reasons for unmatched treated units, balance."""
        c = self.counts().set_index("group")
        lines = ["Matching: " + self._spec(), ""]
        lines.append(c.to_string())
        un = self.unmatched()
        if len(un):
            lines.append("")
            lines.append("Unmatched treated units by reason:")
            for r, n in un["reason"].value_counts().items():
                lines.append(f"  {r}: {n}")
        if self.dropped_terms:
            lines.append("")
            lines.append("Dropped from the propensity model: " + ", ".join(f"{t} ({r})" for t, r in self.dropped_terms))
        b = self.balance()
        lines.append("")
        lines.append(f"max |SMD| before {np.nanmax(np.abs(b['smd_before'])):.3f}, after {np.nanmax(np.abs(b['smd_after'])):.3f}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return ("**Matching:** " + self._spec() + "\n\n" + _md_table(self.counts()))

    def __repr__(self) -> str:  # one line: summary() also computes the balance table
        c = self.counts().set_index("group")
        return (f"Match(treated matched {c.loc['treated', 'matched']}/{c.loc['treated', 'all']}, "
                f"controls matched {c.loc['control', 'matched']}/{c.loc['control', 'all']})")


# ============================================================================ matching core

def _insert_pos(cs: np.ndarray, cd: np.ndarray, qs: np.ndarray, qd: np.ndarray) -> np.ndarray:
    """For sorted controls (cs, cd) by (stratum, distance): number of controls before each query (qs, qd)."""
    s = np.concatenate([cs, qs])
    d = np.concatenate([cd, qd])
    tie = np.concatenate([np.ones(cs.size, dtype=np.int8), np.zeros(qs.size, dtype=np.int8)])
    order = np.lexsort((tie, d, s))
    is_c = tie[order] == 1
    before = np.cumsum(is_c) - is_c
    out = np.empty(s.size, dtype=np.int64)
    out[order] = before
    return out[cs.size:]


def _order_treated(d: np.ndarray, m_order: str, seed: int) -> np.ndarray:
    """Positions (into the treated arrays) in matching order; ties keep data order (R's stable order)."""
    n = d.size
    if m_order == "largest":
        return np.lexsort((np.arange(n), -d))
    if m_order == "smallest":
        return np.lexsort((np.arange(n), d))
    if m_order == "random":
        return np.random.default_rng(seed).permutation(n)
    return np.arange(n)


def _find_root(ptr: list, j: int) -> int:
    """Root of ``j`` in a union-find pointer list, compressing the path on the way.

    ``ptr[j] == j`` marks an available slot; a used one points towards its
    neighbour, so the root is the nearest available slot in that direction.
    Plain lists, not arrays: this runs once per treated unit and numpy scalar
    indexing would dominate its cost.
    """
    root = j
    while ptr[root] != root:
        root = ptr[root]
    while ptr[j] != root:
        ptr[j], j = root, ptr[j]
    return root


def _nn_1d(
    d: np.ndarray, treat: np.ndarray, stratum: np.ndarray, eligible: np.ndarray,
    order_t: np.ndarray, ratio: int, replace: bool, caliper: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy nearest-neighbour matching on a scalar distance within strata.

    Parameters are arrays over units (rows). ``eligible`` = not discarded.
    ``order_t``: unit positions of treated units in visiting order.

    Returns arrays (treated_pos, control_pos, round) of the pairs.
    """
    n = d.size
    row = np.arange(n)
    # one global order by (stratum, distance, row): MatchIt's stable sort.list within a stratum
    key = np.lexsort((row, d, stratum))
    is_c = (~treat) & eligible
    ctrl_sorted = key[is_c[key]]                       # control unit positions, sorted
    # insertion position of every unit among the sorted controls = controls before it in `key`
    rank = np.empty(n, dtype=np.int64)
    rank[key] = np.arange(n)
    c_before = np.cumsum(is_c[key]) - is_c[key]        # controls strictly before each key position
    p_all = c_before[rank]
    cs = stratum[ctrl_sorted]
    cd = d[ctrl_sorted]
    # block of the treated unit's stratum among the sorted controls (only treated are queried)
    lo_t = np.searchsorted(cs, stratum[order_t], side="left")
    hi_t = np.searchsorted(cs, stratum[order_t], side="right")
    p_t = p_all[order_t]
    cal = np.inf if caliper is None else float(caliper)
    if replace:
        return _nn_1d_replace(d, order_t, ctrl_sorted, cd, lo_t, hi_t, p_t, ratio, cal)
    return _nn_1d_greedy(d, order_t, ctrl_sorted, cd, lo_t, hi_t, p_t, ratio, cal)


def _nn_1d_replace(d, order_t, ctrl_sorted, cd, lo_t, hi_t, p_t, ratio: int, cal: float):
    """With replacement, vectorised: each treated unit takes its ``ratio`` nearest controls, independently."""
    tp_out: list = []
    cp_out: list = []
    rd_out: list = []
    t = order_t
    dt, lo, hi = d[t], lo_t, hi_t
    left = p_t - 1
    right = p_t.copy()
    alive = np.ones(t.size, dtype=bool)
    for r in range(ratio):
        okl = alive & (left >= lo)
        okr = alive & (right < hi)
        dl = np.where(okl, np.abs(dt - cd[np.clip(left, 0, max(cd.size - 1, 0))]) if cd.size else np.inf, np.inf)
        dr = np.where(okr, np.abs(cd[np.clip(right, 0, max(cd.size - 1, 0))] - dt) if cd.size else np.inf, np.inf)
        dl = np.where(dl > cal, np.inf, dl)
        dr = np.where(dr > cal, np.inf, dr)
        take_l = np.isfinite(dl) & (dl <= dr)
        take_r = np.isfinite(dr) & ~take_l
        got = take_l | take_r
        cpos = np.where(take_l, left, right)
        tp_out.append(t[got])
        cp_out.append(ctrl_sorted[cpos[got]])
        rd_out.append(np.full(int(got.sum()), r))
        left = np.where(take_l, left - 1, left)
        right = np.where(take_r, right + 1, right)
        alive = got
    if not tp_out:
        e = np.empty(0, dtype=np.int64)
        return e, e, e
    return np.concatenate(tp_out), np.concatenate(cp_out), np.concatenate(rd_out)


def _nn_1d_greedy(d, order_t, ctrl_sorted, cd, lo_t, hi_t, p_t, ratio: int, cal: float):
    """Without replacement, in visiting order: union-find "next available" pointers on the sorted controls."""
    m = ctrl_sorted.size
    nxt = list(range(m + 1))          # nxt[j] == j: j available (m is a sentinel)
    prv = list(range(m + 1))          # prv index shifted by one: prv[j+1] for control j; 0 is a sentinel

    cd_l = cd.tolist()
    d_l = d[order_t].tolist()
    p_l = p_t.tolist()
    lo_l = lo_t.tolist()
    hi_l = hi_t.tolist()
    tp: list[int] = []
    cp: list[int] = []
    rd: list[int] = []
    order_l = order_t.tolist()
    active = list(range(len(order_l)))   # positions into order_t
    for r in range(ratio):
        still = []
        for ti in active:
            p, lo, hi, dti = p_l[ti], lo_l[ti], hi_l[ti], d_l[ti]
            k_r = _find_root(nxt, p) if p < m else m
            k_l = _find_root(prv, p) - 1    # shifted: control p-1 has index p
            okr = k_r < hi and abs(cd_l[k_r] - dti) <= cal
            okl = k_l >= lo and abs(dti - cd_l[k_l]) <= cal
            if okl and okr:
                k = k_l if abs(cd_l[k_l] - dti) <= abs(cd_l[k_r] - dti) else k_r
            elif okl:
                k = k_l
            elif okr:
                k = k_r
            else:
                continue
            tp.append(ti)
            cp.append(k)
            rd.append(r)
            nxt[k] = k + 1
            prv[k + 1] = k
            still.append(ti)
        active = still
    tp_a = order_t[np.asarray(tp, dtype=np.int64)] if tp else np.empty(0, dtype=np.int64)
    cp_a = ctrl_sorted[np.asarray(cp, dtype=np.int64)] if cp else np.empty(0, dtype=np.int64)
    return tp_a, cp_a, np.asarray(rd, dtype=np.int64)


def _pick(cand: np.ndarray, dist: np.ndarray, pos: np.ndarray, p_t: int) -> int:
    """Position in ``cand`` of the smallest distance, exact ties broken as MatchIt 4.7's scan.

    MatchIt (``find_control_mahcovs``) visits units outward from the treated unit along the
    sort order of the first Mahalanobis coordinate (``pos``; ties in data order), alternating
    left then right, and a control at least as close as the current best *replaces* it: of
    exactly tied controls the one visited last wins, i.e. the largest offset
    :math:`|pos_c - pos_t|`, and on the right side at equal offset.
    """
    dmin = dist.min()
    tied = np.flatnonzero(dist == dmin)
    if tied.size == 1:
        return int(tied[0])
    pc = pos[cand[tied]]
    key = np.abs(pc - p_t) * 2 + (pc > p_t)
    return int(tied[np.argmax(key)])


def _unique_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(X, axis=0, return_index=True, return_inverse=True)[1:]``: the first row of each distinct
    row in lexicographic order, and each row's group.

    One stable ``lexsort`` over the columns and a comparison of neighbours: ``np.unique`` over rows sorts
    them as structured records, ~3x slower on a register cohort (1.4M rows, ~4 s each).
    """
    n = X.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.lexsort(X.T[::-1])  # the first column the primary key; equal rows keep their order
    Xs = X[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = (Xs[1:] != Xs[:-1]).any(axis=1)
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return order[new], inv


class _TieGroups:
    """The available controls of one stratum, collapsed into tie groups: units with identical
    Mahalanobis coordinates *and* score are one point of the search.

    Register data hold groups of hundreds of thousands of identical covariate vectors (every
    non-exporter of one size class and sector). Searched unit by unit, each member is a tie at
    distance 0 that must be enumerated for MatchIt's tie rule. Within a group every member is
    equally far from a treated unit and equally inside or outside its caliper, so the rule
    (:func:`_pick`: the largest :math:`|pos_c - pos_t|`, right side first) only needs the
    group's usable member with the smallest or the largest ``pos``. Members are kept sorted by
    ``pos``; without replacement a pick is always at one end of the available members, so they
    stay one contiguous range ``lo[g]..hi[g]``.
    """

    def __init__(self, c: np.ndarray, M: np.ndarray, d: np.ndarray, pos: np.ndarray, gid: np.ndarray):
        first, inv = _unique_rows(np.column_stack([M[c], d[c]]))
        o = np.lexsort((pos[c], inv))
        self.units = c[o]                                  # members, by group then pos
        self.group = inv[o]
        gid[self.units] = self.group                       # a unit's group, for the caller
        self.mem = self.units.tolist()
        self.rep = c[first]                                # a member of each group (its coordinates)
        self.size = np.bincount(inv, minlength=first.size)
        self.first = (np.cumsum(self.size) - self.size).astype(np.int64)
        self.lo = self.first.copy()                        # available members without replacement
        self.hi = self.first + self.size - 1
        self.d = d[self.rep]
        self.by_score = np.argsort(self.d, kind="stable")  # the caliper window, over groups
        self.ds = self.d[self.by_score]
        self.n = int(first.size)
        self.tree = None
        self.near: dict | None = None                      # first neighbours of the treated units

    def window(self, dt: float, cal: float) -> np.ndarray:
        """Groups whose score lies within ``cal`` of ``dt`` (all groups without a caliper)."""
        if not np.isfinite(cal):
            return self.by_score
        a = int(np.searchsorted(self.ds, dt - cal, side="left"))
        b = int(np.searchsorted(self.ds, dt + cal, side="right"))
        return self.by_score[a:b]

    def ends(self, g: int, replace: bool, taken: list) -> tuple[int, int]:
        """Slots (into ``units``) of the group's first and last usable member by ``pos``."""
        if not replace:
            return int(self.lo[g]), int(self.hi[g])
        a, b = int(self.first[g]), int(self.first[g] + self.size[g] - 1)
        while self.mem[a] in taken:
            a += 1
        while self.mem[b] in taken:
            b -= 1
        return a, b

    def take(self, slot: int) -> None:
        """The member in ``slot`` is used (without replacement); it is an end of its range."""
        g = self.group[slot]
        if slot == self.lo[g]:
            self.lo[g] += 1
        else:
            self.hi[g] -= 1


def _nn_mahalanobis(
    M: np.ndarray, d: np.ndarray, treat: np.ndarray, stratum: np.ndarray, eligible: np.ndarray,
    order_t: np.ndarray, ratio: int, replace: bool, caliper: float | None, algorithm: str = "auto",
):
    """Greedy nearest neighbour on the Mahalanobis distance (rows of ``M`` already whitened),
    candidates restricted to the exact stratum and the score caliper (MatchIt ``mahvars``).

    Every treated unit (visited in ``order_t``, ``ratio`` rounds) takes the available control
    with the smallest squared distance :math:`\\lVert M_i - M_j \\rVert^2`; exactly tied
    controls (e.g. identical covariates) are broken as MatchIt 4.7 does (:func:`_pick`), from
    the sort order of the first column of ``M`` with ties in data order.

    Controls with identical coordinates and score are searched as one point
    (:class:`_TieGroups`): a group of 300,000 identical firms costs one distance.
    ``algorithm="brute"`` computes the distance to every group of the stratum inside the
    caliper window of the score (quadratic when the caliper is wide). ``"kdtree"`` queries a
    k-d tree of the stratum's groups for the ``k`` nearest (``k`` grows fourfold while none is
    certainly the nearest usable one), then takes *every* group within the best usable
    distance and chooses among those exactly as the brute path does, so both return the same
    pairs. ``"auto"`` uses the tree only where the caliper window holds more than a few
    hundred groups.
    """
    from scipy.spatial import cKDTree

    n = d.size
    pos = np.empty(n, dtype=np.int64)
    pos[np.argsort(M[:, 0], kind="stable")] = np.arange(n)
    is_c = (~treat) & eligible
    cal = np.inf if caliper is None else float(caliper)
    gid = np.full(n, -1, dtype=np.int64)
    strata = {int(s): _TieGroups(np.flatnonzero(is_c & (stratum == s)), M, d, pos, gid)
              for s in np.unique(stratum[order_t])}
    taken: dict[int, list] = {}
    K0, small = 16, 256  # first neighbours asked of the tree; a window under `small` groups: brute force

    def usable(tg: _TieGroups, ti: int, G: np.ndarray) -> np.ndarray:
        good = np.abs(tg.d[G] - d[ti]) <= cal
        if not replace:
            return good & (tg.lo[G] <= tg.hi[G])
        tk = taken.get(ti)
        if tk:  # with replacement a group is spent for ti only once ti has taken all its members
            good &= tg.size[G] > (G[:, None] == gid[tk][None, :]).sum(axis=1)
        return good

    def choose(tg: _TieGroups, ti: int, G: np.ndarray) -> int:
        """Slot of the chosen member among the usable groups ``G`` (none: -1)."""
        if G.size == 0:
            return -1
        dist = np.sum((M[tg.rep[G]] - M[ti]) ** 2, axis=1)
        tk = taken.get(ti, [])
        slots = np.array([e for g in G[dist == dist.min()] for e in tg.ends(int(g), replace, tk)])
        return int(slots[_pick(tg.units[slots], np.zeros(slots.size), pos, int(pos[ti]))])

    def brute(tg: _TieGroups, ti: int, G: np.ndarray) -> int:
        return choose(tg, ti, G[usable(tg, ti, G)])

    def nearest(tg: _TieGroups, ti: int, dd: np.ndarray, G: np.ndarray) -> int | None:
        """Choice among the ``G`` nearest groups (distances ``dd``), or None if farther groups could win."""
        good = usable(tg, ti, G)
        if good.any():
            r2 = np.sum((M[tg.rep[G[good]]] - M[ti]) ** 2, axis=1).min()
            bound = math.sqrt(r2) * (1 + 1e-9) + 1e-12
            # every group at least as close as the best usable one is among those returned
            if G.size >= tg.n or dd[-1] > bound:
                return choose(tg, ti, G[good & (dd <= bound)])
        elif G.size >= tg.n:
            return -1
        return None

    def kdtree(tg: _TieGroups, ti: int, nwin: int) -> int:
        if tg.tree is None:
            tg.tree = cKDTree(M[tg.rep])
        if tg.near is None:  # the K0 nearest groups of every treated unit of the stratum, in one query
            t_in = order_t[stratum[order_t] == stratum[ti]]
            kk = min(K0, tg.n)
            dd, ii = tg.tree.query(M[t_in], k=kk)
            tg.near = dict(zip(t_in.tolist(), zip(dd.reshape(len(t_in), kk), ii.reshape(len(t_in), kk))))
        dd, ii = tg.near[ti]
        k = K0
        while True:
            got = nearest(tg, ti, dd, ii)
            if got is not None:
                return got
            k *= 4
            if k >= nwin:  # the tree would look at more groups than the caliper window holds
                return brute(tg, ti, tg.window(d[ti], cal))
            dd, ii = tg.tree.query(M[ti], k=min(k, tg.n))

    tp: list[int] = []
    cp: list[int] = []
    rd: list[int] = []
    active = order_t.tolist()
    for r in range(ratio):
        still = []
        for ti in active:
            tg = strata[int(stratum[ti])]
            win = tg.window(d[ti], cal)
            if win.size == 0:
                continue
            if algorithm == "brute" or (algorithm == "auto" and win.size <= small):
                slot = brute(tg, ti, win)
            else:
                slot = kdtree(tg, ti, win.size)
            if slot < 0:
                continue
            k = int(tg.units[slot])
            tp.append(ti)
            cp.append(k)
            rd.append(r)
            taken.setdefault(ti, []).append(k)
            if not replace:
                tg.take(slot)
            still.append(ti)
        active = still
    return np.asarray(tp, dtype=np.int64), np.asarray(cp, dtype=np.int64), np.asarray(rd, dtype=np.int64)


def _pivoted_cholesky(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper ``R`` and pivot ``piv`` with ``R'R = A[piv][:, piv]`` (LAPACK ``dpstrf``'s rule:
    at each step the largest remaining diagonal, first on ties), as R's ``chol(pivot = TRUE)``."""
    A = np.array(A, dtype="float64")
    k = A.shape[0]
    piv = np.arange(k)
    R = np.zeros_like(A)
    for j in range(k):
        rem = np.array([A[piv[i], piv[i]] - np.sum(R[:j, i] ** 2) for i in range(j, k)])
        q = j + int(np.argmax(rem))
        if rem[q - j] <= 0:
            break
        piv[[j, q]] = piv[[q, j]]
        R[:, [j, q]] = R[:, [q, j]]
        R[j, j] = math.sqrt(rem[q - j])
        for i in range(j + 1, k):
            R[j, i] = (A[piv[j], piv[i]] - np.sum(R[:j, j] * R[:j, i])) / R[j, j]
    return R, piv


def _mahalanobis_coords(Z: np.ndarray, t: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Coordinates whose squared Euclidean distances are Mahalanobis distances, as MatchIt 4.7
    (``transform_covariates``): columns without variance dropped, scaled (all units), the pooled
    within-group covariance of the units *not discarded* (each column centred on its group mean),
    its inverse (a generalized inverse when near-singular) factored by a pivoted Cholesky.
    """
    Z = np.asarray(Z, dtype="float64")
    var_ok = np.ptp(Z, axis=0) >= math.sqrt(np.finfo(float).eps) if len(Z) else np.zeros(Z.shape[1], bool)
    Z = Z[:, var_ok]
    if Z.shape[1] == 0:
        raise ValueError("Mahalanobis matching: every matching variable has one value")
    sd = Z.std(axis=0, ddof=1)
    X = (Z - Z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    C = X[eligible].copy()
    te = t[eligible]
    for g in (True, False):
        if (te == g).any():
            C[te == g] -= C[te == g].mean(axis=0)
    S = C.T @ C / max(len(C) - 2, 1)
    inv = None
    if np.linalg.det(S) > 1e-8:
        try:
            inv = np.linalg.inv(S)
        except np.linalg.LinAlgError:
            inv = None
    if inv is None:
        U, dd, Vt = np.linalg.svd(S)
        keep = dd > max(1e-8 * dd[0], 0)
        inv = Vt[keep].T @ np.diag(1 / dd[keep]) @ U[:, keep].T
    R, piv = _pivoted_cholesky(inv)
    return X @ R[:, np.argsort(piv)].T


# ============================================================================ coarsened exact matching

def _coarsen(data: pd.DataFrame, covariates: Sequence[str], cutpoints: Any, table: str,
             grouping: Mapping | None = None):
    """Bin codes per covariate (MatchIt's ``cem_matchit``); returns (codes, dropped, bins).

    ``grouping``: covariate -> list of lists of values that share one bin (MatchIt's
    ``grouping``); such a covariate is matched on its groups, never cut numerically.
    """
    grouping = dict(grouping or {})
    unknown = [k for k in grouping if k not in covariates]
    if unknown:
        raise ValueError(f"grouping: {unknown} are not covariates; covariates: {list(covariates)}")
    if cutpoints is None or isinstance(cutpoints, (str, int, np.integer)):
        default, per = ("sturges" if cutpoints is None else cutpoints), {}
    elif isinstance(cutpoints, Mapping):
        default, per = "sturges", dict(cutpoints)
        unknown = [k for k in per if k not in covariates]
        if unknown:
            raise ValueError(f"cutpoints: {unknown} are not covariates; covariates: {list(covariates)}")
    else:
        raise ValueError("cutpoints must be None, 'sturges', a number of bins, or a mapping "
                         f"covariate -> ('sturges' | number of bins | list of cut points); got {cutpoints!r}")
    codes: dict[str, np.ndarray] = {}
    dropped: list = []
    bins: dict[str, Any] = {}
    n = len(data)
    for c in covariates:
        s = data[c]
        if c in grouping:
            groups = grouping[c]
            if not isinstance(groups, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in groups):
                raise ValueError(f"grouping for {c!r} must be a list of lists of values; got {groups!r}")
            sv = s.astype(str)
            lab = sv.copy()
            for g in groups:
                lab[sv.isin([str(v) for v in g])] = "\x00" + str(g[0])
            codes[c] = pd.factorize(lab, sort=True)[0]
            bins[c] = "grouped"
            continue
        if _is_categorical(s):
            if c in per:
                raise ValueError(f"cutpoints: {c!r} is categorical (matched exactly); give cut points only "
                                 "for numeric covariates")
            codes[c] = pd.factorize(s.astype(str), sort=True)[0]
            bins[c] = "exact"
            continue
        x = s.to_numpy(dtype="float64")
        if n == 0 or np.ptp(x) == 0:
            dropped.append((c, "constant"))
            continue
        spec = per.get(c, default)
        if isinstance(spec, str):
            if spec != "sturges":
                raise ValueError(f"cutpoints for {c!r} must be 'sturges', a number of bins or a list of "
                                 f"cut points; got {spec!r}")
            k = int(math.ceil(math.log2(n) + 1))  # R nclass.Sturges
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if spec < 1:
                raise ValueError(f"cutpoints for {c!r}: number of bins must be >= 1; got {spec!r}")
            k = int(spec)
        elif isinstance(spec, (list, tuple, np.ndarray)) and len(spec) and all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in spec):
            k = None
        else:
            raise ValueError(f"cutpoints for {c!r} must be 'sturges', a number of bins or a list of cut "
                             f"points; got {spec!r}")
        if k is None:
            interior = np.unique(np.asarray(spec, dtype="float64"))
        else:
            # k equal-width bins over the observed range, outer edges open (R: seq(min, max, length = k + 1))
            interior = np.linspace(x.min(), x.max(), k + 1)[1:-1]
        codes[c] = np.searchsorted(interior, x, side="right")  # R findInterval: [b_i, b_{i+1})
        bins[c] = interior
    return pd.DataFrame(codes, index=data.index), dropped, bins


# ============================================================================ entropy balancing

def _ebal_solve(C: np.ndarray, tol: float = 1e-11, maxit: int = 200) -> tuple[np.ndarray, float, bool]:
    """Entropy-balancing weights for rows of ``C`` (already centred on the target) by Newton's method.

    Minimises the convex dual :math:`f(\\lambda) = \\log \\sum_j \\exp(\\lambda' c_j)`; at its
    minimum the weights :math:`p_j \\propto \\exp(\\lambda' c_j)` give :math:`\\sum_j p_j c_j = 0`.
    Returns (weights summing to 1, largest |gradient|, converged).
    """
    k = C.shape[1]
    lam = np.zeros(k)

    def f(l):
        e = C @ l
        m = e.max()
        return m + math.log(np.exp(e - m).sum())

    fv = f(lam)
    g = np.zeros(k)
    for _ in range(maxit):
        e = C @ lam
        p = np.exp(e - e.max())
        p /= p.sum()
        g = p @ C
        if np.abs(g).max() < tol:
            return p, float(np.abs(g).max()), True
        H = (C * p[:, None]).T @ C - np.outer(g, g)
        try:
            step = np.linalg.solve(H + 1e-14 * np.eye(k), g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, g, rcond=None)[0]
        t = 1.0
        while t > 1e-12:
            new = lam - t * step
            fn = f(new)
            if fn <= fv - 1e-4 * t * float(g @ step) or fn < fv:
                break
            t /= 2
        else:
            break
        lam, fv = new, fn
    e = C @ lam
    p = np.exp(e - e.max())
    p /= p.sum()
    g = p @ C
    return p, float(np.abs(g).max()), bool(np.abs(g).max() < tol)


_SPEC_CHOICES = {"method": METHODS, "ps_model": PS_MODELS, "discard": DISCARD, "m_order": M_ORDERS,
                 "link": LINKS, "missing": MISSING, "algorithm": ALGORITHMS, "estimand": ESTIMANDS}
#: arguments of :func:`match` that only nearest-neighbour matching uses, with their defaults
_NEAREST_ONLY = {"ratio": 1, "replace": False, "caliper": None, "distance": None, "mahalanobis": False,
                 "mahvars": None, "discard": "none", "m_order": None, "reestimate": False}


def _check_spec(**spec: Any) -> None:
    """Validate the choices of :func:`match` given in ``spec`` (others are not looked at).

    :func:`match_cohorts` calls it before the cohort loop: there a bad value would
    otherwise surface as a per-cohort failure instead of an error.
    """
    for name, allowed in _SPEC_CHOICES.items():
        if name in spec and not (name == "m_order" and spec[name] is None):
            check_choice(name, spec[name], allowed)
    ratio = spec.get("ratio", 1)
    if not isinstance(ratio, (int, np.integer)) or isinstance(ratio, bool) or ratio < 1:
        raise ValueError(f"ratio must be a positive integer; got {ratio!r}")
    caliper = spec.get("caliper")
    if caliper is not None and (not isinstance(caliper, (int, float, np.floating, np.integer))
                                or isinstance(caliper, bool) or not caliper > 0):
        raise ValueError(f"caliper must be a positive number or None; got {caliper!r}")
    moments = spec.get("moments", 1)
    if moments not in (1, 2) or isinstance(moments, bool):
        raise ValueError(f"moments must be 1 (means) or 2 (means and variances); got {moments!r}")
    method = spec.get("method", "nearest")
    if method in ("cem", "ebal"):
        bad = {k: spec[k] for k, v in _NEAREST_ONLY.items() if k in spec and spec[k] != v
               and not (isinstance(v, bool) and spec[k] is False)}
        if bad:
            raise ValueError(f"method={method!r} does not use {sorted(bad)} (nearest-neighbour matching only); "
                             f"got {bad}. Leave them at their defaults {[_NEAREST_ONLY[k] for k in sorted(bad)]}")
    if spec.get("estimand", "ATT") != "ATT" and method != "nearest":
        raise ValueError(f"estimand={spec['estimand']!r} is available for method='nearest' only; got method={method!r}")
    for name in ("cutpoints", "grouping"):
        if method != "cem" and spec.get(name) is not None:
            raise ValueError(f"{name} is for method='cem' only; got method={method!r}")
    if method != "ebal" and spec.get("moments", 1) != 1:
        raise ValueError(f"moments is for method='ebal' only; got method={method!r}")


def _resolve_m_order(m_order: str | None, mahalanobis: bool, mahvars: Sequence[str], caliper: float | None,
                     discard: str, distance: str | None) -> str:
    """MatchIt's default order: "data" when the score plays no part in matching (its
    ``distance = "mahalanobis"``: Mahalanobis on the covariates, no caliper, no discard),
    otherwise "largest" (a propensity score is the distance, also with ``mahvars``)."""
    if m_order is not None:
        return m_order
    pure_mahalanobis = mahalanobis and not mahvars and caliper is None and discard == "none" and distance is None
    return "data" if pure_mahalanobis else "largest"


def match(
    df: pd.DataFrame,
    treatment: str,
    covariates: Sequence[str],
    exact: Sequence[str] | str | None = None,
    method: str = "nearest",
    ratio: int = 1,
    replace: bool = False,
    caliper: float | None = None,
    ps_model: str = "logit",
    seed: int = 0,
    distance: str | None = None,
    mahalanobis: bool = False,
    discard: str = "none",
    m_order: str | None = None,
    std_caliper: bool = True,
    link: str = "logit",
    missing: str = "exclude",
    table: str = "df",
    mahvars: Sequence[str] | str | None = None,
    reestimate: bool = False,
    estimand: str = "ATT",
    cutpoints: Any = None,
    grouping: Mapping | None = None,
    moments: int = 1,
    algorithm: str = "auto",
) -> Match:
    """Matching and weighting designs for the ATT, as R MatchIt (and WeightIt for ``"ebal"``).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per unit (index identifies rows; must be unique).
    treatment : str
        0/1 (or boolean) treatment column; 1 = treated (the focal group, ATT).
    covariates : sequence of str
        Covariates of the propensity model (nearest), of the coarsening (cem) or of the
        balance constraints (ebal), and of the balance table. Non-numeric columns are
        categorical (dummies, first sorted level as reference; exact in cem).
    exact : str or sequence of str, optional
        Columns whose combination defines strata within which units must match (ebal:
        balance is reached within each stratum).
    method : {"nearest", "cem", "ebal"}
        Greedy nearest-neighbour matching (MatchIt ``"nearest"``), coarsened exact
        matching (MatchIt ``"cem"``, Iacus, King & Porro 2012) or entropy balancing
        (WeightIt ``"ebal"``, Hainmueller 2012).
    ratio : int
        Controls per treated unit (k:1), matched in ``ratio`` rounds (nearest only).
    replace : bool
        Whether a control may be matched to several treated units (nearest only).
    caliper : float or None
        Maximum distance between matched units; ``None`` (MatchIt's default) for no
        caliper. In SDs of the distance when ``std_caliper`` (MatchIt's convention).
    ps_model : {"logit", "gbm"}
        Propensity model; ignored when ``distance`` names a score column.
    seed : int
        Seed for ``ps_model="gbm"`` and ``m_order="random"``; all else is deterministic.
    distance : str, optional
        Column with a user-given score used as the distance (no model is fitted).
    mahalanobis : bool
        Match on the Mahalanobis distance of all covariates (pooled within-group
        covariance of the units not discarded). With a caliper this is MatchIt's
        ``mahvars = covariates`` (Mahalanobis within a score caliper); without caliper or
        discard it is MatchIt's ``distance = "mahalanobis"``.
    discard : {"none", "both", "control", "treated"}
        Common-support rule on the score (MatchIt): drop units outside the range of
        the other group's scores before matching.
    m_order : {"largest", "smallest", "data", "random"} or None
        Order in which treated units choose their controls. ``None``: MatchIt's default,
        ``"data"`` for plain Mahalanobis matching (no caliper, no discard, no
        ``mahvars``), else ``"largest"``.
    std_caliper : bool
        Caliper in standard deviations of the distance (True) or in raw units.
    link : {"logit", "linear.logit"}
        Distance = propensity score (MatchIt default) or its logit.
    missing : {"exclude", "error"}
        Rows with missing treatment/covariates/exact values are excluded and counted
        (default), or raise ``ValueError``.
    table : str
        Name of the table, used in error messages.
    mahvars : str or sequence of str, optional
        Match on the Mahalanobis distance of *these* columns (MatchIt ``mahvars``), within
        the caliper of the propensity score estimated from ``covariates``.
    reestimate : bool
        Refit the propensity model on the units left after ``discard`` (MatchIt).
    estimand : {"ATT", "ATC"}
        nearest only: the focal group whose units each get matches (MatchIt's
        ``estimand``): the treated (ATT) or the controls (ATC, default order
        ``"smallest"``, balance standardised by the controls' SD).
    cutpoints : None, "sturges", int or mapping, optional
        cem only: bins per numeric covariate; ``None``/``"sturges"`` = Sturges' number of
        equal-width bins, an int = that many bins, a mapping covariate -> (``"sturges"``,
        number of bins or a list of cut points). Categorical covariates match exactly.
    grouping : mapping, optional
        cem only: covariate -> list of lists of values sharing a bin (MatchIt ``grouping``),
        e.g. ``{"race": [["white", "hispan"], ["black"]]}``.
    moments : {1, 2}
        ebal only: balance means (1) or means and variances (2) of numeric covariates.
    algorithm : {"auto", "kdtree", "brute"}
        Search for Mahalanobis neighbours; every choice gives the same pairs.

    Returns
    -------
    Match

    Notes
    -----
    *nearest*: with distance :math:`d_i` (score), greedy matching visits treated units
    in ``m_order`` and gives each the available control :math:`j` of its stratum
    minimising :math:`|d_i - d_j|` (or the Mahalanobis distance) subject to
    :math:`|d_i - d_j| \\le c\\,\\mathrm{sd}(d)`. Weights are MatchIt's ATT weights
    (module docstring).

    *cem*: numeric covariates are cut into bins (R's ``findInterval`` on
    :math:`k` equal-width bins over the range, Sturges: :math:`k = \\lceil \\log_2 n + 1\\rceil`),
    strata are the combinations of bins, categories and ``exact`` values; strata holding
    treated and control units are kept. Treated weight 1; control weight
    :math:`n_{T,s}/n_{C,s}` in stratum :math:`s`, rescaled so matched controls' weights
    average 1 (MatchIt's ``normalize = TRUE``).

    *ebal*: control weights :math:`w_j = n_T\\,e^{\\lambda' x_j}/\\sum_k e^{\\lambda' x_k}`
    with :math:`\\lambda` minimising the convex dual
    :math:`\\log\\sum_j e^{\\lambda'(x_j - \\bar x_T)}` (Newton's method), so that
    :math:`\\sum_j w_j x_j / n_T = \\bar x_T` exactly; they sum to :math:`n_T` as WeightIt's
    ATT weights. Treated weight 1.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=400)
    >>> df = pd.DataFrame({"x": x, "t": (rng.random(400) < 1 / (1 + np.exp(1.5 - x))).astype(int)})
    >>> m = match(df, "t", ["x"])
    >>> int(m.counts().set_index("group").loc["treated", "unmatched"])
    0
    >>> e = match(df, "t", ["x"], method="ebal")
    >>> b = e.balance().set_index("variable")
    >>> bool(abs(b.loc["x", "smd_after"]) < 1e-8)
    True
    """
    _check_spec(method=method, ps_model=ps_model, discard=discard, m_order=m_order, link=link,
                missing=missing, ratio=ratio, caliper=caliper, algorithm=algorithm, replace=replace,
                distance=distance, mahalanobis=mahalanobis, mahvars=mahvars, reestimate=reestimate,
                cutpoints=cutpoints, grouping=grouping, moments=moments, estimand=estimand)
    s = _match_sample(df, treatment, covariates, exact, mahvars, distance, missing, table)
    common = dict(treatment=treatment, covariates=tuple(s.covariates), exact=tuple(s.exact), method=method,
                  ps_model=ps_model, seed=seed, std_caliper=bool(std_caliper), link=link, excluded=s.excluded,
                  _data=df, _design=s.design)
    if method == "cem":
        return _match_cem(df[s.keep], s.idx, s.t, s.stratum, s.covariates, cutpoints, grouping, table, common)
    if method == "ebal":
        return _match_ebal(s.idx, s.t, s.stratum, s.Xm, s.design, moments, table, common)

    m_order_arg = m_order
    m_order = _resolve_m_order(m_order, mahalanobis, s.mahvars, caliper, discard, distance)
    if estimand == "ATC" and m_order_arg is None and m_order == "largest":
        m_order = "smallest"  # MatchIt: switch(estimand, ATC = "smallest", "largest")
    f = s.t if estimand == "ATT" else ~s.t  # focal group: the units that each get matches

    def score(rows: np.ndarray):
        return _distance(df, s.idx, s.t, s.Xm, rows, distance=distance, ps_model=ps_model, link=link,
                         seed=seed, table=table)

    dist, coef, dropped = score(np.ones(len(s.idx), dtype=bool))
    discarded = _discarded(dist, s.t, discard)
    eligible = ~discarded
    if reestimate and discarded.any() and not distance:
        # MatchIt's reestimate: the score of the units left is refitted on them alone
        dist, coef, dropped = score(eligible)
    cal_w = None
    if caliper is not None:
        cal_w = float(caliper) * (float(np.std(dist[eligible], ddof=1)) if std_caliper else 1.0)

    t_pos = np.flatnonzero(f & eligible)
    order_t = t_pos[_order_treated(dist[t_pos], m_order, seed)]
    if mahalanobis or s.mahvars:
        if not s.mahvars and not s.covariates:
            raise ValueError("mahalanobis=True needs covariates")
        Z = (s.mah_design if s.mahvars else s.Xm).to_numpy(dtype="float64")
        # MatchIt: the covariance comes from the units that remain after discarding
        M = _mahalanobis_coords(Z, s.t, eligible)
        tp, cp, rd = _nn_mahalanobis(M, dist, f, s.stratum, eligible, order_t, int(ratio), bool(replace), cal_w,
                                     algorithm)
    else:
        tp, cp, rd = _nn_1d(dist, f, s.stratum, eligible, order_t, int(ratio), bool(replace), cal_w)
    units, pairs = _nearest_units(s, f, dist, discarded, eligible, tp, cp, rd, cal_w, bool(replace))
    return Match(
        ratio=int(ratio), replace=bool(replace), caliper=caliper, distance=distance,
        mahalanobis=bool(mahalanobis or s.mahvars), discard=discard, m_order=m_order, caliper_width=cal_w,
        dropped_terms=tuple(dropped), ps_coef=coef, units=units, pairs=pairs, mahvars=tuple(s.mahvars),
        estimand=estimand,
        reestimate=bool(reestimate), algorithm=algorithm, **common,
    )


# ---------------------------------------------------------------------------- match's stages
# match() runs: _match_sample (validation, missing values, strata) -> _distance (propensity score
# or a given distance) and _discarded (common support) -> _nn_1d / _nn_mahalanobis (the greedy
# matching) -> _nearest_units (weights, subclasses, statuses and reasons: the result).

@dataclass(frozen=True)
class _Sample:
    """The units :func:`match` works on, after validation and the missing-value rule."""

    covariates: list
    exact: list
    mahvars: list
    design: _Design
    mah_design: pd.DataFrame | None
    excluded: pd.DataFrame
    idx: pd.Index
    t: np.ndarray
    Xm: pd.DataFrame
    stratum: np.ndarray
    keep: np.ndarray  # complete-case rows of the input (design, mah_design and Xm hold only these)


def _as_list(x: Sequence[str] | str | None) -> list:
    return [x] if isinstance(x, str) else list(x or [])


def _match_sample(df: pd.DataFrame, treatment: str, covariates, exact, mahvars, distance: str | None,
                  missing: str, table: str) -> _Sample:
    """Checks the columns, applies the missing-value rule (counted with reasons) and numbers the exact strata."""
    covariates, exact_l, mahvars_l = _as_list(covariates), _as_list(exact), _as_list(mahvars)
    if not covariates and distance is None:
        raise ValueError("covariates: give at least one covariate (or a distance column)")
    need = [treatment, *covariates, *exact_l, *[v for v in mahvars_l if v not in covariates]] + (
        [distance] if distance else [])
    require_columns(df, need, table)
    if not df.index.is_unique:
        raise ValueError(f"{table}: the index must be unique (one row per unit)")

    tr = _treatment_vector(df[treatment], table, treatment)
    design = _design(df, covariates)
    mah_design = _design(df, mahvars_l).model if mahvars_l else None
    check_cols = list(dict.fromkeys([*covariates, *exact_l, *mahvars_l] + ([distance] if distance else [])))
    na = _missing_rows(df, tr, design, mah_design, check_cols, distance)
    if na.any() and missing == "error":
        bad_cols = [c for c in check_cols if df[c].isna().any()]
        raise ValueError(
            f"{table}: {int(na.sum())} row(s) with missing values in {bad_cols or [treatment]}, e.g.:\n"
            + examples(df, na, [treatment, *bad_cols][:8])
        )
    miss_reason = np.full(len(df), "", dtype=object)
    if na.any():
        # one reason per pattern of missing columns (a few patterns over the ~400k incomplete firms of a
        # register cohort; a Python loop over the rows took ~10 s per cohort)
        rows = np.flatnonzero(na)
        isna = df[check_cols].iloc[rows].isna().to_numpy()
        first, which = _unique_rows(isna)
        texts = np.array([f"{R_MISSING} in {', '.join(c for c, m in zip(check_cols, pat) if m) if pat.any() else treatment}"
                          for pat in isna[first]], dtype=object)
        miss_reason[rows] = texts[which]
    excluded = pd.DataFrame({"treated": tr[na], "reason": miss_reason[na]}, index=df.index[na])

    keep = ~na
    idx = df.index[keep]
    t = tr[keep].astype(bool)
    if t.sum() == 0:
        raise ValueError(f"{table}: no treated units ({treatment} == 1) with complete data")
    if (~t).sum() == 0:
        raise ValueError(f"{table}: no control units ({treatment} == 0) with complete data")
    if exact_l:
        # vectorised stratum code: one group number per combination (sorted, so deterministic)
        stratum = df.loc[keep, exact_l].groupby(exact_l, sort=True, dropna=False, observed=True).ngroup().to_numpy(dtype=np.int64)
    else:
        stratum = np.zeros(len(idx), dtype=np.int64)
    # the complete-case rows by position (the index is unique, so the same rows as .loc[idx]): looking up
    # ~1.5M text ids per cohort took seconds per frame at register scale
    design = _Design(design.model[keep], design.balance[keep], design.binary)
    return _Sample(covariates, exact_l, mahvars_l, design, None if mah_design is None else mah_design[keep], excluded,
                   idx, t, design.model, stratum, keep)


def _missing_rows(df, tr, design: _Design, mah_design, check_cols: list, distance: str | None) -> np.ndarray:
    """Rows with a missing treatment, covariate, stratum or distance, or a non-finite model column."""
    na = pd.isna(tr) | df[check_cols].isna().any(axis=1).to_numpy()
    if distance:
        dv = pd.to_numeric(df[distance], errors="coerce").to_numpy(dtype="float64")
        na |= ~np.isfinite(dv)
    na |= ~np.isfinite(design.model.to_numpy(dtype="float64")).all(axis=1) if design.model.shape[1] else False
    if mah_design is not None and mah_design.shape[1]:
        na |= ~np.isfinite(mah_design.to_numpy(dtype="float64")).all(axis=1)
    return na


def _distance(df, idx, t, Xm, rows: np.ndarray, *, distance, ps_model, link, seed, table):
    """Distance for all units from a model fitted on ``rows``: (dist, coef, dropped)."""
    if distance:
        return pd.to_numeric(df.loc[idx, distance]).to_numpy(dtype="float64"), pd.Series(dtype="float64"), []
    Xa = Xm.to_numpy(dtype="float64")
    tt = t[rows]
    if ps_model == "gbm":
        return _gbm_score(Xa, rows, tt, link, seed), pd.Series(dtype="float64"), []
    X, names, drop = _reduce_rank(Xa[rows], list(Xm.columns))
    sep = _separating(Xm.iloc[np.flatnonzero(rows)][names], tt.astype(int)) if names else []
    eta, b, conv = _fit_logit(X, tt.astype(float))
    pt, pc = eta[tt], eta[~tt]
    if sep or (pt.min() > pc.max()) or (pt.max() < pc.min()):
        raise ValueError(
            f"{table}: perfect separation: the propensity model separates treated and controls completely"
            + (f"; covariate(s) that alone separate them: {sep}" if sep else "")
            + ". Drop or coarsen these covariates, or use them as exact strata."
        )
    if not conv:
        raise ValueError(f"{table}: the logistic propensity model did not converge in 25 IRLS iterations "
                         "(quasi-separation?); check covariates " + str(names))
    cf = pd.Series(b, index=["(Intercept)", *names])
    eta_all = b[0] + Xm[names].to_numpy(dtype="float64") @ b[1:] if names else np.full(len(idx), b[0])
    if rows.all():
        eta_all = eta  # bit-identical to the fit itself
    return (eta_all if link == "linear.logit" else 1.0 / (1.0 + np.exp(-eta_all))), cf, drop


def _gbm_score(Xa: np.ndarray, rows: np.ndarray, tt: np.ndarray, link: str, seed: int) -> np.ndarray:
    """Gradient-boosted propensity score (scikit-learn), on the probability or the logit scale."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from threadpoolctl import threadpool_limits

    clf = HistGradientBoostingClassifier(random_state=seed)
    # OpenMP threads busy-wait; on small samples on a shared 2-core machine that costs
    # seconds per fit for no gain, so small fits run single-threaded
    with threadpool_limits(1 if len(Xa) < 100_000 else None):
        clf.fit(Xa[rows], tt.astype(int))
        p = clf.predict_proba(Xa)[:, 1]
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p)) if link == "linear.logit" else p


def _discarded(dist: np.ndarray, t: np.ndarray, discard: str) -> np.ndarray:
    """MatchIt's ``discard``: units outside the other group's range of the distance."""
    discarded = np.zeros(len(dist), dtype=bool)
    if discard != "none":
        dt_, dc_ = dist[t], dist[~t]
        if discard in ("both", "control"):
            discarded |= (~t) & ((dist < dt_.min()) | (dist > dt_.max()))
        if discard in ("both", "treated"):
            discarded |= t & ((dist < dc_.min()) | (dist > dc_.max()))
    return discarded


def _nearest_weights(tp: np.ndarray, cp: np.ndarray, n: int, replace: bool):
    """MatchIt's ``get_weights_from_mm`` (ATT) and subclasses: (weights, subclass, matches per focal unit)."""
    w = np.zeros(n)
    k_t = np.bincount(tp, minlength=n).astype(float)
    w[k_t > 0] = 1.0
    if cp.size:
        contrib = 1.0 / k_t[tp]
        wc = np.bincount(cp, weights=contrib, minlength=n)
        n_c = int((wc > 0).sum())
        w = np.where(wc > 0, wc * n_c / wc.sum(), w)
    # subclass: treated matched units numbered in data order (MatchIt)
    sub = np.full(n, -1, dtype=np.int64)
    mt = np.flatnonzero(k_t > 0)
    sub[mt] = np.arange(1, mt.size + 1)
    if not replace and cp.size:
        sub[cp] = sub[tp]
    return w, sub, k_t


def _unmatched_reasons(un_t: np.ndarray, f, eligible, stratum, dist, cal_w) -> np.ndarray:
    """Why each unmatched focal unit found no control: no control in its stratum, none within the caliper, or all used."""
    c_el = np.flatnonzero((~f) & eligible)
    ck = np.lexsort((dist[c_el], stratum[c_el]))
    cs, cdd = stratum[c_el][ck], dist[c_el][ck]
    lo = np.searchsorted(cs, stratum[un_t], side="left")
    hi = np.searchsorted(cs, stratum[un_t], side="right")
    none = hi <= lo
    # distance to the nearest control of the stratum, ignoring use
    pos = _insert_pos(cs, cdd, stratum[un_t], dist[un_t])
    if cdd.size:
        left = np.where(pos - 1 >= lo, np.abs(dist[un_t] - cdd[np.clip(pos - 1, 0, cdd.size - 1)]), np.inf)
        right = np.where(pos < hi, np.abs(cdd[np.clip(pos, 0, cdd.size - 1)] - dist[un_t]), np.inf)
        near = np.minimum(left, right)
    else:
        near = np.full(un_t.size, np.inf)
    return np.where(none, R_NO_STRATUM, np.where((cal_w is not None) & (near > (cal_w or np.inf)), R_CALIPER, R_USED))


def _nearest_units(s: _Sample, f, dist, discarded, eligible, tp, cp, rd, cal_w, replace: bool):
    """The ``units`` and ``pairs`` tables of a nearest-neighbour :class:`Match`."""
    idx, n = s.idx, len(s.idx)
    w, sub, k_t = _nearest_weights(tp, cp, n, replace)
    reason = np.full(n, "", dtype=object)
    status = np.where(w > 0, "matched", "unmatched").astype(object)
    status[discarded] = "discarded"
    reason[discarded & f] = R_DISCARDED
    un_t = np.flatnonzero(f & eligible & (k_t == 0))
    if un_t.size:
        reason[un_t] = _unmatched_reasons(un_t, f, eligible, s.stratum, dist, cal_w)
    units = _units_table(idx, s.t, dist, discarded, w, sub, s.stratum, status, reason)
    if replace:
        units.loc[units["treated"] != f, "subclass"] = pd.NA
    pairs = pd.DataFrame({
        "treated_index": idx[tp], "control_index": idx[cp],
        "subclass": sub[tp] if tp.size else np.empty(0, dtype=np.int64), "round": rd + 1,
    })
    return units, pairs


def _units_table(idx, t, dist, discarded, w, subclass, stratum, status, reason) -> pd.DataFrame:
    """:attr:`Match.units`: one row per unit with complete data (subclass NA when unmatched)."""
    units = pd.DataFrame({
        "treated": t, "distance": dist, "discarded": discarded, MATCH_WEIGHT: w, "weights": w,
        "subclass": pd.array(np.where(subclass > 0, subclass, 0), dtype="Int64"), "stratum": stratum,
        "status": status, "reason": reason,
    }, index=idx)
    units.loc[units["subclass"] == 0, "subclass"] = pd.NA
    return units


def _weighting_match(idx, t, stratum, w, subclass, reason, common, dropped, **extra) -> Match:
    """A :class:`Match` for designs without pairs or score (cem, ebal)."""
    n = len(idx)
    status = np.where(w > 0, S_MATCHED, S_UNMATCHED).astype(object)
    units = _units_table(idx, t, np.full(n, np.nan), np.zeros(n, dtype=bool), w, subclass, stratum, status, reason)
    e = np.empty(0, dtype=np.int64)
    pairs = pd.DataFrame({"treated_index": idx[e], "control_index": idx[e], "subclass": e, "round": e})
    return Match(ratio=1, replace=False, caliper=None, distance=None, mahalanobis=False, discard="none",
                 m_order="data", caliper_width=None, dropped_terms=tuple(dropped), ps_coef=pd.Series(dtype="float64"),
                 units=units, pairs=pairs, **common, **extra)


def _match_cem(df, idx, t, stratum, covariates, cutpoints, grouping, table, common) -> Match:
    """Coarsened exact matching (MatchIt ``method = "cem"``, ``k2k = FALSE``)."""
    codes, dropped, bins = _coarsen(df, covariates, cutpoints, table, grouping)  # df: the complete cases
    key = pd.concat([codes.reset_index(drop=True), pd.Series(stratum, name="__exact__")], axis=1)
    cell = key.groupby(list(key.columns), sort=True).ngroup().to_numpy(dtype=np.int64)
    n_cells = int(cell.max()) + 1 if cell.size else 0
    n_t = np.bincount(cell[t], minlength=n_cells)
    n_c = np.bincount(cell[~t], minlength=n_cells)
    both = (n_t > 0) & (n_c > 0)
    matched = both[cell]
    # subclass numbers in order of first appearance among the group of the first row, as MatchIt's
    # intersect(ex[treat == first], ex[treat == other])
    g0 = t[0] if len(t) else True
    first = pd.unique(cell[(t == g0) & matched])
    sub_of = np.zeros(n_cells, dtype=np.int64)
    sub_of[first] = np.arange(1, first.size + 1)
    subclass = np.where(matched, sub_of[cell], 0)
    w = np.zeros(len(idx))
    w[t & matched] = 1.0
    c = (~t) & matched
    w[c] = n_t[cell[c]] / n_c[cell[c]]
    if c.any():
        w[c] *= c.sum() / w[c].sum()  # MatchIt normalize = TRUE: matched controls' weights average 1
    reason = np.full(len(idx), "", dtype=object)
    reason[t & ~matched] = R_NO_CELL
    return _weighting_match(idx, t, stratum, w, subclass, reason, common, dropped,
                            cutpoints=cutpoints, bins=MappingProxyType(bins), grouping=grouping)


def _match_ebal(idx, t, stratum, Xm, design, moments, table, common) -> Match:
    """Entropy balancing (WeightIt ``method = "ebal"``, ATT) within each exact stratum."""
    const = [c for c in Xm.columns if np.ptp(Xm[c].to_numpy(dtype="float64")) == 0]
    if const:
        raise ValueError(f"{table}: entropy balancing: covariate column(s) {const} have one value for every "
                         "unit; a constant has nothing to balance and makes the constraints singular. Leave it out.")
    X, names, dropped = _reduce_rank(Xm.to_numpy(dtype="float64"), list(Xm.columns))
    if moments == 2:
        sq = [j for j, c in enumerate(names) if not design.binary.get(c, False)]
        X = np.column_stack([X, X[:, sq] ** 2])
        names = names + [f"{names[j]}^2" for j in sq]
    w = np.zeros(len(idx))
    reason = np.full(len(idx), "", dtype=object)
    # rows grouped by stratum once (a mask per stratum would pass over all rows each time)
    by = np.argsort(stratum, kind="stable")
    sorted_s = stratum[by]
    several = sorted_s.size > 0 and sorted_s[0] != sorted_s[-1]
    for s in np.unique(stratum[t]):
        rows = by[np.searchsorted(sorted_s, s, side="left"):np.searchsorted(sorted_s, s, side="right")]
        ti, ci = rows[t[rows]], rows[~t[rows]]
        if not ci.size:
            reason[ti] = R_NO_STRATUM
            continue
        Xt, Xc = X[ti], X[ci]
        target = Xt.mean(axis=0)
        sd = Xc.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        cols = []
        where = f" (exact stratum {int(s)})" if several else ""
        for j, nm in enumerate(names):
            lo, hi = Xc[:, j].min(), Xc[:, j].max()
            if lo == hi:
                if np.all(Xt[:, j] == lo):
                    continue  # the same constant in both groups: balanced already
            tol = 1e-12 * max(1.0, abs(target[j]))
            if target[j] < lo - tol or target[j] > hi + tol or (lo == hi) or (
                    (abs(target[j] - lo) <= tol or abs(target[j] - hi) <= tol) and not np.all(Xt[:, j] == target[j])):
                raise ValueError(
                    f"{table}: entropy balancing is infeasible{where}: the users' mean of {nm!r} ({target[j]:.6g}) "
                    f"is not strictly inside the comparison firms' range [{lo:.6g}, {hi:.6g}]; no positive weights "
                    "can reproduce it. Coarsen or drop the covariate, add exact strata, or use another design.")
            cols.append(j)
        C = (Xc[:, cols] - target[cols]) / sd[cols]
        if C.shape[1]:
            p, gmax, ok = _ebal_solve(C)
            if not ok:
                raise ValueError(
                    f"{table}: entropy balancing is infeasible{where}: no positive weights on the comparison firms "
                    f"reproduce the users' means of {[names[j] for j in cols]} (largest remaining standardised "
                    f"difference {gmax:.3g}); the users' profile lies outside what the comparison firms span jointly.")
        else:
            p = np.full(ci.size, 1.0 / ci.size)
        w[ti] = 1.0
        w[ci] = p * ti.size  # WeightIt ATT: control weights sum to the number of treated units
    return _weighting_match(idx, t, stratum, w, np.zeros(len(idx), dtype=np.int64), reason, common, dropped,
                            moments=int(moments))


# ============================================================================ effect

@dataclass(frozen=True, repr=False)
class Effect(ResultDisplay):
    """ATT on a matched sample (immutable). See :func:`att`."""

    outcome: str
    estimate: float
    std_error: float
    conf_low: float
    conf_high: float
    n_treated: int
    n_control: int
    n: int
    n_clusters: int
    alpha: float
    vcov: str
    estimand: str = "ATT"

    def tidy(self) -> pd.DataFrame:
        """One row, columns :data:`EFFECT_COLUMNS` (``statistic`` = estimate / SE, normal ``p_value``)."""
        return estimate_table(pd.DataFrame([{
            "term": f"{self.estimand}({self.outcome})", "estimate": self.estimate, "std_error": self.std_error,
            "conf_low": self.conf_low, "conf_high": self.conf_high, "n_treated": self.n_treated,
            "n_control": self.n_control, "outcome": self.outcome, "n": self.n, "n_clusters": self.n_clusters,
            "vcov": self.vcov,
        }]), EFFECT_COLUMNS[len(ESTIMATE_CORE):])

    def summary(self) -> str:
        lvl = int(round(100 * (1 - self.alpha)))
        return (f"{self.estimand} on {self.outcome}: {self.estimate:.4g} (SE {self.std_error:.4g}, {self.vcov}; "
                f"{lvl}% CI {self.conf_low:.4g} to {self.conf_high:.4g}); "
                f"{self.n_treated} treated, {self.n_control} control units, {self.n_clusters} clusters")

    def _repr_markdown_(self) -> str:
        return _md_table(self.tidy())


def att(m: Match, outcome: str, alpha: float = 0.05, vcov: str = "auto") -> Effect:
    """ATT as the weighted difference in means on the matched (or weighted) sample.

    Parameters
    ----------
    m : Match
    outcome : str
        Column of the data given to :func:`match`.
    alpha : float
        1 - confidence level (normal critical value, as ``marginaleffects``).
    vcov : {"auto", "CR1", "HC1", "HC3"}
        Sandwich variance. ``"auto"`` follows MatchIt's vignette "Estimating Effects After
        Matching" (4.7): cluster-robust by pair (``vcov = ~subclass``; sandwich's
        ``vcovCL``, type HC1 for ``lm``: ``"CR1"``) after nearest-neighbour matching
        *without* replacement; the robust ``"HC3"`` (``vcov = "HC3"``) where controls do
        not belong to one pair: matching with replacement and coarsened exact matching
        without k:k. Entropy balancing uses ``"HC3"`` too, treating the weights as fixed
        (WeightIt's M-estimation correction for estimated weights is not applied).
        ``"HC1"`` is the heteroskedasticity-robust SE with the :math:`n/(n-2)` factor.

    Returns
    -------
    Effect

    Notes
    -----
    The estimate is the coefficient :math:`\\tau` of the weighted least squares fit
    :math:`y_i = \\alpha + \\tau T_i + e_i` with the matching weights :math:`w_i`,

    .. math:: \\hat\\tau = \\frac{\\sum_{T} w_i y_i}{\\sum_T w_i} - \\frac{\\sum_C w_i y_i}{\\sum_C w_i}.

    With :math:`B = (X'WX)^{-1}`, :math:`u_i = w_i x_i \\hat e_i` and the leverage
    :math:`h_i = w_i x_i' B x_i`:

    .. math:: V_{CR1} = \\frac{G}{G-1}\\frac{n-1}{n-2}\\,B\\Big(\\sum_g u_g u_g'\\Big)B,\\quad
              V_{HC1} = \\frac{n}{n-2}\\,B\\Big(\\sum_i u_i u_i'\\Big)B,\\quad
              V_{HC3} = B\\Big(\\sum_i \\frac{u_i u_i'}{(1-h_i)^2}\\Big)B,

    :math:`u_g = \\sum_{i\\in g} u_i` over the units of pair :math:`g`.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> df = pd.DataFrame({"x": rng.normal(size=300)})
    >>> df["t"] = (rng.random(300) < 0.3).astype(int)
    >>> df["y"] = df["x"] + 2.0 * df["t"]
    >>> e = att(match(df, "t", ["x"]), "y")
    >>> round(e.estimate) == 2, e.vcov
    (True, 'cluster-robust by pair (CR1)')
    """
    if not isinstance(m, Match):
        raise ValueError(f"m must be a Match (from reach.matching.match); got {type(m).__name__}")
    check_choice("vcov", vcov, VCOV_TYPES)
    paired = m.method == "nearest" and not m.replace
    if vcov == "auto":
        vcov = "CR1" if paired else "HC3"
    if vcov == "CR1" and not paired:
        raise ValueError(f"vcov='CR1' clusters by matched pair, which needs nearest-neighbour matching without "
                         f"replacement; got method={m.method!r}, replace={m.replace}. Use 'HC3' or 'HC1'.")
    require_columns(m._data, [outcome], "matched data")
    md = m.matched_data()
    y = pd.to_numeric(md[outcome], errors="coerce").to_numpy(dtype="float64")
    if np.isnan(y).any():
        bad = np.isnan(y)
        raise ValueError(f"matched data: outcome {outcome!r} is missing for {int(bad.sum())} matched unit(s), e.g.:\n"
                         + examples(md, bad, [m.treatment, outcome]))
    T = m.units.loc[md.index, "treated"].to_numpy().astype(float)
    w = md[MATCH_WEIGHT].to_numpy(dtype="float64")
    X = np.column_stack([np.ones_like(T), T])
    XtWX = X.T @ (X * w[:, None])
    beta = np.linalg.solve(XtWX, X.T @ (w * y))
    e = y - X @ beta
    bread = np.linalg.inv(XtWX)
    n = len(y)
    sc = X * (w * e)[:, None]
    if vcov == "CR1":
        clusters = pd.factorize(md["subclass"].astype("Int64"))[0]
        vtype = "cluster-robust by pair (CR1)"
        G = int(clusters.max()) + 1
        U = np.zeros((G, 2))
        np.add.at(U, clusters, sc)
        adj = (G / (G - 1) if G > 1 else 1.0) * ((n - 1) / (n - 2) if n > 2 else 1.0)
        meat = U.T @ U
    elif vcov == "HC1":
        vtype, G = "HC1 robust", n
        adj = n / (n - 2) if n > 2 else 1.0
        meat = sc.T @ sc
    else:
        vtype, G = "HC3 robust", n
        h = w * np.einsum("ij,jk,ik->i", X, bread, X)
        u = sc / (1.0 - h)[:, None]
        adj = 1.0
        meat = u.T @ u
    V = adj * bread @ meat @ bread
    se = float(math.sqrt(V[1, 1]))
    z = float(stats.norm.ppf(1 - alpha / 2))
    est = float(beta[1])
    return Effect(
        outcome=outcome, estimate=est, std_error=se, conf_low=est - z * se, conf_high=est + z * se,
        n_treated=int((T == 1).sum()), n_control=int((T == 0).sum()), n=n, n_clusters=G,
        alpha=alpha, vcov=vtype, estimand=m.estimand,
    )


# ============================================================================ staggered adoption

def _max_abs_smd(b: pd.DataFrame, col: str) -> float:
    """Largest |SMD| over the covariates of a balance table (the distance row left out)."""
    v = b.loc[b["variable"] != "distance", col].abs().to_numpy(dtype="float64")
    return float(np.nanmax(v)) if np.isfinite(v).any() else np.nan


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _example_panel(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Toy panel of the docstring examples: ``id, year`` (2018-2019), ``g`` (2019 or 0), ``x``."""
    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.2, 2019, 0)
    return pd.DataFrame({"id": np.repeat(np.arange(n), 2), "year": np.tile([2018, 2019], n),
                         "g": np.repeat(g, 2), "x": rng.normal(size=2 * n)})


_PREDETERMINED = re.compile(r"(_lag\d+$)|(_before$)|(_before_)")


@dataclass(frozen=True, repr=False)
class CohortMatch(ResultDisplay):
    """Cohort-wise matching result of :func:`match_cohorts` (immutable).

    Attributes
    ----------
    matches : mapping cohort -> Match
    failures : mapping cohort -> reason (cohorts that could not be matched)
    not_observed : DataFrame
        Treated units (``idname``, ``cohort``, ``reason``) absent in their reference year.
    """

    gname: str
    tname: str
    idname: str
    control_group: str
    anticipation: int
    covariates: tuple
    predetermined: tuple
    matches: Mapping[int, Match]
    failures: Mapping[int, str]
    not_observed: pd.DataFrame
    n_cohort_treated: Mapping[int, int]
    _treat_col: str = "treated"

    def matched_data(self) -> pd.DataFrame:
        """Stacked matched cross-sections with a ``cohort`` column (one row per unit x cohort)."""
        parts = []
        for g, m in self.matches.items():
            md = m.matched_data().reset_index(drop=True)
            md.insert(0, "cohort", g)
            parts.append(md)
        if not parts:
            return pd.DataFrame(columns=["cohort", self.idname, MATCH_WEIGHT, "weights", "subclass", "distance"])
        return pd.concat(parts, ignore_index=True)

    def unit_weights(self) -> pd.DataFrame:
        """``(idname, match_weight, weight)`` for ``reach.did.att_gt(weightsname="match_weight")``.

        ``weight`` is the deprecated alias of ``match_weight`` (one release).

        Treated units have weight 1 (they belong to one cohort). A control gets the
        *sum* of its matching weights over the cohorts it was matched for; units
        never matched are absent (weight 0). A unit matched as a not-yet-treated
        control for an earlier cohort *and* treated in its own matched cohort keeps
        weight 1 (its control contributions are not added).

        Notes
        -----
        This stacks cohort-specific matches into one weight per unit. It keeps each
        cohort's treated units and their matched controls in the sample, but
        ``att_gt`` then compares cohort ``g`` with *all* weighted controls (also
        those matched for another cohort), so the comparison is balanced on the
        pooled matched profile rather than cohort by cohort. With few overlapping
        controls the difference is small; a fully cohort-specific design (stacked
        DiD with per-cohort weights) is the alternative.
        """
        md = self.matched_data()
        if md.empty:
            return pd.DataFrame({self.idname: pd.Series(dtype=object), MATCH_WEIGHT: pd.Series(dtype="float64"),
                                 "weight": pd.Series(dtype="float64")})
        out = md.groupby(self.idname, sort=True, observed=True)[MATCH_WEIGHT].sum().rename(MATCH_WEIGHT)
        # a unit treated in its own cohort keeps weight 1 even if it was also a not-yet-treated
        # control for an earlier cohort: its own ATT(g,t) must stay the plain treated mean
        treated_ids = md.loc[md[self._treat_col] == 1, self.idname].unique()
        out.loc[out.index.isin(treated_ids)] = 1.0
        return out.reset_index().assign(weight=lambda d: d[MATCH_WEIGHT])  # deprecated alias, one release

    def balance(self, by_cohort: bool = False) -> pd.DataFrame:
        """Balance over all cohorts stacked (default) or per cohort (``cohort`` column).

        The stacked table treats each unit x cohort row as one observation, with the
        cohort's matching weights, and standardises by the stacked treated SD.
        """
        if by_cohort:
            parts = []
            for g, m in self.matches.items():
                b = m.balance()
                b.insert(0, "cohort", g)
                parts.append(b)
            return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cohort", *BALANCE_COLUMNS])
        if not self.matches:
            return pd.DataFrame(columns=BALANCE_COLUMNS)
        keys, X, binary = self._stacked()
        return _balance_table(X, binary, keys["treated"].to_numpy(), keys[MATCH_WEIGHT].to_numpy())

    def _stacked(self) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """Every unit x cohort of the matched cohorts: keys, balance columns, binary flags.

        ``keys`` has ``idname, cohort, treated`` (0/1), ``weights``; ``X`` the distance
        and the balance design columns (a categorical level absent in a cohort is 0
        there), row-aligned with ``keys``. Shared by :meth:`balance` and
        :meth:`balance_micro` so the published table and its magnitude checks see
        the same numbers.
        """
        ks, Xs = [], []
        binary: dict = {}
        for g, m in self.matches.items():
            u = m.units
            ks.append(pd.DataFrame({self.idname: u.index, "cohort": g,
                                    "treated": u["treated"].to_numpy().astype(int),
                                    MATCH_WEIGHT: u[MATCH_WEIGHT].to_numpy()}))
            Xs.append(pd.concat([u[["distance"]], _rows_of(m._design.balance, u.index)], axis=1).reset_index(drop=True))
            binary.update(m._design.binary)
        X = pd.concat(Xs, ignore_index=True)
        X = X.fillna({c: 0.0 for c in X.columns if binary.get(c, False)})
        if X["distance"].notna().all():
            binary["distance"] = False
        else:  # a design without a score (cem, ebal): no score row, as in a single Match and MatchIt's summary
            X = X.drop(columns="distance")
        return pd.concat(ks, ignore_index=True), X, binary

    def balance_micro(self) -> pd.DataFrame:
        """Unit-level rows behind :meth:`balance`, for magnitude checks. NEVER export this.

        Returns
        -------
        pandas.DataFrame
            ``idname, cohort, phase, group`` then ``distance`` and the balance
            columns: every unit x cohort once with ``phase="before"``, and the
            matched ones again with ``phase="after"`` (``group`` is
            ``treated``/``control``). A unit counted in several cohorts is one
            unit in a disclosure check (``unit=idname``).
        """
        if not self.matches:
            return pd.DataFrame(columns=[self.idname, "cohort", "phase", "group", "distance"])
        keys, X, _ = self._stacked()
        front = pd.DataFrame({self.idname: keys[self.idname], "cohort": keys["cohort"],
                              "group": np.where(keys["treated"] == 1, "treated", "control")})
        both = pd.concat([front, X], axis=1)
        after = keys[MATCH_WEIGHT].to_numpy() > 0
        out = pd.concat([both.assign(phase="before"), both.loc[after].assign(phase="after")], ignore_index=True)
        return out[[self.idname, "cohort", "phase", "group", *X.columns]]

    def balance_checked(self, rules: Any = None, name: str = "balance"):
        """Stacked balance table (:meth:`balance`) checked for disclosure.

        Parameters
        ----------
        rules : reach.disclosure.Rules or dict, optional
            Disclosure thresholds (``params["disclosure"]``); default ``Rules()``.
        name : str
            Name of the check (and of the exported table).

        Returns
        -------
        reach.disclosure.Checked
            From :func:`reach.disclosure.check_estimates`; its ``suppress()`` is the
            publishable table: ``BALANCE_COLUMNS`` plus ``n_treated, n_control``.

        Notes
        -----
        Every row reports means of a covariate over firms, so it is checked twice:

        * as a magnitude table: the mean of the covariate per ``phase x group``
          over the unit rows of :meth:`balance_micro` (:func:`check_table`,
          ``stat="mean"``: at least ``min_units`` firms, dominance, p-ratio). A
          covariate failing in any cell has its whole row blanked (its count is
          set missing, which fails the estimates check below);
        * as an estimate: :math:`n_T = \\min(n_T^{before}, n_T^{after}) \\ge`
          ``min_treated`` and likewise :math:`n_C \\ge` ``min_control``, with
          :math:`n` the distinct firms.

        Examples
        --------
        >>> p = _example_panel()  # 300 firms, 2018-2019, about a fifth first use the programme in 2019
        >>> cm = match_cohorts(p, "g", "year", "id", ["x"], caliper=None)
        >>> pub = cm.balance_checked().suppress()
        >>> pub["variable"].tolist(), bool(pub["smd_after"].notna().all())
        (['distance', 'x'], True)
        """
        from reach.disclosure import check_estimates, check_table

        bal = self.balance()
        micro = self.balance_micro()
        # unit and cells coded once for the checks of every covariate (each check would factorise the millions
        # of ids and labels again at register scale); a verdict depends on the grouping only, not on the codes
        codes, _ = pd.factorize(micro[self.idname])
        micro = micro.assign(**{self.idname: codes, "phase": pd.Categorical(micro["phase"]),
                                "group": pd.Categorical(micro["group"])})
        fails = [v for v in bal["variable"]
                 if not check_table(micro, by=["phase", "group"], value=v, unit=self.idname, stat="mean",
                                    rules=rules, name=f"{name}_{v}").ok]
        n = micro.groupby(["phase", "group"], observed=True)[self.idname].nunique()

        def least(group: str) -> int:
            return int(min(n.get(("before", group), 0), n.get(("after", group), 0)))

        out = bal.assign(n_treated=float(least("treated")), n_control=float(least("control")))
        out.loc[out["variable"].isin(fails), "n_treated"] = np.nan
        value_cols = [c for c in BALANCE_COLUMNS if c not in ("variable", "type", "smd_flag", "var_ratio_flag")]
        return check_estimates(out, name=name, n_treated="n_treated", n_control="n_control",
                               rules=rules, columns=value_cols)

    def status_units(self) -> pd.DataFrame:
        """Every treated and candidate control unit of every cohort with its matching status.

        Returns
        -------
        pandas.DataFrame
            ``idname, cohort, group, status``: one row per unit x cohort (a control
            appears once per cohort it was a candidate for). ``group`` is
            ``treated``/``control``; ``status`` one of :data:`STATUSES`: matched,
            unmatched, discarded (outside common support), excluded (missing
            covariates), not observed in g-1 (treated without a row in the
            reference year), cohort not matched (the cohort's model failed).
            Unit-level: tabulate it with ``reach.disclosure.check_table(...,
            by=["cohort", "group", "status"], unit=idname)``; never show it.

        Notes
        -----
        Every treated unit of cohort :math:`g` appears exactly once, so the treated
        rows of a cohort add up to ``n_cohort_treated[g]``.

        Examples
        --------
        >>> p = _example_panel()  # 300 firms, 2018-2019, about a fifth first use the programme in 2019
        >>> su = match_cohorts(p, "g", "year", "id", ["x"], caliper=None).status_units()
        >>> su.groupby(["group", "status"]).size().to_dict()
        {('control', 'matched'): 58, ('control', 'unmatched'): 184, ('treated', 'matched'): 58}
        >>> int((p.groupby("id")["g"].max() == 2019).sum())  # every user once
        58
        """
        gt = np.array(["control", "treated"], dtype=object)
        parts = []
        for g, m in self.matches.items():
            u, ex = m.units, m.excluded
            parts.append(pd.DataFrame({self.idname: u.index, "cohort": g,
                                       "group": gt[u["treated"].to_numpy().astype(int)],
                                       "status": u["status"].to_numpy()}))
            parts.append(pd.DataFrame({self.idname: ex.index, "cohort": g,
                                       "group": gt[(ex["treated"] == 1).to_numpy().astype(int)],
                                       "status": S_EXCLUDED}))
        no = self.not_observed
        parts.append(pd.DataFrame({
            self.idname: no[self.idname].to_numpy(), "cohort": no["cohort"].to_numpy(), "group": "treated",
            "status": np.where(no["reason"].astype(str).str.startswith(R_NOT_OBSERVED), S_NOT_OBSERVED,
                               S_COHORT_FAILED)}))
        out = pd.concat([q for q in parts if len(q)], ignore_index=True) if any(len(q) for q in parts) else parts[-1]
        return out.astype({"cohort": "int64"})

    def count_summary(self, published: pd.DataFrame) -> dict:
        """Headline counts from the *publishable* table of :meth:`status_units` counts.

        Parameters
        ----------
        published : pandas.DataFrame
            ``cohort, group, status, value``: the suppressed copy of a count check of
            :meth:`status_units` (suppressed cells are NaN).

        Returns
        -------
        dict
            ``n_treated`` (users in the table), ``n_treated_matched`` (matched users),
            ``n_controls_matched`` (matched control x cohort pairs), each an ``int``,
            or ``None`` when a cell it would add up is suppressed (a total over
            published cells could otherwise reveal the suppressed one);
            ``any_suppressed`` (bool); ``per_cohort``: ``{"<g>": {n_treated,
            n_treated_matched, n_treated_unmatched, n_controls_matched}}`` likewise,
            plus ``max_abs_smd_before/after`` over the covariates of that cohort
            when its matched users are publishable.

        Examples
        --------
        >>> p = _example_panel()  # 300 firms, 2018-2019, about a fifth first use the programme in 2019
        >>> cm = match_cohorts(p, "g", "year", "id", ["x"], caliper=None)
        >>> pub = pd.DataFrame({"cohort": 2019, "group": ["treated", "control", "control"],
        ...                     "status": ["matched", "matched", "unmatched"], "value": [58.0, 58.0, np.nan]})
        >>> s = cm.count_summary(pub)
        >>> s["n_treated_matched"], s["n_controls_matched"], s["any_suppressed"]
        (58, 58, True)
        """
        require_columns(published, ["cohort", "group", "status", "value"], "published matched counts")
        val = published["value"]
        grp, st = published["group"].to_numpy(), published["status"].to_numpy()

        def total(mask: np.ndarray) -> int | None:
            v = val[mask]
            return None if v.isna().any() else int(round(float(v.sum())))

        treated, matched = grp == "treated", st == S_MATCHED
        out: dict = {
            "n_treated": total(treated), "n_treated_matched": total(treated & matched),
            "n_controls_matched": total((grp == "control") & matched), "any_suppressed": bool(val.isna().any()),
        }
        smd = self.counts().set_index("cohort")
        per: dict = {}
        coh = published["cohort"].to_numpy()
        for g in sorted(pd.unique(coh)):
            c = coh == g
            r = {"n_treated": total(c & treated), "n_treated_matched": total(c & treated & matched),
                 "n_treated_unmatched": total(c & treated & (st == S_UNMATCHED)),
                 "n_controls_matched": total(c & (grp == "control") & matched)}
            if r["n_treated_matched"] and int(g) in smd.index:
                r.update({k: _finite_or_none(smd.loc[int(g), k]) for k in ("max_abs_smd_before", "max_abs_smd_after")})
            per[str(g)] = r
        out["per_cohort"] = per
        return out

    def ps_table(self) -> pd.DataFrame:
        """Propensity-model coefficients of every cohort with the units behind them.

        Returns
        -------
        pandas.DataFrame
            ``PS_TABLE_COLUMNS``: ``term, estimate`` (no standard error or test) and per
            cohort ``n_treated``, ``n_control`` (complete-case units in the model), then
            ``cohort`` and ``df_resid`` (:math:`n_T + n_C - k`, ``k`` coefficients incl. the
            intercept). Ready for ``reach.disclosure.check_estimates(...,
            df_resid="df_resid")``. Empty for ``ps_model="gbm"`` or a user score.

        Examples
        --------
        >>> p = _example_panel()  # 300 firms, 2018-2019, about a fifth first use the programme in 2019
        >>> t = match_cohorts(p, "g", "year", "id", ["x"], caliper=None).ps_table()
        >>> t[["term", "n_treated", "n_control", "df_resid"]].to_dict("records")[1]
        {'term': 'x', 'n_treated': 58, 'n_control': 242, 'df_resid': 298}
        """
        parts = []
        for g, m in self.matches.items():
            if not len(m.ps_coef):
                continue
            c = m.counts().set_index("group")
            n_t = int(c.loc["treated", "all"] - c.loc["treated", "excluded_missing"])
            n_c = int(c.loc["control", "all"] - c.loc["control", "excluded_missing"])
            t = m.ps_summary()
            parts.append(t.assign(n_treated=n_t, n_control=n_c, cohort=g, df_resid=n_t + n_c - len(m.ps_coef)))
        if not parts:
            dtypes = {"term": object, "cohort": "int64", "df_resid": "int64", "n_treated": "int64", "n_control": "int64"}
            return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "float64")) for c in PS_TABLE_COLUMNS})
        return estimate_table(pd.concat(parts, ignore_index=True), PS_TABLE_COLUMNS[len(ESTIMATE_CORE):], tests=False)

    def matched_units(self) -> pd.DataFrame:
        """The matched sample for the effect estimates: one row per matched unit x cohort.

        Returns
        -------
        pandas.DataFrame
            ``idname`` (as in the panel), ``cohort`` (int64), ``treated`` (int64 0/1),
            ``match_weight`` (float64, the cohort's ATT weight: users 1; comparison firms
            MatchIt's matching weights for ``"nearest"``, its stratum weights (mean 1)
            for ``"cem"``, WeightIt's entropy-balancing weights (summing to the cohort's
            users) for ``"ebal"``; firms with weight 0 are left out). Written by
            notebook 03 to ``work/<run>/matched_units.parquet`` (never ``output/``); a
            unit's weight over cohorts is summed as in :meth:`unit_weights`. Then ``weight``,
            the deprecated alias of ``match_weight`` (one release).

        Examples
        --------
        >>> p = _example_panel()  # 300 firms, 2018-2019, about a fifth first use the programme in 2019
        >>> mu = match_cohorts(p, "g", "year", "id", ["x"], caliper=None).matched_units()
        >>> list(mu.columns), mu.groupby("treated")["match_weight"].sum().to_dict()
        (['id', 'cohort', 'treated', 'match_weight', 'weight'], {0: 58.0, 1: 58.0})
        """
        parts = []
        for g, m in self.matches.items():
            u = m.units.loc[m.units[MATCH_WEIGHT] > 0]
            w = u[MATCH_WEIGHT].to_numpy(dtype="float64")
            parts.append(pd.DataFrame({self.idname: u.index, "cohort": np.int64(g),
                                       "treated": u["treated"].to_numpy().astype("int64"),
                                       MATCH_WEIGHT: w, "weight": w}))
        if not parts:
            return pd.DataFrame({self.idname: pd.Series(dtype=str), "cohort": pd.Series(dtype="int64"),
                                 "treated": pd.Series(dtype="int64"), MATCH_WEIGHT: pd.Series(dtype="float64"),
                                 "weight": pd.Series(dtype="float64")})
        return pd.concat(parts, ignore_index=True).astype({"cohort": "int64"})

    def spec(self) -> str:
        """The matching specification in words (identical for every cohort)."""
        return next(iter(self.matches.values()))._spec() if self.matches else "no cohort could be matched"

    def dropped_terms(self) -> dict:
        """Per cohort, covariates left out of its propensity model: ``{g: ((term, reason), ...)}``."""
        return {g: m.dropped_terms for g, m in self.matches.items() if m.dropped_terms}

    def unmatched(self) -> pd.DataFrame:
        """Treated units without match, all cohorts: ``idname, cohort, reason``."""
        parts = [self.not_observed[[self.idname, "cohort", "reason"]]]
        for g, m in self.matches.items():
            u = m.unmatched().rename(columns={"index": self.idname})
            u.insert(1, "cohort", g)
            parts.append(u)
        return pd.concat(parts, ignore_index=True)

    def counts(self) -> pd.DataFrame:
        """Per cohort: treated (all, not observed, excluded, discarded, matched, unmatched), controls, max |SMD|."""
        rows = []
        cohorts = sorted(set(self.n_cohort_treated) | set(self.matches) | set(self.failures))
        for g in cohorts:
            no = int((self.not_observed["cohort"] == g).sum())
            r = {"cohort": g, "n_treated": int(self.n_cohort_treated.get(g, 0)), "not_observed": no}
            if g in self.matches:
                m = self.matches[g]
                c = m.counts().set_index("group")
                b = m.balance()
                r.update({
                    "excluded_missing": int(c.loc["treated", "excluded_missing"]),
                    "discarded": int(c.loc["treated", "discarded"]),
                    "treated_matched": int(c.loc["treated", "matched"]),
                    "treated_unmatched": int(c.loc["treated", "unmatched"]),
                    "controls_available": int(c.loc["control", "all"] - c.loc["control", "excluded_missing"]),
                    "controls_matched": int(c.loc["control", "matched"]),
                    "max_abs_smd_before": _max_abs_smd(b, "smd_before"),
                    "max_abs_smd_after": _max_abs_smd(b, "smd_after"),
                    "status": "matched",
                })
            else:
                r.update({"excluded_missing": 0, "discarded": 0, "treated_matched": 0,
                          "treated_unmatched": int(self.n_cohort_treated.get(g, 0)) - no,
                          "controls_available": 0, "controls_matched": 0,
                          "max_abs_smd_before": np.nan, "max_abs_smd_after": np.nan,
                          "status": self.failures.get(g, "")})
            rows.append(r)
        return pd.DataFrame(rows, columns=[
            "cohort", "n_treated", "not_observed", "excluded_missing", "discarded", "treated_matched",
            "treated_unmatched", "controls_available", "controls_matched", "max_abs_smd_before",
            "max_abs_smd_after", "status"])

    def tidy(self) -> pd.DataFrame:
        """Per-cohort sample sizes as a count table: ``cohort`` first, then :data:`COUNT_TIDY_COLUMNS`."""
        parts = [_long_counts(m.counts(), ["group"]).assign(cohort=g) for g, m in self.matches.items()]
        c = self.counts()
        # users absent in their reference year never reach match(): counted here, per cohort
        parts.append(pd.DataFrame({"cohort": c["cohort"], "group": "treated", "sample": "not_observed",
                                   "n_units": c["not_observed"], "value": c["not_observed"]}))
        t = pd.concat(parts, ignore_index=True).sort_values(["cohort", "group"], kind="stable", ignore_index=True)
        return count_table(t.astype({"n_units": "int64", "value": "int64"}), ["cohort", "group", "sample"])

    def summary(self) -> str:
        c = self.counts()
        lines = [f"Cohort-wise matching ({self.control_group} controls, anticipation {self.anticipation}); "
                 f"predetermined covariates read in year g-{self.anticipation}: {list(self.predetermined)}",
                 c.to_string(index=False)]
        if len(self.matches):
            b = self.balance()
            lines.append(f"stacked max |SMD| (covariates) before {_max_abs_smd(b, 'smd_before'):.3f}, "
                         f"after {_max_abs_smd(b, 'smd_after'):.3f}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return _md_table(self.counts())

    def __repr__(self) -> str:  # one line: summary() also computes the stacked balance table
        c = self.counts()
        return (f"CohortMatch({len(c)} cohorts, users matched {int(c['treated_matched'].sum())}/"
                f"{int(c['n_treated'].sum())}, {len(self.failures)} cohort(s) not matched)")


def _cohort_cross_section(panel, g: int, b: int, treated_codes, *, codes, uniq, years, unit_g, gname, idname,
                          pre, contemporaneous, control_group, anticipation):
    """Cohort ``g``'s users and eligible controls as one row per unit in reference year ``b``.

    Contemporaneous covariates come from year ``b``, predetermined ones (lags, "before" flags)
    from the unit's row of year ``b + 1`` (missing if it has none). Returns the cross-section
    (index: the unit ids) and the codes of users absent in year ``b``.
    """
    rows_b = np.flatnonzero(years == b)
    in_base = np.zeros(len(uniq), dtype=bool)
    in_base[codes[rows_b]] = True
    missing_t = treated_codes[~in_base[treated_codes]]
    ug = unit_g[codes[rows_b]]
    is_t = ug == g
    is_c = ug == 0
    if control_group == "notyettreated":
        is_c = is_c | (ug > g + anticipation)
    rows = rows_b[is_t | is_c]
    cs_codes = codes[rows]
    cs = panel.iloc[rows][[gname, *contemporaneous]]
    cs.index = pd.Index(uniq.take(cs_codes), name=idname)
    cs = cs.assign(treated=is_t[is_t | is_c].astype(int))
    cs[idname] = cs.index
    if pre:
        pos = np.full(len(uniq), -1, dtype=np.int64)
        rows_n = np.flatnonzero(years == b + 1)
        pos[codes[rows_n]] = rows_n
        take = pos[cs_codes]
        nxt = panel.iloc[np.where(take >= 0, take, 0)][pre].reset_index(drop=True)
        nxt = nxt.astype({c: "float64" for c in pre if pd.api.types.is_integer_dtype(nxt[c])
                          or pd.api.types.is_bool_dtype(nxt[c])})
        nxt.loc[take < 0, :] = np.nan
        nxt.index = cs.index
        cs = pd.concat([cs, nxt], axis=1)
    return cs, missing_t


def match_cohorts(
    panel: pd.DataFrame,
    gname: str,
    tname: str,
    idname: str,
    covariates: Sequence[str],
    exact: Sequence[str] | str | None = None,
    control_group: str = "notyettreated",
    anticipation: int = 0,
    predetermined: Sequence[str] | None = None,
    cohorts: Sequence[int] | None = None,
    **match_kwargs: Any,
) -> CohortMatch:
    """Match every adoption cohort to controls on covariates measured before first use.

    Parameters
    ----------
    panel : pandas.DataFrame
        Firm-year panel (CONTRACTS.md section 4): one row per ``idname`` x ``tname``.
    gname : str
        First-use year (0 = never).
    tname, idname : str
        Year and unit id columns.
    covariates, exact : see :func:`match`.
    control_group : {"notyettreated", "nevertreated"}
        Controls for cohort ``g``: never users (``gname == 0``), plus with
        ``"notyettreated"`` units whose first use is after ``g + anticipation``.
    anticipation : int
        Years of anticipation; the reference year is ``b = g - 1 - anticipation``.
    predetermined : sequence of str, optional
        Covariates read from the row of year ``b + 1`` because they already describe
        the past (lags and "before" counts). Default: columns named ``*_lag<k>`` or
        containing ``_before``.
    cohorts : sequence of int, optional
        Cohorts to match (default: every ``g > 0`` in the panel).
    **match_kwargs
        Passed to :func:`match` (method, ratio, replace, caliper, ps_model, seed, ...);
        every ``method`` ("nearest", "cem", "ebal") works cohort by cohort.

    Returns
    -------
    CohortMatch

    Notes
    -----
    For cohort ``g`` the cross-section holds every unit with a register row in the
    reference year ``b = g - 1 - anticipation`` (treated: ``gname == g``; controls
    as above). Contemporaneous covariates (size, sector, region, ...) are the values
    of year ``b``. Predetermined ones are taken from the row of year ``b + 1``:
    ``x_lag1`` in that row *is* the value of ``x`` in year ``b``, and
    ``instr_ever_before`` there counts registrations in years ``<= b``, so both
    describe the unit up to and including the reference year and never the
    treatment year. A unit without a row in ``b + 1`` (it exits) has missing
    predetermined covariates and is a counted exclusion. Treated units without a
    row in ``b`` are reported by :meth:`CohortMatch.unmatched` ("not observed in
    the reference year"). A cohort whose model fails (e.g. perfect separation, no
    controls) is recorded in ``failures`` and its treated units as unmatched.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ids = np.repeat(np.arange(300), 3); yr = np.tile([2017, 2018, 2019], 300)
    >>> g = np.repeat(np.where(rng.random(300) < 0.2, 2019, 0), 3)
    >>> p = pd.DataFrame({"id": ids, "year": yr, "g": g, "x": rng.normal(size=900)})
    >>> cm = match_cohorts(p, "g", "year", "id", ["x"], caliper=None)
    >>> list(cm.matches)
    [2019]
    """
    check_choice("control_group", control_group, CONTROL_GROUPS)
    _check_spec(**match_kwargs)
    if match_kwargs.get("estimand", "ATT") != "ATT":
        raise ValueError("match_cohorts estimates effects on each cohort's users: estimand must be 'ATT'; "
                         f"got {match_kwargs['estimand']!r}")
    if not isinstance(anticipation, (int, np.integer)) or anticipation < 0:
        raise ValueError(f"anticipation must be a non-negative integer; got {anticipation!r}")
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    exact_l = [exact] if isinstance(exact, str) else list(exact or [])
    require_columns(panel, [gname, tname, idname, *covariates, *exact_l], "panel")
    # integer unit codes (sorted ids) once: every per-cohort lookup below is then a numpy
    # take; set membership on millions of string ids costs a minute in pandas
    codes, uniq = pd.factorize(panel[idname], sort=True)
    if (codes < 0).any():
        bad = codes < 0
        raise ValueError(f"panel: {int(bad.sum())} row(s) with a missing {idname}, e.g.:\n"
                         + examples(panel, bad, [idname, tname]))
    years = panel[tname].to_numpy()
    ycode = pd.factorize(years)[0].astype(np.int64)
    dup = pd.Series(codes.astype(np.int64) * (int(ycode.max(initial=0)) + 1) + ycode).duplicated().to_numpy()
    if dup.any():
        raise ValueError(f"panel: {int(dup.sum())} duplicate ({idname}, {tname}) rows, e.g.:\n"
                         + examples(panel, dup, [idname, tname]))
    if predetermined is None:
        pre = [c for c in covariates + exact_l if _PREDETERMINED.search(c)]
    else:
        pre = list(predetermined)
    contemporaneous = [c for c in covariates + exact_l if c not in pre]

    gvals = pd.to_numeric(panel[gname], errors="coerce").to_numpy(dtype="float64")
    unit_g = pd.Series(gvals).groupby(codes).max().reindex(range(len(uniq))).to_numpy()  # NaN: unknown
    all_cohorts = sorted(int(x) for x in np.unique(unit_g[unit_g > 0]))
    if cohorts is not None:
        all_cohorts = [int(c) for c in cohorts]
    matches: dict[int, Match] = {}
    failures: dict[int, str] = {}
    not_obs = []
    n_treated: dict[int, int] = {}
    cohort_iter = all_cohorts
    if len(panel) >= 1_000_000 and not _checks.in_notebook_kernel():  # register scale, in a terminal: a bar per cohort
        from tqdm.auto import tqdm

        cohort_iter = tqdm(all_cohorts, desc="matching cohorts", leave=False)
    for g in cohort_iter:
        b = g - 1 - anticipation
        treated_codes = np.flatnonzero(unit_g == g)
        n_treated[g] = treated_codes.size
        cs, missing_t = _cohort_cross_section(panel, g, b, treated_codes, codes=codes, uniq=uniq, years=years,
                                              unit_g=unit_g, gname=gname, idname=idname, pre=pre,
                                              contemporaneous=contemporaneous, control_group=control_group,
                                              anticipation=anticipation)
        if missing_t.size:
            not_obs.append(pd.DataFrame({idname: uniq.take(missing_t), "cohort": g,
                                         "reason": f"{R_NOT_OBSERVED} {b}"}))
        try:
            if cs["treated"].sum() == 0:
                raise ValueError("no treated unit observed in the reference year")
            matches[g] = match(cs, "treated", covariates, exact=exact_l or None,
                               table=f"panel cohort {g} (reference year {b})", **match_kwargs)
        except ValueError as exc:
            failures[g] = f"{R_MODEL}: {exc}" if "no treated" not in str(exc) else str(exc)
            obs_t = cs.index[cs["treated"] == 1]
            if len(obs_t):
                not_obs.append(pd.DataFrame({idname: obs_t, "cohort": g, "reason": failures[g]}))
    fixed = matches
    nob = (pd.concat(not_obs, ignore_index=True) if not_obs
           else pd.DataFrame({idname: pd.Series(dtype=object), "cohort": pd.Series(dtype="int64"), "reason": pd.Series(dtype=object)}))
    return CohortMatch(
        gname=gname, tname=tname, idname=idname, control_group=control_group, anticipation=int(anticipation),
        covariates=tuple(covariates), predetermined=tuple(pre), matches=MappingProxyType(fixed),
        failures=MappingProxyType(failures), not_observed=nob, n_cohort_treated=MappingProxyType(n_treated),
    )


def _round_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Histogram edges on a round grid (1, 2, 2.5 or 5 x 10^k) covering ``[lo, hi]`` in about ``bins`` bins.

    Edges at the smallest and largest score would publish one firm's score each (an
    output checker's "no minimum or maximum" rule); round edges publish none.

    Examples
    --------
    >>> _round_edges(0.0123, 0.4871, 20).round(3).tolist()[:3]
    [0.0, 0.025, 0.05]
    """
    if not hi - lo > 1e-9:  # one value: a unit-wide window around it
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / bins
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(f * mag for f in (1.0, 2.0, 2.5, 5.0, 10.0) if f * mag >= raw)
    start = math.floor(lo / step) * step
    n = max(1, math.ceil((hi - start) / step + 1e-9))
    if start + n * step <= hi:  # hi on an edge: one more bin so it falls inside
        n += 1
    return np.round(start + step * np.arange(n + 1), 12)


def overlap_data(m: Match | CohortMatch, bins: int = 20) -> pd.DataFrame:
    """Unit-level rows for an overlap histogram of the distance, before and after matching.

    Columns ``unit`` (input index, or ``idname`` for cohorts), ``phase``
    (``before``/``after``), ``group`` (``treated``/``control``), ``bin`` (left edge),
    ``weight`` (1 before; matching weight after). Pass it to a disclosure check
    (count of units per ``phase, group, bin``) and draw the publishable counts with
    :func:`overlap_plot`.
    """
    if isinstance(m, CohortMatch):
        parts = []
        for g, mm in m.matches.items():
            u = mm.units[["treated", "distance", MATCH_WEIGHT]].copy()
            u["unit"] = u.index
            parts.append(u.reset_index(drop=True))
        u = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["treated", "distance", MATCH_WEIGHT, "unit"])
    else:
        u = m.units[["treated", "distance", MATCH_WEIGHT]].copy()
        u["unit"] = u.index
        u = u.reset_index(drop=True)
    if not u["distance"].notna().any():
        raise ValueError("overlap_data: this design has no propensity score (method 'cem' or 'ebal'); "
                         "judge it by its balance table instead")
    edges = _round_edges(float(np.nanmin(u["distance"])), float(np.nanmax(u["distance"])), bins)
    b = np.clip(np.searchsorted(edges, u["distance"].to_numpy(), side="right") - 1, 0, len(edges) - 2)
    grp = np.where(u["treated"].to_numpy(dtype=bool), "treated", "control")
    before = pd.DataFrame({"unit": u["unit"].to_numpy(), "phase": "before", "group": grp, "bin": edges[b], "weight": 1.0})
    a = u[MATCH_WEIGHT].to_numpy() > 0
    after = pd.DataFrame({"unit": u["unit"].to_numpy()[a], "phase": "after", "group": grp[a], "bin": edges[b][a],
                          "weight": u[MATCH_WEIGHT].to_numpy()[a]})
    return pd.concat([before, after], ignore_index=True)


# The balance figures and headline moved to :mod:`reach.matching_report` (presentation is not
# estimation). The old names stay importable from here for one release.
_MOVED_TO_REPORT = ("love_plot", "overlap_plot", "balance_summary")


def __getattr__(name: str):
    if name in _MOVED_TO_REPORT:
        warnings.warn(f"reach.matching.{name} moved to reach.matching_report.{name}; the old name goes in the "
                      "next release", DeprecationWarning, stacklevel=2)
        from reach import matching_report

        return getattr(matching_report, name)
    raise AttributeError(f"module 'reach.matching' has no attribute {name!r}")
