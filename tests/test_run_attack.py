"""An output checker's attack on the whole stub run (issue 13): every published number together.

Independent of :mod:`reach.publish`'s audit code: the attacker here reads the
published values from the *written CSV files* (after the audit blanked what it
blanked), takes the firms behind every cell from the run's registry under
``work/`` (the truth, which stays with the microdata), and solves its own
linear programmes over the sizes of the firm groups that share exactly the
same published cells. It knows every published count (to its rounding base)
and every published share (to its rounding step), and which combinations of
cells hold firms, except that a firm like an observed one but with or without
the trait of a share may exist (it cannot know an empty numerator or
complement is empty).

A protected cell (suppressed, fewer than ``min_units`` firms; or the small
numerator or complement of a suppressed share) is recovered when the attacker
can prove it below ``min_units`` (integer upper bound) or pin its lower end at
its true size (integer lower bound).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.notebooks


def _cells(run) -> list[dict]:
    """Every published frequency cell: its firms, and what the written file says of it."""
    out = []
    for meta_path in sorted((run.work_dir / "registry" / "tables").glob("*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        npz = meta_path.with_suffix(".npz")
        if meta["stat"] not in ("count", "share") or not npz.is_file():
            continue
        written = pd.read_csv(run.output_dir / meta["file"], dtype={c: str for c in meta["by"]})
        assert len(written) == len(meta["rows"]), meta["file"]
        with np.load(npz) as z:
            cell, unit, trait = z["cell"], z["unit"], z["trait"].astype(bool)
            # a share over firm-activity pairs (several rows per firm) is not a share of firms
            firm_level = not (z["rows"] > 1).any()
        for r, row in enumerate(meta["rows"]):
            line = written.iloc[r]
            for col, label in row["labels"].items():  # the registry row is the file's row
                assert str(line[col]) == str(label) or (pd.isna(line[col]) and label is None), (meta["file"], r)
            sel = cell == r
            units, num = np.unique(unit[sel]), np.unique(unit[sel & trait])
            n = line.get("n_units")
            if (n is None or pd.isna(n)) and meta["stat"] == "count":
                n = line.get("value")
            share = line.get("value") if meta["stat"] == "share" else None
            stat = meta["stat"] if firm_level else "count"
            out.append({"file": meta["file"], "row": r, "stat": stat, "units": units, "num": num,
                        "n": None if n is None or pd.isna(n) else float(n),
                        "share": None if share is None or pd.isna(share) else float(share),
                        "base": meta["count_base"], "step": meta["share_step"] or 0.0,
                        "min_units": meta["min_units"]})
    return out


def _attack(cells: list[dict], first_only: bool = False) -> tuple[list[str], int]:
    from scipy import sparse
    from scipy.optimize import linprog

    # firm groups: firms in exactly the same published sets (cells and share numerators)
    sets = [c["units"] for c in cells] + [c["num"] for c in cells if c["stat"] == "share"]
    num_set = {}
    for i, c in enumerate(cells):
        if c["stat"] == "share":
            num_set[i] = len(cells) + len(num_set)
    pairs = pd.DataFrame({"set": np.repeat(np.arange(len(sets)), [len(s) for s in sets]),
                          "unit": np.concatenate(sets)})
    sig = pairs.sort_values(["unit", "set"]).groupby("unit")["set"].agg(tuple)
    observed = set(sig)
    # The attacker does not know which groups are empty: besides every observed group, the same group
    # with the trait of its shares switched off and on ("a firm like this one, but without/with it").
    nums = set(num_set.values())
    variants = set()
    for g in observed:
        off = tuple(s for s in g if s not in nums)
        variants |= {off, tuple(sorted(off + tuple(num_set[s] for s in off if s in num_set)))}
    groups = {g: k for k, g in enumerate(sorted(observed | variants))}
    rows = [s for g in groups for s in g]
    cols = [groups[g] for g in groups for _ in g]
    M = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sets), len(groups)))

    A, lo, hi, targets = [], [], [], []
    for i, c in enumerate(cells):
        S = M[i]
        if c["n"] is not None:
            half = c["base"] / 2 if c["base"] > 1 else 0.0
            A.append(S)
            lo.append(c["n"] - half)
            hi.append(c["n"] + half)
        elif len(c["units"]) < c["min_units"]:
            targets.append((f"{c['file']} row {c['row']} cell", S, len(c["units"]), c["min_units"]))
        if c["stat"] == "share":
            N = M[num_set[i]]
            if c["share"] is not None:
                h = c["step"] / 2 + 1e-9
                if c["n"] is not None and c["base"] <= 1:  # size known: the share bounds the numerator
                    A.append(N)
                    lo.append((c["share"] - h) * c["n"])
                    hi.append((c["share"] + h) * c["n"])
                else:
                    A += [N - (c["share"] + h) * S, (c["share"] - h) * S - N]
                    lo += [-np.inf, -np.inf]
                    hi += [0.0, 0.0]
            else:
                k = len(c["num"])
                if k < c["min_units"]:
                    targets.append((f"{c['file']} row {c['row']} numerator", N, k, c["min_units"]))
                if len(c["units"]) - k < c["min_units"]:
                    targets.append((f"{c['file']} row {c['row']} complement", S - N, len(c["units"]) - k,
                                    c["min_units"]))
    # the same constraint published by several tables once (fewer non-zeros, same polytope)
    dense = np.column_stack([sparse.vstack(A).toarray(), lo, hi])
    dense = np.unique(np.round(dense, 12), axis=0)
    A, lo, hi = sparse.csr_matrix(dense[:, :-2]), dense[:, -2], dense[:, -1]
    eq = lo == hi
    # two-sided rows as two inequalities
    ub_A = sparse.vstack([A[~eq & np.isfinite(hi)], -A[~eq & np.isfinite(lo)]]).tocsr()
    ub_b = np.concatenate([hi[~eq & np.isfinite(hi)], -lo[~eq & np.isfinite(lo)]])
    polytope = (ub_A, ub_b, A[eq], lo[eq])
    C = sparse.vstack([t[1] for t in targets]).tocsr()
    n = np.array([t[2] for t in targets], dtype=float)
    mu = np.array([t[3] for t in targets], dtype=float)
    # witnesses: a feasible point with c x >= min_units proves the upper end open, one with c x <= n - 1
    # the lower end; many targets share one (programmes over all open targets at once), the rest get their own
    top_ok = _witnessed(polytope, C, mu, upper=True)
    bottom_ok = (n <= 0) | _witnessed(polytope, C, n - 1, upper=False)
    recovered = []
    for i in np.flatnonzero(~(top_ok & bottom_ok)):
        c = C[i].toarray().ravel()
        res_hi = linprog(-c, A_ub=ub_A, b_ub=ub_b, A_eq=A[eq], b_eq=lo[eq], bounds=(0, None), method="highs")
        assert res_hi.status in (0, 3), targets[i][0]  # the truth is feasible
        top = math.inf if res_hi.status == 3 else math.floor(-res_hi.fun + 1e-6)
        res_lo = linprog(c, A_ub=ub_A, b_ub=ub_b, A_eq=A[eq], b_eq=lo[eq], bounds=(0, None), method="highs")
        assert res_lo.status == 0, targets[i][0]
        bottom = math.ceil(res_lo.fun - 1e-6)
        if top < mu[i] or (n[i] > 0 and bottom >= n[i]):
            recovered.append(f"{targets[i][0]}: true {int(n[i])}, attacker [{bottom}, {top}]")
            if first_only:
                break
    return recovered, len(targets)


def _witnessed(polytope, C, goal: np.ndarray, upper: bool) -> np.ndarray:
    """Targets for which some feasible point reaches ``goal`` (c x >= goal if upper, else c x <= goal)."""
    from scipy import sparse
    from scipy.optimize import linprog

    A_ub, b_ub, A_eq, b_eq = polytope
    ok = np.zeros(C.shape[0], bool)
    while not ok.all():
        todo = np.flatnonzero(~ok)
        m, k = len(todo), C.shape[1]
        # upper: max sum s, s_i <= c_i x, s_i <= goal_i; lower: min sum s, s_i >= c_i x - goal_i, s_i >= 0
        extra = sparse.hstack([-C[todo] if upper else C[todo], (1 if upper else -1) * sparse.identity(m)])
        res = linprog(np.r_[np.zeros(k), -np.ones(m) if upper else np.ones(m)],
                      A_ub=sparse.vstack([sparse.hstack([A_ub, sparse.csr_matrix((A_ub.shape[0], m))]), extra]),
                      b_ub=np.r_[b_ub, np.zeros(m) if upper else goal[todo]],
                      A_eq=sparse.hstack([A_eq, sparse.csr_matrix((A_eq.shape[0], m))]), b_eq=b_eq,
                      bounds=[(0, None)] * k + ([(0, g) for g in goal[todo]] if upper else [(0, None)] * m),
                      method="highs", options={"presolve": False})  # any optimum is a witness; 2x faster here
        assert res.status == 0
        s = res.x[k:]
        new = s >= goal[todo] - 1e-6 if upper else s <= 1e-6
        if not new.any():
            break
        ok[todo[new]] = True
    return ok


def test_no_cell_below_min_units_is_recovered_from_the_whole_run(stub_suite_run):
    cells = _cells(stub_suite_run)
    recovered, n_targets = _attack(cells)
    assert n_targets > 50  # the stub has many small suppressed cells: the attack is not vacuous
    assert not recovered, "\n".join(recovered)


def test_the_attacker_recovers_cells_that_were_only_checked_table_by_table(stub_suite_run):
    """The attacker has teeth: with the audit's extra suppressions put back, it recovers cells."""
    audit = pd.read_csv(stub_suite_run.output_dir / "disclosure_audit.csv", dtype=str, keep_default_na=False)
    protected = audit.loc[audit["record"] == "protected cell"]
    assert (protected["safe_after"] == "True").all(), protected.loc[protected["safe_after"] != "True"]
    # the cells the first pass's audit suppressed (the second pass made its checks suppress them)
    extra = json.loads((stub_suite_run.work_dir / "audit_suppress.json").read_text(encoding="utf-8"))
    assert extra
    wanted = {(e["object"], json.dumps(e["labels"], sort_keys=True, default=str)) for e in extra}
    cells = _cells(stub_suite_run)
    reg = {}
    for meta_path in (stub_suite_run.work_dir / "registry" / "tables").glob("*.json"):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        reg[meta["file"]] = meta
    put_back = 0
    for c in cells:  # published as the table-by-table checks alone would have published them
        meta = reg[c["file"]]
        labels = json.dumps(meta["rows"][c["row"]]["labels"], sort_keys=True, default=str)
        if (meta["object"], labels) in wanted:
            put_back += 1
            c["n"] = float(len(c["units"]))
            if c["stat"] == "share":
                c["share"] = round(len(c["num"]) / len(c["units"]) / c["step"]) * c["step"]
    assert put_back == len(extra)
    recovered, _ = _attack(cells, first_only=True)
    assert recovered
