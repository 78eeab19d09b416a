"""Rendering check: headless Chromium opens every report as a reviewer would (slow tier).

Each HTML is copied with a small probe script appended; Chromium loads it
(``--dump-dom`` after a virtual-time budget), and the probe writes into the DOM
whether every ``<img>`` decoded, the page height, and any script errors. Console
errors are also read from Chromium's log. Skips with a reason where Debian's
``chromium`` is not installed (CI images often lack it); nothing is downloaded.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Page-height limit of the effect reports (CSS px at the default 1280 px width): the body shows the
#: event-study figures and aggregated tables; the long group-time tables belong in an appendix
#: (issue 14: 04 was ~19,000 px with ten 36-row tables in the body).
MAX_HEIGHT_04 = 15_000

PROBE = """
<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var out = {n_img: imgs.length, bad_img: bad,
             height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
             errors: window.__errors};
  var pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = 'PROBE' + JSON.stringify(out) + 'EBORP';
  document.body.appendChild(pre);
});
</script>
"""


def _probe(html: Path, tmp: Path) -> tuple[dict, str]:
    page = tmp / html.name
    text = html.read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE, encoding="utf-8")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions", "--window-size=1280,900", "--virtual-time-budget=10000",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'profile'}", "--dump-dom", page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r"PROBE(\{.*?\})EBORP", res.stdout, flags=re.S)
    assert m, f"{html.name}: chromium returned no probe result (rc={res.returncode}):\n{res.stderr[-2000:]}"
    return json.loads(m.group(1)), res.stderr


ROOT = Path(__file__).resolve().parents[1]


def _reports() -> list[str]:
    from reach.params import load_params
    from reach.runner import executed_name, executed_names

    params = load_params(ROOT / "params" / "stub.yaml", check_files=False)
    return [executed_name(nb, p) for nb, p in executed_names(params)]


@pytest.fixture(scope="module")
def run(stub_suite_run):
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium); "
                    "the rendering check needs a headless browser")
    return stub_suite_run


@pytest.mark.parametrize("report", _reports())
def test_report_renders_without_errors_and_every_image_decodes(run, report, tmp_path):
    html = run.output_dir / f"{report}.html"
    out, log = _probe(html, tmp_path)
    problems: dict[str, str] = {}
    console = [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "rror" in line)]
    if out["errors"] or console:
        problems["errors"] = f"script/console errors {out['errors'] + console[:3]}"
    if out["bad_img"]:
        problems["images"] = f"{out['bad_img']} of {out['n_img']} images do not decode"
    if report.startswith("04_effects") and out["height"] > MAX_HEIGHT_04:
        problems["height"] = (f"page height {out['height']} px > {MAX_HEIGHT_04} px "
                              "(group-time tables belong in an appendix)")
    if report == "05_summary" and out["n_img"] != 2:
        problems["images"] = f"{out['n_img']} images, expected the two figures"
    assert not problems, f"{report}.html: " + "; ".join(problems.values())
