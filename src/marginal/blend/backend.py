"""`BlendBackend`: a Backend that blends a base and a guide model token by token.

Each step of each sequence (all live sequences together, one batch per model):

1. The base gives p_B (its own chat template renders the prompt). If
   max p_B >= gamma the token comes from p_B alone.
2. Otherwise (an *intervention*) the guide is consulted: its sequence (the
   prompt in the guide's OWN chat template, then the text emitted so far)
   catches up on everything emitted since its last call, all intervening
   sequences in one batch; its first call evaluates its prompt. The guide does
   no work at steps without an intervention.
3. p = mix of p_B and p_G over the union of both top-k lists (`mix.py`), with
   alpha fixed or `auto`; the token is its argmax (temperature 0, the
   reference setting) or a draw from it with the request's temperature /
   top-k / top-p / min-p and a numpy Generator seeded per completion.

Matching: models with the same vocabulary (every token's bytes equal) are
matched by token id. Otherwise by token string (bytes; EOG tokens match each
other); when the chosen string is not one base token, the base's tokens after
the prompt are replaced by the base's tokenization of the whole emitted text
(common prefix kept in the KV cache, the rest re-evaluated), and so are the
guide's at each catch-up. What is lost with different tokenizers: strings only
one model has as a single token get probability 0 from the other (a multi-token
string of the base is never scored as a unit); control tokens other than EOG
never match; ``token_ids`` are the base's re-tokenization of the text, not the
steps that produced it, and ``logprob`` mixes probabilities of different units;
a trailing incomplete UTF-8 character is held back from re-tokenization until
it completes; ``max_tokens`` counts steps (emitted strings), not base tokens.

``Completion.logprob`` sums log p of each chosen token under the distribution
it came from before temperature: p_B at ordinary steps, the mixture at
interventions. Completions are `BlendCompletion` with the intervention
diagnostics (count, rate, mean alpha, mean top-k overlap).

Scheduling: (prompt, completion) sequences run in groups that fit both
models' ``max_seqs`` and KV cells (each sequence reserves prompt + max_tokens
cells per model, twice max_tokens with different tokenizers; a sequence that
outgrows it ends with "length"); a prompt is evaluated once for the base and
its other completions share its cells. Left out: continuous batching across
groups, sharing the guide's prompt cells between completions of one prompt,
and the llama.cpp numerics' batch dependence (see the llama.cpp backend).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import MarginalError, unknown
from ..types import Completion, FinishReason, Prompt, SampleSpec, prompt_key
from .engine import NextTokenLogprobs
from .mix import Alpha, Combine, StringVocab, alpha_for, mix, sample, union_by_id, union_by_string

Match = Literal["auto", "id", "string"]


@dataclass(frozen=True)
class BlendConfig:
    """How a blend mixes (one variant)."""

    gamma: float = 0.4
    """Intervene when the base's top probability is below gamma (0: never; > 1: always)."""
    alpha: Alpha = "auto"
    """The guide's weight: 'auto' (BlendIn's reliability weight) or a fixed value in [0, 1]."""
    top_k: int = 100
    """Mix over the union of both models' top-k tokens."""
    combine: Combine = "linear"
    """'linear' (p = alpha p_G + (1 - alpha) p_B) or 'geometric' (log-linear)."""
    solo: Literal["base", "guide"] | None = None
    """Generate with one model alone (the 'base' and 'guide' variants)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma >= 0):
            raise MarginalError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if self.alpha != "auto":
            if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
                raise MarginalError(f"alpha must be 'auto' or a number in [0, 1], got {self.alpha!r}")
            object.__setattr__(self, "alpha", float(self.alpha))
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise MarginalError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if self.combine not in ("linear", "geometric"):
            raise MarginalError(f"combine must be 'linear' or 'geometric', got {self.combine!r}")
        if self.solo not in (None, "base", "guide"):
            raise MarginalError(f"solo must be None, 'base' or 'guide', got {self.solo!r}")


VARIANTS = ("blend", "base", "guide", "nudge", "always", "geometric", "alpha0.25", "alpha0.5", "alpha0.75")
"""The method and what it is compared against."""


def variant_config(name: str, *, gamma: float = 0.4, alpha: Alpha = "auto", top_k: int = 100) -> BlendConfig:
    """The config of a named variant; ``gamma``/``alpha`` apply where the variant does not fix them.

    blend: the method. base / guide: one model alone. nudge: hard switch, the
    guide's token replaces the base's at interventions (alpha = 1). always:
    always-blend (gamma = 1). geometric: log-linear mixing. alphaF: fixed alpha F.
    """
    if name == "blend":
        return BlendConfig(gamma, alpha, top_k)
    if name in ("base", "guide"):
        return BlendConfig(gamma, alpha, top_k, solo=name)  # type: ignore[arg-type]
    if name == "nudge":
        return BlendConfig(gamma, 1.0, top_k)
    if name == "always":
        return BlendConfig(1.0, alpha, top_k)
    if name == "geometric":
        return BlendConfig(gamma, alpha, top_k, "geometric")
    if name.startswith("alpha") and name in VARIANTS:
        return BlendConfig(gamma, float(name[5:]), top_k)
    raise unknown("blend variant", name, VARIANTS)


@dataclass(frozen=True)
class BlendCompletion(Completion):
    """A completion with the blend's intervention diagnostics."""

    steps: int = 0
    """Tokens emitted (one per step)."""
    interventions: int = 0
    """Steps where the guide was consulted."""
    mean_alpha: float = float("nan")
    """Mean guide weight over interventions (nan without any)."""
    overlap: float = float("nan")
    """Mean top-k overlap |top-k(p_B) and top-k(p_G)| / k over interventions (nan without any)."""
    retokenized: int = 0
    """Steps that re-tokenized the text for the base (different tokenizers only)."""

    @property
    def intervention_rate(self) -> float:
        return self.interventions / self.steps if self.steps else 0.0


@dataclass(frozen=True)
class BlendStats:
    """Work done by a BlendBackend since it was created (or ``reset_stats``)."""

    steps: int = 0
    interventions: int = 0
    base_tokens: int = 0
    """Tokens the base evaluated (prompts, emitted tokens, re-tokenizations)."""
    guide_tokens: int = 0
    """Tokens the guide evaluated (prompts and catch-ups)."""
    guide_calls: int = 0
    """Guide batches (one per step with at least one intervention)."""
    seconds: float = 0.0


@dataclass
class _Item:
    index: int
    j: int
    key: str
    pb: list[int]
    pg: list[int] | None
    budget: int
    seed: int


@dataclass
class _Seq:
    item: _Item
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


def _resync(e: NextTokenLogprobs, sid: int, prompt: Sequence[int], old: Sequence[int] | None,
            new: Sequence[int]) -> list[int]:
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


def _valid_prefix(data: bytes) -> tuple[str, bool]:
    """The longest UTF-8-decodable prefix of data as text, and whether bytes were held back."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), cut < len(data)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), False


def check_pair(base: NextTokenLogprobs, guide: NextTokenLogprobs, match: Match = "auto") -> Literal["id", "string"]:
    """How two engines are matched ('id' or 'string'); MarginalError for a pair that cannot be blended.

    'id' needs the same vocabulary (every token's bytes) and the same
    end-of-generation tokens; 'string' needs both models to have an
    end-of-generation token. Each engine's n_ctx must fit its model's training context.
    """
    for role, e in (("base", base), ("guide", guide)):
        if e.n_ctx > e.n_ctx_train:
            raise MarginalError(f"{role} {e.name}: n_ctx={e.n_ctx} exceeds the model's training context "
                                f"{e.n_ctx_train}; lower n_ctx")
    if match not in ("auto", "id", "string"):
        raise MarginalError(f"match must be 'auto', 'id' or 'string', got {match!r}")
    same_vocab = base.n_vocab == guide.n_vocab and all(
        base.piece(t) == guide.piece(t) for t in range(base.n_vocab))
    if match == "id" or (match == "auto" and same_vocab):
        if not same_vocab:
            first = next((t for t in range(min(base.n_vocab, guide.n_vocab)) if base.piece(t) != guide.piece(t)), None)
            where = (f"token {first} is {base.piece(first)!r} vs {guide.piece(first)!r}" if first is not None
                     else f"{base.n_vocab} vs {guide.n_vocab} tokens")
            raise MarginalError(f"match='id' needs the same vocabulary, but base {base.name} and guide {guide.name} "
                                f"differ ({where}); use match='string'")
        eb = {t for t in range(base.n_vocab) if base.is_eog(t)}
        eg = {t for t in range(guide.n_vocab) if guide.is_eog(t)}
        if eb != eg:
            raise MarginalError(f"base {base.name} and guide {guide.name} share a vocabulary but not their "
                                f"end-of-generation tokens (base only: {sorted(eb - eg)[:5]}, guide only: "
                                f"{sorted(eg - eb)[:5]}); the blend could not tell when to stop; use match='string'")
        return "id"
    for role, e in (("base", base), ("guide", guide)):
        if not any(e.is_eog(t) for t in range(e.n_vocab)):
            raise MarginalError(f"{role} {e.name} has no end-of-generation token; string matching needs one")
    return "string"


class BlendBackend:
    """A Backend that blends two `NextTokenLogprobs` engines (see the module docstring).

    ``BlendBackend.load(base_model, guide_model, ...)`` opens llama.cpp engines
    and closes them with the backend; engines passed in are left open, so one
    pair of engines can serve several variants (`with_config`).
    """

    def __init__(self, base: NextTokenLogprobs, guide: NextTokenLogprobs, config: BlendConfig | None = None, *,
                 match: Match = "auto", name: str | None = None, owns: bool = False,
                 _checked: tuple[str, StringVocab | None, StringVocab | None] | None = None) -> None:
        self.base, self.guide = base, guide
        self.config = config or BlendConfig()
        self._owns = owns
        if _checked is None:
            m = check_pair(base, guide, match)
            vb = vg = None
            if m == "string":
                vb = StringVocab.build([base.piece(t) for t in range(base.n_vocab)],
                                       [base.is_eog(t) for t in range(base.n_vocab)])
                vg = StringVocab.build([guide.piece(t) for t in range(guide.n_vocab)],
                                       [guide.is_eog(t) for t in range(guide.n_vocab)])
            _checked = (m, vb, vg)
        self._checked = _checked
        self.match = _checked[0]
        c = self.config
        tag = c.solo or (f"g{c.gamma:g}-a{c.alpha if c.alpha == 'auto' else format(c.alpha, 'g')}"
                         f"-k{c.top_k}{'-geo' if c.combine == 'geometric' else ''}")
        self.name = name or f"blend:{base.name}+{guide.name}:{tag}"
        self._counters = dict.fromkeys(BlendStats.__dataclass_fields__, 0)
        self._counters["seconds"] = 0.0

    @classmethod
    def load(cls, base: str, guide: str, config: BlendConfig | None = None, *, match: Match = "auto",
             n_ctx: int = 8192, max_seqs: int = 32, n_threads: int | None = None) -> BlendBackend:
        """A blend of two models (catalog names or GGUF paths) on llama.cpp."""
        from .engine import LlamaCppEngine

        b = LlamaCppEngine.load(base, n_ctx=n_ctx, max_seqs=max_seqs, n_threads=n_threads)
        try:
            g = LlamaCppEngine.load(guide, n_ctx=n_ctx, max_seqs=max_seqs, n_threads=n_threads)
        except BaseException:
            b.close()
            raise
        try:
            return cls(b, g, config, match=match, owns=True)
        except BaseException:
            b.close()
            g.close()
            raise

    def with_config(self, config: BlendConfig, name: str | None = None) -> BlendBackend:
        """Another variant on the same engines (which stay owned by this backend)."""
        return BlendBackend(self.base, self.guide, config, name=name, _checked=self._checked)

    @property
    def stats(self) -> BlendStats:
        return BlendStats(**self._counters)

    def reset_stats(self) -> None:
        for k in self._counters:
            self._counters[k] = 0

    def close(self) -> None:
        if self._owns:
            self.base.close()
            self.guide.close()
            self._owns = False

    def __enter__(self) -> BlendBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- generate

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` blended completions per prompt, in input order."""
        t0 = time.perf_counter()
        try:
            return self._generate(list(prompts), spec)
        finally:
            self._counters["seconds"] += time.perf_counter() - t0

    def _sides(self) -> tuple[NextTokenLogprobs, NextTokenLogprobs | None]:
        solo = self.config.solo
        if solo == "base":
            return self.base, None
        if solo == "guide":
            return self.guide, None
        return self.base, self.guide

    def _generate(self, prompts: list[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        prim, sec = self._sides()
        cross = sec is not None and self.match == "string"
        factor = 2 if cross else 1
        n = spec.n
        results: list[list[Completion | None]] = [[None] * n for _ in prompts]
        queue: deque[_Item] = deque()
        for i, prompt in enumerate(prompts):
            key = prompt_key(prompt)
            try:
                pb = prim.tokenize(prompt)
                pg = sec.tokenize(prompt) if sec is not None else None
                budget = spec.max_tokens
                sides = (("guide" if self.config.solo == "guide" else "base", prim, pb), ("guide", sec, pg))
                for role, e, toks in sides:
                    if e is None or toks is None:
                        continue
                    if not toks:
                        raise MarginalError(f"prompt {i} is empty after tokenization for {role} {e.name}")
                    limit = min(e.n_ctx, e.n_ctx_train)
                    room = limit - len(toks)
                    if room < factor:
                        raise MarginalError(
                            f"prompt {i} has {len(toks)} tokens for {role} {e.name}, which leaves no room to "
                            f"generate in its context of {limit} tokens; shorten it or raise n_ctx")
                    budget = min(budget, room // factor)
            except Exception as e:
                msg = str(e) if isinstance(e, MarginalError) else f"{type(e).__name__}: {e}"
                results[i] = [_error(msg, 0, spec.sequence_seed(key, j)) for j in range(n)]
                continue
            for j in range(n):
                queue.append(_Item(i, j, key, pb, pg, budget, spec.sequence_seed(key, j)))

        cap = min(prim.max_seqs, sec.max_seqs) if sec is not None else prim.max_seqs
        while queue:
            group: list[_Item] = []
            cb = cg = 0
            while queue and len(group) < cap:
                it = queue[0]
                nb = len(it.pb) + factor * it.budget
                ng = len(it.pg) + factor * it.budget if (sec is not None and it.pg is not None) else 0
                if group and (cb + nb > prim.n_ctx or (sec is not None and cg + ng > sec.n_ctx)):
                    break
                group.append(queue.popleft())
                cb, cg = cb + nb, cg + ng
            self._run_group(group, spec, prim, sec, cross, factor, results)
        assert all(r is not None for row in results for r in row)
        return [list(row) for row in results]  # type: ignore[arg-type]

    def _run_group(self, group: list[_Item], spec: SampleSpec, prim: NextTokenLogprobs,
                   sec: NextTokenLogprobs | None, cross: bool, factor: int,
                   results: list[list[Completion | None]]) -> None:
        sids = prim.open(len(group))
        seqs = [_Seq(it, sid, np.random.default_rng(it.seed)) for it, sid in zip(group, sids)]
        try:
            self._steps(seqs, spec, prim, sec, cross, factor, results)
        finally:
            prim.release(sids)
            if sec is not None:
                sec.release([s.gsid for s in seqs if s.gsid >= 0])

    def _steps(self, seqs: list[_Seq], spec: SampleSpec, prim: NextTokenLogprobs,
               sec: NextTokenLogprobs | None, cross: bool, factor: int,
               results: list[list[Completion | None]]) -> None:
        cfg = self.config
        c = self._counters
        stop = spec.stop
        max_stop = max((len(s) for s in stop), default=0)
        group = [s.item for s in seqs]
        sids = [s.sid for s in seqs]
        first: dict[int, int] = {}
        for g, it in enumerate(group):
            first.setdefault(it.index, g)
        holders = sorted(first.values())
        try:
            hrows = prim.extend([sids[g] for g in holders], [group[g].pb for g in holders])
        except MarginalError as e:
            for s in seqs:
                results[s.item.index][s.item.j] = _error(str(e), len(s.item.pb), s.item.seed)
            return
        c["base_tokens"] += sum(len(group[g].pb) for g in holders)
        rows = np.empty((len(group), hrows.shape[1]), dtype=np.float32)
        for h, g in enumerate(holders):
            rows[g] = hrows[h]
        for g, it in enumerate(group):
            h = first[it.index]
            if h != g:
                prim.fork(sids[h], sids[g])
                rows[g] = rows[h]
                seqs[g].cached = True
        vb, vg = self._checked[1], self._checked[2]

        def finish(s: _Seq, reason: FinishReason, text: str | None = None, error: str | None = None) -> None:
            if text is None:
                text = bytes(s.data).decode("utf-8", errors="replace")
            P = len(s.item.pb)
            k = s.interventions
            results[s.item.index][s.item.j] = BlendCompletion(
                text=text, token_ids=tuple(s.toks), logprob=s.logprob, finish_reason=reason, prompt_tokens=P,
                cached_prompt_tokens=P if s.cached else 0, seed=s.item.seed, error=error,
                steps=s.steps, interventions=k, mean_alpha=s.alpha_sum / k if k else float("nan"),
                overlap=s.overlap_sum / k if k else float("nan"), retokenized=s.retok,
            )

        live = list(range(len(group)))
        while live:
            # 1. which sequences intervene
            maxp = np.exp(rows[live].max(axis=1).astype(np.float64))
            inter = [g for g, mp in zip(live, maxp) if sec is not None and mp < cfg.gamma]
            grows: dict[int, np.ndarray] = {}
            if inter:
                assert sec is not None
                new = [g for g in inter if seqs[g].gsid < 0]
                for g, gs in zip(new, sec.open(len(new)) if new else []):
                    seqs[g].gsid = gs
                call_g, call_t = [], []
                for g in inter:
                    s = seqs[g]
                    fresh = g in new
                    if cross:
                        text, _ = _valid_prefix(bytes(s.data))
                        full = sec.tokenize_text(text)
                    else:
                        full = list(s.toks)
                    feed = _resync(sec, s.gsid, s.item.pg, None if fresh else s.gtoks, full)  # type: ignore[arg-type]
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
                            finish(seqs[g], "error", error=f"guide: {e}")
                        return
                    c["guide_calls"] += 1
                    c["guide_tokens"] += sum(len(t) for t in call_t)
                    for r, g in enumerate(call_g):
                        seqs[g].grow = out[r]
                        grows[g] = out[r]

            # 2. choose each sequence's next token / string
            feeds: dict[int, list[int]] = {}
            for g in live:
                s = seqs[g]
                row = rows[g]
                s.steps += 1
                c["steps"] += 1
                token, piece = -1, b""
                if g in grows:
                    gr = grows[g]
                    cand = (union_by_string(row, gr, cfg.top_k, vb, vg) if cross  # type: ignore[arg-type]
                            else union_by_id(row, gr, cfg.top_k))
                    a = alpha_for(cand, cfg.alpha)
                    p = mix(cand.pb, cand.pg, a, cfg.combine)
                    idx = sample(p, s.rng, spec.temperature, spec.top_k, spec.top_p, spec.min_p)
                    s.logprob += math.log(p[idx]) if p[idx] > 0 else -math.inf
                    s.interventions += 1
                    c["interventions"] += 1
                    s.alpha_sum += a
                    s.overlap_sum += cand.overlap
                    token = int(cand.base_ids[idx])
                    if cross:
                        piece = cand.keys[idx]  # type: ignore[index]
                        eog = piece == b"\x00<EOG>"
                    else:
                        eog = prim.is_eog(token)
                else:
                    if spec.greedy:
                        token = int(np.argmax(row))
                    else:
                        token = sample(np.exp(row.astype(np.float64)), s.rng, spec.temperature, spec.top_k,
                                       spec.top_p, spec.min_p)
                    s.logprob += float(row[token])
                    eog = prim.is_eog(token)
                if eog:
                    s.toks.append(token if token >= 0 else _first_eog(prim))
                    finish(s, "stop")
                    continue
                if token >= 0:
                    piece = prim.piece(token)
                s.data += piece
                if token >= 0 and not s.lag:
                    feed = [token]
                    s.toks.append(token)
                else:  # re-tokenize the emitted text for the base
                    text, s.lag = _valid_prefix(bytes(s.data))
                    full = prim.tokenize_text(text)
                    feed = _resync(prim, s.sid, s.item.pb, s.toks, full)
                    s.toks = full
                    s.retok += 1
                if stop:
                    text = bytes(s.data).decode("utf-8", errors="replace")
                    cut = -1
                    for st in stop:
                        k = text.find(st, s.scan)
                        if k >= 0 and (cut < 0 or k < cut):
                            cut = k
                    if cut >= 0:
                        finish(s, "stop", text[:cut])
                        continue
                    s.scan = max(0, len(text) - max_stop - 3)
                if s.steps >= s.item.budget or len(s.toks) > factor * s.item.budget:
                    finish(s, "length")
                    continue
                feeds[g] = feed  # empty: the base's tokens did not change (an incomplete character)

            # 3. one batch for the base: each live sequence's new tokens
            live = list(feeds)
            need = [g for g in live if feeds[g]]
            if need:
                try:
                    out = prim.extend([seqs[g].sid for g in need], [feeds[g] for g in need])
                except MarginalError as e:
                    for g in live:
                        finish(seqs[g], "error", error=str(e))
                    return
                c["base_tokens"] += sum(len(feeds[g]) for g in need)
                for r, g in enumerate(need):
                    rows[g] = out[r]


_SPEC_FORM = "expected 'blend:BASE+GUIDE[:gamma=G,alpha=A,top_k=K,variant=V,match=M]'"


def _split_blend_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """(base, guide, options) of ``blend:BASE+GUIDE[:key=value,...]``, keys checked."""
    if not spec.startswith("blend:"):
        raise MarginalError(f"blend model {spec!r}: {_SPEC_FORM}")
    body = spec[len("blend:"):]
    models, _, opts = body.partition(":")
    base, plus, guide = models.partition("+")
    if not (base and plus and guide):
        raise MarginalError(f"blend model {spec!r}: {_SPEC_FORM}")
    kv: dict[str, str] = {}
    for part in filter(None, opts.split(",")):
        k, eq, v = part.partition("=")
        if not eq or k not in ("variant", "gamma", "alpha", "top_k", "match"):
            raise MarginalError(f"blend model {spec!r}: bad option {part!r}; {_SPEC_FORM}")
        kv[k] = v
    return base, guide, kv


def parse_blend_spec(spec: str) -> tuple[str, str, BlendConfig, Match]:
    """(base, guide, config, match) of ``blend:BASE+GUIDE[:key=value,...]``.

    Keys: variant (default blend), gamma, alpha (auto or a number), top_k,
    match (auto|id|string); e.g. ``blend:qwen2.5-coder-1.5b+qwen2.5-coder-0.5b:gamma=0.3,alpha=auto``.
    """
    base, guide, kv = _split_blend_spec(spec)
    try:
        gamma = float(kv.get("gamma", 0.4))
        alpha: Alpha = "auto" if kv.get("alpha", "auto") == "auto" else float(kv["alpha"])
        top_k = int(kv.get("top_k", 100))
    except ValueError:
        raise MarginalError(f"blend model {spec!r}: gamma, alpha and top_k must be numbers; {_SPEC_FORM}") from None
    match = kv.get("match", "auto")
    if match not in ("auto", "id", "string"):
        raise MarginalError(f"blend model {spec!r}: match must be auto, id or string, got {match!r}")
    return base, guide, variant_config(blend_variant(spec), gamma=gamma, alpha=alpha, top_k=top_k), match  # type: ignore[return-value]


def blend_variant(spec: str) -> str:
    """The variant named by a ``blend:`` spec (default blend)."""
    return _split_blend_spec(spec)[2].get("variant", "blend")


def format_blend_spec(base: str, guide: str, variant: str, config: BlendConfig, match: str) -> str:
    """The canonical ``blend:`` spec of a variant (the inverse of `parse_blend_spec`); settings a
    solo variant ignores are left at their defaults, so a gamma sweep does not regenerate them."""
    gamma, alpha = (0.4, "auto") if config.solo else (config.gamma, config.alpha)
    a = alpha if alpha == "auto" else format(alpha, "g")
    return f"blend:{base}+{guide}:variant={variant},gamma={gamma:g},alpha={a},top_k={config.top_k},match={match}"


def load_blend(spec: str, **options) -> BlendBackend:
    """A BlendBackend from ``blend:BASE+GUIDE[:...]`` (see `parse_blend_spec`); options: n_ctx, max_seqs, n_threads."""
    base, guide, config, match = parse_blend_spec(spec)
    return BlendBackend.load(base, guide, config, match=match, **options)


def _first_eog(e: NextTokenLogprobs) -> int:
    return next(t for t in range(e.n_vocab) if e.is_eog(t))


def _error(msg: str, prompt_tokens: int, seed: int) -> BlendCompletion:
    return BlendCompletion("", (), 0.0, "error", prompt_tokens, 0, seed=seed, error=msg)
