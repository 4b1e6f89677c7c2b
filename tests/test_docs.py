"""Every ```python block of README.md and docs/*.md runs, so the documentation cannot rot.

Each block runs on its own, in a fresh namespace, with a fresh temporary directory as the
working directory (what a user who pastes it into a new folder gets). A block that reads
data names it under ``data/`` (``"data/cifar10"``, ``"data/nats_tss/..."``); the test links
``data`` to the project's data folder (``shared/data`` beside the repository, or
``$LAYERNAS_SHARED/data``) and skips the block, naming the folder, when it is absent.

A block opts out only with a marker comment line that says why:

* ``# doctest: skip (REASON)``: never run (it needs a cluster, several hosts or devices);
  it is still compiled, and every name it imports must exist;
* ``# doctest: slow (REASON)``: run only with ``pytest -m slow`` (it trains).

The inventory test reports how many blocks ran, are slow-only and opted out.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import re
import warnings
from pathlib import Path

import pytest

from conftest import REPO, shared_dir

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
ANY_MARKER = re.compile(r"^[ \t]*#\s*doctest\b.*$", re.M)
MARKER = re.compile(r"^[ \t]*#\s*doctest:\s*(skip|slow)\s*\(([^)]*\S[^)]*)\)\s*$")
NEEDS_DATA = re.compile(r"""["']data/""")
# Modules the documentation already names that are added to the library in the same
# change set; until they exist, a block that imports one is an expected failure.
PENDING_MODULES = {"layernas.executors", "layernas.trainers.models"}


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # line of the opening fence, 1-based
    code: str
    mode: str  # "run", "skip" or "slow"
    reason: str

    @property
    def name(self) -> str:
        return f"{_shown(self.path)}:{self.line}"

    @property
    def needs_data(self) -> bool:
        return bool(NEEDS_DATA.search(self.code))


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def parse_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one markdown file, with their opt-out markers.

    Raises:
      ValueError: a ``# doctest`` comment that is not ``# doctest: skip|slow (REASON)``.
    """
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        code = match.group(1)
        mode, reason = "run", ""
        for comment in ANY_MARKER.findall(code):
            marker = MARKER.match(comment)
            if marker is None:
                raise ValueError(f"{_shown(path)}:{line}: bad marker {comment.strip()!r}; "
                                 "expected '# doctest: skip (reason)' or '# doctest: slow (reason)'")
            mode, reason = marker.group(1), marker.group(2).strip()
        blocks.append(Block(path, line, code, mode, reason))
    return blocks


BLOCKS = [b for p in DOC_FILES for b in parse_blocks(p)]


def imported_names(code: str) -> list[tuple[str, str | None]]:
    """(module, name) for every ``import module`` / ``from module import name`` in code."""
    pairs = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            pairs += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            pairs += [(node.module, alias.name) for alias in node.names]
    return pairs


def pending(code: str) -> str | None:
    """The first not-yet-added module the block imports, or None."""
    for module, _ in imported_names(code):
        root = next((m for m in PENDING_MODULES if module == m or module.startswith(m + ".")), None)
        if root and importlib.util.find_spec(root) is None:
            return root
    return None


def run_block(block: Block, cwd: Path) -> None:
    if block.needs_data:
        data = shared_dir() / "data"
        if not data.exists():
            pytest.skip(f"{block.name} reads data/, and {data} (the project's data folder) is absent")
        (cwd / "data").symlink_to(data, target_is_directory=True)
    missing = pending(block.code)
    if missing:
        pytest.xfail(f"{block.name} imports {missing}, which this tree does not have yet")
    # Pad so that a traceback names the markdown line.
    code = compile("\n" * block.line + block.code, str(block.path), "exec")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        exec(code, {"__name__": "__doc_block__"})
    finally:
        os.chdir(old)


def _params(mode: str):
    marks = [pytest.mark.slow] if mode == "slow" else []
    return [pytest.param(b, id=b.name, marks=marks) for b in BLOCKS if b.mode == mode]


@pytest.mark.parametrize("block", _params("run"))
def test_block_runs(block: Block, tmp_path: Path):
    run_block(block, tmp_path)


@pytest.mark.parametrize("block", _params("slow"))
def test_slow_block_runs(block: Block, tmp_path: Path):
    run_block(block, tmp_path)


@pytest.mark.parametrize("block", _params("skip"))
def test_opted_out_block_compiles_and_imports_real_names(block: Block):
    compile(block.code, block.name, "exec")
    missing = pending(block.code)
    if missing:
        pytest.xfail(f"{block.name} imports {missing}, which this tree does not have yet")
    for module, name in imported_names(block.code):
        mod = importlib.import_module(module)
        if name is not None and name != "*":
            assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}") is not None, \
                f"{block.name}: {module} has no {name}"


def test_inventory_every_page_parses_and_opt_outs_say_why():
    counts = {mode: sum(b.mode == mode for b in BLOCKS) for mode in ("run", "slow", "skip")}
    assert counts["run"] >= 5, counts  # the README's library call and the pages' examples
    assert any(b.path.name == "README.md" and b.mode == "run" for b in BLOCKS)
    for b in BLOCKS:
        assert b.mode == "run" or len(b.reason) >= 5, f"{b.name}: opt-out without a reason"
    opted = "; ".join(f"{b.name} {b.mode} ({b.reason})" for b in BLOCKS if b.mode != "run")
    warnings.warn(f"documentation code blocks: {counts['run']} run, {counts['slow']} only with -m slow, "
                  f"{counts['skip']} opted out: {opted}", UserWarning, stacklevel=1)


def test_bad_marker_is_refused(tmp_path: Path):
    probe = tmp_path / "probe.md"
    probe.write_text("```python\n# doctest: skip\nprint(1)\n```\n")
    with pytest.raises(ValueError, match="bad marker"):
        parse_blocks(probe)
    probe.write_text("```python\n# doctest: skip (needs a GPU)\nprint(1)\n```\n")
    assert [(b.mode, b.reason) for b in parse_blocks(probe)] == [("skip", "needs a GPU")]
