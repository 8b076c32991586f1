"""Request and response bodies: OpenAI's chat-completions schema, plus the ``marginal`` objects.

Requests accept the fields the ``openai`` client sends; fields the server does not use
(``logprobs``, ``user``, ``frequency_penalty``, ...) are accepted and ignored, except
``n`` other than 1 (one choice is the marginal answer) and tools (refused by `ChatRequest.check`).
The request's ``model`` is not checked (the server serves its one ``--model``; responses name
it). Per-request options go in ``marginal`` (``extra_body={"marginal": {...}}`` with the client).
Responses are `ChatCompletion` or a stream of `ChatCompletionChunk`, each with a top-level
``marginal`` object the client keeps as an extra field (``response.marginal``, or
``response.model_extra["marginal"]``). Left out: tool calls, response formats, audio and images.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import invalid
from .prompt import SYSTEM_ROLES


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self, i: int) -> str:
        """The message's text; a MarginalError for parts other than text."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        out = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise invalid(f"messages[{i}]: only text content is served, got a {part.type!r} part", f"messages.{i}")
            out.append(part.text)
        return "".join(out)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class MarginalOptions(BaseModel):
    """Per-request options; each one missing takes the server's flag."""

    model_config = ConfigDict(extra="forbid")
    budget: int | None = None
    """Most samples to spend."""
    policy: str | None = None
    """adaptive, fixed, repetition or diversity."""
    task: str | None = None
    """How answers are extracted and compared: a task name or a grader (numeric|math|choice|exact|code)."""
    priors: int | str | list[str] | None = None
    """The first K priors of the bank, or names ('a,b' or a list)."""
    threshold: float | None = None
    """adaptive: stop when P(leader stays leader) reaches this."""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    marginal: MarginalOptions | None = None

    def turns(self) -> list[tuple[str, str]]:
        """(role, text) of every message, checked: known roles, text only, a user question last."""
        if not self.messages:
            raise invalid("messages is empty; expected at least one user message", "messages", "empty_messages")
        out = []
        for i, m in enumerate(self.messages):
            if m.role not in (*SYSTEM_ROLES, "user", "assistant"):
                raise invalid(
                    f"messages[{i}].role {m.role!r} is not served; expected system, developer, user or assistant",
                    f"messages.{i}.role",
                )
            out.append((m.role, m.text(i)))
        role, text = out[-1]
        if role != "user":
            raise invalid(f"the last message must be the user's question, got role {role!r}", "messages")
        if not text.strip():
            raise invalid("the last user message is empty; expected the question", "messages", "empty_messages")
        return out

    def check(self) -> None:
        """Refuse what the server cannot honour (rather than ignore it)."""
        extra = self.model_extra or {}
        if self.n not in (None, 1):
            raise invalid(f"n must be 1 (one choice: the marginal answer), got {self.n}", "n")
        for key in ("tools", "functions"):
            if extra.get(key):
                raise invalid(f"{key} are not served by marginal serve", key)

    @property
    def limit(self) -> int | None:
        """``max_completion_tokens``, else ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# -- responses -----------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    marginal: dict[str, Any]


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    marginal: dict[str, Any] | None = None

    def sse(self) -> str:
        """The chunk as one server-sent event (``None`` fields left out, as OpenAI's server does)."""
        return f"data: {self.model_dump_json(exclude_none=True)}\n\n"


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "marginal"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "ChatRequest",
    "Choice",
    "ChunkChoice",
    "Delta",
    "MarginalOptions",
    "Model",
    "ModelList",
    "PromptTokensDetails",
    "ResponseMessage",
    "StreamOptions",
    "Usage",
]
