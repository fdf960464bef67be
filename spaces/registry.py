"""Name -> object registries that refuse duplicates (like torchvision's `register_model`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry whose built-in entries are loaded on first use, so importing it is free."""

    def __init__(self, what: str, load_builtins: Callable[[], None] | None = None):
        self._what = what
        self._entries: dict[str, T] = {}
        self._load_builtins = load_builtins
        self._loaded = load_builtins is None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the loader registers through `add`
            assert self._load_builtins is not None
            self._load_builtins()

    def add(self, name: str, entry: T) -> T:
        self._ensure_loaded()
        if not name or name != name.strip().lower() or any(c.isspace() for c in name):
            raise ValueError(f"{self._what} names are lowercase with no spaces, got {name!r}")
        if name in self._entries:
            raise ValueError(f"a {self._what} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"no {self._what} named {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def names(self) -> list[str]:
        self._ensure_loaded()
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)
