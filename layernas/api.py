"""The library entry point: ``layernas.search``."""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from layernas.evaluator import Evaluator
from layernas.executors import Executor, as_executor, check_max_in_flight
from layernas.results import SearchResult, build_result
from layernas.progress import ProgressBar
from layernas.run import Budget, RunError, run_loop, signals_deferred
from layernas.run_dir import RunLock
from layernas.searchers import SEARCHERS, make_searcher
from layernas.searchers.base import Searcher
from layernas.target import Target
from layernas.space import SearchSpace


def search(
    space: SearchSpace,
    evaluator: Evaluator | Executor,
    budget: Budget | int,
    target: Target | None = None,
    *,
    seed: int = 0,
    searcher: str | Searcher = "layernas",
    searcher_options: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    max_in_flight: int | None = None,
    progress: bool = False,
    settings: Mapping[str, Any] | None = None,
    distributed: bool | None = None,
) -> SearchResult:
    """Search ``space`` for the best architecture under ``target`` within ``budget``.

    Args:
      space: a SearchSpace (see layernas.space).
      evaluator: anything with ``evaluate(trial)`` (table lookup, JAX trainer), or an
        Executor with ``submit``/``wait`` (the Ray backend).
      budget: a Budget, or an int meaning that many evaluations.
      target: the cost target; None means no constraint on the space's first metric.
      seed: seeds the searcher and every trial; same seed, same answer.
      searcher: "layernas" (default), another name from layernas.searchers.SEARCHERS, or a
        ready Searcher.
      searcher_options: keyword options for the named searcher (e.g. num_buckets).
      out_dir: where to checkpoint and write history.csv, frontier.csv and result.json.
      resume: continue the run checkpointed in out_dir.
      max_in_flight: trials in flight at once for a plain evaluator (proposals are made
        in batches of this size; results are identical to a parallel backend's). Default:
        1, or in a multi-process search ``jax.device_count()`` (the trials of one round,
        divided among the processes).
      progress: show progress on stderr (process 0 only): a bar with an ETA on a terminal,
        one line per result otherwise (:class:`layernas.progress.ProgressBar`).
      settings: extra JSON-able settings recorded in (and checked on resume against) the
        checkpoint, such as the dataset or the table used.
      distributed: multi-process search over the processes joined by
        ``jax.distributed.initialize()`` (call it first, in every process). Every process
        calls ``search`` with the same arguments; the plain ``evaluator`` is wrapped in a
        :class:`~layernas.executors.DistributedExecutor`, so each process evaluates
        its round-robin share of every round and all of them get every result; only
        process 0 writes to ``out_dir``, and a resume reads process 0's checkpoint and
        ships it to the others. None (default): on when ``jax.distributed`` is initialized
        with more than one process; True: required (RunError if it is not initialized);
        False: off (each process runs its own search).
    Returns:
      A SearchResult with ``best``, ``frontier`` and ``history`` (a pandas DataFrame);
      in a multi-process search the same on every process except ``wall_seconds``.

    Example:
        >>> import layernas
        >>> from layernas.search_spaces.nats_tss import NatsTss
        >>> from layernas.table_evaluator import TableEvaluator
        >>> from layernas.tables import default_table
        >>> space = NatsTss("cifar10")
        >>> max_flops = space.cost_bounds((), "flops")[1]
        >>> result = layernas.search(space, TableEvaluator(default_table(), "cifar10", space),
        ...                          budget=200, target=layernas.Target("flops", max=0.5 * max_flops))
        >>> result.best["costs"]["flops"] <= 0.5 * max_flops
        True
    """
    _check_arguments(space, evaluator, target, seed, searcher, searcher_options, out_dir, resume, progress,
                     settings, distributed)
    if isinstance(budget, bool) or not isinstance(budget, (Budget, int)):
        raise RunError(f"budget must be a Budget or a positive number of evaluations, got {budget!r}")
    if isinstance(budget, int):
        budget = Budget(evaluations=budget)
    if target is None:
        target = Target(space.cost_metrics[0])
    check_max_in_flight(max_in_flight, RunError)
    if isinstance(searcher, str):
        options = searcher_options_given(searcher, searcher_options)
        strategy = make_searcher(searcher, space, target, **options)
        run_settings = {"searcher_options": options, "searcher_config": dict(strategy.config)}
    else:
        target.check(space)
        strategy = searcher
        run_settings = {"searcher_config": dict(searcher.config)} if searcher.config else {}
    run_settings.update(settings or {})
    executor = _distributed_executor(evaluator, distributed, max_in_flight)
    if executor is None:
        executor = as_executor(evaluator, max_in_flight or 1)
    out = Path(out_dir) if out_dir is not None else None
    # one process per run folder, from the first read to the last result file (a
    # multi-process run locks inside run_loop, where a failure reaches every process)
    single = int(getattr(executor, "process_count", 1) or 1) == 1
    bar = ProgressBar() if progress else None
    with RunLock(out) if out is not None and single else contextlib.nullcontext():
        try:
            record = run_loop(space, strategy, executor, budget, target, seed=seed, out_dir=out,
                              resume=resume, settings=run_settings, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        with signals_deferred():  # the result files and plots are written whole (a Ctrl-C waits)
            return build_result(space, target, record, out)


def _distributed_executor(evaluator, distributed: bool | None, max_in_flight: int | None):
    """A DistributedExecutor over ``evaluator`` for a multi-process search, or None.

    Args:
      evaluator: what :func:`search` was given.
      distributed: :func:`search`'s ``distributed`` argument.
      max_in_flight: trials per round (None: ``jax.device_count()``).
    Returns:
      the executor, or None for a single-process search.
    Raises:
      RunError: ``distributed=True`` without ``jax.distributed.initialize()``, or an
        executor (not a plain evaluator) given for a multi-process search.
    """
    if distributed is False or hasattr(evaluator, "process_count"):
        return None  # off, or already a multi-process executor
    jax = sys.modules.get("jax")  # not imported: jax.distributed cannot be initialized
    initialized = jax is not None and jax.distributed.is_initialized()
    if distributed and not initialized:
        raise RunError("distributed=True needs jax.distributed.initialize() to be called first, in every "
                       "process (the CLI does it with --distributed)")
    if not initialized or (distributed is None and jax.process_count() == 1):
        return None
    if hasattr(evaluator, "submit"):
        raise RunError(f"a multi-process search needs a plain evaluator with evaluate(trial), got the executor "
                       f"{type(evaluator).__name__}; pass the evaluator it wraps")
    from layernas.executors import DistributedExecutor

    # an evaluator placed on a data-parallel mesh trains each trial over all local devices
    return DistributedExecutor(evaluator, max_in_flight, per_device=getattr(evaluator, "placement", None) is None)


def searcher_options_given(name: str, options: Mapping[str, Any] | None) -> dict:
    """The options of searcher ``name`` that differ from its defaults (what a resume compares:
    typing an option's default is the same search as leaving it out).

    Raises:
      ValueError: ``name`` is unknown, or an option is not one of the searcher's.
    """
    import inspect

    if name not in SEARCHERS:
        raise ValueError(f"unknown searcher {name!r}; expected one of {', '.join(sorted(SEARCHERS))}")
    parameters = inspect.signature(SEARCHERS[name]).parameters.values()
    accepted = {p.name: p.default for p in parameters if p.kind == p.KEYWORD_ONLY}
    options = dict(options or {})
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in parameters):
        raise ValueError(f"searcher_options {', '.join(unknown)}: not options of searcher {name!r}, which takes "
                         f"{', '.join(accepted) or 'none'}")
    return {k: v for k, v in options.items() if k not in accepted or not _same(v, accepted[k])}


def _same(value, default) -> bool:
    try:
        return bool(value == default) and type(value) is type(default)
    except (TypeError, ValueError):
        return False


def _check_arguments(space, evaluator, target, seed, searcher, searcher_options, out_dir, resume, progress,
                     settings, distributed) -> None:
    """TypeError/ValueError naming the argument of :func:`search` that has the wrong type."""
    def wrong(name: str, expected: str, value) -> TypeError:
        return TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")

    if not all(hasattr(space, a) for a in ("layers", "cost", "cost_bounds", "cost_metrics")):
        raise wrong("space", "a SearchSpace (layernas.SearchSpace)", space)
    if not (callable(getattr(evaluator, "evaluate", None)) or callable(getattr(evaluator, "submit", None))):
        raise wrong("evaluator", "an Evaluator with evaluate(trial), or an Executor with submit/wait", evaluator)
    if target is not None and not isinstance(target, Target):
        raise wrong("target", "a layernas.Target, e.g. Target('flops', max=100.0), or None", target)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise wrong("seed", "an int", seed)
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    if not isinstance(searcher, (str, Searcher)):
        raise wrong("searcher", f"a name ({', '.join(sorted(SEARCHERS))}) or a Searcher", searcher)
    if searcher_options is not None and not isinstance(searcher_options, Mapping):
        raise wrong("searcher_options", "a mapping of option names to values, or None", searcher_options)
    if searcher_options and isinstance(searcher, Searcher):
        raise ValueError("searcher_options apply to a searcher given by name; a ready Searcher has its options")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise wrong("out_dir", "a path (str or os.PathLike) or None", out_dir)
    if isinstance(out_dir, str) and not out_dir.strip():
        raise ValueError("out_dir must be a directory path, got ''")
    for name, value in (("resume", resume), ("progress", progress)):
        if not isinstance(value, bool):
            raise wrong(name, "True or False", value)
    if resume and out_dir is None:
        raise ValueError("resume=True needs the out_dir of the run to continue")
    if settings is not None and not isinstance(settings, Mapping):
        raise wrong("settings", "a mapping of JSON-able values, or None", settings)
    if distributed is not None and not isinstance(distributed, bool):
        raise wrong("distributed", "True, False or None", distributed)
