"""Issue 18: files as analysts get them (Excel, SPSS, Windows) give the clean numbers or a clear error.

Each test builds the file the way the tool writes it: numeric SPSS storage through
pyreadstat (KvK and SBI as numbers lose their leading zeros), CSV with ';', decimal
comma and thousands dots as Excel writes it on a Dutch Windows, cp1252 text. The
expected numbers are those of the same data written cleanly (the mini data set of
conftest, whose numbers are checked by hand in test_io/test_link/test_panel), so a
repair either reproduces them exactly or the load fails naming file, column and rows.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import yaml

from conftest import STUB_YAML, make_mini, write_sav
from reach.io import InputError, load_inputs
from reach.link import kvk_repairs, link_participants
from reach.panel import analysis_sample, build_panel, save_run, stale_reason
from reach.params import ParamsError, load_params


def _run(params):
    inputs = load_inputs(params)
    link = link_participants(inputs)
    return inputs, link, build_panel(inputs, link)


@pytest.fixture
def clean(tmp_path):
    """The mini data set written cleanly, loaded: the reference every artefact must reproduce."""
    params = make_mini(tmp_path / "clean")
    return params, _run(params)


def _read(path: Path) -> pd.DataFrame:
    return pyreadstat.read_sav(str(path))[0]


def _same(a, b):
    (ia, la, pa), (ib, lb, pb) = a, b
    pd.testing.assert_frame_equal(la.waterfall, lb.waterfall)
    pd.testing.assert_frame_equal(pa, pb)
    pd.testing.assert_frame_equal(ia.exclusions, ib.exclusions)


def _to_dutch(x: float) -> str:
    """A float as Excel writes it with Dutch settings: thousands dots, decimal comma (exact digits)."""
    txt = np.format_float_positional(x, trim="-")
    sign, txt = ("-", txt[1:]) if txt.startswith("-") else ("", txt)
    whole, _, frac = txt.partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    # Excel's number format with thousands separator shows two decimals at least
    return sign + ".".join(groups) + "," + (frac if len(frac) >= 2 else (frac + "00")[:2])


# ----------------------------------------------------------------------------- issue table, row by row


def test_kvk_written_by_excel_as_floats_links_as_the_clean_list(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "Programmas/TINL_activiteiten.sav"
    df = _read(path)
    # Excel: 01234567 -> 1234567.0 (leading zero lost, then the float's decimal); 22-22-22-22 stays text
    df["KvK_nummer"] = [v if "-" in v else f"{int(v)}.0" for v in df["KvK_nummer"]]
    write_sav(path, df)
    got = _run(params)
    _same(got, clean[1])
    rep = kvk_repairs(got[1]).set_index(["programme", "reason"])["n_records"]
    assert rep[("tinl", "excel_decimal")] == 7      # every record but the dashed one


def test_kvk_in_numeric_spss_storage(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    for y in (2018, 2019, 2020):   # the link files store KVK_NR as a number: leading zeros lost
        path = Path(params["data_dir"]) / f"KvK/KVK_BE_{y}V1.sav"
        df = _read(path)
        write_sav(path, df.assign(KVK_NR=df["KVK_NR"].astype("float64")))
    got = _run(params)
    _same(got, clean[1])
    rep = got[0].repairs.set_index(["table", "column"])["n"]
    assert rep[("kvk_link", "kvk")] == 6            # 01234567 and 01234568 in three years


def test_establishment_numbers_and_suffixes_recover_the_kvk(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "Programmas/TINL_activiteiten.sav"
    df = _read(path)
    df.loc[0, "KvK_nummer"] = "012345670000"        # 12-digit: KvK + establishment suffix
    df.loc[3, "KvK_nummer"] = "33333333-0001"       # KvK-0001 style
    write_sav(path, df)
    got = _run(params)
    _same(got, clean[1])
    rec = got[1].records.query("programme == 'tinl'").set_index("row")
    assert rec.loc[0, "kvk_reason"] == "establishment_suffix" and rec.loc[3, "kvk_reason"] == "establishment_suffix"


def test_negative_employees_are_missing_and_counted(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2020V1.sav"
    df = _read(path)
    df.loc[df["BE_ID"] == "100000002", "WPActueel"] = -1.0    # CBS: unknown
    df.loc[df["BE_ID"] == "100000003", "WPActueel"] = -5.0
    write_sav(path, df)
    inputs, link, panel = _run(params)
    p = panel.set_index(["be_id", "year"])
    assert np.isnan(p.loc[("100000002", 2020), "employees"]) and np.isnan(p.loc[("100000002", 2020), "log_employees"])
    assert np.isfinite(panel["log_employees"].dropna()).all()                     # never -inf
    rep = inputs.repairs.set_index(["table", "column"])["n"]
    assert rep[("register", "employees")] == 2
    # every other number is the clean one
    ref = clean[1][2].set_index(["be_id", "year"])
    other = ~p.index.isin([("100000002", 2020), ("100000003", 2020)])
    pd.testing.assert_series_equal(p.loc[other, "employees"], ref.loc[other, "employees"])


def test_window_after_first_use_excludes_early_firms_never_recohorts(tmp_path):
    params = make_mini(tmp_path / "d")
    params["first_year"] = 2019
    inputs, link, panel = _run(params)
    g = panel.groupby("be_id")["g_tinl"].first()
    # 100000001 first used TINL in 2018 (T1), 100000002 in 2017 (T0), 100000003 in 2018 (T2, KvK 33333333
    # linked from 2019 on): all before the 2019 window, none re-cohorted to 2019 or 2020
    assert g["100000001"] == 2018 and g["100000002"] == 2017 and g["100000003"] == 2018
    assert set(link.early.loc[link.early["programme"] == "tinl", "be_id"]) == {"100000001", "100000002", "100000003"}
    s = analysis_sample(panel, "tinl", first_year=2019, last_year=2020)
    assert not s.panel["be_id"].isin(["100000001", "100000002"]).any()
    row = s.excluded[s.excluded["reason"].str.startswith("first used the programme before the window")]
    assert row["n_firms"].tolist() == [3]
    assert "before the window" in s.summary()


def test_sbi_stored_as_number_in_one_year_is_zero_padded(tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2019V1.sav"
    df = _read(path)
    df.loc[df["BE_ID"] == "100000002", "SbiGecoordineerd"] = "01110"    # agriculture
    df["SbiGecoordineerd"] = df["SbiGecoordineerd"].astype("int64")     # SPSS numeric: 1110
    df["gemcode"] = df["gemcode"].astype("int64")                       # 0363 -> 363
    write_sav(path, df)
    inputs, _, _ = _run(params)
    r = inputs.register.set_index(["be_id", "year"])
    assert r.loc[("100000002", 2019), "sbi"] == "01110" and r.loc[("100000002", 2019), "sbi_section"] == "A"
    assert r.loc[("100000001", 2019), "municipality"] == "0363" and r.loc[("100000001", 2019), "region"] == "NH"
    reasons = inputs.repairs.query("table == 'register'").set_index("column")["n"]
    assert reasons["sbi"] == 1 and reasons["municipality"] >= 2


def _trade_csv(params, year: int, fmt, sep=";", encoding="cp1252") -> None:
    data = Path(params["data_dir"])
    versions = sorted((data / "IHG").glob(f"IHG_per_BE_ID{year}V*.sav"))
    df = _read(versions[-1])
    for v in versions:
        v.unlink()
    for c in ("Uitvoer", "Invoer"):
        df[c] = [fmt(x) for x in df[c]]
    df.to_csv(data / f"IHG/IHG_per_BE_ID{year}V1.csv", sep=sep, index=False, encoding=encoding)
    params["inputs"]["trade"]["pattern"] = "IHG/IHG_per_BE_ID{year}V*.*"


def test_trade_csv_with_dutch_thousands_separators(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    # Excel's number format with a thousands dot: 1.000,00 for 1000 (no value is 'read as 1.0')
    _trade_csv(params, 2020, _to_dutch)
    got = _run(params)
    _same(got, clean[1])
    assert (got[0].repairs["reason"].str.contains("Dutch notation")).any()


def test_trade_csv_ambiguous_thousands_dot_is_refused(tmp_path):
    params = make_mini(tmp_path / "d")
    # every value below a million with a thousands dot and no decimals: 4.632 could be 4.632 or 4632
    _trade_csv(params, 2020, lambda x: f"{int(x) // 1000}.{int(x) % 1000:03d}" if x >= 1000 else str(int(x)))
    data = Path(params["data_dir"]) / "IHG/IHG_per_BE_ID2020V1.csv"
    df = pd.read_csv(data, sep=";", dtype=str)
    df["Uitvoer"] = ["4.632", "1.000", "7.125", "2.500", "3.333", "9.999"][: len(df)]
    df.to_csv(data, sep=";", index=False)
    with pytest.raises(InputError) as err:
        load_inputs(params)
    msg = str(err.value)
    assert "IHG_per_BE_ID2020V1.csv" in msg and "'Uitvoer'" in msg and "4.632" in msg and "4632" in msg


def test_country_codes_that_do_not_exist_are_counted_not_summed(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "IHG/IHG_per_BE_ID2020V1.sav"
    df = _read(path)
    extra = df.iloc[[0]].assign(Land_HB="ZZ", Uitvoer=5.0)          # two capitals, but no country
    write_sav(path, pd.concat([df, extra], ignore_index=True))
    inputs, _, panel = _run(params)
    pd.testing.assert_frame_equal(panel, clean[1][2])
    excl = inputs.exclusions.set_index(["table", "reason"])["n"]
    assert excl[("trade", "unknown country code")] == 1


def test_params_saved_as_cp1252_and_with_bom(tmp_path):
    text = STUB_YAML.read_text(encoding="utf-8").replace("label: NLinBusiness", "label: NLinBusiness café")
    text = text.replace("data_dir: ../data_stub", f"data_dir: {(STUB_YAML.parent / '../data_stub').resolve().as_posix()}")
    for enc in ("cp1252", "utf-8-sig"):
        p = tmp_path / f"p_{enc}.yaml"
        p.write_bytes(text.encode(enc))
        params = load_params(p, check_files=False)
        assert params["programmes"]["nlib"]["label"] == "NLinBusiness café"


def test_default_year_must_be_an_integer(tmp_path, mini_params):
    raw = yaml.safe_load(STUB_YAML.read_text(encoding="utf-8"))
    raw["programmes"]["nlib"]["default_year"] = 2019.5
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ParamsError, match=r"default_year must be an integer year .*2019\.5"):
        load_params(p, check_files=False)
    mini_params["programmes"]["nlib"]["default_year"] = 2019.5
    with pytest.raises(InputError, match=r"default_year must be an integer"):
        load_inputs(mini_params)


# ----------------------------------------------------------------------------- bullets


def _tinl_csv(params, dates, encoding="cp1252") -> Path:
    data = Path(params["data_dir"])
    df = _read(data / "Programmas/TINL_activiteiten.sav")
    df["Datum"] = dates(pd.to_datetime(df["Datum"]))
    df["Organiserende_regio"] = df["Organiserende_regio"]
    out = data / "Programmas/TINL_activiteiten.csv"
    df.to_csv(out, sep=";", index=False, encoding=encoding)
    params["programmes"]["tinl"]["path"] = "Programmas/TINL_activiteiten.csv"
    return out


def test_day_first_dates_are_read_day_first(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    _tinl_csv(params, lambda d: d.dt.strftime("%d-%m-%Y"))   # 01-03-2018, 05-01-2019: day <= 12 everywhere
    got = _run(params)
    _same(got, clean[1])
    assert got[0].participants.query("programme == 'tinl'")["date"].tolist() == \
        clean[1][0].participants.query("programme == 'tinl'")["date"].tolist()


def test_month_first_dates_are_refused_with_examples(tmp_path):
    params = make_mini(tmp_path / "d")
    # a US-style export: month first; one date with day 25 shows it
    _tinl_csv(params, lambda d: d.dt.strftime("%m/%d/%Y").where(d.index != 4, "03/25/2019"))
    with pytest.raises(InputError) as err:
        load_inputs(params)
    msg = str(err.value)
    assert "TINL_activiteiten.csv" in msg and "'Datum'" in msg and "month-first" in msg and "03/25/2019" in msg


def test_excel_serial_dates_in_a_date_column(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "Programmas/TINL_activiteiten.sav"
    df = _read(path)
    serial = (pd.to_datetime(df["Datum"]) - pd.Timestamp("1899-12-30")).dt.days.astype("float64")
    write_sav(path, df.assign(Datum=serial))          # a numeric column of Excel serials
    got = _run(params)
    _same(got, clean[1])
    assert (got[0].repairs["reason"].str.contains("Excel date serial")).any()


def test_column_names_that_change_case_between_years(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2019V1.sav"
    write_sav(path, _read(path).rename(columns={"WPActueel": "WPACTUEEL", "gemcode": "Gemcode"}))
    got = _run(params)
    _same(got, clean[1])
    assert got[0].repairs["reason"].str.contains("column name matched ignoring case").sum() == 2


def test_duplicate_register_rows_name_the_file_and_its_rows(tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2020V1.sav"
    df = _read(path)
    write_sav(path, pd.concat([df, df.iloc[[1]]], ignore_index=True))   # row 2 repeated as row 5
    with pytest.raises(InputError) as err:
        load_inputs(params)
    msg = str(err.value)
    assert "ABR_BE_2020V1.sav" in msg
    lines = [ln.split() for ln in msg.splitlines() if ln.strip().startswith("ABR_BE_2020V1.sav")]
    assert sorted(int(ln[1]) for ln in lines) == [2, len(df) + 1]     # rows of that file, 1-based


def test_bad_value_rows_are_one_based_in_the_named_file(tmp_path):
    params = make_mini(tmp_path / "d")
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2019V1.sav"
    df = _read(path)
    df["WPActueel"] = df["WPActueel"].astype(str)
    df.loc[2, "WPActueel"] = "veel"
    write_sav(path, df)
    with pytest.raises(InputError, match=r"ABR_BE_2019V1.sav: column 'WPActueel'[^\n]*\n[^\n]*\nrow *\n3 +veel"):
        load_inputs(params)


def test_cp1252_participant_csv(clean, tmp_path):
    params = make_mini(tmp_path / "d")
    out = _tinl_csv(params, lambda d: d.dt.strftime("%Y-%m-%d"))
    text = out.read_bytes().decode("cp1252").replace("webinar", "webinar café")
    out.write_bytes(text.encode("cp1252"))
    inputs, _, _ = _run(params)
    assert "webinar café" in set(inputs.participants["activity_type"].dropna())


# ----------------------------------------------------------------------------- runs


def test_panel_records_what_it_was_built_from(tmp_path):
    from reach.runner import _input_files

    params = make_mini(tmp_path / "d")
    inputs, link, panel = _run(params)
    work = tmp_path / "work"
    save_run(work, panel, link, inputs, params)
    files = _input_files(params)
    assert stale_reason(work, params, files) is None
    changed = copy.deepcopy(params)
    changed["first_year"] = 2019
    assert "first_year" in stale_reason(work, changed, files)
    # an input replaced by a file with other contents (same name)
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2020V1.sav"
    df = _read(path)
    write_sav(path, df.assign(WPActueel=df["WPActueel"] + 1))
    assert "ABR_BE_2020V1.sav changed" in stale_reason(work, params, _input_files(params))
    # a panel saved without the record is never taken as up to date
    save_run(work, panel, link)
    assert "missing" in stale_reason(work, params, files)


def test_scan_output_moves_leaking_files_to_work(tmp_path):
    from reach.runner import scan_output

    out, work = tmp_path / "output" / "r", tmp_path / "work" / "r"
    (out / "tables").mkdir(parents=True)
    work.mkdir(parents=True)
    pd.DataFrame({"be_id": ["100000001", "100000002"], "year": [2019, 2019]}).to_parquet(work / "panel.parquet")
    (out / "tables" / "ok.csv").write_text("n\n12\n", encoding="utf-8")
    (out / "notebooks").mkdir()
    (out / "notebooks" / "01.ipynb").write_text('{"text": "duplicate key 100000002 in 2019"}', encoding="utf-8")
    moved = scan_output(out, work)
    assert [Path(m).name for m in moved] == ["01.ipynb"]
    assert not (out / "notebooks" / "01.ipynb").exists() and (work / "quarantine" / "notebooks" / "01.ipynb").exists()
    assert (out / "tables" / "ok.csv").exists()


# ----------------------------------------------------------------------------- property test


def _artefacts(params: dict, rng: np.random.Generator, trade_csv: bool = True) -> list[str]:
    """Apply a random mix of Excel/SPSS artefacts to the files under params['data_dir']; return their names."""
    data = Path(params["data_dir"])
    years = list(range(params["first_year"], params["last_year"] + 1))
    done = []
    y = int(rng.choice(years))
    if rng.random() < 0.5:   # register year with codes stored as numbers, a column spelt in capitals
        path = sorted((data / "ABR").glob(f"ABR_BE_{y}V*.sav"))[-1]
        df = _read(path)
        if df["SbiGecoordineerd"].str.fullmatch(r"\d+").all():
            df["SbiGecoordineerd"] = df["SbiGecoordineerd"].astype("int64")
        if df["gemcode"].str.fullmatch(r"\d+").all():
            df["gemcode"] = df["gemcode"].astype("int64")
        write_sav(path, df.rename(columns={"WPActueel": "WPACTUEEL"}))
        done.append(f"register {y}: numeric codes, column case")
    y = int(rng.choice(years))
    if rng.random() < 0.5:   # a link file with KVK_NR as numbers
        path = sorted((data / "KvK").glob(f"KVK_BE_{y}V*.sav"))[-1]
        df = _read(path)
        write_sav(path, df.assign(KVK_NR=df["KVK_NR"].astype("float64")))
        done.append(f"kvk_link {y}: numeric KvK")
    if trade_csv and rng.random() < 0.5:   # a trade year as a Dutch Excel CSV
        y = int(rng.choice(years))
        _trade_csv(params, y, _to_dutch, encoding=str(rng.choice(["cp1252", "utf-8-sig"])))
        done.append(f"trade {y}: Dutch CSV")
    for name in params["programmes"]:     # participant lists: Excel-mangled KvK numbers, per value
        spec = params["programmes"][name]
        path = data / spec["path"]
        df = _read(path)
        col = spec["columns"]["kvk"]
        k = df[col].astype(str)
        plain = k.str.fullmatch(r"\d{8}").to_numpy()
        u = rng.random(len(df))
        k = k.where(~(plain & (u < 0.2)), k.str.lstrip("0") + ".0")
        k = k.where(~(plain & (u >= 0.2) & (u < 0.3)), k + "-0000")
        sci = plain & (u >= 0.3) & (u < 0.4) & ~k.str.startswith("0")
        k = k.where(~sci, k.str[0] + "." + k.str[1:] + "E+07")
        df[col] = k
        if "date" in spec["columns"] and rng.random() < 0.5:
            dcol = spec["columns"]["date"]
            d = pd.to_datetime(df[dcol])
            kind = rng.integers(0, 2)
            df[dcol] = d.dt.strftime("%d-%m-%Y") if kind == 0 else (d - pd.Timestamp("1899-12-30")).dt.days.astype(str)
            out = path.with_suffix(".csv")
            df.to_csv(out, sep=";", index=False, encoding=str(rng.choice(["cp1252", "utf-8-sig", "utf-8"])))
            path.unlink()
            spec["path"] = str(Path(spec["path"]).with_suffix(".csv"))
            done.append(f"{name}: CSV with {'day-first' if kind == 0 else 'Excel serial'} dates")
        else:
            write_sav(path, df)
        done.append(f"{name}: Excel KvK numbers")
    return done


@pytest.mark.parametrize("seed", range(8))
def test_random_artefact_mixes_on_mini_give_the_clean_numbers(clean, tmp_path, seed):
    params = make_mini(tmp_path / "d")
    what = _artefacts(params, np.random.default_rng(seed))
    try:
        got = _run(params)
    except InputError as exc:   # allowed only as a clear error naming a file and a column
        assert "column" in str(exc) and (".sav" in str(exc) or ".csv" in str(exc)), (what, exc)
        return
    _same(got, clean[1])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_random_artefact_mixes_on_the_stub_give_the_clean_numbers(stub_params, stub_linked, tmp_path, seed):
    import shutil

    src = Path(stub_params["data_dir"])
    data = tmp_path / "data"
    shutil.copytree(src, data)
    params = copy.deepcopy(stub_params)
    params["data_dir"] = str(data)
    what = _artefacts(params, np.random.default_rng(100 + seed))
    inputs, link = stub_linked
    ref = (inputs, link, build_panel(inputs, link))
    try:
        got = _run(params)
    except InputError as exc:
        assert "column" in str(exc), (what, exc)
        return
    _same(got, ref)
    truth = json.loads((src / "truth.json").read_text(encoding="utf-8"))
    wf = got[1].waterfall.set_index(["programme", "bucket"])["n_records"]
    for prog, buckets in truth["waterfall"].items():
        for b, n in buckets.items():
            assert wf[(prog, b)] == n, (what, prog, b)
