"""A fake ``vllm`` module for unit tests of the vLLM backend (never used by the package).

``install(monkeypatch)`` puts ``FakeVLLM`` modules in ``sys.modules`` as
``vllm``, ``vllm.platforms`` and ``vllm.exceptions``. They follow vLLM's
offline API (checked against vLLM 0.33's source): ``LLM(**engine_args)``,
``LLM.get_tokenizer()``, ``LLM.llm_engine.model_config.max_model_len``,
``LLM.generate(prompts, sampling_params, use_tqdm=...)`` with one
``SamplingParams`` per prompt, returning ``RequestOutput``s in prompt order
(``prompt_token_ids``, ``num_cached_tokens``, ``outputs`` of
``CompletionOutput``: ``text``, ``token_ids``, ``cumulative_logprob``,
``finish_reason``). Like vLLM, a prompt with ``len >= max_model_len`` makes
the whole ``generate`` call raise, ``n > 1`` fans out to seeds ``seed + k``,
and temperature above 2 is rejected.

The "model" is a deterministic function of (prompt ids, seed): see
``fake_tokens``. Prefix caching is simulated: with ``enable_prefix_caching``
a request whose prompt was seen before gets ``num_cached_tokens`` equal to
its full 16-token blocks (vLLM caches full blocks only).
"""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import dataclass, field
from typing import Any

EOS = 2
BOS = 1
BLOCK = 16
WORDS = [f"w{k}" for k in range(40)]


class FakeTokenizer:
    """Word-level: each whitespace-separated word is one token; ids are given in
    order of first sight after the fixed ones (0 pad, 1 BOS, 2 EOS, 3.. WORDS)."""

    eos_token_id = EOS

    def __init__(self, chat_template: str | None = "fake-template"):
        self.chat_template = chat_template
        self.vocab: dict[str, int] = {"<pad>": 0, "<s>": BOS, "</s>": EOS}
        for w in WORDS:
            self.vocab[w] = len(self.vocab)
        self.inv = {i: w for w, i in self.vocab.items()}
        self.template_calls = 0

    def _id(self, w: str) -> int:
        if w not in self.vocab:
            self.vocab[w] = len(self.vocab)
            self.inv[self.vocab[w]] = w
        return self.vocab[w]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._id(w) for w in text.split()]
        return [BOS, *ids] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(self.inv[int(i)] for i in ids if not (skip_special_tokens and int(i) in (0, BOS, EOS)))

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = True):
        assert tokenize is False and add_generation_prompt is True
        self.template_calls += 1
        for m in messages:
            if "RAISE" in m["content"]:
                raise ValueError("the template cannot render this")
        text = " ".join(f"<s> <{m['role']}> {m['content']} </{m['role']}>" for m in messages) + " <assistant>"
        return text


def fake_tokens(prompt_ids: list[int], seed: int, max_tokens: int) -> tuple[list[int], list[float]]:
    """The fake model: tokens and their log-probs drawn from a hash of (prompt,
    seed, step); ends with EOS when the hash says so (never at step 0)."""
    toks: list[int] = []
    lps: list[float] = []
    for t in range(max_tokens):
        h = int.from_bytes(
            hashlib.blake2b(repr((tuple(prompt_ids), seed, t)).encode(), digest_size=8).digest(), "little"
        )
        if t > 0 and h % 5 == 0:
            toks.append(EOS)
            lps.append(-0.5)
            break
        toks.append(3 + h % len(WORDS))
        lps.append(-1.0 - (h % 7) / 10)
    return toks, lps


class SamplingParams:
    """vLLM's SamplingParams, the fields the backend uses, validated like vLLM."""

    def __init__(
        self,
        n: int = 1,
        seed: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        max_tokens: int | None = 16,
        stop=None,
        logprobs: int | None = None,
        **rest: Any,
    ) -> None:
        if rest:
            raise TypeError(f"unexpected SamplingParams arguments {sorted(rest)}")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {temperature}.")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        if top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {top_k}.")
        self.n, self.seed, self.temperature, self.top_p = n, seed, temperature, top_p
        self.top_k, self.min_p, self.max_tokens, self.logprobs = top_k, min_p, max_tokens, logprobs
        self.stop = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: Any = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int | None = None


@dataclass
class _ModelConfig:
    max_model_len: int


@dataclass
class _Engine:
    """vLLM's ``LLMEngine`` loop: ``add_request`` queues, ``step`` finishes at most
    ``per_step`` requests (oldest first), ``abort_request`` drops them."""

    model_config: _ModelConfig
    llm: Any = None
    per_step: int = 3
    queue: list = field(default_factory=list)
    steps: int = 0
    aborted: list = field(default_factory=list)

    def add_request(self, request_id: str, prompt: dict, params: SamplingParams, **kw: Any) -> None:
        ids = prompt["prompt_token_ids"]
        if not ids or len(ids) >= self.model_config.max_model_len:
            raise ValueError(f"bad prompt of length {len(ids)}")
        self.queue.append((request_id, prompt, params))

    def abort_request(self, request_ids) -> None:
        gone = set(request_ids)
        self.aborted += sorted(gone)
        self.queue = [q for q in self.queue if q[0] not in gone]

    def has_unfinished_requests(self) -> bool:
        return bool(self.queue)

    def step(self) -> list[RequestOutput]:
        self.steps += 1
        take, self.queue = self.queue[: self.per_step], self.queue[self.per_step :]
        outs = self.llm.generate([p for _, p, _ in take], [sp for _, _, sp in take]) if take else []
        for (rid, _, _), out in zip(take, outs):
            out.request_id = rid
        return outs


@dataclass
class GenerateCall:
    prompts: list[Any]
    params: list[SamplingParams]


class LLM:
    """Records its construction and every generate call (class-level ``instances``)."""

    instances: list[LLM] = []
    max_model_len = 64
    chat_template: str | None = "fake-template"
    finish_override: dict[int, str] = {}
    """seed -> finish_reason to report instead (e.g. 'abort')."""

    def __init__(self, **kwargs: Any) -> None:
        if "model" not in kwargs:
            raise TypeError("LLM() missing 'model'")
        if str(kwargs["model"]).startswith("missing/"):
            raise OSError(f"{kwargs['model']} is not a local folder and is not a valid model identifier")
        self.kwargs = kwargs
        self.tokenizer = FakeTokenizer(self.chat_template)
        self.llm_engine = _Engine(_ModelConfig(kwargs.get("max_model_len") or self.max_model_len), self)
        self.calls: list[GenerateCall] = []
        self._seen: set[tuple[int, ...]] = set()
        type(self).instances.append(self)

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, **kw: Any) -> list[RequestOutput]:
        prompts = list(prompts)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts), "one SamplingParams per prompt"
        self.calls.append(GenerateCall(prompts, params))
        L = self.llm_engine.model_config.max_model_len
        for p in prompts:  # vLLM validates every request while adding them: one bad prompt fails the call
            ids = p["prompt_token_ids"]
            if not ids:
                raise ValueError("The decoder prompt cannot be empty")
            if len(ids) >= L:
                raise ValueError(
                    f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of {L}."
                )
        outs = []
        for r, (p, sp) in enumerate(zip(prompts, params)):
            ids = list(p["prompt_token_ids"])
            cached = (
                (len(ids) // BLOCK) * BLOCK
                if self.kwargs.get("enable_prefix_caching") and tuple(ids) in self._seen
                else 0
            )
            self._seen.add(tuple(ids))
            comps = []
            for k in range(sp.n):
                seed = None if sp.seed is None else sp.seed + k
                comps.append(self._complete(ids, sp, seed, k, L))
            outs.append(RequestOutput(str(r), None, ids, None, comps, True, num_cached_tokens=cached))
        return outs

    def _complete(self, ids: list[int], sp: SamplingParams, seed: int | None, k: int, L: int) -> CompletionOutput:
        budget = min(sp.max_tokens or L, L - len(ids))
        toks, lps = fake_tokens(ids, -1 if seed is None else seed, budget)
        reason = "stop" if toks[-1] == EOS else "length"
        text = self.tokenizer.decode(toks)
        for s in sp.stop:  # vLLM stops at the first stop string and leaves it out of the text
            at = text.find(s)
            if at >= 0:
                text, reason = text[:at], "stop"
                break
        reason = self.finish_override.get(seed, reason)
        cum = float(sum(lps)) if sp.logprobs is not None else None
        return CompletionOutput(k, text, toks, cum, [] if sp.logprobs is not None else None, reason)


@dataclass
class _Platform:
    unspecified: bool = False
    calls: list[str] = field(default_factory=list)

    def is_unspecified(self) -> bool:
        return self.unspecified


class VLLMClientError(Exception):
    """Like vllm.exceptions.VLLMClientError (not a ValueError in recent vLLM)."""


def install(
    monkeypatch, *, unspecified: bool = False, max_model_len: int = 64, chat_template: str | None = "fake-template"
) -> types.ModuleType:
    """Put the fake ``vllm`` modules in ``sys.modules`` for one test; returns ``vllm``."""
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0+fake"
    mod.__dict__.update(SamplingParams=SamplingParams, RequestOutput=RequestOutput, CompletionOutput=CompletionOutput)
    llm_cls = type(
        "LLM",
        (LLM,),
        {"instances": [], "max_model_len": max_model_len, "chat_template": chat_template, "finish_override": {}},
    )
    mod.LLM = llm_cls
    plat = types.ModuleType("vllm.platforms")
    plat.current_platform = _Platform(unspecified)
    exc = types.ModuleType("vllm.exceptions")
    exc.VLLMClientError = VLLMClientError
    mod.platforms, mod.exceptions = plat, exc
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.platforms", plat)
    monkeypatch.setitem(sys.modules, "vllm.exceptions", exc)
    return mod
