"""Wall time of commands that should not need jax: best of N, alternating between them.

Each command runs in a fresh process, ``--repeats`` times, and the commands take turns
(A, B, C, A, B, C, ...) so that a busy, shared machine slows them alike. ``python -c pass``
runs alongside as the interpreter's own start-up time. Also reports whether each Python
statement in ``--imports`` leaves jax and flax out of ``sys.modules``.

``--baseline-rev REV`` also runs every command against the tree of git revision ``REV``
(exported to a temporary folder laid out as the installed package and put first on
``PYTHONPATH``), alternating with the working tree, so before/after come from one run.

Usage:
    python benchmarks/import_time.py                # the default commands below
    python benchmarks/import_time.py --baseline-rev main --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "layernas describe --space mobilenetv2": [sys.executable, "-m", "layernas", "describe", "--space", "mobilenetv2"],
    "import layernas.search_spaces.mobilenet_v2": [sys.executable, "-c", "import layernas.search_spaces.mobilenet_v2"],
    "import layernas.search_spaces.codec": [sys.executable, "-c", "import layernas.search_spaces.codec"],
    "import pandas": [sys.executable, "-c", "import pandas"],  # what `import layernas` costs without jax
}
PROBE = "import sys, {module}; print(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
MODULES = ("layernas.search_spaces.mobilenet_v2", "layernas.search_spaces.codec", "layernas.search_spaces.sandwich")


def export_tree(rev: str, dest: Path) -> Path:
    """Export ``rev``'s ``layernas/``, ``search_spaces/`` and ``trainers/`` laid out as the
    installed package (``layernas/search_spaces``, ``layernas/trainers``); returns ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "layernas", "search_spaces", "trainers"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for sub in ("search_spaces", "trainers"):
        shutil.move(str(dest / sub), str(dest / "layernas" / sub))
    return dest


def best_of(runs: dict[str, tuple[list[str], dict]], repeats: int, cwd: Path) -> dict[str, float]:
    """Best wall seconds of each ``(argv, env)`` over ``repeats`` alternating runs in ``cwd``."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, (argv, env) in runs.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (the best is kept)")
    parser.add_argument("--baseline-rev", default=None,
                        help="git revision to compare with (its tree runs alternately with this one)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    t0, load_before = time.perf_counter(), os.getloadavg()[0]
    trees = {"this tree": dict(os.environ)}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cwd:
        # a neutral working directory: python -c puts the cwd first on sys.path
        if args.baseline_rev:
            export_tree(args.baseline_rev, Path(tmp))
            trees[args.baseline_rev] = {**os.environ, "PYTHONPATH": tmp}
        runs = {(tree, name): (argv, env) for name, argv in COMMANDS.items() for tree, env in trees.items()}
        best = best_of(runs, args.repeats, Path(cwd))
        lines = [f"# Import time (best of {args.repeats}, commands alternating)", "",
                 f"{platform.node()}, {platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} CPUs, Python {platform.python_version()}; 1-minute load average "
                 f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (absolute times scale with "
                 f"the load; the ratios come from alternating runs under the same load)", "",
                 "| tree | command | best wall (s) | minus `python -c pass` (s) |", "|---|---|---:|---:|"]
        for (tree, name), seconds in best.items():
            base = best[(tree, "python -c pass")]
            lines.append(f"| {tree} | `{name}` | {seconds:.3f} | {seconds - base:.3f} |")
        if args.baseline_rev:
            lines += ["", f"| command | this tree / {args.baseline_rev} (wall, minus start-up) |", "|---|---:|"]
            for name in COMMANDS:
                if name != "python -c pass":
                    after = best[("this tree", name)] - best[("this tree", "python -c pass")]
                    before = best[(args.baseline_rev, name)] - best[(args.baseline_rev, "python -c pass")]
                    lines.append(f"| `{name}` | {after / before:.3f} |")
        lines += ["", "| tree | import | jax/flax loaded |", "|---|---|---|"]
        for tree, env in trees.items():
            where = subprocess.run([sys.executable, "-c", "import layernas.search_spaces as s; print(s.__path__[0])"],
                                   check=True, capture_output=True, text=True, env=env, cwd=cwd).stdout.strip()
            where = "the exported tree" if where.startswith(tmp) else f"`{Path(where).relative_to(REPO)}/`"
            lines.append(f"| {tree} | (layernas.search_spaces from {where}) | |")
            for module in MODULES:
                out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], check=True,
                                     capture_output=True, text=True, env=env, cwd=cwd).stdout.strip()
                lines.append(f"| {tree} | `{module}` | {out} |")
    lines += ["", f"Wall time of this script: {time.perf_counter() - t0:.1f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
