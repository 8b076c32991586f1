"""One group of blended sequences decoded to the end: `GroupDecode`.

A group is a set of (prompt, completion) sequences that fit both engines at
once (`BlendBackend` cuts the call's sequences into groups). Decoding it:

- ``admit``: the base evaluates each distinct prompt once, on the sequence of
  its first completion; the other completions fork its cells.
- ``step`` (until every sequence has finished): the sequences whose base top
  probability is below gamma consult the guide, which catches up on what they
  emitted since its last call (one batch); each sequence picks its next token
  or string (the mixture at interventions, the base alone otherwise) and
  emits it; the base evaluates every live sequence's new tokens (one batch).
- ``finish``: a sequence's `BlendCompletion`, with its diagnostics.

An engine failure (a full KV cache) ends the group's live sequences with
error completions; the other groups of the call go on. Left out: the call's
admission into groups and the pair's checks (`backend`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.common import error_completion, find_stop
from ..errors import MarginalError
from ..types import FinishReason, SampleSpec
from .completion import BlendCompletion
from .engine import NextTokenLogprobs
from .mix import EOG, StringVocab, alpha_for, mix, sample, union_by_id, union_by_string
from .spec import BlendConfig


@dataclass
class Item:
    """One (prompt, completion) sequence of a call, before it is decoded."""

    index: int
    j: int
    key: str
    pb: list[int]
    """The prompt's tokens for the primary model (the base, or the solo model)."""
    pg: list[int] | None
    """The prompt's tokens for the guide (None when generating alone)."""
    budget: int
    seed: int


@dataclass
class Seq:
    """A sequence being decoded: its KV-cache handles, emitted text and diagnostics."""

    item: Item
    sid: int
    rng: np.random.Generator
    toks: list[int] = field(default_factory=list)
    """Primary-model tokens after the prompt (what its KV cache holds after the prompt)."""
    data: bytearray = field(default_factory=bytearray)
    lag: bool = False
    """The primary's tokens do not cover all of ``data`` (an incomplete UTF-8 tail)."""
    gsid: int = -1
    gtoks: list[int] = field(default_factory=list)
    """Guide tokens after its prompt."""
    grow: np.ndarray | None = None
    """The guide's last next-token row (reused when nothing new was emitted)."""
    logprob: float = 0.0
    steps: int = 0
    interventions: int = 0
    alpha_sum: float = 0.0
    overlap_sum: float = 0.0
    retok: int = 0
    scan: int = 0
    cached: bool = False


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def resync(
    e: NextTokenLogprobs, sid: int, prompt: Sequence[int], old: Sequence[int] | None, new: Sequence[int]
) -> list[int]:
    """Make sequence ``sid`` (prompt + ``old`` in the KV cache; None: empty) hold prompt + ``new``.

    Keeps the common prefix, drops the rest and returns the tokens to feed; []
    when nothing changed (the last row is still valid). When ``new`` is a strict
    prefix of the cached tokens its last token is fed again for a fresh row.
    """
    whole = list(prompt) + list(new)
    if old is None:
        return whole
    cached = list(prompt) + list(old)
    keep = _lcp(cached, whole)
    if keep == len(cached) == len(whole):
        return []
    if keep == len(whole):
        keep -= 1
    e.truncate(sid, keep)
    return whole[keep:]


def valid_prefix(data: bytes) -> tuple[str, bool]:
    """The longest UTF-8-decodable prefix of data as text, and whether bytes were held back."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), cut < len(data)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), False


def _first_eog(e: NextTokenLogprobs) -> int:
    return next(t for t in range(e.n_vocab) if e.is_eog(t))


class GroupDecode:
    """Decodes one group of sequences into ``results`` (see the module docstring).

    ``prim`` generates (the base, or the model of a solo variant); ``sec`` is
    the guide (None alone). ``cross``: the models are matched by string
    (``vocabs`` are their `StringVocab`), and ``factor`` is then 2 (a
    sequence may hold twice its budget in tokens). ``counters`` are the
    backend's work counters.
    """

    def __init__(
        self,
        seqs: list[Seq],
        spec: SampleSpec,
        config: BlendConfig,
        prim: NextTokenLogprobs,
        sec: NextTokenLogprobs | None,
        *,
        cross: bool,
        factor: int,
        vocabs: tuple[StringVocab | None, StringVocab | None],
        counters: dict[str, Any],
        results: list[list[BlendCompletion | None]],
    ) -> None:
        self.seqs, self.spec, self.cfg = seqs, spec, config
        self.prim, self.sec = prim, sec
        self.cross, self.factor = cross, factor
        self.vb, self.vg = vocabs
        self.c = counters
        self.results = results
        self.max_stop = max((len(s) for s in spec.stop), default=0)
        self.rows = np.empty((0, 0), dtype=np.float32)

    def run(self) -> None:
        if not self.admit():
            return
        live = list(range(len(self.seqs)))
        while live:
            live = self.step(live)

    # ------------------------------------------------------------- admit

    def admit(self) -> bool:
        """Evaluate each distinct prompt once and fork it to its other completions;
        False (every sequence failed) when the base cannot."""
        seqs, prim = self.seqs, self.prim
        first: dict[int, int] = {}
        for g, s in enumerate(seqs):
            first.setdefault(s.item.index, g)
        holders = sorted(first.values())
        try:
            hrows = prim.extend([seqs[g].sid for g in holders], [seqs[g].item.pb for g in holders])
        except MarginalError as e:
            for s in seqs:
                self.results[s.item.index][s.item.j] = error_completion(
                    str(e), s.item.seed, len(s.item.pb), BlendCompletion
                )
            return False
        self.c["base_tokens"] += sum(len(seqs[g].item.pb) for g in holders)
        self.rows = rows = np.empty((len(seqs), hrows.shape[1]), dtype=np.float32)
        for h, g in enumerate(holders):
            rows[g] = hrows[h]
        for g, s in enumerate(seqs):
            h = first[s.item.index]
            if h != g:
                prim.fork(seqs[h].sid, s.sid)
                rows[g] = rows[h]
                s.cached = True
        return True

    # -------------------------------------------------------------- step

    def step(self, live: list[int]) -> list[int]:
        """One token for every live sequence; the sequences still live after it."""
        grows = self.consult_guide(live)
        if grows is None:
            return []
        feeds: dict[int, list[int]] = {}
        for g in live:
            feed = self.emit(self.seqs[g], self.rows[g], grows.get(g))
            if feed is not None:
                feeds[g] = feed  # empty: the base's tokens did not change (an incomplete character)
        return self.feed_base(feeds)

    def consult_guide(self, live: list[int]) -> dict[int, np.ndarray] | None:
        """The guide's next-token rows of the sequences that intervene (the guide
        catching up in one batch); None when the guide failed (live sequences finished)."""
        sec, seqs = self.sec, self.seqs
        if sec is None:
            return {}
        maxp = np.exp(self.rows[live].max(axis=1).astype(np.float64))
        inter = [g for g, mp in zip(live, maxp) if mp < self.cfg.gamma]
        grows: dict[int, np.ndarray] = {}
        if not inter:
            return grows
        new = [g for g in inter if seqs[g].gsid < 0]
        for g, gs in zip(new, sec.open(len(new)) if new else []):
            seqs[g].gsid = gs
        call_g, call_t = [], []
        for g in inter:
            s = seqs[g]
            full = sec.tokenize_text(valid_prefix(bytes(s.data))[0]) if self.cross else list(s.toks)
            feed = resync(sec, s.gsid, s.item.pg, None if g in new else s.gtoks, full)  # type: ignore[arg-type]
            s.gtoks = full
            if feed:
                call_g.append(g)
                call_t.append(feed)
            else:
                grows[g] = s.grow  # type: ignore[assignment]
        if call_g:
            try:
                out = sec.extend([seqs[g].gsid for g in call_g], call_t)
            except MarginalError as e:
                for g in live:
                    self.finish(seqs[g], "error", error=f"guide: {e}")
                return None
            self.c["guide_calls"] += 1
            self.c["guide_tokens"] += sum(len(t) for t in call_t)
            for r, g in enumerate(call_g):
                seqs[g].grow = out[r]
                grows[g] = out[r]
        return grows

    def pick(self, s: Seq, row: np.ndarray, grow: np.ndarray | None) -> tuple[int, bytes, bool]:
        """(base token or -1, string when matched by string, end of generation) of the next step."""
        cfg, spec, prim = self.cfg, self.spec, self.prim
        if grow is None:
            if spec.greedy:
                token = int(np.argmax(row))
            else:
                token = sample(
                    np.exp(row.astype(np.float64)), s.rng, spec.temperature, spec.top_k, spec.top_p, spec.min_p
                )
            s.logprob += float(row[token])
            return token, b"", prim.is_eog(token)
        if self.cross:
            assert self.vb is not None and self.vg is not None  # string matching comes with both vocabularies
            cand = union_by_string(row, grow, cfg.top_k, self.vb, self.vg)
        else:
            cand = union_by_id(row, grow, cfg.top_k)
        a = alpha_for(cand, cfg.alpha)
        p = mix(cand.pb, cand.pg, a, cfg.combine)
        idx = sample(p, s.rng, spec.temperature, spec.top_k, spec.top_p, spec.min_p)
        s.logprob += math.log(p[idx]) if p[idx] > 0 else -math.inf
        s.interventions += 1
        self.c["interventions"] += 1
        s.alpha_sum += a
        s.overlap_sum += cand.topk_overlap
        token = int(cand.base_ids[idx])
        if self.cross:
            piece = cand.keys[idx]  # type: ignore[index]
            return token, piece, piece == EOG
        return token, b"", prim.is_eog(token)

    def emit(self, s: Seq, row: np.ndarray, grow: np.ndarray | None) -> list[int] | None:
        """Choose and emit a sequence's next token or string; the base tokens to feed,
        or None when the sequence finished."""
        prim = self.prim
        s.steps += 1
        self.c["steps"] += 1
        token, piece, eog = self.pick(s, row, grow)
        if eog:
            s.toks.append(token if token >= 0 else _first_eog(prim))
            self.finish(s, "stop")
            return None
        if token >= 0:
            piece = prim.piece(token)
        s.data += piece
        if token >= 0 and not s.lag:
            feed = [token]
            s.toks.append(token)
        else:  # re-tokenize the emitted text for the base
            text, s.lag = valid_prefix(bytes(s.data))
            full = prim.tokenize_text(text)
            feed = resync(prim, s.sid, s.item.pb, s.toks, full)
            s.toks = full
            s.retok += 1
        if self.spec.stop:
            text = bytes(s.data).decode("utf-8", errors="replace")
            cut = find_stop(text, self.spec.stop, s.scan)
            if cut >= 0:
                self.finish(s, "stop", text[:cut])
                return None
            s.scan = max(0, len(text) - self.max_stop - 3)
        if s.steps >= s.item.budget or len(s.toks) > self.factor * s.item.budget:
            self.finish(s, "length")
            return None
        return feed

    def feed_base(self, feeds: dict[int, list[int]]) -> list[int]:
        """One base batch of each live sequence's new tokens; the sequences still live."""
        live = list(feeds)
        need = [g for g in live if feeds[g]]
        if need:
            try:
                out = self.prim.extend([self.seqs[g].sid for g in need], [feeds[g] for g in need])
            except MarginalError as e:
                for g in live:
                    self.finish(self.seqs[g], "error", error=str(e))
                return []
            self.c["base_tokens"] += sum(len(feeds[g]) for g in need)
            for r, g in enumerate(need):
                self.rows[g] = out[r]
        return live

    # ------------------------------------------------------------ finish

    def finish(self, s: Seq, reason: FinishReason, text: str | None = None, error: str | None = None) -> None:
        """Store a sequence's completion in ``results``."""
        if text is None:
            text = bytes(s.data).decode("utf-8", errors="replace")
        P = len(s.item.pb)
        k = s.interventions
        self.results[s.item.index][s.item.j] = BlendCompletion(
            text=text,
            token_ids=tuple(s.toks),
            logprob=s.logprob,
            finish_reason=reason,
            prompt_tokens=P,
            cached_prompt_tokens=P if s.cached else 0,
            seed=s.item.seed,
            error=error,
            steps=s.steps,
            interventions=k,
            mean_alpha=s.alpha_sum / k if k else float("nan"),
            topk_overlap=s.overlap_sum / k if k else float("nan"),
            retokenized=s.retok,
        )
