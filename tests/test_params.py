"""Parameter files: schema validation, overrides, and agreement with the notebooks' parameters cells."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reach.params import INJECTED_KEYS, RUNNER_KEYS, SCHEMA, ParamsError, apply_overrides, load_params, validate_params
from reach.runner import NOTEBOOKS, notebook_dir, notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
PARAM_FILES = sorted((ROOT / "params").glob("*.yaml"))


def test_param_files_exist():
    names = {p.name for p in PARAM_FILES}
    assert {"stub.yaml", "nlib.yaml", "tinl.yaml"} <= names


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_schema_valid(path):
    # real CBS paths do not exist outside Remote Access: the schema is checked, not the files
    load_params(path, check_files=path.name == "stub.yaml")


@pytest.fixture(scope="module")
def declared():
    return {name: notebook_parameters(notebook_dir() / f"{name}.ipynb") for name in NOTEBOOKS}


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_key_is_a_notebook_parameter(path, declared):
    keys = yaml.safe_load(path.read_text(encoding="utf-8")).keys()
    used = set().union(*[set(d) for d in declared.values()])
    orphans = [k for k in keys if k not in used and k not in RUNNER_KEYS]
    assert not orphans, f"{path.name}: keys no notebook declares (papermill would only warn): {orphans}"


def test_every_notebook_parameter_is_documented(declared):
    for name, params in declared.items():
        for key in params:
            assert key in SCHEMA or key in INJECTED_KEYS, f"{name}: parameter {key!r} is not in reach.params.SCHEMA"
        assert set(INJECTED_KEYS) <= set(params), f"{name} must declare {INJECTED_KEYS}"


def test_parameters_cell_is_commented_literals():
    import ast

    for name in NOTEBOOKS:
        nb = json.loads((notebook_dir() / f"{name}.ipynb").read_text(encoding="utf-8"))
        cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(cells) == 1, f"{name}: exactly one cell tagged 'parameters'"
        src = "".join(cells[0]["source"])
        tree = ast.parse(src)
        for node in tree.body:
            assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{name}: only assignments in the parameters cell"
            # literal_eval fails on derived values (calls, names, arithmetic on names)
            ast.literal_eval(node.value)
        for line in src.splitlines():
            if "=" in line and not line.lstrip().startswith("#") and not line.startswith((" ", "\t", "}", "]")):
                assert "#" in line, f"{name}: parameter line without a comment: {line!r}"


def test_notebooks_are_stored_without_outputs():
    for path in sorted(notebook_dir().glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name} is committed with outputs"
                assert cell.get("execution_count") is None, f"{path.name} has execution counts"


def _stub():
    return yaml.safe_load((ROOT / "params" / "stub.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"caliper": 0}, "caliper: must be > 0"),
        ({"caliper": -0.1}, "caliper: must be > 0"),
        ({"outcomes": ["log_exports", "profit"]}, "unknown entries ['profit']"),
        ({"control_group": "never"}, "'nevertreated', 'notyettreated'"),
        ({"est_method": "ols"}, "got 'ols'"),
        ({"programme": "nlws"}, "must name one of the programmes"),
        ({"ratio": 0}, "ratio: must be an integer >= 1"),
        ({"biters": "many"}, "biters: must be int"),
        ({"replace": "no"}, "replace: must be bool"),
        ({"alpha": 1.5}, "alpha: must lie strictly between 0 and 1"),
        ({"first_year": 2024}, "is after last_year"),
        ({"xformla": "~ profit"}, "unknown terms ['profit']"),
        ({"growth_markets": ["China"]}, "ISO-2"),
        ({"disclosure": {"min_unit": 10}}, "unknown rules ['min_unit']"),
        ({"typo_key": 1}, "unknown keys ['typo_key']"),
    ],
)
def test_impossible_settings_are_one_clear_error(change, message):
    params = {**_stub(), **change}
    with pytest.raises(ParamsError) as err:
        validate_params(params, source="stub.yaml", check_files=False)
    assert message in str(err.value)
    assert "stub.yaml" in str(err.value)


def test_missing_files_are_reported(tmp_path):
    params = {**_stub(), "data_dir": str(tmp_path)}
    with pytest.raises(ParamsError) as err:
        validate_params(params, check_files=True)
    text = str(err.value)
    assert "inputs.register: no file matches" in text and "programmes.tinl" in text


def test_missing_data_dir(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        validate_params({**_stub(), "data_dir": str(tmp_path / "nope")}, check_files=True)


def test_overrides_parse_yaml_and_reach_into_mappings():
    out = apply_overrides(_stub(), ["biters=99", "disclosure.min_units=15", "exact=[sbi_section, region]", "xformla=null"])
    assert out["biters"] == 99 and out["disclosure"]["min_units"] == 15
    assert out["exact"] == ["sbi_section", "region"] and out["xformla"] is None
    with pytest.raises(ParamsError, match="not a mapping"):
        apply_overrides(_stub(), ["biters.x=1"])
    with pytest.raises(ParamsError, match="key=value"):
        apply_overrides(_stub(), ["biters"])


def test_relative_data_dir_resolved_against_yaml(tmp_path):
    p = load_params(ROOT / "params" / "stub.yaml", check_files=False)
    assert Path(p["data_dir"]) == (ROOT / "data_stub").resolve()


def test_readme_parameter_table_is_the_schema():
    from reach.params import markdown_table

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- parameters:start", "<!-- parameters:end -->"
    block = text[text.index(start):text.index(end)].split("\n", 1)[1].rstrip("\n")
    assert block == markdown_table(), "README's parameter table is stale: paste reach.params.markdown_table()"
