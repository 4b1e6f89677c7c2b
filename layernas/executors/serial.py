"""The executor of a single process: one trial after another."""

from __future__ import annotations

from layernas.evaluator import EvalResult, Evaluator, Trial
from layernas.executors.base import evaluate_safely


class SerialExecutor:
    """Runs a plain :class:`~layernas.evaluator.Evaluator` in this process, one trial after another.

    Args:
      evaluator: the evaluator to run.
      max_in_flight: how many trials the run loop may have submitted at once. Values
        above 1 make the run loop propose in batches, exactly as it would for a parallel
        backend with that many slots, so results match such a backend trial for trial.

    Example:
        >>> from layernas.evaluator import EvalResult, Trial
        >>> class Constant:
        ...     def evaluate(self, trial):
        ...         return EvalResult(trial.trial_id, trial.arch, reward=1.0)
        >>> ex = SerialExecutor(Constant())
        >>> ex.submit(Trial(0, (0,), seed=1))
        >>> [r.reward for r in ex.wait()]
        [1.0]
    """

    def __init__(self, evaluator: Evaluator, max_in_flight: int = 1):
        self.evaluator = evaluator
        self.max_in_flight = int(max_in_flight)
        self._queue: list[Trial] = []

    def submit(self, trial: Trial) -> None:
        self._queue.append(trial)

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        if not self._queue:
            return []
        return [evaluate_safely(self.evaluator, self._queue.pop(0))]

    def close(self) -> None:
        close = getattr(self.evaluator, "close", None)
        if close:
            close()
