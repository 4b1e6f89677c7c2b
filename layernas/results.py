"""Search results: the best architecture, the cost frontier and the history table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layernas.searchers.base import State
from layernas.target import Target
from layernas.space import Arch, SearchSpace


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

    @property
    def best_arch(self) -> Arch | None:
        return None if self.best is None else tuple(self.best["arch"])

    def summary(self) -> str:
        lines = [f"evaluations: {self.evaluations} ({self.models_trained} distinct models), "
                 f"charged {self.simulated_seconds:,.0f} s, wall {self.wall_seconds:.2f} s"]
        if self.best is None:
            lines.append("no evaluated architecture satisfies the target")
        else:
            b = self.best
            # the search never looks at test numbers; a table may carry one, a trainer has none
            test = "not measured" if b["test"] is None else f"{b['test']:.3f}"
            costs = ", ".join(f"{k}={v:.6g}" for k, v in b["costs"].items())
            lines += [f"best: {b['arch_str']}",
                      f"  validation {b['reward']:.3f}, test {test}",
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
        }


def history_frame(history: list[dict]) -> pd.DataFrame:
    """The committed history as a flat table, with the running best-by-validation."""
    rows = []
    best_reward, best_test = np.nan, np.nan
    for i, h in enumerate(history):
        if h["feasible"] and not (h["reward"] <= best_reward):
            best_reward, best_test = h["reward"], h["test"]
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
    best = None
    for h in history:
        if h["feasible"] and (best is None or h["reward"] > best["reward"]):
            best = h
    if best is not None:
        best = {k: best[k] for k in ("arch", "arch_str", "reward", "test", "costs", "trial_id")}
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
    )
    if out_dir is not None and getattr(record, "writer", True):
        result.history.to_csv(out_dir / "history.csv", index=False)
        result.frontier.to_csv(out_dir / "frontier.csv", index=False)
        (out_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2, default=_jsonable) + "\n")
    return result


def _jsonable(value: Any):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)
