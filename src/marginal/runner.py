"""The runner: problems x priors x M samples -> backend -> store, resumable.

It is the only layer that orchestrates I/O. Work is cut into batches of
(problem, prior) groups; each batch is generated in one backend call, its
completions extracted and graded, and committed in one transaction. A
killed run therefore loses at most the batch in flight, and running the same
command again generates only the samples that are missing, with the seeds
they would have had (sample i of a prompt always samples with the seed
derived from i).

A run's identity is what decides its samples: task, model, sampling settings
and seed. The number of problems, priors and samples per prior are its
extent, and may grow between invocations (the new samples are added).
``allocate`` drives a policy instead of a fixed grid: every round it asks
each unfinished question's policy for its next request, serves the requests
of all questions in as few backend calls as it can, and reports each batch
(samples and decisions) to a callback, which may store it. Policies are pure
functions of the answers seen, so resuming from stored samples replays them.
Multi-worker execution (Ray) lives in ``distributed.py`` and reuses the
batching here.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from . import __version__
from .backends.base import Backend
from .errors import MarginalError
from .store import Store
from .tasks.base import Task, extract_all
from .policies import Decision, Policy
from .types import Completion, Prior, Problem, Sample, SampleSpec


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
class _Group:
    problem: Problem
    prior: Prior
    first: int
    n: int


def _missing(store: Store, run_id: str, plan: RunPlan) -> list[_Group]:
    done = store.done_keys(run_id)
    groups = []
    for p in plan.problems:
        for c in plan.priors:
            todo = [i for i in range(plan.spec.n) if (p.id, c.name, i) not in done]
            if not todo:
                continue
            if todo == list(range(todo[0], todo[-1] + 1)):
                groups.append(_Group(p, c, todo[0], len(todo)))
            else:  # holes: fill each on its own so every index keeps its seed
                groups += [_Group(p, c, i, 1) for i in todo]
    return groups


def batches(items: Sequence, spec: SampleSpec, batch_samples: int, group_of: Callable = lambda x: x) -> list[tuple[list, SampleSpec]]:
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
    groups: Sequence[_Group], spec: SampleSpec, task: Task, backend_for: Callable[[Prior], Backend]
) -> list[Sample]:
    """One backend call for ``groups`` (one engine, ``spec.n == g.n``), extracted and graded."""
    t0 = time.perf_counter()
    outs = backend_for(groups[0].prior).generate([g.prior.render(g.problem.question) for g in groups], spec)
    return to_samples(task, groups, outs, time.perf_counter() - t0)


def to_samples(
    task: Task, groups: Sequence[_Group], outs: Sequence[Sequence[Completion]], seconds: float
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
                    problem_id=g.problem.id, prior=g.prior.name, index=g.first + j, text=comp.text,
                    answer=answer, correct=correct, error=error, prompt_tokens=comp.prompt_tokens,
                    completion_tokens=comp.completion_tokens, cached_prompt_tokens=comp.cached_prompt_tokens,
                    logprob=comp.logprob, finish_reason=comp.finish_reason, seed=comp.seed, seconds=per,
                    diagnostics=diagnostics_of(comp),
                )
            )
    return samples


class Tracker:
    """Progress of a K x M run: samples and problems done, reported after each stored batch."""

    def __init__(self, plan: RunPlan, missing: Sequence[_Group], on_progress: Callable[[Progress], None] | None):
        self.total = len(plan.problems) * len(plan.priors) * plan.spec.n
        self.done = self.total - sum(g.n for g in missing)
        self.remaining: dict[str, int] = defaultdict(int)
        for g in missing:
            self.remaining[g.problem.id] += g.n
        self.n_problems = len(plan.problems)
        self.problems_done = self.n_problems - len(self.remaining)
        self.on_progress = on_progress

    def stored(self, chunk: Sequence[_Group], samples: Sequence[Sample], added: int, seconds: float) -> None:
        """``chunk``'s groups are stored (``added`` of ``samples`` were new)."""
        self.done += added
        for g in chunk:
            self.remaining[g.problem.id] -= g.n
            if self.remaining[g.problem.id] == 0:
                self.problems_done += 1
        if self.on_progress:
            self.on_progress(Progress(self.problems_done, self.n_problems, self.done, self.total, added,
                                      sum(s.completion_tokens for s in samples), seconds))


def diagnostics_of(comp: Completion) -> dict[str, float | int | None]:
    """A completion's diagnostics as its sample stores them (a nan, e.g. a mean over no
    interventions, becomes None: no value)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in comp.diagnostics.items()}


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
    prior's own). Batches hold groups of the same engine and sample offset, up
    to about ``batch_samples`` samples each. ``beside``: see `open_run`.
    """
    run_id = open_run(store, plan, beside=beside)
    groups = _missing(store, run_id, plan)
    track = Tracker(plan, groups, on_progress)
    for chunk, spec in batches(groups, plan.spec, batch_samples):
        t0 = time.perf_counter()
        samples = generate_groups(chunk, spec, task, backend_for)
        store.add_samples(run_id, samples)
        track.stored(chunk, samples, len(samples), time.perf_counter() - t0)
    return run_id


@dataclass
class QuestionState:
    """What a policy has seen for one question (mutable while allocating)."""

    answers: list[list[str | None]]
    samples: list[Sample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


def allocate(
    problems: Sequence[Problem],
    priors: Sequence[Prior],
    policy: Policy,
    budget: int,
    task: Task,
    backend_for: Callable[[Prior], Backend],
    spec: SampleSpec,
    *,
    known: dict[str, list[Sample]] | None = None,
    on_batch: Callable[[list[Sample], list[tuple[str, int, Decision]]], None] | None = None,
    max_batch: int = 256,
) -> list[QuestionState]:
    """Run ``policy`` with ``budget`` samples on every problem, batched across problems.

    ``known`` holds samples already stored per problem id (a resumed run);
    ``on_batch(samples, [(problem_id, samples_used, decision), ...])`` sees each step.
    """
    index = {c.name: i for i, c in enumerate(priors)}
    states = []
    for p in problems:
        st = QuestionState([[] for _ in priors])
        for smp in sorted((known or {}).get(p.id, []), key=lambda s: (index.get(s.prior, -1), s.index)):
            if smp.prior in index:
                st.answers[index[smp.prior]].append(smp.answer)
                st.samples.append(smp)
        states.append(st)
    active = set(range(len(problems)))
    while active:
        groups: list[tuple[int, _Group]] = []
        step: list[tuple[str, int, Decision]] = []
        for q in sorted(active):
            st = states[q]
            d = policy.decide(st.answers, budget)
            st.decisions.append(d)
            step.append((problems[q].id, len(st.samples), d))
            if d.stop:
                active.discard(q)
                continue
            if sum(len(a) for a in st.answers) + d.size > budget:
                raise MarginalError(f"policy {policy.name} asked for {d.size} samples past the budget of {budget}")
            for i, n in d.requests:
                if not 0 <= i < len(priors):
                    raise MarginalError(f"policy {policy.name} asked for prior {i}; the bank has {len(priors)}")
                groups.append((q, _Group(problems[q], priors[i], len(st.answers[i]), n)))
        new: list[Sample] = []
        for chunk, call_spec in batches(groups, spec, max_batch, group_of=lambda x: x[1]):
            made = iter(generate_groups([g for _, g in chunk], call_spec, task, backend_for))
            for q, g in chunk:
                for _ in range(g.n):
                    smp = next(made)
                    states[q].samples.append(smp)
                    states[q].answers[index[g.prior.name]].append(smp.answer)
                    new.append(smp)
        if on_batch:
            on_batch(new, step)
    return states


def execute_policy(
    plan: RunPlan,
    policy: Policy,
    budget: int,
    task: Task,
    backend_for: Callable[[Prior], Backend],
    store: Store,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> str:
    """Run ``policy`` on every problem of ``plan`` into ``store``, resuming from what it holds."""
    run_id = open_run(store, plan)
    known: dict[str, list[Sample]] = defaultdict(list)
    for smp in store.samples(run_id):
        known[smp.problem_id].append(smp)
    total = budget * len(plan.problems)
    counter = {"done": sum(len(v) for v in known.values()), "finished": set()}

    def on_batch(samples: list[Sample], steps: list[tuple[str, int, Decision]]) -> None:
        t0 = time.perf_counter()
        rows = [(pid, used, json.dumps(d.requests), d.reason, d.record()) for pid, used, d in steps]
        store.add_samples(run_id, samples, rows)
        counter["done"] += len(samples)
        counter["finished"] |= {pid for pid, _, d in steps if d.stop}
        if on_progress:
            on_progress(
                Progress(
                    len(counter["finished"]), len(plan.problems), counter["done"], total, len(samples),
                    sum(s.completion_tokens for s in samples), time.perf_counter() - t0,
                )
            )

    allocate(plan.problems, plan.priors, policy, budget, task, backend_for, plan.spec, known=known, on_batch=on_batch)
    return run_id
