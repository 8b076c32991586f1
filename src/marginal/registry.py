"""Named registries: one table per seam (tasks, graders, policies, backends, blend variants).

A `Registry` maps a name to an entry and a one-line help. The CLI's help
strings, the errors' near-match suggestions and the docs all read the same
table, so adding an entry in one place makes it appear everywhere::

    POLICIES = Registry("policy")
    POLICIES.add("adaptive", make_adaptive, "probe, then open or repeat priors; stop early")
    POLICIES.get("adaptiv")   # MarginalError: unknown policy 'adaptiv' (did you mean 'adaptive'?); ...

Left out: plug-in discovery through entry points (entries are registered by
the modules that define them, on import).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import MarginalError, unknown

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name."""

    name: str
    value: T
    help: str


class Registry(Generic[T]):
    """An ordered table of named entries of one kind (see the module docstring)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, help: str = "") -> T:
        """Register ``value`` under ``name`` (a name is registered once); returns ``value``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, value, help)
        return value

    def get(self, name: str) -> T:
        """The entry called ``name``; a MarginalError with the closest name when there is none."""
        entry = self._entries.get(name)
        if entry is None:
            raise unknown(self.kind, name, self._entries)
        return entry.value

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def choices(self, sep: str = "|") -> str:
        """The names joined for a help string ('a|b|c')."""
        return sep.join(self._entries)

    def describe(self) -> str:
        """One 'name: help' line per entry (for --help epilogs and the docs)."""
        return "\n".join(f"{e.name}: {e.help}" if e.help else e.name for e in self)

    def check(self, name: str) -> str:
        """``name`` when it is registered, else the MarginalError of ``get``."""
        self.get(name)
        return name


__all__ = ["Entry", "MarginalError", "Registry"]
