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

from conftest import REPO, shared_path

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[\w-]*[ \t]*$")
ANY_MARKER = re.compile(r"^[ \t]*#\s*doctest\b.*$", re.M)
MARKER = re.compile(r"^[ \t]*#\s*doctest:\s*(skip|slow)\s*\(([^)]*\S[^)]*)\)\s*$")
NEEDS_DATA = re.compile(r"""["']data/""")
# Modules the documentation already names that are added to the library in the same
# change set; until they exist, a block that imports one is an expected failure.
PENDING_MODULES: set[str] = set()  # modules a doc may name before they land (none now)


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


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line of the opening fence, code) of every fenced block, in order."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()) and not line.startswith(" " * 4):
            if lang is None:
                lang, start, body = line.strip()[3:], number, []
            else:
                blocks.append((lang, start, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def prose(text: str) -> str:
    """text without its fenced blocks."""
    lines, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
        elif not inside:
            lines.append(line)
    return "\n".join(lines)


def parse_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one markdown file, with their opt-out markers.

    Raises:
      ValueError: a ``# doctest`` comment that is not ``# doctest: skip|slow (REASON)``.
    """
    blocks = []
    for lang, line, code in fenced_blocks(path.read_text()):
        if lang != "python":
            continue
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
    for module, name in imported_names(code):
        for full in (module, f"{module}.{name}" if name else module):
            root = next((m for m in PENDING_MODULES if full == m or full.startswith(m + ".")), None)
            if root and importlib.util.find_spec(root) is None:
                return root
    return None


def run_block(block: Block, cwd: Path) -> None:
    if block.needs_data:
        data = shared_path("data")  # skips, naming the folder, when it is absent
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


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Pages other parts of the same change set add; a link to one is fine while it is absent.
PENDING_PAGES: set[str] = set()  # pages a doc may link before they exist (none now)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file."""
    text = prose(path.read_text())
    heads = re.findall(r"^#+[ \t]+(.+?)[ \t]*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path):
    text = prose(page.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        shown = str(dest.relative_to(REPO)) if dest.is_relative_to(REPO) else str(dest)
        if not dest.exists():
            if shown not in PENDING_PAGES:
                broken.append(f"{target} (no file {shown})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {shown})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


# Subcommands other parts of the same change set add; fine while the CLI lacks them.
PENDING_COMMANDS: set[str] = set()  # subcommands a doc may name before they exist (none now)


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def shell_commands(page: Path) -> list[str]:
    """Every ``layernas ...`` command line of the page's non-python code blocks."""
    lines = []
    for lang, _, block in fenced_blocks(page.read_text()):
        if lang == "python":
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("layernas ") or " && layernas " in line:
                lines.append(line[line.index("layernas "):])
    return lines


def unknown_commands_and_flags(page: Path) -> list[str]:
    """The page's ``layernas`` command lines that name a subcommand or flag the CLI lacks."""
    from layernas.cli import build_parser

    unknown = []
    for line in shell_commands(page):
        tokens = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
        parser, rest = build_parser(), tokens[1:]
        while rest and rest[0] in _subparsers(parser):
            parser, rest = _subparsers(parser)[rest[0]], rest[1:]
        if rest and not rest[0].startswith("-") and _subparsers(parser):
            if rest[0] not in PENDING_COMMANDS:
                unknown.append(f"{line!r}: no subcommand {rest[0]!r}")
            continue
        flags = {t.split("=")[0] for t in rest if t.startswith("--")}
        known = set(parser._option_string_actions)
        unknown += [f"{line!r}: no flag {f}" for f in sorted(flags - known)]
    return unknown


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_and_flags_exist(page: Path):
    unknown = unknown_commands_and_flags(page)
    assert not unknown, f"{_shown(page)}: {unknown}"


def test_flag_check_catches_a_flag_that_does_not_exist(tmp_path: Path):
    probe = tmp_path / "probe.md"
    probe.write_text("```\nlayernas describe --space mobilenetv2 --latency-lut lut.json\n"
                     "layernas search --space nats-tss \\\n    --flops-fraction 0.5 --no-such-flag\n"
                     "layernas frobnicate --space x\n```\n")
    found = unknown_commands_and_flags(probe)
    assert any("--latency-lut" in u for u in found) and any("--no-such-flag" in u for u in found), found
    assert any("frobnicate" in u for u in found), found
