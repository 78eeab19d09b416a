"""``python -m reach compare run_a run_b``: two runs' headline numbers side by side, differences flagged."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reach.__main__ import main
from reach.compare import COLUMNS, compare_runs, flatten
from reach.report import record_headline

ROOT = Path(__file__).resolve().parents[1]


def _run(folder: Path, reach: dict, effects: dict, seed: int = 0) -> Path:
    record_headline(folder, "reach_tinl", reach)
    record_headline(folder, "effects_tinl", effects)
    record_headline(folder, "summary", {"sentences": ["ignored"], "quoted": {"reach_tinl": {"n_firms": 1}}})
    (folder / "manifest.json").write_text(json.dumps({"parameters": {"seed": seed, "disclosure": {"min_units": 10}}}))
    return folder


REACH = {"programme": "tinl", "n_firms": 360, "share_exporter_before_users": 0.96, "share_own_region": None}
EFFECTS = {"outcomes": {"log_exports": {"matched": {"simple_att": 0.18, "simple_conf_low": 0.12,
                                                    "simple_conf_high": 0.24, "n_treated": 270.0, "detectable": True}}}}


def test_identical_runs_have_no_differences(tmp_path):
    a = _run(tmp_path / "a", REACH, EFFECTS)
    b = _run(tmp_path / "b", REACH, EFFECTS)
    res = compare_runs(a, b)
    assert list(res.tidy().columns) == list(COLUMNS)
    assert res.n_different == 0 and res.differences.empty
    assert set(res.tidy()["status"]) == {"same"}
    # strings and booleans are not compared; the summary section (05's sentences) is skipped
    assert set(res.tidy()["section"]) == {"reach_tinl", "effects_tinl"}
    assert "programme" not in set(res.tidy()["key"])
    assert "0 differ" in res.summary() and len(res.parameters) == 0


def test_last_years_run_with_a_renamed_headline_key_still_compares(tmp_path):
    """The pre-trend p-value's key was renamed (pretest_pvalue -> pretest_p_value): still one row, same value."""
    import copy

    old = copy.deepcopy(EFFECTS)
    old["outcomes"]["log_exports"]["matched"]["pretest_pvalue"] = 0.31
    new = copy.deepcopy(EFFECTS)
    new["outcomes"]["log_exports"]["matched"]["pretest_p_value"] = 0.31
    res = compare_runs(_run(tmp_path / "a", REACH, old), _run(tmp_path / "b", REACH, new))
    rows = res.tidy()[res.tidy()["key"].str.contains("pretest")]
    assert rows["key"].tolist() == ["outcomes.log_exports.matched.pretest_p_value"]
    assert rows["status"].tolist() == ["same"] and res.n_different == 0


def test_different_runs_flag_each_difference_and_suppress_small_count_differences(tmp_path):
    a = _run(tmp_path / "a", REACH, EFFECTS, seed=0)
    reach_b = {**REACH, "n_firms": 364, "share_exporter_before_users": 0.93, "share_own_region": 0.5}
    eff_b = json.loads(json.dumps(EFFECTS))
    eff_b["outcomes"]["log_exports"]["matched"].update(simple_att=0.15, n_treated=290.0)
    eff_b["outcomes"]["n_dest"] = {"matched": {"simple_att": 0.0}}
    b = _run(tmp_path / "b", reach_b, eff_b, seed=1)
    t = compare_runs(a, b).tidy().set_index(["section", "key"])
    # a count that moved by 4 < min_units: both counts stay (already published), the difference does not
    row = t.loc[("reach_tinl", "n_firms")]
    assert row["status"] == "different" and row["difference"] == "suppressed"
    assert "below 10 units" in row["disclosure"] and row["value_a"] == 360 and row["value_b"] == 364
    # a count that moved by 20: shown
    row = t.loc[("effects_tinl", "outcomes.log_exports.matched.n_treated")]
    assert row["difference"] == 20.0 and row["disclosure"] == "ok"
    row = t.loc[("effects_tinl", "outcomes.log_exports.matched.simple_att")]
    assert row["difference"] == pytest.approx(-0.03) and row["status"] == "different"
    assert t.loc[("reach_tinl", "share_own_region"), "status"] == "suppressed in a"
    assert t.loc[("effects_tinl", "outcomes.n_dest.matched.simple_att"), "status"] == "only in b"
    assert t.loc[("effects_tinl", "outcomes.log_exports.matched.simple_conf_low"), "status"] == "same"
    res = compare_runs(a, b)
    assert res.parameters.to_dict("records") == [{"parameter": "seed", "value_a": "0", "value_b": "1"}]


def test_flatten_keeps_numbers_and_nulls_only():
    assert dict(flatten({"a": [1, {"b": None}], "c": "x", "d": False, "e": 2.5})) == {"a.0": 1, "a.1.b": None, "e": 2.5}


def test_cli_writes_files_and_errors_clearly(tmp_path, capsys):
    a = _run(tmp_path / "a", REACH, EFFECTS)
    b = _run(tmp_path / "b", {**REACH, "share_exporter_before_users": 0.9}, EFFECTS)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 differ" in text
    diff = pd.read_csv(out / "differences.csv")
    assert diff["key"].tolist() == ["share_exporter_before_users"]
    assert "share_exporter_before_users" in (out / "comparison.md").read_text(encoding="utf-8")
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "no headline" in err


@pytest.mark.notebooks
def test_compare_on_stub_runs(stub_suite_run, stub_suite_rerun, tmp_path):
    """Identical stub runs: no difference. A run with another seed (matching ties, bootstrap): differences."""
    from reach.runner import run_suite

    same = compare_runs(stub_suite_run.output_dir, stub_suite_rerun.output_dir)
    assert same.n_different == 0, same.differences.head(10).to_string()
    assert len(same.tidy()) > 100
    # another seed: rerun matching and effects of one programme (enough to move its numbers; CI time) on a copy
    # of the first run's panel
    work = tmp_path / "work"
    shutil.copytree(stub_suite_run.work_dir, work / stub_suite_run.run_name)
    other = run_suite(ROOT / "params" / "stub.yaml", overrides=["biters=199", "seed=1", "analyse=[tinl]"],
                      only=["matching", "effects"],
                      output_root=tmp_path / "output", work_root=work, progress=False, render=False)
    shutil.copy(stub_suite_run.output_dir / "headline" / "reach_tinl.json", other.output_dir / "headline")
    res = compare_runs(stub_suite_run.output_dir, other.output_dir)
    diff = res.differences
    assert len(diff) > 0
    effect_rows = diff[diff["section"].str.startswith("effects_") & diff["key"].str.endswith("simple_conf_low")]
    assert len(effect_rows) > 0  # the bootstrap's seed moves the intervals
    assert set(res.parameters["parameter"]) >= {"seed"}
    # the reach notebook did not run again: its numbers are only in run a (except the copied section)
    statuses = res.tidy().groupby("section")["status"].agg(set)
    assert statuses["reach_tinl"] == {"same"} and statuses["reach_nlib"] == {"only in a"}
    assert statuses["effects_nlib"] == {"only in a"}  # not analysed in run b
    # disclosure: no difference of a count below the threshold is spelled out
    # counts: the last named segment starts with n_ (outcomes.n_dest.full.simple_att is an estimate)
    counts = res.tidy()[res.tidy()["key"].str.replace(r"\.\d+$", "", regex=True).str.contains(r"(?:^|\.)n_[a-z_]+$")]
    assert len(counts) > 10
    shown = pd.to_numeric(counts["difference"], errors="coerce").abs()
    assert not ((shown > 0) & (shown < 10)).any()
    paths = res.write(tmp_path / "cmp")
    assert all(p.is_file() for p in paths)
