"""Everything ``marginal analyze`` and ``marginal report`` show for one pool, computed once.

``analyze(pool, budget, ...)`` runs the measures that the pool supports
(``priors=[...]``: on that sub-bank of the pool, in the given order):
label-free ones always (label-free margins, per-prior agreement), the rest
when gold is known (accuracy grid for both prior modes, oracle, pass@k,
margins, drift and regime, bias-variance, weights, planner).
``Analysis.to_dict()`` is the JSON form (plain lists and numbers).
Left out: rendering (marginal.cli.render, report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..errors import MarginalError
from .accuracy import Grid, accuracy_grid, oracle_grid, pool_pass_at_k
from .margins import (
    BiasVariance,
    Drift,
    Margins,
    PriorStats,
    bias_variance,
    drift,
    label_free_margins,
    margins,
    prior_stats,
)
from .planner import PlannerResult, plan
from .pool import Pool
from .subbank import sub_bank
from .weights import WeightComparison, compare_weights

T = TypeVar("T")


def labelled_part(value: T | None, what: str) -> T:
    """``value``, an `Analysis` field that needs gold; a MarginalError naming ``what`` where it is None.

    None means a label-free pool (or, for drift, plan and weights, a pool too small for them).
    """
    if value is None:
        raise MarginalError(f"{what} needs gold answers; this analysis has none (a label-free pool)")
    return value


@dataclass(frozen=True, eq=False)
class Analysis:
    """The analyses of one pool (fields needing gold are None for a label-free pool)."""

    pool: Pool
    budget: int
    label_free_margin: np.ndarray
    """(N, P) label-free margin per problem and K."""
    priors: PriorStats
    grid: Grid | None = None
    """Accuracy per (K, M), first K priors in bank order."""
    grid_random: Grid | None = None
    """Accuracy per (K, M), K priors at random."""
    oracle: Grid | None = None
    pass_at: dict | None = None
    margins: Margins | None = None
    drift: Drift | None = None
    bias_variance: BiasVariance | None = None
    weights: WeightComparison | None = None
    plan: PlannerResult | None = None

    @property
    def label_free(self) -> bool:
        return self.grid is None

    def to_dict(self) -> dict:
        """Everything as JSON-ready values (the ``--json`` output)."""
        p = self.pool
        out: dict = {
            "run_id": p.run_id,
            "problems": p.n_problems,
            "priors": list(p.priors),
            "samples_per_prior": p.n_slots,
            "budget": self.budget,
            "label_free": self.label_free,
            "label_free_margin_mean": _f(self.label_free_margin.mean(axis=0)),
            "prior_stats": {
                "accuracy": None if self.priors.accuracy is None else _f(self.priors.accuracy),
                "failed": _f(self.priors.failed),
                "agreement": _f(self.priors.agreement),
                "plurality_agreement": _f(self.priors.plurality_agreement),
            },
        }
        if self.label_free:
            return out
        for name, grid in (("grid", self.grid), ("grid_random", self.grid_random), ("oracle", self.oracle)):
            out[name] = _grid_dict(labelled_part(grid, name))
        out["pass_at_k"] = self.pass_at
        m = labelled_part(self.margins, "margins")
        out["margins"] = {
            "gamma_mean": _f(m.gamma.mean(axis=0)),
            "dominance": _f(m.dominance),
            "gold_sampled": int(m.gold_sampled.sum()),
            "outvoted": int(m.outvoted.sum()),
            "tied": int(m.tied.sum()),
        }
        if self.drift is not None:
            out["drift"] = _drift_dict(self.drift, self.budget, p.n_slots)
        if self.bias_variance is not None:
            out["bias_variance"] = _bias_variance_dict(self.bias_variance)
        if self.weights is not None:
            out["weights"] = _weights_dict(self.weights)
        if self.plan is not None:
            out["plan"] = _plan_dict(self.plan)
        return out


def _f(x) -> list:
    return np.round(np.asarray(x, dtype=float), 6).tolist()


def analyze(
    pool: Pool,
    budget: int | None = None,
    *,
    split: float = 0.5,
    seed: int = 0,
    ties: str = "split",
    replace: bool = False,
    method: str = "auto",
    reps: int = 128,
    n_boot: int = 2000,
    priors: Sequence[str] | str | None = None,
) -> Analysis:
    """Run every analysis the pool supports for ``budget`` (default: the largest valid).

    ``priors``: analyse the sub-bank of these priors, in this order (`subbank.sub_bank`)."""
    if priors is not None:
        pool = sub_bank(pool, priors)
    budget = pool.max_budget if budget is None else budget
    pool.check_budget(budget)
    lfm = label_free_margins(pool)
    ps = prior_stats(pool)
    if pool.label_free:
        return Analysis(pool, int(budget), lfm, ps)
    g = accuracy_grid(pool, budget, mode="first", ties=ties, replace=replace, method=method, reps=reps, seed=seed)
    gr = accuracy_grid(pool, budget, mode="random", ties=ties, replace=replace, method=method, reps=reps, seed=seed)
    og = oracle_grid(pool, budget, replace=replace)
    n_min = int(pool.sizes[pool.labelled].sum(axis=1).min())
    pak = {str(k): pool_pass_at_k(pool, k) for k in (1, 2, 4, 8, 16, 32, 64) if k <= n_min}
    m = margins(pool)
    dr = drift(pool, n_boot=n_boot, seed=seed) if pool.n_priors > 1 else None
    bv = bias_variance(pool, budget, method=method, seed=seed)
    n_lab = int(pool.labelled.sum())
    pl = plan(pool, budget, split=split, seed=seed, grid=g) if n_lab >= 2 else None
    wc = None
    if n_lab >= 2 and pool.n_priors > 1:
        k, mm = pl.choice if pl is not None and pl.choice[0] > 1 else (min(pool.n_priors, budget), 0)
        mm = mm or max(1, min(budget // k, pool.n_slots))
        wc = compare_weights(pool, k, mm, split=split, seed=seed, reps=min(reps, 200))
    return Analysis(pool, int(budget), lfm, ps, g, gr, og, pak, m, dr, bv, wc, pl)


def _grid_dict(g: Grid) -> dict:
    return {
        "cells": [list(c) for c in g.cells],
        "accuracy": _f(g.mean),
        "mc_se": _f(g.se),
        "ci95": _f(np.clip(np.stack([g.mean - 1.96 * g.sampling_se, g.mean + 1.96 * g.sampling_se], 1), 0, 1)),
        "exact_share": float(g.exact.mean()),
        "mode": g.mode,
        "replace": g.replace,
        "ties": g.ties,
    }


def _drift_dict(d: Drift, budget: int, n_slots: int) -> dict:
    return {
        "lambda": d.lam,
        "lambda_ci": list(d.lam_ci),
        "level": d.level,
        "regime": d.regime,
        "k95": d.k95,
        "kappa_mean": _f(d.kappa_mean),
        "gamma_mean": _f(d.gamma_mean),
        "gamma_ci": _f(d.gamma_ci),
        "recommend": list(d.recommend(budget, n_slots)),
    }


def _bias_variance_dict(bv: BiasVariance) -> dict:
    return {
        "sigma2_within_mean": float(np.nanmean(bv.sigma2_w)) if np.isfinite(bv.sigma2_w).any() else None,
        "sigma2_between_mean": float(np.nanmean(bv.sigma2_btw)) if np.isfinite(bv.sigma2_btw).any() else None,
        "cells": [list(c) for c in bv.cells],
        "normal": _f(bv.normal.mean(axis=0)),
        "exact": _f(bv.exact.mean(axis=0)),
        "mean_abs_error": bv.mean_abs_error,
    }


def _weights_dict(w: WeightComparison) -> dict:
    return {
        "allocation": list(w.allocation),
        "n_test": w.n_test,
        "kinds": {
            k: {
                "weights": _f(w.weights[i]),
                "accuracy": float(w.accuracy[i]),
                "diff_vs_uniform": float(w.diff[i]),
                "diff_ci": _f(w.diff_ci[i]),
                "verdict": w.verdict(k),
            }
            for i, k in enumerate(w.kinds)
        },
    }


def _plan_dict(pl: PlannerResult) -> dict:
    return {
        "choice": list(pl.choice),
        "calib_accuracy": pl.calib_accuracy,
        "regime": pl.regime,
        "n_calib": pl.n_calib,
        "n_test": pl.n_test,
        "split": pl.split,
        "seed": pl.seed,
        "held_out": [
            {
                "name": s.name,
                "K": s.k,
                "M": s.m,
                "accuracy": s.accuracy,
                "ci": list(s.ci),
                "diff_vs_planner": s.diff,
                "diff_ci": list(s.diff_ci),
            }
            for s in pl.scored
        ],
        "buckets": [b.__dict__ | {"choice": list(b.choice)} for b in pl.buckets],
    }
