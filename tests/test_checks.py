"""reach._checks: the shared input checks and count wording."""
from __future__ import annotations

import pandas as pd
import pytest

from reach._checks import ColumnError, check_choice, count_text, examples, require_columns, sha256


def test_choice_lists_allowed_and_echoes_value():
    with pytest.raises(ValueError, match=r"est_method must be one of \['dr', 'ipw', 'reg'\]; got 'DR'"):
        check_choice("est_method", "DR", ("dr", "ipw", "reg"))
    with pytest.raises(ValueError, match="got 3"):
        check_choice("type", 3, ("simple",))


def test_missing_columns_error_is_key_and_value_error():
    df = pd.DataFrame({"a": [1]})
    for exc in (KeyError, ValueError, ColumnError):
        with pytest.raises(exc, match=r"trade lacks column\(s\) \['exports'\]; it has \['a'\] \(see CONTRACTS\)"):
            require_columns(df, ["a", "exports"], "trade", hint="see CONTRACTS")
    with pytest.raises(TypeError, match="must be a pandas DataFrame; got list"):
        require_columns([1], ["a"], "trade")


def test_examples_rows_are_file_lines():
    df = pd.DataFrame({"x": range(10)})
    text = examples(df, df["x"] >= 7, ["x"], offset=2)
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["9", "10", "11"]
    assert len(examples(df, df["x"] >= 0, ["x"]).splitlines()) == 1 + 5


def test_count_text_never_gives_small_counts():
    assert [count_text(n, 10) for n in (0, 1, 9, 10, 12345)] == ["0", "fewer than 10", "fewer than 10", "10", "12,345"]
    assert count_text(float("nan"), 10, "firms") == "a suppressed number of firms"
    assert count_text(None, 10) == "a suppressed number of"


def test_sha256_of_known_content(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"abc")
    assert sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example
