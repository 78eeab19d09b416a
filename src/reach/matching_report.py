"""Matching, presented: the balance figures and the balance headline of notebook 03.

Presentation of :mod:`reach.matching` (which holds no presentation), as cobalt presents MatchIt:
:func:`love_plot` (|SMD| per covariate before and after), :func:`overlap_plot` (the propensity
score of users and comparison firms before and after) and :func:`balance_summary` (the headline
of a published balance table). Each draws or reads a disclosure-checked, publishable table, or a
:class:`~reach.matching.Match` / :class:`~reach.matching.CohortMatch` inside the environment.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from reach._checks import check_choice, require_columns
from reach.matching import SMD_THRESHOLD, CohortMatch, Match, _finite_or_none, overlap_data

__all__ = ["love_plot", "overlap_plot", "balance_summary", "comparison_size_text"]


def balance_summary(published: pd.DataFrame, threshold: float = SMD_THRESHOLD) -> dict:
    """Headline of a *publishable* balance table (e.g. ``CohortMatch.balance_checked().suppress()``).

    Parameters
    ----------
    published : pandas.DataFrame
        Balance table with ``variable, smd_before, smd_after``; suppressed rows are NaN.
    threshold : float
        |SMD| above which a covariate counts as imbalanced.

    Returns
    -------
    dict
        ``max_abs_smd_before``, ``max_abs_smd_after`` (over the published covariate
        rows, the ``distance`` row left out; ``None`` if none is published),
        ``worst`` (covariate with the largest |SMD| after, or ``None``),
        ``n_above`` (covariates with |SMD| after above ``threshold``) and
        ``n_suppressed`` (covariate rows not published).

    Notes
    -----
    :math:`\\max_j |\\mathrm{SMD}_j|` over published covariates :math:`j`; a maximum
    over published rows only is a lower bound when ``n_suppressed > 0``.

    Examples
    --------
    >>> t = pd.DataFrame({"variable": ["distance", "x", "z"], "smd_before": [1.5, 0.8, -0.4],
    ...                   "smd_after": [0.01, -0.12, np.nan]})
    >>> balance_summary(t)
    {'max_abs_smd_before': 0.8, 'max_abs_smd_after': 0.12, 'worst': 'x', 'n_above': 1, 'n_suppressed': 1}
    """
    require_columns(published, ["variable", "smd_before", "smd_after"], "published balance table")
    cov = published[published["variable"] != "distance"]
    before = cov["smd_before"].abs().astype("float64")
    after = cov["smd_after"].abs().astype("float64")
    return {
        "max_abs_smd_before": _finite_or_none(before.max()) if before.notna().any() else None,
        "max_abs_smd_after": _finite_or_none(after.max()) if after.notna().any() else None,
        "worst": str(cov.loc[after.idxmax(), "variable"]) if after.notna().any() else None,
        "n_above": int((after > threshold).sum()),
        "n_suppressed": int(after.isna().sum()),
    }


def comparison_size_text(design: str, *, control_group: str, ratio: int = 1, replace: bool = False) -> str:
    """Why the comparison groups differ in size between cohorts, for the run's design and comparison group.

    Each clause holds for the settings it is said for only: later cohorts have fewer candidates left
    only when firms not yet using the programme are candidates, and a comparison group grows with
    the number of matched users only when users pick their comparison firms (nearest-neighbour
    matching); ``cem`` keeps every candidate in a user's stratum and ``ebal`` every candidate.

    Examples
    --------
    >>> t = comparison_size_text("ebal", control_group="nevertreated")
    >>> "(never users only)" in t, "fewer not-yet" in t, t.endswith("all of its candidates.")
    (True, False, True)
    """
    from reach import labels

    check_choice("design", design, ("nearest", "cem", "ebal"))
    check_choice("control_group", control_group, ("nevertreated", "notyettreated"))
    pool = ("never users and later users; later cohorts have fewer not-yet users left"
            if control_group == "notyettreated" else "never users only")
    rule = {"nearest": (f"each matched user gets up to {ratio} comparison firm(s)"
                        + (" that may serve several users (matching with replacement)" if replace else
                           ", each firm used once per cohort")
                        + ": a cohort's comparison group grows with its number of matched users"),
            "cem": ("every candidate firm sharing a coarsened stratum with a user is kept, weighted by the "
                    "stratum's ratio of users to firms: a cohort's comparison group is the candidates in its "
                    "users' strata"),
            "ebal": ("every candidate firm is kept, with a weight that makes the group reproduce the users' "
                     "averages: a cohort's comparison group is all of its candidates")}[design]
    return (f"The candidates of cohort *g* are the firms observed in *g−1* that had not used the programme by "
            f"*g* ({pool}). With {labels.method(design)}, {rule}.")


def love_plot(m: Match | CohortMatch | pd.DataFrame, threshold: float = SMD_THRESHOLD, title: str | None = None):
    """Love plot: |SMD| per covariate before and after matching.

    ``m`` may be a :class:`Match`, a :class:`CohortMatch` (stacked balance) or a
    balance table with ``variable, smd_before, smd_after`` (e.g. the publishable,
    disclosure-checked copy; NaN values are not drawn). Returns a matplotlib Figure.
    """
    # a Figure object, not pyplot: a library must not switch (or depend on) the user's backend
    from matplotlib.figure import Figure

    b = m if isinstance(m, pd.DataFrame) else m.balance()
    require_columns(b, ["variable", "smd_before", "smd_after"], "balance table")
    b = b.iloc[::-1]
    y = np.arange(len(b))
    fig = Figure(figsize=(6.5, 0.35 * len(b) + 1.5))
    ax = fig.subplots()
    ax.scatter(np.abs(b["smd_before"]), y, marker="o", facecolors="white", edgecolors="black", label="before matching")
    ax.scatter(np.abs(b["smd_after"]), y, marker="o", color="black", label="after matching")
    ax.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.axvline(0, color="black", linewidth=0.5)
    from reach import labels

    ax.set_yticks(y)
    ax.set_yticklabels([labels.covariate(v) for v in b["variable"]])  # reader names, not column names
    ax.set_xlabel("absolute standardised mean difference")
    ax.set_title(title or "Covariate balance")
    fig.tight_layout()
    from reach.report import place_legend

    place_legend(ax)  # a corner free of points, else beside the axes
    fig.tight_layout()
    return fig


def overlap_plot(m: Match | CohortMatch | pd.DataFrame, bins: int = 20, title: str | None = None):
    """Distribution of the distance (propensity score) for treated and controls, before/after.

    ``m`` may be a :class:`Match`/:class:`CohortMatch` (counts computed here) or a
    table with ``phase, group, bin, value`` (counts per cell, e.g. the publishable
    copy of a disclosure check of :func:`overlap_data`; NaN cells are left empty).
    Bars show the share of each group's units per bin. Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    if isinstance(m, pd.DataFrame):
        tab = m
        require_columns(tab, ["phase", "group", "bin", "value"], "overlap table")
    else:
        od = overlap_data(m, bins=bins)
        tab = od.groupby(["phase", "group", "bin"], observed=True)["weight"].sum().rename("value").reset_index()
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    edges = np.sort(tab["bin"].unique())
    width = float(np.min(np.diff(edges))) if edges.size > 1 else 1.0
    for ax, phase in zip(axes, ("before", "after")):
        for grp, colr, off in (("treated", "tab:red", 0.0), ("control", "tab:blue", 0.0)):
            s = tab[(tab["phase"] == phase) & (tab["group"] == grp)]
            tot = np.nansum(s["value"])
            share = s["value"] / tot if tot > 0 else s["value"]
            ax.bar(s["bin"] + off, share, width=width, align="edge", alpha=0.5, color=colr,
                   label={"treated": "users", "control": "comparison firms"}[grp])
        ax.set_title(f"{phase} matching")
        ax.set_xlabel("distance (propensity score)")
    axes[0].set_ylabel("share of group")
    fig.suptitle(title or "Overlap of the propensity score")
    fig.tight_layout()
    from reach.report import place_legend

    place_legend(axes[1], fontsize=8)  # a corner free of bars, else below the axes
    fig.tight_layout()
    return fig
