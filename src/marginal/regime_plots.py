"""Plots of the regime test and of sub-banks (matplotlib on the Agg backend, PNG files).

- ``plot_regime_scatter(rt, path)``: per budget, each sub-bank's calibration
  λ (with its CI) against its held-out gain of diversity-first over
  repetition-first, coloured by regime.
- ``plot_sub_bank(pool, names, path, budget)``: one sub-bank's accuracy
  against budget (repetition-first K = 1, diversity-first M = 1, the best
  K x M <= B in hindsight; 95% bands over problems) and its mean Γ_K with
  the bootstrap band, on every labelled problem of the pool.

Left out: HTML (``marginal.report``), interactive plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .analysis.accuracy import accuracy_grid
from .analysis.margins import REGIMES, drift
from .analysis.pool import Pool
from .analysis.regimes import RegimeTest
from .analysis.subbank import sub_bank

REGIME_COLORS = {"aligned": "#2ca02c", "misaligned": "#d62728", "saturating": "#1f77b4"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_regime_scatter(rt: RegimeTest, path: str | Path) -> Path:
    """Calibration λ against held-out gain (percentage points), one panel per budget; returns the path."""
    plt = _pyplot()
    st = rt.stats
    fig, axes = plt.subplots(1, len(rt.budgets), figsize=(5.2 * len(rt.budgets), 4.2), squeeze=False)
    for b, (ax, res) in enumerate(zip(axes[0], rt.results)):
        for r, name in enumerate(REGIMES):
            m = st.regime == r
            if not m.any():
                continue
            x, y = st.lam[m], 100 * st.gain[m, b]
            ax.errorbar(
                x,
                y,
                xerr=[x - st.lo[m], st.hi[m] - x],
                fmt="o",
                ms=3,
                lw=0.6,
                alpha=0.6,
                color=REGIME_COLORS[name],
                label=f"{name} ({int(m.sum())})",
            )
        ax.axhline(0, color="gray", lw=0.8)
        ax.axvline(0, color="gray", lw=0.8)
        rho = res.spearman
        ax.set_title(
            f"B = {res.budget}: Spearman ρ = {rho.value:+.2f} [{rho.ci[0]:+.2f}, {rho.ci[1]:+.2f}]", fontsize=9
        )
        ax.set_xlabel("calibration drift λ (95% CI)")
        ax.set_ylabel("held-out gain: diversity-first − repetition-first (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_sub_bank(
    pool: Pool, names: Sequence[str], path: str | Path, budget: int, *, title: str = "", seed: int = 0
) -> Path:
    """Accuracy-vs-budget curves and mean Γ_K of one sub-bank; returns the path."""
    plt = _pyplot()
    sub = sub_bank(pool, names)
    sub = sub.subset(sub.labelled)
    B = min(budget, sub.max_budget)
    g = accuracy_grid(sub, B, seed=seed)
    d = drift(sub, seed=seed)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    fams = [
        ("repetition-first (K = 1)", [(1, m) for m in range(1, min(sub.n_slots, B) + 1)]),
        ("diversity-first (M = 1)", [(k, 1) for k in range(1, min(sub.n_priors, B) + 1)]),
    ]
    for i, (label, cells) in enumerate(fams):
        js = [g.index(k, m) for k, m in cells]
        x, y, s = np.array([k * m for k, m in cells]), g.mean[js], g.sampling_se[js]
        ax.plot(x, 100 * y, "o-", ms=3, color=("#d62728", "#2ca02c")[i], label=label)
        ax.fill_between(
            x,
            100 * np.clip(y - 1.96 * s, 0, 1),
            100 * np.clip(y + 1.96 * s, 0, 1),
            color=("#d62728", "#2ca02c")[i],
            alpha=0.15,
            lw=0,
        )
    env = [max(g.mean[j] for j, (k, m) in enumerate(g.cells) if k * m <= b) for b in range(1, B + 1)]
    ax.plot(np.arange(1, B + 1), 100 * np.array(env), "k--", lw=1, label="best K x M <= B (hindsight)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget B = K x M")
    ax.set_ylabel("vote accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    K = np.arange(1, sub.n_priors + 1)
    ax2.plot(K, d.gamma_mean, "o-", color=REGIME_COLORS[d.regime], label="mean Γ_K")
    ax2.fill_between(
        K, d.gamma_ci[0], d.gamma_ci[1], color=REGIME_COLORS[d.regime], alpha=0.2, lw=0, label="95% bootstrap band"
    )
    ax2.axhline(0, color="gray", lw=0.8)
    ax2.set_xticks(K, [f"{k}\n{n[:10]}" for k, n in zip(K, sub.priors)], fontsize=7)
    ax2.set_ylabel("effective margin Γ_K")
    ax2.set_title(
        f"{d.regime} on all {sub.n_problems} problems: λ = {d.lam:+.3f} "
        f"[{d.lam_ci[0]:+.3f}, {d.lam_ci[1]:+.3f}], K95 = {d.k95}",
        fontsize=9,
    )
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(title or ", ".join(sub.priors), fontsize=10)
    return _save(fig, path)
