"""Answer questions with a budget: ``Session.solve`` / ``solve_many`` and ``marginal.solve``.

A session holds a loaded task and engine. ``solve_many`` runs one policy per
question and keeps the engine busy across questions: every round it gathers
the requests of all unfinished questions into as few backend calls as
possible (continuous batching of the policies' requests), extracts answers,
and feeds them back. Sample i of (question, prior) always samples with the
seed derived from i, so a solve reproduces the samples a ``marginal run``
would store for the same question and prior. A prior that names its own
model (``Prior.model``, "other models" as priors) is served by that engine,
loaded on first use with the session's backend options and closed with it.
Left out: persisting solves to a store (``marginal run --policy`` does that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .allocate import QuestionState, allocate
from .backends.base import Backend
from .backends.cache import Engines
from .errors import MarginalError
from .policies import Decision, Policy, SplitPlan, make_policy
from .tasks.base import Task
from .types import Prior, Problem, Sample, SampleSpec
from .vote import label_free_margin, ranked, tally, winner


@dataclass(frozen=True)
class Result:
    """The marginal answer to one question, and how it was reached."""

    question: str
    answer: str | None
    """Plurality answer over all valid samples, ties to the alphabetically smallest (``marginal.vote``);
    None if every sample failed."""
    shares: dict[str, float]
    """Vote share of each answer, largest first."""
    margin: float
    """Label-free margin: top-1 share minus top-2 share."""
    used: int
    """Samples drawn."""
    budget: int
    stop_reason: str
    regime: str
    """What the policy saw: 'aligned', 'misaligned', 'mixed' or 'fixed'."""
    decisions: tuple[Decision, ...]
    samples: tuple[Sample, ...]
    correct: bool | None = None
    """Whether the answer matches the reference, when one was given."""


def regime_of(decisions: Sequence[Decision]) -> str:
    """What a question's decisions saw: 'aligned', 'misaligned', 'mixed' or 'fixed'."""
    seen = {d.regime for d in decisions}
    a, m = "aligned" in seen, "misaligned" in seen
    return "mixed" if a and m else "aligned" if a else "misaligned" if m else "fixed"


class Session:
    """A loaded task and model, reused across many questions."""

    def __init__(
        self,
        model: str | Backend = "smollm2-135m",
        task: str | Task = "gsm8k",
        *,
        priors: Sequence[Prior] | None = None,
        spec: SampleSpec | None = None,
        **backend_options,
    ):
        if isinstance(task, str):
            from .tasks import load_task

            task = load_task(task)
        self._engines = Engines(**backend_options)
        if isinstance(model, str):
            model = self._engines.get(model)
        self._engines.add(model.name, model)  # a prior naming the session's engine gets it
        self.task, self.backend = task, model
        self.priors = list(priors) if priors is not None else self.task.bank()
        if not self.priors:
            raise MarginalError("a session needs at least one prior")
        self.spec = spec or SampleSpec(n=1, temperature=0.7, max_tokens=256)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the session's engine and every engine its priors loaded."""
        self._engines.close()

    def backend_for(self, prior: Prior) -> Backend:
        """The engine of ``prior``: its own model when it names one (the session's
        engine when that is its name), else the session's."""
        return self.backend if prior.model is None else self._engines.get(prior.model)

    def _policy(self, policy: str | Policy, budget: int, plan: SplitPlan | None) -> Policy:
        if isinstance(policy, str):
            if plan is not None:
                plan.check(self.task.name, self.backend.name)
            return policy_for(policy, budget, len(self.priors), plan=plan, names=[p.name for p in self.priors])
        return policy

    def solve(
        self,
        question: str | Problem,
        *,
        budget: int = 16,
        policy: str | Policy = "adaptive",
        plan: SplitPlan | None = None,
    ) -> Result:
        return self.solve_many([question], budget=budget, policy=policy, plan=plan)[0]

    def solve_many(
        self,
        questions: Sequence[str | Problem],
        *,
        budget: int = 16,
        policy: str | Policy = "adaptive",
        plan: SplitPlan | None = None,
        max_batch: int = 256,
    ) -> list[Result]:
        """Solve every question under ``policy`` with ``budget`` samples each, batched across questions."""
        pol = self._policy(policy, budget, plan)
        problems = [q if isinstance(q, Problem) else Problem(f"q{i}", q) for i, q in enumerate(questions)]
        states = allocate(
            problems, self.priors, pol, budget, self.task, self.backend_for, self.spec, max_batch=max_batch
        )
        return [self._result(p, st, budget) for p, st in zip(problems, states)]

    def _result(self, problem: Problem, state: QuestionState, budget: int) -> Result:
        return result_of(self.task, problem, state, budget)


def policy_for(
    name: str,
    budget: int,
    bank: int,
    *,
    plan: SplitPlan | None = None,
    threshold: float = 0.95,
    names: Sequence[str] | None = None,
) -> Policy:
    """The policy ``name`` for ``budget`` samples over a bank of ``bank`` priors, as a session sizes it:
    "fixed" without a K takes the largest K <= 4 (and <= the bank) that divides the budget. ``names``: the
    bank's prior names, so that a plan naming its priors samples those."""
    k = max(d for d in range(1, min(4, bank, budget) + 1) if budget % d == 0) if budget > 0 else 1
    return make_policy(name, budget, bank, k=k, plan=plan, threshold=threshold, names=names)


def result_of(task: Task, problem: Problem, state: QuestionState, budget: int) -> Result:
    """The `Result` of one question's policy run (its samples and decisions in ``state``)."""
    samples, decisions = state.samples, state.decisions
    counts = tally(state.answers)
    total = sum(counts.values())
    answer = winner(counts)
    correct = None
    if answer is not None and problem.answer is not None:
        correct = task.grade(answer, problem)
    return Result(
        question=problem.question,
        answer=answer,
        shares={a: counts[a] / total for a in ranked(counts)},
        margin=label_free_margin(counts),
        used=len(samples),
        budget=budget,
        stop_reason=decisions[-1].reason,
        regime=regime_of(decisions),
        decisions=tuple(decisions),
        samples=tuple(samples),
        correct=correct,
    )


def solve(
    question: str,
    task: str = "gsm8k",
    model: str = "smollm2-135m",
    budget: int = 16,
    policy: str = "adaptive",
    **options,
) -> Result:
    """Answer one question with a budget of samples (loads the model; use Session for many calls)."""
    with Session(model, task, **options) as s:
        return s.solve(question, budget=budget, policy=policy)
