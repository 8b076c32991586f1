"""Summarize the study pools: headline table, summary.json and plots.

    python experiments/study/summarize.py [POOL.db ...]   (default: experiments/study/pools/*.db)

For each pool: the exact (K, M) accuracy grid up to B = 32 with 95% CIs (over
problems), the best split at each budget B in 4, 8, 16, 32 beside
repetition-only (K = 1) and diversity-only (M = 1) where the pool holds them,
drift λ with its bootstrap CI and the regime, correct-mode dominance per K,
the planner's held-out choice against the baselines, the bias-variance
(normal approximation) calibration against the exact grid, and the cost:
tokens, generation wall-clock and throughput. Writes summary.json,
budget.png, margins.png and calibration.png next to this file and prints the
markdown table used in README.md. Deterministic (seed 0).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

from marginal.analysis import analyze, load_pool

HERE = Path(__file__).parent
BUDGETS = (4, 8, 16, 32)


def cost(db: Path) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        n, prompt, completion, secs, failed, trunc = c.execute(
            "SELECT count(*), sum(prompt_tokens), sum(completion_tokens), sum(seconds), sum(answer IS NULL), "
            "sum(error LIKE 'truncated%') FROM samples"
        ).fetchone()
    return {
        "samples": n,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "generation_seconds": round(secs, 1),
        "completion_tokens_per_s": round(completion / secs, 1),
        "failed": failed,
        "truncated": trunc,
    }


def cell(d: dict, k: int, m: int):
    cells = [tuple(c) for c in d["grid"]["cells"]]
    if (k, m) not in cells:
        return None
    i = cells.index((k, m))
    return {"K": k, "M": m, "accuracy": d["grid"]["accuracy"][i], "ci": d["grid"]["ci95"][i]}


def per_budget(d: dict) -> dict:
    out = {}
    for b in BUDGETS:
        splits = [cell(d, k, b // k) for k in range(1, b + 1) if b % k == 0]
        splits = [s for s in splits if s is not None]
        if not splits:
            continue
        out[b] = {
            "splits": splits,
            "best": max(splits, key=lambda s: s["accuracy"]),
            "repetition": cell(d, 1, b),
            "diversity": cell(d, b, 1),
        }
    return out


def summarize(db: Path) -> dict:
    pool = load_pool(db)
    a = analyze(pool, 32, seed=0)
    d = a.to_dict()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        cfg = json.loads(c.execute("SELECT config FROM runs").fetchone()[0])
    return {
        "pool": db.name,
        "task": cfg["task"],
        "model": cfg["model"],
        "max_tokens": cfg["spec"]["max_tokens"],
        "temperature": cfg["spec"]["temperature"],
        "problems": pool.n_problems,
        "priors": list(pool.priors),
        "samples_per_prior": pool.n_slots,
        "single_sample": cell(d, 1, 1),
        "budgets": per_budget(d),
        "oracle_at_32": d["oracle"]["accuracy"][-1],
        "drift": d["drift"],
        "dominance": d["margins"]["dominance"],
        "gamma_mean": d["margins"]["gamma_mean"],
        "plan": d.get("plan"),
        "bias_variance": d["bias_variance"],
        "prior_accuracy": dict(zip(pool.priors, d["prior_stats"]["accuracy"])),
        "cost": cost(db),
        "analysis": d,
    }


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}"


def fmt_cell(c) -> str:
    return "–" if c is None else f"{pct(c['accuracy'])} [{pct(c['ci'][0])}, {pct(c['ci'][1])}]"


def table(rows: list[dict]) -> str:
    lines = [
        "| task · model | problems × K × M | 1 sample (default prior) | B | best split "
        "| repetition (K=1) | diversity (M=1) | λ [95% CI] · regime |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["drift"]
        lam = f"{d['lambda']:+.2f} [{d['lambda_ci'][0]:+.2f}, {d['lambda_ci'][1]:+.2f}] · {d['regime']}" if d else "–"
        first = True
        for b, v in r["budgets"].items():
            head = (
                (
                    f"{r['task']} · {r['model']} | {r['problems']} × {len(r['priors'])} × {r['samples_per_prior']} | "
                    f"{fmt_cell(r['single_sample'])}"
                )
                if first
                else " | | "
            )
            best = v["best"]
            lines.append(
                f"| {head} | {b} | K={best['K']}, M={best['M']}: {fmt_cell(best)} | {fmt_cell(v['repetition'])} | "
                f"{fmt_cell(v['diversity'])} | {lam if first else ''} |"
            )
            first = False
    return "\n".join(lines)


def plots(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        g = r["analysis"]["grid"]
        cells = {tuple(c): (a, ci) for c, a, ci in zip(g["cells"], g["accuracy"], g["ci95"])}
        best = {}
        for (k, m), v in cells.items():
            if k * m not in best or v[0] > best[k * m][0]:
                best[k * m] = v
        curves = (
            ("best split at B", "o-", sorted(best.items())),
            ("repetition (K=1)", "s--", sorted((k * m, v) for (k, m), v in cells.items() if k == 1)),
            ("diversity (M=1)", "^:", sorted((k * m, v) for (k, m), v in cells.items() if m == 1)),
        )
        for label, style, pts in curves:
            x = [b for b, _ in pts]
            y = np.array([100 * v[0] for _, v in pts])
            ci = np.array([v[1] for _, v in pts]) * 100
            ax.plot(x, y, style, ms=4, label=label)
            ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
        ax.set_title(f"{r['task']} · {r['model']} ({r['problems']} problems)", fontsize=8)
        ax.set_xlabel("budget B (samples per problem)")
        ax.set_ylabel("majority-vote accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "budget.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        d = r["drift"]
        k = np.arange(1, len(r["gamma_mean"]) + 1)
        ax.plot(k, r["gamma_mean"], "o-", label="mean margin Γ_K")
        if d:
            ax.fill_between(k, d["gamma_ci"][0], d["gamma_ci"][1], alpha=0.2, lw=0, label="95% bootstrap band")
            ax.set_title(
                f"{r['task']}: λ = {d['lambda']:+.2f} "
                f"[{d['lambda_ci'][0]:+.2f}, {d['lambda_ci'][1]:+.2f}], {d['regime']}",
                fontsize=8,
            )
        ax2 = ax.twinx()
        ax2.plot(k, 100 * np.array(r["dominance"]), "s--", ms=3, color="tab:green", label="dominance %")
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("correct mode dominant, % of problems", fontsize=7, color="tab:green")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel("K priors (bank order), all M samples each")
        ax.set_ylabel("margin")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "margins.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    for r in rows:
        bv = r["bias_variance"]
        ax.plot(
            100 * np.array(bv["exact"]),
            100 * np.array(bv["normal"]),
            "o",
            ms=3,
            label=f"{r['task']} (MAE {100 * bv['mean_abs_error']:.1f} pts)",
        )
    ax.plot([0, 100], [0, 100], color="gray", lw=0.8)
    ax.set_xlabel("exact accuracy % per (K, M)")
    ax.set_ylabel("normal approximation %")
    ax.set_title("bias-variance prediction vs exact", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "calibration.png", dpi=110)
    plt.close(fig)


def main() -> None:
    dbs = [Path(p) for p in sys.argv[1:]] or sorted((HERE / "pools").glob("*.db"))
    rows = [summarize(db) for db in dbs]
    (HERE / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    plots(rows)
    print(table(rows))
    print()
    for r in rows:
        c, p = r["cost"], r["plan"]
        held = (
            ""
            if not p
            else "; ".join(f"{h['name']} K={h['K']},M={h['M']}: {pct(h['accuracy'])}" for h in p["held_out"])
        )
        print(
            f"{r['task']}: cost {c['completion_tokens']} completion + {c['prompt_tokens']} prompt tokens, "
            f"{c['generation_seconds'] / 60:.0f} min generation, {c['completion_tokens_per_s']} tok/s; "
            f"failed {c['failed']} ({c['truncated']} truncated); planner held-out: {held}; "
            f"bias-variance MAE {100 * r['bias_variance']['mean_abs_error']:.1f} pts"
        )


if __name__ == "__main__":
    main()
