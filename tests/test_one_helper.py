"""One place for each helper (issue 19): no module keeps its own copy of a shared check, constant or fitter."""
from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reach import countries, io, params, synth
from reach._checks import choice_error, count_text

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "reach"
MODULES = sorted(p for p in SRC.glob("*.py") if p.name != "_checks.py")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

#: Names the duplicates had before reach._checks; a new one would be a new copy.
COPIES = ("_check_choice", "_choice", "_allowed", "_require", "_require_columns", "_examples", "_sha256",
          "_count_text")


#: params' validators collect messages instead of raising: ``_choice`` builds one from choice_error.
NOT_COPIES = {("params.py", "_choice")}


def _defs(path: Path) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))  # a docstring's escapes are not ours
        tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_module_defines_its_own_copy_of_a_shared_helper(path):
    own = [name for name in _defs(path) if name in COPIES and (path.name, name) not in NOT_COPIES]
    assert not own, f"{path.name} defines {own}: use reach._checks"


@pytest.mark.parametrize("path", MODULES + NOTEBOOKS, ids=lambda p: p.name)
def test_small_counts_are_worded_by_count_text_only(path):
    text = path.read_text(encoding="utf-8")
    # the idiom count_text replaces: "fewer than {k}" if n < k else f"{n:,}" (either order)
    idiom = re.compile(r"fewer than \{[^}]+\}[^\n]*\bif\b[^\n]*\belse\b|\belse f?\\?\"fewer than \{")
    assert not idiom.search(text), f"{path.name} words a small count itself: use count_text"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_files_are_hashed_by_one_function(path):
    # reading a file in blocks into a hash is reach._checks.sha256 (cache.py hashes a string, not a file)
    assert "fh.read(1 << 20)" not in path.read_text(encoding="utf-8"), path.name


def test_one_growth_market_list():
    ten = ("CN", "TR", "RO", "IN", "BG", "ZA", "RU", "MY", "MX", "TH")
    assert countries.DEFAULT_GROWTH_MARKETS == ten  # the evaluation's markets (CONTRACTS.md)
    assert synth.GROWTH_MARKETS is countries.DEFAULT_GROWTH_MARKETS
    spelled = [p.name for p in MODULES if re.search(r'"CN", "TR", "RO"', p.read_text(encoding="utf-8"))]
    assert spelled == ["countries.py"]


def test_notebook_and_params_defaults_are_the_growth_market_list():
    # notebooks' parameters cells are literals by rule, so they repeat the list: they must repeat it exactly
    for nb in NOTEBOOKS:
        cell = next((c for c in _cells(nb) if "growth_markets =" in c), None)
        if cell is not None:
            value = re.search(r"^growth_markets = (\[.*?\])", cell, flags=re.M).group(1)
            assert tuple(ast.literal_eval(value)) == countries.DEFAULT_GROWTH_MARKETS, nb.name
    for f in sorted((ROOT / "params").glob("*.yaml")):
        gm = yaml.safe_load(f.read_text(encoding="utf-8")).get("growth_markets")
        assert gm is None or tuple(gm) == countries.DEFAULT_GROWTH_MARKETS, f.name


def _cells(nb: Path) -> list[str]:
    import json

    return ["".join(c["source"]) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]]


# --------------------------------------------------------------------------- params takes the inputs from io
def _stub() -> dict:
    return yaml.safe_load((ROOT / "params" / "stub.yaml").read_text(encoding="utf-8"))


def test_params_input_roles_are_io_roles():
    assert params.INPUT_ROLES is io.ROLES
    assert params.PROGRAMME_COLUMNS is io.PROGRAMME_COLUMNS


@pytest.mark.parametrize("ids, ok", [({"kvk": "KVK_NR"}, True), ({"be_id": "BE_ID"}, True), ({}, False)])
def test_instruments_may_come_by_kvk_or_be_id(ids, ok):
    p = _stub()
    cols = {k: v for k, v in p["inputs"]["instruments"]["columns"].items() if k not in ("kvk", "be_id")}
    p["inputs"]["instruments"]["columns"] = {**cols, **ids}
    assert io.missing_role_columns("instruments", p["inputs"]["instruments"]["columns"]) == ([] if ok else
                                                                                           ["kvk or be_id"])
    if ok:
        params.validate_params(p, source="stub.yaml", check_files=False)
    else:
        with pytest.raises(params.ParamsError, match=r"instruments: .*missing \['kvk or be_id'\]"):
            params.validate_params(p, source="stub.yaml", check_files=False)


def test_params_choice_message_is_the_shared_one():
    with pytest.raises(params.ParamsError) as err:
        params.validate_params({**_stub(), "est_method": "ols"}, source="stub.yaml", check_files=False)
    assert f"est_method: {choice_error('ols', ('dr', 'ipw', 'reg'))}" in str(err.value)


def test_panel_summary_says_zero_as_zero():
    # the old copy in panel said "fewer than 10" for an empty reason as well; count_text says 0
    from reach.panel import Sample

    s = Sample(panel=pd.DataFrame(), excluded=pd.DataFrame({"reason": ["a", "b", "c"], "n_firms": [0, 3, 12]}))
    assert s.summary(10) == ("Left out of the analysis sample: 0 firms: a; fewer than 10 firms: b; 12 firms: c.")
    assert count_text(0, 10) == "0"


# --------------------------------------------------------------------------- one logit fitter in did
def test_did_logit_is_the_maximum_likelihood_fit():
    """did._logit (through did._logit_rows) against statsmodels' GLM binomial with the same prior weights."""
    sm = pytest.importorskip("statsmodels.api")
    from reach.did import _logit

    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(400), rng.normal(size=(400, 2))])
    D = (rng.uniform(size=400) < 1 / (1 + np.exp(-(X @ [-0.5, 1.0, -0.7])))).astype(float)
    w = rng.uniform(0.5, 2, 400)
    p, H = _logit(X, D, w)
    ref = sm.GLM(D, X, family=sm.families.Binomial(), var_weights=w).fit(tol=1e-13)
    # two Newton/IRLS solutions of the same likelihood: equal to rounding in p, to the last step in the covariance
    np.testing.assert_allclose(p, ref.fittedvalues, atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(H), ref.cov_params(), rtol=1e-8)
