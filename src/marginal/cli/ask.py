"""`marginal ask`: answer one question with a sample budget through `marginal.session.Session`.

Prints the vote shares, the marginal answer, its margin, the regime seen and
why the policy stopped (``--steps``: every decision). An empty question is
bad input. Left out: several questions per call (use `Session.solve_many`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import check_positive, sample_spec
from ..errors import MarginalError
from .common import names, out, plain


def ask(
    question: str = typer.Argument(..., help="the question"),
    task: str = typer.Option("gsm8k", help="how to prompt, extract and vote (a task name)"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="catalog name, .gguf path or hf:repo/file.gguf"),
    budget: int = typer.Option(16, "--budget", "-B", help="most samples to spend"),
    policy: str = typer.Option("adaptive", help="|".join(names("policy"))),
    plan_file: Path | None = typer.Option(None, "--plan", help="plan.json for --policy planned"),
    seed: int = typer.Option(0, help="base seed"),
    max_tokens: int = typer.Option(256, help="most new tokens per sample"),
    temperature: float = typer.Option(0.7, help="sampling temperature"),
    data: Path | None = typer.Option(None, help="dataset file for tasks whose priors need exemplars"),
    show_steps: bool = typer.Option(False, "--steps", help="print every policy decision"),
) -> None:
    """Answer one question with a sample budget: the marginal answer, its margin and the votes."""
    from rich.table import Table

    from ..policies import SplitPlan
    from ..session import Session
    from ..tasks import load_task

    if not question.strip():
        raise MarginalError('the question is empty; expected its text, e.g. marginal ask "What is 17 * 24?"')
    check_positive("--budget", budget)
    spec = sample_spec(n=1, temperature=temperature, max_tokens=max_tokens, seed=seed)
    plan = SplitPlan.load(plan_file) if plan_file else None
    with Session(model, load_task(task, data=data, seed=seed), spec=spec) as s:
        r = s.solve(question, budget=budget, policy=policy, plan=plan)
    t = Table(title=f"votes ({r.used} of {budget} samples)")
    t.add_column("answer")
    t.add_column("share", justify="right")
    for a, share in list(r.shares.items())[:8]:
        t.add_row(plain(a), f"{share:.0%}")
    out.print(t)
    if show_steps:
        for i, d in enumerate(r.decisions):
            out.print(plain(f"  step {i}: {d.reason}"))
    failed = sum(x.failed for x in r.samples)
    answer = r.answer if r.answer is not None else "(none: every sample failed)"
    out.print(
        plain(f"answer: {answer}", "bold"),
        plain(
            f" margin {r.margin:.2f} · regime seen: {r.regime} · stopped: {r.stop_reason}"
            + (f" · {failed} failed samples excluded" if failed else "")
        ),
        sep=" ",
    )


__all__ = ["ask"]
