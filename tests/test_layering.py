"""The layering rule, checked on the source: the core imports no periphery.

The core (the space protocol, cost model, target, errors, evaluator types, executors,
searchers, run loop, results, api, tables) must not import trainers, search spaces or
benchmarks, at module level or inside a function. The modules a table search runs, and
the executors, must not import jax or flax (or ray) when they are imported: only inside
the functions that need them.

An AST walk, so it sees every import statement whether or not it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "layernas"

CORE = [
    "space.py", "cost_model.py", "target.py", "errors.py", "evaluator.py", "nats_arch_strings.py",
    "executors/*.py", "searchers/*.py", "run.py", "results.py", "api.py", "tables.py", "table_evaluator.py",
    "comparison.py",
]
# what a table search imports: no jax/flax when these modules load
TABLE_PATH = [
    "space.py", "cost_model.py", "target.py", "errors.py", "evaluator.py", "nats_arch_strings.py",
    "searchers/*.py", "run.py", "results.py", "tables.py", "table_evaluator.py",
]
FORBIDDEN = ("layernas.trainers", "layernas.search_spaces", "benchmarks", "trainers", "search_spaces")
HEAVY = ("jax", "flax")


def _modules(patterns) -> list[Path]:
    found = []
    for pattern in patterns:
        found += sorted(PACKAGE.glob(pattern))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module name, line, at module level?) for every import statement in ``path``."""
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_of(source: str, module: str, is_package: bool = False):
    """The imports of ``source`` as the module named ``module``.

    Module level means run when the module is imported: anywhere outside a function body
    (class bodies and top-level if/try blocks included). Relative imports are resolved.
    """
    tree = ast.parse(source)
    package = module if is_package else module.rsplit(".", 1)[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - child.level + 1]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                out.append((name, child.lineno, top))
                out.extend((f"{name}.{alias.name}", child.lineno, top) for alias in child.names)
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return out


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _core_violations(path: Path) -> list[str]:
    return [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
            for name, line, _ in _imports(path) if any(_is(name, p) for p in FORBIDDEN)]


def _heavy_violations(path: Path, heavy=HEAVY) -> list[str]:
    return [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} at module level"
            for name, line, top in _imports(path) if top and any(_is(name, p) for p in heavy)]


@pytest.mark.parametrize("path", _modules(CORE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_trainers_spaces_or_benchmarks(path):
    assert not _core_violations(path)


@pytest.mark.parametrize("path", _modules(TABLE_PATH), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_table_path_module_imports_no_jax_at_module_level(path):
    assert not _heavy_violations(path)


@pytest.mark.parametrize("path", _modules(["executors/*.py"]), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_executors_import_jax_and_ray_lazily(path):
    assert not _heavy_violations(path, HEAVY + ("ray",))


def test_the_walk_sees_what_it_must():
    """The checker itself: imports inside functions, from-imports, relative imports, class bodies."""
    source = ("import os\nfrom layernas.trainers import train\nclass A:\n    import jax\n"
              "def f():\n    import flax.linen\n    from ..search_spaces import nats_tss\n"
              "    from . import base\n")
    found = {(name, top) for name, _, top in _imports_of(source, "layernas.executors.probe")}
    assert ("layernas.trainers", True) in found and ("jax", True) in found and ("os", True) in found
    assert ("flax.linen", False) in found and ("layernas.search_spaces.nats_tss", False) in found
    assert ("layernas.executors.base", False) in found
    assert any(_is(n, "layernas.search_spaces") for n, _ in found)


def test_tables_does_not_import_the_table_evaluator():
    """One direction only: table_evaluator uses tables, never the other way round (no cycle)."""
    names = [name for name, _, _ in _imports(PACKAGE / "tables.py")]
    assert not [n for n in names if _is(n, "layernas.table_evaluator")], names
