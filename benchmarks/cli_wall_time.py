"""Wall time of two CLI commands, this checkout against another one, interleaved.

    python benchmarks/cli_wall_time.py --baseline /path/to/other/checkout [--repeats 5]

Runs ``layernas describe --space mobilenetv2`` (best of ``--repeats``) and the README's
first search on the NATS table (best of ``--search-repeats``) alternately with this
checkout's ``layernas`` package and the baseline's (put first on ``PYTHONPATH``), so both
see the same machine load; prints the best wall and CPU (user + system) seconds of each,
and their ratios. A baseline checkout: ``git archive REV | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], pythonpath: str | None, cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of ``cmd``."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout whose layernas/ package is the baseline")
    parser.add_argument("--table", default=str(REPO.parent / "shared" / "data" / "nats_tss" / "nats_tss_200ep.csv"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--search-repeats", type=int, default=3)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "layernas.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x"
        commands = {
            "describe --space mobilenetv2": (cli + ["describe", "--space", "mobilenetv2"], args.repeats),
            "search nats-tss --flops-fraction 0.5": (cli + ["search", "--space", "nats-tss", "--dataset", "cifar10",
                                                            "--flops-fraction", "0.5", "--table", args.table,
                                                            "--out", str(out), "--quiet"], args.search_repeats),
        }
        for name, (cmd, repeats) in commands.items():
            best = {"baseline": [float("inf")] * 2, "this": [float("inf")] * 2}
            for _ in range(repeats):
                for label, path in (("baseline", args.baseline), ("this", None)):
                    shutil.rmtree(out, ignore_errors=True)
                    best[label] = [min(a, b) for a, b in zip(best[label], wall(cmd, path, tmp))]
            (bw, bc), (tw, tc) = best["baseline"], best["this"]
            print(f"{name} (best of {repeats}, interleaved): wall baseline {bw:.3f} s, this {tw:.3f} s, "
                  f"ratio {tw / bw:.2f}; CPU baseline {bc:.3f} s, this {tc:.3f} s, ratio {tc / bc:.2f}", flush=True)


if __name__ == "__main__":
    main()
