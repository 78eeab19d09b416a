"""The one-page answer of a run, built only from the headline numbers the notebooks recorded.

Notebook ``05_summary`` calls :func:`summarise`; every number it quotes is read
from ``output/<run>/headline/*.json`` (already disclosure-checked) and listed in
``Summary.quoted`` so a test can compare the page with what the notebooks recorded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

__all__ = ["Summary", "summarise", "lookup"]


def lookup(headlines: Mapping[str, Any], section: str, path: str) -> Any:
    """Value at ``section`` and dotted ``path`` (``outcomes.log_exports.full.simple_att``), or None."""
    node: Any = headlines.get(section)
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class Summary:
    """Sentences answering the evaluation's questions, and the numbers they quote.

    Attributes
    ----------
    programme, label : str
        Programme key and its readable name.
    reach, effect, caveats : tuple of str
        Plain sentences (no Markdown), in reading order.
    quoted : dict
        ``{section: {dotted path: value}}`` of every headline number a sentence uses.
    """

    programme: str
    label: str
    reach: tuple[str, ...]
    effect: tuple[str, ...]
    caveats: tuple[str, ...]
    quoted: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def sentences(self) -> tuple[str, ...]:
        return self.reach + self.effect + self.caveats

    def tidy(self) -> pd.DataFrame:
        """One row per quoted number: section, key, value."""
        rows = [(s, k, v) for s, d in self.quoted.items() for k, v in d.items()]
        return pd.DataFrame(rows, columns=["section", "key", "value"])

    def summary(self) -> str:
        parts = [f"{self.label}: reach"] + [f"- {s}" for s in self.reach]
        parts += ["Effect"] + [f"- {s}" for s in self.effect]
        parts += ["Caveats"] + [f"- {s}" for s in self.caveats]
        return "\n".join(parts)

    def _repr_markdown_(self) -> str:
        def block(title: str, items: tuple[str, ...]) -> str:
            return f"### {title}\n\n" + "\n".join(f"- {s}" for s in items) + "\n"

        return "\n".join([block(f"Reach of {self.label}", self.reach), block("Effect on exports", self.effect),
                          block("What these numbers can and cannot say", self.caveats)])

    def record(self) -> dict[str, Any]:
        """What notebook 05 records as its own headline (sentences and the numbers they quote)."""
        return {"programme": self.programme, "sentences": list(self.sentences), "quoted": {k: dict(v) for k, v in self.quoted.items()}}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def summarise(headlines: Mapping[str, Any], *, programme: str, label: str | None = None,
              outcome: str = "log_exports", alpha: float = 0.05) -> Summary:
    """Build the one-page summary from a run's headline numbers.

    Parameters
    ----------
    headlines : mapping
        ``reach.report.read_headlines(output_dir)``: sections ``panel``, ``reach``, ``matching``, ``effects``.
    programme : str
        Programme key; ``label`` is its readable name (defaults to the key).
    outcome : str
        The effect outcome the summary leads with (the others stay in notebook 04).
    alpha : float
        Significance level the effect notebook used (for the wording of intervals).

    Returns
    -------
    Summary

    Notes
    -----
    A number that was suppressed by disclosure control (recorded as null) is
    said to be suppressed, never replaced; a section that did not run is said
    to be missing. Reach shares are descriptive; only the difference-in-
    differences estimate is read as an effect, under conditional parallel trends.

    Examples
    --------
    >>> s = summarise({"reach": {"n_firms": 360, "share_exporter_before_users": 0.94,
    ...                          "share_exporter_before_comparison": 0.40}}, programme="tinl", label="TINL")
    >>> s.reach[0]
    'TINL reached 360 firms.'
    """
    label = label or programme
    quoted: dict[str, dict[str, Any]] = {}

    def q(section: str, path: str) -> Any:
        value = lookup(headlines, section, path)
        if value is not None:
            quoted.setdefault(section, {})[path] = value
        return value

    reach: list[str] = []
    if "reach" not in headlines:
        reach.append("The reach notebook did not record results for this run.")
    else:
        n = q("reach", "n_firms")
        reach.append(f"{label} reached {int(n):,} firms." if n is not None
                     else f"The number of firms {label} reached is suppressed (too few firms).")
        for key, what in (("share_exporter_before", "were already exporting in the year before their first use"),
                          ("share_intl_before", "were already trading internationally (exports or imports) in the year before"),
                          ("share_any_growth_market", "already traded with at least one growth market in the years before"),
                          ("share_instr_before", "had already used a public instrument before")):
            users = q("reach", f"{key}_users")
            comp = q("reach", f"{key}_comparison")
            if users is None:
                continue
            text = f"{_pct(users)} of users {what}"
            text += f", against {_pct(comp)} of the comparison group." if comp is not None else "."
            reach.append(text)
        exp = lookup(headlines, "reach", "share_exporter_before_users")
        if exp is not None:
            reach.append(f"So {_pct(1 - exp)} of the firms reached were not yet exporting: "
                         f"the programme mostly reaches firms that already export." if exp >= 0.5 else
                         f"So {_pct(1 - exp)} of the firms reached were not yet exporting.")
        fit = q("reach", "share_in_target_group")
        if fit is not None:
            reach.append(f"{_pct(fit)} of users fall inside the programme's target group.")
        own = q("reach", "share_own_region")
        if own is not None:
            reach.append(f"{_pct(own)} of participations came from firms in the organiser's own region.")

    effect: list[str] = []
    level = int(round(100 * (1 - alpha)))
    base = f"outcomes.{outcome}"
    if "effects" not in headlines or lookup(headlines, "effects", base) is None:
        effect.append("The effect notebook did not record results for this outcome.")
    else:
        samples = lookup(headlines, "effects", f"{base}") or {}
        for sample in ("matched", "full"):
            if sample not in samples:
                continue
            att = q("effects", f"{base}.{sample}.simple_att")
            lo = q("effects", f"{base}.{sample}.simple_conf_low")
            hi = q("effects", f"{base}.{sample}.simple_conf_high")
            where = "on the matched sample" if sample == "matched" else "on all firms"
            if att is None:
                effect.append(f"The effect {where} is suppressed: too few firms behind it.")
                continue
            detect = q("effects", f"{base}.{sample}.detectable")
            verdict = ("an effect" if detect else "no detectable effect")
            scale = (f" (about {100 * (math.exp(att) - 1):+.0f}% in exports)"
                     if outcome.startswith(("log_", "ihs_")) and abs(att) < 2 else "")
            effect.append(
                f"Difference-in-differences {where}: average effect on {outcome} after first use "
                f"{att:+.3f}{scale} ({level}% confidence interval {lo:+.3f} to {hi:+.3f}), that is {verdict}.")
            pre = q("effects", f"{base}.{sample}.pretest_pvalue")
            if pre is not None:
                effect.append(
                    f"Pre-trend test {where}: p = {pre:.3f}"
                    + (" (no evidence against parallel trends before first use)." if pre >= alpha
                       else " (pre-treatment differences: read the effect with care)."))
        naive = q("effects", f"{base}.full.naive")
        twfe = q("effects", f"{base}.full.twfe")
        if naive is not None and twfe is not None:
            effect.append(f"For comparison, a naive users-versus-others difference gives {naive:+.3f} "
                          f"and a two-way fixed-effects regression {twfe:+.3f}; both ignore selection "
                          f"or staggered timing and should not be read as effects.")

    caveats = [
        "Reach shares describe who took part; they are not effects.",
        "The effect estimates assume that, given the covariates, users' exports would have moved "
        "like those of comparable non-users (conditional parallel trends).",
        "All numbers passed the run's disclosure checks; suppressed cells are reported as suppressed.",
    ]
    matched = lookup(headlines, "matching", "n_treated_matched")
    if matched is not None:
        q("matching", "n_treated_matched")
        caveats.append(f"The matched sample holds {int(matched):,} users with comparable non-users.")
    return Summary(programme, label, tuple(reach), tuple(effect), tuple(caveats), quoted)
