"""Every docstring example in src/reach runs (numpydoc examples are part of the documentation)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import reach

MODULES = sorted(m.name for m in pkgutil.iter_modules(reach.__path__, "reach.") if m.name not in ("reach.__main__",))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
