"""Same-run comparisons: a helper process driven line by line, and interleaved timing rounds.

:class:`LineWorker` runs a benchmark's other side (PyTorch, without JAX's thread pool): the
child prints ``ready`` once set up, then answers each tab-separated request line with one
number (seconds, GFLOP/s, ...). :func:`interleaved_medians` times several configurations in
alternating rounds, so that a shared machine's load falls on all of them alike. Used by
``perf_summary.py`` and ``mobilenet_step.py``.
"""

from __future__ import annotations

import subprocess
from typing import Sequence


class LineWorker:
    """Start ``cmd`` and wait for its ``ready`` line.

    Args:
      cmd: the command line of the worker process.
    Raises:
      RuntimeError: the worker exited before it was ready.
    """

    def __init__(self, cmd: Sequence[str]):
        self.proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        while self.proc.stdout.readline().strip() != "ready":
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker {' '.join(cmd)} exited before it was ready")

    def ask(self, *fields) -> float:
        """Send one request (the fields, tab-separated) and return the number it answers."""
        self.proc.stdin.write("\t".join(map(str, fields)) + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def interleaved_medians(runners: dict, rounds: int, steps: int) -> dict:
    """``{name: [seconds per step, one per round]}``, configurations interleaved per round
    (the machine is shared), after one warm-up step each."""
    for run in runners.values():
        run(1)
    times = {k: [] for k in runners}
    for r in range(rounds):
        for k, run in runners.items():
            times[k].append(run(steps) / steps)
        print("  round", r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    return times
