"""Rich tables of an analysis (`marginal analyze`, `marginal demo`) and of blended runs.

`render_analysis` prints, for one `marginal.analysis.Analysis`: the priors
(accuracy, failures, agreement), the accuracy grid over (K, M) with the best
cell and the largest Monte Carlo standard error of the grids it quotes,
margins and dominance as priors are added, the drift regime, the
bias-variance check, the planner's choice against the baselines on held-out
problems (and by difficulty), and the weighted votes; a label-free pool gets
its label-free measures only. `render_blend` prints the diagnostics of
blended runs and the correlation of accuracy with intervention rate.
Left out: HTML (`marginal.report`) and JSON (``Analysis.to_dict``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .common import plain


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci_text(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _table(title: str) -> Table:
    return Table(title=plain(title) if title else None, title_justify="left")


def _columns(t: Table, cols: tuple[str, ...], left: tuple[str, ...]) -> None:
    for col in cols:
        t.add_column(col, justify="left" if col in left else "right")


def mc_se_line(se: float) -> str:
    """The line under an accuracy table: its largest Monte Carlo standard error, in points."""
    return f"largest Monte Carlo standard error: {100 * se:.2f} points" + (" (every cell exact)" if se == 0 else "")


def grid_table(g, title: str) -> Table:
    """The accuracy grid (K rows x M columns, ± its Monte Carlo SE), the best cell in green."""
    t = _table(title)
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
            s = pct(v) + (f"±{100 * se[(k + 1, m + 1)]:.1f}" if se[(k + 1, m + 1)] > 0.0005 else "")
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
    _priors(a, console)
    lfm = a.label_free_margin.mean(axis=0)
    if a.label_free:
        console.print(
            "[yellow]no reference answers: only label-free measures are shown[/] (label-free margin, agreement)"
        )
        console.print("label-free margin by K: " + "  ".join(f"K={k + 1}: {v:.3f}" for k, v in enumerate(lfm)))
        return
    _grid(a, console)
    _margins(a, lfm, console)
    _drift(a, console)
    if a.plan is not None:
        _planner(a.plan, console)
    if a.weights is not None:
        _weights(a.weights, console)


def _priors(a, console: Console) -> None:
    st = a.priors
    t = _table("Priors (bank order)")
    t.add_column("#", justify="right")
    t.add_column("prior")
    if st.accuracy is not None:
        t.add_column("accuracy %", justify="right")
    t.add_column("failed %", justify="right")
    t.add_column("agrees w/ plurality %", justify="right")
    for c, name in enumerate(st.names):
        cells: list[str | Text] = [str(c + 1), plain(name)]
        if st.accuracy is not None:
            cells.append(pct(st.accuracy[c]))
        t.add_row(*cells, pct(st.failed[c]), pct(st.plurality_agreement[c]))
    console.print(t)


def _grid(a, console: Console) -> None:
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
        f"best cell {k1}: {pct(g.at(*k1))}%  |  K at random, best {gr.best()}: {pct(gr.at(*gr.best()))}%  |  "
        f"oracle at {k1}: {pct(a.oracle.at(*k1))}%  |  pass@k (whole pool): "
        + ", ".join(f"{k}: {pct(v)}%" for k, v in (a.pass_at or {}).items())
    )
    console.print(plain(mc_se_line(max(float(g.se.max()), float(gr.se.max())))))


def _margins(a, lfm, console: Console) -> None:
    m = a.margins
    n = a.pool.n_priors
    t = _table("Margins as priors are added (bank order)")
    _columns(
        t, ("K", "mean Γ_K", "dominance (Γ>0) %", "label-free margin", *(["κ_K"] if a.drift is not None else [])), ()
    )
    for k in range(n):
        row = [str(k + 1), f"{m.gamma[:, k].mean():+.3f}", pct(m.dominance[k]), f"{lfm[k]:.3f}"]
        if a.drift is not None:
            row.append(f"{a.drift.kappa_mean[k]:+.3f}" if k < n - 1 else "")
        t.add_row(*row)
    console.print(t)
    console.print(
        f"gold sampled in {int(m.gold_sampled.sum())}/{len(m.gold_sampled)} problems; outvoted over the whole bank "
        f"in {int(m.outvoted.sum())}, tied in {int(m.tied.sum())}"
    )


def _drift(a, console: Console) -> None:
    d = a.drift
    if d is not None:
        col = {"aligned": "green", "misaligned": "red", "saturating": "yellow"}[d.regime]
        console.print(
            f"[bold]regime: [{col}]{d.regime}[/][/]  λ = {d.lam:+.3f}, {int(100 * d.level)}% CI "
            f"\\[{d.lam_ci[0]:+.3f}, {d.lam_ci[1]:+.3f}]; K95 = {d.k95}; rule for B = {a.budget}: "
            f"K, M = {d.recommend(a.budget, a.pool.n_slots)}"
        )
    bv = a.bias_variance
    if bv is not None and np.isfinite(bv.sigma2_w).any():
        console.print(
            f"bias-variance (strongest competitor): mean Γ_b {np.nanmean(bv.gamma):+.3f}, "
            f"σ²_w {np.nanmean(bv.sigma2_w):.3f}, "
            f"σ²_btw {np.nanmean(bv.sigma2_btw):.3f}; normal approximation vs exact (random K, bootstrap): "
            f"mean |diff| {100 * bv.mean_abs_error:.1f} points"
        )


def _planner(pl, console: Console) -> None:
    t = _table(
        f"Planner for B = {pl.budget}: recommended K = {pl.choice[0]}, M = {pl.choice[1]} "
        f"(calibration {pl.n_calib} problems: {pct(pl.calib_accuracy)}%; held out {pl.n_test})"
    )
    _columns(t, ("allocation", "K", "M", "held-out acc %", "95% CI", "vs planner", "95% CI "), ("allocation",))
    for s in pl.scored:
        own = s.name == "planner"
        t.add_row(
            plain(s.name),
            str(s.k),
            str(s.m),
            pct(s.accuracy),
            plain(ci_text(s.ci)),
            "" if own else f"{100 * s.diff:+.1f}",
            "" if own else plain(ci_text(s.diff_ci)),
        )
    console.print(t)
    if pl.buckets:
        t = _table("By difficulty (share of gold samples in the pool)")
        _columns(
            t, ("bucket", "range", "n test", "bucket's K,M", "its acc %", "planner %", "K=1 %", "M=1 %"), ("bucket",)
        )
        for b in pl.buckets:
            t.add_row(
                plain(b.name),
                f"{b.lo:.2f}-{b.hi:.2f}",
                str(b.n_test),
                f"{b.choice[0]},{b.choice[1]}",
                pct(b.accuracy),
                pct(b.global_choice_accuracy),
                pct(b.repetition_accuracy),
                pct(b.diversity_accuracy),
            )
        console.print(t)


def _weights(w, console: Console) -> None:
    t = _table(f"Weighted votes at K, M = {w.allocation} on {w.n_test} held-out problems")
    _columns(t, ("weights", "held-out acc %", "vs uniform", "95% CI", "verdict"), ("weights", "verdict"))
    for i, kd in enumerate(w.kinds):
        t.add_row(
            plain(kd), pct(w.accuracy[i]), f"{100 * w.diff[i]:+.1f}", plain(ci_text(w.diff_ci[i])), plain(w.verdict(kd))
        )
    console.print(t)


def render_blend(rows, console: Console, title: str = "blended runs") -> None:
    """Print the diagnostics of blended runs (`marginal.analysis.blend.BlendRow`) and their correlation."""
    from ..analysis.blend import correlation

    if not rows:
        return
    short = lambda m: Path(m).stem if m.endswith(".gguf") else m  # noqa: E731
    retok = any(r.retokenized for r in rows)
    t = _table(title)
    _columns(
        t,
        (
            "base + guide",
            "variant",
            "γ",
            "α",
            "n",
            "accuracy % [95% CI]",
            "failed",
            "interv. rate",
            "mean α",
            "top-k overlap",
            *(["retokenized"] if retok else []),
        ),
        ("base + guide", "variant"),
    )
    f = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731  (nan -> '-')
    for r in rows:
        acc = "-" if not r.graded else f"{pct(r.accuracy)} {ci_text(r.ci)}"
        t.add_row(
            plain(f"{short(r.base)} + {short(r.guide)}"),
            plain(r.variant),
            f"{r.gamma:g}",
            plain(r.alpha),
            str(r.samples),
            plain(acc),
            str(r.failed),
            f(r.intervention_rate),
            f(r.mean_alpha),
            f(r.topk_overlap),
            *([str(r.retokenized)] if retok else []),
        )
    console.print(t)
    blended = [r for r in rows if r.variant not in ("base", "guide")]
    c = correlation([r.intervention_rate for r in blended], [r.accuracy for r in blended])
    if c.n >= 3:
        console.print(plain(f"accuracy vs intervention rate over {c.n} blended settings: {c.describe()}"))


__all__ = ["ci_text", "grid_table", "mc_se_line", "pct", "render_analysis", "render_blend"]
