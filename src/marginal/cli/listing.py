"""What can run here: `marginal models` (the catalog and how to install each
model) and `marginal priors` (a task's bank, each prior with its rendered prompt).

``priors`` renders each prior's chat for an example question: the task's
first problem, or a made-up question for tasks whose rows must not be shown
(such as GPQA). Left out: editing banks from the CLI.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .common import names, out, task_help

_PLACEHOLDER = "Which particle mediates the electromagnetic force?\n\nA) Gluon\nB) Photon\nC) W boson\nD) Graviton"


def models() -> None:
    """List the models marginal can use, and how to install each."""
    from rich.table import Table

    from ..models import CATALOG, is_available

    t = Table(title="models")
    t.add_column("name", no_wrap=True)
    t.add_column("installed", no_wrap=True)
    t.add_column("model · how to install")
    for e in CATALOG.values():
        t.add_row(
            escape(e.name),
            "yes" if is_available(e) else "no",
            f"{escape(e.title)}, {e.size_mb} MB; {escape(e.note)}\n[dim]{escape(e.install)}[/]",
        )
    out.print(t)
    out.print("Also: any local .gguf path, or hf:owner/repo/file.gguf (downloaded when online).")


def priors(
    task: str = typer.Argument(..., help=task_help()),
    priors_file: Path | None = typer.Option(
        None, "--priors-file", help="a YAML bank to list instead of the built-in one"
    ),
    data: Path | None = typer.Option(None, "--data", help="data file or folder (else $MARGINAL_DATA, then the hub)"),
    grader: str | None = typer.Option(None, "--grader", help=f"jsonl:PATH only: {'|'.join(names('grader'))}"),
    question_field: str = typer.Option("question", "--question-field", help="jsonl:PATH only"),
    answer_field: str = typer.Option("answer", "--answer-field", help="jsonl:PATH only"),
    full: bool = typer.Option(False, "--full", help="show few-shot turns in full"),
) -> None:
    """List a bank of priors with each prior's rendered example prompt."""
    from ..priors import load_bank
    from ..tasks import load_task

    t = load_task(task, data=data, grader=grader, question_field=question_field, answer_field=answer_field)
    bank = load_bank(priors_file) if priors_file is not None else t.bank()
    probs = t.problems()
    if not probs or probs[0].meta.get("redact"):
        question, shown = _PLACEHOLDER, "a made-up example (this task's rows are not shown)"
    else:
        question, shown = probs[0].question, f"problem {probs[0].id}"
    con = Console(highlight=False, soft_wrap=True)
    con.print(
        f"[bold]{escape(t.name)}[/]: {len(bank)} priors "
        f"({'from ' + escape(str(priors_file)) if priors_file else 'built-in'}); example question: {escape(shown)}\n"
    )
    for i, p in enumerate(bank, 1):
        extra = f" [dim](model {escape(p.model)})[/]" if p.model else ""
        con.print(f"[bold cyan]{i:>2}. {escape(p.name)}[/]{extra}  [dim]{escape(p.description)}[/]")
        msgs = p.render(question).messages
        n_shot = 2 * len(p.fewshot)
        first_shot = 1 if p.system else 0
        for k, m in enumerate(msgs):
            text = m.content
            if not full and first_shot <= k < first_shot + n_shot and len(text) > 160:
                text = text[:160].rstrip() + " ..."
            body = "\n".join("      " + ln for ln in text.splitlines() or [""])
            con.print(f"    [magenta]{escape(m.role)}:[/]\n{escape(body)}")
        con.print()


__all__ = ["models", "priors"]
