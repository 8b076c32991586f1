"""Commands on a stored pool: `marginal export` and `marginal replay`.

``export`` writes a run's samples as JSONL or Parquet; ``replay`` runs
policies on the stored samples (`marginal.replay`), on the whole bank or a
sub-bank (``--priors``), and tabulates accuracy with its 95% CI and the
samples used (``--plan`` for policy planned). Both generate nothing, except
``replay --grow``: it first runs each policy live over the pool
(`marginal.grow`), generating the samples it asks for beyond the pool with
the pool's own model and settings, so that the replay is exact. Left out:
editing or merging pools.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from ..config import check_positive
from ..errors import MarginalError
from .common import names, out, plain


def export(
    db: Path = typer.Argument(..., help="run database"),
    dest: Path = typer.Argument(..., help="output file: .jsonl or .parquet"),
    run_id: str | None = typer.Option(None, "--run", help="run id when the database holds several"),
) -> None:
    """Export a run's samples as JSONL or Parquet."""
    from ..store import Store

    store = Store(db, readonly=True)
    try:
        rid = run_id or store.only_run()
        store.run_config(rid)
        path = store.export(rid, dest)
        out.print(plain(f"wrote {store.count(rid)} samples to {path}"))
    finally:
        store.close()


def replay(
    db: Path = typer.Argument(..., help="a K x M run database (a pool)"),
    budgets: str = typer.Option("4,8,16", "--budgets", help="comma-separated budgets B"),
    policies: str = typer.Option(
        "repetition,diversity,adaptive",
        "--policies",
        help=f"comma-separated policy names ({', '.join(names('policy'))})",
    ),
    threshold: float = typer.Option(0.95, help="adaptive: stop when P(leader stays leader) reaches this"),
    run_id: str | None = typer.Option(None, "--run", help="run id when the database holds several"),
    priors: str | None = typer.Option(
        None, "--priors", help="replay on the sub-bank of these priors, in this order ('a,b,c'; default: all)"
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="plan.json from `marginal analyze --save-plan` (policy planned)"
    ),
    grow: bool = typer.Option(
        False,
        "--grow",
        help="first generate (and store) the samples each policy asks for beyond the pool, with the pool's "
        "own model and settings (needs the model), so no question runs out",
        rich_help_panel="Growing the pool",
    ),
    threads: int | None = typer.Option(
        None, help="--grow: CPU threads for llama.cpp (default: all cores)", rich_help_panel="Growing the pool"
    ),
    slots: int = typer.Option(
        32, help="--grow: llama.cpp sequences decoded together", rich_help_panel="Growing the pool"
    ),
) -> None:
    """Replay policies on a stored pool: accuracy with 95% CI and samples used.

    Nothing is generated unless --grow: then each policy first runs live over the pool, taking
    sample i of (problem, prior) from the pool where it is stored and generating it, with the seed
    it would have had, where it is not."""
    from rich.table import Table

    from ..analysis.subbank import pick_priors
    from ..config import RunConfig
    from ..policies import SplitPlan, make_policy
    from ..replay import replay as replay_pool
    from ..store import Store

    try:
        bs = [int(b) for b in budgets.split(",")]
    except ValueError:
        raise MarginalError(f"--budgets expects comma-separated integers, got {budgets!r}") from None
    for b in bs:
        check_positive("--budgets", b)
    store = Store(db, readonly=True)
    try:
        rid = run_id or store.only_run()
        bank = [c.name for c in store.priors(rid)]
        stored = RunConfig.from_store(store, rid) if plan_file is not None or grow else None
    finally:
        store.close()
    if priors is not None:
        bank = [bank[i] for i in pick_priors(priors, bank, f"run {rid} in {db}")]
    plan = SplitPlan.load(plan_file) if plan_file is not None else None
    if plan is not None and stored is not None:
        plan.check(stored.task.name, stored.model)
    n_priors = len(bank)

    def policy(name: str, b: int):
        return make_policy(name.strip(), b, n_priors, k=min(n_priors, b), plan=plan, threshold=threshold, names=bank)

    if grow and stored is not None:
        _grow(db, rid, replace(stored, threads=threads, slots=slots), bank, bs, policies.split(","), policy)
    t = Table(title=plain(f"policies replayed on {db}"))
    for col in ("B", "policy", "accuracy %", "95% CI", "mean samples", "pool exhausted"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    short = False
    for b in bs:
        for name in policies.split(","):
            r = replay_pool(db, policy(name, b), b, run=run_id, priors=bank)
            mark = "†" if r.exhausted else ""
            short = short or bool(r.exhausted)
            t.add_row(
                str(b),
                plain(name),
                f"{100 * r.accuracy:.1f}{mark}",
                plain(f"[{100 * r.ci[0]:.1f}, {100 * r.ci[1]:.1f}]"),
                f"{r.mean_used:.1f}{mark}",
                str(r.exhausted),
            )
    out.print(t)
    if short:
        out.print(
            "† the pool ran out of samples for some questions: those stopped early, so the cell is a lower "
            "bound on samples and not the live policy's accuracy; rerun with --grow to generate them"
        )


def _grow(db: Path, run_id: str, config, bank: list[str], budgets: list[int], names: list[str], policy) -> None:
    """Grow the pool for each (budget, policy) in turn, with a progress bar each; prints what was added."""
    from ..backends.cache import Engines
    from ..config import build_plan
    from ..grow import grow_for_policy
    from ..store import Store
    from .progress import ProgressBar

    _, run_plan = build_plan(config)  # before any model loads: a missing data file fails here
    engines = Engines(**config.backend_options)
    store = Store(db)
    try:
        for b in budgets:
            for name in names:
                label = replace(run_plan, task=f"grow {name.strip()} B={b} · {run_plan.task}")
                with ProgressBar(label, b) as bar:
                    _, added = grow_for_policy(
                        store,
                        run_id,
                        policy(name, b),
                        b,
                        engines.backend_for(config.model),
                        priors=bank,
                        batch_samples=config.batch_samples,
                        on_progress=bar,
                    )
                out.print(plain(f"{name.strip()} at B = {b}: {added} samples generated and stored in {db}"))
    finally:
        engines.close()
        store.close()


__all__ = ["export", "replay"]
