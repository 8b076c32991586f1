"""`marginal analyze` and `marginal report` (registered on cli.app).

``analyze`` prints rich tables for one run: the accuracy grid over (K, M),
per-prior accuracy, margins and dominance, the drift regime with λ and its
CI, the planner's recommended split against the baselines on held-out
problems, weighting and the normal approximation; ``--json`` writes the same
numbers. A file of blended runs (`marginal blend`, or a ``blend:`` model)
also gets the intervention diagnostics per run and the correlation of
accuracy with intervention rate; a file holding several runs side by side
gets only that table unless ``--run`` names one. ``report`` writes one
self-contained HTML file for one or more runs. Left out: analyses of several runs in one table (the report puts them side
by side).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .cli import app
from .errors import MarginalError

out = Console()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _check_common(budget: Optional[int], split: float, reps: int) -> None:
    if budget is not None and budget < 1:
        raise MarginalError(f"--budget must be a positive integer, got {budget}")
    if not 0 < split < 1:
        raise MarginalError(f"--split must be in (0, 1), got {split}")
    if reps < 2:
        raise MarginalError(f"--reps must be >= 2, got {reps}")


DEFAULT_MAX_BUDGET = 64


def _default_budget(pool, budget: Optional[int]) -> int:
    return min(pool.max_budget, DEFAULT_MAX_BUDGET) if budget is None else budget


def grid_table(g, title: str) -> Table:
    t = Table(title=title or None, title_justify="left")
    t.add_column("K \\ M", justify="right", style="bold")
    mmax = max(m for _, m in g.cells)
    for m in range(1, mmax + 1):
        t.add_column(str(m), justify="right")
    tab = g.table()
    best = g.best()
    se = dict(zip(g.cells, g.se))
    for k in range(tab.shape[0]):
        row = []
        for m in range(tab.shape[1]):
            v = tab[k, m]
            if np.isnan(v):
                row.append("")
                continue
            s = _pct(v) + (f"±{100 * se[(k + 1, m + 1)]:.1f}" if se[(k + 1, m + 1)] > 0.0005 else "")
            row.append(f"[bold green]{s}[/]" if (k + 1, m + 1) == best else s)
        t.add_row(str(k + 1), *row)
    return t


def render_analysis(a, console: Console) -> None:
    """Print the rich tables of an :class:`~marginal.analysis.Analysis`."""
    p = a.pool
    console.print(
        f"[bold]run[/] {p.run_id or '(arrays)'}: {p.n_problems} problems x {p.n_priors} priors x up to "
        f"{p.n_slots} samples; budget B = {a.budget}"
    )
    st = a.priors
    t = Table(title="Priors (bank order)", title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("prior")
    if st.accuracy is not None:
        t.add_column("accuracy %", justify="right")
    t.add_column("failed %", justify="right")
    t.add_column("agrees w/ plurality %", justify="right")
    for c, name in enumerate(st.names):
        cells = [str(c + 1), name] + ([_pct(st.accuracy[c])] if st.accuracy is not None else [])
        t.add_row(*cells, _pct(st.failed[c]), _pct(st.plurality_agreement[c]))
    console.print(t)
    lfm = a.label_free_margin.mean(axis=0)
    if a.label_free:
        console.print(
            "[yellow]no reference answers: only label-free measures are shown[/] (label-free margin, agreement)"
        )
        console.print("label-free margin by K: " + "  ".join(f"K={k + 1}: {v:.3f}" for k, v in enumerate(lfm)))
        return
    g = a.grid
    ex = g.exact.mean()
    console.print(
        f"[bold]Vote accuracy %[/] of K priors (bank order, rows) x M samples each (columns), K x M <= {a.budget}; "
        f"{'exact' if ex == 1 else f'{100 * ex:.0f}% of cells exact, the rest Monte Carlo ± SE'}; best in green"
    )
    console.print(grid_table(g, ""))
    gr = a.grid_random
    k1 = g.best()
    console.print(
        f"best cell {k1}: {_pct(g.at(*k1))}%  |  K at random, best {gr.best()}: {_pct(gr.at(*gr.best()))}%  |  "
        f"oracle at {k1}: {_pct(a.oracle.at(*k1))}%  |  pass@k (whole pool): "
        + ", ".join(f"{k}: {_pct(v)}%" for k, v in (a.pass_at or {}).items())
    )
    m = a.margins
    P = p.n_priors
    t = Table(title="Margins as priors are added (bank order)", title_justify="left")
    t.add_column("K", justify="right")
    t.add_column("mean Γ_K", justify="right")
    t.add_column("dominance (Γ>0) %", justify="right")
    t.add_column("label-free margin", justify="right")
    if a.drift is not None:
        t.add_column("κ_K", justify="right")
    for k in range(P):
        row = [str(k + 1), f"{m.gamma[:, k].mean():+.3f}", _pct(m.dominance[k]), f"{lfm[k]:.3f}"]
        if a.drift is not None:
            row.append(f"{a.drift.kappa_mean[k]:+.3f}" if k < P - 1 else "")
        t.add_row(*row)
    console.print(t)
    console.print(
        f"gold sampled in {int(m.gold_sampled.sum())}/{len(m.gold_sampled)} problems; outvoted over the whole bank "
        f"in {int(m.outvoted.sum())}, tied in {int(m.tied.sum())}"
    )
    d = a.drift
    if d is not None:
        col = {"aligned": "green", "misaligned": "red", "saturating": "yellow"}[d.regime]
        console.print(
            f"[bold]regime: [{col}]{d.regime}[/][/]  λ = {d.lam:+.3f}, {int(100 * d.level)}% CI "
            f"[{d.lam_ci[0]:+.3f}, {d.lam_ci[1]:+.3f}]; K95 = {d.k95}; rule for B = {a.budget}: "
            f"K, M = {d.recommend(a.budget, p.n_slots)}"
        )
    bv = a.bias_variance
    if bv is not None and np.isfinite(bv.sigma2_w).any():
        console.print(
            f"bias-variance (strongest competitor): mean Γ_b {np.nanmean(bv.gamma):+.3f}, σ²_w {np.nanmean(bv.sigma2_w):.3f}, "
            f"σ²_btw {np.nanmean(bv.sigma2_btw):.3f}; normal approximation vs exact (random K, bootstrap): "
            f"mean |diff| {100 * bv.mean_abs_error:.1f} points"
        )
    pl = a.plan
    if pl is not None:
        t = Table(
            title=f"Planner for B = {pl.budget}: recommended K = {pl.choice[0]}, M = {pl.choice[1]} "
            f"(calibration {pl.n_calib} problems: {_pct(pl.calib_accuracy)}%; held out {pl.n_test})",
            title_justify="left",
        )
        for col in ("allocation", "K", "M", "held-out acc %", "95% CI", "vs planner", "95% CI "):
            t.add_column(col, justify="right" if col != "allocation" else "left")
        for s in pl.scored:
            t.add_row(s.name, str(s.k), str(s.m), _pct(s.accuracy), _ci(s.ci),
                      "" if s.name == "planner" else f"{100 * s.diff:+.1f}",
                      "" if s.name == "planner" else _ci(s.diff_ci))
        console.print(t)
        if pl.buckets:
            t = Table(title="By difficulty (share of gold samples in the pool)", title_justify="left")
            for col in ("bucket", "range", "n test", "bucket's K,M", "its acc %", "planner %", "K=1 %", "M=1 %"):
                t.add_column(col, justify="right" if col != "bucket" else "left")
            for b in pl.buckets:
                t.add_row(b.name, f"{b.lo:.2f}-{b.hi:.2f}", str(b.n_test), f"{b.choice[0]},{b.choice[1]}",
                          _pct(b.accuracy), _pct(b.global_choice_accuracy), _pct(b.repetition_accuracy),
                          _pct(b.diversity_accuracy))
            console.print(t)
    w = a.weights
    if w is not None:
        t = Table(title=f"Weighted votes at K, M = {w.allocation} on {w.n_test} held-out problems", title_justify="left")
        for col in ("weights", "held-out acc %", "vs uniform", "95% CI", "verdict"):
            t.add_column(col, justify="right" if col not in ("weights", "verdict") else "left")
        for i, kd in enumerate(w.kinds):
            t.add_row(kd, _pct(w.accuracy[i]), f"{100 * w.diff[i]:+.1f}", _ci(w.diff_ci[i]), w.verdict(kd))
        console.print(t)


def render_blend(rows, console: Console, title: str = "blended runs") -> None:
    """Print the diagnostics of blended runs (`marginal.analysis.blend.BlendRow`) and their correlation."""
    from .analysis.blend import correlation

    if not rows:
        return
    short = lambda m: Path(m).stem if m.endswith(".gguf") else m  # noqa: E731
    retok = any(r.retokenized for r in rows)
    t = Table(title=title, title_justify="left")
    for col in ("base + guide", "variant", "γ", "α", "n", "accuracy % [95% CI]", "failed", "interv. rate", "mean α",
                "top-k overlap", *(["retokenized"] if retok else [])):
        t.add_column(col, justify="left" if col in ("base + guide", "variant") else "right")
    f = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731  (nan -> '-')
    for r in rows:
        acc = "-" if not r.graded else f"{_pct(r.accuracy)} {_ci(r.ci)}"
        t.add_row(f"{short(r.base)} + {short(r.guide)}", r.variant, f"{r.gamma:g}", str(r.alpha), str(r.samples), acc,
                  str(r.failed), f(r.intervention_rate), f(r.mean_alpha), f(r.topk_overlap),
                  *([str(r.retokenized)] if retok else []))
    console.print(t)
    blended = [r for r in rows if r.variant not in ("base", "guide")]
    c = correlation([r.intervention_rate for r in blended], [r.accuracy for r in blended])
    if c.n >= 3:
        console.print(f"accuracy vs intervention rate over {c.n} blended settings: {c.describe()}")


@app.command("analyze")
def analyze_cmd(
    db: Path = typer.Argument(..., help="a run database written by `marginal run`"),
    run: Optional[str] = typer.Option(None, "--run", help="run id, when the file holds several"),
    budget: Optional[int] = typer.Option(None, "--budget", "-B", help="samples per problem (default: the largest the pool supports, at most 64)"),
    split: float = typer.Option(0.5, "--split", help="calibration share of problems for the planner and weights"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, bootstrap and Monte Carlo"),
    ties: str = typer.Option("split", "--ties", help="split: 1/|T| credit for a tie with gold; strict: 0"),
    replace: bool = typer.Option(False, "--replace", help="draw samples with replacement (bootstrap) instead of subsampling"),
    method: str = typer.Option("auto", "--method", help="auto | exact | mc"),
    failed: str = typer.Option("abstain", "--failed", help="abstain: failed samples use budget; drop: removed"),
    reps: int = typer.Option(128, "--reps", help="Monte Carlo replicates where exact is too large"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the numbers as JSON"),
    save_plan: Optional[Path] = typer.Option(None, "--save-plan", help="write the planner's (K, M) for budgets 2, 4, 8, ... up to B, for `--policy planned`"),
) -> None:
    """Accuracy of every (K priors x M samples) split, margins, drift regime and the planner's choice."""
    from .analysis import analyze, load_pool

    from .analysis.blend import blend_rows

    _check_common(budget, split, reps)
    rows = blend_rows(db)
    if rows and run is None and len({r.run_id for r in rows}) > 1:  # runs side by side: the diagnostics only
        render_blend(rows, out, title=f"{db}: {len(rows)} blended runs")
        out.print("[dim]name one with --run RUN_ID for its full analysis[/]")
        result = {"blend": [r.to_dict() for r in rows]}
    else:
        pool = load_pool(db, run, failed=failed)
        a = analyze(pool, _default_budget(pool, budget), split=split, seed=seed, ties=ties, replace=replace, method=method, reps=reps)
        render_analysis(a, out)
        rows = [r for r in rows if r.run_id == pool.run_id]
        render_blend(rows, out)
        result = {**a.to_dict(), **({"blend": [r.to_dict() for r in rows]} if rows else {})}
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1) + "\n")
        out.print(f"wrote {json_out}")
    if save_plan is not None:
        _save_plan(db, pool, a.budget, split, seed, save_plan)


def _save_plan(db: Path, pool, budget: int, split: float, seed: int, path: Path) -> None:
    """The planner's held-out-checked choice at each power-of-two budget up to ``budget``."""
    from .analysis import plan
    from .policies import SplitPlan
    from .store import Store

    store = Store(db, readonly=True)
    cfg = store.run_config(pool.run_id or store.only_run())
    store.close()
    budgets = sorted({b for b in (2 ** i for i in range(1, 12)) if b <= budget} | {budget})
    splits = {b: plan(pool, b, split=split, seed=seed).choice for b in budgets}
    SplitPlan(cfg["task"], cfg["model"], splits).save(path)
    out.print(f"wrote {path}: " + ", ".join(f"B={b}: K={k} x M={m}" for b, (k, m) in splits.items()))


@app.command("report")
def report_cmd(
    dbs: List[Path] = typer.Argument(..., help="one or more run databases (shown side by side)"),
    html: Path = typer.Option(Path("report.html"), "--html", help="the HTML file to write"),
    run: Optional[str] = typer.Option(None, "--run", help="run id, when a file holds several"),
    budget: Optional[int] = typer.Option(None, "--budget", "-B", help="samples per problem (default: each pool's largest, at most 64)"),
    split: float = typer.Option(0.5, "--split", help="calibration share of problems"),
    seed: int = typer.Option(0, "--seed"),
    method: str = typer.Option("auto", "--method", help="auto | exact | mc"),
    reps: int = typer.Option(128, "--reps"),
) -> None:
    """Write a self-contained HTML report (plots embedded) for one or more runs."""
    from .analysis import analyze, load_pool
    from .report import write_report

    from .analysis.blend import blend_rows

    _check_common(budget, split, reps)
    analyses, names, blended = [], [], []
    for db in dbs:
        rows = blend_rows(db)
        blended += rows
        if rows and run is None and len({r.run_id for r in rows}) > 1:
            continue  # blended runs side by side: the blend section only
        pool = load_pool(db, run)
        analyses.append(analyze(pool, _default_budget(pool, budget), split=split, seed=seed, method=method, reps=reps))
        names.append(str(db))
    path = write_report(analyses, html, names=names, blend=blended)
    out.print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
