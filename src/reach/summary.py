"""The one-page answer of a run, built only from the headline numbers the notebooks recorded.

Notebook ``05_summary`` calls :func:`compare_programmes` (every analysed programme side
by side, led by the primary estimate declared in the parameters) and, per programme,
:func:`summarise`. Every number they quote is read from ``output/<run>/headline/*.json``
(already disclosure-checked; per-programme sections ``reach_<key>``, ``matching_<key>``,
``effects_<key>``) and listed in ``quoted`` so a test can compare the page with what the
notebooks recorded; numbers computed from them (percent changes, ratios of interval
widths) are listed in ``derived`` with the quoted numbers they come from.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from reach import labels

__all__ = ["Summary", "Comparison", "summarise", "compare_programmes", "lookup", "section_name", "pct_change",
           "EFFECT_COLUMNS", "REACH_COLUMNS", "REACH_INDICATORS"]


def section_name(headlines: Mapping[str, Any], section: str, programme: str | None) -> str:
    """The headline section of ``programme``: ``<section>_<programme>`` when recorded, else ``section``.

    Notebooks 02-04 run once per programme and record ``reach_tinl``, ``matching_tinl``,
    ``effects_tinl`` (docs/CONTRACTS.md section 7); a single-programme run of older
    notebooks recorded plain ``reach``.

    Examples
    --------
    >>> section_name({"reach_tinl": {}}, "reach", "tinl"), section_name({"reach": {}}, "reach", "tinl")
    ('reach_tinl', 'reach')
    """
    own = f"{section}_{programme}" if programme else section
    return own if own in headlines or section not in headlines else section


def pct_change(b: float | None) -> float | None:
    """Percent change in the level for an effect ``b`` in log points: :math:`100\\,(e^{b} - 1)`.

    Examples
    --------
    >>> round(pct_change(0.18), 1), pct_change(None)
    (19.7, None)
    """
    if b is None or not isinstance(b, (int, float)) or not math.isfinite(b):
        return None
    return 100.0 * math.expm1(b)


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


def _signed_pct(x: float) -> str:
    return f"{x:+.0f}%"


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
    sec = {name: section_name(headlines, name, programme) for name in ("reach", "matching", "effects")}

    def q(section: str, path: str) -> Any:
        section = sec.get(section, section)
        value = lookup(headlines, section, path)
        if value is not None:
            quoted.setdefault(section, {})[path] = value
        return value

    def get(section: str, path: str) -> Any:
        return lookup(headlines, sec.get(section, section), path)

    reach: list[str] = []
    if sec["reach"] not in headlines:
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
        exp = get("reach", "share_exporter_before_users")
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
    if sec["effects"] not in headlines or get("effects", base) is None:
        effect.append("The effect notebook did not record results for this outcome.")
    else:
        samples = get("effects", base) or {}
        for sample in ("matched", "full"):
            if sample not in samples:
                continue
            att = q("effects", f"{base}.{sample}.simple_att")
            lo = q("effects", f"{base}.{sample}.simple_conf_low")
            hi = q("effects", f"{base}.{sample}.simple_conf_high")
            where = "on the matched sample" if sample == "matched" else "on all firms"
            if att is None:
                why = get("effects", f"{base}.{sample}.withheld") or "too few firms behind it"
                effect.append(f"The effect {where} is suppressed: {why}.")
                continue
            detect = q("effects", f"{base}.{sample}.detectable")
            verdict = ("an effect" if detect else "no detectable effect")
            scale = (f" (about {pct_change(att):+.0f}% in exports)"
                     if labels.is_log_outcome(outcome) and abs(att) < 2 else "")
            effect.append(
                f"Difference-in-differences {where}: average effect on {labels.outcome(outcome)} after first use "
                f"{att:+.3f}{scale} ({level}% confidence interval {lo:+.3f} to {hi:+.3f}), that is {verdict}.")
            pre = q("effects", f"{base}.{sample}.pretest_p_value")
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
        "Suppressed cells are reported as suppressed; the verdict of every output is in the run's "
        "disclosure report (disclosure_report.csv).",
    ]
    matched = get("matching", "n_treated_matched")
    if matched is not None:
        q("matching", "n_treated_matched")
        caveats.append(f"The matched sample holds {int(matched):,} users with comparable non-users.")
    return Summary(programme, label, tuple(reach), tuple(effect), tuple(caveats), quoted)


# --------------------------------------------------------------------------- every programme side by side

#: Reach indicators compared across programmes (the evaluation's table): (headline stem, reader label).
#: Users' share is ``<stem>_users`` (or ``<stem>`` for users-only indicators), the comparison group's
#: ``<stem>_comparison``.
REACH_INDICATORS: tuple[tuple[str, str], ...] = (
    ("share_exporter_before", "exporting in the year before first use"),
    ("share_any_growth_market", "trading with a growth market before"),
    ("share_instr_before", "used a public instrument before"),
    ("share_in_target_group", "inside the programme's target group"),
    ("share_own_region", "participations in the organiser's own region"),
)
#: Columns of :meth:`Comparison.tidy` (one row per programme, outcome and sample).
EFFECT_COLUMNS = ("programme", "outcome", "sample", "primary", "estimate", "std_error", "conf_low", "conf_high",
                  "pct_change", "pct_low", "pct_high", "n_treated", "n_control_all", "n_control_min", "detectable",
                  "pretest_p_value")
#: Columns of :meth:`Comparison.reach_tidy` (one row per programme and indicator).
REACH_COLUMNS = ("programme", "indicator", "users", "comparison", "n_firms")


@dataclass(frozen=True, repr=False)
class Comparison:
    """Every analysed programme side by side, led by the primary estimate declared in advance.

    Attributes
    ----------
    programmes : tuple of str
        Programme keys, in the order of the parameters.
    names : dict
        ``{key: reader label}``.
    primary : dict
        ``{"sample": ..., "outcome": ...}`` as declared in the parameters.
    lead, differences, reach_text, caveats : tuple of str
        Plain sentences (no Markdown) in reading order.
    quoted : dict
        ``{section: {dotted path: value}}`` of every recorded headline number used.
    derived : dict
        ``{name: {"value", "formula", "from"}}``: numbers computed from quoted ones.
    """

    programmes: tuple[str, ...]
    names: Mapping[str, str]
    primary: Mapping[str, str]
    alpha: float
    lead: tuple[str, ...]
    differences: tuple[str, ...]
    reach_text: tuple[str, ...]
    caveats: tuple[str, ...]
    effects: pd.DataFrame = field(repr=False)
    reach: pd.DataFrame = field(repr=False)
    quoted: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    derived: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: (programme, indicator, "users"|"comparison") that the reach notebook did not measure at all
    #: (e.g. own-region shares of a programme without regional activities), as opposed to suppressed.
    not_measured: frozenset = frozenset()
    #: the sentence about the disclosure checks, computed from the run's verdicts (not from headline
    #: numbers: recorded apart from the sentences, and re-checked by the run's final audit)
    checks: str = ""
    #: Per programme, from notebook 04's "How sure are we?": the minimum detectable effect and the
    #: breakdown value of the sensitivity to parallel trends, in words.
    how_sure: tuple[str, ...] = ()

    @property
    def sentences(self) -> tuple[str, ...]:
        return self.lead + self.differences + self.how_sure + self.reach_text + self.caveats

    def tidy(self) -> pd.DataFrame:
        """Effects: one row per programme, outcome and sample (columns :data:`EFFECT_COLUMNS`)."""
        return self.effects.loc[:, list(EFFECT_COLUMNS)].copy()

    def reach_tidy(self) -> pd.DataFrame:
        """Reach indicators: one row per programme and indicator (columns :data:`REACH_COLUMNS`)."""
        return self.reach.loc[:, list(REACH_COLUMNS)].copy()

    def summary(self) -> str:
        return "\n".join(["Primary estimate"] + [f"- {s}" for s in self.lead]
                         + ["Other estimates"] + [f"- {s}" for s in self.differences]
                         + ["How sure are we?"] + [f"- {s}" for s in self.how_sure]
                         + ["Reach"] + [f"- {s}" for s in self.reach_text]
                         + ["Caveats"] + [f"- {s}" for s in self.caveats])

    def __repr__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        def block(title: str, items: tuple[str, ...]) -> str:
            return f"### {title}\n\n" + "\n".join(f"- {s}" for s in items) + "\n" if items else ""

        return "\n".join([block("The primary estimate, declared before the run", self.lead),
                          block("How the other estimates differ, and why", self.differences),
                          block("How sure are we?", self.how_sure),
                          block("Whom the programmes reach", self.reach_text),
                          block("What these numbers can and cannot say", self.caveats)])

    # -- reader tables -------------------------------------------------------------------------
    def effect_table(self, outcome: str | None = None) -> pd.DataFrame:
        """Reader table of the effects on ``outcome`` (default: the primary one): text cells, no index."""
        outcome = outcome or self.primary["outcome"]
        t = self.effects[self.effects["outcome"] == outcome]
        level = int(round(100 * (1 - self.alpha)))
        log_scale = labels.is_log_outcome(outcome)
        rows = []
        for r in t.itertuples(index=False):
            row = {"programme": self.names[r.programme],
                   "sample": labels.sample(r.sample) + (" (primary)" if r.primary else ""),
                   "users": _count(r.n_treated),
                   # every comparison firm, and the smallest comparison group behind one group-time effect (the
                   # disclosure count): without both a reader takes the latter for the number of matched controls
                   "comparison firms (all)": _count(r.n_control_all),
                   "smallest comparison group in a cell": _count(r.n_control_min),
                   f"effect ({labels.outcome(outcome)})": _num(r.estimate, signed=True),
                   f"{level}% confidence interval": _interval(r.conf_low, r.conf_high)}
            if log_scale:
                row["change in exports"] = _pct_text(r.pct_change)
                row[f"{level}% interval of the change"] = _interval(r.pct_low, r.pct_high, pct=True)
            rows.append(row)
        return pd.DataFrame(rows)

    def reach_table(self) -> pd.DataFrame:
        """Reader table: one row per indicator, users and comparison group per programme (text cells)."""
        rows = []
        for stem, text in REACH_INDICATORS:
            sub = self.reach[self.reach["indicator"] == stem]
            if all((p, stem, "users") in self.not_measured for p in self.programmes):
                continue  # no programme measures it
            row = {"indicator": text}
            for p in self.programmes:
                r = sub[sub["programme"] == p]
                for who, col in (("users", "users"), ("comparison group", "comparison")):
                    v = r[col].iloc[0] if len(r) else None
                    row[f"{self.names[p]}: {who}"] = ("not measured" if (p, stem, col) in self.not_measured
                                                      else _share_text(v))
            rows.append(row)
        return pd.DataFrame(rows)

    # -- figures -------------------------------------------------------------------------------
    def reach_figure(self, table: pd.DataFrame | None = None):
        """Bars: share of users and of the comparison group per indicator, one panel per programme.

        ``table`` is the publishable copy of the checked reach table (default: :meth:`reach_tidy`).
        """
        import matplotlib.pyplot as plt
        import numpy as np

        t = self.reach_tidy() if table is None else table
        inds = [(s, txt) for s, txt in REACH_INDICATORS if t.loc[t["indicator"] == s, "users"].notna().any()]
        fig, axes = plt.subplots(1, len(self.programmes), figsize=(3.6 * len(self.programmes) + 1.5, 3.8),
                                 sharey=True, squeeze=False)
        y = np.arange(len(inds))
        for ax, p in zip(axes[0], self.programmes):
            sub = t[t["programme"] == p].set_index("indicator")
            u = [100 * sub["users"].get(s, np.nan) for s, _ in inds]
            c = [100 * sub["comparison"].get(s, np.nan) for s, _ in inds]
            ax.barh(y - 0.2, u, height=0.4, color="#1f77b4", label="users")
            ax.barh(y + 0.2, c, height=0.4, color="#bbbbbb", label="comparison group")
            n = sub["n_firms"].dropna()
            ax.set_title(f"{self.names[p]}\n({_count(n.iloc[0])} firms reached)" if len(n) else self.names[p],
                         fontsize=10)
            ax.set_xlim(0, 100)
            # the own-region row counts participations, every other row firms: the axis says so
            ax.set_xlabel("% of firms" + ("\n(own region: % of participations)"
                                          if any(s == "share_own_region" for s, _ in inds) else ""))
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].set_yticks(y, [txt for _, txt in inds])
        axes[0][0].invert_yaxis()
        handles, names = axes[0][0].get_legend_handles_labels()
        # legend below the panels: never over a bar
        fig.legend(handles, names, loc="lower center", ncol=2, frameon=False)
        fig.suptitle("Reach: users against the comparison group, per programme", fontsize=11)
        fig.tight_layout(rect=(0, 0.08, 1, 0.95))
        return fig

    def effect_figure(self, table: pd.DataFrame | None = None):
        """Coefficient plot: effect on the primary outcome with its interval, per programme and sample.

        For an outcome in log points the axis shows the change in exports in percent
        (:math:`e^b - 1`); each label states the users behind the estimate.
        """
        import matplotlib.pyplot as plt

        t = self.tidy() if table is None else table
        t = t[t["outcome"] == self.primary["outcome"]]
        log_scale = labels.is_log_outcome(self.primary["outcome"])
        col, lo, hi = ("pct_change", "pct_low", "pct_high") if log_scale else ("estimate", "conf_low", "conf_high")
        fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(t) + 1.8))
        ticks, names = [], []
        for i, r in enumerate(t.itertuples(index=False)):
            est, a, b = getattr(r, col), getattr(r, lo), getattr(r, hi)
            primary = bool(r.primary)
            if est is not None and not pd.isna(est):
                ax.errorbar([est], [i], xerr=[[est - a], [b - est]], fmt="o" if primary else "s",
                            color="#1f77b4" if primary else "#777777", capsize=3,
                            label="primary estimate" if primary else "other sample")
            ticks.append(i)
            names.append(f"{self.names[r.programme]}, {labels.sample(r.sample)} "
                         f"({_count(r.n_treated)} users)" if not pd.isna(r.n_treated) else
                         f"{self.names[r.programme]}, {labels.sample(r.sample)} (suppressed)")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(ticks, names)
        ax.invert_yaxis()
        level = int(round(100 * (1 - self.alpha)))
        ax.set_xlabel(f"change in exports (%)\nwith {level}% confidence interval" if log_scale
                      else f"effect on {labels.outcome(self.primary['outcome'])}\nwith {level}% confidence interval")
        ax.set_title("Effect per programme", fontsize=11)
        handles, hl = ax.get_legend_handles_labels()
        uniq = dict(zip(hl, handles))
        fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        return fig

    def record(self) -> dict[str, Any]:
        """What notebook 05 records as its headline: sentences, quoted and derived numbers."""
        return {"programmes": list(self.programmes), "primary": dict(self.primary), "sentences": list(self.sentences),
                "checks": self.checks,
                "quoted": {k: dict(v) for k, v in self.quoted.items()},
                "derived": {k: dict(v) for k, v in self.derived.items()}}


def _how_sure_sentences(headlines: Mapping[str, Any], sec: str, name: str, outcome: str, q) -> list[str]:
    """The minimum detectable effect and the breakdown value of one programme, in words.

    Reads ``mde.<outcome>`` and ``sensitivity.<outcome>.relative_magnitude.average`` of the
    programme's effects section (recorded by notebook 04, :meth:`reach.robustness.HowSure.headline`);
    every number printed goes through ``q`` (quoted). Nothing is said when 04 did not record them.

    Examples
    --------
    >>> h = {"effects_tinl": {"mde": {"log_exports": {"n_treated": 270.0, "mde_percent": 0.11, "mde": 0.104,
    ...      "power": 0.8, "alpha": 0.05}}, "sensitivity": {"log_exports": {"relative_magnitude": {"average":
    ...      {"significant_at_zero": True, "breakdown_value": 0.75}}}}}}
    >>> for s in _how_sure_sentences(h, "effects_tinl", "TINL", "log_exports", lambda sec, k: lookup(h, sec, k)):
    ...     print(s)
    TINL: with 270 users, effects smaller than 11% of exports cannot be told apart from zero (80% power, 5% significance).
    TINL: the average effect after first use stays significant as long as violations of parallel trends after first use are at most 75% of the largest change of the pre-trend before first use (breakdown value of the relative-magnitudes sensitivity analysis).
    """
    out: list[str] = []
    base = f"mde.{outcome}"
    if lookup(headlines, sec, base) is not None:
        mde = q(sec, f"{base}.mde")
        if mde is None:
            out.append(f"{name}: the minimum detectable effect is suppressed (the estimate behind it is).")
        else:
            n = q(sec, f"{base}.n_treated")
            pct = q(sec, f"{base}.mde_percent") if labels.is_log_outcome(outcome) else None
            power, alpha = q(sec, f"{base}.power"), q(sec, f"{base}.alpha")
            size = (f"{100 * pct:.0f}% of exports" if _isnum(pct) else f"{mde:.3f} ({labels.outcome(outcome)})")
            users = f"with {int(round(n)):,} users, " if _isnum(n) else ""
            out.append(f"{name}: {users}effects smaller than {size} cannot be told apart from zero "
                       f"({100 * power:.0f}% power, {100 * alpha:.0f}% significance).")
    rm = f"sensitivity.{outcome}.relative_magnitude.average"
    if lookup(headlines, sec, rm) is not None:
        sig = q(sec, f"{rm}.significant_at_zero")
        bv = q(sec, f"{rm}.breakdown_value")
        if sig is None:
            out.append(f"{name}: the sensitivity to parallel trends is suppressed (too few firms).")
        elif not sig:
            out.append(f"{name}: the average effect after first use is not significant even if parallel trends hold "
                       "exactly after first use (on the firms observed in every year), so there is no conclusion "
                       "for a violation of parallel trends to break down.")
        elif bv is not None and bv == 0:
            out.append(f"{name}: the average effect after first use is significant only if parallel trends hold "
                       "exactly after first use (breakdown value 0 of the relative-magnitudes sensitivity analysis): "
                       "a violation of parallel trends after first use of any size tried makes it indistinguishable "
                       "from zero.")
        elif _isnum(bv):
            out.append(f"{name}: the average effect after first use stays significant as long as violations of "
                       f"parallel trends after first use are at most {100 * bv:.0f}% of the largest change of the "
                       "pre-trend before first use (breakdown value of the relative-magnitudes sensitivity analysis).")
    return out


def _isnum(x: Any) -> bool:
    # numbers.Real covers numpy scalars (a published count column is Int64); pd.NA is not Real
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)


def _num(x: Any, digits: int = 3, signed: bool = False) -> str:
    return f"{x:{'+' if signed else ''}.{digits}f}" if _isnum(x) else "suppressed"


def _count(x: Any) -> str:
    return f"{int(round(x)):,}" if _isnum(x) else "suppressed"


def _share_text(x: Any) -> str:
    return f"{100 * x:.0f}%" if _isnum(x) else "suppressed"


def _pct_text(x: Any) -> str:
    return f"{x:+.0f}%" if _isnum(x) else "suppressed"


def _interval(a: Any, b: Any, pct: bool = False) -> str:
    if not (_isnum(a) and _isnum(b)):
        return "suppressed"
    return f"{a:+.0f}% to {b:+.0f}%" if pct else f"{a:+.3f} to {b:+.3f}"


def compare_programmes(headlines: Mapping[str, Any], programmes: Sequence[str], *,
                       names: Mapping[str, str] | None = None,
                       primary: Mapping[str, str] | None = None,
                       alpha: float = 0.05, checks: str | None = None) -> Comparison:
    """Every programme side by side from a run's headline numbers, led by the primary estimate.

    Parameters
    ----------
    headlines : mapping
        ``reach.report.read_headlines(output_dir)``: sections ``reach_<key>``, ``matching_<key>``,
        ``effects_<key>`` per programme.
    programmes : sequence of str
        Programme keys, in reading order.
    names : mapping, optional
        ``{key: reader label}`` (e.g. from :func:`reach.labels.programme`); default the keys.
    primary : mapping, optional
        ``{"sample": "matched"|"full", "outcome": <outcome>}`` declared in the parameters
        (default matched sample, log exports).
    alpha : float
        Significance level of the intervals.
    checks : str, optional
        The sentence about the disclosure checks, computed from the run's verdicts
        (:func:`reach.report.checks_statement`); without it the summary says which
        report to read instead of claiming that every number passed.

    Returns
    -------
    Comparison

    Notes
    -----
    For an effect :math:`b` in log points the change in exports is :math:`100(e^{b}-1)\\%`
    with interval :math:`100(e^{l}-1)\\%` to :math:`100(e^{u}-1)\\%` (the transformation is
    monotone, so the interval's coverage is kept). The comparison of samples states, from the
    recorded numbers, the users behind each estimate and the ratio of the interval widths
    :math:`(u_o - l_o) / (u_p - l_p)` (other over primary): a wider interval is less precise.
    Nothing is estimated here.

    Examples
    --------
    >>> h = {"effects_tinl": {"outcomes": {"log_exports": {"matched": {"simple_att": 0.18,
    ...      "simple_conf_low": 0.12, "simple_conf_high": 0.24, "detectable": True, "n_treated": 270.0}}}}}
    >>> c = compare_programmes(h, ["tinl"], names={"tinl": "TINL"})
    >>> c.lead[0]
    'TINL: change in exports after first use +20% (95% confidence interval +13% to +27%; +0.180 log points, +0.120 to +0.240), from 270 users on the matched sample: an effect.'
    """
    primary = dict(primary or {"sample": "matched", "outcome": "log_exports"})
    names = {p: (names or {}).get(p, p) for p in programmes}
    p_sample, p_outcome = primary["sample"], primary["outcome"]
    level = int(round(100 * (1 - alpha)))
    src = _Quoted(headlines)
    rows, reach_rows, not_measured = [], [], set()
    for p in programmes:
        rows.extend(_effect_rows(src, p, p_outcome, p_sample))
        reach_rows.extend(_reach_rows(headlines, p, not_measured))
    effects = pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))
    reach = pd.DataFrame(reach_rows, columns=list(REACH_COLUMNS))
    lead: list[str] = []
    differences: list[str] = []
    for p in programmes:
        sentence, numbers = _lead_sentence(src, p, names[p], p_outcome, p_sample, level)
        lead.append(sentence)
        if numbers is not None:
            text = _difference_sentence(src, p, names[p], p_outcome, p_sample, level, numbers)
            if text:
                differences.append(text)
    how_sure: list[str] = []
    for p in programmes:
        how_sure.extend(_how_sure_sentences(headlines, section_name(headlines, "effects", p), names[p], p_outcome,
                                            src.q))
    reach_text = [_reach_sentence(src, p, names[p]) for p in programmes]
    caveats = (
        f"The primary estimate ({labels.sample(p_sample)}, {labels.outcome(p_outcome)}) was fixed in the parameters "
        "before the run; the other samples and outcomes are checks on it, not alternatives to choose from.",
        "Reach shares describe who took part; they are not effects.",
        "The effect estimates assume that, given the covariates, users' exports would have moved like those of "
        "comparable non-users (conditional parallel trends).",
        "Suppressed numbers are reported as suppressed; the verdict of every output is in the run's disclosure "
        "report (disclosure_report.csv).",
    )
    return Comparison(tuple(programmes), names, primary, alpha, tuple(lead), tuple(differences), tuple(reach_text),
                      caveats, effects, reach, src.quoted, src.derived, frozenset(not_measured), checks or "",
                      tuple(how_sure))


class _Quoted:
    """Reads recorded headline numbers and remembers each one quoted (and each derived number's sources).

    05's test checks that every number the summary quotes equals a recorded headline: the record of
    what was read is that check's input.
    """

    def __init__(self, headlines: Mapping[str, Any]):
        self.headlines = headlines
        self.quoted: dict[str, dict[str, Any]] = {}
        self.derived: dict[str, dict[str, Any]] = {}

    def q(self, section: str, path: str) -> Any:
        value = lookup(self.headlines, section, path)
        if value is not None:
            self.quoted.setdefault(section, {})[path] = value
        return value

    def d(self, name: str, value: Any, formula: str, sources: list[str]) -> Any:
        if value is not None:
            self.derived[name] = {"value": value, "formula": formula, "from": sources}
        return value


_EFFECT_KEYS = (("simple_att", "estimate"), ("simple_se", "std_error"), ("simple_conf_low", "conf_low"),
                ("simple_conf_high", "conf_high"), ("n_treated", "n_treated"), ("n_control_all", "n_control_all"),
                ("n_control_min", "n_control_min"), ("detectable", "detectable"),
                ("pretest_p_value", "pretest_p_value"))


def _effect_rows(src: _Quoted, p: str, p_outcome: str, p_sample: str) -> list[dict]:
    """One row per outcome x sample of programme ``p``'s recorded effects (percent change for log outcomes)."""
    sec = section_name(src.headlines, "effects", p)
    rows = []
    for outcome, samples in (lookup(src.headlines, sec, "outcomes") or {}).items():
        for sample, h in (samples or {}).items():
            row = {"programme": p, "outcome": outcome, "sample": sample,
                   "primary": outcome == p_outcome and sample == p_sample}
            for key, col in _EFFECT_KEYS:
                v = (h or {}).get(key)
                if key.startswith("n_control") and outcome == p_outcome and v is not None:
                    src.q(sec, f"outcomes.{outcome}.{sample}.{key}")  # shown in the effect table: quoted
                row[col] = v if v is not None else (None if key == "detectable" else math.nan)
            for source, col in (("estimate", "pct_change"), ("conf_low", "pct_low"), ("conf_high", "pct_high")):
                row[col] = (pct_change(row[source]) if labels.is_log_outcome(outcome) else None)
                row[col] = math.nan if row[col] is None else row[col]
            rows.append(row)
    return rows


def _reach_rows(headlines: Mapping[str, Any], p: str, not_measured: set) -> list[dict]:
    """One row per reach indicator of programme ``p`` (users, comparison); unmeasured ones noted."""
    rsec = section_name(headlines, "reach", p)
    n_firms = lookup(headlines, rsec, "n_firms")
    node = headlines.get(rsec) or {}
    rows = []
    for stem, _ in REACH_INDICATORS:
        key_u = f"{stem}_users" if f"{stem}_users" in node else stem
        u, c = node.get(key_u), node.get(f"{stem}_comparison")
        if key_u not in node:
            not_measured.add((p, stem, "users"))
        if f"{stem}_comparison" not in node:
            not_measured.add((p, stem, "comparison"))
        rows.append({"programme": p, "indicator": stem, "users": math.nan if u is None else u,
                     "comparison": math.nan if c is None else c, "n_firms": math.nan if n_firms is None else n_firms})
    return rows


def _lead_sentence(src: _Quoted, p: str, name: str, p_outcome: str, p_sample: str,
                   level: int) -> tuple[str, tuple | None]:
    """The primary estimate of programme ``p`` in words, and its numbers (None when not quotable)."""
    sec = section_name(src.headlines, "effects", p)
    base = f"outcomes.{p_outcome}"
    if lookup(src.headlines, sec, f"{base}.{p_sample}") is None:
        return (f"{name}: the primary estimate ({labels.sample(p_sample)}, "
                f"{labels.outcome(p_outcome)}) was not recorded for this run."), None
    att = src.q(sec, f"{base}.{p_sample}.simple_att")
    if att is None:
        why = lookup(src.headlines, sec, f"{base}.{p_sample}.withheld") or "too few firms behind it"
        return f"{name}: the primary estimate is suppressed ({why}).", None
    lo = src.q(sec, f"{base}.{p_sample}.simple_conf_low")
    hi = src.q(sec, f"{base}.{p_sample}.simple_conf_high")
    n = src.q(sec, f"{base}.{p_sample}.n_treated")
    det = src.q(sec, f"{base}.{p_sample}.detectable")
    verdict = "an effect" if det else "no detectable effect"
    users = f", from {int(round(n)):,} users" if n is not None else ""
    where = f" on the {labels.sample(p_sample)}" if p_sample == "matched" else f" on {labels.sample(p_sample)}"
    if labels.is_log_outcome(p_outcome) and lo is not None and hi is not None:
        pc = src.d(f"{p}.pct_change", pct_change(att), "100*(exp(b)-1)", [f"{sec}:{base}.{p_sample}.simple_att"])
        pl = src.d(f"{p}.pct_low", pct_change(lo), "100*(exp(l)-1)", [f"{sec}:{base}.{p_sample}.simple_conf_low"])
        ph = src.d(f"{p}.pct_high", pct_change(hi), "100*(exp(u)-1)", [f"{sec}:{base}.{p_sample}.simple_conf_high"])
        text = (f"{name}: change in exports after first use {_signed_pct(pc)} "
                f"({level}% confidence interval {_signed_pct(pl)} to {_signed_pct(ph)}; "
                f"{att:+.3f} log points, {lo:+.3f} to {hi:+.3f}){users}{where}: {verdict}.")
    else:
        text = (f"{name}: effect on {labels.outcome(p_outcome)} {att:+.3f} ({level}% confidence interval "
                f"{_num(lo, signed=True)} to {_num(hi, signed=True)}){users}{where}: {verdict}.")
    return text, (lo, hi, n, det)


def _difference_sentence(src: _Quoted, p: str, name: str, p_outcome: str, p_sample: str, level: int,
                         primary_numbers: tuple) -> str | None:
    """How the other sample's estimate differs from the primary one and why, from the recorded numbers."""
    lo, hi, n, det = primary_numbers
    sec = section_name(src.headlines, "effects", p)
    base = f"outcomes.{p_outcome}"
    other_sample = "full" if p_sample == "matched" else "matched"
    if lookup(src.headlines, sec, f"{base}.{other_sample}.simple_att") is None:
        return None
    o_att = src.q(sec, f"{base}.{other_sample}.simple_att")
    o_lo = src.q(sec, f"{base}.{other_sample}.simple_conf_low")
    o_hi = src.q(sec, f"{base}.{other_sample}.simple_conf_high")
    o_n = src.q(sec, f"{base}.{other_sample}.n_treated")
    o_det = src.q(sec, f"{base}.{other_sample}.detectable")
    text = (f"{name} on {labels.sample(other_sample) if other_sample == 'full' else 'the matched sample'}: "
            f"{o_att:+.3f} ({level}% confidence interval {_num(o_lo, signed=True)} to {_num(o_hi, signed=True)}), "
            f"{'an effect' if o_det else 'no detectable effect'}.")
    why = []
    if o_n is not None and n is not None and int(round(o_n)) != int(round(n)):
        why.append(f"it rests on {int(round(o_n)):,} users instead of {int(round(n)):,}"
                   + (" (users without comparable non-users are left out of the matched sample)"
                      if p_sample == "matched" and o_n > n else ""))
    why.append("its comparison group is " + ("all firms not (yet) using the programme, which differ more from the users"
                                             if other_sample == "full" else
                                             "matched non-users that resemble the users before first use"))
    if all(_isnum(v) for v in (lo, hi, o_lo, o_hi)) and hi > lo:
        ratio = src.d(f"{p}.width_ratio", (o_hi - o_lo) / (hi - lo), "(u_other - l_other) / (u_primary - l_primary)",
                      [f"{sec}:{base}.{other_sample}.simple_conf_low", f"{sec}:{base}.{other_sample}.simple_conf_high",
                       f"{sec}:{base}.{p_sample}.simple_conf_low", f"{sec}:{base}.{p_sample}.simple_conf_high"])
        why.append(f"its interval is {ratio:.1f} times as wide as the primary one"
                   + (" (less precise)" if ratio > 1.05 else " (more precise)" if ratio < 0.95 else ""))
        overlap = o_lo <= hi and lo <= o_hi
        if bool(o_det) != bool(det):
            why.append("the two intervals overlap, so the estimates do not contradict each other: one interval "
                       "includes zero and the other does not" if overlap else
                       "the intervals do not overlap: the choice of comparison group matters; quote the primary estimate")
    return text + " It differs from the primary estimate because " + "; ".join(why) + "."


def _reach_sentence(src: _Quoted, p: str, name: str) -> str:
    """Programme ``p``'s reach in one sentence (firms reached, exporters before, target group)."""
    rsec = section_name(src.headlines, "reach", p)
    if rsec not in src.headlines:
        return f"{name}: the reach notebook did not record results."
    n = src.q(rsec, "n_firms")
    parts = [f"{name} reached {int(round(n)):,} firms" if n is not None else f"{name}: number of firms suppressed"]
    u = src.q(rsec, "share_exporter_before_users")
    c = src.q(rsec, "share_exporter_before_comparison")
    if u is not None:
        parts.append(f"{_pct(u)} of them exported in the year before first use"
                     + (f" (comparison group {_pct(c)})" if c is not None else ""))
    t = src.q(rsec, "share_in_target_group")
    if t is not None:
        parts.append(f"{_pct(t)} were inside the programme's target group")
    return "; ".join(parts) + "."
