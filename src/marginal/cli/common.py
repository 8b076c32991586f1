"""What every command module shares: the consoles, the error line, option checks,
file names and the names the help strings list.

Rich reads ``[...]`` in printed strings as markup, so user text (task and model
names, paths, prior names, answers) goes out through `plain` or
`rich.markup.escape`, never into a markup string as is. Left out: the commands
themselves (one module per job, registered by `marginal.cli.app`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.text import Text

from ..config import check_positive

out = Console()
err = Console(stderr=True)


def plain(text: object, style: str = "") -> Text:
    """``text`` as rich renders it literally (no markup), e.g. a table cell or title."""
    return Text(str(text), style=style)


def print_error(message: str) -> None:
    """The one line a `MarginalError` becomes on stderr: 'error: <message>', the message printed as is."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def names(kind: Literal["task", "grader", "policy"]) -> tuple[str, ...]:
    """The names of a name table (tasks, jsonl graders, policies), in table order.

    The one place the CLI reads those tables: help strings are built from it."""
    from .. import policies, tasks
    from ..tasks import jsonl

    if kind == "policy":
        return policies.POLICIES.names()
    return tuple({"task": tasks.TASK_NAMES, "grader": jsonl.GRADERS}[kind])


def task_help() -> str:
    """'gsm8k, math500, ... or jsonl:PATH' for a TASK argument."""
    *first, last = names("task")
    return f"{', '.join(first)} or {last}" if first else last


def slug(model: str) -> str:
    """A file-name-safe short form of a model spec ('qwen2.5-coder-0.5b', 'model' for x/model.gguf)."""
    name = Path(model).stem if model.endswith(".gguf") else model
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def default_run_path(task: str, model: str) -> Path:
    """Where a run goes without --out: runs/TASK-MODEL.db."""
    safe = task.replace(":", "-").replace("/", "_").replace(".", "_")
    return Path("runs") / f"{safe}-{slug(model)}.db"


__all__ = ["check_positive", "default_run_path", "err", "names", "out", "plain", "print_error", "slug", "task_help"]
