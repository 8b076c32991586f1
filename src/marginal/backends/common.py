"""Plumbing every backend shares, written once.

- `check_prompt`: a prompt must be non-empty and leave room to generate in
  its engine's context (a MarginalError naming the prompt, its length and the
  limit otherwise).
- `prepare_prompts`: tokenize and check each prompt of a call; a prompt that
  fails (too long, a chat template that raises) gets ``spec.n`` error
  completions and the others go on.
- `find_stop`: where the first stop string begins in a completion's text.
- `error_completion` / `failure_message`: a failed completion
  (``finish_reason="error"``, ``error`` set, seeded like the one it replaces).
- `Counters` and `Counted`: the work counters behind a backend's ``stats``
  dataclass, with ``reset_stats`` and wall-time measuring.
- `Lifecycle`: ``close()`` on ``with`` exit and on garbage collection
  (``close`` must be idempotent); `ensure_open` for calls after ``close``.
- `render_plain`: how a chat is rendered for a model without a chat template.

Left out: anything about how an engine schedules, batches or samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from typing import Any, Generic, TypeVar

from ..errors import MarginalError
from ..types import Chat, Completion, Prompt, SampleSpec, prompt_key

C = TypeVar("C", bound=Completion)
S = TypeVar("S")
T = TypeVar("T")


def render_plain(chat: Chat) -> str:
    """The fallback rendering of a chat for models without a chat template: the
    system text (if any), then ``User: ...`` / ``Assistant: ...`` turns separated
    by blank lines, ending with ``Assistant:``."""
    parts: list[str] = []
    for m in chat.messages:
        if m.role == "system":
            parts.append(m.content)
        elif m.role == "user":
            parts.append(f"User: {m.content}")
        else:
            parts.append(f"Assistant: {m.content}")
    parts.append("Assistant:")
    return "\n\n".join(parts)


def check_prompt(
    index: int, tokens: Sequence[int], limit: int, *, context: str, hint: str, room: int = 1, who: str = ""
) -> None:
    """MarginalError unless prompt ``index`` has tokens and leaves at least ``room``
    of the ``limit`` tokens of its context to generate.

    ``context`` names the limit ("the context of n_ctx=4096"), ``hint`` the way
    out ("shorten it or raise n_ctx"), ``who`` the model when there are several
    (" for guide m").
    """
    if not tokens:
        raise MarginalError(f"prompt {index} is empty after tokenization{who}")
    if limit - len(tokens) < room:
        raise MarginalError(
            f"prompt {index} has {len(tokens)} tokens{who}, which leaves no room to generate in {context}; {hint}"
        )


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int:
    """Where the first stop string begins in ``text`` at or after ``start``; -1 when none does."""
    cut = -1
    for st in stops:
        k = text.find(st, start)
        if k >= 0 and (cut < 0 or k < cut):
            cut = k
    return cut


def failure_message(e: BaseException) -> str:
    """The ``error`` text of a completion that failed with ``e``."""
    return str(e) if isinstance(e, MarginalError) else f"{type(e).__name__}: {e}"


def error_completion(message: str, seed: int, prompt_tokens: int = 0, kind: type[C] = Completion) -> C:  # type: ignore[assignment]
    """A failed completion of type ``kind`` (a Completion subclass whose other fields have defaults)."""
    return kind("", (), 0.0, "error", prompt_tokens, 0, seed=seed, error=message)


def failed_prompt(message: str, prompt: Prompt, spec: SampleSpec, kind: type[C] = Completion) -> list[C]:  # type: ignore[assignment]
    """The ``spec.n`` error completions of a prompt, each with the seed its completion would have had."""
    key = prompt_key(prompt)
    return [error_completion(message, spec.sequence_seed(key, j), 0, kind) for j in range(spec.n)]


def prepare_prompts(
    prompts: Sequence[Prompt],
    spec: SampleSpec,
    prepare: Callable[[int, Prompt], T],
    kind: type[C] = Completion,  # type: ignore[assignment]
) -> tuple[list[T | None], list[list[C | None]]]:
    """``prepare(i, prompt)`` (tokenize and check) for each prompt, and the call's results table.

    A prompt whose ``prepare`` raises gets its row of error completions (the
    exception's message) and None as its prepared value; the other rows are
    left to fill (None).
    """
    ready: list[T | None] = []
    results: list[list[C | None]] = [[None] * spec.n for _ in prompts]
    for i, prompt in enumerate(prompts):
        try:
            ready.append(prepare(i, prompt))
        except Exception as e:  # template errors, too-long prompts: this prompt only
            results[i] = list(failed_prompt(failure_message(e), prompt, spec, kind))
            ready.append(None)
    return ready, results


def filled(results: Sequence[Sequence[C | None]]) -> list[list[C]]:
    """The results table once every cell holds a completion."""
    assert all(c is not None for row in results for c in row)
    return [[c for c in row if c is not None] for row in results]


class Counters(dict[str, Any], Generic[S]):
    """Work counters named by the fields of a stats dataclass ``kind`` (each starts at its default)."""

    def __init__(self, kind: type[S]) -> None:
        super().__init__()
        self.kind = kind
        self.reset()

    def reset(self) -> None:
        for f in fields(self.kind):  # type: ignore[arg-type]
            self[f.name] = f.default

    def snapshot(self) -> S:
        return self.kind(**self)

    @contextmanager
    def timed(self, name: str = "seconds") -> Iterator[None]:
        """Add the wall time of the block to counter ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] += time.perf_counter() - t0


class Counted(Generic[S]):
    """``stats`` and ``reset_stats`` over a backend's ``_counters``."""

    _counters: Counters[S]

    @property
    def stats(self) -> S:
        """A snapshot of the work done since the backend was created (or ``reset_stats``)."""
        return self._counters.snapshot()

    def reset_stats(self) -> None:
        self._counters.reset()


class Lifecycle:
    """``with backend:`` closes it on exit, and so does garbage collection; ``close`` is the subclass's."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with suppress(Exception):  # half-built objects, interpreter shutdown
            self.close()


def ensure_open(handle: object, what: str) -> None:
    """MarginalError when a backend's engine ``handle`` is gone (``close`` was called)."""
    if handle is None:
        raise MarginalError(f"the {what} is closed")
