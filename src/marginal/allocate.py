"""Policy runs: each question's policy asks for samples step by step, over a running engine.

``allocate`` drives one `Solve` per question (a policy's state machine with
no I/O): a question's policy is asked again as soon as the samples it
requested are back, and its next requests join the running engine (no step
waits for the slowest question). Finished steps (samples and decisions) go
to a callback, which may store them; ``execute_policy`` stores them in a run.
Policies are pure functions of the answers seen, so resuming from stored
samples replays them. ``stored`` lets a run take samples an earlier run
already generated (a pool) and generate only the rest, with the same seeds.
Left out: priorities between questions (requests are served in arrival
order).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .backends.streaming import Driver
from .errors import MarginalError
from .policies import Decision, Policy
from .runner import Engines, Group, Progress, RunPlan, open_run, request, to_samples
from .store import Store
from .tasks.base import Task
from .types import Completion, Prior, Problem, Sample, SampleSpec

StoredLookup = Callable[[Group], Sequence[Sample]]
"""Samples already generated for a group, in index order from its first index (maybe fewer than n)."""


@dataclass
class QuestionState:
    """What a policy has seen for one question (mutable while allocating)."""

    answers: list[list[str | None]]
    samples: list[Sample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class Solve:
    """One question under a policy, as a state machine with no engine and no I/O.

    ``next()`` asks the policy for its next step and returns the groups to
    sample (a group is n new samples of one prior, with the sample offset
    their seeds follow), or None once the policy stops. ``feed(samples)``
    gives back the samples of those groups, one list per group in request
    order. `allocate` drives many of these over one engine; the server
    drives one per HTTP request.
    """

    def __init__(
        self, problem: Problem, priors: Sequence[Prior], policy: Policy, budget: int, known: Sequence[Sample] = ()
    ) -> None:
        self.problem, self.priors, self.policy, self.budget = problem, list(priors), policy, budget
        self.index = {c.name: i for i, c in enumerate(self.priors)}
        self.state = QuestionState([[] for _ in self.priors])
        for smp in sorted(known, key=lambda s: (self.index.get(s.prior, -1), s.index)):
            if smp.prior in self.index:
                self.state.answers[self.index[smp.prior]].append(smp.answer)
                self.state.samples.append(smp)
        self.pending: list[Group] | None = None

    @property
    def used(self) -> int:
        return len(self.state.samples)

    def next(self) -> list[Group] | None:
        """The policy's next groups to sample, or None when it stops (the decision is recorded)."""
        st, pol = self.state, self.policy
        d = pol.decide(st.answers, self.budget)
        st.decisions.append(d)
        if d.stop:
            self.pending = None
            return None
        if sum(len(a) for a in st.answers) + d.size > self.budget:
            raise MarginalError(f"policy {pol.name} asked for {d.size} samples past the budget of {self.budget}")
        groups = []
        for i, n in d.requests:
            if not 0 <= i < len(self.priors):
                raise MarginalError(f"policy {pol.name} asked for prior {i}; the bank has {len(self.priors)}")
            groups.append(Group(self.problem, self.priors[i], len(st.answers[i]), n))
        self.pending = groups
        return groups

    def feed(self, samples: Sequence[Sequence[Sample]]) -> None:
        """The samples of the pending groups, one list per group, in request order."""
        if self.pending is None or len(samples) != len(self.pending):
            raise RuntimeError("feed() needs one list of samples per group of the last next()")
        for g, smp in zip(self.pending, samples):
            for x in smp:
                self.state.samples.append(x)
                self.state.answers[self.index[g.prior.name]].append(x.answer)
        self.pending = None


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
    stored: StoredLookup | None = None,
    on_batch: Callable[[list[Sample], list[tuple[str, int, Decision]]], None] | None = None,
    max_batch: int = 256,
    commit_samples: int = 64,
) -> list[QuestionState]:
    """Run ``policy`` with ``budget`` samples on every problem; no step waits for another question.

    Each question (a `Solve`) is asked again as soon as all the samples its
    policy asked for are back, and its next requests join the running engine
    at once (a blocking engine serves, per call, every request pending then,
    at most ``max_batch`` samples). A question sees its samples in request
    order, so its decisions are those of a sequential run. ``known`` holds
    samples the policy has already drawn, per problem id (a resumed run);
    ``stored(group)`` samples generated before that the policy may draw (a
    pool): only the rest of a group is generated. ``on_batch(new samples,
    [(problem_id, samples_used, decision), ...])`` receives the finished steps
    in chunks of about ``commit_samples`` samples (and the rest at the end);
    samples taken from ``stored`` are not in it.
    """
    solves = [Solve(p, priors, policy, budget, (known or {}).get(p.id, ())) for p in problems]
    run = _Allocation(solves, task, spec, Engines(backend_for, max_batch), stored, on_batch, commit_samples)
    try:
        for q in range(len(problems)):
            run.ask(q)
        run.driver.run()
    finally:  # an interrupted run still stores every finished step
        run.flush()
    return [sv.state for sv in solves]


def decision_row(problem_id: str, used: int, d: Decision) -> tuple[str, int, str, str, str]:
    """The store's row of a policy decision (`Store.add_samples`'s decisions): problem, samples used, requests,
    reason and the typed record."""
    return (problem_id, used, json.dumps(d.requests), d.reason, d.record())


def allocate_plan(
    plan: RunPlan, policy: Policy, budget: int, task: Task, backend_for: Callable[[Prior], Backend], **kw: Any
) -> list[QuestionState]:
    """`allocate` over a plan's problems, priors and sampling settings (``kw`` as there)."""
    return allocate(plan.problems, plan.priors, policy, budget, task, backend_for, plan.spec, **kw)


_Pending = tuple[int, int, Group, list[Sample], float]
"""A request in flight: (question, request index in its step, the group generated, stored samples before it,
start time)."""


class _Allocation:
    """The moving parts of one `allocate` call: the solves, their pending steps and the driver."""

    def __init__(
        self,
        solves: list[Solve],
        task: Task,
        spec: SampleSpec,
        engines: Engines,
        stored: StoredLookup | None,
        on_batch: Callable[[list[Sample], list[tuple[str, int, Decision]]], None] | None,
        commit_samples: int,
    ) -> None:
        self.solves, self.task, self.spec, self.engines, self.stored = solves, task, spec, engines, stored
        self.on_batch, self.commit_samples = on_batch, commit_samples
        self.got: dict[int, list[list[Sample] | None]] = {}
        self.new_samples: list[Sample] = []
        self.out_steps: list[tuple[str, int, Decision]] = []
        self.driver: Driver[_Pending] = Driver(self.on_done)

    def flush(self) -> None:
        samples, steps = list(self.new_samples), list(self.out_steps)
        self.new_samples.clear()
        self.out_steps.clear()
        if self.on_batch and (samples or steps):
            self.on_batch(samples, steps)

    def ask(self, q: int) -> None:
        """Ask question ``q``'s policy for its next step and send what the pool does not hold."""
        while True:  # steps served from ``stored`` alone go on without the engine
            sv = self.solves[q]
            groups = sv.next()
            self.out_steps.append((sv.problem.id, sv.used, sv.state.decisions[-1]))
            if groups is None:
                return
            got = self.got[q] = [None] * len(groups)
            for r, g in enumerate(groups):
                have = list(self.stored(g))[: g.n] if self.stored else []
                if len(have) == g.n:
                    got[r] = have
                    continue
                rest = Group(g.problem, g.prior, g.first + len(have), g.n - len(have))
                prompt, call_spec = request(rest, self.spec)
                self.driver.submit(self.engines(g.prior), prompt, call_spec, (q, r, rest, have, time.perf_counter()))
            if any(x is None for x in got):
                return
            self.finish(q)

    def finish(self, q: int) -> None:
        done = [x for x in self.got.pop(q) if x is not None]
        self.solves[q].feed(done)  # in request order, whatever order they finished in

    def on_done(self, tag: _Pending, comps: list[Completion]) -> None:
        q, r, rest, have, t0 = tag
        fresh = to_samples(self.task, [rest], [comps], time.perf_counter() - t0)
        self.new_samples.extend(fresh)
        self.got[q][r] = have + fresh
        if any(x is None for x in self.got[q]):
            return
        self.finish(q)
        self.ask(q)
        if len(self.new_samples) >= self.commit_samples:
            self.flush()


def execute_policy(
    plan: RunPlan,
    policy: Policy,
    budget: int,
    task: Task,
    backend_for: Callable[[Prior], Backend],
    store: Store,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    batch_samples: int = 64,
) -> str:
    """Run ``policy`` on every problem of ``plan`` into ``store``, resuming from what it holds;
    finished steps are committed in transactions of about ``batch_samples`` samples."""
    run_id = open_run(store, plan)
    known: dict[str, list[Sample]] = defaultdict(list)
    for smp in store.samples(run_id):
        known[smp.problem_id].append(smp)
    total = budget * len(plan.problems)
    done = sum(len(v) for v in known.values())
    finished: set[str] = set()

    def on_batch(samples: list[Sample], steps: list[tuple[str, int, Decision]]) -> None:
        nonlocal done
        t0 = time.perf_counter()
        rows = [decision_row(pid, used, d) for pid, used, d in steps]
        store.add_samples(run_id, samples, rows)
        done += len(samples)
        finished.update(pid for pid, _, d in steps if d.stop)
        if on_progress:
            on_progress(
                Progress(
                    len(finished),
                    len(plan.problems),
                    done,
                    total,
                    len(samples),
                    sum(s.completion_tokens for s in samples),
                    time.perf_counter() - t0,
                )
            )

    allocate_plan(plan, policy, budget, task, backend_for, known=known, on_batch=on_batch, commit_samples=batch_samples)
    return run_id
