"""Tasks: benchmarks and user data, prompts, answer extraction, grading.

``load_task(name)`` maps a CLI name to a `Task`: ``gsm8k``, ``math500``,
``gpqa-diamond``, ``humaneval`` or ``jsonl:PATH``. Data files are resolved by
`marginal.tasks.data`. Left out: few-shot selection per problem (priors are
fixed per run) and remote-code tasks.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MarginalError, unknown
from .base import Extraction, Task, extract_all

TASK_NAMES = ("gsm8k", "math500", "gpqa-diamond", "humaneval", "jsonl:PATH")


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
    if name.startswith("jsonl:"):
        from .jsonl import JsonlTask

        path = name[len("jsonl:"):]
        if not path:
            raise MarginalError("task 'jsonl:' needs a path, e.g. jsonl:data/my.jsonl")
        return JsonlTask(path, question_field=question_field, answer_field=answer_field, grader=grader)
    if grader is not None or question_field != "question" or answer_field != "answer":
        raise MarginalError(f"--grader/--question-field/--answer-field apply to jsonl:PATH tasks only, not {name!r}")
    if name == "gsm8k":
        from .gsm8k import GSM8K

        return GSM8K(data)
    if name == "math500":
        from .math import MATH500

        return MATH500(data)
    if name == "gpqa-diamond":
        from .gpqa import GPQADiamond

        return GPQADiamond(data, seed=seed)
    if name == "humaneval":
        from .humaneval import HumanEval

        return HumanEval(data)
    raise unknown("task", name, TASK_NAMES)


__all__ = ["TASK_NAMES", "Extraction", "Task", "extract_all", "load_task"]
