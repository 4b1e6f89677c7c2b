"""Candidate-parallel execution: different trials at the same time, one per local device.

:class:`DeviceParallelExecutor` trains up to one trial per device at once, from a thread
per device (JAX releases the GIL while a computation runs); :func:`map_on_devices` is the
same for a plain list of items. JAX is imported when one is built, never when
:mod:`layernas.executors` is imported.

Example (two CPU devices; ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be
set before JAX starts):
    >>> ex = DeviceParallelExecutor(trainer_evaluator)        # doctest: +SKIP
    >>> ex.max_in_flight                                      # doctest: +SKIP
    2
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait as wait_futures
from typing import Any, Callable, Sequence

from layernas.evaluator import EvalResult, Trial
from layernas.executors.base import evaluate_safely


def local_devices() -> list:
    """``jax.local_devices()`` (imports jax)."""
    import jax

    return list(jax.local_devices())


def data_parallel_mesh(devices: Sequence | None = None):
    """A 1-D ``jax.sharding.Mesh`` named ``"data"`` over ``devices`` (default: all local devices).

    A trainer given it as its placement replicates the state and splits each batch along
    the mesh axis (see :func:`layernas.trainers.parallel.train_data_parallel`).
    """
    import jax
    import numpy as np

    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise ValueError("no devices given for the data-parallel mesh")
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def map_on_devices(fn: Callable[[Any, Any], Any], items: Sequence[Any],
                   devices: Sequence | None = None) -> list[Any]:
    """``[fn(item, device) for item in items]``, running one item per device at a time.

    Each worker thread owns one device; items are taken in order as devices free up. The
    returned list is in the order of ``items`` whatever the finishing order.
    """
    devices = list(devices) if devices is not None else local_devices()
    free: queue.Queue = queue.Queue()
    for d in devices:
        free.put(d)

    def run(item):
        dev = free.get()
        try:
            return fn(item, dev)
        finally:
            free.put(dev)

    with ThreadPoolExecutor(len(devices)) as pool:
        return list(pool.map(run, items))


class DeviceParallelExecutor:
    """An :class:`~layernas.executors.Executor` that trains up to one trial per device at once.

    Args:
      evaluator: has ``evaluate(trial, placement=...) -> EvalResult``, where placement is
        a device, or a data-parallel mesh for :meth:`as_evaluator`
        (e.g. :class:`~layernas.trainers.evaluator.TrainerEvaluator`).
      devices: devices to use (default: all local devices); ``max_in_flight`` is their count.
    """

    def __init__(self, evaluator, devices: Sequence | None = None):
        self.evaluator = evaluator
        self.devices = list(devices) if devices is not None else local_devices()
        self.max_in_flight = len(self.devices)
        self._free: queue.Queue = queue.Queue()
        for d in self.devices:
            self._free.put(d)
        self._pool = ThreadPoolExecutor(self.max_in_flight)
        self._futures: dict[Future, Trial] = {}
        self._lock = threading.Lock()

    def _run(self, trial: Trial) -> EvalResult:
        dev = self._free.get()
        try:
            return evaluate_safely(self.evaluator, trial, placement=dev)
        finally:
            self._free.put(dev)

    def submit(self, trial: Trial) -> None:
        with self._lock:
            self._futures[self._pool.submit(self._run, trial)] = trial

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        with self._lock:
            pending = list(self._futures)
        if not pending:
            return []
        done, _ = wait_futures(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        with self._lock:
            for f in done:
                self._futures.pop(f)
                out.append(f.result())
        return sorted(out, key=lambda r: r.trial_id)

    def as_evaluator(self) -> "DataParallelEvaluator":
        """A plain evaluator over the same devices, for a caller that takes one trial at a
        time (a Ray worker that reserved a whole host): each trial trains data-parallel
        over all of them. Stops this executor's threads (it has run nothing yet)."""
        self.close()
        return DataParallelEvaluator(self.evaluator, self.devices)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class DataParallelEvaluator:
    """Evaluates one trial at a time over several devices: ``evaluator.evaluate(trial,
    placement=<data-parallel mesh over devices>)``.

    Args:
      evaluator: has ``evaluate(trial, placement=...)`` and accepts a mesh placement (the
        JAX trainer; the recipe's batch size must be divisible by the device count).
      devices: the devices of the mesh.
    """

    def __init__(self, evaluator, devices: Sequence):
        self.evaluator = evaluator
        self.devices = list(devices)
        self.placement = data_parallel_mesh(self.devices)

    def evaluate(self, trial: Trial) -> EvalResult:
        """The wrapped evaluator's result, its ``info["devices"]`` the number of devices used."""
        result = self.evaluator.evaluate(trial, placement=self.placement)
        if isinstance(result, EvalResult):
            result = dataclasses.replace(result, info={**result.info, "devices": len(self.devices)})
        return result

    def close(self) -> None:
        close = getattr(self.evaluator, "close", None)
        if close:
            close()
