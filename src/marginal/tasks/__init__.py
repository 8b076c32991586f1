"""Tasks: benchmarks and user data, prompts, answer extraction, grading.

``load_task(name)`` maps a CLI name to a `Task` through the `TASKS` table:
``gsm8k``, ``math500``, ``gpqa-diamond``, ``humaneval`` or ``jsonl:PATH``
(an entry whose name ends in ``:PATH`` takes the rest of the name as its
argument). User JSONL data picks its answer family from the `GRADERS` table.
Data files are resolved by `marginal.tasks.data`. Left out: few-shot
selection per problem (priors are fixed per run) and remote-code tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MarginalError
from ..registry import Registry
from .base import Extraction, Task, extract_all
from .chain import Chain, Step
from .graders import GRADERS


@dataclass(frozen=True)
class TaskOptions:
    """What `load_task` passes to a task factory (the user-data fields apply to ``jsonl:PATH`` only)."""

    data: str | Path | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    grader: str | None = None
    seed: int = 0

    def sets_user_fields(self) -> bool:
        return self.grader is not None or self.question_field != "question" or self.answer_field != "answer"


TaskFactory = Callable[[str, TaskOptions], Task]
"""(the argument after ``name:`` of a ``:PATH`` entry, else ''; the options) -> the task."""


def _gsm8k(arg: str, o: TaskOptions) -> Task:
    from .gsm8k import GSM8K

    return GSM8K(o.data)


def _math500(arg: str, o: TaskOptions) -> Task:
    from .math import MATH500

    return MATH500(o.data)


def _gpqa(arg: str, o: TaskOptions) -> Task:
    from .gpqa import GPQADiamond

    return GPQADiamond(o.data, seed=o.seed)


def _humaneval(arg: str, o: TaskOptions) -> Task:
    from .humaneval import HumanEval

    return HumanEval(o.data)


def _jsonl(path: str, o: TaskOptions) -> Task:
    from .jsonl import JsonlTask

    if not path:
        raise MarginalError("task 'jsonl:' needs a path, e.g. jsonl:data/my.jsonl")
    return JsonlTask(path, question_field=o.question_field, answer_field=o.answer_field, grader=o.grader)


TASKS: Registry[TaskFactory] = Registry("task")
TASKS.add("gsm8k", _gsm8k, "GSM8K test: 1319 grade-school word problems; numeric answers")
TASKS.add("math500", _math500, "MATH500: 500 competition problems; LaTeX answers, equivalence by math-verify")
TASKS.add(
    "gpqa-diamond", _gpqa, "GPQA Diamond: 198 graduate-level multiple-choice questions (options shuffled per seed)"
)
TASKS.add("humaneval", _humaneval, "HumanEval: 164 Python functions; vote on behaviour, grade by running the tests")
TASKS.add("jsonl:PATH", _jsonl, "your JSON Lines file, one problem per line; --grader " + GRADERS.choices())

TASK_NAMES = TASKS.names()
"""The task names, in table order (kept for callers of the old tuple; the table is `TASKS`)."""


def _resolve(name: str) -> tuple[TaskFactory, str] | None:
    """(factory, argument) of a ``prefix:ARG`` name whose ``prefix:PATH`` entry exists, else None."""
    for entry in TASKS:
        prefix, sep, _ = entry.name.partition(":")
        if sep and name.startswith(prefix + ":"):
            return entry.value, name[len(prefix) + 1 :]
    return None


def load_task(
    name: str,
    *,
    data: str | Path | None = None,
    question_field: str = "question",
    answer_field: str = "answer",
    grader: str | None = None,
    seed: int = 0,
) -> Task:
    """The task called ``name`` with its data resolved (a `MarginalError` names every place tried).

    ``question_field``, ``answer_field`` and ``grader`` apply to ``jsonl:PATH``
    only; ``seed`` shuffles GPQA's options (deterministic per problem and seed).
    """
    opts = TaskOptions(data, question_field, answer_field, grader, seed)
    hit = _resolve(name)
    if hit is not None:
        factory, arg = hit
        return factory(arg, opts)
    if opts.sets_user_fields():
        raise MarginalError(f"--grader/--question-field/--answer-field apply to jsonl:PATH tasks only, not {name!r}")
    return TASKS.get(name)("", opts)


__all__ = [
    "GRADERS",
    "TASKS",
    "TASK_NAMES",
    "Chain",
    "Extraction",
    "Step",
    "Task",
    "TaskFactory",
    "TaskOptions",
    "extract_all",
    "load_task",
]
