"""The regime test and bank selection on the regime pools: tables, summary.json and plots.

    python experiments/regimes/analyze.py [POOL.db ...]     (default: experiments/regimes/pools/*.db)
    python experiments/regimes/analyze.py --synthetic       (also time the test on a synthetic 150 x 10 x 8 pool)

Each pool is read from a snapshot (SQLite's backup API from a read-only
connection into a temporary file), so pools that a background run is still
writing are never written to; only problems where every prior already
stores a sample are analysed, and each cell's first 8 samples (the pools' design:
the adaptive runs of grow.sh add samples to the cells they repeat, which
would otherwise weigh more). Per pool: the regime test (200 random ordered
sub-banks of 4-8 priors; drift on a calibration half, diversity-first minus
repetition-first at B = 4 and 8 on the held-out half; 300 bootstrap
replicates over problems), greedy bank selection of K = 4 priors at B = 8
and 16 (cross-fitted, against the first 4 priors and all priors, paired
CIs), and one sub-bank per regime with its accuracy-vs-budget curves and
margins. Writes summary.json and PNGs next to this file. Deterministic
(seed 0).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from marginal.analysis import load_pool, pick_examples, pool_from_lists, regime_test, select_bank
from marginal.analysis.subbank import covered
from marginal.errors import MarginalError
from marginal.regime_plots import plot_regime_scatter, plot_sub_bank
from marginal.snapshot import snapshot

HERE = Path(__file__).parent
SEED = 0
DESIGN_M = 8  # samples per (problem, prior) cell as the pools were generated


def pct(x) -> str:
    return "  n/a" if x is None or not np.isfinite(x) else f"{100 * x:5.1f}"


def ci(c) -> str:
    return f"[{pct(c[0])}, {pct(c[1])}]"


def share(e) -> str:
    """A share with its CI, or n/a when no sub-bank qualifies (then replicates that do would mislead)."""
    return "n/a" if not np.isfinite(e.value) else f"{pct(e.value)}% {ci(e.ci)}"


def describe(pool) -> dict:
    sizes = pool.sizes
    full = covered(pool, "the regime study") if not pool.label_free else pool
    return {
        "problems": pool.n_problems,
        "covered_problems": full.n_problems,
        "priors": list(pool.priors),
        "samples": int(sizes.sum()),
        "samples_per_cell": {str(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))},
        "failed_share": float((pool.answers == -1).sum() / max(1, sizes.sum())),
    }


def rule_table(rt, test: str, score: str, fields: tuple[str, str, str]) -> None:
    """One decision rule's table: per budget, the shares where each arm wins and the Spearman ρ."""
    arms = f"| {test} > 0: diversity-first wins | n | {test} < 0: repetition-first wins | n "
    print(f"| B {arms}| Spearman ρ({score}, gain) |")
    print("|---|---|---|---|---|---|")
    for r in rt.results:
        d, p, s = (getattr(r, f) for f in fields)
        rho = "n/a" if not np.isfinite(s.value) else f"{s.value:+.2f} [{s.ci[0]:+.2f}, {s.ci[1]:+.2f}]"
        print(f"| {r.budget} | {share(d)} | {d.n} | {share(p)} | {p.n} | {rho} |")


def print_regimes(name: str, rt) -> None:
    print(
        f"\n## {name}: regime test ({len(rt.banks)} sub-banks, {len(rt.calib)} calibration / "
        f"{len(rt.held_out)} held-out problems, {rt.n_boot} bootstrap replicates; largest MC se {rt.mc_se:.4f})"
    )
    counts = {
        r: int(sum(rt.regime(s) == r for s in range(len(rt.banks)))) for r in ("aligned", "misaligned", "saturating")
    }
    print("regimes on calibration: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    rule_table(rt, "λ CI", "λ", ("diversity_wins", "repetition_wins", "spearman"))
    print("the same rule read off the calibration half's accuracy of the two arms (as the planner reads its grid):")
    rule_table(
        rt, "gain", "gain", ("calibration_diversity_wins", "calibration_repetition_wins", "calibration_spearman")
    )
    short = ", ".join(f"B={B}: {100 * x:.0f}%" for B, x in zip(rt.budgets, rt.short))
    print(f"repetition cells whose prior stores fewer than B samples (all of them vote): {short}")


def print_selection(name: str, sel) -> None:
    print(
        f"\n## {name}: greedy bank selection, K = {sel.k}, B = {sel.budget} (cross-fitted; halves of "
        f"{len(sel.halves[0])} and {len(sel.halves[1])} problems)"
    )
    print("| arm | fold 1 bank (split) | fold 2 bank (split) | held-out fold 1 | fold 2 | pooled [95% CI] |")
    print("|---|---|---|---|---|---|")
    for a in sel.arms:
        banks = [f"{','.join(b)} ({k}x{m})" for b, (k, m) in zip(a.priors, a.split)]
        print(
            f"| {a.name} | {banks[0]} | {banks[1]} | {pct(a.held_out[0])} | {pct(a.held_out[1])} | "
            f"{pct(a.pooled)} {ci(a.ci)} |"
        )
    for d in sel.diffs:
        print(
            f"{d.name}: fold 1 {100 * d.per_fold[0]:+.1f} {ci(d.fold_ci[0])}, fold 2 {100 * d.per_fold[1]:+.1f} "
            f"{ci(d.fold_ci[1])}, pooled {100 * d.pooled:+.1f} points {ci(d.ci)}"
        )


def analyse(db: Path, tmp: Path) -> dict:
    name = db.stem
    try:
        pool = load_pool(snapshot(db, tmp / db.name)).head(DESIGN_M)
        out: dict = {"pool": describe(pool)}
    except MarginalError as e:
        print(f"\n# {name}: skipped: {e}")
        return {"skipped": str(e)}
    print(
        f"\n# {name}: {out['pool']['covered_problems']} problems with every prior sampled "
        f"(of {pool.n_problems}), {pool.n_priors} priors, cells hold {out['pool']['samples_per_cell']} samples"
    )
    try:
        rt = regime_test(pool, n_banks=200, budgets=(4, 8), n_boot=300, seed=SEED)
    except MarginalError as e:
        print(f"regime test skipped: {e}")
        return out | {"skipped": str(e)}
    print_regimes(name, rt)
    out["regime_test"] = rt.to_dict()
    plot_regime_scatter(rt, HERE / f"{name}-scatter.png")
    out["select_bank"] = []
    for B in (8, 16):
        if pool.max_budget >= B:
            sel = select_bank(pool, 4, B, seed=SEED, n_boot=2000)
            print_selection(name, sel)
            out["select_bank"].append(sel.to_dict())
    out["examples"] = {}
    for regime, bank in pick_examples(rt).items():
        if bank is None:
            print(f"no {regime} sub-bank in this pool")
            continue
        s = rt.banks.index(bank)
        st = rt.stats
        png = plot_sub_bank(
            pool,
            bank,
            HERE / f"{name}-{regime}.png",
            16,
            title=f"{name}: {regime} on calibration (λ = {st.lam[s]:+.3f} [{st.lo[s]:+.3f}, {st.hi[s]:+.3f}])",
        )
        out["examples"][regime] = {
            "priors": list(bank),
            "lambda": float(st.lam[s]),
            "lambda_ci": [float(st.lo[s]), float(st.hi[s])],
            "gain": {str(B): float(st.gain[s, b]) for b, B in enumerate(rt.budgets)},
            "plot": png.name,
        }
        print(
            f"{regime} example: {','.join(bank)}: "
            f"λ = {st.lam[s]:+.3f} [{st.lo[s]:+.3f}, {st.hi[s]:+.3f}], held-out gain "
            + ", ".join(f"B={B}: {100 * st.gain[s, b]:+.1f}" for b, B in enumerate(rt.budgets))
            + f" -> {png.name}"
        )
    return out


def synthetic_timing(n_problems: int = 150, n_priors: int = 10, n: int = 8) -> dict:
    """Wall time of the whole regime test (200 sub-banks, 300 replicates) on a synthetic pool of that size."""
    rng = np.random.default_rng(SEED)
    quality = rng.uniform(0.05, 0.6, n_priors)
    ans = []
    for _ in range(n_problems):
        shift = rng.uniform(-2, 2)
        p = 1 / (1 + np.exp(-(np.log(quality / (1 - quality)) + shift)))
        ans.append(
            [
                [
                    0 if rng.random() < p[c] else (None if rng.random() < 0.1 else int(rng.integers(1, 6)))
                    for _ in range(n)
                ]
                for c in range(n_priors)
            ]
        )
    pool = pool_from_lists(ans, [0] * n_problems)
    t0, c0 = time.perf_counter(), time.process_time()
    rt = regime_test(pool, n_banks=200, budgets=(4, 8), n_boot=300, seed=SEED)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"\nsynthetic {n_problems} x {n_priors} x {n}: regime test {total:.1f} s wall, {cpu:.1f} s CPU "
        f"(cache {rt.seconds['cache']:.1f} s, bootstrap {rt.seconds['bootstrap']:.1f} s wall)"
    )
    return {
        "problems": n_problems,
        "priors": n_priors,
        "samples": n,
        "wall_seconds": round(total, 2),
        "cpu_seconds": round(cpu, 2),
        **rt.seconds,
    }


def main(argv: list[str]) -> None:
    timing = "--synthetic" in argv
    dbs = [Path(a) for a in argv if not a.startswith("--")] or sorted((HERE / "pools").glob("*.db"))
    summary: dict = {"seed": SEED, "pools": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for db in dbs:
            summary["pools"][db.stem] = analyse(db, Path(tmp))
    if timing:
        summary["timing"] = synthetic_timing()
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nwrote {HERE / 'summary.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
