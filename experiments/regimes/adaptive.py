"""Adaptive allocation where saving is possible: budgets 16 and 32 on pool A (issue 12, section 3).

    bash experiments/regimes/grow.sh        # generate what the policies below ask for beyond the pool
    python experiments/regimes/adaptive.py [POOL.db] [--budgets 16,32] [--thresholds 0.95] [--policies adaptive]
    python experiments/regimes/adaptive.py --order    # print the calibrated prior order (grow.sh reads it)

The pool's grid holds 8 samples per prior; ``marginal replay --grow`` first
generates what a policy asks for beyond them (sample i of a (problem, prior)
keeps its seed), so its replay here is exactly what a live run with seed 0
draws. On the problems where every prior holds its 8 samples, in two prior
orders: the **bank** order on every problem, and the **calibrated** order
(priors by one-sample accuracy on a seeded calibration half) on the other,
held-out half. Per order, budget B and policy:

- ``adaptive τ`` (and ``adaptive-plurality τ``, Adaptive-Consistency's
  stopping rule): the replay (live order of samples) on the order's priors:
  accuracy, mean samples, problems where the pool still ran out (then the
  row is not measurable: grow first);
- ``best fixed``: the best K x M = B split of the order's first K priors,
  M <= 8, on the exact grid, chosen on the problems it is scored on
  (hindsight: optimistic), and the best with K x M <= B;
- ``repetition``: K = 1, its exact curve over M (as deep as the pool holds
  that prior on every problem), read at adaptive's mean samples (linear
  between the two nearest M, per problem): the order's first prior (what
  policy ``repetition`` spends on; for the calibrated order, a choice made
  on other problems) and the best single prior in hindsight.

Goals (issue 12): at B = 32, adaptive within 1 point of the best fixed split
(paired 95% CI) using <= 35% of its samples, and above repetition at equal
mean samples with the CI above 0. CIs: percentile bootstrap over problems,
one seeded index matrix per order for every row (paired). Writes
adaptive.json next to this file. Left out: averaging adaptive over other
sample orders (a grown pool is deep only along the live order), weighted
votes, cross-fitting the calibrated order both ways (it would need the pool
grown for two orders).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from marginal.analysis import accuracy_grid, load_pool, split_problems, sub_bank
from marginal.policies import make_policy
from marginal.replay import replay
from marginal.snapshot import snapshot

HERE = Path(__file__).parent
BASE_M = 8
SHARE = 0.35  # the goal: adaptive uses <= 35% of the best split's samples
WITHIN = 0.01  # ... within 1 point of it


def ci(x: np.ndarray, idx: np.ndarray) -> list[float]:
    b = x[idx].mean(axis=1)
    return [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]


def rep_curve(pool, prior: str) -> np.ndarray:
    """(N, depth) exact accuracy of K = 1 on ``prior``, M = 1..depth (depth: what every problem holds)."""
    sub = sub_bank(pool, [prior])
    depth = int(sub.sizes.min())
    return accuracy_grid(sub, cells=tuple((1, m) for m in range(1, depth + 1))).acc


def at_samples(curve: np.ndarray, u: float) -> np.ndarray | None:
    """The curve read at mean samples ``u`` (linear between neighbours), or None past its depth."""
    if u > curve.shape[1] or u < 1:
        return None
    lo = int(np.floor(u))
    hi = min(lo + 1, curve.shape[1])
    w = u - lo
    return (1 - w) * curve[:, lo - 1] + w * curve[:, hi - 1]


def calibrated_order(pool) -> list[str]:
    """The priors by mean one-sample accuracy on ``pool``'s first 8 samples per prior (best first; ties keep
    bank order), so growing the pool does not change it."""
    base = pool.head(BASE_M)
    acc = (base.correct_samples().sum(axis=2) / np.maximum(base.sizes, 1)).mean(axis=0)
    return [pool.priors[i] for i in np.argsort(-acc, kind="stable")]


def complete(snap) -> object:
    """The pool's problems where every prior holds its grid's samples."""
    pool = load_pool(snap)
    return pool.subset((pool.sizes >= BASE_M).all(axis=1) & pool.labelled)


def calibrated_priors(db: str, seed: int = 0) -> list[str]:
    """The calibrated order of ``evaluate``: priors by accuracy on its calibration half."""
    with tempfile.TemporaryDirectory() as tmp:
        pool = complete(snapshot(db, Path(tmp) / "pool.db"))
    return calibrated_order(pool.subset(split_problems(pool.n_problems, 0.5, seed)[0]))


def evaluate(
    db: str,
    budgets: list[int],
    thresholds: list[float],
    n_boot: int = 4000,
    seed: int = 0,
    policies: tuple[str, ...] = ("adaptive",),
) -> dict:
    """Both prior orders: the bank's on every problem; the calibration half's accuracy order on the other half."""
    with tempfile.TemporaryDirectory() as tmp:
        snap = snapshot(db, Path(tmp) / "pool.db")
        pool = complete(snap)
        cal, test = split_problems(pool.n_problems, 0.5, seed)
        rules = [(name, tau) for name in policies for tau in thresholds]
        orders = {
            "bank": evaluate_order(
                snap, pool, list(pool.priors), np.arange(pool.n_problems), budgets, rules, n_boot, seed
            ),
            "calibrated": evaluate_order(
                snap, pool, calibrated_order(pool.subset(cal)), test, budgets, rules, n_boot, seed
            ),
        }
    return {"pool": Path(db).name, "problems": pool.n_problems, "calibration_problems": len(cal), "orders": orders}


def evaluate_order(snap, pool, order: list[str], rows: np.ndarray, budgets, rules, n_boot: int, seed: int) -> dict:
    """Adaptive policies, fixed splits (first K priors of ``order``) and repetition on the problems ``rows``."""
    sub = sub_bank(pool, order).subset(rows)
    n = sub.n_problems
    ids = {p: i for i, p in enumerate(sub.problems)}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    grid = accuracy_grid(sub, max(budgets))
    cols = {c: j for j, c in enumerate(grid.cells)}
    best_prior = calibrated_order(sub)[0]  # in hindsight: on the problems scored (first 8 samples)
    curves = {p: rep_curve(sub, p) for p in dict.fromkeys([order[0], best_prior])}
    out: dict = {
        "problems": n,
        "priors": order,
        "best_single_prior_hindsight": best_prior,
        "repetition_depth": {p: int(c.shape[1]) for p, c in curves.items()},
        "budgets": {},
    }
    for b in budgets:
        exact_b = [(k, m) for (k, m) in grid.cells if k * m == b and m <= BASE_M]
        within_b = [(k, m) for (k, m) in grid.cells if k * m <= b and m <= BASE_M]
        best = max(exact_b, key=lambda c: grid.acc[:, cols[c]].mean())
        best_le = max(within_b, key=lambda c: grid.acc[:, cols[c]].mean())
        bx = grid.acc[:, cols[best]]
        entry = {
            "fixed": {f"{k}x{m}": float(grid.acc[:, cols[(k, m)]].mean()) for k, m in exact_b},
            "best_fixed": {"cell": list(best), "accuracy": float(bx.mean()), "ci": ci(bx, idx)},
            "best_fixed_le": {"cell": list(best_le), "accuracy": float(grid.acc[:, cols[best_le]].mean())},
            "grid_max_se": float(grid.se.max()) if grid.se is not None else 0.0,
            "adaptive": {},
        }
        for name, tau in rules:
            r = replay(snap, make_policy(name, b, len(order), threshold=tau), b, priors=order)
            pos = [j for j, p in enumerate(r.problems) if p in ids]
            credit, used = np.zeros(n), np.zeros(n)
            at = np.array([ids[r.problems[j]] for j in pos])
            credit[at], used[at] = np.array(r.credit)[pos], np.array(r.used)[pos]
            exhausted = int(np.array(r.ran_out)[pos].sum())
            entry["adaptive"][f"{name} {tau}"] = adaptive_entry(credit, used, exhausted, bx, best, curves, idx)
        out["budgets"][str(b)] = entry
    return out


def adaptive_entry(credit, used, exhausted: int, bx, best, curves, idx) -> dict:
    u = float(used.mean())
    d = credit - bx
    measurable = exhausted == 0
    a = {
        "accuracy": float(credit.mean()),
        "ci": ci(credit, idx),
        "mean_samples": u,
        "exhausted": exhausted,
        "measurable": measurable,
        "minus_best_fixed": {"diff": float(d.mean()), "ci": ci(d, idx)},
        "sample_share_of_best": u / (best[0] * best[1]),
    }
    a["goal_within_1_point"] = bool(measurable and d.mean() >= -WITHIN)
    a["goal_within_1_point_ci"] = bool(measurable and ci(d, idx)[0] >= -WITHIN)
    a["goal_share"] = bool(a["sample_share_of_best"] <= SHARE)
    reps = {}
    for p, curve in curves.items():
        r = at_samples(curve, u)
        if r is None:
            reps[p] = {
                "measurable": False,
                "why": f"adaptive uses {u:.1f} samples; every problem holds {curve.shape[1]} of {p}",
            }
            continue
        dd = credit - r
        c = ci(dd, idx)
        reps[p] = {
            "accuracy": float(r.mean()),
            "diff": float(dd.mean()),
            "ci": c,
            "above": bool(c[0] > 0),
            "measurable": True,
        }
    a["repetition_at_equal_samples"] = reps
    return a


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def with_ci(x: float, c: list[float]) -> str:
    return f"{pct(x)} [{pct(c[0])}, {pct(c[1])}]"


HEADER = (
    "| B | policy τ | accuracy % [95% CI] | mean samples | best fixed K x M = B (hindsight) | adaptive − best [CI] "
    "| share of best's samples | adaptive − repetition at equal samples [CI] |"
)


def markdown(res: dict) -> str:
    lines = []
    for label, o in res["orders"].items():
        depth = ", ".join(f"{p} (depth {d})" for p, d in o["repetition_depth"].items())
        lines += [
            f"{res['pool']}, {label} order ({', '.join(o['priors'])}): {o['problems']} problems; repetition on {depth}"
        ]
        lines += ["", HEADER, "|---|---|---|---|---|---|---|---|"]
        for b, e in o["budgets"].items():
            bf = e["best_fixed"]
            best = f"{bf['cell'][0]}x{bf['cell'][1]} {pct(bf['accuracy'])}"
            for rule, a in e["adaptive"].items():
                if not a["measurable"]:
                    lines.append(
                        f"| {b} | {rule} | n/m: {a['exhausted']} problems ran out (grow the pool) | | {best} | | | |"
                    )
                    continue
                d = a["minus_best_fixed"]
                reps = "; ".join(
                    f"{p}: {with_ci(r['diff'], r['ci'])}" if r["measurable"] else f"{p}: n/m"
                    for p, r in a["repetition_at_equal_samples"].items()
                )
                cells = [b, rule, with_ci(a["accuracy"], a["ci"]), f"{a['mean_samples']:.1f}", best]
                cells += [with_ci(d["diff"], d["ci"]), f"{100 * a['sample_share_of_best']:.0f}%", reps]
                lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pool", nargs="?", default=str(HERE / "pools" / "gsm8k-qwen05.db"))
    ap.add_argument("--budgets", default="16,32")
    ap.add_argument("--thresholds", default="0.95")
    ap.add_argument("--policies", default="adaptive", help="adaptive policies (adaptive, adaptive-plurality)")
    ap.add_argument("--boot", type=int, default=4000)
    ap.add_argument("--out", default=str(HERE / "adaptive.json"))
    ap.add_argument("--order", action="store_true", help="print the calibrated prior order ('a,b,c') and exit")
    args = ap.parse_args(argv)
    if args.order:
        print(",".join(calibrated_priors(args.pool)))
        return 0
    budgets = [int(x) for x in args.budgets.split(",")]
    thresholds = [float(x) for x in args.thresholds.split(",")]
    res = evaluate(args.pool, budgets, thresholds, args.boot, policies=tuple(args.policies.split(",")))
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
