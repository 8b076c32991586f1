"""The server's defaults (`ServeConfig`) and what one request asks for (`Resolver` -> `Ask`).

A request's ``marginal`` options (budget, policy, task, priors, threshold) and sampling
fields (max_tokens / max_completion_tokens, temperature, top_p, seed, stop) each fall
back to the server's flag. ``task`` is a task name (``gsm8k``, ``math500``, ...) or a
grader (``numeric|math|choice|exact|code``: a task with that grader's extraction and
bank and no problems of its own); a request cannot name ``jsonl:PATH`` (that would read
the server's files), the server's ``--task`` may. Priors come from ``--priors-file`` when
given, else the task's bank; without ``priors`` a request gets the server's ``--priors``,
else the whole bank. Every bad value is a 400 `APIError` naming the field, with a near
match for names. Tasks are loaded once and kept. Left out: per-request models (the server
serves its ``--model``) and plan files (policy ``planned``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MarginalError, suggest
from ..policies import POLICIES, Policy
from ..priors import load_bank, select_priors
from ..tasks import GRADERS, TASKS
from ..tasks.base import Task
from ..tasks.jsonl import GraderTask
from ..types import Prior, SampleSpec
from .errors import invalid
from .schema import ChatRequest

SERVED_POLICIES = tuple(n for n in POLICIES.names() if n != "planned")


@dataclass(frozen=True)
class ServeConfig:
    """What ``marginal serve`` was started with (each request may override the per-request ones)."""

    model: str = "smollm2-135m"
    task: str = "gsm8k"
    policy: str = "adaptive"
    budget: int = 16
    priors: str | None = None
    """K or 'a,b' names; None: the whole bank."""
    priors_file: Path | None = None
    threshold: float = 0.95
    sampling: SampleSpec = field(default_factory=lambda: SampleSpec(n=1, temperature=0.7, max_tokens=256))
    """The default sampling; its ``max_tokens`` is also the most a request may ask for."""
    max_budget: int = 256
    max_queue: int = 256
    api_key: str | None = None
    store: Path | None = None
    slots: int = 32
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("budget", "max_budget", "max_queue", "slots"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise MarginalError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.budget > self.max_budget:
            raise MarginalError(f"--budget {self.budget} is over --max-budget {self.max_budget}")
        if self.policy not in SERVED_POLICIES:
            raise MarginalError(
                f"--policy {self.policy!r} is not served{suggest(self.policy, SERVED_POLICIES)}; "
                f"expected one of: {', '.join(SERVED_POLICIES)}"
            )
        if not 0 < self.threshold <= 1:
            raise MarginalError(f"--threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class Ask:
    """One request resolved: what its solve runs."""

    task: Task
    priors: tuple[Prior, ...]
    policy: Policy
    policy_name: str
    threshold: float
    budget: int
    spec: SampleSpec


def load_served_task(name: str, *, allow_files: bool) -> Task:
    """A task by name or a grader task by grader name (``jsonl:PATH`` only when ``allow_files``)."""
    from ..tasks import load_task

    if name in GRADERS:
        return GraderTask(name)
    if ":" in name and not allow_files:
        raise MarginalError(f"task {name!r} reads a file on the server; a request names a task or a grader")
    choices = [*TASKS.names(), *GRADERS.names()]
    if ":" not in name and name not in TASKS:
        raise MarginalError(
            f"unknown task {name!r}{suggest(name, choices)}; expected a task or a grader: {', '.join(choices)}"
        )
    return load_task(name)


class Resolver:
    """Turns a request into an `Ask` with the server's defaults (see the module docstring)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._tasks: dict[str, Task] = {}
        self._banks: dict[str, list[Prior]] = {}
        self._lock = threading.Lock()
        self.default_task = self.task(config.task, allow_files=True)
        self.priors(self.default_task, config.priors, "--priors")  # a bad --priors fails at start

    def task(self, name: str, *, allow_files: bool = False) -> Task:
        with self._lock:
            if name not in self._tasks:
                try:
                    self._tasks[name] = load_served_task(name, allow_files=allow_files)
                except MarginalError as e:
                    if allow_files:
                        raise
                    raise invalid(str(e), "marginal.task", "unknown_task") from None
            return self._tasks[name]

    def bank(self, task: Task) -> list[Prior]:
        with self._lock:
            if task.name not in self._banks:
                self._banks[task.name] = load_bank(self.config.priors_file) if self.config.priors_file else task.bank()
            return self._banks[task.name]

    def priors(self, task: Task, spec: int | str | list[str] | None, param: str) -> tuple[Prior, ...]:
        bank = self.bank(task)
        if spec is None:
            return tuple(bank)
        if isinstance(spec, list):
            spec = ",".join(spec)
        try:
            return tuple(select_priors(bank, spec))
        except MarginalError as e:
            raise invalid(str(e).replace("--priors", "priors"), param, "unknown_prior") from None

    def resolve(self, req: ChatRequest) -> Ask:
        from ..config import sample_spec
        from ..session import policy_for

        c, m = self.config, req.marginal
        budget = c.budget if m is None or m.budget is None else m.budget
        if budget < 1:
            raise invalid(f"marginal.budget must be a positive integer, got {budget}", "marginal.budget")
        if budget > c.max_budget:
            raise invalid(
                f"marginal.budget {budget} is over the server's --max-budget {c.max_budget}", "marginal.budget"
            )
        name = c.policy if m is None or m.policy is None else m.policy
        if name not in SERVED_POLICIES:
            raise invalid(
                f"unknown policy {name!r}{suggest(name, SERVED_POLICIES)}; "
                f"expected one of: {', '.join(SERVED_POLICIES)}",
                "marginal.policy",
                "unknown_policy",
            )
        threshold = c.threshold if m is None or m.threshold is None else m.threshold
        if not 0 < threshold <= 1:
            raise invalid(f"marginal.threshold must be in (0, 1], got {threshold}", "marginal.threshold")
        task = self.default_task if m is None or m.task is None else self.task(m.task)
        if m is not None and m.priors is not None:
            priors = self.priors(task, m.priors, "marginal.priors")
        elif task is self.default_task:
            priors = self.priors(task, c.priors, "--priors")
        else:
            priors = tuple(self.bank(task))
        try:
            policy = policy_for(name, budget, len(priors), threshold=threshold)
        except MarginalError as e:
            raise invalid(str(e), "marginal.policy") from None
        limit = req.limit
        if limit is not None and limit < 1:
            param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            raise invalid(f"{param} must be at least 1, got {limit}", param)
        if limit is not None and limit > c.sampling.max_tokens:
            param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            raise invalid(f"{param} {limit} is over the server's --max-tokens {c.sampling.max_tokens}", param)
        settings = {
            "max_tokens": limit,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": req.stop,
        }
        for key, value in settings.items():
            if value is None:
                continue
            try:
                sample_spec(c.sampling, **{key: value})
            except MarginalError as e:
                raise invalid(str(e), key) from None
        spec = sample_spec(c.sampling, **{k: v for k, v in settings.items() if v is not None})
        if spec.greedy and budget > 1:
            raise invalid(
                "temperature 0 gives the same sample every time; a budget over 1 needs temperature > 0", "temperature"
            )
        return Ask(task, priors, policy, name, threshold, budget, spec)


__all__ = ["SERVED_POLICIES", "Ask", "GraderTask", "Resolver", "ServeConfig", "load_served_task"]
