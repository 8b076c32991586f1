"""`marginal priors`: list a task's prior bank (registered on cli.app).

Shows each prior's name, description and the chat it renders for an example
question (the task's first problem; a made-up question for tasks whose rows
must not be shown, such as GPQA). Left out: editing banks from the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from .cli import app

_PLACEHOLDER = ("Which particle mediates the electromagnetic force?\n\n"
                "A) Gluon\nB) Photon\nC) W boson\nD) Graviton")


@app.command("priors")
def priors_cmd(
    task: str = typer.Argument(..., help="gsm8k, math500, gpqa-diamond, humaneval or jsonl:PATH"),
    priors_file: Optional[Path] = typer.Option(None, "--priors-file", help="a YAML bank to list instead of the built-in one"),
    data: Optional[Path] = typer.Option(None, "--data", help="data file or folder (else $MARGINAL_DATA, then the hub)"),
    grader: Optional[str] = typer.Option(None, "--grader", help="jsonl:PATH only: numeric|exact|math|choice|code"),
    question_field: str = typer.Option("question", "--question-field", help="jsonl:PATH only"),
    answer_field: str = typer.Option("answer", "--answer-field", help="jsonl:PATH only"),
    full: bool = typer.Option(False, "--full", help="show few-shot turns in full"),
) -> None:
    """List a bank of priors with each prior's rendered example prompt."""
    from .priors import load_bank
    from .tasks import load_task

    t = load_task(task, data=data, grader=grader, question_field=question_field, answer_field=answer_field)
    bank = load_bank(priors_file) if priors_file is not None else t.bank()
    probs = t.problems()
    if not probs or probs[0].meta.get("redact"):
        question, shown = _PLACEHOLDER, "a made-up example (this task's rows are not shown)"
    else:
        question, shown = probs[0].question, f"problem {probs[0].id}"
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"[bold]{escape(t.name)}[/]: {len(bank)} priors "
              f"({'from ' + escape(str(priors_file)) if priors_file else 'built-in'}); example question: {shown}\n")
    for i, p in enumerate(bank, 1):
        extra = f" [dim](model {escape(p.model)})[/]" if p.model else ""
        out.print(f"[bold cyan]{i:>2}. {escape(p.name)}[/]{extra}  [dim]{escape(p.description)}[/]")
        msgs = p.render(question).messages
        n_shot = 2 * len(p.fewshot)
        first_shot = 1 if p.system else 0
        for k, m in enumerate(msgs):
            text = m.content
            if not full and first_shot <= k < first_shot + n_shot and len(text) > 160:
                text = text[:160].rstrip() + " ..."
            body = "\n".join("      " + ln for ln in text.splitlines() or [""])
            out.print(f"    [magenta]{m.role}:[/]\n{escape(body)}")
        out.print()
