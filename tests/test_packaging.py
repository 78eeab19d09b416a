"""Remote Access readiness: pinned requirements agree with pyproject, and reach installs offline from wheels."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins(name: str = "requirements-ra.txt") -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower().replace("_", "-")] = req
    return out


def test_every_runtime_dependency_is_pinned_within_its_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = _pins()
    for dep in map(Requirement, deps):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{dep.name} is a dependency but not pinned in requirements-ra.txt"
        (pinned,) = [s.version for s in pins[name].specifier if s.operator == "=="]
        assert dep.specifier.contains(pinned), f"{name}=={pinned} is outside pyproject's range {dep.specifier}"


def test_pins_are_exact():
    for file in ("requirements-ra.txt", "requirements-ra-test.txt"):
        for name, req in _pins(file).items():
            assert [s.operator for s in req.specifier] == ["=="], f"{file}: {name} must be pinned with ==, got {req.specifier}"


def test_every_test_dependency_is_pinned_for_the_remote_access_check():
    """.ci/run tests the pinned set on Python 3.12 with requirements-ra-test.txt: it must cover the `test` extra."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]["test"]
    pins = _pins("requirements-ra-test.txt")
    for dep in map(Requirement, extra):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{dep.name} is a test dependency but not pinned in requirements-ra-test.txt"
        (pinned,) = [s.version for s in pins[name].specifier if s.operator == "=="]
        assert dep.specifier.contains(pinned), f"{name}=={pinned} is outside pyproject's range {dep.specifier}"


def test_offline_install_from_a_folder_of_wheels(tmp_path):
    """What an analyst does in Remote Access: pip install --no-index --find-links <wheels>."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("reach-*.whl")
    target = tmp_path / "site"
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-deps",
         "--target", str(target), "reach"],
        capture_output=True, text=True, timeout=300,
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    # the installed copy carries its crosswalks (package data) and imports without the source tree
    probe = subprocess.run(
        [sys.executable, "-c", "import reach, reach.params, importlib.resources as r;"
         "print(reach.__file__); print(r.files('reach').joinpath('data/countries.csv').is_file())"],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(target), "PATH": ""}, cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    lines = probe.stdout.splitlines()
    assert str(target) in lines[0] and lines[1] == "True"
