"""The executor protocol, and the one place a trial is evaluated safely.

An :class:`Executor` keeps several trials in flight: ``submit(trial)``, then ``wait()``
returns whatever has finished. Every executor of the library (serial, one trial per
device, several processes, Ray) evaluates each trial through :func:`evaluate_safely`, so
"one broken trial must not end the search" is written once: an exception inside an
evaluator, or an evaluator that returns something other than an
:class:`~layernas.evaluator.EvalResult`, becomes a failed result naming the reason.

This module imports neither jax nor ray.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from layernas.errors import first_line
from layernas.evaluator import EvalResult, Evaluator, Trial


@runtime_checkable
class Executor(Protocol):
    """Keeps trials in flight and reports them as they finish (in any order).

    An executor that spans several processes (a multi-host run) also has
    ``process_index`` and ``process_count`` and a collective ``gather(obj) -> list`` (every
    process's JSON-able ``obj``, in process order); the run loop then lets only process 0
    write files (see :mod:`layernas.run` and
    :class:`layernas.executors.DistributedExecutor`).
    """

    max_in_flight: int

    def submit(self, trial: Trial) -> None: ...

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        """Block until at least one submitted trial finishes (or ``timeout``); return
        every finished result not returned before."""
        ...

    def close(self) -> None: ...


def evaluate_safely(evaluator: Evaluator | Callable[..., EvalResult], trial: Trial, **kwargs: Any) -> EvalResult:
    """``evaluator.evaluate(trial, **kwargs)``, where nothing but an interrupt escapes.

    The one "a broken trial must not end the search" guard of the library: every
    executor calls it. An exception becomes ``EvalResult.failed(trial, "Type: first
    line")``; a return value that is not an EvalResult for this trial becomes a failed
    result whose error is a TypeError naming the evaluator and what it returned.
    KeyboardInterrupt and SystemExit pass through (Ctrl-C still stops the search).

    Args:
      evaluator: anything with ``evaluate(trial, **kwargs) -> EvalResult``, or such a
        function itself.
      trial: the trial to evaluate.
      **kwargs: passed on to ``evaluate`` (``placement=device`` for the JAX trainer).

    Returns:
      the evaluator's EvalResult, or a failed one saying why.

    Example:
        >>> from layernas.evaluator import Trial
        >>> class Broken:
        ...     def evaluate(self, trial):
        ...         return 0.5
        >>> evaluate_safely(Broken(), Trial(3, (0,), seed=1)).error
        'TypeError: evaluator Broken.evaluate returned 0.5 (float) for trial 3; expected an EvalResult'
    """
    method = getattr(evaluator, "evaluate", None)
    function = method if callable(method) else evaluator
    try:
        result = function(trial, **kwargs)
    except Exception as e:  # one broken trial must not end the search
        return EvalResult.failed(trial, first_line(e, with_type=True))
    return _checked(evaluator, trial, result)


def safe_evaluate(evaluator: Evaluator | Callable[..., EvalResult]) -> Callable[[Trial], EvalResult]:
    """``trial -> evaluate_safely(evaluator, trial)``, with the method looked up once: for a
    loop that evaluates many cheap trials (table lookups) one after another.

    Args:
      evaluator: anything with ``evaluate(trial) -> EvalResult``, or such a function.

    Returns:
      a function of one trial giving exactly what :func:`evaluate_safely` gives.

    Example:
        >>> from layernas.evaluator import Trial
        >>> class Broken:
        ...     def evaluate(self, trial):
        ...         raise ValueError("no such model")
        >>> safe_evaluate(Broken())(Trial(3, (0,), seed=1)).error
        'ValueError: no such model'
    """
    method = getattr(evaluator, "evaluate", None)
    function = method if callable(method) else evaluator
    failed = EvalResult.failed

    def evaluate(trial: Trial) -> EvalResult:
        try:
            result = function(trial)
        except Exception as e:  # one broken trial must not end the search
            return failed(trial, first_line(e, with_type=True))
        if type(result) is EvalResult and result.trial_id == trial.trial_id:
            return result
        return _checked(evaluator, trial, result)

    return evaluate


def _checked(evaluator, trial: Trial, result) -> EvalResult:
    """``result`` if it is an EvalResult for ``trial``, else a failed result saying what it is."""
    if not isinstance(result, EvalResult):
        return EvalResult.failed(trial, f"TypeError: evaluator {_name(evaluator)} returned "
                                        f"{first_line(repr(result), limit=80)} ({type(result).__name__}) for "
                                        f"trial {trial.trial_id}; expected an EvalResult")
    if result.trial_id != trial.trial_id:
        return EvalResult.failed(trial, f"TypeError: evaluator {_name(evaluator)} returned the result of "
                                        f"trial {result.trial_id} for trial {trial.trial_id}")
    return result


def _name(evaluator) -> str:
    """``Class.evaluate`` for an evaluator, the function's name for a function."""
    if callable(getattr(evaluator, "evaluate", None)):
        return f"{type(evaluator).__name__}.evaluate"
    function = getattr(evaluator, "func", evaluator)  # functools.partial
    return getattr(function, "__qualname__", type(function).__name__)


def check_max_in_flight(value, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``value`` is None or a positive integer (bools are not).

    Args:
      value: an executor's or a search's ``max_in_flight``.
      error: the exception type to raise (``RunError`` from :func:`layernas.search`).
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise error(f"max_in_flight={value!r}; expected a positive integer")


def as_executor(evaluator: Evaluator | Executor, max_in_flight: int = 1) -> Executor:
    """Wrap a plain evaluator in a :class:`~layernas.executors.SerialExecutor`; pass an
    Executor through.

    Raises:
      TypeError: ``evaluator`` has neither ``evaluate()`` nor ``submit()``/``wait()``.
    """
    from layernas.executors.serial import SerialExecutor

    if isinstance(evaluator, Executor) and hasattr(evaluator, "submit"):
        return evaluator
    if not callable(getattr(evaluator, "evaluate", None)):
        raise TypeError(
            f"evaluator {evaluator!r} has neither evaluate() nor submit()/wait(); expected an Evaluator "
            f"(evaluate(trial) -> EvalResult) or an Executor"
        )
    return SerialExecutor(evaluator, max_in_flight)
