"""HumanEval (164 Python functions) and ``--grader code``: run candidates in
the sandbox; vote on behaviour, grade on the tests.

Canonical answer: a behaviour signature, ``sig:<16 hex>``, the hash of the
candidate's outputs (floats to 10 significant digits, exceptions by type) on
the inputs of the prompt's docstring examples (``f(1, 2)`` calls that are
literals) and the inputs the test's ``check`` passes to the function (recorded
by running ``check`` on the reference solution, with ``random`` seeded), so
programs that behave alike vote together. Pass/fail of ``check(candidate)``
is measured in the same sandboxed run and remembered per (problem, signature)
for `grade`; it never enters the vote. Without a reference solution (user
JSONL rows may lack one) the recorded inputs are those of ``check(candidate)``
up to its first failure.

Code is found by the `code_chain` of the entry point: the last fenced block
that defines the entry point (else the longest block, else an unterminated
fence, else the whole text); a completion that defines the function is run
after the prompt's header (imports and helpers), otherwise it is treated as
the body that continues the prompt.

Left out: ``grade`` of a signature never seen in this process returns None
(re-grading a stored pool means re-running its code), and per-call timeouts
(one slow input times out the whole candidate).
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import MarginalError
from ..sandbox import Limits, RunResult, run_many
from ..types import Prior, Problem
from . import data as _data
from .banks import code_bank
from .base import Extraction
from .chain import NO_ANSWER, Chain, Step

_FENCE = re.compile(r"```[ \t]*(?:python3?|py|Python)?[^\n`]*\n(.*?)```", re.S)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:python3?|py|Python)?[^\n`]*\n(.*)$", re.S)


@lru_cache(maxsize=1024)
def _defines(entry_point: str) -> re.Pattern[str]:
    return re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.M)


@lru_cache(maxsize=1024)
def code_chain(entry_point: str) -> Chain[str]:
    """The chain that finds the code of a completion for ``entry_point`` (see the module docstring).

    Steps: ``fence-def`` (the last fenced block that defines the entry point),
    ``fence-longest`` (else the longest fenced block), ``open-fence`` (else the
    body of a fence cut by max_tokens), ``whole-text`` (else the text, when it
    is not blank). Its ``canonicalize`` keeps the code as it is: the canonical
    answer of code is its behaviour signature, computed in batch by
    `CodeGrader.extract_batch`, which calls only `Chain.find`.
    """
    defines = _defines(entry_point)

    def fence_def(text: str) -> str | None:
        with_def = [b for b in _FENCE.findall(text) if defines.search(b)]
        return with_def[-1] if with_def else None

    def fence_longest(text: str) -> str | None:
        blocks = _FENCE.findall(text)
        return max(blocks, key=len) if blocks else None

    def open_fence(text: str) -> str | None:
        m = _OPEN_FENCE.search(text)
        return m.group(1) if m else None

    return Chain(
        f"code:{entry_point}",
        (
            Step("fence-def", fence_def),
            Step("fence-longest", fence_longest),
            Step("open-fence", open_fence),
            Step("whole-text", lambda text: text if text.strip() else None),
        ),
        canonicalize=lambda code: code,
    )


def program_of(code: str, prompt: str, entry_point: str) -> str:
    """The program to run for extracted ``code``: after the prompt's header when it defines the
    function, else the prompt followed by the code as the function's body."""
    defines = _defines(entry_point)
    if defines.search(code):
        m = defines.search(prompt)
        header = prompt[: m.start()] if m else ""
        return header + "\n" + code.strip("\n") + "\n"
    return prompt + code


def extract_code(text: str, prompt: str, entry_point: str) -> str:
    """The program to run for a completion (see the module docstring)."""
    hit = code_chain(entry_point).find(text)
    return program_of(hit[1] if hit else text, prompt, entry_point)


def doctest_inputs(prompt: str, entry_point: str) -> list[str]:
    """Source text ``(a, b,)`` of the literal argument tuples of ``entry_point(...)`` calls in the prompt."""
    out: list[str] = []
    for m in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\s*\(", prompt):
        depth, i = 1, m.end()
        while i < len(prompt) and depth:
            depth += {"(": 1, ")": -1}.get(prompt[i], 0)
            i += 1
        if depth:
            continue
        try:
            call = ast.parse(prompt[m.start() : i].strip(), mode="eval").body
        except SyntaxError:
            continue
        if not isinstance(call, ast.Call) or call.keywords:
            continue
        try:
            src = "(" + "".join(ast.unparse(a) + ", " for a in call.args) + ")"
            ast.literal_eval(src)
        except (ValueError, SyntaxError, TypeError, RecursionError):
            continue
        if src not in out:
            out.append(src)
    return out


DRIVER = r"""
import ast as _ast, copy as _copy, hashlib as _hashlib, json as _json, math as _math, random as _random, re as _re
EP, TEST, REF, DOC = {ep!r}, {test!r}, {ref!r}, {doc!r}
ns = __ns__
cand = ns.get(EP)
if not callable(cand):
    raise NameError("the code defines no function " + repr(EP))

def norm(x, depth=0):
    if depth > 20:
        return "deep"
    if isinstance(x, bool) or x is None or isinstance(x, (int, str, bytes)):
        return repr(x)
    if isinstance(x, float):
        return "f:" + (repr(x) if not _math.isfinite(x) else format(x, ".10g"))
    if isinstance(x, complex):
        return "c:" + format(x.real, ".10g") + "," + format(x.imag, ".10g")
    if isinstance(x, (list, tuple)):
        return [type(x).__name__] + [norm(v, depth + 1) for v in x]
    if isinstance(x, dict):
        return ["dict"] + sorted(([norm(k, depth + 1), norm(v, depth + 1)] for k, v in x.items()), key=repr)
    if isinstance(x, (set, frozenset)):
        return ["set"] + sorted((norm(v, depth + 1) for v in x), key=repr)
    if hasattr(x, "__next__"):
        items = []
        for v in x:
            items.append(norm(v, depth + 1))
            if len(items) >= 1000:
                break
        return ["iter"] + items
    return "o:" + type(x).__name__ + ":" + _re.sub(r" at 0x[0-9a-f]+", "", repr(x))[:200]

inputs = [(_ast.literal_eval(s), {{}}) for s in DOC]

def recording(fn, calls):
    def rec(*a, **k):
        calls.append((_copy.deepcopy(a), _copy.deepcopy(k)))
        return fn(*a, **k)
    return rec

def fresh_check(base):
    tns = dict(base)  # the official harness runs the test in the program's namespace
    exec(TEST, tns)
    return tns["check"]

if REF is not None:
    rns = {{"__name__": "reference"}}
    exec(REF, rns)
    calls = []
    _random.seed(0)
    try:
        fresh_check(rns)(recording(rns[EP], calls))
    except Exception:
        pass
    inputs += calls[:2000]

own_calls = []
check = fresh_check(ns)
_random.seed(0)
why = None
try:
    check(recording(cand, own_calls) if REF is None else cand)
    passed = True
except AssertionError:
    passed, why = False, "assertion"
except Exception as e:
    passed, why = False, type(e).__name__
if REF is None:
    inputs += own_calls[:2000]

sig = []
for a, k in inputs:
    _random.seed(0)
    try:
        sig.append(norm(cand(*_copy.deepcopy(a), **_copy.deepcopy(k))))
    except Exception as e:
        sig.append(["!", type(e).__name__])
digest = _hashlib.blake2b(_json.dumps(sig, sort_keys=True).encode(), digest_size=8).hexdigest()
__report__({{"sig": digest, "n": len(sig), "passed": passed, "why": why}})
"""


def _reason(r: RunResult) -> str:
    if r.status == "error":
        return "crash: " + (r.reason or "error")[len("error: ") :]
    if r.status == "timeout":
        return "timeout"
    return r.reason or r.status


@dataclass(frozen=True)
class CodeJob:
    """One candidate to run: the extraction step that found its code, the program and the driver."""

    step: str
    program: str
    driver: str


class CodeGrader:
    """Behaviour signatures and test results of candidate programs, run in the sandbox."""

    def __init__(self, limits: Limits | None = None, workers: int | None = None) -> None:
        self.limits = limits or Limits(timeout=6.0)
        self.workers = workers
        self._passed: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def job(self, text: str, problem: Problem) -> CodeJob | Extraction:
        """The sandbox job of a completion, or an Extraction that says why there is none."""
        meta = problem.meta
        ep, prompt = meta["entry_point"], meta.get("prompt", problem.question)
        hit = code_chain(ep).find(text)
        if hit is None:
            return Extraction(None, NO_ANSWER)
        step, code = hit
        program = program_of(code, prompt, ep)
        try:
            compile(program, "program.py", "exec")
        except SyntaxError as e:
            return Extraction(None, f"unparseable: SyntaxError line {e.lineno}: {e.msg}", step=step)
        except (ValueError, RecursionError, MemoryError) as e:
            return Extraction(None, f"unparseable: {type(e).__name__}", step=step)
        canon = meta.get("canonical_solution")
        ref = prompt + canon if isinstance(canon, str) else None
        driver = DRIVER.format(ep=ep, test=meta["test"], ref=ref, doc=doctest_inputs(prompt, ep))
        return CodeJob(step, program, driver)

    def extract_batch(self, items: Sequence[tuple[str, Problem]]) -> list[Extraction]:
        out: list[Extraction | None] = [None] * len(items)
        jobs: list[CodeJob] = []
        where: list[int] = []
        for i, (text, problem) in enumerate(items):
            j = self.job(text, problem)
            if isinstance(j, Extraction):
                out[i] = j
            else:
                jobs.append(j)
                where.append(i)
        runs = run_many([(j.program, j.driver) for j in jobs], self.limits, self.workers)
        for i, j, r in zip(where, jobs, runs):
            rep = r.report if isinstance(r.report, dict) else None
            if not r.ok or rep is None or not isinstance(rep.get("sig"), str):
                out[i] = Extraction(None, _reason(r) if not r.ok else "crash: no report", step=j.step)
                continue
            answer = f"sig:{rep['sig']}"
            with self._lock:
                self._passed.setdefault((items[i][1].id, answer), bool(rep.get("passed")))
            out[i] = Extraction(answer, step=j.step)
        return [e if e is not None else Extraction(None, "crash: lost") for e in out]

    def extract(self, text: str, problem: Problem) -> Extraction:
        return self.extract_batch([(text, problem)])[0]

    def grade(self, answer: str, problem: Problem) -> bool | None:
        """Whether the candidates with this signature passed the tests (None: not run in this process)."""
        with self._lock:
            return self._passed.get((problem.id, answer))


class HumanEval:
    """HumanEval (see the module docstring); ids are the ``task_id`` (``HumanEval/0``)."""

    name = "humaneval"

    def __init__(
        self, data: str | Path | None = None, limits: Limits | None = None, workers: int | None = None
    ) -> None:
        rows, self.source = _data.resolve(_data.HUMANEVAL, data)
        probs = []
        for i, r in enumerate(rows):
            try:
                meta: dict[str, Any] = {k: r[k] for k in ("prompt", "entry_point", "test", "canonical_solution")}
            except KeyError as e:
                raise MarginalError(f"{self.source}: row {i + 1} lacks HumanEval field {e}") from None
            probs.append(Problem(id=str(r["task_id"]), question=r["prompt"], answer=r["canonical_solution"], meta=meta))
        self._problems = probs
        self.grader = CodeGrader(limits, workers)

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def bank(self) -> list[Prior]:
        return code_bank()

    def extract(self, text: str, problem: Problem) -> Extraction:
        return self.grader.extract(text, problem)

    def extract_batch(self, items: Sequence[tuple[str, Problem]]) -> list[Extraction]:
        return self.grader.extract_batch(items)

    def grade(self, answer: str, problem: Problem) -> bool | None:
        return self.grader.grade(answer, problem)
