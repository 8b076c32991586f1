"""The regime test: does the drift λ of a bank, measured on calibration problems, predict on
held-out problems whether diversity-first beats repetition-first?

Sub-banks: ``n_banks`` random ordered sub-banks of 4 to 8 priors (a size drawn
uniformly, then that many priors in a uniformly random order; no sub-bank
twice; seeded). When the pool has fewer ordered sub-banks than asked for,
all of them are used. Problems: the labelled ones where every prior stores
a sample (``subbank.covered``), split at random
(``split_problems``) into a calibration and a held-out half.

Per sub-bank:

- calibration half: Γ_K per problem in the sub-bank's order (``margins``),
  κ_K, λ per problem; the dataset λ, its percentile bootstrap CI and the
  regime exactly as ``margins.drift`` computes them (the same inner
  bootstrap: drift's seed, ``inner_boot`` resamples);
- held-out half, at each budget B: diversity-first is the cell (K, B/K)
  with K = B when the sub-bank has at least B priors, else the largest
  K <= its size that divides B (B = 8 on 4-7 priors: K = 4, M = 2);
  repetition-first is (1, min(B, n)), the sub-bank's first prior, n the
  pool's samples per prior (a cell that stores fewer than M gives all it
  has). Both are the exact accuracy grid's cells (first K priors,
  subsampling without replacement), so at M = n every stored sample
  votes. The gain is diversity-first minus repetition-first accuracy,
  paired over the same held-out problems.

Report per budget: (a) among sub-banks whose λ CI is above 0, the share
where diversity-first wins (gain > 0), and among those whose CI is below
0, the share where repetition-first wins (gain < 0); a gain of exactly 0 is
a win for neither; (b) the Spearman correlation of calibration λ with the
held-out gain across sub-banks. Beside λ, the same for the **calibration
gain**: the two arms' accuracy difference on the calibration half itself
(what reading the calibration pool's accuracy grid decides, as the planner
does): its sign as the rule, its Spearman with the held-out gain.

CIs: a stratified bootstrap over problems. Each replicate resamples the
calibration half and the held-out half (with replacement, each within its
half) and recomputes everything for every sub-bank: λ, its inner-bootstrap
CI on the resampled problems, the Γ gain curve, the regime, the gain;
then the shares and ρ. Sub-banks share priors and problems, so their
outcomes are dependent; recomputing all of them on the same resampled
problems keeps that dependence. The draw of sub-banks is held fixed.
Cost: per-problem values are cached (λ and Γ_K − Γ_1 per calibration
problem, the exact credit of each held-out problem and cell), so a
replicate only re-averages; its inner bootstrap is one matrix product of
the cached λ's with the resampling counts.

Left out: cross-fitting the halves (see ``subbank.select_bank`` for that
design), weighted votes, plots (``marginal.regime_plots``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from ..errors import MarginalError
from .accuracy import accuracy_grid
from .margins import REGIMES, margins
from .pool import MISSING, Pool
from .subbank import covered, sub_bank
from .weights import split_problems

SIZES = (4, 8)
BUDGETS = (4, 8)


def draw_banks(
    priors: Sequence[str], n_banks: int, sizes: tuple[int, int], rng: np.random.Generator
) -> tuple[tuple[str, ...], ...]:
    """Distinct random ordered sub-banks (see module docstring); all of them when there are at most ``n_banks``."""
    P = len(priors)
    lo, hi = sizes[0], min(sizes[1], P)
    if lo < 2 or lo > hi:
        raise MarginalError(f"the regime test needs sub-banks of {sizes[0]}-{sizes[1]} priors; the pool has {P}")
    space = sum(math.perm(P, L) for L in range(lo, hi + 1))
    if space <= n_banks:
        return tuple(tuple(priors[i] for i in o) for L in range(lo, hi + 1) for o in permutations(range(P), L))
    seen: dict[tuple[str, ...], None] = {}
    while len(seen) < n_banks:
        L = int(rng.integers(lo, hi + 1))
        seen.setdefault(tuple(priors[i] for i in rng.permutation(P)[:L]), None)
    return tuple(seen)


def bank_cells(size: int, budget: int, n_slots: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(diversity-first, repetition-first) cells of a sub-bank of ``size`` priors at ``budget``."""
    k = budget if size >= budget else max(d for d in range(1, size + 1) if budget % d == 0)
    return (k, budget // k), (1, min(budget, n_slots))


@dataclass(frozen=True, eq=False)
class RegimeCache:
    """Per-problem values of every sub-bank, so that a bootstrap replicate only re-averages."""

    banks: tuple[tuple[str, ...], ...]
    sizes: np.ndarray
    """(S,) priors per sub-bank."""
    lam_problem: np.ndarray
    """(S, Nc) λ per calibration problem."""
    gain_problem: np.ndarray
    """(S, Nc, Lmax) Γ_K − Γ_1 per calibration problem (NaN past a sub-bank's size)."""
    inner: np.ndarray
    """(inner_boot, Nc) resampling counts of drift's bootstrap, divided by Nc."""
    budgets: tuple[int, ...]
    cells: np.ndarray
    """(S, nB, 2, 2): [diversity, repetition] (K, M) per sub-bank and budget."""
    div: np.ndarray
    """(S, nB, Nt) expected credit of diversity-first per held-out problem (the accuracy grid's: exact, or
    Monte Carlo past its exact work bound, see ``mc_se``)."""
    rep: np.ndarray
    """(S, nB, Nt) the same for repetition-first."""
    cal_gain: np.ndarray
    """(S, nB, Nc) diversity-first minus repetition-first expected credit per calibration problem."""
    mc_se: float
    """Largest Monte Carlo standard error of a held-out accuracy (0 when every cell is exact)."""
    short: np.ndarray
    """(nB,) share of (sub-bank, held-out problem) pairs whose first prior stores fewer than B samples."""
    level: float = 0.95


def _calibration(cal: Pool, banks, inner_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """λ and Γ_K − Γ_1 per calibration problem for every sub-bank; drift's inner resampling weights."""
    lmax = max(len(b) for b in banks)
    n = cal.n_problems
    lam = np.zeros((len(banks), n))
    gain = np.full((len(banks), n, lmax), np.nan)
    for s, bank in enumerate(banks):
        gamma = margins(sub_bank(cal, bank)).gamma
        K = np.arange(1, len(bank))
        lam[s] = ((K + 1)[None, :] * np.diff(gamma, axis=1)).mean(axis=1)
        gain[s, :, : len(bank)] = gamma - gamma[:, :1]
    idx = np.random.default_rng(seed).integers(0, n, size=(inner_boot, n))  # the index matrix drift() draws
    counts = np.zeros((inner_boot, n))
    np.add.at(counts, (np.repeat(np.arange(inner_boot), n), idx.ravel()), 1.0)
    return lam, gain, counts / n


def _heldout(test: Pool, banks, budgets, seed: int, reps: int):
    """Credits of diversity- and repetition-first per sub-bank, budget and held-out problem (cached by prior set)."""
    S, nB, N = len(banks), len(budgets), test.n_problems
    cells = np.zeros((S, nB, 2, 2), int)
    wanted: dict[frozenset, set[int]] = {}
    for s, bank in enumerate(banks):
        for b, B in enumerate(budgets):
            cells[s, b] = bank_cells(len(bank), B, test.n_slots)
            for k, m in cells[s, b]:
                wanted.setdefault(frozenset(bank[:k]), set()).add(int(m))
    got: dict[tuple[frozenset, int], tuple[np.ndarray, np.ndarray]] = {}
    for key, ms in wanted.items():
        sub = sub_bank(test, sorted(key))
        cl = tuple((len(key), min(m, sub.n_slots)) for m in sorted(ms))  # a cell storing fewer than M gives all
        g = accuracy_grid(sub, cells=cl, seed=seed, reps=reps)
        for j, m in enumerate(sorted(ms)):
            got[key, m] = g.acc[:, j], g.mc_var[:, j]
    div, rep = np.zeros((S, nB, N)), np.zeros((S, nB, N))
    se = 0.0
    for s, bank in enumerate(banks):
        for b in range(nB):
            for out, (k, m) in zip((div, rep), cells[s, b]):
                out[s, b], v = got[frozenset(bank[:k]), int(m)]
                se = max(se, float(np.sqrt(v.sum()) / N))
    first = [test.priors.index(bank[0]) for bank in banks]
    stored = (test.answers[:, first] != MISSING).sum(axis=2)  # (N, S)
    short = np.array([(stored < B).mean() for B in budgets])
    return cells, div, rep, se, short


def build_cache(
    pool: Pool,
    banks,
    cal: np.ndarray,
    test: np.ndarray,
    *,
    budgets: Sequence[int] = BUDGETS,
    inner_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    reps: int = 128,
) -> RegimeCache:
    """The per-problem values of the regime test for a labelled pool and a calibration/held-out split."""
    lam, gain, inner = _calibration(pool.subset(cal), banks, inner_boot, seed)
    cells, div, rep, se, short = _heldout(pool.subset(test), banks, tuple(budgets), seed, reps)
    _, cdiv, crep, cse, _ = _heldout(pool.subset(cal), banks, tuple(budgets), seed, reps)
    sizes = np.array([len(b) for b in banks])
    budgets = tuple(int(b) for b in budgets)
    return RegimeCache(
        tuple(banks), sizes, lam, gain, inner, budgets, cells, div, rep, cdiv - crep, max(se, cse), short, level
    )


@dataclass(frozen=True, eq=False)
class BankStats:
    """Every sub-bank's calibration drift and held-out gain on one set of problems."""

    lam: np.ndarray
    """(S,) λ."""
    lo: np.ndarray
    hi: np.ndarray
    """(S,) the λ CI."""
    regime: np.ndarray
    """(S,) index into ``margins.REGIMES``."""
    k95: np.ndarray
    div: np.ndarray
    """(S, nB) diversity-first held-out accuracy."""
    rep: np.ndarray
    """(S, nB) repetition-first held-out accuracy."""
    cal_gain: np.ndarray
    """(S, nB) diversity-first minus repetition-first accuracy on the calibration problems."""

    @property
    def gain(self) -> np.ndarray:
        """(S, nB) diversity-first minus repetition-first."""
        return self.div - self.rep


def classify(
    lo: np.ndarray, hi: np.ndarray, gain_curve: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Regime index (``REGIMES``) and K95 per sub-bank, by ``drift``'s rule, from the λ CI and the mean Γ gain curve."""
    curve = np.where(np.isnan(gain_curve), -np.inf, gain_curve)
    top = curve.max(axis=1)
    reach = curve >= 0.95 * top[:, None] - 1e-12
    k95 = np.where(top <= 1e-12, 1, reach.argmax(axis=1) + 1)
    regime = np.where(
        hi < 0,
        REGIMES.index("misaligned"),
        np.where((lo > 0) & (k95 > sizes / 2), REGIMES.index("aligned"), REGIMES.index("saturating")),
    )
    return regime, k95


def evaluate(cache: RegimeCache, cal_idx: np.ndarray, test_idx: np.ndarray) -> BankStats:
    """Every sub-bank's statistics on (possibly resampled) calibration and held-out problems.

    The problems are given as positions in each half.
    """
    lam_p = cache.lam_problem[:, cal_idx]
    boots = lam_p @ cache.inner.T  # drift's inner bootstrap, on these problems
    q = (1 - cache.level) / 2
    lo, hi = np.quantile(boots, [q, 1 - q], axis=1)
    curve = cache.gain_problem[:, cal_idx].mean(axis=1)
    regime, k95 = classify(lo, hi, curve, cache.sizes)
    return BankStats(
        lam_p.mean(axis=1),
        lo,
        hi,
        regime,
        k95,
        cache.div[:, :, test_idx].mean(axis=2),
        cache.rep[:, :, test_idx].mean(axis=2),
        cache.cal_gain[:, :, cal_idx].mean(axis=2),
    )


# -- summaries ---------------------------------------------------------------------------
def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given their average rank."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    uniq, inv = np.unique(x, return_inverse=True)
    if len(uniq) < len(x):
        r = (np.bincount(inv, weights=r) / np.bincount(inv))[inv]
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: the Pearson correlation of the (average) ranks; NaN when either is constant or n < 3."""
    if len(x) < 3:
        return math.nan
    rx, ry = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def _rule(gain: np.ndarray, pos: np.ndarray, neg: np.ndarray, score: np.ndarray) -> list[float]:
    """Share of ``pos`` sub-banks where diversity wins, their count, share of ``neg`` ones where repetition
    wins, their count, Spearman ρ of ``score`` and gain (NaN where undefined)."""
    return [
        (gain[pos] > 0).mean() if pos.any() else np.nan,
        pos.sum(),
        (gain[neg] < 0).mean() if neg.any() else np.nan,
        neg.sum(),
        spearman(score, gain),
    ]


def headline(st: BankStats) -> np.ndarray:
    """(nB, 10) per budget: ``_rule``'s five for the λ rule (CI above / below 0), then for the calibration
    gain rule (calibration gain above / below 0)."""
    out = np.full((st.gain.shape[1], 10), np.nan)
    for b in range(st.gain.shape[1]):
        cg = st.cal_gain[:, b]
        out[b, :5] = _rule(st.gain[:, b], st.lo > 0, st.hi < 0, st.lam)
        out[b, 5:] = _rule(st.gain[:, b], cg > 0, cg < 0, cg)
    return out


@dataclass(frozen=True)
class Estimate:
    """A statistic over sub-banks with its bootstrap CI."""

    value: float
    """NaN when no sub-bank qualifies."""
    ci: tuple[float, float]
    n: int
    """Sub-banks it is over (for shares; all sub-banks for ρ)."""
    defined: int
    """Bootstrap replicates in which it was defined (the CI is over those)."""


@dataclass(frozen=True)
class BudgetResult:
    """The regime test's answer at one budget."""

    budget: int
    diversity_wins: Estimate
    """Among sub-banks whose λ CI is above 0: share with held-out gain > 0."""
    repetition_wins: Estimate
    """Among sub-banks whose λ CI is below 0: share with held-out gain < 0."""
    spearman: Estimate
    """Spearman ρ of calibration λ and held-out gain."""
    calibration_diversity_wins: Estimate
    """Among sub-banks where diversity-first wins on the calibration half: share that win held out."""
    calibration_repetition_wins: Estimate
    """Among sub-banks where repetition-first wins on the calibration half: share that win held out."""
    calibration_spearman: Estimate
    """Spearman ρ of the calibration gain and the held-out gain."""


def _ci(values: np.ndarray, level: float) -> tuple[tuple[float, float], int]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return (math.nan, math.nan), 0
    q = (1 - level) / 2
    lo, hi = np.quantile(v, [q, 1 - q])
    return (float(lo), float(hi)), len(v)


def budget_results(
    point: np.ndarray, boots: np.ndarray, budgets: Sequence[int], n_banks: int, level: float
) -> tuple[BudgetResult, ...]:
    """BudgetResults from the point ``headline`` (nB, 10) and the replicates' (R, nB, 10)."""
    out = []
    for b, B in enumerate(budgets):
        est = []
        cols = ((0, point[b, 1]), (2, point[b, 3]), (4, n_banks), (5, point[b, 6]), (7, point[b, 8]), (9, n_banks))
        for col, n in cols:
            ci, d = _ci(boots[:, b, col], level)
            est.append(Estimate(float(point[b, col]), ci, int(n), d))
        out.append(BudgetResult(int(B), *est))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class RegimeTest:
    """The regime test on one pool (see the module docstring)."""

    banks: tuple[tuple[str, ...], ...]
    stats: BankStats
    """Point estimates per sub-bank (calibration λ and regime, held-out accuracies)."""
    cells: np.ndarray
    """(S, nB, 2, 2): [diversity-first, repetition-first] (K, M) per sub-bank and budget."""
    results: tuple[BudgetResult, ...]
    calib: tuple[str, ...]
    """Calibration problem ids."""
    held_out: tuple[str, ...]
    mc_se: float
    short: np.ndarray
    """(nB,) share of (sub-bank, held-out problem) pairs whose first prior stores fewer than B samples."""
    seconds: dict
    """Wall time of the cache (grids, margins) and of the bootstrap."""
    seed: int = 0
    n_boot: int = 300
    inner_boot: int = 2000
    level: float = 0.95

    @property
    def budgets(self) -> tuple[int, ...]:
        return tuple(r.budget for r in self.results)

    def regime(self, s: int) -> str:
        return REGIMES[int(self.stats.regime[s])]

    def to_dict(self) -> dict:
        st = self.stats
        banks = [
            {
                "priors": list(b),
                "lambda": round(float(st.lam[s]), 6),
                "lambda_ci": [round(float(st.lo[s]), 6), round(float(st.hi[s]), 6)],
                "regime": self.regime(s),
                "k95": int(st.k95[s]),
                "held_out": {
                    str(B): {
                        "diversity": self.cells[s, b, 0].tolist(),
                        "repetition": self.cells[s, b, 1].tolist(),
                        "diversity_accuracy": round(float(st.div[s, b]), 6),
                        "repetition_accuracy": round(float(st.rep[s, b]), 6),
                        "gain": round(float(st.gain[s, b]), 6),
                        "calibration_gain": round(float(st.cal_gain[s, b]), 6),
                    }
                    for b, B in enumerate(self.budgets)
                },
            }
            for s, b in enumerate(self.banks)
        ]
        by_regime = {}
        for r, name in enumerate(REGIMES):
            m = st.regime == r
            by_regime[name] = {
                "banks": int(m.sum()),
                **{
                    str(B): {
                        "mean_gain": float(st.gain[m, b].mean()) if m.any() else None,
                        "diversity_wins": float((st.gain[m, b] > 0).mean()) if m.any() else None,
                    }
                    for b, B in enumerate(self.budgets)
                },
            }
        res = {
            str(r.budget): {
                k: {"value": _num(e.value), "ci": [_num(x) for x in e.ci], "n": e.n, "defined": e.defined}
                for k, e in (
                    ("diversity_wins_if_ci_above_0", r.diversity_wins),
                    ("repetition_wins_if_ci_below_0", r.repetition_wins),
                    ("spearman_lambda_gain", r.spearman),
                    ("diversity_wins_if_calibration_gain_above_0", r.calibration_diversity_wins),
                    ("repetition_wins_if_calibration_gain_below_0", r.calibration_repetition_wins),
                    ("spearman_calibration_gain_gain", r.calibration_spearman),
                )
            }
            for r in self.results
        }
        return {
            "n_banks": len(self.banks),
            "n_calib": len(self.calib),
            "n_held_out": len(self.held_out),
            "seed": self.seed,
            "n_boot": self.n_boot,
            "inner_boot": self.inner_boot,
            "level": self.level,
            "mc_se_max": self.mc_se,
            "short_repetition_cells": {str(B): float(x) for B, x in zip(self.budgets, self.short)},
            "seconds": self.seconds,
            "results": res,
            "by_regime": by_regime,
            "banks": banks,
        }


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


def regime_test(
    pool: Pool,
    *,
    n_banks: int = 200,
    sizes: tuple[int, int] = SIZES,
    budgets: Sequence[int] = BUDGETS,
    seed: int = 0,
    n_boot: int = 300,
    inner_boot: int = 2000,
    level: float = 0.95,
    reps: int = 128,
) -> RegimeTest:
    """Draw sub-banks, measure drift on calibration and the diversity-first gain held out, bootstrap.

    The module docstring describes each step.
    """
    lab = covered(pool, "the regime test")
    if lab.n_problems < 4:
        raise MarginalError(f"the regime test needs at least 4 labelled problems (2 per half), got {lab.n_problems}")
    if not budgets or any(not isinstance(B, (int, np.integer)) or B < 1 for B in budgets):
        raise MarginalError(f"budgets must be positive integers, got {list(budgets)!r}")
    rng = np.random.default_rng(seed)
    banks = draw_banks(lab.priors, n_banks, sizes, rng)
    cal, test = split_problems(lab.n_problems, 0.5, seed)
    t0 = time.perf_counter()
    cache = build_cache(
        lab, banks, cal, test, budgets=budgets, inner_boot=inner_boot, seed=seed, level=level, reps=reps
    )
    t1 = time.perf_counter()
    nc, nt = len(cal), len(test)
    point = evaluate(cache, np.arange(nc), np.arange(nt))
    boots = np.stack(
        [headline(evaluate(cache, rng.integers(0, nc, nc), rng.integers(0, nt, nt))) for _ in range(n_boot)]
    )
    t2 = time.perf_counter()
    results = budget_results(headline(point), boots, cache.budgets, len(banks), level)
    return RegimeTest(
        banks,
        point,
        cache.cells,
        results,
        tuple(lab.problems[i] for i in cal),
        tuple(lab.problems[i] for i in test),
        cache.mc_se,
        cache.short,
        {"cache": round(t1 - t0, 3), "bootstrap": round(t2 - t1, 3)},
        seed,
        n_boot,
        inner_boot,
        level,
    )


def pick_examples(rt: RegimeTest) -> dict[str, tuple[str, ...] | None]:
    """One real sub-bank per regime, for curves and margins: the aligned one with the highest λ CI lower bound,
    the misaligned one with the lowest upper bound, and the saturating one that flattens earliest (smallest
    K95 / size, among those with a λ CI above 0 when any; else the λ nearest 0). None where no sub-bank has it."""
    st = rt.stats
    out: dict[str, tuple[str, ...] | None] = {}
    sizes = np.array([len(b) for b in rt.banks])
    for r, name in enumerate(REGIMES):
        idx = np.flatnonzero(st.regime == r)
        if len(idx) == 0:
            out[name] = None
            continue
        if name == "aligned":
            s = idx[np.argmax(st.lo[idx])]
        elif name == "misaligned":
            s = idx[np.argmin(st.hi[idx])]
        else:
            up = idx[st.lo[idx] > 0]
            s = up[np.argmin(st.k95[up] / sizes[up])] if len(up) else idx[np.argmin(np.abs(st.lam[idx]))]
        out[name] = rt.banks[int(s)]
    return out
