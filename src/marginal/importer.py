"""Import samples generated elsewhere (an API, a vLLM cluster) as a native run, so that
``load_pool``, analyze, report, replay and export work on them.

Input: JSON Lines, one row per (question, prior)::

    {"question": "...", "answer": "42", "prior": "teacher", "samples": ["... so the answer is 42", ...]}
    {"question": "...", "answer": "42", "answers": ["42", "41", null]}

- ``question`` (required, a non-empty string); ``answer``: the gold answer
  (optional; a string or number); ``prior``: the prior's name (default
  ``default``); optional ``id``: the problem id (default ``<file stem>/<n>``,
  n counting problems in order of first appearance); for the code grader
  ``entry_point`` and ``test`` (optional ``canonical_solution``), as in a
  ``jsonl:`` task.
- exactly one of ``samples`` (completion texts, which go through the task's
  extraction and grading, ``extract_all`` and ``task.grade``) and ``answers``
  (canonical answers, stored as given and graded). ``null`` in either is a
  failed sample: stored with its reason, it never votes.
- Rows with the same ``id`` (or, without ids, the same question text) are one
  problem; their ``answer`` fields must agree. A (problem, prior) pair given
  twice is refused.

``task``: a name ``load_task`` knows (``gsm8k``, ``jsonl:PATH`` ...; a row whose
id or question matches one of the task's problems takes that problem's
reference when it gives none, and its metadata, e.g. HumanEval's tests), a
`Task`, or the bare name ``jsonl`` with ``grader`` (numeric, exact, math,
choice, code), which grades with a ``jsonl:`` task built from the file's own
problems. Everything is read, checked and extracted before the output is
opened: a bad row is one `MarginalError` naming ``file:line`` and the field,
and nothing is written. The run is registered with ``open_run`` (task,
model, ``SampleSpec(n=most samples in a row)``, the priors in order of first
appearance with the plain template).

Left out: importing into a file that already holds a run (use a new file),
token counts, timings and seeds (stored as 0), and the prompts (unknown here).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MarginalError, unknown
from .tasks import Task, extract_all, load_task
from .tasks.data import read_jsonl_lines
from .types import Prior, Problem, Sample, SampleSpec

FIELDS = ("question", "answer", "prior", "samples", "answers", "id", "entry_point", "test", "canonical_solution")
CODE_FIELDS = ("entry_point", "test", "canonical_solution")
FAILED_TEXT = "imported as null: no completion"
FAILED_ANSWER = "imported as null: no answer"


@dataclass(frozen=True)
class Row:
    """One checked input row."""

    line: int
    key: str
    """What makes rows one problem: the id, else the question text."""
    id: str | None
    question: str
    answer: str | None
    prior: str
    kind: str
    """samples or answers."""
    values: tuple[str | None, ...]
    extra: dict = field(default_factory=dict, compare=False)
    """Code-grader fields (entry_point, test, canonical_solution) given on the row."""


@dataclass(frozen=True)
class Imported:
    """What an import stored."""

    path: Path
    run_id: str
    problems: int
    priors: tuple[str, ...]
    samples: int
    failed: int
    graded: int
    """Samples with a grade (correct is not NULL)."""

    def describe(self) -> str:
        return (
            f"imported {self.samples} samples ({self.failed} failed, {self.graded} graded) of {self.problems} "
            f"problems x {len(self.priors)} priors into {self.path} (run {self.run_id})"
        )


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) per non-blank line of a JSON Lines file (plain or gzipped)."""
    rows = read_jsonl_lines(path)
    if not rows:
        raise MarginalError(f"{path}: no rows; expected one JSON object per (question, prior)")
    return rows


def _scalar(v: Any, where: str, name: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise MarginalError(f"{where}: field {name!r} must be a string or number, got {type(v).__name__}")
    return v if isinstance(v, str) else str(v)


def parse_row(line: int, obj: dict, where: str) -> Row:
    """Check one row's fields (a `MarginalError` names ``where`` and the field)."""
    for k in obj:
        if k not in FIELDS:
            raise MarginalError(f"{where}: {unknown('field', k, FIELDS)}")
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise MarginalError(f"{where}: field 'question' must be a non-empty string, got {q!r}")
    prior = obj.get("prior", "default")
    if not isinstance(prior, str) or not prior or prior.strip() != prior:
        raise MarginalError(
            f"{where}: field 'prior' must be a non-empty name without spaces at the ends, got {prior!r}"
        )
    kinds = [k for k in ("samples", "answers") if k in obj]
    if len(kinds) != 1:
        raise MarginalError(
            f"{where}: give exactly one of the fields 'samples' (completion texts) and 'answers' "
            f"(canonical answers), got {' and '.join(kinds) or 'neither'}"
        )
    kind = kinds[0]
    vals = obj[kind]
    if not isinstance(vals, list) or not vals:
        raise MarginalError(f"{where}: field {kind!r} must be a non-empty list, got {vals!r:.60}")
    for j, v in enumerate(vals):
        if kind == "samples" and v is not None and not isinstance(v, str):
            raise MarginalError(f"{where}: field 'samples' item {j} must be a string (or null), got {type(v).__name__}")
        if kind == "answers":
            _scalar(v, where, f"answers item {j}")
    values = tuple(v if kind == "samples" or v is None else _scalar(v, where, kind) for v in vals)
    pid = _scalar(obj.get("id"), where, "id")
    extra = {k: obj[k] for k in CODE_FIELDS if obj.get(k) is not None}
    for k, v in extra.items():
        if not isinstance(v, str) or not v.strip():
            raise MarginalError(f"{where}: field {k!r} must be a non-empty string, got {v!r:.60}")
    return Row(
        line,
        pid if pid is not None else q,
        pid,
        q,
        _scalar(obj.get("answer"), where, "answer"),
        prior,
        kind,
        values,
        extra,
    )


@dataclass(frozen=True)
class Entry:
    """One problem of the input, with where it first appears."""

    key: str
    """The rows' key (see `Row.key`)."""
    problem: Problem
    line: int
    named: bool
    """Whether the rows gave its id (else it is ``<file stem>/<n>``)."""


def _merge(p: dict, r: Row, where: str) -> None:
    """Fold a later row of the same problem into ``p`` (its gold and code fields must agree)."""
    if r.question != p["question"]:
        raise MarginalError(
            f"{where}: field 'question' differs from line {p['line']}, which gives the same id {r.id!r}"
        )
    if r.answer is not None and p["answer"] is not None and r.answer != p["answer"]:
        raise MarginalError(
            f"{where}: field 'answer' is {r.answer!r}, but line {p['line']} gives {p['answer']!r} for the same question"
        )
    p["answer"] = p["answer"] if p["answer"] is not None else r.answer
    for k, v in r.extra.items():
        if p["meta"].setdefault(k, v) != v:
            raise MarginalError(f"{where}: field {k!r} differs from an earlier row of the same question")


def group_problems(rows: Sequence[Row], path: str | Path) -> list[Entry]:
    """The problems of the rows in order of first appearance (see the module docstring for the rules)."""
    stem = Path(path).stem
    probs: dict[str, dict] = {}
    pairs: dict[tuple[str, str], int] = {}
    for r in rows:
        where = f"{path}:{r.line}"
        if r.key in probs:
            _merge(probs[r.key], r, where)
        else:
            probs[r.key] = {
                "id": r.id or f"{stem}/{len(probs)}",
                "question": r.question,
                "answer": r.answer,
                "meta": dict(r.extra),
                "line": r.line,
                "named": r.id is not None,
            }
        if (r.key, r.prior) in pairs:
            raise MarginalError(
                f"{where}: field 'prior': {r.prior!r} is given for this question on line "
                f"{pairs[r.key, r.prior]} already; put all its samples in one row"
            )
        pairs[r.key, r.prior] = r.line
    seen: dict[str, int] = {}
    for p in probs.values():
        if p["id"] in seen:
            raise MarginalError(
                f"{path}:{p['line']}: field 'id': {p['id']!r} is also the id of the question on line {seen[p['id']]}"
            )
        seen[p["id"]] = p["line"]
    return [
        Entry(key, Problem(p["id"], p["question"], p["answer"], p["meta"]), p["line"], p["named"])
        for key, p in probs.items()
    ]


def _file_task(entries: Sequence[Entry], grader: str | None, path: str | Path) -> tuple[Task, str, list[Problem]]:
    """A ``jsonl:`` task over the input's own problems (written to a temporary file for `load_task`)."""
    if grader == "code":
        for e in entries:
            for k in ("entry_point", "test"):
                if k not in e.problem.meta:
                    raise MarginalError(
                        f"{path}:{e.line}: --grader code needs the field {k!r} on a row of each question"
                    )
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "problems.jsonl"
        f.write_text(
            "".join(
                json.dumps(
                    {"id": e.problem.id, "question": e.problem.question, "answer": e.problem.answer, **e.problem.meta}
                )
                + "\n"
                for e in entries
            ),
            encoding="utf-8",
        )
        task = load_task(f"jsonl:{f}", grader=grader)
    return task, f"jsonl[{getattr(task, 'grader', grader)}]", task.problems()


def _known(task: Task, entries: Sequence[Entry]) -> list[Problem]:
    """Each problem, completed from the task's own problem with the same id (else question) where there is one:
    its reference when the rows give none, its metadata, and its id when the rows gave no id."""
    known = task.problems()
    by_id, by_q = {p.id: p for p in known}, {p.question: p for p in known}
    out = []
    for e in entries:
        p = e.problem
        k = by_id.get(p.id) if e.named else by_q.get(p.question)
        if k is None:
            out.append(p)
            continue
        out.append(
            Problem(
                p.id if e.named else k.id,
                p.question,
                p.answer if p.answer is not None else k.answer,
                {**k.meta, **p.meta},
            )
        )
    return out


def resolve_task(
    task: str | Task, grader: str | None, entries: Sequence[Entry], path: str | Path
) -> tuple[Task, str, list[Problem]]:
    """The task that extracts and grades, the task name to store, and the problems (see the module docstring)."""
    if isinstance(task, str) and task == "jsonl":
        return _file_task(entries, grader, path)
    if grader is not None and not (isinstance(task, str) and task.startswith("jsonl")):
        raise MarginalError(
            f"--grader applies to the jsonl task only (use --task jsonl --grader {grader}), not {task!r}"
        )
    t = load_task(task, grader=grader) if isinstance(task, str) else task
    return t, t.name, _known(t, entries)


def make_samples(task: Task, rows: Sequence[Row], problems: dict[str, Problem]) -> list[Sample]:
    """The rows' samples, extracted (texts, batched through ``extract_all``) and graded; nulls are failed."""
    texts = [(v, problems[r.key]) for r in rows if r.kind == "samples" for v in r.values if v is not None]
    extracted = iter(extract_all(task, texts))
    out = []
    for r in rows:
        p = problems[r.key]
        for j, v in enumerate(r.values):
            text, answer, error, finish = v or "", v, None, "stop"
            if v is None:
                error, finish = (FAILED_TEXT if r.kind == "samples" else FAILED_ANSWER), "error"
            elif r.kind == "samples":
                ex = next(extracted)
                answer, error = ex.answer, ex.error
            correct = None if answer is None or p.answer is None else task.grade(answer, p)
            out.append(Sample(p.id, r.prior, j, text, answer, correct, error, finish_reason=finish))
    return out


def _check_out(out: Path) -> None:
    """Refuse an output that already holds a run (an import makes a new pool)."""
    if out.is_dir():
        raise MarginalError(f"--out {out} is a directory; expected a new .db file")
    if not out.exists() or out.stat().st_size == 0:
        return
    from .store import Store

    store = Store(out, readonly=True)
    try:
        runs = store.runs()
    finally:
        store.close()
    if runs:
        raise MarginalError(f"{out} already holds a run ({runs[0][0]}); import into a new file")


def import_jsonl(
    path: str | Path,
    task: str | Task,
    grader: str | None = None,
    *,
    out: str | Path,
    model: str = "imported",
    spec: SampleSpec | None = None,
) -> Imported:
    """Read, check, extract and grade the samples of ``path``, then store them as a new run in ``out``.

    ``model`` names what generated them and ``spec`` how (recorded in the run's
    identity; ``n`` becomes the most samples in a row). See the module docstring.
    """
    from dataclasses import replace

    from .runner import RunPlan, open_run
    from .store import Store

    rows = [parse_row(n, obj, f"{path}:{n}") for n, obj in read_rows(path)]
    entries = group_problems(rows, path)
    t, name, problems = resolve_task(task, grader, entries, path)
    by_key = {e.key: p for e, p in zip(entries, problems)}
    samples = make_samples(t, rows, by_key)
    out = Path(out)
    _check_out(out)
    priors = tuple(dict.fromkeys(r.prior for r in rows))
    spec = replace(spec or SampleSpec(), n=max(len(r.values) for r in rows), first_index=0)
    plan = RunPlan(task=name, model=model, spec=spec, priors=tuple(Prior(c) for c in priors), problems=tuple(problems))
    store = Store(out)
    try:
        run_id = open_run(store, plan)
        store.add_samples(run_id, samples)
    finally:
        store.close()
    failed = sum(s.answer is None for s in samples)
    return Imported(
        out, run_id, len(problems), priors, len(samples), failed, sum(s.correct is not None for s in samples)
    )
