"""The run loop: searcher + executor + budget, checkpointed after every event.

The loop is deliberately thin. It asks the searcher for architectures, gives each one a
trial id and a seed (``trial_seed(run_seed, trial_id)``), submits them to the executor,
and feeds results back to the searcher **in trial-id order**, topping the in-flight set
up after each single commit. Every searcher state is therefore a pure function of the
run's settings and the trial sequence: the order in which a parallel backend returns
results, or a kill and resume at any point, cannot change the answer.

After every submission and every result, the whole run (searcher state, committed
history, trials in flight, results finished but not yet committed) is written to
``checkpoint.json`` atomically (write to a temporary file, fsync, rename). Resuming
re-submits only the trials that were in flight and redoes no finished evaluation.

**Several processes** (a multi-host run joined by ``jax.distributed``): when the executor
says it spans processes (``process_count > 1``, with ``process_index`` and a collective
``gather(obj)``, as :class:`layernas.executors.DistributedExecutor` does), every
process runs this same loop with the same settings and seed, and so proposes the same
trials; the executor splits them among the processes and returns every result to every
process. Only process 0 (the *writer*) touches ``out_dir``: it checks it, reads the
checkpoint to resume from, writes the checkpoint and prints progress. At start-up process
0's checkpoint (or its error) is shipped to every process through ``gather``, so the other
processes never read the run's files and all of them raise the same error, or resume from
the same state. Process 0's settings must equal every other process's (checked at start).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from layernas.evaluator import EvalResult, Trial, trial_seed
from layernas.executors import Executor
from layernas.searchers.base import Searcher, State
from layernas.target import Target
from layernas.units import format_cost
from layernas.space import SearchSpace

CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.json"


class RunError(ValueError):
    """A run that cannot start or resume (bad budget, unreadable or mismatched checkpoint)."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much search to do; the run stops at whichever limit comes first.

    Args:
      evaluations: the most trials to run (each one trains or looks up one model).
      seconds: the most seconds to charge, summed over ``EvalResult.cost_seconds``
        (simulated training time for the NATS tables, wall time for real training).
        Trials already in flight when the limit is reached still finish and count.
    """

    evaluations: int | None = None
    seconds: float | None = None

    def __post_init__(self):
        if self.evaluations is None and self.seconds is None:
            raise RunError("budget needs evaluations or seconds (or both); got neither")
        if self.evaluations is not None and (
            not isinstance(self.evaluations, (int,)) or isinstance(self.evaluations, bool)
            or self.evaluations <= 0
        ):
            raise RunError(f"budget evaluations must be a positive integer, got {self.evaluations!r}")
        if self.seconds is not None and not (
            isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds > 0
        ):
            raise RunError(f"budget seconds must be a positive finite number, got {self.seconds!r}")

    def to_dict(self) -> dict:
        return {"evaluations": self.evaluations, "seconds": self.seconds}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that a kill at any instant leaves either the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(out_dir: Path) -> dict | None:
    """The checkpoint in ``out_dir``, None if there is none; RunError if unreadable."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
        raise RunError(f"cannot read checkpoint {path}: not a version-{CHECKPOINT_VERSION} layernas checkpoint")
    return data


class Progress:
    """One status line: evaluations, charged seconds, best so far. Rewritten in place on a
    terminal; otherwise printed at most every ``interval`` seconds (and at the end)."""

    def __init__(self, stream: TextIO | None = sys.stderr, interval: float = 2.0):
        self.stream = stream
        self.interval = interval
        self._last = 0.0
        self._tty = bool(stream) and hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, line: str, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if self._tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.stream.flush()
        elif (final or now - self._last >= self.interval) and line != getattr(self, "_printed", None):
            self.stream.write(line + "\n")  # (a final line equal to the last one is not repeated)
            self.stream.flush()
            self._last, self._printed = now, line


@dataclasses.dataclass
class RunRecord:
    """What the loop returns: the raw committed history and the final searcher state."""

    history: list[dict]
    state: State
    settings: dict
    wall_seconds: float
    finished: bool
    writer: bool = True


def run_loop(
    space: SearchSpace,
    searcher: Searcher,
    executor: Executor,
    budget: Budget,
    target: Target,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    settings: Mapping[str, Any] | None = None,
    progress: Progress | Callable[[str], None] | None = None,
) -> RunRecord:
    """Run a search until its budget is spent or the searcher has nothing left.

    Args:
      space: the search space (its cost model annotates every result).
      searcher: the search strategy.
      executor: where trials run (see layernas.executors.as_executor).
      budget: when to stop.
      target: the cost target; used to mark which results may be the answer.
      seed: the run's seed: seeds the searcher and, per trial, the evaluator.
      out_dir: where to checkpoint; None keeps everything in memory.
      resume: continue the run checkpointed in ``out_dir``. Without it, an existing
        checkpoint there is an error (nothing already written is overwritten).
      settings: JSON-able description of the run; a resume must have the same settings
        (except the budget, which may be extended).
      progress: a callable taking status lines, or None for silence (always silent on
        processes other than 0).
    Returns:
      A RunRecord, the same on every process of a multi-process run (except
      ``wall_seconds``, which is this process's wall time plus the checkpoint's, and
      ``writer``, true on process 0 only).
    Raises:
      RunError: a budget, checkpoint or settings problem; in a multi-process run every
        process raises the same one.
    """
    settings = json.loads(json.dumps(dict(settings or {}), default=str))
    settings.update({"seed": int(seed), "target": target.to_dict(), "searcher": searcher.name,
                     "space": space.name, "max_in_flight": int(executor.max_in_flight)})
    out = Path(out_dir) if out_dir is not None else None
    processes = int(getattr(executor, "process_count", 1) or 1)
    writer = int(getattr(executor, "process_index", 0) or 0) == 0
    checkpoint, error = None, None
    if writer:
        try:
            checkpoint = _open_run_dir(out, resume)
        except RunError as e:
            error = str(e)
    if processes > 1:
        every = executor.gather({"settings": {**settings, "budget": budget.to_dict()},
                                 "checkpoint": checkpoint, "error": error})
        if every[0]["error"]:
            raise RunError(every[0]["error"])
        for i, other in enumerate(every[1:], start=1):
            if other["settings"] != every[0]["settings"]:
                diffs = [f"{k}: {every[0]['settings'].get(k)!r} vs {other['settings'].get(k)!r}"
                         for k in sorted(set(every[0]["settings"]) | set(other["settings"]))
                         if every[0]["settings"].get(k) != other["settings"].get(k)]
                raise RunError(f"process {i}'s settings differ from process 0's ({'; '.join(diffs)})")
        checkpoint = every[0]["checkpoint"]
    elif error:
        raise RunError(error)

    if checkpoint is not None:
        old = {k: v for k, v in checkpoint["settings"].items() if k != "budget"}
        new = {k: v for k, v in settings.items() if k != "budget"}
        if old != new:
            diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                     for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise RunError(f"cannot resume {out}: settings differ ({'; '.join(diffs)})")
        state = checkpoint["state"]
        history = checkpoint["history"]
        issued = int(checkpoint["issued"])
        in_flight = {t["trial_id"]: Trial.from_dict(t) for t in checkpoint["in_flight"]}
        finished = {r["trial_id"]: EvalResult.from_dict(r) for r in checkpoint["finished"]}
        wall_before = float(checkpoint.get("wall_seconds", 0.0))
    else:
        state = searcher.init(int(seed))
        history, issued, in_flight, finished, wall_before = [], 0, {}, {}, 0.0
    settings["budget"] = budget.to_dict()
    say = (progress if writer else None) or (lambda line, final=False: None)
    started = time.monotonic()
    charged = sum(h["cost_seconds"] for h in history)
    best: dict | None = None
    for h in history:
        if h["feasible"] and (best is None or h["reward"] > best["reward"]):
            best = h

    def save() -> None:
        if out is None or not writer:
            return
        write_json_atomic(out / CHECKPOINT_NAME, {
            "version": CHECKPOINT_VERSION,
            "settings": settings,
            "state": state,
            "issued": issued,
            "history": history,
            "in_flight": [t.to_dict() for t in in_flight.values()],
            "finished": [r.to_dict() for r in finished.values()],
            "wall_seconds": wall_before + time.monotonic() - started,
        })

    def budget_left() -> int:
        """How many more trials may be issued now."""
        if budget.seconds is not None and charged >= budget.seconds:
            return 0
        if budget.evaluations is not None:
            return max(0, budget.evaluations - issued)
        return sys.maxsize

    def top_up() -> None:
        nonlocal state, issued
        n = min(executor.max_in_flight - (issued - len(history)), budget_left())
        if n <= 0:
            return
        archs, state = searcher.propose(state, n)
        for arch in archs[:n]:
            trial = Trial(issued, tuple(arch), trial_seed(seed, issued))
            issued += 1
            in_flight[trial.trial_id] = trial
            executor.submit(trial)

    def status(final: bool = False) -> None:
        line = f"[{space.name}/{searcher.name}] {len(history)} evals"
        if budget.evaluations:
            line += f"/{budget.evaluations}"
        line += f" | {charged:,.0f}"
        line += f"/{budget.seconds:,.0f} s" if budget.seconds else " s"
        if best is not None:
            test = "" if best["test"] is None else f", test {best['test']:.2f}"
            line += (f" | best {best['reward']:.3f}{test} at "
                     f"{target.metric}={format_cost(target.metric, best['costs'][target.metric], space)} "
                     f"({best['arch_str']})")
        else:
            line += " | no feasible architecture yet"
        counts = getattr(progress, "evaluations", None) if writer else None
        if counts is not None:  # a bar (layernas.progress.ProgressBar) also takes the counts
            counts(len(history), budget.evaluations, charged, budget.seconds)
        say(line, final=final)

    def commit_ready() -> None:
        nonlocal state, charged, best
        while len(history) in finished:
            result = finished.pop(len(history))
            state = searcher.update(state, [result])
            costs = dict(result.costs)
            costs.update(space.cost(result.arch))
            charged += float(result.cost_seconds)
            row = {
                "trial_id": result.trial_id,
                "arch": list(result.arch),
                "arch_str": space.arch_to_str(result.arch),
                "reward": result.reward if result.ok else None,
                "test": result.test,
                "cost_seconds": float(result.cost_seconds),
                "cum_seconds": charged,
                "costs": costs,
                "feasible": bool(result.ok and target.feasible(costs)),
                "status": result.status,
                "error": result.error,
                "info": result.info,
            }
            history.append(row)
            if row["feasible"] and (best is None or row["reward"] > best["reward"]):
                best = row
            top_up()
            status()

    start_bar = getattr(progress, "evaluations", None) if writer else None
    if start_bar is not None:  # a bar starts (and times) before the first child trains
        start_bar(len(history), budget.evaluations, charged, budget.seconds)
    for trial in in_flight.values():  # resume: re-dispatch what was running
        if trial.trial_id not in finished:
            executor.submit(trial)
    commit_ready()
    top_up()
    save()
    try:
        while in_flight:
            results = executor.wait()
            for result in results:
                if result.trial_id in in_flight:
                    in_flight.pop(result.trial_id)
                    finished[result.trial_id] = result
            commit_ready()
            save()
    finally:
        save()
    status(final=True)
    done = not in_flight
    return RunRecord(history, state, settings, wall_before + time.monotonic() - started, done, writer)


def _open_run_dir(out: Path | None, resume: bool) -> dict | None:
    """Check ``out`` for a new run or a resume, create it, and return its checkpoint.

    Args:
      out: the run directory, or None (in memory).
      resume: whether a checkpoint is expected.
    Returns:
      the checkpoint to resume from, or None for a new run.
    Raises:
      RunError: ``out`` is a file, already holds a run (without ``resume``), has no
        checkpoint (with ``resume``), or its checkpoint is unreadable.
    """
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        raise RunError(f"output path {out} exists and is not a directory")
    checkpoint = load_checkpoint(out) if out.exists() else None
    if checkpoint is not None and not resume:
        raise RunError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    if checkpoint is None and resume and out.exists() and any(out.iterdir()):
        raise RunError(f"--resume: {out} has no {CHECKPOINT_NAME} to resume from")
    out.mkdir(parents=True, exist_ok=True)
    return checkpoint
