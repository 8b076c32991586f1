"""Replay allocation policies on a stored pool, without generating.

A policy asks for "n more samples of prior i"; here they are served from the
pool: the next stored samples of (problem, prior i) in index order. Sample i
of a (problem, prior) pair has the same seed whether it was drawn by a grid
run or by a policy, so a replay is what a live policy run would have drawn
(up to the engine's batch-composition numerics), and every policy and budget
can be compared on one pool. A request beyond what the pool holds stops that
question (a stop of kind "pool exhausted"), and is counted. Problems with no
stored sample yet (a pool still being generated) are left out, as
``load_pool`` does. Votes and their credit are ``marginal.vote``'s, as in a
live run. Left out: policies that need samples the pool does not have (grow
the pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .analysis.subbank import pick_priors
from .policies import Decision, Policy
from .store import Store
from .types import Sample
from .vote import credit, tally


@dataclass(frozen=True)
class Replay:
    """A policy replayed on every problem of a pool."""

    policy: str
    budget: int
    accuracy: float
    """Mean credit of the plurality answer (1/|T| when gold is among |T| tied answers)."""
    ci: tuple[float, float]
    """95% bootstrap CI of the accuracy over problems."""
    mean_used: float
    exhausted: int
    """Problems where the policy asked for more samples than the pool holds."""
    credit: tuple[float, ...]
    used: tuple[int, ...]
    problems: tuple[str, ...] = ()
    """The problem ids of ``credit`` and ``used``, in run order."""
    ran_out: tuple[bool, ...] = ()
    """Per problem: the policy asked for more samples than the pool holds."""


@dataclass(frozen=True)
class QuestionReplay:
    """One question replayed: what the policy drew and how it ended."""

    answers: tuple[tuple[str | None, ...], ...]
    """The answers drawn, per prior."""
    decisions: tuple[Decision, ...]
    """The policy's decisions; the last is a stop (one of kind "pool exhausted" when the pool ran out)."""
    short: tuple[int, int] | None = None
    """(prior, samples it needed) when the policy asked for more than the pool holds."""

    @property
    def exhausted(self) -> bool:
        return self.short is not None

    @property
    def stop_kind(self) -> str | None:
        return self.decisions[-1].stop_kind


def replay_question(policy: Policy, pools: list[list[str | None]], budget: int) -> QuestionReplay:
    """Run ``policy`` on one question, serving its requests from ``pools`` (stored answers per
    prior, in the order they are drawn); a request past what a pool holds stops it there."""
    answers: list[list[str | None]] = [[] for _ in pools]
    decisions: list[Decision] = []
    while True:
        d = policy.decide(answers, budget)
        decisions.append(d)
        over = [(i, len(answers[i]) + n) for i, n in d.requests if len(answers[i]) + n > len(pools[i])]
        if d.stop or over:
            break
        for i, n in d.requests:
            answers[i] += pools[i][len(answers[i]) : len(answers[i]) + n]
    drawn = tuple(tuple(a) for a in answers)
    if not over:
        return QuestionReplay(drawn, tuple(decisions))
    i, need = over[0]
    end = Decision((), f"pool exhausted: prior {i} needs {need}", stop_kind="pool exhausted")
    return QuestionReplay(drawn, (*decisions, end), (i, need))


def replay(
    path,
    policy: Policy,
    budget: int,
    *,
    run: str | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    priors: Sequence[str] | str | None = None,
) -> Replay:
    """Replay ``policy`` with ``budget`` samples per problem on the run stored at ``path``.

    ``priors``: replay on the sub-bank of these priors, in this order (the policy sees only them)."""
    store = Store(path, readonly=True)
    run_id = run or store.only_run()
    bank = [c.name for c in store.priors(run_id)]
    priors = bank if priors is None else [bank[i] for i in pick_priors(priors, bank, f"run {run_id} in {path}")]
    by: dict[tuple[str, str], list[Sample]] = {}
    for s in store.samples(run_id):
        by.setdefault((s.problem_id, s.prior), []).append(s)
    # a pool still being generated: only the problems sampled so far (as load_pool does)
    problems = [p for p in store.problems(run_id) if any((p.id, c) in by for c in priors)]
    store.close()
    credits: list[float] = []
    used: list[int] = []
    ran_out: list[bool] = []
    for p in problems:
        pools = [sorted(by.get((p.id, c), []), key=lambda s: s.index) for c in priors]
        q = replay_question(policy, [[s.answer for s in ps] for ps in pools], budget)
        ran_out.append(q.exhausted)
        gold = {s.answer for ps in pools for s in ps if s.correct and s.answer is not None}
        credits.append(credit(tally(q.answers), gold))
        used.append(sum(len(a) for a in q.answers))
    c = np.array(credits)
    rng = np.random.default_rng(seed)
    boots = c[rng.integers(0, len(c), size=(n_boot, len(c)))].mean(axis=1) if len(c) else np.zeros(1)
    return Replay(
        policy.name,
        budget,
        float(c.mean()) if len(c) else 0.0,
        (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))),
        float(np.mean(used)) if used else 0.0,
        sum(ran_out),
        tuple(credits),
        tuple(used),
        tuple(p.id for p in problems),
        tuple(ran_out),
    )
