"""The propensity logit on distinct covariate rows (register scale) equals the logit on every row.

Register covariates take few distinct values over many firms (log employees of a whole number of
employees, a sector code), so ``att_gt`` fits the score on the distinct rows with summed weights.
The reference is the same estimator with grouping switched off: the row-by-row Newton-Raphson that
the R did 2.5 goldens (``test_did.py``, mpdta) check.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import reach.did as did
from reach.power import RowLookup, reference_values


def _panel(n=6000, T=6, seed=3):
    rng = np.random.default_rng(seed)
    G = rng.choice([0, 0, 0, 2017, 2018, 2019], n)
    emp = rng.integers(1, 60, n)
    d = pd.DataFrame({"id": np.repeat(np.arange(n), T), "year": np.tile(np.arange(2015, 2015 + T), n),
                      "g": np.repeat(G, T)})
    # employees drift a little from year to year: covariates of the base period differ by cell
    d["lemp"] = np.log(np.repeat(emp, T) + rng.integers(0, 2, n * T))
    d["sec"] = np.repeat(rng.integers(0, 4, n), T).astype(float)
    d["w"] = np.repeat(rng.choice([0.5, 1.0, 2.0], n), T)
    # selection on size: the score matters, so a wrong grouped fit would move the estimates
    d["y"] = (rng.normal(size=len(d)) + 0.3 * d.lemp * (d.year - 2015) / T
              + 0.4 * ((d.year >= d.g) & (d.g > 0)))
    return d


CASES = {
    "balanced dr notyettreated, two covariates": dict(xformla="~ lemp + sec", control_group="notyettreated"),
    "balanced dr weighted": dict(xformla="~ lemp", weightsname="w"),
    "balanced ipw": dict(xformla="~ lemp + sec", est_method="ipw"),
    "pairs dr notyettreated": dict(xformla="~ lemp + sec", control_group="notyettreated",
                                   allow_unbalanced_panel=True, unbalanced="pairs"),
    "pairs dr weighted": dict(xformla="~ lemp", weightsname="w", allow_unbalanced_panel=True, unbalanced="pairs"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_grouped_logit_equals_row_logit(case, monkeypatch):
    d = _panel()
    if "pairs" in case:
        d = d.drop(np.random.default_rng(1).choice(len(d), len(d) // 8, replace=False))
    calls = []
    real = did._logit_grouped

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(did, "_logit_grouped", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = did.att_gt(d, "y", "year", "id", "g", bootstrap=False, biters=1, progress=False, **CASES[case])
        assert calls, "the grouped logit was not used: the test would compare the row logit with itself"
        monkeypatch.setattr(did, "_worth_grouping", lambda K, m: False)
        calls.clear()
        b = did.att_gt(d, "y", "year", "id", "g", bootstrap=False, biters=1, progress=False, **CASES[case])
        assert not calls
    np.testing.assert_allclose(a.att, b.att, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-10)
    ea, eb = did.aggte(a, "dynamic", bootstrap=False), did.aggte(b, "dynamic", bootstrap=False)
    np.testing.assert_allclose(ea.overall_att, eb.overall_att, atol=1e-12)
    np.testing.assert_allclose(ea.overall_se, eb.overall_se, rtol=1e-10)


def test_row_codes_distinct_rows_and_missing():
    x1 = np.array([1.0, 2.0, 1.0, np.nan, 2.0, 1.0])
    x2 = np.array([5.0, 5.0, 5.0, 5.0, 6.0, np.nan])
    codes, U = did._row_codes([x1, x2])
    assert codes[3] == -1 and codes[5] == -1  # a missing value in either column
    ok = codes >= 0
    # each code's column of U is the row itself (intercept first); equal rows share a code
    np.testing.assert_array_equal(U[:, codes[ok]], np.vstack([np.ones(ok.sum()), x1[ok], x2[ok]]))
    assert codes[0] == codes[2] and len({codes[0], codes[1], codes[4]}) == 3
    assert U.shape[1] == 3


def test_row_lookup_equals_multiindex_reindex():
    rng = np.random.default_rng(0)
    n = 3000
    p = pd.DataFrame({"id": np.repeat(rng.permutation(n) * 7 + 3, 5), "year": np.tile(np.arange(2015, 2020), n)})
    p = p.sample(frac=0.85, random_state=1)
    p["x"] = rng.normal(size=len(p))
    p["k"] = rng.integers(0, 5, len(p))
    p["s"] = pd.Categorical(rng.choice(list("abc"), len(p)))
    ids = np.r_[rng.choice(p.id.unique(), 2000), [-1, 10**9]]
    years = np.r_[rng.integers(2013, 2022, 2000), [2016, 2016]]
    want = p.set_index(["id", "year"])[["x", "k", "s"]].reindex(
        pd.MultiIndex.from_arrays([ids, years])).reset_index(drop=True)
    look = RowLookup(p, tname="year", idname="id")
    pd.testing.assert_frame_equal(look.values(ids, years, ["x", "k", "s"]), want)
    pd.testing.assert_frame_equal(reference_values(look, ids, years, ["x"], tname="year", idname="id"), want[["x"]])
    assert (look.positions([], []) == np.array([], dtype=np.int64)).all()


def test_row_lookup_rejects_duplicate_pairs():
    p = pd.DataFrame({"firm": [1, 1, 2], "year": [2019, 2019, 2019], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"\(firm, year\) pairs occur in more than one row.*'firm': 1"):
        RowLookup(p, tname="year", idname="firm")


def test_naive_difference_equals_statsmodels_cluster_ols():
    """The closed-form naive comparison equals statsmodels' OLS with clustered errors (its defaults)."""
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(5)
    n = 700
    g = rng.choice([0, 0, 2018, 2019], n)
    d = pd.DataFrame({"id": np.repeat(np.arange(n), 5), "year": np.tile(np.arange(2015, 2020), n),
                      "g": np.repeat(g, 5)})
    d["y"] = rng.normal(size=len(d)) + np.repeat(rng.normal(size=n), 5) + 0.5 * (d.g > 0)
    d = d.drop(rng.choice(len(d), 400, replace=False))  # unequal cluster sizes
    est = did.naive_difference(d, "y", "year", "id", "g")
    gg, t = d.g.to_numpy(float), d.year.to_numpy(float)
    keep = ((gg > 0) & (t >= gg)) | ((gg == 0) & (t >= gg[gg > 0].min()))
    k = d[keep]
    X = np.column_stack([np.ones(len(k)), (k.g > 0).to_numpy(float)])
    res = sm.OLS(k.y.to_numpy(float), X).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(k.id)[0]})
    row = est.tidy().iloc[0]
    assert row["estimate"] == pytest.approx(res.params[1], abs=1e-12)
    assert row["std_error"] == pytest.approx(res.bse[1], rel=1e-10)
    assert est.df_resid == res.df_resid
