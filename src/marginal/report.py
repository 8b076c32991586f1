"""One self-contained HTML report for one or more analysed runs (PNG plots embedded as base64).

Sections, each with the runs side by side: a summary table; accuracy versus
budget per allocation family (repetition-only, diversity-only in bank order
and at random, fixed K, the best cell within the budget, the oracle) with
95% bands; the (K, M) heatmap with its largest Monte Carlo standard error;
Γ_K with its bootstrap band, dominance and the label-free margin; histograms of per-problem margins for two allocations
(K = 1 and all priors); per-prior accuracy and the agreement matrix; the normal approximation
against the exact accuracy (bias-variance theory check); the planner's choice against the
baselines on held-out problems; for blended runs (any file given), accuracy against
intervention rate per pair, variant
and gamma. A label-free run gets the label-free sections only. Matplotlib runs on the Agg backend.
Left out: interactive plots, external assets (the file needs nothing else).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .analysis.summary import Analysis, labelled_part
from .errors import MarginalError

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px;margin-bottom:12px}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:10px;flex:1 1 420px;max-width:640px}
.card h3{font-size:14px;margin:0 0 6px;color:#333;word-break:break-all}
img{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
td,th{border:1px solid #e0e0e0;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.note{color:#8a6d00;font-size:13px}
"""

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _e(x) -> str:
    return html.escape(str(x))


def _signed_ci(diff: float, ci: tuple[float, float]) -> str:
    """A difference and its interval in percentage points, signed: ``+1.2 [-0.5, +3.0]``."""
    return f"{100 * diff:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


# -- plots -----------------------------------------------------------------------------
def plot_budget_curves(a: Analysis) -> str:
    plt = _plt()
    g = labelled_part(a.grid, "the accuracy grid")
    gr = labelled_part(a.grid_random, "the accuracy grid with random priors")
    og = labelled_part(a.oracle, "the oracle grid")
    P, n, B = a.pool.n_priors, a.pool.n_slots, a.budget
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    mean = g.mean

    def series(grid, pairs):
        js = [grid.index(k, m) for k, m in pairs]
        return np.array([k * m for k, m in pairs]), grid.mean[js], grid.sampling_se[js]

    fams = [
        ("repetition only (K=1)", g, [(1, m) for m in range(1, min(n, B) + 1)]),
        ("diversity only, bank order (M=1)", g, [(k, 1) for k in range(1, min(P, B) + 1)]),
        ("diversity only, random priors", gr, [(k, 1) for k in range(1, min(P, B) + 1)]),
    ]
    for K in (2, 4, 8):
        if K < P and K * 2 <= B:
            fams.append((f"K={K} fixed", g, [(K, m) for m in range(1, min(n, B // K) + 1)]))
    for i, (name, grid, pairs) in enumerate(fams):
        x, y, s = series(grid, pairs)
        ax.plot(x, 100 * y, "o-", ms=3, lw=1.5, color=COLORS[i % len(COLORS)], label=name)
        ax.fill_between(
            x,
            100 * np.clip(y - 1.96 * s, 0, 1),
            100 * np.clip(y + 1.96 * s, 0, 1),
            color=COLORS[i % len(COLORS)],
            alpha=0.15,
            lw=0,
        )
    budgets = np.arange(1, B + 1)
    best_j = []
    for b in budgets:
        js = [j for j, (k, m) in enumerate(g.cells) if k * m <= b]
        best_j.append(max(js, key=lambda j: mean[j]))
    env = mean[best_j]
    ax.plot(budgets, 100 * env, "k--", lw=1.2, label="best K x M <= B (in hindsight)")
    oj = [og.index(1, m) for m in range(1, min(n, B) + 1)]
    ax.plot(np.arange(1, len(oj) + 1), 100 * og.mean[oj], ":", color="gray", lw=1.2, label="oracle, K=1 (gold drawn)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget B = K x M (samples per problem)")
    ax.set_ylabel("vote accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_heatmap(a: Analysis) -> str:
    plt = _plt()
    g = labelled_part(a.grid, "the accuracy grid")
    t = g.table()
    fig, ax = plt.subplots(figsize=(0.42 * t.shape[1] + 2.2, 0.34 * t.shape[0] + 1.6))
    im = ax.imshow(100 * t, origin="lower", cmap="viridis", aspect="auto")
    best = g.best()
    lo, hi = np.nanmin(t), np.nanmax(t)
    if t.size <= 400:
        for k in range(t.shape[0]):
            for m in range(t.shape[1]):
                if not np.isnan(t[k, m]):
                    w = "bold" if (k + 1, m + 1) == best else "normal"
                    light = (t[k, m] - lo) / max(hi - lo, 1e-12) > 0.6  # viridis is light at the top
                    ax.text(
                        m,
                        k,
                        f"{100 * t[k, m]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="black" if light else "white",
                        weight=w,
                    )
    ax.set_xticks(range(t.shape[1]), [str(m + 1) for m in range(t.shape[1])], fontsize=7)
    ax.set_yticks(range(t.shape[0]), [str(k + 1) for k in range(t.shape[0])], fontsize=7)
    ax.set_xlabel("M samples per prior")
    ax.set_ylabel("K priors (bank order)")
    ax.add_patch(plt.Rectangle((best[1] - 1.5, best[0] - 1.5), 1, 1, fill=False, ec="red", lw=1.5))
    fig.colorbar(im, ax=ax, label="accuracy %", shrink=0.8)
    return _png(fig)


def plot_gamma(a: Analysis) -> str:
    plt = _plt()
    P = a.pool.n_priors
    K = np.arange(1, P + 1)
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    lfm = a.label_free_margin.mean(axis=0)
    if not a.label_free:
        d, m = a.drift, labelled_part(a.margins, "margins")
        gm = m.gamma.mean(axis=0)
        ax.plot(K, gm, "o-", color=COLORS[0], label="mean Γ_K (effective margin)")
        if d is not None:
            ax.fill_between(
                K, d.gamma_ci[0], d.gamma_ci[1], color=COLORS[0], alpha=0.2, lw=0, label="95% bootstrap band"
            )
            ax.set_title(
                f"regime {d.regime}: λ = {d.lam:+.3f} [{d.lam_ci[0]:+.3f}, {d.lam_ci[1]:+.3f}], K95 = {d.k95}",
                fontsize=9,
            )
        ax2 = ax.twinx()
        ax2.plot(K, 100 * m.dominance, "s--", ms=3, color=COLORS[2], label="dominance (Γ>0) %")
        ax2.set_ylabel("dominance %", color=COLORS[2])
        ax2.set_ylim(0, 100)
        ax2.legend(fontsize=7, loc="lower right")
    ax.plot(K, lfm, "^-", ms=3, color=COLORS[1], label="mean label-free margin")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("K priors added in bank order")
    ax.set_ylabel("margin")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def plot_margin_hist(a: Analysis) -> str:
    plt = _plt()
    P = a.pool.n_priors
    vals = a.label_free_margin if a.label_free else labelled_part(a.margins, "margins").gamma
    what = "label-free margin" if a.label_free else "Γ"
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    bins = np.linspace(-1, 1, 41) if not a.label_free else np.linspace(0, 1, 21)
    for i, k in enumerate(sorted({1, P})):
        ax.hist(vals[:, k - 1], bins=bins, alpha=0.55, color=COLORS[i], label=f"K={k} (M→∞)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"per-problem {what}")
    ax.set_ylabel("problems")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_priors(a: Analysis) -> str:
    plt = _plt()
    st = a.priors
    P = len(st.names)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.4, 3.6), gridspec_kw={"width_ratios": [1, 1.1]})
    y = np.arange(P)
    if st.accuracy is not None:
        ax1.barh(y, 100 * st.accuracy, color=COLORS[0], label="accuracy")
    ax1.barh(y, 100 * st.plurality_agreement, color="none", edgecolor=COLORS[1], label="agrees with plurality")
    ax1.set_yticks(y, [s[:18] for s in st.names], fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("% of samples")
    ax1.legend(fontsize=7, loc="lower right")
    im = ax2.imshow(st.agreement, cmap="magma", vmin=0, vmax=max(float(st.agreement.max()), 1e-9))
    ax2.set_xticks(y, [str(i + 1) for i in y], fontsize=7)
    ax2.set_yticks(y, [str(i + 1) for i in y], fontsize=7)
    ax2.set_title("agreement P(same answer)", fontsize=9)
    fig.colorbar(im, ax=ax2, shrink=0.8)
    fig.tight_layout()
    return _png(fig)


def plot_normal(a: Analysis) -> str:
    plt = _plt()
    bv = labelled_part(a.bias_variance, "the normal approximation")
    ex, nm = 100 * bv.exact.mean(axis=0), 100 * bv.normal.mean(axis=0)
    km = np.array([k * m for k, m in bv.cells])
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    sc = ax.scatter(ex, nm, c=np.log2(km), cmap="viridis", s=14)
    lo, hi = float(min(ex.min(), nm.min())) - 2, float(max(ex.max(), nm.max())) + 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("exact accuracy % (random K, with replacement)")
    ax.set_ylabel("normal approximation %")
    ax.set_title(f"mean |error| {100 * bv.mean_abs_error:.1f} points over {len(bv.cells)} cells", fontsize=9)
    fig.colorbar(sc, ax=ax, label="log2(K x M)", shrink=0.8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_plan(a: Analysis) -> str:
    plt = _plt()
    pl = labelled_part(a.plan, "the plan")
    fig, ax = plt.subplots(figsize=(6.2, 2.8))
    names = [f"{s.name} ({s.k}x{s.m})" for s in pl.scored]
    acc = np.array([s.accuracy for s in pl.scored])
    lo = acc - np.array([s.ci[0] for s in pl.scored])
    hi = np.array([s.ci[1] for s in pl.scored]) - acc
    y = np.arange(len(names))
    ax.barh(y, 100 * acc, xerr=[100 * lo, 100 * hi], color=[COLORS[0]] + [COLORS[7]] * (len(names) - 1), capsize=3)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"held-out accuracy % ({pl.n_test} problems), B = {pl.budget}")
    left = max(0.0, 100 * float((acc - lo).min()) - 5)
    ax.set_xlim(left, min(100, 100 * float((acc + hi).max()) + 3))
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


# -- HTML ------------------------------------------------------------------------------
def _summary_table(a: Analysis) -> str:
    p = a.pool
    rows = [("problems x priors x samples", f"{p.n_problems} x {p.n_priors} x {p.n_slots}"), ("budget B", a.budget)]
    if a.label_free:
        rows.append(("gold", "none: label-free measures only"))
    else:
        g = labelled_part(a.grid, "the accuracy grid")
        b = g.best()
        rows += [
            ("best cell (K, M)", f"{b}: {100 * g.at(*b):.1f}%"),
            ("K=1, M=1", f"{100 * g.at(1, 1):.1f}%"),
            ("exact cells", f"{100 * g.exact.mean():.0f}%"),
        ]
        if a.drift is not None:
            d = a.drift
            rows += [("regime", d.regime), ("λ (95% CI)", f"{d.lam:+.3f} [{d.lam_ci[0]:+.3f}, {d.lam_ci[1]:+.3f}]")]
        if a.plan is not None:
            s = a.plan.get("planner")
            rows.append(
                (
                    "planner's choice",
                    f"K={s.k}, M={s.m}: {100 * s.accuracy:.1f}% held out [{100 * s.ci[0]:.1f}, {100 * s.ci[1]:.1f}]",
                )
            )
        if a.weights is not None:
            w = a.weights
            rows.append(("weighting", "; ".join(f"{k}: {w.verdict(k)}" for k in w.kinds if k != "uniform")))
        if a.bias_variance is not None:
            rows.append(("normal approx. |error|", f"{100 * a.bias_variance.mean_abs_error:.1f} points"))
    return (
        "<table>"
        + "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(v)}</td></tr>' for k, v in rows)
        + "</table>"
    )


def _mc_se_note(a: Analysis) -> str:
    """The largest Monte Carlo standard error of the grids shown (bank order and K at random)."""
    grids = (labelled_part(a.grid, "grid"), labelled_part(a.grid_random, "grid_random"))
    se = max(float(g.se.max()) for g in grids)
    return f'<p class="note">largest Monte Carlo standard error: {100 * se:.2f} points</p>'


def _plan_table(a: Analysis) -> str:
    pl = labelled_part(a.plan, "the plan")
    head = (
        "<tr><th class='l'>allocation</th><th>K</th><th>M</th><th>held-out %</th><th>95% CI</th>"
        "<th>vs planner</th></tr>"
    )
    body = "".join(
        f"<tr><td class='l'>{_e(s.name)}</td><td>{s.k}</td><td>{s.m}</td><td>{100 * s.accuracy:.1f}</td>"
        f"<td>[{100 * s.ci[0]:.1f}, {100 * s.ci[1]:.1f}]</td>"
        f"<td>{'' if s.name == 'planner' else _signed_ci(s.diff, s.diff_ci)}</td></tr>"
        for s in pl.scored
    )
    bk = ""
    if pl.buckets:
        bk = (
            "<table><tr><th class='l'>difficulty</th><th>n test</th><th>its K,M</th><th>its %</th><th>planner %</th>"
            "<th>K=1 %</th><th>M=1 %</th></tr>"
            + "".join(
                f"<tr><td class='l'>{_e(b.name)} ({b.lo:.2f}-{b.hi:.2f})</td><td>{b.n_test}</td>"
                f"<td>{b.choice[0]},{b.choice[1]}</td>"
                f"<td>{100 * b.accuracy:.1f}</td><td>{100 * b.global_choice_accuracy:.1f}</td>"
                f"<td>{100 * b.repetition_accuracy:.1f}</td><td>{100 * b.diversity_accuracy:.1f}</td></tr>"
                for b in pl.buckets
            )
            + "</table>"
        )
    return f"<table>{head}{body}</table>{bk}"


def plot_blend(rows) -> str:
    """Accuracy (95% Wilson CI) against intervention rate, one point per blended run, one colour per pair."""
    from .analysis.blend import correlation

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    pairs = list(dict.fromkeys((r.task, r.base, r.guide) for r in rows))
    for i, pair in enumerate(pairs):
        pts = [r for r in rows if (r.task, r.base, r.guide) == pair and r.graded]
        if not pts:
            continue
        x = np.array([r.intervention_rate for r in pts])
        y = np.array([100 * r.accuracy for r in pts])
        lo = y - np.array([100 * r.ci[0] for r in pts])
        hi = np.array([100 * r.ci[1] for r in pts]) - y
        ax.errorbar(
            x,
            y,
            yerr=[lo, hi],
            fmt="o",
            ms=4,
            capsize=2,
            color=COLORS[i % len(COLORS)],
            label=f"{pair[0]}: {pair[1]} + {pair[2]}",
        )
        for r, xi, yi in zip(pts, x, y):
            tag = r.variant if r.variant != "blend" else f"γ={r.gamma:g}"
            ax.annotate(tag, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    blended = [r for r in rows if r.variant not in ("base", "guide")]
    c = correlation([r.intervention_rate for r in blended], [r.accuracy for r in blended])
    if c.n >= 3:
        ax.set_title(f"over {c.n} blended settings: {c.describe()}", fontsize=8)
    ax.set_xlabel("intervention rate (guide consulted per emitted token)")
    ax.set_ylabel("accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return _png(fig)


def _blend_table(rows) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "base + guide",
            "task",
            "variant",
            "γ",
            "α",
            "n",
            "accuracy",
            "interv. rate",
            "mean α",
            "top-k overlap",
        )
    )
    f = lambda x: "–" if x != x else f"{x:.3f}"  # noqa: E731
    body = "".join(
        f"<tr><td class='l'>{_e(r.base)} + {_e(r.guide)}</td><td class='l'>{_e(r.task)}</td>"
        f"<td class='l'>{_e(r.variant)}</td>"
        f"<td>{r.gamma:g}</td><td>{_e(r.alpha)}</td><td>{r.samples}</td><td>{f(r.accuracy)}</td><td>{f(r.intervention_rate)}</td>"
        f"<td>{f(r.mean_alpha)}</td><td>{f(r.topk_overlap)}</td></tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(analyses: Sequence[Analysis], names: Sequence[str] | None = None, blend: Sequence = ()) -> str:
    """The report's HTML text (``blend``: `BlendRow`s of blended runs, plotted in their own section)."""
    if not analyses and not blend:
        raise MarginalError("a report needs at least one run")
    names = list(names) if names is not None else [a.pool.run_id or f"run {i + 1}" for i, a in enumerate(analyses)]
    labels = [
        f"{n} ({a.pool.run_id})" if a.pool.run_id and a.pool.run_id not in n else n for n, a in zip(names, analyses)
    ]

    def section(title: str, fn, need_gold: bool = True, need_plan: bool = False) -> str:
        cards = []
        for lab, a in zip(labels, analyses):
            if need_gold and a.label_free:
                body = '<p class="note">no reference answers: this needs gold (label-free run)</p>'
            elif need_plan and a.plan is None:
                body = '<p class="note">too few labelled problems for a calibration/test split</p>'
            else:
                body = fn(a)
            cards.append(f'<div class="card"><h3>{_e(lab)}</h3>{body}</div>')
        return f"<h2>{_e(title)}</h2><div class='row'>{''.join(cards)}</div>"

    parts = (
        []
        if not analyses
        else [
            section("Summary", _summary_table, need_gold=False),
            section("Accuracy vs budget per allocation family (95% bands)", plot_budget_curves),
            section("Accuracy % over (K priors, M samples)", lambda a: plot_heatmap(a) + _mc_se_note(a)),
            section("Margins as priors are added: Γ_K, dominance, label-free margin", plot_gamma, need_gold=False),
            section("Per-problem margins for two allocations", plot_margin_hist, need_gold=False),
            section("Per-prior accuracy and agreement", plot_priors, need_gold=False),
            section("Theory check: normal approximation vs exact accuracy per (K, M)", plot_normal),
            section("Planner's choice on held-out problems", lambda a: plot_plan(a) + _plan_table(a), need_plan=True),
        ]
    )
    if blend:
        parts.append(
            "<h2>Blending: accuracy against intervention rate (95% Wilson intervals)</h2>"
            f"<div class='row'><div class='card'>{plot_blend(blend)}{_blend_table(blend)}</div></div>"
        )

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = ([f"{len(analyses)} run(s): {', '.join(labels)}"] if analyses else []) + (
        [f"{len(blend)} blended runs"] if blend else []
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>marginal report</title>"
        f"<style>{CSS}</style></head><body><h1>marginal report</h1>"
        f"<div class='sub'>{_e(' and '.join(what))} · generated {now} · "
        "accuracy is the expected majority vote over subsamples of the stored pool (exact where the vote state "
        "space is small, Monte Carlo with common random numbers elsewhere)</div>" + "".join(parts) + "</body></html>"
    )


def write_report(
    analyses: Sequence[Analysis], path: str | Path, names: Sequence[str] | None = None, blend: Sequence = ()
) -> Path:
    """Write the self-contained HTML report; returns its path."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise MarginalError(f"--html must name an .html file, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(analyses, names, blend), encoding="utf-8")
    return path
