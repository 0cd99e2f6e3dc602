"""Code fingerprints computed from the import graph: what a result depends on is derived, never listed.

A cell's code fingerprint covers its roots (a method module and the stage module) and every first-party module
(``clipbench.*``, ``stages.*``) they import, transitively: module-level and function-level imports alike, and the
package ``__init__`` of every imported module (it runs on import). Imports are read from the syntax tree, without
importing anything, so the ``code`` stage is cheap and the closure is the same on every machine.

What a module contributes to the hash:

* imports under ``if TYPE_CHECKING:`` are not followed (they never run);
* its syntax tree (``ast.dump``): comments and formatting do not invalidate results, any change of code or
  docstring does;
* the entries of a lazy :class:`~clipbench.registry.Registry` literal are left out: ``"key": "module:Attr"`` lines
  name modules that are roots of their own cells, so adding a method or dataset does not invalidate the others;
* the non-Python files beside a module that locates data through ``__file__`` (templates, class names, model
  configs, reference numbers): they are read at run time as code is.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

FIRST_PARTY = ("clipbench", "stages")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def module_path(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of first-party module ``name`` under ``root`` (None for a third-party module)."""
    if name.split(".")[0] not in FIRST_PARTY:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _packages(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages whose ``__init__`` runs before ``name``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _absolute(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


@lru_cache(maxsize=4096)
def _parse(source: str) -> ast.Module:
    return ast.parse(source)


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"
    )


def _executed(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if _type_checking_only(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(name: str, root: Path = PROJECT_ROOT) -> set[str]:
    """First-party modules that module ``name`` imports anywhere in its body, with their packages."""
    path = module_path(name, root)
    if path is None:
        return set()
    return set(_imports_in(name, path.name == "__init__.py", path.read_text(), root))


@lru_cache(maxsize=4096)
def _imports_in(name: str, is_package: bool, source: str, root: Path) -> frozenset[str]:
    found: set[str] = set()
    for node in _executed(_parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, name, is_package)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    modules = {m for m in found if module_path(m, root) is not None}
    return frozenset(modules | {p for m in modules for p in _packages(m)} - {name})


def closure(*roots: str, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """Every first-party module reachable from ``roots`` (included), sorted."""
    seen: set[str] = set()
    todo = [r for r in roots if module_path(r, root) is not None]
    todo += [p for r in todo for p in _packages(r)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports_of(name, root) - seen)
    return tuple(sorted(seen))


class _BlankRegistries(ast.NodeTransformer):
    """Replace the entry mapping of ``Registry(kind, {...})`` calls by an empty dict."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if called == "Registry" and len(node.args) >= 2 and isinstance(node.args[1], ast.Dict):
            node.args[1] = ast.Dict(keys=[], values=[])
        return node


def _data_files(path: Path, source: str) -> list[Path]:
    if "__file__" not in source:
        return []
    return sorted(
        p
        for p in path.parent.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


@lru_cache(maxsize=4096)
def _tree_digest(source: str) -> str:
    return hashlib.sha256(ast.dump(_BlankRegistries().visit(ast.parse(source))).encode()).hexdigest()


def module_digest(name: str, root: Path = PROJECT_ROOT) -> str:
    """Hash of one module's syntax tree (registry entries blanked) and the data files it owns."""
    path = module_path(name, root)
    if path is None:
        raise ValueError(f"{name!r} is not a first-party module under {root}")
    source = path.read_text()
    digest = hashlib.sha256(_tree_digest(source).encode())
    for data in _data_files(path, source):
        digest.update(str(data.relative_to(path.parent)).encode())
        digest.update(data.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(*roots: str, root: Path = PROJECT_ROOT) -> dict:
    """``{"hash": ..., "modules": {module: digest}}`` over the import closure of ``roots``."""
    modules = {name: module_digest(name, root) for name in closure(*roots, root=root)}
    digest = hashlib.sha256("".join(f"{k}={v}\n" for k, v in modules.items()).encode())
    return {"hash": digest.hexdigest()[:16], "roots": sorted(roots), "modules": modules}
