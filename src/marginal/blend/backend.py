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
diagnostics (count, rate, mean alpha, mean top-k overlap), which each stored
sample keeps (``Sample.diagnostics``).

Scheduling: (prompt, completion) sequences run in groups that fit both
models' ``max_seqs`` and KV cells (each sequence reserves prompt + max_tokens
cells per model, twice max_tokens with different tokenizers; a sequence that
outgrows it ends with "length"); a prompt is evaluated once for the base and
its other completions share its cells. This module admits a call's prompts
and cuts them into groups; `marginal.blend.decode` decodes a group. Left out: continuous batching across
groups, sharing the guide's prompt cells between completions of one prompt,
and the llama.cpp numerics' batch dependence (see the llama.cpp backend).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..backends.common import Counted, Counters, Lifecycle, check_prompt, filled, prepare_prompts
from ..errors import MarginalError
from ..types import Completion, Prompt, SampleSpec, prompt_key
from .completion import BlendCompletion
from .decode import GroupDecode, Item, Seq
from .engine import NextTokenLogprobs
from .mix import StringVocab
from .spec import BlendConfig, Match, parse_blend_spec

__all__ = ["BlendBackend", "BlendCompletion", "BlendStats", "check_pair", "load_blend"]


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


def check_pair(base: NextTokenLogprobs, guide: NextTokenLogprobs, match: Match = "auto") -> Literal["id", "string"]:
    """How two engines are matched ('id' or 'string'); MarginalError for a pair that cannot be blended.

    'id' needs the same vocabulary (every token's bytes) and the same
    end-of-generation tokens; 'string' needs both models to have an
    end-of-generation token. Each engine's n_ctx must fit its model's training context.
    """
    for role, e in (("base", base), ("guide", guide)):
        if e.n_ctx > e.n_ctx_train:
            raise MarginalError(
                f"{role} {e.name}: n_ctx={e.n_ctx} exceeds the model's training context {e.n_ctx_train}; lower n_ctx"
            )
    if match not in ("auto", "id", "string"):
        raise MarginalError(f"match must be 'auto', 'id' or 'string', got {match!r}")
    same_vocab = base.n_vocab == guide.n_vocab and all(base.piece(t) == guide.piece(t) for t in range(base.n_vocab))
    if match == "id" or (match == "auto" and same_vocab):
        if not same_vocab:
            first = next((t for t in range(min(base.n_vocab, guide.n_vocab)) if base.piece(t) != guide.piece(t)), None)
            where = (
                f"token {first} is {base.piece(first)!r} vs {guide.piece(first)!r}"
                if first is not None
                else f"{base.n_vocab} vs {guide.n_vocab} tokens"
            )
            raise MarginalError(
                f"match='id' needs the same vocabulary, but base {base.name} and guide {guide.name} "
                f"differ ({where}); use match='string'"
            )
        eb = {t for t in range(base.n_vocab) if base.is_eog(t)}
        eg = {t for t in range(guide.n_vocab) if guide.is_eog(t)}
        if eb != eg:
            raise MarginalError(
                f"base {base.name} and guide {guide.name} share a vocabulary but not their "
                f"end-of-generation tokens (base only: {sorted(eb - eg)[:5]}, guide only: "
                f"{sorted(eg - eb)[:5]}); the blend could not tell when to stop; use match='string'"
            )
        return "id"
    for role, e in (("base", base), ("guide", guide)):
        if not any(e.is_eog(t) for t in range(e.n_vocab)):
            raise MarginalError(f"{role} {e.name} has no end-of-generation token; string matching needs one")
    return "string"


class BlendBackend(Counted[BlendStats], Lifecycle):
    """A Backend that blends two `NextTokenLogprobs` engines (see the module docstring).

    ``BlendBackend.load(base_model, guide_model, ...)`` opens llama.cpp engines
    and closes them with the backend; engines passed in are left open, so one
    pair of engines can serve several variants (`with_config`).
    """

    def __init__(
        self,
        base: NextTokenLogprobs,
        guide: NextTokenLogprobs,
        config: BlendConfig | None = None,
        *,
        match: Match = "auto",
        name: str | None = None,
        owns: bool = False,
        _checked: tuple[str, StringVocab | None, StringVocab | None] | None = None,
    ) -> None:
        self.base, self.guide = base, guide
        self.config = config or BlendConfig()
        self._owns = owns
        if _checked is None:
            m = check_pair(base, guide, match)
            vb = vg = None
            if m == "string":
                vb = StringVocab.build(
                    [base.piece(t) for t in range(base.n_vocab)], [base.is_eog(t) for t in range(base.n_vocab)]
                )
                vg = StringVocab.build(
                    [guide.piece(t) for t in range(guide.n_vocab)], [guide.is_eog(t) for t in range(guide.n_vocab)]
                )
            _checked = (m, vb, vg)
        self._checked = _checked
        self.match = _checked[0]
        c = self.config
        tag = c.solo or (
            f"g{c.gamma:g}-a{c.alpha if c.alpha == 'auto' else format(c.alpha, 'g')}"
            f"-k{c.top_k}{'-geo' if c.combine == 'geometric' else ''}"
        )
        self.name = name or f"blend:{base.name}+{guide.name}:{tag}"
        self._counters = Counters(BlendStats)

    @classmethod
    def load(
        cls,
        base: str,
        guide: str,
        config: BlendConfig | None = None,
        *,
        match: Match = "auto",
        n_ctx: int = 8192,
        max_seqs: int = 32,
        n_threads: int | None = None,
    ) -> BlendBackend:
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

    def close(self) -> None:
        if self._owns:
            self.base.close()
            self.guide.close()
            self._owns = False

    # ------------------------------------------------------------- generate

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` blended completions per prompt, in input order."""
        with self._counters.timed():
            return self._generate(list(prompts), spec)

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
        ready, results = prepare_prompts(
            prompts, spec, lambda i, p: self._prepare(i, p, spec.max_tokens, factor), BlendCompletion
        )
        queue: deque[Item] = deque()
        for i, (prompt, tokens) in enumerate(zip(prompts, ready)):
            if tokens is not None:
                key = prompt_key(prompt)
                pb, pg, budget = tokens
                queue.extend(Item(i, j, key, pb, pg, budget, spec.sequence_seed(key, j)) for j in range(spec.n))
        cap = min(prim.max_seqs, sec.max_seqs) if sec is not None else prim.max_seqs
        while queue:
            group: list[Item] = []
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
        return filled(results)

    def _prepare(self, i: int, prompt: Prompt, max_tokens: int, factor: int) -> tuple[list[int], list[int] | None, int]:
        """(primary tokens, guide tokens, budget) of prompt ``i``; MarginalError when it leaves no room."""
        prim, sec = self._sides()
        pb = prim.tokenize(prompt)
        pg = sec.tokenize(prompt) if sec is not None else None
        budget = max_tokens
        sides = (("guide" if self.config.solo == "guide" else "base", prim, pb), ("guide", sec, pg))
        for role, e, toks in sides:
            if e is None or toks is None:
                continue
            limit = min(e.n_ctx, e.n_ctx_train)
            check_prompt(
                i,
                toks,
                limit,
                context=f"its context of {limit} tokens",
                hint="shorten it or raise n_ctx",
                room=factor,
                who=f" for {role} {e.name}",
            )
            budget = min(budget, (limit - len(toks)) // factor)
        return pb, pg, budget

    def _run_group(
        self,
        group: list[Item],
        spec: SampleSpec,
        prim: NextTokenLogprobs,
        sec: NextTokenLogprobs | None,
        cross: bool,
        factor: int,
        results: list[list[BlendCompletion | None]],
    ) -> None:
        sids = prim.open(len(group))
        seqs = [Seq(it, sid, np.random.default_rng(it.seed)) for it, sid in zip(group, sids)]
        try:
            GroupDecode(
                seqs,
                spec,
                self.config,
                prim,
                sec,
                cross=cross,
                factor=factor,
                vocabs=(self._checked[1], self._checked[2]),
                counters=self._counters,
                results=results,
            ).run()
        finally:
            prim.release(sids)
            if sec is not None:
                sec.release([s.gsid for s in seqs if s.gsid >= 0])


def load_blend(spec: str, **options) -> BlendBackend:
    """A BlendBackend from ``blend:BASE+GUIDE[:...]`` (see `parse_blend_spec`); options: n_ctx, max_seqs, n_threads."""
    base, guide, config, match = parse_blend_spec(spec)
    return BlendBackend.load(base, guide, config, match=match, **options)
