"""The BlendIn mixing rule as pure numpy functions.

At an intervention (the base's top probability is below ``gamma``) the base's
next-token distribution p_B and the guide's p_G are compared over the union of
their top-k lists (k = 100 by default):

- ``auto_alpha``: alpha = max p_G / (max p_B + max p_G) + 0.1 * p_B(argmax p_G),
  clipped to [0, 1]; a fixed alpha is used as given.
- ``mix``: linear p = alpha p_G + (1 - alpha) p_B, or geometric (log-linear)
  log p = alpha log p_G + (1 - alpha) log p_B, over the union, renormalized.

Candidates are matched by token id when both models share a vocabulary
(``union_by_id``) and by token string otherwise (``union_by_string``: a key is
the token's bytes; every end-of-generation token maps to the one key ``EOG``;
tokens with no text, such as control tokens other than EOG, are dropped). A
string key's probability is the sum over the vocabulary's tokens with that
string (almost always one). A candidate that one model has no single token for
gets probability 0 on that side, so under the geometric rule it can only win
with alpha = 1.

Left out: the sampler (``sample``, in the same module, applies the request's
temperature / top-k / top-p / min-p to any candidate distribution) is the only
randomness; nothing here touches an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .spec import Alpha, Combine

__all__ = [
    "EOG",
    "Alpha",
    "Candidates",
    "Combine",
    "StringVocab",
    "alpha_for",
    "auto_alpha",
    "filtered",
    "mix",
    "sample",
    "union_by_id",
    "union_by_string",
]

EOG = b"\x00<EOG>"
"""The string key of every end-of-generation token (no real token has these bytes)."""


@dataclass(frozen=True)
class Candidates:
    """The union of the two top-k lists, aligned: position i is one candidate."""

    base_ids: np.ndarray
    """Base token id of each candidate (-1: the base has no single token for it)."""
    guide_ids: np.ndarray
    """Guide token id of each candidate (-1: the guide has no single token for it)."""
    pb: np.ndarray
    """Base probability of each candidate (float64)."""
    pg: np.ndarray
    """Guide probability of each candidate (float64)."""
    max_pb: float
    """The base's top probability over its whole vocabulary."""
    max_pg: float
    """The guide's top probability over its whole vocabulary."""
    guide_top: int
    """Index (into the candidates) of the guide's most likely candidate."""
    topk_overlap: float
    """|top-k(p_B) and top-k(p_G)| / k: how much the two lists agree."""
    keys: tuple[bytes, ...] | None = None
    """String keys of the candidates (string matching only)."""


def auto_alpha(max_pb: float, max_pg: float, pb_at_guide_top: float) -> float:
    """BlendIn's reliability weight: max p_G / (max p_B + max p_G) + 0.1 p_B(argmax p_G), clipped to [0, 1]."""
    s = max_pb + max_pg
    a = (max_pg / s if s > 0 else 0.5) + 0.1 * pb_at_guide_top
    return float(min(1.0, max(0.0, a)))


def alpha_for(c: Candidates, alpha: Alpha) -> float:
    """The weight used at this step: ``auto_alpha`` of the candidates, or the fixed value."""
    if alpha == "auto":
        return auto_alpha(c.max_pb, c.max_pg, float(c.pb[c.guide_top]))
    return float(alpha)


def mix(pb: np.ndarray, pg: np.ndarray, alpha: float, combine: Combine = "linear") -> np.ndarray:
    """The mixed distribution over aligned candidates, renormalized to sum to 1.

    Geometric mixing of candidates that are 0 on a side they need falls back to
    the linear rule when every candidate would get 0 (disjoint string lists).
    """
    pb = np.asarray(pb, dtype=np.float64)
    pg = np.asarray(pg, dtype=np.float64)
    if combine == "linear":
        p = alpha * pg + (1.0 - alpha) * pb
    elif combine == "geometric":
        with np.errstate(divide="ignore", invalid="ignore"):
            lb, lg = np.log(pb), np.log(pg)
            lp = (lg * alpha if alpha > 0 else 0.0) + (lb * (1.0 - alpha) if alpha < 1 else 0.0)
            lp = np.where(np.isnan(lp), -np.inf, lp)
        if not np.isfinite(lp).any():
            return mix(pb, pg, alpha, "linear")
        p = np.exp(lp - lp.max())
    else:
        raise ValueError(f"combine must be 'linear' or 'geometric', got {combine!r}")
    total = p.sum()
    if total <= 0:  # both sides give every candidate 0 (cannot happen with full rows)
        return np.full(len(p), 1.0 / len(p))
    return p / total


def _topk(lp: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries, largest first (ties: lower index first)."""
    k = min(k, lp.shape[0])
    idx = np.argpartition(-lp, k - 1)[:k]
    return idx[np.lexsort((idx, -lp[idx]))]


def union_by_id(lp_b: np.ndarray, lp_g: np.ndarray, k: int) -> Candidates:
    """Candidates of two models that share a vocabulary: the base's top-k, then the guide's others."""
    if lp_b.shape != lp_g.shape:
        raise ValueError(f"id matching needs rows of the same vocabulary, got {lp_b.shape} and {lp_g.shape}")
    tb, tg = _topk(lp_b, k), _topk(lp_g, k)
    in_b = np.isin(tg, tb)
    ids = np.concatenate([tb, tg[~in_b]])
    pb = np.exp(lp_b[ids].astype(np.float64))
    pg = np.exp(lp_g[ids].astype(np.float64))
    guide_top = int(np.nonzero(ids == tg[0])[0][0])
    return Candidates(
        base_ids=ids,
        guide_ids=ids,
        pb=pb,
        pg=pg,
        max_pb=float(np.exp(float(lp_b[tb[0]]))),
        max_pg=float(np.exp(float(lp_g[tg[0]]))),
        guide_top=guide_top,
        topk_overlap=float(in_b.sum()) / len(tb),
    )


@dataclass(frozen=True)
class StringVocab:
    """A vocabulary seen by its strings: each token's key, and each key's tokens."""

    keys: tuple[bytes | None, ...]
    """Key of each token id (None: the token has no text and is never matched)."""
    tokens: Mapping[bytes, tuple[int, ...]]
    """Token ids of each key."""

    @classmethod
    def build(cls, pieces: Sequence[bytes], eog: Sequence[bool]) -> StringVocab:
        keys: list[bytes | None] = []
        groups: dict[bytes, list[int]] = {}
        for t, (piece, is_eog) in enumerate(zip(pieces, eog)):
            key = EOG if is_eog else (piece or None)
            keys.append(key)
            if key is not None:
                groups.setdefault(key, []).append(t)
        return cls(tuple(keys), {k: tuple(v) for k, v in groups.items()})

    def best(self, key: bytes, lp: np.ndarray) -> tuple[int, float]:
        """The most likely token with this key (-1 when none) and the key's total probability."""
        toks = self.tokens.get(key)
        if not toks:
            return -1, 0.0
        if len(toks) == 1:
            return toks[0], float(np.exp(float(lp[toks[0]])))
        ps = np.exp(lp[list(toks)].astype(np.float64))
        return toks[int(np.argmax(ps))], float(ps.sum())


def union_by_string(lp_b: np.ndarray, lp_g: np.ndarray, k: int, vb: StringVocab, vg: StringVocab) -> Candidates:
    """Candidates of two models with different vocabularies, matched by token string.

    The candidates are the keys of the base's top-k tokens, then the guide's
    other keys (tokens without a key are skipped, so a list can be shorter than k).
    """
    tb, tg = _topk(lp_b, k), _topk(lp_g, k)
    kb = list(dict.fromkeys(vb.keys[t] for t in tb if vb.keys[t] is not None))
    kg = list(dict.fromkeys(vg.keys[t] for t in tg if vg.keys[t] is not None))
    set_b = set(kb)
    keys = kb + [x for x in kg if x not in set_b]
    n = len(keys)
    bid = np.full(n, -1, dtype=np.int64)
    gid = np.full(n, -1, dtype=np.int64)
    pb = np.zeros(n)
    pg = np.zeros(n)
    for i, key in enumerate(keys):
        bid[i], pb[i] = vb.best(key, lp_b)
        gid[i], pg[i] = vg.best(key, lp_g)
    guide_top = int(np.argmax(pg)) if n else 0
    return Candidates(
        base_ids=bid,
        guide_ids=gid,
        pb=pb,
        pg=pg,
        max_pb=float(np.exp(float(lp_b[tb[0]]))),
        max_pg=float(np.exp(float(lp_g[tg[0]]))),
        guide_top=guide_top,
        topk_overlap=len(set_b.intersection(kg)) / len(tb),
        keys=tuple(keys),
    )


def filtered(p: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> np.ndarray:
    """A distribution after temperature -> top-k -> top-p -> min-p (the vLLM order), renormalized.

    ``temperature`` must be > 0 (0 is greedy: take the argmax instead).
    """
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lp = np.log(p) / temperature
    q = np.exp(lp - lp.max())
    if top_k and top_k < len(q):
        kth = np.partition(q, len(q) - top_k)[len(q) - top_k]
        q = np.where(q >= kth, q, 0.0)
    q /= q.sum()
    if top_p < 1.0:
        order = np.argsort(-q, kind="stable")
        cum = np.cumsum(q[order])
        keep = np.searchsorted(cum, top_p) + 1  # smallest prefix with mass >= top_p
        mask = np.zeros(len(q), dtype=bool)
        mask[order[:keep]] = True
        q = np.where(mask, q, 0.0)
        q /= q.sum()
    if min_p > 0.0:
        q = np.where(q >= min_p * q.max(), q, 0.0)
        q /= q.sum()
    return q


def sample(
    p: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> int:
    """An index drawn from ``filtered(p, ...)`` with ``rng``; the argmax when temperature is 0."""
    if temperature == 0:
        return int(np.argmax(p))
    q = filtered(p, temperature, top_k, top_p, min_p)
    return int(min(np.searchsorted(np.cumsum(q), rng.random() * q.sum(), side="right"), len(q) - 1))
