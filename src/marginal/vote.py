"""The plurality vote: one rule for live runs, replays and the exact grid.

A vote is over canonical answers, given per prior in bank order (``None`` is
a failed sample: it never votes). ``tally`` counts the answers, uniformly or
with one non-negative weight per prior; every other function reads those
counts, so the session, the policies, the replay and the analyses decide a
vote and its credit the same way.

**Tie rule.** Answers are ranked by count, largest first; among equal counts
the alphabetically smallest answer (Python string order, so "10" < "9")
comes first. The winner is the first answer of that ranking. It is
deterministic, needs nothing but the answers, and does not depend on the
order the samples were drawn in, so a replay in another sample order, a
resumed run and a live run name the same winner for the same counts.
Weighted counts are compared after rounding to ``TIE_DECIMALS`` decimals, so
sums that differ only by floating-point error tie. Only positive counts
vote: a vote with none is empty (no winner, margin 0, credit 0).

**Credit** of a vote, for gold given as one answer or a set of correct
answers, with T the tied top answers:

- ``split``: |T ∩ gold| / |T| (1/|T| when gold is one of them): the
  expected credit of breaking the tie uniformly at random;
- ``strict``: 1 only when T is a single answer and it is correct;
- 0 for an empty vote (every sample failed).

Credit does not depend on which tied answer the tie rule names as winner;
the winner is what a live run reports (``Session.solve``'s ``answer``).
``credit_array`` is the same credit, vectorized over count vectors, with
the correct answers given as one column or a mask of columns (the analyses'
pools).

Left out: voting rules other than plurality (e.g. logprob-weighted or
ranked-choice votes) and per-sample weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np

from .errors import MarginalError

Answers = Sequence[Sequence["str | None"]]
"""Per prior in bank order, the canonical answers drawn (None = failed sample)."""

TIES = ("split", "strict")
"""How a tie at the top is credited (see the module docstring)."""

TIE_DECIMALS = 9
"""Counts are compared after rounding to this many decimals (weighted sums tie exactly)."""


def tally(answers: Answers, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Vote counts over all priors: sum of the prior's weight (1 when uniform) per valid sample.

    Failed samples (None) and priors of weight 0 do not vote.
    """
    if weights is not None and len(weights) != len(answers):
        raise MarginalError(f"a weighted vote needs one weight per prior ({len(answers)}), got {len(weights)}")
    counts: dict[str, float] = {}
    for i, ans in enumerate(answers):
        w = 1 if weights is None else weights[i]
        if w < 0:
            raise MarginalError(f"vote weights must be >= 0, got {w} for prior {i}")
        if w == 0:
            continue
        for a in ans:
            if a is not None:
                counts[a] = counts.get(a, 0) + w
    return counts


def _level(x: float) -> float:
    return round(x, TIE_DECIMALS)


def ranked(counts: Mapping[str, float]) -> list[str]:
    """The voting answers (positive count), largest count first; ties: alphabetically smallest first."""
    return sorted((a for a, c in counts.items() if _level(c) > 0), key=lambda a: (-_level(counts[a]), a))


def top(counts: Mapping[str, float]) -> tuple[str, ...]:
    """The tied top answers T, in ranking order (empty for an empty vote)."""
    order = ranked(counts)
    if not order:
        return ()
    best = _level(counts[order[0]])
    return tuple(a for a in order if _level(counts[a]) == best)


def winner(counts: Mapping[str, float]) -> str | None:
    """The plurality answer under the tie rule; None for an empty vote."""
    order = ranked(counts)
    return order[0] if order else None


def label_free_margin(counts: Mapping[str, float]) -> float:
    """Top-1 share minus top-2 share of the vote (0 for an empty vote)."""
    order = ranked(counts)
    total = sum(counts[a] for a in order)
    if not order:
        return 0.0
    second = counts[order[1]] if len(order) > 1 else 0.0
    return (counts[order[0]] - second) / total


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise MarginalError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")


def credit(counts: Mapping[str, float], gold: str | AbstractSet[str], ties: str = "split") -> float:
    """Credit of the vote for ``gold`` (one answer, or the set of correct answers); see the module docstring."""
    _check_ties(ties)
    correct = gold if isinstance(gold, AbstractSet) else {gold}
    t = top(counts)
    if not t:
        return 0.0
    if ties == "strict":
        return float(len(t) == 1 and t[0] in correct)
    return sum(a in correct for a in t) / len(t)


def credit_array(counts: np.ndarray, gold: int | np.ndarray, ties: str = "split") -> np.ndarray:
    """``credit`` of count vectors (..., A). ``gold``: the correct column (an int, or ints per vector), or a
    bool mask (..., A), broadcast against ``counts``, of the correct columns."""
    _check_ties(ties)
    counts = np.asarray(counts)
    if np.issubdtype(counts.dtype, np.floating):
        counts = np.round(counts, TIE_DECIMALS)
    mx = counts.max(axis=-1)
    gold = np.asarray(gold)
    if gold.dtype == bool:
        correct = np.broadcast_to(gold, counts.shape)
    else:
        correct = np.arange(counts.shape[-1]) == np.broadcast_to(gold, mx.shape)[..., None]
    at_top = (counts == mx[..., None]) & (mx > 0)[..., None]
    return top_share(at_top.sum(axis=-1), (at_top & correct).sum(axis=-1), ties)


def top_share(n_top: np.ndarray, n_good: np.ndarray, ties: str) -> np.ndarray:
    """Credit from ``n_top`` answers tied at the top, ``n_good`` of them correct: their share under
    ``split``, 1 only for a lone correct winner under ``strict``."""
    if ties == "strict":
        return ((n_top == 1) & (n_good == 1)).astype(float)
    return n_good / np.maximum(n_top, 1)


__all__ = [
    "TIES",
    "TIE_DECIMALS",
    "Answers",
    "credit",
    "credit_array",
    "label_free_margin",
    "ranked",
    "tally",
    "top",
    "top_share",
    "winner",
]
