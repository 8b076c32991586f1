"""The llama.cpp backend: multi-sequence batched sampling in one process.

How a call to ``generate(prompts, spec)`` runs:

- Each prompt is rendered (a ``Chat`` through the model's own chat template
  from the GGUF metadata, a ``str`` as is) and tokenized.
- Each prompt is evaluated ONCE, on the KV-cache sequence of its completion 0.
  Its other ``n - 1`` completions copy the prompt's KV cells with
  ``llama_memory_seq_cp`` (a unified KV cache: the cells are shared, not
  duplicated) and start from the prompt's stored last-token logits.
- Every step decodes, in ONE ``llama_batch``, the last token of every live
  sequence of every prompt plus chunks of the prompts being evaluated
  (continuous batching). Prompts are admitted as KV cells (``n_ctx``) and
  sequence slots (``max_seqs``) free up, with worst-case reservations, so any
  number of prompts and any ``n`` work without the caller chunking.
- Sequence ``j`` of a prompt samples with its own llama.cpp sampler chain
  (temperature -> top_k -> top_p -> min_p -> dist, the vLLM order: truncation
  acts on the tempered distribution), seeded with
  ``spec.sequence_seed(prompt_key(prompt), j)``. Temperature 0 is argmax.
- ``Completion.logprob`` is the sum over sampled tokens of the log-softmax of
  the raw model logits (temperature 1, no truncation).
- A completion ends at an end-of-generation token ("stop"; the token is kept
  in ``token_ids``, not in the text), at a stop string ("stop"; the text is cut
  before it, the token ids keep every sampled token), or after ``max_tokens``
  tokens or at the end of the context ("length").

Failures stay with their prompt: a prompt that does not fit in the context
(or whose chat template raises) gets ``n`` completions with finish_reason
"error" and ``error`` holding the MarginalError message (prompt length and
n_ctx); the other prompts are generated as usual (`marginal.backends.common`
holds this plumbing, shared with the other backends). ``backend.stats`` counts the
work (prompts and prompt tokens evaluated, prompt tokens reused, tokens
generated, decode calls, seconds). ``next_logprobs(prompts)`` gives the
next-token log-probabilities after each prompt (for token blending).

Reproducibility: the same call (same prompts in the same order, same spec,
model, n_ctx, max_seqs) gives the same completions, bit for bit. llama.cpp's
numerics are NOT batch-invariant, though: the same prompt decoded next to
other sequences (or with another max_seqs / n_ctx schedule) can diverge after
a few tokens, because the matmul path depends on the batch size (measured in
tests/test_llamacpp.py). Seeds and output order never depend on the batch.

Left out: sharing a common prefix between *different* prompts (each prompt is
evaluated in full once), grammar/JSON constraints, repetition penalties,
LoRA, embeddings, GPU offload settings (``n_gpu_layers`` is passed through
but not tuned), and streaming.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MarginalError
from ..types import Completion, FinishReason, Prompt, SampleSpec, prompt_key
from .common import (
    Counted,
    Counters,
    Lifecycle,
    check_prompt,
    ensure_open,
    error_completion,
    filled,
    find_stop,
    prepare_prompts,
    render_plain,
)

__all__ = ["FALLBACK_TEMPLATE", "LlamaCppBackend", "LlamaCppStats", "check_context_settings", "make_batch",
           "new_context", "render_plain", "token_bytes", "tokenize_bytes"]

try:
    import llama_cpp as _ll
except ImportError:  # pragma: no cover - llama-cpp-python is a core dependency
    _ll = None

FALLBACK_TEMPLATE = "plain"
"""How a Chat is rendered for a model without a chat template: the system text
(if any) then ``User: ...`` / ``Assistant: ...`` turns separated by blank
lines, ending with ``Assistant:``. No stop string is added; base models tend
to continue with another ``User:`` turn, so pass ``stop=("\\nUser:",)``."""

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


@dataclass(frozen=True)
class LlamaCppStats:
    """Work done by a backend since it was created (or ``reset_stats``)."""

    prompts: int = 0
    """Prompts evaluated."""
    prompt_tokens_evaluated: int = 0
    """Prompt tokens sent through the model."""
    prompt_tokens_cached: int = 0
    """Prompt tokens that completions reused through ``seq_cp`` instead of evaluating."""
    tokens_generated: int = 0
    """Sampled tokens, all completions together."""
    decode_calls: int = 0
    """Calls to ``llama_decode`` (one per step)."""
    decode_tokens: int = 0
    """Tokens sent to ``llama_decode`` (prompt chunks plus one per live sequence per step)."""
    decode_seconds: float = 0.0
    """Time spent inside ``llama_decode``."""
    seconds: float = 0.0
    """Wall time spent inside ``generate``."""


@dataclass
class _PromptRun:
    """One prompt of a generate call, from admission to its last completion."""

    index: int
    tokens: list[int]
    key: str
    budget: int
    """Most tokens each completion may sample (max_tokens, capped by n_ctx)."""
    holder: int = -1
    """Seq id whose cells [0, P) hold the prompt KV for siblings to copy."""
    holder_idle: bool = False
    """The holder's own completion has finished; the id is kept only for the prompt KV."""
    evaluated: int = 0
    next_j: int = 0
    done: int = 0
    logits: np.ndarray | None = None
    lse: float = 0.0


@dataclass
class _Seq:
    prompt: _PromptRun
    j: int
    sid: int
    seed: int
    sampler: int
    tokens: list[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    logprob: float = 0.0
    pending: int = -1
    """Sampled token not yet decoded."""
    scan: int = 0
    """Text offset from which stop strings are searched."""


class LlamaCppBackend(Counted[LlamaCppStats], Lifecycle):
    """A Backend on llama.cpp's low-level API (see the module docstring).

    ``n_ctx`` is the KV cache size shared by all live sequences (prompt cells
    are stored once per prompt); ``max_seqs`` bounds the sequences decoded
    together (the batch size of a step). ``n_threads`` defaults to the CPU
    count. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_seqs: int = 64,
        n_batch: int = 512,
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
        self.n_ctx = n_ctx
        self.max_seqs = max_seqs
        self.n_batch = max(n_batch, max_seqs)
        self._model = None
        self._ctx = None
        _ll._logger.set_verbose(verbose)
        _ll.llama_backend_init()

        mp = _ll.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        self._model = _ll.llama_model_load_from_file(str(path).encode(), mp)
        if not self._model:
            raise MarginalError(f"llama.cpp could not load model file {path} (not a valid GGUF?)")
        self._vocab = _ll.llama_model_get_vocab(self._model)
        self.n_vocab = _ll.llama_vocab_n_tokens(self._vocab)

        self._ctx = new_context(self._model, n_ctx=n_ctx, n_batch=self.n_batch, max_seqs=max_seqs, n_threads=n_threads)
        if self._ctx is None:
            self.close()
            raise MarginalError(f"llama.cpp could not create a context with n_ctx={n_ctx}, max_seqs={max_seqs}")
        self.n_ctx = _ll.llama_n_ctx(self._ctx)  # llama.cpp may round it up
        # llama.cpp clamps n_batch (and n_ubatch) to n_ctx; a batch above either aborts the process.
        self.n_batch = min(int(_ll.llama_n_batch(self._ctx)), int(_ll.llama_n_ubatch(self._ctx)))
        if self.n_batch < max_seqs:
            self.close()
            raise MarginalError(f"max_seqs={max_seqs} exceeds the batch size {self.n_batch} (raise n_ctx)")
        self._mem = _ll.llama_get_memory(self._ctx)

        self._batch, self._batch_arrays = make_batch(self.n_batch)
        self._piece_cache: dict[int, bytes] = {}
        self._eog_cache: dict[int, bool] = {}
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._chat_formatter = self._load_template()
        self._counters = Counters(LlamaCppStats)

    # ---------------------------------------------------------------- public

    @property
    def model_handle(self):
        """The loaded ``llama_model`` (None once closed), for engines that open their own context on it."""
        return self._model

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
        text = self.render(prompt)
        add_bos = bool(_ll.llama_vocab_get_add_bos(self._vocab))
        if add_bos and self._bos_text and text.startswith(self._bos_text):
            add_bos = False
        return tokenize_bytes(self._vocab, text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` completions for each prompt, in input order (see the module docstring)."""
        with self._counters.timed():
            return self._generate(list(prompts), spec)

    def next_logprobs(self, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        """The next-token log-probabilities (log-softmax of the raw logits, float32,
        one entry per vocabulary token) after each prompt, in input order.

        Prompts are evaluated together in batches of at most ``max_seqs`` prompts
        and ``n_batch`` tokens (a longer prompt goes alone, in chunks). A prompt
        that does not fit in ``n_ctx`` raises MarginalError. Nothing is cached
        between calls.
        """
        ensure_open(self._ctx, "llama.cpp backend")
        toks = [self.tokenize(p) for p in prompts]
        for i, t in enumerate(toks):
            if not t or len(t) > self.n_ctx:
                raise MarginalError(f"prompt {i} has {len(t)} tokens; expected 1 to n_ctx={self.n_ctx}")
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(toks)
        group: list[int] = []
        used = 0

        def run(idx: list[int]) -> None:
            _ll.llama_memory_clear(self._mem, True)
            tok_np, pos_np, seq_np, out_np = self._batch_arrays
            rows: list[int] = []
            chunks = [(i, s, a) for s, i in enumerate(idx) for a in range(0, len(toks[i]), self.n_batch)]
            k = 0
            for ci, (i, s, a) in enumerate(chunks):
                t = toks[i][a : a + self.n_batch]
                tok_np[k : k + len(t)] = t
                pos_np[k : k + len(t)] = np.arange(a, a + len(t), dtype=np.int32)
                seq_np[k : k + len(t)] = s
                out_np[k : k + len(t)] = 0
                last = a + len(t) == len(toks[i])
                if last:
                    out_np[k + len(t) - 1] = 1
                    rows.append(i)
                k += len(t)
                nxt = chunks[ci + 1] if ci + 1 < len(chunks) else None
                if nxt is None or k + min(self.n_batch, len(toks[nxt[0]]) - nxt[2]) > self.n_batch:
                    self._decode(k)
                    if rows:
                        logits = np.ctypeslib.as_array(_ll.llama_get_logits(self._ctx), shape=(len(rows), self.n_vocab))
                        lse = _logsumexp_rows(logits)
                        for r, j in enumerate(rows):
                            out[j] = (logits[r] - np.float32(lse[r])).astype(np.float32)
                    rows, k = [], 0
            _ll.llama_memory_clear(self._mem, True)

        for i, t in enumerate(toks):
            if group and (len(group) == self.max_seqs or used + len(t) > self.n_ctx):
                run(group)
                group, used = [], 0
            group.append(i)
            used += len(t)
        if group:
            run(group)
        return out

    def _decode(self, k: int) -> None:
        self._batch.n_tokens = k
        t = time.perf_counter()
        ret = _ll.llama_decode(self._ctx, self._batch)
        self._counters["decode_seconds"] += time.perf_counter() - t
        self._counters["decode_calls"] += 1
        self._counters["decode_tokens"] += k
        if ret != 0:
            raise MarginalError(f"llama_decode failed with code {ret} on a batch of {k} tokens")

    def close(self) -> None:
        if self._ctx is not None:
            _ll.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            _ll.llama_model_free(self._model)
            self._model = None

    # --------------------------------------------------------------- helpers

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return token_bytes(self._vocab, token, special=True).decode("utf-8", errors="replace")

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

    def _piece(self, token: int) -> bytes:
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

    def _sampler(self, spec: SampleSpec, seed: int) -> int:
        chain = _ll.llama_sampler_chain_init(_ll.llama_sampler_chain_default_params())
        add = _ll.llama_sampler_chain_add
        if spec.greedy:
            add(chain, _ll.llama_sampler_init_greedy())
            return chain
        add(chain, _ll.llama_sampler_init_temp(spec.temperature))
        if spec.top_k > 0:
            add(chain, _ll.llama_sampler_init_top_k(spec.top_k))
        if spec.top_p < 1.0:
            add(chain, _ll.llama_sampler_init_top_p(spec.top_p, 1))
        if spec.min_p > 0.0:
            add(chain, _ll.llama_sampler_init_min_p(spec.min_p, 1))
        add(chain, _ll.llama_sampler_init_dist(seed))
        return chain

    def _sample_row(self, sampler: int, row: np.ndarray) -> int:
        """Sample from a stored logits row, exactly as ``llama_sampler_sample`` does."""
        cur = np.empty(self.n_vocab, dtype=_TOKEN_DATA)
        cur["id"] = self._ids
        cur["logit"] = row
        cur["p"] = 0.0
        arr = _ll.llama_token_data_array(
            data=cur.ctypes.data_as(_ll.llama_token_data_p), size=self.n_vocab, selected=-1, sorted=False
        )
        _ll.llama_sampler_apply(sampler, ctypes.byref(arr))
        token = int(arr.data[arr.selected].id)
        _ll.llama_sampler_accept(sampler, token)
        return token

    # ------------------------------------------------------------ the engine

    def _generate(self, prompts: list[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        ensure_open(self._ctx, "llama.cpp backend")
        n = spec.n
        ready, results = prepare_prompts(prompts, spec, self._checked_tokens)
        pending: deque[_PromptRun] = deque(
            _PromptRun(i, toks, prompt_key(prompt), min(spec.max_tokens, self.n_ctx - len(toks)))
            for i, (prompt, toks) in enumerate(zip(prompts, ready))
            if toks is not None
        )

        _ll.llama_memory_clear(self._mem, True)
        free_ids = list(range(self.max_seqs - 1, -1, -1))
        cells_free = self.n_ctx
        prefill: list[_PromptRun] = []
        spawnable: deque[_PromptRun] = deque()
        live: list[_Seq] = []
        stop = spec.stop
        max_stop = max((len(s) for s in stop), default=0)
        c = self._counters
        tok_np, pos_np, seq_np, out_np = self._batch_arrays

        def finish(s: _Seq, reason: FinishReason, text: str | None = None, error: str | None = None) -> None:
            nonlocal cells_free
            p = s.prompt
            if text is None:
                text = s.data.decode("utf-8", errors="replace")
            P = len(p.tokens)
            results[p.index][s.j] = Completion(
                text=text,
                token_ids=tuple(s.tokens),
                logprob=s.logprob,
                finish_reason=reason,
                prompt_tokens=P,
                cached_prompt_tokens=0 if s.j == 0 else P,
                seed=s.seed,
                error=error,
            )
            _ll.llama_sampler_free(s.sampler)
            cells_free += p.budget
            p.done += 1
            if s.sid == p.holder and p.next_j < n:
                _ll.llama_memory_seq_rm(self._mem, s.sid, P, -1)  # keep the prompt for siblings
                p.holder_idle = True
            else:
                _ll.llama_memory_seq_rm(self._mem, s.sid, -1, -1)
                free_ids.append(s.sid)
            if p.done == n:
                cells_free += P

        def advance(s: _Seq, token: int, lp: float) -> bool:
            """Record a sampled token; True when the sequence goes on."""
            s.tokens.append(token)
            s.logprob += lp
            if self.is_eog(token):
                finish(s, "stop")
                return False
            s.data += self._piece(token)
            if stop:
                text = s.data.decode("utf-8", errors="replace")
                cut = find_stop(text, stop, s.scan)
                if cut >= 0:
                    finish(s, "stop", text[:cut])
                    return False
                s.scan = max(0, len(text) - max_stop - 3)  # -3: a partial UTF-8 char may shrink
            if len(s.tokens) >= s.prompt.budget:
                finish(s, "length")
                return False
            s.pending = token
            return True

        def spawn(p: _PromptRun) -> None:
            j = p.next_j
            if j == 0:
                sid = p.holder
            elif p.holder_idle:
                sid, p.holder_idle = p.holder, False
            else:
                sid = free_ids.pop()
                _ll.llama_memory_seq_cp(self._mem, p.holder, sid, 0, len(p.tokens))
                c["prompt_tokens_cached"] += len(p.tokens)
            p.next_j += 1
            seed = spec.sequence_seed(p.key, j)
            s = _Seq(p, j, sid, seed, self._sampler(spec, seed))
            assert p.logits is not None
            token = self._sample_row(s.sampler, p.logits)
            c["tokens_generated"] += 1
            if advance(s, token, float(p.logits[token]) - p.lse):
                live.append(s)
            if p.next_j == n:
                p.logits = None  # every sibling has its first token

        while pending or prefill or spawnable or live:
            # 1. start waiting completions of evaluated prompts (FIFO)
            while spawnable:
                p = spawnable[0]
                if p.next_j > 0:  # completion 0's cells and id were reserved at admission
                    if cells_free < p.budget or (not p.holder_idle and not free_ids):
                        break
                    cells_free -= p.budget
                spawn(p)
                if p.next_j == n:
                    spawnable.popleft()
            # 2. admit new prompts while nothing waits for room
            room = self.n_batch - len(live) - sum(len(p.tokens) - p.evaluated for p in prefill)
            while pending and not spawnable and free_ids and room > 0:
                p = pending[0]
                need = len(p.tokens) + p.budget
                if need > cells_free:
                    break
                pending.popleft()
                cells_free -= need
                p.holder = free_ids.pop()
                prefill.append(p)
                room -= len(p.tokens)
                c["prompts"] += 1
            if not live and not prefill:
                if spawnable or pending:  # pragma: no cover - reservations make this unreachable
                    raise RuntimeError("llama.cpp scheduler stalled")
                break

            # 3. one batch: the pending token of each live sequence, then prompt chunks
            k = len(live)
            for i, s in enumerate(live):
                tok_np[i] = s.pending
                pos_np[i] = len(s.prompt.tokens) + len(s.tokens) - 1
                seq_np[i] = s.sid
            out_np[:k] = 1
            finishing: list[tuple[_PromptRun, int]] = []
            chunked: list[_PromptRun] = []
            for p in prefill:
                take = min(len(p.tokens) - p.evaluated, self.n_batch - k)
                if take <= 0:
                    break
                a, b = p.evaluated, p.evaluated + take
                tok_np[k : k + take] = p.tokens[a:b]
                pos_np[k : k + take] = np.arange(a, b, dtype=np.int32)
                seq_np[k : k + take] = p.holder
                out_np[k : k + take] = 0
                p.evaluated = b
                chunked.append(p)
                if b == len(p.tokens):
                    out_np[k + take - 1] = 1
                    finishing.append((p, k + take - 1))
                k += take
                c["prompt_tokens_evaluated"] += take
            self._batch.n_tokens = k
            t = time.perf_counter()
            ret = _ll.llama_decode(self._ctx, self._batch)
            c["decode_seconds"] += time.perf_counter() - t
            c["decode_calls"] += 1
            c["decode_tokens"] += k
            if ret != 0:
                msg = f"llama_decode failed with code {ret} on a batch of {k} tokens"
                for s in live:
                    finish(s, "error", error=msg)
                live.clear()
                for p in chunked:  # prompts that were (partly) in the failed batch
                    prefill.remove(p)
                    for j in range(n):
                        results[p.index][j] = error_completion(msg, spec.sequence_seed(p.key, j), len(p.tokens))
                    _ll.llama_memory_seq_rm(self._mem, p.holder, -1, -1)
                    free_ids.append(p.holder)
                    cells_free += len(p.tokens) + p.budget
                continue

            # 4. sample the next token of each live sequence; keep prompts' last logits
            n_out = len(live) + len(finishing)
            logits = np.ctypeslib.as_array(_ll.llama_get_logits(self._ctx), shape=(n_out, self.n_vocab))
            for r, (p, _) in enumerate(finishing):
                prefill.remove(p)
                row = np.array(logits[len(live) + r])
                p.logits, p.lse = row, _logsumexp(row)
                spawnable.append(p)
            if live:
                m = len(live)
                sample = _ll.llama_sampler_sample
                ctx = self._ctx
                toks = [sample(s.sampler, ctx, i) for i, s in enumerate(live)]
                rows = logits[:m]
                lse = _logsumexp_rows(rows)
                lps = (rows[np.arange(m), toks] - lse).tolist()
                c["tokens_generated"] += m
                live = [s for s, tk, lp in zip(live, toks, lps) if advance(s, tk, lp)]

        _ll.llama_memory_clear(self._mem, True)
        return filled(results)

    def _checked_tokens(self, i: int, prompt: Prompt) -> list[int]:
        toks = self.tokenize(prompt)
        check_prompt(i, toks, self.n_ctx, context=f"the context of n_ctx={self.n_ctx}", hint="shorten it or raise n_ctx")
        return toks


def _logsumexp(row: np.ndarray) -> float:
    m = float(row.max())
    return m + math.log(float(np.exp(row - m, dtype=np.float64).sum()))


def _logsumexp_rows(rows: np.ndarray) -> np.ndarray:
    m = rows.max(axis=1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(rows - m).sum(axis=1, dtype=np.float64))).astype(np.float64)


def check_context_settings(n_ctx: object, max_seqs: object) -> None:
    """MarginalError unless ``n_ctx`` and ``max_seqs`` are settings llama.cpp can take."""
    if not (isinstance(max_seqs, int) and 1 <= max_seqs <= _ll.llama_max_parallel_sequences()):
        raise MarginalError(
            f"max_seqs must be an integer in [1, {_ll.llama_max_parallel_sequences()}], got {max_seqs!r}"
        )
    if not (isinstance(n_ctx, int) and n_ctx >= 16):
        raise MarginalError(f"n_ctx must be an integer >= 16, got {n_ctx!r}")


def new_context(model, *, n_ctx: int, n_batch: int, max_seqs: int, n_threads: int | None):
    """A llama.cpp context on a loaded model: one unified KV cache of ``n_ctx`` cells
    shared by up to ``max_seqs`` sequences, batches of ``n_batch`` tokens,
    ``n_threads`` threads (default: the CPU count); None when llama.cpp refuses."""
    threads = n_threads or os.cpu_count() or 1
    cp = _ll.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_seq_max = max_seqs
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.kv_unified = True
    cp.no_perf = True
    return _ll.llama_init_from_model(model, cp) or None


def token_bytes(vocab, token: int, *, special: bool = False) -> bytes:
    """A token's bytes (``special``: control tokens written out, as in messages and templates)."""
    buf = ctypes.create_string_buffer(128)
    n = _ll.llama_token_to_piece(vocab, token, buf, 128, 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = _ll.llama_token_to_piece(vocab, token, buf, -n, 0, special)
    return buf.raw[:n]


def tokenize_bytes(vocab, raw: bytes, *, add_bos: bool, special: bool) -> list[int]:
    """UTF-8 text as tokens (``special``: special-token text is parsed as those tokens)."""
    cap = len(raw) + 8
    buf = (_ll.llama_token * cap)()
    n = _ll.llama_tokenize(vocab, raw, len(raw), buf, cap, add_bos, special)
    if n < 0:  # pragma: no cover - cap is always enough (a token covers >= 1 byte)
        cap = -n
        buf = (_ll.llama_token * cap)()
        n = _ll.llama_tokenize(vocab, raw, len(raw), buf, cap, add_bos, special)
    return list(buf[:n])


def make_batch(n: int):
    """A llama_batch whose arrays are numpy buffers (filled with vectorized writes)."""
    tok = np.zeros(n, dtype=np.int32)
    pos = np.zeros(n, dtype=np.int32)
    nseq = np.ones(n, dtype=np.int32)
    seq = np.zeros(n, dtype=np.int32)
    out = np.zeros(n, dtype=np.int8)
    ptrs = (ctypes.POINTER(_ll.llama_seq_id) * n)()
    base = seq.ctypes.data
    for i in range(n):
        ptrs[i] = ctypes.cast(base + 4 * i, ctypes.POINTER(_ll.llama_seq_id))
    batch = _ll.llama_batch(
        n_tokens=0,
        token=tok.ctypes.data_as(ctypes.POINTER(_ll.llama_token)),
        embd=None,
        pos=pos.ctypes.data_as(ctypes.POINTER(_ll.llama_pos)),
        n_seq_id=nseq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
        seq_id=ctypes.cast(ptrs, ctypes.POINTER(ctypes.POINTER(_ll.llama_seq_id))),
        logits=out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
    )
    keep = (tok, pos, nseq, seq, out, ptrs)
    batch._keep = keep  # type: ignore[attr-defined]  # keep the buffers alive with the batch
    return batch, (tok, pos, seq, out)
