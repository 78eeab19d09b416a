"""The whole suite end to end on the stub: every notebook executes, reports render, nothing leaks.

Runs once per session (module fixture) through the same entry point as
``python -m reach run``; fewer bootstrap draws keep CI fast without changing
what is exercised.
"""
from __future__ import annotations

import csv
import json
from html import unescape
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from reach.report import read_headlines
from reach.summary import lookup
from reach.params import load_params
from reach.runner import NOTEBOOKS, executed_name, executed_names, run_suite

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params" / "stub.yaml"
FAST = ["biters=199"]


@pytest.fixture(scope="module")
def run(stub_suite_run):
    return stub_suite_run  # conftest: one stub run per session, shared with test_reports


# notebooks 02-04 run once per analysed programme: 02_reach_tinl, ... (CONTRACTS section 7)
EXECUTED = [executed_name(nb, p) for nb, p in executed_names(load_params(PARAMS, check_files=False))]


def test_every_notebook_executed_and_rendered(run):
    assert [p.stem for p in run.notebooks] == EXECUTED
    for name in EXECUTED:
        html = run.output_dir / f"{name}.html"
        assert html.is_file() and html.stat().st_size > 10_000
        text = html.read_text(encoding="utf-8")
        assert "Traceback" not in text
        # figures are shown as images, not as a "<Figure size ...>" placeholder
        assert "Figure size" not in text, f"{name}.html shows a figure placeholder instead of the image"
    # code is hidden by default: reviewers read narrative, tables and figures
    assert "import reach" not in (run.output_dir / "02_reach_tinl.html").read_text(encoding="utf-8")


def test_no_report_loads_or_names_an_empty_script(run):
    """Rendered with the CDN URLs blanked (no internet at CBS), nbconvert's template still wrote two
    ``<script src="">`` elements; a browser fires an error event for each (Chromium 150 in the rendering check).
    No report has one, and no script element loads anything from outside the file."""
    import re

    for name in EXECUTED:
        html = (run.output_dir / f"{name}.html").read_text(encoding="utf-8")
        srcs = re.findall(r"<script\b[^>]*\bsrc=([\"'])(.*?)\1", html)
        assert not srcs, f"{name}.html: script elements with src {[v for _, v in srcs]}"
        assert "MathJax configuration" in html  # the template's head is there: the check above saw it


def test_every_exported_figure_is_shown_in_its_report(run):
    with open(run.output_dir / "disclosure_report.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "figure" and r["file"]]
    for name in EXECUTED:
        n_written = sum(r["notebook"] == name for r in rows)
        html = (run.output_dir / f"{name}.html").read_text(encoding="utf-8")
        assert html.count("data:image/png;base64") >= n_written, name


def test_microdata_stays_in_work(run):
    assert (run.work_dir / "panel.parquet").is_file()
    assert not list(run.output_dir.rglob("*.parquet")) and not list(run.output_dir.rglob("*.sav"))


def _stub_identifiers() -> tuple[set[str], set[str]]:
    be, kvk = set(), set()
    for path in (ROOT / "data_stub").rglob("*.sav"):
        df, _ = pyreadstat.read_sav(str(path))
        for col in df.columns:
            if col.upper() == "BE_ID":
                be |= set(df[col].dropna().astype(str))
            if col.upper().startswith("KVK"):
                kvk |= set(df[col].dropna().astype(str))
    # participant lists hold KvK numbers as typed (spaces, dots, no leading zero): scan their digits;
    # entries with letters or too many digits identify nobody
    digits = {"".join(ch for ch in k if ch.isdigit()) for k in kvk}
    kvk = {d.zfill(8) for d in digits if 7 <= len(d) <= 8}
    return be, kvk


def test_no_identifier_of_the_stub_anywhere_in_output(run):
    from reach.disclosure import scan_for_identifiers

    be, kvk = _stub_identifiers()
    assert len(be) > 1000 and len(kvk) > 1000
    files = [p for p in run.output_dir.rglob("*") if p.is_file() and p.suffix != ".png"]
    hits = pd.concat([scan_for_identifiers(files, sorted(be), kind="be_id"),
                      scan_for_identifiers(files, sorted(kvk), kind="kvk")])
    assert hits.empty, f"identifiers found in output:\n{hits.head(20).to_string()}"


def test_disclosure_report_covers_every_exported_file(run):
    report = run.output_dir / "disclosure_report.csv"
    with open(report, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    reported = {Path(r["file"]).name for r in rows if r.get("file")}
    exported = {p.name for sub in ("tables", "figures") for p in (run.output_dir / sub).glob("*")}
    assert exported, "the suite exported nothing"
    assert exported <= reported, f"exported without a disclosure verdict: {sorted(exported - reported)}"
    assert {r["notebook"] for r in rows} >= set(EXECUTED)


def test_manifest(run):
    m = json.loads((run.output_dir / "manifest.json").read_text(encoding="utf-8"))
    assert m["parameters"]["biters"] == 199 and m["seeds"]["seed"] == 0
    assert m["versions"]["pandas"] and m["started"] <= m["finished"]
    # where time and memory go, per executed notebook (issue 17): the kernel holds at least the panel
    assert set(m["peak_rss_mb"]) == set(m["seconds"]) == set(m["notebooks"])
    assert all(v is not None and v > 50 for v in m["peak_rss_mb"].values())
    assert any("IHG_per_BE_ID2019V2" in f["path"] for f in m["inputs"])
    assert not any("IHG_per_BE_ID2019V1" in f["path"] for f in m["inputs"])
    assert all(len(f["sha256"]) == 64 for f in m["inputs"])
    assert {Path(e["file"]).name for e in m["exported"]} == {
        p.name for sub in ("tables", "figures") for p in (run.output_dir / sub).glob("*")}


def test_summary_numbers_equal_recorded_numbers(run):
    heads = read_headlines(run.output_dir)
    progs = load_params(PARAMS, check_files=False)["programmes"]
    assert {"panel", "summary"} | {f"{s}_{p}" for s in ("reach", "matching", "effects") for p in progs} <= set(heads)
    summary = heads["summary"]
    assert all(summary["quoted"].get(f"{s}_{p}") for s in ("reach", "effects") for p in progs)
    for section, numbers in summary["quoted"].items():
        for key, value in numbers.items():
            assert lookup(heads, section, key) == value, f"summary quotes {section}.{key}={value}"
    html = unescape((run.output_dir / "05_summary.html").read_text(encoding="utf-8"))
    for text in summary["sentences"]:
        assert text in html


def test_same_parameters_same_tables(run, stub_suite_rerun):
    """Reproducibility: a second run with the same parameters and data gives identical tables and numbers."""
    again = stub_suite_rerun
    for sub, pattern in (("tables", "*.csv"), ("headline", "*.json")):
        first = {p.name: p.read_bytes() for p in (run.output_dir / sub).glob(pattern)}
        second = {p.name: p.read_bytes() for p in (again.output_dir / sub).glob(pattern)}
        assert first.keys() == second.keys()
        differ = [name for name in first if first[name] != second[name]]
        assert not differ, f"{sub} differ between two identical runs: {differ}"
    # the second run renders no HTML: compare the rows of everything else
    reports = [pd.read_csv(r.output_dir / "disclosure_report.csv", dtype=str, keep_default_na=False)
               for r in (run, again)]
    # ... and without the summary's check statement, whose counts include the HTML rows
    first, second = (r.loc[r["kind"] != "report"].reset_index(drop=True)
                     .assign(reason=lambda d: d["reason"].str.replace(r"the summary says every check passed.*", "",
                                                                      regex=True)) for r in reports)
    pd.testing.assert_frame_equal(first, second)


def test_failing_notebook_stops_with_the_cell_error(tmp_path):
    from reach.runner import SuiteError

    with pytest.raises(SuiteError) as err:
        run_suite(PARAMS, overrides=["programmes.nlib.columns.kvk=NoSuchColumn"],
                  only="panel", output_root=tmp_path / "o", work_root=tmp_path / "w", progress=False, render=False)
    text = str(err.value)
    assert "01_build_panel failed" in text and "NoSuchColumn" in text and "partially executed notebook is kept" in text
    # kept under work/ (it may quote microdata in its error), never in output/ (issue 18)
    assert (tmp_path / "w" / "stub" / "notebooks" / "01_build_panel.ipynb").is_file()
    assert not (tmp_path / "o" / "stub" / "notebooks" / "01_build_panel.ipynb").exists()


# ----------------------------------------------------------------------------- issue 13: what an output checker reads
def test_every_output_file_has_a_verdict_in_report_and_results_json(run):
    from reach.publish import FILE_VERDICTS

    files = {p.relative_to(run.output_dir).as_posix() for p in run.output_dir.rglob("*") if p.is_file()
             and p.relative_to(run.output_dir).parts[0] != "checksums"} - {"results.json", "disclosure_report.csv"}
    rep = pd.read_csv(run.output_dir / "disclosure_report.csv", dtype=str, keep_default_na=False)
    assert files <= set(rep["file"]), sorted(files - set(rep["file"]))
    assert rep.loc[rep["file"] != "", "verdict"].isin(FILE_VERDICTS).all()
    results = json.loads((run.output_dir / "results.json").read_text(encoding="utf-8"))
    listed = {f["name"] for r in results["results"].values() for f in r["files"]}
    assert files <= listed
    assert all(r["status"] in ("pass", "review", "fail") for r in results["results"].values())
    assert (run.output_dir / "checksums" / "manifest.json.txt").is_file()


def test_differencing_attacks_of_issue_13_fail(run):
    """90 users per cohort (ps model) minus the published matched count no longer gives the unmatched back."""
    tables = run.output_dir / "tables"
    counts = pd.read_csv(tables / "tinl_matched_counts.csv")
    treated = counts.loc[counts["group"] == "treated"]
    for cohort, part in treated.groupby("cohort"):
        # one suppressed cell in a line whose total is published elsewhere is recoverable by subtraction
        assert part["n_units"].isna().sum() != 1, f"cohort {cohort}: a single suppressed treated cell"
    # shares: numerator and complement of every published share rest on >= 10 firms (at the published precision)
    for name in ("tinl_regional_reach", "tinl_international_activity"):
        df = pd.read_csv(tables / f"{name}.csv").dropna(subset=["value", "n_units"])
        num = (df["value"] * df["n_units"]).round()
        assert (num >= 10).all() and ((df["n_units"] - num) >= 10).all(), name


def test_no_machine_paths_in_output(run):
    import getpass

    from reach.publish import scan_for_machine_paths

    files = [p for p in run.output_dir.rglob("*") if p.is_file() and p.suffix != ".png"]
    hits = scan_for_machine_paths(files, extra=[str(run.output_dir), str(run.work_dir), str(ROOT)],
                                  user=getpass.getuser())
    assert hits.empty, hits.head(20).to_string()
    m = json.loads((run.output_dir / "manifest.json").read_text(encoding="utf-8"))
    assert m["platform"].count("/") == 1 and "Python" in m["platform"]
    assert "PosixPath('/" not in (run.output_dir / "01_build_panel.html").read_text(encoding="utf-8")


def test_pretrend_with_zero_degrees_of_freedom_is_not_ok(run):
    rep = pd.read_csv(run.output_dir / "disclosure_report.csv", dtype=str, keep_default_na=False)
    for name in rep.loc[rep["object"].str.endswith("_pretest"), "file"]:
        df = pd.read_csv(run.output_dir / name)
        verdict = rep.loc[rep["file"] == name, "verdict"].item()
        if "df" in df.columns and (pd.to_numeric(df["df"], errors="coerce").fillna(0) < 10).any():
            assert verdict != "ok", name
