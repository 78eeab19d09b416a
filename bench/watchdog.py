"""Run a command under a memory watchdog: kill its whole process tree when the tree's RSS passes a cap.

Used for the register-scale runs on a shared machine (bench/README.md): a run that
outgrows the machine is stopped before it can take other users' processes down.
Also records the tree's peak RSS and the wall time, and appends one JSON line per
run to ``--log``.

    python bench/watchdog.py --cap-gb 13 --log bench/results/scale_runs.jsonl -- \\
        python -m reach run --params params/stub.yaml --set data_dir=/data/stub_2m
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def kill_tree(proc: psutil.Process) -> None:
    procs = [proc, *proc.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap-gb", type=float, default=13.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--log", default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    cap = a.cap_gb * 2**30
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    proc = psutil.Process(child.pid)
    peak, killed = 0, False
    while child.poll() is None:
        rss = tree_rss(proc)
        peak = max(peak, rss)
        if rss > cap:
            print(f"watchdog: tree RSS {rss / 2**30:.1f} GB > cap {a.cap_gb} GB: killing", file=sys.stderr, flush=True)
            kill_tree(proc)
            killed = True
            break
        time.sleep(a.interval)
    rc = child.wait()
    rec = {"label": a.label, "cmd": cmd, "rc": rc, "killed_over_cap": killed, "cap_gb": a.cap_gb,
           "peak_tree_rss_mb": round(peak / 2**20), "wall_s": round(time.perf_counter() - t0, 1),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print("watchdog:", json.dumps(rec), flush=True)
    if a.log:
        with open(a.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
    return 1 if killed else rc


if __name__ == "__main__":
    sys.exit(main())
