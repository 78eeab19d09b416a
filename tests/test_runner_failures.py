"""Issue 18, runs: a failing notebook stays under work/, output/ is scanned for identifiers after every
run (also a failed one), and ``--only`` with changed panel parameters rebuilds the panel first.

The suite's notebooks are replaced by two tiny ones (a kernel per notebook, hence the
``notebooks`` marker) so that the runner's behaviour is tested, not the analysis.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

import reach.runner as runner
from conftest import STUB_YAML
from reach.panel import BUILD_FILE, PANEL_KEYS, _file_entry
from reach.params import load_params

pytestmark = pytest.mark.notebooks


def _notebook(path: Path, *body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('output_dir = "o"  # str\nwork_dir = "w"  # str')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(b) for b in body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def fake_suite(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    monkeypatch.setattr(runner, "notebook_dir", lambda: nb_dir)
    monkeypatch.setattr(runner, "NOTEBOOKS", ("01_build_panel", "02_reach"))
    monkeypatch.setattr(runner, "STAGES", {"panel": ("01_build_panel",), "reach": ("02_reach",)})
    return nb_dir


def test_failing_notebook_is_kept_under_work_and_output_is_scanned(fake_suite, tmp_path):
    out_root, work_root = tmp_path / "output", tmp_path / "work"
    work = work_root / "stub"
    work.mkdir(parents=True)
    pd.DataFrame({"be_id": ["100000002", "100000007"], "year": [2019, 2019]}).to_parquet(work / "panel.parquet")
    _notebook(fake_suite / "01_build_panel.ipynb",
              "from pathlib import Path\n(Path(output_dir) / 'tables').mkdir(parents=True, exist_ok=True)\n"
              "(Path(output_dir) / 'tables' / 'left.csv').write_text('be_id\\n100000007\\n')",
              "raise ValueError('register: 2 rows share a (be_id, year) key; examples: 100000002 2019')")
    _notebook(fake_suite / "02_reach.ipynb", "x = 1")
    with pytest.raises(runner.SuiteError) as err:
        runner.run_suite(STUB_YAML, output_root=out_root, work_root=work_root, progress=False, render=False)
    msg = str(err.value)
    kept = work / "notebooks" / "01_build_panel.ipynb"
    assert str(kept) in msg and kept.is_file() and "100000002" in kept.read_text(encoding="utf-8")
    out = out_root / "stub"
    assert not (out / "notebooks" / "01_build_panel.ipynb").exists()
    # the table written before the failure quoted an identifier: moved to work/, not left for output checking
    assert not (out / "tables" / "left.csv").exists() and (work / "quarantine" / "tables" / "left.csv").is_file()
    for f in out.rglob("*"):
        if f.is_file():
            assert "100000002" not in f.read_text(encoding="utf-8", errors="replace")


def test_only_with_changed_panel_parameters_rebuilds_the_panel(fake_suite, tmp_path, capsys):
    out_root, work_root = tmp_path / "output", tmp_path / "work"
    work = work_root / "stub"
    work.mkdir(parents=True)
    _notebook(fake_suite / "01_build_panel.ipynb",
              "from pathlib import Path\n(Path(work_dir) / 'built.txt').write_text('yes')")
    _notebook(fake_suite / "02_reach.ipynb", "x = 1")
    # a panel built from the stub's parameters (first_year 2014), recorded as save_run records it
    params = load_params(STUB_YAML)
    pd.DataFrame({"be_id": ["100000001"], "year": [2014]}).to_parquet(work / "panel.parquet")
    files = runner._input_files(params)
    build = {"params": {k: params.get(k) for k in PANEL_KEYS},
             "inputs": [_file_entry(f["role"], f["year"], Path(params["data_dir"]) / f["path"], f["sha256"]) for f in files]}
    (work / BUILD_FILE).write_text(json.dumps(build, default=str), encoding="utf-8")

    res = runner.run_suite(STUB_YAML, only="reach", output_root=out_root, work_root=work_root, progress=False,
                           render=False)
    # 02 runs once per analysed programme (issue 14): 02_reach_<key>
    per_programme = [f"02_reach_{k}" for k in runner.analysed_programmes(params)]
    assert not (work / "built.txt").exists() and [p.stem for p in res.notebooks] == per_programme

    res = runner.run_suite(STUB_YAML, only="reach", overrides=["first_year=2019"], output_root=out_root,
                           work_root=work_root, progress=False, render=False)
    assert "rebuilding the panel first: parameter 'first_year' changed: 2014 -> 2019" in capsys.readouterr().out
    assert (work / "built.txt").is_file() and [p.stem for p in res.notebooks] == ["01_build_panel", *per_programme]
    assert all((out_root / "stub" / "notebooks" / f"{n}.ipynb").is_file() for n in per_programme)


@pytest.fixture
def four_stage_suite(tmp_path, monkeypatch):
    """A suite of four fake notebooks: 01 and 05 once, 02 and 03 once per programme."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    monkeypatch.setattr(runner, "notebook_dir", lambda: nb_dir)
    monkeypatch.setattr(runner, "NOTEBOOKS", ("01_build_panel", "02_reach", "03_matching", "05_summary"))
    monkeypatch.setattr(runner, "STAGES", {"panel": ("01_build_panel",), "reach": ("02_reach",),
                                           "matching": ("03_matching",), "summary": ("05_summary",)})
    return nb_dir


def test_audit_pass_reruns_earlier_notebooks_of_an_only_run_and_stops_when_none_can_change(
        tmp_path, monkeypatch, capsys, four_stage_suite):
    """A ``--only matching`` run whose audit suppresses a cell of 02 (published by the earlier full run):
    02 of that programme runs again with the suppression, and the summary; a pass whose cells lie in no
    notebook of the run ends the passes without another audit (nothing it reads can have changed)."""
    from reach import publish

    nb_dir = four_stage_suite
    log = tmp_path / "runs.txt"
    for nb in runner.NOTEBOOKS:
        _notebook(nb_dir / f"{nb}.ipynb",
                  f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write(os.environ[{publish.ENV_NOTEBOOK!r}] + '\\n')")
    audits = []

    def fake_audit(output_dir, work_dir, earlier=None, notebooks=None):
        cells = plan.pop(0) if plan else {}
        audits.append(cells)
        return publish.Audit(pd.DataFrame(), pd.DataFrame(columns=["safe_after"]), cells, cells)

    monkeypatch.setattr(publish, "audit_run", fake_audit)
    monkeypatch.setattr(publish, "write_audit_suppressions", lambda work_dir, audit, cells=None, notebooks=None: tmp_path / "s.json")
    monkeypatch.setattr(publish, "record_run", lambda *a, **k: None)
    params = load_params(STUB_YAML)
    progs = runner.analysed_programmes(params)
    kw = dict(output_root=tmp_path / "output", work_root=tmp_path / "work", progress=False, render=False)

    plan = [{}]
    runner.run_suite(STUB_YAML, **kw)                        # the full run: every notebook once
    log.write_text("")
    plan = [{(f"02_reach_{progs[0]}", "some_table"): [3]}, {}]
    res = runner.run_suite(STUB_YAML, only="matching", **kw)
    runs = log.read_text().split()
    # (the fake 01 writes no panel, so the --only run builds it first)
    assert runs == ["01_build_panel"] + [f"03_matching_{p}" for p in progs] + [f"02_reach_{progs[0]}", "05_summary"]
    assert len(audits) == 1 + 2 and f"02_reach_{progs[0]}" in [p.stem for p in res.notebooks]

    log.write_text("")
    audits.clear()
    plan = [{("02_reach_unknown", "t"): [0]}]
    runner.run_suite(STUB_YAML, only="reach", **{**kw, "work_root": tmp_path / "w2", "output_root": tmp_path / "o2"})
    assert "05_summary" not in log.read_text().split() and len(audits) == 1


def test_jobs_run_notebooks_side_by_side_in_dependency_order(tmp_path, monkeypatch, four_stage_suite):
    """``jobs=2``: programmes' notebooks overlap, each waits for its own earlier stages and for the shared
    ones, every kernel knows its notebook, and the shared disclosure report loses no row. Each kernel gets
    half the cores for its BLAS (4 cores here: 2 threads), not a thread per core beside the other kernel's."""
    from reach import publish

    nb_dir = four_stage_suite
    log = tmp_path / "runs.jsonl"
    for k in runner.THREAD_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(runner, "usable_cpus", lambda: 4)
    body = (
        "import json, os, time\nimport pandas as pd\nfrom reach.disclosure import OutputLog, check_table\n"
        "import numpy\nfrom threadpoolctl import threadpool_info\n"
        f"name = os.environ[{publish.ENV_NOTEBOOK!r}]\nt0 = time.time()\n"
        "out = OutputLog(output_dir, notebook=name)\n"
        "df = pd.DataFrame({'be_id': [str(i) for i in range(30)], 'g': ['a'] * 15 + ['b'] * 15})\n"
        "for k in range(12):\n    out.table(check_table(df, by='g', name=f't{k}'), f'{name}_t{k}')\n"
        "time.sleep(0.5)\n"
        f"env = {{k: os.environ.get(k) for k in {runner.THREAD_ENV!r}}}\n"
        "blas = sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'})\n"
        "env['cwd'] = os.getcwd()\n"
        f"with open({str(log)!r}, 'a') as f:\n    f.write(json.dumps([name, t0, time.time(), env, blas]) + '\\n')")
    for nb in runner.NOTEBOOKS:
        _notebook(nb_dir / f"{nb}.ipynb", body)
    monkeypatch.setattr(publish, "audit_run", lambda output_dir, work_dir, earlier=None, notebooks=None: publish.Audit(
        pd.DataFrame(), pd.DataFrame(columns=["safe_after"]), {}, {}))
    monkeypatch.setattr(publish, "record_run", lambda *a, **k: None)
    kw = dict(output_root=tmp_path / "output", work_root=tmp_path / "work", progress=False, render=False)
    with pytest.raises(ValueError, match="jobs must be a whole number >= 1; got 0"):
        runner.run_suite(STUB_YAML, jobs=0, **kw)
    # a relative parameter file, as `python -m reach run --params params/stub.yaml --jobs 2` from the repository:
    # the jobs' threads must not move the runner's working folder (papermill's cwd= is a process-wide chdir)
    monkeypatch.chdir(Path(STUB_YAML).parent)
    res = runner.run_suite(Path(STUB_YAML).name, jobs=2, **kw)
    assert Path.cwd() == Path(STUB_YAML).parent

    progs = runner.analysed_programmes(load_params(STUB_YAML))
    records = [json.loads(line) for line in log.read_text().split("\n")[:-1]]
    runs = {name: (t0, t1) for name, t0, t1, _, _ in records}
    assert all(env.pop("cwd") == str(nb_dir) for *_, env, _ in records)  # each kernel starts in the notebooks' folder
    assert all(env == dict.fromkeys(runner.THREAD_ENV, "2") and blas == [2] for *_, env, blas in records)
    manifest = json.loads((tmp_path / "output" / "stub" / "manifest.json").read_text())
    assert manifest["jobs"] == 2 and manifest["kernel_threads"] == dict.fromkeys(runner.THREAD_ENV, "2")
    # each kernel's CPU seconds and their operating-system part (each rounded on its own: 0.1 s of slack)
    cpu, system = manifest["cpu_seconds"], manifest["system_seconds"]
    assert set(system) == set(cpu) and all(0 <= system[k] <= cpu[k] + 0.1 for k in cpu), (cpu, system)
    order = runner.executed_names(load_params(STUB_YAML), list(runner.NOTEBOOKS))
    names = [runner.executed_name(nb, p) for nb, p in order]
    assert sorted(runs) == sorted(names)  # each kernel had its own notebook's name
    assert [p.stem for p in res.notebooks] == names  # reported in suite order, whatever order they ended
    start, end = {k: v[0] for k, v in runs.items()}, {k: v[1] for k, v in runs.items()}
    for p in progs:
        assert end["01_build_panel"] <= start[f"02_reach_{p}"] and end[f"02_reach_{p}"] <= start[f"03_matching_{p}"]
    assert start["05_summary"] >= max(t for k, t in end.items() if k != "05_summary")
    overlap = any(start[a] < end[b] and start[b] < end[a] for a in names for b in names if a < b)
    assert overlap, "no two notebooks ran at the same time"
    report = pd.read_csv(tmp_path / "output" / "stub" / "disclosure_report.csv", dtype=str)
    assert report.groupby("notebook").size().to_dict() == {n: 12 for n in names}
    assert not list((tmp_path / "output" / "stub").glob(".disclosure_report.csv*"))  # no lock or temp file left


@pytest.fixture
def five_stage_suite(tmp_path, monkeypatch):
    """The suite's five stages as fake notebooks (04_effects included: the early audit's stage)."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    monkeypatch.setattr(runner, "notebook_dir", lambda: nb_dir)
    return nb_dir


@pytest.mark.parametrize("jobs", [1, 2])
def test_audit_of_the_notebooks_before_the_effects_runs_early_and_its_reruns_beside_the_effects(
        tmp_path, monkeypatch, five_stage_suite, jobs):
    """As soon as 01-03 are done, the run-level audit of their cells runs; the notebooks holding the cells it
    suppresses run again beside the effects notebooks (jobs=2) or after them (jobs=1), which never wait for
    them, with the suppressions in their environment; the summary runs once, after them; the last audit takes
    every cell, after the early one."""
    from reach import publish

    nb_dir = five_stage_suite
    log = tmp_path / "runs.jsonl"
    computed = tmp_path / "computed.txt"
    started = tmp_path / "started"  # one file per notebook run, written as its kernel starts working
    started.mkdir()
    # side by side, the effects notebooks outlast a kernel's start-up by far: the rerun that starts when one of
    # them ends still overlaps the one that started last, also on a loaded machine (CI runs other tests beside)
    effects_s = 10.0 if jobs == 2 else 3.0
    body = ("import json, os, time, uuid\nfrom reach.memo import once_per_run\n"
            f"name = os.environ[{publish.ENV_NOTEBOOK!r}]\nt0 = time.time()\n"
            f"open(os.path.join({str(started)!r}, name + '-' + uuid.uuid4().hex), 'w').close()\n"
            "def compute():\n"
            f"    with open({str(computed)!r}, 'a') as f:\n"
            "        f.write(name + '\\n')\n"
            "    return os.getpid()\n"
            "made_by = once_per_run('thing', compute, key={'k': 1})\n"
            f"time.sleep({effects_s} if name.startswith('04_') else 0.2)\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            f"    f.write(json.dumps([name, t0, time.time(), os.environ.get({publish.ENV_AUDIT_SUPPRESS!r}), "
            "made_by, os.getpid()]) + '\\n')")
    for nb in runner.NOTEBOOKS:
        _notebook(nb_dir / f"{nb}.ipynb", body)
    params = load_params(STUB_YAML)
    progs = runner.analysed_programmes(params)
    target = f"03_matching_{progs[1]}"
    audits = []

    def fake_audit(output_dir, work_dir, earlier=None, notebooks=None):
        early = notebooks is not None
        cells = {(target, "overlap"): [2]} if early else {}
        t0 = time.time()
        if early and jobs == 2:
            # at 2M firms the early audit takes ~2 min: it ends only once two effects notebooks have started
            # beside it (a runner that made them wait for it fails here, after a minute)
            deadline = time.time() + 60
            while len(list(started.glob("04_effects*"))) < 2 and time.time() < deadline:
                time.sleep(0.1)
        audits.append((sorted(notebooks) if early else None, earlier, t0, time.time()))
        return publish.Audit(pd.DataFrame(), pd.DataFrame(columns=["safe_after"]), cells, cells)

    monkeypatch.setattr(publish, "audit_run", fake_audit)
    written = []
    monkeypatch.setattr(publish, "write_audit_suppressions",
                        lambda work_dir, audit, cells=None, notebooks=None: written.append(notebooks) or tmp_path / "s.json")
    monkeypatch.setattr(publish, "record_run", lambda *a, **k: None)
    kw = dict(output_root=tmp_path / "output", work_root=tmp_path / "work", progress=False, render=False)
    res = runner.run_suite(STUB_YAML, jobs=jobs, **kw)

    runs = [json.loads(line) for line in log.read_text().splitlines()]
    names = [r[0] for r in runs]
    before = sorted(runner.executed_name(nb, p) for nb, p in runner.executed_names(params, list(runner.NOTEBOOKS))
                    if nb in ("01_build_panel", "02_reach", "03_matching"))
    assert len(audits) == 2 and audits[0][0] == before and audits[0][1] is None  # the early audit: 01-03 only
    assert audits[1][0] is None and audits[1][1] is not None  # the last audit: every cell, after the early one
    assert [sorted(w) for w in written] == [before]
    assert names.count(target) == 2 and names.count("05_summary") == 1
    rerun = [r for r in runs if r[0] == target][1]
    assert rerun[3] == str(tmp_path / "s.json")  # the rerun checks its tables with the audit's cells
    summary = next(r for r in runs if r[0] == "05_summary")
    assert summary[1] >= rerun[2] and summary[3] == str(tmp_path / "s.json")
    effects = [r for r in runs if r[0].startswith("04_effects")]
    assert rerun[1] >= audits[0][2]
    own = next(e for e in effects if e[0] == f"04_effects_{progs[1]}")
    assert own[1] < rerun[1]  # the effects notebooks did not wait for it (they read nothing it rewrites)
    if jobs == 2:  # the rerun ran while an effects notebook was still running
        assert any(e[1] < rerun[2] and rerun[1] < e[2] for e in effects)
        # the early audit ran beside the effects notebooks: two of them started before it ended
        assert sum(e[1] < audits[0][3] for e in effects) >= 2 and rerun[1] >= audits[0][3]
    else:  # one at a time: after the effects notebooks that were waiting
        assert all(rerun[1] >= e[2] for e in effects)
    assert sorted(p.stem for p in res.notebooks) == sorted(set(names))
    manifest = json.loads((tmp_path / "output" / "stub" / "manifest.json").read_text())
    assert manifest["seconds"][target] >= 0.4  # both runs counted
    # ... and each on its own: the rerun's seconds are not hidden in the first pass's
    each = manifest["pass_seconds"]
    assert len(each[target]) == 2 and all(s >= 0.2 for s in each[target])
    assert manifest["seconds"][target] == pytest.approx(sum(each[target]), abs=0.11)
    assert all(len(v) == 1 for k, v in each.items() if k != target) and set(each) == set(manifest["seconds"])
    # the audits: the early one (its cell, beside the effects with two jobs) and the last one, timed as they ran
    assert [(a["notebooks"], a["cells_suppressed"], a["beside_notebooks"]) for a in manifest["audits"]] == [
        ("before the effects", 1, jobs == 2), ("all", 0, False)]
    assert manifest["audits"][0]["seconds"] == pytest.approx(audits[0][3] - audits[0][2], abs=0.2)
    assert manifest["wall_seconds"] >= max(sum(v) for v in each.values())
    # the rerun loaded what the first pass computed (reach.memo): made once, by the first pass's kernel
    first = [r for r in runs if r[0] == target][0]
    assert computed.read_text().split().count(target) == 1
    assert rerun[5] != first[5] and rerun[4] == first[4] == first[5]
    assert sorted(computed.read_text().split()) == sorted(set(names))  # every notebook computed once
    assert not (tmp_path / "work" / "stub" / "memo").exists()  # gone with the run


def test_a_finished_notebooks_kernel_is_shut_down_without_an_interrupt(tmp_path, monkeypatch):
    """jupyter_client 8 sends SIGINT before every shutdown; landing while ipykernel still handled a message it
    logged "ERROR | KeyboardInterrupt caught in kernel" in 2M runs' output. The runner's kernels are shut down
    by the shutdown request alone (signals sent to the kernel recorded at the provisioner); an interrupt asked
    for while the kernel runs still reaches it."""
    import asyncio

    import papermill as pm
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    sent: list[int] = []
    orig = LocalProvisioner.send_signal

    async def record(self, signum):
        sent.append(int(signum))
        return await orig(self, signum)

    monkeypatch.setattr(LocalProvisioner, "send_signal", record)
    _notebook(tmp_path / "n.ipynb", "x = 1")
    manager = runner._kernel_manager({}, [], cwd=tmp_path)
    pm.execute_notebook(str(tmp_path / "n.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False, kernel_manager_class=manager)
    assert signal.SIGINT not in sent
    # outside a shutdown the interrupt is sent as before
    km = manager(kernel_name="python3")

    async def interrupt_running():
        await km.start_kernel()
        try:
            await km.interrupt_kernel()
        finally:
            await km.shutdown_kernel(now=True)

    asyncio.run(interrupt_running())
    assert sent.count(signal.SIGINT) == 1


def test_kernels_talk_over_an_encrypted_transport(tmp_path, capfd):
    """The runner's kernels get CurveZMQ keys where the stack supports them: their messages (code and outputs)
    cannot be read by other sessions on a shared server's loopback, and ipykernel 7 no longer logs that the
    kernel "is running over TCP without encryption" at every notebook. The same notebook under jupyter_client's
    default manager is the control: its kernel has no keys and logs the warning (so the check below can fail)."""
    import papermill as pm
    import zmq
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    spec = KernelSpecManager().get_kernel_spec("python3")
    if not (zmq.has("curve") and AsyncKernelManager.class_traits().get("transport_encryption")
            and "curve" in (spec.metadata.get("supported_encryption") or [])):
        pytest.skip("this jupyter stack has no CurveZMQ provisioning")
    keys: list[bool] = []
    orig = LocalProvisioner.launch_kernel

    async def record(self, cmd, **kw):
        keys.append(self.parent.curve_secretkey is not None and "curve_publickey" in self.connection_info)
        return await orig(self, cmd, **kw)

    LocalProvisioner.launch_kernel = record
    try:
        _notebook(tmp_path / "n.ipynb", "print(6 * 7)")
        for manager in (AsyncKernelManager, runner._kernel_manager({}, [], cwd=tmp_path)):
            capfd.readouterr()
            pm.execute_notebook(str(tmp_path / "n.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                progress_bar=False, kernel_manager_class=manager)
            err = capfd.readouterr().err
            out = json.loads((tmp_path / "out.ipynb").read_text())["cells"][-1]["outputs"]
            assert out[0]["text"] in ("42\n", ["42\n"])  # the kernel worked either way
            keys.append("without encryption" in err)
    finally:
        LocalProvisioner.launch_kernel = orig
    assert keys == [False, True, True, False]
