"""Progress of a search: a tqdm bar on a terminal, one plain line per result elsewhere.

:class:`ProgressBar` is what ``layernas.search(..., progress=True)`` and the CLI use. It
takes the run loop's status lines (``bar(line, final=False)``, the interface of
:class:`layernas.run.Progress`) and, through :meth:`ProgressBar.evaluations`, the counts
behind them:

* on a terminal, a bar over the evaluation budget (or over the charged seconds when only
  ``--budget-seconds`` is given) with tqdm's rate and ETA, the best answer so far beside
  it, and, while a child trains in this process, its epoch and step;
* elsewhere (a pipe, a log file, CI), exactly one line per committed result and nothing
  else: no bar, no carriage returns, no training steps, and the final line is not repeated.

A trainer reports a child's progress with :func:`report_child_progress`; it costs a
function call and a clock read when no bar is listening, so training loops call it on
every step.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> bar = ProgressBar(out)
    >>> bar.evaluations(1, 3, 10.0, None); bar("1 evals/3 | best 90.0")
    >>> report_child_progress(epoch=1, epochs=5, step=10, steps=390)  # not a terminal: silent
    >>> bar.evaluations(3, 3, 30.0, None); bar("3 evals/3 | best 91.0")
    >>> bar("3 evals/3 | best 91.0", final=True); bar.close()
    >>> out.getvalue().splitlines()
    ['1 evals/3 | best 90.0', '3 evals/3 | best 91.0']
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_listeners: list["ProgressBar"] = []
_lock = threading.Lock()


def report_child_progress(*, step: int, steps: int, epoch: int | None = None,
                          epochs: int | None = None) -> None:
    """Tell the active progress bar (if any) how far the child training now has got.

    Args:
      step: steps done in this epoch (or in the whole run, without ``epoch``), from 1.
      steps: steps per epoch (or in the whole run).
      epoch: the epoch in progress, from 1; None for a step-only loop (the codecs).
      epochs: epochs in the run.
    """
    if not _listeners:
        return
    for bar in list(_listeners):
        bar.child(step=step, steps=steps, epoch=epoch, epochs=epochs)


class ProgressBar:
    """The search's progress display (see the module docstring).

    Args:
      stream: where to write (default stderr); None is silent.
      child_interval: the least seconds between two redraws for a child's training steps.
    """

    def __init__(self, stream: TextIO | None = None, child_interval: float = 0.25):
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", None) and self.stream.isatty())
        self.child_interval = child_interval
        self._bar = None
        self._by_seconds = False
        self._last_line: str | None = None
        self._last_child = 0.0
        self._status = ""
        with _lock:
            _listeners.append(self)

    # --- the run loop's interface ------------------------------------------------------
    def evaluations(self, done: int, total: int | None, charged: float, total_seconds: float | None) -> None:
        """Move the bar: ``done`` of ``total`` evaluations, ``charged`` of ``total_seconds``."""
        if not self.tty:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._by_seconds = total is None and total_seconds is not None
            self._bar = tqdm(total=total_seconds if self._by_seconds else total, file=self.stream,
                             unit=" s charged" if self._by_seconds else " evals", dynamic_ncols=True,
                             leave=True, unit_scale=self._by_seconds,
                             initial=min(charged, total_seconds) if self._by_seconds else done)
        n = min(charged, total_seconds) if self._by_seconds else done  # the last trials may overshoot
        self._bar.n = n
        self._bar.refresh()

    def __call__(self, line: str, final: bool = False) -> None:
        """A status line from the run loop: printed once per result off a terminal."""
        if self.stream is None:
            return
        if not self.tty:
            if line != self._last_line:
                self.stream.write(line + "\n")
                self.stream.flush()
                self._last_line = line
            return
        if self._bar is None:  # a line before any count (e.g. a resumed, finished run)
            self.stream.write(line + "\n")
            self.stream.flush()
            return
        status = line.split(" | ", 1)[-1] if " | " in line else line
        if status.endswith(")") and " (" in status:  # the answer's arch string: too long for a bar
            status = status[:status.rindex(" (")]
        self._status = status
        self._bar.set_postfix_str(self._status, refresh=True)
        if final:
            self.close()

    def child(self, *, step: int, steps: int, epoch: int | None = None, epochs: int | None = None) -> None:
        """A training step of a child (shown on a terminal only, at most every ``child_interval`` s)."""
        if not self.tty or self._bar is None:
            return
        now = time.monotonic()
        if now - self._last_child < self.child_interval and step < steps:
            return
        self._last_child = now
        where = f"epoch {epoch}/{epochs} " if epoch is not None else ""
        status = f" | {self._status}" if self._status else ""
        self._bar.set_postfix_str(f"training child: {where}step {step}/{steps}{status}", refresh=True)

    def close(self) -> None:
        """Finish the bar and stop listening for child progress."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        with _lock:
            if self in _listeners:
                _listeners.remove(self)


__all__ = ["ProgressBar", "report_child_progress"]
