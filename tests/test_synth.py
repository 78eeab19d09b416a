"""Tests of reach.synth: the synthetic CBS-shaped stub and its truth file.

The truth file is checked against the written files with a small, independent
reader/linker written here from docs/CONTRACTS.md (sections 1, 3 and 5), not
with the generator's internals nor with reach.io / reach.link.
"""
from __future__ import annotations

import doctest
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from reach import synth
from reach.synth import GROWTH_MARKETS, Truth, make_stub, planted_effect, read_truth

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "data_stub"
SMALL = 1500  # firms in the fast tier's generated stubs

BUCKETS = ["invalid_kvk", "duplicate_record", "outside_window", "kvk_not_found",
           "not_linked_that_year", "not_in_register", "linked"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("stub_a")
    return d, make_stub(d, n_firms=SMALL, seed=7)


@pytest.fixture(scope="module")
def committed():
    truth = json.loads((STUB / "truth.json").read_text())
    files = Files(STUB, truth)
    return truth, files, _recompute(files, truth)


# ----------------------------------------------------------------------------- independent reader

def _read(path: Path) -> pd.DataFrame:
    df, _ = pyreadstat.read_sav(str(path))
    return df


def _version_file(d: Path, sub: str, stem: str, year: int) -> Path:
    """Highest version V<k> of a yearly file (CONTRACTS: V2 wins in 2019)."""
    cands = list((d / sub).glob(f"{stem}{year}V*.sav"))
    assert cands, f"no {stem}{year}V*.sav in {d / sub}"
    return max(cands, key=lambda p: int(re.search(r"V(\d+)\.sav$", p.name).group(1)))


def _norm(raw: pd.Series) -> pd.Series:
    """CONTRACTS 3.1: strip spaces, dots, dashes; zeros back to 8 digits; else NA."""
    s = raw.fillna("").astype(str).str.replace(r"[\s.\-]", "", regex=True)
    ok = s.str.fullmatch(r"\d{1,8}")
    return s.str.zfill(8).where(ok)


class Files:
    """The stub read back with pyreadstat and tidied by this test's own code."""

    def __init__(self, d: Path, truth: dict):
        self.d = d
        self.years = list(range(truth["first_year"], truth["last_year"] + 1))
        c = pd.read_csv(ROOT / "src/reach/data/countries.csv", dtype=str)
        geo = dict(zip(c["geonom"].str.zfill(3), c["iso2"]))
        m = pd.read_csv(ROOT / "src/reach/data/municipalities.csv", dtype=str)
        prov = dict(zip(m["gemcode"], m["province"]))
        reg, link, trade = [], [], []
        for y in self.years:
            r = _read(_version_file(d, "ABR", "ABR_BE_", y)).assign(year=y)
            reg.append(r)
            link.append(_read(_version_file(d, "KvK", "KVK_BE_", y)).assign(year=y))
            t = _read(_version_file(d, "IHG", "IHG_per_BE_ID", y))
            t["iso"] = t["Land_HB"].map(geo) if y <= 2015 else t["Land_HB"]
            trade.append(t.groupby(["BE_ID", "iso"], as_index=False)[["Uitvoer", "Invoer"]].sum().assign(year=y))
        self.reg = pd.concat(reg, ignore_index=True)
        self.reg["province"] = self.reg["gemcode"].map(prov)
        self.link = pd.concat(link, ignore_index=True)
        self.trade = pd.concat(trade, ignore_index=True)
        self.instr = _read(d / "RVO" / "Achilles_instrumenten.sav")
        self.nlib = _read(d / "Programmas" / "NLiB_portaal.sav")
        self.tinl = _read(d / "Programmas" / "TINL_activiteiten.sav")
        self.nlw = _read(d / "Programmas" / "NLWorks_consortia.sav")


def _waterfall(rec: pd.DataFrame, key: list[str], files: Files, window: tuple[int, int]) -> pd.DataFrame:
    """Assign every record its bucket, first that applies (CONTRACTS section 3)."""
    rec = rec.copy()
    rec["kvk"] = _norm(rec["KvK_nummer"])
    bucket = pd.Series("linked", index=rec.index, dtype=object)
    years_of = files.link.groupby("KVK_NR")["year"].agg(set)
    lk = files.link.set_index(["KVK_NR", "year"])["BE_ID"]
    reg_keys = set(zip(files.reg["BE_ID"], files.reg["year"]))
    be = [lk.get((k, y)) if isinstance(k, str) else None for k, y in zip(rec["kvk"], rec["year"])]
    rec["be_id"] = be
    invalid = rec["kvk"].isna()
    dup = rec.duplicated(["kvk"] + key) & ~invalid
    outside = (rec["year"] < window[0]) | (rec["year"] > window[1])
    not_found = ~rec["kvk"].isin(years_of.index)
    not_linked = rec["be_id"].isna()
    not_reg = ~pd.Series([(b, y) in reg_keys for b, y in zip(rec["be_id"], rec["year"])], index=rec.index)
    for name, mask in reversed(list(zip(BUCKETS[:-1], [invalid, dup, outside, not_found, not_linked, not_reg]))):
        bucket[mask] = name
    rec["bucket"] = bucket
    return rec


def _recompute(files: Files, truth: dict) -> dict:
    """Waterfall, users, cohorts and reach shares, from the files only."""
    window = (truth["first_year"], truth["last_year"])
    nl = files.nlib.assign(year=2019)
    tn = files.tinl.assign(year=pd.to_datetime(files.tinl["Datum"]).dt.year)
    nw = files.nlw.assign(year=files.nlw["Startjaar"].astype(int))
    recs = {"nlib": _waterfall(nl, [], files, window), "tinl": _waterfall(tn, ["Activiteit_ID"], files, window),
            "nlw": _waterfall(nw, ["Consortium_ID"], files, window)}
    out = {"waterfall": {}, "n_users": {}, "cohort_sizes": {}, "reach": {}, "target_group_before": {}}
    tr = files.trade
    exp_y = tr.groupby(["BE_ID", "year"])["Uitvoer"].sum()
    imp_y = tr.groupby(["BE_ID", "year"])["Invoer"].sum()
    ndest = tr[tr["Uitvoer"] > 0].groupby(["BE_ID", "year"]).size()
    emp = files.reg.set_index(["BE_ID", "year"])["WPActueel"]
    instr = files.instr.assign(year=files.instr["Jaar"].astype(int)).merge(
        files.link, left_on=["KVK_NR", "year"], right_on=["KVK_NR", "year"])
    for p, rec in recs.items():
        counts = rec["bucket"].value_counts()
        wf = {b: int(counts.get(b, 0)) for b in BUCKETS}
        wf["total"] = len(rec)
        out["waterfall"][p] = wf
        linked = rec[rec["bucket"] == "linked"]
        g = linked.groupby("be_id")["year"].min()
        out["n_users"][p] = int(g.size)
        out["cohort_sizes"][p] = {str(k): int(v) for k, v in g.value_counts().sort_index().items()}
        keys = list(zip(g.index, g.to_numpy() - 1))
        has_row = np.array([k in emp.index for k in keys])
        e_b = np.array([exp_y.get(k, 0.0) for k in keys])[has_row]
        i_b = np.array([imp_y.get(k, 0.0) for k in keys])[has_row]
        emp_b = np.array([emp.get(k, np.nan) for k in keys])[has_row]
        nd_b = np.array([ndest.get(k, 0) for k in keys])[has_row]
        out["target_group_before"][p] = pd.Series((emp_b >= 10) & (emp_b <= 250) & (nd_b >= 1) & (nd_b <= 5),
                                                  index=g.index[has_row])
        gdf = g.rename("g").reset_index().rename(columns={"be_id": "BE_ID"})
        w = tr.merge(gdf, on="BE_ID")
        w = w[(w["year"] >= w["g"] - 5) & (w["year"] <= w["g"] - 1) & ((w["Uitvoer"] > 0) | (w["Invoer"] > 0))]
        ins = instr.merge(gdf, on="BE_ID")
        r = {
            "share_exporter_before": float((e_b > 0).mean()),
            "share_intl_before": float(((e_b > 0) | (i_b > 0)).mean()),
            "share_intl_5y": w["BE_ID"].nunique() / g.size,
            "share_gm_5y": {m: w.loc[w["iso"] == m, "BE_ID"].nunique() / g.size for m in truth["growth_markets"]},
            "share_instr_before": ins.loc[ins["year"] < ins["g"], "BE_ID"].nunique() / g.size,
            "share_target_group": float(((emp_b >= 10) & (emp_b <= 250) & (nd_b >= 1) & (nd_b <= 5)).mean()),
        }
        if p == "tinl":
            pairs = linked.drop_duplicates(["be_id", "Activiteit_ID"])
            reg_prov = files.reg.set_index(["BE_ID", "year"])["province"]
            fr = np.array([reg_prov.get((b, y)) for b, y in zip(pairs["be_id"], pairs["year"])], dtype=object)
            r["share_own_region"] = float((fr == pairs["Organiserende_regio"].to_numpy()).mean())
        out["reach"][p] = r
    pop = files.reg[["BE_ID", "year"]].merge(exp_y.rename("x").reset_index(), how="left", on=["BE_ID", "year"])
    out["population"] = {"share_exporter": {str(y): float((v.fillna(0) > 0).mean())
                                            for y, v in pop.groupby("year")["x"]}}
    out["linked_records"] = recs
    return out


def _assert_close_tree(got, want, path="", rel=1e-9):
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            _assert_close_tree(got[k], want[k], f"{path}.{k}", rel)
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_close_tree(a, b, f"{path}[{i}]", rel)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rel, abs=1e-10), path
    else:
        assert got == want, path


def _digest(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- tests

def test_deterministic_same_seed_same_files(small, tmp_path):
    d, truth = small
    truth2 = make_stub(tmp_path, n_firms=SMALL, seed=7)
    a, b = _digest(d), _digest(tmp_path)
    assert set(a) == set(b)
    # .sav headers carry a creation timestamp: compare contents, not bytes
    for rel in a:
        if rel.endswith(".sav"):
            pd.testing.assert_frame_equal(_read(d / rel), _read(tmp_path / rel), obj=rel)
        else:
            assert a[rel] == b[rel], rel
    assert truth == truth2
    pd.testing.assert_frame_equal(truth.potential_outcomes, truth2.potential_outcomes)


def test_different_seed_differs(small, tmp_path):
    d, truth = small
    truth3 = make_stub(tmp_path, n_firms=SMALL, seed=8)
    assert truth3.effects["tinl"]["simple"] != truth.effects["tinl"]["simple"]
    r7 = _read(d / "ABR" / "ABR_BE_2016V1.sav")
    r8 = _read(tmp_path / "ABR" / "ABR_BE_2016V1.sav")
    assert not r7["BE_ID"].isin(r8["BE_ID"]).all()


EXPECTED = {
    "ABR/ABR_BE_{y}V1.sav": {"BE_ID": "str", "SbiGecoordineerd": "str", "GkSbsGecoordineerd": "str",
                             "WPActueel": "num", "gemcode": "str"},
    "KvK/KVK_BE_{y}V1.sav": {"KVK_NR": "str", "BE_ID": "str"},
    "IHG/IHG_per_BE_ID{y}V1.sav": {"BE_ID": "str", "Land_HB": "str", "GS2": "str", "Uitvoer": "num", "Invoer": "num"},
}


def test_files_columns_types_and_identifiers():
    truth = json.loads((STUB / "truth.json").read_text())
    sizes = {"00", "10", "21", "22", "30", "40", "50", "60", "71", "72", "81", "82", "91", "92", "93"}
    c = pd.read_csv(ROOT / "src/reach/data/countries.csv", dtype=str)
    munis = set(pd.read_csv(ROOT / "src/reach/data/municipalities.csv", dtype=str)["gemcode"])
    for y in range(truth["first_year"], truth["last_year"] + 1):
        for pat, cols in EXPECTED.items():
            path = STUB / pat.format(y=y)
            df, meta = pyreadstat.read_sav(str(path))
            assert list(df.columns) == list(cols), path
            for col, kind in cols.items():
                want = "string" if kind == "str" else "double"
                assert meta.readstat_variable_types[col] == want, (path, col)
        reg = _read(STUB / f"ABR/ABR_BE_{y}V1.sav")
        assert reg["BE_ID"].str.fullmatch(r"\d{9,11}").all() and reg["BE_ID"].is_unique
        assert reg["SbiGecoordineerd"].str.fullmatch(r"\d{5}").all()
        assert set(reg["GkSbsGecoordineerd"]) <= sizes and set(reg["gemcode"]) <= munis
        assert (reg["WPActueel"] >= 0).all()
        lk = _read(STUB / f"KvK/KVK_BE_{y}V1.sav")
        assert lk["KVK_NR"].str.fullmatch(r"\d{8}").all() and lk["KVK_NR"].is_unique
        assert lk.groupby("BE_ID").size().max() > 1  # enterprise groups
        ihg = _read(_version_file(STUB, "IHG", "IHG_per_BE_ID", y))
        codes = set(c["geonom"].str.zfill(3)) if y <= 2015 else set(c["iso2"]) - {"NL"}
        assert set(ihg["Land_HB"]) <= codes, y
        assert ihg.duplicated(["BE_ID", "Land_HB"]).any()  # several goods chapters: must aggregate
        assert ihg["GS2"].str.fullmatch(r"\d{2}").all()
    assert (STUB / "IHG/IHG_per_BE_ID2019V1.sav").exists() and (STUB / "IHG/IHG_per_BE_ID2019V2.sav").exists()
    v1 = _read(STUB / "IHG/IHG_per_BE_ID2019V1.sav")
    v2 = _read(STUB / "IHG/IHG_per_BE_ID2019V2.sav")
    assert v1["Uitvoer"].sum() != v2["Uitvoer"].sum()
    ins, meta = pyreadstat.read_sav(str(STUB / "RVO/Achilles_instrumenten.sav"))
    assert list(ins.columns) == ["KVK_NR", "Jaar", "Regeling"]
    assert ins["KVK_NR"].str.fullmatch(r"\d{8}").all() and (ins["Jaar"] == ins["Jaar"].round()).all()
    nl = _read(STUB / "Programmas/NLiB_portaal.sav")
    assert list(nl.columns) == ["KvK_nummer", "Aanmeld_id"]
    tn, meta = pyreadstat.read_sav(str(STUB / "Programmas/TINL_activiteiten.sav"))
    assert list(tn.columns) == ["KvK_nummer", "Activiteit_ID", "Datum", "Organiserende_regio",
                                "Activiteit_type", "Persoon_ID"]
    assert meta.original_variable_types["Datum"].startswith("DATE")
    assert set(tn["Activiteit_type"]) == {"handelsmissie", "beurs", "webinar", "matchmaking"}
    assert set(tn["Organiserende_regio"]) <= set(pd.read_csv(ROOT / "src/reach/data/municipalities.csv")["province"])
    nw, meta = pyreadstat.read_sav(str(STUB / "Programmas/NLWorks_consortia.sav"))
    assert list(nw.columns) == ["KvK_nummer", "Consortium_ID", "Startjaar"]
    assert set(nw["Startjaar"].astype(int)) == {2019, 2020, 2021}
    # every kind of mess of CONTRACTS section 1 is present
    raw = pd.concat([nl["KvK_nummer"], tn["KvK_nummer"]])
    assert raw.str.contains(" ").any() and raw.str.contains(r"\.").any() and (raw == "").any()
    assert raw.str.contains("[A-Za-z]").any() and raw.str.fullmatch(r"\d{7}").any()
    assert raw.str.fullmatch(r"\d{9,}").any()


@pytest.mark.parametrize("which", ["small", "committed"])
def test_truth_consistent_with_files(which, small, request):
    if which == "small":
        d, t = small
        truth = t.to_dict()
        got = _recompute(Files(d, truth), truth)
    else:
        truth, _, got = request.getfixturevalue("committed")
    for key in ("waterfall", "n_users", "cohort_sizes", "population"):
        _assert_close_tree(got[key], truth[key], key)
    _assert_close_tree(got["reach"], truth["reach"], "reach")


def test_linked_firms_are_the_treated_and_observed_exports_are_y1(small):
    d, truth = small
    files = Files(d, truth.to_dict())
    got = _recompute(files, truth.to_dict())
    po = truth.potential_outcomes
    for p in ("nlib", "tinl", "nlw"):
        linked = got["linked_records"][p]
        g = linked[linked["bucket"] == "linked"].groupby("be_id")["year"].min()
        planted = po[po["programme"] == p].groupby("be_id")["cohort"].first()
        pd.testing.assert_series_equal(g.sort_index(), planted.sort_index(), check_names=False, check_dtype=False)
    obs = files.trade.groupby(["BE_ID", "year"])["Uitvoer"].sum()
    y1 = po.set_index(["be_id", "year"])["exports_1"]
    np.testing.assert_allclose(obs.reindex(y1.index).fillna(0.0).to_numpy(), y1.to_numpy())
    # users are established: in the register every year
    assert po.merge(files.reg, left_on=["be_id", "year"], right_on=["BE_ID", "year"]).shape[0] == len(po)
    pre = po[po["year"] < po["cohort"]]
    assert (pre["exports_0"] == pre["exports_1"]).all()
    assert (po.loc[po["programme"] == "nlib", "exports_0"] == po.loc[po["programme"] == "nlib", "exports_1"]).all()


def test_planted_att_recomputed_from_potential_outcomes(small):
    _, truth = small
    po = truth.potential_outcomes
    for p in ("tinl", "nlib", "nlw"):
        x = po[(po["programme"] == p) & (po["year"] >= po["cohort"])]
        x = x.assign(d=np.log1p(x["exports_1"]) - np.log1p(x["exports_0"]), e=x["year"] - x["cohort"])
        cells = x.groupby(["cohort", "year"])["d"].agg(["mean", "size"])
        want = {(int(g), int(t)): v for (g, t), v in cells["mean"].items()}
        got = {(r["group"], r["time"]): r["att"] for r in truth.effects[p]["att_gt"]}
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-10)
        assert truth.effects[p]["simple"] == pytest.approx(x["d"].mean(), abs=1e-10)
        dyn = x.groupby("e")["d"].mean()
        assert truth.effects[p]["dynamic"] == pytest.approx({str(k): v for k, v in dyn.items()}, abs=1e-10)
    # NLiB has no effect; TINL's effect is the planted tau_e on the firm-years that export
    # (log1p(Y e^tau) - log1p(Y) = tau up to 1/Y, and Y is in the thousands of EUR)
    assert all(r["att"] == 0.0 for p in ("nlib", "nlw") for r in truth.effects[p]["att_gt"])
    x = po[(po["programme"] == "tinl") & (po["year"] >= po["cohort"])]
    e = x["year"] - x["cohort"]
    want = ((x["exports_0"] > 0) * planted_effect(e, x["in_target_group"].to_numpy(bool))).groupby(e).mean()
    for ev, v in truth.effects["tinl"]["dynamic"].items():
        assert v == pytest.approx(want[int(ev)], abs=1e-3), ev


@pytest.mark.parametrize("which", ["small", "committed"])
def test_heterogeneity_rule_and_effects(which, small, request):
    """The planted subgroup is what the files show in g-1, and its ATTs come from both potential outcomes."""
    if which == "small":
        d, t = small
        truth = t.to_dict()
        got = _recompute(Files(d, truth), truth)
    else:
        truth, _, got = request.getfixturevalue("committed")
    het = truth["heterogeneity"]["tinl"]
    assert het["by"] == "target_group_before" and "10 <= employees <= 250" in het["definition"]
    tg = got["target_group_before"]["tinl"]
    inside, outside = int(tg.sum()), int((~tg).sum())
    assert het["n_users"] == {"inside target group": inside, "outside target group": outside}
    assert min(inside, outside) >= 0.2 * len(tg)  # both groups large enough to estimate
    simple = het["simple"]
    assert simple["inside target group"] - simple["outside target group"] == pytest.approx(0.10, abs=0.03)
    # the overall realised ATT is the firm-year weighted mix of the two groups
    assert min(simple.values()) < truth["effects"]["tinl"]["simple"] < max(simple.values())
    if which == "small":
        po = t.potential_outcomes
        x = po[(po["programme"] == "tinl") & (po["year"] >= po["cohort"])]
        flag = x["be_id"].map(tg)
        assert flag.notna().all() and (flag.to_numpy(bool) == x["in_target_group"].to_numpy(bool)).all()
        d_ = np.log1p(x["exports_1"]) - np.log1p(x["exports_0"])
        assert simple["inside target group"] == pytest.approx(d_[flag.to_numpy(bool)].mean(), abs=1e-10)
        assert simple["outside target group"] == pytest.approx(d_[~flag.to_numpy(bool)].mean(), abs=1e-10)


def test_other_outcomes_have_zero_effect_by_construction(small):
    """The effect is intensive only: exporter status and destinations equal under Y(0) and Y(1)."""
    _, truth = small
    po = truth.potential_outcomes
    for p in ("tinl", "nlib", "nlw"):
        x = po[po["programme"] == p]
        assert ((x["exports_0"] > 0) == (x["exports_1"] > 0)).all()
        assert (x["n_dest_0"] == x["n_dest_1"]).all()
        assert ((x["n_dest_1"] > 0) == (x["exports_1"] > 0)).all()
        assert truth.effects[p]["other_outcomes"] == {"exporter": 0.0, "n_dest": 0.0}
    # the intensive margin does move: exports rise for exporting treated firm-years
    t = po[(po["programme"] == "tinl") & (po["year"] >= po["cohort"]) & (po["exports_0"] > 0)]
    assert (t["exports_1"] > t["exports_0"]).all()


def _transitions(files: Files) -> pd.DataFrame:
    """Register firms present in consecutive years, with exports, destinations and GM presence in both."""
    tr = files.trade
    reg = files.reg[["BE_ID", "year", "WPActueel"]]
    x = tr.groupby(["BE_ID", "year"])["Uitvoer"].sum().rename("x")
    nd = tr[tr["Uitvoer"] > 0].groupby(["BE_ID", "year"]).size().rename("nd")
    gm = tr[tr["iso"].isin(GROWTH_MARKETS) & ((tr["Uitvoer"] > 0) | (tr["Invoer"] > 0))]
    gm = gm.groupby(["BE_ID", "year"]).size().rename("gm")
    df = reg.join(x, on=["BE_ID", "year"]).join(nd, on=["BE_ID", "year"]).join(gm, on=["BE_ID", "year"]).fillna(0)
    df["exp"] = df["x"] > 0
    prev = df.assign(year=df["year"] + 1)[["BE_ID", "year", "exp"]].rename(columns={"exp": "exp_prev"})
    df = df.merge(prev, on=["BE_ID", "year"], how="left")
    nxt = df.assign(year=df["year"] - 1)[["BE_ID", "year", "exp", "nd", "gm"]]
    return df, df.merge(nxt, on=["BE_ID", "year"], suffixes=("", "_next"))


def test_export_dynamics_have_churn(committed):
    """Exporter status, destinations and growth-market presence change within firms over time.

    Read from the written files: firms present in two consecutive years; the
    switching rates are those of a persistent process with a couple of percent churn.
    """
    truth, files, _ = committed
    df, pair = _transitions(files)
    switch = (pair["exp"] != pair["exp_next"]).mean()
    exit_rate = (~pair.loc[pair["exp"], "exp_next"]).mean()
    entry_rate = pair.loc[~pair["exp"], "exp_next"].mean()
    assert 0.01 <= switch <= 0.05, switch
    assert 0.01 <= exit_rate <= 0.06 and 0.005 <= entry_rate <= 0.05, (exit_rate, entry_rate)
    both = pair[pair["exp"] & pair["exp_next"]]
    assert 0.10 <= (both["nd"] != both["nd_next"]).mean() <= 0.60
    assert ((both["nd_next"] > both["nd"]).mean() > 0.05) and ((both["nd_next"] < both["nd"]).mean() > 0.05)
    assert (pair["gm"] != pair["gm_next"]).mean() > 0.02
    # firm-level within variation of the panel outcomes (not degenerate for DiD)
    within = df.groupby("BE_ID").agg(e=("exp", "nunique"), n=("nd", "nunique"))
    assert (within["e"] > 1).mean() > 0.03 and (within["n"] > 1).mean() > 0.15
    # the 5-year window now adds firms that traded earlier but not in g-1
    for p in ("nlib", "tinl"):
        assert truth["reach"][p]["share_intl_5y"] > truth["reach"][p]["share_intl_before"]


def test_export_exit_falls_with_size_and_tenure(committed):
    """Churn is among small, marginal exporters: large and established ones almost never stop.

    Exit rates read from the written files by employee class (CBS size-class
    bounds), and of first-year exporters against those exporting two years running.
    """
    _, files, _ = committed
    _, pair = _transitions(files)
    ex = pair[pair["exp"]]
    stop = ~ex["exp_next"]
    by = stop.groupby(pd.cut(ex["WPActueel"], [-1, 1, 4, 9, 49, np.inf])).agg(["mean", "size"])
    rates = by["mean"].to_numpy()
    assert by["size"].min() >= 500, by
    assert rates[0] >= 0.05, by                      # at most one employee
    assert np.all(np.diff(rates) <= 0), by           # falls with every size class
    assert rates[-2] <= 0.005 and rates[-1] <= 0.002, by  # 10-49 and 50+ employees
    first = ex["exp_prev"].eq(False)
    # a first-year exporter stops more often than a continuing one of the same size class
    small = ex["WPActueel"] <= 1
    assert stop[first & small].mean() > 3 * stop[~first & small & ex["exp_prev"].eq(True)].mean()
    # entry rises with size among the smallest firms (marginal firms export less often)
    non = pair[~pair["exp"]]
    start = non["exp_next"].groupby(non["WPActueel"] <= 1).mean()
    assert start[False] > start[True]


def test_export_hazards_keep_the_stationary_share():
    """Simulating the exporting chain from its stationary law keeps the planted share pi.

    Independent of the generator's loop: 200_000 firms with given pi, size, scale
    and age, 15 steps of (not, first-year, established) with the returned hazards.
    """
    rng = np.random.default_rng(3)
    n = 200_000
    pi = rng.uniform(0.02, 0.98, n)
    size = rng.uniform(0, 4, n)
    old = rng.random(n) < 0.6
    entry, exit_new, exit_est, p_non, p_new = synth._export_hazards(pi, size, rng.normal(0, 1.1, n), old)
    assert np.all((entry >= 0) & (entry <= 1) & (exit_est > 0) & (exit_new >= exit_est))
    ok = entry < synth._ENTRY_MAX  # the cap binds only where pi is near 1
    np.testing.assert_allclose(1 - p_non[ok], pi[ok], rtol=1e-9)
    u = rng.random(n)
    on, new = u >= p_non, (u >= p_non) & (u < p_non + p_new)
    shares, switches = [], []
    for _ in range(15):
        u = rng.random(n)
        on2 = np.where(on, u >= np.where(new, exit_new, exit_est), u < entry)
        new, switches = ~on & on2, switches + [(on2 != on)]
        on = on2
        shares.append(on.mean())
    expected = (1 - p_non).mean()
    assert max(abs(np.array(shares) - expected)) < 4 * np.sqrt(0.25 / n)  # 4 binomial SDs
    # young firms switch far more often than old ones of the same size
    sw = np.mean(switches, axis=0)
    assert sw[~old & (size < 1)].mean() > 10 * sw[old & (size < 1)].mean()


def test_committed_stub_matches_fresh_generation(tmp_path):
    committed = json.loads((STUB / "truth.json").read_text())
    fresh = make_stub(tmp_path, n_firms=committed["n_firms"], seed=committed["seed"],
                      first_year=committed["first_year"], last_year=committed["last_year"])
    _assert_close_tree(fresh.to_dict(), committed, "truth", rel=1e-9)
    assert read_truth(STUB) == read_truth(tmp_path / "truth.json")
    # every committed file is what the generator writes today: the same file names, the same
    # truth.json bytes and the same .sav contents (a .sav header carries its creation time, so
    # frames and SPSS formats are compared, not bytes). Refactoring make_stub must keep this.
    a, b = _digest(STUB), _digest(tmp_path)
    assert set(a) == set(b)
    for rel in a:
        if rel.endswith(".sav"):
            (x, mx), (y, my) = pyreadstat.read_sav(str(STUB / rel)), pyreadstat.read_sav(str(tmp_path / rel))
            pd.testing.assert_frame_equal(x, y, obj=rel)
            assert mx.original_variable_types == my.original_variable_types, rel
        else:
            assert a[rel] == b[rel], rel
    size = sum(p.stat().st_size for p in STUB.rglob("*") if p.is_file())
    assert size <= 6.5e6, f"committed stub is {size / 1e6:.1f} MB"


def test_realism_of_committed_stub():
    """Selection on observables as in the 2023 evaluation (issue 2)."""
    t = read_truth(STUB)
    assert 0.70 <= t.reach["nlib"]["share_exporter_before"] <= 0.86
    assert 0.90 <= t.reach["tinl"]["share_exporter_before"] <= 0.98
    assert all(0.33 <= v <= 0.47 for v in t.population["share_exporter"].values())
    assert 0.25 <= t.reach["nlib"]["share_target_group"] <= 0.45  # ~2/3 outside the target group
    for p in ("nlib", "tinl"):
        assert 0.45 <= t.reach[p]["share_instr_before"] <= 0.65
    for p, (lo, hi) in {"nlib": (0.15, 0.45), "tinl": (0.25, 0.65)}.items():
        gm = t.reach[p]["share_gm_5y"]  # 20-30% per market, more for China (issue 2)
        assert gm["CN"] == max(gm.values()) and all(lo <= v <= hi for v in gm.values()), p
    assert 0.18 <= np.median(list(t.reach["nlib"]["share_gm_5y"].values())) <= 0.30
    assert min(t.cohort_sizes["tinl"].values()) >= 80
    assert min(t.cohort_sizes["nlw"].values()) >= 40 and t.effects["nlw"]["simple"] == 0.0
    assert t.n_firms - sum(t.n_users.values()) > 0.9 * t.n_firms  # a large never-treated pool


def test_size_conditioning_recovers_effect_naive_does_not(committed):
    """Unconditional DiD is biased by size-dependent trends; adjusting for size is not."""
    truth, files, got = committed
    linked = got["linked_records"]["tinl"]
    g = linked[linked["bucket"] == "linked"].groupby("be_id")["year"].min()
    users_nlib = set(got["linked_records"]["nlib"].query("bucket == 'linked'")["be_id"])
    x = files.trade.groupby(["BE_ID", "year"])["Uitvoer"].sum()
    reg = files.reg[["BE_ID", "year", "WPActueel"]].merge(x.rename("x").reset_index(), how="left")
    reg["y"] = np.log1p(reg["x"].fillna(0.0))
    reg["le"] = np.log1p(reg["WPActueel"])
    reg["g"] = reg["BE_ID"].map(g).fillna(0).astype(int)
    reg = reg[~reg["BE_ID"].isin(users_nlib)]
    wide = reg.pivot(index="BE_ID", columns="year", values="y")
    le = reg.pivot(index="BE_ID", columns="year", values="le")
    gg = reg.groupby("BE_ID")["g"].first()
    # users are in the register every year; so are the comparison firms here, so that
    # both sides average the same post-treatment horizons (firms entering or leaving
    # the register would mix shorter horizons into the size trend)
    balanced = wide.notna().all(axis=1)
    tr = {(r["group"], r["time"]): r["att"] for r in truth["effects"]["tinl"]["att_gt"]}
    res_naive, res_adj, true = [], [], []
    last = truth["last_year"]
    for coh in (2018, 2019, 2020, 2021):
        # change from g-1 to the firm's mean over all post years: the size trend accumulates
        # with the horizon while export entries and exits (jumps of log1p) average out
        post = list(range(coh, last + 1))
        dy = (wide[post].mean(axis=1) - wide[coh - 1]).dropna()
        z = le[coh - 1].reindex(dy.index)
        treat = (gg.reindex(dy.index) == coh).to_numpy()
        ctrl = (gg.reindex(dy.index) == 0).to_numpy() & z.notna().to_numpy() & balanced.reindex(dy.index).to_numpy()
        res_naive.append(dy[treat].to_numpy() - dy[ctrl].mean())
        # outcome regression of the change on base-year size among never-treated (cubic in log1p)
        X = np.vander(z.to_numpy(), 4)
        beta = np.linalg.lstsq(X[ctrl], dy.to_numpy()[ctrl], rcond=None)[0]
        res_adj.append(dy[treat].to_numpy() - X[treat] @ beta)
        true += [np.mean([tr[(coh, t)] for t in post])] * int(treat.sum())
    naive, adj = np.concatenate(res_naive), np.concatenate(res_adj)
    se = adj.std(ddof=1) / np.sqrt(adj.size)
    bias_naive, bias_adj = naive.mean() - np.mean(true), adj.mean() - np.mean(true)
    # users grow faster (size trend): unconditional DiD overstates by several standard errors
    # (~15 SE on the committed stub: churn is among small firms, so the users' log1p changes are not noisy)
    assert bias_naive > 2.5 * se, (bias_naive, se)
    assert abs(bias_adj) < 2 * se, (bias_adj, se)
    assert bias_naive > 2.5 * abs(bias_adj), (bias_naive, bias_adj)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_firms"):
        make_stub("unused", n_firms=10)
    with pytest.raises(ValueError, match="first_year=2019"):
        make_stub("unused", n_firms=1000, first_year=2019)


def test_read_truth_rejects_incomplete(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(ValueError, match="lacks keys"):
        read_truth(tmp_path)


def test_truth_object_is_immutable_and_displays(small):
    _, truth = small
    assert isinstance(truth, Truth)
    with pytest.raises(AttributeError):
        truth.seed = 3
    tidy = truth.tidy()
    assert list(tidy.columns) == ["programme", "group", "time", "att"]
    assert len(tidy) == sum(len(truth.effects[p]["att_gt"]) for p in truth.effects)
    assert "tinl" in truth.summary() and truth._repr_html_().startswith("<pre>")
    assert truth.growth_markets == list(GROWTH_MARKETS)


def test_docstring_examples():
    res = doctest.testmod(synth, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 4 and res.failed == 0
