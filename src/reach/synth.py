"""Synthetic microdata in CBS layout, with planted reach and planted effects.

:func:`make_stub` writes a folder that looks like what a CBS Remote Access
analyst gets (SPSS ``.sav`` files with CBS column names, versioned yearly
files, messy participant lists) so that the whole suite runs unchanged on it,
and a ``truth.json`` with what the generator planted: the linkage waterfall,
the users and their cohorts, the realised reach shares and the realised
treatment effects (``docs/CONTRACTS.md`` sections 1 and 5).

Design of the data-generating process
-------------------------------------
Firm ``i`` has a base size ``E_i`` (employees) and ``l_i = log1p(E_i)``.
Participation in the programmes is selected on ``l_i`` and on a propensity to
use public instruments only (time-invariant), among established firms (in the
register every year).

Trade has churn, concentrated where it is in real trade data: among small,
young, marginal exporters. Whether a firm exports in year ``t`` is a Markov
chain over (not exporting, first year of a spell, established exporter) with
stationary exporter probability :math:`\\pi_i = \\sigma(a + b\\, l_i + s_{sector})`.
The exit hazard falls steeply with size, export scale and firm age
(:func:`_export_hazards`): young firms with no employees stop in roughly half
of the years, first-year exporters more often, while exporters with ten or more
employees and firms present all window (the programme users and their
comparable controls) almost never stop; entry is set so that the exporter
share stays at :math:`\\pi_i` (~40% of the population), so about 2% of
firms switch status a year. Importing is a two-state chain with exit
:math:`c(1-\\pi_i)` and entry :math:`c\\pi_i` (``c = 0.2``). Each firm has a
static set of potential partner countries (growing with size); its main
partner is active whenever it trades, each other one switches on and off by a
chain with stationary probability 0.6, so destinations (and growth-market
presence) are added and dropped yearly. Log exports of an exporter are

.. math::

    \\log Y_{it}(0) = \\mu_i + \\gamma_t + \\kappa (l_i - \\bar l)(t - t_0) - \\delta\\, N_{it} + \\varepsilon_{it},

with firm effects :math:`\\mu_i` (rising with size), common year shocks
:math:`\\gamma_t` (a dip in 2020), a size-dependent trend, a discount
:math:`\\delta` for the first year :math:`N_{it}=1` of an export spell and
iid noise; the total is split over the active destinations by static weights.
Users are larger, so a naive users-vs-others comparison and an unconditional
difference-in-differences are biased. Selection is on time-invariant
characteristics and the chains start and stay at their stationary laws, whose
means depend on size and sector only: users are old firms, whose exporting
chain is slower, but a stationary chain's mean does not move, so the expected
change of every export outcome (status, destinations, amounts) given size is
the same for users and non-users. Parallel trends hold conditionally on size,
and DiD with
``xformla="~ log_employees"`` (or matching on pre-treatment covariates
followed by DiD) recovers the planted effect. (Conditioning additionally on
base-period ``exporter`` is also valid in the population, but the linear
outcome model then misfits the strongly non-linear entry and exit terms.)

TINL (cohorts 2018-2021, equal sizes) raises the exports of exporting users by
the factor :math:`\\exp(\\tau_e)`, :math:`\\tau_e = 0.10 + 0.05 \\min(e, 3)` at
event time :math:`e = t - g \\ge 0`, plus 0.10 for users inside the programme's
target group in ``g - 1`` (the one planted subgroup effect, ``truth.json``
``heterogeneity``); NLiB (all cohort 2019) and NLWorks (sector consortia,
project start years 2019-2021, ``Programmas/NLWorks_consortia.sav``) have no
effect. Both
potential outcomes share every random draw except this multiplier, so the
effect is on the intensive margin only: the true ATT on ``exporter`` and
``n_dest`` is exactly 0 (``truth.json``: ``effects.<programme>.other_outcomes``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reach.countries import DEFAULT_GROWTH_MARKETS

__all__ = ["GROWTH_MARKETS", "Truth", "make_stub", "read_truth", "planted_effect"]

#: The evaluation's ten growth markets (ISO-2).
GROWTH_MARKETS = DEFAULT_GROWTH_MARKETS  # the stub plants its effects in the evaluation's markets

_BUCKETS = ("invalid_kvk", "duplicate_record", "outside_window", "kvk_not_found",
            "not_linked_that_year", "not_in_register", "linked")
_TINL_COHORTS = (2018, 2019, 2020, 2021)
_TINL_LAST_ACTIVITY_YEAR = 2022  # programme ran 2017-2022; first use only in the cohort years
_NLIB_YEAR = 2019  # default_year of the portal list (it has no dates)
_NLW_COHORTS = (2019, 2020, 2021)  # NLWorks: project start years of the sector consortia
_NLW_FILE = "NLWorks_consortia.sav"
# Heterogeneity planted for issue 15: TINL's effect is this much larger (log points) for
# users inside the programme's target group in the year before first use.
_HET_EXTRA = 0.10
_HET_RULE = "target_group_before"
_HET_DEFINITION = ("inside the target group in the year before first use (g-1): 10 <= employees <= 250 "
                   "and 1 <= number of export destinations <= 5 (register employees, IHG destinations "
                   "with exports > 0 in g-1)")
_HET_LABELS = ("inside target group", "outside target group")
_STALE_YEAR = 2019  # year delivered twice: V1 stale, V2 correct
_GEONOM_UNTIL = 2015  # trade files up to this year code countries as GEONOM numbers

# Year shocks of log exports (the 2020 dip); years outside get the nearest value.
_GAMMA = {2014: 0.00, 2015: 0.03, 2016: 0.05, 2017: 0.09, 2018: 0.12, 2019: 0.13,
          2020: -0.07, 2021: 0.14, 2022: 0.19, 2023: 0.18}
_KAPPA = 0.05  # size-dependent trend: log points per year per unit of log1p(employees)
_L_CENTRE = 1.5
# Extensive-margin dynamics. Exporting is a three-state chain (not exporting,
# first year of a spell, established exporter) whose exit hazards fall steeply
# with size, export scale and age (_export_hazards); entry is set so that the
# stationary exporter probability is pi_i. Importing is a two-state chain with
# entry c * pi_i, exit c * (1 - pi_i). Each potential partner country beyond the
# firm's main one is active with stationary probability _RHO_PAIR.
_EXIT_LOGIT = (0.2, 0.3, 0.9, 0.5)  # exit log-odds of an established exporter: 1, -l, -l^2, -scale
_EXIT_OLD = 5.5  # log-odds less for old firms (in the register all window)
_EXIT_NEW = 0.6  # log-odds added to the exit hazard in the first year of an export spell
_ENTRY_MAX = 0.6
_CHURN_M = 0.20
_CHURN_PAIR = 0.40
_RHO_PAIR = 0.60
_PI_MIN = 0.003  # below this a firm never trades (no potential partners: bounded memory)
_ENTRY_DISCOUNT = 0.7  # log points: first-year exports of a new export spell are smaller

# SBI 2008 codes (5 digits) with population weight and an exporting propensity shift.
_SBI = [("01130", 3, 0.0), ("10890", 2, 0.9), ("20590", 1, 1.0), ("25620", 2, 0.6),
        ("28990", 1, 1.0), ("41200", 4, -1.2), ("43210", 5, -1.2), ("46190", 4, 0.3),
        ("46900", 4, 0.7), ("47190", 5, -0.8), ("47910", 4, -0.3), ("49410", 3, 0.0),
        ("52290", 2, 0.3), ("56101", 4, -1.5), ("62010", 6, -0.3), ("64191", 1, -1.0),
        ("68201", 3, -1.5), ("69201", 5, -1.0), ("70221", 6, -0.5), ("71121", 3, -0.5),
        ("74101", 4, -0.5), ("77390", 1, -0.3), ("82990", 3, -0.3), ("86211", 3, -2.0),
        ("95110", 1, -0.5), ("96021", 3, -2.0)]
_MUNI_WEIGHT = {"0363": 8, "0599": 6, "0518": 5, "0344": 4, "0772": 3, "0855": 2, "0014": 2,
                "0202": 2, "0268": 2, "0034": 2, "0392": 2, "0546": 1.5, "0153": 1.5,
                "0193": 1.5, "0796": 1.5, "0935": 1.5, "0080": 1, "0106": 1, "0687": 1, "0983": 1}
# Destination weights (exports); unlisted countries get 0.3. NL is never a destination.
_XW = {"DE": 10, "BE": 9, "FR": 6, "GB": 5, "US": 3.5, "IT": 3, "ES": 3, "PL": 2.5, "SE": 1.5,
       "DK": 1.5, "AT": 1.2, "CH": 1.2, "NO": 1.0, "IE": 0.8, "CZ": 1.0, "FI": 0.7, "PT": 0.6,
       "HU": 0.6, "CN": 4.0, "TR": 2.6, "RO": 2.5, "IN": 2.6, "BG": 2.4, "ZA": 2.5, "RU": 2.5,
       "MY": 2.4, "MX": 2.5, "TH": 2.4, "JP": 0.8, "CA": 0.6, "AE": 0.6}
_MW_EXTRA = {"CN": 2.5, "IN": 0.4, "TH": 0.3, "MY": 0.3, "TR": 0.3}  # import origins add these
_INSTRUMENTS = np.array(["WBSO", "Innovatiekrediet", "DHI", "PIB", "SIB", "DTIF", "MIT",
                         "Starters International Business", "Vouchers DHI", "Garantie Ondernemingsfinanciering"])
_INSTR_W = np.array([30, 4, 5, 3, 6, 3, 8, 6, 3, 4], dtype=float)
_ACTIVITY_TYPES = np.array(["handelsmissie", "beurs", "webinar", "matchmaking"])
_ACTIVITY_W = np.array([0.3, 0.3, 0.25, 0.15])
# CBS size classes (GkSbsGecoordineerd): lower bound of employees -> code.
_CHAPTERS = np.array([f"{i:02d}" for i in range(100)], dtype=object)
_GK_LOWER = np.array([0, 1, 2, 3, 5, 10, 20, 50, 100, 150, 200, 250, 500, 1000, 2000])
_GK_CODE = np.array(["00", "10", "21", "22", "30", "40", "50", "60", "71", "72", "81", "82", "91", "92", "93"])


def planted_effect(event_time, in_target_group=False) -> np.ndarray:
    """Planted TINL effect on log exports at event time ``e = t - g``.

    Parameters
    ----------
    event_time : array-like of int
    in_target_group : bool or array-like of bool, default False
        Whether the user was inside the programme's target group in ``g - 1``
        (the planted heterogeneity, ``truth.json`` key ``heterogeneity``).

    Returns
    -------
    numpy.ndarray
        :math:`\\tau_e = 0.10 + 0.05 \\min(e, 3) + 0.10\\,T` for ``e >= 0``
        (``T = 1`` inside the target group), 0 before.

    Examples
    --------
    >>> planted_effect([-1, 0, 1, 5]).round(2).tolist()
    [0.0, 0.1, 0.15, 0.25]
    >>> planted_effect([-1, 0], in_target_group=True).round(2).tolist()
    [0.0, 0.2]
    """
    e = np.asarray(event_time)
    extra = _HET_EXTRA * np.asarray(in_target_group, dtype=float)
    return np.where(e >= 0, 0.10 + 0.05 * np.minimum(np.maximum(e, 0), 3) + extra, 0.0)


@dataclass(frozen=True)
class Truth:
    """What :func:`make_stub` planted (``data_stub/truth.json``, CONTRACTS.md section 5).

    Attributes mirror the keys of ``truth.json``. ``potential_outcomes``
    exists only in memory (``None`` after :func:`read_truth`): one row per
    linked user and register year with ``programme, be_id, year, cohort,
    exports_0, exports_1, n_dest_0, n_dest_1`` (EUR, the totals of the
    written trade rows under no treatment and under treatment, and the number
    of export destinations under each), from which the planted ATTs can be
    recomputed.

    Notes
    -----
    The realised group-time effect is, over the linked cohort-``g`` firms
    present in year ``t``,

    .. math:: ATT(g, t) = \\frac{1}{N_{gt}} \\sum_i \\left[\\log(1 + Y_{it}(1)) - \\log(1 + Y_{it}(0))\\right];

    ``simple`` averages the post-treatment cells weighted by cohort size (as
    R ``did::aggte(type = "simple")``) and ``dynamic`` the cells with equal
    event time ``e = t - g``, weighted by cohort size.
    """

    seed: int
    n_firms: int
    first_year: int
    last_year: int
    growth_markets: list
    waterfall: dict
    n_users: dict
    cohort_sizes: dict
    effects: dict
    reach: dict
    population: dict
    heterogeneity: dict = field(default_factory=dict)
    potential_outcomes: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The JSON-serialisable part (everything but ``potential_outcomes``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "potential_outcomes"}

    def tidy(self) -> pd.DataFrame:
        """Planted group-time effects: ``programme, group, time, att``."""
        rows = [{"programme": p, "group": int(r["group"]), "time": int(r["time"]), "att": float(r["att"])}
                for p, eff in self.effects.items() for r in eff["att_gt"]]
        return pd.DataFrame(rows, columns=["programme", "group", "time", "att"])

    def summary(self) -> str:
        """Short text: users, cohorts and planted overall effects."""
        lines = [f"Synthetic stub: seed={self.seed}, n_firms={self.n_firms}, years {self.first_year}-{self.last_year}"]
        for p in self.n_users:
            wf = self.waterfall[p]
            lines.append(f"  {p}: {self.n_users[p]} users, cohorts {self.cohort_sizes[p]}, "
                         f"{wf['linked']} of {wf['total']} records linked, "
                         f"planted simple ATT on {self.effects[p]['outcome']} = {self.effects[p]['simple']:.4f}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return "```\n" + self.summary() + "\n```"

    def _repr_html_(self) -> str:
        return "<pre>" + self.summary().replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


def read_truth(path: str | Path) -> Truth:
    """Read a ``truth.json`` written by :func:`make_stub` (``potential_outcomes`` is ``None``).

    Parameters
    ----------
    path : str or Path
        The file, or the stub folder holding ``truth.json``.

    Returns
    -------
    Truth
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    d = json.loads(p.read_text(encoding="utf-8"))
    names = [f.name for f in fields(Truth) if f.name != "potential_outcomes"]
    missing = [k for k in names if k not in d and k != "heterogeneity"]
    if missing:
        raise ValueError(f"{p}: truth file lacks keys {missing}; it has {sorted(d)}")
    return Truth(**{k: d[k] for k in names if k in d})


# ----------------------------------------------------------------------------- helpers

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _export_hazards(pi: np.ndarray, lsz: np.ndarray, scale: np.ndarray, old: np.ndarray):
    """Yearly transition probabilities of the exporting chain.

    Parameters
    ----------
    pi : numpy.ndarray
        Stationary probability of exporting (0 for firms that never export).
    lsz : numpy.ndarray
        ``log1p`` of base employees.
    scale : numpy.ndarray
        Export scale relative to firms of the same size (log points).

    Returns
    -------
    entry, exit_new, exit_est, p_non, p_new : numpy.ndarray
        Entry hazard of a non-exporter, exit hazards of first-year and of
        established exporters, and the stationary probabilities of not
        exporting and of being in the first year of a spell.

    Notes
    -----
    Established exporters stop with

    .. math:: b_E = \\sigma(\\alpha_0 - \\alpha_1 l_i - \\alpha_2 l_i^2 - \\alpha_3 s_i - \\alpha_4 O_i),

    where :math:`O_i = 1` for old firms (in the register all window), first-year
    exporters with :math:`b_F = \\sigma(\\operatorname{logit} b_E + \\beta)`
    (``_EXIT_LOGIT``, ``_EXIT_OLD``, ``_EXIT_NEW``): about half of the young
    firms without employees stop in a year, young firms with ten employees
    well under 1%, old firms hardly ever. With entry :math:`a` the stationary
    law solves :math:`p_F = a p_N`, :math:`b_E p_E = (1 - b_F) p_F`, so

    .. math:: a = \\frac{\\pi/(1-\\pi)}{1 + (1 - b_F)/b_E}

    keeps the exporter share at :math:`\\pi_i` (entry capped at 0.6 for the
    few very large firms whose :math:`\\pi_i` is close to 1; their share is
    then a hair lower). The chain's speed varies with age and scale, its
    stationary mean only with size and sector: expected changes of exports
    given size do not depend on age, which keeps conditional parallel trends.

    Examples
    --------
    >>> pi, size = np.array([0.1, 0.95, 0.1]), np.array([0.0, 3.0, 0.0])
    >>> a, bf, be, pn, pf = _export_hazards(pi, size, np.zeros(3), np.array([False, False, True]))
    >>> bool(be[0] > 0.3 and be[1] < 0.001 and be[2] < 0.01 and (bf > be).all())
    True
    >>> np.round(1 - pn, 4).tolist()
    [0.1, 0.95, 0.1]
    """
    c0, c1, c2, c3 = _EXIT_LOGIT
    lo = c0 - c1 * lsz - c2 * lsz ** 2 - c3 * scale - _EXIT_OLD * old
    exit_est = _sigmoid(lo)
    exit_new = _sigmoid(lo + _EXIT_NEW)
    odds = pi / np.clip(1.0 - pi, 1e-12, None)
    entry = np.clip(odds / (1.0 + (1.0 - exit_new) / exit_est), 0.0, _ENTRY_MAX)
    # stationary law of (not, first year, established) given the capped entry
    p_non = 1.0 / (1.0 + entry + entry * (1.0 - exit_new) / exit_est)
    return entry, exit_new, exit_est, p_non, entry * p_non


def _unique_ints(rng, low, high, n, exclude=None) -> np.ndarray:
    """n distinct random integers in [low, high), in random order, none in ``exclude``.

    Draws with replacement and drops repeats, because ``choice(replace=False)``
    on a population of 1e8-1e11 would materialise the whole population.
    """
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        x = rng.integers(low, high, size=int((n - out.size) * 1.2) + 16)
        x = np.concatenate([out, x])
        _, first = np.unique(x, return_index=True)
        x = x[np.sort(first)]
        if exclude is not None:
            x = x[~np.isin(x, exclude)]
        out = x
    return out[:n]


def _size_class(emp: np.ndarray) -> np.ndarray:
    return _GK_CODE[np.searchsorted(_GK_LOWER, emp, side="right") - 1]


def _mess_kvk(rng, kvk: np.ndarray) -> np.ndarray:
    """Format valid KvK numbers as people type them; all normalise back to ``kvk``."""
    s = pd.Series(kvk, dtype="str")
    u = rng.random(len(s))
    spaced = s.str[:4] + " " + s.str[4:]
    dotted = s.str[:2] + "." + s.str[2:4] + "." + s.str[4:6] + "." + s.str[6:]
    dashed = s.str[:4] + "-" + s.str[4:]
    nozero = s.str.lstrip("0")
    out = np.where(u < 0.10, spaced, np.where(u < 0.20, dotted, np.where(u < 0.25, dashed, s)))
    # dropping leading zeros is the commonest error where there are zeros to drop
    out = np.where((u >= 0.25) & (u < 0.50) & s.str.startswith("0").to_numpy(), nozero, out)
    return out.astype(object)


def _invalid_kvk(rng, n: int) -> np.ndarray:
    """Strings that are not 8 digits after removing separators and restoring zeros."""
    digits = pd.Series(rng.integers(10_000_000, 100_000_000, size=n).astype(str), dtype="str")
    letters = np.array(list("ABCDEFGHJKLMNPRSTX"))[rng.integers(0, 18, size=n)]
    kind = rng.integers(0, 5, size=n)
    lettered = digits.str[:3] + letters + digits.str[4:]
    too_long = digits + pd.Series(rng.integers(1, 100, size=n).astype(str), dtype="str")
    out = np.where(kind == 0, lettered, np.where(kind == 1, too_long, np.where(
        kind == 2, "", np.where(kind == 3, "onbekend", "NL" + digits))))
    return out.astype(object)


def _kvk_str(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).astype(str).str.zfill(8).to_numpy(dtype=object)


def _ids(prefix: str, numbers, width: int) -> np.ndarray:
    """``prefix`` + zero-padded numbers, vectorised (record and activity identifiers)."""
    return (prefix + pd.Series(numbers).astype(str).str.zfill(width)).to_numpy(dtype=object)


def _obj(values) -> pd.Series:
    """Strings as an object column: pyreadstat writes these much faster than arrow strings."""
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def _write_sav(df: pd.DataFrame, path: Path, formats: dict | None = None) -> None:
    import pyreadstat

    path.parent.mkdir(parents=True, exist_ok=True)
    pyreadstat.write_sav(df, str(path), compress=True, variable_format=formats or {})


def _choose_sets(rng, n_pick: np.ndarray, weights: np.ndarray, chunk: int = 100_000):
    """For each unit, ``n_pick[i]`` distinct categories drawn with probabilities ~ weights.

    Gumbel top-k in chunks of units (bounded memory). Returns (unit, category).
    """
    logw = np.log(weights)
    units, cats = [], []
    idx = np.flatnonzero(n_pick > 0)
    for a in range(0, idx.size, chunk):
        ii = idx[a:a + chunk]
        keys = logw[None, :] + rng.gumbel(size=(ii.size, weights.size))
        order = np.argsort(-keys, axis=1)
        take = np.arange(weights.size)[None, :] < n_pick[ii][:, None]
        units.append(np.repeat(ii, take.sum(axis=1)))
        cats.append(order[take])
    if not units:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(units), np.concatenate(cats)


# ----------------------------------------------------------------------------- main

def make_stub(out_dir: str | Path, n_firms: int = 10_000, seed: int = 0,
              first_year: int = 2014, last_year: int = 2023) -> Truth:
    """Write synthetic CBS-shaped microdata with planted truth to ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write (created; existing stub files are overwritten).
    n_firms : int, default 10_000
        Business units ever alive in the window (each year's register holds
        roughly 80% of them).
    seed : int, default 0
        Seed of the numpy ``Generator``; same seed, same files.
    first_year, last_year : int, default 2014, 2023
        Window of the yearly files. Must contain 2017-2022 (the programmes'
        years and a year before the first cohort).

    Returns
    -------
    Truth
        What was planted; also written to ``out_dir/truth.json``.

    Notes
    -----
    Files and columns follow ``docs/CONTRACTS.md`` section 1. Each participant
    record is planted in one waterfall bucket (section 3): every user's first
    record links; invalid numbers, unknown numbers, numbers of firms not linked
    in that year and numbers of firms outside the register that year are
    *extra* records, never a user's only record, so the linked firms are
    exactly the treated firms. Trade is generated and written one year at a
    time, so memory stays bounded for ``n_firms`` in the millions.

    Exporting, importing and each partner country switch on and off by
    Markov chains carried from year to year as per-firm and per-pair arrays;
    the exporting chain's hazards are those of :func:`_export_hazards`.
    The export potential outcomes are (module docstring)
    :math:`\\log Y_{it}(0) = \\mu_i + \\gamma_t + \\kappa (l_i - \\bar l)(t - t_0) - \\delta N_{it} + \\varepsilon_{it}`
    and, for exporting TINL users of cohort ``g``,
    :math:`Y_{it}(1) = Y_{it}(0) \\exp(\\tau_{t-g})` for ``t >= g``.

    Examples
    --------
    >>> import tempfile
    >>> from reach.synth import make_stub
    >>> with tempfile.TemporaryDirectory() as d:
    ...     truth = make_stub(d, n_firms=1_000, seed=1)
    ...     sorted(p.name for p in (Path(d) / "Programmas").iterdir())
    ['NLWorks_consortia.sav', 'NLiB_portaal.sav', 'TINL_activiteiten.sav']
    >>> sorted(truth.cohort_sizes["tinl"])
    ['2018', '2019', '2020', '2021']
    >>> truth.effects["nlib"]["simple"]
    0.0
    """
    _check_stub_args(n_firms, first_year, last_year)
    s = _setup(Path(out_dir), int(n_firms), seed, first_year, last_year)
    _draw_firms(s)
    _draw_users(s)
    _draw_trade_pairs(s)
    _write_yearly_files(s)
    _write_instruments(s)
    _write_participants(s)
    return _write_truth(s)


# ----------------------------------------------------------------------------- stages
# make_stub runs these in order on one _Stub. Each stage draws from its own streams in a
# fixed order, so splitting the generator into stages left every file and number unchanged
# (tests/test_synth.py compares a fresh stub with the committed one, file by file).

class _Stub:
    """The generator's working state, passed from stage to stage (arrays over firms, pairs, users)."""


def _check_stub_args(n_firms: Any, first_year: int, last_year: int) -> None:
    if not isinstance(n_firms, (int, np.integer)) or n_firms < 500:
        raise ValueError(f"n_firms must be an integer >= 500 (enough users for four cohorts); got {n_firms!r}")
    if not (first_year <= min(_TINL_COHORTS) - 1 and last_year >= _TINL_LAST_ACTIVITY_YEAR):
        raise ValueError(f"the window must contain {min(_TINL_COHORTS) - 1}-{_TINL_LAST_ACTIVITY_YEAR}; "
                         f"got first_year={first_year!r}, last_year={last_year!r}")


def _setup(out: Path, n: int, seed: int, first_year: int, last_year: int) -> _Stub:
    """Output folder, random streams and reference tables."""
    s = _Stub()
    out.mkdir(parents=True, exist_ok=True)
    s.out, s.n, s.seed, s.first_year, s.last_year = out, n, seed, first_year, last_year
    s.years = np.arange(first_year, last_year + 1)
    ss = np.random.SeedSequence(seed)
    # the sixth stream (NLWorks) was added later: spawned children are keyed by index,
    # so the first five streams, and every file drawn from them, are unchanged
    s.r_firm, s.r_trade, s.r_part, s.r_instr, s.r_year, s.r_nlw = (np.random.default_rng(x) for x in ss.spawn(6))
    s.year_rngs = [np.random.default_rng(x) for x in np.random.SeedSequence([seed, 1]).spawn(len(s.years))]
    countries = pd.read_csv(resources.files("reach").joinpath("data/countries.csv"), dtype=str)
    s.munis = pd.read_csv(resources.files("reach").joinpath("data/municipalities.csv"), dtype=str)
    s.iso = countries["iso2"].to_numpy()
    s.geonom = countries["geonom"].str.zfill(3).to_numpy()
    s.gm_idx = np.array([np.flatnonzero(s.iso == m)[0] for m in GROWTH_MARKETS])
    return s


def _draw_firms(s: _Stub) -> None:
    """Firms: size, sector, municipality, entry and exit, trade propensities, KvK numbers and BE_IDs."""
    n, r_firm, first_year, last_year = s.n, s.r_firm, s.first_year, s.last_year
    emp0 = np.floor(np.exp(r_firm.normal(0.7, 1.5, size=n))).clip(0, 30_000)
    lsz = np.log1p(emp0)
    sbi_w = np.array([w for _, w, _ in _SBI], float)
    s.sector = r_firm.choice(len(_SBI), size=n, p=sbi_w / sbi_w.sum())
    sec_eff = np.array([e for _, _, e in _SBI])[s.sector]
    s.muni_codes = s.munis["gemcode"].to_numpy()
    mw = np.array([_MUNI_WEIGHT.get(c, 1.0) for c in s.muni_codes])
    s.muni = r_firm.choice(len(s.muni_codes), size=n, p=mw / mw.sum())
    s.province = s.munis["province"].to_numpy()[s.muni]

    # entry and exit; established firms are in the register every year
    est = r_firm.random(n) < 0.62
    entry = np.where(r_firm.random(n) < 0.4, first_year, r_firm.integers(first_year + 1, last_year + 1, size=n))
    last = np.where(r_firm.random(n) < 0.4, last_year, entry + np.floor(r_firm.random(n) * (last_year - entry)).astype(int))
    both_full = (entry == first_year) & (last == last_year)
    last = np.where(both_full & ~est, first_year + np.floor(r_firm.random(n) * (last_year - first_year)).astype(int), last)
    s.entry = np.where(est, first_year, entry)
    s.last = np.where(est, last_year, last)
    # KvK registrations outlive some units by a year: linked, but not in the register
    s.linger = (~est) & (s.last < last_year) & (r_firm.random(n) < 0.06)
    s.link_last = s.last + s.linger

    # Stationary probabilities of the extensive margins (exporting, importing).
    s.pi_x = _sigmoid(-2.6 + 2.3 * lsz + 0.7 * sec_eff)
    s.pi_m = _sigmoid(-2.2 + 2.0 * lsz + 0.4 * sec_eff)
    s.mu = 9.3 + 0.9 * lsz + r_firm.normal(0, 1.1, size=n)
    s.nu = 9.0 + 0.9 * lsz + r_firm.normal(0, 1.2, size=n)
    s.z_instr = r_firm.normal(0, 1, size=n) + 0.4 * (lsz - 1.0)
    s.emp0, s.lsz, s.est = emp0, lsz, est
    _draw_identifiers(s)


def _draw_identifiers(s: _Stub) -> None:
    """KvK numbers (several for enterprise groups) and BE_IDs of 9-11 digits, all distinct."""
    n, r_firm = s.n, s.r_firm
    n_kvk = 1 + np.where(r_firm.random(n) < 0.02 + 0.12 * (s.emp0 >= 50), r_firm.integers(1, 4, size=n), 0)
    s.kvk_all = _unique_ints(r_firm, 0, 100_000_000, int(n_kvk.sum()))
    s.kvk_firm = np.repeat(np.arange(n), n_kvk)
    s.kvk_first = np.concatenate([[0], np.cumsum(n_kvk)[:-1]])
    s.kvk_str = _kvk_str(s.kvk_all)
    s.n_kvk = n_kvk
    blen = r_firm.choice([9, 10, 11], size=n, p=[0.3, 0.4, 0.3])
    be_num = _unique_ints(r_firm, 0, 10**8, n)  # distinct middle 8 digits make the ids distinct
    s.be_str = (pd.Series(r_firm.integers(1, 10, size=n)).astype(str)
                + pd.Series(be_num).astype(str).str.zfill(8)
                + pd.Series(np.where(blen >= 10, r_firm.integers(0, 10, size=n).astype(str), ""))
                + pd.Series(np.where(blen >= 11, r_firm.integers(0, 10, size=n).astype(str), ""))).to_numpy(dtype=object)


def _top(score: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(-score, kind="stable")[:k])


def _draw_users(s: _Stub) -> None:
    """The three programmes' users and their cohorts."""
    n, lsz, z_instr, r_firm, r_nlw = s.n, s.lsz, s.z_instr, s.r_firm, s.r_nlw
    # Users are chosen on size and instrument propensity only (never on exporter
    # status or outcome shocks), so parallel trends hold conditionally on size.
    # Users are established firms (balanced for treated units); the two
    # programmes' users are disjoint so NLiB's planted null is not TINL's effect.
    elig = s.est.copy()
    s_tinl = np.where(elig, 2.0 * lsz + 0.6 * z_instr + r_firm.logistic(size=n), -np.inf)
    tinl = _top(s_tinl, max(8, round(0.036 * n)))
    elig[tinl] = False
    s_nlib = np.where(elig, 1.3 * lsz + 0.6 * z_instr + r_firm.logistic(size=n), -np.inf)
    nlib = _top(s_nlib, max(8, round(0.032 * n)))
    cohort_tinl = np.array(_TINL_COHORTS)[r_firm.permutation(tinl.size) % len(_TINL_COHORTS)]
    s.g_tinl = np.zeros(n, dtype=np.int64)
    s.g_tinl[tinl] = cohort_tinl
    # NLWorks: consortium members, disjoint from the other two, from their own stream; selected
    # only mildly on size, so that the large firms the other programmes' comparison groups need
    # (their users are left out of each other's comparison groups) are not used up
    elig[nlib] = False
    s_nlw = np.where(elig, 0.6 * lsz + 0.4 * z_instr + r_nlw.logistic(size=n), -np.inf)
    nlw = _top(s_nlw, max(6, round(0.015 * n)))
    cohort_nlw = np.array(_NLW_COHORTS)[r_nlw.permutation(nlw.size) % len(_NLW_COHORTS)]

    s.users = np.concatenate([tinl, nlib, nlw])
    s.user_prog = np.array(["tinl"] * tinl.size + ["nlib"] * nlib.size + ["nlw"] * nlw.size)
    s.user_g = np.concatenate([cohort_tinl, np.full(nlib.size, _NLIB_YEAR), cohort_nlw])
    # target-group membership of TINL users in g-1, set in the yearly loop when g-1 is drawn
    s.tg_tinl = np.zeros(n, dtype=bool)
    s.upos = np.full(n, -1)
    s.upos[s.users] = np.arange(s.users.size)
    s.tinl, s.nlib, s.nlw, s.cohort_tinl, s.cohort_nlw = tinl, nlib, nlw, cohort_tinl, cohort_nlw


def _draw_trade_pairs(s: _Stub) -> None:
    """Potential partner countries per firm, the chains' starting states and the goods rows."""
    # Each firm has a static set of *potential* partner countries with static
    # weights; which of them are active, and whether the firm trades at all,
    # follows Markov chains carried from year to year (below). Firms whose
    # stationary probability is negligible get no potential partners and never
    # trade, which keeps the pair arrays small for millions of firms.
    iso, r_trade, lsz, n = s.iso, s.r_trade, s.lsz, s.n
    cw_x = np.array([_XW.get(c, 0.3) for c in iso], float)
    cw_x[iso == "NL"] = 1e-12
    cw_m = cw_x + np.array([_MW_EXTRA.get(c, 0.0) for c in iso])
    pot_x, pot_m = s.pi_x >= _PI_MIN, s.pi_m >= _PI_MIN
    s.pi_x, s.pi_m = np.where(pot_x, s.pi_x, 0.0), np.where(pot_m, s.pi_m, 0.0)
    # potential sets are larger than the active ones by 1/_RHO_PAIR (the main partner is always active)
    k_x = np.where(pot_x, 1 + r_trade.poisson(np.exp(-0.9 + 0.7 * lsz) / _RHO_PAIR), 0).clip(0, len(iso) - 1)
    k_m = np.where(pot_m, 1 + r_trade.poisson(np.exp(-0.9 + 0.65 * lsz) / _RHO_PAIR), 0).clip(0, len(iso) - 1)
    xu, xc = _choose_sets(r_trade, k_x, cw_x)
    mu_, mc = _choose_sets(r_trade, k_m, cw_m)
    # _choose_sets lists each unit's categories best-ranked first: that one is the main partner
    x_main = np.r_[True, xu[1:] != xu[:-1]] if xu.size else np.zeros(0, bool)
    m_main = np.r_[True, mu_[1:] != mu_[:-1]] if mu_.size else np.zeros(0, bool)
    xs = r_trade.lognormal(0, 1, size=xu.size) * cw_x[xc] * np.where(x_main, 3.0, 1.0)
    ms = r_trade.lognormal(0, 1, size=mu_.size) * cw_m[mc] * np.where(m_main, 3.0, 1.0)
    key = np.concatenate([xu * len(iso) + xc, mu_ * len(iso) + mc])
    ukey, inv = np.unique(key, return_inverse=True)
    npair = s.npair = ukey.size
    s.pxs = np.bincount(inv[:xu.size], weights=xs, minlength=npair)
    s.pms = np.bincount(inv[xu.size:], weights=ms, minlength=npair)
    s.has_x, s.has_m = s.pxs > 0, s.pms > 0
    s.main_x = np.bincount(inv[:xu.size], weights=x_main, minlength=npair) > 0
    s.main_m = np.bincount(inv[xu.size:], weights=m_main, minlength=npair) > 0
    s.p_firm, p_cty = (ukey // len(iso)).astype(np.int64), ukey % len(iso)
    # states in first_year - 1, drawn from the stationary distributions
    s.x_entry, s.x_exit_new, s.x_exit_est, p_non, p_new = _export_hazards(s.pi_x, lsz, s.mu - (9.3 + 0.9 * lsz), s.est)
    u = r_trade.random(n)
    s.x_on, s.x_new = u >= p_non, (u >= p_non) & (u < p_non + p_new)
    s.m_on = r_trade.random(n) < s.pi_m
    s.px_on = s.has_x & (s.main_x | (r_trade.random(npair) < _RHO_PAIR))
    s.pm_on = s.has_m & (s.main_m | (r_trade.random(npair) < _RHO_PAIR))
    _draw_goods_rows(s, p_cty)


def _draw_goods_rows(s: _Stub, p_cty: np.ndarray) -> None:
    """Goods chapters: 1-3 rows per firm x country; the loader must aggregate them."""
    r_trade, npair = s.r_trade, s.npair
    n_gs = r_trade.choice([1, 2, 3], size=npair, p=[0.7, 0.22, 0.08])
    s.rows = rows = np.repeat(np.arange(npair), n_gs)
    gsh = r_trade.exponential(size=rows.size)
    gsh /= np.bincount(rows, weights=gsh)[rows]
    s.gsh = gsh
    chapter = r_trade.integers(1, 98, size=rows.size)
    chapter = np.where(chapter == 77, 76, chapter)  # chapter 77 is reserved in the HS
    s.t_firm = s.p_firm[rows]
    s.t_cty = p_cty[rows]
    s.t_chap = chapter.astype(np.int16)
    s.t_user = s.upos[s.t_firm]
    s.ut_rows = np.flatnonzero(s.t_user >= 0)
    s.is_gm = np.isin(s.t_cty, s.gm_idx)
    s.gm_col = np.full(len(s.iso), -1)
    s.gm_col[s.gm_idx] = np.arange(s.gm_idx.size)


def _write_yearly_files(s: _Stub) -> None:
    """Register, KvK link and trade files year by year; what the truth needs about users on the way."""
    ny, nu_, n_gm = len(s.years), s.users.size, s.gm_idx.size
    s.U_exp, s.U_exp0, s.U_imp, s.U_emp = (np.zeros((ny, nu_)) for _ in range(4))
    s.U_ndest0, s.U_ndest, s.U_instr = (np.zeros((ny, nu_), dtype=np.int64) for _ in range(3))
    s.U_gm = np.zeros((ny, nu_, n_gm), dtype=bool)
    s.pop_share = {}
    s.instr_parts = []
    s.lam_instr = np.exp(-2.8 + 0.8 * s.z_instr)
    for k, y in enumerate(s.years):
        ry = s.year_rngs[k]
        alive, ai, emp = _write_register_year(s, y, ry)
        t_xs, t_ms = _step_chains(s, ry)
        y0, xv, mv = _write_trade_year(s, y, ry, alive, ai, t_xs, t_ms)
        _record_users_year(s, k, y, emp, _flows(y0, t_xs, s.t_firm), xv, mv)
        _draw_instruments_year(s, k, y, ry, ai)


def _write_register_year(s: _Stub, y: int, ry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ABR register and KvK link file of year ``y``."""
    n, out = s.n, s.out
    alive = (s.entry <= y) & (s.last >= y)
    ai = np.flatnonzero(alive)
    emp = np.where(s.emp0 >= 5, np.round(s.emp0 * np.exp(ry.normal(0, 0.04, size=n))), s.emp0)
    reg = pd.DataFrame({
        "BE_ID": _obj(s.be_str[ai]),
        "SbiGecoordineerd": _obj(np.array([c for c, _, _ in _SBI])[s.sector[ai]]),
        "GkSbsGecoordineerd": _obj(_size_class(emp[ai])),
        "WPActueel": emp[ai].astype(float),
        "gemcode": _obj(s.muni_codes[s.muni[ai]]),
    })
    _write_sav(reg, out / "ABR" / f"ABR_BE_{y}V1.sav")
    kvk_firm = s.kvk_firm
    lk = np.flatnonzero((s.entry[kvk_firm] <= y) & (s.link_last[kvk_firm] >= y))
    _write_sav(pd.DataFrame({"KVK_NR": _obj(s.kvk_str[lk]),
                             "BE_ID": _obj(s.be_str[kvk_firm[lk]])}),
               out / "KvK" / f"KVK_BE_{y}V1.sav")
    return alive, ai, emp


def _step_chains(s: _Stub, ry) -> tuple[np.ndarray, np.ndarray]:
    """One step of the extensive-margin chains; returns each goods row's share of exports and imports."""
    # Each firm's state stays at its stationary law. Treatment never enters these draws (they
    # are shared by both potential outcomes): the planted effect is intensive only.
    n, npair = s.n, s.npair
    u = ry.random(n)
    s.x_on, s.x_new = (np.where(s.x_on, u >= np.where(s.x_new, s.x_exit_new, s.x_exit_est), u < s.x_entry),
                       ~s.x_on & (u < s.x_entry))
    u = ry.random(n)
    s.m_on = np.where(s.m_on, u >= _CHURN_M * (1.0 - s.pi_m), u < _CHURN_M * s.pi_m)
    u = ry.random(npair)
    s.px_on = s.has_x & (s.main_x | np.where(s.px_on, u >= _CHURN_PAIR * (1.0 - _RHO_PAIR), u < _CHURN_PAIR * _RHO_PAIR))
    u = ry.random(npair)
    s.pm_on = s.has_m & (s.main_m | np.where(s.pm_on, u >= _CHURN_PAIR * (1.0 - _RHO_PAIR), u < _CHURN_PAIR * _RHO_PAIR))
    sx, sm = np.where(s.px_on, s.pxs, 0.0), np.where(s.pm_on, s.pms, 0.0)
    sx /= np.bincount(s.p_firm, weights=sx, minlength=n)[s.p_firm].clip(1e-300)
    sm /= np.bincount(s.p_firm, weights=sm, minlength=n)[s.p_firm].clip(1e-300)
    return sx[s.rows] * s.gsh, sm[s.rows] * s.gsh


def _flows(total: np.ndarray, share: np.ndarray, t_firm: np.ndarray) -> np.ndarray:
    """A firm's total split over its goods rows, in whole euros (at least 1 where both are positive)."""
    v = np.round(total[t_firm] * share)
    return np.where((share > 0) & (total[t_firm] > 0), np.maximum(v, 1.0), 0.0)


def _write_trade_year(s: _Stub, y: int, ry, alive, ai, t_xs, t_ms):
    """Potential outcomes of year ``y`` and its trade file(s); returns ``y0`` and the rows' exports and imports."""
    n, t_firm, out = s.n, s.t_firm, s.out
    gam = _GAMMA.get(int(y), _GAMMA[min(max(int(y), 2014), 2023)])
    eps = ry.normal(0, 0.3, size=n)
    # new exporters start small (first year of an export spell)
    logy0 = (s.mu + gam + _KAPPA * (s.lsz - _L_CENTRE) * (y - s.first_year) + eps
             - _ENTRY_DISCOUNT * s.x_new)
    y0 = np.where(alive & s.x_on, np.exp(logy0), 0.0)
    tau = np.where(s.g_tinl > 0, planted_effect(y - s.g_tinl, s.tg_tinl), 0.0)
    y1 = y0 * np.exp(tau)
    m_tot = np.where(alive & s.m_on, np.exp(s.nu + 0.7 * gam + ry.normal(0, 0.3, size=n)), 0.0)
    xv, mv = _flows(y1, t_xs, t_firm), _flows(m_tot, t_ms, t_firm)
    live = alive[t_firm] & ((xv > 0) | (mv > 0))
    code = s.geonom if y <= _GEONOM_UNTIL else s.iso
    trade = pd.DataFrame({"BE_ID": _obj(s.be_str[t_firm[live]]),
                          "Land_HB": _obj(code[s.t_cty[live]]),
                          "GS2": _obj(_CHAPTERS[s.t_chap[live]]),
                          "Uitvoer": xv[live], "Invoer": mv[live]})
    if y == _STALE_YEAR:
        keep = ry.random(len(trade)) >= 0.03
        stale = trade[keep].assign(Uitvoer=np.round(trade["Uitvoer"][keep] * ry.uniform(0.7, 1.3, keep.sum())),
                                   Invoer=np.round(trade["Invoer"][keep] * ry.uniform(0.7, 1.3, keep.sum())))
        _write_sav(stale, out / "IHG" / f"IHG_per_BE_ID{y}V1.sav")
        _write_sav(trade, out / "IHG" / f"IHG_per_BE_ID{y}V2.sav")
    else:
        _write_sav(trade, out / "IHG" / f"IHG_per_BE_ID{y}V1.sav")
    s.pop_share[str(int(y))] = float((np.bincount(t_firm, weights=xv, minlength=n)[ai] > 0).mean())
    return y0, xv, mv


def _record_users_year(s: _Stub, k: int, y: int, emp, x0, xv, mv) -> None:
    """What the truth needs about users in year ``y`` (tiny: users x years)."""
    ut_rows, nu_, n_cty = s.ut_rows, s.users.size, len(s.iso)
    tu = s.t_user[ut_rows]
    x0u = x0[ut_rows]
    s.U_exp[k] = np.bincount(tu, weights=xv[ut_rows], minlength=nu_)
    s.U_exp0[k] = np.bincount(tu, weights=x0u, minlength=nu_)
    s.U_imp[k] = np.bincount(tu, weights=mv[ut_rows], minlength=nu_)
    # destinations: countries with positive exports summed over goods rows
    for arr, val in ((s.U_ndest, xv[ut_rows]), (s.U_ndest0, x0u)):
        pos = val > 0
        dk = np.unique(tu[pos] * n_cty + s.t_cty[ut_rows][pos])
        arr[k] = np.bincount(dk // n_cty, minlength=nu_)
    g_rows = ut_rows[s.is_gm[ut_rows] & ((xv[ut_rows] > 0) | (mv[ut_rows] > 0))]
    s.U_gm[k, s.t_user[g_rows], s.gm_col[s.t_cty[g_rows]]] = True
    s.U_emp[k] = emp[s.users]
    # the heterogeneity rule is observed in g-1, before the effect starts
    users = s.users
    nxt = np.flatnonzero(s.g_tinl[users] == y + 1)
    s.tg_tinl[users[nxt]] = ((s.U_emp[k, nxt] >= 10) & (s.U_emp[k, nxt] <= 250)
                             & (s.U_ndest[k, nxt] >= 1) & (s.U_ndest[k, nxt] <= 5))


def _draw_instruments_year(s: _Stub, k: int, y: int, ry, ai) -> None:
    """Instrument registrations of year ``y`` (clean KvK, primary number)."""
    cnt = ry.poisson(s.lam_instr[ai])
    rf = np.repeat(ai, cnt)
    s.instr_parts.append(pd.DataFrame({"firm": rf, "Jaar": np.full(rf.size, y, dtype=np.int64),
                                       "inst": ry.choice(len(_INSTRUMENTS), size=rf.size, p=_INSTR_W / _INSTR_W.sum())}))
    upos = s.upos
    s.U_instr[k] = np.bincount(upos[rf][upos[rf] >= 0], minlength=s.users.size)


def _write_instruments(s: _Stub) -> None:
    ins = pd.concat(s.instr_parts, ignore_index=True)
    _write_sav(pd.DataFrame({"KVK_NR": _obj(s.kvk_str[s.kvk_first[ins["firm"].to_numpy()]]),
                             "Jaar": ins["Jaar"].to_numpy(dtype=np.int64),
                             "Regeling": _obj(_INSTRUMENTS[ins["inst"].to_numpy()])}),
               s.out / "RVO" / "Achilles_instrumenten.sav", formats={"Jaar": "F4.0"})
    del s.instr_parts


def _firm_kvk_pick(s: _Stub, fi: np.ndarray, r) -> np.ndarray:
    """One of each firm's KvK numbers (enterprise groups register with any of them)."""
    return s.kvk_all[s.kvk_first[fi] + np.floor(r.random(fi.size) * s.n_kvk[fi]).astype(int)]


def _not_linked_firms(s: _Stub, r, yrs: np.ndarray) -> np.ndarray:
    """Distinct non-user firms, one per requested year, whose KvK is in the link files but not that year."""
    cand = np.flatnonzero(s.non_user & ~s.est)
    cand = cand[r.permutation(cand.size)]
    out_f = np.full(yrs.size, -1)
    used = np.zeros(s.n, bool)
    for y in np.unique(yrs):  # a loop over a handful of years, not over firms
        want = np.flatnonzero(yrs == y)
        ok = cand[((s.entry[cand] > y) | (s.link_last[cand] < y)) & ~used[cand]][:want.size]
        out_f[want[:ok.size]] = ok
        used[ok] = True
    return out_f


def _write_participants(s: _Stub) -> None:
    """The three participant lists, each record planted in one waterfall bucket."""
    s.wf = {p: dict.fromkeys(_BUCKETS, 0) for p in ("nlib", "tinl", "nlw")}
    s.non_user = np.ones(s.n, bool)
    s.non_user[s.users] = False
    s.not_found_pool = _kvk_str(_unique_ints(s.r_part, 0, 100_000_000, max(64, s.n // 10), exclude=s.kvk_all))
    _write_nlib(s)
    _write_tinl(s)
    _write_nlw(s)
    for p in s.wf:
        s.wf[p]["total"] = int(sum(s.wf[p][b] for b in _BUCKETS))


def _write_nlib(s: _Stub) -> None:
    """NLiB portal: one row per user (some twice), no dates."""
    r_part, wf = s.r_part, s.wf
    nl_f = s.nlib
    dup = r_part.random(nl_f.size) < 0.08
    nl_k = _firm_kvk_pick(s, nl_f, r_part)
    raw_rows = [_mess_kvk(r_part, _kvk_str(nl_k)), _mess_kvk(r_part, _kvk_str(nl_k[dup]))]
    wf["nlib"]["linked"] = int(nl_f.size)
    wf["nlib"]["duplicate_record"] = int(dup.sum())
    k_inv, k_nf, k_nl = (max(2, round(c * nl_f.size)) for c in (0.03, 0.04, 0.03))
    raw_rows.append(_invalid_kvk(r_part, k_inv))
    raw_rows.append(s.not_found_pool[:k_nf])
    nlf = _not_linked_firms(s, r_part, np.full(k_nl, _NLIB_YEAR))
    nlf = nlf[nlf >= 0]
    raw_rows.append(_mess_kvk(r_part, _kvk_str(_firm_kvk_pick(s, nlf, r_part))))
    nrf = np.flatnonzero(s.linger & (s.last + 1 == _NLIB_YEAR))
    nrf = nrf[r_part.permutation(nrf.size)][:max(1, round(0.02 * nl_f.size))]
    raw_rows.append(_mess_kvk(r_part, _kvk_str(_firm_kvk_pick(s, nrf, r_part))))
    wf["nlib"].update(invalid_kvk=k_inv, kvk_not_found=k_nf, not_linked_that_year=int(nlf.size),
                      not_in_register=int(nrf.size))
    raw = np.concatenate(raw_rows)
    # a portal export has no meaningful order; which of two equal records comes
    # first does not change the counts
    final = r_part.permutation(raw.size)
    nlib_df = pd.DataFrame({"KvK_nummer": _obj(raw[final]),
                            "Aanmeld_id": _obj(_ids("NLIB-", np.arange(1, raw.size + 1), 6))})
    _write_sav(nlib_df, s.out / "Programmas" / "NLiB_portaal.sav")


def _tinl_activities(s: _Stub) -> None:
    """TINL's activities: ids, years, organising province, type and date."""
    r_part, n = s.r_part, s.n
    s.act_years = act_years = np.arange(min(_TINL_COHORTS), _TINL_LAST_ACTIVITY_YEAR + 1)
    s.n_act_y = n_act_y = max(12, round(0.004 * n))
    s.a_year = a_year = np.repeat(act_years, n_act_y)
    s.a_id = _ids("TINL-", a_year.astype(str).astype(object) + "-"
                  + _ids("", np.tile(np.arange(1, n_act_y + 1), act_years.size), 4), 0)
    s.provs = np.unique(s.munis["province"].to_numpy())
    s.a_reg = s.provs[r_part.integers(0, s.provs.size, size=a_year.size)]
    s.a_type = r_part.choice(_ACTIVITY_TYPES, size=a_year.size, p=_ACTIVITY_W)
    s.a_date = (pd.to_datetime(pd.Series(a_year).astype(str) + "-01-01")
                + pd.to_timedelta(r_part.integers(0, 365, size=a_year.size), unit="D")).dt.date.to_numpy()


def _pick_activity(s: _Stub, fi: np.ndarray, yi: np.ndarray, own_p: float) -> np.ndarray:
    """An activity of year yi; with probability own_p one organised in the firm's province."""
    r_part, act_years, provs, a_year = s.r_part, s.act_years, s.provs, s.a_year
    base = (yi - act_years[0]) * s.n_act_y
    act = base + r_part.integers(0, s.n_act_y, size=fi.size)
    want = r_part.random(fi.size) < own_p
    key_a = (a_year - act_years[0]) * provs.size + np.searchsorted(provs, s.a_reg)
    srt = np.argsort(key_a, kind="stable")
    key_f = (yi - act_years[0]) * provs.size + np.searchsorted(provs, s.province[fi])
    lo_, hi_ = np.searchsorted(key_a[srt], key_f, "left"), np.searchsorted(key_a[srt], key_f, "right")
    has = want & (hi_ > lo_)
    own = srt[np.minimum(lo_ + np.floor(r_part.random(fi.size) * (hi_ - lo_)).astype(int), srt.size - 1)]
    return np.where(has, own, act)


def _tinl_events(s: _Stub) -> None:
    """Users' attended activities: the first in the cohort year, more in later programme years."""
    r_part, tinl, cohort_tinl, act_years = s.r_part, s.tinl, s.cohort_tinl, s.act_years
    n_extra = r_part.poisson(1.2, size=tinl.size)
    ev_f = np.concatenate([tinl, np.repeat(tinl, n_extra)])
    lo = np.concatenate([cohort_tinl, np.repeat(cohort_tinl, n_extra)])
    ev_y = np.where(np.arange(ev_f.size) < tinl.size, lo,
                    lo + np.floor(r_part.random(ev_f.size) * (act_years[-1] + 1 - lo)).astype(int))
    ev_a = _pick_activity(s, ev_f, ev_y, 0.5)
    _, first_ev = np.unique(ev_f * s.a_year.size + ev_a, return_index=True)
    first_ev = np.sort(first_ev)  # a firm attends an activity once; the cohort-year event is kept
    s.ev_f, s.ev_y, s.ev_a = ev_f[first_ev], ev_y[first_ev], ev_a[first_ev]


def _write_tinl(s: _Stub) -> None:
    """TINL activity list: one row per person per activity, plus the planted problem records."""
    _tinl_activities(s)
    _tinl_events(s)
    r_part, wf, ev_f, ev_a, act_years, n_act_y = s.r_part, s.wf, s.ev_f, s.ev_a, s.act_years, s.n_act_y
    ev_k = _firm_kvk_pick(s, ev_f, r_part)
    ev_k = np.where(r_part.random(ev_f.size) < 0.8, s.kvk_all[s.kvk_first[ev_f]], ev_k)
    n_pers = 1 + r_part.poisson(0.5, size=ev_f.size)
    wf["tinl"]["linked"] = int(ev_f.size)
    wf["tinl"]["duplicate_record"] = int((n_pers - 1).sum())
    r_act = np.repeat(ev_a, n_pers)
    r_kvk = _mess_kvk(r_part, _kvk_str(np.repeat(ev_k, n_pers)))
    r_first = np.repeat(np.cumsum(n_pers) - n_pers, n_pers) == np.arange(n_pers.sum())
    k_inv, k_nf, k_nl = (max(2, round(c * ev_f.size)) for c in (0.03, 0.04, 0.03))
    x_act_inv = r_part.integers(0, s.a_year.size, size=k_inv + k_nf)
    nl_y = act_years[r_part.integers(0, act_years.size, size=k_nl)]
    nlf = _not_linked_firms(s, r_part, nl_y)
    nl_y, nlf = nl_y[nlf >= 0], nlf[nlf >= 0]
    nl_act = (nl_y - act_years[0]) * n_act_y + r_part.integers(0, n_act_y, size=nlf.size)
    nrf = np.flatnonzero(s.linger & (s.last + 1 >= act_years[0]) & (s.last + 1 <= act_years[-1]))
    nrf = np.sort(nrf[r_part.permutation(nrf.size)][:max(1, round(0.02 * ev_f.size))])
    nr_act = (s.last[nrf] + 1 - act_years[0]) * n_act_y + r_part.integers(0, n_act_y, size=nrf.size)
    wf["tinl"].update(invalid_kvk=k_inv, kvk_not_found=k_nf, not_linked_that_year=int(nlf.size),
                      not_in_register=int(nrf.size))
    t_act = np.concatenate([r_act, x_act_inv, nl_act, nr_act])
    t_raw = np.concatenate([r_kvk, _invalid_kvk(r_part, k_inv), s.not_found_pool[-k_nf:],
                            _mess_kvk(r_part, _kvk_str(_firm_kvk_pick(s, nlf, r_part))),
                            _mess_kvk(r_part, _kvk_str(_firm_kvk_pick(s, nrf, r_part)))])
    t_first = np.concatenate([r_first, np.ones(t_act.size - r_first.size, bool)])
    # delivered sorted by activity; within an activity persons in random order, but a
    # firm's first person before its colleagues (any order gives the same counts)
    o = np.lexsort((~t_first, r_part.random(t_act.size), t_act))
    t_act, t_raw = t_act[o], t_raw[o]
    tinl_df = pd.DataFrame({
        "KvK_nummer": _obj(t_raw),
        "Activiteit_ID": _obj(s.a_id[t_act]),
        "Datum": s.a_date[t_act],
        "Organiserende_regio": _obj(s.a_reg[t_act]),
        "Activiteit_type": _obj(s.a_type[t_act]),
        "Persoon_ID": _obj(_ids("P", r_part.permutation(t_act.size) + 1, 7)),
    })
    _write_sav(tinl_df, s.out / "Programmas" / "TINL_activiteiten.sav", formats={"Datum": "DATE11"})


def _write_nlw(s: _Stub) -> None:
    """NLWorks consortia: one row per member firm and consortium, with the project start year."""
    # some firms join a second, later consortium; some members are registered twice
    r_nlw, wf, nlw, cohort_nlw = s.r_nlw, s.wf, s.nlw, s.cohort_nlw
    n_cons = max(6, round(nlw.size / 8))
    c_year = np.array(_NLW_COHORTS)[np.arange(n_cons) % len(_NLW_COHORTS)]
    c_id = _ids("NLW-", np.arange(1, n_cons + 1), 4)

    def consortium_of(yrs):
        cand = [np.flatnonzero(c_year == y_) for y_ in yrs]
        return np.array([c[r_nlw.integers(0, c.size)] for c in cand], dtype=np.int64)
    w_first = consortium_of(cohort_nlw)
    second = r_nlw.random(nlw.size) < 0.2
    later = np.minimum(cohort_nlw[second] + 1 + r_nlw.integers(0, 2, size=int(second.sum())), max(_NLW_COHORTS))
    w_f = np.concatenate([nlw, nlw[second]])
    w_c = np.concatenate([w_first, consortium_of(later)])
    _, keep_first = np.unique(w_f * n_cons + w_c, return_index=True)
    keep_first = np.sort(keep_first)
    w_f, w_c = w_f[keep_first], w_c[keep_first]
    w_k = _firm_kvk_pick(s, w_f, r_nlw)
    twice = r_nlw.random(w_f.size) < 0.05
    wf["nlw"]["linked"] = int(w_f.size)
    wf["nlw"]["duplicate_record"] = int(twice.sum())
    k_inv, k_nf = (max(2, round(c * w_f.size)) for c in (0.02, 0.03))
    nf_pool = _kvk_str(_unique_ints(r_nlw, 0, 100_000_000, k_nf, exclude=s.kvk_all))
    wf["nlw"].update(invalid_kvk=k_inv, kvk_not_found=k_nf)
    n_raw = w_f.size + int(twice.sum()) + k_inv + k_nf
    cons = np.concatenate([w_c, w_c[twice], r_nlw.integers(0, n_cons, size=k_inv + k_nf)])
    kraw = np.concatenate([_mess_kvk(r_nlw, _kvk_str(w_k)), _mess_kvk(r_nlw, _kvk_str(w_k[twice])),
                           _invalid_kvk(r_nlw, k_inv), nf_pool])
    # delivered by consortium; a member's first registration before its repeat
    first_reg = np.r_[np.ones(w_f.size, bool), np.zeros(int(twice.sum()), bool), np.ones(k_inv + k_nf, bool)]
    o = np.lexsort((~first_reg, r_nlw.random(n_raw), cons))
    _write_sav(pd.DataFrame({"KvK_nummer": _obj(kraw[o]), "Consortium_ID": _obj(c_id[cons[o]]),
                             "Startjaar": c_year[cons[o]].astype(np.int64)}),
               s.out / "Programmas" / _NLW_FILE, formats={"Startjaar": "F4.0"})


def _potential_outcomes(s: _Stub) -> pd.DataFrame:
    """Users x years with both potential outcomes and target-group membership in g-1."""
    ny, nu_, years, user_prog, user_g = len(s.years), s.users.size, s.years, s.user_prog, s.user_g
    po = pd.DataFrame({
        "programme": np.repeat(user_prog, ny), "be_id": np.repeat(s.be_str[s.users], ny),
        "year": np.tile(years.astype(np.int64), nu_), "cohort": np.repeat(user_g.astype(np.int64), ny),
        "exports_0": np.where(user_prog[:, None] == "tinl", s.U_exp0.T, s.U_exp.T).ravel(),
        "exports_1": s.U_exp.T.ravel(),
        "n_dest_0": np.where(user_prog[:, None] == "tinl", s.U_ndest0.T, s.U_ndest.T).ravel(),
        "n_dest_1": s.U_ndest.T.ravel(),
    })
    po = po.astype({"programme": "str", "be_id": "str"})
    # target-group membership in g-1 of every user (the heterogeneity rule, observed in the files)
    kb_all = np.array([s.yi[int(v) - 1] for v in user_g])
    cols_all = np.arange(nu_)
    emp_gm1, nd_gm1 = s.U_emp[kb_all, cols_all], s.U_ndest[kb_all, cols_all]
    s.in_tg = (emp_gm1 >= 10) & (emp_gm1 <= 250) & (nd_gm1 >= 1) & (nd_gm1 <= 5)
    assert (s.in_tg[user_prog == "tinl"] == s.tg_tinl[s.tinl]).all()  # planted on what the files show
    po["in_target_group"] = np.repeat(s.in_tg, ny)
    return po


def _heterogeneity_truth(s: _Stub, po: pd.DataFrame) -> dict:
    het_simple = {}
    for lab, flag in zip(_HET_LABELS, (True, False)):
        sub = po[(po["programme"] == "tinl") & (po["in_target_group"] == flag)]
        het_simple[lab] = _effects(sub)["simple"] if len(sub) else None
    return {"tinl": {"by": _HET_RULE, "definition": _HET_DEFINITION, "simple": het_simple,
                     "n_users": {lab: int(((s.user_prog == "tinl") & (s.in_tg == flag)).sum())
                                 for lab, flag in zip(_HET_LABELS, (True, False))},
                     "planted_extra": _HET_EXTRA}}


def _reach_shares(s: _Stub, sel: np.ndarray) -> dict:
    """Realised reach shares of the selected users, from the yearly user arrays."""
    years, U_exp = s.years, s.U_exp
    g = s.user_g[sel]
    kb = np.array([s.yi[int(v) - 1] for v in g])
    cols = np.flatnonzero(sel)
    e_b, i_b = U_exp[kb, cols], s.U_imp[kb, cols]
    win = (years[:, None] >= g[None, :] - 5) & (years[:, None] <= g[None, :] - 1)
    trade_any = ((U_exp[:, cols] > 0) | (s.U_imp[:, cols] > 0)) & win
    gm_any = (s.U_gm[:, cols, :] & win[:, :, None]).any(axis=0)
    instr_b = ((s.U_instr[:, cols] > 0) & (years[:, None] < g[None, :])).any(axis=0)
    emp_b, nd_b = s.U_emp[kb, cols], s.U_ndest[kb, cols]
    return {
        "share_exporter_before": float((e_b > 0).mean()),
        "share_intl_before": float(((e_b > 0) | (i_b > 0)).mean()),
        "share_intl_5y": float(trade_any.any(axis=0).mean()),
        "share_gm_5y": {m: float(gm_any[:, j].mean()) for j, m in enumerate(GROWTH_MARKETS)},
        "share_instr_before": float(instr_b.mean()),
        "share_target_group": float(((emp_b >= 10) & (emp_b <= 250) & (nd_b >= 1) & (nd_b <= 5)).mean()),
    }


def _write_truth(s: _Stub) -> Truth:
    """``truth.json`` from what was planted; the returned Truth also holds the potential outcomes."""
    s.yi = {int(y): k for k, y in enumerate(s.years)}
    po = _potential_outcomes(s)
    effects = {p: _effects(po[po["programme"] == p]) for p in ("tinl", "nlib", "nlw")}
    heterogeneity = _heterogeneity_truth(s, po)
    reach = {p: _reach_shares(s, s.user_prog == p) for p in ("nlib", "tinl", "nlw")}
    reach["tinl"]["share_own_region"] = float((s.province[s.ev_f] == s.a_reg[s.ev_a]).mean())
    d = {
        "seed": int(s.seed), "n_firms": s.n, "first_year": int(s.first_year), "last_year": int(s.last_year),
        "growth_markets": list(GROWTH_MARKETS),
        "waterfall": s.wf,
        "n_users": {"nlib": int(s.nlib.size), "tinl": int(s.tinl.size), "nlw": int(s.nlw.size)},
        "cohort_sizes": {"tinl": {str(c): int((s.cohort_tinl == c).sum()) for c in _TINL_COHORTS},
                         "nlib": {str(_NLIB_YEAR): int(s.nlib.size)},
                         "nlw": {str(c): int((s.cohort_nlw == c).sum()) for c in _NLW_COHORTS}},
        "effects": effects,
        "reach": reach,
        "population": {"share_exporter": s.pop_share},
        "heterogeneity": heterogeneity,
    }
    d = _round_floats(d)
    (s.out / "truth.json").write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    return Truth(**d, potential_outcomes=po)


def _effects(po: pd.DataFrame) -> dict:
    """Realised ATT(g,t), simple and dynamic aggregates from potential outcomes."""
    post = po[po["year"] >= po["cohort"]]
    diff = np.log1p(post["exports_1"].to_numpy()) - np.log1p(post["exports_0"].to_numpy())
    post = post.assign(d=diff, e=post["year"] - post["cohort"])
    gt = post.groupby(["cohort", "year"], sort=True)["d"].mean()
    att_gt = [{"group": int(g), "time": int(t), "att": float(v)} for (g, t), v in gt.items()]
    # cohort-size weights per cell, as did::aggte; with users present every year
    # this is the mean over firm-years
    n_g = post.groupby(["cohort", "year"])["d"].size()
    w = n_g.reindex(gt.index).to_numpy()
    simple = float((gt.to_numpy() * w).sum() / w.sum())
    cells = gt.reset_index().assign(n=w, e=lambda x: x["year"] - x["cohort"])
    cells["dn"] = cells["d"] * cells["n"]
    agg = cells.groupby("e")[["dn", "n"]].sum()
    dyn = agg["dn"] / agg["n"]
    # extensive margin and destinations: realised simple ATTs from both potential
    # outcomes (0 by construction: treatment only scales positive flows)
    other = {
        "exporter": float(((post["exports_1"] > 0).astype(float) - (post["exports_0"] > 0)).mean()),
        "n_dest": float((post["n_dest_1"] - post["n_dest_0"]).mean()),
    }
    return {"outcome": "log_exports", "att_gt": att_gt, "simple": simple,
            "dynamic": {str(int(e)): float(v) for e, v in dyn.items()},
            "other_outcomes": other}


def _round_floats(x: Any, digits: int = 12) -> Any:
    if isinstance(x, float):
        return round(x, digits) + 0.0
    if isinstance(x, dict):
        return {k: _round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_round_floats(v, digits) for v in x]
    return x
