"""reach.memo: a notebook's later pass in the same run loads what its first pass computed; anything
that changes what the result depends on computes it again; an unreadable entry is never used."""
from __future__ import annotations

import os
import pickle

import pandas as pd
import pytest

from reach import memo, publish
from reach.memo import once_per_run


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return pd.DataFrame({"x": [1.5, 2.5], "call": [self.calls] * 2})


@pytest.fixture
def run_memo(tmp_path, monkeypatch):
    folder = tmp_path / "memo" / "03_matching_tinl-abc"
    monkeypatch.setenv(memo.ENV_MEMO, str(folder))
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "03_matching_tinl")
    return folder


def test_outside_a_run_it_just_computes(monkeypatch):
    monkeypatch.delenv(memo.ENV_MEMO, raising=False)
    f = Counter()
    once_per_run("m", f, key={"a": 1})
    once_per_run("m", f, key={"a": 1})
    assert f.calls == 2


def test_a_later_pass_loads_the_first_result(run_memo):
    f = Counter()
    first = once_per_run("match", f, key={"ratio": 2, "designs": ["nearest", "cem"]})
    again = once_per_run("match", f, key={"designs": ["nearest", "cem"], "ratio": 2})  # key order is irrelevant
    assert f.calls == 1
    pd.testing.assert_frame_equal(first, again)
    assert [p.suffix for p in run_memo.iterdir()] == [".pkl"]  # no temporary file left


def test_what_the_result_depends_on_makes_a_new_entry(run_memo, tmp_path, monkeypatch):
    f = Counter()
    panel = tmp_path / "panel.parquet"
    panel.write_bytes(b"first")
    once_per_run("match", f, key={"ratio": 2}, files=[panel])
    once_per_run("match", f, key={"ratio": 1}, files=[panel])  # another parameter
    once_per_run("other", f, key={"ratio": 2}, files=[panel])  # another computation
    assert f.calls == 3
    panel.write_bytes(b"second, longer")  # the input was rewritten
    assert once_per_run("match", f, key={"ratio": 2}, files=[panel])["call"].iat[0] == 4
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "03_matching_nlw")  # another notebook
    assert once_per_run("match", f, key={"ratio": 2}, files=[panel])["call"].iat[0] == 5
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "03_matching_tinl")
    assert once_per_run("match", f, key={"ratio": 2}, files=[panel])["call"].iat[0] == 4  # found again
    assert f.calls == 5


def test_an_unreadable_entry_is_computed_again_with_a_warning(run_memo):
    f = Counter()
    once_per_run("match", f, key={})
    (entry,) = run_memo.iterdir()
    entry.write_bytes(entry.read_bytes()[:20])  # truncated (a killed writer, a full disk)
    with pytest.warns(RuntimeWarning, match="could not be read"):
        out = once_per_run("match", f, key={})
    assert f.calls == 2 and out["call"].iat[0] == 2
    with entry.open("rb") as fh:  # rewritten whole
        assert pickle.load(fh)["call"].iat[0] == 2
    assert once_per_run("match", f, key={})["call"].iat[0] == 2 and f.calls == 2


def test_a_failing_computation_leaves_no_entry(run_memo):
    def boom():
        raise ZeroDivisionError("no")

    with pytest.raises(ZeroDivisionError):
        once_per_run("match", boom, key={})
    assert not run_memo.exists() or not list(run_memo.iterdir())


def test_the_runner_gives_each_notebook_and_parameter_set_its_own_folder(tmp_path):
    a = memo.folder(tmp_path, "03_matching_tinl", {"ratio": 2, "seed": 1})
    assert a == memo.folder(tmp_path, "03_matching_tinl", {"seed": 1, "ratio": 2})
    assert a != memo.folder(tmp_path, "03_matching_tinl", {"ratio": 1, "seed": 1})
    assert a != memo.folder(tmp_path, "03_matching_nlw", {"ratio": 2, "seed": 1})
    assert a.parent == tmp_path and a.name.startswith("03_matching_tinl-")
    assert os.sep not in memo.folder(tmp_path, "a/b", {}).name
