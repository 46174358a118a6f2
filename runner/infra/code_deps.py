"""Which code decides a stage's output, derived from the source rather than listed by hand.

From a stage's entry points (the module of its function and codec, the `_target_`s in its config)
this follows every `import` of the `runner` package, function-level imports included, to the
closure of modules the stage can run. Its cache key holds a hash of their syntax trees (comments
and layout do not count, code does), and the versions of the installed distributions those
modules import, with everything those require in turn, and of Python. A module added tomorrow is
in a key as soon as a stage imports it; nobody has to remember to list it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata as md
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "runner"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # runner/


@dataclass(frozen=True)
class CodeDeps:
    modules: tuple[str, ...]  # runner modules, sorted
    digest: str  # hash of their syntax trees
    externals: frozenset[str]  # the other packages' modules they import (dotted names)


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """runner.stages.chunk.chunking -> <package_dir>/stages/chunk/chunking.py (or .../chunking/__init__.py); None if not
    ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=1024)
def _parse(source: bytes, module: str) -> tuple[str, frozenset[str]]:
    """(hash of the syntax tree, every module name it imports); cached by content."""
    tree = ast.parse(source)
    names: set[str] = set()
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from runner.stages.chunk import chunking as chunk`
    digest = hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()
    return digest, frozenset(names)


def closure(roots, package_dir: Path = PACKAGE_DIR) -> CodeDeps:
    """The runner modules reachable by imports from `roots` (module names), and what else they import."""
    seen: dict[str, str] = {}
    externals: set[str] = set()
    todo = [r for r in roots if r.split(".")[0] == PACKAGE] + [f"{PACKAGE}.__init__"]
    externals.update(r for r in roots if r.split(".")[0] != PACKAGE)
    while todo:
        module = todo.pop()
        path = module_file(module.removesuffix(".__init__"), package_dir)
        if path is None or str(path) in seen:
            continue
        digest, imported = _parse(path.read_bytes(), module)
        parts = module.removesuffix(".__init__").split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))  # importing a.b.c runs a/b/__init__.py
        seen[str(path)] = f"{path.relative_to(package_dir).as_posix()}:{digest}"
        for name in imported:
            top = name.split(".")[0]
            if top == PACKAGE:
                todo.append(name)
            elif top and top not in sys.stdlib_module_names:
                externals.add(name)
    entries = sorted(seen.values())
    modules = tuple(sorted(e.split(":")[0] for e in entries))
    return CodeDeps(modules, hashlib.sha256("\n".join(entries).encode()).hexdigest(), frozenset(externals))


def roots_of(*callables, config=None) -> set[str]:
    """Module names of the stage's functions (partials unwrapped) and of each `_target_` in its config."""
    roots = {getattr(getattr(f, "func", f), "__module__", None) or "" for f in callables}
    roots.update(t.rsplit(".", 1)[0] for _, t in targets(config))
    return {r for r in roots if r}


def targets(tree, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, `_target_`) of every node of a config tree (plain containers) that names one."""
    if isinstance(tree, (list, tuple)):
        return [t for i, v in enumerate(tree) for t in targets(v, f"{key}[{i}]")]
    if not isinstance(tree, dict):
        return []
    own = [(key, tree["_target_"])] if isinstance(tree.get("_target_"), str) else []
    return own + [t for k, v in tree.items() for t in targets(v, f"{key}.{k}" if key else str(k))]


# ---- library versions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    version: str
    requires: tuple[str, ...]  # raw Requires-Dist values


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _headers(text: str) -> list[tuple[str, str]]:
    """The header fields of a METADATA file (the part before the first blank line), without the
    email parser the standard library uses, which reads the whole long description too."""
    fields = []
    for line in text.split("\n\n", 1)[0].splitlines():
        if line[:1] in (" ", "\t") and fields:  # a continuation line
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
        elif ":" in line:
            k, v = line.split(":", 1)
            fields.append((k.strip().lower(), v.strip()))
    return fields


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[dict[str, _Dist], dict[str, list[str]]]:
    """({canonical name: _Dist}, {module prefix: [canonical names]}) over the environment, once per
    process (first found wins, as imports resolve). Prefixes are one and two levels deep, so the
    namespace `llama_index` maps `llama_index.core` to llama-index-core alone."""
    dists: dict[str, _Dist] = {}
    prefixes: dict[str, list[str]] = {}
    for dist in md.distributions():
        fields = _headers(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
        name = next((v for k, v in fields if k == "name"), None)
        if not name or _canonical(name) in dists:
            continue
        name = _canonical(name)
        dists[name] = _Dist(
            next((v for k, v in fields if k == "version"), "?"), tuple(v for k, v in fields if k == "requires-dist")
        )
        record = dist.read_text("RECORD")
        if record:
            paths = [line.split(",", 1)[0].split("/") for line in record.splitlines() if line]
            found = {".".join(p[:depth]).removesuffix(".py") for p in paths for depth in (1, 2) if len(p) > depth}
            found |= {p[0].removesuffix(".py") for p in paths if len(p) == 1}
        else:
            found = set((dist.read_text("top_level.txt") or "").split())
        for prefix in found:
            if prefix and not prefix.startswith((".", "/")) and ".dist-info" not in prefix and "__pycache__" not in prefix:
                prefixes.setdefault(prefix, []).append(name)
    return dists, prefixes


def distributions_of(module: str) -> list[str]:
    """The installed distributions that provide `module` (its longest known prefix)."""
    prefixes = _installed()[1]
    parts = module.split(".")
    for depth in (2, 1):
        if len(parts) >= depth and ".".join(parts[:depth]) in prefixes:
            return prefixes[".".join(parts[:depth])]
    return []


@functools.lru_cache(maxsize=4096)
def _requirements(dist: str) -> tuple[str, ...]:
    """Installed distributions `dist` requires (environment markers evaluated, extras left out)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in _installed()[0][dist].requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(_canonical(req.name))
    return tuple(out)


def library_versions(externals) -> dict[str, str]:
    """{distribution: version} for the distributions that provide `externals` (module names) and
    everything they require, transitively, plus Python and the machine architecture."""
    return dict(_library_versions(frozenset(externals)))


@functools.lru_cache(maxsize=256)
def _library_versions(externals: frozenset[str]) -> tuple[tuple[str, str], ...]:
    dists = _installed()[0]
    todo = [d for module in sorted(externals) for d in distributions_of(module)]
    found: dict[str, str] = {}
    while todo:
        dist = todo.pop()
        if dist in found or dist not in dists:
            continue
        found[dist] = dists[dist].version
        todo.extend(_requirements(dist))
    return (
        ("python", sys.version),
        ("implementation", platform.python_implementation()),
        ("machine", platform.machine()),
        *sorted(found.items()),
    )
