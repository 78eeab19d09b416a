r"""How sure are we? The robustness section of the effect notebook (04), one programme at a time.

It puts together, for the run's primary outcome, what :mod:`reach.sensitivity`,
:mod:`reach.power` and :mod:`reach.heterogeneity` compute, and writes the reader's text:

* **sensitivity to parallel trends** (Rambachan & Roth 2023, HonestDiD): robust confidence
  sets for the average effect after first use and for the year of first use under relative
  magnitudes (:math:`\bar M`) and smoothness (:math:`M`), with the breakdown value, for every
  outcome (cheap: a few tenths of a second each on the stub, ``bench/sensitivity.md``). The
  event study is re-estimated on all firms with a **universal base period** (every
  pre-period estimate relative to the year before first use), as HonestDiD requires;
* **power**: the analytic minimum detectable effect of every outcome's estimate on the
  primary sample (from its recorded, disclosure-checked standard error), and the
  design-based placebo (false-positive rate with its binomial band, empirical MDE) for the
  primary outcome;
* **heterogeneity** for the pre-declared subgroups (parameter ``subgroups``) and the
  descriptive **dose split** (1 vs 2+ activities) where the programme has activities.

Everything a notebook shows comes from :class:`HowSure`: Markdown/HTML text built from the
disclosure-checked tables in ``HowSure.checked`` (which the notebook exports through
:class:`reach.disclosure.OutputLog`), a figure drawn from the publishable table, and
:meth:`HowSure.headline`, recorded in the ``effects_<programme>`` headline section (keys
``sensitivity``, ``mde``, ``placebo``, ``heterogeneity``, ``dose``) and quoted by notebook 05
(:func:`reach.summary.compare_programmes`).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from reach import labels

__all__ = ["how_sure", "HowSure", "event_study_universal", "DEFAULT_MBAR", "SUBGROUP_LABELS", "HOWSURE_COLUMNS",
           "SENSITIVITY_TARGETS", "EXTENSIVE"]

#: Mbar grid of the relative-magnitudes analysis (HonestDiD's vignette uses 0.5, 1, 1.5, 2).
DEFAULT_MBAR = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: Targets of the sensitivity analysis: the average effect after first use, and the year of first use.
SENSITIVITY_TARGETS = ("average", 0)
#: The extensive margin: whether a firm exports (0/1). The effect for firms not exporting before first use is
#: asked of it, whatever the primary outcome (:attr:`HowSure.starting`).
EXTENSIVE = "exporter"
#: Reader names of the pre-declared subgroup dimensions and of their levels.
SUBGROUP_LABELS: dict[str, tuple[str, dict[str, str]]] = {
    "target_group": ("inside or outside the programme's target group",
                     {"inside": "inside the target group", "outside": "outside the target group"}),
    "exporter_before": ("exporting in the year before first use",
                        {"exporter": "exporters", "non-exporter": "firms not yet exporting"}),
    "gm_exporter_before": ("exporting to a growth market in the year before first use",
                           {"growth-market exporter": "growth-market exporters",
                            "no growth-market exports": "no growth-market exports"}),
    "size_class": ("size class in the year before first use", {}),
    "n_activities": ("number of activities attended", {"1": "one activity", "2+": "two or more activities"}),
}
#: Columns of :meth:`HowSure.tidy` (one row per recorded number).
HOWSURE_COLUMNS = ("part", "outcome", "item", "value")
_TYPES = ("relative_magnitude", "smoothness")


# --------------------------------------------------------------------------- helpers
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(float(x))


def _num(x: Any, nd: int = 3, signed: bool = False) -> str:
    if not _finite(x):
        return "suppressed"
    return f"{float(x):+.{nd}f}" if signed else f"{float(x):.{nd}f}"


def _count(x: Any) -> str:
    return f"{int(round(float(x))):,}" if _finite(x) else "suppressed"


def _outcome(code: str) -> str:
    try:
        return labels.outcome(code)
    except ValueError:
        return code


def _subgroup_name(dimension: str, level: str) -> str:
    if dimension == "size_class":
        try:
            return labels.size_class(level)
        except ValueError:
            return str(level)
    return SUBGROUP_LABELS.get(dimension, ("", {}))[1].get(str(level), str(level))


def _dimension_name(dimension: str) -> str:
    return SUBGROUP_LABELS.get(dimension, (dimension.replace("_", " "), {}))[0]


def _html_table(df: pd.DataFrame) -> str:
    """A reader table: no index, missing numbers written as 'suppressed'."""
    return df.to_html(index=False, border=0, na_rep="suppressed", escape=True)


class _DisplayProgress:
    """A file-like progress line in the notebook (a display that is updated), instead of stderr.

    tqdm writes ``\\r``-separated states; the last one is shown. Rendered reports then keep one
    plain line ("placebo draws: 40 of 40") and no stderr box.
    """

    def __init__(self, handle):
        self.handle = handle

    def write(self, s: str) -> int:
        text = s.replace("\n", "\r").split("\r")
        last = next((t.strip() for t in reversed(text) if t.strip()), "")
        if last:
            from IPython.display import Markdown

            self.handle.update(Markdown(f"*{last}*"))
        return len(s)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _progress_in_notebook():
    """Inside a notebook kernel, send stderr (tqdm's bar) to an updated display; else leave it alone."""
    from reach._checks import in_notebook_kernel

    if not in_notebook_kernel():
        yield
        return
    from IPython.display import Markdown, display

    handle = display(Markdown("*placebo draws: starting*"), display_id=True)
    with contextlib.redirect_stderr(_DisplayProgress(handle)):
        yield
    # the bar's last state names the outcome's code, and "done" tells a reader nothing: the line goes
    handle.update(Markdown(""))


# --------------------------------------------------------------------------- estimation
def event_study_universal(panel: pd.DataFrame, outcome: str, *, gname: str, tname: str = "year",
                          idname: str = "firm_id", xformla: str | None = None,
                          control_group: str = "notyettreated", est_method: str = "dr", anticipation: int = 0,
                          allow_unbalanced_panel: bool = True, alpha: float = 0.05, varying=None,
                          leave_out: pd.DataFrame | None = None):
    r"""Event study with a universal base period, as input of :func:`reach.sensitivity.honest_did`.

    Parameters
    ----------
    panel, outcome, gname, tname, idname, xformla, control_group, est_method, anticipation, allow_unbalanced_panel, alpha
        As :func:`reach.did.att_gt`.
    varying : reach.did.ATTgtResult, optional
        An ``att_gt`` of the same panel, outcome and settings with the default varying base period
        (notebook 04's full-sample estimate, ``EffectReport.att_gt``). Its post-period cells are the
        same 2x2 comparisons as the universal base's, so only the pre-period cells are estimated.
        When it is not an estimate of the same data and settings it is not used (everything is estimated).
    leave_out : DataFrame, optional
        Group-time cells (``group, time``) the effect tables withhold
        (:attr:`reach.effects.EffectReport.withheld_cells`): left out of the event study too, so that the
        robust sets' "original" interval is not an average they could be recovered from.

    Returns
    -------
    reach.did.AggteResult
        ``aggte(att_gt(..., base_period="universal", bootstrap=False), type="dynamic")``.

    Raises
    ------
    CellsMissing
        When the estimator leaves group-time cells missing (e.g. the overlap guard); its text is
        the reason for a reader.

    Notes
    -----
    With a universal base period every ATT(g, t), before and after first use, compares the
    change from the year :math:`g - 1 - \text{anticipation}`; the pre-period coefficients are
    then the cumulative pre-trend :math:`\delta_{pre}` that Rambachan & Roth's restrictions
    bound (with the default varying base period they would be year-on-year changes).
    Analytic standard errors: HonestDiD works with the covariance of the event-time
    estimates, :math:`\hat\Sigma = \psi'\psi/n^2` from their influence functions.
    With ``allow_unbalanced_panel`` each ATT(g, t) uses the firms observed in both years
    (``unbalanced="pairs"``, as :func:`reach.effects.effect_report`), not R ``did``'s
    repeated-cross-section route: over the long differences of a universal base period that
    route compares different firms in the two years (on the stub: pre-period coefficients of
    about -1 with standard errors above 1, against about 0.0 +/- 0.05 with pairs).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 300
    >>> p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), 5), "year": np.tile(np.arange(2016, 2021), n),
    ...                   "g": np.repeat(rng.choice([0, 2019, 2020], n), 5)})
    >>> p["y"] = rng.normal(size=5 * n)
    >>> es = event_study_universal(p, "y", gname="g", xformla=None)
    >>> es.type, [int(k) for k in es.keys]
    ('dynamic', [-4, -3, -2, -1, 0, 1])
    """
    from reach.did import _universal_from_varying, aggte, att_gt

    kw = {"unbalanced": "pairs"} if allow_unbalanced_panel else {}
    with warnings.catch_warnings():
        # cells left missing are raised below, with the reason for a reader: the warning would reach a
        # rendered report as a stderr box quoting the library's file and the largest propensity score
        warnings.filterwarnings("ignore", message=r"att_gt: \d+ group-time cell", category=UserWarning)
        kw.update(xformla=xformla, control_group=control_group, est_method=est_method, anticipation=anticipation,
                  base_period="universal", bootstrap=False, allow_unbalanced_panel=bool(allow_unbalanced_panel),
                  alp=alpha)
        r = None
        if varying is not None:
            pre = att_gt(panel, outcome, tname, idname, gname, _cells="pre", **kw)
            with contextlib.suppress(ValueError):  # not the same data or settings: estimated in full below
                r = _universal_from_varying(pre, varying)
        if r is None:
            r = att_gt(panel, outcome, tname, idname, gname, **kw)
    if len(r.na_cells):
        raise CellsMissing(r.na_cells)
    if leave_out is not None and len(leave_out):
        from reach.did import _without_cells
        from reach.effects import WITHHELD_CELL

        out = pd.MultiIndex.from_arrays([np.asarray(leave_out["group"], dtype=float),
                                         np.asarray(leave_out["time"], dtype=float)])
        mask = pd.MultiIndex.from_arrays([np.asarray(r.groups, dtype=float), np.asarray(r.times, dtype=float)]).isin(out)
        post = np.asarray(r.groups) <= np.asarray(r.times)
        if (post & ~mask).any():  # as the effect tables: with every post-use cell withheld nothing is left out
            r = _without_cells(r, mask, WITHHELD_CELL)
        return aggte(r, type="dynamic", na_rm=True)
    return aggte(r, type="dynamic")


class CellsMissing(ValueError):
    """The event study behind the sensitivity analysis has group-time cells the estimator left missing.

    HonestDiD bounds a complete event study; which cells are missing changes what each event time
    averages, so the analysis is not run. ``str()`` is the reason for a reader: how many cells,
    the first one and why, naming the overlap guard but never a propensity score (the largest
    score is one firm's value).
    """

    def __init__(self, na_cells: pd.DataFrame):
        first = na_cells.iloc[0]
        why = str(first["reason"])
        why = ("too little overlap between users and comparison firms, a propensity score at or above "
               "the 0.999 guard of R did" if why.startswith("overlap fails") else why.split(":")[0].strip())
        super().__init__(f"{len(na_cells)} group-time effects could not be estimated, e.g. first-use year "
                         f"{int(first['group'])} in {int(first['time'])}: {why}")


def _sensitivity(es, outcome: str, mbar: Sequence[float], alpha: float) -> dict:
    from reach.sensitivity import honest_did

    out = {}
    for stype in _TYPES:
        for target in SENSITIVITY_TARGETS:
            grid = list(mbar) if stype == "relative_magnitude" else None
            out[(stype, str(target))] = honest_did(es, event_time=target, sensitivity_type=stype, grid=grid,
                                                   alpha=alpha)
    return out


def _sensitivity_rows(results: Mapping, outcome: str) -> pd.DataFrame:
    """Every (type, target) robust set of an outcome, one row per grid value plus the usual interval."""
    parts = []
    for (stype, target), res in results.items():
        t = res.tidy(include_original=True).drop(columns=["lb", "ub"])  # the deprecated aliases are not published
        t["excludes_zero"] = t["excludes_zero"].astype(float)
        t.insert(0, "outcome", outcome)
        t.insert(1, "sensitivity_type", stype)
        t.insert(2, "target", target)
        t["estimate"] = res.estimate
        # every event-time estimate enters the robust set: the smallest support of any of them
        t["n_treated"] = int(res.n_treated)
        t["n_control"] = int(res.n_control)
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def _breakdown(pub: pd.DataFrame, stype: str, target: str) -> float | None:
    """Breakdown value read from the publishable table: largest grid value up to which every set excludes zero."""
    rows = pub[(pub["sensitivity_type"] == stype) & (pub["target"] == target) & (pub["method"] != "Original")]
    if rows.empty or rows["conf_low"].isna().any() or rows["conf_high"].isna().any():
        return None  # suppressed (or an empty robust set): nothing to quote
    excl = ((rows["conf_low"] > 0) | (rows["conf_high"] < 0)).to_numpy()
    m = rows["M"].to_numpy(float)
    if not excl[0]:
        return None
    bad = np.flatnonzero(~excl)
    return float(m[(bad[0] - 1) if len(bad) else len(m) - 1])


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True, repr=False)
class HowSure:
    """Sensitivity, power and heterogeneity of one programme's effects (immutable; see :func:`how_sure`).

    Attributes
    ----------
    programme, label : str
        Programme key and reader name.
    outcome, sample : str
        The primary outcome and sample (params ``primary``).
    checked : dict
        ``{name: reach.disclosure.Checked}`` of every table the section exports:
        ``sensitivity`` (all outcomes), ``mde``, ``placebo``, ``heterogeneity``, ``starting``
        (the effect on exporting for firms exporting or not before first use), ``dose``
        (the last four may be missing).
    """

    programme: str
    label: str
    outcome: str
    sample: str
    alpha: float
    power: float
    outcomes: tuple[str, ...]
    sensitivity: Mapping[str, Mapping] = field(repr=False)
    mde: Mapping[str, Any] = field(repr=False)
    placebo: Any = field(repr=False, default=None)
    heterogeneity: Any = field(repr=False, default=None)
    dose: Any = field(repr=False, default=None)
    dose_reason: str = ""
    #: firms not exporting in the year before first use: the effect on exporting (:data:`EXTENSIVE`), when the
    #: primary outcome is another one (then ``heterogeneity`` holds it)
    starting: Any = field(repr=False, default=None)
    checked: Mapping[str, Any] = field(repr=False, default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    min_units: int = 10

    # ------------------------------------------------------------ tables
    def name(self, part: str) -> str:
        """Export name of a part's table or figure, e.g. ``sensitivity_tinl``."""
        return f"{part}_{self.programme}"

    def _sensitivity_withheld(self, outcome: str) -> str:
        """Why an outcome's sensitivity rows are suppressed: too few firms, or the users' own outcome changes."""
        chk = self.checked.get("sensitivity")
        if chk is not None:
            t = chk.cells.loc[chk.cells["outcome"] == outcome, "rule_names"]
            rules = set(",".join(t).split(","))
            if rules & {"all_same", "few_changed"} and not rules & {"min_treated", "min_control"}:
                return "it would reveal individual users' outcomes"
        return "too few firms behind the event study"

    def publishable(self, part: str) -> pd.DataFrame | None:
        chk = self.checked.get(part)
        return None if chk is None else chk.suppress()

    def tidy(self) -> pd.DataFrame:
        """The recorded numbers, one per row (columns :data:`HOWSURE_COLUMNS`)."""
        rows = []

        def walk(part, outcome, node, prefix=""):
            for k, v in node.items():
                key = f"{prefix}{k}"
                if isinstance(v, Mapping):
                    walk(part, outcome, v, key + ".")
                elif isinstance(v, (int, float, np.number)) or v is None:
                    rows.append((part, outcome, key, np.nan if v is None else float(v)))

        h = self.headline()
        for out, node in (h.get("sensitivity") or {}).items():
            walk("sensitivity", out, node)
        for out, node in (h.get("mde") or {}).items():
            walk("mde", out, node)
        for part in ("placebo", "heterogeneity", "starting", "dose"):
            if h.get(part):
                walk(part, EXTENSIVE if part == "starting" else self.outcome, h[part])
        return pd.DataFrame(rows, columns=list(HOWSURE_COLUMNS))

    # ------------------------------------------------------------ headline
    def headline(self) -> dict:
        """Numbers for the ``effects_<programme>`` headline section, read from the publishable tables only.

        Keys: ``sensitivity.<outcome>.<type>.<target>`` (``breakdown_value``, ``lb``/``ub`` at
        Mbar or M = 0 and at the largest grid value, ``sample``), ``mde.<outcome>``
        (``mde``, ``mde_percent``, ``std_error``, ``n_treated``, ``alpha``, ``power``,
        ``sample``), ``placebo``, ``heterogeneity.<dimension>.<subgroup>``, ``starting`` (the
        same for the effect on exporting by exporting before), ``dose``.
        """
        out: dict[str, Any] = {"sensitivity": {}, "mde": {}}
        sens = self.publishable("sensitivity")
        if sens is not None:
            for outcome in self.outcomes:
                rows = sens[sens["outcome"] == outcome]
                if rows.empty:
                    continue
                node: dict[str, Any] = {"sample": "full", "base_period": "universal"}
                for stype in _TYPES:
                    for target in (str(t) for t in SENSITIVITY_TARGETS):
                        r = rows[(rows["sensitivity_type"] == stype) & (rows["target"] == target)
                                 & (rows["method"] != "Original")]
                        if r.empty:
                            continue
                        node.setdefault(stype, {})[target] = {
                            "breakdown_value": _breakdown(sens[sens["outcome"] == outcome], stype, target),
                            "significant_at_zero": (bool(r["excludes_zero"].iloc[0] == 1)
                                                    if _finite(r["excludes_zero"].iloc[0]) else None),
                            "grid_max": float(r["M"].iloc[-1]),
                            "lb_at_zero": _val(r["conf_low"].iloc[0]), "ub_at_zero": _val(r["conf_high"].iloc[0]),
                            "lb_at_max": _val(r["conf_low"].iloc[-1]), "ub_at_max": _val(r["conf_high"].iloc[-1]),
                            "method": str(r["method"].iloc[0]),
                        }
                out["sensitivity"][outcome] = node
        mde = self.publishable("mde")
        if mde is not None:
            for r in mde.itertuples():
                out["mde"][r.yname] = {"mde": _val(r.mde), "mde_percent": _val(r.mde_percent),
                                       "std_error": _val(r.std_error), "n_treated": _val(r.n_treated),
                                       "alpha": float(r.alpha), "power": float(r.power), "sample": self.sample}
        pl = self.publishable("placebo")
        if pl is not None and self.placebo is not None:
            v = pl.set_index("term")
            out["placebo"] = {"outcome": self.outcome, "n_draws": int(self.placebo.n_draws),
                              "false_positive_rate": _val(v.loc["false_positive_rate", "estimate"]),
                              "band_low": _val(v.loc["false_positive_rate", "band_low"]),
                              "band_high": _val(v.loc["false_positive_rate", "band_high"]),
                              "calibrated": bool(self.placebo.calibrated),
                              "analytic_mde": _val(v.loc["analytic_mde", "estimate"]),
                              "empirical_mde": _val(v.loc["empirical_mde_planted", "estimate"]),
                              "empirical_mde_percent": _val(v.loc["empirical_mde_planted", "percent"])}
        for part, res in (("heterogeneity", self.heterogeneity), ("starting", self.starting), ("dose", self.dose)):
            if res is None:
                continue
            p = res.publishable()
            node = {}
            for r in p.itertuples():
                if r.kind == "overall":
                    continue
                key = r.subgroup if r.kind == "subgroup" else f"{r.subgroup} minus {r.reference}"
                node.setdefault(r.dimension, {})[key] = {
                    "estimate": _val(r.estimate), "std_error": _val(r.std_error), "conf_low": _val(r.conf_low),
                    "conf_high": _val(r.conf_high), "n_treated": _val(r.n_treated), "status": r.status}
            out[part] = {"outcome": EXTENSIVE if part == "starting" else self.outcome, **node}
        return out

    # ------------------------------------------------------------ text
    def intro(self) -> str:
        """Markdown: what this section answers and how (no numbers)."""
        lvl = int(round(100 * (1 - self.alpha)))
        return (
            f"Three questions about the effects of {self.label} on {_outcome(self.outcome)} (the primary outcome):\n\n"
            "1. **Would the conclusion survive a violation of parallel trends?** The effect is identified if users' "
            "exports would have moved like those of the comparison firms. Following Rambachan & Roth (2023, the "
            "R package HonestDiD) the section asks how large a violation after first use may be before the "
            f"{lvl}% confidence set includes zero: *relative magnitudes* bound the violation after first use by "
            "Mbar times the largest change of the pre-trend before first use; *smoothness* lets the pre-trend "
            "continue, bending by at most M per year. The **breakdown value** is the largest Mbar at which the "
            "effect is still significant. As HonestDiD recommends, the event study behind it is re-estimated with "
            "a *universal base period* (every year compared with the year before first use) on all firms.\n"
            f"2. **What effect could the design have detected?** The minimum detectable effect at "
            f"{100 * self.power:.0f}% power and {100 * self.alpha:g}% significance, from the standard error "
            f"{_where(self.sample)}; and placebo programmes among firms that never used it, with the real "
            "cohort sizes and the users' profile: with no effect to find, about "
            f"{100 * self.alpha:g}% of them should look significant.\n"
            "3. **For whom does it work?** Effects for subgroups declared before the run, defined in the year before "
            "first use, and the difference between them; subgroups with too few firms are suppressed."
            + (" For the firms not exporting yet, the question is whether more of them start to export: it is "
               "answered with the effect on exporting (share of firms), not on the primary outcome."
               if self.starting is not None else ""))

    def sensitivity_html(self) -> str:
        """Reader table of the robust confidence sets of the primary outcome (publishable numbers)."""
        pub = self.publishable("sensitivity")
        if pub is None:
            return ""
        t = pub[pub["outcome"] == self.outcome]
        rows = []
        for r in t.itertuples():
            what = ("parallel trends exactly (usual interval)" if r.method == "Original" else
                    (f"relative magnitudes, Mbar = {r.M:g}" if r.sensitivity_type == "relative_magnitude"
                     else f"smoothness, M = {r.M:.3g}"))
            target = "average after first use" if r.target == "average" else "year of first use"
            lo, hi = _num(r.conf_low, 3, True), _num(r.conf_high, 3, True)
            lo = "unbounded" if isinstance(r.conf_low, float) and np.isinf(r.conf_low) else lo
            hi = "unbounded" if isinstance(r.conf_high, float) and np.isinf(r.conf_high) else hi
            rows.append({"effect": target, "assumption": what, "lower bound": lo, "upper bound": hi,
                         "excludes zero": ("suppressed" if not _finite(r.excludes_zero)
                                           else "yes" if r.excludes_zero == 1 else "no")})
        return _html_table(pd.DataFrame(rows))

    def sensitivity_text(self) -> str:
        """Markdown: the breakdown values of every outcome in words."""
        h = self.headline().get("sensitivity", {})
        lvl = int(round(100 * (1 - self.alpha)))
        lines = []
        for outcome in self.outcomes:
            node = h.get(outcome)
            if not node:
                why = self.notes.get(f"sensitivity_{outcome}", "")
                why = f": {why}" if why else ""
                lines.append(f"- **{_outcome(outcome)}**: no sensitivity analysis (event study not estimable{why}).")
                continue
            rm = node.get("relative_magnitude", {}).get("average", {})
            sd = node.get("smoothness", {}).get("average", {})
            bv = rm.get("breakdown_value")
            if rm.get("significant_at_zero") is None:
                text = f"suppressed ({self._sensitivity_withheld(outcome)})."
            elif bv == 0:
                g = self.sensitivity[outcome][("relative_magnitude", "average")].grid
                nxt = f" as large as {100 * g[1]:.0f}% of the largest pre-period change" if len(g) > 1 else ""
                text = ("the average effect after first use is significant if parallel trends hold exactly after first "
                        f"use (Mbar = 0), but not once the violation after first use may be{nxt} (breakdown value "
                        "Mbar = 0).")
            elif bv is None:
                text = (f"the average effect after first use is not significant at {lvl}% even when no violation "
                        "after first use is allowed (Mbar = 0): there is no conclusion to break down.")
            else:
                text = (f"the average effect after first use stays significant as long as the violation of parallel "
                        f"trends after first use is at most {100 * bv:.0f}% of the largest pre-period change "
                        f"(breakdown value Mbar = {bv:g}"
                        + (", the largest value tried" if bv >= rm.get("grid_max", np.inf) else "") + ").")
            sbv = sd.get("breakdown_value")
            if sd.get("significant_at_zero") is not None:
                text += (" Under smoothness it is significant only if the pre-trend continues linearly (M = 0)."
                         if sbv == 0 else
                         f" Under smoothness it stays significant up to M = {sbv:.3g} per year." if sbv else
                         " Under smoothness it is not significant even with a linear continuation of the pre-trend.")
            lines.append(f"- **{_outcome(outcome)}**: {text}")
        return ("Breakdown values (relative magnitudes: Mbar; smoothness: M), average effect after first use:\n\n"
                + "\n".join(lines))

    def power_html(self) -> str:
        """Reader table: minimum detectable effect per outcome (publishable numbers)."""
        pub = self.publishable("mde")
        if pub is None or pub.empty:
            return ""
        rows = [{"outcome": _outcome(r.yname), "users": _count(r.n_treated),
                 "standard error": _num(r.std_error), "minimum detectable effect": _num(r.mde),
                 "as change in level": (f"{100 * r.mde_percent:.0f}%" if _finite(r.mde_percent) else "")}
                for r in pub.itertuples()]
        return _html_table(pd.DataFrame(rows))

    def power_text(self) -> str:
        """Markdown: the analytic MDE of the primary outcome and the placebo check, in words."""
        h = self.headline()
        m = h["mde"].get(self.outcome)
        lines = []
        if m is None or m.get("mde") is None:
            lines.append(f"The minimum detectable effect of the primary estimate is not available "
                         f"(estimate suppressed or not estimable).")
        else:
            n = _count(m["n_treated"])
            size = (f"{100 * m['mde_percent']:.0f}% of exports" if labels.is_log_outcome(self.outcome)
                    and m.get("mde_percent") is not None else f"{m['mde']:.3f} ({_outcome(self.outcome)})")
            lines.append(f"With {n} users {_where(self.sample)}, effects smaller than {size} cannot be "
                         f"told apart from zero ({100 * self.power:.0f}% power, {100 * self.alpha:g}% significance).")
        p = h.get("placebo")
        if p is not None:
            fpr = p["false_positive_rate"]
            check = "in line with" if p["calibrated"] else "outside the range expected from"
            emp = (f"{100 * p['empirical_mde_percent']:.0f}% of exports" if p.get("empirical_mde_percent") is not None
                   else _num(p["empirical_mde"]))
            # an effect planted on top of placebo estimates that are off zero is found sooner by the bias, not by
            # the design: the empirical MDE of a miscalibrated placebo is no size the design can detect
            mde = (f"effects smaller than {emp} would have gone undetected in more than "
                   f"{100 * (1 - self.power):.0f}% of them (empirical minimum detectable effect)." if p["calibrated"]
                   else f"the placebo estimates are off zero, so their empirical minimum detectable effect ({emp}) "
                        "measures that bias rather than what the design can detect: read the analytic one in the "
                        "table below.")
            lines.append(
                f"In {p['n_draws']} placebo programmes among firms that never used {self.label} (all firms, "
                f"same cohort sizes), {_num(100 * fpr if fpr is not None else None, 1)}% of the estimates were "
                f"significant at {100 * self.alpha:g}% (band {_num(100 * p['band_low'], 1)}% to "
                f"{_num(100 * p['band_high'], 1)}%), {check} the nominal level{';' if p['calibrated'] else ':'} {mde}"
                + ("" if p["calibrated"] else
                   " Placebo users drawn to resemble the real users (on the matching covariates, which include "
                   "pre-period exports) pick up trends and mean reversion that the comparison on all firms does not "
                   "remove: read the estimate on all firms with care (bench/placebo.md)."))
        elif self.notes.get("placebo"):
            lines.append(self.notes["placebo"])
        return "\n\n".join(lines)

    def placebo_html(self) -> str:
        pub = self.publishable("placebo")
        if pub is None:
            return ""
        names = {"false_positive_rate": "false-positive rate", "mean_placebo_estimate": "mean placebo estimate",
                 "sd_placebo_estimates": "spread of placebo estimates", "median_std_error": "median standard error",
                 "analytic_mde": "minimum detectable effect (analytic)",
                 "empirical_mde_sd": "minimum detectable effect (from the spread)",
                 "empirical_mde_planted": "minimum detectable effect (empirical)"}
        rows = [{"measure": names.get(r.term, r.term), "value": _num(r.estimate),
                 "change in level": f"{100 * r.percent:.0f}%" if _finite(r.percent) else "",
                 "band": (f"{_num(r.band_low)} to {_num(r.band_high)}" if _finite(r.band_low) else "")}
                for r in pub.itertuples()]
        return _html_table(pd.DataFrame(rows))

    def _het_html(self, res) -> str:
        p = res.publishable()
        rows = []
        for r in p.itertuples():
            if r.kind == "overall":
                dim, name = "all users", "all users"
            else:
                dim = _dimension_name(r.dimension)
                name = _subgroup_name(r.dimension, r.subgroup)
                if r.kind == "difference":
                    name = f"{name} minus {_subgroup_name(r.dimension, r.reference)}"
            rows.append({"subgroup dimension": dim, "subgroup": name,
                         "users": _count(r.n_treated) if r.kind != "difference" else "",
                         "effect": _num(r.estimate, 3, True), "standard error": _num(r.std_error),
                         f"{int(round(100 * (1 - self.alpha)))}% interval":
                             (f"{_num(r.conf_low, 3, True)} to {_num(r.conf_high, 3, True)}"
                              if _finite(r.conf_low) else ""),
                         "status": _status(r.status)})
        import re

        from reach.publish import register_numbers

        # subgroup names carry the bounds of their definition ("3-4 employees"): constants of the label
        # table, not data; registered so the audit of rendered numbers knows them
        register_numbers("label", [int(x) for r in rows for x in re.findall(r"\d+", f"{r['subgroup dimension']} "
                                                                                   f"{r['subgroup']}")])
        return _html_table(pd.DataFrame(rows))

    def heterogeneity_html(self) -> str:
        return "" if self.heterogeneity is None else self._het_html(self.heterogeneity)

    def dose_html(self) -> str:
        return "" if self.dose is None else self._het_html(self.dose)

    def _het_sentences(self, res) -> list[str]:
        p = res.publishable()
        lvl = int(round(100 * (1 - self.alpha)))
        out = []
        hidden: dict[str, int] = {}
        for r in p[p["kind"] == "difference"].itertuples():
            a, b = _subgroup_name(r.dimension, r.subgroup), _subgroup_name(r.dimension, r.reference)
            if not _finite(r.estimate):
                hidden[r.dimension] = hidden.get(r.dimension, 0) + 1
                continue
            sig = r.conf_low > 0 or r.conf_high < 0
            verdict = "a detectable difference." if sig else "no detectable difference."
            out.append(f"- **{_dimension_name(r.dimension)}**: the effect for {a} minus that for {b} is "
                       f"{_num(r.estimate, 3, True)} ({lvl}% interval {_num(r.conf_low, 3, True)} to "
                       f"{_num(r.conf_high, 3, True)}): " + verdict)
        if hidden:  # one line for all of them: the reasons are the same list for each
            by = ", ".join(f"{k} by {_dimension_name(dim)}" for dim, k in hidden.items())
            n = sum(hidden.values())
            out.append(f"- **Not publishable**: {by} ({'each rests' if n > 1 else 'it rests'} on a subgroup with "
                       "too few users or comparison firms, one that would reveal individual users' outcomes, or one "
                       "that would reveal such a subgroup).")
        return out

    def heterogeneity_text(self) -> str:
        """Markdown: one sentence per difference, and the direct answer about firms not yet exporting."""
        if self.heterogeneity is None:
            return self.notes.get("heterogeneity", "No subgroups were declared (parameter subgroups is empty).")
        lines = self._het_sentences(self.heterogeneity)
        answer = self._starting_text()
        if answer:
            lines.append(f"\n**Does it help firms that were not exporting yet?** {answer}")
        n_out = self.heterogeneity.exclusions.get("units_not_observed_every_period")
        if _finite(n_out) and n_out > 0:
            lines.append(f"\n{_count(n_out)} firms not observed in every year are left out of the subgroup "
                         "comparisons and the placebo programmes (both need every firm in every year).")
        return ("Subgroup comparisons (each compared with non-users of the same subgroup in the same year):\n\n"
                + "\n".join(lines))

    def _starting_text(self) -> str:
        """The answer for firms not exporting in the year before first use: their effect on exporting."""
        # the effect on exporting; on the primary outcome only for a panel without an exporting column
        res, yname = ((self.starting, EXTENSIVE) if self.starting is not None else (self.heterogeneity, self.outcome))
        p = res.publishable()
        row = p[(p["kind"] == "subgroup") & (p["dimension"] == "exporter_before") & (p["subgroup"] == "non-exporter")]
        if not len(row):
            return ""
        r = row.iloc[0]
        lvl = int(round(100 * (1 - self.alpha)))
        if not _finite(r["estimate"]):
            return f"This cannot be answered here: that subgroup is {_status(r['status'])}."
        sig = r["conf_low"] > 0 or r["conf_high"] < 0
        up, down = (("yes, more of them export.", "no, fewer of them export.") if yname == EXTENSIVE
                    else ("yes, a detectable effect.", "a detectable negative effect."))
        verdict = (up if r["estimate"] > 0 else down) if sig else "no detectable effect for them."
        why = ("" if yname != EXTENSIVE or self.outcome == EXTENSIVE else
               f" The effect on {_outcome(self.outcome)} is not used for them: from no exports, it mixes starting "
               "to export with how much is exported, and its size depends on the unit exports are measured in "
               "(Chen & Roth 2024).")
        return (f"For the firms that did not export in the year before first use ({_count(r['n_treated'])} users), "
                f"the effect on {_outcome(yname)} is {_num(r['estimate'], 3, True)} ({lvl}% interval "
                f"{_num(r['conf_low'], 3, True)} to {_num(r['conf_high'], 3, True)}): {verdict}{why}")

    def dose_text(self) -> str:
        if self.dose is None:
            return self.dose_reason
        return "\n".join(self._het_sentences(self.dose)) + (
            "\n\n*Descriptive, not causal for the dose: firms choose how many activities they attend, and the count "
            "includes activities after first use. Each group's effect is the programme's effect for the firms that "
            "ended up in that group, not what a second activity adds.*")

    def figure(self):
        """Sensitivity plot (relative magnitudes and smoothness, average effect) from the publishable table."""
        import matplotlib.pyplot as plt

        from reach.sensitivity import sensitivity_plot

        pub = self.publishable("sensitivity")
        t = pub[(pub["outcome"] == self.outcome) & (pub["target"] == "average")]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, stype, title in ((axes[0], "relative_magnitude", "relative magnitudes (Mbar)"),
                                 (axes[1], "smoothness", "smoothness (M)")):
            res = self.sensitivity[self.outcome][(stype, "average")]
            sensitivity_plot(res, ax=ax, data=t[t["sensitivity_type"] == stype],
                             title=f"{title}: average effect after first use")
            ax.set_ylabel(f"{int(round(100 * (1 - self.alpha)))}% confidence set, {_outcome(self.outcome)}")
        fig.suptitle(f"{self.label}: sensitivity to violations of parallel trends", fontsize=10)
        fig.tight_layout()
        from reach.report import tidy_legends

        tidy_legends(fig)  # a legend never over an interval
        return fig

    def summary(self) -> str:
        h = self.headline()
        return "\n".join([f"How sure are we? {self.label}, {self.outcome} ({self.sample})",
                          self.sensitivity_text(), self.power_text()]
                         + ([self.heterogeneity_text()] if h.get("heterogeneity") else []))

    def _repr_markdown_(self) -> str:
        return "\n\n".join([self.sensitivity_text(), self.power_text()])

    def __repr__(self) -> str:
        return f"HowSure(programme={self.programme!r}, outcome={self.outcome!r}, sample={self.sample!r})"


def _where(sample: str) -> str:
    return "on the matched sample" if sample == "matched" else "on all firms"


def _val(x: Any) -> float | None:
    return float(x) if _finite(x) else None


def _status(s: str) -> str:
    from reach.heterogeneity import REVEALS_USERS

    s = str(s)
    if s == "estimated":
        return "estimated"
    return (s.replace("min_treated", "minimum").replace("post-treatment ATT(g,t)", "year after first use")
            .replace("suppressed (secondary): protects a suppressed subgroup",
                     "suppressed (it would reveal another, suppressed subgroup)")
            .replace("suppressed (secondary)", "suppressed (would reveal a suppressed subgroup)")
            .replace(REVEALS_USERS, "suppressed (" + REVEALS_USERS.removeprefix("suppressed: ") + ")"))


# --------------------------------------------------------------------------- the builder
def how_sure(panel: pd.DataFrame, reports: Mapping, *, programme: str, label: str | None = None,
             primary: Mapping[str, str], outcomes: Sequence[str], xformla: str | None = None,
             control_group: str = "notyettreated", est_method: str = "dr", anticipation: int = 0,
             allow_unbalanced_panel: bool = True, alpha: float = 0.05, power: float = 0.8,
             sensitivity_mbar: Sequence[float] = DEFAULT_MBAR, placebo_draws: int = 100,
             placebo_covariates: Sequence[str] | None = None, subgroups: Mapping[str, Any] | None = None,
             target_group: Mapping | None = None, firms: pd.DataFrame | None = None, rules=None, seed: int = 0,
             progress: bool = True) -> HowSure:
    r"""Sensitivity, power and heterogeneity for one programme (the "How sure are we?" section of 04).

    Parameters
    ----------
    panel : DataFrame
        The effect notebook's estimation panel (analysis sample, users without a year before
        first use removed).
    reports : mapping
        ``{(outcome, sample): reach.effects.EffectReport}`` of notebook 04; the MDE uses each
        outcome's recorded (publishable) standard error on the primary sample. The sensitivity
        analysis takes the post-period cells of the ``"full"`` sample's estimate when it is an
        estimate of ``panel`` with the same settings (checked; see :func:`event_study_universal`).
    programme, label : str
        Programme key (``g_<programme>`` is the cohort column) and reader name.
    primary : dict
        ``{"sample", "outcome"}`` (params ``primary``); placebo and heterogeneity use its outcome.
    outcomes : sequence of str
        Outcomes of the sensitivity analysis and the MDE table.
    xformla, control_group, est_method, anticipation, allow_unbalanced_panel, alpha
        The run's estimator settings (:func:`event_study_universal`). The placebo and the
        subgroups use the firms observed in every year (their functions count the others).
    power : float
        Power of the minimum detectable effects (params ``power``).
    sensitivity_mbar : sequence of float
        Mbar grid of relative magnitudes (params ``sensitivity_mbar``); smoothness uses
        HonestDiD's default M grid.
    placebo_draws : int
        Placebo programmes drawn (params ``placebo_draws``; 0 skips the placebo).
    placebo_covariates : sequence of str, optional
        Propensity covariates giving the pseudo-users the users' profile (params ``covariates``).
    subgroups : dict, optional
        Pre-declared subgroups (params ``subgroups``; ``{}`` skips); see
        :func:`reach.heterogeneity.heterogeneity`.
    target_group : dict, optional
        Bounds of the ``target_group`` subgroup rule (params ``target_group``).
    firms : DataFrame, optional
        ``reach.panel.read_link(work_dir).firms`` (``programme, be_id, n_activities``) for the dose split.
    rules : reach.disclosure.Rules, optional
    seed : int
    progress : bool
        Progress bar over the placebo draws.

    Returns
    -------
    HowSure

    Notes
    -----
    Sensitivity: :func:`reach.sensitivity.honest_did` on :func:`event_study_universal` of
    every outcome, relative magnitudes (C-LF) on the Mbar grid and smoothness (FLCI), for
    :math:`\theta = \bar\tau` (average over event times :math:`e \ge 0`) and :math:`\tau_0`.
    MDE: :math:`(z_{1-\alpha/2} + z_\pi)\,SE` (:func:`reach.power.analytic_mde`) with the
    publishable SE of the primary sample's simple ATT. Placebo: :func:`reach.power.placebo`
    on all firms. A failure of one part (e.g. a subgroup rule needing a column the panel does
    not have) is an error, not a silent omission; parts that cannot apply (no activities, no
    never-users for the placebo) are skipped with the reason in the text.

    Examples
    --------
    A planted effect of 1 with parallel trends (no reports: no MDE; no placebo, no subgroups):

    >>> rng = np.random.default_rng(0)
    >>> n = 400
    >>> p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), 6), "year": np.tile(np.arange(2016, 2022), n),
    ...                   "g_x": np.repeat(rng.choice([0, 0, 2019, 2020], n), 6)})
    >>> p["y"] = rng.normal(size=6 * n) + 1.0 * ((p.year >= p.g_x) & (p.g_x > 0))
    >>> res = how_sure(p, {}, programme="x", primary={"sample": "full", "outcome": "y"}, outcomes=["y"],
    ...                xformla=None, control_group="nevertreated", placebo_draws=0, subgroups={}, progress=False)
    >>> sorted(res.checked), sorted(res.headline())
    (['sensitivity'], ['mde', 'sensitivity'])
    >>> res.headline()["sensitivity"]["y"]["relative_magnitude"]["average"]["significant_at_zero"]
    True
    """
    from reach.disclosure import Rules, check_estimates
    from reach.effects import users_changed_after_use
    from reach.heterogeneity import dose_split, heterogeneity
    from reach.power import analytic_mde, placebo

    if not isinstance(primary, Mapping) or set(primary) != {"sample", "outcome"}:
        raise ValueError(f"primary must be a dict with keys 'sample' and 'outcome'; got {primary!r}")
    if primary["outcome"] not in outcomes:
        raise ValueError(f"primary outcome {primary['outcome']!r} is not among the outcomes {list(outcomes)}")
    if isinstance(power, bool) or not 0 < float(power) < 1:
        raise ValueError(f"power must be a number strictly between 0 and 1; got {power!r}")
    if isinstance(placebo_draws, bool) or int(placebo_draws) != placebo_draws or placebo_draws < 0:
        raise ValueError(f"placebo_draws must be a whole number >= 0; got {placebo_draws!r}")
    rules = rules if isinstance(rules, Rules) or rules is None else Rules(**rules)
    min_units = int(getattr(rules, "min_units", 10) or 10)
    gname = f"g_{programme}"
    label = label or programme
    outcome, sample = primary["outcome"], primary["sample"]
    notes: dict[str, str] = {}
    checked: dict[str, Any] = {}

    # 1. sensitivity for every outcome (event study with a universal base period, all firms)
    sens: dict[str, dict] = {}
    for y in outcomes:
        # the full-sample report's post-period cells are the universal event study's: only its pre cells are new
        full_rep = reports.get((y, "full"))
        varying = getattr(full_rep, "att_gt", None) if getattr(full_rep, "estimable", False) else None
        try:
            es = event_study_universal(panel, y, gname=gname, xformla=xformla, control_group=control_group,
                                       est_method=est_method, anticipation=anticipation,
                                       allow_unbalanced_panel=allow_unbalanced_panel, alpha=alpha, varying=varying,
                                       leave_out=getattr(full_rep, "withheld_cells", None))
            sens[y] = _sensitivity(es, y, sensitivity_mbar, alpha)
        except CellsMissing as e:  # a reason for the reader: the text quotes it
            notes[f"sensitivity_{y}"] = str(e)
        except ValueError as e:  # e.g. no pre-period or gaps in event times: kept, not hidden
            notes[f"sensitivity_error_{y}"] = str(e)
    if sens:
        full = pd.concat([_sensitivity_rows(r, y) for y, r in sens.items()], ignore_index=True)
        # the robust sets are intervals around the event study's post-use estimates: withheld, as the effect
        # tables' rows, when those would reveal the users' own outcome changes
        changed = {y: users_changed_after_use(panel, y, gname=gname, anticipation=anticipation) for y in sens}
        n_changed = [changed[y]["average" if tg == "average" else 0] for y, tg in zip(full["outcome"], full["target"])]
        checked["sensitivity"] = check_estimates(full, f"sensitivity_{programme}", n_treated="n_treated",
                                                 n_control="n_control", rules=rules,
                                                 columns=["excludes_zero", "estimate", "conf_low", "conf_high"],
                                                 n_changed=n_changed)

    # 2. analytic MDE per outcome from the recorded (publishable) SE on the primary sample
    mdes = {}
    for y in outcomes:
        rep = reports.get((y, sample))
        if rep is None or not getattr(rep, "estimable", False):
            continue
        h = rep.headline()
        se, n = h.get("simple_se"), h.get("n_treated")
        if not _finite(se) or not _finite(n):
            continue
        mdes[y] = analytic_mde(float(se), alpha=alpha, power=power, yname=y, n_treated=int(round(n)))
    if mdes:
        t = pd.concat([m.tidy() for m in mdes.values()], ignore_index=True)
        checked["mde"] = check_estimates(t, f"mde_{programme}", n_treated="n_treated", n_control=None, rules=rules,
                                         columns=["estimate", "std_error", "mde", "mde_percent"])

    # 3. design-based placebo for the primary outcome
    pl = None
    if placebo_draws > 0:
        covs = [c for c in (placebo_covariates or []) if c in panel.columns]
        try:
            with (_progress_in_notebook() if progress else contextlib.nullcontext()):
                pl = placebo(panel, outcome, gname=gname, covariates=covs or None, xformla=xformla,
                             control_group=control_group, est_method=est_method, anticipation=anticipation,
                             n_draws=int(placebo_draws), alpha=alpha, power=power, seed=seed, progress=progress)
            checked["placebo"] = pl.checked(rules, name=f"placebo_{programme}")
        except ValueError as e:  # e.g. too few never-users to draw the cohorts from
            notes["placebo"] = f"The placebo check could not run: {e}"
    else:
        notes["placebo"] = "The placebo check was not run (no placebo draws requested)."

    # 4. heterogeneity for the pre-declared subgroups
    het = None
    subgroups = {} if subgroups is None else dict(subgroups)
    if subgroups:
        het = heterogeneity(panel, outcome, subgroups, gname=gname, xformla=xformla, control_group=control_group,
                            est_method=est_method, anticipation=anticipation, alpha=alpha, rules=rules,
                            target_group=target_group)
        checked["heterogeneity"] = het.checked(name=f"heterogeneity_{programme}")
    # "does it help firms not exporting yet?" is a question of starting to export: asked of a log outcome, an
    # effect from zero exports depends on the unit exports are measured in (Chen & Roth 2024)
    starting = None
    if "exporter_before" in subgroups and outcome != EXTENSIVE and EXTENSIVE in panel.columns:
        starting = heterogeneity(panel, EXTENSIVE, {"exporter_before": subgroups["exporter_before"]}, gname=gname,
                                 xformla=xformla, control_group=control_group, est_method=est_method,
                                 anticipation=anticipation, alpha=alpha, rules=rules, target_group=target_group)
        checked["starting"] = starting.checked(name=f"starting_{programme}")

    # 5. dose split where the programme has activities (counts > 1 exist)
    dose, dose_reason = None, ""
    f = None if firms is None else firms[firms["programme"] == programme]
    if f is None or f.empty or "n_activities" not in f:
        dose_reason = f"{label} has no activity list: no split by number of activities."
    elif (pd.to_numeric(f["n_activities"], errors="coerce") >= 2).sum() == 0:
        dose_reason = f"Every user of {label} has one activity on record: no split by number of activities."
    else:
        dose = dose_split(panel, outcome, f, programme=programme, gname=gname, xformla=xformla,
                          control_group=control_group, est_method=est_method, anticipation=anticipation,
                          alpha=alpha, rules=rules)
        checked["dose"] = dose.checked(name=f"dose_{programme}")

    return HowSure(programme=programme, label=label, outcome=outcome, sample=sample, alpha=float(alpha),
                   power=float(power), outcomes=tuple(y for y in outcomes), sensitivity=sens, mde=mdes, placebo=pl,
                   heterogeneity=het, dose=dose, dose_reason=dose_reason, checked=checked, notes=notes,
                   min_units=min_units, starting=starting)
