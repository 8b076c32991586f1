"""A request's messages under a prior: how the user's conversation and the prior's text combine.

The conversation is split into the user's system text (every ``system`` or ``developer``
message, joined by blank lines), the earlier turns, and the question (the last message,
which must be the user's). Under a prior the model sees, in order:

1. one system message: the prior's system text, then a blank line, then the user's system
   text (either alone when the other is absent; none when both are). The prior comes
   first so that the user's instructions are the nearer and have the last word;
2. the prior's few-shot exemplars (its template applied to each exemplar question);
3. the earlier turns of the conversation, as sent;
4. the question, through the prior's template (``{question}`` replaced by its text).

The question (its text alone) is what a stored problem holds and what the answer's
extraction reads the completion against. Left out: images, tool messages and names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Chat, Message, Prior

SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class Conversation:
    """A chat request as the server uses it (see the module docstring)."""

    question: str
    system: str | None = None
    history: tuple[Message, ...] = ()
    """Earlier user and assistant turns, in order."""

    def system_under(self, prior: Prior) -> str | None:
        parts = [t for t in (prior.system, self.system) if t]
        return "\n\n".join(parts) if parts else None

    def render(self, prior: Prior) -> Chat:
        """The chat the model sees under ``prior``."""
        msgs: list[Message] = []
        system = self.system_under(prior)
        if system:
            msgs.append(Message("system", system))
        for q, a in prior.fewshot:
            msgs.append(Message("user", prior.template.replace("{question}", q)))
            msgs.append(Message("assistant", a))
        msgs.extend(self.history)
        msgs.append(Message("user", prior.template.replace("{question}", self.question)))
        return Chat(tuple(msgs))


def conversation(messages: list[tuple[str, str]]) -> Conversation:
    """A `Conversation` from (role, text) pairs, already checked: the last is the user's question."""
    *before, (_, question) = messages
    system = [text for role, text in before if role in SYSTEM_ROLES and text]
    history = tuple(Message(role, text) for role, text in before if role not in SYSTEM_ROLES)  # type: ignore[arg-type]
    return Conversation(question, "\n\n".join(system) if system else None, history)


__all__ = ["SYSTEM_ROLES", "Conversation", "conversation"]
