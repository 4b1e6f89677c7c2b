"""The run loop: searcher + executor + budget, commit-or-nothing, resumable at any instant.

The loop is deliberately thin. It asks the searcher for architectures, gives each one a
trial id and a seed (``trial_seed(run_seed, trial_id)``), submits them to the executor,
and feeds results back to the searcher **in trial-id order**, topping the in-flight set
up after each single commit. Every searcher state is therefore a pure function of the
run's settings and the sequence of committed results: the order in which a parallel
backend returns results, or a kill and resume at any point, cannot change the answer.

**Files** (only with ``out_dir``; an in-memory run does no file work at all):

* ``journal.jsonl``, append-only: a header line (the run's settings), then one line per
  session (``{"budget": ...}``, the budget in force from there on) and one line per result
  received (``{"result": ..., "wall": ...}``), in arrival order. Appending a result costs
  one ``write``, whatever the length of the run.
* ``checkpoint.json``, a snapshot written atomically at shutdown and whenever writing it
  costs no more than the work done since the last one (after every result of a slow
  trainer; rarely for table lookups), or after ``max(256, n / 4)`` results of an
  ``n``-result run:
  the searcher state, the committed history, the trials in flight and the results not
  yet committed, and how many journal bytes it holds.

Resuming loads the latest snapshot and replays the journal lines after it through the same
pure steps (``update``, then ``propose`` to top up), so a resumed run is exactly the run
that was interrupted; only the trials that were in flight are submitted again, and no
finished evaluation is redone.

**Commit-or-nothing.** One step (journal the results just received, commit them, top the
in-flight set up) is applied as a whole: SIGINT and SIGTERM are deferred while a step runs
(in the main thread), a kill during the journal write leaves a torn last line that the next
resume ignores, and the snapshot at shutdown is written only from a state between steps.
SIGTERM is handled like Ctrl-C: the loop saves and raises :class:`Terminated` (a
``KeyboardInterrupt``). The run folder is locked (:class:`layernas.run_dir.RunLock`) for
the whole run: a second process gets ``<dir> is in use by PID <pid>``.

**Several processes** (a multi-host run joined by ``jax.distributed``): when the executor
says it spans processes (``process_count > 1``, with ``process_index`` and a collective
``gather(obj)``, as :class:`layernas.executors.DistributedExecutor` does), every
process runs this same loop with the same settings and seed, and so proposes the same
trials; the executor splits them among the processes and returns every result to every
process. Only process 0 (the *writer*) touches ``out_dir``: it locks and checks it, reads
the run to resume, writes the journal and snapshots and prints progress. At start-up
process 0's saved run (or its error) is shipped to every process through ``gather``, so
the other processes never read the run's files and all of them raise the same error, or
resume from the same state. Process 0's settings must equal every other process's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from layernas.evaluator import EvalResult, Trial, fast_builder, trial_seed
from layernas.executors import Executor, SerialExecutor, safe_evaluate
from layernas.results import improves
from layernas.run_dir import RunError, RunLock, fsync_dir, is_bookkeeping, remove_stale_tmp, write_atomic, \
    write_json_atomic
from layernas.searchers.base import Searcher, State, cost_memo, feasibility_check
from layernas.space import SearchSpace
from layernas.target import Target
from layernas.units import format_cost

__all__ = ["Budget", "CommittedTrials", "Progress", "RunError", "RunRecord", "Terminated", "run_loop", "finished_results",
           "write_json_atomic", "terminate_like_interrupt", "signals_deferred", "CHECKPOINT_NAME", "JOURNAL_NAME"]

CHECKPOINT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.json"
JOURNAL_NAME = "journal.jsonl"
SNAPSHOT_EVERY = 256        # journal lines between snapshots (at least; a quarter of the run) ...
SNAPSHOT_OVERHEAD = 1.0     # ... or when the time since the last one is this many times its cost
FSYNC_SECONDS = 1.0         # the journal is fsynced at most this often (a kill loses nothing)

# trial_seed is pure and costs ~15 us; table searches repeat (seed, trial id) pairs a lot.
_trial_seed = functools.lru_cache(maxsize=1 << 16)(trial_seed)


_new_trial = fast_builder(Trial)   # (trial_id, arch, seed) -> Trial, without the frozen __init__'s cost


class Terminated(KeyboardInterrupt):
    """Raised by the run loop when it receives SIGTERM (after saving, as for Ctrl-C)."""


def terminate_like_interrupt() -> None:
    """Make SIGTERM raise :class:`Terminated` in this (main) thread, as Ctrl-C raises
    KeyboardInterrupt, so a command can save and exit cleanly. The run loop does this by
    itself while it runs; a CLI calls it once at start-up."""
    def handle(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, handle)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much search to do.

    Args:
      evaluations: the most trials to run (each one trains or looks up one model).
      seconds: the most seconds to charge, summed over ``EvalResult.cost_seconds``
        (simulated training time for the NATS tables, wall time for real training).
        Trials already in flight when the limit is reached still finish and count.
      until: ``"first"`` (default): stop at whichever limit comes first; ``"last"``: go on
        until every given limit is reached (a benchmark that reports both a time grid and
        an evaluation grid).
    """

    evaluations: int | None = None
    seconds: float | None = None
    until: str = "first"

    def __post_init__(self):
        if self.evaluations is None and self.seconds is None:
            raise RunError("budget needs evaluations or seconds (or both); got neither")
        if self.evaluations is not None and (
            not isinstance(self.evaluations, (int,)) or isinstance(self.evaluations, bool)
            or self.evaluations <= 0
        ):
            raise RunError(f"budget evaluations must be a positive integer, got {self.evaluations!r}")
        if self.seconds is not None and not (
            isinstance(self.seconds, (int, float)) and not isinstance(self.seconds, bool)
            and math.isfinite(self.seconds) and self.seconds > 0
        ):
            raise RunError(f"budget seconds must be a positive finite number, got {self.seconds!r}")
        if self.until not in ("first", "last"):
            raise RunError(f"budget until={self.until!r}; expected 'first' or 'last'")

    def left(self, issued: int, charged: float) -> int:
        """How many more trials may be issued, after ``issued`` trials and ``charged`` seconds."""
        evals_left = None if self.evaluations is None else max(0, self.evaluations - issued)
        if self.until == "last":
            if self.seconds is not None and charged < self.seconds:
                return sys.maxsize
            return 0 if evals_left is None else evals_left
        if self.seconds is not None and charged >= self.seconds:
            return 0
        return sys.maxsize if evals_left is None else evals_left

    def to_dict(self) -> dict:
        d = {"evaluations": self.evaluations, "seconds": self.seconds}
        if self.until != "first":
            d["until"] = self.until
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Budget":
        return cls(d.get("evaluations"), d.get("seconds"), d.get("until", "first"))


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


class CommittedTrials:
    """The committed trials of a run, in trial order, as columns: each one's result, the
    simulated seconds charged up to and including it, and whether it may be the answer
    (it succeeded and satisfies the target). Their history rows (see :class:`RunRecord`)
    are built when first asked for, so a caller that reads the columns (a benchmark of
    thousands of table searches) builds none.

    Args:
      space: the search space (its cost model and arch strings fill the rows).
      target: the cost target (decides ``feasible``).

    Attributes:
      results: the committed :class:`~layernas.evaluator.EvalResult` of every trial (for
        trials restored from a snapshot, rebuilt from their rows).
      cum_seconds: the budget charged after each trial.
      feasible: whether each trial may be the answer.
      best: the index of the answer so far (the first feasible trial of the highest
        reward, as :func:`layernas.results.improves` picks it), or -1 while there is none.
    """

    def __init__(self, space: SearchSpace, target: Target):
        self.space, self.target = space, target
        self.results: list[EvalResult] = []
        self.cum_seconds: list[float] = []
        self.feasible: list[bool] = []
        self.best = -1
        self._best_reward = 0.0
        self._rows: list[dict] = []
        self._described = _descriptions(space)
        self._cost = cost_memo(space)   # the searchers' memo of space.cost, shared
        self._metrics = frozenset(metric for metric, _, _ in target.limits())
        self._feasible = feasibility_check(space, target)

    def __len__(self) -> int:
        return len(self.cum_seconds)

    def add(self, result: EvalResult, cum_seconds: float) -> None:
        """Commit the next trial's result, with the budget charged up to it."""
        feasible = False
        if result.ok:
            space_costs = self._cost(result.arch)
            if self._metrics <= space_costs.keys():
                # the space's costs override the result's in the row, so they decide
                feasible = self._feasible(result.arch)
            else:
                costs = dict(result.costs)
                costs.update(space_costs)
                feasible = bool(self.target.feasible(costs))
        if feasible and (self.best < 0 or result.reward > self._best_reward):
            self.best, self._best_reward = len(self.cum_seconds), result.reward
        self.results.append(result)
        self.cum_seconds.append(cum_seconds)
        self.feasible.append(feasible)

    def rows(self) -> list[dict]:
        """The history rows of every committed trial (built once each; do not modify)."""
        rows = self._rows
        for i in range(len(rows), len(self.results)):
            rows.append(self._row(i))
        return rows

    def _row(self, i: int) -> dict:
        result = self.results[i]
        described = self._described.get(result.arch)
        if described is None:
            described = self._described[result.arch] = (self.space.arch_to_str(result.arch),
                                                         self._cost(result.arch))
        costs = dict(result.costs)
        costs.update(described[1])
        ok = result.ok
        return {
            "trial_id": result.trial_id,
            "arch": list(result.arch),
            "arch_str": described[0],
            "reward": result.reward if ok else None,
            "test": result.test,
            "cost_seconds": float(result.cost_seconds),
            "cum_seconds": self.cum_seconds[i],
            "costs": costs,
            "feasible": self.feasible[i],
            "status": result.status,
            "error": result.error,
            "info": result.info,
        }

    def restore(self, rows: list[dict]) -> None:
        """Start from the rows of a snapshot (replacing everything committed so far).

        Raises:
          KeyError, TypeError, ValueError: a row lacks what a row has.
        """
        self.results, self.cum_seconds, self.feasible, self.best = [], [], [], -1
        for i, row in enumerate(rows):
            cum = float(row["cum_seconds"])
            if improves(row, rows[self.best] if self.best >= 0 else None):
                self.best, self._best_reward = i, row["reward"]
            reward = row.get("reward")
            self.results.append(EvalResult(
                row.get("trial_id", i), tuple(row.get("arch", ())), math.nan if reward is None else reward,
                row.get("cost_seconds", 0.0), row.get("test"), row.get("costs", {}), row.get("status", "ok"),
                row.get("error", ""), row.get("info", {})))
            self.cum_seconds.append(cum)
            self.feasible.append(bool(row["feasible"]))
        self._rows = rows


@dataclasses.dataclass
class RunRecord:
    """What the loop returns: the committed trials and the final searcher state.

    ``history`` is one dict per committed trial, in trial order (``trial_id``, ``arch``,
    ``arch_str``, ``reward``, ``test``, ``cost_seconds``, ``cum_seconds``, ``costs``,
    ``feasible``, ``status``, ``error``, ``info``), built on first use from ``committed``,
    the same trials as columns (:class:`CommittedTrials`).

    ``stopped_early`` is true when the searcher had nothing left to propose before the
    budget was spent (LayerNAS ran out of candidates, random search exhausted the space).
    """

    committed: CommittedTrials
    state: State
    settings: dict
    wall_seconds: float
    finished: bool
    writer: bool = True
    stopped_early: bool = False

    @property
    def history(self) -> list[dict]:
        return self.committed.rows()


class _Signals:
    """Defers SIGINT and SIGTERM while a step runs; raises them between steps.

    Only the main thread can install handlers; elsewhere this does nothing (signals are
    delivered to the main thread only, so a step in another thread is never interrupted).
    A signal whose handler is SIG_IGN (a background job's SIGINT) stays ignored.
    """

    def __init__(self):
        self.depth = 0
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN:
                    self._old[sig] = old
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if self.depth:
            if self.pending is None:
                self.pending = signum
            return
        self._raise(signum)

    @staticmethod
    def _raise(signum: int) -> None:
        if signum == signal.SIGTERM:
            raise Terminated("terminated (SIGTERM)")
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def step(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                self._raise(signum)


@contextlib.contextmanager
def signals_deferred():
    """Defer SIGINT and SIGTERM until the body is done, then raise them
    (KeyboardInterrupt, :class:`Terminated`): for the writing a command does after its
    search, which a signal must not cut in half (main thread only; elsewhere a no-op)."""
    guard = _Signals()
    with guard:
        with guard.step():
            yield


class _Journal:
    """The append-only ``journal.jsonl`` of a run (see the module docstring)."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._synced = time.monotonic()
        self.lines_since_snapshot = 0

    @classmethod
    def create(cls, path: Path, lines: list[dict]) -> "_Journal":
        data = _encode(lines)
        write_atomic(path, data)
        return cls(path, len(data))

    def append(self, lines: list[dict]) -> None:
        data = _encode(lines)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)
        self.lines_since_snapshot += len(lines)
        if time.monotonic() - self._synced >= FSYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self.fd)


def _encode(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


def _read_saved_run(out: Path, repair: bool = False) -> dict | None:
    """The saved run in ``out`` (header, snapshot, journal events), None if there is none.

    Two states a kill can leave are read as the run they belong to: a torn last journal
    line (a kill during its write) is dropped, and a snapshot whose last step never reached
    the journal (a kill between the two writes) supplies that step's lines. With
    ``repair`` (only while holding the folder's lock) the journal file is fixed to match.

    Returns:
      ``{"settings", "snapshot", "events": [(end byte, line)], "journal_bytes"}``, where
      ``snapshot["covered"]`` is the journal byte up to which the snapshot holds the run.
    Raises:
      RunError: unreadable or inconsistent files, naming the file.
    """
    journal = out / JOURNAL_NAME
    snapshot_path = out / CHECKPOINT_NAME
    if not journal.exists():
        if snapshot_path.exists():
            snap = _read_json(snapshot_path)
            raise RunError(f"cannot read checkpoint {snapshot_path}: not a version-{CHECKPOINT_VERSION} "
                           f"layernas checkpoint (version {snap.get('version')!r} without {JOURNAL_NAME})")
        return None
    try:
        data = journal.read_bytes()
    except OSError as e:
        raise RunError(f"cannot read journal {journal}: {e.strerror or e}") from None
    events: list[tuple[int, dict]] = []
    header, good = None, 0
    while good < len(data):
        end = data.find(b"\n", good)
        if end < 0:
            break  # torn last line: the write it belongs to never finished
        try:
            line = json.loads(data[good:end])
            if not isinstance(line, dict):
                raise ValueError("not an object")
        except ValueError as e:
            if data.find(b"\n", end + 1) < 0 and header is not None:
                break  # a torn last line that happens to end in a newline byte
            raise RunError(f"cannot read journal {journal}: line {len(events) + 1}: {e}") from None
        good = end + 1
        if header is None:
            header = line
        else:
            events.append((good, line))
    if header is None or header.get("version") != CHECKPOINT_VERSION or not isinstance(header.get("settings"), dict):
        raise RunError(f"cannot read journal {journal}: not a version-{CHECKPOINT_VERSION} layernas journal")
    content = data[:good]
    snapshot = None
    if snapshot_path.exists():
        snapshot = _read_json(snapshot_path)
        start, tail = snapshot.get("journal_bytes"), snapshot.get("tail", [])
        if snapshot.get("version") != CHECKPOINT_VERSION or not isinstance(start, int) or start > good \
                or not isinstance(tail, list):
            raise RunError(f"cannot read checkpoint {snapshot_path}: not a version-{CHECKPOINT_VERSION} layernas "
                           f"checkpoint of {journal}")
        after = [(end, line) for end, line in events if end > start]
        head = [line for _, line in after[:len(tail)]]
        if head == tail:
            snapshot["covered"] = after[len(tail) - 1][0] if tail else start
        elif head == tail[:len(head)] and len(after) == len(head):
            # killed between writing the snapshot and appending its step to the journal
            content = data[:start] + _encode(tail)
            events = [(end, line) for end, line in events if end <= start]
            offset = start
            for line in tail:
                offset += len(_encode([line]))
                events.append((offset, line))
            snapshot["covered"] = len(content)
        else:
            raise RunError(f"cannot read checkpoint {snapshot_path}: it does not match {journal}")
    if repair and content != data:
        common = 0
        limit = min(len(content), len(data))
        while common < limit and content[common] == data[common]:
            common += 1
        with open(journal, "r+b") as f:
            f.truncate(common)
            f.seek(common)
            f.write(content[common:])
            f.flush()
            os.fsync(f.fileno())
    return {"settings": header["settings"], "snapshot": snapshot, "events": events, "journal_bytes": len(content),
            "snapshot_path": str(snapshot_path)}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"cannot read checkpoint {path}: not a JSON object")
    return data


def finished_results(out_dir: str | Path) -> list[EvalResult]:
    """Every result a run folder holds (committed or waiting for an earlier trial), in
    arrival order; empty if the folder holds no run.

    Raises:
      RunError: the run's files are unreadable.
    """
    saved = _read_saved_run(Path(out_dir)) if Path(out_dir).is_dir() else None
    if saved is None:
        return []
    return [EvalResult.from_dict(e["result"]) for _, e in saved["events"] if "result" in e]


_DESCRIPTIONS: "weakref.WeakKeyDictionary[SearchSpace, dict]" = weakref.WeakKeyDictionary()


def _descriptions(space: SearchSpace) -> dict:
    """``arch -> (space.arch_to_str(arch), space.cost(arch))``, shared by the runs of one
    space object (both are pure functions of the architecture)."""
    try:
        return _DESCRIPTIONS.setdefault(space, {})
    except TypeError:   # a space that cannot be weakly referenced
        return {}


class _Loop:
    """The loop's state and its pure steps (shared by the live run and the replay)."""

    def __init__(self, space: SearchSpace, searcher: Searcher, target: Target, seed: int,
                 max_in_flight: int, budget: Budget):
        self.space, self.searcher, self.target = space, searcher, target
        self.seed, self.max_in_flight, self.budget = int(seed), int(max_in_flight), budget
        self.state: State = searcher.init(int(seed))
        self.issued = 0
        self.in_flight: dict[int, Trial] = {}
        self.finished: dict[int, EvalResult] = {}
        self.committed = CommittedTrials(space, target)
        self.charged = 0.0
        self.new_trials: list[Trial] = []

    @property
    def history(self) -> list[dict]:
        """The committed history rows (see :class:`RunRecord`)."""
        return self.committed.rows()

    @property
    def best(self) -> dict | None:
        """The history row of the answer so far, None while there is none."""
        best = self.committed.best
        return self.history[best] if best >= 0 else None

    def budget_left(self) -> int:
        return self.budget.left(self.issued, self.charged)

    def top_up(self) -> None:
        n = min(self.max_in_flight - (self.issued - len(self.committed.cum_seconds)),
                self.budget.left(self.issued, self.charged))
        if n <= 0:
            return
        archs, self.state = self.searcher.propose(self.state, n)
        for arch in archs[:n]:
            trial = _new_trial(self.issued, arch if type(arch) is tuple else tuple(arch),
                               _trial_seed(self.seed, self.issued))
            self.issued += 1
            self.in_flight[trial.trial_id] = trial
            self.new_trials.append(trial)

    def arrive(self, result: EvalResult) -> None:
        """A result for a trial in flight: keep it, commit what is ready, top up."""
        del self.in_flight[result.trial_id]
        self.finished[result.trial_id] = result
        committed, done = self.committed, self.committed.cum_seconds
        while len(done) in self.finished:
            ready = self.finished.pop(len(done))
            self.state = self.searcher.update(self.state, [ready])
            self.charged += float(ready.cost_seconds)
            committed.add(ready, self.charged)
            self.top_up()

    def replay(self, event: dict) -> None:
        """Apply one journal event, exactly as the live loop applied it."""
        if "budget" in event:
            self.budget = Budget.from_dict(event["budget"])
            self.top_up()
        elif "result" in event:
            result = EvalResult.from_dict(event["result"])
            trial = self.in_flight.get(result.trial_id)
            if trial is None or trial.arch != result.arch:
                raise RunError(f"journal result for trial {result.trial_id} {result.arch} does not match the "
                               f"trials this searcher issues (the run's code or settings changed)")
            self.arrive(result)
        self.new_trials.clear()

    def restore(self, saved: dict) -> float:
        """Load a saved run (snapshot + journal replay); returns the wall seconds so far."""
        snap, events = saved["snapshot"], saved["events"]
        wall = 0.0
        done = 0
        if snap is not None:
            try:
                self.state = snap["state"]
                if not isinstance(snap["issued"], int) or isinstance(snap["issued"], bool):
                    raise TypeError(f"issued is {snap['issued']!r}, expected an integer")
                self.issued = snap["issued"]
                self.in_flight = {t["trial_id"]: Trial.from_dict(t) for t in snap["in_flight"]}
                self.finished = {r["trial_id"]: EvalResult.from_dict(r) for r in snap["finished"]}
                self.budget = Budget.from_dict(snap["budget"])
                wall = float(snap.get("wall_seconds", 0.0))
                history = snap["history"]
                if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
                    raise TypeError("history is not a list of rows")
                self.committed.restore(history)
                if history:
                    self.charged = self.committed.cum_seconds[-1]
                done = sum(1 for end, _ in events if end <= snap["covered"])
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise RunError(f"cannot read checkpoint {saved.get('snapshot_path', CHECKPOINT_NAME)}: "
                               f"{type(e).__name__}: {e}") from None
        try:
            for _, event in events[done:]:
                self.replay(event)
                wall = max(wall, float(event.get("wall", 0.0)))
        except (KeyError, TypeError, AttributeError) as e:
            raise RunError(f"cannot read journal: {type(e).__name__}: {e}") from None
        return wall

    def snapshot(self, journal_bytes: int, wall: float, tail: list[dict]) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "journal_bytes": journal_bytes,
            "tail": tail,
            "state": self.state,
            "issued": self.issued,
            "committed": len(self.committed),
            "history": self.history,
            "in_flight": [t.to_dict() for t in self.in_flight.values()],
            "finished": [r.to_dict() for r in self.finished.values()],
            "budget": self.budget.to_dict(),
            "wall_seconds": wall,
        }


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
      out_dir: the run folder (locked for the run; journal and snapshots); None keeps
        everything in memory and touches no file.
      resume: continue the run saved in ``out_dir``. Without it, an existing run there is
        an error (nothing already written is overwritten).
      settings: JSON-able description of the run; a resume must have the same settings
        (except the budget, which may be extended).
      progress: a callable taking status lines, or None for silence (always silent on
        processes other than 0).
    Returns:
      A RunRecord, the same on every process of a multi-process run (except
      ``wall_seconds``, which is this process's wall time plus the saved run's, and
      ``writer``, true on process 0 only).
    Raises:
      RunError: a budget, folder or settings problem; in a multi-process run every
        process raises the same one.
      KeyboardInterrupt: Ctrl-C, after saving every committed result (:class:`Terminated`
        for SIGTERM).
    """
    settings = json.loads(json.dumps(dict(settings or {}), default=str))
    settings.update({"seed": int(seed), "target": target.to_dict(), "searcher": searcher.name,
                     "space": space.name, "max_in_flight": int(executor.max_in_flight)})
    settings.pop("budget", None)
    out = Path(out_dir) if out_dir is not None else None
    processes = int(getattr(executor, "process_count", 1) or 1)
    writer = int(getattr(executor, "process_index", 0) or 0) == 0
    with contextlib.ExitStack() as stack:
        saved, error = None, None
        if writer and out is not None:
            try:
                if out.exists() and not out.is_dir():
                    raise RunError(f"output path {out} exists and is not a directory")
                stack.enter_context(RunLock(out))
                saved = _open_run_dir(out, resume)
            except RunError as e:
                error = str(e)
        if processes > 1:
            every = executor.gather({"settings": {**settings, "budget": budget.to_dict()},
                                     "checkpoint": saved, "error": error})
            if every[0]["error"]:
                raise RunError(every[0]["error"])
            for i, other in enumerate(every[1:], start=1):
                if other["settings"] != every[0]["settings"]:
                    diffs = [f"{k}: {every[0]['settings'].get(k)!r} vs {other['settings'].get(k)!r}"
                             for k in sorted(set(every[0]["settings"]) | set(other["settings"]))
                             if every[0]["settings"].get(k) != other["settings"].get(k)]
                    raise RunError(f"process {i}'s settings differ from process 0's ({'; '.join(diffs)})")
            saved = every[0]["checkpoint"]
        elif error:
            raise RunError(error)
        if saved is not None:
            _check_resumed_settings(out, saved["settings"], settings, searcher.added_options)
        files = writer and out is not None
        record = _run(space, searcher, executor, budget, target, int(seed), out if files else None,
                      saved, settings, (progress if writer else None))
        record.writer = writer
        return record


def _check_resumed_settings(out: Path | None, old: dict, new: dict,
                            added_options: Mapping[str, Any] | None = None) -> None:
    """RunError unless a resume's ``new`` settings are those the run was started with.

    ``searcher_config`` (the searcher's resolved options) is compared option by option,
    in place of the options as typed, so a changed default names the option and how to
    keep the run's value, and typing a default is the same run as leaving it out. A run
    written before it was recorded (or by a searcher without one) is checked on the
    options as typed. An option of ``added_options`` (see
    :class:`~layernas.searchers.base.Searcher`) that the recorded config lacks is read as
    the value given there.
    """
    # the resolved options decide; the options as typed only where they were not recorded
    ignored = "searcher_options" if old.get("searcher_config") else "searcher_config"
    old = {k: v for k, v in old.items() if k != ignored}
    new = {k: v for k, v in new.items() if k != ignored}
    if old.get("searcher_config") and added_options:
        old["searcher_config"] = {**added_options, **old["searcher_config"]}
    if old == new:
        return
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
             for k in sorted(set(old) | set(new)) if k != "searcher_config" and old.get(k) != new.get(k)]
    was, now = old.get("searcher_config") or {}, new.get("searcher_config") or {}
    changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    if changed:
        diffs.append("searcher option " + ", ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in changed))
        if not diffs[:-1] and all(k in was for k in changed):
            keep = ", ".join(f"{k}={was[k]!r}" for k in changed)
            flags = " ".join(f"--searcher-option {k}={json.dumps(was[k])}" for k in changed)
            diffs[-1] += (f"; to continue the run as it was started, pass the searcher option(s) {keep} "
                          f"(CLI: {flags})")
    raise RunError(f"cannot resume {out}: settings differ ({'; '.join(diffs)})")


def _run(space, searcher, executor, budget, target, seed, out, saved, settings, say) -> RunRecord:
    """The loop proper; ``out`` is None when this process writes no files."""
    loop = _Loop(space, searcher, target, seed, executor.max_in_flight, budget)
    wall_before = loop.restore(saved) if saved is not None else 0.0
    started = time.monotonic()

    def wall() -> float:
        return wall_before + time.monotonic() - started

    def status(final: bool = False) -> None:
        if say is None:
            return
        line = f"[{space.name}/{searcher.name}] {len(loop.committed)} evals"
        if budget.evaluations:
            line += f"/{budget.evaluations}"
        line += f" | {loop.charged:,.0f}"
        line += f"/{budget.seconds:,.0f} s" if budget.seconds else " s"
        best = loop.best
        if best is not None:
            test = "" if best["test"] is None else f", test {best['test']:.2f}"
            line += (f" | best {best['reward']:.3f}{test} at "
                     f"{target.metric}={format_cost(target.metric, best['costs'][target.metric], space)} "
                     f"({best['arch_str']})")
        else:
            line += " | no feasible architecture yet"
        counts = getattr(say, "evaluations", None)
        if counts is not None:  # a bar (layernas.progress.ProgressBar) also takes the counts
            counts(len(loop.committed), budget.evaluations, loop.charged, budget.seconds)
        say(line, final=final)

    start_bar = getattr(say, "evaluations", None)
    if start_bar is not None:  # a bar starts (and times) before the first child trains
        start_bar(len(loop.committed), budget.evaluations, loop.charged, budget.seconds)
    if out is None:
        _drive_in_memory(loop, executor, budget, status)
    else:
        _drive_with_files(loop, executor, budget, out, saved, settings, wall, status)
    status(final=True)
    return RunRecord(loop.committed, loop.state, {**settings, "budget": budget.to_dict()}, wall(),
                     not loop.in_flight, stopped_early=not loop.in_flight and loop.budget_left() > 0)


def _drive_in_memory(loop: _Loop, executor, budget: Budget, status) -> None:
    loop.budget = budget
    if type(executor) is SerialExecutor:
        _drive_serial(loop, executor.evaluator, status)
        return
    loop.top_up()
    for trial in loop.in_flight.values():
        executor.submit(trial)
    loop.new_trials.clear()
    while loop.in_flight:
        for result in executor.wait():
            if result.trial_id in loop.in_flight:
                loop.arrive(result)
        for trial in loop.new_trials:
            executor.submit(trial)
        loop.new_trials.clear()
        status()


def _drive_serial(loop: _Loop, evaluator, status) -> None:
    """:func:`_drive_in_memory` for a :class:`SerialExecutor`, without its queue: the same
    trials, evaluated one at a time in the order they are issued (the order the executor
    would run them in) through the same guard (:func:`safe_evaluate`), so the same run."""
    evaluate = safe_evaluate(evaluator)
    loop.top_up()
    pending = collections.deque(loop.in_flight.values())
    new_trials = loop.new_trials
    new_trials.clear()
    arrive = loop.arrive
    while pending:
        arrive(evaluate(pending.popleft()))
        if new_trials:
            pending.extend(new_trials)
            new_trials.clear()
        status()


def _drive_with_files(loop: _Loop, executor, budget: Budget, out: Path, saved, settings, wall, status) -> None:
    """The loop with its run folder: every step is journaled; a step is also snapshotted
    when that costs at most ``1 / SNAPSHOT_OVERHEAD`` times the time since the last snapshot
    (so slow results are snapshotted one by one, fast lookups rarely), or when the journal
    has grown by a quarter of the run. A snapshotting step writes the snapshot (with the
    step's lines as its ``tail``) before appending those lines: a kill between the two
    leaves a snapshot that is ahead, which the next resume completes the journal from."""
    signals = _Signals()
    journal: _Journal | None = None
    clean = False   # the in-memory state is between steps (safe to snapshot)
    last_end, last_cost = time.monotonic(), 0.0

    def snapshot(tail: list[dict]) -> None:
        nonlocal last_end, last_cost
        began = time.monotonic()
        journal.sync()
        write_json_atomic(out / CHECKPOINT_NAME, loop.snapshot(journal.size, wall(), tail))
        journal.lines_since_snapshot = -len(tail)
        last_end = time.monotonic()
        last_cost = last_end - began

    def due() -> bool:
        return (time.monotonic() - last_end >= SNAPSHOT_OVERHEAD * last_cost
                or journal.lines_since_snapshot >= max(SNAPSHOT_EVERY, len(loop.committed) // 4))

    with signals:
        try:
            with signals.step():
                start = {"budget": budget.to_dict()}
                if saved is None:
                    journal = _Journal.create(out / JOURNAL_NAME, [
                        {"version": CHECKPOINT_VERSION, "settings": settings}, start])
                else:
                    journal = _Journal(out / JOURNAL_NAME, saved["journal_bytes"])
                    journal.append([start])
                loop.replay(start)
                for trial in loop.in_flight.values():   # resume: re-dispatch what was running
                    executor.submit(trial)
                clean = True
            status()
            while loop.in_flight:
                results = executor.wait()
                with signals.step():
                    clean = False
                    fresh = [r for r in results if r.trial_id in loop.in_flight]
                    if fresh:
                        now = wall()
                        lines = [{"result": r.to_dict(), "wall": now} for r in fresh]
                        for result in fresh:
                            loop.arrive(result)
                        if due():
                            snapshot(lines)
                        journal.append(lines)
                        for trial in loop.new_trials:
                            executor.submit(trial)
                        loop.new_trials.clear()
                    clean = True
                status()
        finally:
            if journal is not None:
                with signals.step():
                    try:
                        if clean:
                            snapshot([])
                    finally:
                        journal.close()


def _open_run_dir(out: Path, resume: bool) -> dict | None:
    """Check the locked folder ``out`` for a new run or a resume; return the saved run.

    Args:
      out: the run folder (it exists and this process holds its lock).
      resume: whether a saved run is expected.
    Returns:
      the saved run to resume from (see :func:`_read_saved_run`), or None for a new run.
    Raises:
      RunError: ``out`` already holds a run (without ``resume``), holds other files but
        no run (with ``resume``), or its files are unreadable.
    """
    remove_stale_tmp(out)   # left by a process killed while writing; we hold the lock
    saved = _read_saved_run(out, repair=True)
    if saved is not None and not resume:
        raise RunError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
    if saved is None and resume and any(not is_bookkeeping(p) for p in out.iterdir()):
        raise RunError(f"--resume: {out} has no {JOURNAL_NAME} (no saved search) to resume from")
    fsync_dir(out)
    return saved
