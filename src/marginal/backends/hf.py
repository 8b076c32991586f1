"""The transformers backend: batched sampling on CPU or CUDA for users without
vLLM.

How a call to ``generate(prompts, spec)`` runs:

- Each prompt is rendered (a ``Chat`` through the tokenizer's chat template,
  or the documented plain fallback of the llama.cpp backend when there is
  none; a ``str`` as is) and tokenized.
- The (prompt, j) sequences are taken in input order in chunks of at most
  ``max_seqs``. In a chunk, each distinct prompt is encoded ONCE (one forward
  of the left-padded prompts), and its KV cache rows and last logits are then
  expanded along the batch to its sequences (an index select: the copies are
  materialized, the prompt is not recomputed). A prompt whose n sequences
  straddle two chunks is encoded once in each.
- A manual decode loop feeds one token per live sequence per step; finished
  sequences are dropped from the batch (cache rows selected away).
- Sampling, in the vLLM order: temperature, then top_k, top_p (on the top-k
  renormalized distribution), min_p (relative to the top probability), then
  inverse-CDF sampling. Temperature 0 is argmax. Sequence ``j`` of a prompt
  has its own random stream, a counter-based one: the uniform of step ``t``
  is a SplitMix64 hash of (``spec.sequence_seed(prompt_key(prompt), j)``,
  ``t``). This is a per-sequence seeded generator that costs one vectorized
  hash per step for the whole batch (no per-row generator calls), and it makes
  a completion independent of what else is in the batch, as far as the
  model's numerics are batch-invariant (padding and batch size change the
  last bits of the logits on some kernels, so a token may rarely flip).
- ``Completion.logprob`` is the sum over sampled tokens of the log-softmax of
  the raw logits (temperature 1, no truncation), as in the llama.cpp backend.
- A completion ends at an end-of-sequence token ("stop"; kept in
  ``token_ids``, not in the text), at a stop string ("stop"; the text is cut
  before it, the token ids keep every sampled token), or after ``max_tokens``
  tokens or at the model's context end ("length"). Special tokens are left
  out of the text.
- Out of memory in a chunk: the chunk starts again with half the sequences
  (``max_seqs`` stays lowered for the backend's life); a single sequence that
  still does not fit gets an error completion (``finish_reason="error"``).
- A prompt that leaves no room in the model's context
  (``max_position_embeddings``) raises ``MarginalError`` for the call.

Batching is per call (barrier): a ``generate`` call runs until its longest
sequence ends. It has no incremental form; runs and the server wrap it in
`marginal.backends.streaming.Barrier`, which sends every request pending at
a step as one call.

Left out: a static / paged KV cache and CUDA graphs (the cache grows with
``torch.cat`` per step, like ``generate``'s default), sharing a prefix between
*different* prompts, repetition penalties, quantized loading beyond what
transformers does itself (a GGUF is de-quantized on load), multi-GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MarginalError
from ..types import Completion, FinishReason, Prompt, SampleSpec, prompt_key
from .common import Counted, Counters, Lifecycle, check_prompt, ensure_open, error_completion, find_stop, render_plain

try:
    import torch
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = None

__all__ = ["HFBackend", "HFStats", "sample_tokens", "step_uniforms", "render_plain", "render_prompt"]

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text a prompt is sent as with a Hugging Face tokenizer: raw text as is, a chat
    through the tokenizer's chat template (generation prompt added), or `render_plain`
    when the tokenizer has no template."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        return render_plain(prompt)
    msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


# ------------------------------------------------------------------ sampling

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def step_uniforms(seeds: Sequence[int] | np.ndarray, step: int) -> np.ndarray:
    """One uniform in [0, 1) per sequence for decode step ``step``: a hash of
    (seed, step), so each sequence has its own reproducible stream."""
    s = np.asarray(seeds, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = _mix64(s * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019))
        x = _mix64(x + np.uint64(step + 1) * np.uint64(0xD1B54A32D192ED03))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def sample_tokens(logits: torch.Tensor, spec: SampleSpec, u: torch.Tensor) -> torch.Tensor:
    """Sample one token per row of ``logits`` [B, V] with uniforms ``u`` [B]
    (float64), after temperature, top_k, top_p and min_p (see the module
    docstring). Greedy when ``spec.temperature == 0``."""
    if spec.greedy:
        return logits.argmax(-1)
    x = logits.float() / spec.temperature
    probs = torch.softmax(x, dim=-1)
    V = probs.shape[-1]
    truncate = spec.top_k > 0 or spec.top_p < 1.0 or spec.min_p > 0.0
    if truncate:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        keep = torch.ones_like(probs, dtype=torch.bool)
        if 0 < spec.top_k < V:
            keep[:, spec.top_k :] = False
            probs = probs * keep
        if spec.top_p < 1.0:
            mass = probs.sum(-1, keepdim=True)
            before = (probs.cumsum(-1) - probs) / mass  # mass of the more likely tokens
            keep &= before < spec.top_p
        if spec.min_p > 0.0:
            keep &= probs >= spec.min_p * probs[:, :1]
        probs = probs * keep
    cdf = probs.double().cumsum(-1)
    total = cdf[:, -1]
    # r < total strictly, so the first index whose cdf exceeds r exists and has a probability > 0
    r = torch.minimum(u.to(cdf.device, torch.float64) * total, torch.nextafter(total, torch.zeros_like(total)))
    idx = torch.searchsorted(cdf, r[:, None], right=True)[:, 0]
    return order.gather(1, idx[:, None])[:, 0] if truncate else idx


# -------------------------------------------------------------------- engine


@dataclass(frozen=True)
class HFStats:
    """Work done by a backend since it was created."""

    prompts_encoded: int = 0
    """Prompt forwards (a prompt straddling two chunks counts twice)."""
    prompt_tokens_encoded: int = 0
    prompt_tokens_cached: int = 0
    """Prompt tokens that sequences got by expanding a cache instead of encoding."""
    tokens_generated: int = 0
    forward_calls: int = 0
    oom_retries: int = 0
    """Chunks started again with half the sequences after running out of memory."""
    seconds: float = 0.0


@dataclass
class _Seq:
    prompt: int
    j: int
    seed: int
    tokens: list[int] = field(default_factory=list)
    logprob: float = 0.0
    result: Completion | None = None


class TemplatedPrompts:
    """``has_chat_template`` and ``render`` for a backend with a Hugging Face ``tokenizer``
    (the transformers and vLLM backends)."""

    tokenizer: Any

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, prompt: Prompt) -> str:
        """The text a prompt is sent as (chat template applied)."""
        return render_prompt(self.tokenizer, prompt)


class HFBackend(TemplatedPrompts, Counted[HFStats], Lifecycle):
    """A Backend on a transformers causal LM (see the module docstring).

    ``model_id_or_path``: a local directory or hub id, or a ``.gguf`` file
    (then ``gguf_file`` is taken from it). ``dtype``: None (float32 on CPU,
    bfloat16 on CUDA), a name ("bfloat16", "float16", "float32") or a
    ``torch.dtype``. ``max_seqs`` bounds the sequences decoded together (halved on out of memory).
    """

    def __init__(
        self,
        model_id_or_path: str | Path,
        *,
        device: str = "cpu",
        dtype: Any = None,
        gguf_file: str | None = None,
        max_seqs: int = 256,
        name: str | None = None,
    ) -> None:
        if torch is None:
            raise MarginalError("the transformers backend needs torch and transformers: pip install 'marginal[torch]'")
        try:
            import transformers
        except ImportError:
            raise MarginalError("the transformers backend needs transformers: pip install 'marginal[torch]'") from None
        src = str(model_id_or_path)
        if gguf_file is None and src.endswith(".gguf"):
            p = Path(src)
            if not p.is_file():
                raise MarginalError(f"model file not found: {p}")
            src, gguf_file = str(p.parent), p.name
        dev = _device(device)
        td = _dtype(dtype, dev)
        kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tok = transformers.AutoTokenizer.from_pretrained(src, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=td, **kw)
        except (OSError, ValueError, ImportError) as e:
            msg = " ".join(str(e).split())[:300]
            raise MarginalError(f"transformers could not load model {model_id_or_path!r}: {msg}") from None
        self._setup(model.to(dev), tok, max_seqs=max_seqs, name=name or (f"{src}/{gguf_file}" if gguf_file else src))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, max_seqs: int = 256, name: str | None = None) -> HFBackend:
        """A backend on an already loaded model and tokenizer (the model's device and dtype are kept)."""
        if torch is None:
            raise MarginalError("the transformers backend needs torch and transformers: pip install 'marginal[torch]'")
        self = cls.__new__(cls)
        self._setup(
            model, tokenizer, max_seqs=max_seqs, name=name or getattr(model.config, "_name_or_path", "") or "hf-model"
        )
        return self

    def _setup(self, model: Any, tok: Any, *, max_seqs: int, name: str) -> None:
        if not (isinstance(max_seqs, int) and max_seqs >= 1):
            raise MarginalError(f"max_seqs must be an integer >= 1, got {max_seqs!r}")
        self.model = model.eval()
        self.tokenizer = tok
        self.max_seqs = max_seqs
        self.name = name
        self.device = next(model.parameters()).device
        cfg = model.config
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", 0) or 0) or 1 << 30
        eos: set[int] = set()
        gen = getattr(model, "generation_config", None)
        for e in (getattr(gen, "eos_token_id", None), tok.eos_token_id):
            if isinstance(e, int):
                eos.add(e)
            elif e is not None:
                eos.update(int(x) for x in e)
        self.eos_ids = frozenset(eos)
        import inspect

        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        self._keep_kw = "logits_to_keep" if "logits_to_keep" in params else None
        self._counters = Counters(HFStats)

    # ---------------------------------------------------------------- public

    def tokenize(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids (special tokens the template wrote are parsed; a
        BOS is added to raw text when the tokenizer adds one)."""
        text = self.render(prompt)
        return list(self.tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"])

    def generate(self, prompts: Sequence[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        """``spec.n`` completions for each prompt, in input order (see the module docstring)."""
        ensure_open(self.model, "transformers backend")
        with self._counters.timed(), torch.inference_mode():
            return self._generate(list(prompts), spec)

    def close(self) -> None:
        self.model = None

    # ------------------------------------------------------------ the engine

    def _generate(self, prompts: list[Prompt], spec: SampleSpec) -> list[list[Completion]]:
        toks: list[list[int]] = []
        for i, p in enumerate(prompts):
            t = self.tokenize(p)
            check_prompt(i, t, self.n_ctx, context=f"the model's context of {self.n_ctx} tokens", hint="shorten it")
            toks.append(t)
        seqs = [_Seq(i, j, spec.sequence_seed(prompt_key(p), j)) for i, p in enumerate(prompts) for j in range(spec.n)]
        a = 0
        while a < len(seqs):
            chunk = seqs[a : a + self.max_seqs]
            try:
                self._run_chunk(chunk, toks, spec)
            except Exception as e:
                if not _is_oom(e):
                    raise
                for s in chunk:  # start the chunk again, smaller
                    s.tokens, s.logprob, s.result = [], 0.0, None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if len(chunk) > 1:
                    self.max_seqs = max(1, len(chunk) // 2)
                    self._counters["oom_retries"] += 1
                    continue
                s = chunk[0]
                msg = (
                    f"out of memory with one sequence of {len(toks[s.prompt])} prompt tokens: "
                    f"{' '.join(str(e).split())[:200]}"
                )
                s.result = error_completion(msg, s.seed, len(toks[s.prompt]))
            a += len(chunk)
        out: list[list[Completion]] = [[] for _ in prompts]
        for s in seqs:
            assert s.result is not None
            out[s.prompt].append(s.result)
        return out

    def _forward(self, cache: Any, **kw: Any) -> tuple[Any, Any]:
        """(logits of the last position, the cache) after one forward."""
        self._counters["forward_calls"] += 1
        kw[self._cache_kw] = cache
        out = self.model(**kw, use_cache=True)
        new = getattr(out, "cache", None)
        if new is None:
            new = out.past_key_values
        return out.logits[:, -1, :], new

    def _run_chunk(self, seqs: list[_Seq], toks: list[list[int]], spec: SampleSpec) -> None:
        from transformers import DynamicCache

        dev = self.device
        c = self._counters
        uniq = list(dict.fromkeys(s.prompt for s in seqs))
        slot = {p: k for k, p in enumerate(uniq)}
        lens = [len(toks[p]) for p in uniq]
        L = max(lens)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(uniq), L), pad, dtype=torch.long)
        mask = torch.zeros((len(uniq), L), dtype=torch.long)
        for k, p in enumerate(uniq):
            ids[k, L - lens[k] :] = torch.tensor(toks[p])
            mask[k, L - lens[k] :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            empty = DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56
            empty = DynamicCache()
        logits, cache = self._forward(
            empty,
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            **({self._keep_kw: 1} if self._keep_kw else {}),
        )
        c["prompts_encoded"] += len(uniq)
        c["prompt_tokens_encoded"] += sum(lens)

        # expand each prompt's cache rows, mask and last logits to its sequences
        first_of: dict[int, _Seq] = {}
        for s in seqs:
            first_of.setdefault(s.prompt, s)
            if first_of[s.prompt] is not s:
                c["prompt_tokens_cached"] += len(toks[s.prompt])
        rows = torch.tensor([slot[s.prompt] for s in seqs], device=dev)
        cache.batch_select_indices(rows)
        mask = mask[rows]
        logits = logits[rows]
        P = torch.tensor([len(toks[s.prompt]) for s in seqs], device=dev)
        budgets = [min(spec.max_tokens, self.n_ctx - len(toks[s.prompt])) for s in seqs]
        live = list(range(len(seqs)))  # indices into seqs of the batch rows
        seeds = np.array([s.seed for s in seqs], dtype=np.uint64)
        stop = spec.stop
        window = max((len(x) for x in stop), default=0) + 2
        step = 0
        while True:
            u = torch.from_numpy(step_uniforms(seeds[live], step))
            logits = logits.float()
            tok = sample_tokens(logits, spec, u)
            lp = (logits.gather(1, tok[:, None])[:, 0] - torch.logsumexp(logits, -1)).tolist()
            tok_l = tok.tolist()
            c["tokens_generated"] += len(live)
            keep: list[int] = []
            for r, (k, t, lpt) in enumerate(zip(live, tok_l, lp)):
                s = seqs[k]
                s.tokens.append(t)
                s.logprob += lpt
                done = self._finished(s, t, budgets[k], stop, window, len(toks[s.prompt]), s is first_of[s.prompt])
                if not done:
                    keep.append(r)
            if not keep:
                break
            if len(keep) < len(live):
                sel = torch.tensor(keep, device=dev)
                cache.batch_select_indices(sel)
                mask, P, tok = mask[sel], P[sel], tok[sel]
                live = [live[r] for r in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            logits, cache = self._forward(
                cache, input_ids=tok[:, None], attention_mask=mask, position_ids=(P + step)[:, None]
            )
            step += 1

    def _finished(self, s: _Seq, t: int, budget: int, stop: tuple[str, ...], window: int, P: int, first: bool) -> bool:
        """Record the end of a sequence if token ``t`` ends it; True when it does."""
        reason: FinishReason | None = None
        text: str | None = None
        if t in self.eos_ids:
            reason = "stop"
            text = self._decode(s.tokens[:-1])
        elif stop:
            tail = self._decode(s.tokens[-window:])
            if any(x in tail for x in stop):
                full = self._decode(s.tokens)
                cut = find_stop(full, stop)
                if cut >= 0:
                    reason, text = "stop", full[:cut]
        if reason is None and len(s.tokens) >= budget:
            reason = "length"
        if reason is None:
            return False
        if text is None:
            text = self._decode(s.tokens)
        s.result = Completion(
            text=text,
            token_ids=tuple(s.tokens),
            logprob=s.logprob,
            finish_reason=reason,
            prompt_tokens=P,
            cached_prompt_tokens=0 if first else P,
            seed=s.seed,
        )
        return True

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def _is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e) for m in ("out of memory", "can't allocate memory"))


def _device(device: str) -> Any:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MarginalError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MarginalError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return dev


def _dtype(dtype: Any, dev: Any) -> Any:
    if dtype is None:
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return getattr(torch, _DTYPES[dtype.lower()])
    raise MarginalError(f"dtype must be one of {', '.join(sorted(set(_DTYPES.values())))}, got {dtype!r}")
