"""The documentation inside the repository says what the code does.

* README's notebook table: every library call it names for a notebook is made by that notebook.
* README links only documents that exist in a clone (no link out of the repository).
* docs/ARCHITECTURE.md names every module of the package.
"""
from __future__ import annotations

import json
import pkgutil
import re
from pathlib import Path

import pytest

import reach

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _notebook_table() -> dict[str, list[str]]:
    """``{notebook stem: [library calls]}`` from README's "What each notebook answers" table."""
    rows = {}
    for line in README.splitlines():
        m = re.match(r"^\|\s*`(\d\d_\w+)`\s*\|.*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            rows[m.group(1)] = re.findall(r"`([\w.]+)`", m.group(2))
    return rows


def _code(stem: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def _calls(code: str, name: str) -> bool:
    """Whether ``code`` calls ``name`` (``reach.mod.func`` through any import form, or ``Class.method``)."""
    parts = name.split(".")
    if parts[0] != "reach":  # Class.method: a method call on a result object
        return re.search(rf"\.{re.escape(parts[-1])}\b", code) is not None
    module, func = ".".join(parts[:-1]), parts[-1]
    sub = module.split(".", 1)[1] if "." in module else ""
    aliases = set(re.findall(rf"^\s*import {re.escape(module)} as (\w+)", code, re.M))
    if sub:
        for alias in re.findall(rf"^\s*from reach import (?:.*\b){re.escape(sub)}(?: as (\w+))?", code, re.M):
            aliases.add(alias or sub)
    if re.search(rf"^\s*import {re.escape(module)}\s*$", code, re.M):
        aliases.add(module)
    imported = set()
    for names in re.findall(rf"^\s*from {re.escape(module)} import \(?([^)\n]+)", code, re.M):
        imported.update(n.strip().split(" as ")[-1] for n in names.split(","))
    if func in imported and re.search(rf"\b{re.escape(func)}\b", code):
        return True
    return any(re.search(rf"\b{re.escape(a)}\.{re.escape(func)}\b", code) for a in aliases)


TABLE = _notebook_table()


def test_readme_lists_every_notebook():
    assert sorted(TABLE) == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("stem", sorted(TABLE))
def test_readme_notebook_table_names_calls_the_notebook_makes(stem):
    missing = [name for name in TABLE[stem] if not _calls(_code(stem), name)]
    assert not missing, f"README says {stem} calls {missing}, but the notebook does not"


def test_readme_links_stay_inside_the_repository():
    for target in re.findall(r"\]\(([^)#]+)", README):
        if re.match(r"^[a-z]+://", target):
            continue
        path = (ROOT / target).resolve()
        assert ROOT in path.parents or path == ROOT, f"README links {target}, outside the repository"
        assert path.exists(), f"README links {target}, which does not exist"


def test_architecture_names_every_module():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = sorted(m.name for m in pkgutil.iter_modules(reach.__path__) if not m.name.startswith("_"))
    missing = [m for m in modules if f"reach.{m}" not in text and f"`{m}`" not in text and f"{m}.py" not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not describe {missing}"


# Claims of the notebooks' fixed text that hold for one value of a run parameter only. A run with the other
# value read the claim and then its opposite from the library's text (a small run without the unbalanced panel:
# "Firms that are not in the register in every year are kept", then "only firms observed in every year").
PARAMETER_CLAIMS = {
    "04_effects": [("are kept: each ATT(g,t) uses the firms observed", "allow_unbalanced_panel"),
                   ("conditional on firm size in the base year", "xformla"),
                   ("all comparison firms of the same size", "xformla"),
                   ("programme are left out (a parameter of the run)", "exclude_other_users")],
    "03_matching": [("but used another one are left out as comparison firms", "exclude_other_users")],
}


@pytest.mark.parametrize("notebook", sorted(PARAMETER_CLAIMS))
def test_fixed_notebook_text_states_nothing_a_parameter_decides(notebook):
    """What depends on a parameter is said by the library from the parameter (``effects_intro``,
    ``Sample.summary``), never by a markdown cell written for the default settings."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    text = " ".join(" ".join(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    found = [(claim, param) for claim, param in PARAMETER_CLAIMS[notebook] if claim in text]
    assert not found, f"{notebook}: fixed text states what a parameter decides: {found}"
