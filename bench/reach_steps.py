"""Where notebook 02's time goes: its steps in one fresh process, with user and system CPU seconds.

Run: ``python bench/reach_steps.py --params PARAMS [--work WORK_DIR] [--programme P] [--registry]``
(``WORK_DIR`` defaults to ``work/<run_name>``, which a run of notebook 01 filled).

It makes the calls notebook 02 makes, in its order, and prints per step the wall seconds,
the process's user and system CPU seconds so far and its resident memory now and at its peak;
``--registry`` also registers every table and figure as notebook 02 does
(``reach.report.show_indicator`` into a temporary registry), which writes the unit memberships
the run-level audit reads. System time is the kernel's work for the process, at register scale
mostly page faults on freshly allocated arrays: on a VM that backs its memory lazily it can be
several times the user time (``README.md``, *Runs at 2M firms*, twentieth round). The numbers
printed are measurements of one run, not assertions.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> tuple[float, float]:
    t = os.times()
    return t.user, t.system


def arguments(doc: str, flag: str, flag_help: str) -> argparse.ArgumentParser:
    """The steps scripts' command line: ``--params``, ``--work``, ``--programme`` and one switch of their own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--params", required=True, help="parameter file of the run")
    ap.add_argument("--work", default=None, help="the run's work folder (default work/<run_name>)")
    ap.add_argument("--programme", default=None, help="programme key (default: the first analysed)")
    ap.add_argument(flag, action="store_true", help=flag_help)
    return ap


def run_setup(args):
    """``(params, work folder, programme, disclosure rules)`` of a steps script's arguments."""
    from reach.disclosure import Rules
    from reach.params import load_params
    from reach.runner import analysed_programmes

    p = load_params(args.params)
    work = Path(args.work) if args.work else Path("work") / p["run_name"]
    return p, work, args.programme or analysed_programmes(p)[0], Rules(**p["disclosure"])


def _memory_mb() -> tuple[float, float]:
    """The process's resident memory now and its peak so far, in MB (psutil, which ipykernel installs)."""
    import psutil

    info = psutil.Process().memory_info()
    try:
        import resource  # POSIX: the kernel's high-water mark, which a poll would miss between steps

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except ImportError:  # Windows: psutil reports the peak working set
        peak = getattr(info, "peak_wset", info.rss)
    return info.rss / 2**20, peak / 2**20


def step_printer(t0: float):
    """``step(name)`` prints the wall seconds since ``t0``, the process's user and system CPU seconds so far,
    and its resident memory now and at its peak so far (MB): the step whose peak rises is the one to look at."""

    def step(name: str) -> None:
        user, system = _cpu()
        rss, peak = _memory_mb()
        print(f"{name:<24} wall {time.perf_counter() - t0:7.1f} s   user {user:7.1f}   system {system:7.1f}"
              f"   rss {rss:7.0f} MB   peak {peak:7.0f} MB", flush=True)

    return step


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "--registry", "register tables and figures as a run does").parse_args(argv)

    t0 = time.perf_counter()
    from reach import indicators as ind
    from reach.disclosure import OutputLog
    from reach.panel import read_link, read_panel

    p, work, programme, rules = run_setup(args)
    step = step_printer(t0)
    step("imports")
    panel = read_panel(work, first_year=p["first_year"], last_year=p["last_year"],
                       columns=ind.panel_columns(p["growth_markets"]))
    step("read_panel")
    panel = ind.index_panel(panel)
    link = read_link(work)
    step("index_panel, read_link")
    common = dict(comparison_group=p["comparison_group"], never_treated_only=p["never_treated_only"],
                  reach_window=p["reach_window"], target_group=p["target_group"], rules=rules)
    calls = [
        ("international_activity", lambda: ind.international_activity(panel, programme, **common)),
        ("growth_market_presence", lambda: ind.growth_market_presence(panel, programme, p["growth_markets"], **common)),
        ("target_group_fit", lambda: ind.target_group_fit(panel, programme, target_group=p["target_group"], rules=rules)),
        ("prior_instrument_use", lambda: ind.prior_instrument_use(panel, programme, **common)),
        ("instrument_use_after", lambda: ind.instrument_use_after(panel, programme, reach_window=p["reach_window"],
                                                                  last_year=p["last_year"], rules=rules)),
        ("regional_reach", lambda: ind.regional_reach(panel, programme, link, rules=rules)),
        ("export_values", lambda: ind.export_values(panel, programme, **common)),
        ("participant_counts", lambda: ind.participant_counts(link, programme, rules=rules)),
    ]
    saved = {k: os.environ.get(k) for k in ("REACH_REGISTRY", "REACH_NOTEBOOK")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log = None
            if args.registry:
                from reach import publish
                from reach.report import show_indicator

                os.environ[publish.ENV_REGISTRY] = str(Path(tmp) / "registry")
                os.environ[publish.ENV_NOTEBOOK] = f"02_reach_{programme}"
                log = OutputLog(Path(tmp) / "output", notebook=f"02_reach_{programme}")
            for name, call in calls:
                r = call()
                if log is not None:
                    with contextlib.redirect_stdout(io.StringIO()):  # display() outside a notebook prints a repr
                        show_indicator(log, r, programme)
                step(name)
    finally:  # the registry folder is gone with `tmp`: a later call in this process must not write to it
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return 0


if __name__ == "__main__":
    sys.exit(main())
