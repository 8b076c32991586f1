"""The vLLM backend: K priors x M samples on a GPU through ``vllm.LLM``.

Model spec: ``vllm:ID_OR_PATH`` (a hub id, a local folder, a ``.gguf`` file,
or a catalog name such as ``smollm2-135m``, resolved to its GGUF file); see
``load_backend``. The engine is built once with prefix caching on
(``vllm.LLM(model, enable_prefix_caching=True, seed=...)``).

How a call to ``generate(prompts, spec)`` runs:

- Each prompt is rendered by the backend (a ``Chat`` through the tokenizer's
  chat template with the generation prompt added, or the plain
  ``User: ... / Assistant:`` fallback of the other backends when the
  tokenizer has none; a ``str`` as is) and tokenized with vLLM's own
  tokenizer (special tokens added to raw text only, as in the transformers
  backend). Prompts go to vLLM as token ids, so the prompt length is known
  before the call.
- Seeds, the design choice: marginal needs completion ``j`` of a prompt to be
  sampled with its own seed ``spec.sequence_seed(prompt_key(prompt), j)``, so
  that a sample can be reproduced alone and a resumed run (``first_index``)
  draws the seeds it would have drawn. ``SamplingParams(n=M, seed=s)`` gives
  the n group ONE seed (vLLM's V1 engine fans a request with ``n > 1`` out
  into n child requests seeded ``s, s+1, ...``), which breaks that contract.
  So each (prompt, j) is its own request with ``SamplingParams(n=1,
  seed=sequence_seed)``. This costs nothing extra on V1: ``n > 1`` is the same
  fan-out into single-sequence requests, and prefix caching lets the M
  requests of a prompt share its KV blocks (every full block of the prompt is
  computed once; ``Completion.cached_prompt_tokens`` is vLLM's
  ``num_cached_tokens`` of each request).
- ONE ``llm.generate(requests, params)`` call per backend call, for the whole
  batch of (problem, prior) prompts x n samples; vLLM schedules them
  (continuous batching) and returns outputs in request order, which is the
  input order here.
- Sampling settings map one to one to ``SamplingParams`` (``temperature``,
  ``top_p``, ``top_k`` with 0 sent as -1 = off, ``min_p``, ``max_tokens``,
  ``stop``); vLLM applies them in the order the other backends follow.
  ``logprobs=0`` asks for the sampled token's log-probability only, and
  ``Completion.logprob`` is vLLM's ``cumulative_logprob`` (on the V1 engine,
  with its default ``logprobs_mode="raw_logprobs"``, the raw model's, as in
  the other backends; engines before V1 report the processed distribution's).
- A completion ends at an end-of-sequence token ("stop"; the token is in
  ``token_ids``, not in the text), at a stop string ("stop"; vLLM cuts the
  text before it), or after ``max_tokens`` tokens or at the model's context
  end ("length"). Any other vLLM finish reason ("abort", "error", or none)
  gives an error completion naming it.

Failures stay with their prompt: a prompt that is empty, does not fit in the
model's context (``max_model_len``; vLLM itself would reject the whole batch),
or whose chat template raises gets ``n`` completions with finish_reason
"error" and ``error`` set; the other prompts are generated as usual.
Sampling settings vLLM rejects (e.g. ``temperature > 2``) raise
``MarginalError`` for the call. Construction raises ``MarginalError`` when
vLLM is not installed (``pip install 'marginal[vllm]'``), when it finds no
device it supports (no CUDA GPU and not a CPU/ROCm/TPU/XPU build), or when it
cannot load the model.

Reproducibility: per-request seeds make a completion's random stream
independent of the batch; GPU kernels are not batch-invariant, so the same
seed next to other requests can still give other tokens (same caveat as the
other engines; vLLM's ``VLLM_BATCH_INVARIANT=1`` mode trades speed for it).

Incremental form (`marginal.backends.streaming.Streaming`): ``submit(prompt,
spec)`` adds the prompt's n requests to vLLM's own engine
(``llm.llm_engine.add_request``) while it runs, and ``step()`` is one
``llm_engine.step()``: vLLM's continuous batching admits and finishes
requests step by step, so a policy's next request joins the running batch
at once; a cancelled future's requests are aborted (``abort_request``).
Submission and stepping share a lock (any thread may submit).

Left out: multi-GPU settings beyond what ``engine_args`` passes through
(tensor parallelism etc.), LoRA, guided decoding, the Mistral tokenizer mode,
``llm.chat`` (templates are applied here, once per prompt), streaming, and
token-level blending (no next-token log-probabilities protocol).
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MarginalError
from ..types import Completion, FinishReason, Prompt, SampleSpec, prompt_key
from .common import (
    Lifecycle,
    check_prompt,
    ensure_open,
    error_completion,
    failed_prompt,
    failure_message,
    filled,
    prepare_prompts,
)
from .hf import TemplatedPrompts

__all__ = ["VLLMBackend"]

_INSTALL = "pip install 'marginal[vllm]'"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise MarginalError(f"the vLLM backend needs vllm ({e}): {_INSTALL}") from None
    return vllm


def _check_platform() -> None:
    """MarginalError when vLLM found no device it can run on."""
    try:
        from vllm.platforms import current_platform
    except Exception as e:  # noqa: BLE001 - a broken install: say why, one line
        raise MarginalError(f"vLLM is installed but its platform could not be detected: {_line(e)}") from None
    unspecified = getattr(current_platform, "is_unspecified", None)
    if callable(unspecified) and unspecified():
        raise MarginalError(
            "vLLM found no device it supports: no CUDA GPU is visible and this vLLM build is not a "
            "CPU/ROCm/TPU/XPU build; use the transformers backend (torch:ID) or the llama.cpp default"
        )


def _client_errors() -> tuple[type[BaseException], ...]:
    """The exceptions vLLM raises for a bad request: ``ValueError`` (what older
    versions raise) and ``vllm.exceptions.VLLMClientError`` where it exists
    (vLLM 0.33's ``VLLMValidationError`` derives from it, not from ValueError)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


def _line(e: BaseException, limit: int = 300) -> str:
    return " ".join(str(e).split())[:limit] or type(e).__name__


class VLLMBackend(TemplatedPrompts, Lifecycle):
    """A Backend on ``vllm.LLM`` (see the module docstring).

    ``model``: a hub id, a local folder or a ``.gguf`` file. ``tokenizer``: a
    hub id or folder for the tokenizer (recommended with a GGUF; without it
    vLLM reads the GGUF's own). ``seed``: the engine's seed (requests carry
    their own). ``max_model_len``, ``gpu_memory_utilization``, ``dtype``: the
    usual vLLM settings, left to vLLM's defaults when None. ``engine_args``
    go to ``vllm.LLM`` as they are.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        tokenizer: str | None = None,
        seed: int = 0,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        dtype: str | None = None,
        name: str | None = None,
        **engine_args: Any,
    ) -> None:
        vllm = _import_vllm()
        _check_platform()
        src = str(model)
        if src.endswith(".gguf") and not Path(src).is_file():
            raise MarginalError(f"model file not found: {src}")
        kw: dict[str, Any] = dict(model=src, enable_prefix_caching=True, seed=seed)
        for k, v in (
            ("tokenizer", tokenizer),
            ("max_model_len", max_model_len),
            ("gpu_memory_utilization", gpu_memory_utilization),
            ("dtype", dtype),
        ):
            if v is not None:
                kw[k] = v
        if engine_args.get("enable_prefix_caching") is False:
            raise MarginalError(
                "the vLLM backend needs prefix caching (the n samples of a prompt share its KV blocks); "
                "drop enable_prefix_caching=False"
            )
        kw.update(engine_args)
        load_errors: tuple[type[BaseException], ...] = (
            OSError,
            ValueError,
            RuntimeError,
            ImportError,
            NotImplementedError,
            TypeError,
            *_client_errors(),
        )
        try:
            llm = vllm.LLM(**kw)
        except load_errors as e:
            raise MarginalError(f"vLLM could not load model {src!r}: {_line(e)}") from None
        self._setup(vllm, llm, name=name or src)

    @classmethod
    def from_llm(cls, llm: Any, *, name: str | None = None) -> VLLMBackend:
        """A backend on an already built ``vllm.LLM`` (its settings are kept; it
        should have prefix caching on)."""
        self = cls.__new__(cls)
        self._setup(_import_vllm(), llm, name=name or "vllm-model")
        return self

    def _setup(self, vllm: Any, llm: Any, *, name: str) -> None:
        self._vllm = vllm
        self._bad_request = _client_errors()
        self._llm = llm
        self.name = name
        self.tokenizer = llm.get_tokenizer()
        engine = getattr(llm, "llm_engine", None)
        cfg = getattr(engine, "model_config", None) or getattr(llm, "model_config", None)
        self.max_model_len = int(getattr(cfg, "max_model_len", 0) or 0) or 1 << 30
        self._engine_lock = threading.Lock()
        self._running: dict[str, tuple[_Live, int, int]] = {}
        self._request_ids = itertools.count()
        self.calls = 0
        """``llm.generate`` calls made (one per non-empty ``generate`` call)."""

    # ---------------------------------------------------------------- public

    def tokenize(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids (special tokens the template wrote are parsed; a
        BOS is added to raw text when the tokenizer adds one)."""
        return list(self.tokenizer.encode(self.render(prompt), add_special_tokens=isinstance(prompt, str)))

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` completions for each prompt, in input order (see the module docstring)."""
        ensure_open(self._llm, "vLLM backend")
        prompts = list(prompts)
        ready, results = prepare_prompts(prompts, spec, self._checked_tokens, Completion)
        requests: list[dict[str, Any]] = []
        params: list[Any] = []
        where: list[tuple[int, int, int, int]] = []  # (prompt, j, prompt tokens, seed)
        for i, (prompt, toks) in enumerate(zip(prompts, ready)):
            if toks is None:
                continue
            key = prompt_key(prompt)
            for j in range(spec.n):
                s = spec.sequence_seed(key, j)
                requests.append({"prompt_token_ids": toks})
                params.append(self._params(spec, s))
                where.append((i, j, len(toks), s))
        if requests:
            self.calls += 1
            try:
                outs = self._llm.generate(requests, params, use_tqdm=False)
            except self._bad_request as e:  # vLLM's validation errors; engine failures propagate
                raise MarginalError(f"vLLM rejected the batch: {_line(e)}") from None
            if len(outs) != len(requests):
                raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(requests)} requests")
            for (i, j, P, s), out in zip(where, outs):
                results[i][j] = _completion(out, P, s)
        return filled(results)

    def submit(self, prompt: Prompt, spec: SampleSpec) -> Future[list[Completion]]:
        """Add the prompt's ``spec.n`` requests (one per sample, each with its own seed) to vLLM's
        running engine; the future resolves once all are finished (see ``step``)."""
        ensure_open(self._llm, "vLLM backend")
        fut: Future[list[Completion]] = Future()
        try:
            toks = self._checked_tokens(0, prompt)
        except Exception as e:  # too long, empty, a template that raises: this prompt only
            fut.set_result(failed_prompt(failure_message(e), prompt, spec))
            return fut
        key = prompt_key(prompt)
        live = _Live(fut, [None] * spec.n, len(toks))
        with self._engine_lock:
            for j in range(spec.n):
                seed = spec.sequence_seed(key, j)
                rid = f"marginal-{next(self._request_ids)}"
                try:
                    self._llm.llm_engine.add_request(rid, {"prompt_token_ids": toks}, self._params(spec, seed))
                except self._bad_request as e:
                    raise MarginalError(f"vLLM rejected the request: {_line(e)}") from None
                self._running[rid] = (live, j, seed)
        return fut

    def step(self) -> bool:
        """One step of vLLM's engine (its own continuous batching); False when nothing runs.
        Requests of cancelled futures are aborted first."""
        with self._engine_lock:
            engine = self._llm.llm_engine
            gone = [rid for rid, (live, _, _) in self._running.items() if live.future.cancelled()]
            if gone:
                engine.abort_request(gone)
                for rid in gone:
                    del self._running[rid]
            if not self._running:
                return False
            for out in engine.step():
                if not getattr(out, "finished", False) or out.request_id not in self._running:
                    continue
                live, j, seed = self._running.pop(out.request_id)
                live.results[j] = _completion(out, live.prompt_tokens, seed)
                if all(c is not None for c in live.results) and not live.future.cancelled():
                    live.future.set_result(list(live.results))
            return True

    def _checked_tokens(self, i: int, prompt: Prompt) -> list[int]:
        toks = self.tokenize(prompt)
        check_prompt(
            i,
            toks,
            self.max_model_len,
            context=f"the model's context of max_model_len={self.max_model_len}",
            hint="shorten it or raise max_model_len",
        )
        return toks

    def close(self) -> None:
        """Drop the engine (vLLM frees its GPU memory when the engine is collected)."""
        if self._llm is not None:
            self._llm = None
            gc.collect()

    # --------------------------------------------------------------- helpers

    def _params(self, spec: SampleSpec, seed: int) -> Any:
        try:
            return self._vllm.SamplingParams(
                n=1,
                seed=seed,
                temperature=spec.temperature,
                top_p=spec.top_p,
                top_k=spec.top_k if spec.top_k > 0 else -1,
                min_p=spec.min_p,
                max_tokens=spec.max_tokens,
                stop=list(spec.stop) or None,
                logprobs=0,
            )
        except self._bad_request as e:
            raise MarginalError(f"vLLM rejected the sampling settings: {_line(e)}") from None


@dataclass
class _Live:
    """A submitted prompt whose n requests are running in vLLM's engine."""

    future: Future
    results: list
    prompt_tokens: int


def _completion(out: Any, prompt_tokens: int, seed: int) -> Completion:
    """A Completion from a ``RequestOutput`` of one n=1 request."""
    if not out.outputs:
        return error_completion("vLLM returned no output for the request", seed, prompt_tokens)
    o = out.outputs[0]
    reason = o.finish_reason
    P = len(out.prompt_token_ids) if getattr(out, "prompt_token_ids", None) else prompt_tokens
    cached = min(P, int(getattr(out, "num_cached_tokens", 0) or 0))
    finish: FinishReason
    error = None
    if reason == "stop":
        finish = "stop"
    elif reason == "length":
        finish = "length"
    else:
        finish, error = "error", f"vLLM finished the completion with reason {reason!r}"
    return Completion(
        text=o.text or "",
        token_ids=tuple(int(t) for t in o.token_ids),
        logprob=float(o.cumulative_logprob or 0.0),
        finish_reason=finish,
        prompt_tokens=P,
        cached_prompt_tokens=cached,
        seed=seed,
        error=error,
    )
