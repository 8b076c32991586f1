"""Values shared by every layer: sampling settings, completions, priors,
problems and stored samples.

All are frozen dataclasses validated on construction; messages say what was
expected and what came. Left out: anything engine-specific (KV caches,
tokenizers) lives in the backends.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "error"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class SampleSpec:
    """How to sample completions (the analogue of vLLM's ``SamplingParams``)."""

    n: int = 1
    """Completions per prompt."""
    temperature: float = 0.7
    """Softmax temperature; 0 means greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 keeps all."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top one, in [0, 1)."""
    max_tokens: int = 256
    """Most new tokens per completion."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion; the stop string is not included."""
    seed: int = 0
    """Base seed; each sequence's sampler gets a seed derived from it."""
    first_index: int = 0
    """Completion j of a prompt is sample number ``first_index + j`` (its seed follows);
    lets a run add samples to a prompt later with the seeds it would have had."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, (str, list)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        _check(isinstance(self.n, int) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}")
        _check(
            math.isfinite(self.temperature) and self.temperature >= 0,
            f"temperature must be >= 0, got {self.temperature!r}",
        )
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}")
        _check(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an integer >= 0, got {self.top_k!r}")
        _check(0 <= self.min_p < 1, f"min_p must be in [0, 1), got {self.min_p!r}")
        _check(
            isinstance(self.max_tokens, int) and self.max_tokens >= 1,
            f"max_tokens must be an integer >= 1, got {self.max_tokens!r}",
        )
        _check(all(isinstance(s, str) and s for s in self.stop), f"stop must be non-empty strings, got {self.stop!r}")
        _check(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        _check(
            isinstance(self.first_index, int) and self.first_index >= 0,
            f"first_index must be an integer >= 0, got {self.first_index!r}",
        )
        _check(
            not (self.greedy and self.n > 1),
            f"greedy decoding (temperature=0) gives identical completions; n must be 1, got {self.n}",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def sequence_seed(self, prompt_key: str, j: int) -> int:
        """The sampler seed of completion ``j`` of a prompt (stable across runs and batches)."""
        return derive_seed(self.seed, prompt_key, self.first_index + j)


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts, stable across processes (no ``hash()``)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Chat:
    """A chat prompt; the backend applies its model's chat template."""

    messages: tuple[Message, ...]

    def key(self) -> str:
        return repr([(m.role, m.content) for m in self.messages])


Prompt = str | Chat
"""A raw text prompt (sent as is) or a chat (templated by the backend)."""


def prompt_key(prompt: Prompt) -> str:
    return prompt.key() if isinstance(prompt, Chat) else prompt


@dataclass(frozen=True)
class Completion:
    """One generated completion."""

    text: str
    token_ids: tuple[int, ...]
    logprob: float
    """Sum of the sampled tokens' log-probabilities under the sampling distribution's model."""
    finish_reason: FinishReason
    prompt_tokens: int
    """Tokens in the prompt."""
    cached_prompt_tokens: int
    """Prompt tokens this completion reused from a cache instead of evaluating."""
    seed: int = 0
    """The sampler seed of this completion."""
    error: str | None = None
    """Why the completion failed, when finish_reason is 'error'."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def diagnostics(self) -> Mapping[str, float | int | None]:
        """Engine-specific measurements of this completion, by name, stored with its
        sample (`Sample.diagnostics`); none for most engines (a blend's are its interventions)."""
        return {}


Diagnostics = Mapping[str, float | int | None]
"""Per-sample measurements by name (see `Sample.diagnostics`)."""


@dataclass(frozen=True)
class Prior:
    """A contextual prior: how to condition the model besides the question."""

    name: str
    template: str = "{question}"
    """User message; must contain ``{question}``."""
    system: str | None = None
    fewshot: tuple[tuple[str, str], ...] = ()
    """(question, answer) exemplars shown as earlier chat turns."""
    model: str | None = None
    """Another model for this prior, or None for the run's model."""
    description: str = ""

    def __post_init__(self) -> None:
        _check(
            bool(self.name) and self.name.strip() == self.name,
            f"prior name must be non-empty without spaces at the ends, got {self.name!r}",
        )
        _check(
            "{question}" in self.template,
            f"prior {self.name!r}: template must contain '{{question}}', got {self.template!r}",
        )
        object.__setattr__(self, "fewshot", tuple(tuple(p) for p in self.fewshot))

    def render(self, question: str) -> Chat:
        msgs: list[Message] = []
        if self.system:
            msgs.append(Message("system", self.system))
        for q, a in self.fewshot:
            msgs.append(Message("user", self.template.replace("{question}", q)))
            msgs.append(Message("assistant", a))
        msgs.append(Message("user", self.template.replace("{question}", question)))
        return Chat(tuple(msgs))


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer (None when unknown)."""

    id: str
    question: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Sample:
    """One stored sample: a completion under (problem, prior) with its grade."""

    problem_id: str
    prior: str
    index: int
    text: str
    answer: str | None
    """Canonical answer (what the vote counts), None when extraction failed."""
    correct: bool | None
    """Graded against the reference; None when no reference or failed."""
    error: str | None
    """Why the sample failed (no answer found, timeout, ...), else None."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    logprob: float = 0.0
    finish_reason: str = "stop"
    seed: int = 0
    seconds: float = 0.0
    diagnostics: Diagnostics = field(default_factory=dict, hash=False)
    """Engine-specific measurements by name (`Completion.diagnostics`: a blended
    model's interventions, intervention_rate, mean_alpha, topk_overlap and
    retokenized); empty for most engines. The store keeps any name; a None
    value is stored as missing, so read ``diagnostics.get(name)``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "diagnostics", dict(self.diagnostics))

    @property
    def failed(self) -> bool:
        return self.answer is None
