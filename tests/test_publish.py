"""The publishing layer (issue 13): run-level differencing audit, rendered-number audit, SACRO record.

The adversarial test publishes random nested tables of a small synthetic
population through :class:`reach.disclosure.OutputLog`, lets the run audit
suppress more, and then attacks the *written CSV files* with an independent
attacker: an integer programme (scipy ``milp``) over the counts of the
population's attribute combinations, knowing every published number and the
rounding. It must not prove any protected cell below ``min_units`` nor pin it
exactly. The truth is known because the population is generated here.
"""
from __future__ import annotations

import itertools
import re
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reach import publish
from reach.disclosure import OutputLog, Rules, check_estimates, check_table

MIN_UNITS = 10


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    reg = tmp_path / "work" / "registry"
    monkeypatch.setenv(publish.ENV_REGISTRY, str(reg))
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "nb")
    return tmp_path


def _population(rng: np.random.Generator, n: int) -> pd.DataFrame:
    # skewed category probabilities so that small cells (1-9 firms) occur in most draws
    a = rng.choice(["a0", "a1", "a2"], size=n, p=[0.6, 0.3, 0.1])
    b = rng.choice(["b0", "b1"], size=n, p=[0.8, 0.2])
    trait = (rng.random(n) < rng.choice([0.1, 0.5, 0.9])).astype(int)
    return pd.DataFrame({"be_id": [f"{100000000 + i}" for i in range(n)], "a": a, "b": b, "x": trait})


def _publish_random_tables(pop: pd.DataFrame, out: Path, rng: np.random.Generator) -> list[dict]:
    """Publish a random selection of nested count and share tables; return what the attacker knows of each."""
    log = OutputLog(out, notebook="nb", reset=True)
    specs = [("count", ["a"], False), ("count", ["b"], False), ("count", ["a", "b"], False),
             ("count", ["a", "b"], True), ("share", ["a"], False), ("share", ["b"], False), ("count", [], False),
             ("share", ["a", "b"], False)]
    chosen = [s for s in specs if rng.random() < 0.7] or specs[:2]
    published = []
    for i, (stat, by, margins) in enumerate(chosen):
        name = f"t{i}_{stat}_{'_'.join(by) or 'all'}{'_m' if margins else ''}"
        chk = check_table(pop, by=by, value="x" if stat == "share" else None, stat=stat,
                          rules=Rules(min_units=MIN_UNITS), name=name, margins=margins)
        log.table(chk, name)
        published.append({"name": name, "stat": stat, "by": by})
    return published


def _atoms(pop: pd.DataFrame) -> list[tuple[str, str, int]]:
    return list(itertools.product(sorted(pop["a"].unique()), sorted(pop["b"].unique()), [0, 1]))


def _mask(atoms, labels: dict, part: str = "cell") -> np.ndarray:
    keep = []
    for a, b, x in atoms:
        ok = all(v == "Total" or {"a": a, "b": b}[k] == v for k, v in labels.items())
        if part == "numerator":
            ok = ok and x == 1
        elif part == "complement":
            ok = ok and x == 0
        keep.append(ok)
    return np.array(keep, dtype=float)


def _attack(pop: pd.DataFrame, out: Path, published: list[dict], step: float) -> list[str]:
    """Independent attacker on the written CSVs: integer bounds of every protected cell; returns the recovered."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    atoms = _atoms(pop)
    A, lo, hi = [], [], []
    protected = []
    for spec in published:
        df = pd.read_csv(out / "tables" / f"{spec['name']}.csv", dtype={c: str for c in spec["by"]})
        for _, row in df.iterrows():
            labels = {c: row[c] for c in spec["by"]}
            cell = _mask(atoms, labels)
            n_true = int(pop.loc[np.all([(pop[c] == v) for c, v in labels.items() if v != "Total"] or
                                        [np.ones(len(pop), bool)], axis=0), "be_id"].nunique())
            if pd.notna(row["n_units"]):
                A.append(cell)
                lo.append(float(row["n_units"]))
                hi.append(float(row["n_units"]))
            elif n_true < MIN_UNITS:
                protected.append((spec["name"], labels, "cell", cell, n_true))
            if spec["stat"] == "share":
                num = _mask(atoms, labels, "numerator")
                sub = pop.loc[np.all([(pop[c] == v) for c, v in labels.items() if v != "Total"] or
                                     [np.ones(len(pop), bool)], axis=0)]
                n_num = int(sub["x"].sum())
                if pd.notna(row["value"]):
                    h = step / 2 + 1e-9
                    A += [num - (row["value"] + h) * cell, num - (row["value"] - h) * cell]
                    lo += [-np.inf, 0.0]
                    hi += [0.0, np.inf]
                else:
                    if n_num < MIN_UNITS:
                        protected.append((spec["name"], labels, "numerator", num, n_num))
                    if len(sub) - n_num < MIN_UNITS:
                        protected.append((spec["name"], labels, "complement", _mask(atoms, labels, "complement"),
                                          len(sub) - n_num))
    cons = [LinearConstraint(np.array(A), lo, hi)] if A else []
    recovered = []
    for name, labels, part, c, n in protected:
        bounds = []
        for sign in (1, -1):
            res = milp(sign * c, constraints=cons, integrality=np.ones(len(atoms)), bounds=Bounds(0, np.inf))
            bounds.append(sign * res.fun if res.status == 0 else (math.inf if sign < 0 else 0.0))
        low, high = bounds
        if high < MIN_UNITS or low == high:
            recovered.append(f"{name} {labels} {part}: true {n}, attacker [{low}, {high}]")
    return recovered


@pytest.mark.parametrize("seed", range(12))
def test_adversarial_nested_tables_recover_no_protected_cell(registry, seed):
    rng = np.random.default_rng(seed)
    pop = _population(rng, int(rng.integers(40, 120)))
    out = registry / "output"
    published = _publish_random_tables(pop, out, rng)
    audit = publish.audit_run(out, registry / "work")
    assert audit.n_unprotected == 0, audit.targets
    recovered = _attack(pop, out, published, step=Rules().rounding.step("share"))
    assert not recovered, "\n".join(recovered)


def test_attacker_recovers_without_the_audit(registry):
    """The attacker has teeth: nested tables checked one by one give a cell back; after the audit they do not."""
    pop = pd.DataFrame({"be_id": [str(10**8 + i) for i in range(73)],
                        "a": ["a0"] * 53 + ["a1"] * 20, "b": ["b0"] * 50 + ["b1"] * 3 + ["b0"] * 20, "x": 1})
    out = registry / "output"
    log = OutputLog(out, notebook="nb", reset=True)
    published = []
    for by in (["a"], ["a", "b"]):
        name = "by_" + "_".join(by)
        log.table(check_table(pop, by=by, rules=Rules(), name=name), name)
        published.append({"name": name, "stat": "count", "by": by})
    # a0 = 53 published, a0|b0 = 50 published, a0|b1 suppressed: 53 - 50 = 3
    recovered = _attack(pop, out, published, step=0.001)
    assert len(recovered) == 1 and "a0|b1" not in recovered[0] and "'b': 'b1'" in recovered[0]
    audit = publish.audit_run(out, registry / "work")
    assert not audit.targets["safe_before"].all() and audit.n_unprotected == 0
    assert _attack(pop, out, published, step=0.001) == []


def test_line_total_published_elsewhere_is_protected(registry):
    """Issue 13's first attack: 90 users per cohort elsewhere minus the matched count gives the unmatched back."""
    rows = []
    for cohort, unmatched in ((2018, 4), (2019, 1)):
        for i in range(90):
            rows.append({"be_id": f"{cohort}{i:05d}", "cohort": cohort,
                         "status": "unmatched" if i < unmatched else "matched"})
    micro = pd.DataFrame(rows)
    out = registry / "output"
    log = OutputLog(out, notebook="nb", reset=True)
    log.table(check_table(micro, by=["cohort", "status"], rules=Rules(), name="matched_counts"), "matched_counts")
    est = pd.DataFrame({"cohort": [2018, 2019], "estimate": [0.1, 0.2], "n_treated": [90, 90], "n_control": [500, 500]})
    log.table(check_estimates(est, "ps_model", rules=Rules()), "ps_model")
    audit = publish.audit_run(out, registry / "work")
    published = pd.read_csv(out / "tables" / "matched_counts.csv")
    # the matched count of each cohort is now suppressed too: 90 - x no longer gives the unmatched
    assert published["n_units"].isna().sum() == 4
    line = audit.targets.loc[audit.targets["attack"] == "line total published elsewhere"]
    assert len(line) == 2 and line["safe_after"].all() and audit.n_unprotected == 0
    rep = pd.read_csv(out / "disclosure_report.csv", dtype=str, keep_default_na=False)
    row = rep.loc[rep["object"] == "matched_counts"].iloc[0]
    assert row["n_suppressed_secondary"] == "2" and "run-level audit" in row["reason"]
    audit_csv = pd.read_csv(out / "disclosure_audit.csv")
    assert {"constraint", "protected cell"} <= set(audit_csv["record"])


def test_figure_drawn_from_cells_suppressed_by_the_audit_is_withdrawn(registry):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    micro = pd.DataFrame({"be_id": [f"{i:09d}" for i in range(90)], "cohort": 2018,
                          "status": ["unmatched"] * 4 + ["matched"] * 86})
    out = registry / "output"
    log = OutputLog(out, notebook="nb", reset=True)
    chk = check_table(micro, by=["cohort", "status"], rules=Rules(), name="mc")
    log.table(chk, "mc")
    fig, ax = plt.subplots()
    ax.bar([0], [1])
    assert log.figure(fig, chk, "mc_fig", drawn_from_suppressed=True) is not None
    est = pd.DataFrame({"cohort": [2018], "estimate": [0.1], "n_treated": [90], "n_control": [500]})
    log.table(check_estimates(est, "ps", rules=Rules()), "ps")
    publish.audit_run(out, registry / "work")
    assert not (out / "figures" / "mc_fig.png").exists()
    rep = pd.read_csv(out / "disclosure_report.csv", dtype=str, keep_default_na=False)
    assert rep.loc[rep["object"] == "mc_fig", "verdict"].item() == "not_written"


# ----------------------------------------------------------------------------- rendered numbers, record
def _mini_run(registry: Path) -> Path:
    out = registry / "output"
    micro = pd.DataFrame({"be_id": [f"{i:09d}" for i in range(40)], "g": ["a"] * 25 + ["b"] * 15})
    log = OutputLog(out, notebook="nb", reset=True)
    log.table(check_table(micro, by=["g"], rules=Rules(), name="n"), "n")
    from reach.report import fmt_count, record_headline

    record_headline(out, "reach", {"n_firms": 40})
    sentence = f"We reached {fmt_count(40)} firms, {fmt_count(25)} in group a."
    (out / "02_reach.html").write_text(
        f"<html><style>.x{{width: 777px}}</style><body><p>{sentence}</p><p>Also 3,831 firms left out "
        f"in 2019.</p><pre>PosixPath('{out}/tables/n.csv')</pre></body></html>", encoding="utf-8")
    nb = {"cells": [{"cell_type": "markdown", "source": sentence, "metadata": {}}],
          "metadata": {"papermill": {"input_path": str(registry / "notebooks" / "02_reach.ipynb"),
                                     "output_path": str(out / "notebooks" / "02_reach.ipynb"),
                                     "parameters": {"output_dir": str(out)}},
                       "language_info": {"name": "python", "version": "3.12.1", "pygments_lexer": "ipython3"}},
          "nbformat": 4, "nbformat_minor": 5}
    (out / "notebooks").mkdir()
    (out / "notebooks" / "02_reach.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    return out


def test_every_output_file_has_a_verdict_in_report_and_results_json(registry):
    out = _mini_run(registry)
    audit = publish.audit_run(out, registry / "work")
    rep = publish.record_run(out, registry / "work", audit, roots={str(out): "output/mini", str(registry): "."})
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
             and "checksums" not in p.relative_to(out).parts} - {"results.json", "disclosure_report.csv"}
    assert files <= set(rep["file"])
    assert rep["verdict"].isin(publish.FILE_VERDICTS).all()
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results) >= {"version", "results"}
    listed = {f["name"] for r in results["results"].values() for f in r["files"]}
    assert files <= listed
    for r in results["results"].values():  # ACRO finalise_json keys
        assert {"uid", "status", "type", "properties", "files", "outcome", "command", "summary", "timestamp",
                "comments", "exception"} <= set(r)
        assert r["status"] in ("pass", "review", "fail")
        for f in r["files"]:
            assert set(f["sdc"]) == {"summary", "cells"}
    # checksums/ as ACRO writes them: sha256 hex of each file
    import hashlib

    csum = out / "checksums" / "tables" / "n.csv.txt"
    assert csum.read_text() == hashlib.sha256((out / "tables" / "n.csv").read_bytes()).hexdigest()


def test_unregistered_numbers_in_reports_go_to_review(registry):
    out = _mini_run(registry)
    audit = publish.audit_run(out, registry / "work")
    rep = publish.record_run(out, registry / "work", audit, roots={str(out): "output/mini", str(registry): "."})
    html = rep.loc[rep["file"] == "02_reach.html"].iloc[0]
    # 3,831 is no registered cell: the report says where (masked), never the number itself
    assert html["verdict"] == "review" and "1 number(s)" in html["reason"] and "3,831" not in html["reason"]
    nb = rep.loc[rep["file"] == "notebooks/02_reach.ipynb"].iloc[0]
    assert nb["verdict"] == "ok"  # 40 and 25 were formatted by fmt_count: registered
    assert rep.loc[rep["file"] == "headline/reach.json", "verdict"].item() == "ok"
    assert "review" in publish.checks_statement(out / "disclosure_report.csv")


def test_machine_paths_are_scrubbed(registry):
    out = _mini_run(registry)
    audit = publish.audit_run(out, registry / "work")
    publish.record_run(out, registry / "work", audit, roots={str(out): "output/mini", str(registry): "."})
    for f in (out / "02_reach.html", out / "notebooks" / "02_reach.ipynb"):
        text = f.read_text(encoding="utf-8")
        assert str(registry) not in text and str(Path.home()) not in text
    nb = json.loads((out / "notebooks" / "02_reach.ipynb").read_text(encoding="utf-8"))
    assert nb["metadata"]["papermill"]["input_path"] == "02_reach.ipynb"
    assert nb["metadata"]["papermill"]["parameters"]["output_dir"] == "output/mini"
    assert set(nb["metadata"]["language_info"]) == {"name", "version"}


def test_scan_for_machine_paths_finds_home_user_and_host(tmp_path):
    f = tmp_path / "m.json"
    f.write_text('{"a": "/home/jdoe/reach/output", "b": "C:\\\\Users\\\\jdoe\\\\x", "host": "ra-desk-042"}')
    hits = publish.scan_for_machine_paths([f], home="/home/jdoe", user="jdoe", host="ra-desk-042")
    assert set(hits["what"]) == {"home", "user", "host"}
    g = tmp_path / "clean.json"
    g.write_text('{"a": "output/stub", "jdoework": 1}')
    assert publish.scan_for_machine_paths([g], home="/home/jdoe", user="jdoe", host="ra-desk-042").empty


def test_checks_statement_is_computed_from_verdicts():
    ok = pd.DataFrame({"file": ["a.csv", "b.csv"], "verdict": ["ok", "suppressed"]})
    assert publish.checks_statement(ok) == "All 2 outputs passed the disclosure checks (1 with suppressed cells)."
    mixed = pd.DataFrame({"file": ["a.csv", "x.html", "y.csv"], "verdict": ["ok", "review", "review"]})
    text = publish.checks_statement(mixed)
    assert text.startswith("1 of 3 outputs passed") and "x.html" in text and "y.csv" in text
    assert "All" not in text
    withdrawn = pd.DataFrame({"file": ["a.csv", ""], "verdict": ["ok", "not_written"]})
    assert publish.checks_statement(withdrawn) == ("All 1 outputs passed the disclosure checks. "
                                                   "1 figure(s) were not released.")


def test_summary_before_the_run_audit_says_the_audit_follows(tmp_path):
    """05 runs before the run-level audit: its sentence says so; once the audit says "review", a summary that
    claimed "All 240 outputs passed" goes to review itself (the count between "All" and "outputs" included)."""
    before = pd.DataFrame({"file": ["a.csv"], "kind": ["table"], "verdict": ["ok"]})
    text = publish.checks_statement(before)
    assert text.startswith("All 1 outputs passed") and "run-level differencing audit" in text
    (tmp_path / "headline").mkdir()
    (tmp_path / "headline" / "summary.json").write_text(json.dumps({"sentences": [
        "Disclosure checks: All 240 outputs passed the disclosure checks (53 with suppressed cells)."]}))
    rep = pd.DataFrame({"file": ["a.csv", "disclosure_audit.csv", "05_summary.html", "headline/summary.json"],
                        "kind": ["table", "audit", "report", "record"], "verdict": ["ok", "review", "ok", "ok"],
                        "reason": ["", "110 cells still recoverable", "", ""]})
    assert "run-level" not in publish.checks_statement(rep)  # the audit's row is there: no pending note
    publish._check_summary_statement(tmp_path, rep)
    assert rep.set_index("file").loc[["05_summary.html", "headline/summary.json"], "verdict"].tolist() == ["review"] * 2


def test_nothing_registered_outside_a_run(tmp_path, monkeypatch):
    monkeypatch.delenv(publish.ENV_REGISTRY, raising=False)
    micro = pd.DataFrame({"be_id": [str(i) for i in range(12)], "g": "a"})
    OutputLog(tmp_path, notebook="nb").table(check_table(micro, by="g"), "t")
    assert not list(tmp_path.rglob("*.npz")) and not (tmp_path / "registry").exists()


def test_stage_output_publishes_tables_and_headline(registry):
    micro = pd.DataFrame({"be_id": [str(10**8 + i) for i in range(30)], "g": ["a"] * 15 + ["b"] * 15})
    stage = publish.StageOutput(tables={"firms": check_table(micro, by="g", name="firms")}, headline={"n": 30})
    log = OutputLog(registry / "output", notebook="nb", reset=True)
    out = stage.publish(log, "reach")
    assert out["firms"]["n_units"].tolist() == [15, 15]
    assert json.loads((registry / "output" / "headline" / "reach.json").read_text())["n"] == 30
    assert stage.tidy()["kind"].tolist() == ["table", "headline"]


@pytest.mark.parametrize("override, message", [
    ("disclosure.min_units=0", "min_units must be an integer >= 1; got 0"),
    ("disclosure.min_units=-3", "min_units must be an integer >= 1; got -3"),
    ("disclosure.dominance_max=1.5", "dominance_max must be a number in (0, 1]; got 1.5"),
    ("disclosure.p_ratio_min=2", "p_ratio_min must be a number in [0, 1]; got 2"),
    ("disclosure.rounding.share_pp=0", "share_pp must be a number in (0, 100]; got 0"),
    ("disclosure.rounding.count_base=-5", "count_base must be an integer >= 1; got -5"),
])
def test_nonsense_rules_stop_before_any_notebook_runs(tmp_path, override, message):
    from reach.runner import run_suite

    params = Path(__file__).resolve().parents[1] / "params" / "stub.yaml"
    with pytest.raises(Exception, match=re.escape(message)):
        run_suite(params, overrides=[override], output_root=tmp_path / "o", work_root=tmp_path / "w",
                  progress=False, render=False)
    assert not list(tmp_path.rglob("*.ipynb"))


def test_rounding_publishes_shares_to_a_tenth_of_a_point_and_money_to_thousands():
    micro = pd.DataFrame({"be_id": [str(10**8 + i) for i in range(40)], "g": "a",
                          "x": [1] * 13 + [0] * 27, "eur": np.arange(40) * 1234.5 + 100})
    share = check_table(micro, by="g", value="x", stat="share").suppress()["value"].item()
    assert share == 0.325  # 13/40 = 0.325 exactly at 0.1 pp
    micro2 = micro.assign(x=[1] * 14 + [0] * 26)
    assert check_table(micro2, by="g", value="x", stat="share").suppress()["value"].item() == 0.35
    money = check_table(micro, by="g", value="eur", stat="mean", units="EUR").suppress()["value"].item()
    assert money == 24000.0  # mean 24,172.75 -> EUR 24,000
    counts = check_table(micro, by="g", rules=Rules(rounding={"count_base": 5}), units="count").suppress()
    assert counts["value"].item() == 40 and counts["n_units"].item() == 40


def test_median_is_the_mean_of_the_central_observations():
    micro = pd.DataFrame({"be_id": [str(10**8 + i) for i in range(25)], "g": "a", "x": np.arange(25) ** 2.0})
    med = check_table(micro, by="g", value="x", stat="median").table["value"].item()
    assert med == pytest.approx((11 ** 2 + 12 ** 2 + 13 ** 2) / 3)  # odd n: three central values, no single firm
    assert med not in set(micro["x"])


def test_summary_claiming_all_passed_goes_to_review_when_verdicts_disagree(registry):
    out = _mini_run(registry)
    (out / "headline" / "summary.json").write_text(json.dumps(
        {"caveats": ["All numbers passed the run's disclosure checks; suppressed cells are reported as suppressed."]}))
    (out / "05_summary.html").write_text("<p>All numbers passed the run's disclosure checks.</p>")
    audit = publish.audit_run(out, registry / "work")
    rep = publish.record_run(out, registry / "work", audit, roots={str(out): "output/mini", str(registry): "."})
    # 02_reach.html holds an unregistered number (review), so the summary's claim is false
    row = rep.loc[rep["file"] == "05_summary.html"].iloc[0]
    assert row["verdict"] == "review" and "the verdicts say" in row["reason"]


def test_second_pass_suppresses_the_audits_cells_where_the_check_is_made(registry, monkeypatch):
    """The runner's next pass: a check made again suppresses the cells the audit chose (by labels), so
    every table, figure and sentence drawn from it leaves them out; other checks are untouched."""
    pop = pd.DataFrame({"be_id": [str(10**8 + i) for i in range(90)], "a": ["a0"] * 40 + ["a1"] * 50, "x": 1})
    first = check_table(pop, by=["a"], rules=Rules(), name="by_a")
    assert first.ok
    path = registry / "work" / "audit_suppress.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"notebook": "nb", "check": "by_a", "object": "by_a", "labels": {"a": "a1"}}]))
    monkeypatch.setenv(publish.ENV_AUDIT_SUPPRESS, str(path))
    again = check_table(pop, by=["a"], rules=Rules(), name="by_a")
    pub = again.suppress()
    assert pub.loc[pub["a"] == "a1", "n_units"].isna().all() and pub.loc[pub["a"] == "a0", "n_units"].notna().all()
    assert again.cells.loc[again.cells["a"] == "a1", "suppression"].item() == "audit"
    assert check_table(pop, by=["a"], rules=Rules(), name="other").ok  # another check: not touched
    monkeypatch.setenv(publish.ENV_NOTEBOOK, "another_notebook")
    assert check_table(pop, by=["a"], rules=Rules(), name="by_a").ok  # the same name in another notebook


def test_registered_memberships_read_back_exactly_with_the_hashes_stored_uncompressed(registry):
    """The registry's .npz round-trips through np.load (the audit's reader); the units' hashes, which
    deflate cannot shrink, are stored, the low-entropy arrays deflated."""
    import zipfile

    rng = np.random.default_rng(3)
    micro = pd.DataFrame({"be_id": [str(10**8 + i) for i in range(400)], "g": rng.choice(list("abcd"), 400),
                          "x": rng.integers(0, 2, 400)})
    chk = check_table(micro, by="g", value="x", stat="share", name="shares")
    OutputLog(registry / "output", notebook="nb", reset=True).table(chk, "shares")
    tables, _ = publish.load_registry(registry / "work" / "registry")
    (t,) = tables
    assert set(t["members"]) == set(chk.members)
    for k, v in chk.members.items():
        assert t["members"][k].dtype == np.asarray(v).dtype and np.array_equal(t["members"][k], np.asarray(v)), k
    with zipfile.ZipFile(registry / "work" / "registry" / "tables" / "nb__shares.npz") as zf:
        how = {i.filename: i.compress_type for i in zf.infolist()}
    assert how.pop("unit.npy") == zipfile.ZIP_STORED
    assert how and set(how.values()) == {zipfile.ZIP_DEFLATED}
    assert not list((registry / "work" / "registry" / "tables").glob(".*.tmp"))


@pytest.mark.parametrize("seed", [0, 5])
def test_audit_programmes_without_presolve_have_the_default_solvers_optima(registry, seed, monkeypatch):
    """The audit solves its programmes with HiGHS's presolve off (speed): every programme it solves has the
    same status and optimal value as with HiGHS's defaults (presolve on)."""
    import scipy.optimize

    solved = []
    real = scipy.optimize.linprog

    def spy(*args, **kw):
        res = real(*args, **kw)
        solved.append((args, kw, res))
        return res

    monkeypatch.setattr(scipy.optimize, "linprog", spy)
    rng = np.random.default_rng(seed)
    pop = _population(rng, int(rng.integers(40, 120)))
    out = registry / "output"
    _publish_random_tables(pop, out, rng)
    publish.audit_run(out, registry / "work")
    assert solved and all(kw["options"].get("presolve") is False for _, kw, _ in solved)
    for args, kw, res in solved:
        ref = real(*args, **{**kw, "options": {k: v for k, v in kw["options"].items() if k != "presolve"}})
        assert res.status == ref.status
        if ref.status == 0:
            assert res.fun == pytest.approx(ref.fun, rel=1e-9, abs=1e-7)


def _random_programme(rng: np.random.Generator, n: int, m_eq: int, m_ub: int, capped: bool):
    """A sparse programme with a known feasible point x0 (its support ~ a third of the columns)."""
    from scipy import sparse

    A = sparse.random(m_eq + m_ub, n, density=0.08, random_state=rng, format="csr",
                      data_rvs=lambda k: rng.choice([1.0, 1.0, 1.0, -0.5, 0.35], size=k))
    if capped:  # a row bounding every column keeps the optimum finite
        A = sparse.vstack([A, sparse.csr_matrix(np.ones((1, n)))]).tocsr()
        m_ub += 1
    x0 = np.where(rng.random(n) < 0.33, rng.integers(1, 20, size=n), 0).astype(float)
    r = A @ x0
    b = np.concatenate([r[:m_eq], r[m_eq:] + rng.integers(0, 3, size=m_ub)])
    eq = np.arange(m_eq + m_ub) < m_eq
    cost = rng.normal(size=n) * (rng.random(n) < 0.5)
    return A, b, eq, cost, x0


@pytest.mark.parametrize("seed", range(8))
def test_column_generation_gives_the_whole_programmes_optimum_and_duals(seed):
    """The audit's programmes are solved by column generation from a feasible point's support: status and
    optimal value equal HiGHS on every column (independently solved), the point is feasible, and its duals
    price every column non-negatively (optimality of the whole programme, not only the restricted one)."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(seed)
    n = int(rng.integers(300, 900))
    A, b, eq, cost, x0 = _random_programme(rng, n, int(rng.integers(5, 30)), int(rng.integers(5, 40)),
                                           capped=seed % 4 != 3)
    lb, ub = np.zeros(n), np.full(n, np.inf)
    res = publish._column_lp(cost, A, b, eq, lb, ub, x0 > 0, time_limit=60.0)
    ref = linprog(cost, A_ub=A[~eq], b_ub=b[~eq], A_eq=A[eq], b_eq=b[eq], bounds=(0, None), method="highs")
    assert res.status == ref.status
    if ref.status != 0:
        assert ref.status == 3  # only the uncapped programmes may run off
        return
    assert res.n_restricted >= 1 and (x0 > 0).sum() * 2 < n  # the restricted path, not the fallback
    assert res.fun == pytest.approx(ref.fun, rel=1e-7, abs=1e-6)
    assert res.x.min() >= -1e-9 and cost @ res.x == pytest.approx(res.fun, rel=1e-7, abs=1e-6)
    r = A @ res.x - b
    assert np.abs(r[eq]).max(initial=0) < 1e-6 and r[~eq].max(initial=-1) < 1e-6
    reduced = cost - A.T @ res.marginals
    assert reduced.min() > -1e-6
    assert (res.marginals[~eq] <= 1e-9).all()  # a minimum's <= rows have non-positive duals


def test_column_generation_settles_a_restricted_programme_without_a_feasible_point_on_every_column():
    rng = np.random.default_rng(11)
    A, b, eq, cost, x0 = _random_programme(rng, 400, 10, 10, capped=True)
    wrong_start = np.zeros(400, bool)
    wrong_start[np.flatnonzero(x0 == 0)[:20]] = True  # not the feasible point's support
    res = publish._column_lp(cost, A, b, eq, np.zeros(400), np.full(400, np.inf), wrong_start, time_limit=60.0)
    from scipy.optimize import linprog
    ref = linprog(cost, A_ub=A[~eq], b_ub=b[~eq], A_eq=A[eq], b_eq=b[eq], bounds=(0, None), method="highs")
    assert res.status == ref.status == 0 and res.fun == pytest.approx(ref.fun, rel=1e-7, abs=1e-6)
    with pytest.raises(ValueError, match=r"\[0, inf\)"):
        publish._column_lp(cost, A, b, eq, np.zeros(400), np.full(400, 5.0), wrong_start, time_limit=1.0)


SEEDS_WITH_PROGRAMMES = [1, 6, 13, 16]  # 25, 42, 22, 23 intervals, 5-10 extra suppressions


@pytest.mark.parametrize("seed", SEEDS_WITH_PROGRAMMES)
def test_audit_intervals_by_column_generation_equal_the_programmes_on_every_atom(registry, seed, monkeypatch):
    """Every interval the audit computes (after earlier programmes left feasible points and removals behind)
    equals the same programme solved on every atom."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(seed)
    pop = _population(rng, int(rng.integers(60, 140)))
    out = registry / "output"
    _publish_random_tables(pop, out, rng)
    seen = []
    real = publish._System.interval

    def spy(self, c, removed, min_units):
        got = real(self, c, removed, min_units)
        row_lab, atom_lab = self.components(removed)
        act = self.active(removed)
        eq = np.arange(self.A.shape[0]) < self.n_eq
        A, b = self.A, self.b
        ends = []
        for sign in (-1.0, 1.0):
            ref = linprog(sign * c, A_ub=A[act & ~eq], b_ub=b[act & ~eq], A_eq=A[act & eq], b_eq=b[act & eq],
                          bounds=(0, None), method="highs")
            ends.append(math.inf if ref.status == 3 else sign * ref.fun if ref.status == 0 else math.nan)
        seen.append((got, ends[1], ends[0], min_units))
        return got

    monkeypatch.setattr(publish._System, "interval", spy)
    tables, _ = publish.load_registry(registry / "work" / "registry")
    publish.audit_cells(tables, tries=3)
    assert len(seen) >= 3  # seeds chosen so that protected cells need programmes of their own
    for (lo, hi, _), ref_lo, ref_hi, mu in seen:
        assert hi == pytest.approx(ref_hi, rel=1e-7, abs=1e-6)
        if ref_hi >= mu - 1e-6:  # the lower end is only computed when the upper end does not decide
            assert lo == pytest.approx(ref_lo, rel=1e-7, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_a_feasible_point_on_most_atoms_is_first_replaced_by_one_on_few(seed):
    """The true sizes spread over most atoms: phase one finds a feasible point on at most as many atoms as
    there are constraints, and the programme's optimum still equals HiGHS on every column."""
    from scipy import sparse
    from scipy.optimize import linprog

    rng = np.random.default_rng(100 + seed)
    n, m_eq, m_ub = 3000, 20, 30
    A = sparse.random(m_eq + m_ub, n, density=0.05, random_state=rng, format="csr",
                      data_rvs=lambda k: rng.choice([1.0, 1.0, -0.5], size=k))
    A = sparse.vstack([A, sparse.csr_matrix(np.ones((1, n)))]).tocsr()
    x0 = np.where(rng.random(n) < 0.8, rng.integers(1, 5, size=n), 0).astype(float)
    r = A @ x0
    eq = np.arange(A.shape[0]) < m_eq
    b = np.where(eq, r, r + rng.integers(0, 3, size=A.shape[0]))
    cost = rng.normal(size=n)
    lb, ub = np.zeros(n), np.full(n, np.inf)
    support = publish._sparse_feasible(A, b, eq, lb, ub, time_limit=60.0)
    assert support is not None and support.sum() <= A.shape[0] < (x0 > 0).sum()
    res = publish._column_lp(cost, A, b, eq, lb, ub, x0 > 0, time_limit=60.0)
    ref = linprog(cost, A_ub=A[~eq], b_ub=b[~eq], A_eq=A[eq], b_eq=b[eq], bounds=(0, None), method="highs")
    assert res.status == ref.status == 0
    assert res.fun == pytest.approx(ref.fun, rel=1e-7, abs=1e-6)
    assert (cost - A.T @ res.marginals).min() > -1e-6


def _certified_verdicts(registry, seed, monkeypatch) -> list[bool]:
    """Audit a random registry; for every cell earlier optima certified, its own programmes' verdict."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(seed)
    pop = _population(rng, int(rng.integers(60, 140)))
    _publish_random_tables(pop, registry / "output", rng)
    checked = []
    real = publish._System.certified

    def spy(self, c, removed, n_true, min_units):
        got = real(self, c, removed, n_true, min_units)
        if got:
            act = self.active(removed)
            eq = np.arange(self.A.shape[0]) < self.n_eq
            ends = []
            for sign in (-1.0, 1.0):
                ref = linprog(sign * c, A_ub=self.A[act & ~eq], b_ub=self.b[act & ~eq], A_eq=self.A[act & eq],
                              b_eq=self.b[act & eq], bounds=(0, None), method="highs")
                ends.append(math.inf if ref.status == 3 else sign * ref.fun)
            checked.append(publish._safe(ends[1], ends[0], n_true, min_units))
        return got

    monkeypatch.setattr(publish._System, "certified", spy)
    tables, _ = publish.load_registry(registry / "work" / "registry")
    publish.audit_cells(tables, tries=3)
    monkeypatch.setattr(publish._System, "certified", real)
    return checked


def test_a_cell_certified_by_earlier_optima_is_protected_by_its_own_programmes(registry, monkeypatch):
    """A cell skipped because earlier optima already show it protected gets the same verdict from its own two
    programmes, solved on every atom under the suppressions of that moment; the shortcut is taken on these
    registries (else the test checks nothing)."""
    verdicts = [v for seed in SEEDS_WITH_PROGRAMMES for v in _certified_verdicts(registry, seed, monkeypatch)]
    assert len(verdicts) >= 3 and all(verdicts)


def test_audit_summary_counts_earlier_passes_cells_apart_from_this_pass():
    """The last audit of a run that suppressed cells in an earlier pass adds none: its line must say so
    (it read "23 more cells suppressed" after a pass that added none, on the stub run)."""
    targets = pd.DataFrame({"safe_after": [True, True, True]})
    earlier = {("02_reach_nlib", "profile"): [1, 4], ("03_matching_tinl", "overlap"): [0]}
    last = publish.Audit(pd.DataFrame(index=range(5)), targets, earlier, {})
    assert "3 cells suppressed by the audit (0 new in this pass)" in last.summary()
    assert "0 cells still recoverable" in last.summary() and "5 published constraints" in last.summary()
    first = publish.Audit(pd.DataFrame(index=range(5)), targets, earlier, {("03_matching_tinl", "overlap"): [0]})
    assert "3 cells suppressed by the audit (1 new in this pass)" in first.summary()


def test_a_cell_suppressed_to_protect_another_is_not_given_back_by_a_line_total(registry):
    """Seen in a small run: the interval attack suppressed cohort 2021's 15 matched users (to protect a small
    cell of another table), and the balance table published all 45 matched users: 45 - 15 - 15 gave the cell
    back, and with it the small cell it protected. The line-total attack protected cells below
    ``min_units`` only; now every suppressed cell of a line is protected, and the cells it suppresses in turn."""
    micro = pd.DataFrame({"be_id": [f"{c}{i:05d}" for c in (2019, 2020, 2021) for i in range(15 + 25)],
                          "cohort": np.repeat([2019, 2020, 2021], 40),
                          "status": np.tile(["matched"] * 15 + ["unmatched"] * 25, 3)})
    out = registry / "output"
    log = OutputLog(out, notebook="nb", reset=True)
    log.table(check_table(micro, by=["cohort", "status"], rules=Rules(), name="matched_counts"), "matched_counts")
    log.table(check_estimates(pd.DataFrame({"variable": ["x"], "smd": [0.01], "n_treated": [45], "n_control": [75]}),
                              "balance", rules=Rules()), "balance")
    tables, _ = publish.load_registry(registry / "work" / "registry", members=False)
    counts = next(t for t in tables if t["object"] == "matched_counts")
    r21 = next(r for r, row in enumerate(counts["rows"])
               if row["labels"] == {"cohort": 2021, "status": "matched"} or
               row["labels"] == {"cohort": "2021", "status": "matched"})
    # what an earlier pass's interval attack left: this cell suppressed, every other cell published
    counts["rows"][r21]["suppressed"] = True
    counts["rows"][r21]["published"] = {k: None for k in counts["rows"][r21]["published"]}
    audit = publish.audit_cells(tables)
    extra = audit.suppressed.get(("nb", "matched_counts"), [])
    matched_line = [r for r, row in enumerate(counts["rows"]) if str(row["labels"]["status"]) == "matched"]
    assert set(extra) & set(matched_line) - {r21}, "the matched line's total 45 still gives cohort 2021 back"
    line = audit.targets.loc[audit.targets["attack"] == "line total published elsewhere"]
    assert line["safe_after"].all() and len(line) >= 1
    # after the extra suppression no line of the table has exactly one unknown cell whose total (counted from
    # the population itself) is a published count
    sup = {r21, *extra}
    size = micro.groupby(["cohort", "status"]).size()
    for col in ("cohort", "status"):
        other = "status" if col == "cohort" else "cohort"
        for key in {str(row["labels"][other]) for row in counts["rows"]}:
            members = [r for r, row in enumerate(counts["rows"]) if str(row["labels"][other]) == key]
            if len(set(members) & sup) == 1:
                total = sum(size[(int(counts["rows"][r]["labels"]["cohort"]), counts["rows"][r]["labels"]["status"])]
                            for r in members)
                assert total not in (45, 75)
