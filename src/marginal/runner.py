"""The runner: problems x priors x M samples -> backend -> store, resumable.

It is the only layer that orchestrates I/O. Each missing (problem, prior)
group is one request to its engine (`marginal.backends.streaming`):
requests stream through a continuously batched engine (llama.cpp) or are
served a batch per call by a blocking one; finished completions are
extracted, graded and committed in transactions of about ``batch_samples``
samples. A killed run therefore loses at most the samples in flight, and
running the same command again generates only the samples that are
missing, with the seeds they would have had (sample i of a prompt always
samples with the seed derived from i).

A run's identity is what decides its samples: task, model, sampling settings
and seed. The number of problems, priors and samples per prior are its
extent, and may grow between invocations (the new samples are added).
Policy runs (``allocate``, ``execute_policy``) live in ``allocate.py`` and
share the groups, requests and extraction here. Multi-worker execution (Ray)
lives in ``distributed.py`` and reuses the batching here (``batches``,
``generate_groups``).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from . import __version__
from .backends.base import Backend
from .backends.streaming import Barrier, Driver, Streaming
from .errors import MarginalError
from .store import Store
from .tasks.base import Task, extract_all
from .types import Completion, Prior, Problem, Prompt, Sample, SampleSpec


@dataclass(frozen=True)
class Progress:
    """What a batch added, for progress bars."""

    problems_done: int
    problems_total: int
    samples_done: int
    samples_total: int
    new_samples: int
    new_tokens: int
    seconds: float


@dataclass(frozen=True)
class RunPlan:
    """What a run will store: its identity plus its extent."""

    task: str
    model: str
    spec: SampleSpec
    """Sampling settings; ``n`` is the samples per prior (M)."""
    priors: tuple[Prior, ...]
    problems: tuple[Problem, ...]
    policy: dict | None = None
    """For a policy run: its name, budget and settings (None for a K x M grid)."""

    def identity(self) -> dict:
        spec = asdict(self.spec)
        for extent in ("n", "first_index"):
            spec.pop(extent)
        spec["stop"] = list(spec["stop"])
        ident = {"task": self.task, "model": self.model, "spec": spec}
        if self.policy is not None:
            ident["policy"] = self.policy
        return ident

    @property
    def run_id(self) -> str:
        from .types import derive_seed

        return f"run-{derive_seed(json.dumps(self.identity(), sort_keys=True)):08x}"


def _differences(stored: dict, given: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(stored) | set(given)):
        a, b = stored.get(k), given.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: stored {a!r}, given {b!r}")
    return out


def open_run(store: Store, plan: RunPlan, *, beside: bool = False) -> str:
    """Register ``plan`` in ``store`` (or check it matches what is there); returns the run id.

    A file holds one run unless ``beside`` (several runs side by side, as
    `marginal blend` stores one run per variant)."""
    runs = store.runs()
    if runs and not beside and all(rid != plan.run_id for rid, _ in runs):
        rid, stored = runs[-1]
        diff = "; ".join(_differences(stored, plan.identity()))
        raise MarginalError(
            f"{store.path} holds a different run ({rid}: {diff}); use another --out, "
            "or --resume to continue the stored run with its own settings"
        )
    stored_priors = {c.name: c for c in store.priors(plan.run_id)}
    for c in plan.priors:
        if c.name in stored_priors and stored_priors[c.name] != c:
            raise MarginalError(
                f"prior {c.name!r} differs from the one stored in {store.path}; rename it or use another --out"
            )
    new_priors = [c for c in plan.priors if c.name not in stored_priors]
    all_priors = list(stored_priors.values()) + new_priors
    store.create_run(plan.run_id, plan.identity(), plan.problems, all_priors, __version__)
    return plan.run_id


@dataclass(frozen=True)
class Group:
    """``n`` samples of one (problem, prior) pair, the first with sample index ``first``."""

    problem: Problem
    prior: Prior
    first: int
    n: int


def missing_groups(store: Store, run_id: str, plan: RunPlan) -> list[Group]:
    """The groups of ``plan`` that ``store`` lacks, in problem then prior order (holes one by one)."""
    done = store.done_keys(run_id)
    groups = []
    for p in plan.problems:
        for c in plan.priors:
            todo = [i for i in range(plan.spec.n) if (p.id, c.name, i) not in done]
            if not todo:
                continue
            if todo == list(range(todo[0], todo[-1] + 1)):
                groups.append(Group(p, c, todo[0], len(todo)))
            else:  # holes: fill each on its own so every index keeps its seed
                groups += [Group(p, c, i, 1) for i in todo]
    return groups


def batches(
    items: Sequence, spec: SampleSpec, batch_samples: int, group_of: Callable = lambda x: x
) -> list[tuple[list, SampleSpec]]:
    """Cut groups (or items carrying one, see ``group_of``) into backend calls:
    one engine, sample offset and n per call, about ``batch_samples`` samples each."""
    buckets: dict[tuple, list] = defaultdict(list)
    for item in items:
        g = group_of(item)
        buckets[(g.prior.model, g.first, g.n)].append(item)
    out = []
    for (_, first, n), bucket in buckets.items():
        per_call = max(1, batch_samples // n)
        for start in range(0, len(bucket), per_call):
            out.append((bucket[start : start + per_call], replace(spec, n=n, first_index=first)))
    return out


TRUNCATED = "truncated: max_tokens reached before the final answer"


def generate_groups(
    groups: Sequence[Group], spec: SampleSpec, task: Task, backend_for: Callable[[Prior], Backend]
) -> list[Sample]:
    """One backend call for ``groups`` (one engine, ``spec.n == g.n``), extracted and graded."""
    t0 = time.perf_counter()
    outs = backend_for(groups[0].prior).generate([g.prior.render(g.problem.question) for g in groups], spec)
    return to_samples(task, groups, outs, time.perf_counter() - t0)


def to_samples(
    task: Task, groups: Sequence[Group], outs: Sequence[Sequence[Completion]], seconds: float
) -> list[Sample]:
    """Extract and grade the completions of ``groups``; failed ones stay failed.

    A completion cut off by ``max_tokens`` ("length") is failed as truncated:
    it never reached the final answer the prompt asks for, and the last number
    of a half-written solution is an intermediate result, not a vote.
    """
    items, where = [], []
    for g, comps in zip(groups, outs):
        for j, comp in enumerate(comps):
            if comp.finish_reason == "stop":
                items.append((comp.text, g.problem))
                where.append((g, j))
    extracted = dict(zip(where, extract_all(task, items)))
    per = seconds / max(1, sum(len(o) for o in outs))
    samples = []
    for g, comps in zip(groups, outs):
        for j, comp in enumerate(comps):
            ex = extracted.get((g, j))
            answer: str | None
            error: str | None
            if ex is None:
                answer = None
                error = TRUNCATED if comp.finish_reason == "length" else comp.error or "generation failed"
            else:
                answer, error = ex.answer, ex.error
            correct = None
            if answer is not None and g.problem.answer is not None:
                correct = task.grade(answer, g.problem)
            samples.append(
                Sample(
                    problem_id=g.problem.id,
                    prior=g.prior.name,
                    index=g.first + j,
                    text=comp.text,
                    answer=answer,
                    correct=correct,
                    error=error,
                    prompt_tokens=comp.prompt_tokens,
                    completion_tokens=comp.completion_tokens,
                    cached_prompt_tokens=comp.cached_prompt_tokens,
                    logprob=comp.logprob,
                    finish_reason=comp.finish_reason,
                    seed=comp.seed,
                    seconds=per,
                    diagnostics=diagnostics_of(comp),
                )
            )
    return samples


class Tracker:
    """Progress of a K x M run: samples and problems done, reported after each stored batch."""

    def __init__(self, plan: RunPlan, missing: Sequence[Group], on_progress: Callable[[Progress], None] | None):
        self.total = len(plan.problems) * len(plan.priors) * plan.spec.n
        self.done = self.total - sum(g.n for g in missing)
        self.remaining: dict[str, int] = defaultdict(int)
        for g in missing:
            self.remaining[g.problem.id] += g.n
        self.n_problems = len(plan.problems)
        self.problems_done = self.n_problems - len(self.remaining)
        self.on_progress = on_progress

    def stored(self, chunk: Sequence[Group], samples: Sequence[Sample], added: int, seconds: float) -> None:
        """``chunk``'s groups are stored (``added`` of ``samples`` were new)."""
        self.done += added
        for g in chunk:
            self.remaining[g.problem.id] -= g.n
            if self.remaining[g.problem.id] == 0:
                self.problems_done += 1
        if self.on_progress:
            self.on_progress(
                Progress(
                    self.problems_done,
                    self.n_problems,
                    self.done,
                    self.total,
                    added,
                    sum(s.completion_tokens for s in samples),
                    seconds,
                )
            )


def diagnostics_of(comp: Completion) -> dict[str, float | int | None]:
    """A completion's diagnostics as its sample stores them (a nan, e.g. a mean over no
    interventions, becomes None: no value)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in comp.diagnostics.items()}


class Engines:
    """The streaming view of each prior's engine (one per backend object): the engine itself
    when it streams, else a `Barrier` around it."""

    def __init__(self, backend_for: Callable[[Prior], Backend], max_batch: int) -> None:
        self.backend_for = backend_for
        self.max_batch = max_batch
        self._views: dict[int, Streaming] = {}

    def __call__(self, prior: Prior) -> Streaming:
        b = self.backend_for(prior)
        view = self._views.get(id(b))
        if view is None:
            view = self._views[id(b)] = b if isinstance(b, Streaming) else Barrier(b, self.max_batch)
        return view

    def window(self, engine: Streaming, batch_samples: int) -> int:
        """Samples to keep in flight on ``engine``: a barrier engine takes one batch per call,
        a streaming one enough to keep its slots busy while finished samples are committed."""
        if isinstance(engine, Barrier):
            return batch_samples
        return 2 * max(batch_samples, int(getattr(engine, "max_seqs", 0) or 0))


def request(g: Group, spec: SampleSpec) -> tuple[Prompt, SampleSpec]:
    """The prompt and sampling settings of a group (its n and sample offset)."""
    return g.prior.render(g.problem.question), replace(spec, n=g.n, first_index=g.first)


def execute(
    plan: RunPlan,
    task: Task,
    backend_for: Callable[[Prior], Backend],
    store: Store,
    *,
    batch_samples: int = 64,
    on_progress: Callable[[Progress], None] | None = None,
    beside: bool = False,
) -> str:
    """Generate every missing sample of ``plan`` into ``store``; returns the run id.

    ``backend_for(prior)`` gives the engine of a prior (the run's model, or the
    prior's own). Every missing (problem, prior) group is one request, streamed
    through its engine in problem order with enough requests in flight to keep
    the engine busy; finished samples are extracted, graded and committed in
    transactions of about ``batch_samples`` samples, so a crash loses at most
    the samples in flight. A blocking engine gets one call per batch (groups of
    the same sample offset). ``beside``: see `open_run`.
    """
    run_id = open_run(store, plan, beside=beside)
    groups = missing_groups(store, run_id, plan)
    track = Tracker(plan, groups, on_progress)
    engines = Engines(backend_for, batch_samples)
    buffer: list[tuple[Group, list[Sample]]] = []
    started: dict[int, float] = {}
    t_flush = [time.perf_counter()]

    def flush() -> None:
        if not buffer:
            return
        done = list(buffer)
        buffer.clear()
        samples = [s for _, smp in done for s in smp]
        added = store.add_samples(run_id, samples)
        now = time.perf_counter()
        track.stored([g for g, _ in done], samples, added, now - t_flush[0])
        t_flush[0] = now

    def on_done(g: Group, comps: list[Completion]) -> None:
        seconds = time.perf_counter() - started.pop(id(g))
        buffer.append((g, to_samples(task, [g], [comps], seconds)))
        if sum(x.n for x, _ in buffer) >= batch_samples:
            flush()
        top_up()

    driver = Driver(on_done)
    todo = deque(groups)
    in_flight: dict[int, int] = defaultdict(int)

    def top_up() -> None:
        while todo:
            g = todo[0]
            engine = engines(g.prior)
            if in_flight[id(engine)] and in_flight[id(engine)] + g.n > engines.window(engine, batch_samples):
                return
            todo.popleft()
            in_flight[id(engine)] += g.n
            started[id(g)] = time.perf_counter()
            prompt, spec = request(g, plan.spec)

            def release(_f: object, e: int = id(engine), n: int = g.n) -> None:
                in_flight[e] -= n

            driver.submit(engine, prompt, spec, g).add_done_callback(release)

    try:
        top_up()
        driver.run()
    finally:  # an interrupted run (Ctrl-C, a failed engine) still stores every finished sample
        flush()
    return run_id
