"""The llama.cpp slot engine: continuous batching across requests, with a prefix cache.

A fixed number of sequence slots (``slots``) share one llama.cpp context.
Its KV cache is either one stream per sequence (``kv_unified=False``, what
`marginal.backends.slot_options` picks: ``n_ctx / (slots + prefix_cache)``
cells each, attention over a sequence's own cells, copies between sequences
copy data) or unified (``n_ctx`` cells that all sequences share: copied
prefixes cost no memory, but every token's attention scans all cells up to
the highest one in use). llama.cpp decodes a multi-stream batch in one pass
over the weights per run of consecutive sequence ids in batch order, so the
engine puts every batch in order of sequence id and gives each new sequence
the lowest free id: a full engine decodes in one pass (bench/continuous.py,
part "layout", 32 slots, a continuous 4 x 8 grid on 4 GSM8K problems:
streams 85 tok/s, unified 69; on 2 problems, before batches were ordered,
streams made 49 and unified 95).

Requests (a prompt and a `SampleSpec` asking for ``n`` completions) queue in
arrival order. Each ``step()`` is ONE ``llama_decode`` that carries, in
order of sequence id:

- one token for every active sequence, and
- chunks of newly admitted prompts (chunked prefill), up to ``n_batch``
  tokens in all.

A prompt is admitted when a slot is free and its worst-case cells (prompt
plus ``max_tokens``) fit; it is evaluated once, on the sequence of its
completion 0, and its ``n - 1`` siblings copy its KV cells with
``llama_memory_seq_cp`` (cells shared, not duplicated) and start from its
last-token logits. A finished sequence frees its slot and its cells at once,
and the next waiting sibling or request takes it: no call waits for the
longest sequence of a batch.

Prefix cache: when a prompt has been evaluated, its KV cells are kept on one
of ``prefix_cache`` extra sequence ids (least recently used first out). A
later prompt copies its longest common token prefix with any kept prompt
(``seq_cp``) and evaluates only the rest: a prior's system text and few-shot
exemplars are evaluated once per run rather than once per (problem, prior),
and a policy that asks a prompt for more samples reuses all of it. Prompts
admitted together share the same way: a prompt whose longest common prefix
is with a prompt still being evaluated waits for that prefix, copies it, and
evaluates only its own rest. The
cache is emptied when a run (a ``generate`` call, or a
`marginal.backends.streaming.Driver`) starts on an idle engine, so a run is
reproducible whatever ran before it.

Completion ``j`` of a request samples with its own llama.cpp sampler chain
(temperature -> top_k -> top_p -> min_p -> dist, the vLLM order), seeded
with ``spec.sequence_seed(prompt_key(prompt), j)`` whatever the arrival
order. llama.cpp's numerics are not batch-invariant: a prompt decoded next
to other sequences (or from a copied prefix) can diverge after some tokens.

Thread safety: ``submit`` may be called from any thread; ``step`` runs under
a lock (any thread may drive, one at a time). ``future.cancel()`` on a
request removes its sequences at the next step.

Left out: speculative decoding, grammar constraints, KV cache quantization,
and priorities between requests.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MarginalError
from ..types import Completion, FinishReason, Prompt, SampleSpec, prompt_key
from .common import Counted, Counters, check_prompt, error_completion, failure_message, find_stop
from .llama_api import (
    check_context_settings,
    logsumexp,
    logsumexp_rows,
    make_batch,
    new_context,
    sample_row,
    sampler_chain,
)

if TYPE_CHECKING:
    from .llamacpp import LlamaCppBackend

import llama_cpp as _ll

MIN_REUSE = 4
"""Shortest common prefix worth copying from the cache (tokens)."""


@dataclass(frozen=True)
class SlotStats:
    """Work done by a slot engine since it was created (or ``reset_stats``)."""

    prompts: int = 0
    """Prompts admitted."""
    prompt_tokens_evaluated: int = 0
    """Prompt tokens sent through the model."""
    prompt_tokens_cached: int = 0
    """Prompt tokens reused instead of evaluated: siblings' copies plus prefix-cache hits."""
    prefix_tokens_reused: int = 0
    """The part of ``prompt_tokens_cached`` copied from the prefix cache (other requests)."""
    tokens_generated: int = 0
    """Sampled tokens, all completions together."""
    decode_calls: int = 0
    """Calls to ``llama_decode`` (one per step)."""
    decode_tokens: int = 0
    """Tokens sent to ``llama_decode`` (prompt chunks plus one per active sequence per step)."""
    active_steps: int = 0
    """Sum over decode calls of the slots at work: sequences decoded plus prompts evaluated
    (mean active slots = active_steps / decode_calls)."""
    max_active: int = 0
    """Most slots at work in one step (never above ``slots``)."""
    decode_seconds: float = 0.0
    """Time spent inside ``llama_decode``."""
    seconds: float = 0.0
    """Wall time spent stepping (or inside ``generate``)."""


@dataclass(eq=False)
class _Request:
    """One submitted prompt, from the queue to its last completion."""

    tokens: list[int]
    key: str
    spec: SampleSpec
    budget: int
    """Most tokens each completion may sample (max_tokens, capped by n_ctx)."""
    future: Future
    results: list
    holder: int = -1
    """Seq id whose cells [0, P) hold the prompt KV for siblings to copy."""
    holder_idle: bool = False
    """The holder's own completion has finished; the id is kept only for the prompt KV."""
    evaluated: int = 0
    """Prompt tokens placed in a batch (or copied)."""
    decoded: int = 0
    """Prompt tokens whose KV is in the cache (their batch was decoded)."""
    source: _Request | None = None
    """A prompt being evaluated that shares this one's first ``source_len`` tokens: wait and copy them."""
    source_len: int = 0
    reused: int = 0
    """Prompt tokens copied from the prefix cache."""
    reserved: int = 0
    """KV cells reserved for this request now."""
    next_j: int = 0
    done: int = 0
    logits: np.ndarray | None = None
    lse: float = 0.0
    live: list = field(default_factory=list)


@dataclass(eq=False)
class _Seq:
    req: _Request
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


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    eq = a[:n] == b[:n]
    return n if bool(eq.all()) else int(np.argmin(eq))


class SlotEngine(Counted[SlotStats]):
    """Continuous batching on one llama.cpp context (see the module docstring)."""

    def __init__(
        self,
        backend: LlamaCppBackend,
        *,
        n_ctx: int,
        slots: int,
        n_batch: int,
        n_threads: int,
        prefix_cache: int,
        kv_unified: bool = True,
        seq_len: int | None = None,
    ) -> None:
        check_context_settings(n_ctx, slots)
        limit = _ll.llama_max_parallel_sequences() - slots
        if not (isinstance(prefix_cache, int) and 0 <= prefix_cache <= limit):
            raise MarginalError(
                f"prefix_cache must be an integer in [0, {limit}] with max_seqs={slots}, got {prefix_cache!r}"
            )
        self.backend = backend
        self.slots = slots
        self.prefix_cache = prefix_cache
        self.unified = bool(kv_unified)
        self.ctx = new_context(
            backend.model_handle,
            n_ctx=n_ctx,
            n_batch=max(n_batch, slots),
            max_seqs=slots + prefix_cache,
            n_threads=n_threads,
            unified=self.unified,
        )
        if self.ctx is None:
            raise MarginalError(f"llama.cpp could not create a context with n_ctx={n_ctx}, max_seqs={slots}")
        self.n_ctx = int(_ll.llama_n_ctx(self.ctx))  # llama.cpp may round it up
        # tokens one sequence holds: its stream, or (unified) seq_len, never past the model's training context
        own = int(_ll.llama_n_ctx_seq(self.ctx)) if not self.unified else min(self.n_ctx, seq_len or self.n_ctx)
        self.seq_ctx = min(own, int(_ll.llama_model_n_ctx_train(backend.model_handle)))
        # llama.cpp clamps n_batch (and n_ubatch) to n_ctx; a batch above either aborts the process.
        self.n_batch = min(int(_ll.llama_n_batch(self.ctx)), int(_ll.llama_n_ubatch(self.ctx)))
        if self.n_batch < slots:
            _ll.llama_free(self.ctx)
            self.ctx = None
            raise MarginalError(f"max_seqs={slots} exceeds the batch size {self.n_batch} (raise n_ctx)")
        self.memory = _ll.llama_get_memory(self.ctx)
        self.batch, self.batch_arrays = make_batch(self.n_batch)
        self._ids = np.arange(backend.n_vocab, dtype=np.int32)
        self._inbox_lock = threading.Lock()
        self._step_lock = threading.RLock()
        self._inbox: list[_Request] = []
        self._queue: deque[_Request] = deque()
        self._prefill: list[_Request] = []
        self._spawnable: deque[_Request] = deque()
        self._live: list[_Seq] = []
        self._free_ids = list(range(slots))  # a heap: the lowest free id first, so live ids stay dense
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_ids = list(range(slots + prefix_cache - 1, slots - 1, -1))
        # unified: one pool of cells shared by all sequences; streams: each sequence has its own
        self._cells_free: float = self.n_ctx if self.unified else math.inf
        self._counters = Counters(SlotStats)
        self._at: list[tuple[int, int]] = []

    # ---------------------------------------------------------------- public

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        return self.submit_many([prompt], spec)[0]

    def submit_many(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[Future]:
        """Queue prompts atomically (in order); each future resolves to its ``spec.n`` completions."""
        if self.ctx is None:
            raise MarginalError("the llama.cpp backend is closed")
        reqs, futures = [], []
        for i, prompt in enumerate(prompts):
            fut: Future[list[Completion]] = Future()
            futures.append(fut)
            key = prompt_key(prompt)
            try:
                toks = self.backend.tokenize(prompt)
                where = f"n_ctx={self.n_ctx}" if self.seq_ctx == self.n_ctx else f"{self.seq_ctx} tokens per sequence"
                check_prompt(i, toks, self.seq_ctx, context=f"the context of {where}", hint="shorten it or raise n_ctx")
            except Exception as e:  # template errors, too-long prompts: this prompt only
                msg = failure_message(e)
                fut.set_result([error_completion(msg, spec.sequence_seed(key, j)) for j in range(spec.n)])
                continue
            budget = min(spec.max_tokens, self.seq_ctx - len(toks))
            reqs.append(_Request(toks, key, spec, budget, fut, [None] * spec.n))
        with self._inbox_lock:
            self._inbox.extend(reqs)
        return futures

    @property
    def busy(self) -> bool:
        return bool(self._inbox or self._queue or self._prefill or self._spawnable or self._live)

    def begin_run(self) -> None:
        """A run starts: an idle engine empties its prefix cache, so the run is reproducible."""
        with self._step_lock:
            if not self.busy:
                self.clear_cache()

    def clear_cache(self) -> None:
        with self._step_lock:
            for sid in list(self._cache):
                self._evict(sid)

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Hold the engine while nothing runs (for work that clears the context, e.g. scoring)."""
        with self._step_lock:
            if self.busy:
                raise MarginalError("the llama.cpp engine is busy with submitted requests; wait for them first")
            self.clear_cache()
            yield

    def decode(self, k: int) -> bool:
        """``llama_decode`` of the first ``k`` batch entries (counted in the stats); False on failure."""
        self.batch.n_tokens = k
        t = time.perf_counter()
        ret = _ll.llama_decode(self.ctx, self.batch)
        self._counters["decode_seconds"] += time.perf_counter() - t
        self._counters["decode_calls"] += 1
        self._counters["decode_tokens"] += k
        return ret == 0

    def step(self) -> bool:
        """One decode of every active sequence plus prompt chunks; False when there was nothing to do."""
        with self._step_lock:
            if self.ctx is None:
                raise MarginalError("the llama.cpp backend is closed")
            t0 = time.perf_counter()
            try:
                return self._step()
            finally:
                self._counters["seconds"] += time.perf_counter() - t0

    def close(self) -> None:
        with self._step_lock:
            for s in self._live:
                _ll.llama_sampler_free(s.sampler)
            for r in [*self._queue, *self._prefill, *self._spawnable, *{s.req for s in self._live}, *self._inbox]:
                self._fail(r, "the llama.cpp backend was closed")
            self._queue.clear()
            self._prefill.clear()
            self._spawnable.clear()
            self._live.clear()
            self._inbox.clear()
            if self.ctx is not None:
                _ll.llama_free(self.ctx)
                self.ctx = None

    # ------------------------------------------------------------- the step

    def _step(self) -> bool:
        with self._inbox_lock:
            self._queue.extend(self._inbox)
            self._inbox.clear()
        self._reap_cancelled()
        self._spawn_waiting()
        self._admit()
        if not self._live and not self._prefill:
            if self._spawnable or self._queue:  # pragma: no cover - reservations make this unreachable
                raise RuntimeError("llama.cpp scheduler stalled")
            return False
        k, finishing, chunked = self._fill_batch()
        if self.decode(k):
            for r in chunked:
                r.decoded = r.evaluated
            self._copy_linked()
            self._sample(finishing)
        else:
            self._fail_batch(chunked, f"llama_decode failed on a batch of {k} tokens")
        return True

    def _reap_cancelled(self) -> None:
        """Requests whose future was cancelled leave the engine: slots and cells come back."""
        if not any(r.future.cancelled() for r in (*self._queue, *self._prefill, *self._spawnable)) and not any(
            s.req.future.cancelled() for s in self._live
        ):
            return
        gone = {r for r in (*self._queue, *self._prefill, *self._spawnable) if r.future.cancelled()}
        gone |= {s.req for s in self._live if s.req.future.cancelled()}
        self._queue = deque(r for r in self._queue if r not in gone)
        self._prefill = [r for r in self._prefill if r not in gone]
        self._spawnable = deque(r for r in self._spawnable if r not in gone)
        for s in self._live:
            if s.req in gone:
                _ll.llama_sampler_free(s.sampler)
                self._release_id(s.sid)
        self._live = [s for s in self._live if s.req not in gone]
        for r in self._prefill:
            if r.source in gone:
                r.source, r.source_len = None, 0
        for r in gone:
            if r.holder >= 0 and (r.holder_idle or r.evaluated < len(r.tokens) or r.next_j == 0):
                self._release_id(r.holder)
            self._cells_free += r.reserved
            r.reserved = 0

    def _release_id(self, sid: int) -> None:
        _ll.llama_memory_seq_rm(self.memory, sid, -1, -1)
        if sid not in self._free_ids:
            heapq.heappush(self._free_ids, sid)

    def _spawn_waiting(self) -> None:
        """Start waiting completions of evaluated prompts: on a prompt's own slot whenever it is
        free (completion 0 at once), then on other free slots first come, first served."""
        for r in self._spawnable:
            if r.next_j == 0:  # its cells and slot were reserved at admission
                self._spawn(r)
            if r.holder_idle and r.next_j < r.spec.n and self._cells_free >= r.budget:
                self._cells_free -= r.budget  # its own slot is free again: the next sibling takes it
                r.reserved += r.budget
                self._spawn(r)
        while self._spawnable:
            r = self._spawnable[0]
            if r.next_j < r.spec.n:
                if self._cells_free < r.budget or (not r.holder_idle and not self._free_ids):
                    break
                self._cells_free -= r.budget
                r.reserved += r.budget
                self._spawn(r)
            if r.next_j == r.spec.n:
                self._spawnable.popleft()
        self._spawnable = deque(r for r in self._spawnable if r.next_j < r.spec.n)

    def _spawn(self, r: _Request) -> None:
        j = r.next_j
        if j == 0:
            sid = r.holder
        elif r.holder_idle:
            sid, r.holder_idle = r.holder, False
        else:
            sid = heapq.heappop(self._free_ids)
            self.copy_prefix(r.holder, sid, len(r.tokens))
            self._counters["prompt_tokens_cached"] += len(r.tokens)
        r.next_j += 1
        seed = r.spec.sequence_seed(r.key, j)
        s = _Seq(r, j, sid, seed, sampler_chain(r.spec, seed))
        assert r.logits is not None
        token = sample_row(s.sampler, r.logits, self._ids)
        self._counters["tokens_generated"] += 1
        if self._advance(s, token, float(r.logits[token]) - r.lse):
            self._live.append(s)
        if r.next_j == r.spec.n:
            r.logits = None  # every sibling has its first token

    def _admit(self) -> None:
        """Admit queued prompts while slots, cells and batch room allow (none while siblings wait)."""
        room = self.n_batch - len(self._live) - sum(len(p.tokens) - p.evaluated for p in self._prefill)
        while self._queue and not self._spawnable and self._free_ids and room > 0:
            r = self._queue[0]
            need = len(r.tokens) + r.budget
            while need > self._cells_free and self._cache:
                self._evict(next(iter(self._cache)))
            if need > self._cells_free:
                break
            self._queue.popleft()
            self._cells_free -= need
            r.reserved = need
            r.holder = heapq.heappop(self._free_ids)
            r.evaluated = r.decoded = r.reused = self._reuse(r)
            self._link(r)
            self._prefill.append(r)
            room -= len(r.tokens) - max(r.evaluated, r.source_len)
            self._counters["prompts"] += 1

    def _fill_batch(self) -> tuple[int, list[tuple[_Request, int]], list[_Request]]:
        """The pending token of each live sequence and the chunks of prompts in evaluation, in the
        batch in order of sequence id: with one KV stream per sequence llama.cpp makes one pass
        over the weights per run of consecutive ids in batch order, so dense ids in order take one."""
        tok_np, pos_np, seq_np, out_np = self.batch_arrays
        room = self.n_batch - len(self._live)
        chunks: list[tuple[_Request, int]] = []
        for r in self._prefill:
            if r.source is not None:  # waits for the shared prefix another prompt is evaluating
                continue
            take = min(len(r.tokens) - r.evaluated, room)
            if take <= 0:
                break
            chunks.append((r, take))
            room -= take
        self._live.sort(key=lambda s: s.sid)
        work: list[tuple[int, _Seq | _Request, int]] = [(s.sid, s, 1) for s in self._live]
        work += [(r.holder, r, take) for r, take in chunks]
        work.sort(key=lambda w: w[0])
        k = row = 0
        self._at = []  # (batch index, logits row) of each live sequence, in self._live order
        finishing: list[tuple[_Request, int]] = []
        for sid, item, take in work:
            if isinstance(item, _Seq):
                tok_np[k], seq_np[k], out_np[k] = item.pending, sid, 1
                pos_np[k] = len(item.req.tokens) + len(item.tokens) - 1
                self._at.append((k, row))
                k, row = k + 1, row + 1
                continue
            r = item
            a, b = r.evaluated, r.evaluated + take
            tok_np[k : k + take] = r.tokens[a:b]
            pos_np[k : k + take] = np.arange(a, b, dtype=np.int32)
            seq_np[k : k + take] = sid
            out_np[k : k + take] = 0
            r.evaluated = b
            if b == len(r.tokens):
                out_np[k + take - 1] = 1
                finishing.append((r, row))
                row += 1
            k += take
            self._counters["prompt_tokens_evaluated"] += take
        chunked = [r for r, _ in chunks]
        busy = len(self._live) + len(chunked)  # slots working this step: decoding or evaluating a prompt
        self._counters["active_steps"] += busy
        self._counters["max_active"] = max(self._counters["max_active"], busy)
        return k, finishing, chunked

    def _sample(self, finishing: list[tuple[_Request, int]]) -> None:
        """Sample the next token of each live sequence; keep finished prompts' last logits."""
        m = len(self._live)
        logits = np.ctypeslib.as_array(_ll.llama_get_logits(self.ctx), shape=(m + len(finishing), self.backend.n_vocab))
        for r, row in finishing:
            self._prefill.remove(r)
            r.logits = np.array(logits[row])
            r.lse = logsumexp(r.logits)
            self._spawnable.append(r)
            self._remember(r)
        if m:
            sample = _ll.llama_sampler_sample
            toks = [sample(s.sampler, self.ctx, i) for s, (i, _) in zip(self._live, self._at)]
            first, last = self._at[0][1], self._at[-1][1]
            # the live rows, a view while no finished prompt's row falls between them
            rows = logits[first : last + 1] if last - first + 1 == m else logits[[r for _, r in self._at]]
            lps = (rows[np.arange(m), toks] - logsumexp_rows(rows)).tolist()
            self._counters["tokens_generated"] += m
            self._live = [s for s, tk, lp in zip(self._live, toks, lps) if self._advance(s, tk, lp)]

    def _fail_batch(self, chunked: list[_Request], msg: str) -> None:
        for s in self._live:
            self._finish(s, "error", error=msg)
        self._live.clear()
        for r in self._prefill:
            if r.source in chunked:
                r.source, r.source_len = None, 0
        for r in chunked:  # prompts that were (partly) in the failed batch
            self._prefill.remove(r)
            self._release_id(r.holder)
            self._cells_free += r.reserved
            r.reserved = 0
            self._fail(r, msg)

    # ------------------------------------------------------ sequences ending

    def _advance(self, s: _Seq, token: int, lp: float) -> bool:
        """Record a sampled token; True when the sequence goes on."""
        s.tokens.append(token)
        s.logprob += lp
        b = self.backend
        if b.is_eog(token):
            self._finish(s, "stop")
            return False
        s.data += b.piece(token)
        stop = s.req.spec.stop
        if stop:
            text = s.data.decode("utf-8", errors="replace")
            cut = find_stop(text, stop, s.scan)
            if cut >= 0:
                self._finish(s, "stop", text[:cut])
                return False
            s.scan = max(0, len(text) - max(len(st) for st in stop) - 3)  # -3: a partial UTF-8 char may shrink
        if len(s.tokens) >= s.req.budget:
            self._finish(s, "length")
            return False
        s.pending = token
        return True

    def _finish(self, s: _Seq, reason: FinishReason, text: str | None = None, error: str | None = None) -> None:
        r = s.req
        P = len(r.tokens)
        r.results[s.j] = Completion(
            text=s.data.decode("utf-8", errors="replace") if text is None else text,
            token_ids=tuple(s.tokens),
            logprob=s.logprob,
            finish_reason=reason,
            prompt_tokens=P,
            cached_prompt_tokens=r.reused if s.j == 0 else P,
            seed=s.seed,
            error=error,
        )
        _ll.llama_sampler_free(s.sampler)
        self._cells_free += r.budget
        r.reserved -= r.budget
        r.done += 1
        if s.sid == r.holder and r.next_j < r.spec.n:
            _ll.llama_memory_seq_rm(self.memory, s.sid, P, -1)  # keep the prompt for siblings
            r.holder_idle = True
        else:
            self._release_id(s.sid)
        if r.done == r.spec.n:
            self._cells_free += r.reserved
            r.reserved = 0
            with suppress(InvalidStateError):  # cancelled meanwhile
                r.future.set_result(list(r.results))

    def _fail(self, r: _Request, msg: str) -> None:
        out = [
            c if c is not None else error_completion(msg, r.spec.sequence_seed(r.key, j), len(r.tokens))
            for j, c in enumerate(r.results)
        ]
        with suppress(InvalidStateError):
            r.future.set_result(out)

    # ---------------------------------------------------------- prefix cache

    def _reuse(self, r: _Request) -> int:
        """Copy the longest cached prefix of ``r``'s prompt onto its holder; the tokens copied."""
        if not self._cache:
            return 0
        toks = np.asarray(r.tokens, dtype=np.int32)
        best, best_len = -1, 0
        for sid, cached in self._cache.items():
            n = common_prefix(cached, toks)
            if n > best_len:
                best, best_len = sid, n
        best_len = min(best_len, len(r.tokens) - 1)  # the last token is evaluated for its logits
        if best_len < MIN_REUSE:
            return 0
        self.copy_prefix(best, r.holder, best_len)
        self._cache.move_to_end(best)
        self._counters["prompt_tokens_cached"] += best_len
        self._counters["prefix_tokens_reused"] += best_len
        return best_len

    def _link(self, r: _Request) -> None:
        """Make ``r`` wait for a longer common prefix that a prompt in evaluation is computing."""
        if not self.prefix_cache:
            return
        toks = np.asarray(r.tokens, dtype=np.int32)
        best, best_len = None, r.evaluated
        for other in self._prefill:
            n = min(common_prefix(np.asarray(other.tokens[: len(toks)], dtype=np.int32), toks), len(toks) - 1)
            if n >= best_len + MIN_REUSE:
                best, best_len = other, n
        if best is not None:
            r.source, r.source_len = best, best_len

    def _copy_linked(self) -> None:
        """Prompts whose shared prefix is now decoded copy it (before any holder can be released)."""
        for r in self._prefill:
            src = r.source
            if src is None or src.decoded < r.source_len:
                continue
            n = r.source_len
            _ll.llama_memory_seq_rm(self.memory, r.holder, -1, -1)
            self.copy_prefix(src.holder, r.holder, n)
            self._counters["prompt_tokens_cached"] += n - r.reused
            self._counters["prefix_tokens_reused"] += n - r.reused
            r.evaluated = r.decoded = r.reused = n
            r.source, r.source_len = None, 0

    def _remember(self, r: _Request) -> None:
        """Keep an evaluated prompt's cells on a cache id (unless an equal prompt is kept)."""
        if not (self._cache or self._cache_ids):
            return
        toks = np.asarray(r.tokens, dtype=np.int32)
        for sid, cached in self._cache.items():
            if len(cached) >= len(toks) and common_prefix(cached, toks) == len(toks):
                self._cache.move_to_end(sid)
                return
        if not self._cache_ids:
            self._evict(next(iter(self._cache)))  # least recently used out
        if self._cells_free < len(toks):  # cells are for live work first: skip rather than evict more
            return
        sid = self._cache_ids.pop()
        self.copy_prefix(r.holder, sid, len(toks))
        self._cache[sid] = toks
        self._cells_free -= len(toks)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Give empty sequence ``dst`` the first ``n`` tokens of ``src``: shared cells in a unified
        cache; across streams llama.cpp copies whole sequences, so copy all, then drop the rest."""
        if self.unified:
            _ll.llama_memory_seq_cp(self.memory, src, dst, 0, n)
        else:
            _ll.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
            _ll.llama_memory_seq_rm(self.memory, dst, n, -1)

    def _evict(self, sid: int) -> None:
        toks = self._cache.pop(sid)
        _ll.llama_memory_seq_rm(self.memory, sid, -1, -1)
        self._cache_ids.append(sid)
        self._cells_free += len(toks)
