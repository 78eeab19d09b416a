"""The array forms of the effect report's counts and of matching's bookkeeping equal the pandas calls they replace
(register-scale speed work of issue 17): firms a balanced panel drops, outcomes constant within firms,
the stacked sample's firm codes, the TWFE's repeated (unit, period) check and the firm selection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reach.did import _isin, _repeated, _sorted_text_codes
from reach.effects import _balanced_panel_drop, _constant_within


def _stacked(seed: int, n_firms: int = 60, n_blocks: int = 90) -> pd.DataFrame:
    """A stacked sample: blocks (stack_id) of firms over years, some firms in several blocks, gaps, missing
    outcomes, an all-missing block and a block with a missing year."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(n_blocks):
        firm = f"BE{rng.integers(n_firms):03d}"
        years = sorted(rng.choice(np.arange(2015, 2021), size=rng.integers(1, 7), replace=False))
        for t in years:
            rows.append((b, firm, t, rng.choice([np.nan, 1.0, 2.0, rng.normal()], p=[0.2, 0.3, 0.2, 0.3])))
    d = pd.DataFrame(rows, columns=["stack_id", "be_id", "year", "y"])
    d.loc[d["stack_id"] == 3, "y"] = np.nan
    d["be_id"] = d["be_id"].astype("string[pyarrow]")
    return d


def _reference_drop(data, outcome, unit, tname, firm=None):
    # effect_report's former pandas form
    obs = data.loc[data[outcome].notna().to_numpy(), [unit, tname]].groupby(unit)[tname].nunique()
    n = int((obs < data[tname].nunique()).sum()) + int(data[unit].nunique() - len(obs))
    if firm is not None:
        short = obs.index[obs < data[tname].nunique()]
        n = int(data.loc[data[unit].isin(short), firm].nunique())
    return n


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", ["sorted", "shuffled", "float years"])
def test_balanced_panel_drop_equals_the_grouped_count(seed, order):
    """Units coded by the sorted panel's order (or hashed when out of order) and years by counting (or hashed when
    not whole numbers) give the grouped count."""
    d = _stacked(seed)
    if order == "shuffled":
        d = d.sample(frac=1.0, random_state=seed)
    elif order == "float years":
        d = d.assign(year=d["year"] + 0.5)
    for unit, firm in [("stack_id", None), ("stack_id", "be_id"), ("be_id", None)]:
        sub = d.drop_duplicates([unit, "year"]) if unit == "be_id" else d
        assert _balanced_panel_drop(sub, "y", unit, "year", firm=firm) == _reference_drop(sub, "y", unit, "year", firm)
    full = d.assign(y=1.0)  # every block observed in every one of its years
    assert _balanced_panel_drop(full, "y", "stack_id", "year") == _reference_drop(full, "y", "stack_id", "year")
    assert _balanced_panel_drop(d.iloc[:0], "y", "stack_id", "year") == 0


@pytest.mark.parametrize("seed", range(6))
def test_constant_within_equals_nunique(seed):
    d = _stacked(seed)
    cases = [d, d.sample(frac=1.0, random_state=seed), d.assign(y=d.groupby("stack_id")["y"].transform("first")), d.assign(y=np.nan),
             d.assign(y=d["y"].where(d["stack_id"] != 5, -0.0).where(d["stack_id"] != 6, 0.0)),
             d.assign(y=d["stack_id"].astype(float)), d.iloc[:0]]
    for c in cases:
        for unit in ("stack_id", "be_id"):
            ch = c["y"].groupby(c[unit].to_numpy()).nunique(dropna=True)
            assert _constant_within(c["y"], c[unit]) == bool(len(ch) and (ch <= 1).all())


def test_sorted_text_codes_equal_numpy_unique_of_the_text():
    rng = np.random.default_rng(1)
    for col in [pd.Series(rng.integers(0, 120, 900)),  # numbers sort as text: "100" < "99"
                pd.Series(np.char.add("BE", rng.integers(0, 500, 3000).astype(str))).astype("string[pyarrow]"),
                pd.Series(["é", "e", "z", "Z", "e"], dtype="string[pyarrow]"), pd.Series(["b", "a", "a"], dtype=object),
                pd.Series([], dtype="string[pyarrow]")]:
        firms, codes = _sorted_text_codes(col)
        want, inv = np.unique(col.astype(str).to_numpy(), return_inverse=True)
        assert firms.tolist() == want.tolist() and codes.tolist() == inv.reshape(-1).tolist()


def test_repeated_pairs_equal_duplicated():
    rng = np.random.default_rng(2)
    for hi in (5, 40, 10**9):  # dense and sparse key spaces
        a, b = rng.integers(0, hi, 500), rng.integers(0, 6, 500)
        want = pd.DataFrame({"a": a, "b": b}).duplicated(keep=False).to_numpy()
        assert (_repeated(a, b) == want).all()


def test_isin_equals_pandas_isin():
    col = pd.Series(["a", "b", None, "c", "d", "a"], dtype="string[pyarrow]")
    for values in [pd.Series(["a", "c", "zz"], dtype="string[pyarrow]"), pd.Series(["a", None], dtype="string[pyarrow]"),
                   pd.Series([1, 2]), pd.Series([], dtype="string[pyarrow]"), pd.Series(["d"], dtype=object)]:
        got = _isin(col, values)
        assert got.dtype == bool and got.tolist() == col.isin(values).to_numpy().tolist()


def test_match_excluded_reasons_name_each_rows_missing_columns():
    """``Match.excluded``: one reason per incomplete row naming its missing columns in the covariates' order
    (the treatment when only a non-finite value or the treatment is missing), as the former row loop did."""
    from reach.matching import R_MISSING, match

    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "s": rng.integers(0, 3, n).astype(float)},
                      index=[f"f{i}" for i in range(n)])
    df["t"] = (rng.random(n) < 0.3).astype(float)
    df.loc[df.index[rng.random(n) < 0.1], "x"] = np.nan
    df.loc[df.index[rng.random(n) < 0.1], "z"] = np.nan
    df.loc[df.index[rng.random(n) < 0.05], "s"] = np.nan
    df.loc[df.index[:3], "t"] = np.nan
    df.loc[df.index[5], "x"] = np.inf  # not missing, not finite
    m = match(df, "t", ["x", "z"], exact="s", caliper=None)
    cols = ["x", "z", "s"]
    want = {}
    for i in df.index:
        miss = [c for c in cols if pd.isna(df.at[i, c])]
        if miss or pd.isna(df.at[i, "t"]) or not np.isfinite(df.loc[i, ["x", "z"]].astype(float)).all():
            want[i] = f"{R_MISSING} in {', '.join(miss) if miss else 't'}"
    assert m.excluded["reason"].to_dict() == want
    assert len(set(want.values())) >= 5


def test_unique_rows_equal_numpy_unique_over_rows():
    from reach.matching import _unique_rows

    rng = np.random.default_rng(4)
    for n, k in [(0, 3), (1, 2), (500, 3), (3000, 8)]:
        X = np.column_stack([rng.integers(0, 4, n) * 0.5 for _ in range(k - 1)] + [rng.normal(size=n).round(1)])
        if n > 3:
            X[1] = X[3]
            X[2, 0] = -0.0 if X[2, 0] == 0 else X[2, 0]  # -0.0 and 0.0 are one value, as in np.unique
        first, inv = _unique_rows(X)
        if n:
            _, f0, i0 = np.unique(X, axis=0, return_index=True, return_inverse=True)
            assert first.tolist() == f0.tolist() and inv.tolist() == np.asarray(i0).ravel().tolist()
        else:
            assert first.size == inv.size == 0
