"""Spreading training over devices and hosts.

Three ways, all on current JAX APIs (``jax.pmap`` is in maintenance mode since JAX 0.8 and
``jax.device_put_replicated`` is gone in 0.10, so none are used):

* **data-parallel** (:func:`data_parallel_mesh`, :func:`train_data_parallel`): one child
  over all local devices. The state is replicated and each batch is split along the mesh
  axis ``"data"`` with a ``NamedSharding``; ``jax.jit`` inserts the gradient all-reduce.
  BatchNorm statistics are computed over the global batch, so the result equals
  single-device training up to float reduction order.
* **candidate-parallel** (:func:`map_on_devices`, :class:`DeviceParallelExecutor`):
  different children train at the same time, each pinned to its own device, from a
  thread per device (JAX releases the GIL while a computation runs).
* **multi-host** (:func:`initialize_distributed`, :func:`process_share`, :class:`DistributedExecutor`,
  :func:`gather_objects`, :func:`evaluate_distributed`): ``jax.distributed.initialize``
  joins the processes (a TPU pod's hosts, or local processes on a loopback coordinator);
  each process trains ``trials[process_index::process_count]`` on its local devices, and
  the results are gathered to every process with
  ``jax.experimental.multihost_utils.process_allgather`` (gloo on CPU).

Example (data-parallel over 4 CPU devices;
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX starts):
    >>> mesh = data_parallel_mesh()                                               # doctest: +SKIP
    >>> result = train.train_model(model, tr, va, recipe, seed=0, placement=mesh)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait as wait_futures, FIRST_COMPLETED
from typing import Any, Callable, Sequence

import jax
import numpy as np

from layernas.evaluator import EvalResult, Trial
from layernas.trainers import train as train_lib


# --------------------------------------------------------------------------- data-parallel
def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all local devices)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise ValueError("no devices given for the data-parallel mesh")
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def train_data_parallel(model, train, valid, recipe: train_lib.Recipe, seed: int,
                        devices: Sequence[jax.Device] | None = None, **kw) -> train_lib.TrainResult:
    """:func:`~layernas.trainers.train.train_model` of one child over all ``devices``.

    ``recipe.batch_size`` is the global batch and must be divisible by the device count.
    """
    return train_lib.train_model(model, train, valid, recipe, seed, placement=data_parallel_mesh(devices), **kw)


# ----------------------------------------------------------------------- candidate-parallel
def map_on_devices(fn: Callable[[Any, jax.Device], Any], items: Sequence[Any],
                   devices: Sequence[jax.Device] | None = None) -> list[Any]:
    """``[fn(item, device) for item in items]``, running one item per device at a time.

    Each worker thread owns one device; items are taken in order as devices free up. The
    returned list is in the order of ``items`` whatever the finishing order.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
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
    """An :class:`~layernas.evaluator.Executor` that trains up to one trial per device at once.

    Args:
      evaluator: has ``evaluate(trial, placement=device) -> EvalResult``
        (e.g. :class:`~layernas.trainers.evaluator.TrainerEvaluator`).
      devices: devices to use (default: all local devices); ``max_in_flight`` is their count.
    """

    def __init__(self, evaluator, devices: Sequence[jax.Device] | None = None):
        self.evaluator = evaluator
        self.devices = list(devices) if devices is not None else jax.local_devices()
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
            return self.evaluator.evaluate(trial, placement=dev)
        except Exception as e:  # one broken trial must not end the search
            return EvalResult.failed(trial, f"{type(e).__name__}: {e}")
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

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# ------------------------------------------------------------------------------ multi-host
def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kw) -> None:
    """``jax.distributed.initialize`` (arguments may be None on TPU pods / SLURM, where
    JAX detects them). Call before any other JAX call in the process."""
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kw)


def process_share(items: Sequence[Any], process_index: int | None = None,
                  process_count: int | None = None) -> list[Any]:
    """This process's items: ``items[process_index::process_count]`` (round-robin, so
    neighbouring, similarly sized children land on different hosts)."""
    i = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    if not 0 <= i < n:
        raise ValueError(f"process_index={i}; expected 0 <= index < process_count={n}")
    return list(items[i::n])


def gather_objects(local: list[Any]) -> list[Any]:
    """Concatenate every process's JSON-able list, in process order, on every process.

    Uses ``multihost_utils.process_allgather`` on the UTF-8 JSON bytes (two collectives:
    the lengths, then the padded payloads). With one process it returns ``local``.
    """
    if jax.process_count() == 1:
        return list(local)
    from jax.experimental import multihost_utils

    payload = np.frombuffer(json.dumps(local).encode(), dtype=np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([payload.size], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: payload.size] = payload
    every = np.asarray(multihost_utils.process_allgather(padded))
    out: list[Any] = []
    for row, n in zip(every.reshape(len(lengths), -1), lengths):
        out += json.loads(row[: int(n)].tobytes().decode())
    return out


def evaluate_distributed(evaluator, trials: Sequence[Trial]) -> list[EvalResult]:
    """Evaluate ``trials`` split across processes; every process gets all results.

    Each process evaluates :func:`process_share` of the trials (on its local devices, one
    trial per device at a time via :func:`map_on_devices` when the evaluator accepts a
    ``placement``), then the results are gathered and returned in trial order.
    """
    mine = process_share(list(trials))

    def one(trial, device):
        try:
            d = evaluator.evaluate(trial, placement=device).to_dict()
        except Exception as e:
            d = EvalResult.failed(trial, f"{type(e).__name__}: {e}").to_dict()
        d["info"]["process_index"] = jax.process_index()
        return d

    local = map_on_devices(one, mine)
    results = [EvalResult.from_dict(d) for d in gather_objects(local)]
    order = {t.trial_id: k for k, t in enumerate(trials)}
    return sorted(results, key=lambda r: order[r.trial_id])


class DistributedExecutor:
    """An :class:`~layernas.evaluator.Executor` for multi-host search.

    Every process runs the same (deterministic, same-seed) search loop and so submits the
    same trials; ``wait()`` is a collective: it evaluates the pending trials with
    :func:`evaluate_distributed` (each process trains its round-robin share on its local
    devices) and returns all results on every process, so every host's searcher state stays
    identical. Let only process 0 write the run's outputs (``jax.process_index() == 0``).

    Args:
      evaluator: has ``evaluate(trial, placement=device)``.
      max_in_flight: trials per collective round (default: the number of devices over all
        processes, ``jax.device_count()``).
    """

    def __init__(self, evaluator, max_in_flight: int | None = None):
        self.evaluator = evaluator
        self.max_in_flight = int(max_in_flight or jax.device_count())
        self._pending: list[Trial] = []

    def submit(self, trial: Trial) -> None:
        self._pending.append(trial)

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        trials, self._pending = self._pending, []
        return evaluate_distributed(self.evaluator, trials) if trials else []

    def close(self) -> None:
        pass
