"""A benchmark's helper process (PyTorch, without JAX's thread pool), driven line by line.

The child prints ``ready`` once set up, then answers each tab-separated request line with
one number (seconds, GFLOP/s, ...). Used by ``perf_summary.py`` and ``mobilenet_step.py``.
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
