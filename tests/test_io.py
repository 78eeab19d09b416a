"""reach.io and reach.countries: locating, mapping, typing, streaming aggregation, bad input.

Expected values come from the hand-made mini data set in conftest.py (numbers
written there) or are recomputed independently inside the test.
"""
from __future__ import annotations

import copy
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from conftest import _mini_trade, write_sav
from reach import countries
from reach.io import InputError, load_inputs, locate
from reach.link import link_participants
from reach.panel import build_panel, save_run


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_all(params: dict, work_dir: Path) -> None:
    """The notebook's pipeline: load, link, build, save."""
    inputs = load_inputs(params)
    link = link_participants(inputs)
    save_run(work_dir, build_panel(inputs, link), link)


def _assert_fails_cleanly(params: dict, tmp_path: Path, match: str) -> InputError:
    before = _files(Path(params["data_dir"]))
    work = tmp_path / "work"
    with pytest.raises(InputError, match=match) as exc:
        _run_all(params, work)
    assert not work.exists(), "no partial output after a failed load"
    assert _files(Path(params["data_dir"])) == before, "inputs untouched"
    return exc.value


# ----------------------------------------------------------------------------- countries


def test_to_iso2_accepts_geonom_with_and_without_zeros_ints_and_iso2():
    got = countries.to_iso2(pd.Series(["720", "004", "4", 4, " de", "CN", "999", "", None], dtype=object))
    assert got.tolist()[:6] == ["CN", "DE", "DE", "DE", "DE", "CN"]
    assert got.iloc[6:].isna().all()


def test_to_iso2_numeric_series_from_spss():
    assert countries.to_iso2(pd.Series([720.0, 3.0, np.nan])).tolist()[:2] == ["CN", "NL"]


def test_every_crosswalk_row_round_trips():
    cw = countries.countries()
    assert countries.to_iso2(cw["geonom"]).tolist() == cw["iso2"].tolist()
    assert cw["iso2"].is_unique and cw["geonom"].is_unique


def test_country_groups():
    assert countries.eu_member(["GB", "GB", "RO", "RO", "CN"], [2019, 2020, 2006, 2007, 2020]).tolist() == [1, 0, 0, 1, 0]
    assert countries.is_growth_market(["CN", "DE", "TH"], ["CN", "TH"]).tolist() == [1, 0, 1]
    assert countries.income_group(["IN", "US"]).tolist() == ["lower_middle", "high"]
    assert len(countries.DEFAULT_GROWTH_MARKETS) == 10


def test_sbi_section_and_province():
    # SBI 2008 division -> section, from the published SBI 2008 structure
    assert countries.sbi_section(["01131", "35110", "64191", "9900", "47", "x"]).tolist()[:5] == ["A", "D", "K", "U", "G"]
    assert countries.to_province([14, "0014", "9999"]).tolist()[:2] == ["GR", "GR"]


# ----------------------------------------------------------------------------- locate


def test_locate_highest_version_numeric_not_lexical(tmp_path, caplog):
    for v in (1, 2, 10):
        (tmp_path / f"IHG_per_BE_ID2019V{v}.sav").write_bytes(b"x")
    (tmp_path / "IHG_per_BE_ID2018V3.sav").write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="reach.io"):
        path, version, cands = locate(tmp_path, "IHG_per_BE_ID{year}V*.sav", 2019, "trade")
    assert (path.name, version, len(cands)) == ("IHG_per_BE_ID2019V10.sav", 10, 3)
    assert "IHG_per_BE_ID2019V10.sav" in caplog.text


def test_locate_missing_year_is_clear(tmp_path):
    with pytest.raises(InputError, match=r"trade: no file for year 2021"):
        locate(tmp_path, "IHG{year}V*.sav", 2021, "trade")


# ----------------------------------------------------------------------------- mini data set


def test_mini_tables_have_contract_columns_and_dtypes(mini_params):
    inp = load_inputs(mini_params)
    assert inp.register.columns.tolist()[:8] == ["be_id", "year", "sbi", "sbi_section", "size_class", "employees",
                                                 "municipality", "region"]
    assert inp.register["year"].dtype == "int64" and inp.register["employees"].dtype == "float64"
    assert inp.trade.columns.tolist() == ["be_id", "year", "country", "exports", "imports"]
    assert inp.kvk_link.columns.tolist() == ["kvk", "be_id", "year"]
    assert inp.instruments.columns.tolist() == ["kvk", "be_id", "year", "instrument"]
    assert inp.participants.columns.tolist() == ["programme", "kvk_raw", "kvk", "year", "date", "activity_id",
                                                 "activity_type", "organiser_region", "row"]
    assert set(inp.participants["programme"]) == {"nlib", "tinl"}
    # register: 4 + 4 + 4 units alive in 2018, 2019, 2020 (conftest.MINI_REGISTER)
    assert inp.register.groupby("year").size().tolist() == [4, 4, 4]
    # 9999 is no municipality: region unknown and counted
    reg = inp.register.set_index(["be_id", "year"])
    assert reg.loc[("100000003", 2019), "region"] == "unknown"
    assert reg.loc[("100000001", 2018), ["sbi_section", "region"]].tolist() == ["G", "NH"]
    ex = inp.exclusions.set_index(["table", "reason"])["n"]
    assert ex[("register", "municipality not in crosswalk (region 'unknown')")] == 2


def test_trade_aggregated_over_goods_and_v2_wins(mini_params):
    inp = load_inputs(mini_params)
    t = inp.trade.set_index(["be_id", "year", "country"])
    # 2018 codes are GEONOM numeric (720 = CN): 100 + 50 exports, 0 + 10 imports over two goods chapters
    assert t.loc[("100000001", 2018, "CN"), ["exports", "imports"]].tolist() == [150.0, 10.0]
    # V1 of 2019 halves exports; V2 must be read
    assert t.loc[("100000001", 2019, "CN"), "exports"] == 150.0
    trade_files = [f for f in inp.files if f["role"] == "trade"]
    assert [f["version"] for f in trade_files] == [1, 2, 1]
    assert trade_files[1]["candidates"] == ["IHG_per_BE_ID2019V1.sav", "IHG_per_BE_ID2019V2.sav"]
    assert all(len(f["sha256"]) == 64 for f in inp.files)
    # independent recomputation straight from the raw file
    raw, _ = pyreadstat.read_sav(str(Path(mini_params["data_dir"]) / "IHG/IHG_per_BE_ID2020V1.sav"))
    expect = raw.groupby(["BE_ID", "Land_HB"])["Uitvoer"].sum().sort_index()
    got = t.xs(2020, level="year")["exports"].sort_index()
    np.testing.assert_allclose(got.to_numpy(), expect.to_numpy())
    assert inp.tidy().columns.tolist() == ["role", "year", "file", "version", "n_rows", "size"]


def test_instruments_linked_and_window_exclusion_counted(mini_params):
    inp = load_inputs(mini_params)
    ins = inp.instruments.sort_values(["kvk", "year"])
    assert ins[["be_id", "year"]].values.tolist() == [["100000001", 2018], ["100000001", 2020], ["100000002", 2019]]
    ex = inp.exclusions.set_index(["table", "reason"])["n"]
    assert ex[("instruments", "year outside window 2018-2020")] == 1


def test_csv_and_parquet_inputs_give_the_same_tables(mini_params, tmp_path):
    base = load_inputs(mini_params)
    root = Path(mini_params["data_dir"])
    for y in (2018, 2019, 2020):
        df, _ = pyreadstat.read_sav(str(root / f"ABR/ABR_BE_{y}V1.sav"))
        df.to_csv(root / f"ABR/ABR_BE_{y}V1.csv", index=False, sep=";")
        df, _ = pyreadstat.read_sav(str(root / f"IHG/IHG_per_BE_ID{y}V{2 if y == 2019 else 1}.sav"))
        df.to_parquet(root / f"IHG/IHG_per_BE_ID{y}V1.parquet")
    p = copy.deepcopy(mini_params)
    p["inputs"]["register"]["pattern"] = "ABR/ABR_BE_{year}V*.csv"
    p["inputs"]["trade"]["pattern"] = "IHG/IHG_per_BE_ID{year}V*.parquet"
    other = load_inputs(p)
    pd.testing.assert_frame_equal(base.register, other.register)
    pd.testing.assert_frame_equal(base.trade, other.trade)


def test_negative_and_unknown_country_are_counted_exclusions(mini_params):
    root = Path(mini_params["data_dir"])
    df = _mini_trade(2020)
    df.loc[len(df)] = ["100000002", "998", "01", 5.0, 1.0]      # no such GEONOM code
    df.loc[len(df)] = ["100000002", "DE", "02", -3.0, 1.0]      # negative correction
    write_sav(root / "IHG/IHG_per_BE_ID2020V1.sav", df)
    inp = load_inputs(mini_params)
    ex = inp.exclusions.set_index(["table", "reason"])["n"]
    assert ex[("trade", "unknown country code")] == 1
    assert ex[("trade", "negative exports or imports")] == 1
    assert inp.trade.set_index(["be_id", "year", "country"]).loc[("100000002", 2020, "DE"), "imports"] == 20.0


def test_streaming_aggregation_bounded_memory(tmp_path):
    """Peak memory of the trade loader grows with chunksize, not with the file's length."""
    rng = np.random.default_rng(0)
    n = 300_000
    ids = np.array([f"1{i:08d}" for i in range(40)])
    df = pd.DataFrame({"BE_ID": ids[rng.integers(0, 40, n)], "Land_HB": rng.choice(["CN", "DE", "US"], n),
                       "GS2": "01", "Uitvoer": rng.random(n), "Invoer": rng.random(n)})
    (tmp_path / "IHG").mkdir()
    df.to_parquet(tmp_path / "IHG/IHG2019V1.parquet", row_group_size=10_000)
    from reach import io as rio

    spec = {"pattern": "IHG/IHG{year}V*.parquet",
            "columns": {"be_id": "BE_ID", "country": "Land_HB", "exports": "Uitvoer", "imports": "Invoer"}}

    def peak(chunksize):
        params = {"data_dir": str(tmp_path), "inputs": {"trade": {**spec, "chunksize": chunksize}}}
        tracemalloc.start()
        out = rio._load_trade(params, [2019], rio._Log())
        _, pk = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return out, pk

    small, pk_small = peak(10_000)
    big, pk_big = peak(n)
    expect = df.groupby(["BE_ID", "Land_HB"])[["Uitvoer", "Invoer"]].sum()
    got = small.set_index(["be_id", "country"])[["exports", "imports"]].sort_index()
    np.testing.assert_allclose(got.to_numpy(), expect.sort_index().to_numpy())
    pd.testing.assert_frame_equal(small, big)
    assert pk_small < pk_big / 5, (pk_small, pk_big)


# ----------------------------------------------------------------------------- bad input


def test_missing_column_names_file_column_and_present(mini_params, tmp_path):
    root = Path(mini_params["data_dir"])
    df = _mini_trade(2019).rename(columns={"Uitvoer": "Export"})
    write_sav(root / "IHG/IHG_per_BE_ID2019V2.sav", df)
    err = _assert_fails_cleanly(mini_params, tmp_path, r"column 'Uitvoer' \(for exports\) not found")
    msg = str(err)
    assert "IHG_per_BE_ID2019V2.sav" in msg and "'Export'" in msg and "'Land_HB'" in msg


def test_wrong_type_names_column_count_and_examples(mini_params, tmp_path):
    root = Path(mini_params["data_dir"])
    df = _mini_trade(2018)
    df["Uitvoer"] = df["Uitvoer"].astype(str)
    df.loc[[1, 3], "Uitvoer"] = ["veel", "n.v.t."]
    write_sav(root / "IHG/IHG_per_BE_ID2018V1.sav", df)
    err = _assert_fails_cleanly(mini_params, tmp_path, r"column 'Uitvoer' \(exports\) has 2 values that are not numbers")
    assert "veel" in str(err) and "IHG_per_BE_ID2018V1.sav" in str(err)


def test_corrupt_sav(mini_params, tmp_path):
    path = Path(mini_params["data_dir"]) / "ABR/ABR_BE_2019V1.sav"
    path.write_bytes(b"$FL2@(#) not really SPSS" * 20)
    _assert_fails_cleanly(mini_params, tmp_path, r"ABR_BE_2019V1.sav: cannot be read as sav .*corrupt")


def test_truncated_sav(mini_params, tmp_path):
    path = Path(mini_params["data_dir"]) / "KvK/KVK_BE_2020V1.sav"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _assert_fails_cleanly(mini_params, tmp_path, r"KVK_BE_2020V1.sav")


def test_empty_file(mini_params, tmp_path):
    (Path(mini_params["data_dir"]) / "RVO/Achilles_instrumenten.sav").write_bytes(b"")
    _assert_fails_cleanly(mini_params, tmp_path, r"Achilles_instrumenten.sav: file is empty")


def test_file_without_rows(mini_params, tmp_path):
    write_sav(Path(mini_params["data_dir"]) / "KvK/KVK_BE_2019V1.sav",
              pd.DataFrame({"KVK_NR": pd.Series([], dtype=str), "BE_ID": pd.Series([], dtype=str)}))
    _assert_fails_cleanly(mini_params, tmp_path, r"KVK_BE_2019V1.sav: file has no rows")


def test_participant_file_without_any_valid_kvk(mini_params, tmp_path):
    write_sav(Path(mini_params["data_dir"]) / "Programmas/NLiB_portaal.sav",
              pd.DataFrame({"KvK_nummer": ["abc", "", "1234567890"], "Aanmeld_id": ["1", "2", "3"]}))
    _assert_fails_cleanly(mini_params, tmp_path, r"programme nlib: .*none of the 3 values in column 'KvK_nummer'")


def test_year_without_trade_file(mini_params, tmp_path):
    for v in (1, 2):
        (Path(mini_params["data_dir"]) / f"IHG/IHG_per_BE_ID2019V{v}.sav").unlink()
    _assert_fails_cleanly(mini_params, tmp_path, r"trade: no file for year 2019")


def test_duplicate_register_keys(mini_params, tmp_path):
    root = Path(mini_params["data_dir"])
    df, _ = pyreadstat.read_sav(str(root / "ABR/ABR_BE_2018V1.sav"))
    write_sav(root / "ABR/ABR_BE_2018V1.sav", pd.concat([df, df.iloc[[0]]]))
    _assert_fails_cleanly(mini_params, tmp_path, r"register: 2 rows share a \(be_id, year\) key")


def test_missing_dates_without_default_year(mini_params, tmp_path):
    root = Path(mini_params["data_dir"])
    df, _ = pyreadstat.read_sav(str(root / "Programmas/TINL_activiteiten.sav"))
    df.loc[2, "Datum"] = pd.NaT
    write_sav(root / "Programmas/TINL_activiteiten.sav", df)
    _assert_fails_cleanly(mini_params, tmp_path, r"programme tinl: .*1 records without a date.*default_year")


def test_unsupported_extension(mini_params, tmp_path):
    p = copy.deepcopy(mini_params)
    p["inputs"]["instruments"]["path"] = "RVO/Achilles.dbf"
    (Path(p["data_dir"]) / "RVO/Achilles.dbf").write_bytes(b"PK")
    _assert_fails_cleanly(p, tmp_path, r"unsupported file type '.dbf'.*'.xlsx'")


@pytest.mark.parametrize("name, content, message", [
    ("NLiB.xls", b"\xd0\xcf\x11\xe0", r"NLiB.xls: spreadsheet type '.xls' is not read; save it as .xlsx"),  # old Excel
    ("NLiB.xlsx", b"PK not a workbook", r"NLiB.xlsx: cannot be read as xlsx .*corrupt"),  # a corrupt workbook
])
def test_unreadable_spreadsheet_is_a_clear_error(mini_params, tmp_path, name, content, message):
    p = copy.deepcopy(mini_params)
    p["programmes"]["nlib"]["path"] = f"Programmas/{name}"
    (Path(p["data_dir"]) / "Programmas" / name).write_bytes(content)
    _assert_fails_cleanly(p, tmp_path, message)


def _excel_serial(day: str) -> int:
    """Excel's serial number of a date (origin 1899-12-30), computed here independently of reach."""
    import datetime as dtm

    return (dtm.date.fromisoformat(day) - dtm.date(1899, 12, 30)).days


def test_xlsx_participant_list_reads_like_the_sav(mini_params):
    """TINL's list as an analyst keeps it in Excel, written with openpyxl: the same participants.

    What Excel does to the list: KvK numbers typed as numbers (leading zero lost,
    one stored as a float), one kept as text with dashes; dates as date cells, one
    as a bare serial number and one typed as Dutch day-first text. The participants
    must equal those read from the .sav (conftest's truth), with the repairs counted.
    """
    openpyxl = pytest.importorskip("openpyxl")
    import datetime as dtm

    root = Path(mini_params["data_dir"])
    sav, _ = pyreadstat.read_sav(str(root / "Programmas/TINL_activiteiten.sav"))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(sav.columns))
    kvk_cells = [1234567, 1234567, 1234568, 33333333, 33333333.0, 44444444, 22222222, "22-22-22-22"]
    for i, row in enumerate(sav.itertuples(index=False)):
        d = row.Datum.date()
        date_cell = {3: _excel_serial(str(d)), 5: d.strftime("%d-%m-%Y")}.get(i, dtm.datetime(d.year, d.month, d.day))
        ws.append([kvk_cells[i], row.Activiteit_ID, date_cell, row.Organiserende_regio, row.Activiteit_type,
                   row.Persoon_ID])
    wb.save(root / "Programmas/TINL_activiteiten.xlsx")
    base = load_inputs(mini_params)
    p = copy.deepcopy(mini_params)
    p["programmes"]["tinl"]["path"] = "Programmas/TINL_activiteiten.xlsx"
    got = load_inputs(p)
    cols = ["programme", "kvk", "year", "date", "activity_id", "activity_type", "organiser_region", "row"]
    pd.testing.assert_frame_equal(got.participants[cols], base.participants[cols])
    rep = got.repairs.set_index(["table", "column", "reason"])["n"]
    assert rep[("participants:tinl", "date", "Excel date serial number converted to a date")] == 1
    assert rep[("participants:tinl", "date", "date d-m-yyyy read day-first")] == 1
    # the xlsx's KvK numbers arrive as digits without their leading zero, as from an SPSS numeric column
    assert got.participants.loc[got.participants["programme"] == "tinl", "kvk_raw"].tolist()[:3] == [
        "1234567", "1234567", "1234568"]
    assert [f["role"] for f in got.files].count("programme:tinl") == 1


def test_xlsx_numeric_kvk_column_and_serial_dates(tmp_path):
    """A sheet whose KvK column holds only numbers and whose date column only serials (no date format)."""
    openpyxl = pytest.importorskip("openpyxl")
    from reach import io as rio

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["KvK", "Datum"])
    for kvk, day in ((12345678.0, "2019-03-05"), (1234567, "2020-12-31"), (None, "2021-01-04")):
        ws.append([kvk, _excel_serial(day)])
    path = tmp_path / "list.xlsx"
    wb.save(path)
    state = rio._FileState()
    df = pd.concat(rio._read_table(path, {"kvk": "KvK", "date": "Datum"}, "programme x", 2, state))
    assert df["kvk"].tolist()[:2] == ["12345678", "1234567"] and pd.isna(df["kvk"].iloc[2])
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2019-03-05", "2020-12-31", "2021-01-04"]
    assert df["_row"].tolist() == [1, 2, 3]
    assert state.repairs == {("date", "Excel date serial number converted to a date"): 3}


@pytest.mark.parametrize("ids", ["digits", "mixed_width", "text", "with_na"])
def test_integer_key_sort_and_duplicates_equal_pandas(ids):
    """The fast sort/duplicate paths of reach.io give pandas' own answer (the reference), row for row."""
    from reach import io as rio

    rng = np.random.default_rng(1)
    n = 2_000
    num = rng.integers(0, 300, n)
    be = {"digits": [f"{100000000 + v:09d}" for v in num],
          "mixed_width": [str(v) for v in num],            # "99" sorts after "100" as text, not as a number
          "text": [f"x{v}" for v in num],
          "with_na": [None if v % 37 == 0 else f"{v:05d}" for v in num]}[ids]
    df = pd.DataFrame({"be_id": pd.Series(be, dtype="str"), "year": rng.integers(2014, 2017, n).astype("int64"),
                       "country": pd.Series(rng.choice(["DE", "BE", "CN"], n), dtype="str"), "v": np.arange(n)})
    for keys in (["be_id", "year"], ["be_id", "year", "country"], ["country", "be_id"]):
        pd.testing.assert_frame_equal(rio._sort_rows(df, keys), df.sort_values(keys, ignore_index=True))
        for keep in ("first", "last", False):
            np.testing.assert_array_equal(rio._duplicated(df, keys, keep), df.duplicated(keys, keep=keep).to_numpy())


def test_packed_key_order_equals_lexsort_and_falls_back_when_too_wide():
    from reach import io as rio

    rng = np.random.default_rng(2)
    a, b = rng.integers(-5, 5, 500), rng.integers(0, 3, 500)
    np.testing.assert_array_equal(rio._stable_order([a, b]), np.lexsort((b, a)))
    wide = [rng.integers(0, 2**40, 500), rng.integers(0, 2**40, 500)]  # spans multiply past int64
    np.testing.assert_array_equal(rio._stable_order(wide), np.lexsort(wide[::-1]))


def test_kvk_fast_path_equals_normalise_kvk():
    """The pass-through of clean 8-digit numbers gives normalise_kvk's own answer on every kind of value."""
    from reach import io as rio
    from reach.normalise import normalise_kvk

    raw = pd.Series(["12345678", "1234567", " 12345678", "1234567.0", "1.2345678E+07", "12345678-0001", "A1",
                     None, "", "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668", "123456789", "01234567"] * 3,
                    dtype="str")
    for s in (raw, raw[raw.str.fullmatch(r"[0-9]{8}").fillna(False)]):
        got_k, got_w = rio._normalise_kvk(s)
        exp_k, exp_w = normalise_kvk(s)
        pd.testing.assert_series_equal(got_k, exp_k)
        pd.testing.assert_series_equal(got_w, exp_w)
