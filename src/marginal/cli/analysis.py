"""`marginal analyze` and `marginal report`: analyses of stored runs, no generation.

``analyze`` prints the tables of `marginal.cli.render` for one run (``--json``
writes the same numbers; ``--save-plan`` the planner's split per budget for
``--policy planned``); ``--priors a,b,c`` analyses that sub-bank of the run,
in that order (the plan then names those priors); ``--select-bank K``
prints the greedy bank selection of `marginal.cli.bank` instead of the
analysis (``--save-plan``: the priors selected on every problem, with the
planner's split per budget on them). A file of blended runs (`marginal blend`, or a
``blend:`` model) also gets the intervention diagnostics per run and the
correlation of accuracy with intervention rate; a file holding several runs
side by side gets only that table unless ``--run`` names one. ``report``
writes one self-contained HTML file for one or more runs. `analyze_file` and
`report_files` are the same as plain functions (`marginal demo` calls them).
Left out: analyses of several runs in one table (the report puts them side by side).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from ..config import RunConfig, check_positive
from ..errors import MarginalError
from .common import out, plain
from .render import render_analysis, render_blend

DEFAULT_MAX_BUDGET = 64


@dataclass(frozen=True)
class AnalysisSettings:
    """How `marginal.analysis.analyze` reads a pool: the planner's calibration split, the seed of the split,
    bootstrap and Monte Carlo, the tie rule, draws with or without replacement, exact or Monte Carlo."""

    split: float = 0.5
    seed: int = 0
    ties: str = "split"
    replace: bool = False
    method: str = "auto"
    reps: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.split < 1:
            raise MarginalError(f"--split must be in (0, 1), got {self.split}")
        if self.reps < 2:
            raise MarginalError(f"--reps must be >= 2, got {self.reps}")

    def analyze(self, pool, budget: int | None):
        """The analysis of ``pool`` at ``budget`` (default: the largest the pool supports, at most 64)."""
        from ..analysis import analyze

        return analyze(pool, _default_budget(pool, budget), **asdict(self))


def _side_by_side(rows, run: str | None) -> bool:
    """Several blended runs in one file and none named: only their diagnostics are shown."""
    return bool(rows) and run is None and len({r.run_id for r in rows}) > 1


def analyze_file(
    db: Path,
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    budget: int | None = None,
    run: str | None = None,
    failed: str = "abstain",
    json_out: Path | None = None,
    save_plan: Path | None = None,
    priors: str | Sequence[str] | None = None,
    select_bank: int | None = None,
) -> None:
    """Print the analysis of the run in ``db`` (see the module docstring); optionally write its JSON and plan.

    ``priors``: the sub-bank to analyse, in order; ``select_bank``: K, print the bank selection instead."""
    from ..analysis import load_pool
    from ..analysis.blend import blend_rows

    check_positive("--budget", budget)
    rows = blend_rows(db)
    if select_bank is not None:
        result = _select(load_pool(db, run, failed=failed), db, select_bank, settings, budget, priors, save_plan)
    elif _side_by_side(rows, run):
        if save_plan is not None:
            run_ids = list(dict.fromkeys(r.run_id for r in rows))
            ids = ", ".join(run_ids[:3]) + (", ..." if len(run_ids) > 3 else "")
            raise MarginalError(
                f"--save-plan needs one run, and {db} holds {len(rows)} blended runs side by side "
                f"({ids}); name one with --run RUN_ID"
            )
        render_blend(rows, out, title=f"{db}: {len(rows)} blended runs")
        out.print("[dim]name one with --run RUN_ID for its full analysis[/]")
        result = {"blend": [r.to_dict() for r in rows]}
    else:
        pool = _sub(load_pool(db, run, failed=failed), priors)
        a = settings.analyze(pool, budget)
        render_analysis(a, out)
        rows = [r for r in rows if r.run_id == pool.run_id]
        render_blend(rows, out)
        result = {**a.to_dict(), **({"blend": [r.to_dict() for r in rows]} if rows else {})}
        if save_plan is not None:
            _save_plan(db, a, settings, save_plan, priors is not None)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1) + "\n")
        out.print(plain(f"wrote {json_out}"))


def _sub(pool, priors):
    from ..analysis import sub_bank

    return pool if priors is None else sub_bank(pool, priors)


def _default_budget(pool, budget: int | None) -> int:
    return min(pool.max_budget, DEFAULT_MAX_BUDGET) if budget is None else budget


def _plan_budgets(budget: int) -> list[int]:
    return sorted({b for b in (2**i for i in range(1, 12)) if b <= budget} | {budget})


def _stored_run(db: Path, run_id: str | None) -> RunConfig:
    from ..store import Store

    store = Store(db, readonly=True)
    try:
        return RunConfig.from_store(store, run_id or store.only_run())
    finally:
        store.close()


def _write_plan(db: Path, pool, splits, path: Path, priors) -> None:
    from ..policies import SplitPlan

    stored = _stored_run(db, pool.run_id)
    SplitPlan(stored.task.name, stored.model, splits, None if priors is None else tuple(priors)).save(path)
    named = "" if priors is None else f" on priors {','.join(priors)}"
    out.print(plain(f"wrote {path}{named}: " + ", ".join(f"B={b}: K={k} x M={m}" for b, (k, m) in splits.items())))


def _save_plan(db: Path, a, settings: AnalysisSettings, path: Path, named: bool = False) -> None:
    """The planner's held-out-checked choice at each power-of-two budget up to the analysis' budget
    (``named``: the pool is a sub-bank, so the plan names its priors)."""
    from ..analysis import plan

    pool = a.pool
    if a.plan is None:
        labelled = 0 if a.label_free else int(pool.labelled.sum())
        raise MarginalError(
            f"--save-plan: the planner needs at least 2 problems with a reference answer to "
            f"calibrate and test on; {db} has {labelled}"
        )
    splits = {b: plan(pool, b, split=settings.split, seed=settings.seed).choice for b in _plan_budgets(a.budget)}
    _write_plan(db, pool, splits, path, pool.priors if named else None)


def _select(pool, db: Path, k: int, settings: AnalysisSettings, budget, priors, save_plan) -> dict:
    """``--select-bank K``: print the selection (and save its plan); returns its JSON form."""
    from ..analysis import select_bank
    from .bank import render_selection, selected_plan

    pool = _sub(pool, priors)
    b = _default_budget(pool, budget)
    sel = select_bank(pool, k, b, seed=settings.seed, reps=settings.reps)
    render_selection(sel, out)
    result = {"select_bank": sel.to_dict()}
    if save_plan is not None:
        _stored_run(db, pool.run_id)  # refuse a pool that names no task and model before the work
        chosen, splits = selected_plan(
            pool, k, b, _plan_budgets(b), split=settings.split, seed=settings.seed, reps=settings.reps
        )
        out.print(plain(f"selected on all {len(sel.halves[0]) + len(sel.halves[1])} problems: {','.join(chosen)}"))
        _write_plan(db, pool, splits, save_plan, chosen)
        result["select_bank"]["plan_priors"] = list(chosen)
    return result


def report_files(
    dbs: list[Path],
    html: Path,
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    budget: int | None = None,
    run: str | None = None,
    priors: str | Sequence[str] | None = None,
) -> Path:
    """Write the HTML report of the runs in ``dbs`` (side by side) to ``html``; returns its path
    (``priors``: the sub-bank of each run, in order)."""
    from ..analysis import load_pool
    from ..analysis.blend import blend_rows
    from ..report import write_report

    check_positive("--budget", budget)
    analyses, names, blended = [], [], []
    for db in dbs:
        rows = blend_rows(db)
        blended += rows
        if _side_by_side(rows, run):
            continue  # blended runs side by side: the blend section only
        analyses.append(settings.analyze(_sub(load_pool(db, run), priors), budget))
        names.append(str(db))
    path = write_report(analyses, html, names=names, blend=blended)
    out.print(plain(f"wrote {path} ({path.stat().st_size // 1024} KiB)"))
    return path


def analyze(
    db: Path = typer.Argument(..., help="a run database written by `marginal run`"),
    run: str | None = typer.Option(None, "--run", help="run id, when the file holds several"),
    budget: int | None = typer.Option(
        None, "--budget", "-B", help="samples per problem (default: the largest the pool supports, at most 64)"
    ),
    split: float = typer.Option(0.5, "--split", help="calibration share of problems for the planner and weights"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, bootstrap and Monte Carlo"),
    ties: str = typer.Option("split", "--ties", help="split: 1/|T| credit for a tie with gold; strict: 0"),
    replace: bool = typer.Option(
        False, "--replace", help="draw samples with replacement (bootstrap) instead of subsampling"
    ),
    method: str = typer.Option("auto", "--method", help="auto | exact | mc"),
    failed: str = typer.Option("abstain", "--failed", help="abstain: failed samples use budget; drop: removed"),
    reps: int = typer.Option(128, "--reps", help="Monte Carlo replicates where exact is too large"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the numbers as JSON"),
    save_plan: Path | None = typer.Option(
        None,
        "--save-plan",
        help="write the planner's (K, M) for budgets 2, 4, 8, ... up to B (with --select-bank, on the selected "
        "priors), for `--policy planned`",
    ),
    priors: str | None = typer.Option(None, "--priors", help="analyse the sub-bank of these priors, in order: a,b,c"),
    select_bank: int | None = typer.Option(
        None,
        "--select-bank",
        help="choose K priors greedily on half the problems, scored on the other half (both ways), "
        "against bank order and all priors",
    ),
) -> None:
    """Accuracy of every (K priors x M samples) split, margins, drift regime and the planner's choice."""
    check_positive("--budget", budget)
    settings = AnalysisSettings(split, seed, ties, replace, method, reps)
    analyze_file(
        db,
        settings,
        budget=budget,
        run=run,
        failed=failed,
        json_out=json_out,
        save_plan=save_plan,
        priors=priors,
        select_bank=select_bank,
    )


def report(
    dbs: list[Path] = typer.Argument(..., help="one or more run databases (shown side by side)"),
    html: Path = typer.Option(Path("report.html"), "--html", help="the HTML file to write"),
    run: str | None = typer.Option(None, "--run", help="run id, when a file holds several"),
    budget: int | None = typer.Option(
        None, "--budget", "-B", help="samples per problem (default: each pool's largest, at most 64)"
    ),
    split: float = typer.Option(0.5, "--split", help="calibration share of problems"),
    seed: int = typer.Option(0, "--seed"),
    method: str = typer.Option("auto", "--method", help="auto | exact | mc"),
    reps: int = typer.Option(128, "--reps"),
    priors: str | None = typer.Option(None, "--priors", help="report the sub-bank of these priors, in order: a,b,c"),
) -> None:
    """Write a self-contained HTML report (plots embedded) for one or more runs."""
    check_positive("--budget", budget)
    settings = AnalysisSettings(split, seed, method=method, reps=reps)
    report_files(dbs, html, settings, budget=budget, run=run, priors=priors)


__all__ = ["DEFAULT_MAX_BUDGET", "AnalysisSettings", "analyze", "analyze_file", "report", "report_files"]
