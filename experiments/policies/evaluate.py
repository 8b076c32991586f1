"""Evaluate allocation policies on stored K x M pools (issue 5, "Evaluation").

For each pool and budget B, with marginal's Python API and without
generating anything:

- every policy is replayed on the pool with ``marginal.replay.replay`` (sample
  i of a (problem, prior) has the seed a live run would give it, so this is
  what a live run would have drawn): accuracy, 95% CI, mean samples used,
  problems where the policy asked for more samples than the pool holds;
- fixed splits (repetition K = 1, diversity M = 1, every K x M = B) also get
  their expected accuracy over sample orders from the exact grid
  (``accuracy_grid``), and the best fixed split in hindsight is read there
  (K x M = B, and K x M <= B); several distinct answers graded correct stay
  apart in the grid's vote, as in a real one;
- ``adaptive`` (thresholds 0.9 / 0.95 / 0.99) is also averaged over R seeded
  random orders of each cell's stored samples (order 0 = the live order), the
  counterpart of the grid's expectation for a sequential policy;
- ``planned`` is cross-fitted: the planner's rule (best cell on the
  calibration half, ties: fewer samples, then more priors; fold 0 is the split
  of ``marginal analyze --save-plan``) is fitted on one half of the problems
  and scored on the other, then the halves swap, so each problem gets a
  held-out score;
- the issue's two goals are checked with paired bootstrap CIs over problems.

A cell is "not measurable on this pool" when a policy asked for more samples
of a prior than the pool holds on some problem: its accuracy is then only
bounded (an exhausted problem's credit is in [0, 1], its samples used in
[drawn, B]), and both bounds are reported instead of a truncated number.
Only problems whose every prior holds all its samples are used (a pool still
being generated has a partial last problem); each pool is read from a
snapshot (SQLite online backup), so a pool being written is safe to pass.

Left out: repetition beyond the samples a prior holds (no extrapolation);
weighted votes; selection optimism of "best in hindsight" (it is the max over
cells on the same problems, so it is optimistic by construction).

Run: python experiments/policies/evaluate.py POOL.db [POOL.db ...] --out experiments/policies/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginal.analysis import accuracy_grid, load_pool, plan, split_problems
from marginal.errors import MarginalError
from marginal.policies import Adaptive, Fixed, Policy, make_policy
from marginal.replay import replay, replay_question
from marginal.snapshot import snapshot
from marginal.store import Store
from marginal.vote import credit, tally

BUDGETS = (4, 8, 16, 32)
THRESHOLDS = (0.9, 0.95, 0.99)
DEFAULT_THRESHOLD = 0.95
SAMPLE_SHARE = 0.7  # the goal: adaptive uses <= 70% of the best split's samples


@dataclass(frozen=True)
class Cells:
    """A pool's stored answers, complete problems only, in store order."""

    db: str
    run_id: str
    task: str
    model: str
    priors: tuple[str, ...]
    problems: tuple[str, ...]
    """Complete problems (every prior holds n_slots samples)."""
    answers: tuple[tuple[tuple[str | None, ...], ...], ...]
    """[problem][prior] answers in sample-index order (None = failed)."""
    gold: tuple[frozenset[str], ...]
    """Per problem, the answers graded correct (as replay reads them)."""
    n_slots: int
    sampled: tuple[str, ...]
    """Every problem with at least one sample, in store order (what replay scores)."""


def load_cells(db: str) -> Cells:
    store = Store(db, readonly=True)
    try:
        run_id = store.only_run()
        cfg = store.run_config(run_id)
        priors = tuple(c.name for c in store.priors(run_id))
        by: dict[tuple[str, str], list] = {}
        for s in store.samples(run_id, decode=False):
            by.setdefault((s.problem_id, s.prior), []).append(s)
        problems = [p.id for p in store.problems(run_id)]
    finally:
        store.close()
    sampled = [p for p in problems if any((p, c) in by for c in priors)]
    n = max((len(v) for v in by.values()), default=0)
    complete = [p for p in sampled if all(len(by.get((p, c), [])) == n for c in priors)]
    answers, gold = [], []
    for p in complete:
        cells = [sorted(by[(p, c)], key=lambda s: s.index) for c in priors]
        answers.append(tuple(tuple(s.answer for s in cell) for cell in cells))
        gold.append(frozenset(s.answer for cell in cells for s in cell if s.correct))
    return Cells(
        db,
        run_id,
        str(cfg.get("task", "?")),
        str(cfg.get("model", "?")),
        priors,
        tuple(complete),
        tuple(answers),
        tuple(gold),
        n,
        tuple(sampled),
    )


def replay_order(cells: Cells, policy: Policy, budget: int, order: int, seed: int, details: bool = False):
    """``marginal.replay``'s loop on the complete problems, the samples of each cell in a seeded order.

    Order 0 is the stored (live-run) order. Returns per-problem credit, samples
    used and whether the policy asked for more samples than the pool holds
    (and, with ``details``, each problem's ``QuestionReplay``: why it stopped).
    """
    rng = np.random.default_rng([seed, order]) if order else None
    cr, us, ex, why = [], [], [], []
    for p, cellset in enumerate(cells.answers):
        pools = [list(c) if rng is None else [c[j] for j in rng.permutation(len(c))] for c in cellset]
        q = replay_question(policy, pools, budget)
        why.append(q)
        cr.append(credit(tally(q.answers), cells.gold[p]))
        us.append(sum(len(a) for a in q.answers))
        ex.append(q.exhausted)
    if details:
        return np.array(cr), np.array(us, float), np.array(ex, bool), why
    return np.array(cr), np.array(us, float), np.array(ex, bool)


class Boot:
    """Percentile bootstrap over problems; one seeded index matrix, so every difference is paired.

    A 2-D input (orders x problems: adaptive averaged over sample orders) is
    resampled over orders too (a second seeded index per replicate), so its
    CIs include the error of averaging a finite number of orders.
    """

    def __init__(self, n: int, n_boot: int, seed: int):
        self.idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        self.seed = seed
        self._w: dict[int, np.ndarray] = {}

    def _order_weights(self, r: int) -> np.ndarray:
        if r not in self._w:
            nb = len(self.idx)
            ridx = np.random.default_rng([self.seed, 1, r]).integers(0, r, size=(nb, r))
            w = np.zeros((nb, r))
            np.add.at(w, (np.arange(nb)[:, None], ridx), 1.0)
            self._w[r] = w / r
        return self._w[r]

    def ci(self, x: np.ndarray) -> list[float]:
        if x.ndim == 2:
            per_problem = self._order_weights(x.shape[0]) @ x  # (n_boot, N)
            m = np.take_along_axis(per_problem, self.idx, axis=1).mean(axis=1)
        else:
            m = x[self.idx].mean(axis=1)
        return [float(np.quantile(m, 0.025)), float(np.quantile(m, 0.975))]


def _r(x: float, d: int = 4) -> float:
    return float(round(float(x), d))


def summarize(x: np.ndarray, used: np.ndarray, boot: Boot) -> dict:
    return {"accuracy": _r(x.mean()), "ci": [_r(v) for v in boot.ci(x)], "mean_used": _r(used.mean(), 3)}


def live_replay(cells: Cells, policy: Policy, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The policy through ``marginal.replay.replay`` (the API), restricted to the complete problems.

    Cross-checked against ``replay_order`` at order 0: same credit and samples
    per problem, same exhaustion count (replay gives only the count; the
    per-problem flags come from ``replay_order``).
    """
    r = replay(cells.db, policy, budget, run=cells.run_id)
    pos = {p: i for i, p in enumerate(cells.sampled)}
    if len(r.credit) != len(cells.sampled):  # replay before ea7c64a also scored unsampled problems
        raise MarginalError(f"replay scored {len(r.credit)} problems, the pool has {len(cells.sampled)} sampled")
    keep = [pos[p] for p in cells.problems]
    c = np.array(r.credit)[keep]
    u = np.array(r.used, float)[keep]
    mc, mu, mx = replay_order(cells, policy, budget, 0, 0)
    if not (np.allclose(c, mc) and np.array_equal(u, mu)):
        raise AssertionError(f"replay_order disagrees with marginal.replay for {policy.name} at B={budget}")
    if len(cells.sampled) == len(cells.problems) and int(mx.sum()) != r.exhausted:
        raise AssertionError(
            f"exhaustion count differs for {policy.name} at B={budget}: {int(mx.sum())} vs {r.exhausted}"
        )
    return c, u, mx


def bounded(c: np.ndarray, u: np.ndarray, ex: np.ndarray, budget: int) -> dict[str, np.ndarray]:
    """Per-problem credit and samples with exhausted problems bounded: credit in [0, 1], samples in [drawn, B]."""
    return {
        "lo": np.where(ex, 0.0, c),
        "hi": np.where(ex, 1.0, c),
        "used_lo": u,
        "used_hi": np.where(ex, float(budget), u),
    }


def cell_entry(name, kind, k, m, budget, cells, grid_vals, boot, seed, extra=None) -> dict:
    """A fixed split: replayed (live order) and expected (exact grid), or not measurable."""
    e = {"name": name, "kind": kind, "K": k, "M": m, **(extra or {})}
    if k > len(cells.priors) or m > cells.n_slots:
        e["measurable"] = False
        e["why"] = (
            f"needs {m} samples of each of {k} priors; the pool holds {cells.n_slots} samples "
            f"of each of {len(cells.priors)} priors"
        )
        return e
    c, u, ex = live_replay(cells, Fixed(k, m, name), budget, seed)
    e["measurable"] = True
    e["live"] = {**summarize(c, u, boot), "exhausted": int(ex.sum())}
    e["expected"] = summarize(grid_vals(k, m), np.full(len(c), float(k * m)), boot)
    e["_x"] = grid_vals(k, m)
    return e


def evaluate_pool(db: str, budgets, thresholds, n_orders: int, n_boot: int, seed: int, split: float) -> dict:
    t0 = time.perf_counter()
    cells = load_cells(db)
    N, P, n = len(cells.problems), len(cells.priors), cells.n_slots
    out: dict = {
        "db": db,
        "run_id": cells.run_id,
        "task": cells.task,
        "model": cells.model,
        "priors": list(cells.priors),
        "samples_per_prior": n,
        "problems": N,
        "problems_left_out_partial": len(cells.sampled) - N,
        "n_orders": n_orders,
        "n_boot": n_boot,
        "seed": seed,
    }
    if N < 2:
        out["error"] = f"only {N} complete problem(s): nothing to evaluate"
        return out
    pool = load_pool(db, cells.run_id)
    pidx = {p: i for i, p in enumerate(pool.problems)}
    pool = pool.subset(np.array([pidx[p] for p in cells.problems]))
    gmax = min(max(*budgets, n), pool.max_budget)  # the repetition curve needs K = 1, M = n
    # exact where the vote's state space is small, Monte Carlo (4096 common-random-number draws) elsewhere
    grid = accuracy_grid(pool, gmax, method="auto", seed=seed, reps=4096, max_states=40_000)
    out["grid_exact_share"] = _r(grid.exact.mean(), 3)
    out["grid_max_mc_se"] = _r(float(grid.se.max()), 5)

    # problems with several distinct answers graded correct (HumanEval: passing programs that behave
    # differently): the grid keeps them apart in the vote as a real vote does (Pool.also_correct)
    out["several_correct_answers_problems"] = [p for p, g in zip(cells.problems, cells.gold) if len(g) > 1]

    def grid_vals(k, m):
        return grid.acc[:, grid.index(k, m)]

    boot = Boot(N, n_boot, seed)
    # repetition curve on the exact grid: K = 1, M = 1..n (the default prior only)
    rep = np.stack([grid_vals(1, m) for m in range(1, n + 1)], axis=1)  # (N, n)
    out["repetition_curve"] = [
        {"M": m, **summarize(rep[:, m - 1], np.full(N, float(m)), boot)} for m in range(1, n + 1)
    ]
    # hindsight frontier: for each sample count s, the best fixed K x M with K*M <= s (no CI; optimistic)
    mean = grid.acc.mean(axis=0)
    out["fixed_frontier"] = []
    for s_ in range(1, gmax + 1):
        js = [j for j, (k, m) in enumerate(grid.cells) if k * m <= s_]
        j = max(js, key=lambda j: (round(float(mean[j]), 12), -grid.cells[j][0] * grid.cells[j][1], grid.cells[j][0]))
        out["fixed_frontier"].append(
            {"samples": s_, "K": grid.cells[j][0], "M": grid.cells[j][1], "accuracy": _r(mean[j])}
        )
    folds = split_problems(N, split, seed)
    out["planner_folds"] = [folds[0].tolist(), folds[1].tolist()]
    out["budgets"] = {}
    for B in budgets:
        res: dict = {"policies": []}
        pols = res["policies"]
        cells_B = [c for c in grid.cells if c[0] * c[1] <= B]
        # baselines and every fixed K x M = B (first K priors in bank order)
        d = make_policy("diversity", B, P)
        pols.append(cell_entry("repetition", "repetition", 1, B, B, cells, grid_vals, boot, seed))
        pols.append(cell_entry("diversity", "diversity", d.k, d.m, B, cells, grid_vals, boot, seed))
        for k in range(2, P + 1):
            if B % k == 0 and (k, B // k) != (d.k, d.m):
                pols.append(cell_entry(f"fixed {k}x{B // k}", "fixed", k, B // k, B, cells, grid_vals, boot, seed))
        # best fixed split in hindsight, from the exact grid
        for label, rel, pick in (
            ("best fixed (K*M = B)", "=", lambda c, b=B: c[0] * c[1] == b),
            ("best fixed (K*M <= B)", "<=", lambda c: True),
        ):
            cand = [c for c in cells_B if pick(c)]
            if not cand:
                pols.append(
                    {
                        "name": label,
                        "kind": "best",
                        "measurable": False,
                        "why": f"no K x M {rel} {B} fits in the pool ({P} priors x {n} samples)",
                    }
                )
                continue
            kb, mb = max(cand, key=lambda c: (round(float(grid_vals(*c).mean()), 12), -c[0] * c[1], c[0]))
            pols.append(
                cell_entry(
                    label,
                    "best",
                    kb,
                    mb,
                    B,
                    cells,
                    grid_vals,
                    boot,
                    seed,
                    {"chosen_on": "all problems (hindsight: optimistic)"},
                )
            )
        # planned: cross-fitted planner choice
        if cells_B:
            pols.append(planned_entry(cells, pool, B, cells_B, folds, grid_vals, boot, seed, split))
        else:
            pols.append(
                {
                    "name": "planned",
                    "kind": "planned",
                    "measurable": False,
                    "why": f"B = {B} is over the pool's {pool.max_budget} samples per problem",
                }
            )
        # adaptive
        for tau in thresholds:
            pols.append(adaptive_entry(cells, B, tau, n_orders, boot, seed))
        res["goals"] = goals(res, rep, B, n, boot)
        for e in pols:
            e.pop("_x", None)
            e.pop("_ad", None)
        out["budgets"][str(B)] = res
    print(f"{cells.task}: {N} problems, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def planned_entry(cells, pool, B, cells_B, folds, grid_vals, boot, seed, split) -> dict:
    N = len(cells.problems)

    def choose(idx):
        return max(cells_B, key=lambda c: (round(float(grid_vals(*c)[idx].mean()), 12), -c[0] * c[1], c[0]))

    x_exp, x_live, used = np.zeros(N), np.zeros(N), np.zeros(N)
    choices = []
    for cal, test in (folds, folds[::-1]):
        k, m = choose(cal)
        choices.append([k, m])
        c, u, _ = live_replay(cells, Fixed(k, m, "planned"), B, seed)
        x_exp[test], x_live[test], used[test] = grid_vals(k, m)[test], c[test], u[test]
    try:
        api = plan(pool, B, split=split, seed=seed).choice  # what `marginal analyze --save-plan` writes for B
        matches = [int(api[0]), int(api[1])] == choices[0]
    except MarginalError as e:
        api, matches = None, f"plan() refused: {e}"
    return {
        "name": "planned",
        "kind": "planned",
        "measurable": True,
        "choices": choices,
        "fold0_matches_plan_api": matches,
        "live": {**summarize(x_live, used, boot), "exhausted": 0},
        "expected": summarize(x_exp, used, boot),
        "_x": x_exp,
    }


def adaptive_entry(cells, B, tau, n_orders, boot, seed) -> dict:
    pol = Adaptive(threshold=tau)
    name = f"adaptive {tau:g}"
    c0, u0, x0 = live_replay(cells, pol, B, seed)
    cs, us, xs = [c0], [u0], [x0]
    stops: Counter = Counter()
    needs: Counter = Counter()
    for r in range(n_orders):
        c, u, x, why = replay_order(cells, pol, B, r, seed, details=True)
        if r:
            cs.append(c), us.append(u), xs.append(x)
        for q in why:
            stops[q.stop_kind] += 1
            if q.short is not None:
                needs[f"prior {q.short[0]} needs {q.short[1]}"] += 1
    C, U, X = np.stack(cs), np.stack(us), np.stack(xs)  # (R, N)
    e = {"name": name, "kind": "adaptive", "threshold": tau}
    live_b = bounded(c0, u0, x0, B)
    e["live"] = {"exhausted": int(x0.sum()), "measurable": not x0.any()}
    if x0.any():
        e["live"].update(bounds(live_b, boot))
    else:
        e["live"].update(summarize(c0, u0, boot))
    # (orders, problems); means over both are the order-averaged accuracy, Boot resamples both
    lo, hi = np.where(X, 0.0, C), np.where(X, 1.0, C)
    ulo, uhi = U, np.where(X, float(B), U)
    e["stops"] = dict(sorted(stops.items()))  # why it stopped, over problems x orders
    e["exhausted_requests"] = dict(needs.most_common(6))
    e["measurable"] = not X.any()
    e["exhausted_share"] = _r(X.mean())
    e["problems_exhausted_in_some_order"] = int(X.any(axis=0).sum())
    if e["measurable"]:
        e["expected"] = summarize(lo, ulo, boot)
        e["expected"]["order_se"] = _r(C.mean(axis=1).std(ddof=1) / math.sqrt(len(C)) if len(C) > 1 else 0.0)
    else:
        e["why"] = (
            f"asked for more samples of a prior than the pool's {cells.n_slots} on "
            f"{e['problems_exhausted_in_some_order']} problem(s) ({100 * e['exhausted_share']:.0f}% of problem-orders)"
        )
        e["expected"] = bounds({"lo": lo, "hi": hi, "used_lo": ulo, "used_hi": uhi}, boot)
    e["_ad"] = {"lo": lo, "hi": hi, "used_lo": ulo, "used_hi": uhi}
    return e


def bounds(b: dict[str, np.ndarray], boot: Boot) -> dict:
    return {
        "accuracy_bounds": [_r(b["lo"].mean()), _r(b["hi"].mean())],
        "ci_of_bounds": [_r(boot.ci(b["lo"])[0]), _r(boot.ci(b["hi"])[1])],
        "mean_used_bounds": [_r(b["used_lo"].mean(), 3), _r(b["used_hi"].mean(), 3)],
    }


def _tri(worst: bool, best: bool):
    return True if worst else (False if not best else None)


def goals(res: dict, rep: np.ndarray, B: int, n: int, boot: Boot) -> dict:
    """The issue's goals for each adaptive threshold (expected values, paired bootstrap over problems).

    Three-valued where adaptive exhausted the pool: true if it holds with the
    worst-case bounds, false if it fails even with the best-case ones, else
    null ("undetermined").
    """
    by = {e["name"]: e for e in res["policies"]}
    out = {}
    for e in res["policies"]:
        if e["kind"] != "adaptive":
            continue
        ad = e["_ad"]
        g: dict = {}
        for label in ("best fixed (K*M = B)", "best fixed (K*M <= B)"):
            best = by.get(label)
            if not best or not best.get("measurable"):
                g[label] = {"holds": None, "why": best.get("why", "no fixed split") if best else "no fixed split"}
                continue
            x = best["_x"]
            lo_ci = best["expected"]["ci"][0]
            s = best["K"] * best["M"]
            worst = ad["lo"].mean() >= lo_ci and ad["used_hi"].mean() <= SAMPLE_SHARE * s
            bestc = ad["hi"].mean() >= lo_ci and ad["used_lo"].mean() <= SAMPLE_SHARE * s
            d = ad["lo"] - x
            g[label] = {
                "holds": _tri(worst, bestc),
                "best": [best["K"], best["M"]],
                "best_accuracy": best["expected"]["accuracy"],
                "best_ci": best["expected"]["ci"],
                "adaptive_accuracy": _r(ad["lo"].mean())
                if e["measurable"]
                else [_r(ad["lo"].mean()), _r(ad["hi"].mean())],
                "sample_share": _r(ad["used_lo"].mean() / s, 3)
                if e["measurable"]
                else [_r(ad["used_lo"].mean() / s, 3), _r(ad["used_hi"].mean() / s, 3)],
                "within_ci": bool(ad["lo"].mean() >= lo_ci) if e["measurable"] else None,
                "paired_diff": _r(d.mean()) if e["measurable"] else None,
                "paired_diff_ci": [_r(v) for v in boot.ci(d)] if e["measurable"] else None,
            }
            if not e["measurable"]:  # the difference at the worst- and best-case bounds, each with its CI
                d_hi = ad["hi"] - x
                g[label]["paired_diff_bounds"] = [_r(d.mean()), _r(d_hi.mean())]
                g[label]["paired_diff_bounds_ci"] = [_r(boot.ci(d)[0]), _r(boot.ci(d_hi)[1])]
        # repetition at equal mean samples: the exact K = 1 curve interpolated at adaptive's mean samples
        u = float(ad["used_lo"].mean())
        if not e["measurable"]:
            g["repetition at equal samples"] = {
                "holds": None,
                "why": "adaptive exhausted the pool at this budget (samples used only bounded)",
            }
        elif u > n:
            g["repetition at equal samples"] = {
                "holds": None,
                "adaptive_mean_used": _r(u, 3),
                "why": f"adaptive uses {u:.2f} samples on average; "
                f"repetition is measurable up to {n} samples of one prior here",
            }
        else:
            lo_m = max(1, int(math.floor(u)))
            hi_m = min(n, lo_m + 1)
            w = 0.0 if u <= 1 or hi_m == lo_m else u - lo_m
            r = (1 - w) * rep[:, lo_m - 1] + w * rep[:, hi_m - 1]
            d = ad["lo"] - r
            ci = boot.ci(d)
            g["repetition at equal samples"] = {
                "holds": bool(d.mean() > 0),
                "significant": bool(ci[0] > 0),
                "adaptive_mean_used": _r(u, 3),
                "how": f"exact K=1 grid at M={lo_m}"
                if w == 0
                else f"exact K=1 grid interpolated between M={lo_m} and M={hi_m}",
                "repetition_accuracy": _r(r.mean()),
                "adaptive_accuracy": _r(ad["lo"].mean()),
                "paired_diff": _r(d.mean()),
                "paired_diff_ci": [_r(v) for v in ci],
            }
        out[e["name"]] = g
    return out


# -- report -------------------------------------------------------------------------------


def _pct(x) -> str:
    return f"{100 * x:.1f}"


def _cell_text(e: dict, which: str) -> tuple[str, str, str]:
    """(accuracy, CI, samples) strings of one entry."""
    if not e.get("measurable", False) and which not in e:
        return "not measurable", "", ""
    d = e.get(which)
    if d is None:
        return "not measurable", "", ""
    if "accuracy_bounds" in d:
        a, b = d["accuracy_bounds"]
        u0, u1 = d["mean_used_bounds"]
        return (
            f"n/m: [{_pct(a)}, {_pct(b)}]",
            f"[{_pct(d['ci_of_bounds'][0])}, {_pct(d['ci_of_bounds'][1])}]",
            f"{u0:.1f}-{u1:.1f}",
        )
    return _pct(d["accuracy"]), f"[{_pct(d['ci'][0])}, {_pct(d['ci'][1])}]", f"{d['mean_used']:.1f}"


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"### {r['task']} — {r['model']} ({r['problems']} problems x {len(r['priors'])} priors x "
            f"{r['samples_per_prior']} samples; `{r['db']}`)\n"
        )
        if "error" in r:
            lines.append(r["error"] + "\n")
            continue
        lines.append(
            "| B | policy | K x M | expected acc % | 95% CI | mean samples "
            "| live-order acc % | 95% CI | samples | exhausted |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for B, res in r["budgets"].items():
            for e in res["policies"]:
                km = f"{e['K']}x{e['M']}" if "K" in e else ("/".join(f"{k}x{m}" for k, m in e.get("choices", [])) or "")
                if e["kind"] != "adaptive" and not e.get("measurable"):
                    lines.append(f"| {B} | {e['name']} | {km} | not measurable on this pool | | | | | | |")
                    continue
                a, ci, u = _cell_text(e, "expected")
                la, lci, lu = _cell_text(e, "live")
                ex = e.get("live", {}).get("exhausted", "")
                lines.append(f"| {B} | {e['name']} | {km} | {a} | {ci} | {u} | {la} | {lci} | {lu} | {ex} |")
        lines.append("")
        lines.append("Goals (adaptive, expected values; paired bootstrap over problems):\n")
        lines.append(
            "| B | policy | reaches best fixed (K*M = B) within its CI using <= 70% of its samples "
            "| adaptive - best: diff [CI] | beats repetition at equal mean samples "
            "| adaptive - repetition: diff [CI] |"
        )
        lines.append("|---|---|---|---|---|---|")
        for B, res in r["budgets"].items():
            for name, g in res["goals"].items():
                b = g["best fixed (K*M = B)"]
                rp = g["repetition at equal samples"]
                bt = _holds(b) + (
                    f" (best {b['best'][0]}x{b['best'][1]} {_pct(b['best_accuracy'])}%, share {b['sample_share']})"
                    if "best" in b
                    else f" ({b.get('why', '')})"
                )
                if b.get("paired_diff") is not None:
                    bd = (
                        f"{100 * b['paired_diff']:+.1f} "
                        f"[{100 * b['paired_diff_ci'][0]:+.1f}, {100 * b['paired_diff_ci'][1]:+.1f}]"
                    )
                elif "paired_diff_bounds" in b:
                    lo_, hi_ = b["paired_diff_bounds"]
                    bd = (
                        f"n/m: {100 * lo_:+.1f} to {100 * hi_:+.1f} [CI {100 * b['paired_diff_bounds_ci'][0]:+.1f}, "
                        f"{100 * b['paired_diff_bounds_ci'][1]:+.1f}]"
                    )
                else:
                    bd = ""
                rt = _holds(rp) + (
                    f" ({rp['how']}, {rp['adaptive_mean_used']:.2f} samples)"
                    if "how" in rp
                    else f" ({rp.get('why', '')})"
                )
                rd = (
                    f"{100 * rp['paired_diff']:+.1f} "
                    f"[{100 * rp['paired_diff_ci'][0]:+.1f}, {100 * rp['paired_diff_ci'][1]:+.1f}]"
                    if "paired_diff" in rp
                    else ""
                )
                lines.append(f"| {B} | {name} | {bt} | {bd} | {rt} | {rd} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _holds(g: dict) -> str:
    h = g.get("holds")
    s = "yes" if h is True else "no" if h is False else "undetermined"
    if h is True and "significant" in g:
        s += " (significant)" if g["significant"] else " (not significant)"
    return s


def plot(results: list[dict], path: Path) -> None:
    """Accuracy vs mean samples used, one panel per pool (expected values, 95% CI bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    if not ok:
        return
    fig, axes = plt.subplots(1, len(ok), figsize=(6.4 * len(ok), 5.0), squeeze=False)
    ad_name = f"adaptive {DEFAULT_THRESHOLD:g}"
    # (kind or name, label, colour, marker, x nudge so points at the same budget do not hide each other)
    series = [
        ("diversity", "diversity (M=1; P x B/P when B > P)", "C1", "s", 0.94),
        ("best", "best fixed K*M=B (hindsight, optimistic)", "C2", "*", 1.0),
        ("planned", "planned (cross-fitted halves)", "C4", "D", 1.06),
        (ad_name, f"adaptive (threshold {DEFAULT_THRESHOLD:g})", "C3", "o", 1.0),
    ]
    for ax, r in zip(axes[0], ok):
        rc = r["repetition_curve"]
        y = np.array([100 * c["accuracy"] for c in rc])
        err = np.array([[y0 - 100 * c["ci"][0], 100 * c["ci"][1] - y0] for y0, c in zip(y, rc)]).T
        ax.errorbar(
            [c["mean_used"] for c in rc],
            y,
            yerr=err,
            color="C0",
            marker="o",
            ms=4,
            capsize=2,
            label="repetition (K=1, M=1..n; exact)",
        )
        fr = r["fixed_frontier"]
        ax.step(
            [f["samples"] for f in fr],
            [100 * f["accuracy"] for f in fr],
            where="post",
            color="0.55",
            ls="--",
            lw=1,
            label="best fixed K*M <= samples (hindsight, no CI)",
        )
        for key, label, col, mk, nudge in series:
            pts = []
            for B, res in r["budgets"].items():
                for e in res["policies"]:
                    if e["name"] == key if key.startswith("adaptive") else e["kind"] == key and "<=" not in e["name"]:
                        pts.append((int(B), e))
            meas = [(B, e) for B, e in pts if e.get("expected") and "accuracy" in e["expected"]]
            if meas:
                x = np.array([e["expected"]["mean_used"] for _, e in meas]) * nudge
                yy = np.array([100 * e["expected"]["accuracy"] for _, e in meas])
                er = np.array(
                    [
                        [y0 - 100 * e["expected"]["ci"][0], 100 * e["expected"]["ci"][1] - y0]
                        for y0, (_, e) in zip(yy, meas)
                    ]
                ).T
                ax.errorbar(
                    x,
                    yy,
                    yerr=er,
                    color=col,
                    marker=mk,
                    ms=12 if key == "best" else 7,
                    capsize=2,
                    ls="-" if key.startswith("adaptive") else "none",
                    label=label,
                )
                for (B, _), x0, y0 in zip(meas, x, yy):
                    if key.startswith("adaptive"):
                        ax.annotate(
                            f"B={B}", (x0, y0), textcoords="offset points", xytext=(5, -12), fontsize=7, color=col
                        )
            first = not meas
            for B, e in pts:
                ex = e.get("expected") or {}
                if "accuracy_bounds" in ex:
                    a_, b_ = ex["accuracy_bounds"]
                    u0, u1 = ex["mean_used_bounds"]
                    ax.add_patch(
                        plt.Rectangle(
                            (u0, 100 * a_),
                            max(u1 - u0, 0.15),
                            100 * (b_ - a_),
                            fill=False,
                            ec=col,
                            ls=":",
                            lw=1.2,
                            label=f"{label}: not measurable, bounds" if first else None,
                        )
                    )
                    first = False
                    ax.annotate(
                        f"B={B}", (u1, 100 * b_), textcoords="offset points", xytext=(2, 1), fontsize=7, color=col
                    )
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32], labels=["1", "2", "4", "8", "16", "32"])
        ax.set_ylim(-3, 103)
        ax.set_xlabel("mean samples used per problem")
        ax.set_ylabel("accuracy % (expected over sample orders)")
        ax.set_title(
            f"{r['task']} · {r['model']} · {r['problems']} problems x {len(r['priors'])} priors x "
            f"{r['samples_per_prior']}",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.text(
        0.01,
        0.01,
        "bars: 95% bootstrap CI over problems. Dotted boxes: adaptive asked for more samples of a prior\n"
        "than the pool holds; accuracy and samples are only bounded there.",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "pools", nargs="+", help="pool databases (copy a pool being written first: sqlite3 a.db '.backup b.db')"
    )
    ap.add_argument("--out", default="experiments/policies/results.json")
    ap.add_argument("--plot", default=None, help="PNG path (default: next to --out, policies.png)")
    ap.add_argument("--markdown", default=None, help="tables path (default: next to --out, tables.md)")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    ap.add_argument("--orders", type=int, default=32, help="sample orders averaged for adaptive (order 0 = live)")
    ap.add_argument("--boot", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", type=float, default=0.5, help="planner calibration share (2 folds, cross-fitted)")
    a = ap.parse_args(argv)
    try:
        budgets = [int(b) for b in a.budgets.split(",")]
        thresholds = [float(t) for t in a.thresholds.split(",")]
    except ValueError:
        raise SystemExit(
            f"--budgets/--thresholds expect comma-separated numbers, got {a.budgets!r} / {a.thresholds!r}"
        ) from None
    if a.orders < 1:
        raise SystemExit(f"--orders must be >= 1, got {a.orders}")
    out = Path(a.out)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for j, db in enumerate(a.pools):
            if not Path(db).exists():
                raise SystemExit(f"pool not found: {db}")
            snap = snapshot(db, Path(tmp) / f"{j}.db")
            r = evaluate_pool(str(snap), budgets, thresholds, a.orders, a.boot, a.seed, a.split)
            r["db"] = db
            results.append(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budgets": budgets, "thresholds": thresholds, "pools": results}, indent=1) + "\n")
    md = Path(a.markdown) if a.markdown else out.with_name("tables.md")
    md.write_text(markdown(results))
    png = Path(a.plot) if a.plot else out.with_name("policies.png")
    plot(results, png)
    print(f"wrote {out}, {md}, {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
