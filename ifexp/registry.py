"""One idiom for every "pick by name" choice of a job: a `Registry`.

Dataset sources, model sources, generation engines, benchmarks, pruning strategies, projections
and preconditioners are each declared once, under their name, in the module that implements
them (`register`), and looked up by name (`registry[name]`); an unknown name is one line that
names the config key and lists what the registry holds (`expected_one_of`). `ifexp.validation`
checks a job's values against the registries, so a choice added by registering it is valid
everywhere at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import ClassVar, Generic, TypeVar

from ifexp.schema import IfexpError, expected_one_of

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry for one config key (e.g. "dataset.source"), in registration order.

    `module` is the module that declares the registry (the caller's, unless given): the stages
    whose code imports it can run what a plugin registers there (ifexp.plugins). Every registry
    is listed in `Registry.ALL`, so that a plugin's registrations can be seen."""

    ALL: ClassVar[list[Registry]] = []

    def __init__(self, key: str, module: str | None = None):
        self.key = key
        self.module = module or sys._getframe(1).f_globals.get("__name__", "")
        self._entries: dict[str, T] = {}
        Registry.ALL.append(self)

    def register(self, name: str, entry: T) -> T:
        """Adds `entry` under `name` (a name is registered once) and returns it."""
        if name in self._entries:
            raise ValueError(f"{self.key}: '{name}' is already registered ({self._entries[name]!r})")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T | None:
        """Removes an entry (a test's stand-in); None where there was none."""
        return self._entries.pop(name, None)

    def add(self, name: str) -> Callable[[T], T]:
        """The decorator form of `register`."""
        return lambda entry: self.register(name, entry)

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise IfexpError(expected_one_of(self.key, name, self._entries))
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __repr__(self) -> str:
        return f"Registry({self.key!r}: {', '.join(self._entries)})"
