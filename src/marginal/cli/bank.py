"""`marginal analyze --select-bank K`: greedy bank selection, printed, as JSON, and as a plan.

`render_selection` prints a `marginal.analysis.BankSelection` (each arm's
banks and splits per fold, held-out accuracy with its CI, the paired
differences; its JSON form is `BankSelection.to_dict`); `selected_plan` fits
the priors a plan stores: greedy selection on every covered labelled problem
(the cross-fitted arms only measure how well that procedure does held out),
then the planner's split per budget on that sub-bank. Left out: selection
for label-free pools (it needs gold).
"""

from __future__ import annotations

from rich.console import Console

from ..analysis.pool import Pool
from .common import plain
from .render import ci_text, mc_se_line, pct


def _bank(names) -> str:
    return ",".join(names)


def render_selection(sel, console: Console) -> None:
    """Print the arms and paired differences of a bank selection."""
    from rich.table import Table

    n_a, n_b = (len(h) for h in sel.halves)
    console.print(
        plain(
            f"Bank selection: K={sel.k} priors for B={sel.budget}, chosen greedily on a calibration half and "
            f"scored on the other ({n_a} + {n_b} problems, cross-fitted both ways, seed {sel.seed})"
        )
    )
    t = Table(title=None)
    for col in ("arm", "held-out %", f"{100 * sel.level:.0f}% CI", "K x M, fold 1", "K x M, fold 2"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for a in sel.arms:
        t.add_row(a.name, pct(a.pooled), ci_text(a.ci), *(f"{k} x {m}" for k, m in a.split))
    console.print(t)
    for a in sel.arms:
        (b1, b2) = a.priors
        console.print(plain(f"{a.name}: " + (_bank(b1) if b1 == b2 else f"fold 1 {_bank(b1)}; fold 2 {_bank(b2)}")))
    for d in sel.diffs:
        folds = ", ".join(
            f"fold {i + 1}: {100 * v:+.1f} {ci_text(c)}" for i, (v, c) in enumerate(zip(d.per_fold, d.fold_ci))
        )
        console.print(plain(f"{d.name}: {100 * d.pooled:+.1f} points {ci_text(d.ci)} paired ({folds})"))
    console.print(plain(mc_se_line(sel.mc_se)))


def selected_plan(pool: Pool, k: int, budget: int, budgets, *, split: float, seed: int, reps: int):
    """(selected priors, {budget: (K, M)}): greedy on all covered labelled problems, then the planner per budget."""
    import numpy as np

    from ..analysis import plan, sub_bank
    from ..analysis.subbank import covered, greedy_bank

    lab = covered(pool, "bank selection")
    chosen = greedy_bank(lab, k, budget, np.arange(lab.n_problems), seed=seed, reps=reps)
    sub = sub_bank(lab, chosen)
    splits = {b: plan(sub, min(b, sub.max_budget), split=split, seed=seed).choice for b in budgets}
    return chosen, splits


__all__ = ["render_selection", "selected_plan"]
