"""reach.cache via reach.io.load_inputs(cache_dir=...): typed parquet copies of the inputs.

The reference is the same load without a cache (the mini data set of conftest): a cached
load must give identical tables, and a changed file, a changed mapping or a corrupt copy
must never give the old numbers.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

import reach.io as rio
from conftest import write_sav
from reach.io import load_inputs


def _same_inputs(a, b):
    for name in ("register", "kvk_link", "trade", "instruments", "participants", "exclusions", "repairs"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)


@pytest.fixture
def cached(mini_params, tmp_path):
    cache = tmp_path / "work" / "cache"
    return mini_params, cache, load_inputs(mini_params)


def test_cached_load_equals_uncached_and_second_load_reads_no_source(cached, monkeypatch):
    params, cache, ref = cached
    first = load_inputs(params, cache_dir=cache)
    _same_inputs(first, ref)
    copies = sorted(p.name for p in cache.glob("*.parquet"))
    assert len(copies) == len(ref.files)            # one typed copy per file read

    def no_source(*a, **k):
        raise AssertionError("the source was read although an up-to-date copy exists")

    monkeypatch.setattr(rio, "_iter_raw", no_source)
    second = load_inputs(params, cache_dir=cache)
    _same_inputs(second, ref)


def test_changed_file_is_read_again(cached):
    params, cache, _ = cached
    load_inputs(params, cache_dir=cache)
    path = Path(params["data_dir"]) / "ABR/ABR_BE_2019V1.sav"
    df = pyreadstat.read_sav(str(path))[0]
    write_sav(path, df.assign(WPActueel=df["WPActueel"] + 100))
    got = load_inputs(params, cache_dir=cache)
    assert got.register.query("year == 2019")["employees"].min() >= 100
    assert got.register.query("year == 2019")["employees"].tolist() == \
        load_inputs(params).register.query("year == 2019")["employees"].tolist()
    assert len(list(cache.glob("register__ABR_BE_2019V1.sav__*.parquet"))) == 1   # the stale copy is gone


def test_changed_mapping_gets_another_copy(cached):
    params, cache, ref = cached
    load_inputs(params, cache_dir=cache)
    before = {p.name for p in cache.glob("register__*.parquet")}
    params["inputs"]["register"]["columns"]["employees"] = "WPACTUEEL"   # matched ignoring case
    got = load_inputs(params, cache_dir=cache)
    after = {p.name for p in cache.glob("register__*.parquet")}
    assert before.isdisjoint(after) and len(after) == len(before)
    pd.testing.assert_frame_equal(got.register, ref.register)
    matched = got.repairs[got.repairs["reason"].str.contains("column name matched")]
    assert matched["n"].tolist() == [3]             # one per register year, also when read from the copy


def test_corrupt_copy_is_rebuilt_with_a_warning(cached, caplog):
    params, cache, ref = cached
    load_inputs(params, cache_dir=cache)
    victim = next(cache.glob("trade__IHG_per_BE_ID2020V1.sav__*.parquet"))
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING, logger="reach.cache"):
        got = load_inputs(params, cache_dir=cache)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    _same_inputs(got, ref)
