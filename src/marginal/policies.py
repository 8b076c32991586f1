"""Allocation policies: which prior gets the next samples, and when to stop.

A policy is a pure function of what has been seen for one question: the bank
size, the budget, and the canonical answers drawn so far under each prior
(None for a failed sample). It returns the next ``Decision``: a request
(prior index -> number of new samples) or a stop. A decision carries typed
fields (its kind, the regime it saw, P(leader stays), why it stopped) for
code to read, and a human sentence (``reason``) that no code parses. No
policy talks to a backend, so a logged run replays to the same decisions.

Policies (the ``POLICIES`` registry): ``fixed`` (K x M), ``repetition``
(K = 1), ``diversity`` (M = 1), ``planned`` (K x M read from a
``SplitPlan`` file made by ``marginal analyze --save-plan``, on the plan's selected priors
when it names them), ``adaptive``
(label-free, sequential, early stopping). Votes and their tie rule are
``marginal.vote``'s. Left out: weighted votes inside the adaptive rule (it
votes uniformly).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import MarginalError
from .registry import Registry
from .types import derive_seed
from .vote import Answers, ranked, tally, top, winner

KINDS = ("probe", "open", "repeat", "stop")
"""What a decision does: probe (samples asked for without reading the answers: adaptive's first
step, a fixed split), open (a prior not sampled yet), repeat (more of a sampled prior), stop."""

REGIMES = ("aligned", "misaligned")
"""What an adaptive step saw: the newest prior agrees with the leader at least as well as the
pooled vote (aligned) or less (misaligned)."""

STOP_RULES = ("stays", "plurality")
"""Adaptive's stopping rules: the leader stays leader once the budget is spent, or is the plurality answer."""

STOPS = ("budget spent", "leader certain", "fixed split complete", "pool exhausted")
"""Why a question stopped; "pool exhausted" is the replay's (a request past what a pool holds)."""


@dataclass(frozen=True)
class Decision:
    """The next step for one question.

    ``kind`` defaults to "stop" when nothing is requested; a request without a
    kind (a policy that does not say, or a decision stored before kinds were)
    keeps ``kind=None``.
    """

    requests: tuple[tuple[int, int], ...]
    """(prior index, new samples) pairs; empty means stop."""
    reason: str
    """A sentence for people (logs, ``marginal ask --steps``); nothing parses it."""
    kind: str | None = None
    """One of ``KINDS``."""
    regime: str | None = None
    """One of ``REGIMES`` where the step compared agreements, else None."""
    p_leader_stays: float | None = None
    """The stopping probability, where the policy computed it: P(the leader stays the leader under the
    remaining budget) for ``adaptive``, P(the leader is the plurality answer) for ``adaptive-plurality``."""
    stop_kind: str | None = None
    """Why it stopped (one of ``STOPS``), for a stop that says."""

    def __post_init__(self) -> None:
        if self.kind is None and not self.requests:
            object.__setattr__(self, "kind", "stop")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"decision kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "stop") != (not self.requests):
            raise ValueError(f"decision kind {self.kind!r} does not fit its requests {self.requests!r}")
        if self.regime is not None and self.regime not in REGIMES:
            raise ValueError(f"decision regime must be one of {', '.join(REGIMES)} or None, got {self.regime!r}")
        if self.stop_kind is not None and (self.requests or self.stop_kind not in STOPS):
            raise ValueError(f"stop_kind {self.stop_kind!r} needs a stop and one of {', '.join(STOPS)}")

    @property
    def stop(self) -> bool:
        return not self.requests

    @property
    def size(self) -> int:
        return sum(n for _, n in self.requests)

    def record(self) -> str:
        """The typed fields as canonical JSON (what the store keeps beside requests and reason)."""
        return json.dumps(
            {
                "kind": self.kind,
                "regime": self.regime,
                "p_leader_stays": self.p_leader_stays,
                "stop_kind": self.stop_kind,
            },
            sort_keys=True,
        )

    @classmethod
    def from_record(cls, requests: Sequence[Sequence[int]], reason: str, record: str | None) -> Decision:
        """A stored decision back; ``record`` None (a row stored before typed fields) leaves them unset."""
        d = json.loads(record) if record else {}
        return cls(
            tuple((int(i), int(n)) for i, n in requests),
            reason,
            d.get("kind"),
            d.get("regime"),
            d.get("p_leader_stays"),
            d.get("stop_kind"),
        )


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def decide(self, answers: Answers, budget: int) -> Decision: ...


def used(answers: Answers) -> int:
    return sum(len(a) for a in answers)


def _check_budget(budget: int) -> None:
    if not isinstance(budget, int) or budget <= 0:
        raise MarginalError(f"budget must be a positive integer, got {budget!r}")


@dataclass(frozen=True)
class Fixed:
    """K priors x M samples each: the first K in bank order, or the bank positions ``priors``."""

    k: int
    m: int
    name: str = "fixed"
    priors: tuple[int, ...] | None = None
    """Bank positions of the K priors, in order (a plan's selected priors); None: the first K."""

    def __post_init__(self) -> None:
        if self.k <= 0 or self.m <= 0:
            raise MarginalError(f"fixed policy needs K >= 1 and M >= 1, got K={self.k}, M={self.m}")
        if self.priors is not None and len(self.priors) != self.k:
            raise MarginalError(f"fixed policy with K={self.k} names {len(self.priors)} priors {self.priors}")

    def decide(self, answers: Answers, budget: int) -> Decision:
        _check_budget(budget)
        if self.k * self.m > budget:
            raise MarginalError(
                f"policy {self.name} asks for K x M = {self.k * self.m} samples, over the budget {budget}"
            )
        chosen = range(self.k) if self.priors is None else self.priors
        if max(chosen) >= len(answers):
            raise MarginalError(f"policy {self.name} needs {max(chosen) + 1} priors, the bank has {len(answers)}")
        missing = tuple((i, self.m - len(answers[i])) for i in chosen if len(answers[i]) < self.m)
        if missing:
            return Decision(missing, f"fixed split K={self.k} x M={self.m}", "probe")
        return Decision((), "fixed split complete", stop_kind="fixed split complete")


def repetition(budget: int, bank: int) -> Fixed:
    """All the budget on the default prior."""
    return Fixed(1, budget, "repetition")


def diversity(budget: int, bank: int) -> Fixed:
    """One sample per prior; when the bank is smaller than B, B // P samples on each of its P priors."""
    k = min(budget, bank)
    return Fixed(k, budget // k, "diversity")


@dataclass(frozen=True)
class SplitPlan:
    """A recommended split per budget, fitted on a calibration run (``marginal analyze --save-plan``).

    With ``priors`` (``--select-bank``): a split's K priors are the first K of these, by name, wherever
    they sit in the bank it runs on; without, the first K of that bank."""

    task: str
    model: str
    splits: Mapping[int, tuple[int, int]]
    """budget -> (K, M)."""
    priors: tuple[str, ...] | None = None
    """The selected priors, in selection order (None: bank order)."""

    @classmethod
    def load(cls, path: str | Path) -> SplitPlan:
        try:
            d = json.loads(Path(path).read_text())
            splits = {int(b): (int(k), int(m)) for b, (k, m) in d["splits"].items()}
            priors = d.get("priors")
            if priors is not None and not (isinstance(priors, list) and all(isinstance(p, str) for p in priors)):
                raise TypeError(f"priors must be a list of prior names, got {priors!r}")
            return cls(d["task"], d["model"], splits, None if priors is None else tuple(priors))
        except FileNotFoundError:
            raise MarginalError(f"plan file not found: {path}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise MarginalError(f"{path} is not a plan file (expected task, model, splits): {e}") from None

    def save(self, path: str | Path) -> None:
        d: dict = {"task": self.task, "model": self.model, "splits": {str(b): list(s) for b, s in self.splits.items()}}
        if self.priors is not None:
            d["priors"] = list(self.priors)
        Path(path).write_text(json.dumps(d, indent=2))

    def check(self, task: str, model: str) -> None:
        if (self.task, self.model) != (task, model):
            raise MarginalError(
                f"the plan was made for task {self.task!r} with model {self.model!r}, not {task!r} with {model!r}"
            )

    def policy(self, budget: int, bank: Sequence[str] | None = None) -> Fixed:
        """The plan's split for ``budget`` (the largest planned budget <= it); ``bank``: the prior
        names of the bank it runs on, needed when the plan names its priors."""
        fits = [b for b in self.splits if b <= budget]
        if not fits:
            raise MarginalError(
                f"the plan has no split for a budget of {budget} or less (it has {sorted(self.splits)})"
            )
        k, m = self.splits[max(fits)]
        if self.priors is None:
            return Fixed(k, m, "planned")
        if bank is None:
            raise MarginalError(f"the plan selects priors ({', '.join(self.priors)}): give the bank's prior names")
        if k > len(self.priors):
            raise MarginalError(f"the plan's split K={k} needs more priors than it selects ({len(self.priors)})")
        from .analysis.subbank import pick_priors

        return Fixed(k, m, "planned", pick_priors(self.priors[:k], bank, "the bank"))


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
    the top answers are tied and a prior is still unopened, there is no leader
    to agree with: open a prior. Once the bank is exhausted, the leader is the
    vote's winner under ``marginal.vote``'s tie rule.

    ``rule="plurality"`` stops instead when the posterior probability that the
    leader is the plurality answer of the distribution being sampled (the
    pooled answers of the priors opened so far) reaches ``threshold``, whatever
    budget is left: Adaptive-Consistency's criterion (Aggarwal et al. 2023).
    At equal thresholds it is the stricter rule (P(stays) also counts the
    leader's head start in the votes already cast: 4 votes to 1 give 0.98
    with 4 samples left, 0.91 with 60, and 0.92 for the plurality), so compare
    the two along their thresholds.
    """

    probe_k: int = 2
    probe_m: int = 2
    step: int = 2
    threshold: float = 0.95
    draws: int = 512
    rule: str = "stays"
    """"stays": P(leader stays leader once the budget is spent); "plurality": P(leader is the mode)."""
    name: str = "adaptive"

    def __post_init__(self) -> None:
        if self.rule not in STOP_RULES:
            raise MarginalError(f"adaptive rule must be one of {', '.join(STOP_RULES)}, got {self.rule!r}")
        if not 0 < self.threshold <= 1:
            raise MarginalError(f"adaptive threshold must be in (0, 1], got {self.threshold}")
        if min(self.probe_k, self.probe_m, self.step) < 1:
            raise MarginalError("adaptive probe_k, probe_m and step must be >= 1")

    def decide(self, answers: Answers, budget: int) -> Decision:
        _check_budget(budget)
        left = budget - used(answers)
        if left <= 0:
            return Decision((), "budget spent", stop_kind="budget spent")
        opened = [i for i, a in enumerate(answers) if a]
        if not opened:
            k = min(self.probe_k, len(answers), budget)
            m = max(1, min(self.probe_m, budget // k))
            return Decision(tuple((i, m) for i in range(k)), f"probe {k} priors x {m} samples", "probe")
        nxt = _unopened(answers)
        n = min(self.step, left)
        counts = tally(answers)
        if not counts:  # every sample so far failed: widen to a new prior or repeat
            return Decision(
                (((opened[0], n),) if nxt is None else ((nxt, n),)),
                "no valid answer yet",
                "repeat" if nxt is None else "open",
            )
        plural = self.rule == "plurality"
        p_stay = self.p_leader_is_plurality(counts) if plural else self.p_leader_stays(counts, left)
        if p_stay >= self.threshold:
            what = "is the plurality" if plural else "stays leader"
            return Decision(
                (),
                f"leader certain: P({what}) = {p_stay:.3f} >= {self.threshold}",
                p_leader_stays=p_stay,
                stop_kind="leader certain",
            )
        if len(top(counts)) > 1 and nxt is not None:
            return Decision(
                ((nxt, n),),
                f"tied leaders: open prior {nxt} ({self._p_name} {p_stay:.2f})",
                "open",
                p_leader_stays=p_stay,
            )
        return self._follow(answers, counts, opened, nxt, n, p_stay, self._p_name)

    @property
    def _p_name(self) -> str:
        return "P(plurality)" if self.rule == "plurality" else "P(stays)"

    @staticmethod
    def _follow(
        answers: Answers,
        counts: Mapping[str, float],
        opened: list[int],
        nxt: int | None,
        n: int,
        p_stay: float,
        p_name: str,
    ) -> Decision:
        """Open the next prior when the newest agrees with the leader as well as the pool does, else repeat."""
        leader = winner(counts)
        agree = [_agreement(a, leader) for a in answers]
        pooled = counts[leader] / sum(counts.values()) if leader is not None else 0.0
        newest = opened[-1]
        if agree[newest] >= pooled and nxt is not None:
            return Decision(
                ((nxt, n),),
                f"aligned: newest prior agrees {agree[newest]:.2f} >= pooled {pooled:.2f}; "
                f"open prior {nxt} ({p_name} {p_stay:.2f})",
                "open",
                "aligned",
                p_stay,
            )
        best = max(opened, key=lambda i: (agree[i], -i))
        why = (
            "bank exhausted"
            if nxt is None
            else (f"misaligned: newest prior agrees {agree[newest]:.2f} < pooled {pooled:.2f}")
        )
        return Decision(
            ((best, n),),
            f"{why}; repeat best-agreeing prior {best} ({p_name} {p_stay:.2f})",
            "repeat",
            None if nxt is None else "misaligned",
            p_stay,
        )

    def p_leader_stays(self, counts: Mapping[str, float], left: int) -> float:
        """P(the current leader still leads after ``left`` more samples), Dirichlet-multinomial."""
        c = np.array([counts[a] for a in ranked(counts)] + [0.0])
        rng = np.random.default_rng(derive_seed(tuple(c.tolist()), left))
        theta = rng.dirichlet(c + 0.5, size=self.draws)
        final = c + rng.multinomial(left, theta) if left > 0 else np.broadcast_to(c, theta.shape)
        # The unseen bucket may hold many answers; treating it as one is conservative.
        others = final[:, 1:].max(axis=1)
        return float(np.mean(final[:, 0] > others))

    def p_leader_is_plurality(self, counts: Mapping[str, float]) -> float:
        """P(the leader has the largest share of the answer distribution), Dirichlet posterior."""
        c = np.array([counts[a] for a in ranked(counts)] + [0.0])
        rng = np.random.default_rng(derive_seed(tuple(c.tolist()), "plurality"))
        theta = rng.dirichlet(c + 0.5, size=self.draws)
        return float(np.mean(theta[:, 0] > theta[:, 1:].max(axis=1)))


def _unopened(answers: Answers) -> int | None:
    """The first prior with no sample yet (None when every prior has some)."""
    return next((i for i, a in enumerate(answers) if not a), None)


def _agreement(ans: Sequence[str | None], leader: str | None) -> float:
    valid = [a for a in ans if a is not None]
    return sum(a == leader for a in valid) / len(valid) if valid else 0.0


# -- the policy registry ------------------------------------------------------------------
PolicyFactory = Callable[..., Policy]
"""``factory(budget, bank, *, k, plan, threshold, names) -> Policy`` (see ``make_policy``)."""


def _adaptive(budget: int, bank: int, *, threshold: float, **_) -> Policy:
    return Adaptive(threshold=threshold)


def _adaptive_plurality(budget: int, bank: int, *, threshold: float, **_) -> Policy:
    return Adaptive(threshold=threshold, rule="plurality", name="adaptive-plurality")


def _fixed(budget: int, bank: int, *, k: int | None, **_) -> Policy:
    if k is None or budget % k:
        raise MarginalError(f"fixed policy needs --priors K dividing the budget {budget}, got K={k}")
    return Fixed(k, budget // k)


def _planned(budget: int, bank: int, *, plan: SplitPlan | None, names: Sequence[str] | None = None, **_) -> Policy:
    if plan is None:
        raise MarginalError("policy 'planned' needs --plan plan.json (from marginal analyze --save-plan)")
    return plan.policy(budget, names)


POLICIES: Registry[PolicyFactory] = Registry("policy")
POLICIES.add("adaptive", _adaptive, "probe 2 priors x 2 samples, then open or repeat priors as they agree; stop early")
POLICIES.add(
    "adaptive-plurality",
    _adaptive_plurality,
    "adaptive, stopping once the leader is the plurality answer with posterior --threshold (Adaptive-Consistency)",
)
POLICIES.add("fixed", _fixed, "K priors x M samples, K from --priors (it must divide the budget)")
POLICIES.add(
    "repetition", lambda budget, bank, **_: repetition(budget, bank), "K = 1: the whole budget on the default prior"
)
POLICIES.add(
    "diversity",
    lambda budget, bank, **_: diversity(budget, bank),
    "M = 1: one sample per prior (B // P each when B > P)",
)
POLICIES.add("planned", _planned, "the K x M that marginal analyze --save-plan chose for the budget (--plan)")


def make_policy(
    name: str,
    budget: int,
    bank: int,
    *,
    k: int | None = None,
    plan: SplitPlan | None = None,
    threshold: float = 0.95,
    names: Sequence[str] | None = None,
) -> Policy:
    """The policy a CLI name stands for (``POLICIES``), sized for ``budget`` and a bank of ``bank`` priors
    (``names``: theirs, in bank order, for a plan that selects priors by name)."""
    _check_budget(budget)
    return POLICIES.get(name)(budget, bank, k=k, plan=plan, threshold=threshold, names=names)
