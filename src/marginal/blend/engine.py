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

import ctypes
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..backends.llamacpp import make_batch
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


class LlamaCppEngine:
    """`NextTokenLogprobs` on llama.cpp (see the module docstring).

    ``LlamaCppEngine.load(model)`` opens a catalog name or GGUF path;
    ``LlamaCppEngine(backend)`` reuses an open `LlamaCppBackend`'s model.
    ``n_ctx`` KV cells are shared by up to ``max_seqs`` sequences.
    """

    def __init__(self, backend, *, n_ctx: int = 8192, max_seqs: int = 64, n_batch: int = 512,
                 n_threads: int | None = None, owns_backend: bool = False) -> None:
        import llama_cpp as ll

        self._ll = ll
        if not (isinstance(max_seqs, int) and 1 <= max_seqs <= ll.llama_max_parallel_sequences()):
            raise MarginalError(
                f"max_seqs must be an integer in [1, {ll.llama_max_parallel_sequences()}], got {max_seqs!r}")
        if not (isinstance(n_ctx, int) and n_ctx >= 16):
            raise MarginalError(f"n_ctx must be an integer >= 16, got {n_ctx!r}")
        if backend.handle is None:
            raise MarginalError("the llama.cpp backend is closed")
        self._backend = backend
        self._owns = owns_backend
        self.name = backend.name
        self._model = backend.handle
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(self._model))
        self.max_seqs = max_seqs
        self.n_batch = max(n_batch, max_seqs)
        threads = n_threads or os.cpu_count() or 1
        cp = ll.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_batch
        cp.n_seq_max = max_seqs
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = True
        cp.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, cp)
        if not self._ctx:
            self._ctx = None
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
        self._counters = {"extend_calls": 0, "tokens": 0, "decode_calls": 0, "seconds": 0.0}

    @classmethod
    def load(cls, model: str, **options) -> LlamaCppEngine:
        """An engine for a catalog name, ``.gguf`` path or ``hf:`` spec (options: n_ctx, max_seqs, n_batch, n_threads)."""
        from ..backends.llamacpp import LlamaCppBackend
        from ..models import resolve_model

        backend = LlamaCppBackend(resolve_model(model), n_ctx=16, max_seqs=1, prefix_cache=0, name=model,
                                  n_threads=options.get("n_threads"))
        try:
            return cls(backend, owns_backend=True, **options)
        except BaseException:
            backend.close()
            raise

    # ------------------------------------------------------------ tokenizer

    @property
    def stats(self) -> EngineStats:
        return EngineStats(**self._counters)

    def reset_stats(self) -> None:
        for k in self._counters:
            self._counters[k] = 0

    @property
    def has_chat_template(self) -> bool:
        return bool(self._backend.has_chat_template)

    def render(self, prompt: Prompt) -> str:
        return self._backend.render(prompt)

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self._backend.tokenize(prompt)

    def tokenize_text(self, text: str) -> list[int]:
        ll = self._ll
        raw = text.encode("utf-8")
        if not raw:
            return []
        cap = len(raw) + 8
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, False, False)
        if n < 0:  # pragma: no cover - a token covers >= 1 byte
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, False, False)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            ll = self._ll
            buf = ctypes.create_string_buffer(128)
            n = ll.llama_token_to_piece(self._vocab, token, buf, 128, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = ll.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            p = self._pieces[token] = buf.raw[:n]
        return p

    def pieces(self) -> list[bytes]:
        """Every token's bytes, by id."""
        return [self.piece(t) for t in range(self.n_vocab)]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return self._backend.is_eog(token)

    def eog_tokens(self) -> frozenset[int]:
        return frozenset(t for t in range(self.n_vocab) if self._ll.llama_vocab_is_eog(self._vocab, t))

    def token_text(self, token: int) -> str:
        """A token's text with special tokens shown (for messages)."""
        buf = ctypes.create_string_buffer(256)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    # ------------------------------------------------------------ sequences

    def open(self, k: int) -> list[int]:
        if k > len(self._free):
            raise MarginalError(f"{self.name}: {k} more sequences asked, {len(self._free)} of max_seqs={self.max_seqs} free")
        out = [self._free.pop() for _ in range(k)]
        for s in out:
            self._len[s] = 0
        return out

    def length(self, seq: int) -> int:
        return self._len[seq]

    def cells_used(self) -> int:
        """Cells in use (a sibling's shared prompt cells are counted once per sequence: an upper bound)."""
        return sum(self._len.values())

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

    def release_all(self) -> None:
        self.release(list(self._len))
        self._ll.llama_memory_clear(self._mem, True)

    def extend(self, seqs: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        if self._ctx is None:
            raise MarginalError(f"engine {self.name} is closed")
        t0 = time.perf_counter()
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
                raise MarginalError(f"{self.name}: llama_decode failed with code {ret} on a batch of {k} tokens "
                                    f"(KV cache of n_ctx={self.n_ctx} full?)")
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
        self._counters["seconds"] += time.perf_counter() - t0
        return out

    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            self._ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_owns", False) and self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
