"""Executors: where and how trials run, all behind one protocol (:class:`Executor`).

==============================  ==========================================================
:class:`SerialExecutor`         this process, one trial after another
:class:`DeviceParallelExecutor` one trial per local device at once (candidate-parallel)
:class:`DistributedExecutor`    several processes joined by ``jax.distributed``
                                (:func:`initialize_distributed`); each evaluates its share
:class:`RayExecutor`            a pool of Ray actors (:func:`make_ray_executor`)
==============================  ==========================================================

Every one evaluates a trial through :func:`evaluate_safely`: a broken trial becomes a
failed result and the search goes on. :func:`as_executor` wraps a plain evaluator in a
SerialExecutor. Importing this package imports neither jax nor ray: the device,
distributed and Ray executors are loaded on first use.

Example:
    >>> from layernas.executors import as_executor
    >>> from layernas.evaluator import EvalResult, Trial
    >>> class Constant:
    ...     def evaluate(self, trial):
    ...         return EvalResult(trial.trial_id, trial.arch, reward=1.0)
    >>> ex = as_executor(Constant())
    >>> ex.submit(Trial(0, (0,), seed=1))
    >>> ex.wait()[0].reward
    1.0
"""

from __future__ import annotations

import importlib

from layernas.executors.base import Executor, as_executor, check_max_in_flight, evaluate_safely, safe_evaluate
from layernas.executors.serial import SerialExecutor

_LAZY = {
    "DeviceParallelExecutor": "layernas.executors.devices",
    "DataParallelEvaluator": "layernas.executors.devices",
    "data_parallel_mesh": "layernas.executors.devices",
    "map_on_devices": "layernas.executors.devices",
    "DistributedExecutor": "layernas.executors.distributed",
    "initialize_distributed": "layernas.executors.distributed",
    "evaluate_distributed": "layernas.executors.distributed",
    "gather_objects": "layernas.executors.distributed",
    "process_share": "layernas.executors.distributed",
    "RayExecutor": "layernas.executors.ray",
    "RayBackendError": "layernas.executors.ray",
    "make_ray_executor": "layernas.executors.ray",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Executor", "SerialExecutor", "as_executor", "check_max_in_flight", "evaluate_safely", "safe_evaluate",
           *_LAZY]
