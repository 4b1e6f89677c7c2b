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
  :class:`DistributedExecutor` is the run loop's form: ``layernas.search`` (and
  ``layernas search --distributed``) use it so that every process runs the same search and
  only process 0 writes the run's files.

Example (data-parallel over 4 CPU devices;
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX starts):
    >>> mesh = data_parallel_mesh()                                               # doctest: +SKIP
    >>> result = train.train_model(model, tr, va, recipe, seed=0, placement=mesh)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect
import json
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait as wait_futures, FIRST_COMPLETED
from typing import Any, Callable, Sequence

import jax
import numpy as np

from layernas.evaluator import EvalResult, Trial, check_max_in_flight
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

    A collective: every process must call it, the same number of times. It uses
    ``multihost_utils.process_allgather`` on the UTF-8 JSON bytes (two collectives: the
    lengths, then the payloads padded to a power of two, so that a long search compiles
    a handful of gather shapes rather than one per round).

    Args:
      local: this process's JSON-able items.
    Returns:
      every process's items, process 0's first. With one process, ``local``.
    """
    if jax.process_count() == 1:
        return list(local)
    from jax.experimental import multihost_utils

    payload = np.frombuffer(json.dumps(local).encode(), dtype=np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([payload.size], np.int32))).reshape(-1)
    padded = np.zeros(max(256, 1 << int(lengths.max() - 1).bit_length()), np.uint8)
    padded[: payload.size] = payload
    every = np.asarray(multihost_utils.process_allgather(padded))
    out: list[Any] = []
    for row, n in zip(every.reshape(len(lengths), -1), lengths):
        out += json.loads(row[: int(n)].tobytes().decode())
    return out


def _accepts_placement(evaluator) -> bool:
    """Whether ``evaluator.evaluate`` takes a ``placement`` keyword (the JAX trainer does,
    a table lookup does not)."""
    try:
        params = inspect.signature(evaluator.evaluate).parameters
    except (TypeError, ValueError):
        return False
    return "placement" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _fingerprint(trials: Sequence[Trial]) -> str:
    text = json.dumps([t.to_dict() for t in trials], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluate_distributed(evaluator, trials: Sequence[Trial], per_device: bool = True) -> list[EvalResult]:
    """Evaluate ``trials`` split across processes; every process gets all results.

    A collective: every process must call it with the same trials (it checks, and raises
    RuntimeError on every process when they differ, e.g. when processes were started with
    different seeds). Each process evaluates :func:`process_share` of the trials, then the
    results are gathered and returned in trial order. Each result's ``info`` records the
    ``process_index`` that evaluated it.

    Args:
      evaluator: has ``evaluate(trial)``; when it also takes ``placement=`` (the JAX
        trainer) and ``per_device`` is true, this process's share runs one trial per local
        device at a time (:func:`map_on_devices`); otherwise one after another.
      trials: the trials of this round, the same on every process.
      per_device: pin each trial to one local device (candidate-parallel); False lets the
        evaluator use its own placement (e.g. a data-parallel mesh over the local devices).
    Returns:
      every trial's EvalResult, in the order of ``trials``.
    """
    trials = list(trials)
    mine = process_share(trials)
    index = jax.process_index()

    def one(trial, device=None):
        try:
            res = evaluator.evaluate(trial, placement=device) if device is not None else evaluator.evaluate(trial)
            d = res.to_dict()
        except Exception as e:  # one broken trial must not end the search
            d = EvalResult.failed(trial, f"{type(e).__name__}: {e}").to_dict()
        d["info"] = {**d["info"], "process_index": index}
        return d

    if per_device and _accepts_placement(evaluator):
        local = map_on_devices(one, mine)
    else:
        local = [one(t) for t in mine]
    every = gather_objects([{"process": index, "fingerprint": _fingerprint(trials), "results": local}])
    prints = {e["fingerprint"] for e in every}
    if len(prints) > 1:
        raise RuntimeError(
            f"processes diverged: they submitted different trials in the same round "
            f"({len(prints)} different trial lists over {len(every)} processes); every process must run "
            f"the same search with the same settings and seed")
    results = [EvalResult.from_dict(d) for e in every for d in e["results"]]
    order = {t.trial_id: k for k, t in enumerate(trials)}
    if sorted(order) != sorted(r.trial_id for r in results):
        raise RuntimeError(f"gathered results are for trials {sorted(r.trial_id for r in results)}; "
                           f"expected {sorted(order)}")
    return sorted(results, key=lambda r: order[r.trial_id])


class DistributedExecutor:
    """An :class:`~layernas.evaluator.Executor` for multi-host search.

    Every process runs the same (deterministic, same-seed) search loop and so submits the
    same trials; ``wait()`` is a collective: it evaluates the pending trials with
    :func:`evaluate_distributed` (each process its round-robin share) and returns all
    results on every process, so every host's searcher state stays identical.

    It is also the run loop's view of the processes (``process_index``,
    ``process_count``, :meth:`gather`): :func:`layernas.run.run_loop` lets only process 0
    write the run's files and ships process 0's checkpoint to the others on resume.
    ``layernas.search`` wraps a plain evaluator in one by itself when
    ``jax.distributed`` is initialized with more than one process.

    Args:
      evaluator: has ``evaluate(trial)`` (and, for the JAX trainer, ``placement=``).
      max_in_flight: trials per collective round (default: the number of devices over all
        processes, ``jax.device_count()``). The run's answer depends on it exactly as it
        does on ``max_in_flight`` of a local run: a local run with the same value and seed
        gives the same search.
      per_device: pin each trial to one local device (default); False runs each process's
        share one after another with the evaluator's own placement (a data-parallel mesh).
    """

    def __init__(self, evaluator, max_in_flight: int | None = None, per_device: bool = True):
        check_max_in_flight(max_in_flight)
        self.evaluator = evaluator
        self.max_in_flight = int(max_in_flight or jax.device_count())
        self.per_device = bool(per_device)
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        self._pending: list[Trial] = []

    def submit(self, trial: Trial) -> None:
        self._pending.append(trial)

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        """Evaluate every pending trial over all processes (a collective; ``timeout`` is
        ignored) and return all their results, in trial order."""
        trials, self._pending = self._pending, []
        return evaluate_distributed(self.evaluator, trials, self.per_device) if trials else []

    def gather(self, obj: Any) -> list[Any]:
        """Every process's JSON-able ``obj``, in process order (a collective)."""
        return gather_objects([obj])

    def close(self) -> None:
        close = getattr(self.evaluator, "close", None)
        if close:
            close()
