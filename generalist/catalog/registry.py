"""One small registry of frozen declarations keyed by name (tasks, mixtures, datasets)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

from generalist.errors import DuplicateNameError, UnknownNameError


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def close_matches(name: str, known: list[str]) -> list[str]:
    """Up to three known names close to an unknown one (the one "did you mean" matcher)."""
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not matches:
        # Substring matches catch the common 'vqa' -> 'vqa_rad' case that difflib scores low.
        matches = [k for k in known if name.lower() in k.lower()][:3]
    return matches


def close_matches_hint(name: str, known: list[str]) -> str:
    """A 'did you mean' phrase for an unknown name, or a listing when nothing is close."""
    matches = close_matches(name, known)
    if matches:
        return "did you mean " + ", ".join(repr(m) for m in matches) + "?"
    return "known: " + (", ".join(sorted(known)) if known else "(none registered)")


class Registry(Generic[T]):
    """Name -> frozen declaration. Registering a name twice or asking for an unknown one raises.

    `builtins` (optional) registers the built-in declarations; it runs once, before the first
    lookup (get, names, iteration, membership), so no caller has to remember to load them.
    """

    def __init__(self, kind: str, builtins: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins

    def _ensure_builtins(self) -> None:
        load, self._builtins = self._builtins, None  # cleared first: loading looks names up too
        if load is not None:
            load()

    def register(self, item: T) -> T:
        """Add `item` under `item.name`; returns it so declarations read `X = REG.register(...)`."""
        if item.name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {item.name!r} is already registered; pick another name "
                f"(a module imported twice under two names also does this)"
            )
        self._items[item.name] = item
        return item

    def get(self, name: str) -> T:
        self._ensure_builtins()
        try:
            return self._items[name]
        except KeyError:
            hint = close_matches_hint(name, list(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; {hint}") from None

    def unregister(self, name: str) -> None:
        """Remove a name (tests and interactive sessions re-declaring a task)."""
        self.get(name)
        del self._items[name]

    @contextmanager
    def scoped(self) -> Iterator[None]:
        """Names registered inside the block are dropped on leaving it (a notebook trying a
        declaration twice; the test suite, so one test's temporary tasks never meet another's)."""
        self._ensure_builtins()
        before = dict(self._items)
        try:
            yield
        finally:
            self._items = before

    def names(self) -> list[str]:
        self._ensure_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        self._ensure_builtins()
        return len(self._items)
