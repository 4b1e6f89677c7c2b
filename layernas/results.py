"""Search results: the best architecture, the cost frontier and the history table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layernas.run_dir import write_atomic
from layernas.searchers.base import State
from layernas.target import Target
from layernas.space import Arch, SearchSpace


def improves(row: dict, best: dict | None) -> bool:
    """Whether a history row becomes the answer over ``best``: it satisfies the target and
    has a strictly higher reward (so the first of equal rewards stays the answer).

    Example:
        >>> improves({"feasible": True, "reward": 71.0}, {"feasible": True, "reward": 70.5})
        True
    """
    return bool(row["feasible"]) and (best is None or row["reward"] > best["reward"])


def best_so_far(history: list[dict]) -> list[int]:
    """For every prefix of ``history``, the index of its answer (the best-by-validation row
    that satisfies the target), or -1 while there is none.

    Example:
        >>> best_so_far([{"feasible": False, "reward": 90.0}, {"feasible": True, "reward": 70.0},
        ...              {"feasible": True, "reward": 72.0}, {"feasible": True, "reward": 72.0}])
        [-1, 1, 2, 2]
    """
    out, best = [], -1
    for i, row in enumerate(history):
        if improves(row, history[best] if best >= 0 else None):
            best = i
        out.append(best)
    return out


@dataclasses.dataclass
class SearchResult:
    """The outcome of ``layernas.search``.

    Attributes:
      best: the best architecture by the search signal (validation) among those that
        satisfy the target: a dict with arch, arch_str, reward, test and costs; None if no
        evaluated architecture satisfied it.
      frontier: a DataFrame with the best architecture per cost bucket of the target
        metric (respecting the caps), and a ``pareto`` column marking rows that no cheaper
        row beats.
      history: one row per trial, in trial order, with the running best
        (``best_reward``, and ``best_test``: the test accuracy of the best-by-validation
        feasible architecture so far).
      models_trained: distinct architectures evaluated (table lookups or trainings).
      evaluations: trials run.
      simulated_seconds: seconds charged to the budget.
      wall_seconds: real time spent, over all sessions of a resumed run.
      state: the searcher's final state.
      settings: the run's settings, as checkpointed.
      out_dir: where the run wrote its files (None if in memory).
      stopped_early: the searcher had nothing left to propose before the budget was spent.
      budget_evaluations: the run's evaluation budget (None if it had none).
    """

    best: dict | None
    frontier: pd.DataFrame
    history: pd.DataFrame
    models_trained: int
    evaluations: int
    simulated_seconds: float
    wall_seconds: float
    state: State
    settings: dict
    out_dir: Path | None = None
    stopped_early: bool = False
    budget_evaluations: int | None = None

    @property
    def best_arch(self) -> Arch | None:
        return None if self.best is None else tuple(self.best["arch"])

    def summary(self) -> str:
        from layernas.units import charged_meaning, format_cost, reward_meaning

        space = self.settings.get("space", "")
        lines = [f"evaluations: {self.evaluations} ({self.models_trained} distinct models), "
                 f"charged {self.simulated_seconds:,.0f} s ({charged_meaning(self.settings)}), "
                 f"wall {self.wall_seconds:.2f} s"]
        if self.stopped_early:
            of = f" of {self.budget_evaluations}" if self.budget_evaluations else ""
            lines.append(f"the searcher stopped after {self.evaluations}{of} evaluations: it had nothing "
                         f"left to propose (every candidate was evaluated)")
        status = self.history["status"] if "status" in self.history else pd.Series([], dtype=object)
        if len(status) and (status != "ok").all():
            errors = list(dict.fromkeys(e for e in self.history["error"] if isinstance(e, str) and e))
            lines.append(f"every trial failed ({self.evaluations} of {self.evaluations}), so nothing was compared "
                         f"with the target; first errors: "
                         + ("; ".join(errors[:3]) if errors else "none recorded"))
        elif self.best is None:
            lines.append("no evaluated architecture satisfies the target")
        else:
            b = self.best
            # the search never looks at test numbers; a table may carry one, a trainer has none
            meaning = reward_meaning(self.settings)
            accuracy = meaning.startswith("validation accuracy")
            test = "not measured" if b["test"] is None else f"{b['test']:.3f}" + (" %" if accuracy else "")
            reward = (f"validation accuracy {b['reward']:.3f} %" if accuracy
                      else f"reward {b['reward']:.3f} (= {meaning})")
            costs = ", ".join(f"{k}={format_cost(k, v, space)}" for k, v in b["costs"].items())
            lines += [f"best: {b['arch_str']}",
                      f"  {reward}, test{' accuracy' if accuracy else ''} {test}",
                      f"  costs: {costs}"]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "best": self.best,
            "frontier": json.loads(self.frontier.to_json(orient="records")),
            "models_trained": self.models_trained,
            "evaluations": self.evaluations,
            "simulated_seconds": self.simulated_seconds,
            "wall_seconds": self.wall_seconds,
            "settings": self.settings,
            "stopped_early": self.stopped_early,
        }


def history_frame(history: list[dict]) -> pd.DataFrame:
    """The committed history as a flat table, with the running best-by-validation."""
    rows = []
    for i, (h, b) in enumerate(zip(history, best_so_far(history))):
        best_reward = history[b]["reward"] if b >= 0 else np.nan
        best_test = history[b]["test"] if b >= 0 else np.nan
        row = {k: h[k] for k in ("trial_id", "arch_str", "reward", "test", "cost_seconds",
                                 "cum_seconds", "feasible", "status", "error")}
        row["evaluation"] = i + 1
        for k in ("child", "training_seed"):  # a child store says trained/reused and the seed drawn
            if k in h.get("info", {}):
                row[k] = h["info"][k]
        row.update({f"cost_{k}": v for k, v in h["costs"].items()})
        row["best_reward"] = best_reward
        row["best_test"] = np.nan if best_test is None else best_test
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not rows:
        frame = pd.DataFrame(columns=["trial_id", "arch_str", "reward", "test", "evaluation"])
    for col in ("reward", "test"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def frontier_frame(space: SearchSpace, history: list[dict], target: Target,
                   num_buckets: int = 20) -> pd.DataFrame:
    """Best architecture per equal-width cost bucket of ``target.metric`` over the space's
    cost range, among evaluated architectures that respect the target's caps."""
    caps_only = Target(target.metric, caps=target.caps)
    lo, hi = space.cost_bounds((), target.metric)
    edges = np.linspace(lo, hi, num_buckets + 1)
    best: dict[int, dict] = {}
    seen: set[str] = set()
    for h in history:
        if h["reward"] is None or h["status"] != "ok" or h["arch_str"] in seen:
            continue
        if not caps_only.feasible(h["costs"]):
            continue
        seen.add(h["arch_str"])
        cost = h["costs"][target.metric]
        b = int(np.clip(np.searchsorted(edges[1:-1], cost, side="right"), 0, num_buckets - 1))
        if b not in best or h["reward"] > best[b]["reward"]:
            best[b] = h
    rows = []
    for b in sorted(best):
        h = best[b]
        rows.append({"bucket": b, "bucket_lo": edges[b], "bucket_hi": edges[b + 1],
                     "arch_str": h["arch_str"], target.metric: h["costs"][target.metric],
                     "reward": h["reward"], "test": h["test"],
                     "in_target": target.feasible(h["costs"])})
    frame = pd.DataFrame(rows, columns=["bucket", "bucket_lo", "bucket_hi", "arch_str",
                                        target.metric, "reward", "test", "in_target"])
    running = -np.inf
    pareto = []
    for reward in frame["reward"]:
        pareto.append(bool(reward > running))
        running = max(running, reward)
    frame["pareto"] = pareto
    return frame


def build_result(space: SearchSpace, target: Target, record, out_dir: Path | None) -> SearchResult:
    """Turn a RunRecord into a SearchResult.

    Args:
      space: the searched space.
      target: the run's target.
      record: the :class:`~layernas.run.RunRecord` of the run loop.
      out_dir: the run directory; history.csv, frontier.csv and result.json are written
        there when it is set and ``record.writer`` is true (process 0 of a multi-process
        run; the other processes return the same result without writing).
    Returns:
      the SearchResult.
    """
    history = record.history
    answers = best_so_far(history)
    best = None
    if answers and answers[-1] >= 0:
        best = {k: history[answers[-1]][k] for k in ("arch", "arch_str", "reward", "test", "costs", "trial_id")}
    result = SearchResult(
        best=best,
        frontier=frontier_frame(space, history, target),
        history=history_frame(history),
        models_trained=len({h["arch_str"] for h in history}),
        evaluations=len(history),
        simulated_seconds=float(sum(h["cost_seconds"] for h in history)),
        wall_seconds=float(record.wall_seconds),
        state=record.state,
        settings=record.settings,
        out_dir=out_dir,
        stopped_early=bool(getattr(record, "stopped_early", False)),
        budget_evaluations=(record.settings.get("budget") or {}).get("evaluations"),
    )
    if out_dir is not None and getattr(record, "writer", True):
        write_atomic(out_dir / "history.csv", result.history.to_csv(index=False))
        write_atomic(out_dir / "frontier.csv", result.frontier.to_csv(index=False))
        write_atomic(out_dir / "result.json", json.dumps(result.to_json(), indent=2, default=_jsonable) + "\n")
        from layernas.report import write_run_report  # plots + report.html; matplotlib only now

        write_run_report(out_dir)
    return result


def _jsonable(value: Any):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)
