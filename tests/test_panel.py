"""reach.panel: columns, hand-checked values on the mini data, storage, truth and raw-file recomputation on the stub.

Mini-data numbers are derived by hand from conftest.make_mini; stub numbers from
data_stub/truth.json (planted by the generator) or recomputed in the test
straight from the raw .sav files with pyreadstat.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from conftest import ROOT, STUB_TRUTH, make_mini
from reach.io import load_inputs
from reach.link import link_participants
from reach.panel import build_panel, panel_columns, read_link, read_panel, save_run


@pytest.fixture
def mini(mini_params):
    inputs = load_inputs(mini_params)
    link = link_participants(inputs)
    return inputs, link, build_panel(inputs, link)


def _row(panel, be_id, year):
    r = panel[(panel["be_id"] == be_id) & (panel["year"] == year)]
    assert len(r) == 1
    return r.iloc[0]


def test_panel_columns_follow_contract(mini):
    inputs, _, panel = mini
    expected = panel_columns(["nlib", "tinl"], inputs.growth_markets)
    assert panel.columns.tolist() == expected
    # keys and cohorts int64; 0/1 indicators int8 and counts int32 (exact, less memory: CONTRACTS.md section 4)
    for c in ("firm_id", "year", "g_tinl", "g_nlib"):
        assert panel[c].dtype == "int64", c
    for c in ("exporter", "importer", "intl_active", "gm_CN", "instr_any", "instr_ever_before", "d_tinl", "d_nlib"):
        assert panel[c].dtype == "int8", c
    for c in ("n_dest", "n_orig", "instr_n", "instr_n_before"):
        assert panel[c].dtype == "int32", c
    assert panel["be_id"].dtype == "str"
    # one row per unit-year of the register; firm_id a dense code of be_id
    assert len(panel) == len(inputs.register) == 12
    assert not panel.duplicated(["be_id", "year"]).any()
    assert sorted(panel["firm_id"].unique()) == list(range(panel["be_id"].nunique()))
    assert (panel.groupby("be_id")["firm_id"].nunique() == 1).all()


def test_trade_values_by_hand(mini):
    _, _, panel = mini
    r = _row(panel, "100000001", 2019)
    # CN 100+50 (two goods chapters), DE 1000: exports 1150; imports 10 + 5; V2 of 2019 read
    assert (r["exports"], r["imports"], r["exports_gm"], r["imports_gm"]) == (1150.0, 15.0, 150.0, 10.0)
    assert (r["n_dest"], r["n_orig"], r["gm_CN"], r["gm_TR"]) == (2, 2, 1, 0)
    assert r["log_exports"] == pytest.approx(np.log(1151.0))
    assert r["ihs_exports"] == pytest.approx(np.log(1150.0 + np.sqrt(1150.0 ** 2 + 1)))
    assert r["log_exports_gm"] == pytest.approx(np.log(151.0))
    # a unit with imports only, and one absent from trade data: zeros, not missing
    r2 = _row(panel, "100000002", 2018)
    assert (r2["exports"], r2["imports"], r2["exporter"], r2["importer"], r2["intl_active"]) == (0.0, 20.0, 0, 1, 1)
    r5 = _row(panel, "100000005", 2020)
    assert (r5["exports"], r5["imports"], r5["n_dest"], r5["log_exports"]) == (0.0, 0.0, 0, 0.0)
    # growth-market flag from exports to TR
    assert _row(panel, "100000003", 2020)[["exports_gm", "gm_TR"]].tolist() == [60.0, 1]
    # trade of a unit that is not in the register (999999999) does not create panel rows
    assert "999999999" not in set(panel["be_id"])


def test_instruments_before_and_in_year(mini):
    _, _, panel = mini
    p = panel.set_index(["be_id", "year"])
    # 01234567 -> 100000001: registrations in 2018 and 2020; 2017's registration is outside the window
    assert p.loc["100000001", ["instr_n", "instr_n_before", "instr_ever_before"]].values.tolist() == [
        [1, 0, 0], [0, 1, 1], [1, 1, 1]]
    assert p.loc["100000002", "instr_n_before"].tolist() == [0, 0, 1]
    assert p.loc["100000005", "instr_ever_before"].tolist() == [0, 0, 0]


def test_programme_cohorts_and_treatment(mini):
    _, _, panel = mini
    p = panel.set_index(["be_id", "year"])
    assert p.loc["100000001", "g_tinl"].tolist() == [2018] * 3 and p.loc["100000001", "d_tinl"].tolist() == [1, 1, 1]
    # first use 2017 (before the window, record T0): treated in every window year, not a 2020 cohort
    assert p.loc["100000002", "g_tinl"].tolist() == [2017] * 3 and p.loc["100000002", "d_tinl"].tolist() == [1, 1, 1]
    assert p.loc["100000003", "d_tinl"].tolist() == [1, 1]
    assert p.loc["100000004", ["g_tinl", "g_nlib", "d_tinl"]].values.tolist() == [[0, 0, 0]]
    assert p.loc["100000005", "d_nlib"].tolist() == [0, 1, 1]


def test_lags_follow_the_same_unit_and_are_missing_before_entry(mini):
    _, _, panel = mini
    p = panel.set_index(["be_id", "year"])
    # 100000003 enters in 2019: no lag in 2019, 2019's value in 2020
    assert np.isnan(p.loc[("100000003", 2019), "log_exports_lag1"])
    assert p.loc[("100000003", 2020), "log_exports_lag1"] == pytest.approx(np.log(31.0))
    assert np.isnan(p.loc[("100000003", 2020), "log_exports_lag2"])
    assert p.loc[("100000001", 2020), "log_employees_lag1"] == pytest.approx(np.log(52.0))  # 51 employees in 2019
    assert p.loc[("100000001", 2020), "export_growth_lag1"] == 0.0
    assert p.loc[("100000002", 2019), ["exporter_lag1", "importer_lag1", "n_dest_lag1"]].tolist() == [0, 1, 0]


def test_save_and_read_round_trip(mini, tmp_path):
    _, link, panel = mini
    paths = save_run(tmp_path / "work", panel, link)
    assert {p.name for p in paths.values()} == {"panel.parquet", "participants.parquet", "firms.parquet",
                                                "waterfall.parquet", "activities.parquet", "early.parquet"}
    pd.testing.assert_frame_equal(read_panel(tmp_path / "work"), panel, check_dtype=False)
    back = read_link(tmp_path / "work")
    pd.testing.assert_frame_equal(back.waterfall, link.waterfall)
    pd.testing.assert_frame_equal(back.firms, link.firms)
    assert back.records["bucket"].astype(str).tolist() == link.records["bucket"].astype(str).tolist()
    assert (back.first_year, back.last_year) == (2018, 2020)
    assert not list((tmp_path / "work").glob("*.tmp"))
    # dtypes survive the parquet round trip (int8 flags, int32 counts)
    assert read_panel(tmp_path / "work").dtypes.equals(panel.dtypes)
    # a window read while reading equals the window cut afterwards
    for lo, hi in ((2019, None), (None, 2019), (2019, 2019), (2018, 2020)):
        keep = np.ones(len(panel), bool)
        keep &= panel["year"].to_numpy() >= (lo or 0)
        keep &= panel["year"].to_numpy() <= (hi or 9999)
        pd.testing.assert_frame_equal(read_panel(tmp_path / "work", first_year=lo, last_year=hi),
                                      panel[keep].reset_index(drop=True))


def test_read_panel_columns_reads_keys_cohorts_and_the_named_columns(mini, tmp_path):
    """A stage reads only what it uses: the named columns, the keys and every ``g_*`` (analysis_sample's
    exclusions), in the file's order; with the window applied, equal to the columns cut from a full read."""
    _, link, panel = mini
    save_run(tmp_path / "work", panel, link)
    got = read_panel(tmp_path / "work", 2019, None, columns=["exporter_lag1", "n_dest"])
    cols = [c for c in panel.columns if c in ("be_id", "year", "exporter_lag1", "n_dest") or c.startswith("g_")]
    assert any(c.startswith("g_") for c in cols)
    pd.testing.assert_frame_equal(got, read_panel(tmp_path / "work", 2019, None)[cols])
    with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\]"):
        read_panel(tmp_path / "work", columns=["nope"])


def test_sliced_parquet_write_reads_back_identical(mini, tmp_path, monkeypatch):
    """Writing in slices (register scale) gives back the frame the one-piece write gives."""
    import reach.panel as rp

    _, link, panel = mini
    save_run(tmp_path / "whole", panel, link)
    monkeypatch.setattr(rp, "WRITE_ROWS", 5)  # 12 rows: slices of 5, 5 and 2
    save_run(tmp_path / "sliced", panel, link)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "sliced" / "panel.parquet").metadata.num_row_groups == 3
    pd.testing.assert_frame_equal(read_panel(tmp_path / "sliced"), read_panel(tmp_path / "whole"))
    pd.testing.assert_frame_equal(read_panel(tmp_path / "sliced"), panel)


def test_save_run_leaves_nothing_on_failure(mini, tmp_path):
    _, link, panel = mini
    bad = panel.assign(employees=[object()] * len(panel))   # parquet cannot store it
    with pytest.raises(Exception):
        save_run(tmp_path / "w", bad, link)
    assert not [p for p in (tmp_path / "w").iterdir()]


def test_read_panel_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_build_panel"):
        read_panel(tmp_path)


# ----------------------------------------------------------------------------- the stub

stub_needed = pytest.mark.skipif(not STUB_TRUTH.is_file(), reason="data_stub/truth.json not generated yet")


@pytest.fixture(scope="module")
def stub(stub_params, stub_linked):
    inputs, link = stub_linked
    return stub_params, inputs, link, build_panel(inputs, link), json.loads(STUB_TRUTH.read_text())


def _sav(params, rel):
    df, _ = pyreadstat.read_sav(str(Path(params["data_dir"]) / rel))
    return df


@stub_needed
def test_stub_panel_agrees_with_raw_files(stub):
    """A handful of firms' values recomputed straight from the raw .sav files (no reach code)."""
    params, inputs, _, panel, _ = stub
    year = 2019
    ihg = _sav(params, f"IHG/IHG_per_BE_ID{year}V2.sav")
    abr = _sav(params, f"ABR/ABR_BE_{year}V1.sav")
    gm = set(params["growth_markets"])
    exporters = ihg.loc[ihg["Uitvoer"] > 0, "BE_ID"].unique()
    firms = sorted(set(exporters) & set(abr["BE_ID"]))[:5] + sorted(set(abr["BE_ID"]) - set(ihg["BE_ID"]))[:2]
    assert len(firms) == 7
    for b in firms:
        t = ihg[ihg["BE_ID"] == b]
        r = _row(panel, b, year)
        assert r["exports"] == pytest.approx(t["Uitvoer"].sum())
        assert r["imports"] == pytest.approx(t["Invoer"].sum())
        assert r["exports_gm"] == pytest.approx(t.loc[t["Land_HB"].isin(gm), "Uitvoer"].sum())
        assert r["n_dest"] == t.loc[t["Uitvoer"] > 0, "Land_HB"].nunique()
        assert r["employees"] == pytest.approx(abr.loc[abr["BE_ID"] == b, "WPActueel"].item())
    # 2015 uses numeric GEONOM codes: CN exports recomputed via 720
    ihg15 = _sav(params, "IHG/IHG_per_BE_ID2015V1.sav")
    cn = ihg15[ihg15["Land_HB"].astype(str).str.lstrip("0") == "720"]
    b = sorted(cn["BE_ID"].unique())[0]
    if b in set(panel.loc[panel["year"] == 2015, "be_id"]):
        assert _row(panel, b, 2015)["gm_CN"] == 1
    # total exports per year equal the raw files' totals over units in the register
    raw_total = ihg.loc[ihg["BE_ID"].isin(abr["BE_ID"]), "Uitvoer"].clip(lower=0).sum()
    assert panel.loc[panel["year"] == year, "exports"].sum() == pytest.approx(raw_total, rel=1e-9)
    assert len(panel) == len(inputs.register)


@stub_needed
def test_stub_population_and_reach_shares_equal_truth(stub):
    _, _, _, panel, truth = stub
    tol = 1e-9  # both sides count the same firms: exact up to float rounding
    for year, share in truth["population"]["share_exporter"].items():
        assert panel.loc[panel["year"] == int(year), "exporter"].mean() == pytest.approx(share, abs=tol), year
    for prog, reach in truth["reach"].items():
        users = panel.loc[panel[f"g_{prog}"] > 0].drop_duplicates("be_id")[["be_id", f"g_{prog}"]]
        before = panel[["be_id", "year", "exporter", "intl_active"]].merge(users, on="be_id")
        before = before[before["year"] == before[f"g_{prog}"] - 1]
        assert before["exporter"].mean() == pytest.approx(reach["share_exporter_before"], abs=tol), prog
        assert before["intl_active"].mean() == pytest.approx(reach["share_intl_before"], abs=tol), prog


@stub_needed
def test_stub_cohorts_in_panel_equal_truth(stub):
    _, _, _, panel, truth = stub
    for prog, sizes in truth["cohort_sizes"].items():
        got = panel.loc[panel[f"g_{prog}"] > 0].drop_duplicates("be_id")[f"g_{prog}"].value_counts()
        assert {str(k): int(v) for k, v in got.items()} == {k: int(v) for k, v in sizes.items()}


# ----------------------------------------------------------------------------- notebook


@pytest.mark.notebooks
def test_notebook_01_runs_on_mini_data(tmp_path):
    if not (ROOT / "src" / "reach" / "disclosure.py").is_file():
        pytest.skip("reach.disclosure not written yet")
    import papermill as pm

    params = make_mini(tmp_path / "data")
    out, work = tmp_path / "out", tmp_path / "work"
    keys = ("run_name", "data_dir", "first_year", "last_year", "inputs", "programmes", "growth_markets", "disclosure")
    pm.execute_notebook(str(ROOT / "notebooks" / "01_build_panel.ipynb"), str(tmp_path / "nb.ipynb"),
                        parameters={**{k: params[k] for k in keys}, "output_dir": str(out), "work_dir": str(work)},
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    assert (work / "panel.parquet").is_file() and (out / "tables" / "linkage_waterfall.csv").is_file()
    assert not list(out.rglob("*.parquet"))
    text = (tmp_path / "nb.ipynb").read_text(encoding="utf-8")
    for ident in ("100000001", "01234567", "22222222"):   # no identifier of the mini data in the rendered notebook
        assert ident not in text
    # every cell of the mini data holds fewer than min_units=10 records and is suppressed, except the
    # grand total: 6 NLiB + 8 TINL records written by make_mini
    pub = pd.read_csv(out / "tables" / "linkage_waterfall.csv", dtype={"programme": str, "bucket": str})
    grand = (pub["programme"] == "Total") & (pub["bucket"] == "Total")
    assert pub.loc[grand, "value"].tolist() == [14]
    assert pub.loc[~grand, "value"].isna().all()
    heads = json.loads((out / "headline" / "panel.json").read_text())
    assert heads["n_files"] == 12 and heads["users"] == {"nlib": None, "tinl": None}


@stub_needed
def test_build_panel_holds_one_copy_of_the_panel(stub_linked):
    """Peak memory of build_panel stays near one copy of the (numeric) panel it returns.

    The build keeps each column once (the frame takes the arrays, no consolidation or
    reordering copy); besides the columns it holds per-stage temporaries (trade rows
    mapped to panel rows, the firm x year instrument grid, one lag at a time). Measured
    on the stub: 2.3x the returned panel's numeric bytes; the former build (dict ->
    consolidated frame -> reordered frame, all int64) peaked at 2.7x its own, larger panel
    (4.6x this one's). tracemalloc sees numpy buffers, which hold every numeric column.
    """
    import tracemalloc

    inputs, link = stub_linked
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        panel = build_panel(inputs, link)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    numeric = int(panel.select_dtypes("number").memory_usage(index=False).sum())
    assert peak <= 2.5 * numeric, (peak / numeric)


def test_write_parquet_if_changed_leaves_an_identical_file_alone(tmp_path):
    from reach.panel import write_parquet_if_changed

    f = tmp_path / "matched_units_x.parquet"
    df = pd.DataFrame({"be_id": ["1", "2"], "cohort": [2019, 2020], "treated": [1, 0], "weight": [1.0, 0.5]})
    assert write_parquet_if_changed(df, f)
    ino = f.stat().st_ino
    assert not write_parquet_if_changed(df.copy(), f)  # same bytes: the file (and a reader's handle) untouched
    assert f.stat().st_ino == ino
    assert write_parquet_if_changed(df.assign(weight=[1.0, 0.25]), f)
    pd.testing.assert_frame_equal(pd.read_parquet(f), df.assign(weight=[1.0, 0.25]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name]  # no temporary file left


def test_comparison_firms_that_used_another_programme_are_named_when_kept():
    """With ``exclude_other_users=False`` the other programmes' users stay as comparison firms: the
    sample's line says so with their count (notebooks 03 and 04 used to state that they were left out,
    whatever the parameter); with the default they are counted among the left-out firms as before."""
    from reach.panel import analysis_sample

    n = 30
    p = pd.DataFrame({"be_id": [str(i) for i in range(n)], "year": 2019,
                      "g_a": [2019] * 5 + [0] * 25, "g_b": [0] * 5 + [2018] * 12 + [0] * 13})
    out = analysis_sample(p, "a")
    assert len(out.panel) == 18 and out.n_other_users_kept == 0
    assert out.summary() == "Left out of the analysis sample: 12 firms: comparison firm used another programme."
    kept = analysis_sample(p, "a", exclude_other_users=False)
    assert len(kept.panel) == n and kept.n_other_users_kept == 12
    assert kept.summary() == ("Left out of the analysis sample: none. Kept as comparison firms although they used "
                              "another programme (a parameter of the run): 12 firms; they may carry that "
                              "programme's effect.")
    few = analysis_sample(p[p["be_id"].astype(int) < 10], "a", exclude_other_users=False)
    assert "fewer than 10 firms" in few.summary() and few.n_other_users_kept == 5


def _sample_panel(n_firms: int = 60, seed: int = 5) -> pd.DataFrame:
    """Firms x 2012-2022 with every case :func:`analysis_sample` separates: users of ``a`` before, in and after
    a 2015-2020 window, never-users, never-users that used ``b`` or ``c``, users of both, and missing cohorts."""
    rng = np.random.default_rng(seed)
    years = np.arange(2012, 2023)
    g_a = rng.choice([0, 0, 0, 2013, 2015, 2017, 2021], n_firms).astype(float)
    g_b = rng.choice([0, 0, 2014, 2019], n_firms).astype(float)
    g_c = rng.choice([0, 0, 0, 2016], n_firms).astype(float)
    g_a[[3, 11]] = np.nan  # a cohort the file leaves missing: NaN > 0 is false in the reference
    g_b[[4, 12, 20]] = np.nan
    p = pd.DataFrame({"be_id": np.repeat([f"{i:08d}" for i in range(n_firms)], len(years)),
                      "year": np.tile(years, n_firms),
                      "g_a": np.repeat(g_a, len(years)), "g_b": np.repeat(g_b, len(years)),
                      "g_c": np.repeat(g_c, len(years)).astype("int64")})
    p["y"] = rng.normal(size=len(p))
    p["x"] = rng.integers(0, 5, len(p)).astype("int8")
    return p


def _text_pieces(df: pd.DataFrame) -> dict[str, int]:
    """Pieces (Arrow chunks) of each Arrow-backed column of ``df``."""
    import pyarrow as pa

    out = {}
    for c in df.columns:
        if not isinstance(df[c].dtype, np.dtype):
            arr = pa.array(df[c])
            out[c] = arr.num_chunks if isinstance(arr, pa.ChunkedArray) else 1
    return out


@pytest.mark.parametrize("window", [(2015, 2020), (None, None)])
def test_read_panel_gives_each_text_column_in_one_piece(tmp_path, window):
    """A read over many row groups gives text columns in one piece per batch (125 for the 2M-firm panel); later
    operations on such a column (codes, ``isin``, grouping) join the pieces again in temporary copies. The panel
    ``read_panel`` returns holds each in one piece, with the values a plain read and row filter give."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = _sample_panel().assign(region=lambda d: pd.Series("r" + (d["x"] % 3).astype(str), dtype="string[pyarrow]"))
    (tmp_path / "w").mkdir()
    path = tmp_path / "w" / "panel.parquet"
    pq.write_table(pa.Table.from_pandas(p, preserve_index=False), path, row_group_size=97)
    lo, hi = window
    plain = pd.read_parquet(path)
    assert _text_pieces(plain)["be_id"] > 1  # the file gives pieces, so the test is not vacuous
    keep = np.ones(len(plain), bool) if lo is None else plain["year"].between(lo, hi).to_numpy()
    ref = plain[keep].reset_index(drop=True)
    for columns in (None, ["y", "region"]):
        got = read_panel(tmp_path / "w", lo, hi, columns=columns)
        pd.testing.assert_frame_equal(got, ref[got.columns])
        assert _text_pieces(got) == {"be_id": 1, "region": 1}


@pytest.mark.parametrize("window", [(2015, 2020), (None, 2020), (2015, None), (None, None), (2013, 2022)])
@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("programme", ["a", "b", "c"])
def test_read_sample_equals_analysis_sample_of_the_read_panel(tmp_path, window, exclude, programme):
    """``read_sample`` chooses the sample's rows while reading the file (the register-scale copy of every column is
    gone) and gives the :class:`Sample` of ``analysis_sample(read_panel(...))``: the same rows in the same order,
    dtypes, left-out counts and kept other users, over several row groups, early users, other programmes' users and
    missing cohorts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reach.panel import analysis_sample, read_sample

    p = _sample_panel()
    (tmp_path / "w").mkdir()
    pq.write_table(pa.Table.from_pandas(p, preserve_index=False), tmp_path / "w" / "panel.parquet", row_group_size=97)
    lo, hi = window
    ref = analysis_sample(read_panel(tmp_path / "w", lo, hi, columns=["y"]), programme, first_year=lo, last_year=hi,
                          exclude_other_users=exclude)
    got = read_sample(tmp_path / "w", programme, first_year=lo, last_year=hi, exclude_other_users=exclude,
                      columns=["y"])
    pd.testing.assert_frame_equal(got.panel, ref.panel)
    pd.testing.assert_frame_equal(got.excluded, ref.excluded)
    assert got.n_other_users_kept == ref.n_other_users_kept
    assert got.summary() == ref.summary()
    assert "x" not in got.panel.columns and "y" in got.panel.columns
    # text columns in one piece, as read_panel gives them (not one per batch read)
    assert _text_pieces(got.panel) == {"be_id": 1}
    # the panel has every case, so the comparison is not vacuous
    if programme == "a" and lo == 2015:
        assert set(ref.excluded["reason"]) >= ({"comparison firm used another programme"} if exclude else set())
        assert any(ref.excluded["reason"].str.startswith("first used the programme before the window"))
        assert (ref.n_other_users_kept > 0) == (not exclude)


def test_read_sample_refuses_what_analysis_sample_refuses(tmp_path):
    from reach.panel import read_sample

    with pytest.raises(FileNotFoundError, match="01_build_panel"):
        read_sample(tmp_path, "a")
    (tmp_path / "w").mkdir()
    _sample_panel().to_parquet(tmp_path / "w" / "panel.parquet", index=False)
    with pytest.raises(ValueError, match=r"programme 'z' is not in the panel; programmes: \['a', 'b', 'c'\]"):
        read_sample(tmp_path / "w", "z")
    with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\]"):
        read_sample(tmp_path / "w", "a", columns=["nope"])


@stub_needed
def test_read_sample_of_the_stub_run_equals_the_notebooks_former_composition(stub, tmp_path):
    """On the stub's saved run, for every programme, the sample notebooks 03 and 04 now read is the one they built
    before (``analysis_sample(read_panel(...))``)."""
    from reach import effects
    from reach.panel import analysis_sample, read_sample

    p, _, link, panel, _ = stub
    work = tmp_path / "work"
    save_run(work, panel, link)
    cols = effects.panel_columns(p["outcomes"], xformla=p["xformla"], covariates=p["covariates"],
                                 subgroups=p["subgroups"])
    for programme in p["programmes"]:
        ref = analysis_sample(read_panel(work, p["first_year"], p["last_year"], columns=cols), programme,
                              first_year=p["first_year"], last_year=p["last_year"])
        got = read_sample(work, programme, first_year=p["first_year"], last_year=p["last_year"], columns=cols)
        pd.testing.assert_frame_equal(got.panel, ref.panel)
        pd.testing.assert_frame_equal(got.excluded, ref.excluded)
