"""Sub-banks: analyse some of a pool's priors, and choose which K to keep.

- ``sub_bank(pool, names)``: the pool restricted to the named priors, in
  the given order (the order decides "first K priors" cells and the drift).
- ``select_bank(pool, k, budget, seed=...)``: greedy forward selection of K
  priors on a calibration half of the problems, scored on the other half,
  cross-fitted (both halves take each role once), against the first K
  priors in bank order and against all priors, with paired bootstrap CIs.

Selection criterion. Step j adds the prior that maximizes, on the
calibration half, the accuracy of the best K' x M split (K' <= j, the
first K' selected priors, K' x M <= B): the held-in accuracy the planner
would get from that bank, with ties broken by the best split that uses all
j priors (K' = j), then by bank order. Since the splits with K' < j do not
depend on the candidate, that maximum is max(best so far, best K' = j
split), which orders candidates as the best K' = j split alone does: so
that is what is computed, and a candidate is always judged by what it adds.
A bank's reported split is the best K' x M on its calibration half (ties:
fewer samples, then more priors), scored on the held-out half.
Both use only the labelled problems where every prior stores a sample.
CIs are percentile bootstraps over problems, the same resampled problems for
every arm (paired), conditional on the selected banks (the selection is not
redone per replicate) and ignoring the accuracy grid's Monte Carlo error
(``mc_se`` reports its largest value). Left out: selecting with K priors
at random (``mode="random"``) and weighted votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import MarginalError, unknown
from .accuracy import Grid, accuracy_grid
from .pool import MISSING, Pool
from .weights import split_problems


def pick_priors(names: str | Sequence[str], available: Sequence[str], where: str = "the pool") -> tuple[int, ...]:
    """Positions of ``names`` (a sequence, or one comma-separated string) in ``available``, in the given order.

    An unknown name is a `MarginalError` with a near-match suggestion; an empty
    list or a name given twice is refused.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if not names:
        raise MarginalError(f"a sub-bank needs at least one prior name; {where} has: {', '.join(available)}")
    pos = {n: i for i, n in enumerate(available)}
    seen: set[str] = set()
    for n in names:
        if n not in pos:
            raise unknown(f"prior in {where}", n, available)
        if n in seen:
            raise MarginalError(f"prior {n!r} is named twice in the sub-bank {','.join(names)}; name each prior once")
        seen.add(n)
    return tuple(pos[n] for n in names)


def sub_bank(pool: Pool, names: str | Sequence[str]) -> Pool:
    """The pool restricted to the named priors, in the given order (see `pick_priors` for the checks).

    Sample slots are trimmed to the most any kept cell stores, so ``n_slots``
    (the largest M) is the sub-bank's own. Problems with no stored sample
    under any kept prior (a pool still growing) are left out, as ``load_pool``
    leaves out problems with no sample at all.
    """
    idx = list(pick_priors(names, pool.priors, f"run {pool.run_id or '(arrays)'}"))
    a = pool.answers[:, idx]
    stored = a != MISSING
    width = max(int(stored.sum(axis=2).max()), 1)
    sub = replace(pool, answers=a[:, :, :width], priors=tuple(pool.priors[i] for i in idx))
    keep = stored.any(axis=(1, 2))
    return sub if keep.all() else sub.subset(keep)


def covered(pool: Pool, what: str) -> Pool:
    """The labelled problems where every prior stores a sample: each sub-bank then keeps all of them,
    so per-problem arrays of different sub-banks line up (a pool still growing has partial problems)."""
    pool.require_gold(what)
    return pool.subset(pool.labelled & (pool.sizes > 0).all(axis=1))


# -- greedy selection ----------------------------------------------------------------
def _best_cell(g: Grid, rows: np.ndarray) -> tuple[int, int]:
    """The best cell of ``g`` on some problems (ties as `Grid.best`: fewer samples, then more priors)."""
    return Grid(g.cells, g.acc[rows], g.mc_var[rows], g.exact[rows], g.budget, g.mode).best()


def _bank_grid(pool: Pool, names: Sequence[str], budget: int, seed: int, reps: int) -> Grid:
    sub = sub_bank(pool, names)
    return accuracy_grid(sub, min(budget, sub.max_budget), seed=seed, reps=reps)


def greedy_bank(
    pool: Pool, k: int, budget: int, rows: np.ndarray, *, seed: int = 0, reps: int = 128
) -> tuple[str, ...]:
    """K priors chosen greedily on the problems ``rows`` of a labelled pool (criterion: module docstring)."""
    chosen: list[str] = []
    cal = pool.subset(rows)
    for j in range(1, k + 1):
        scored = []
        for c, name in enumerate(pool.priors):
            if name in chosen:
                continue
            sub = sub_bank(cal, chosen + [name])
            cells = tuple((j, m) for m in range(1, min(sub.n_slots, budget // j) + 1))  # m = 1 always fits
            new = float(accuracy_grid(sub, cells=cells, seed=seed, reps=reps).mean.max())
            scored.append((round(new, 12), -c, name))
        chosen.append(max(scored)[2])
    return tuple(chosen)


@dataclass(frozen=True, eq=False)
class Arm:
    """One way to pick the bank, scored held out in both folds."""

    name: str
    """selected, first-k or all."""
    priors: tuple[tuple[str, ...], tuple[str, ...]]
    """The bank used in fold 1 (calibrate on half A, test on B) and fold 2 (the reverse)."""
    split: tuple[tuple[int, int], tuple[int, int]]
    """(K', M) chosen on each fold's calibration half."""
    calib: tuple[float, float]
    """Accuracy of that split on each fold's calibration half (held-in)."""
    held_out: tuple[float, float]
    """Accuracy of that split on each fold's held-out half."""
    pooled: float
    """Mean over all problems, each scored in the fold that held it out."""
    ci: tuple[float, float]
    credit: np.ndarray
    """(N,) each problem's held-out credit."""


@dataclass(frozen=True)
class Paired:
    """A paired difference of held-out accuracy between two arms (same problems)."""

    name: str
    per_fold: tuple[float, float]
    fold_ci: tuple[tuple[float, float], tuple[float, float]]
    pooled: float
    ci: tuple[float, float]


@dataclass(frozen=True, eq=False)
class BankSelection:
    """Greedy bank selection, cross-fitted, against bank order and all priors."""

    k: int
    budget: int
    seed: int
    halves: tuple[tuple[str, ...], tuple[str, ...]]
    """Problem ids of halves A and B."""
    arms: tuple[Arm, Arm, Arm]
    """selected, first-k, all."""
    diffs: tuple[Paired, Paired]
    """selected − first-k, selected − all."""
    mc_se: float
    """Largest Monte Carlo standard error of a per-problem cell credit used (0 when all exact)."""
    n_boot: int = 2000
    level: float = 0.95

    @property
    def selected(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.arms[0].priors

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The JSON form (plain lists and numbers)."""
        return {
            "k": self.k,
            "budget": self.budget,
            "seed": self.seed,
            "halves": [list(h) for h in self.halves],
            "level": self.level,
            "n_boot": self.n_boot,
            "mc_se": self.mc_se,
            "arms": [
                {
                    "name": a.name,
                    "priors": [list(b) for b in a.priors],
                    "split": [list(s) for s in a.split],
                    "calib": list(a.calib),
                    "held_out": list(a.held_out),
                    "pooled": a.pooled,
                    "ci": list(a.ci),
                }
                for a in self.arms
            ],
            "diffs": [
                {
                    "name": d.name,
                    "per_fold": list(d.per_fold),
                    "fold_ci": [list(c) for c in d.fold_ci],
                    "pooled": d.pooled,
                    "ci": list(d.ci),
                }
                for d in self.diffs
            ],
        }


def _percentile(boots: np.ndarray, level: float) -> tuple[float, float]:
    q = (1 - level) / 2
    lo, hi = np.quantile(boots, [q, 1 - q])
    return float(lo), float(hi)


def paired_boot(x: np.ndarray, n_boot: int, level: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Percentile CIs of the means of the rows of ``x`` (S, N), every row on the same resampled columns."""
    n = x.shape[1]
    idx = rng.integers(0, n, size=(n_boot, n))
    means = np.concatenate([x[:, idx[s : s + 256]].mean(axis=2) for s in range(0, n_boot, 256)], axis=1)
    return [_percentile(m, level) for m in means]


def _check_selection(pool: Pool, k: int, budget: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= pool.n_priors:
        raise MarginalError(
            f"--select-bank K must be an integer from 1 to the pool's {pool.n_priors} priors, got {k!r}"
        )
    pool.check_budget(budget)
    if k > budget:
        raise MarginalError(
            f"a bank of K={k} priors cannot all be used with budget {budget} (each prior needs a sample); "
            f"choose K <= {budget}"
        )
    if pool.n_problems < 4:
        raise MarginalError(f"bank selection needs at least 4 labelled problems (2 per half), got {pool.n_problems}")


def _fold_scores(grids: Sequence[Grid], folds) -> tuple[list, list, list, np.ndarray, float]:
    """Per fold: the split chosen on calibration, its calibration and held-out accuracy; pooled credit; MC se."""
    n = grids[0].acc.shape[0]
    credit = np.zeros(n)
    splits, calib, held, se = [], [], [], 0.0
    for g, (cal, test) in zip(grids, folds):
        cell = _best_cell(g, cal)
        j = g.index(*cell)
        splits.append(cell)
        calib.append(float(g.acc[cal, j].mean()))
        held.append(float(g.acc[test, j].mean()))
        credit[test] = g.acc[test, j]
        se = max(se, float(np.sqrt(g.mc_var[test, j].sum()) / len(test)))
    return splits, calib, held, credit, se


def select_bank(
    pool: Pool, k: int, budget: int, *, seed: int = 0, n_boot: int = 2000, level: float = 0.95, reps: int = 128
) -> BankSelection:
    """Greedy selection of ``k`` priors for ``budget``, cross-fitted over two halves (see module docstring)."""
    lab = covered(pool, "bank selection")
    _check_selection(lab, k, budget)
    half_a, half_b = split_problems(lab.n_problems, 0.5, seed)
    folds = ((half_a, half_b), (half_b, half_a))
    first, every = lab.priors[:k], lab.priors
    chosen_a, chosen_b = (greedy_bank(lab, k, budget, cal, seed=seed, reps=reps) for cal, _ in folds)
    chosen = (chosen_a, chosen_b)
    g_first, g_all = _bank_grid(lab, first, budget, seed, reps), _bank_grid(lab, every, budget, seed, reps)
    specs = [
        ("selected", chosen, [_bank_grid(lab, c, budget, seed, reps) for c in chosen]),
        ("first-k", (first, first), [g_first, g_first]),
        ("all", (every, every), [g_all, g_all]),
    ]
    scores = [_fold_scores(grids, folds) for _, _, grids in specs]
    credits = np.stack([s[3] for s in scores])
    diff = np.stack([credits[0] - credits[1], credits[0] - credits[2]])
    rng = np.random.default_rng(seed)
    cis = paired_boot(np.concatenate([credits, diff]), n_boot, level, rng)
    fold_cis = [paired_boot(diff[:, test], n_boot, level, rng) for _, test in folds]
    arms = [
        Arm(name, banks, tuple(sp), tuple(ca), tuple(ho), float(cr.mean()), cis[i], cr)
        for i, ((name, banks, _), (sp, ca, ho, cr, _)) in enumerate(zip(specs, scores))
    ]
    diffs = [
        Paired(
            name,
            (float(diff[i, half_b].mean()), float(diff[i, half_a].mean())),  # test half of fold 0, of fold 1
            (fold_cis[0][i], fold_cis[1][i]),
            float(diff[i].mean()),
            cis[3 + i],
        )
        for i, name in enumerate(("selected - first-k", "selected - all"))
    ]
    halves = (tuple(lab.problems[i] for i in half_a), tuple(lab.problems[i] for i in half_b))
    return BankSelection(
        int(k),
        int(budget),
        seed,
        halves,
        (arms[0], arms[1], arms[2]),
        (diffs[0], diffs[1]),
        max(s[4] for s in scores),
        n_boot,
        level,
    )
