"""Smoke test of the benchmark harness (``python -m reach bench``): it must not rot.

Benchmarks are not tests: nothing here times anything. The harness is run at a
tiny scale without peers (peer packages are bench-only and need not be
installed), and its correctness checks are tested against known answers.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from reach.__main__ import load_bench_harness

bench = load_bench_harness()  # bench/harness.py: repository code, not part of the installed package


def _toy_panel(effect_2018=0.5, effect_2020=0.25):
    """Noise-free balanced panel with planted ATTs: y = firm + year trend + effect after g."""
    years = np.arange(2014, 2024)
    g = np.array([0, 0, 0, 2018, 2018, 2020, 2020, 2014])  # the last unit is treated in the first period
    n = len(g)
    df = pd.DataFrame({"firm_id": np.repeat(np.arange(n), len(years)), "year": np.tile(years, n),
                       "g": np.repeat(g, len(years))})
    firm_fe = np.repeat(np.linspace(0, 1, n), len(years))
    eff = np.where(df["g"] == 2018, effect_2018, effect_2020) * ((df["g"] > 0) & (df["year"] >= df["g"]))
    df[bench.OUTCOME] = firm_fe + 0.1 * (df["year"] - 2014) + eff
    df["log_employees"] = 1.0
    return df


def test_reference_att_gt_recovers_planted_effects():
    """Parallel trends hold exactly: ATT(g,t) is the planted effect after g and 0 before."""
    for cg in ("nevertreated", "notyettreated"):
        r = bench._reference_att_gt(_toy_panel(), cg)
        assert set(r["group"]) == {2018, 2020}  # the first-period cohort is dropped, as R did
        post = r[r["time"] >= r["group"]]
        pre = r[r["time"] < r["group"]]
        np.testing.assert_allclose(post.loc[post["group"] == 2018, "estimate"], 0.5, atol=1e-12)
        np.testing.assert_allclose(post.loc[post["group"] == 2020, "estimate"], 0.25, atol=1e-12)
        np.testing.assert_allclose(pre["estimate"], 0.0, atol=1e-12)
        # R did's grid: every cohort x every period but the first (varying base)
        assert len(r) == 2 * 9


def test_compare_att_flags_differences(tmp_path):
    a = pd.DataFrame({"group": [2018, 2018], "time": [2018, 2019], "estimate": [0.5, 0.6], "std_error": [0.1, 0.1]})
    a.to_csv(tmp_path / "a.csv", index=False)
    a.assign(estimate=a["estimate"] + 1e-9).to_csv(tmp_path / "b.csv", index=False)
    a.assign(estimate=[0.5, 0.7]).to_csv(tmp_path / "c.csv", index=False)
    d, txt = bench._compare_att(tmp_path / "a.csv", tmp_path / "b.csv")
    assert d == pytest.approx(1e-9, rel=1e-3) and txt.startswith("identical")
    d, txt = bench._compare_att(tmp_path / "a.csv", tmp_path / "c.csv")
    assert d == pytest.approx(0.1) and txt.startswith("DIFFERENT")


@pytest.mark.parametrize("sizes", [[], [0], ["ten"]])
def test_bad_sizes_raise(tmp_path, sizes):
    with pytest.raises(ValueError, match="sizes must be positive integers"):
        bench.run_bench(sizes, out_dir=tmp_path, peers=False)


def test_bench_smoke_tiny_scale_without_peers(tmp_path):
    out = tmp_path / "results"
    df = bench.run_bench([500], out_dir=out, peers=False, trade_rows=(20_000,), n_trade_firms=300,
                         did_specs=("nevertreated",), timeout=120, log=lambda _: None)
    assert list(df.columns) == list(bench.RESULT_COLUMNS)
    ours = df[df["impl"] == "reach"]
    bad = ours[ours["status"] != "ok"]
    assert bad.empty, bad[["stage", "spec", "status", "note"]].to_string()
    assert {"synth", "load_link_panel", "indicators", "att_gt", "aggte", "matching", "trade"} <= set(ours["stage"])
    assert set(df["impl"]) <= {"reach", "numpy-reference", "naive"}  # no peer ran
    # reach's att_gt equals the independent difference of mean changes (no covariates)
    ref = df[(df["stage"] == "att_gt") & (df["impl"] == "numpy-reference")]
    assert len(ref) == 1 and ref["max_abs_diff"].iloc[0] <= bench.DID_TOL
    assert (ours["seconds"] >= 0).all() and (ours["peak_rss_mb"] > 0).all()
    on_disk = pd.read_csv(out / "results.csv")
    assert len(on_disk) == len(df)
    assert "| stage | firms |" in (out / "results.md").read_text()
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_meter_counts_a_child_process_cpu_seconds():
    """manifest.json's `cpu_seconds`: the kernel (a child process) burns a known amount of CPU.

    The child spins until its own CPU clock (``time.process_time``, an independent
    measure) has advanced 0.6 s, then sleeps so the meter can poll it. The meter must
    report at least that (minus one polling interval) and not more than the wall time
    of the block allows on the machine's cores.
    """
    import os
    import subprocess
    import sys
    import time

    pytest.importorskip("psutil")
    from reach.runner import _PeakMemory

    code = ("import time\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass\n"
            "time.sleep(0.6)\n")
    t0 = time.perf_counter()
    with _PeakMemory(interval=0.05) as meter:
        subprocess.run([sys.executable, "-c", code], check=True)
    wall = time.perf_counter() - t0
    assert meter.peak_mb is not None and meter.peak_mb > 0
    assert meter.cpu_s is not None
    assert meter.cpu_s >= 0.5
    assert meter.cpu_s <= wall * (os.cpu_count() or 1) + 0.2
    assert meter.system_s is not None and 0 <= meter.system_s <= meter.cpu_s


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child maps memory with Linux's semantics")
def test_run_meter_reports_the_system_part_of_a_child_process_cpu_seconds():
    """manifest.json's `system_seconds`: a child that spends its time having fresh memory mapped in (every
    256 MB block filled, then returned to the system by ``munmap``) shows the operating system's share, as the
    child's own clock (``os.times()``, an independent measure) counts it; a child that only computes shows almost
    none of it. The meter follows the child alone, as it follows each kernel of a run side by side (this test
    process may run other threads, e.g. the stub runs started for the notebook tier)."""
    import subprocess

    pytest.importorskip("psutil")
    from reach.runner import _PeakMemory

    def measure(code):
        pids: list[int] = []
        with _PeakMemory(interval=0.05, kernels=pids) as meter:
            child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            pids.append(child.pid)
            out, _ = child.communicate()
        assert child.returncode == 0
        return meter, out

    meter, out = measure("import mmap, os, time\nt = os.times().system\n"
                         "while os.times().system - t < 0.6:\n"
                         "    m = mmap.mmap(-1, 2**28); m.write(b'x' * 2**28); m.close()\n"
                         "print(os.times().system, os.times().user)\ntime.sleep(0.6)\n")
    own_sys, own_user = map(float, out.split())
    assert meter.system_s >= own_sys - 0.1, (meter.system_s, own_sys)
    assert meter.system_s <= meter.cpu_s <= own_sys + own_user + 0.3, (meter.system_s, meter.cpu_s, out)
    # arithmetic only (a loop reading the process's CPU clock would itself be system calls)
    busy, _ = measure("import time\nsum(range(4 * 10**7))\ntime.sleep(0.3)\n")
    assert busy.system_s < 0.25 * busy.cpu_s, (busy.system_s, busy.cpu_s)


def test_run_meter_survives_a_child_that_ends_while_it_starts(monkeypatch):
    """With ``--jobs 2`` the runner's other kernel can end between the meter's listing of the runner's children
    and its reading of their CPU times (seen in CI: ``psutil.NoSuchProcess`` stopped the run). Measuring must
    never stop a run: such a child is left out of the baseline."""
    psutil = pytest.importorskip("psutil")
    from reach.runner import _PeakMemory

    class Gone:
        pid = 999_999_999

        def cpu_times(self):
            raise psutil.NoSuchProcess(self.pid)

        def memory_info(self):
            raise psutil.NoSuchProcess(self.pid)

    monkeypatch.setattr(psutil.Process, "children", lambda self, recursive=False: [Gone()])
    with _PeakMemory(interval=0.05) as meter:
        pass
    assert meter.cpu_s is not None and meter.system_s is not None


#: A steps script's line: wall seconds, user and system CPU seconds, resident memory now and at its peak.
STEP_LINE = r"wall +[\d.]+ s +user +[\d.]+ +system +[\d.]+ +rss +\d+ MB +peak +\d+ MB$"


def test_reach_steps_runs_notebook_02s_steps_on_the_stub(stub_panel, stub_params, tmp_path, capsys, monkeypatch):
    """``bench/reach_steps.py`` (where 02's time goes) makes every indicator's call on a saved stub run and
    prints each step with user and system CPU seconds and memory; with ``--registry`` it registers the tables as
    notebook 02 does
    (in a temporary folder: nothing is left behind)."""
    import importlib.util
    import os
    import re
    from pathlib import Path

    import yaml

    from reach.panel import save_run

    panel, link, _ = stub_panel
    save_run(tmp_path / "work", panel, link)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(stub_params), encoding="utf-8")
    path = Path(__file__).resolve().parents[1] / "bench" / "reach_steps.py"
    spec = importlib.util.spec_from_file_location("reach_steps", path)
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    for env in ("REACH_REGISTRY", "REACH_NOTEBOOK"):
        monkeypatch.delenv(env, raising=False)
    assert steps.main(["--params", str(params), "--work", str(tmp_path / "work"), "--programme", "tinl",
                       "--registry"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["imports", "read_panel", "index_panel,", "international_activity", "growth_market_presence",
                     "target_group_fit", "prior_instrument_use", "instrument_use_after", "regional_reach",
                     "export_values", "participant_counts"]
    assert all(re.search(STEP_LINE, line) for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "work"]
    assert "REACH_REGISTRY" not in os.environ and "REACH_NOTEBOOK" not in os.environ


def test_effects_steps_runs_notebook_04s_steps_on_the_stub(stub_panel, stub_params, tmp_path, capsys):
    """``bench/effects_steps.py`` (where 04's time goes) makes 04's calls on a saved stub run, with the sample read
    by ``read_sample`` or, with ``--composition``, as before; it prints each step with user and system CPU seconds
    and memory, and leaves nothing behind."""
    import importlib.util
    import re
    from pathlib import Path

    import yaml

    from reach.panel import save_run

    panel, link, _ = stub_panel
    save_run(tmp_path / "work", panel, link)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({**stub_params, "biters": 19, "placebo_draws": 2}), encoding="utf-8")
    path = Path(__file__).resolve().parents[1] / "bench" / "effects_steps.py"
    spec = importlib.util.spec_from_file_location("effects_steps", path)
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    for extra, first in (([], "read_sample"), (["--composition"], "composition")):
        assert steps.main(["--params", str(params), "--work", str(tmp_path / "work"), "--programme", "tinl",
                           *extra]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        names = [re.sub(r"\s+wall .*", "", line) for line in lines]
        assert names == ["imports", first, *[f"report {o} full" for o in stub_params["outcomes"]], "how_sure"]
        assert all(re.search(STEP_LINE, line) for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "work"]
