"""reach.link: KvK normalisation, every waterfall rule, firm-level de-duplication, truth on the stub.

Mini-data expectations are derived by hand from the records written in
conftest.make_mini (the comment next to each number names the records).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import STUB_TRUTH
from reach.io import load_inputs
from reach.link import BUCKETS, LinkResult, link_participants, normalise_kvk


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("raw, kvk, reason", [
    ("12345678", "12345678", "ok"),
    ("1234567", "01234567", "leading_zeros_restored"),    # leading zero dropped by a spreadsheet
    ("123", "00000123", "leading_zeros_restored"),        # zeros restored to 8 digits whatever the length
    ("1234 5678", "12345678", "separators_removed"),      # space
    (" 12345678 ", "12345678", "ok"),
    ("12.34.56.78", "12345678", "separators_removed"),    # dots
    ("1234-5678", "12345678", "separators_removed"),      # dash
    ("1234\u00a05678", "12345678", "separators_removed"), # non-breaking space
    # what Excel does (issue 18): the dot of a float is a decimal point, never a separator
    ("12345678.0", "12345678", "excel_decimal"),
    ("1234567.0", "01234567", "excel_decimal"),            # not the valid-looking 12345670
    ("1234567,00", "01234567", "excel_decimal"),           # decimal comma
    ("1.2345678E+07", "12345678", "scientific_notation"),
    ("1,234567e+06", "01234567", "scientific_notation"),
    ("1.23457E+07", None, "scientific_digits_lost"),       # Excel's display: 12345700, another firm
    ("12345678-0001", "12345678", "establishment_suffix"),
    ("1234567 0001", "01234567", "establishment_suffix"),
    ("123456780001", "12345678", "establishment_suffix"),  # 12 digits: KvK + establishment suffix
    ("A2345678", None, "non_digit"),
    ("1234567.5", None, "non_digit"),         # a fraction: removing the dot would invent 12345675
    ("-1", None, "non_digit"),                # a negative code, not KvK 00000001
    ("12345678a", None, "non_digit"),
    ("123456789", None, "too_long"),          # 9 digits: a BE_ID or a typo, not a KvK
    ("12345678901", None, "too_long"),
    ("", None, "empty"),
    (" . ", None, "empty"),
    (None, None, "empty"),
])
def test_normalise_kvk_rules(raw, kvk, reason):
    got, why = normalise_kvk(pd.Series([raw], dtype=object))
    assert (None if pd.isna(got.iloc[0]) else got.iloc[0]) == kvk
    assert why.iloc[0] == reason


def test_normalise_kvk_numbers_and_alignment():
    got, why = normalise_kvk(pd.Series([1234567.0, np.nan, 12345678.0], index=[10, 11, 12]))
    assert got.index.tolist() == [10, 11, 12]
    assert got.tolist()[0::2] == ["01234567", "12345678"]
    assert why.tolist() == ["leading_zeros_restored", "empty", "ok"]


def test_normalise_kvk_refuses_negative_and_fractional_numbers():
    got, why = normalise_kvk(pd.Series([-1.0, 1234567.5, 12345678.0]))
    assert got.isna().tolist() == [True, True, False] and why.tolist()[:2] == ["non_digit", "non_digit"]


def test_normalise_kvk_vectorised_on_many_rows():
    raw = pd.Series(np.arange(1, 200_001).astype(str))
    got, why = normalise_kvk(raw)
    assert why.isin(["ok", "leading_zeros_restored"]).all() and got.iloc[-1] == "00200000"
    assert got.str.len().eq(8).all()


# ----------------------------------------------------------------------------- waterfall on the mini data


@pytest.fixture
def mini_link(mini_params) -> tuple:
    inputs = load_inputs(mini_params)
    return inputs, link_participants(inputs)


def test_waterfall_mini_by_hand(mini_link):
    _, res = mini_link
    wf = res.waterfall.pivot(index="bucket", columns="programme", values="n_records")
    # NLiB (default_year 2019): 1234567 linked; 1234567 again duplicate; 2222 2222 linked; ABC invalid;
    # 99999999 not in any link file; 5555.5555 linked
    assert wf["nlib"].reindex(list(BUCKETS) + ["total"]).tolist() == [1, 1, 0, 1, 0, 0, 3, 6]
    # TINL: T1 x3 (one duplicate person, one second KvK of the same group), 33333333 in 2018 not linked
    # that year, 44444444 in 2019 links to a unit not in the 2019 register, 2017 outside window
    assert wf["tinl"].reindex(list(BUCKETS) + ["total"]).tolist() == [0, 1, 1, 0, 1, 1, 4, 8]
    assert res.waterfall["bucket"].tolist()[:8] == list(BUCKETS) + ["total"]
    assert res.waterfall.columns.tolist() == ["programme", "bucket", "n_records"]


def test_waterfall_invariants(mini_link):
    inputs, res = mini_link
    wf = res.waterfall
    for p, sub in wf.groupby("programme"):
        parts = sub.loc[sub["bucket"] != "total", "n_records"].sum()
        total = sub.loc[sub["bucket"] == "total", "n_records"].item()
        assert parts == total == (inputs.participants["programme"] == p).sum()
    assert len(res.records) == len(inputs.participants)
    assert res.records["bucket"].notna().all()
    # be_id only for linked records
    assert (res.records["be_id"].notna() == (res.records["bucket"] == "linked")).all()


def test_several_kvk_one_firm_counts_once(mini_link):
    _, res = mini_link
    f = res.firms.set_index(["programme", "be_id"])
    # 01234567 and 01234568 both link to 100000001 in activity T1: one firm, one activity, two records
    assert f.loc[("tinl", "100000001"), ["first_use", "n_activities", "n_records"]].tolist() == [2018, 1, 2]
    assert (f["first_year"] == f["first_use"]).all()  # deprecated alias, one release
    assert res.firms.groupby("programme").size().to_dict() == {"nlib": 3, "tinl": 3}
    a = res.activities.set_index(["programme", "activity_id"])
    # T1: three person-records, two linked (the third is a duplicate), two KvK numbers, one firm
    assert a.loc[("tinl", "T1"), ["n_records", "n_linked_records", "n_kvk", "n_firms"]].tolist() == [3, 2, 2, 1]
    assert a.loc[("tinl", "T2"), ["n_records", "n_linked_records", "n_firms"]].tolist() == [2, 1, 1]


def test_first_year_from_date_and_default_year(mini_link):
    _, res = mini_link
    f = res.firms.set_index(["programme", "be_id"])["first_use"]
    assert f.loc["nlib"].eq(2019).all()                       # default_year
    assert f.loc[("tinl", "100000003")] == 2019               # 2018 record not linked that year
    # the 2017 record lies before the window: first use is 2017 (full history), never re-cohorted to 2020
    assert f.loc[("tinl", "100000002")] == 2017
    assert res.early.set_index(["programme", "be_id"])["first_use"].to_dict() == {("tinl", "100000002"): 2017}


def test_window_argument_overrides_inputs(mini_link):
    inputs, _ = mini_link
    res = link_participants(inputs, first_year=2019, last_year=2020)
    wf = res.waterfall.set_index(["programme", "bucket"])["n_records"]
    # T1 (2018, two valid non-duplicate records), T3 (2018) and T0 (2017) are now outside
    assert wf[("tinl", "outside_window")] == 4 and wf[("tinl", "not_linked_that_year")] == 0


def test_duplicate_is_the_later_record_in_file_order(mini_link):
    _, res = mini_link
    r = res.records.query("programme == 'tinl' and activity_id == 'T1' and kvk == '01234567'")
    assert r.sort_values("row")["bucket"].astype(str).tolist() == ["linked", "duplicate_record"]


def test_result_object_is_frozen_and_displays(mini_link):
    _, res = mini_link
    with pytest.raises(AttributeError):
        res.firms = None
    assert "kvk_not_found" in res.summary() and "<pre>" in res._repr_html_()
    pd.testing.assert_frame_equal(res.tidy(), res.waterfall)


# ----------------------------------------------------------------------------- the stub and its truth


stub_needed = pytest.mark.skipif(not STUB_TRUTH.is_file(), reason="data_stub/truth.json not generated yet")


@pytest.fixture(scope="module")
def stub_link(stub_linked):
    return (*stub_linked, json.loads(STUB_TRUTH.read_text()))


@stub_needed
def test_stub_waterfall_equals_truth(stub_link):
    _, res, truth = stub_link
    wf = res.waterfall.pivot(index="programme", columns="bucket", values="n_records")
    for prog, expected in truth["waterfall"].items():
        got = {b: int(wf.loc[prog, b]) for b in expected}
        assert got == expected, prog
        assert sum(v for k, v in got.items() if k != "total") == got["total"]


@stub_needed
def test_stub_users_and_cohorts_equal_truth(stub_link):
    _, res, truth = stub_link
    assert res.firms.groupby("programme").size().to_dict() == truth["n_users"]
    for prog, sizes in truth["cohort_sizes"].items():
        got = res.firms.loc[res.firms["programme"] == prog, "first_use"].value_counts()
        assert {str(k): int(v) for k, v in got.items()} == {k: int(v) for k, v in sizes.items()}, prog


def test_waterfall_check_table_and_figure(stub_linked):
    """The exported waterfall: totals equal input rows, small buckets suppressed with a partner,
    and the figure draws only published cells."""
    from reach.link import check_waterfall, waterfall_figure, waterfall_table

    _, link = stub_linked
    chk = check_waterfall(link)
    pub = chk.suppress()
    for prog, n_rows in link.records.groupby("programme").size().items():
        total = pub[(pub["programme"] == prog) & (pub["bucket"] == "Total")]["value"].iloc[0]
        assert total == n_rows
    small = pub[pub["n_units"].isna()]
    assert len(small) == 0 or len(small) >= 2  # a suppressed cell never stands alone in its line
    text = waterfall_table(pub, link)
    assert list(text.index)[-1] == "Total" and (text == "suppressed").sum().sum() == len(small[small["programme"] != "Total"])
    fig = waterfall_figure(pub)
    bars = [p.get_width() for p in fig.axes[0].patches if p.get_width() > 0]
    published = pub[(pub["programme"] != "Total") & (pub["bucket"] != "Total")]["value"].dropna()
    assert sorted(bars) == sorted(published[published > 0].tolist())
