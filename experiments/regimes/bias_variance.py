"""Why the closed-form normal approximation was far off, measured step by step (issue 12, section 2).

    python experiments/regimes/bias_variance.py [POOL.db:B ...]
        (default: pool A at B = 32 and the study's GSM8K, HumanEval and GPQA pools at B = 48)

For each pool, the mean |error| over the (K, M) cells of each approximation
against the exact grid of the same allocation model (K priors at random,
draws with replacement; `bias_variance`'s reference), adding one change at a
time to the closed form Π_b Φ(Γ_b / sd) with sd² = σ²_w/(KM) + σ²_btw/K:

1. ``product``: the closed form (plug-in moments, finite-bank factor 1 − K/P);
2. ``strongest``: the strongest competitor alone (an upper bound's flavour);
3. ``joint``: one multivariate normal vote-share vector, every competitor at once;
4. ``rounded``: its counts rounded (ties and empty votes as in the vote);
5. ``priors drawn``: the K priors drawn, not a normal between-prior term;
6. ``own covariance``: each prior's own multinomial covariance, which is
   `marginal.analysis.margins.normal_vote`, what `bias_variance` reports.

Writes bias_variance.json next to this file. Deterministic (seed 0); a pool
being written is read from a snapshot. Left out: the strict tie rule.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from marginal.analysis import bias_variance, load_pool
from marginal.analysis.margins import moments, normal_vote, shares
from marginal.snapshot import snapshot
from marginal.vote import credit_array

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
DEFAULT = [
    f"{HERE / 'pools' / 'gsm8k-qwen05.db'}:32",
    *(
        f"{ROOT / 'experiments' / 'study' / 'pools' / f'{t}.db'}:48"
        for t in ("gsm8k-qwen15", "humaneval-qwen05", "gpqa-qwen05")
    ),
]
DRAWS = 2000
STEPS = ("product", "strongest", "joint", "rounded", "priors drawn", "own covariance")


def _phi(z: np.ndarray) -> np.ndarray:
    from math import erf, sqrt

    return 0.5 * (1 + np.vectorize(lambda x: erf(x / sqrt(2)))(z))


def closed_form(pool, cells, strongest: bool) -> np.ndarray:
    """Π_b Φ(Γ_b / sd) (or the strongest competitor's Φ alone), plug-in moments, finite bank."""
    sub = pool.subset(pool.labelled)
    p = shares(sub)
    N, P, A = p.shape
    _, _, _, present = moments(pool)
    good = sub.correct_mask(A)
    g = np.where(good, p.sum(axis=1), -1.0).argmax(axis=1)
    pg = np.take_along_axis(p, g[:, None, None].repeat(P, 1), axis=2)
    mu = pg - p
    sw = (pg + p - mu**2).mean(axis=1)
    s2 = mu.var(axis=1, ddof=1)
    gam = mu.mean(axis=1)
    out = np.zeros((N, len(cells)))
    for j, (k, m) in enumerate(cells):
        sd = np.sqrt(sw / (k * m) + s2 / k * (1 - k / P))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, gam / np.where(sd > 0, sd, 1), np.sign(gam) * np.inf)
        ph = np.where(present, _phi(np.nan_to_num(z, nan=0.0, posinf=40, neginf=-40)), 1.0)
        out[:, j] = np.where(sub.gold_sampled(), ph.min(axis=1) if strongest else ph.prod(axis=1), 0.0)
    return out


def shared_normal(pool, cells, rounded: bool, drawn_priors: bool, seed: int = 0) -> np.ndarray:
    """One normal vote-share vector per draw: bank-mean within covariance; between term normal or drawn."""
    sub = pool.subset(pool.labelled)
    p = shares(sub)
    N, P, A = p.shape
    good = sub.correct_mask(A)
    rng = np.random.default_rng(seed)
    out = np.zeros((N, len(cells)))

    def root(s):
        w, v = np.linalg.eigh((s + s.T) / 2)
        return v * np.sqrt(np.clip(w, 0, None))

    for i in np.flatnonzero(sub.gold_sampled()):
        keep = p[i].sum(axis=0) > 0
        pc, g = p[i][:, keep], good[i][keep]
        pb = pc.mean(axis=0)
        w = rng.standard_normal((DRAWS, len(pb))) @ root(np.mean([np.diag(x) - np.outer(x, x) for x in pc], axis=0)).T
        b = rng.standard_normal((DRAWS, len(pb))) @ root(np.atleast_2d(np.cov(pc.T, ddof=1))).T
        order = np.argsort(rng.random((DRAWS, P)), axis=1)
        for j, (k, m) in enumerate(cells):
            mean = pc[order[:, :k]].mean(axis=1) if drawn_priors else pb + b * np.sqrt(max(0.0, 1 - k / P) / k)
            x = mean + w / np.sqrt(k * m)
            if rounded:
                out[i, j] = credit_array(np.clip(np.rint(x * k * m), 0, None), g).mean()
            else:
                out[i, j] = np.mean(np.where(g, x, -np.inf).max(axis=1) > np.where(~g, x, -np.inf).max(axis=1))
    return out


def ablation(path: str, budget: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pool = load_pool(snapshot(path, Path(tmp) / "pool.db"))
    bv = bias_variance(pool, budget)
    sub = pool.subset(pool.labelled)
    approx = {
        "product": closed_form(pool, bv.cells, strongest=False),
        "strongest": closed_form(pool, bv.cells, strongest=True),
        "joint": shared_normal(pool, bv.cells, rounded=False, drawn_priors=False),
        "rounded": shared_normal(pool, bv.cells, rounded=True, drawn_priors=False),
        "priors drawn": shared_normal(pool, bv.cells, rounded=True, drawn_priors=True),
        "own covariance": normal_vote(
            shares(sub), sub.correct_mask(shares(sub).shape[2]), sub.gold_sampled(), bv.cells
        ),
    }
    exact = bv.exact.mean(axis=0)
    return {
        "pool": str(Path(path).name),
        "budget": budget,
        "problems": int(sub.n_problems),
        "priors": pool.n_priors,
        "cells": len(bv.cells),
        "mean_abs_error_points": {
            k: round(100 * float(np.abs(v.mean(axis=0) - exact).mean()), 2) for k, v in approx.items()
        },
        "reported_points": round(100 * bv.mean_abs_error, 2),
    }


def main(argv: list[str]) -> int:
    rows = [ablation(*a.rsplit(":", 1)[:1], int(a.rsplit(":", 1)[1])) for a in (argv or DEFAULT)]
    print("mean |error| (points) of each approximation against the exact grid, one change at a time")
    print(f"{'pool':24} {'B':>3} {'N':>4} " + " ".join(f"{s:>14}" for s in STEPS))
    for r in rows:
        e = r["mean_abs_error_points"]
        print(f"{r['pool']:24} {r['budget']:>3} {r['problems']:>4} " + " ".join(f"{e[s]:>14.2f}" for s in STEPS))
    (HERE / "bias_variance.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
