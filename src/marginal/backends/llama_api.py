"""Thin helpers over llama-cpp-python's low-level C API, shared by every llama.cpp engine.

The backend (`marginal.backends.llamacpp`), its slot engine
(`marginal.backends.slots`) and the token-blending engine
(`marginal.blend.engine`) open contexts, fill batches, tokenize and sample
through these. Left out: anything that schedules sequences.
"""

from __future__ import annotations

import ctypes
import math
import os

import numpy as np

from ..errors import MarginalError
from ..types import SampleSpec

try:
    import llama_cpp as _ll
except ImportError:  # pragma: no cover - llama-cpp-python is a core dependency
    _ll = None  # type: ignore[assignment]  # None marks it absent; mypy has no optional-module type

TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def check_context_settings(n_ctx: object, max_seqs: object) -> None:
    """MarginalError unless ``n_ctx`` and ``max_seqs`` are settings llama.cpp can take."""
    if not (isinstance(max_seqs, int) and 1 <= max_seqs <= _ll.llama_max_parallel_sequences()):
        raise MarginalError(
            f"max_seqs must be an integer in [1, {_ll.llama_max_parallel_sequences()}], got {max_seqs!r}"
        )
    if not (isinstance(n_ctx, int) and n_ctx >= 16):
        raise MarginalError(f"n_ctx must be an integer >= 16, got {n_ctx!r}")


def new_context(model, *, n_ctx: int, n_batch: int, max_seqs: int, n_threads: int | None, unified: bool = True):
    """A llama.cpp context on a loaded model: a KV cache of ``n_ctx`` cells for up to
    ``max_seqs`` sequences, batches of ``n_batch`` tokens, ``n_threads`` threads
    (default: the CPU count); None when llama.cpp refuses. ``unified``: one pool
    of cells that sequences share (prefixes shared without copying, but every
    token attends over all cells in use); else one stream of ``n_ctx /
    max_seqs`` cells per sequence (attention over its own cells only; copies
    between sequences copy data)."""
    threads = n_threads or os.cpu_count() or 1
    cp = _ll.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_seq_max = max_seqs
    cp.n_threads = threads
    cp.n_threads_batch = threads
    cp.kv_unified = unified
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
    batch._keep = (tok, pos, nseq, seq, out, ptrs)  # keep the buffers alive
    return batch, (tok, pos, seq, out)


def sampler_chain(spec: SampleSpec, seed: int) -> int:
    """A llama.cpp sampler chain for ``spec`` (greedy, or temp -> top_k -> top_p -> min_p -> dist)."""
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


def sample_row(sampler: int, row: np.ndarray, ids: np.ndarray) -> int:
    """Sample from a stored logits row, exactly as ``llama_sampler_sample`` does (``ids`` = arange(n_vocab))."""
    n = len(row)
    cur = np.empty(n, dtype=TOKEN_DATA)
    cur["id"] = ids
    cur["logit"] = row
    cur["p"] = 0.0
    arr = _ll.llama_token_data_array(data=cur.ctypes.data_as(_ll.llama_token_data_p), size=n, selected=-1, sorted=False)
    _ll.llama_sampler_apply(sampler, ctypes.byref(arr))
    token = int(arr.data[arr.selected].id)
    _ll.llama_sampler_accept(sampler, token)
    return token


def logsumexp(row: np.ndarray) -> float:
    m = float(row.max())
    return m + math.log(float(np.exp(row - m, dtype=np.float64).sum()))


def logsumexp_rows(rows: np.ndarray) -> np.ndarray:
    m = rows.max(axis=1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(rows - m).sum(axis=1, dtype=np.float64))).astype(np.float64)
