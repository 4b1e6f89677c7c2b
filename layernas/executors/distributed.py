"""Multi-host search: every process runs the same search, each evaluates its share.

``jax.distributed.initialize`` (:func:`initialize_distributed`) joins the processes (a TPU
pod's hosts, or local processes on a loopback coordinator); each process evaluates
``trials[process_index::process_count]`` (:func:`process_share`) on its local devices,
and the results are gathered to every process (:func:`gather_objects`, with
``jax.experimental.multihost_utils.process_allgather``; gloo on CPU).
:class:`DistributedExecutor` is the run loop's form: ``layernas.search`` (and ``layernas
search --distributed``) use it so that every process runs the same search and only
process 0 writes the run's files.

JAX is imported when these functions run, never when :mod:`layernas.executors` is imported.

Example (in every process, first):
    >>> initialize_distributed("host0:8476", num_processes=2, process_id=i)      # doctest: +SKIP
    >>> result = layernas.search(space, evaluator, budget=100, out_dir="runs/x")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Sequence

import numpy as np

from layernas.evaluator import EvalResult, Trial
from layernas.executors.base import check_max_in_flight, evaluate_safely
from layernas.executors.devices import map_on_devices


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kw) -> None:
    """``jax.distributed.initialize`` (arguments may be None on TPU pods / SLURM, where
    JAX detects them). Call before any other JAX call in the process."""
    import jax

    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kw)


def process_share(items: Sequence[Any], process_index: int | None = None,
                  process_count: int | None = None) -> list[Any]:
    """This process's items: ``items[process_index::process_count]`` (round-robin, so
    neighbouring, similarly sized children land on different hosts)."""
    import jax

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
    import jax

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
    import jax

    trials = list(trials)
    mine = process_share(trials)
    index = jax.process_index()

    def one(trial, device=None):
        kwargs = {"placement": device} if device is not None else {}
        d = evaluate_safely(evaluator, trial, **kwargs).to_dict()
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
    """An :class:`~layernas.executors.Executor` for multi-host search.

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
        import jax

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
