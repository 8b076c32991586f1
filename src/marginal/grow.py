"""Policies on a stored pool that grow it: the samples a policy asks for beyond the pool are generated.

A replay (`marginal.replay`) serves a policy's requests from a pool and stops
a question when the pool runs out. ``grow_for_policy`` runs the policy live
instead, over the pool's own run: sample i of (problem, prior) comes from the
pool when it is there and is generated otherwise, with the seed it would
have had, and every generated sample is stored in the pool (a ragged pool).
After it, a replay of that policy and budget on the pool is exact, and the
pool serves every other analysis as before. ``priors`` grows for a sub-bank
(the policy sees those priors, in that order), as a replay with the same
``priors`` reads it. Left out: deciding which policy to grow for (the caller
names it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from .allocate import QuestionState, allocate_plan
from .analysis.subbank import pick_priors
from .backends.base import Backend
from .config import RunConfig, build_plan
from .policies import Policy
from .runner import Group, Progress, open_run
from .store import Store
from .types import Prior, Sample


def grow_for_policy(
    store: Store,
    run_id: str,
    policy: Policy,
    budget: int,
    backend_for: Callable[[Prior], Backend],
    *,
    priors: Sequence[str] | None = None,
    batch_samples: int = 64,
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[list[QuestionState], int]:
    """Run ``policy`` with ``budget`` on every problem of the stored run (on the sub-bank ``priors``,
    in that order, when given), generating (and storing) only the samples the pool lacks; returns the
    questions' states and how many samples were added. Progress reports count a problem done when
    its policy stops, and samples as the policy uses them, stored or generated."""
    task, plan = build_plan(RunConfig.from_store(store, run_id))
    bank = list(store.priors(run_id))  # the pool's own priors, whatever bank made them
    if priors is not None:
        bank = [bank[i] for i in pick_priors(priors, [c.name for c in bank], f"run {run_id} in {store.path}")]
    plan = replace(plan, priors=tuple(bank))
    open_run(store, plan)  # the same run: same task, model and sampling settings
    by: dict[tuple[str, str], dict[int, Sample]] = defaultdict(dict)
    for s in store.samples(run_id):
        by[(s.problem_id, s.prior)][s.index] = s

    def stored(g: Group) -> Sequence[Sample]:
        cell = by.get((g.problem.id, g.prior.name), {})
        out = []
        for i in range(g.first, g.first + g.n):
            if i not in cell:
                break
            out.append(cell[i])
        return out

    added = [0]
    used: dict[str, int] = {}
    finished: set[str] = set()

    def on_batch(samples: list[Sample], steps) -> None:
        added[0] += store.add_samples(run_id, samples)
        for s in samples:
            by[(s.problem_id, s.prior)][s.index] = s
        for pid, n, d in steps:
            used[pid] = n
            if d.stop:
                finished.add(pid)
        if on_progress:
            new = len(samples), sum(s.completion_tokens for s in samples)
            n_problems = len(plan.problems)
            on_progress(Progress(len(finished), n_problems, sum(used.values()), budget * n_problems, *new, 0.0))

    states = allocate_plan(
        plan, policy, budget, task, backend_for, stored=stored, on_batch=on_batch, commit_samples=batch_samples
    )
    return states, added[0]
