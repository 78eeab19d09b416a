"""reach.disclosure's register-scale shortcuts (issue 17) give exactly what they replace.

``_unit_hashes`` must equal ``pd.util.hash_array`` of the identifiers' text (the run-level
audit intersects these hashes across tables and notebooks), and ``_sorted_codes`` must equal
``pd.factorize(sort=True)`` (cell order and member order of every checked table follow it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reach import disclosure
from reach.disclosure import _sorted_codes, _unit_hashes, check_table


def _reference_hashes(uniques) -> np.ndarray:
    return pd.util.hash_array(np.asarray(uniques, dtype=object).astype(str))


@pytest.mark.parametrize("uniques", [
    np.arange(10),
    np.arange(20)[::-1],
    np.array([5, 3, 9, 2**40]),                       # sparse integers: no table of 2**40 hashes
    np.array([-1, 4]),
    np.array([7, 3], dtype=np.uint8),
    np.array([1.5, 2.0]),
    np.array([True, False]),
    np.array([], dtype=np.int64),
    np.array(["100000001", "ü", "", "10"], dtype=object),
    pd.factorize(pd.Series(["b", "a", "b"], dtype="str"))[1],
    pd.factorize(pd.Series([3, 1, 3]))[1],
], ids=str)
def test_unit_hashes_equal_hash_array_of_the_text(uniques, monkeypatch):
    monkeypatch.setattr(disclosure, "_INT_HASHES", np.zeros(0, dtype=np.uint64))
    got = _unit_hashes(uniques)
    want = _reference_hashes(uniques)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(_unit_hashes(uniques), want)          # again, from the kept table


def test_unit_hashes_table_grows_and_stays_right(monkeypatch):
    monkeypatch.setattr(disclosure, "_INT_HASHES", np.zeros(0, dtype=np.uint64))
    small, large = np.array([3, 0, 2]), np.arange(5000)[::-1]
    for u in (small, large, small):
        assert np.array_equal(_unit_hashes(u), _reference_hashes(u))
    assert len(disclosure._INT_HASHES) == 5000


@pytest.mark.parametrize("n, bound", [(0, 10), (1, 5), (500, 100), (5000, 3000), (2000, 10**7), (200_000, 900_000)])
def test_sorted_codes_equal_factorize(n, bound):
    key = np.random.default_rng(n).integers(0, bound, n).astype(np.int64)
    codes, uniq = _sorted_codes(key, bound)
    want_codes, want_uniq = pd.factorize(key, sort=True)
    assert codes.dtype == want_codes.dtype and np.array_equal(codes, want_codes)
    assert np.array_equal(uniq, np.asarray(want_uniq)) and uniq.dtype == np.asarray(want_uniq).dtype


def test_check_table_members_hash_like_the_unit_text():
    # integer unit codes and their text must give the same member hashes (as before the shortcut)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 300, 2000)
    df_int = pd.DataFrame({"be_id": ids, "g": rng.integers(0, 4, 2000), "v": rng.random(2000)})
    df_txt = df_int.assign(be_id=df_int["be_id"].astype(str))
    a = check_table(df_int, by=["g"], value="v", stat="mean", name="t")
    b = check_table(df_txt, by=["g"], value="v", stat="mean", name="t")
    pd.testing.assert_frame_equal(a.suppress(), b.suppress())
    for k in ("cell", "unit", "trait"):
        assert np.array_equal(a.members[k], b.members[k]), k


@pytest.mark.parametrize("n, n_cells", [(0, 3), (1, 1), (50, 5), (5000, 40)])
def test_cell_extremes_equal_groupby_min_max(n, n_cells):
    from reach.disclosure import _cell_extremes

    rng = np.random.default_rng(n)
    ucell = np.sort(rng.integers(0, n_cells, n))
    c = rng.normal(size=n).round(1)
    c[::7] = np.nan                                  # missing contributions are skipped, as groupby does
    if n:
        c[ucell == ucell[0]] = np.nan                # a cell whose every contribution is missing
    ext = pd.Series(c).groupby(ucell).agg(["min", "max"]).reindex(range(n_cells))
    lo, hi = _cell_extremes(c, ucell, n_cells)
    assert np.array_equal(ext["min"].to_numpy(), lo, equal_nan=True)
    assert np.array_equal(ext["max"].to_numpy(), hi, equal_nan=True)


def _grouping_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    strings = rng.choice(np.array(["b", "a", "c", None], dtype=object), n)
    cats = pd.Categorical(rng.choice(["z", "a", "m", None], n), categories=["z", "unused", "a", "m"])
    floats = np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 4, n).astype(float))
    return pd.DataFrame({
        "s": strings, "c": cats, "f": floats, "i": rng.integers(-2, 3, n), "b": rng.random(n) < 0.5,
        "a": pd.array(rng.choice(["y", "x", None], n), dtype="string[pyarrow]"),
        "year": rng.integers(2014, 2024, n).astype(np.int32)})


@pytest.mark.parametrize("keys", [["s"], ["c"], ["f"], ["i"], ["b"], ["a"], ["year", "c"], ["s", "f", "i"],
                                  ["c", "a", "b", "year"]])
@pytest.mark.parametrize("n", [0, 1, 57, 5_000])
def test_group_codes_equal_groupby_ngroup_and_labels(keys, n):
    df = _grouping_frame(n, seed=n + len(keys))
    grouper = df.groupby(keys, dropna=False, sort=True, observed=True)
    cell, labels = disclosure._group_codes(df, keys)
    assert np.array_equal(cell, grouper.ngroup().to_numpy())
    pd.testing.assert_frame_equal(labels, grouper.size().index.to_frame(index=False))


def test_check_table_cells_unchanged_by_the_group_codes(monkeypatch):
    df = _grouping_frame(3_000, seed=5).assign(be_id=lambda d: [str(10**8 + i % 700) for i in range(len(d))],
                                               v=lambda d: np.arange(len(d), dtype=float))
    fast = check_table(df, by=["c", "s", "year"], value="v", stat="median", name="t")

    def by_groupby(frame, keys):
        g = frame.groupby(keys, dropna=False, sort=True, observed=True)
        return g.ngroup().to_numpy(), g.size().index.to_frame(index=False)

    monkeypatch.setattr(disclosure, "_group_codes", by_groupby)
    slow = check_table(df, by=["c", "s", "year"], value="v", stat="median", name="t")
    pd.testing.assert_frame_equal(fast.cells, slow.cells)
    for k in slow.members:
        assert np.array_equal(fast.members[k], slow.members[k])


@pytest.mark.parametrize("n_cells", [1, 7, 70_000])
@pytest.mark.parametrize("seed", [0, 1])
def test_central_mean_equals_the_mean_of_the_sorted_central_values(n_cells, seed):
    rng = np.random.default_rng(seed)
    n = 40_000
    cell = rng.integers(0, n_cells, n)
    v = np.round(rng.lognormal(size=n), 1)  # ties
    got = disclosure._central_mean(cell, v, n_cells)
    want = np.full(n_cells, np.nan)
    for c, x in pd.Series(v).groupby(cell):
        x = np.sort(x.to_numpy())
        m = len(x)
        mid = m // 2
        want[c] = x[max(mid - 1, 0):min(mid + 2 if m % 2 else mid + 1, m)].mean()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])  # exactly: same values, same order


@pytest.mark.parametrize("rows_per_unit", [1, 3])
def test_median_sides_equal_with_one_or_several_rows_per_unit(rows_per_unit, monkeypatch):
    rng = np.random.default_rng(rows_per_unit)
    n_units = 900
    df = pd.DataFrame({"be_id": np.repeat([str(10**8 + i) for i in range(n_units)], rows_per_unit),
                       "g": np.repeat(rng.integers(0, 4, n_units), rows_per_unit)})
    df["x"] = np.round(rng.lognormal(size=len(df)), 1)
    got = check_table(df, by="g", value="x", stat="median", name="m").cells
    # each side counted by hand: units whose every value is below (above) the published median
    for _, row in got.iterrows():
        part = df[df["g"] == row["g"]].groupby("be_id")["x"].agg(["min", "max"])
        assert row["n_below"] == int((part["max"] < row["value"]).sum())
        assert row["n_above"] == int((part["min"] > row["value"]).sum())


def _top_sums_by_sorting(a, ucell, n_cells, k):
    """The ranked sums as the dominance rule first computed them: rank within cell by lexsort."""
    order = np.lexsort((-a, ucell))
    a_sorted, cell_sorted = a[order], ucell[order]
    starts = np.searchsorted(cell_sorted, np.arange(n_cells))
    rank = np.arange(len(a_sorted)) - starts[cell_sorted]
    return np.vstack([np.bincount(cell_sorted, weights=np.where(rank < j, a_sorted, 0.0), minlength=n_cells)
                      for j in range(1, k + 1)])


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_sums_equal_the_ranked_sums(k, seed):
    rng = np.random.default_rng(seed)
    n_cells = 300
    ucell = np.sort(rng.integers(0, n_cells, 5_000))
    ucell = ucell[ucell != 7]  # a cell without units
    a = np.abs(np.round(rng.normal(size=len(ucell)) * 10, 0))  # ties and zeros
    a[ucell == 11] = 4.0  # a cell whose values are all tied
    got = disclosure._top_sums(a, ucell, n_cells, k)
    assert np.array_equal(got, _top_sums_by_sorting(a, ucell, n_cells, k))  # exactly: same order of addition


def test_memberships_in_small_types_keep_positions_past_one_byte():
    """Cell positions and row counts are stored in the smallest unsigned type: joining parts (offsets)
    and margins (sub-tables appended) must still number every cell right when positions pass 255."""
    from reach.disclosure import join_checked

    rng = np.random.default_rng(2)
    n = 20_000
    df = pd.DataFrame({"be_id": rng.integers(0, 3_000, n).astype(str), "a": rng.integers(0, 200, n), "b": rng.integers(0, 2, n)})
    whole = check_table(df, by=["b", "a"], stat="count", name="t")
    parts = join_checked([check_table(df[df["b"] == k], by=["b", "a"], stat="count", name="t") for k in (0, 1)])
    assert whole.members["cell"].dtype == np.uint16 and whole.members["cell"].max() > 255
    for chk in (whole, parts):
        m = pd.DataFrame({k: np.asarray(v) for k, v in chk.members.items()})
        per_cell = m.groupby("cell")["unit"].nunique().to_numpy()
        assert np.array_equal(per_cell, chk.table["n_units"].to_numpy())
    margins = check_table(df, by=["b", "a"], stat="count", name="t", margins=True)
    m = pd.DataFrame({k: np.asarray(v) for k, v in margins.members.items()})
    assert np.array_equal(m.groupby("cell")["unit"].nunique().to_numpy(), margins.cells["n_units"].to_numpy())
    assert margins.members["rows"].dtype == np.uint8 and int(m["rows"].sum()) == 4 * n
