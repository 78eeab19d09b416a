"""How large an effect could the design have detected? Analytic and design-based (placebo) power.

Two answers to "no detectable effect: what effect *could* have been detected?":

* :func:`analytic_mde`: the minimum detectable effect (MDE) of an estimate from its
  standard error, :math:`MDE = (z_{1-\\alpha/2} + z_{\\pi})\\, SE` (Bloom 1995), in
  outcome units (log points for ``log_*`` outcomes) and as a percentage change
  :math:`e^{MDE} - 1`.
* :func:`placebo`: pseudo-programmes drawn among firms that never used the programme,
  with the real programme's cohort sizes and (through a propensity model of users
  versus never-users) its covariate profile, estimated with the same estimator
  (:func:`reach.did.att_gt` + :func:`reach.did.aggte` ``"simple"``). There is no effect
  to find, so the share of draws whose confidence interval excludes zero is the
  false-positive rate of the whole design (it should be close to ``alpha``), and the
  spread of the placebo estimates gives an empirical MDE.

Both return immutable results with ``tidy()`` (fixed columns), ``summary()`` and a
notebook display; their tables pass :func:`reach.disclosure.check_estimates`.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from reach._checks import check_choice, count_text, require_columns
from reach._display import ESTIMATE_CORE, ResultDisplay, estimate_table
from reach.did import (CONTROL_GROUPS, EST_METHODS, AggteResult, NoPostTreatmentCells, _missing_post, aggte, att_gt,
                       parse_xformla, users_off_common_change)

__all__ = [
    "analytic_mde",
    "MDE",
    "placebo",
    "PlaceboResult",
    "mde_multiplier",
    "binomial_band",
    "MDE_COLUMNS",
    "PLACEBO_COLUMNS",
]

#: Columns of :meth:`MDE.tidy`.
#: The estimate core (``reach._display.ESTIMATE_CORE``: ``term`` is the outcome; no test or interval),
#: then the MDE's own columns.
MDE_COLUMNS = (*ESTIMATE_CORE, "yname", "alpha", "power", "multiplier", "mde", "mde_percent")
#: Columns of :meth:`PlaceboResult.tidy`.
#: The estimate core (``term`` the measure, ``estimate`` its value; no standard error, test or interval:
#: these are summaries of the placebo draws), then ``percent``, the binomial band, ``n_draws`` and the
#: deprecated aliases ``measure`` (= ``term``) and ``value`` (= ``estimate``), kept for one release.
PLACEBO_COLUMNS = (*ESTIMATE_CORE, "percent", "band_low", "band_high", "n_draws", "measure", "value")


# --------------------------------------------------------------------------- helpers
def _check_level(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < float(value) < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1; got {value!r}")
    return float(value)


def _readonly(a) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def _fmt(x: float, nd: int = 4) -> str:
    return "NA" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _is_log(yname: str) -> bool:
    """Outcomes whose differences are (approximately) log points: a percent reading makes sense."""
    return str(yname).startswith(("log_", "ihs_"))


def mde_multiplier(alpha: float = 0.05, power: float = 0.8) -> float:
    """:math:`z_{1-\\alpha/2} + z_{\\pi}`: the MDE in standard errors (two-sided test).

    Examples
    --------
    >>> round(mde_multiplier(0.05, 0.8), 4)
    2.8016
    """
    alpha, power = _check_level("alpha", alpha), _check_level("power", power)
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def binomial_band(n_draws: int, alpha: float = 0.05, level: float = 0.99) -> tuple[float, float]:
    """Central ``level`` band of the rejection rate of ``n_draws`` independent tests at level ``alpha``.

    Returns ``(low, high)`` as rates: :math:`[F^{-1}((1-L)/2), F^{-1}((1+L)/2)] / n` with
    :math:`F` the Binomial(n, alpha) distribution function.

    Examples
    --------
    >>> binomial_band(200, 0.05, 0.99)
    (0.015, 0.095)
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer; got {n_draws!r}")
    alpha, level = _check_level("alpha", alpha), _check_level("level", level)
    lo = stats.binom.ppf((1 - level) / 2, n_draws, alpha)
    hi = stats.binom.ppf((1 + level) / 2, n_draws, alpha)
    return float(lo / n_draws), float(hi / n_draws)


# --------------------------------------------------------------------------- analytic MDE
@dataclass(frozen=True, repr=False)
class MDE(ResultDisplay):
    """Minimum detectable effect of one estimate (immutable; see :func:`analytic_mde`)."""

    yname: str
    estimate: float
    std_error: float
    alpha: float
    power: float
    multiplier: float
    mde: float
    mde_percent: float
    n_treated: int | None = None
    n_control: int | None = None

    def tidy(self) -> pd.DataFrame:
        """One row with the columns of :data:`MDE_COLUMNS`.

        ``estimate`` and ``std_error`` are those the MDE was computed from; ``statistic``,
        ``p_value`` and the interval are left missing (the row describes the design's power,
        and its disclosure check blanks ``estimate, std_error, mde, mde_percent`` only).
        """
        row = {"term": self.yname or "estimate", "estimate": self.estimate, "std_error": self.std_error,
               "n_treated": np.nan if self.n_treated is None else self.n_treated,
               "n_control": np.nan if self.n_control is None else self.n_control,
               **{c: getattr(self, c) for c in ("yname", "alpha", "power", "multiplier", "mde", "mde_percent")}}
        return estimate_table(pd.DataFrame([row]), MDE_COLUMNS[len(ESTIMATE_CORE):], tests=False)

    def exceeded_by(self, effect: float) -> bool:
        """True when ``|effect|`` is at least the MDE (such an effect would be detected with the stated power)."""
        return bool(np.isfinite(self.mde) and abs(float(effect)) >= self.mde)

    def sentence(self, what: str = "exports", min_units: int = 10) -> str:
        """The plain-language reading, e.g. "With 360 users, effects smaller than 17% of exports cannot be told apart from zero"."""
        users = "" if self.n_treated is None else f"With {count_text(int(self.n_treated), min_units)} users, "
        if not np.isfinite(self.mde):
            return f"{users}the minimum detectable effect cannot be computed (no standard error)."
        size = (f"{100 * self.mde_percent:.0f}% of {what}" if np.isfinite(self.mde_percent)
                else f"{self.mde:.3g} ({self.yname})")
        text = (f"effects smaller than {size} cannot be told apart from zero "
                f"({100 * self.power:.0f}% power, {100 * self.alpha:g}% significance)")
        return (users + text if users else text[0].upper() + text[1:]) + "."

    def headline(self) -> dict:
        """Numbers for ``reach.report.record_headline``: ``mde, mde_percent, std_error, alpha, power``."""
        return {"mde": self.mde, "mde_percent": self.mde_percent, "std_error": self.std_error,
                "alpha": self.alpha, "power": self.power}

    def summary(self) -> str:
        pct = f" ({100 * self.mde_percent:.1f}%)" if np.isfinite(self.mde_percent) else ""
        return (f"Minimum detectable effect, {self.yname or 'estimate'}: {_fmt(self.mde)}{pct} = "
                f"{self.multiplier:.3f} x s.e. {_fmt(self.std_error)} (alpha {self.alpha:g}, power {self.power:g}; Bloom 1995)")


def analytic_mde(estimate: AggteResult | float, *, alpha: float | None = None, power: float = 0.8,
                 yname: str | None = None, log_outcome: bool | None = None,
                 n_treated: int | None = None, n_control: int | None = None) -> MDE:
    r"""Minimum detectable effect at a given power from an estimate's standard error.

    Parameters
    ----------
    estimate : AggteResult or float
        An aggregated effect (its ``overall_se``, ``n_treated``, ``n_control``, ``yname`` and
        ``alp`` are used) or a standard error.
    alpha : float, optional
        Significance level of the two-sided test; default the estimate's (``alp``), else 0.05.
    power : float, default 0.8
    yname : str, optional
        Outcome name (default the estimate's).
    log_outcome : bool, optional
        Whether the outcome is in logs, so that ``exp(MDE) - 1`` is a percentage change;
        default: ``yname`` starts with ``log_`` or ``ihs_``.
    n_treated, n_control : int, optional
        Units behind the estimate (default the estimate's).

    Returns
    -------
    MDE

    Notes
    -----
    For a two-sided test at level :math:`\alpha` of an estimator
    :math:`\hat\theta \sim N(\theta, SE^2)`, the smallest :math:`\theta` rejected with
    probability :math:`\pi` is (Bloom 1995, "Minimum detectable effects", Evaluation Review 19)

    .. math:: MDE = (z_{1-\alpha/2} + z_{\pi})\, SE,

    ignoring the negligible probability of rejecting on the wrong side. For a log outcome
    the effect on the level is :math:`e^{MDE} - 1`.

    Examples
    --------
    >>> m = analytic_mde(0.05, alpha=0.05, power=0.8, yname="log_exports", n_treated=360)
    >>> round(m.mde, 4), round(m.mde_percent, 4)
    (0.1401, 0.1504)
    >>> m.sentence()
    'With 360 users, effects smaller than 15% of exports cannot be told apart from zero (80% power, 5% significance).'
    """
    if isinstance(estimate, AggteResult):
        se, est = float(estimate.overall_se), float(estimate.overall_att)
        alpha = estimate.alp if alpha is None else alpha
        yname = estimate.yname if yname is None else yname
        n_treated = estimate.n_treated if n_treated is None else n_treated
        n_control = estimate.n_control if n_control is None else n_control
    elif isinstance(estimate, (int, float, np.number)) and not isinstance(estimate, bool):
        se, est = float(estimate), np.nan
        if se < 0:
            raise ValueError(f"a standard error must be non-negative; got {estimate!r}")
    else:
        raise TypeError(f"estimate must be an AggteResult (reach.did.aggte) or a standard error; got {type(estimate).__name__}")
    alpha = 0.05 if alpha is None else alpha
    k = mde_multiplier(alpha, power)
    yname = yname or ""
    log_outcome = _is_log(yname) if log_outcome is None else bool(log_outcome)
    mde = k * se if np.isfinite(se) else np.nan
    return MDE(yname=yname, estimate=est, std_error=se, alpha=float(alpha), power=float(power), multiplier=k,
               mde=float(mde), mde_percent=float(math.expm1(mde)) if log_outcome and np.isfinite(mde) else np.nan,
               n_treated=None if n_treated is None else int(n_treated),
               n_control=None if n_control is None else int(n_control))


# --------------------------------------------------------------------------- panel helpers
def balanced_rows(df: pd.DataFrame, tname: str, idname: str, needed: Sequence[str]) -> np.ndarray:
    """Rows of the units observed in every period with no missing value in ``needed``.

    The same units :func:`reach.did.att_gt` keeps in its balanced panel; selecting them first
    lets callers know which units enter the estimate (and in which order its influence
    function lists them).

    Examples
    --------
    >>> d = pd.DataFrame({"id": [1, 1, 2, 3, 3], "t": [1, 2, 1, 1, 2], "y": [0, 1, 2, np.nan, 3]})
    >>> balanced_rows(d, "t", "id", ["y"]).tolist()
    [True, True, False, False, False]
    """
    uid = pd.factorize(df[idname])[0]
    bad = np.zeros(len(df), dtype=bool)
    for c in needed:
        bad |= pd.isna(df[c]).to_numpy()
    unit_bad = np.zeros(uid.max() + 1 if len(uid) else 0, dtype=bool)
    unit_bad[uid[bad]] = True
    good = ~unit_bad[uid]
    t = df[tname].to_numpy()
    n_periods = len(pd.unique(t[good]))
    count = np.bincount(uid[good], minlength=len(unit_bad))
    return good & (count[uid] == n_periods)


@dataclass(frozen=True)
class _Fit:
    att: float
    se: float
    n_treated: int
    n_control: int
    ids: np.ndarray      # unit identifiers (rows of phi)
    phi: np.ndarray      # per-unit contribution: att - theta ~ sum_i phi_i, Var = sum phi_i^2
    left_out: str = ""   # why post-treatment cells the estimate leaves out are missing ("" none): reasons, no values
    n_post_cells: int = 0  # post-treatment group-time cells aggregated (the simple aggregation weighs each by p_g)
    # users whose outcome change differs from their cell's most common change in some aggregated cell
    # (reach.did.users_off_common_change); 0: every user's change was the same; -1: not computed
    n_changed: int = -1


def fit_simple(df: pd.DataFrame, yname: str, tname: str, idname: str, gname: str, *, xformla: str | None = None,
               control_group: str = "nevertreated", est_method: str = "dr", anticipation: int = 0,
               weightsname: str | None = None, alpha: float = 0.05) -> _Fit:
    """``att_gt`` + ``aggte("simple")`` with analytic (influence-function) standard errors.

    ``df`` must be balanced (:func:`balanced_rows`). Returns the estimate, its standard error
    and the per-unit influence contributions ``phi`` (``overall_inffunc / n``) keyed by unit
    identifier, so that estimates on overlapping samples can be combined.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # biters=1: the standard error is analytic; the bootstrap's critical value is not used here.
        r = att_gt(df, yname, tname, idname, gname, xformla=xformla, control_group=control_group,
                   est_method=est_method, anticipation=anticipation, weightsname=weightsname,
                   bootstrap=False, biters=1, alp=alpha, seed=0, progress=False, _cells="post")
        a = aggte(r, "simple", na_rm=True, bootstrap=False)
    return _fit_of(r, a)


def _fit_simple_units(arrays, keep: np.ndarray, *, xformla: str | None = None, control_group: str = "nevertreated",
                     est_method: str = "dr", anticipation: int = 0, alpha: float = 0.05) -> _Fit:
    """:func:`fit_simple` on the units ``keep`` (a mask) of a balanced panel prepared once (``reach.did._UnitArrays``).

    The same estimate as ``fit_simple`` on those units' rows, without selecting the rows and rebuilding the
    arrays for every subgroup (most of each fit's time at register scale).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = arrays.att_gt(keep, xformla=xformla, control_group=control_group, est_method=est_method,
                          anticipation=anticipation, alp=alpha, _cells="post")
        a = aggte(r, "simple", na_rm=True, bootstrap=False)
    return dataclasses.replace(_fit_of(r, a), n_changed=_n_changed(arrays, r))


def _n_changed(arrays, r) -> int:
    """Users of ``r`` whose outcome change differs from their cell's most common one in a cell the simple
    aggregate keeps (the arrays' outcome rows of the cohorts estimated only: users are few, the panel is not)."""
    g, t = np.asarray(r.groups, dtype=float), np.asarray(r.times, dtype=float)
    done = np.isfinite(np.asarray(r.att, dtype=float)) & (g <= t)
    if not done.any():
        return -1
    coh = np.asarray(r.unit_cohort, dtype=float)
    mine = np.isin(coh, g[done])
    rows = arrays.index.get_indexer(np.asarray(r.unit_ids)[mine])
    off, _ = users_off_common_change(arrays.P.Y[rows], coh[mine], arrays.P.periods, g[done], t[done],
                                     np.asarray(r.base_times, dtype=float)[done])
    return int(off.any(axis=1).sum())


def _fit_of(r, a) -> _Fit:
    """The :class:`_Fit` of an ``att_gt`` result and its simple aggregate (``r.unit_ids``: the influence function's rows)."""
    ids = r.unit_ids
    phi = np.asarray(a.overall_inffunc, dtype=float) / r.n_units
    # aggte(na_rm=True) leaves missing cells out: said in the subgroup's status, never silently
    att, g, t = np.asarray(r.att), np.asarray(r.groups), np.asarray(r.times)
    return _Fit(att=float(a.overall_att), se=float(a.overall_se), n_treated=int(a.n_treated),
                n_control=int(a.n_control), ids=np.asarray(ids), phi=phi, left_out=_missing_post(r, np.inf),
                n_post_cells=int(np.sum(np.isfinite(att) & (g <= t))))


class RowLookup:
    """Row positions of ``(id, year)`` pairs in a panel, built once for many look-ups.

    ``panel.set_index([id, year]).reindex(...)`` rebuilds a MultiIndex hash on every call (at
    2M firms x 10 years about 1.3 s each; the placebo's propensity step made 48 of them). Here
    the ids are factorised once and each pair becomes one integer ``code * n_years + year offset``,
    looked up by binary search in the sorted keys.

    Raises
    ------
    ValueError
        If an ``(id, year)`` pair occurs in more than one row (names the columns and examples).
    """

    def __init__(self, panel: pd.DataFrame, *, tname: str, idname: str):
        self.panel, self.tname, self.idname = panel, tname, idname
        codes, self.uniq = pd.factorize(panel[idname], sort=False)
        years = panel[tname].to_numpy()
        if len(years) and not np.all(np.isfinite(years.astype(float))):
            raise ValueError(f"panel: column {tname!r} has missing years")
        years = years.astype(np.int64)
        self.y0 = int(years.min()) if len(years) else 0
        self.span = int(years.max()) - self.y0 + 1 if len(years) else 1
        key = codes.astype(np.int64) * self.span + (years - self.y0)
        self.order = np.argsort(key, kind="stable")
        self.keys = key[self.order]
        dup = self.keys[1:] == self.keys[:-1]
        if dup.any():
            rows = self.order[1:][dup][:3]
            ex = panel.iloc[rows][[idname, tname]].to_dict("records")
            raise ValueError(f"panel: ({idname}, {tname}) pairs occur in more than one row, e.g. {ex}")

    def positions(self, ids, years) -> np.ndarray:
        """Row position (``iloc``) of each ``(id, year)`` pair, -1 where the panel has no such row."""
        ids = np.asarray(ids)
        yoff = np.asarray(years, dtype=float) - self.y0
        if len(ids) == 0 or len(self.keys) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        code = self.uniq.get_indexer(ids)
        ok = (code >= 0) & np.isfinite(yoff) & (yoff >= 0) & (yoff < self.span)
        key = code.astype(np.int64) * self.span + np.where(ok, yoff, 0).astype(np.int64)
        at = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        hit = ok & (self.keys[at] == key)
        return np.where(hit, self.order[at], -1)

    def values(self, ids, years, columns: Sequence[str]) -> pd.DataFrame:
        """Values of ``columns`` in the row of each pair (NaN where the unit has no row that year)."""
        pos = self.positions(ids, years)
        hit = pos >= 0
        out = {}
        for c in columns:
            if not hit.any():
                out[c] = pd.Series(np.nan, index=pd.RangeIndex(len(pos)))
                continue
            v = self.panel[c].iloc[np.where(hit, pos, 0)].reset_index(drop=True)
            out[c] = v if hit.all() else v.where(hit)
        return pd.DataFrame(out, index=pd.RangeIndex(len(pos)))


def reference_values(panel: pd.DataFrame | RowLookup, ids: np.ndarray, years: np.ndarray, columns: Sequence[str], *,
                     tname: str, idname: str) -> pd.DataFrame:
    """Values of ``columns`` in the row of each ``(id, year)`` pair (NaN where the unit has no row that year).

    Vectorised look-up (no loop over units): the pre-treatment information of users
    (``year = g - 1``) and of comparison firms in the same reference year. Pass a
    :class:`RowLookup` of the panel instead of the panel when looking up many times.

    Examples
    --------
    >>> p = pd.DataFrame({"id": [1, 1, 2], "year": [2018, 2019, 2019], "x": [5.0, 6.0, 7.0]})
    >>> reference_values(p, np.array([1, 2]), np.array([2018, 2018]), ["x"], tname="year", idname="id")["x"].tolist()
    [5.0, nan]
    """
    look = panel if isinstance(panel, RowLookup) else RowLookup(panel, tname=tname, idname=idname)
    return look.values(ids, years, list(columns))


def _newton_logit(X: np.ndarray, y: np.ndarray, ridge: float = 1e-6, maxiter: int = 50,
                  w: np.ndarray | None = None) -> np.ndarray:
    """Logit coefficients by Newton-Raphson; a tiny ridge keeps separated designs finite.

    Not ``did._logit_rows``: the pseudo-user sampling needs finite odds even when a covariate
    separates users from never-users, where an unpenalised fit has none. ``w``: frequency weights
    (rows standing for ``w`` identical rows: the same likelihood, penalty and fit).
    """
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
    beta = np.zeros(X.shape[1])
    for _ in range(maxiter):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ beta, -30, 30)))
        H = (X.T * (w * p * (1 - p))) @ X + ridge * np.eye(X.shape[1])
        step = np.linalg.solve(H, X.T @ (w * (y - p)) - ridge * beta)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta


def _predetermined(c: str) -> bool:
    # as reach.matching.match_cohorts: lags and "before" counts already describe the past
    import re

    return bool(re.search(r"_lag\d+$", c) or "_before" in c)


# --------------------------------------------------------------------------- placebo
@dataclass(frozen=True, eq=False, repr=False)
class PlaceboResult(ResultDisplay):
    """Design-based placebo of a programme evaluation (immutable; see :func:`placebo`).

    Attributes
    ----------
    estimates, std_errors : ndarray
        Simple ATT and its standard error per placebo draw (read-only).
    false_positive_rate : float
        Share of draws whose ``1 - alpha`` confidence interval excludes zero.
    band : (float, float)
        Central ``band_level`` binomial band of that rate around ``alpha``.
    analytic_mde : float
        :math:`(z_{1-\\alpha/2}+z_\\pi)` times the median placebo standard error.
    empirical_mde_sd : float
        :math:`(z_{1-\\alpha/2}+z_\\pi)` times the standard deviation of the placebo estimates.
    empirical_mde_planted : float
        Smallest effect added to the pseudo-users' post-period outcomes that is detected
        (significantly positive) in a share ``power`` of the draws.
    """

    yname: str
    n_draws: int
    alpha: float
    power: float
    seed: int
    cohort_sizes: dict
    estimates: np.ndarray = field(repr=False)
    std_errors: np.ndarray = field(repr=False)
    n_treated: int
    n_control: np.ndarray = field(repr=False)
    band_level: float
    band: tuple
    false_positive_rate: float
    analytic_mde: float
    empirical_mde_sd: float
    empirical_mde_planted: float
    propensity_covariates: tuple = ()
    xformla: str | None = None
    control_group: str = "nevertreated"
    est_method: str = "dr"
    n_pool: int = 0
    exclusions: dict = field(default_factory=dict)

    @property
    def multiplier(self) -> float:
        return mde_multiplier(self.alpha, self.power)

    @property
    def calibrated(self) -> bool:
        """True when the false-positive rate lies inside its binomial band around ``alpha``."""
        return bool(self.band[0] <= self.false_positive_rate <= self.band[1])

    def _pct(self, x: float) -> float:
        return float(math.expm1(x)) if _is_log(self.yname) and np.isfinite(x) else np.nan

    def draws(self) -> pd.DataFrame:
        """One row per draw: ``draw, estimate, std_error, reject, n_treated, n_control``."""
        z = stats.norm.ppf(1 - self.alpha / 2)
        est, se = np.asarray(self.estimates), np.asarray(self.std_errors)
        return pd.DataFrame({"draw": np.arange(self.n_draws), "estimate": est, "std_error": se,
                             "reject": np.abs(est) > z * se, "n_treated": self.n_treated,
                             "n_control": np.asarray(self.n_control, dtype=np.int64)})

    def tidy(self) -> pd.DataFrame:
        """Summary measures, columns :data:`PLACEBO_COLUMNS`.

        Rows: ``false_positive_rate`` (band: the binomial band around alpha),
        ``mean_placebo_estimate``, ``sd_placebo_estimates``, ``median_std_error``,
        ``analytic_mde``, ``empirical_mde_sd``, ``empirical_mde_planted`` (``percent``:
        :math:`e^x - 1` for log outcomes).
        """
        est, se = np.asarray(self.estimates), np.asarray(self.std_errors)
        rows = [("false_positive_rate", self.false_positive_rate, np.nan, *self.band),
                ("mean_placebo_estimate", float(np.nanmean(est)), np.nan, np.nan, np.nan),
                ("sd_placebo_estimates", float(np.nanstd(est, ddof=1)), np.nan, np.nan, np.nan),
                ("median_std_error", float(np.nanmedian(se)), np.nan, np.nan, np.nan)]
        for name in ("analytic_mde", "empirical_mde_sd", "empirical_mde_planted"):
            v = getattr(self, name)
            rows.append((name, v, self._pct(v), np.nan, np.nan))
        t = pd.DataFrame(rows, columns=["term", "estimate", "percent", "band_low", "band_high"])
        t["n_draws"] = self.n_draws
        t["n_treated"] = self.n_treated
        t["n_control"] = int(np.min(self.n_control)) if len(self.n_control) else 0
        t["measure"], t["value"] = t["term"], t["estimate"]  # deprecated aliases (one release)
        return estimate_table(t, PLACEBO_COLUMNS[len(ESTIMATE_CORE):], tests=False)

    def checked(self, rules=None, name: str | None = None):
        """The :meth:`tidy` table checked with :func:`reach.disclosure.check_estimates`."""
        from reach.disclosure import check_estimates

        # published without the deprecated alias columns (measure, value): one copy of each number
        return check_estimates(self.tidy().drop(columns=["measure", "value"]), name=name or f"placebo_{self.yname}",
                               rules=rules, columns=["estimate", "percent", "band_low", "band_high"])

    def headline(self) -> dict:
        """Numbers for ``reach.report.record_headline``: rate, band, calibration and the three MDEs."""
        return {"n_draws": self.n_draws, "false_positive_rate": self.false_positive_rate,
                "band_low": self.band[0], "band_high": self.band[1], "calibrated": self.calibrated,
                "analytic_mde": self.analytic_mde, "empirical_mde_sd": self.empirical_mde_sd,
                "empirical_mde_planted": self.empirical_mde_planted,
                "empirical_mde_planted_percent": self._pct(self.empirical_mde_planted)}

    def sentence(self, what: str = "exports", min_units: int = 10) -> str:
        """Plain-language reading of the empirical MDE and of the false-positive check."""
        m = self.empirical_mde_planted
        size = f"{100 * self._pct(m):.0f}% of {what}" if np.isfinite(self._pct(m)) else f"{_fmt(m, 3)} ({self.yname})"
        check = ("in line with" if self.calibrated else "outside the range expected from")
        rate = (f"{100 * self.false_positive_rate:.1f}% of the placebo estimates were significant at "
                f"{100 * self.alpha:g}%, {check} the nominal level")
        head = f"In {self.n_draws} placebo programmes of {count_text(self.n_treated, min_units)} firms that never used the programme, "
        if not self.calibrated:  # a planted effect is then found by the placebo estimates' bias, not by the design
            return (head + rate + f": the placebo estimates are off zero, so the empirical minimum detectable effect "
                    f"({size}) measures that bias rather than what the design can detect.")
        return (head + f"effects smaller than {size} went undetected in more than "
                f"{100 * (1 - self.power):.0f}% of draws; {rate}.")

    def summary(self) -> str:
        t = self.tidy()
        lines = [f"Design-based placebo: {self.yname}, {self.n_draws} draws of {self.n_treated} pseudo-users "
                 f"(cohorts {', '.join(f'{g}: {n}' for g, n in self.cohort_sizes.items())}) among {self.n_pool} never-users",
                 f"(estimator: att_gt {self.control_group}, {self.est_method}, xformla {self.xformla or '~1'}; "
                 f"propensity profile: {', '.join(self.propensity_covariates) or 'none (uniform draws)'}; seed {self.seed})"]
        for r in t.itertuples():
            extra = f"  band [{_fmt(r.band_low)}, {_fmt(r.band_high)}]" if np.isfinite(r.band_low) else ""
            pct = f"  ({100 * r.percent:.1f}%)" if np.isfinite(r.percent) else ""
            lines.append(f" {r.term:<24} {_fmt(r.estimate):>9}{pct}{extra}")
        lines.append("False-positive rate " + ("within" if self.calibrated else "OUTSIDE")
                     + f" its {100 * self.band_level:g}% binomial band around alpha = {self.alpha:g}.")
        if self.exclusions:
            lines.append("Excluded: " + ", ".join(f"{k} = {v}" for k, v in self.exclusions.items()))
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        t = self.tidy()
        rows = ["| measure | value | percent | band |", "|---|---|---|---|"]
        for r in t.itertuples():
            band = f"[{_fmt(r.band_low)}, {_fmt(r.band_high)}]" if np.isfinite(r.band_low) else ""
            pct = f"{100 * r.percent:.1f}%" if np.isfinite(r.percent) else ""
            rows.append(f"| {r.term} | {_fmt(r.estimate)} | {pct} | {band} |")
        return (f"**Placebo programmes for `{self.yname}`**: {self.n_draws} draws; false-positive rate "
                f"{'within' if self.calibrated else 'outside'} its binomial band\n\n" + "\n".join(rows))


def _weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """k indices without replacement, inclusion sequentially proportional to ``weights`` (Efraimidis & Spirakis 2006)."""
    ok = weights > 0
    keys = np.full(len(weights), -np.inf)
    u = rng.random(int(ok.sum()))
    keys[ok] = np.log(u) / weights[ok]
    return np.argpartition(-keys, k - 1)[:k] if k > 0 else np.array([], dtype=np.int64)


def _propensity_odds(panel, users: pd.Series, pool_ids: np.ndarray, cohorts: np.ndarray, sizes: pd.Series,
                     covariates, anticipation: int, tname: str, idname: str, excl: dict) -> np.ndarray:
    """Sampling odds of every never-user per cohort: pseudo-users get the real users' covariate profile.

    A ridge logit of use on the covariates (users vs never-users, in each cohort's reference
    year) gives each never-user's odds relative to the largest; without covariates all are 1.
    Never-users lacking a covariate get odds 0 (counted in ``excl``).
    """
    odds = np.ones((len(pool_ids), len(cohorts)))
    if not covariates:
        return odds
    Xu, Xn = [], []
    look = RowLookup(panel, tname=tname, idname=idname)
    for c, g in enumerate(cohorts):
        b = int(g) - 1 - int(anticipation)
        yrs = {v: (b + 1 if _predetermined(v) else b) for v in covariates}
        uid = users.index[users.to_numpy() == g].to_numpy()
        xu = np.column_stack([look.values(uid, np.full(len(uid), yrs[v]), [v])[v].to_numpy(dtype=float)
                              for v in covariates])
        xn = np.column_stack([look.values(pool_ids, np.full(len(pool_ids), yrs[v]), [v])[v].to_numpy(dtype=float)
                              for v in covariates])
        Xu.append(xu)
        Xn.append(xn)
    Xu_all, Xn_all = np.vstack(Xu), np.vstack(Xn)
    okU, okN = np.isfinite(Xu_all).all(axis=1), np.isfinite(Xn_all).all(axis=1)
    if (~okU).any():
        excl["users_missing_covariates_left_out_of_propensity_model"] = int((~okU).sum())
    X = np.vstack([Xu_all[okU], Xn_all[okN]])
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = np.column_stack([np.ones(len(X)), (X - mu) / sd])
    y = np.r_[np.ones(okU.sum()), np.zeros(okN.sum())]
    # register covariates take a few thousand distinct values over millions of (firm, cohort) rows: the same
    # fit on the distinct (row, use) pairs, weighted by their counts
    from reach.did import _row_codes

    codes, _ = _row_codes([X[:, j] for j in range(X.shape[1])])
    _, first, count = np.unique(codes.astype(np.int64) * 2 + y.astype(np.int64), return_index=True, return_counts=True)
    beta = _newton_logit(Z[first], y[first], w=count) if len(first) < len(y) else _newton_logit(Z, y)
    for c in range(len(cohorts)):
        xn = Xn[c]
        ok = np.isfinite(xn).all(axis=1)
        eta = np.column_stack([np.ones(len(xn)), (np.where(ok[:, None], xn, 0.0) - mu) / sd]) @ beta
        # odds relative to the largest: the intercept cancels in proportional sampling
        o = np.exp(np.clip(eta - eta[ok].max(), -700, 0)) if ok.any() else np.zeros(len(xn))
        odds[:, c] = np.where(ok, o, 0.0)
        if (~ok).any():
            excl[f"never_users_missing_covariates_cohort_{int(cohorts[c])}"] = int((~ok).sum())
        if int((odds[:, c] > 0).sum()) < 2 * sizes.iloc[c]:
            raise ValueError(f"cohort {int(cohorts[c])}: too few never-users with covariates to draw "
                             f"{int(sizes.iloc[c])} pseudo-users")
    return odds


class _PlaceboPool:
    r"""The never-user panel of :func:`placebo` summarised once, so that each draw's doubly robust
    ``att_gt`` + ``aggte("simple")`` costs a few passes over the pool instead of a full estimate.

    Only the cohort column changes between draws: a few hundred pseudo-users among a pool of up
    to millions. Every sum over a cell's comparison firms that DRDID's ``drdid_panel`` needs is
    a sum over the whole pool minus the pseudo-users that are not comparisons in that cell, and
    with a register covariate (log employees of a whole number of employees, a size class) the
    sums group by the distinct covariate rows :math:`k` of the cell's covariate period
    (:func:`reach.did._row_codes`). The propensity logit is fitted on those rows, as
    :func:`reach.did._logit_grouped` does.

    Notes
    -----
    For a cell with comparison set :math:`C`, distinct rows :math:`x_k` with :math:`n_k` comparison
    firms and :math:`S_k=\sum_{i\in C,k_i=k}\Delta Y_i`, unit weights and :math:`m` firms in the
    cell, the estimate uses :math:`A=\sum_k n_k x_kx_k'` (outcome regression),
    :math:`\sum_{i\in C}x_i\Delta Y_i=\sum_k x_kS_k`, the odds :math:`o_k=p_k/(1-p_k)` (0 from
    ``trim_level``) and :math:`\sum_{i\in C}o_{k_i}r_i=\sum_k o_k(S_k-n_kx_k'\beta)`. The
    influence function of a comparison firm is then affine in its own change,
    :math:`\alpha_{k_i}\Delta Y_i+\beta_{k_i}` with

    .. math::

        \alpha_k = -x_k'u - o_k/\bar o, \quad
        \beta_k = (x_k'\beta)(x_k'u) + o_k(x_k'\beta + \eta_C)/\bar o + p_k x_k'v_2/\bar o,

    (:math:`u`, :math:`v_2`, :math:`\bar o`, :math:`\eta_C` as in :class:`reach.did._CovDesign`),
    so the simple aggregate's influence function :math:`\psi_i=\sum_c a_c\frac nm IF_{ic}` needs one
    gather per cell over the pool; the pseudo-users' entries are then replaced by their own
    (treated or comparison) terms and the cohort-share term. The standard error is
    :math:`\sqrt{\sum_i\psi_i^2}/n`, as :func:`reach.did._analytic_se`. The tests check the
    estimate, standard error and comparison count against :func:`fit_simple` draw by draw.
    """

    def __init__(self, Y: np.ndarray, X: list, periods: np.ndarray, cohorts: np.ndarray, *, control_group: str,
                 anticipation: int, overlap_max: float = 0.999, trim_level: float = 0.995):
        from reach.did import _cell_list, _row_codes

        self.Y, self.periods, self.n = Y, periods, Y.shape[0]
        self.cohorts = np.asarray(cohorts, dtype=float)
        self.control_group, self.anticipation = control_group, int(anticipation)
        self.overlap_max, self.trim_level = overlap_max, trim_level
        self.cells = _cell_list(self.cohorts, periods, anticipation, "varying", "post")
        self.codes, self.U, self.count, self.S = {}, {}, {}, {}
        for _, ti, bi in self.cells:
            if bi not in self.codes:
                codes, U = _row_codes([x[:, bi] for x in X])  # every value finite (see _placebo_pool)
                self.codes[bi], self.U[bi] = codes, U
                self.count[bi] = np.bincount(codes, minlength=U.shape[1]).astype(float)
            K = self.U[bi].shape[1]
            self.S[ti, bi] = np.bincount(self.codes[bi], weights=Y[:, ti] - Y[:, bi], minlength=K)

    def fit(self, g_unit: np.ndarray) -> tuple[float, float, int]:
        """``(att, se, n_control)`` of the simple aggregate for pseudo cohorts ``g_unit`` (0: never-user)."""
        from reach.did import _TINY

        n, Y = self.n, self.Y
        pseudo = np.flatnonzero(g_unit > 0)
        gp = g_unit[pseudo]
        sizes = {float(g): int((gp == g).sum()) for g in self.cohorts}
        cells, last_beta, key, des = [], {}, None, None  # the estimable cells
        for g, ti, bi in self.cells:
            tc = self.periods[ti]
            if self.control_group == "nevertreated":
                ctrl_cohorts = ()
            else:
                ctrl_cohorts = tuple(c for c in self.cohorts if c > tc + self.anticipation and c != g)
            k_des = (g, bi, ctrl_cohorts)
            if k_des != key:
                des, beta = self._design(g, bi, pseudo, gp, ctrl_cohorts, last_beta.get(g))
                key = k_des
                if beta is not None:  # the next design of the cohort starts from it, as reach.did._DesignCache
                    last_beta[g] = beta
            if des is not None:
                est = self._estimate(des, g, ti, bi, pseudo, gp, ctrl_cohorts)
                est["n_co"] = self.n - len(pseudo) + sum(sizes[c] for c in ctrl_cohorts)
                cells.append(est)
        # aggte("simple"): the estimated cells with t >= g (with anticipation the cells from g - anticipation on are
        # estimated, but only those enter the average)
        kept = [est for est in cells if np.isfinite(est["att"]) and self.periods[est["ti"]] >= est["g"]]
        if not kept:
            return np.nan, np.nan, 0
        pg = np.array([sizes[est["g"]] / n for est in kept])
        att = np.array([est["att"] for est in kept])
        wts = pg / pg.sum()
        overall = float(att @ wts)
        s = pg.sum()
        cterm = {}
        for est, a_ in zip(kept, att / s - (att @ pg) / s**2):
            cterm[est["g"]] = cterm.get(est["g"], 0.0) + a_
        # sum_c s_c (alpha_c[k] (Y_t - Y_b) + beta_c[k]), gathered per base period: a cohort's cells share its codes
        by_base: dict = {}
        for est, wj in zip(kept, wts):
            sc = wj * n / est["m"]
            acc = by_base.setdefault(est["bi"], [[], 0.0, 0.0])
            acc[0].append((est["ti"], sc * est["alpha"]))
            acc[1] = acc[1] + sc * est["alpha"]
            acc[2] = acc[2] + sc * est["beta_c"]
        psi, tmp = np.zeros(n), np.empty(n)
        for bi, (per_t, a_base, b_sum) in by_base.items():
            codes = self.codes[bi]
            for ti, a in per_t:
                np.take(a, codes, out=tmp)
                tmp *= Y[:, ti]
                psi += tmp
            np.take(a_base, codes, out=tmp)
            tmp *= Y[:, bi]
            psi -= tmp
            np.take(b_sum, codes, out=tmp)
            psi += tmp
        # the pseudo-users: their comparison terms only where they were comparisons, their treated terms, the share term
        fix = np.zeros(len(pseudo))
        for est, wj in zip(kept, wts):
            sc = wj * n / est["m"]
            mine = gp == est["g"]
            fix[mine] += sc * est["inf_t"]
            ctrl = np.isin(gp, est["ctrl_cohorts"])
            fix[ctrl] += sc * est["ctrl_pseudo"]
        fix += np.array([cterm.get(float(g), 0.0) for g in gp])
        psi[pseudo] = fix
        se = math.sqrt(float(psi @ psi) / n / n)
        return overall, (se if se > _TINY else np.nan), int(min(est["n_co"] for est in kept))

    def _design(self, g, bi, pseudo, gp, ctrl_cohorts, beta0):
        """The cell design of :class:`reach.did._CovDesign` (dr) from per-row sums, or None when it cannot be estimated."""
        from reach.did import _logit_rows

        U, codes = self.U[bi], self.codes[bi]
        K = U.shape[1]
        kt = codes[pseudo[gp == g]]
        W1 = np.bincount(kt, minlength=K).astype(float)
        # the comparison firms: the pool less every pseudo-user that is no comparison here (the cohort's own too)
        nk = self.count[bi] - np.bincount(codes[pseudo[~np.isin(gp, ctrl_cohorts)]], minlength=K)
        m_t, m = len(kt), len(kt) + float(nk.sum())
        A = (U * nk) @ U.T
        if m_t == 0 or nk.sum() == 0 or np.linalg.matrix_rank(A) < A.shape[0]:
            return None, None
        k1, k0 = np.flatnonzero(W1 > 0), np.flatnonzero(nk > 0)
        X2 = np.ascontiguousarray(np.concatenate([U[:, k1], U[:, k0]], axis=1))
        _, H, beta = _logit_rows(X2, np.r_[np.ones(len(k1)), np.zeros(len(k0))], np.r_[W1[k1], nk[k0]], beta0)
        if beta is None:
            return None, None
        pk = 1.0 / (1.0 + np.exp(-(beta @ U)))
        if pk[np.union1d(k1, k0)].max() >= self.overlap_max:  # R did's overlap guard (unit weights: this score)
            return None, beta
        pk = np.minimum(pk, 1 - 1e-6)
        o = pk / (1 - pk)
        o[pk >= self.trim_level] = 0.0
        XpX_inv = np.linalg.inv(A / m)
        mwc = float(o @ nk) / m
        return {"U": U, "nk": nk, "A": A, "m": m, "mwt": m_t / m, "mwc": mwc, "p": pk, "o": o,
                "Hinv_n": np.linalg.inv(H) * m, "v1": XpX_inv @ (U @ W1 / m), "v3": XpX_inv @ (U @ (o * nk) / m)}, beta

    def _estimate(self, des, g, ti, bi, pseudo, gp, ctrl_cohorts) -> dict:
        """One cell's estimate and the affine form of its comparison firms' influence function."""
        Y, U, codes = self.Y, des["U"], self.codes[bi]
        K = U.shape[1]
        treated = pseudo[gp == g]
        dY_t = Y[treated, ti] - Y[treated, bi]
        not_c = pseudo[~np.isin(gp, ctrl_cohorts)]  # pseudo-users that are no comparison here (the cohort's own too)
        Sk = self.S[ti, bi] - np.bincount(codes[not_c], weights=Y[not_c, ti] - Y[not_c, bi], minlength=K)
        nk, m, o, p = des["nk"], des["m"], des["o"], des["p"]
        coef = np.linalg.solve(des["A"], U @ Sk)
        xb = coef @ U
        xt = U[:, codes[treated]]
        r_t = dY_t - coef @ xt
        eta_t = float(r_t.sum()) / m / des["mwt"]
        eta_c = float(o @ (Sk - nk * xb)) / m / des["mwc"]
        v2 = des["Hinv_n"] @ (U @ (o * (Sk - nk * xb - nk * eta_c)) / m)
        mwt, mwc = des["mwt"], des["mwc"]
        inf_t = (r_t - eta_t) / mwt - (1 - p[codes[treated]]) * (v2 @ xt) / mwc
        xu = (des["v1"] / mwt - des["v3"] / mwc) @ U
        alpha = -xu - o / mwc
        beta_c = xb * xu + o * (xb + eta_c) / mwc + p * (v2 @ U) / mwc
        cp = pseudo[np.isin(gp, ctrl_cohorts)]  # pseudo-users of later cohorts: comparisons in this cell
        return {"att": eta_t - eta_c, "m": m, "g": g, "ti": ti, "bi": bi, "alpha": alpha, "beta_c": beta_c,
                "inf_t": inf_t, "ctrl_cohorts": ctrl_cohorts,
                "ctrl_pseudo": alpha[codes[cp]] * (Y[cp, ti] - Y[cp, bi]) + beta_c[codes[cp]]}


def _placebo_pool(dn: pd.DataFrame, row_unit: np.ndarray, n_units: int, yname: str, tname: str, xcovs: list,
                  cohorts: np.ndarray, *, control_group: str, est_method: str, anticipation: int) -> "_PlaceboPool | None":
    """The pool summarised for the draws (:class:`_PlaceboPool`), or None where :func:`fit_simple` runs each draw:
    other methods than dr, no covariates (already a closed form), or a cohort without a pre-period (fit_simple
    then raises att_gt's error)."""
    if est_method != "dr" or not xcovs:
        return None
    periods = np.sort(pd.unique(dn[tname].to_numpy(dtype=float)))
    if len(dn) != n_units * len(periods) or any(g - anticipation <= periods[0] for g in cohorts):
        return None
    tcode = np.searchsorted(periods, dn[tname].to_numpy(dtype=float))
    wide = []
    for v in [yname, *xcovs]:
        a = np.full((n_units, len(periods)), np.nan, order="F")
        a[row_unit, tcode] = dn[v].to_numpy(dtype=float)
        wide.append(a)
    if not all(np.isfinite(a).all() for a in wide):
        return None
    return _PlaceboPool(wide[0], wide[1:], periods, cohorts, control_group=control_group, anticipation=anticipation)


def placebo(panel: pd.DataFrame, yname: str, *, gname: str, tname: str = "year", idname: str = "firm_id",
            covariates: Sequence[str] | None = None, xformla: str | None = None,
            control_group: str = "nevertreated", est_method: str = "dr", anticipation: int = 0,
            n_draws: int = 100, alpha: float = 0.05, power: float = 0.8, band_level: float = 0.99,
            seed: int = 0, progress: bool | None = None, _grouped: bool = True) -> PlaceboResult:
    r"""Placebo programmes among never-users: false-positive rate and empirical MDE of the design.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel of the analysis sample (users and never-users; users without a year
        before first use already removed, see :func:`reach.did.drop_without_pre_period`).
    yname : str
        Outcome.
    gname, tname, idname : str
        First-use year (0 = never), year and unit columns.
    covariates : sequence of str, optional
        Covariates of the propensity model of users versus never-users (the covariate
        profile of the pseudo-users). Contemporaneous ones are read in the reference year
        :math:`b = g - 1 - \text{anticipation}`, predetermined ones (``*_lag<k>``,
        ``*_before*``) from the row of year :math:`b + 1`, as in
        :func:`reach.matching.match_cohorts`. ``None``: pseudo-users drawn uniformly.
    xformla, control_group, est_method, anticipation
        The estimator's settings, as in :func:`reach.did.att_gt`.
    n_draws : int, default 100
        Placebo programmes drawn (bounds the run time: one estimate per draw).
    alpha : float, default 0.05
    power : float, default 0.8
    band_level : float, default 0.99
        Coverage of the binomial band of the false-positive rate.
    seed : int, default 0
    progress : bool, optional
        Show a progress bar over the draws (default: yes).

    Returns
    -------
    PlaceboResult

    Notes
    -----
    Real cohort sizes :math:`n_g` are those of the users in the balanced panel the estimator
    uses. With the propensity :math:`p(X)` of a logit of users (covariates in their
    reference year) on never-users (the same years), pooled over cohorts, the pseudo-users of
    cohort :math:`g` are drawn without replacement among never-users with probability
    proportional to the odds :math:`p(X_{b_g})/(1-p(X_{b_g}))` (Efraimidis-Spirakis keys);
    odds reweight never-users to the users' covariate distribution. Real users are left out;
    each draw runs :func:`reach.did.att_gt` and :func:`reach.did.aggte` ``"simple"`` with
    analytic standard errors on the same never-user panel, only the cohort column changing.
    With ``est_method="dr"`` and covariates the pool is summarised once and each draw's
    estimate, standard error and comparison count come from those sums (:class:`_PlaceboPool`,
    the same numbers at a fraction of the time); a draw in which no cell can be estimated is
    left without estimate and counted (``draws_without_estimate``).

    With :math:`k = z_{1-\alpha/2} + z_\pi`, the false-positive rate is
    :math:`\frac1D\sum_d 1\{|\hat\theta_d| > z_{1-\alpha/2} s_d\}`; the empirical MDEs are
    :math:`k\,\mathrm{sd}(\hat\theta_d)` and the :math:`\pi`-quantile of
    :math:`z_{1-\alpha/2}s_d - \hat\theta_d`: adding :math:`\delta` to the post-period outcomes
    of the pseudo-users shifts every post ATT(g,t), hence the simple ATT, by exactly
    :math:`\delta` and leaves the influence function unchanged, so draw d detects
    :math:`\delta` (significantly positive) iff :math:`\delta \ge z_{1-\alpha/2}s_d - \hat\theta_d`.
    Draws share comparison firms, so they are not independent: the binomial band is a guide.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n, T = 400, 4
    >>> p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T), "year": np.tile(np.arange(2016, 2016 + T), n),
    ...                   "g": np.repeat(np.where(np.arange(n) < 40, 2018, 0), T)})
    >>> p["y"] = rng.normal(size=n * T)
    >>> res = placebo(p, "y", gname="g", n_draws=20, progress=False)
    >>> res.n_treated, res.n_draws, list(res.tidy().columns) == list(PLACEBO_COLUMNS)
    (40, 20, True)
    """
    check_choice("control_group", control_group, CONTROL_GROUPS)
    check_choice("est_method", est_method, EST_METHODS)
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 2:
        raise ValueError(f"n_draws must be an integer >= 2; got {n_draws!r}")
    alpha, power, band_level = _check_level("alpha", alpha), _check_level("power", power), _check_level("band_level", band_level)
    covariates = list(covariates or [])
    xcovs = parse_xformla(xformla)
    require_columns(panel, [yname, gname, tname, idname, *covariates, *xcovs], "panel")
    excl: dict[str, int] = {}
    bal = balanced_rows(panel, tname, idname, [yname, *xcovs])
    n_units_all = panel[idname].nunique()
    n_unbal = n_units_all - panel.loc[bal, idname].nunique()
    if n_unbal:
        excl["units_not_observed_every_period"] = int(n_unbal)
    d = panel.loc[bal, list(dict.fromkeys([idname, tname, gname, yname, *xcovs]))].reset_index(drop=True)
    last = d[tname].max()
    ug = d.groupby(idname, sort=True)[gname].first()
    users = ug[(ug > 0) & (ug <= last)]
    if users.empty:
        raise ValueError(f"panel: no users (column {gname!r} > 0 within the window) in the balanced panel")
    sizes = users.value_counts().sort_index()
    cohorts = sizes.index.to_numpy(dtype=float)
    cohort_sizes = {int(g): int(s) for g, s in sizes.items()}
    pool_ids = ug.index[ug == 0].to_numpy()
    need = int(sizes.sum())
    if len(pool_ids) < 2 * need:
        raise ValueError(
            f"panel: {len(pool_ids)} never-users in the balanced panel cannot host placebo programmes of "
            f"{need} pseudo-users and leave as many comparison firms; placebo needs at least {2 * need}")

    # Propensity of use: pseudo-users get the real users' covariate profile.
    odds = _propensity_odds(panel, users, pool_ids, cohorts, sizes, covariates, anticipation, tname, idname, excl)

    # The never-user panel is built once; each draw only rewrites the cohort column.
    dn = d[d[idname].isin(pool_ids)].reset_index(drop=True)
    row_unit = np.searchsorted(pool_ids, dn[idname].to_numpy())
    pseudo_g = "__placebo_g__"
    dn[pseudo_g] = 0.0
    pool = _placebo_pool(dn, row_unit, len(pool_ids), yname, tname, xcovs, cohorts, control_group=control_group,
                         est_method=est_method, anticipation=anticipation) if _grouped else None
    rng = np.random.default_rng(seed)
    est = np.full(n_draws, np.nan)
    se = np.full(n_draws, np.nan)
    n_co = np.zeros(n_draws, dtype=np.int64)
    it = range(n_draws)
    if progress is None or progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"placebo draws ({yname})", leave=False)
        except ImportError:  # pragma: no cover - tqdm comes with the notebook stack
            pass
    for k in it:
        g_unit = np.zeros(len(pool_ids))
        free = np.ones(len(pool_ids), dtype=bool)
        for c, g in enumerate(cohorts):
            pick = _weighted_sample(rng, np.where(free, odds[:, c], 0.0), int(sizes.iloc[c]))
            g_unit[pick] = g
            free[pick] = False
        if pool is not None:
            est[k], se[k], n_co[k] = pool.fit(g_unit)
            continue
        dn[pseudo_g] = g_unit[row_unit]
        try:
            f = fit_simple(dn, yname, tname, idname, pseudo_g, xformla=xformla, control_group=control_group,
                           est_method=est_method, anticipation=anticipation, alpha=alpha)
        except NoPostTreatmentCells:  # every cell of this draw failed (e.g. separation): counted, not the whole placebo
            continue
        est[k], se[k], n_co[k] = f.att, f.se, f.n_control
    z = stats.norm.ppf(1 - alpha / 2)
    kmul = mde_multiplier(alpha, power)
    ok = np.isfinite(est) & np.isfinite(se)
    if (~ok).any():
        excl["draws_without_estimate"] = int((~ok).sum())
    reject = np.abs(est[ok]) > z * se[ok]
    # draw d detects delta iff delta >= z s_d - theta_d: the smallest delta detected in a share >= power
    # of the draws is the ceil(power * D)-th smallest threshold
    thresholds = np.sort(z * se[ok] - est[ok])
    planted = float(thresholds[math.ceil(power * len(thresholds)) - 1]) if ok.any() else np.nan
    return PlaceboResult(
        yname=yname, n_draws=int(n_draws), alpha=alpha, power=power, seed=int(seed), cohort_sizes=cohort_sizes,
        estimates=_readonly(est), std_errors=_readonly(se), n_treated=need, n_control=_readonly(n_co),
        band_level=band_level, band=binomial_band(int(ok.sum()), alpha, band_level) if ok.any() else (np.nan, np.nan),
        false_positive_rate=float(reject.mean()) if ok.any() else np.nan,
        analytic_mde=float(kmul * np.median(se[ok])) if ok.any() else np.nan,
        empirical_mde_sd=float(kmul * np.std(est[ok], ddof=1)) if ok.sum() > 1 else np.nan,
        empirical_mde_planted=max(planted, 0.0) if np.isfinite(planted) else np.nan,
        propensity_covariates=tuple(covariates), xformla=xformla, control_group=control_group,
        est_method=est_method, n_pool=int(len(pool_ids)), exclusions=excl)
