"""Run the notebook suite with papermill, render HTML for reviewers, write the manifest.

The runner is what ``make all`` and ``python -m reach run`` call. It validates
the parameters before any notebook starts (papermill alone only warns about
unknown keys), passes each notebook only the parameters it declares, stops at
the first failing notebook with the failing cell's error, and keeps the
partially executed notebook for diagnosis.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from reach import _checks, memo, publish
from reach.params import load_params

__all__ = ["NOTEBOOKS", "STAGES", "PER_PROGRAMME", "SuiteError", "notebook_dir", "notebook_parameters", "run_suite",
           "render_html", "RunResult", "analysed_programmes", "executed_name", "executed_names", "scan_output",
           "panel_stage_needed", "job_dependencies"]

log = logging.getLogger("reach.runner")

#: The suite in execution order.
NOTEBOOKS: tuple[str, ...] = ("01_build_panel", "02_reach", "03_matching", "04_effects", "05_summary")
#: ``--only`` choices and the notebooks each runs.
STAGES: dict[str, tuple[str, ...]] = {
    "panel": ("01_build_panel",),
    "reach": ("02_reach",),
    "matching": ("03_matching",),
    "effects": ("04_effects",),
    "summary": ("05_summary",),
}
#: Notebooks executed once per analysed programme (``programme=<key>``); their executed copies,
#: HTML files and disclosure-report rows are named ``<notebook>_<key>`` (docs/CONTRACTS.md section 7).
PER_PROGRAMME: tuple[str, ...] = ("02_reach", "03_matching", "04_effects")
#: Packages whose versions go into the manifest.
MANIFEST_PACKAGES = ("reach", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "linearmodels",
                     "matplotlib", "seaborn", "pyreadstat", "pyarrow", "papermill", "nbconvert")
#: Thread-pool variables of the BLAS libraries a kernel loads (OpenBLAS, MKL). Not ``OMP_NUM_THREADS``:
#: Arrow sizes its pool by it, and the panel reads (not BLAS) then lost their threads (01 alone: 17-20 -> 28 s at 2M).
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # Windows, macOS
        return max(1, os.cpu_count() or 1)


def kernel_thread_env(jobs: int, environ: Mapping[str, str] | None = None, cpus: int | None = None) -> dict[str, str]:
    """BLAS thread limits for each kernel when ``jobs`` notebooks run side by side: the cores shared out.

    Every kernel's BLAS would otherwise start one thread per core, so ``jobs`` kernels run
    ``jobs`` x cores threads on the cores, and the BLAS threads (which spin while they wait)
    slow each other down: on 2 cores two kernels' products took 1.4-1.9x as long with 2
    threads each as with 1 (``bench/README.md``). Each kernel gets ``cpus // jobs`` threads
    (at least 1). A run with one job keeps the libraries' defaults, and so does a run whose
    environment already sets any of :data:`THREAD_ENV` (the analyst's choice wins). Results do
    not depend on it: the one product whose rounding did (the multiplier bootstrap's) always
    runs on one thread (:func:`reach.did._multiplier_bootstrap`).

    Examples
    --------
    >>> kernel_thread_env(2, environ={}, cpus=2)
    {'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    >>> kernel_thread_env(2, environ={}, cpus=8)["OPENBLAS_NUM_THREADS"]
    '4'
    >>> kernel_thread_env(1, environ={}, cpus=8), kernel_thread_env(2, environ={"OPENBLAS_NUM_THREADS": "3"}, cpus=8)
    ({}, {})
    """
    environ = os.environ if environ is None else environ
    if jobs <= 1 or any(k in environ for k in THREAD_ENV):
        return {}
    n = str(max(1, (usable_cpus() if cpus is None else int(cpus)) // jobs))
    return {k: n for k in THREAD_ENV}


def analysed_programmes(params: Mapping[str, Any]) -> list[str]:
    """Programme keys a run analyses: ``analyse`` (``"all"``: every key of ``programmes``, in file order).

    Examples
    --------
    >>> analysed_programmes({"programmes": {"nlib": {}, "tinl": {}}, "analyse": "all"})
    ['nlib', 'tinl']
    >>> analysed_programmes({"programmes": {"nlib": {}, "tinl": {}}, "analyse": ["tinl"]})
    ['tinl']
    """
    known = list(params.get("programmes") or {})
    chosen = params.get("analyse", "all")
    if chosen == "all":
        return known
    bad = [c for c in chosen if c not in known]
    if bad:
        raise ValueError(f"analyse: unknown programmes {bad}; known programmes: {known}")
    return list(chosen)


def executed_name(notebook: str, programme: str | None = None) -> str:
    """Stem of an executed notebook: ``02_reach_tinl`` for per-programme notebooks, else the notebook's name.

    Examples
    --------
    >>> executed_name("02_reach", "tinl"), executed_name("05_summary", "tinl")
    ('02_reach_tinl', '05_summary')
    """
    return f"{notebook}_{programme}" if notebook in PER_PROGRAMME and programme else notebook


def executed_names(params: Mapping[str, Any], notebooks: Sequence[str] = NOTEBOOKS) -> list[tuple[str, str | None]]:
    """``(notebook, programme or None)`` in execution order: each per-programme notebook for every analysed programme."""
    out: list[tuple[str, str | None]] = []
    for nb in notebooks:
        if nb in PER_PROGRAMME:
            out.extend((nb, p) for p in analysed_programmes(params))
        else:
            out.append((nb, None))
    return out


class SuiteError(RuntimeError):
    """A notebook of the suite failed; the message names it, the cell's error and the kept partial notebook."""


def notebook_dir() -> Path:
    """The folder holding the suite's notebooks (``notebooks/`` next to ``src/``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "notebooks"
        if (candidate / f"{NOTEBOOKS[0]}.ipynb").is_file():
            return candidate
    raise FileNotFoundError(
        "cannot find the notebooks/ folder of the suite; run from a checkout of the reach repository"
    )


def notebook_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its ``parameters`` cell: ``{name: {inferred_type_name, default, help}}``."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(path)))


@dataclass(frozen=True)
class RunResult:
    """What a run produced: folders, executed notebooks, HTML files and timings."""

    run_name: str
    output_dir: Path
    work_dir: Path
    notebooks: tuple[Path, ...]
    html: tuple[Path, ...]
    seconds: Mapping[str, float] = field(default_factory=dict)


def _copy(src: Path, dest: Path) -> None:
    import shutil

    shutil.copyfile(src, dest)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in MANIFEST_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _input_files(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every input file the run reads (the version reach.io picks per year), with size and checksum."""
    from reach.io import locate

    data_dir = Path(params["data_dir"])
    found: list[tuple[str, int | None, Path, int | None]] = []
    for role, spec in params["inputs"].items():
        if "pattern" in spec:
            for year in range(params["first_year"], params["last_year"] + 1):
                path, version, _ = locate(data_dir, spec["pattern"], year, role)
                found.append((role, year, path, version))
        else:
            found.append((role, None, data_dir / spec["path"], None))
    for name, spec in params["programmes"].items():
        found.append((f"programme:{name}", None, data_dir / spec["path"], None))
    return [{"role": role, "year": year, "path": _relative(path, data_dir), "version": version,
             "size": path.stat().st_size, "sha256": _checks.sha256(path)} for role, year, path, version in found]


def _relative(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` (POSIX form); no machine path leaves the run."""
    import os

    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).name


def _repo_root() -> Path:
    return notebook_dir().parent


def _roots(output_dir: Path, work_dir: Path, params: Mapping[str, Any], run: str) -> dict[str, str]:
    """Absolute machine paths and what replaces them in the outputs (longest paths are replaced first)."""
    repo = _repo_root()

    def rel(p: Path, fallback: str) -> str:
        r = _relative(p, repo)
        return r if not r.startswith("..") else fallback

    roots = {str(output_dir): rel(output_dir, f"output/{run}"), str(work_dir): rel(work_dir, f"work/{run}"),
             str(Path(params["data_dir"]).resolve()): "<data_dir>", str(params["data_dir"]): "<data_dir>",
             str(notebook_dir()): "notebooks", str(repo): ".", str(Path.home()): "~"}
    return {k: v for k, v in roots.items() if k and k not in (".", "/")}


def _exported(output_dir: Path) -> list[dict[str, Any]]:
    """Exported tables and figures with checksums and the verdicts of the disclosure report."""
    verdicts: dict[str, str] = {}
    report = output_dir / "disclosure_report.csv"
    if report.is_file():
        with open(report, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("file"):
                    verdicts[Path(row["file"]).as_posix()] = row.get("verdict", "")
    files = []
    for sub in ("tables", "figures"):
        for path in sorted((output_dir / sub).glob("*")):
            rel = path.relative_to(output_dir).as_posix()
            files.append({"file": rel, "sha256": _checks.sha256(path), "size": path.stat().st_size,
                          "verdict": verdicts.get(rel, verdicts.get(path.name, "not in disclosure report"))})
    return files


def _drop_report_rows(output_dir: Path, notebooks: Iterable[str]) -> None:
    """Forget disclosure-report rows of notebooks about to run again, so a rerun does not double them,
    and the files those rows list: what the rerun does not write again must not stay behind."""
    from reach.disclosure import _file_lock

    report = output_dir / "disclosure_report.csv"
    if not report.is_file():
        return
    names = set(notebooks)
    with _file_lock(report):  # other notebooks may be running (reach run --jobs) and adding their rows
        with open(report, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            rows = list(reader)
        keep = [row for row in rows if row.get("notebook") not in names]
        for row in rows:
            if row.get("notebook") in names and row.get("file"):
                (output_dir / row["file"]).unlink(missing_ok=True)
        with open(report, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)


#: A script element with an empty ``src`` (nbconvert's template when the CDN URLs are blanked).
_EMPTY_SCRIPT = re.compile(r"""<script src=(?:""|'')>\s*</script>\n?""")


def render_html(executed: str | Path, html_path: str | Path | None = None, *, show_code: bool = False) -> Path:
    """Render an executed notebook to one self-contained HTML file (figures embedded as data URIs).

    Code cells are hidden unless ``show_code``; a reviewer reads narrative, tables and figures.
    """
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    html_path = Path(html_path) if html_path else executed.with_suffix(".html")
    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = not show_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    # the Remote Access environment has no internet: no CDN scripts for MathJax or widgets
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    exporter.widget_renderer_url = ""
    body, _ = exporter.from_notebook_node(nb)
    # without those URLs the template still writes <script src="">: a browser fires an error event for each
    # (Chromium 150 reports them; a reviewer's console shows errors), and nothing is loaded from them
    body = _EMPTY_SCRIPT.sub("", body)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def panel_stage_needed(params: Mapping[str, Any], work_dir: Path) -> str | None:
    """Why the panel must be (re)built before later stages run; None when the saved one fits.

    The panel records the parameters and input checksums it was built from
    (:func:`reach.panel.stale_reason`); ``--only reach --set first_year=2019``
    after a full run must not reuse the 2014 panel.
    """
    from reach.panel import stale_reason

    try:
        # the manifest's list holds paths relative to data_dir (no machine path leaves the run);
        # the comparison with the panel's record needs the files themselves
        files = [{**f, "path": str(Path(params["data_dir"]) / f["path"])} for f in _input_files(params)]
    except Exception as exc:  # noqa: BLE001 - a missing input is reported by notebook 01 itself
        return f"the input files cannot be listed ({exc})"
    return stale_reason(work_dir, params, files)


def _identifiers(work_dir: Path) -> tuple[list[str], list[str]]:
    """Business-unit and KvK identifiers of the run's microdata (work/), for the leak scan."""
    import pandas as pd

    be, kvk = set(), set()
    for name, col, into in (("panel.parquet", "be_id", be), ("participants.parquet", "kvk", kvk),
                            ("participants.parquet", "be_id", be)):
        path = work_dir / name
        if path.is_file():
            try:
                vals = pd.read_parquet(path, columns=[col])[col].dropna().astype(str)
            except Exception:  # noqa: BLE001 - an unreadable panel is not a reason to skip the scan
                continue
            # BE_IDs have 9-11 digits, KvK numbers 8: a short digit string is a count, not a firm
            into.update(v for v in vals.unique() if v.isdigit() and len(v) >= 6)
    return sorted(be), sorted(kvk)


def scan_output(output_dir: Path, work_dir: Path) -> list[str]:
    """Scan every file left under ``output_dir`` for identifiers; move files that leak to ``work_dir``.

    Runs after every run, also a failed one: what is under ``output/`` goes to
    output checking. A file quoting a BE_ID or KvK number (error examples,
    a table of microdata) is moved to ``work/<run>/quarantine/`` (never deleted:
    the analyst needs it to see what went wrong). Returns the files moved.
    """
    import shutil

    from reach.disclosure import scan_for_identifiers

    if not output_dir.is_dir():
        return []
    be, kvk = _identifiers(work_dir)
    hits = []
    if be:
        hits.append(scan_for_identifiers(output_dir, be, kind="be_id"))
    if kvk:
        hits.append(scan_for_identifiers(output_dir, kvk, kind="kvk"))
    leaking = sorted({f for h in hits for f in h["file"]})
    moved = []
    for f in leaking:
        src = Path(f)
        dest = work_dir / "quarantine" / src.relative_to(output_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))
        moved.append(str(dest))
        log.warning("identifiers found in %s: moved to %s", src, dest)
    return moved


class _PeakMemory:
    """Peak resident memory (MB) and CPU seconds of this process and its children (the notebook kernel).

    Polled by a daemon thread with psutil (installed with ipykernel, on Windows too); without psutil
    both are None. The analyst sees in ``manifest.json`` where time and memory go. CPU seconds
    (user + system) are reported next to wall seconds because on a shared machine the wall time
    also counts the time other processes held the cores: ``cpu_s`` is this run's own work. A
    child's CPU time is its last sample (a kernel that ends between two polls loses at most one
    interval of CPU); this process's own CPU is its increase over the block.
    """

    def __init__(self, interval: float = 0.25, kernels: list[int] | None = None):
        self.interval = interval
        self.peak_mb: float | None = None
        self.cpu_s: float | None = None
        self.system_s: float | None = None  # the part of cpu_s the operating system spent for the processes
        self._cpu: dict[int, float] = {}
        self._sys: dict[int, float] = {}
        # jobs side by side: only these kernels' process trees (filled when the kernel starts), not the shared runner
        self.kernels = kernels
        self._procs: dict[int, Any] = {}

    def _roots(self, proc) -> list:
        if self.kernels is None:
            return [proc]
        import psutil

        for pid in list(self.kernels):
            if pid not in self._procs:
                try:
                    self._procs[pid] = psutil.Process(pid)
                except Exception:  # noqa: BLE001 - a kernel that already ended
                    continue
        return list(self._procs.values())

    def _sample(self, proc) -> float:
        total = 0
        for p in [q for r in self._roots(proc) for q in [r, *r.children(recursive=True)]]:
            try:
                total += p.memory_info().rss
                if p.pid != proc.pid:
                    t = p.cpu_times()
                    self._cpu[p.pid] = max(self._cpu.get(p.pid, 0.0), t.user + t.system)
                    self._sys[p.pid] = max(self._sys.get(p.pid, 0.0), t.system)
            except Exception:  # noqa: BLE001 - a child that just ended
                continue
        return total / 2**20

    @staticmethod
    def _own_cpu(proc) -> tuple[float, float]:
        """This process's CPU seconds (user + system) and their system part, read together."""
        t = proc.cpu_times()
        return t.user + t.system, t.system

    def _poll(self, proc) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_mb = max(self.peak_mb or 0.0, self._sample(proc))
            except Exception:  # noqa: BLE001 - measuring must never stop a run
                return

    def __enter__(self) -> "_PeakMemory":
        import threading

        try:
            import psutil
        except ImportError:
            return self
        proc = psutil.Process()
        self._proc = proc
        # children alive before the block (none in a run) are not this block's work
        self._cpu0, self._sys0 = {}, {}
        for c in proc.children(recursive=True):
            try:
                t = c.cpu_times()
            except Exception:  # noqa: BLE001 - another job's kernel that ended since the listing
                continue
            self._cpu0[c.pid], self._sys0[c.pid] = t.user + t.system, t.system
        self._own0, self._own_sys0 = self._own_cpu(proc)
        self.peak_mb = self._sample(proc)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(proc,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join(timeout=2)
            try:
                self._sample(self._proc)  # children still alive at the end: their final CPU time
                own = own_sys = 0.0
                if self.kernels is None:
                    cpu, system = self._own_cpu(self._proc)
                    own, own_sys = cpu - self._own0, system - self._own_sys0
            except Exception:  # noqa: BLE001
                own = own_sys = 0.0
            kids = sum(max(0.0, t - self._cpu0.get(pid, 0.0)) for pid, t in self._cpu.items())
            kids_sys = sum(max(0.0, t - self._sys0.get(pid, 0.0)) for pid, t in self._sys.items())
            self.cpu_s = round(own + kids, 1)
            self.system_s = round(max(0.0, own_sys) + kids_sys, 1)
        if self.peak_mb is not None:
            self.peak_mb = round(self.peak_mb, 1)


class _JobFailed(Exception):
    """A notebook of a run failed (raised in its job's thread, reported by the runner)."""

    def __init__(self, name: str, error: Exception, partial: Path):
        super().__init__(name)
        self.name, self.error, self.partial = name, error, partial


def _kernel_manager(env: Mapping[str, str], started: list[int], cwd: str | Path | None = None):
    """A kernel manager class whose kernels get ``env`` on top of this process's environment, started in ``cwd``.

    Notebooks running side by side cannot each set ``os.environ`` (one process, several kernels
    starting): each kernel gets its notebook's name (:data:`reach.publish.ENV_NOTEBOOK`) this
    way instead. Nor can they change folder: papermill's ``cwd=`` changes the whole process's
    folder for the length of a notebook, and two of them ending in the other order left the
    runner in the notebooks' folder (a relative ``--params`` then failed at the end of the run);
    the kernel process is started in ``cwd`` instead. The kernel's process id is appended to
    ``started`` (its job measures it).

    The kernel's messages (code, outputs: microdata aggregates) travel over local TCP
    sockets; where jupyter_client (>= 8.10), pyzmq and the kernel spec support CurveZMQ,
    they are encrypted (``transport_encryption="auto"``), which also ends ipykernel 7's
    warning about plain-text transport in every kernel's log. Older stacks run as before.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager, KernelManager

    class _RunKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            # on a shared Remote Access server other sessions share the loopback interface; the HMAC key
            # only stops them injecting messages, Curve also stops them reading the outputs
            if self.has_trait("transport_encryption") and zmq.has("curve"):
                self.transport_encryption = "auto"
            full = dict(kw.pop("env", None) or os.environ)
            full.update(env)
            if cwd is not None:
                kw["cwd"] = str(cwd)
            await KernelManager._async_start_kernel(self, env=full, **kw)
            pid = getattr(self.provisioner, "pid", None)
            if pid is not None:
                started.append(int(pid))

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client 8 interrupts every kernel before shutting it down. papermill shuts a kernel down
            # when its notebook has ended, and a SIGINT landing while ipykernel still handled a message logged
            # "ERROR | KeyboardInterrupt caught in kernel" in the run's output. The shutdown request alone stops
            # the kernel (on its control channel, even when busy), and the kill after the wait time stays.
            if self.shutting_down:
                return
            await KernelManager._async_interrupt_kernel(self)

    return _RunKernelManager


def job_dependencies(jobs: Sequence[tuple[str, str | None]]) -> list[set[int]]:
    """For each job ``(notebook, programme)``, the positions of the jobs it waits for.

    A job waits for every job of an earlier stage (notebook order of :data:`NOTEBOOKS`) that
    belongs to the same programme or to none: 01 before everything, a programme's 02 -> 03 -> 04
    in order (04 reads 03's matched sample), 05 after all. Jobs of different programmes
    never wait for each other: they read the panel of 01 and their own programme's files only.

    Examples
    --------
    >>> job_dependencies([("01_build_panel", None), ("02_reach", "a"), ("02_reach", "b"),
    ...                   ("03_matching", "a"), ("05_summary", None)])
    [set(), {0}, {0}, {0, 1}, {0, 1, 2, 3}]
    """
    stage = {nb: i for i, nb in enumerate(NOTEBOOKS)}
    out = []
    for nb, prog in jobs:
        out.append({j for j, (nb2, prog2) in enumerate(jobs)
                    if stage[nb2] < stage[nb] and (prog2 is None or prog is None or prog2 == prog)})
    return out


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _failure_message(name: str, exc: Exception, partial: Path) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f" in cell [{cell}]" if cell else ""
    return (f"notebook {name} failed{where}: {ename}: {evalue}\n"
            f"the partially executed notebook is kept at {partial}")


#: Most passes of a run (each after the first runs the notebooks again with the audit's extra cells suppressed).
MAX_PASSES = 3
#: The run-level audit of the notebooks before this one runs as soon as they are done (in a run that includes
#: the summary), and its reruns run beside this stage's notebooks; the run's last audit then takes every cell.
EARLY_AUDIT_BEFORE = "04_effects"


def _forget(output_dir: Path, registry: Path, params: Mapping[str, Any], names: Sequence[str], *, full: bool) -> None:
    """Take what the notebooks about to run will write out of output/ and the registry."""
    if full:
        # a full run starts from an empty output folder so nothing stale is exported
        for sub in ("tables", "figures", "headline", "notebooks"):
            for path in sorted((output_dir / sub).glob("*")):
                if path.is_file():
                    path.unlink()
        for stale in ("disclosure_report.csv", "manifest.json", "results.json", "disclosure_audit.csv"):
            (output_dir / stale).unlink(missing_ok=True)
        for path in output_dir.glob("*.html"):
            path.unlink()
        shutil.rmtree(output_dir / "checksums", ignore_errors=True)
        shutil.rmtree(registry, ignore_errors=True)
    else:
        _forget_notebooks(output_dir, registry, [executed_name(nb, p) for nb, p in executed_names(params, names)])
    registry.mkdir(parents=True, exist_ok=True)


def _forget_notebooks(output_dir: Path, registry: Path, executed_now: Sequence[str]) -> None:
    """Report rows and registry entries of the notebooks about to run again."""
    _drop_report_rows(output_dir, executed_now)
    for name in executed_now:
        for stale in [*(registry / "tables").glob(f"{name}__*"), registry / "numbers" / f"{name}.jsonl"]:
            stale.unlink(missing_ok=True)


def run_suite(
    params_path: str | Path,
    *,
    only: Sequence[str] | str | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    output_root: str | Path = "output",
    work_root: str | Path = "work",
    progress: bool = True,
    render: bool = True,
    jobs: int = 1,
) -> RunResult:
    """Run the suite (or ``only`` some stages) for one parameter file.

    Parameters
    ----------
    params_path : str or Path
        A ``params/*.yaml`` file.
    only : str or sequence of str, optional
        Stages from :data:`STAGES` (``panel``, ``reach``, ``matching``, ``effects``, ``summary``).
        Later stages build the panel first when ``work/<run>/panel.parquet`` is missing.
    overrides : iterable of "key=value", optional
        Parameter overrides (``--set``), validated like the file.
    output_root, work_root : str or Path
        Parents of ``output/<run>`` (exported, disclosure-checked) and ``work/<run>`` (microdata).
    progress : bool
        Show papermill's per-cell progress bar.
    render : bool
        Render each executed notebook to HTML.
    jobs : int, default 1
        Notebooks executed side by side (one kernel each). A notebook waits for the earlier
        stages of its own programme and for the programme-independent ones (see
        :func:`job_dependencies`), so e.g. 02 of two programmes run together. Results do not
        depend on it; memory does: the peaks of the notebooks running together add up
        (``manifest.json`` records each notebook's peak).

    Returns
    -------
    RunResult
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    started = _dt.datetime.now(_dt.timezone.utc)
    t_start = time.perf_counter()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1; got {jobs!r}")
    params = load_params(params_path, overrides)
    run = params["run_name"]
    output_dir = (Path(output_root) / run).resolve()
    work_dir = (Path(work_root) / run).resolve()

    if only:
        stages = [only] if isinstance(only, str) else list(only)
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ValueError(f"--only must be among {list(STAGES)}, got {bad}")
        names = [nb for nb in NOTEBOOKS if any(nb in STAGES[s] for s in stages)]
        if names[0] != NOTEBOOKS[0]:
            why = panel_stage_needed(params, work_dir)
            if why:
                print(f"rebuilding the panel first: {why}", flush=True)
                names.insert(0, NOTEBOOKS[0])
    else:
        names = list(NOTEBOOKS)

    output_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    registry = work_dir / "registry"
    suppress_file = work_dir / "audit_suppress.json"
    if not only:
        suppress_file.unlink(missing_ok=True)  # a full run's audit starts afresh
    _forget(output_dir, registry, params, names, full=not only)
    # the papermill kernels inherit the environment: every OutputLog / record_headline / fmt_* registers
    # its numbers in work/<run>/registry (with the microdata, never in output/); a rerun of some stages
    # keeps the cells an earlier full run's audit suppressed
    saved_env = {k: os.environ.get(k) for k in (publish.ENV_REGISTRY, publish.ENV_NOTEBOOK, publish.ENV_AUDIT_SUPPRESS,
                                                memo.ENV_MEMO)}
    os.environ[publish.ENV_REGISTRY] = str(registry)
    # what a notebook computes before any disclosure check, kept for its later passes in this run only
    memo_dir = work_dir / "memo"
    shutil.rmtree(memo_dir, ignore_errors=True)
    os.environ.pop(memo.ENV_MEMO, None)
    os.environ.pop(publish.ENV_AUDIT_SUPPRESS, None)
    if suppress_file.is_file():
        os.environ[publish.ENV_AUDIT_SUPPRESS] = str(suppress_file)

    nb_dir = notebook_dir()
    injected = {"output_dir": str(output_dir), "work_dir": str(work_dir)}
    executed: list[Path] = []
    html: list[Path] = []
    pass_s: dict[str, list[float]] = {}  # each execution of a notebook, in order (a later pass runs it again)
    audits: list[dict[str, Any]] = []  # each run-level audit: what it covered and how long it took
    peak_mb: dict[str, float | None] = {}
    cpu_s: dict[str, float | None] = {}
    sys_s: dict[str, float | None] = {}
    todo = executed_names(params, names)

    parallel = jobs > 1
    threads = kernel_thread_env(jobs)

    def run_one(i: int, n: int, notebook: str, prog: str | None) -> tuple:
        """Execute one job (from any thread) under work/ and copy it to output/; a failure raises _JobFailed."""
        source = nb_dir / f"{notebook}.ipynb"
        declared = notebook_parameters(source)
        per_run = {"programme": prog} if prog else {}
        passed = {k: v for k, v in {**params, **injected, **per_run}.items() if k in declared}
        name = executed_name(notebook, prog)
        # executed under work/ first: a failing notebook can quote microdata (error examples) and
        # must never land in output/, which goes to output checking
        target = work_dir / "notebooks" / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        published = output_dir / "notebooks" / f"{name}.ipynb"
        print(f"[{i}/{n}] {name} ...", flush=True)
        t0 = time.perf_counter()
        kernels: list[int] = []
        # side by side, each job measures its own kernel (the runner process is shared)
        memory = _PeakMemory(kernels=kernels if parallel else None)
        if not parallel:
            os.environ[publish.ENV_NOTEBOOK] = name
        try:
            with memory:
                pm.execute_notebook(str(source), str(target), parameters=passed, progress_bar=progress and not parallel,
                                    kernel_name="python3", log_output=False,
                                    kernel_manager_class=_kernel_manager(
                                        {publish.ENV_NOTEBOOK: name, memo.ENV_MEMO: str(memo.folder(memo_dir, name, passed)),
                                         **threads},
                                        kernels, cwd=nb_dir))
        except PapermillExecutionError as exc:
            # an earlier run's copy of this notebook would now contradict the run: take it out of output/
            published.unlink(missing_ok=True)
            (output_dir / f"{name}.html").unlink(missing_ok=True)
            raise _JobFailed(name, exc, target) from None
        published.parent.mkdir(parents=True, exist_ok=True)
        _copy(target, published)
        secs = round(time.perf_counter() - t0, 1)
        print(f"[{i}/{n}] {name} done in {secs:.1f} s", flush=True)
        return name, published, secs, memory.peak_mb, memory.cpu_s, memory.system_s

    def finish(result: tuple) -> None:
        name, published, secs, peak, cpu, system = result
        # a notebook run again (a later pass) counts both runs' time, and the larger peak
        pass_s.setdefault(name, []).append(secs)
        cpu_s[name] = None if cpu is None else round((cpu_s.get(name) or 0.0) + cpu, 1)
        sys_s[name] = None if system is None else round((sys_s.get(name) or 0.0) + system, 1)
        peak_mb[name] = max((m for m in (peak_mb.get(name), peak) if m is not None), default=None)
        executed.append(published)
        if render:
            html.append(render_html(published, output_dir / f"{name}.html", show_code=bool(params.get("show_code"))))

    stage = {nb: i for i, nb in enumerate(NOTEBOOKS)}
    cut = stage.get(EARLY_AUDIT_BEFORE, len(NOTEBOOKS))  # a suite without it: no early audit

    def execute(batch: Sequence[tuple[str, str | None]], early_audit=None) -> None:
        """Every job of ``batch`` once: execute under work/, copy to output/, render. With ``jobs`` > 1, jobs
        whose earlier stages are done run side by side (see :func:`job_dependencies`); rendering stays here.

        ``early_audit``: ``(audit, reruns)``. ``audit()`` is called once, as soon as every job of ``batch``
        before the effects notebooks is done (see :data:`EARLY_AUDIT_BEFORE`); with ``jobs`` > 1 in a thread
        of its own while jobs keep starting in the free slots (the effects notebooks do not wait for it).
        ``reruns(result)`` then returns the jobs to run again: they run after the effects notebooks already
        waiting (beside them with ``jobs`` > 1), and the summary waits for the audit and for them."""
        order = list(batch)
        deps = job_dependencies(order)
        early = {k for k, (nb, _) in enumerate(order) if stage[nb] < cut}
        due = early_audit is not None and bool(early) and len(early) < len(order)
        pending, done, running, failed = list(range(len(order))), set(), {}, None

        def add_reruns(audit: publish.Audit) -> None:
            for job in early_audit[1](audit):
                k = len(order)
                order.append(job)
                deps.append(set())
                # only what reads a rerun's published output waits for it: the summary. The effects notebooks
                # read 03's matched sample, which a rerun leaves untouched (the same data: written only when it
                # changed), so they start as before: the longest jobs first, the reruns in the free slots.
                for q in pending:
                    if stage[order[q][0]] > cut:
                        deps[q].add(k)
                at = next((i for i, q in enumerate(pending) if stage[order[q][0]] > cut), len(pending))
                pending.insert(at, k)

        try:
            if not parallel:
                while pending:
                    if due and early <= done:
                        due = False
                        add_reruns(early_audit[0]())
                        continue
                    k = next(k for k in pending if deps[k] <= done)
                    pending.remove(k)
                    finish(run_one(k + 1, len(order), *order[k]))
                    done.add(k)
                return
            from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

            auditing = None  # the early audit's future while it runs
            with ThreadPoolExecutor(max_workers=jobs) as pool, ThreadPoolExecutor(max_workers=1) as auditor:
                while pending or running or auditing is not None:
                    if failed is None:  # after a failure no new job starts; the running ones finish
                        if due and early <= done:
                            due = False
                            auditing = auditor.submit(early_audit[0])  # beside the effects notebooks
                        # while it runs, nothing after the effects starts (the summary quotes its reruns' cells)
                        ready = [k for k in pending if deps[k] <= done
                                 and not (auditing is not None and stage[order[k][0]] > cut)]
                        for k in ready[:jobs - len(running)]:
                            pending.remove(k)
                            running[pool.submit(run_one, k + 1, len(order), *order[k])] = k
                    if not running and auditing is None:
                        break
                    finished, _ = wait([*running, *([auditing] if auditing is not None else [])],
                                       return_when=FIRST_COMPLETED)
                    for f in finished:
                        if f is auditing:
                            auditing = None
                            if failed is None:
                                add_reruns(f.result())  # here, in the thread that schedules
                            continue
                        k = running.pop(f)
                        try:
                            finish(f.result())
                            done.add(k)
                        except _JobFailed as exc:
                            failed = failed or exc
            if failed is not None:
                raise failed
        except _JobFailed as exc:
            _restore_env(saved_env)
            shutil.rmtree(memo_dir, ignore_errors=True)
            moved = scan_output(output_dir, work_dir)
            note = f"\nidentifiers found in output/: moved to work/: {moved}" if moved else ""
            raise SuiteError(_failure_message(exc.name, exc.error, exc.partial) + note) from None

    order = {executed_name(nb, p): i for i, (nb, p) in enumerate(executed_names(params, list(NOTEBOOKS)))}

    def in_suite_order() -> None:
        """Executed notebooks and their HTML in the suite's order (jobs side by side, or a pass's reruns, end in any order)."""
        for part in (executed, html):
            part.sort(key=lambda f: order.get(f.stem, len(order)))

    passes = 1

    def next_pass(audit: publish.Audit, new_cells, audited: Sequence[str] | None,
                  rerun_summary: bool) -> list[tuple[str, str | None]]:
        """Start another pass: the audit's cells suppressed where each check is made, in the notebooks
        holding them (and the summary, which quotes them all) run again; returns those notebooks."""
        nonlocal passes, names
        affected = {nb for nb, _ in new_cells} | ({executed_name(NOTEBOOKS[-1], None)} if rerun_summary else set())
        # with --only these can be notebooks of an earlier run whose published cells the audit now suppresses
        present = {executed_name(nb, p) for nb, p in todo} | {f.stem for f in (output_dir / "notebooks").glob("*.ipynb")}
        again = [(nb, p) for nb, p in executed_names(params, list(NOTEBOOKS))
                 if executed_name(nb, p) in affected and executed_name(nb, p) in present]
        if not again:
            return []
        passes += 1
        os.environ[publish.ENV_AUDIT_SUPPRESS] = str(
            publish.write_audit_suppressions(work_dir, audit, new_cells, notebooks=audited))
        again_names = [executed_name(nb, p) for nb, p in again]
        names = [nb for nb in NOTEBOOKS if nb in names or any(nb == a for a, _ in again)]
        _forget_notebooks(output_dir, registry, again_names)
        for part in (executed, html):
            part[:] = [f for f in part if f.stem not in again_names]
        print(f"pass {passes}: {sum(len(v) for v in new_cells.values())} more cells suppressed by the "
              f"run-level audit; {len(again)} notebooks run again", flush=True)
        return again

    first_audit: list[publish.Audit] = []

    early_names = [executed_name(nb, p) for nb, p in todo if stage[nb] < cut]

    def timed_audit(scope: str, **kw) -> publish.Audit:
        """:func:`publish.audit_run`, its wall seconds and new suppressions recorded for the manifest."""
        t0 = time.perf_counter()
        result = publish.audit_run(output_dir, work_dir, **kw)
        audits.append({"notebooks": scope, "pass": passes, "seconds": round(time.perf_counter() - t0, 1),
                       "beside_notebooks": scope != "all" and parallel,
                       "cells_suppressed": sum(len(v) for v in result.this_pass.values())})
        return result

    def audit_early() -> publish.Audit:
        """The run-level audit of the notebooks before the effects, once they are done (with ``jobs`` > 1 in a
        thread of its own, while the effects notebooks run: at 2M firms it takes ~1 min)."""
        return timed_audit("before the effects", notebooks=early_names)

    def after_early_audit(audit: publish.Audit) -> list[tuple[str, str | None]]:
        """Its reruns (run beside the effects notebooks instead of after them). The summary has not run yet (it
        waits for every other notebook), so it is not run again. Called from the scheduling thread only: it
        edits the run's lists of notebooks and outputs."""
        print(f"{audit.summary()} (notebooks before the effects)", flush=True)
        first_audit.append(audit)
        if not any(audit.suppressed.values()):
            return []
        return next_pass(audit, audit.suppressed, early_names, rerun_summary=False)

    # the early audit needs the summary in this run: it quotes the cells the reruns suppress
    execute(todo, early_audit=(audit_early, after_early_audit) if any(nb == NOTEBOOKS[-1] for nb, _ in todo) else None)
    in_suite_order()
    # the run-level differencing audit of every registered cell of the run together
    audit = timed_audit("all", earlier=first_audit[0] if first_audit else None)
    print(audit.summary(), flush=True)
    new_cells = audit.this_pass
    while any(new_cells.values()) and passes < MAX_PASSES:
        # Another pass: run the notebooks again with the audit's cells suppressed where each check is made,
        # so every table, figure, sentence and report of the run leaves them out (the first pass's reports
        # were rendered before the audit); then audit again, until the audit suppresses nothing new.
        again = next_pass(audit, new_cells, None, rerun_summary=True)
        if not again:
            break
        execute(again)
        in_suite_order()
        audit = timed_audit("all", earlier=audit)
        new_cells = audit.this_pass
        print(audit.summary(), flush=True)
    _restore_env(saved_env)
    shutil.rmtree(memo_dir, ignore_errors=True)  # no later pass: its entries (GBs at register scale) go
    roots = _roots(output_dir, work_dir, params, run)
    moved = scan_output(output_dir, work_dir)
    if moved:
        raise SuiteError(f"identifiers of firms found in files under {output_dir}; they were moved to "
                         f"{work_dir / 'quarantine'} and must not be exported: {moved}")
    seconds = {name: round(sum(each), 1) for name, each in pass_s.items()}
    manifest = {
        "run_name": run,
        "params_file": _relative(params_path, _repo_root()) if not _relative(params_path, _repo_root()).startswith("..")
        else Path(params_path).name,
        "parameters": params,
        "notebooks": [executed_name(nb, p) for nb, p in executed_names(params, names)],
        "programmes": analysed_programmes(params),
        # wall seconds per notebook (every pass summed), and each pass on its own: a notebook the run-level
        # audit sent back runs twice
        "seconds": seconds,
        "pass_seconds": pass_s,
        # the run-level disclosure audits: with jobs > 1 the first one runs beside the effects notebooks
        "audits": audits,
        # the whole run until the manifest is written (notebooks side by side, audits, rendering)
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        # CPU seconds (user + system) of the runner and the notebook's kernel: on a shared machine
        # wall `seconds` also counts waiting for the cores
        "cpu_seconds": cpu_s,
        # the operating system's part of cpu_seconds (mostly page faults at register scale): a share far above
        # a few per cent means the stage waits on memory being mapped in, not on its own computation
        "system_seconds": sys_s,
        # peak resident memory of the runner and the notebook's kernel while each notebook ran
        "peak_rss_mb": peak_mb,
        # notebooks side by side and the thread limits each kernel got (empty: the libraries' defaults)
        "jobs": jobs,
        "kernel_threads": threads,
        "seeds": {"seed": params.get("seed")},
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        # OS family and Python version only: no host, kernel or distribution strings
        "platform": f"{platform.system()} / Python {platform.python_version()}",
        "versions": _versions(),
        "inputs": _input_files(params),
        "exported": _exported(output_dir),
    }
    text = json.dumps(manifest, indent=2, default=str)
    for old_path, new_path in sorted(roots.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(old_path)[1:-1], new_path)
    (output_dir / "manifest.json").write_text(text, encoding="utf-8")
    # every file gets a verdict: audit of rendered numbers, machine-path scrub, results.json + checksums/
    whitelist = "\n".join(p.read_text(encoding="utf-8") for p in sorted(nb_dir.glob("*.ipynb")))
    whitelist += "\n" + Path(params_path).read_text(encoding="utf-8") + "\n" + json.dumps(params, default=str)
    publish.record_run(output_dir, work_dir, audit, roots=roots, whitelist_text=whitelist,
                       first_year=int(params["first_year"]) - 10, last_year=int(params["last_year"]) + 10)
    print(f"done: {output_dir}", flush=True)
    return RunResult(run, output_dir, work_dir, tuple(executed), tuple(html), seconds)
