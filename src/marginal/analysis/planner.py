"""Planner: choose (K, M) for a budget on calibration problems, judge it on held-out ones.

Problems are split at random (seeded) into calibration and test. The
exact/Monte Carlo accuracy grid is computed once per problem (it does not
depend on the split); the planner picks the cell with the best calibration
accuracy (ties: fewer samples, then more priors) and reports, on the test
problems, its accuracy against repetition-only (K = 1, M = min(B, n)),
diversity-only (K = min(B, P), M = 1), the drift regime's rule (fitted on
calibration) and the best cell in hindsight (chosen on test: optimistic).
CIs are normal over test problems (plus Monte Carlo error); differences are
paired. Difficulty buckets split problems by the pool's share of gold
samples at calibration terciles, and re-plan within each bucket.
Left out: adaptive (sequential) allocation policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import MarginalError
from .accuracy import Grid, accuracy_grid
from .margins import drift
from .pool import MISSING, Pool
from .weights import split_problems

Z = 1.959964


@dataclass(frozen=True)
class Scored:
    """Held-out accuracy of one allocation."""

    name: str
    k: int
    m: int
    accuracy: float
    ci: tuple[float, float]
    diff: float = 0.0
    """Accuracy minus the planner's choice (paired over test problems)."""
    diff_ci: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Bucket:
    """Planner results within one difficulty bucket."""

    name: str
    lo: float
    hi: float
    n_calib: int
    n_test: int
    choice: tuple[int, int]
    """Best cell on this bucket's calibration problems."""
    accuracy: float
    """Held-out accuracy of that bucket choice."""
    global_choice_accuracy: float
    repetition_accuracy: float
    diversity_accuracy: float


@dataclass(frozen=True)
class PlannerResult:
    """The planner's recommendation for a budget and how it does on held-out problems."""

    budget: int
    choice: tuple[int, int]
    calib_accuracy: float
    scored: tuple[Scored, ...]
    """choice, repetition-only, diversity-only, regime rule, best in hindsight."""
    regime: str
    n_calib: int
    n_test: int
    buckets: tuple[Bucket, ...]
    split: float
    seed: int

    def get(self, name: str) -> Scored:
        for s in self.scored:
            if s.name == name:
                return s
        raise KeyError(name)


def _best(acc: np.ndarray, cells) -> int:
    mean = acc.mean(axis=0)
    order = sorted(
        range(len(cells)), key=lambda j: (-round(float(mean[j]), 12), cells[j][0] * cells[j][1], -cells[j][0])
    )
    return order[0]


def _ci(x: np.ndarray, mcv: np.ndarray) -> tuple[float, float]:
    n = len(x)
    se = math.sqrt((x.var(ddof=1) / n if n > 1 else 0.0) + mcv.sum() / n**2)
    return (float(x.mean() - Z * se), float(x.mean() + Z * se))


def plan(
    pool: Pool,
    budget: int,
    *,
    split: float = 0.5,
    seed: int = 0,
    mode: str = "first",
    method: str = "auto",
    grid: Grid | None = None,
    n_buckets: int = 3,
) -> PlannerResult:
    """Recommend (K, M) for ``budget`` from calibration problems and score it on the rest (see module docstring)."""
    pool.require_gold("the planner")
    sub = pool.subset(pool.labelled)
    pool.check_budget(budget)
    g = grid if grid is not None else accuracy_grid(sub, budget, mode=mode, method=method, seed=seed)
    if g.acc.shape[0] != sub.n_problems or g.budget != budget:
        raise MarginalError("the grid given to plan() must be computed on the same pool and budget")
    cells = g.cells
    cal, test = split_problems(sub.n_problems, split, seed)
    A, V = g.acc, g.mc_var
    j_choice = _best(A[cal], cells)
    choice = cells[j_choice]
    P, n = sub.n_priors, sub.n_slots
    dr = drift(sub.subset(cal), seed=seed) if P > 1 else None
    named = [
        ("planner", choice),
        ("repetition-only", (1, min(budget, n))),
        ("diversity-only", (min(budget, P), 1)),
    ]
    if dr is not None:
        named.append((f"regime ({dr.regime})", dr.recommend(budget, n)))
    named.append(("best in hindsight", cells[_best(A[test], cells)]))
    xc = A[test, j_choice]
    scored = []
    for name, (k, m) in named:
        j = g.index(k, m)
        x = A[test, j]
        d = x - xc
        lo, hi = _ci(x, V[test, j])
        scored.append(
            Scored(
                name,
                k,
                m,
                float(x.mean()),
                (max(lo, 0.0), min(hi, 1.0)),
                float(d.mean()),
                _ci(d, V[test, j] + V[test, j_choice]) if j != j_choice else (0.0, 0.0),
            )
        )
    buckets = _buckets(sub, g, cal, test, j_choice, budget, n_buckets)
    return PlannerResult(
        int(budget),
        choice,
        float(A[cal, j_choice].mean()),
        tuple(scored),
        dr.regime if dr is not None else "n/a",
        len(cal),
        len(test),
        buckets,
        split,
        seed,
    )


def _buckets(
    sub: Pool, g: Grid, cal: np.ndarray, test: np.ndarray, j_choice: int, budget: int, n_buckets: int
) -> tuple[Bucket, ...]:
    """The best split per difficulty bucket (share of gold samples in the problem's whole pool), chosen on the
    calibration problems of the bucket and scored on its held-out ones, beside the planner's choice,
    repetition and diversity."""
    A, cells = g.acc, g.cells
    P, n = sub.n_priors, sub.n_slots
    a = sub.answers
    diff = sub.correct_samples().sum(axis=(1, 2)) / np.maximum((a != MISSING).sum(axis=(1, 2)), 1)
    edges = np.quantile(diff[cal], np.linspace(0, 1, n_buckets + 1)) if len(cal) else np.linspace(0, 1, n_buckets + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    names = ["hard", "medium", "easy"] if n_buckets == 3 else [f"q{i + 1}" for i in range(n_buckets)]
    buckets = []
    j_rep, j_div = g.index(1, min(budget, n)), g.index(min(budget, P), 1)
    for b in range(n_buckets):
        inb = (diff > edges[b]) & (diff <= edges[b + 1]) if b else (diff <= edges[1])
        bc, bt = cal[inb[cal]], test[inb[test]]
        if len(bc) == 0 or len(bt) == 0:
            continue
        jb = _best(A[bc], cells)
        buckets.append(
            Bucket(
                names[b],
                float(max(edges[b], 0.0)),
                float(min(edges[b + 1], 1.0)),
                len(bc),
                len(bt),
                cells[jb],
                float(A[bt, jb].mean()),
                float(A[bt, j_choice].mean()),
                float(A[bt, j_rep].mean()),
                float(A[bt, j_div].mean()),
            )
        )
    return tuple(buckets)
