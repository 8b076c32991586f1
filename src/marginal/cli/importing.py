"""The ``marginal import`` command: samples generated elsewhere stored as a native pool.

Registered as `marginal import` in `marginal.cli.app`. A bad row raises
`MarginalError`, which the CLI prints as one line with exit code 2. Left out: everything
but option parsing (see ``marginal.importer``).
"""

from __future__ import annotations

from pathlib import Path

import typer


def import_cmd(
    file: Path = typer.Argument(
        ..., help="JSON Lines: one row per (question, prior) with 'samples' (texts) or 'answers'"
    ),
    task: str = typer.Option(
        ...,
        "--task",
        "-t",
        help="how texts are extracted and graded: a task name (gsm8k, math500, "
        "gpqa-diamond, humaneval, jsonl:PATH), or jsonl with --grader",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="the new pool (.db) to write"),
    grader: str | None = typer.Option(
        None, "--grader", help="with --task jsonl: numeric | exact | math | choice | code"
    ),
    model: str = typer.Option("imported", "--model", help="what generated the samples (stored with the run)"),
) -> None:
    """Import samples generated elsewhere; analyze, report, replay and export then work on the pool."""
    from ..importer import import_jsonl

    typer.echo(import_jsonl(file, task, grader, out=out, model=model).describe())
