r"""Sensitivity of event-study conclusions to violations of parallel trends.

Rambachan & Roth (2023), "A More Credible Approach to Parallel Trends" (Review
of Economic Studies 90(5)), as the R package HonestDiD (version 0.2.x) computes
it, with scipy and numpy only.

The event-study coefficients :math:`\hat\beta = (\hat\beta_{pre}', \hat\beta_{post}')'`
are approximately :math:`N(\beta, \Sigma)` with :math:`\beta = (0', \tau')' + \delta`:
the post-period coefficients are the treatment effects :math:`\tau` plus a bias
:math:`\delta_{post}`, and the pre-period coefficients are the pre-trend
:math:`\delta_{pre}`. The target is :math:`\theta = l'\tau`. Instead of assuming
:math:`\delta_{post} = 0` (parallel trends), :math:`\delta` is restricted to a set

* relative magnitudes :math:`\Delta^{RM}(\bar M)`: every post-period change
  :math:`|\delta_{t+1}-\delta_t|` is at most :math:`\bar M` times the largest
  pre-period change (``sensitivity_type="relative_magnitude"``);
* smoothness :math:`\Delta^{SD}(M)`: every second difference
  :math:`|(\delta_{t+1}-\delta_t)-(\delta_t-\delta_{t-1})|` is at most :math:`M`
  (``sensitivity_type="smoothness"``; :math:`M=0` is a linear trend),

and the confidence set for :math:`\theta` is valid for every :math:`\delta` in the
set. Methods (HonestDiD's defaults):

* ``"C-LF"`` (relative magnitudes) and ``"Conditional"``: test inversion over a
  grid of :math:`\theta` with the conditional test of Andrews, Roth & Pakes
  (2023) for moment inequalities with nuisance parameters, "C-LF" being its
  hybrid with a least-favourable first stage of size :math:`\kappa=\alpha/10`.
  :math:`\Delta^{RM}` is a union of polyhedra (one per location and sign of the
  largest pre-period change); the set is the union of their confidence sets.
* ``"FLCI"`` (smoothness): the optimal fixed-length confidence interval of
  Armstrong & Kolesár (2018, 2020), an affine estimator
  :math:`a + v'\hat\beta` with half-length :math:`\chi = \sigma_v\,
  cv_\alpha(\bar b_v / \sigma_v)` minimised over :math:`v`, where
  :math:`\bar b_v` is the worst-case bias over :math:`\Delta^{SD}(M)` and
  :math:`cv_\alpha(t)` the :math:`1-\alpha` quantile of :math:`|N(t, 1)|`.

Implementation note. The ARP test statistic is the value of the linear program
:math:`\hat\eta = \min_{\eta,\gamma}\{\eta : y - X\gamma \le \eta\,\sigma_y\}`
whose dual is :math:`\max\{\lambda' y : \lambda\ge 0, \lambda'\sigma_y = 1,
\lambda' X = 0\}`. The dual feasible set does not depend on :math:`y` (nor on the
:math:`\theta` being tested), so its vertices are enumerated once and the test
is evaluated for the whole :math:`\theta` grid and for all least-favourable
simulation draws with matrix products instead of one LP per point. The
conditioning interval :math:`[V^{lo}, V^{up}]` is the set of values of the
statistic along :math:`y(c) = s + \Sigma\gamma c/\gamma'\Sigma\gamma` for which
the optimal vertex :math:`\gamma` stays optimal, in closed form. The test
inversion brackets the ends of the confidence set on HonestDiD's theta grid
(``search="bracket"``) instead of testing all 1000 points (``search="grid"``); both
give the same grid points when the set is an interval. The numbers
match HonestDiD's LP-and-bisection route (see ``tests/test_sensitivity.py``);
what differs is the random draws of the least-favourable critical value (numpy,
not R's generator) and the folded-normal quantile (exact, where R simulates
:math:`10^6` draws).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from reach._checks import check_choice
from reach._display import ESTIMATE_CORE, ResultDisplay, estimate_table

__all__ = [
    "honest_did",
    "sensitivity_table",
    "sensitivity_plot",
    "sensitivity_results",
    "original_ci",
    "SensitivityResult",
    "SENSITIVITY_TYPES",
    "METHODS",
    "SENSITIVITY_COLUMNS",
]

#: Columns of :meth:`SensitivityResult.tidy`: the estimate core, then the grid value, method,
#: restriction, whether the set excludes zero, and the deprecated aliases ``lb`` / ``ub``.
SENSITIVITY_COLUMNS = (*ESTIMATE_CORE, "M", "method", "delta", "excludes_zero", "lb", "ub")

SENSITIVITY_TYPES = ("relative_magnitude", "smoothness")
#: Allowed ``method`` per sensitivity type; the first is the default (HonestDiD's).
METHODS = {"relative_magnitude": ("C-LF", "Conditional"), "smoothness": ("FLCI", "Conditional", "C-LF")}
_DELTA = {"relative_magnitude": "DeltaRM", "smoothness": "DeltaSD"}
_DEFAULT_GRID = {"relative_magnitude": tuple(np.round(np.arange(0.0, 2.01, 0.25), 10))}
# Above this many candidate bases the dual vertices are not enumerated (relative
# magnitudes with more than 10 post periods); see _cone_rays.
_MAX_BASES = 250_000


# --------------------------------------------------------------------------- linear algebra helpers
def _gamma_matrix(l_vec: np.ndarray) -> np.ndarray:
    """Invertible matrix whose first row is ``l_vec`` (then unit vectors, in order)."""
    rows = [l_vec]
    for j in range(len(l_vec)):
        e = np.zeros(len(l_vec))
        e[j] = 1.0
        if np.linalg.matrix_rank(np.vstack(rows + [e])) > len(rows):
            rows.append(e)
        if len(rows) == len(l_vec):
            break
    return np.vstack(rows)


_RAYS: dict[bytes, np.ndarray] = {}


def _cone_rays(X: np.ndarray) -> np.ndarray:
    """Extreme rays of ``{lam >= 0 : X' lam = 0}``, scaled to ``sum(lam) = 1`` (rows); cached.

    The dual feasible set ``{lam >= 0 : lam' sd = 1, lam' X = 0}`` of the ARP linear
    program has the vertices ``r / (r' sd)``: ``sd > 0`` only rescales the rays, so one
    enumeration serves every Mbar, location and sign of Delta^RM (their ``X`` agree).
    """
    m, k = X.shape
    key = np.asarray(X.shape, np.int64).tobytes() + np.round(X, 12).tobytes()
    if key in _RAYS:
        return _RAYS[key]
    k1 = k + 1
    n_bases = math.comb(m, k1)
    if n_bases > _MAX_BASES:
        raise ValueError(
            f"too many post periods for the conditional test: {m} moments and {k} nuisance "
            f"parameters give {n_bases} candidate bases (limit {_MAX_BASES}); use fewer event times "
            "(max_e in aggte) or sensitivity_type='smoothness' with method='FLCI'"
        )
    W = np.column_stack([np.ones(m), X])
    S = np.array(list(itertools.combinations(range(m), k1)), dtype=np.intp).reshape(-1, k1)
    Wb = W[S]  # (n, k1, k1): the rows of W in each candidate basis
    det = np.linalg.det(Wb)
    ok = np.abs(det) > 1e-12 * max(np.abs(W).max(), 1.0) ** k1
    S, Wb = S[ok], Wb[ok]
    e1 = np.zeros(k1)
    e1[0] = 1.0
    lam_b = np.linalg.solve(np.transpose(Wb, (0, 2, 1)), np.broadcast_to(e1, (len(Wb), k1))[..., None])[..., 0]
    feas = (lam_b >= -1e-10).all(axis=1)
    R = np.zeros((int(feas.sum()), m))
    np.put_along_axis(R, S[feas], np.maximum(lam_b[feas], 0.0), axis=1)
    if len(_RAYS) > 256:
        _RAYS.clear()
    _RAYS[key] = R
    return R


def _dual_vertices(W: np.ndarray) -> np.ndarray:
    """Vertices of ``{lam >= 0 : W' lam = e1}`` (rows), ``W = [sd, X]`` with ``sd > 0``."""
    R = _cone_rays(W[:, 1:])
    return R / (R @ W[:, 0])[:, None]


def _truncnorm_ppf(p: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Quantile of N(0, 1) truncated to [lo, hi] (vectorised; upper tail via survival functions)."""
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    out = np.empty(lo.shape)
    right = lo > 0  # both tails computed where the probabilities are not rounded away
    with np.errstate(divide="ignore", invalid="ignore"):
        Slo, Shi = special.ndtr(-lo), special.ndtr(-hi)
        out[right] = -special.ndtri(Slo[right] - p * (Slo[right] - Shi[right]))
        Flo, Fhi = special.ndtr(lo), special.ndtr(hi)
        left = ~right
        out[left] = special.ndtri(Flo[left] + p * (Fhi[left] - Flo[left]))
    # far in a tail both probabilities underflow: fall back to scipy's log-space routine
    bad = ~np.isfinite(out) | (hi <= lo)
    if bad.any():
        ok = bad & (hi > lo)
        out[ok] = stats.truncnorm.ppf(p, lo[ok], hi[ok])
        out[bad & ~ok] = lo[bad & ~ok]  # a degenerate interval is a point mass
    return out


_NORMALS: dict[tuple[int, int, int], np.ndarray] = {}


def _std_normals(seed: int, sims: int, m: int) -> np.ndarray:
    """The same standard-normal draws for every least-favourable critical value (as R's set.seed)."""
    key = (seed, sims, m)
    if key not in _NORMALS:
        if len(_NORMALS) > 32:
            _NORMALS.clear()
        _NORMALS[key] = np.random.default_rng(seed).standard_normal((sims, m))
    return _NORMALS[key]


# --------------------------------------------------------------------------- ARP conditional / hybrid test
def _arp_test(
    Y: np.ndarray,
    a: np.ndarray,
    X: np.ndarray,
    SigmaY: np.ndarray,
    alpha: float,
    hybrid: str,
    kappa: float,
    sims: int,
    seed: int,
):
    """Test of H0: theta, ``E[Y - a*theta] - X gamma <= 0`` for some gamma; returns ``accept(theta_array)``."""
    sd = np.sqrt(np.diag(SigmaY))
    V = _dual_vertices(np.column_stack([sd, X]))
    if len(V) == 0:  # eta = -inf: every theta is consistent with the moments
        return lambda theta: np.ones(len(theta), bool)
    state: dict[str, float] = {}

    def accept(theta):
        if not state:  # the least-favourable critical value, computed when first needed
            if hybrid == "LF":
                ev, U = np.linalg.eigh(SigmaY)
                xi = _std_normals(seed, sims, len(Y)) @ (U * np.sqrt(np.clip(ev, 0.0, None))).T
                # single precision: the LP values move by ~1e-7 relative, far below the Monte
                # Carlo error of the quantile, and the product is the costliest step of C-LF
                eta_sim = (xi.astype(np.float32) @ (-V.T).astype(np.float32)).max(axis=1).astype(float)
                state.update(lf_cv=float(np.quantile(eta_sim, 1 - kappa)), size=(alpha - kappa) / (1 - kappa))
            else:
                state.update(lf_cv=np.inf, size=alpha)
        return _arp_accept(np.asarray(theta, float), Y, a, V, SigmaY, state["lf_cv"], state["size"])

    return accept


def _arp_accept(theta, Y, a, V, SigmaY, lf_cv, size) -> np.ndarray:
    Yg = Y[:, None] - a[:, None] * theta[None, :]  # (m, G)
    E = V @ Yg  # (n_v, G): lam'y per vertex
    best = E.argmax(axis=0)
    eta = E[best, np.arange(len(theta))]
    Gam = V[best]  # (G, m) optimal dual vertex per theta
    SG = Gam @ SigmaY  # (G, m) = (Sigma gamma)'
    s2 = np.einsum("gm,gm->g", SG, Gam)
    reject = eta > lf_cv  # least-favourable first stage (never with lf_cv = inf)
    tiny = s2 < np.finfo(float).eps
    reject |= tiny & (eta > 0)
    pos = ~tiny
    with np.errstate(divide="ignore", invalid="ignore"):
        B = (V @ SG.T) / np.where(pos, s2, 1.0)  # (n_v, G): lam' Sigma gamma / gamma' Sigma gamma
        A0 = E - B * eta  # lam' s with s the part of y orthogonal to the statistic
        slope = B - 1.0
        cut = -A0 / slope
        up = slope > 1e-10
        lo = slope < -1e-10
        vup = np.where(up, cut, np.inf).min(axis=0)
        vlo = np.where(lo, cut, -np.inf).max(axis=0)
    sig = np.sqrt(np.where(pos, s2, 1.0))
    zlo = vlo / sig
    zup = np.minimum(vup, lf_cv) / sig
    stat = eta / sig
    inside = pos & (zlo <= stat) & (stat <= zup) & ~reject
    if inside.any():
        cval = np.maximum(0.0, _truncnorm_ppf(1 - size, zlo[inside], zup[inside]))
        reject[np.flatnonzero(inside)] = stat[inside] > cval
    return ~reject


def _arp_grid(betahat, sigma, npre, npost, A, d, l_vec, rows, alpha, hybrid, kappa, sims, seed, Ginv=None):
    post = slice(npre, npre + npost)
    AGinv = A[:, post] @ (np.linalg.inv(_gamma_matrix(l_vec)) if Ginv is None else Ginv)
    Y = A @ betahat - d
    SY = A @ sigma @ A.T
    r = np.asarray(rows)
    return _arp_test(Y[r], AGinv[r, 0], AGinv[np.ix_(r, np.arange(1, npost))], SY[np.ix_(r, r)],
                     alpha, hybrid, kappa, sims, seed)


def _union_accept(tests, theta: np.ndarray, step: int) -> np.ndarray:
    """Grid points accepted by any of ``tests``: a pass over every ``step``-th point, then every point
    between neighbours of that pass whose decisions differ (identical to the full grid unless an
    accepted or rejected run is shorter than ``step`` points)."""
    G = len(theta)
    acc = np.zeros(G, bool)

    def evaluate(ix):
        res = np.zeros(len(ix), bool)
        for f in tests:
            todo = np.flatnonzero(~res)
            if len(todo) == 0:
                break
            res[todo] = f(theta[ix[todo]])
        acc[ix] = res

    step = max(int(step), 1)
    coarse = np.unique(np.r_[np.arange(0, G, step), G - 1])
    evaluate(coarse)
    fine = []
    for i, j in zip(coarse[:-1], coarse[1:]):
        if j - i > 1:
            if acc[i] != acc[j]:
                fine.append(np.arange(i + 1, j))
            else:
                acc[i + 1:j] = acc[i]
    if fine:
        evaluate(np.concatenate(fine))
    return acc


# --------------------------------------------------------------------------- Delta^RM
def _A_rm(npre: int, npost: int, mbar: float, s: int, positive: bool) -> np.ndarray:
    n = npre + npost
    At = np.zeros((n, n + 1))
    for r in range(n):
        At[r, r], At[r, r + 1] = -1.0, 1.0
    v = np.zeros(n + 1)
    v[npre + s - 1], v[npre + s] = -1.0, 1.0  # first difference ending at period s (s <= 0)
    if not positive:
        v = -v
    ub = np.vstack([np.tile(v, (npre, 1)), np.tile(mbar * v, (npost, 1))])
    A = np.vstack([At - ub, -At - ub])
    A = A[(A ** 2).sum(axis=1) > 1e-10]
    return np.delete(A, npre, axis=1)  # period 0 is the normalised reference period


def _post_rows(A: np.ndarray, npre: int) -> np.ndarray:
    return np.flatnonzero((A[:, npre:] != 0).any(axis=1))


def _rm_tests(betahat, sigma, npre, npost, l_vec, mbar, alpha, hybrid, kappa, sims, seed):
    """One test per location and sign of the largest pre-period change (Delta^RM is their union)."""
    tests = []
    Ginv = np.linalg.inv(_gamma_matrix(l_vec))
    for s in range(-(npre - 1), 1):
        for positive in (True, False):
            A = _A_rm(npre, npost, mbar, s, positive)
            rows = _post_rows(A, npre)
            tests.append(_arp_grid(betahat, sigma, npre, npost, A, np.zeros(len(A)), l_vec, rows,
                                   alpha, hybrid, kappa, sims, seed, Ginv))
    return tests


# --------------------------------------------------------------------------- Delta^SD
def _A_sd(npre: int, npost: int) -> np.ndarray:
    n = npre + npost
    At = np.zeros((n - 1, n + 1))
    for r in range(n - 1):
        At[r, r:r + 3] = (1.0, -2.0, 1.0)
    At = np.delete(At, npre, axis=1)
    return np.vstack([At, -At])


def _sd_m_upper_bound(betahat, sigma, npre, alpha):
    """Default largest M: the largest one-sided upper confidence bound of a pre-period second
    difference (HonestDiD's ``DeltaSD_upperBound_Mpre``); with one pre-period its standard error."""
    if npre < 2:
        return math.sqrt(sigma[0, 0])
    A = _A_sd(npre, 0)
    sd = np.sqrt(np.diag(A @ sigma[:npre, :npre] @ A.T))
    return float((A @ betahat[:npre] + stats.norm.ppf(1 - alpha) * sd).max())


def _sd_id_set_at_zero(npre, npost, l_vec, M):
    """Identified set of l'tau when beta = 0, under Delta^SD(M) (LP, as HonestDiD's grid centre)."""
    A = _A_sd(npre, npost)
    n = npre + npost
    c = np.concatenate([np.zeros(npre), l_vec])
    Aeq = np.hstack([np.eye(npre), np.zeros((npre, npost))])
    out = []
    for sign in (1.0, -1.0):
        res = optimize.linprog(sign * c, A_ub=A, b_ub=np.full(len(A), M), A_eq=Aeq, b_eq=np.zeros(npre),
                               bounds=[(None, None)] * n, method="highs")
        out.append(sign * res.fun if res.status == 0 else np.nan)
    # bias delta in [min, max] => theta = l'beta - l'delta in [-max, -min]
    return -out[1] if np.isfinite(out[1]) else -np.inf, -out[0] if np.isfinite(out[0]) else np.inf


def _sd_tests(betahat, sigma, npre, npost, l_vec, M, alpha, hybrid, kappa, sims, seed):
    A = _A_sd(npre, npost)
    rows = _post_rows(A, npre) if npost > 1 else np.arange(len(A))
    return [_arp_grid(betahat, sigma, npre, npost, A, np.full(len(A), M), l_vec, rows,
                      alpha, hybrid, kappa, sims, seed)]


# --------------------------------------------------------------------------- FLCI (smoothness)
def _folded_normal_quantile(p: float, mu: float) -> float:
    """``p`` quantile of ``|N(mu, 1)|`` (exact, by Newton's method; HonestDiD simulates it)."""
    mu = abs(float(mu))
    c = max(mu + float(special.ndtri(p)), float(special.ndtri((1 + p) / 2)))
    for _ in range(50):
        f = special.ndtr(c - mu) - special.ndtr(-c - mu) - p
        d = math.exp(-0.5 * (c - mu) ** 2) / math.sqrt(2 * math.pi) + math.exp(-0.5 * (c + mu) ** 2) / math.sqrt(2 * math.pi)
        step = f / d
        c -= step
        if abs(step) < 1e-13 * max(1.0, c):
            break
    return float(c)


class _FLCIProblem:
    r"""The bias / standard-deviation frontier of affine estimators of l'tau under Delta^SD.

    The estimator is :math:`v'\hat\beta` with post weights :math:`l` and pre weights
    :math:`D w` (:math:`D` first differences), :math:`\sum_k w_k = \sum_s s\,l_s` so that it is
    unbiased for linear trends. With the cumulative sums :math:`u = (u_1..u_{K-1})` of
    :math:`w` (:math:`u_K = \sum w` fixed) the worst-case bias per unit of :math:`M` is
    :math:`b_0 + \lVert u\rVert_1` and the variance a quadratic :math:`u'Pu + p'u + r_0`
    (HonestDiD's formulation). Every point of the frontier solves the lasso
    :math:`\min_u u'Pu + p'u + \lambda\lVert u\rVert_1` for some :math:`\lambda\ge 0`, whose
    solution path is piecewise linear in :math:`\lambda`; it is computed exactly
    (homotopy), and the half-length is minimised along it.
    """

    def __init__(self, sigma, npre, npost, l_vec):
        K = npre
        self.K, self.T, self.l = npre, npost, l_vec
        D = np.eye(K) - np.eye(K, k=-1)
        self.D = D
        Q = D.T @ sigma[:K, :K] @ D
        q = 2 * D.T @ sigma[:K, K:] @ l_vec
        r = float(l_vec @ sigma[K:, K:] @ l_vec)
        self.c = c = float(np.arange(1, npost + 1) @ l_vec)
        self.b0 = float(sum(abs(np.arange(1, j + 1) @ l_vec[npost - j:]) for j in range(1, npost + 1)) - c + abs(c))
        D1 = D[:, :-1]
        eK = np.zeros(K)
        eK[-1] = 1.0
        self.D1, self.eK = D1, eK
        self.P = D1.T @ Q @ D1
        self.p = D1.T @ (2 * c * Q @ eK + q)
        self.r0 = float(c * c * Q[-1, -1] + c * q[-1] + r)
        self.segments = self._path()

    def _path(self):
        """Lasso homotopy: list of (lam_lo, lam_hi, active, alpha, beta) with u_A = alpha + lam*beta."""
        P, p = self.P, self.p
        n = len(p)
        if n == 0:
            return []
        lam = float(np.abs(p).max())
        segs = []
        if lam <= 0:
            return [(0.0, 0.0, np.array([], int), np.zeros(0), np.zeros(0))]
        j0 = int(np.abs(p).argmax())
        active, signs = [j0], {j0: -np.sign(p[j0])}
        for _ in range(20 * n + 20):
            A = np.array(active, int)
            sA = np.array([signs[j] for j in active])
            H = 2 * P[np.ix_(A, A)]
            alpha_ = -np.linalg.solve(H, p[A])
            beta_ = -np.linalg.solve(H, sA)
            inactive = np.setdiff1d(np.arange(n), A)
            events = []  # (lam', kind, index, sign)
            for i, j in enumerate(A):
                if abs(beta_[i]) > 1e-15:
                    lt = -alpha_[i] / beta_[i]
                    if 0 <= lt < lam * (1 - 1e-12):
                        events.append((lt, "drop", j, 0.0))
            if len(inactive):
                gam = 2 * P[np.ix_(inactive, A)] @ alpha_ + p[inactive]
                eta = 2 * P[np.ix_(inactive, A)] @ beta_
                for i, j in enumerate(inactive):
                    for sgn, denom, num in ((-1.0, 1 - eta[i], gam[i]), (1.0, 1 + eta[i], -gam[i])):
                        if abs(denom) > 1e-15:
                            lt = num / denom
                            if 0 <= lt < lam * (1 - 1e-12):
                                events.append((lt, "add", j, sgn))
            nxt = max(events, key=lambda e: e[0]) if events else (0.0, "end", -1, 0.0)
            segs.append((nxt[0], lam, A.copy(), alpha_, beta_))
            lam = nxt[0]
            if nxt[1] == "drop":
                active.remove(nxt[2])
                del signs[nxt[2]]
            elif nxt[1] == "add":
                active.append(nxt[2])
                signs[nxt[2]] = nxt[3]
            if lam <= 0 or nxt[1] == "end" or not active and lam <= 0:
                break
            if not active:  # everything dropped: u = 0 below this lambda too
                segs.append((0.0, lam, np.array([], int), np.zeros(0), np.zeros(0)))
                break
        return segs

    def _u(self, seg, lam):
        u = np.zeros(len(self.p))
        u[seg[2]] = seg[3] + lam * seg[4]
        return u

    def _bias_sd(self, u):
        var = float(u @ self.P @ u + self.p @ u + self.r0)
        return self.b0 + float(np.abs(u).sum()), math.sqrt(max(var, 0.0))

    def _hl(self, u, M, alpha):
        b, sd = self._bias_sd(u)
        if sd <= 0:
            return math.inf
        return _folded_normal_quantile(1 - alpha, M * b / sd) * sd

    def optimal(self, M: float, alpha: float) -> tuple[float, np.ndarray]:
        """Half-length and weight vector v = (pre weights, l) of the shortest FLCI."""
        if not self.segments:
            best_u = np.zeros(len(self.p))
            best = self._hl(best_u, M, alpha)
        else:
            best, best_u = math.inf, None
            # the half-length at every breakpoint of the path, then a 1-D search on the
            # segments next to the best breakpoint
            ends = [self._hl(self._u(seg, seg[1]), M, alpha) for seg in self.segments]
            ends.append(self._hl(self._u(self.segments[-1], self.segments[-1][0]), M, alpha))
            k = int(np.argmin(ends))
            for i in {max(k - 1, 0), min(k, len(self.segments) - 1)}:
                seg = self.segments[i]
                lo, hi = seg[0], seg[1]
                for lam in (lo, hi):
                    v = self._hl(self._u(seg, lam), M, alpha)
                    if v < best:
                        best, best_u = v, self._u(seg, lam)
                if hi - lo > 1e-14 * max(hi, 1e-300):
                    res = optimize.minimize_scalar(lambda lam: self._hl(self._u(seg, lam), M, alpha),
                                                   bounds=(lo, hi), method="bounded",
                                                   options={"xatol": 1e-9 * max(hi, 1e-300)})
                    if res.fun < best:
                        best, best_u = float(res.fun), self._u(seg, res.x)
            # lam = lam_max and above: u = 0 (the estimator that only extrapolates the last pre-period)
            v0 = self._hl(np.zeros(len(self.p)), M, alpha)
            if v0 < best:
                best, best_u = v0, np.zeros(len(self.p))
        w = self.D1 @ best_u + self.c * self.eK
        return best, np.concatenate([self.D @ w, self.l])


def _flci(betahat, sigma, npre, npost, l_vec, M, alpha, problem=None):
    prob = problem or _FLCIProblem(sigma, npre, npost, l_vec)
    chi, v = prob.optimal(M, alpha)
    centre = float(v @ betahat)
    return centre - chi, centre + chi


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, repr=False)
class SensitivityResult(ResultDisplay):
    """Robust confidence sets over a grid of M (or Mbar); immutable.

    Attributes
    ----------
    grid, lb, ub : numpy.ndarray
        The M (smoothness) or Mbar (relative magnitudes) values and the robust
        confidence set's bounds at each.
    method, delta : str
        ``"C-LF"``, ``"Conditional"`` or ``"FLCI"``; ``"DeltaRM"`` or ``"DeltaSD"``.
    original_ci : tuple of float
        The usual confidence interval for the same parameter under exact parallel trends.
    estimate : float
        The point estimate ``l'beta_post``.
    breakdown_value : float
        Largest grid value up to which every robust set excludes zero (NaN when
        the set at the smallest grid value already contains zero). ``lb``/``ub`` are
        -inf/inf where the set is unbounded on the (extended) test-inversion grid and NaN
        where it is empty.
    """

    sensitivity_type: str
    method: str
    delta: str
    grid: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    original_ci: tuple[float, float]
    estimate: float
    alpha: float
    target: str = ""
    yname: str = ""
    l_vec: np.ndarray = field(default=None, repr=False)
    n_treated: int | None = None
    n_control: int | None = None

    @property
    def breakdown_value(self) -> float:
        excl = (self.lb > 0) | (self.ub < 0)
        if len(excl) == 0 or not excl[0]:
            return float("nan")
        bad = np.flatnonzero(~excl)
        last = (bad[0] - 1) if len(bad) else len(excl) - 1
        return float(self.grid[last])

    @property
    def parameter(self) -> str:
        return "Mbar" if self.sensitivity_type == "relative_magnitude" else "M"

    def tidy(self, include_original: bool = False) -> pd.DataFrame:
        """One row per grid value, columns :data:`SENSITIVITY_COLUMNS`.

        The estimate core first (``reach._display.ESTIMATE_CORE``): ``term`` the target
        parameter, ``estimate`` its point estimate, ``conf_low`` / ``conf_high`` the robust
        confidence set at that grid value; no standard error or test (a robust set is not a
        Wald interval). Then ``M`` (Mbar for relative magnitudes), ``method``, ``delta``,
        ``excludes_zero`` and the deprecated aliases ``lb`` (= ``conf_low``) and ``ub``
        (= ``conf_high``), kept for one release. With ``include_original`` a first row
        (``M`` missing, ``method="Original"``) gives the usual confidence interval.
        """
        t = pd.DataFrame({
            "M": self.grid.astype(float), "conf_low": self.lb, "conf_high": self.ub,
            "method": self.method, "delta": self.delta,
            "excludes_zero": (self.lb > 0) | (self.ub < 0),
        })
        if include_original:
            lo, hi = self.original_ci
            head = pd.DataFrame({"M": [np.nan], "conf_low": [lo], "conf_high": [hi], "method": ["Original"],
                                 "delta": [""], "excludes_zero": [lo > 0 or hi < 0]})
            t = pd.concat([head, t], ignore_index=True)
        t.insert(0, "term", self.target or "l_vec")
        t.insert(1, "estimate", float(self.estimate))
        t["n_treated"] = np.nan if self.n_treated is None else self.n_treated
        t["n_control"] = np.nan if self.n_control is None else self.n_control
        t["lb"], t["ub"] = t["conf_low"], t["conf_high"]  # deprecated aliases (one release)
        return estimate_table(t, SENSITIVITY_COLUMNS[len(ESTIMATE_CORE):], tests=False)

    def summary(self) -> str:
        p = self.parameter
        lo, hi = self.original_ci
        lines = [
            f"Sensitivity to parallel trends ({self.delta}, {self.method}, alpha {self.alpha:g})"
            + (f": {self.yname}" if self.yname else ""),
            f" target {self.target or 'l_vec'}  estimate {self.estimate:.4g}  original CI [{lo:.4g}, {hi:.4g}]",
            f" {p:>8}  {'lb':>10}  {'ub':>10}",
        ]
        for g, a, b in zip(self.grid, self.lb, self.ub):
            lines.append(f" {g:8.4g}  {a:10.4g}  {b:10.4g}")
        bv = self.breakdown_value
        lines.append(f" breakdown value ({p}): " + ("none: zero is inside the set at the smallest value"
                                                     if np.isnan(bv) else f"{bv:g}"))
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        t = self.tidy(include_original=True)
        head = f"| {self.parameter} | lb | ub | method |\n|---|---|---|---|\n"
        body = "".join(
            f"| {'' if np.isnan(r.M) else f'{r.M:g}'} | {r.conf_low:.4g} | {r.conf_high:.4g} | {r.method} |\n"
            for r in t.itertuples()
        )
        bv = self.breakdown_value
        return (f"**Sensitivity to parallel trends ({self.delta}, {self.method})"
                + (f" for `{self.yname}`" if self.yname else "") + f", target {self.target}**\n\n"
                + head + body + f"\nBreakdown value: {'none' if np.isnan(bv) else f'{bv:g}'}\n")


# --------------------------------------------------------------------------- public functions
def _check_inputs(betahat, sigma, num_pre_periods, num_post_periods, l_vec):
    b = np.asarray(betahat, dtype=float).ravel()
    S = np.asarray(sigma, dtype=float)
    npre, npost = int(num_pre_periods), int(num_post_periods)
    if npre < 1:
        raise ValueError(f"num_pre_periods must be at least 1 (the restrictions are built from pre-trends); got {npre}")
    if npost < 1:
        raise ValueError(f"num_post_periods must be at least 1; got {npost}")
    if len(b) != npre + npost:
        raise ValueError(f"betahat has {len(b)} entries; num_pre_periods + num_post_periods = {npre + npost}")
    if S.shape != (len(b), len(b)):
        raise ValueError(f"sigma must be {len(b)} x {len(b)}; got shape {S.shape}")
    if not np.all(np.isfinite(b)) or not np.all(np.isfinite(S)):
        raise ValueError("betahat and sigma must be finite")
    if not np.allclose(S, S.T, rtol=1e-8, atol=1e-12 * np.abs(S).max()):
        raise ValueError("sigma must be symmetric")
    if np.linalg.eigvalsh((S + S.T) / 2).min() < -1e-10 * np.abs(S).max():
        raise ValueError("sigma must be positive semi-definite")
    lv = np.zeros(npost) if l_vec is None else np.asarray(l_vec, dtype=float).ravel()
    if l_vec is None:
        lv[0] = 1.0
    if len(lv) != npost:
        raise ValueError(f"l_vec must have num_post_periods = {npost} entries; got {len(lv)}")
    if not np.any(lv != 0):
        raise ValueError("l_vec must not be all zero")
    return b, (S + S.T) / 2, npre, npost, lv


def original_ci(betahat, sigma, num_pre_periods, num_post_periods, l_vec=None, alpha=0.05):
    r"""Usual confidence interval for :math:`\theta = l'\beta_{post}` (HonestDiD's ``constructOriginalCS``).

    Notes
    -----
    :math:`l'\hat\beta_{post} \pm z_{1-\alpha/2}\sqrt{l'\Sigma_{post}l}`.

    Examples
    --------
    >>> original_ci([0.1, 0.5], [[0.01, 0.0], [0.0, 0.04]], 1, 1)  # doctest: +ELLIPSIS
    (0.108..., 0.891...)
    """
    b, S, npre, npost, lv = _check_inputs(betahat, sigma, num_pre_periods, num_post_periods, l_vec)
    est = float(lv @ b[npre:])
    se = math.sqrt(float(lv @ S[npre:, npre:] @ lv))
    z = stats.norm.ppf(1 - alpha / 2)
    return float(est - z * se), float(est + z * se)


def sensitivity_results(
    betahat,
    sigma,
    num_pre_periods: int,
    num_post_periods: int,
    sensitivity_type: str = "relative_magnitude",
    grid: Sequence[float] | None = None,
    l_vec=None,
    method: str | None = None,
    alpha: float = 0.05,
    grid_points: int = 1000,
    grid_lb: float | None = None,
    grid_ub: float | None = None,
    hybrid_kappa: float | None = None,
    lf_sims: int = 1000,
    seed: int = 0,
    search: str = "bracket",
    coarse_step: int = 10,
    target: str = "",
    yname: str = "",
) -> SensitivityResult:
    r"""Robust confidence sets from event-study coefficients and their covariance.

    The raw-input route, as HonestDiD's ``createSensitivityResults`` (smoothness)
    and ``createSensitivityResults_relativeMagnitudes`` (relative magnitudes).

    Parameters
    ----------
    betahat : array_like
        Event-study coefficients, pre-periods first (in time order), then post-periods;
        the reference period (normalised to zero) is left out.
    sigma : array_like
        Their covariance matrix.
    num_pre_periods, num_post_periods : int
    sensitivity_type : {"relative_magnitude", "smoothness"}
    grid : sequence of float, optional
        Mbar (relative magnitudes) or M (smoothness) values. Default: 0, 0.25, ..., 2
        for Mbar; for M ten values from 0 to the largest upper confidence bound of a
        pre-period second difference (HonestDiD's default).
    l_vec : array_like, optional
        Weights of the target :math:`\theta = l'\tau`; default the first post period.
    method : str, optional
        ``"C-LF"`` (default) or ``"Conditional"`` for relative magnitudes; ``"FLCI"``
        (default), ``"Conditional"`` or ``"C-LF"`` for smoothness.
    alpha : float
    grid_points, grid_lb, grid_ub : optional
        The theta grid of the test inversion (conditional methods). Default 1000 points
        on ``0 +/- 20 sd(theta_hat)`` (relative magnitudes) or the identified set at
        :math:`\beta=0` ``+/- 20 sd`` (smoothness), as HonestDiD; unlike HonestDiD, a default
        grid is extended (same step) when the set is empty on it or reaches one of its ends.
    hybrid_kappa : float, optional
        Size of the least-favourable first stage of "C-LF"; default ``alpha / 10``.
    lf_sims, seed : int
        Draws and seed of the least-favourable critical value.
    search : {"bracket", "grid"}
        How the theta grid is searched (conditional methods). "grid": the test at every
        grid point (HonestDiD; the set is the hull of the accepted points), with a pass
        over every ``coarse_step``-th point first and every point between two of those whose
        decisions differ (``coarse_step=1``: all points). "bracket" (default, much faster):
        the ends are bracketed and bisected on the same grid from an accepted point,
        which gives the same grid points when the accepted set is an interval.
    coarse_step : int
        See ``search``.
    target, yname : str
        Labels for the display.

    Returns
    -------
    SensitivityResult

    Notes
    -----
    Relative magnitudes: :math:`\Delta^{RM}(\bar M) = \{\delta : |\delta_{t+1}-\delta_t|
    \le \bar M \max_{s<0}|\delta_{s+1}-\delta_s|\ \forall t \ge 0\}`, the union over the
    location :math:`s` and sign of the largest pre-period change of polyhedra
    :math:`A_{s,\pm}\delta \le 0`. For each, :math:`H_0: \theta=\bar\theta` is
    :math:`E[A\hat\beta - A_{post}\Gamma^{-1}(\bar\theta, \tilde\tau')'] \le 0` with nuisance
    :math:`\tilde\tau` (Rambachan & Roth 2023, sec. 5), tested with ARP's conditional
    test (or its least-favourable hybrid), using only moments that involve
    post-periods. The confidence set is the union over :math:`(s,\pm)` of the accepted grid points;
    ``lb``/``ub`` are the smallest / largest accepted grid point.

    Smoothness: :math:`\Delta^{SD}(M) = \{\delta : |(\delta_{t+1}-\delta_t)-(\delta_t-\delta_{t-1})| \le M\}`.
    The FLCI is :math:`v'\hat\beta \pm \chi` with
    :math:`v = (w_{pre}', l')'`, :math:`\sum_s w`-constraint making :math:`v'\beta`
    unbiased for linear trends, and :math:`\chi = \min_v \sigma_v cv_\alpha(M\bar b_v/\sigma_v)`.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.array([0.01, -0.01, 0.0, 0.2, 0.25])
    >>> S = np.eye(5) * 0.001
    >>> r = sensitivity_results(b, S, 3, 2, "smoothness", grid=[0.0, 0.05])
    >>> r.tidy()[["M", "method"]].to_dict("list")
    {'M': [0.0, 0.05], 'method': ['FLCI', 'FLCI']}
    >>> r = sensitivity_results(b, S, 3, 2, "relative_magnitude", grid=[0.0, 1.0])
    >>> bool(r.lb[0] > 0), r.method
    (True, 'C-LF')
    """
    b, S, npre, npost, lv = _check_inputs(betahat, sigma, num_pre_periods, num_post_periods, l_vec)
    check_choice("sensitivity_type", sensitivity_type, SENSITIVITY_TYPES)
    allowed = METHODS[sensitivity_type]
    method = allowed[0] if method is None else check_choice("method", method, allowed)
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    check_choice("search", search, ("bracket", "grid"))
    kappa = alpha / 10 if hybrid_kappa is None else float(hybrid_kappa)
    if not 0 < kappa < alpha:
        raise ValueError(f"hybrid_kappa must be in (0, alpha); got {kappa}")
    if grid is None:
        if sensitivity_type == "relative_magnitude":
            grid = _DEFAULT_GRID[sensitivity_type]
        else:
            grid = np.linspace(0.0, _sd_m_upper_bound(b, S, npre, alpha), 10)
    g = np.asarray(grid, dtype=float).ravel()
    if len(g) == 0 or not np.all(np.isfinite(g)) or (g < 0).any():
        raise ValueError(f"grid must be a non-empty sequence of finite values >= 0; got {list(grid)}")
    sd_theta = math.sqrt(float(lv @ S[npre:, npre:] @ lv))
    lbs, ubs = np.full(len(g), np.nan), np.full(len(g), np.nan)
    hybrid = {"C-LF": "LF", "Conditional": "ARP"}.get(method)
    flci_prob = _FLCIProblem(S, npre, npost, lv) if method == "FLCI" else None
    for i, m in enumerate(g):
        if method == "FLCI":
            lbs[i], ubs[i] = _flci(b, S, npre, npost, lv, m, alpha, flci_prob)
            continue
        if sensitivity_type == "relative_magnitude":
            lo, hi = -20 * sd_theta, 20 * sd_theta
            tests = _rm_tests(b, S, npre, npost, lv, m, alpha, hybrid, kappa, lf_sims, seed)
        else:
            id_lo, id_hi = _sd_id_set_at_zero(npre, npost, lv, m)
            lo, hi = id_lo - 20 * sd_theta, id_hi + 20 * sd_theta
            tests = _sd_tests(b, S, npre, npost, lv, m, alpha, hybrid, kappa, lf_sims, seed)
        lo = lo if grid_lb is None else float(grid_lb)
        hi = hi if grid_ub is None else float(grid_ub)
        extend = grid_lb is None and grid_ub is None
        if search == "grid":
            run = lambda th, tests=tests: _union_accept(tests, th, coarse_step)  # noqa: E731
            lbs[i], ubs[i] = _invert(run, lo, hi, int(grid_points), float(lv @ b[npre:]), extend=extend)
        else:
            run = lambda th, tests=tests: _union_accept(tests, th, 1)  # noqa: E731
            lbs[i], ubs[i] = _invert_bracket(run, lo, hi, int(grid_points), float(lv @ b[npre:]), extend,
                                             coarse_step)
    oc = original_ci(b, S, npre, npost, lv, alpha)
    return SensitivityResult(
        sensitivity_type=sensitivity_type, method=method, delta=_DELTA[sensitivity_type],
        grid=_ro(g), lb=_ro(lbs), ub=_ro(ubs), original_ci=(float(oc[0]), float(oc[1])),
        estimate=float(lv @ b[npre:]), alpha=alpha, target=target, yname=yname, l_vec=_ro(lv),
    )


def _invert(run, lo: float, hi: float, n: int, estimate: float, extend: bool, max_extend: int = 4):
    """Smallest and largest accepted theta of the grid ``linspace(lo, hi, n)``.

    HonestDiD's default grid is centred on zero (relative magnitudes) or on the identified set at
    beta = 0 (smoothness), +/- 20 standard errors. When the accepted set is empty there or touches
    an end of the grid, the grid is extended with the same step (so the original points and
    decisions are kept) towards the estimate / the open end, at most ``max_extend`` times. Still
    open: +/-inf; still empty: NaN (every theta rejected: the restrictions are rejected).
    """
    if n < 2:
        raise ValueError(f"grid_points must be at least 2; got {n}")
    step = (hi - lo) / (n - 1)
    k_lo, k_hi = 0, n - 1
    theta = lo + step * np.arange(k_lo, k_hi + 1)
    acc = run(theta)
    for _ in range(max_extend if extend and step > 0 else 0):
        width = k_hi - k_lo
        if acc.any():
            if not (acc[0] or acc[-1]):
                break
            k_lo -= width if acc[0] else 0
            k_hi += width if acc[-1] else 0
        else:
            k_est = math.floor((estimate - lo) / step)
            k_lo, k_hi = min(k_lo, k_est - width // 2), max(k_hi, k_est + width // 2)
        theta = lo + step * np.arange(k_lo, k_hi + 1)
        acc = run(theta)
    if not acc.any():
        return np.nan, np.nan
    return (-np.inf if acc[0] else theta[acc].min()), (np.inf if acc[-1] else theta[acc].max())


def _invert_bracket(point_test, lo: float, hi: float, n: int, estimate: float, extend: bool,
                    coarse_step: int, max_span: int = 64):
    """Ends of the accepted set on the lattice ``lo + k * step`` (step of ``linspace(lo, hi, n)``)
    found by bracketing from an accepted point, assuming the accepted set is connected.

    From an accepted lattice point (the estimate's, else one of a pass over every
    ``coarse_step``-th point of the default grid), each end is bracketed by testing the
    points at offsets 1, 2, 4, ... at once (both sides in one batch), then narrowed by testing
    32 points of each bracket at a time. Without ``extend`` the lattice is limited to the default grid; with it, to
    ``max_span`` times the default grid's width. Returns the same grid points as testing every
    point when the accepted set is an interval.
    """
    if n < 2:
        raise ValueError(f"grid_points must be at least 2; got {n}")
    step = (hi - lo) / (n - 1)
    if not step > 0:
        raise ValueError(f"the theta grid needs grid_lb < grid_ub; got {lo}, {hi}")
    kmin, kmax = (-(max_span * n), (max_span + 1) * n) if extend else (0, n - 1)
    memo: dict[int, bool] = {}

    def f(ks):
        ks = [int(k) for k in ks]
        new = sorted({k for k in ks if k not in memo})
        if new:
            memo.update(zip(new, point_test(lo + step * np.array(new, float)).tolist()))
        return np.array([memo[k] for k in ks], bool)

    k0 = int(np.clip(round((estimate - lo) / step), kmin, kmax))

    def offsets(room):
        return np.unique(np.minimum(2 ** np.arange(0, int(math.log2(max(room, 1))) + 2), room)) if room > 0 \
            else np.zeros(0, int)

    # one batch: the estimate's point and points at doubling distances on both sides
    up, down = offsets(kmax - k0), offsets(k0 - kmin)
    f(np.r_[k0, k0 + up, k0 - down])
    if not memo[k0]:
        ks = np.unique(np.r_[np.arange(0, n, max(int(coarse_step), 1)), n - 1])
        acc = f(ks)
        if not acc.any():
            return np.nan, np.nan
        k0 = int(ks[acc][np.argmin(np.abs(ks[acc] - k0))])
        up, down = offsets(kmax - k0), offsets(k0 - kmin)
        f(np.r_[k0 + up, k0 - down])
    # brackets (last accepted offset, first rejected offset) per side; None: open
    br = {}
    for d, offs in ((1, up), (-1, down)):
        acc = np.array([memo[k0 + d * int(o)] for o in offs], bool)
        if acc.all():
            br[d] = None
        else:
            i = int(np.argmin(acc))
            br[d] = [int(offs[i - 1]) if i > 0 else 0, int(offs[i])]
    while any(v is not None and v[1] - v[0] > 1 for v in br.values()):
        batch = {}
        for d, v in br.items():
            if v is not None and v[1] - v[0] > 1:
                inner = np.unique(np.linspace(v[0], v[1], 34).round().astype(int))
                batch[d] = inner[(inner > v[0]) & (inner < v[1])]
        f(np.concatenate([k0 + d * o for d, o in batch.items()]))
        for d, inner in batch.items():
            acc = np.array([memo[k0 + d * int(o)] for o in inner], bool)
            if acc.all():
                br[d][0] = int(inner[-1])
            else:
                i = int(np.argmin(acc))
                br[d] = [int(inner[i - 1]) if i > 0 else br[d][0], int(inner[i])]
    lo_end = -np.inf if br[-1] is None else lo + step * (k0 - br[-1][0])
    hi_end = np.inf if br[1] is None else lo + step * (k0 + br[1][0])
    return lo_end, hi_end


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


def _event_study_inputs(es) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Event times, estimates and covariance of a dynamic aggregation (reference period removed)."""
    from reach.did import AggteResult

    if not isinstance(es, AggteResult):
        raise TypeError(f"es must be an AggteResult from reach.did.aggte(type='dynamic'); got {type(es).__name__}")
    if es.type != "dynamic":
        raise ValueError(f"es must be an event study: aggte(type='dynamic'); got type={es.type!r}")
    keys = np.asarray(es.keys).astype(int)
    att = np.asarray(es.att, dtype=float)
    if hasattr(es, "vcov"):
        V = np.asarray(es.vcov(), dtype=float)
    else:
        if es.inffunc is None:
            raise ValueError("es has no influence functions (inffunc), so no covariance of the event-time estimates")
        IF = np.asarray(es.inffunc, dtype=float)
        n = IF.shape[0]
        # same normalisation as the standard errors of reach.did (sqrt(diag) == se)
        V = IF.T @ IF / n / n
    if np.isnan(att).any():
        bad = keys[np.isnan(att)].tolist()
        raise ValueError(f"event-study estimates missing for event times {bad}")
    # universal base period: the reference event time is an exact zero with no variance
    ref = (att == 0) & (np.diag(V) <= 1e-300)
    universal = bool(ref.any())
    keep = ~ref
    keys, att, V = keys[keep], att[keep], V[np.ix_(keep, keep)]
    order = np.argsort(keys)
    return keys[order], att[order], V[np.ix_(order, order)], universal


def honest_did(
    es,
    event_time: int | str = 0,
    sensitivity_type: str = "relative_magnitude",
    grid: Sequence[float] | None = None,
    alpha: float = 0.05,
    method: str | None = None,
    **kwargs: Any,
) -> SensitivityResult:
    r"""Sensitivity of an event-study effect to violations of parallel trends (Rambachan & Roth 2023).

    Parameters
    ----------
    es : reach.did.AggteResult
        ``aggte(..., type="dynamic")``: event-time estimates and their influence
        functions. Pre-periods are the negative event times, post-periods the others.
        Use ``att_gt(..., base_period="universal")`` so every pre-period estimate is
        relative to the same reference period (a warning otherwise).
    event_time : int or "average"
        The target: the effect at this event time (>= 0), or ``"average"`` for the
        mean of the post-period effects.
    sensitivity_type : {"relative_magnitude", "smoothness"}
    grid : sequence of float, optional
        Mbar or M values (see :func:`sensitivity_results`).
    alpha : float
    method : str, optional
        See :func:`sensitivity_results`; defaults "C-LF" (relative magnitudes), "FLCI" (smoothness).
    **kwargs
        Passed to :func:`sensitivity_results` (``grid_points``, ``lf_sims``, ``seed``, ...).

    Returns
    -------
    SensitivityResult
        With ``n_treated`` / ``n_control`` the smallest numbers of treated / comparison
        units behind any event-time estimate used (for :func:`sensitivity_table`).

    Notes
    -----
    The covariance of the event-time estimates is :math:`\hat\Sigma = \psi'\psi/n^2`
    from the units' influence functions :math:`\psi` (the same that give the standard
    errors of :func:`reach.did.aggte`); the target is :math:`\theta = l'\tau` with
    :math:`l = e_{event\_time}` or :math:`l = \iota/\bar T`. Event times must be
    consecutive (HonestDiD's restrictions are on differences of adjacent periods).

    Examples
    --------
    >>> import pandas as pd
    >>> from reach.did import aggte, att_gt
    >>> rng = np.random.default_rng(1)
    >>> n = 600
    >>> panel = pd.DataFrame({"id": np.repeat(np.arange(n), 6), "year": np.tile(np.arange(1, 7), n),
    ...                       "g": np.repeat(rng.choice([0, 4, 5], n), 6)})
    >>> panel["y"] = rng.normal(size=6 * n) + 1.0 * ((panel.year >= panel.g) & (panel.g > 0))
    >>> es = aggte(att_gt(panel, "y", "year", "id", "g", base_period="universal", bootstrap=False),
    ...            type="dynamic")
    >>> res = honest_did(es, event_time="average", sensitivity_type="smoothness", grid=[0.0, 0.5])
    >>> res.tidy()[["M", "conf_low", "method", "delta"]].columns.tolist() == ["M", "conf_low", "method", "delta"]
    True
    >>> res.tidy().columns.tolist()[:3]
    ['term', 'estimate', 'std_error']
    >>> bool(res.lb[0] > 0)  # the planted effect of 1 survives a linear pre-trend
    True
    """
    import warnings

    check_choice("sensitivity_type", sensitivity_type, SENSITIVITY_TYPES)
    keys, att, V, universal = _event_study_inputs(es)
    pre, post = keys[keys < 0], keys[keys >= 0]
    if len(pre) == 0:
        raise ValueError(
            f"the event study has no pre-period estimates (event times {keys.tolist()}); both "
            "relative magnitudes and smoothness need at least one: aggregate with a smaller min_e"
        )
    if len(post) == 0:
        raise ValueError(f"the event study has no event time >= 0 (event times {keys.tolist()})")
    ref_gap = 2 if universal else 1
    gaps = np.diff(pre).tolist() + np.diff(post).tolist()
    if any(g != 1 for g in gaps) or (post[0] - pre[-1]) > ref_gap or post[0] != 0:
        raise ValueError(f"event times must be consecutive around the reference period; got {keys.tolist()}")
    if not universal:
        warnings.warn(
            "the event study has no reference event time with an exact zero: its pre-period estimates are "
            "probably short differences (att_gt base_period='varying'); Rambachan & Roth's restrictions are "
            "stated for estimates relative to one reference period: use att_gt(..., base_period='universal')",
            UserWarning, stacklevel=2,
        )
    if isinstance(event_time, str):
        check_choice("event_time", event_time, ["average"])
        l_vec = np.full(len(post), 1.0 / len(post))
        target = "average of event times " + f"{post[0]}..{post[-1]}"
    else:
        if event_time not in post.tolist():
            raise ValueError(f"event_time must be 'average' or one of {post.tolist()}; got {event_time!r}")
        l_vec = (post == int(event_time)).astype(float)
        target = f"event time {int(event_time)}"
    res = sensitivity_results(att, V, len(pre), len(post), sensitivity_type=sensitivity_type, grid=grid,
                              l_vec=l_vec, method=method, alpha=alpha, target=target, yname=es.yname, **kwargs)
    # every event-time estimate enters the robust set: it rests on the smallest of their supports
    used = np.isin(np.asarray(es.keys).astype(int), keys)
    ntr_keys, nco_keys = np.asarray(es.n_treated_keys), np.asarray(es.n_control_keys)
    ntr = int(ntr_keys[used].min()) if len(ntr_keys) == len(used) and used.any() else int(es.n_treated)
    nco = int(nco_keys[used].min()) if len(nco_keys) == len(used) and used.any() else int(es.n_control)
    return dataclasses.replace(res, n_treated=ntr, n_control=nco)


# --------------------------------------------------------------------------- publishing
def sensitivity_table(res: SensitivityResult, rules=None, name: str | None = None):
    """Disclosure check of a sensitivity analysis: the original CI and one row per grid value.

    Parameters
    ----------
    res : SensitivityResult
        From :func:`honest_did` (which records the treated and comparison units behind
        the target), or from :func:`sensitivity_results` with ``n_treated`` / ``n_control``
        set via :func:`dataclasses.replace`.
    rules : reach.disclosure.Rules or mapping, optional
        Rows resting on fewer treated / comparison units than the rules allow are
        suppressed (bounds and ``excludes_zero`` blanked), never dropped.
    name : str, optional
        Name of the check; default ``sensitivity_<outcome>_<delta>``.

    Returns
    -------
    reach.disclosure.Checked
        ``.suppress()`` is the publishable table (the estimate core, then ``outcome, target,
        M, method, delta, excludes_zero, lb, ub``).

    Examples
    --------
    >>> import dataclasses
    >>> r = sensitivity_results([0.0, 0.02, 0.5, 0.6], np.eye(4) * 0.01, 2, 2, "smoothness", grid=[0.0])
    >>> r = dataclasses.replace(r, n_treated=8, n_control=400)
    >>> bool(sensitivity_table(r).suppress()["lb"].isna().all())  # 8 treated < 10: suppressed
    True
    """
    from reach.disclosure import check_estimates

    if not isinstance(res, SensitivityResult):
        raise TypeError(f"res must be a SensitivityResult; got {type(res).__name__}")
    if res.n_treated is None or res.n_control is None:
        raise ValueError("res has no n_treated / n_control (units behind the estimate): use honest_did on an "
                         "aggte result, or set them with dataclasses.replace(res, n_treated=..., n_control=...)")
    t = res.tidy(include_original=True)
    t["excludes_zero"] = t["excludes_zero"].astype(float)
    t["outcome"], t["target"] = res.yname, res.target
    t = estimate_table(t, ["outcome", "target", *SENSITIVITY_COLUMNS[len(ESTIMATE_CORE):]], tests=False)
    label = "_".join(x for x in ("sensitivity", res.yname, res.delta) if x)
    return check_estimates(t, name or label, n_treated="n_treated", n_control="n_control", rules=rules,
                           columns=["estimate", "conf_low", "conf_high", "lb", "ub", "excludes_zero"])


def sensitivity_plot(res: SensitivityResult, ax=None, data: pd.DataFrame | None = None, title: str | None = None):
    """Robust confidence sets against M / Mbar beside the original CI (HonestDiD's createSensitivityPlot).

    ``data`` may be the publishable table of :func:`sensitivity_table` (``.suppress()``):
    suppressed rows (missing bounds) are not drawn. Unbounded sets are drawn to the
    edge of the plot with an open end marker.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> r = sensitivity_results([0.0, 0.02, 0.5, 0.6], np.eye(4) * 0.01, 2, 2, "smoothness", grid=[0.0, 0.1])
    >>> fig = sensitivity_plot(r)
    >>> fig.axes[0].get_xlabel()
    'M'
    """
    import matplotlib.pyplot as plt

    t = res.tidy(include_original=True) if data is None else data
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    grid_rows = t[t["method"] != "Original"]
    orig = t[t["method"] == "Original"]
    m = grid_rows["M"].to_numpy(float)
    gap = (np.ptp(m) if len(m) > 1 and np.ptp(m) > 0 else 1.0) / max(len(m), 4)
    x_orig = (m.min() if len(m) else 0.0) - gap
    finite = np.r_[grid_rows[["conf_low", "conf_high"]].to_numpy(float).ravel(),
                   orig[["conf_low", "conf_high"]].to_numpy(float).ravel()]
    finite = finite[np.isfinite(finite)]
    span = (finite.min(), finite.max()) if len(finite) else (-1.0, 1.0)
    pad = 0.1 * (span[1] - span[0] or 1.0)
    lo_edge, hi_edge = span[0] - pad, span[1] + pad
    for x, rows, colour, label in ((np.full(len(orig), x_orig), orig, "tab:grey", "original"),
                                   (m, grid_rows, "tab:blue", f"robust ({res.method})")):
        lb = rows["conf_low"].to_numpy(float)
        ub = rows["conf_high"].to_numpy(float)
        keep = ~(np.isnan(lb) | np.isnan(ub))
        if keep.any():
            ax.vlines(x[keep], np.clip(lb[keep], lo_edge, hi_edge), np.clip(ub[keep], lo_edge, hi_edge),
                      color=colour, lw=3, label=label)
            for arr, edge, marker in ((lb, lo_edge, "v"), (ub, hi_edge, "^")):
                open_end = keep & np.isinf(arr)
                if open_end.any():
                    ax.plot(x[open_end], np.full(open_end.sum(), edge), marker, color=colour)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylim(lo_edge - pad, hi_edge + pad)
    ax.set_xlabel(res.parameter)
    ax.set_ylabel(f"{100 * (1 - res.alpha):.0f}% confidence set" + (f" ({res.yname})" if res.yname else ""))
    ax.set_title(title or f"Sensitivity to parallel trends ({res.delta}), {res.target or 'target'}", fontsize=9)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when every row is suppressed
        ax.legend(fontsize=8, loc="best")
    return fig
