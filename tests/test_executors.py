"""The executors package: one protocol, one evaluate_safely guard, lazy jax/ray imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import layernas
from layernas.evaluator import EvalResult, Trial
from layernas.executors import Executor, SerialExecutor, as_executor, check_max_in_flight, evaluate_safely
from layernas.target import Target
from toy_spaces import AdditiveEvaluator, AdditiveSpace


class FloatEvaluator:
    """Returns a bare float for trial 2: the mistake a new user makes first."""

    def __init__(self, space):
        self.inner = AdditiveEvaluator(space)

    def evaluate(self, trial):
        return 0.5 if trial.trial_id == 2 else self.inner.evaluate(trial)


class Raising:
    def __init__(self, error):
        self.error = error

    def evaluate(self, trial):
        raise self.error


class WrongTrial:
    def evaluate(self, trial):
        return EvalResult(trial.trial_id + 1, trial.arch, 1.0)


TRIAL = Trial(3, (0, 1), seed=5)


def test_evaluate_safely_turns_errors_into_failed_trials():
    r = evaluate_safely(Raising(ValueError("bad arch\nsecond line")), TRIAL)
    assert (r.trial_id, r.status, r.error, r.ok) == (3, "failed", "ValueError: bad arch", False)
    r = evaluate_safely(FloatEvaluator(AdditiveSpace([[1, 2]], [[0, 1]])), Trial(2, (0,), 1))
    assert r.status == "failed"
    assert r.error == ("TypeError: evaluator FloatEvaluator.evaluate returned 0.5 (float) for trial 2; "
                       "expected an EvalResult")
    r = evaluate_safely(WrongTrial(), TRIAL)
    assert r.status == "failed" and "returned the result of trial 4 for trial 3" in r.error
    r = evaluate_safely(lambda trial, placement=None: EvalResult(trial.trial_id, trial.arch, float(placement)),
                        TRIAL, placement=7)  # a function works too, keywords pass through
    assert r.ok and r.reward == 7.0


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
def test_evaluate_safely_lets_interrupts_through(error):
    with pytest.raises(type(error)):
        evaluate_safely(Raising(error), TRIAL)


def test_search_with_an_evaluator_returning_a_float_goes_on():
    space = AdditiveSpace.random(np.random.default_rng(2), 4, 3, max_cost=5)
    result = layernas.search(space, FloatEvaluator(space), budget=12, target=Target("cost", max=15), seed=1)
    rows = result.history.set_index("trial_id")
    assert rows.loc[2, "status"] == "failed" and "returned 0.5 (float)" in rows.loc[2, "error"]
    assert (rows.drop(index=2).status == "ok").all() and len(rows) == 12
    assert result.best is not None


def test_as_executor_and_protocol():
    ev = AdditiveEvaluator(AdditiveSpace([[1, 2]], [[0, 1]]))
    ex = as_executor(ev, 3)
    assert isinstance(ex, SerialExecutor) and isinstance(ex, Executor) and ex.max_in_flight == 3
    assert as_executor(ex) is ex
    with pytest.raises(TypeError, match="has neither evaluate"):
        as_executor(42)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="max_in_flight"):
            check_max_in_flight(bad)
    check_max_in_flight(None)
    check_max_in_flight(4)


def test_importing_executors_imports_neither_jax_nor_ray():
    code = ("import sys, layernas, layernas.executors, layernas.executors.devices, layernas.executors.distributed; "
            "from layernas.executors import SerialExecutor, evaluate_safely; "
            "bad = [m for m in ('jax', 'ray', 'flax') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_resolve():
    import layernas.executors as executors

    assert executors.DeviceParallelExecutor.__module__ == "layernas.executors.devices"
    assert executors.DistributedExecutor.__module__ == "layernas.executors.distributed"
    assert callable(executors.initialize_distributed) and callable(executors.make_ray_executor)
    assert executors.RayExecutor.__name__ == "RayExecutor"
    with pytest.raises(AttributeError):
        executors.RayEvaluator  # noqa: B018  (renamed RayExecutor)


def test_ray_worker_builds_an_evaluator_from_what_the_factory_returns():
    import functools

    from layernas.executors.ray import build_evaluator

    space = AdditiveSpace([[1, 2]], [[0, 1]])
    plain = AdditiveEvaluator(space)
    assert build_evaluator(plain) is plain and build_evaluator(lambda: plain) is plain

    class OverDevices:  # what the trainer factory returns on a worker with several devices
        def submit(self, trial): ...

        def as_evaluator(self):
            return plain

    assert build_evaluator(OverDevices) is plain

    def make(n):
        return n

    expected = r"^evaluator factory .*make returned a value of type int, which has no evaluate\(trial\)"
    with pytest.raises(TypeError, match=expected):
        build_evaluator(functools.partial(make, 42))
