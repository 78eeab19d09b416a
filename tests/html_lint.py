"""A lint of rendered reports as a policy reviewer reads them (issue 14).

Parses a notebook's HTML (nbconvert, code hidden) with the standard library and
returns what a reviewer should not see: Python reprs (``PosixPath``), missing-value
markers (``<NA>``, ``NaN``), tracebacks, log lines and stderr boxes, pandas index
columns, counts printed as floats (``360.0``), empty tables, and code names of the
label table (:func:`reach.labels.code_names`) in prose, headings and table cells.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from reach.labels import code_names

#: Pattern names reported by :func:`lint_html` (keys of the known-violation lists).
PATTERNS = ("PosixPath", "<NA>", "NaN", "Traceback", "log line", "stderr box", "index column", "float count",
            "empty table", "code name")

_LOG = re.compile(r"(?m)^\s*(?:\[?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\]?[: ]\s*\S)|"
                  r"\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+reach\.\w+")
_FLOAT_COUNT_CELL = re.compile(r"^-?\d{1,3}(?:,\d{3})*\.0$|^-?\d+\.0$")
_FLOAT_COUNT_PROSE = re.compile(r"\b\d[\d,]*\.0 (?:firms|users|participations|records|units|activities)\b")
_NAN = re.compile(r"(?<![\w])(?:NaN|nan)(?![\w])")
_MODULE = re.compile(r"(?<![\w/])reach\.[a-z_]+(?:\.[a-z_]+)*\b")
_CODES = [c for c in code_names() if c]
_CODE_RE = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, sorted(_CODES, key=len, reverse=True)))
                      + r")(?![\w])")
_PROSE_TAGS = {"p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "th", "td", "caption", "summary", "em", "strong",
               "code", "pre", "span", "div", "a", "b", "i"}


@dataclass(frozen=True)
class Finding:
    report: str
    pattern: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.report}: {self.pattern}: {self.excerpt!r}"


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.skip = 0  # inside <style>/<script>
        self.texts: list[tuple[str, str]] = []  # (innermost prose tag, text)
        self.stderr = 0
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._cell_tag = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("style", "script"):
            self.skip += 1
        if "application/vnd.jupyter.stderr" in (a.get("data-mime-type") or ""):
            self.stderr += 1
        if tag == "table":
            self.tables.append({"head": [], "rows": [], "in_body": False})
        elif tag == "tbody" and self.tables:
            self.tables[-1]["in_body"] = True
        elif tag == "tr" and self.tables:
            t = self.tables[-1]
            (t["rows"] if t["in_body"] else t["head"]).append([])
        elif tag in ("td", "th") and self.tables:
            self._cell, self._cell_tag = [], tag
        if tag not in ("br", "img", "meta", "link", "input", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self.skip = max(0, self.skip - 1)
        if tag in ("td", "th") and self._cell is not None and self.tables:
            t = self.tables[-1]
            rows = t["rows"] if t["in_body"] else t["head"]
            if not rows:
                rows.append([])
            rows[-1].append((self._cell_tag, "".join(self._cell).strip()))
            self._cell = None
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self.skip:
            return
        if self._cell is not None:
            self._cell.append(data)
        inner = next((t for t in reversed(self.stack) if t in _PROSE_TAGS), "")
        if data.strip():
            self.texts.append((inner, data))


def _excerpt(text: str, m: re.Match, width: int = 50) -> str:
    return text[max(0, m.start() - width):m.end() + width].replace("\n", " ").strip()


def lint_html(path: str | Path, extra_codes: tuple[str, ...] = ()) -> list[Finding]:
    """Everything in a rendered report that a reviewer should not see (one finding per pattern and spot).

    ``extra_codes``: more code names of this run (programme keys, parameter names) searched as whole words.
    """
    path = Path(path)
    extra = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, extra_codes)) + r")(?![\w])") if extra_codes else None
    report = path.stem
    p = _Parser()
    p.feed(path.read_text(encoding="utf-8"))
    out: list[Finding] = []
    full = "\n".join(t for _, t in p.texts)

    def add(pattern: str, excerpt: str) -> None:
        out.append(Finding(report, pattern, excerpt[:160]))

    for pattern, rx in (("PosixPath", re.compile(r"(?:Posix|Windows)Path\(")), ("<NA>", re.compile(r"<NA>|\bNaT\b")),
                        ("Traceback", re.compile(r"Traceback \(most recent call last\)|\b\w+Error: ")),
                        ("log line", _LOG), ("NaN", _NAN), ("float count", _FLOAT_COUNT_PROSE)):
        for m in rx.finditer(full):
            add(pattern, _excerpt(full, m))
    if p.stderr:
        add("stderr box", f"{p.stderr} stderr output(s) (log messages or warnings) shown")
    for _tag, text in p.texts:
        for m in _CODE_RE.finditer(text):
            add("code name", _excerpt(text, m))
        for m in _MODULE.finditer(text):
            add("code name", _excerpt(text, m))
        if extra is not None:
            for m in extra.finditer(text):
                add("code name", _excerpt(text, m))
    for i, t in enumerate(p.tables):
        body = [r for r in t["rows"] if r]
        if not body:
            add("empty table", f"table {i + 1}: header {[c for r in t['head'] for _, c in r][:6]} and no rows")
            continue
        first = [r[0] for r in body]
        if all(tag == "th" for tag, _ in first) and all(re.fullmatch(r"\d+", c) for _, c in first):
            if [int(c) for _, c in first] == list(range(len(first))):
                add("index column", f"table {i + 1}: rows numbered 0..{len(first) - 1}")
        head = [c for r in t["head"] for _, c in r]
        if head and head[0] == "" and len(t["head"]) >= 1 and any(tag == "th" for tag, _ in first):
            add("index column", f"table {i + 1}: unnamed first header over row labels {[c for _, c in first][:4]}")
        for r in body:
            for _tag, c in r:
                if _FLOAT_COUNT_CELL.match(c):
                    add("float count", f"table {i + 1}: cell {c!r} in row {[x for _, x in r][:4]}")
                    break
    return out
