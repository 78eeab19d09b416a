"""The command line: every Make target has a `python -m reach` equivalent, documented in --help and README."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from reach.__main__ import MAKE_EQUIVALENTS, main

ROOT = Path(__file__).resolve().parents[1]
TARGETS = re.findall(r"^([a-z][a-z-]*):.*## ", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)


@pytest.mark.parametrize("target", [t for t in TARGETS if t not in ("help", "venv", "test-all")])
def test_every_make_target_has_a_documented_python_equivalent(target):
    assert re.search(rf"^  make {target}\b.*python -m", MAKE_EQUIVALENTS, flags=re.M), target
    assert f"`make {target}" in (ROOT / "README.md").read_text(encoding="utf-8"), target


def test_check_params_ok_and_bad(capsys):
    assert main(["check-params", str(ROOT / "params" / "stub.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["check-params", str(ROOT / "params" / "stub.yaml"), "--set", "caliper=0", "outcomes=[profit]"]) == 2
    err = capsys.readouterr().err
    assert "caliper: must be > 0" in err and "unknown entries ['profit']" in err


def test_run_rejects_bad_parameters_before_any_notebook(tmp_path, capsys):
    rc = main(["run", "--params", str(ROOT / "params" / "stub.yaml"), "--set", "control_group=never",
               "--output-root", str(tmp_path / "o"), "--work-root", str(tmp_path / "w")])
    assert rc == 2 and "nevertreated" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_render_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["render", "--params", str(ROOT / "params" / "stub.yaml"), "--output-root", str(tmp_path)]) == 1
    assert "run `python -m reach run" in capsys.readouterr().err
