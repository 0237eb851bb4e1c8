"""How ifexp/ is laid out: no import cycle (imports inside functions count: they run too), no
module over 500 lines, and only the entry points import Hydra (the libraries are usable alone)."""

from __future__ import annotations

from ifexp.code_version import PACKAGE_DIR, direct_imports

MAX_LINES = 500
# the entry points: the only modules that touch Hydra (DESIGN.md "Layout")
ENTRY_POINTS = {"ifexp.cli"}


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the ifexp modules it imports (a package importing its own submodule counts)."""
    return {name: set(direct_imports(name)[0]) - {name} for name in module_names()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_there_is_no_import_cycle_in_ifexp():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_over_500_lines():
    lengths = {path: len(path.read_text().splitlines()) for path in PACKAGE_DIR.rglob("*.py")}
    too_long = {str(path.relative_to(PACKAGE_DIR.parent)): n for path, n in lengths.items() if n > MAX_LINES}
    assert not too_long


def test_only_the_entry_points_import_hydra():
    hydra_users = {name for name in module_names() if {"hydra", "omegaconf"} & direct_imports(name)[1]}
    assert hydra_users <= ENTRY_POINTS
