"""The one label table: every code a reader could meet has a plain name; unknown codes are errors."""
from __future__ import annotations

import pytest

from reach import labels
from reach.params import OUTCOMES, load_params
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_outcome_method_and_group_of_the_parameters_has_a_label():
    for o in OUTCOMES:
        assert labels.outcome(o) and "_" not in labels.outcome(o)
    for m in ("dr", "ipw", "reg", "nearest", "logit", "gbm"):
        assert "_" not in labels.method(m)
    assert labels.control_group("notyettreated") == "firms not yet using the programme"
    assert labels.control_group("nevertreated") == "firms that never used the programme"
    assert labels.outcome("log_exports") == "exports (log)"
    assert labels.outcome("n_dest") == "number of destination countries"


def test_size_classes_and_regions_cover_the_cbs_codes():
    import pandas as pd

    codes = ["00", "10", "21", "22", "30", "40", "50", "60", "71", "72", "81", "82", "91", "92", "93"]
    assert [labels.size_class(c) for c in codes] == list(labels.SIZE_CLASSES.values())
    assert labels.size_class("21") == "2 employees" and labels.size_class(10) == "1 employee"
    provinces = set(pd.read_csv(ROOT / "src/reach/data/municipalities.csv", dtype=str)["province"])
    assert all(labels.region(p) != p for p in provinces)


def test_programme_labels_come_from_the_parameters():
    params = load_params(ROOT / "params" / "stub.yaml", check_files=False)
    assert labels.programme(params, "tinl") == "Trade and Innovate NL"
    assert labels.programme(params["programmes"], "nlw") == "NLWorks"
    with pytest.raises(ValueError, match=r"no programme 'xx'.*\['nlib', 'nlw', 'tinl'\]"):
        labels.programme(params, "xx")
    with pytest.raises(ValueError, match="has no label"):
        labels.programme({"programmes": {"a": {"path": "x"}}}, "a")


def test_unknown_codes_are_errors_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"no outcome label for 'profit'; known codes: \[.*'log_exports'"):
        labels.outcome("profit")
    with pytest.raises(ValueError, match="no control group label for 'never'"):
        labels.control_group("never")
    assert labels.label("profit") == "profit"  # the lenient look-up for mixed columns


def test_relabel_and_code_names():
    import pandas as pd

    df = pd.DataFrame({"outcome": ["log_exports", "n_dest"], "sample": ["matched", "full"], "n_firms": [3, 4]})
    out = labels.relabel(df, {"outcome": "outcome", "sample": "sample"})
    assert list(out.columns) == ["outcome", "sample", "firms"]
    assert out["outcome"].tolist() == ["exports (log)", "number of destination countries"]
    assert df["outcome"].tolist() == ["log_exports", "n_dest"]  # the input is not changed
    names = labels.code_names()
    assert {"log_exports", "ihs_exports", "n_dest", "notyettreated", "business_economy"} <= set(names)
    # plain words are not code names: the lint must not flag "full" or "simple"
    assert not {"full", "simple", "group", "matched"} & set(names)
