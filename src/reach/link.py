"""Link programme participants to business units (``be_id``) by year, with a waterfall.

Participant lists carry KvK (Chamber of Commerce) numbers typed by people:
leading zeros dropped, spaces, dots, letters. :func:`normalise_kvk` cleans
them; :func:`link_participants` links every record through the KvK -> BE_ID
file of its year and puts it in exactly one bucket of the linkage waterfall
(CONTRACTS.md section 3), so that the counts add up to the input total.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reach.normalise import KVK_INVALID, KVK_OK, KVK_REPAIRED, normalise_kvk
from reach._display import ResultDisplay

__all__ = ["BUCKETS", "KVK_REASONS", "LinkResult", "normalise_kvk", "link_participants", "check_waterfall",
           "waterfall_table", "waterfall_figure", "kvk_repairs", "early_users"]

#: Waterfall buckets, in the order in which they are applied (first that applies wins).
BUCKETS = (
    "invalid_kvk",
    "duplicate_record",
    "outside_window",
    "kvk_not_found",
    "not_linked_that_year",
    "not_in_register",
    "linked",
)
#: Reasons :func:`normalise_kvk` gives: ``ok``, the repairs (number kept), the refusals (``invalid_kvk``).
KVK_REASONS = (KVK_OK,) + KVK_REPAIRED + KVK_INVALID


@dataclass(frozen=True, repr=False)
class LinkResult(ResultDisplay):
    """Participants linked to business units (CONTRACTS.md section 3).

    Attributes
    ----------
    records : DataFrame
        Every participant record (``inputs.participants`` columns) plus
        ``kvk_reason``, ``bucket`` and ``be_id`` (only for ``linked``).
    waterfall : DataFrame
        ``programme, bucket, n_records`` in :data:`BUCKETS` order plus a
        ``total`` row per programme equal to the input row count.
    firms : DataFrame
        One row per programme x ``be_id``: ``first_use`` (the year of first use over the
        whole history: the cohort, R ``did``'s ``gname``), ``n_activities`` (distinct
        activities), ``n_records`` (linked records); ``first_year`` is a deprecated alias
        of ``first_use`` kept one release (it read like the window's first year).
    activities : DataFrame
        Per programme x ``activity_id``: ``n_records`` (all records, as in
        published participant counts), ``n_linked_records``, ``n_kvk``
        (distinct valid KvK) and ``n_firms`` (distinct linked business units).
    first_year, last_year : int
        The window used.
    early : DataFrame
        ``programme, be_id, first_use``: firms whose first use (over every record,
        also those before the window) lies before ``first_year``. Their years in the
        window are all "after": they are left out of the analysis, never given a
        cohort inside the window (:func:`reach.panel.analysis_sample`).
    """

    records: pd.DataFrame
    waterfall: pd.DataFrame
    firms: pd.DataFrame
    activities: pd.DataFrame
    first_year: int = 0
    last_year: int = 0
    early: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"programme": pd.Series(dtype="str"), "be_id": pd.Series(dtype="str"), "first_use": pd.Series(dtype="int64")}))

    def tidy(self) -> pd.DataFrame:
        """The waterfall (``programme, bucket, n_records``): counts of records, no microdata."""
        return self.waterfall.copy()

    def summary(self) -> str:
        """The waterfall as text, one column per programme."""
        wide = self.waterfall.pivot(index="bucket", columns="programme", values="n_records")
        wide = wide.reindex(list(BUCKETS) + ["total"])
        users = self.firms.groupby("programme").size()
        lines = [f"Linkage {self.first_year}-{self.last_year} (records per bucket)", wide.to_string(),
                 "Unique business units: " + ", ".join(f"{k} {v:,}" for k, v in users.items())]
        if len(self.early):
            early = self.early.groupby("programme").size()
            lines.append(f"First used before {self.first_year} (left out of the analysis): "
                         + ", ".join(f"{k} {v:,}" for k, v in early.items()))
        return "\n".join(lines)



def link_participants(inputs, first_year: int | None = None, last_year: int | None = None) -> LinkResult:
    """Link participant records to business units by year and build the waterfall.

    Parameters
    ----------
    inputs : reach.io.Inputs
        Uses ``participants``, ``kvk_link`` and ``register``.
    first_year, last_year : int, optional
        Window; defaults to ``inputs.first_year``/``inputs.last_year``.

    Returns
    -------
    LinkResult

    Notes
    -----
    Each record :math:`r` lands in the first bucket that applies:
    invalid KvK; duplicate (same programme, KvK and activity as an earlier
    record in file order; without activity ids the same KvK); year outside the
    window; KvK in no link year; KvK not linked in year :math:`t_r`; linked
    BE_ID :math:`b` without register record in :math:`t_r`; linked. Hence
    :math:`\\sum_{buckets} n = N_{records}`. The cohort of firm :math:`b` in
    programme :math:`p` is :math:`g_{bp} = \\min\\{t_r : r \\text{ linked to } b\\}`, the minimum
    also over records before the window (linked through the KvK's earliest link year): a firm
    first treated before ``first_year`` keeps that year (``early``), it is never re-cohorted.
    Several KvK numbers of one enterprise group can link to the same
    :math:`b`; the firm then counts once.

    Examples
    --------
    >>> res = link_participants(inputs)                           # doctest: +SKIP
    >>> res.waterfall.query("bucket == 'total'")                  # doctest: +SKIP
    """
    first = int(inputs.first_year if first_year is None else first_year)
    last = int(inputs.last_year if last_year is None else last_year)
    rec = inputs.participants.copy()
    kvk, reason = normalise_kvk(rec["kvk_raw"])
    rec["kvk"] = kvk
    rec["kvk_reason"] = reason
    n = len(rec)
    bucket = np.full(n, "", dtype=object)

    invalid = rec["kvk"].isna().to_numpy()
    bucket[invalid] = "invalid_kvk"

    # file order within a programme is the order of `row`; NA activity compares equal (NLiB: same KvK)
    order = np.lexsort((rec["row"].to_numpy(), rec["programme"].to_numpy().astype(str)))
    act = rec["activity_id"].fillna("\x00<none>")
    dup_sorted = pd.DataFrame({"p": rec["programme"].to_numpy()[order], "k": rec["kvk"].to_numpy()[order],
                               "a": act.to_numpy()[order]}).duplicated()
    dup = np.zeros(n, bool)
    dup[order] = dup_sorted.to_numpy()
    dup &= ~invalid
    bucket[(bucket == "") & dup] = "duplicate_record"

    yr = rec["year"].to_numpy()
    bucket[(bucket == "") & ((yr < first) | (yr > last))] = "outside_window"

    kl = inputs.kvk_link
    known = rec["kvk"].isin(kl["kvk"].unique()).to_numpy()
    bucket[(bucket == "") & ~known] = "kvk_not_found"

    linked_be = rec[["kvk", "year"]].merge(kl[["kvk", "year", "be_id"]], on=["kvk", "year"], how="left",
                                           validate="many_to_one")["be_id"].to_numpy()
    has_link = pd.notna(linked_be)
    bucket[(bucket == "") & ~has_link] = "not_linked_that_year"

    reg_keys = pd.MultiIndex.from_frame(inputs.register[["be_id", "year"]])
    cand = pd.MultiIndex.from_arrays([pd.Series(linked_be, dtype="str"), rec["year"].to_numpy()])
    in_reg = cand.isin(reg_keys)
    bucket[(bucket == "") & ~in_reg] = "not_in_register"
    bucket[bucket == ""] = "linked"

    rec["bucket"] = pd.Categorical(bucket, categories=list(BUCKETS))
    rec["be_id"] = pd.Series(np.where(bucket == "linked", linked_be, None), index=rec.index, dtype="str")

    programmes = list(dict.fromkeys(rec["programme"].tolist()))
    if hasattr(inputs, "programmes") and inputs.programmes:
        programmes = list(inputs.programmes) + [p for p in programmes if p not in inputs.programmes]
    wf = (rec.groupby(["programme", "bucket"], observed=False).size().rename("n_records").reset_index())
    wf = wf[wf["programme"].isin(programmes)]
    totals = rec.groupby("programme").size().reindex(programmes, fill_value=0)
    full = pd.MultiIndex.from_product([programmes, list(BUCKETS)], names=["programme", "bucket"])
    wf = wf.set_index(["programme", "bucket"])["n_records"].reindex(full, fill_value=0).reset_index()
    wf["bucket"] = wf["bucket"].astype(str)
    tot = pd.DataFrame({"programme": programmes, "bucket": "total", "n_records": totals.to_numpy()})
    wf = pd.concat([wf, tot], ignore_index=True)
    wf["_p"] = wf["programme"].map({p: i for i, p in enumerate(programmes)})
    wf["_b"] = wf["bucket"].map({b: i for i, b in enumerate(list(BUCKETS) + ["total"])})
    wf = wf.sort_values(["_p", "_b"]).drop(columns=["_p", "_b"]).reset_index(drop=True)
    wf["n_records"] = wf["n_records"].astype("int64")

    lk = rec.loc[rec["bucket"] == "linked"]
    # a record without activity id is its own activity (NLiB: one portal registration)
    lk_act = lk["activity_id"].fillna("row:" + lk["row"].astype(str))
    firms = (lk.assign(_act=lk_act).groupby(["programme", "be_id"], sort=True)
             .agg(first_use=("year", "min"), n_activities=("_act", "nunique"), n_records=("row", "size"))
             .reset_index())
    firms = firms.astype({"first_use": "int64", "n_activities": "int64", "n_records": "int64"})
    early = _first_use_before(rec, kl, first)
    if len(early):
        # the cohort is the first use over the whole history, never the first use inside the window
        fu = firms[["programme", "be_id"]].merge(early, on=["programme", "be_id"], how="left")["first_use"]
        firms["first_use"] = np.where(fu.notna(), fu.fillna(0), firms["first_use"]).astype("int64")
    # deprecated name of first_use (it read like the window's first_year), kept one release
    firms["first_year"] = firms["first_use"]

    with_act = rec.loc[rec["activity_id"].notna()]
    if len(with_act):
        g = with_act.groupby(["programme", "activity_id"], sort=True)
        activities = pd.DataFrame({
            "n_records": g.size(),
            "n_linked_records": with_act.assign(_l=(with_act["bucket"] == "linked").astype("int64"))
            .groupby(["programme", "activity_id"], sort=True)["_l"].sum(),
            "n_kvk": g["kvk"].nunique(),
            "n_firms": g["be_id"].nunique(),
        }).reset_index()
        first_date = g["date"].min().reset_index(drop=True)
        activities["year"] = g["year"].min().to_numpy()
        activities["activity_type"] = g["activity_type"].first().to_numpy()
        activities["organiser_region"] = g["organiser_region"].first().to_numpy()
        activities["date"] = first_date.to_numpy()
    else:
        activities = pd.DataFrame(columns=["programme", "activity_id", "n_records", "n_linked_records", "n_kvk",
                                           "n_firms", "year", "activity_type", "organiser_region", "date"])
    activities = activities.astype({"n_records": "int64", "n_linked_records": "int64", "n_kvk": "int64",
                                    "n_firms": "int64"})
    return LinkResult(records=rec, waterfall=wf, firms=firms, activities=activities,
                      first_year=first, last_year=last, early=early)


def _first_use_before(rec: pd.DataFrame, kl: pd.DataFrame, first: int) -> pd.DataFrame:
    """Firms with a participation record before ``first`` (the window start): their first use.

    The link file of a year before the window is not read, so such a record is linked
    through the KvK number's earliest link year (KvK numbers rarely move between units).
    """
    pre = rec.loc[rec["kvk"].notna() & (rec["year"] < first), ["programme", "kvk", "year"]]
    cols = {"programme": pd.Series(dtype="str"), "be_id": pd.Series(dtype="str"), "first_use": pd.Series(dtype="int64")}
    if pre.empty or kl.empty:
        return pd.DataFrame(cols)
    earliest = kl.sort_values(["kvk", "year", "be_id"]).drop_duplicates("kvk")[["kvk", "be_id"]]
    pre = pre.merge(earliest, on="kvk", how="inner")
    if pre.empty:
        return pd.DataFrame(cols)
    out = (pre.groupby(["programme", "be_id"], sort=True)["year"].min().rename("first_use").reset_index())
    return out.astype({"first_use": "int64"})


def kvk_repairs(link: LinkResult) -> pd.DataFrame:
    """KvK numbers repaired or refused per programme: ``programme, reason, n_records`` (no microdata).

    ``ok`` is left out; a repaired number was kept (and linked if it could be),
    a refused one is in the ``invalid_kvk`` bucket.

    Examples
    --------
    >>> kvk_repairs(link)                                             # doctest: +SKIP
    """
    r = link.records.loc[link.records["kvk_reason"] != KVK_OK]
    out = r.groupby(["programme", "kvk_reason"], sort=True).size().rename("n_records").reset_index()
    out = out.rename(columns={"kvk_reason": "reason"})
    out["kind"] = np.where(out["reason"].isin(KVK_REPAIRED), "repaired", "refused")
    return out[["programme", "kind", "reason", "n_records"]].astype({"n_records": "int64"})


def early_users(link: LinkResult) -> pd.DataFrame:
    """Firms first treated before the window, per programme: ``programme, n_firms`` (counts only)."""
    e = link.early
    return (e.groupby("programme", sort=True).size().rename("n_firms").reset_index()
            .astype({"n_firms": "int64"}) if len(e) else pd.DataFrame({"programme": pd.Series(dtype="str"),
                                                                       "n_firms": pd.Series(dtype="int64")}))


# --------------------------------------------------------------------------- the waterfall as an exported table
def check_waterfall(link: LinkResult, rules=None):
    """The linkage waterfall as a disclosure-checked count table (records per programme x bucket).

    Units are participant records; ``Total`` margins equal the input row counts, so a
    suppressed bucket gets a partner suppression (it could otherwise be recovered).

    Returns
    -------
    reach.disclosure.Checked
        Named ``linkage_waterfall``.
    """
    from reach.disclosure import check_table

    recs = link.records[["programme", "row", "bucket"]].copy()
    recs["record"] = recs["programme"] + ":" + recs["row"].astype(str)
    recs["bucket"] = recs["bucket"].astype(str)
    return check_table(recs, by=["programme", "bucket"], unit="record", stat="count", rules=rules,
                       name="linkage_waterfall", margins=True)


def waterfall_table(published: pd.DataFrame, link: LinkResult) -> pd.DataFrame:
    """Buckets (rows, in waterfall order, then ``Total``) x programmes of the publishable copy, as text.

    A bucket no record reached reads 0; a suppressed count reads ``"suppressed"``.
    """
    pub = published[published["programme"] != "Total"]
    shown = pub.pivot(index="bucket", columns="programme", values="value").reindex(list(BUCKETS) + ["Total"])
    empty = (link.waterfall.pivot(index="bucket", columns="programme", values="n_records")
             .reindex(index=shown.index, columns=shown.columns) == 0)
    text = shown.astype(object).where(shown.notna(), "suppressed").mask(empty, 0)
    return text.map(lambda v: v if isinstance(v, str) else f"{int(v):,}")


def waterfall_figure(published: pd.DataFrame, names: dict | None = None):
    """Horizontal bars of records per bucket and programme, drawn from the publishable copy only.

    A suppressed cell has no bar (its value is never drawn) and reads "suppressed"; buckets carry
    their plain names (:func:`reach.labels.bucket`), programmes ``names`` (key -> label, default
    the keys). The legend sits where it covers no bar (:func:`reach.report.place_legend`).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from reach import labels
    from reach.report import place_legend

    cells = published[(published["programme"] != "Total") & (published["bucket"] != "Total")]
    plot = cells.dropna(subset=["value"]).astype({"value": "float64"})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if plot.empty:
        ax.text(0.5, 0.5, "every cell suppressed (fewer than the minimum number of records)", ha="center", va="center")
        ax.set_axis_off()
    else:
        order = list(BUCKETS)[::-1]
        progs = list(dict.fromkeys(cells["programme"]))
        wide = cells.pivot(index="bucket", columns="programme", values="value").reindex(order).astype("float64")
        height = 0.8 / len(progs)
        for k, prog in enumerate(progs):
            ypos = np.arange(len(order)) - 0.4 + height * (k + 0.5)
            vals = wide[prog].to_numpy() if prog in wide else np.full(len(order), np.nan)
            ax.barh(ypos, np.nan_to_num(vals), height, label=(names or {}).get(prog, prog))
            shown = set(cells.loc[cells["programme"] == prog, "bucket"])  # a cell of the check, not an empty bucket
            for y, v, b in zip(ypos, vals, order):
                if np.isnan(v):  # no record reached an absent bucket: a zero (as in the table), not a suppression
                    ax.text(0, y, " suppressed" if b in shown else " 0", va="center", fontsize=6, color="dimgrey")
        ax.set_yticks(np.arange(len(order)), [labels.bucket(b) for b in order])
        place_legend(ax, fontsize=8, title="programme")
    ax.set_xlabel("participant records")
    ax.set_ylabel("")
    ax.set_title("Linkage waterfall per programme (records)")
    fig.tight_layout()
    return fig
