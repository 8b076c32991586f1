"""Benchmark of the allocation-accuracy grid on a synthetic GSM8K-sized pool.

1319 problems x 16 priors x 16 samples; per problem 1 to 12 distinct
answers (skewed to few, as for a decent model), per prior a Dirichlet
mixture around the problem's answer distribution (priors disagree), gold
is answer 0 with a problem-level difficulty, ~2% failed samples. Measures
the full grid K x M <= 64, "first K", by the default method ("auto": exact
where the vote state space is small, common-random-numbers Monte Carlo
elsewhere) and by pure common-random-numbers Monte Carlo, against plain
independent Monte Carlo (fresh draws per cell) run until every cell
reaches the same dataset-level standard error (speed ratio). Reports peak
memory (ru_maxrss). Writes bench/results/analysis.json.

Run: python bench/analysis.py [--quick]. Left out: the "random K" mode and
bootstrap draws (same code paths, not timed here).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np

from marginal.analysis.accuracy import accuracy_grid, grid_cells, mc_cell
from marginal.analysis.pool import FAILED, Pool

TARGET_SE = 0.002
BUDGET = 64


def synthetic_pool(n_problems: int = 1319, n_priors: int = 16, n_samples: int = 16, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    n_ans = np.minimum(1 + rng.geometric(0.35, n_problems) - 1, 12)
    n_ans = np.clip(n_ans, 1, 12)
    answers = np.empty((n_problems, n_priors, n_samples), np.int32)
    for i in range(n_problems):
        d = int(n_ans[i])
        base = rng.dirichlet(np.full(d, 0.7))
        gold_share = rng.beta(1.2, 1.0)
        base = (
            np.concatenate([[gold_share], (1 - gold_share) * base[1:] / max(base[1:].sum(), 1e-12)])
            if d > 1
            else np.ones(1)
        )
        conc = rng.uniform(2, 30)
        for c in range(n_priors):
            p = rng.dirichlet(base * conc + 1e-3)
            answers[i, c] = rng.choice(d, size=n_samples, p=p)
    fail = rng.random(answers.shape) < 0.02
    answers[fail] = FAILED
    return Pool(
        answers,
        np.zeros(n_problems, np.int32),
        tuple(f"prior{c}" for c in range(n_priors)),
        tuple(str(i) for i in range(n_problems)),
        "synthetic",
    )


def independent_mc(pool: Pool, cells, target: float, seed: int = 0) -> tuple[float, np.ndarray, int]:
    """Plain Monte Carlo, fresh draws per cell, reps sized from a pilot to reach the target SE."""
    t0 = time.perf_counter()
    ses = np.zeros(len(cells))
    total_reps = 0
    for j, (k, m) in enumerate(cells):
        a, v = mc_cell(pool, k, m, reps=8, seed=seed + 7 * j)
        per_rep_var = v.sum() * 8 / len(a) ** 2
        reps = max(8, int(np.ceil(per_rep_var / target**2 * 1.1)))
        a, v = mc_cell(pool, k, m, reps=reps, seed=seed + 7 * j + 1)
        ses[j] = np.sqrt(v.sum()) / len(a)
        total_reps += reps
    return time.perf_counter() - t0, ses, total_reps


def main() -> None:
    quick = "--quick" in sys.argv
    pool = synthetic_pool(200 if quick else 1319)
    cells = grid_cells(pool.n_priors, pool.n_slots, BUDGET)
    rows = []
    results: dict = {
        "problems": pool.n_problems,
        "priors": pool.n_priors,
        "samples": pool.n_slots,
        "budget": BUDGET,
        "cells": len(cells),
        "target_se": TARGET_SE,
    }
    for method, reps in (("auto", 64), ("mc", 48)):
        t0 = time.perf_counter()
        g = accuracy_grid(pool, BUDGET, method=method, reps=reps, seed=1)
        dt = time.perf_counter() - t0
        rows.append((f"crn-{method}", dt, float(g.se.max()), float(g.exact.mean())))
        results[method] = {
            "seconds": dt,
            "max_se": float(g.se.max()),
            "exact_share": float(g.exact.mean()),
            "reps": reps,
            "acc_k8_m8": g.at(8, 8),
        }
    t_ind, ses, tot = independent_mc(pool, cells, float(results["mc"]["max_se"]))
    rows.append(("independent-mc", t_ind, float(ses.max()), 0.0))
    results["independent"] = {"seconds": t_ind, "max_se": float(ses.max()), "total_reps": tot}
    results["speed_ratio_vs_crn_mc"] = t_ind / results["mc"]["seconds"]
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'method':<16}{'seconds':>9}{'max SE':>9}{'exact':>7}")
    for name, dt, se, ex in rows:
        print(f"{name:<16}{dt:>9.2f}{se:>9.4f}{ex:>7.2f}")
    print(f"speed ratio independent/CRN-MC at equal max SE: {results['speed_ratio_vs_crn_mc']:.1f}x")
    print(f"peak RSS {results['peak_rss_mib']:.0f} MiB")
    a = results["auto"]
    results["targets_met"] = {
        "seconds<=10": a["seconds"] <= 10,
        "max_se<=0.002": a["max_se"] <= TARGET_SE,
        "peak_rss<2GiB": results["peak_rss_mib"] < 2048,
    }
    print("targets (auto):", ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in results["targets_met"].items()))
    if not quick:
        out = Path(__file__).parent / "results" / "analysis.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
