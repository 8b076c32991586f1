"""The llama.cpp backend: continuous batched sampling in one process.

`LlamaCppBackend` holds the model, its tokenizer and chat template; the
engine behind it (`marginal.backends.slots.SlotEngine`) holds a fixed
number of sequence slots in one llama.cpp context and batches every
request that is running (see that module for the schedule, the prefix
cache and the numerics).

Two ways to call it:

- ``generate(prompts, spec)``: ``spec.n`` completions per prompt, in input
  order (submit all, then step until they are back).
- ``submit(prompt, spec) -> Future`` and ``step()``: requests join and leave
  the running batch (`marginal.backends.streaming`); ``future.cancel()``
  frees a request's slots at the next step.

How a request runs:

- The prompt is rendered (a ``Chat`` through the model's own chat template
  from the GGUF metadata, a ``str`` as is) and tokenized.
- It is evaluated ONCE (less any prefix copied from the prefix cache), on the
  sequence of its completion 0; its other ``n - 1`` completions copy the
  prompt's KV cells with ``llama_memory_seq_cp`` and start from its stored
  last-token logits.
- Sequence ``j`` samples with its own llama.cpp sampler chain (temperature
  -> top_k -> top_p -> min_p -> dist, the vLLM order: truncation acts on the
  tempered distribution), seeded with ``spec.sequence_seed(prompt_key(prompt), j)``.
  Temperature 0 is argmax.
- ``Completion.logprob`` is the sum over sampled tokens of the log-softmax of
  the raw model logits (temperature 1, no truncation).
- A completion ends at an end-of-generation token ("stop"; the token is kept
  in ``token_ids``, not in the text), at a stop string ("stop"; the text is cut
  before it, the token ids keep every sampled token), or after ``max_tokens``
  tokens or at the end of the context ("length").

Failures stay with their prompt: a prompt that does not fit in the context
(or whose chat template raises) gets ``n`` completions with finish_reason
"error" and ``error`` holding the message (prompt length and n_ctx); the
other prompts are generated as usual. ``backend.stats`` counts the work
(prompts and prompt tokens evaluated, prompt tokens reused, tokens
generated, decode calls, active slots, seconds). ``next_logprobs(prompts)``
gives the next-token log-probabilities after each prompt (for token
blending).

Reproducibility: the same ``generate`` call (same prompts in the same order,
same spec, model, n_ctx, slots) on an idle engine gives the same completions,
bit for bit. llama.cpp's numerics are NOT batch-invariant, though: the same
prompt decoded next to other sequences (or with another slots / n_ctx
schedule, or from a cached prefix) can diverge after a few tokens, because
the matmul path depends on the batch size (measured in
tests/test_llamacpp.py). Seeds and output order never depend on the batch.

Left out: grammar/JSON constraints, repetition penalties, LoRA, embeddings,
GPU offload settings (``n_gpu_layers`` is passed through but not tuned), and
per-token streaming.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from ..errors import MarginalError
from ..types import Completion, Prompt, SampleSpec
from .common import Lifecycle, ensure_open, render_plain
from .llama_api import check_context_settings, logsumexp_rows, token_bytes, tokenize_bytes
from .slots import SlotEngine, SlotStats
from .streaming import drain

try:
    import llama_cpp as _ll
except ImportError:  # pragma: no cover - llama-cpp-python is a core dependency
    _ll = None  # type: ignore[assignment]  # None marks it absent; mypy has no optional-module type

FALLBACK_TEMPLATE = "plain"
"""How a Chat is rendered for a model without a chat template: the system text
(if any) then ``User: ...`` / ``Assistant: ...`` turns separated by blank
lines, ending with ``Assistant:``. No stop string is added; base models tend
to continue with another ``User:`` turn, so pass ``stop=("\\nUser:",)``."""

LlamaCppStats = SlotStats
"""Work done by a backend since it was created (or ``reset_stats``)."""


class LlamaCppBackend(Lifecycle):
    """A Backend on llama.cpp's low-level API (see the module docstring).

    ``max_seqs`` is the number of sequence slots decoded together (the batch
    of a step); ``n_ctx`` the KV cells they share (prompt cells are stored
    once per prompt); ``prefix_cache`` the evaluated prompts kept for later
    requests to copy a common prefix from (0 turns it off). With
    ``kv_unified=False`` each sequence (and cached prompt) gets its own stream
    of ``n_ctx / (max_seqs + prefix_cache)`` cells: attention over its own
    cells only, what `slot_options` (``marginal run --slots``, the server)
    picks; a unified cache (the default here) suits a small ``n_ctx`` shared
    by many short sequences (see `marginal.backends.slots`). ``seq_len`` caps
    one sequence's tokens (prompt plus completion) in a unified cache; no
    sequence goes past the model's training context. ``n_threads``
    defaults to the CPU count. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_seqs: int = 64,
        n_batch: int = 512,
        prefix_cache: int = 16,
        kv_unified: bool = True,
        seq_len: int | None = None,
        n_gpu_layers: int = 0,
        name: str | None = None,
        verbose: bool = False,
    ) -> None:
        if _ll is None:
            raise MarginalError("the llama.cpp backend needs llama-cpp-python: pip install llama-cpp-python")
        path = Path(model_path)
        if not path.is_file():
            raise MarginalError(f"model file not found: {path}")
        check_context_settings(n_ctx, max_seqs)
        self.name = name or path.stem
        self.path = path
        self._model = None
        self.engine: SlotEngine | None = None
        _ll._logger.set_verbose(verbose)
        _ll.llama_backend_init()
        mp = _ll.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        self._model = _ll.llama_model_load_from_file(str(path).encode(), mp) or None
        if self._model is None:
            raise MarginalError(f"llama.cpp could not load model file {path} (not a valid GGUF?)")
        self._vocab = _ll.llama_model_get_vocab(self._model)
        self.n_vocab = _ll.llama_vocab_n_tokens(self._vocab)
        self._piece_cache: dict[int, bytes] = {}
        self._eog_cache: dict[int, bool] = {}
        self._chat_formatter = self._load_template()
        try:
            self.engine = SlotEngine(
                self,
                n_ctx=n_ctx,
                slots=max_seqs,
                n_batch=n_batch,
                kv_unified=kv_unified,
                seq_len=seq_len,
                n_threads=n_threads or os.cpu_count() or 1,
                prefix_cache=prefix_cache,
            )
        except BaseException:
            self.close()
            raise
        self.n_ctx = self.engine.n_ctx
        self.seq_ctx = self.engine.seq_ctx
        self.n_batch = self.engine.n_batch
        self.max_seqs = max_seqs

    # ---------------------------------------------------------------- public

    @property
    def model_handle(self):
        """The loaded ``llama_model`` (None once closed), for engines that open their own context on it."""
        return self._model

    @property
    def stats(self) -> LlamaCppStats:
        """A snapshot of the work done so far."""
        return self._engine().stats

    def reset_stats(self) -> None:
        self._engine().reset_stats()

    @property
    def has_chat_template(self) -> bool:
        return self._chat_formatter is not None

    def render(self, prompt: Prompt) -> str:
        """The text a prompt is sent as (chat template applied)."""
        if isinstance(prompt, str):
            return prompt
        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
        if self._chat_formatter is None:
            return render_plain(prompt)
        return self._chat_formatter(messages=msgs).prompt

    def tokenize(self, prompt: Prompt) -> list[int]:
        """The prompt's tokens as the model sees them (BOS added when the model wants it
        and the template did not already write it; special tokens in the text are parsed)."""
        ensure_open(self._model, "llama.cpp backend")
        text = self.render(prompt)
        add_bos = bool(_ll.llama_vocab_get_add_bos(self._vocab))
        if add_bos and self._bos_text and text.startswith(self._bos_text):
            add_bos = False
        return tokenize_bytes(self._vocab, text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        """Queue one prompt; the future resolves to its ``spec.n`` completions (see ``step``)."""
        return self._engine().submit(prompt, spec)

    def step(self) -> bool:
        """One decode of every running sequence plus prompt chunks; False when idle."""
        return self._engine().step()

    def begin_run(self) -> None:
        """A run starts: an idle engine empties its prefix cache (reproducible runs)."""
        self._engine().begin_run()

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` completions for each prompt, in input order (see the module docstring)."""
        engine = self._engine()
        engine.begin_run()
        return drain(self, engine.submit_many(list(prompts), spec))

    def next_logprobs(self, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        """The next-token log-probabilities (log-softmax of the raw logits, float32,
        one entry per vocabulary token) after each prompt, in input order.

        Prompts are evaluated together in batches of at most ``max_seqs`` prompts
        and ``n_batch`` tokens (a longer prompt goes alone, in chunks). A prompt
        that does not fit in ``n_ctx`` raises MarginalError. Needs an idle engine
        (it uses the engine's context); nothing is cached between calls.
        """
        engine = self._engine()
        toks = [self.tokenize(p) for p in prompts]
        for i, t in enumerate(toks):
            if not t or len(t) > self.n_ctx:
                raise MarginalError(f"prompt {i} has {len(t)} tokens; expected 1 to n_ctx={self.n_ctx}")
        with engine.idle():
            out: list[np.ndarray] = [np.empty(0, np.float32)] * len(toks)
            group: list[int] = []
            used = 0
            for i, t in enumerate(toks):
                if group and (len(group) == self.max_seqs or used + len(t) > self.n_ctx):
                    self._score(engine, toks, group, out)
                    group, used = [], 0
                group.append(i)
                used += len(t)
            if group:
                self._score(engine, toks, group, out)
        return out

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self._model is not None:
            _ll.llama_model_free(self._model)
            self._model = None

    def piece(self, token: int) -> bytes:
        """A token's bytes as it appears in generated text (b'' for control tokens)."""
        p = self._piece_cache.get(token)
        if p is None:
            p = self._piece_cache[token] = token_bytes(self._vocab, token)
        return p

    def is_eog(self, token: int) -> bool:
        """Whether a token ends generation (EOS, EOT, ...)."""
        e = self._eog_cache.get(token)
        if e is None:
            e = self._eog_cache[token] = bool(_ll.llama_vocab_is_eog(self._vocab, token))
        return e

    # --------------------------------------------------------------- helpers

    def _engine(self) -> SlotEngine:
        ensure_open(self.engine, "llama.cpp backend")
        assert self.engine is not None
        return self.engine

    def _score(self, engine: SlotEngine, toks: list[list[int]], idx: list[int], out: list[np.ndarray]) -> None:
        """Next-token log-probs after each prompt of ``idx`` (sequences 0..len(idx)-1 of a cleared context)."""
        _ll.llama_memory_clear(engine.memory, True)
        tok_np, pos_np, seq_np, out_np = engine.batch_arrays
        n_batch = engine.n_batch
        rows: list[int] = []
        chunks = [(i, s, a) for s, i in enumerate(idx) for a in range(0, len(toks[i]), n_batch)]
        k = 0
        for ci, (i, s, a) in enumerate(chunks):
            t = toks[i][a : a + n_batch]
            tok_np[k : k + len(t)] = t
            pos_np[k : k + len(t)] = np.arange(a, a + len(t), dtype=np.int32)
            seq_np[k : k + len(t)] = s
            out_np[k : k + len(t)] = 0
            if a + len(t) == len(toks[i]):
                out_np[k + len(t) - 1] = 1
                rows.append(i)
            k += len(t)
            nxt = chunks[ci + 1] if ci + 1 < len(chunks) else None
            if nxt is None or k + min(n_batch, len(toks[nxt[0]]) - nxt[2]) > n_batch:
                if not engine.decode(k):
                    raise MarginalError(f"llama_decode failed on a batch of {k} tokens")
                if rows:
                    logits = np.ctypeslib.as_array(_ll.llama_get_logits(engine.ctx), shape=(len(rows), self.n_vocab))
                    lse = logsumexp_rows(logits)
                    for r, j in enumerate(rows):
                        out[j] = (logits[r] - np.float32(lse[r])).astype(np.float32)
                rows, k = [], 0
        _ll.llama_memory_clear(engine.memory, True)

    def _token_text(self, token: int) -> str:
        return token_bytes(self._vocab, token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _load_template(self):
        self._bos_text = self._token_text(_ll.llama_vocab_bos(self._vocab))
        tmpl = _ll.llama_model_chat_template(self._model, None)
        if not tmpl:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        return Jinja2ChatFormatter(
            template=tmpl.decode("utf-8"),
            eos_token=self._token_text(_ll.llama_vocab_eos(self._vocab)),
            bos_token=self._bos_text,
            add_generation_prompt=True,
        )


__all__ = ["FALLBACK_TEMPLATE", "LlamaCppBackend", "LlamaCppStats", "render_plain"]
