"""For whom does it work? Effects for pre-declared subgroups, their differences, and a dose split.

The evaluation's question "does it help firms that were not exporting yet?" is a
comparison of two subgroup effects. Subgroups are declared before estimation (a
parameter) and defined from **pre-treatment information only**: a user's values in its
reference year :math:`b = g - 1 - \\text{anticipation}` (the year before first use).
By default (``comparison="same_subgroup"``) comparison firms are the never-users that
belong to the same subgroup in the same reference year, cohort by cohort: a subgroup
defined by a pre-period outcome (exporting in g - 1) then compares like with like, and
mean reversion of that outcome does not masquerade as an effect. With
``comparison="all"`` each subgroup's users are compared with all never-users of the
analysis sample. Covariates enter through ``xformla`` in both.

Per subgroup :func:`reach.did.att_gt` + :func:`reach.did.aggte` (``"simple"``) give the
ATT; the difference between two subgroups gets its standard error from the stacked
influence functions (shared comparison firms make the two estimates correlated; they are
independent only when the comparison sets differ). A subgroup with fewer users than the disclosure rules' ``min_treated`` is
reported as suppressed, not estimated and not an error.

:func:`dose_split` splits users by the number of programme activities they attended
(1 vs 2+): a descriptive comparison, not the causal effect of the dose.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from reach._checks import check_choice, require_columns
from reach._display import ESTIMATE_CORE, ResultDisplay
from reach.did import CONTROL_GROUPS, EST_METHODS, NoPostTreatmentCells, _UnitArrays, parse_xformla
from reach.power import _check_level, _Fit, _fit_simple_units, _fmt, RowLookup, balanced_rows, reference_values

__all__ = [
    "heterogeneity",
    "dose_split",
    "classify_users",
    "HeterogeneityResult",
    "SUBGROUP_RULES",
    "DEFAULT_SUBGROUPS",
    "DEFAULT_TARGET_GROUP",
    "HET_COLUMNS",
    "DOSE_NOTE",
    "COMPARISONS",
]

#: Named subgroup rules (any other string is a panel column whose reference-year value is the label).
SUBGROUP_RULES = ("target_group", "exporter_before", "gm_exporter_before")
#: The evaluation's pre-declared subgroups.
DEFAULT_SUBGROUPS = {"target_group": "target_group", "exporter_before": "exporter_before",
                     "size_class": "size_class", "gm_exporter_before": "gm_exporter_before"}
#: NLiB's target group (params ``target_group``): 10-250 employees and 1-5 export destinations.
DEFAULT_TARGET_GROUP = {"min_employees": 10, "max_employees": 250, "min_destinations": 1, "max_destinations": 5}
#: Comparison firms of a subgroup: never-users in the same subgroup in the cohort's reference year, or all never-users.
COMPARISONS = ("same_subgroup", "all")
#: Columns of :meth:`HeterogeneityResult.tidy`.
#: The estimate core (``reach._display.ESTIMATE_CORE``; ``term`` names the row, e.g.
#: ``"size_class: 10-49"`` or ``"size_class: 50+ - 10-49"``), then the row's dimension, subgroup,
#: reference level (differences), kind and status.
HET_COLUMNS = (*ESTIMATE_CORE, "dimension", "subgroup", "reference", "kind", "status")
#: Label of the dose split.
DOSE_NOTE = ("Descriptive dose split, not causal for the dose: firms choose how many activities they attend, "
             "and the count includes activities after first use. Each group's estimate is the effect of the "
             "programme for the firms that ended up in that group.")

_LABELS = {
    "target_group": ("outside", "inside"),
    "exporter_before": ("non-exporter", "exporter"),
    "gm_exporter_before": ("no growth-market exports", "growth-market exporter"),
}
UNKNOWN = "unknown (no register row in the reference year)"


def _rule_columns(rule: Any) -> list[str]:
    if rule == "target_group":
        return ["employees", "n_dest"]
    if rule == "exporter_before":
        return ["exports"]
    if rule == "gm_exporter_before":
        return ["exports_gm"]
    if isinstance(rule, Mapping):
        return [rule["column"]]
    return [rule]


def _check_rule(dim: str, rule: Any) -> None:
    if isinstance(rule, str):
        return
    if isinstance(rule, Mapping) and "column" in rule and set(rule) <= {"column", "threshold", "labels"}:
        if "labels" in rule and len(rule["labels"]) != 2:
            raise ValueError(f"subgroups[{dim!r}]: labels must be two strings (at or below, above the threshold); got {rule['labels']!r}")
        return
    raise ValueError(
        f"subgroups[{dim!r}]: a rule is one of {list(SUBGROUP_RULES)}, a panel column name, or "
        f"{{'column': name, 'threshold': x, 'labels': [at_or_below, above]}}; got {rule!r}")


def _labels(rule: Any, v: pd.DataFrame, target_group: Mapping) -> tuple[np.ndarray, list[str]]:
    """Labels of users from their reference-year values, and the level order (reference level first)."""
    def two(flag: np.ndarray, names: Sequence[str], known: np.ndarray) -> tuple[np.ndarray, list[str]]:
        out = np.where(flag, names[1], names[0]).astype(object)
        out[~known] = UNKNOWN
        return out, list(names)

    if rule == "target_group":
        e, nd = v["employees"].to_numpy(dtype=float), v["n_dest"].to_numpy(dtype=float)
        tg = {**DEFAULT_TARGET_GROUP, **dict(target_group or {})}
        inside = ((e >= tg["min_employees"]) & (e <= tg["max_employees"])
                  & (nd >= tg["min_destinations"]) & (nd <= tg["max_destinations"]))
        return two(inside, _LABELS[rule], np.isfinite(e) & np.isfinite(nd))
    if rule in ("exporter_before", "gm_exporter_before"):
        x = v[_rule_columns(rule)[0]].to_numpy(dtype=float)
        return two(x > 0, _LABELS[rule], np.isfinite(x))
    if isinstance(rule, Mapping) and "threshold" in rule:
        x = pd.to_numeric(v[rule["column"]], errors="coerce").to_numpy(dtype=float)
        thr = float(rule["threshold"])
        names = list(rule.get("labels", (f"{rule['column']} <= {thr:g}", f"{rule['column']} > {thr:g}")))
        return two(x > thr, names, np.isfinite(x))
    col = rule["column"] if isinstance(rule, Mapping) else rule
    s = v[col]
    known = s.notna().to_numpy()
    out = s.astype(str).to_numpy(dtype=object)
    out[~known] = UNKNOWN
    return out, sorted(pd.unique(out[known]).tolist())


def classify_users(panel: pd.DataFrame, subgroups: Mapping[str, Any] | None = None, *, gname: str,
                   tname: str = "year", idname: str = "firm_id", anticipation: int = 0,
                   target_group: Mapping | None = None) -> pd.DataFrame:
    """Subgroup label of every user from its values in the reference year ``g - 1 - anticipation``.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel (CONTRACTS.md section 4).
    subgroups : dict, optional
        ``{dimension: rule}``; default :data:`DEFAULT_SUBGROUPS`. A rule is
        ``"target_group"`` (``target_group`` bounds on ``employees`` and ``n_dest``),
        ``"exporter_before"`` (``exports > 0``), ``"gm_exporter_before"`` (``exports_gm > 0``),
        any other panel column (its value is the label, e.g. ``"size_class"``), or
        ``{"column": c, "threshold": x, "labels": [at_or_below, above]}``.
    gname, tname, idname : str
    anticipation : int
    target_group : dict, optional
        Bounds ``min_employees, max_employees, min_destinations, max_destinations``
        (default :data:`DEFAULT_TARGET_GROUP`, as params ``target_group``).

    Returns
    -------
    DataFrame
        One row per user: ``idname``, ``gname``, ``ref_year`` and one label column per
        dimension; a user without a register row in its reference year is labelled
        ``unknown (...)`` (counted, never dropped silently).

    Examples
    --------
    >>> p = pd.DataFrame({"firm_id": [1, 1, 2, 2, 3, 3], "year": [2018, 2019] * 3, "g": [2019, 2019, 2019, 2019, 0, 0],
    ...                   "exports": [0.0, 5.0, 3.0, 3.0, 1.0, 1.0]})
    >>> classify_users(p, {"exporter_before": "exporter_before"}, gname="g")["exporter_before"].tolist()
    ['non-exporter', 'exporter']
    """
    subgroups = dict(DEFAULT_SUBGROUPS if subgroups is None else subgroups)
    if not subgroups:
        raise ValueError("subgroups: declare at least one subgroup dimension, e.g. {'exporter_before': 'exporter_before'}")
    for dim, rule in subgroups.items():
        _check_rule(dim, rule)
    cols = sorted({c for r in subgroups.values() for c in _rule_columns(r)})
    require_columns(panel, [gname, tname, idname, *cols], "panel")
    ug = panel.groupby(idname, sort=True)[gname].first()
    users = ug[ug > 0]
    ids = users.index.to_numpy()
    ref = users.to_numpy(dtype=np.int64) - 1 - int(anticipation)
    vals = reference_values(panel, ids, ref, cols, tname=tname, idname=idname)
    out = pd.DataFrame({idname: ids, gname: users.to_numpy(), "ref_year": ref})
    for dim, rule in subgroups.items():
        out[dim] = _labels(rule, vals, target_group or {})[0]
    return out


def _level_order(rule: Any, labels: np.ndarray, order: Sequence[str] | None) -> list[str]:
    present = [x for x in pd.unique(labels) if x != UNKNOWN]
    if order:
        return [x for x in order if x in present] + [x for x in present if x not in order]
    if isinstance(rule, str) and rule in _LABELS:
        return [x for x in _LABELS[rule] if x in present]
    if isinstance(rule, Mapping) and "threshold" in rule:
        first = rule.get("labels", (None, None))[0]
        return sorted(present, key=lambda x: (x != first, x)) if first else sorted(present)
    return sorted(present)


@dataclass(frozen=True, eq=False, repr=False)
class HeterogeneityResult(ResultDisplay):
    """Subgroup effects and their differences (immutable; see :func:`heterogeneity`).

    ``tidy()`` is microdata-derived and unchecked; ``checked()`` / ``publishable()`` apply
    the disclosure rules (a row resting on fewer than ``min_treated`` users or
    ``min_control`` comparison firms is blanked, and so is one whose users' outcome changes
    are all alike but for fewer than ``min_treated`` of them: status :data:`REVEALS_USERS`),
    and ``summary()`` and the notebook display show only the publishable copy.
    """

    yname: str
    alpha: float
    rows: pd.DataFrame = field(repr=False)
    rules: Any = field(repr=False, default=None)
    note: str = ""
    exclusions: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    #: per row, users off their cell's common outcome change (NaN: no such rule); for the check, not published
    n_changed: tuple = field(default=(), repr=False)

    def tidy(self) -> pd.DataFrame:
        """All rows, columns :data:`HET_COLUMNS` (``kind``: overall, subgroup, difference). Unchecked."""
        return self.rows.copy()

    def checked(self, name: str | None = None):
        """The table checked with :func:`reach.disclosure.check_estimates` (rules of the run)."""
        from reach.disclosure import check_estimates

        return check_estimates(self.rows, name=name or f"heterogeneity_{self.yname}", rules=self.rules,
                               columns=["estimate", "std_error", "statistic", "conf_low", "conf_high", "p_value"],
                               n_changed=self.n_changed if len(self.n_changed) == len(self.rows) else None)

    def publishable(self) -> pd.DataFrame:
        """Publishable copy: suppressed rows' numbers are NaN, and their status says so."""
        chk = self.checked()
        pub = chk.suppress()
        blanked = (chk.cells["verdict"] == "suppress").to_numpy() & pub["status"].str.startswith("estimated").to_numpy()
        pub.loc[blanked, "status"] = "suppressed: disclosure rules (treated or comparison firms)"
        return pub

    def difference(self, dimension: str, subgroup: str | None = None) -> pd.Series:
        """The publishable difference row of ``dimension`` (``subgroup`` minus the reference level)."""
        p = self.publishable()
        sel = (p["kind"] == "difference") & (p["dimension"] == dimension)
        if subgroup is not None:
            sel &= p["subgroup"] == subgroup
        if not sel.any():
            known = sorted(p.loc[p["kind"] == "difference", "dimension"].unique())
            raise ValueError(f"no difference for dimension {dimension!r} (subgroup {subgroup!r}); dimensions with differences: {known}")
        return p.loc[sel].iloc[0]

    def narrative(self) -> str:
        """One sentence per difference, from the publishable numbers (Markdown)."""
        p = self.publishable()
        lvl = int(round(100 * (1 - self.alpha)))
        out = []
        for r in p[p["kind"] == "difference"].itertuples():
            if not np.isfinite(r.estimate):
                out.append(f"- **{r.dimension}**: {r.subgroup} vs {r.reference}: not publishable ({r.status}).")
                continue
            sig = r.conf_low > 0 or r.conf_high < 0
            out.append(f"- **{r.dimension}**: the effect for {r.subgroup} firms minus that for {r.reference} firms is "
                       f"{_fmt(r.estimate, 3)} ({lvl}% CI {_fmt(r.conf_low, 3)} to {_fmt(r.conf_high, 3)}): "
                       + ("a detectable difference." if sig else "no detectable difference."))
        text = "\n".join(out)
        return text + (f"\n\n*{self.note}*" if self.note else "")

    def summary(self) -> str:
        p = self.publishable()
        lines = [f"Subgroup effects (simple ATT) on {self.yname}; {int(round(100 * (1 - self.alpha)))}% CI; "
                 f"estimator {self.settings}"]
        for r in p.itertuples():
            name = r.subgroup if r.kind != "difference" else f"{r.subgroup} - {r.reference}"
            lines.append(f" {r.dimension:<20} {name:<42} {_fmt(r.estimate):>8} ({_fmt(r.std_error)}) "
                         f"[{_fmt(r.conf_low)}, {_fmt(r.conf_high)}]  {r.status}")
        if self.note:
            lines.append("Note: " + self.note)
        if self.exclusions:
            lines.append("Excluded: " + ", ".join(f"{k} = {v}" for k, v in self.exclusions.items()))
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        p = self.publishable()
        rows = ["| dimension | subgroup | kind | estimate | std_error | conf_low | conf_high | status |",
                "|---|---|---|---|---|---|---|---|"]
        for r in p.itertuples():
            name = r.subgroup if r.kind != "difference" else f"{r.subgroup} - {r.reference}"
            rows.append(f"| {r.dimension} | {name} | {r.kind} | {_fmt(r.estimate)} | {_fmt(r.std_error)} | "
                        f"{_fmt(r.conf_low)} | {_fmt(r.conf_high)} | {r.status} |")
        return (f"**Subgroup effects on `{self.yname}`**\n\n" + "\n".join(rows)
                + (f"\n\n*{self.note}*" if self.note else ""))

    def __repr__(self) -> str:  # never shows unchecked numbers
        dims = sorted(self.rows.loc[self.rows["kind"] != "overall", "dimension"].unique())
        return f"HeterogeneityResult(yname={self.yname!r}, dimensions={dims})"


def _rules(rules):
    """Rules, a mapping such as params ``disclosure``, or None (defaults)."""
    from reach.disclosure import Rules

    if rules is None:
        return Rules()
    if isinstance(rules, Rules):
        return rules
    if isinstance(rules, Mapping):
        return Rules(**dict(rules))
    raise TypeError(f"rules must be a reach.disclosure.Rules or a mapping; got {type(rules).__name__}")


def _term(dimension: str, subgroup: str, reference: str, kind: str) -> str:
    if kind == "overall":
        return subgroup
    return f"{dimension}: {subgroup}" + (f" - {reference}" if kind == "difference" else "")


def _row(dimension, subgroup, reference, kind, est, se, n_t, n_c, status, z, n_changed=np.nan) -> dict:
    """A table row; ``_n_changed`` (users off their cell's common outcome change, NaN: no such rule) is kept
    for the disclosure check, not published."""
    ok = np.isfinite(est) and np.isfinite(se) and se > 0
    return {"term": _term(dimension, subgroup, reference, kind), "dimension": dimension, "subgroup": subgroup,
            "reference": reference, "kind": kind, "estimate": est, "std_error": se,
            "statistic": est / se if ok else np.nan,
            "conf_low": est - z * se if ok else np.nan, "conf_high": est + z * se if ok else np.nan,
            "p_value": float(2 * stats.norm.sf(abs(est / se))) if ok else np.nan,
            "n_treated": float(n_t), "n_control": float(n_c), "status": status,
            "_n_changed": float(n_changed) if n_changed is not None and n_changed >= 0 else np.nan}


def _stacked(fits: list, signs, universe: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, sum_f sign_f phi_f)`` over the union of the fits' units, sorted by id.

    ``universe``: the sorted ids of every unit the fits can hold; the union is then marked in it
    instead of sorting the concatenated ids (millions of comparison firms per fit at register scale).
    The sums are the same, added in the same order.
    """
    if universe is None:
        ids = np.unique(np.concatenate([f.ids for f in fits]))
        phi = np.zeros(len(ids))
        for f, s in zip(fits, signs):
            phi[np.searchsorted(ids, f.ids)] += s * f.phi
        return ids, phi
    phi = np.zeros(len(universe))
    member = np.zeros(len(universe), dtype=bool)
    for f, s in zip(fits, signs):
        pos = np.searchsorted(universe, f.ids)
        phi[pos] += s * f.phi
        member[pos] = True
    return universe[member], phi[member]


def _diff(a, b, universe: np.ndarray | None = None) -> tuple[float, float]:
    """Difference a - b of two fits and its standard error from the stacked influence functions.

    Units present in both samples (shared comparison firms) contribute
    :math:`\\phi_{a,i} - \\phi_{b,i}`; the others one term each.
    """
    _, d = _stacked([a, b], [1.0, -1.0], universe)
    return a.att - b.att, float(math.sqrt(np.einsum("i,i->", d, d)))


def _combine(parts: list, weights: np.ndarray, universe: np.ndarray | None = None) -> _Fit:
    """Fixed-weight combination sum_c w_c theta_c of fits on overlapping samples (influence functions stacked)."""
    ids, phi = _stacked(parts, weights, universe)
    return _Fit(att=float(sum(w * f.att for f, w in zip(parts, weights))), se=float(math.sqrt(np.einsum("i,i->", phi, phi))),
                n_treated=int(sum(f.n_treated for f in parts)), n_control=int(min(f.n_control for f in parts)),
                ids=ids, phi=phi, left_out=_reasons(*(f.left_out for f in parts)),
                # the parts are cohorts of one subgroup: their users are distinct
                n_changed=-1 if any(f.n_changed < 0 for f in parts) else int(sum(f.n_changed for f in parts)))


def _reasons(*why: str) -> str:
    """Reasons for leaving effects out, each once, in order ("" for none)."""
    return "; ".join(dict.fromkeys(x for x in why if x))


#: Status of a subgroup whose users' side is each user's own outcome change, or that of 1-9 users: every
#: user's change alike, or all but fewer than ``min_treated`` (the estimate would reveal their changes).
REVEALS_USERS = "suppressed: it would reveal individual users' outcomes"


def _estimated(*left_out: str) -> str:
    """A fit's status: "estimated", or that it had to leave group-time effects out, and why (no counts)."""
    why = _reasons(*left_out)
    return f"estimated, some group-time effects left out ({why})" if why else "estimated"


def _reveals(f, min_t: int) -> bool:
    """Fewer than ``min_t`` users' outcome changes differ from their cell's common change (0: all alike)."""
    return 0 <= f.n_changed < min_t


def _estimate(d: pd.DataFrame, labels: pd.Series, dims: dict, *, yname, gname, tname, idname, xformla,
              control_group, est_method, anticipation, alpha, rules, order, comp_labels=None) -> pd.DataFrame:
    """Overall row, then per dimension its subgroup rows and differences against the first level.

    ``comp_labels``: ``{dimension: {cohort: labels of the never-users in that cohort's reference
    year}}`` for comparisons within the same subgroup; ``None`` compares with all never-users.
    """
    z = stats.norm.ppf(1 - alpha / 2)
    min_t = int(getattr(rules, "min_treated", 10))
    min_c = int(getattr(rules, "min_control", 10))
    # the balanced arrays once; each fit takes its units' rows of them (selecting the rows of a 10M-row
    # frame and rebuilding the arrays took most of each subgroup fit)
    arrays = _UnitArrays(d, yname, tname, idname, gname, parse_xformla(xformla))
    universe = np.asarray(arrays.index)  # sorted unit ids: the fits' units are among them

    ug = d.groupby(idname, sort=True)[gname].first()
    never = ug.index[ug.to_numpy() == 0].to_numpy()
    kw = dict(xformla=xformla, control_group=control_group, est_method=est_method, anticipation=anticipation, alpha=alpha)
    rows = []

    def fit(user_ids, dim=None, lev=None):
        if dim is None or comp_labels is None:
            return _fit_simple_units(arrays, arrays.keep(np.concatenate([user_ids, never])), **kw)
        # Cohort by cohort: cohort g's users of the level against the never-users in the same level in
        # g's reference year; cohorts combined with the simple aggregation's weights n_g x (post cells kept).
        # A cohort none of whose cells could be estimated is left out, as aggte(na_rm=True) leaves out the
        # cells of the overall row (said in the status): one failing cohort no longer fails the subgroup.
        g_of = ug.loc[user_ids]
        parts, wts, failed = [], [], []
        for g, grp in g_of.groupby(g_of):
            comp = never[comp_labels[dim][g] == lev]
            try:
                f = _fit_simple_units(arrays, arrays.keep(np.concatenate([grp.index.to_numpy(), comp])), **kw)
            except NoPostTreatmentCells as e:
                # the message and reasons only: the exception's traceback holds the failed fit's frames, and
                # at 2M firms their arrays (GBs) stayed alive for the rest of the subgroup
                failed.append((str(e), e.missing or "not estimated"))
                continue
            parts.append(f)
            wts.append(len(grp) * f.n_post_cells)
        if not parts:
            raise NoPostTreatmentCells(failed[0][0], failed[0][1])
        out = _combine(parts, np.asarray(wts, float) / sum(wts), universe)
        if failed:
            out = dataclasses.replace(out, left_out=_reasons(out.left_out, *(why for _, why in failed)))
        return out

    users_all = labels.index.to_numpy()
    if len(users_all) >= min_t:
        f = fit(users_all)
        if _reveals(f, min_t):  # every user's change alike but 0-9: the estimate would be their own changes
            rows.append(_row("all", "all users", "", "overall", np.nan, np.nan, f.n_treated, f.n_control,
                             REVEALS_USERS, z, f.n_changed))
        else:
            rows.append(_row("all", "all users", "", "overall", f.att, f.se, f.n_treated, f.n_control,
                             _estimated(f.left_out), z, f.n_changed))
    else:
        rows.append(_row("all", "all users", "", "overall", np.nan, np.nan, len(users_all), len(never),
                         f"suppressed: fewer than {min_t} users", z))
    for dim, rule in dims.items():
        lab = labels[dim]
        levels = _level_order(rule, lab.to_numpy(), (order or {}).get(dim))
        fits, sub_rows, sizes = {}, {}, {}
        for lev in levels:
            ids = lab.index[lab.to_numpy() == lev].to_numpy()
            sizes[lev] = len(ids)
            if len(ids) < min_t:
                sub_rows[lev] = _row(dim, lev, "", "subgroup", np.nan, np.nan, len(ids), len(never),
                                     f"suppressed: fewer than {min_t} users", z)
                continue
            try:
                f = fit(ids, dim, lev)
            except ValueError as e:  # e.g. no comparison firms for a cohort: reported, not raised
                sub_rows[lev] = _row(dim, lev, "", "subgroup", np.nan, np.nan, len(ids), len(never),
                                     f"not estimable: {str(e).splitlines()[0][:200]}", z)
                continue
            if f.n_treated < min_t:  # cohorts left out (no estimable effect): the estimate rests on fewer users
                sub_rows[lev] = _row(dim, lev, "", "subgroup", np.nan, np.nan, len(ids), f.n_control,
                                     f"suppressed: fewer than {min_t} users in the cohorts estimated", z)
                continue
            if f.n_control < min_c:  # decided here, not only by the check, so that the protection below sees it
                sub_rows[lev] = _row(dim, lev, "", "subgroup", np.nan, np.nan, len(ids), f.n_control,
                                     f"suppressed: fewer than {min_c} comparison firms", z)
                continue
            if _reveals(f, min_t):  # users' changes alike but for 0-9 of them: protected below too
                sub_rows[lev] = _row(dim, lev, "", "subgroup", np.nan, np.nan, len(ids), f.n_control, REVEALS_USERS, z,
                                     f.n_changed)
                continue
            fits[lev] = f
            sub_rows[lev] = _row(dim, lev, "", "subgroup", f.att, f.se, f.n_treated, f.n_control,
                                 _estimated(f.left_out), z, f.n_changed)
        # Users not published in any level (suppressed, or unknown reference year) are the overall
        # minus the published levels: when they form a single piece, one more level is withheld
        # (the smallest), so neither their count nor (approximately) their effect can be recovered.
        n_hidden = sum(1 for lev in levels if lev not in fits) + int((lab == UNKNOWN).any())
        if n_hidden == 1 and fits:
            lev = min(fits, key=lambda k: (sizes[k], k))
            del fits[lev]
            sub_rows[lev] = _row(dim, lev, "", "subgroup", np.nan, np.nan, np.nan, len(never),
                                 "suppressed (secondary): protects a suppressed subgroup", z)
        rows.extend(sub_rows[lev] for lev in levels)
        est_levels = [lev for lev in levels if lev in fits]
        ref = est_levels[0] if est_levels else (levels[0] if levels else None)
        for lev in levels:
            if lev == ref:
                continue
            n_t = min(sizes[lev], sizes[ref])
            if lev in fits and ref in fits:
                n_t = min(fits[lev].n_treated, fits[ref].n_treated)  # the users the two estimates rest on
                est, se = _diff(fits[lev], fits[ref], universe)
                n_c = min(fits[lev].n_control, fits[ref].n_control)
                rows.append(_row(dim, lev, ref, "difference", est, se, n_t, n_c,
                                 _estimated(fits[lev].left_out, fits[ref].left_out), z,
                                 min(fits[lev].n_changed, fits[ref].n_changed)))
            else:
                rows.append(_row(dim, lev, ref, "difference", np.nan, np.nan, np.nan, len(never),
                                 "suppressed: a subgroup is suppressed or not estimable", z))
    return pd.DataFrame(rows, columns=list(HET_COLUMNS)), tuple(r["_n_changed"] for r in rows)


def _prepare(panel, yname, gname, tname, idname, xformla, control_group, est_method, alpha):
    check_choice("control_group", control_group, CONTROL_GROUPS)
    check_choice("est_method", est_method, EST_METHODS)
    alpha = _check_level("alpha", alpha)
    xcovs = parse_xformla(xformla)
    require_columns(panel, [yname, gname, tname, idname, *xcovs], "panel")
    bal = balanced_rows(panel, tname, idname, [yname, *xcovs])
    excl = {}
    n_out = panel[idname].nunique() - panel.loc[bal, idname].nunique()
    if n_out:
        excl["units_not_observed_every_period"] = int(n_out)
    d = panel.loc[bal, list(dict.fromkeys([idname, tname, gname, yname, *xcovs]))].reset_index(drop=True)
    return d, excl, alpha


def heterogeneity(panel: pd.DataFrame, yname: str, subgroups: Mapping[str, Any] | None = None, *, gname: str,
                  tname: str = "year", idname: str = "firm_id", xformla: str | None = None,
                  control_group: str = "nevertreated", est_method: str = "dr", anticipation: int = 0,
                  alpha: float = 0.05, rules=None, target_group: Mapping | None = None,
                  order: Mapping[str, Sequence[str]] | None = None,
                  comparison: str = "same_subgroup") -> HeterogeneityResult:
    r"""Effects for pre-declared subgroups of users and the differences between them.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel of the analysis sample (users without a year before first use
        removed: :func:`reach.did.drop_without_pre_period`).
    yname : str
        Outcome.
    subgroups : dict, optional
        ``{dimension: rule}`` (see :func:`classify_users`); default :data:`DEFAULT_SUBGROUPS`.
    gname, tname, idname : str
    xformla, control_group, est_method, anticipation
        As :func:`reach.did.att_gt`.
    alpha : float, default 0.05
    rules : reach.disclosure.Rules or dict, optional
        Disclosure thresholds; a subgroup with fewer than ``min_treated`` users is
        reported as suppressed (not estimated).
    target_group : dict, optional
        Bounds of the ``"target_group"`` rule (params ``target_group``).
    order : dict, optional
        ``{dimension: [levels]}``: the first level is the reference of the differences
        (default: the "not" level of a named rule, e.g. ``non-exporter``; else sorted labels).
    comparison : {"same_subgroup", "all"}
        Comparison firms of a subgroup: never-users in the same subgroup in each cohort's
        reference year, or all never-users.

    Returns
    -------
    HeterogeneityResult
        A level with fewer than ``min_treated`` users or ``min_control`` comparison firms is
        reported as suppressed; when it would otherwise be recoverable as the overall minus
        the published levels, the smallest other level is withheld too (secondary suppression).

    Notes
    -----
    Users' labels come from their reference year :math:`b = g-1-\text{anticipation}`.
    With ``comparison="all"`` the sample of subgroup :math:`s` is its users plus all
    never-users and :math:`\hat\theta_s` is the simple aggregate of :func:`reach.did.aggte`.
    With ``comparison="same_subgroup"`` cohort :math:`g`'s users of :math:`s` are compared
    with the never-users in :math:`s` in year :math:`b_g` (one estimate per cohort), and
    :math:`\hat\theta_s = \sum_g w_g \hat\theta_{s,g}` with the simple aggregation's weights
    :math:`w_g \propto n_{s,g} \times` (post-treatment cells of g estimated), taken as fixed (cohort
    sizes are known; the estimated-weight term of ``aggte`` is left out). As ``aggte(na_rm=True)``,
    cells left missing (e.g. by the overlap guard) are left out, a cohort without any with them,
    and the status says so. Each estimate has an influence
    function :math:`\psi_{s,i}` over its :math:`n_s` units (analytic standard errors,
    :math:`\hat\theta_s - \theta_s \approx \sum_i \phi_{s,i}`, :math:`\phi_{s,i} = \psi_{s,i}/n_s`).
    The difference of subgroups :math:`a` and :math:`b` has variance

    .. math:: \widehat{Var}(\hat\theta_a - \hat\theta_b) = \sum_{i \in a \cup b} (\phi_{a,i} - \phi_{b,i})^2,

    with :math:`\phi_{s,i} = 0` for units outside sample :math:`s`: the shared comparison firms
    enter both estimates, so the two are independent only when the comparison sets differ.
    Differences are against the first level of each dimension (the reference).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 600
    >>> p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), 3), "year": np.tile([2017, 2018, 2019], n),
    ...                   "g": np.repeat(np.where(np.arange(n) < 200, 2019, 0), 3),
    ...                   "exports": np.repeat(np.arange(n) % 2, 3) * 1.0})
    >>> p["y"] = rng.normal(size=3 * n) + 0.5 * ((p.year >= p.g) & (p.g > 0) & (p.exports > 0))
    >>> res = heterogeneity(p, "y", {"exporter_before": "exporter_before"}, gname="g")
    >>> res.tidy()[["kind", "subgroup"]].values.tolist()
    [['overall', 'all users'], ['subgroup', 'non-exporter'], ['subgroup', 'exporter'], ['difference', 'exporter']]
    """
    rules = _rules(rules)
    subgroups = dict(DEFAULT_SUBGROUPS if subgroups is None else subgroups)
    check_choice("comparison", comparison, COMPARISONS)
    d, excl, alpha = _prepare(panel, yname, gname, tname, idname, xformla, control_group, est_method, alpha)
    lab = classify_users(panel, subgroups, gname=gname, tname=tname, idname=idname, anticipation=anticipation,
                         target_group=target_group).set_index(idname)
    lab = lab.loc[lab.index.isin(d[idname].unique())]
    # first use after the window: att_gt counts such firms as never treated, so they are no users here
    late = lab[gname].to_numpy() > d[tname].max()
    if late.any():
        excl["users_first_use_after_window"] = int(late.sum())
        lab = lab.loc[~late]
    for dim in subgroups:
        n_unknown = int((lab[dim] == UNKNOWN).sum())
        if n_unknown:
            excl[f"{dim}: users without a register row in the reference year"] = n_unknown
    comp_labels = None
    if comparison == "same_subgroup":
        ug = d.groupby(idname, sort=True)[gname].first()
        never = ug.index[ug.to_numpy() == 0].to_numpy()
        cols = sorted({c for r in subgroups.values() for c in _rule_columns(r)})
        comp_labels = {dim: {} for dim in subgroups}
        look = RowLookup(panel, tname=tname, idname=idname)
        for g in np.unique(lab[gname].to_numpy()):
            b = int(g) - 1 - int(anticipation)
            vals = reference_values(look, never, np.full(len(never), b), cols, tname=tname, idname=idname)
            for dim, rule in subgroups.items():
                comp_labels[dim][g] = _labels(rule, vals, target_group or {})[0]
    rows, changed = _estimate(d, lab, subgroups, yname=yname, gname=gname, tname=tname, idname=idname, xformla=xformla,
                     control_group=control_group, est_method=est_method, anticipation=anticipation, alpha=alpha,
                     rules=rules, order=order, comp_labels=comp_labels)
    return HeterogeneityResult(yname=yname, alpha=alpha, rows=rows, rules=rules, exclusions=excl, n_changed=changed,
                               settings={"comparison": comparison, "control_group": control_group,
                                         "est_method": est_method, "xformla": xformla or "~1",
                                         "anticipation": anticipation})


def dose_split(panel: pd.DataFrame, yname: str, firms: pd.DataFrame, *, programme: str, gname: str | None = None,
               tname: str = "year", idname: str = "firm_id", key: str = "be_id", xformla: str | None = None,
               control_group: str = "nevertreated", est_method: str = "dr", anticipation: int = 0,
               alpha: float = 0.05, rules=None, split_at: int = 2) -> HeterogeneityResult:
    r"""Effect by number of programme activities attended (1 vs ``split_at``+): descriptive only.

    Parameters
    ----------
    panel : DataFrame
        Firm-year panel of the analysis sample, with ``key`` (``be_id``) and ``idname``.
    yname : str
    firms : DataFrame or LinkResult
        ``reach.link.LinkResult.firms`` (``programme, be_id, n_activities``) or the LinkResult.
    programme : str
        Programme key; ``gname`` defaults to ``g_<programme>``.
    split_at : int, default 2
        Users with fewer activities than this form the reference group ("1"), the others
        the group ``"<split_at>+"``.
    Other parameters as :func:`heterogeneity`.

    Returns
    -------
    HeterogeneityResult
        Dimension ``n_activities``; ``note`` is :data:`DOSE_NOTE`.

    Notes
    -----
    Firms choose how many activities to attend, and the count covers the whole window,
    including activities after first use: the groups differ in more than the dose, so the
    difference describes who gains, not what a second activity adds. Users without a count
    (not in ``firms``) are counted as excluded.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 400
    >>> p = pd.DataFrame({"firm_id": np.repeat(np.arange(n), 3), "be_id": np.repeat([f"{i:09d}" for i in range(n)], 3),
    ...                   "year": np.tile([2017, 2018, 2019], n), "g_x": np.repeat(np.where(np.arange(n) < 100, 2019, 0), 3)})
    >>> p["y"] = rng.normal(size=3 * n)
    >>> f = pd.DataFrame({"programme": "x", "be_id": [f"{i:09d}" for i in range(100)], "n_activities": 1 + np.arange(100) % 3})
    >>> dose_split(p, "y", f, programme="x").tidy()["subgroup"].tolist()
    ['all users', '1', '2+', '2+']
    """
    if hasattr(firms, "firms") and not isinstance(firms, pd.DataFrame):
        firms = firms.firms
    require_columns(firms, ["programme", key, "n_activities"], "firms")
    if isinstance(split_at, bool) or not isinstance(split_at, (int, np.integer)) or split_at < 2:
        raise ValueError(f"split_at must be an integer >= 2; got {split_at!r}")
    rules = _rules(rules)
    gname = gname or f"g_{programme}"
    require_columns(panel, [key, idname, gname], "panel")
    d, excl, alpha = _prepare(panel, yname, gname, tname, idname, xformla, control_group, est_method, alpha)
    f = firms.loc[firms["programme"] == programme, [key, "n_activities"]]
    if f.empty:
        raise ValueError(f"firms: no rows for programme {programme!r}; programmes: {sorted(firms['programme'].unique())}")
    units = panel.drop_duplicates(idname)[[idname, key, gname]]
    users = units[(units[gname] > 0) & units[idname].isin(d[idname].unique())]
    late = users[gname].to_numpy() > d[tname].max()
    if late.any():  # att_gt would count them as never treated: neither users nor comparison firms here
        excl["users_first_use_after_window"] = int(late.sum())
    users = users[~late].merge(f, on=key, how="left")
    missing = users["n_activities"].isna()
    if missing.any():
        excl["users_without_activity_count"] = int(missing.sum())
    users = users[~missing]
    top = f"{split_at}+"
    ref = "1" if split_at == 2 else f"1-{split_at - 1}"
    lab = pd.DataFrame({"n_activities": np.where(users["n_activities"].to_numpy() >= split_at, top, ref)},
                       index=pd.Index(users[idname].to_numpy(), name=idname))
    d = d[~d[idname].isin(units.loc[(units[gname] > 0) & ~units[idname].isin(lab.index), idname])]
    rows, changed = _estimate(d, lab, {"n_activities": "n_activities"}, yname=yname, gname=gname, tname=tname, idname=idname,
                     xformla=xformla, control_group=control_group, est_method=est_method, anticipation=anticipation,
                     alpha=alpha, rules=rules, order={"n_activities": [ref, top]})
    return HeterogeneityResult(yname=yname, alpha=alpha, rows=rows, rules=rules, note=DOSE_NOTE, exclusions=excl,
                               n_changed=changed,
                               settings={"control_group": control_group, "est_method": est_method,
                                         "xformla": xformla or "~1", "anticipation": anticipation})
