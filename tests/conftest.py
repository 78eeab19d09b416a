"""Shared fixtures: the stub's parameters and a tiny hand-made CBS-shaped data set."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUB_YAML = ROOT / "params" / "stub.yaml"
STUB_TRUTH = ROOT / "data_stub" / "truth.json"


def _load_yaml_params(path: Path) -> dict:
    """Parse a params YAML and resolve data_dir against the YAML's folder (as reach.params does)."""
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["data_dir"] = str((path.parent / params["data_dir"]).resolve())
    return params


@pytest.fixture(scope="session")
def stub_params() -> dict:
    """params/stub.yaml as a dict with data_dir absolute (a fresh deep copy per session)."""
    return copy.deepcopy(_load_yaml_params(STUB_YAML))


@pytest.fixture(scope="session")
def stub_linked(stub_params):
    """(inputs, link) of the stub, loaded once per session; skips while data_stub/truth.json is absent."""
    if not STUB_TRUTH.is_file():
        pytest.skip("data_stub/truth.json not generated yet")
    from reach.io import load_inputs
    from reach.link import link_participants

    inputs = load_inputs(stub_params)
    return inputs, link_participants(inputs)


@pytest.fixture(scope="session")
def stub_panel(stub_linked):
    """(panel, link, truth) of the stub, built once per session straight from data_stub/.

    Tests never read work/stub/: it may be stale or absent on a fresh clone.
    """
    import json

    from reach.panel import build_panel

    inputs, link = stub_linked
    return build_panel(inputs, link), link, json.loads(STUB_TRUTH.read_text(encoding="utf-8"))


def write_sav(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pyreadstat.write_sav(df, str(path))
    return path


# The mini data set: 3 years, 5 business units, hand-checkable numbers.
MINI_YEARS = (2018, 2019, 2020)
MINI_REGISTER = {  # be_id -> years alive, sbi, size, employees, gemcode
    "100000001": ((2018, 2019, 2020), "46690", "40", 50.0, "0363"),   # NH, section G
    "100000002": ((2018, 2019, 2020), "10110", "21", 3.0, "0599"),    # ZH, section C
    "100000003": ((2019, 2020), "62010", "50", 120.0, "9999"),        # unknown municipality, section J
    "100000004": ((2018,), "70220", "10", 1.0, "0344"),               # exits after 2018
    "100000005": ((2018, 2019, 2020), "47110", "00", 0.0, "0014"),
}
# kvk -> (be_id, years linked)
MINI_KVK = {
    "01234567": ("100000001", MINI_YEARS),
    "01234568": ("100000001", MINI_YEARS),            # second KvK of the same group
    "22222222": ("100000002", MINI_YEARS),
    "33333333": ("100000003", (2019, 2020)),          # not linked in 2018
    "44444444": ("100000004", MINI_YEARS),            # linked in 2019 but be_id not in register then
    "55555555": ("100000005", MINI_YEARS),
}


def _mini_trade(year: int, scale: float = 1.0) -> pd.DataFrame:
    # two goods chapters per (be_id, country) to exercise aggregation; 2018 uses numeric GEONOM codes
    cn, de = ("720", "004") if year == 2018 else ("CN", "DE")
    rows = [
        ("100000001", cn, "01", 100.0, 0.0), ("100000001", cn, "02", 50.0, 10.0),
        ("100000001", de, "01", 1000.0, 5.0),
        ("100000002", de, "84", 0.0, 20.0),
        ("999999999", de, "84", 7.0, 0.0),            # trade of a unit not in the register
    ]
    if year >= 2019:
        rows.append(("100000003", "TR", "85", 30.0 * (year - 2018), 0.0))
    df = pd.DataFrame(rows, columns=["BE_ID", "Land_HB", "GS2", "Uitvoer", "Invoer"])
    df["Uitvoer"] = df["Uitvoer"] * scale
    return df


def make_mini(root: Path) -> dict:
    """Write the mini data set under ``root`` and return params for it (stub.yaml's mapping)."""
    root = Path(root)
    for y in MINI_YEARS:
        reg = [(b, sbi, size, emp + (y - 2018), gem) for b, (yrs, sbi, size, emp, gem) in MINI_REGISTER.items()
               if y in yrs]
        write_sav(root / f"ABR/ABR_BE_{y}V1.sav", pd.DataFrame(
            reg, columns=["BE_ID", "SbiGecoordineerd", "GkSbsGecoordineerd", "WPActueel", "gemcode"]))
        kl = [(k, b) for k, (b, yrs) in MINI_KVK.items() if y in yrs]
        write_sav(root / f"KvK/KVK_BE_{y}V1.sav", pd.DataFrame(kl, columns=["KVK_NR", "BE_ID"]))
        write_sav(root / f"IHG/IHG_per_BE_ID{y}V1.sav", _mini_trade(y, scale=1.0 if y != 2019 else 0.5))
    write_sav(root / "IHG/IHG_per_BE_ID2019V2.sav", _mini_trade(2019))  # V2 wins over the stale V1
    write_sav(root / "RVO/Achilles_instrumenten.sav", pd.DataFrame(
        {"KVK_NR": ["01234567", "01234567", "22222222", "55555555"], "Jaar": [2018, 2020, 2019, 2017],
         "Regeling": ["PIB", "DHI", "PIB", "PIB"]}))
    write_sav(root / "Programmas/NLiB_portaal.sav", pd.DataFrame(
        {"KvK_nummer": ["1234567", "1234567", "2222 2222", "ABC", "99999999", "5555.5555"],
         "Aanmeld_id": ["a1", "a2", "a3", "a4", "a5", "a6"]}))
    dates = pd.to_datetime(["2018-03-01", "2018-03-01", "2018-03-01", "2019-05-01", "2018-06-01",
                            "2019-05-01", "2017-01-01", "2020-02-02"])
    write_sav(root / "Programmas/TINL_activiteiten.sav", pd.DataFrame({
        "KvK_nummer": ["01234567", "01234567", "1234568", "33333333", "33333333", "44444444", "22222222",
                       "22-22-22-22"],
        "Activiteit_ID": ["T1", "T1", "T1", "T2", "T3", "T2", "T0", "T4"],
        "Datum": dates,
        "Organiserende_regio": ["NH", "NH", "NH", "ZH", "UT", "ZH", "NH", "ZH"],
        "Activiteit_type": ["beurs", "beurs", "beurs", "webinar", "matchmaking", "webinar", "beurs", "webinar"],
        "Persoon_ID": [f"p{i}" for i in range(8)],
    }))
    params = _load_yaml_params(STUB_YAML)
    params["data_dir"] = str(root.resolve())
    params["first_year"], params["last_year"] = MINI_YEARS[0], MINI_YEARS[-1]
    params["inputs"]["trade"]["chunksize"] = 2      # many chunks: exercises streaming aggregation
    params["programmes"]["nlib"]["default_year"] = 2019
    # the mini data set has the two programmes of the evaluation only (the stub adds NLWorks)
    params["programmes"] = {k: v for k, v in params["programmes"].items() if k in ("nlib", "tinl")}
    return params


@pytest.fixture
def mini_params(tmp_path) -> dict:
    """A fresh mini data set in tmp_path/data and its params."""
    return make_mini(tmp_path / "data")


# The stub suite, run once per session and shared by the notebook-tier modules
# (test_suite, test_reports); fewer bootstrap draws keep CI fast without changing what is exercised.
SUITE_FAST = ["biters=199"]

# The two stub runs execute in processes of their own, started with the session: most tests run one at a
# time in this process and leave the other core idle, so the runs cost the session little wall time. The
# tests comparing the two runs are collected last; a test waits for a run only if it is not done yet.
_RUN_CODE = """
import json, sys
from pathlib import Path
from reach.runner import run_suite
base, params, overrides, jobs, render = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
res = run_suite(params, overrides=overrides, output_root=base / "output", work_root=base / "work", progress=False,
                render=render, jobs=jobs)
(base / "result.json").write_text(json.dumps({"run_name": res.run_name, "output_dir": str(res.output_dir),
    "work_dir": str(res.work_dir), "notebooks": [str(p) for p in res.notebooks], "html": [str(p) for p in res.html],
    "seconds": dict(res.seconds)}), encoding="utf-8")
"""
# fixture -> (folder, jobs, render): the first run one notebook at a time and rendered, the second two at a time
_STUB_RUNS = {"stub_suite_run": ("suite", 1, True), "stub_suite_rerun": ("suite_again", 2, False)}


def pytest_collection_modifyitems(config, items):
    """Tests comparing the first stub run with the second come last (the runs execute beside the other tests)."""
    items.sort(key=lambda item: "stub_suite_rerun" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session", autouse=True)
def _stub_runs_started(request, tmp_path_factory):
    """Start the stub runs the selected tests need (see :func:`stub_suite_run`) when the session starts."""
    import json
    import subprocess
    import sys

    started = {}
    try:
        for fixture, (folder, jobs, render) in _STUB_RUNS.items():
            if not any(fixture in getattr(item, "fixturenames", ()) for item in request.session.items):
                continue
            base = tmp_path_factory.mktemp(folder)
            log = (base / "run.log").open("w", encoding="utf-8")
            proc = subprocess.Popen([sys.executable, "-c", _RUN_CODE, str(base), str(STUB_YAML), json.dumps(SUITE_FAST),
                                     str(jobs), "1" if render else "0"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            started[fixture] = (proc, base, log)
        yield started
    finally:
        for proc, _, log in started.values():
            if proc.poll() is None:  # the session ended early (e.g. -x): the run is not needed any more
                proc.kill()
            proc.wait()
            log.close()


def _finished_run(started, fixture):
    import json

    from reach.runner import RunResult

    proc, base, _ = started[fixture]
    rc = proc.wait(timeout=3600)
    if rc != 0:
        tail = (base / "run.log").read_text(encoding="utf-8", errors="replace")[-4000:]
        pytest.fail(f"the stub run for {fixture} failed with exit code {rc}:\n{tail}")
    got = json.loads((base / "result.json").read_text(encoding="utf-8"))
    return RunResult(got["run_name"], Path(got["output_dir"]), Path(got["work_dir"]),
                     tuple(Path(p) for p in got["notebooks"]), tuple(Path(p) for p in got["html"]), got["seconds"])


@pytest.fixture(scope="session")
def stub_suite_run(_stub_runs_started):
    """The whole suite on the stub (``reach run``, one notebook at a time, rendered), shared by the session.

    It executes in a process of its own, started with the session (see :func:`_stub_runs_started`).
    """
    return _finished_run(_stub_runs_started, "stub_suite_run")


@pytest.fixture(scope="session")
def stub_suite_rerun(_stub_runs_started):
    """A second run with the same parameters and data (reproducibility; compare of identical runs).

    It runs two notebooks side by side (``jobs=2``): the tests comparing it with :func:`stub_suite_run`
    (one at a time) also check that ``reach run --jobs`` changes no table, headline or report row.
    It executes in a process of its own, started with the session (see :func:`_stub_runs_started`).
    """
    return _finished_run(_stub_runs_started, "stub_suite_rerun")
