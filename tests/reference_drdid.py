"""Test-only reference: DRDID's panel 2x2 estimators transcribed directly (DRDID 1.2.3, ``drdid_panel``,
``std_ipw_did_panel``, ``reg_did_panel``).

:class:`reach.did._CovDesign` computes the same faster (shared designs, no (m, k) temporaries);
the tests check the two against each other. Not shipped in the package: nothing there uses it.
"""
from __future__ import annotations

import numpy as np

from reach.did import _logit


def _wls(X, y, w):
    """Weighted least squares coefficients; None if X'WX is singular."""
    XtW = X.T * w
    A = XtW @ X
    if np.linalg.matrix_rank(A) < A.shape[0]:
        return None, None
    return np.linalg.solve(A, XtW @ y), A


def _drdid_cell(dY, D, X, w, method, trim_level=0.995):
    """One 2x2 ATT with covariates, as DRDID's drdid_panel / std_ipw_did_panel / reg_did_panel.

    The direct transcription; ``reach.did._CovDesign`` computes the same faster (also for the
    cells of ``unbalanced="pairs"``), and the tests check the two against each other.

    Returns (att, influence function on the cell's units) or (nan, None).
    Weights ``w`` are normalised to mean one on the cell, as DRDID does; comparison units
    with a propensity score of ``trim_level`` or more get weight zero (DRDID's trimming).
    """
    n = len(dY)
    w = w / w.mean()
    C = 1.0 - D
    need_or = method in ("dr", "reg")
    need_ps = method in ("dr", "ipw")
    if need_or:
        coef, A = _wls(X, dY, w * C)
        if coef is None:
            return np.nan, None
        out = X @ coef
        # asymptotic linear representation of the OLS coefficients (control units only)
        XpX_inv = np.linalg.inv(A / n)
        alr_ols = ((w * C * (dY - out))[:, None] * X) @ XpX_inv
    if need_ps:
        ps, H = _logit(X, D, w)
        if ps is None:
            return np.nan, None
        ps = np.minimum(ps, 1 - 1e-6)
        alr_ps = ((w * (D - ps))[:, None] * X) @ (np.linalg.inv(H) * n)
        keep = np.where(D == 1, 1.0, (ps < trim_level).astype(float))
    w_t = w * D
    if method == "reg":
        w_c = w * D
        att_t = w_t * dY
        att_c = w_c * out
        eta_t = att_t.mean() / w_t.mean()
        eta_c = att_c.mean() / w_c.mean()
        inf_t = (att_t - w_t * eta_t) / w_t.mean()
        M1 = (w_c[:, None] * X).mean(axis=0)
        inf_c = (att_c - w_c * eta_c + alr_ols @ M1) / w_c.mean()
        return eta_t - eta_c, inf_t - inf_c
    w_c = keep * w * ps * C / (1 - ps)
    if method == "ipw":
        att_t = w_t * dY
        att_c = w_c * dY
        eta_t = att_t.mean() / w_t.mean()
        eta_c = att_c.mean() / w_c.mean()
        inf_t = (att_t - w_t * eta_t) / w_t.mean()
        M2 = ((w_c * (dY - eta_c))[:, None] * X).mean(axis=0)
        inf_c = (att_c - w_c * eta_c + alr_ps @ M2) / w_c.mean()
        return eta_t - eta_c, inf_t - inf_c
    # doubly robust (locally efficient, Sant'Anna & Zhao 2020, eq. 3.1)
    r = dY - out
    dr_t = w_t * r
    dr_c = w_c * r
    eta_t = dr_t.mean() / w_t.mean()
    eta_c = dr_c.mean() / w_c.mean()
    M1 = (w_t[:, None] * X).mean(axis=0)
    inf_t = (dr_t - w_t * eta_t - alr_ols @ M1) / w_t.mean()
    M2 = ((w_c * (r - eta_c))[:, None] * X).mean(axis=0)
    M3 = (w_c[:, None] * X).mean(axis=0)
    inf_c = (dr_c - w_c * eta_c + alr_ps @ M2 - alr_ols @ M3) / w_c.mean()
    return eta_t - eta_c, inf_t - inf_c
