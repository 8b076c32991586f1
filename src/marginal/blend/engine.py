"""What token blending needs from an engine (`NextTokenLogprobs`), and its
llama.cpp implementation (`LlamaCppEngine`).

An engine holds many sequences in one KV cache. ``extend(seqs, tokens)``
appends tokens to each sequence (any number per sequence: a prompt, one new
token, or a guide's catch-up) in ONE ``llama_batch`` (split only when it is
larger than ``n_batch``) and returns the next-token log-probabilities after
each sequence's last token. ``truncate`` drops a sequence's cells after a
position (re-tokenization), ``fork`` shares a prompt's cells with a sibling.

`LlamaCppEngine` opens its own llama.cpp context on the model of a
`LlamaCppBackend` (whose tokenizer, chat template and EOG check it reuses,
read-only); the backend is created with a tiny context of its own.
Left out: other engines (vLLM / transformers could implement the protocol
with their own KV cache handles), GPU offload tuning, and sharing prompt
prefixes between different prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..backends.common import Counted, Counters, Lifecycle, ensure_open
from ..backends.llama_api import check_context_settings, make_batch, new_context, token_bytes, tokenize_bytes
from ..errors import MarginalError
from ..types import Prompt


@runtime_checkable
class NextTokenLogprobs(Protocol):
    """An engine that keeps sequences' KV caches and gives next-token log-probs."""

    name: str
    n_vocab: int
    n_ctx: int
    """KV cells shared by all sequences."""
    n_ctx_train: int
    """The model's training context (prompt plus completion should fit in it)."""
    max_seqs: int
    """Most sequences held at once."""

    def tokenize(self, prompt: Prompt) -> list[int]:
        """A prompt's tokens, rendered with this model's own chat template."""
        ...

    def tokenize_text(self, text: str) -> list[int]:
        """Continuation text as tokens (no BOS; special-token text is NOT parsed)."""
        ...

    def piece(self, token: int) -> bytes:
        """A token's bytes as it appears in generated text (b'' for control tokens)."""
        ...

    def is_eog(self, token: int) -> bool: ...

    def open(self, k: int) -> list[int]:
        """k empty sequences."""
        ...

    def extend(self, seqs: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Append ``tokens[i]`` (non-empty) to ``seqs[i]``, all in one batch; the
        next-token log-probs after each, shape (len(seqs), n_vocab), float32."""
        ...

    def length(self, seq: int) -> int: ...

    def truncate(self, seq: int, n: int) -> None:
        """Keep the first n tokens of a sequence."""
        ...

    def fork(self, src: int, dst: int) -> None:
        """Make empty ``dst`` hold the same tokens as ``src`` (cells shared, not recomputed)."""
        ...

    def release(self, seqs: Sequence[int]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineStats:
    """Work done by an engine since it was created (or ``reset_stats``)."""

    extend_calls: int = 0
    """Calls to ``extend`` (one per step of a blend)."""
    tokens: int = 0
    """Tokens sent through the model."""
    decode_calls: int = 0
    seconds: float = 0.0
    """Time spent in ``extend`` (decoding and log-softmax)."""


class LlamaCppEngine(Counted[EngineStats], Lifecycle):
    """`NextTokenLogprobs` on llama.cpp (see the module docstring).

    ``LlamaCppEngine.load(model)`` opens a catalog name or GGUF path;
    ``LlamaCppEngine(backend)`` reuses an open `LlamaCppBackend`'s model.
    ``n_ctx`` KV cells are shared by up to ``max_seqs`` sequences.
    """

    def __init__(
        self,
        backend,
        *,
        n_ctx: int = 8192,
        max_seqs: int = 64,
        n_batch: int = 512,
        n_threads: int | None = None,
        owns_backend: bool = False,
    ) -> None:
        import llama_cpp as ll

        self._ll = ll
        self._ctx = None
        check_context_settings(n_ctx, max_seqs)
        if backend.model_handle is None:
            raise MarginalError("the llama.cpp backend is closed")
        self._backend = backend
        self._owns = owns_backend
        self.name = backend.name
        self._model = backend.model_handle
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(self._model))
        self.max_seqs = max_seqs
        self.n_batch = max(n_batch, max_seqs)
        self._ctx = new_context(self._model, n_ctx=n_ctx, n_batch=self.n_batch, max_seqs=max_seqs, n_threads=n_threads)
        if self._ctx is None:
            self.close()
            raise MarginalError(f"llama.cpp could not create a context with n_ctx={n_ctx}, max_seqs={max_seqs}")
        self.n_ctx = int(ll.llama_n_ctx(self._ctx))
        self.n_batch = min(self.n_batch, int(ll.llama_n_batch(self._ctx)), int(ll.llama_n_ubatch(self._ctx)))
        # llama.cpp may round n_ctx up (256 cells at least) and caps n_batch at n_ctx
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch, self._arrays = make_batch(self.n_batch)
        self._free = list(range(max_seqs - 1, -1, -1))
        self._len: dict[int, int] = {}
        self._pieces: dict[int, bytes] = {}
        self._counters = Counters(EngineStats)

    @classmethod
    def load(cls, model: str, **options) -> LlamaCppEngine:
        """An engine for a catalog name, ``.gguf`` path or ``hf:`` spec.

        Options: n_ctx, max_seqs, n_batch, n_threads.
        """
        from ..backends.llamacpp import LlamaCppBackend
        from ..models import resolve_model

        backend = LlamaCppBackend(
            resolve_model(model), n_ctx=16, max_seqs=1, prefix_cache=0, name=model, n_threads=options.get("n_threads")
        )
        try:
            return cls(backend, owns_backend=True, **options)
        except BaseException:
            backend.close()
            raise

    # ------------------------------------------------------------ tokenizer

    @property
    def has_chat_template(self) -> bool:
        return bool(self._backend.has_chat_template)

    def render(self, prompt: Prompt) -> str:
        return self._backend.render(prompt)

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self._backend.tokenize(prompt)

    def tokenize_text(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        return tokenize_bytes(self._vocab, raw, add_bos=False, special=False) if raw else []

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            p = self._pieces[token] = token_bytes(self._vocab, token)
        return p

    def pieces(self) -> list[bytes]:
        """Every token's bytes, by id."""
        return [self.piece(t) for t in range(self.n_vocab)]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return self._backend.is_eog(token)

    # ------------------------------------------------------------ sequences

    def open(self, k: int) -> list[int]:
        if k > len(self._free):
            raise MarginalError(
                f"{self.name}: {k} more sequences asked, {len(self._free)} of max_seqs={self.max_seqs} free"
            )
        out = [self._free.pop() for _ in range(k)]
        for s in out:
            self._len[s] = 0
        return out

    def length(self, seq: int) -> int:
        return self._len[seq]

    def truncate(self, seq: int, n: int) -> None:
        if n < self._len[seq]:
            self._ll.llama_memory_seq_rm(self._mem, seq, n, -1)
            self._len[seq] = n

    def fork(self, src: int, dst: int) -> None:
        self._ll.llama_memory_seq_rm(self._mem, dst, -1, -1)
        self._ll.llama_memory_seq_cp(self._mem, src, dst, 0, self._len[src])
        self._len[dst] = self._len[src]

    def release(self, seqs: Sequence[int]) -> None:
        for s in seqs:
            if s in self._len:
                self._ll.llama_memory_seq_rm(self._mem, s, -1, -1)
                del self._len[s]
                self._free.append(s)

    def extend(self, seqs: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        ensure_open(self._ctx, f"engine {self.name}")
        with self._counters.timed():
            return self._extend(seqs, tokens)

    def _extend(self, seqs: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        ll = self._ll
        out = np.empty((len(seqs), self.n_vocab), dtype=np.float32)
        tok_np, pos_np, seq_np, out_np = self._arrays
        k = 0
        rows: list[int] = []

        def flush() -> None:
            nonlocal k, rows
            if k == 0:
                return
            self._batch.n_tokens = k
            ret = ll.llama_decode(self._ctx, self._batch)
            self._counters["decode_calls"] += 1
            self._counters["tokens"] += k
            if ret != 0:
                raise MarginalError(
                    f"{self.name}: llama_decode failed with code {ret} on a batch of {k} tokens "
                    f"(KV cache of n_ctx={self.n_ctx} full?)"
                )
            if rows:
                logits = np.ctypeslib.as_array(ll.llama_get_logits(self._ctx), shape=(len(rows), self.n_vocab))
                m = logits.max(axis=1, keepdims=True)
                lse = m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
                out[rows] = logits - lse
            k, rows = 0, []

        for i, (s, toks) in enumerate(zip(seqs, tokens)):
            if not toks:
                raise ValueError(f"extend: sequence {s} got no tokens")
            start = self._len[s]
            a = 0
            while a < len(toks):
                if k == self.n_batch:
                    flush()
                take = min(len(toks) - a, self.n_batch - k)
                tok_np[k : k + take] = toks[a : a + take]
                pos_np[k : k + take] = np.arange(start + a, start + a + take, dtype=np.int32)
                seq_np[k : k + take] = s
                out_np[k : k + take] = 0
                a += take
                k += take
                if a == len(toks):
                    out_np[k - 1] = 1
                    rows.append(i)
            self._len[s] = start + len(toks)
        flush()
        self._counters["extend_calls"] += 1
        return out

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            self._ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_owns", False) and self._backend is not None:
            self._backend.close()
            self._backend = None
