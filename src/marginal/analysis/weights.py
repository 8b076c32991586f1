"""Weighted marginalization: vote weights per prior, compared with uniform on held-out problems.

Weights (fitted on a calibration split of problems):

- ``uniform``: every prior 1.
- ``calibrated``: w_c = max(0, logit(acc_c) + log(L − 1)), the weighted-
  majority weight of a voter with accuracy acc_c among L alternatives;
  acc_c is the prior's share of gold samples (add-half smoothed), L the mean
  number of distinct answers per problem (at least 2).
- ``agreement`` (label-free): the same transform of each prior's share of
  samples equal to the problem's pooled plurality answer.

A weighted vote is argmax_a Σ_c w_c n_c(a), credited by ``marginal.vote``'s
rule like the plain vote (scores equal to 9 decimals tie).
Held-out accuracy is Monte Carlo with common random numbers: every weight set
is scored on the same draws, so the paired difference to uniform has a small
error; its CI is over test problems. All weights 0 falls back to uniform.
Left out: per-problem (adaptive) weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import MarginalError
from ..vote import credit_array
from .accuracy import draw_orders, relabel_pool
from .margins import prior_stats
from .pool import Pool

KINDS = ("uniform", "calibrated", "agreement")


def split_problems(n: int, split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, test) problem indices: a seeded random split, ``split`` = calibration share."""
    if not 0 < split < 1:
        raise MarginalError(f"split must be in (0, 1), got {split}")
    if n < 2:
        raise MarginalError(f"a calibration/test split needs at least 2 problems, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    k = min(max(1, int(round(split * n))), n - 1)
    return np.sort(perm[:k]), np.sort(perm[k:])


def _transform(share: np.ndarray, n_alt: float, n_obs: float) -> np.ndarray:
    p = (share * n_obs + 0.5) / (n_obs + 1)
    w = np.log(p / (1 - p)) + math.log(max(n_alt, 2.0) - 1)
    w = np.clip(w, 0, None)
    return w if w.sum() > 0 else np.ones_like(w)


def prior_weights(calib: Pool, kind: str) -> np.ndarray:
    """(P,) vote weights fitted on a calibration pool."""
    if kind not in KINDS:
        from ..errors import unknown

        raise unknown("weighting", kind, KINDS)
    P = calib.n_priors
    if kind == "uniform":
        return np.ones(P)
    c, _, n = calib.counts()
    n_alt = float((c.sum(axis=1) > 0).sum(axis=1).mean())
    n_obs = float(n.sum(axis=0).mean())
    st = prior_stats(calib)
    if kind == "agreement":
        return _transform(st.plurality_agreement, n_alt, n_obs)
    calib.require_gold("calibrated weights")
    assert st.accuracy is not None  # a labelled pool's priors have accuracies
    return _transform(st.accuracy, n_alt, n_obs)


def weighted_credit(
    pool: Pool,
    weights: np.ndarray,
    k: int,
    m: int,
    *,
    reps: int = 200,
    mode: str = "first",
    replace: bool = False,
    ties: str = "split",
    seed: int = 0,
) -> np.ndarray:
    """(S, N) per-problem expected credit of each weight set (S, P) at (K, M), on common draws."""
    pool.require_gold("weighted vote accuracy")
    weights = np.atleast_2d(np.asarray(weights, float))
    if weights.shape[1] != pool.n_priors:
        raise MarginalError(f"weights must have one value per prior ({pool.n_priors}), got {weights.shape[1]}")
    sub = pool.subset(pool.labelled)
    ids, W, good = relabel_pool(sub)
    rng = np.random.default_rng(seed)
    N = ids.shape[0]
    out = np.zeros((len(weights), N))
    lab = np.arange(W, dtype=np.int32)
    chunk = max(1, 16_000_000 // max(1, reps * k * W))
    for s in range(0, N, chunk):
        sl = slice(s, s + chunk)
        drawn = draw_orders(ids[sl], sub.sizes[sl], reps, replace, "first", rng)
        if mode == "random":  # weights follow their prior, so permute both the same way
            order = np.argsort(rng.random(drawn.shape[:3]), axis=2)
            drawn = np.take_along_axis(drawn, order[..., None], axis=2)
            wsel = weights[:, order[..., :k]]
        else:
            wsel = np.broadcast_to(weights[:, None, None, :k], (len(weights),) + drawn.shape[:2] + (k,))
        cnt = (drawn[:, :, :k, :m, None] == lab).sum(axis=3)  # (R, n, k, W)
        score = np.einsum("srnk,rnka->srna", wsel, cnt.astype(float))
        out[:, sl] = credit_array(score, good[sl], ties).mean(axis=1)
    return out


@dataclass(frozen=True, eq=False)
class WeightComparison:
    """Held-out accuracy of weighted votes against uniform."""

    kinds: tuple[str, ...]
    weights: np.ndarray
    """(S, P) fitted on the calibration split."""
    allocation: tuple[int, int]
    accuracy: np.ndarray
    """(S,) held-out accuracy."""
    diff: np.ndarray
    """(S,) accuracy minus uniform's (paired, same draws)."""
    diff_ci: np.ndarray
    """(S, 2) 95% CI of the difference over test problems."""
    n_test: int

    def verdict(self, kind: str) -> str:
        j = self.kinds.index(kind)
        lo, hi = self.diff_ci[j]
        if lo > 0:
            return "beats uniform"
        if hi < 0:
            return "worse than uniform"
        return "no significant difference"


def compare_weights(
    pool: Pool,
    k: int | None = None,
    m: int | None = None,
    *,
    split: float = 0.5,
    seed: int = 0,
    reps: int = 200,
    kinds: tuple[str, ...] = KINDS,
) -> WeightComparison:
    """Fit weights on a calibration split, compare held-out accuracy at (K, M) (default all priors, M = 1)."""
    pool.require_gold("comparing weightings")
    sub = pool.subset(pool.labelled)
    k = sub.n_priors if k is None else k
    m = 1 if m is None else m
    if not (1 <= k <= sub.n_priors and 1 <= m <= sub.n_slots):
        raise MarginalError(
            f"allocation K={k}, M={m} is outside the pool ({sub.n_priors} priors x {sub.n_slots} samples)"
        )
    cal, test = split_problems(sub.n_problems, split, seed)
    cpool, tpool = sub.subset(cal), sub.subset(test)
    w = np.stack([prior_weights(cpool, kd) for kd in kinds])
    cr = weighted_credit(tpool, w, k, m, reps=reps, seed=seed + 1)
    base = cr[kinds.index("uniform")] if "uniform" in kinds else cr[0]
    d = cr - base
    se = d.std(axis=1, ddof=1) / math.sqrt(d.shape[1]) if d.shape[1] > 1 else np.zeros(len(kinds))
    ci = np.stack([d.mean(axis=1) - 1.96 * se, d.mean(axis=1) + 1.96 * se], axis=1)
    return WeightComparison(tuple(kinds), w, (k, m), cr.mean(axis=1), d.mean(axis=1), ci, len(test))
