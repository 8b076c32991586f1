"""Allocation policies: which prior gets the next samples, and when to stop.

A policy is a pure function of what has been seen for one question: the bank
size, the budget, and the canonical answers drawn so far under each prior
(None for a failed sample). It returns the next ``Decision``: a request
(prior index -> number of new samples) or a stop, each with its reason. No
policy talks to a backend, so a logged run replays to the same decisions.

Policies: ``fixed`` (K x M), ``repetition`` (K = 1), ``diversity`` (M = 1),
``planned`` (K x M read from a plan file made by ``marginal analyze
--save-plan``), ``adaptive`` (label-free, sequential, early stopping).
Left out: weighted votes inside the adaptive rule (it votes uniformly).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import MarginalError, unknown
from .types import derive_seed

Answers = Sequence[Sequence["str | None"]]
"""Per prior in bank order, the answers seen so far (None = failed sample)."""


@dataclass(frozen=True)
class Decision:
    """The next step for one question."""

    requests: tuple[tuple[int, int], ...]
    """(prior index, new samples) pairs; empty means stop."""
    reason: str

    @property
    def stop(self) -> bool:
        return not self.requests

    @property
    def size(self) -> int:
        return sum(n for _, n in self.requests)


class Policy(Protocol):
    name: str

    def decide(self, answers: Answers, budget: int) -> Decision: ...


def used(answers: Answers) -> int:
    return sum(len(a) for a in answers)


def vote(answers: Answers, weights: Sequence[float] | None = None) -> Counter:
    """Weighted vote counts over all priors; failed samples do not vote."""
    c: Counter = Counter()
    for i, ans in enumerate(answers):
        w = 1.0 if weights is None else weights[i]
        for a in ans:
            if a is not None:
                c[a] += w
    return c


def label_free_margin(counts: Mapping[str, float]) -> float:
    """Top-1 share minus top-2 share of a vote (0 for an empty vote)."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    top = sorted(counts.values(), reverse=True) + [0.0]
    return (top[0] - top[1]) / total


def _check_budget(budget: int) -> None:
    if not isinstance(budget, int) or budget <= 0:
        raise MarginalError(f"budget must be a positive integer, got {budget!r}")


@dataclass(frozen=True)
class Fixed:
    """K priors (first in bank order) x M samples each."""

    k: int
    m: int
    name: str = "fixed"

    def __post_init__(self) -> None:
        if self.k <= 0 or self.m <= 0:
            raise MarginalError(f"fixed policy needs K >= 1 and M >= 1, got K={self.k}, M={self.m}")

    def decide(self, answers: Answers, budget: int) -> Decision:
        _check_budget(budget)
        if self.k * self.m > budget:
            raise MarginalError(f"policy {self.name} asks for K x M = {self.k * self.m} samples, over the budget {budget}")
        if self.k > len(answers):
            raise MarginalError(f"policy {self.name} needs {self.k} priors, the bank has {len(answers)}")
        missing = tuple((i, self.m - len(answers[i])) for i in range(self.k) if len(answers[i]) < self.m)
        if missing:
            return Decision(missing, f"fixed split K={self.k} x M={self.m}")
        return Decision((), "fixed split complete")


def repetition(budget: int, bank: int) -> Fixed:
    """All the budget on the default prior."""
    return Fixed(1, budget, "repetition")


def diversity(budget: int, bank: int) -> Fixed:
    """One sample per prior; when the bank is smaller than B, B // P samples on each of its P priors."""
    k = min(budget, bank)
    return Fixed(k, budget // k, "diversity")


@dataclass(frozen=True)
class Plan:
    """A recommended split per budget, fitted on a calibration run."""

    task: str
    model: str
    splits: Mapping[int, tuple[int, int]]
    """budget -> (K, M)."""
    weights: tuple[float, ...] | None = None

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        try:
            d = json.loads(Path(path).read_text())
            splits = {int(b): (int(k), int(m)) for b, (k, m) in d["splits"].items()}
            return cls(d["task"], d["model"], splits, tuple(d["weights"]) if d.get("weights") else None)
        except FileNotFoundError:
            raise MarginalError(f"plan file not found: {path}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise MarginalError(f"{path} is not a plan file (expected task, model, splits): {e}") from None

    def save(self, path: str | Path) -> None:
        d = {"task": self.task, "model": self.model, "splits": {str(b): list(s) for b, s in self.splits.items()}}
        if self.weights is not None:
            d["weights"] = list(self.weights)
        Path(path).write_text(json.dumps(d, indent=2))

    def check(self, task: str, model: str) -> None:
        if (self.task, self.model) != (task, model):
            raise MarginalError(
                f"the plan was made for task {self.task!r} with model {self.model!r}, not {task!r} with {model!r}"
            )

    def policy(self, budget: int) -> Fixed:
        fits = [b for b in self.splits if b <= budget]
        if not fits:
            raise MarginalError(f"the plan has no split for a budget of {budget} or less (it has {sorted(self.splits)})")
        k, m = self.splits[max(fits)]
        return Fixed(k, m, "planned")


@dataclass(frozen=True)
class Adaptive:
    """Label-free sequential allocation with early stopping.

    Probe ``probe_k`` priors x ``probe_m`` samples. Then, after each batch:
    stop when the posterior probability that the current leader is still the
    leader once the whole budget is spent reaches ``threshold`` (Dirichlet
    posterior over the answers seen plus one unseen-answer bucket, Monte Carlo
    with a seed derived from the counts, so decisions replay exactly).
    Otherwise compare the newest prior's agreement with the leader against the
    pooled mixture's (online drift): if it agrees at least as well (aligned),
    open the next prior of the bank; if less (misaligned), or the bank is
    exhausted, spend ``step`` more samples on the best-agreeing prior. While
    the top answers are tied there is no leader to agree with: open a prior.
    """

    probe_k: int = 2
    probe_m: int = 2
    step: int = 2
    threshold: float = 0.95
    draws: int = 512
    name: str = "adaptive"

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise MarginalError(f"adaptive threshold must be in (0, 1], got {self.threshold}")
        if min(self.probe_k, self.probe_m, self.step) < 1:
            raise MarginalError("adaptive probe_k, probe_m and step must be >= 1")

    def decide(self, answers: Answers, budget: int) -> Decision:
        _check_budget(budget)
        spent = used(answers)
        left = budget - spent
        if left <= 0:
            return Decision((), "budget spent")
        opened = [i for i, a in enumerate(answers) if a]
        if not opened:
            k = min(self.probe_k, len(answers), budget)
            m = max(1, min(self.probe_m, budget // k))
            return Decision(tuple((i, m) for i in range(k)), f"probe {k} priors x {m} samples")
        counts = vote(answers)
        if not counts:  # every sample so far failed: widen to a new prior or repeat
            nxt = len(opened) if len(opened) < len(answers) else opened[0]
            return Decision(((nxt, min(self.step, left)),), "no valid answer yet")
        p_stay = self.p_leader_stays(counts, left)
        if p_stay >= self.threshold:
            return Decision((), f"leader certain: P(stays leader) = {p_stay:.3f} >= {self.threshold}")
        ranked = sorted(counts.values(), reverse=True)
        n = min(self.step, left)
        if len(ranked) > 1 and ranked[0] == ranked[1] and len(opened) < len(answers):
            nxt = next(i for i in range(len(answers)) if not answers[i])
            return Decision(((nxt, n),), f"tied leaders: open prior {nxt} (P(stays) {p_stay:.2f})")
        leader = max(counts, key=lambda a: (counts[a], a))
        agree = [_agreement(answers[i], leader) for i in range(len(answers))]
        pooled = counts[leader] / sum(counts.values())
        newest = opened[-1]
        if agree[newest] >= pooled and len(opened) < len(answers):
            nxt = next(i for i in range(len(answers)) if not answers[i])
            return Decision(
                ((nxt, n),),
                f"aligned: newest prior agrees {agree[newest]:.2f} >= pooled {pooled:.2f}; "
                f"open prior {nxt} (P(stays) {p_stay:.2f})",
            )
        best = max(opened, key=lambda i: (agree[i], -i))
        why = "bank exhausted" if len(opened) == len(answers) else (
            f"misaligned: newest prior agrees {agree[newest]:.2f} < pooled {pooled:.2f}"
        )
        return Decision(((best, n),), f"{why}; repeat best-agreeing prior {best} (P(stays) {p_stay:.2f})")

    def p_leader_stays(self, counts: Mapping[str, float], left: int) -> float:
        """P(the current leader still leads after ``left`` more samples), Dirichlet-multinomial."""
        names = sorted(counts, key=lambda a: (-counts[a], a))
        c = np.array([counts[a] for a in names] + [0.0])
        rng = np.random.default_rng(derive_seed(tuple(c.tolist()), left))
        theta = rng.dirichlet(c + 0.5, size=self.draws)
        final = c + rng.multinomial(left, theta) if left > 0 else np.broadcast_to(c, theta.shape)
        # The unseen bucket may hold many answers; treating it as one is conservative.
        others = final[:, 1:].max(axis=1)
        return float(np.mean(final[:, 0] > others))


def _agreement(ans: Sequence[str | None], leader: str) -> float:
    valid = [a for a in ans if a is not None]
    return sum(a == leader for a in valid) / len(valid) if valid else 0.0


POLICIES = ("adaptive", "fixed", "repetition", "diversity", "planned")


def make_policy(name: str, budget: int, bank: int, *, k: int | None = None, plan: Plan | None = None, threshold: float = 0.95) -> Policy:
    """The policy a CLI name stands for, sized for ``budget`` and a bank of ``bank`` priors."""
    _check_budget(budget)
    if name == "adaptive":
        return Adaptive(threshold=threshold)
    if name == "repetition":
        return repetition(budget, bank)
    if name == "diversity":
        return diversity(budget, bank)
    if name == "fixed":
        if k is None or budget % k:
            raise MarginalError(f"fixed policy needs --priors K dividing the budget {budget}, got K={k}")
        return Fixed(k, budget // k)
    if name == "planned":
        if plan is None:
            raise MarginalError("policy 'planned' needs --plan plan.json (from marginal analyze --save-plan)")
        return plan.policy(budget)
    raise unknown("policy", name, POLICIES)
