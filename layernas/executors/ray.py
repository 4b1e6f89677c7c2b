"""Run trials on a Ray cluster: an :class:`~layernas.executors.Executor` backed by Ray actors.

:class:`RayExecutor` wraps *any* evaluator (anything with ``evaluate(trial)``, such as the
NATS table lookup or the JAX ``TrainerEvaluator``), or a zero-argument factory that builds
one, and runs it in a pool of Ray actors. Each actor asks Ray for ``num_cpus`` CPUs and
``num_gpus`` GPUs (fractional values share a GPU), builds its evaluator **once** (so a JAX
trainer compiles and caches once per worker), and evaluates one trial at a time. Up to
``max_in_flight`` trials run at once; the run loop (:mod:`layernas.run`) commits their
results in trial-id order, so the search is identical to a local run with the same seed and
the same ``max_in_flight`` whatever order Ray returns them in.

Faults:

* an exception inside ``evaluate`` becomes ``EvalResult.failed(trial, "ValueError: ...")``
  (:func:`~layernas.executors.evaluate_safely`); the worker stays up and the search goes on;
* a worker process that dies mid-trial (killed, OOM, node lost) is replaced by a fresh
  actor and the trial is retried, at most ``max_retries`` times; after that the trial is
  returned as failed with the reason, e.g. ``"worker died 3 times (max_retries=2): ..."``;
* a driver that dies loses nothing finished: the run loop checkpoints every result as it
  arrives, and ``resume=True`` re-submits only the trials that were in flight.

A factory may build an executor that spreads one worker's trials over its devices (the
JAX trainer on a worker that reserved several GPUs: ``--gpus-per-trial 8``); the worker
then asks it for a one-trial-at-a-time evaluator over the same devices (``as_evaluator()``,
see :class:`~layernas.executors.DeviceParallelExecutor`), so each trial trains
data-parallel over the worker's devices.

Ray is an optional extra (``pip install -e .[ray]``); this module imports it only when a
RayExecutor is built, and neither ``import layernas`` nor ``import layernas.executors``
imports it.

Example:
    >>> import layernas
    >>> from layernas.executors import RayExecutor
    >>> executor = RayExecutor(lambda: MyEvaluator(...), max_in_flight=8, address="auto",
    ...                         num_gpus=0.5)                                 # doctest: +SKIP
    >>> result = layernas.search(space, executor, budget=500, target=target,
    ...                          out_dir="runs/x")                            # doctest: +SKIP
    >>> executor.close()                                                      # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import os
import socket
import time
import warnings
from typing import Any, Callable

from layernas.errors import first_line
from layernas.evaluator import EvalResult, Evaluator, Trial
from layernas.executors.base import check_max_in_flight, evaluate_safely

RAY_MISSING = ("the Ray backend needs Ray, which is not installed; "
               "install it with `pip install -e .[ray]` (or `pip install 'ray[default]>=2.40'`)")


class RayBackendError(RuntimeError):
    """The Ray backend cannot go on (no worker could start, or none could build the evaluator)."""


def import_ray():
    """Import ray, or raise a one-line ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def build_evaluator(evaluator_or_factory: Evaluator | Callable[[], Evaluator]) -> Evaluator:
    """An evaluator instance is returned as is; a class or zero-arg factory is called.

    A factory that returns an executor offering ``as_evaluator()`` (a
    :class:`~layernas.executors.DeviceParallelExecutor` over a worker's devices) gives
    that one-trial-at-a-time evaluator.

    Raises:
      TypeError: when the object is neither, or the factory does not return an evaluator.
    """
    obj = evaluator_or_factory
    if not isinstance(obj, type) and hasattr(obj, "evaluate"):
        return obj
    if callable(obj):
        built = obj()
        if not hasattr(built, "evaluate") and callable(getattr(built, "as_evaluator", None)):
            built = built.as_evaluator()
        if not hasattr(built, "evaluate"):
            factory = getattr(getattr(obj, "func", obj), "__qualname__", type(obj).__name__)  # partial -> func
            raise TypeError(f"evaluator factory {factory} returned a value of type {type(built).__name__}, "
                            f"which has no evaluate(trial) (nor as_evaluator()); expected an evaluator")
        return built
    raise TypeError(f"expected an evaluator with evaluate(trial) or a zero-argument factory, got {obj!r}")


def _check_evaluator_or_factory(obj) -> None:
    if isinstance(obj, type) or callable(obj) or hasattr(obj, "evaluate"):
        return
    raise TypeError(f"expected an evaluator with evaluate(trial) or a zero-argument factory, got {obj!r}")


class TrialWorker:
    """The body of one Ray actor: builds the evaluator once, then evaluates trials.

    Construction never raises: a factory that fails is reported by :meth:`ready`, so the
    driver can stop with the worker's error instead of restarting actors forever.
    """

    def __init__(self, evaluator_or_factory):
        self.evaluator, self.error = None, ""
        try:
            self.evaluator = build_evaluator(evaluator_or_factory)
        except Exception as e:  # reported through ready()
            self.error = first_line(e, with_type=True)

    def ready(self) -> dict:
        """Where this worker runs, and the error building its evaluator ("" if none)."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "error": self.error}

    def evaluate(self, trial: Trial) -> EvalResult:
        return evaluate_safely(self.evaluator, trial)

    def close(self) -> None:
        close = getattr(self.evaluator, "close", None)
        if close:
            close()


@dataclasses.dataclass
class _Worker:
    handle: Any
    ready_ref: Any = None  # pending until the actor has started
    started: bool = False
    trial: Trial | None = None
    where: str = "not started"


class RayExecutor:
    """An Executor that evaluates trials in a pool of Ray actors.

    Args:
      evaluator_or_factory: an evaluator (``evaluate(trial) -> EvalResult``; it must
        pickle with cloudpickle) or a zero-argument callable that builds one inside each
        worker (better for JAX trainers: the model, data and jit caches are built once per
        actor and never pickled). Its module must be importable on every node.
      max_in_flight: the most trials running at once (one actor each). The run loop
        proposes children in batches of this size; a local run with the same value gives
        the same search.
      address: "local" starts a private Ray instance on this machine (shut down by
        :meth:`close`); "auto" joins the cluster started on this machine with ``ray start
        --head`` (an error when none runs); "host:port" joins a remote cluster's head;
        None does what ``ray.init()`` does: ``$RAY_ADDRESS`` if set, else a cluster
        running on this machine, else a new private instance. Ignored when Ray is already
        initialized in this process.
      num_cpus: CPUs each actor reserves.
      num_gpus: GPUs each actor reserves; fractional values (0.25, 0.5) pack several
        trials on one GPU. Ray sets CUDA_VISIBLE_DEVICES for the actor.
      resources: extra custom Ray resources each actor reserves, e.g. ``{"TPU": 4}``.
      max_retries: how many times a trial is re-run after its worker process died; after
        that it is returned as a failed result with the reason.
      runtime_env: Ray runtime environment for the workers (env vars, working_dir, pip).
      init_kwargs: extra keyword arguments for ``ray.init`` (when this class calls it).
      check_resources: raise ValueError when no node of the cluster has the resources one
        trial asks for (they would wait forever). Turn it off on an autoscaling cluster
        that will add such nodes on demand.

    Attributes:
      stats: counters: ``workers_started``, ``worker_deaths``, ``retries``.
    """

    def __init__(
        self,
        evaluator_or_factory: Evaluator | Callable[[], Evaluator],
        max_in_flight: int = 1,
        *,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: dict[str, float] | None = None,
        max_retries: int = 2,
        runtime_env: dict | None = None,
        init_kwargs: dict | None = None,
        check_resources: bool = True,
    ):
        _check_evaluator_or_factory(evaluator_or_factory)
        if max_in_flight is None:
            raise ValueError("max_in_flight=None; expected a positive integer")
        check_max_in_flight(max_in_flight)
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if num_gpus > 1 and num_gpus != int(num_gpus):
            raise ValueError(f"num_gpus above 1 must be a whole number, got {num_gpus!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        ray = import_ray()
        self._ray = ray
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs = dict(init_kwargs or {})
            if address in (None, "local"):
                kwargs.setdefault("include_dashboard", False)
            if runtime_env is not None:
                kwargs["runtime_env"] = runtime_env
            with warnings.catch_warnings():
                # starting Ray's processes is fork + exec, which JAX's fork hook warns about
                # needlessly (the child execs at once and never touches JAX's threads)
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                try:
                    ray.init(address=address, **kwargs)
                except ConnectionError as e:
                    if address != "auto":
                        raise
                    raise ConnectionError("Ray address 'auto' found no running Ray cluster on this machine; start "
                                          "one with `ray start --head`, give its HOST:PORT, or use 'local' for "
                                          "a private instance") from e
            self._owns_ray = True
        if check_resources:
            self._check_resources({"CPU": num_cpus, "GPU": num_gpus, **dict(resources or {})})
        options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0, "max_task_retries": 0}
        if resources:
            options["resources"] = dict(resources)
        if runtime_env is not None and not self._owns_ray:
            options["runtime_env"] = runtime_env
        self._actor_class = ray.remote(TrialWorker).options(**options)
        self._payload = ray.put(evaluator_or_factory)  # shipped once, shared by all actors
        self._workers: list[_Worker] = []
        self._queue: collections.deque[Trial] = collections.deque()
        self._running: dict[Any, _Worker] = {}  # ObjectRef of evaluate() -> its worker
        self._starting: dict[Any, _Worker] = {}  # ObjectRef of ready() -> its worker
        self._deaths: dict[int, list[str]] = {}
        self._done: list[EvalResult] = []
        self._closed = False
        self.stats = {"workers_started": 0, "worker_deaths": 0, "retries": 0}

    # -- the Executor protocol ---------------------------------------------------------

    def submit(self, trial: Trial) -> None:
        """Queue ``trial``; it starts as soon as a worker is free."""
        if self._closed:
            raise RayBackendError("RayExecutor is closed")
        self._queue.append(trial)
        self._dispatch()

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        """Block until at least one trial finishes (or ``timeout`` seconds pass) and
        return every result not returned before, in the order they finished."""
        ray = self._ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._dispatch()
            if self._done:
                done, self._done = self._done, []
                return done
            refs = list(self._running) + list(self._starting)
            if not refs:
                return []
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(refs, num_returns=1, timeout=left)
            if ready:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in ready:
                    if ref in self._starting:
                        self._on_started(ref, self._starting.pop(ref))
                    else:
                        self._on_finished(ref, self._running.pop(ref))
            elif deadline is not None and time.monotonic() >= deadline:
                return []

    def close(self) -> None:
        """Stop every actor, and the local Ray instance if this object started it."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            try:
                self._ray.kill(worker.handle, no_restart=True)
            except Exception:
                pass
        self._workers.clear()
        self._running.clear()
        self._starting.clear()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _check_resources(self, wanted: dict[str, float]) -> None:
        wanted = {k: v for k, v in wanted.items() if v}
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
            return
        have = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(node.items())
                                   if k in wanted) or "none of them" for node in nodes)
        ask = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
        if self._owns_ray:
            self._ray.shutdown()
        raise ValueError(f"no Ray node has the resources one trial asks for ({ask}); the nodes "
                         f"have: {have or 'no live nodes'} (on an autoscaling cluster pass "
                         f"check_resources=False)")

    def _dispatch(self) -> None:
        """Give queued trials to idle started workers; start workers while some are needed."""
        idle = [w for w in self._workers if w.started and w.trial is None]
        while self._queue and idle:
            worker, trial = idle.pop(), self._queue.popleft()
            worker.trial = trial
            self._running[worker.handle.evaluate.remote(trial)] = worker
        starting = sum(1 for w in self._workers if not w.started)
        need = min(len(self._queue) - starting, self.max_in_flight - len(self._workers))
        for _ in range(max(0, need)):
            worker = _Worker(self._actor_class.remote(self._payload))
            worker.ready_ref = worker.handle.ready.remote()
            self._starting[worker.ready_ref] = worker
            self._workers.append(worker)

    def _on_started(self, ref, worker: _Worker) -> None:
        ray = self._ray
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as e:  # died while starting: replace it later
            self._remove(worker)
            self.stats["worker_deaths"] += 1
            if self.stats["worker_deaths"] > (self.max_retries + 1) * self.max_in_flight and \
                    self.stats["workers_started"] == 0:
                raise RayBackendError(f"no Ray worker could start: {first_line(e, with_type=True)}") from None
            return
        worker.where = f"pid {info['pid']} on {info['host']}"
        if info["error"]:
            self.close()
            raise RayBackendError(f"could not build the evaluator in a Ray worker ({worker.where}): "
                               f"{info['error']}")
        worker.started = True
        self.stats["workers_started"] += 1

    def _on_finished(self, ref, worker: _Worker) -> None:
        ray = self._ray
        trial, worker.trial = worker.trial, None
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.LocalRayletDiedError)
        try:
            result = ray.get(ref)
        except died as e:
            self._remove(worker)
            self.stats["worker_deaths"] += 1
            deaths = self._deaths.setdefault(trial.trial_id, [])
            deaths.append(f"{worker.where}: {first_line(e, with_type=True)}")
            if len(deaths) <= self.max_retries:
                self.stats["retries"] += 1
                self._queue.appendleft(trial)
            else:
                self._done.append(EvalResult.failed(
                    trial, f"worker died {len(deaths)} times (max_retries={self.max_retries}); "
                           f"last: {deaths[-1]}"))
            return
        except ray.exceptions.RayError as e:  # e.g. the result could not be unpickled
            self._remove(worker)
            self._done.append(EvalResult.failed(trial, f"Ray error: {first_line(e, with_type=True)}"))
            return
        self._done.append(result)

    def _remove(self, worker: _Worker) -> None:
        try:
            self._ray.kill(worker.handle, no_restart=True)
        except Exception:
            pass
        if worker in self._workers:
            self._workers.remove(worker)


def make_ray_executor(
    evaluator_factory: Evaluator | Callable[[], Evaluator],
    address: str | None = "auto",
    max_concurrent: int = 1,
    *,
    num_gpus_per_trial: float = 0,
    num_cpus_per_trial: float = 1,
    max_retries: int = 2,
    runtime_env: dict | None = None,
) -> RayExecutor:
    """What ``layernas search --backend ray --address A --max-concurrent N`` builds.

    Args:
      evaluator_factory: a zero-argument callable building the evaluator inside each
        worker (e.g. ``functools.partial(TrainerEvaluator, config, space)``), or a
        picklable evaluator.
      address: "auto" (the cluster started on this machine with ``ray start --head``),
        "host:port" (a remote head), "local" (a private Ray instance on this machine,
        stopped when the executor closes), or None (``ray.init()``'s choice: see
        :class:`RayExecutor`).
      max_concurrent: trials in flight at once. Keep it the same when resuming a run.
      num_gpus_per_trial: GPUs per trial (fractional allowed, e.g. 0.5).
      num_cpus_per_trial: CPUs per trial.
      max_retries: re-runs of a trial whose worker died before it is marked failed.
      runtime_env: Ray runtime environment for the workers.
    Returns:
      A RayExecutor; pass it to ``layernas.search`` and ``close()`` it afterwards.
    """
    return RayExecutor(evaluator_factory, max_in_flight=max_concurrent, address=address,
                        num_cpus=num_cpus_per_trial, num_gpus=num_gpus_per_trial,
                        max_retries=max_retries, runtime_env=runtime_env)
