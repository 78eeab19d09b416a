"""The reports a reviewer reads (issue 14): every programme analysed, 05 quotes recorded numbers, plain language.

Uses the session's stub run (conftest ``stub_suite_run``). The HTML lint lists every
offending report and pattern; every report must be clean. A last test reads the run's
disclosure report: no rendered output may need review because of a number that is no
registered cell.
"""
from __future__ import annotations

import math
import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from html_lint import lint_html
from reach import labels
from reach.params import SCHEMA, load_params
from reach.report import read_headlines
from reach.runner import analysed_programmes, executed_name, executed_names
from reach.summary import lookup

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params" / "stub.yaml", check_files=False)
PROGRAMMES = analysed_programmes(PARAMS)
REPORTS = [executed_name(nb, p) for nb, p in executed_names(PARAMS)]
# Code names of this run a reader must not see: programme keys and parameter names with an underscore.
RUN_CODES = tuple(PROGRAMMES) + tuple(k for k in SCHEMA if "_" in k)

@pytest.fixture(scope="module")
def run(stub_suite_run):
    return stub_suite_run


@pytest.fixture(scope="module")
def heads(run):
    return read_headlines(run.output_dir)


def test_every_programme_has_reach_and_effect_outputs(run, heads):
    assert len(PROGRAMMES) >= 3  # the stub: NLiB, TINL and the NLWorks-like consortia
    for p in PROGRAMMES:
        for nb in ("02_reach", "03_matching", "04_effects"):
            assert (run.output_dir / "notebooks" / f"{nb}_{p}.ipynb").is_file(), (nb, p)
            assert (run.output_dir / f"{nb}_{p}.html").is_file(), (nb, p)
        reach = heads[f"reach_{p}"]
        assert reach["programme"] == p and reach["n_firms"] is not None
        eff = heads[f"effects_{p}"]
        assert eff["programme"] == p
        primary = PARAMS["primary"]
        h = eff["outcomes"][primary["outcome"]][primary["sample"]]
        assert h["simple_att"] is not None and h["simple_conf_low"] < h["simple_conf_high"]
        # the matched users: the total of the published cohort cells, or none when the run-level audit
        # suppressed one of them (a total would give the suppressed cell back)
        counts = pd.read_csv(run.output_dir / "tables" / f"{p}_matched_counts.csv")
        cells = counts.loc[(counts["group"] == "treated") & (counts["status"] == "matched"), "value"]
        want = None if cells.isna().any() else int(cells.sum())
        assert heads[f"matching_{p}"]["n_treated_matched"] == want


def test_effects_per_programme_agree_with_the_planted_truth(heads):
    """TINL has a planted effect, NLiB and NLWorks none: the primary intervals say so (stub truth)."""
    import json

    truth = json.loads((ROOT / "data_stub" / "truth.json").read_text(encoding="utf-8"))
    primary = PARAMS["primary"]
    for p in PROGRAMMES:
        h = heads[f"effects_{p}"]["outcomes"][primary["outcome"]][primary["sample"]]
        planted = truth["effects"][p]["simple"]
        # a 95% interval misses the truth in 5% of runs; a bootstrap of 199 draws widens that a little:
        # allow the half-width again on each side (a genuine bias of that size would still fail)
        half = (h["simple_conf_high"] - h["simple_conf_low"]) / 2
        assert h["simple_conf_low"] - half <= planted <= h["simple_conf_high"] + half, (p, h, planted)
    assert heads["effects_tinl"]["outcomes"][primary["outcome"]][primary["sample"]]["detectable"]


def test_summary_quotes_every_programme_and_only_recorded_numbers(run, heads):
    summary = heads["summary"]
    assert summary["programmes"] == PROGRAMMES and summary["primary"] == PARAMS["primary"]
    html = unescape((run.output_dir / "05_summary.html").read_text(encoding="utf-8"))
    for p in PROGRAMMES:
        assert any(s.startswith(f"effects_{p}") for s in summary["quoted"]), p
        assert any(s.startswith(f"reach_{p}") for s in summary["quoted"]), p
        assert labels.programme(PARAMS, p) in html
    for section, numbers in summary["quoted"].items():
        for key, value in numbers.items():
            assert lookup(heads, section, key) == value, f"05 quotes {section}.{key}={value}"
    # derived numbers (percent changes, interval-width ratios) recomputed from the recorded ones
    for name, d in summary["derived"].items():
        src = [lookup(heads, *s.split(":", 1)) for s in d["from"]]
        if d["formula"].startswith("100*(exp("):
            assert d["value"] == pytest.approx(100 * math.expm1(src[0]), rel=1e-12), name
        else:
            lo_o, hi_o, lo_p, hi_p = src
            assert d["value"] == pytest.approx((hi_o - lo_o) / (hi_p - lo_p), rel=1e-12), name
    for text in summary["sentences"]:
        assert text in html, text
    # every number printed in 05's sentences is a quoted or derived number (as printed)
    # the statement about the checks counts outputs and verdicts (reach.publish.checks_statement, tested there)
    sentences = [s for s in summary["sentences"] if "outputs passed the disclosure checks" not in s]
    printed = {n for s in sentences for n in re.findall(r"[+-]?\d[\d,]*\.?\d*", s)}
    allowed = set()
    for numbers in summary["quoted"].values():
        for v in numbers.values():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                allowed |= {f"{v:+.3f}", f"{v:.3f}", f"{int(round(v)):,}", f"{100 * v:.0f}", f"{v:.1f}"}
    for d in summary["derived"].values():
        allowed |= {f"{d['value']:+.0f}", f"{d['value']:.1f}"}
    level = str(int(round(100 * (1 - PARAMS["alpha"]))))
    allowed |= {level, "0"}
    strays = sorted(n for n in printed if n.rstrip(".,") not in allowed and n.lstrip("+-").rstrip(".,") not in allowed)
    assert not strays, f"05 prints numbers that are neither recorded nor derived: {strays}"


def test_summary_page_has_two_figures(run):
    html = (run.output_dir / "05_summary.html").read_text(encoding="utf-8")
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64", html)) == 2
    assert (run.output_dir / "figures" / "summary_effects.png").is_file()
    assert (run.output_dir / "figures" / "summary_reach.png").is_file()


@pytest.mark.parametrize("report", REPORTS)
def test_html_lint(run, report):
    """No PosixPath, <NA>, NaN, Traceback, log lines, index columns, float counts or code names."""
    findings = lint_html(run.output_dir / f"{report}.html", extra_codes=RUN_CODES)
    assert not findings, "reader-facing problems:\n" + "\n".join(map(str, findings[:25]))


def test_no_output_needs_review_for_unregistered_numbers(run):
    """Every number a report, notebook or headline file shows is a registered (checked) cell (issue 13)."""
    import pandas as pd

    rep = pd.read_csv(run.output_dir / "disclosure_report.csv", dtype=str, keep_default_na=False)
    rendered = rep[rep["kind"].isin(["report", "notebook", "record"])]
    assert len(rendered) >= len(REPORTS)  # the rendered outputs are in the report at all
    bad = rendered[rendered["reason"].str.contains("not among the registered cells", regex=False)]
    assert bad.empty, "outputs with unregistered numbers:\n" + "\n".join(
        f"{r.file}: {r.reason[:300]}" for r in bad.itertuples())


def test_how_sure_recorded_in_04_and_quoted_in_05(run, heads):
    """04 records the sensitivity, MDE, placebo and subgroup numbers per programme; 05 quotes the MDE and the
    breakdown value from them (the MDE recomputed from the recorded standard error: Bloom 1995)."""
    import json

    from scipy import stats

    primary, alpha, power = PARAMS["primary"], PARAMS["alpha"], PARAMS["power"]
    o, smp = primary["outcome"], primary["sample"]
    truth = json.loads((ROOT / "data_stub" / "truth.json").read_text(encoding="utf-8"))
    html05 = unescape((run.output_dir / "05_summary.html").read_text(encoding="utf-8"))
    quoted = heads["summary"]["quoted"]
    for p in PROGRAMMES:
        eff = heads[f"effects_{p}"]
        est = eff["outcomes"][o][smp]
        mde = eff["mde"][o]
        k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
        assert mde["mde"] == pytest.approx(k * est["simple_se"], rel=1e-9), p
        assert mde["n_treated"] == est["n_treated"] and mde["power"] == power and mde["alpha"] == alpha
        rm = eff["sensitivity"][o]["relative_magnitude"]["average"]
        assert rm["grid_max"] == max(PARAMS["sensitivity_mbar"]) and rm["method"] == "C-LF"
        assert eff["sensitivity"][o]["smoothness"]["average"]["method"] == "FLCI"
        assert set(eff["sensitivity"]) == set(PARAMS["outcomes"])
        assert eff["placebo"]["n_draws"] == PARAMS["placebo_draws"]
        assert set(PARAMS["subgroups"]) <= set(eff["heterogeneity"])
        assert (run.output_dir / "figures" / f"sensitivity_{p}.png").is_file()
        sentence = (f"{labels.programme(PARAMS, p)}: with {int(round(mde['n_treated'])):,} users, effects smaller "
                    f"than {100 * mde['mde_percent']:.0f}% of exports cannot be told apart from zero")
        assert sentence in html05, sentence
        assert quoted[f"effects_{p}"][f"mde.{o}.mde_percent"] == mde["mde_percent"]
        assert quoted[f"effects_{p}"][f"sensitivity.{o}.relative_magnitude.average.significant_at_zero"] \
            == rm["significant_at_zero"]
    # TINL's planted effect is larger than what the design can detect; it has activities, NLiB none
    assert truth["effects"]["tinl"]["simple"] > heads["effects_tinl"]["mde"][o]["mde"]
    assert "dose" in heads["effects_tinl"] and "dose" not in heads["effects_nlib"]
