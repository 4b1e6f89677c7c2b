"""Seeded comparisons of searchers on a NATS-Bench table, through the one run loop.

This is the library half of ``layernas benchmark nats`` (and of
``benchmarks/nats_comparison.py``, which adds the written summary): many seeded runs of
every searcher, each aiming at the best model under a FLOPs budget (50% and 25% of the
largest model's FLOPs), with the NATS-Bench search protocol:

* search signal: the 200-epoch validation accuracy of ONE seed drawn per query
  (``TableEvaluator``; NATS-Bench queries the 12-epoch schedule, which our table lacks);
* cost: simulated seconds, the architecture's 12-epoch training time (200-epoch time from
  the table x 12/200, ``TableEvaluator(charge_epochs=12)``; the table has no validation-pass
  time, so that part is charged 0). The NATS-Bench tss time budgets (20000 / 40000 /
  120000 s for cifar10 / cifar100 / ImageNet16-120) are in exactly these 12-epoch seconds;
* reported: the 200-epoch test accuracy (mean over seeds) of the best-by-validation
  architecture among the evaluated ones that satisfy the FLOPs constraint, at a grid of
  budget points in simulated seconds and in evaluations. An evaluation counts at time
  ``t`` if its cumulative charge is <= ``t``;
* oracle: the best test accuracy of any architecture satisfying the constraint.

Every searcher gets the same :class:`~layernas.target.Target`. The baselines know the cost
model and never propose an infeasible architecture; LayerNAS evaluates intermediate models
whose unsearched layers keep the default (most expensive) op, which may be over the
budget, cost time, and are never the answer.

Every search is a :func:`layernas.run.run_loop` run in memory (no files), one trial in
flight, so it is exactly ``layernas.search(..., max_in_flight=1)``, trial seeds included.
Nothing here imports matplotlib (until a plot is drawn) or JAX.

Example:
    >>> from layernas import comparison
    >>> points, runs, timing = comparison.run_comparison(
    ...     "nats_tss_200ep.csv", seeds=2, datasets=["cifar10"], fractions=[0.5],
    ...     processes=1)                                                 # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from layernas.executors import as_executor
from layernas.run import Budget, run_loop
from layernas.run_dir import write_atomic
from layernas.searchers import SEARCHERS, make_searcher
from layernas.target import Target

ALGORITHMS = ("layernas", "random", "rea", "reinforce")
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
FRACTIONS = (0.5, 0.25)
# NATS-Bench tss search budgets in 12-epoch simulated seconds (C10 / C100 / IN16).
TSS_TIME_BUDGETS = {"cifar10": 20000.0, "cifar100": 40000.0, "ImageNet16-120": 120000.0}
CHARGE_EPOCHS = 12
EVAL_GRID = (1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300)
TIME_POINTS = 41  # 0, T/40, ..., T
TABLE_METADATA = {"valid_epochs": 200, "test_epochs": 200, "train_time_epochs": 200}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One panel of the comparison: a dataset and a FLOPs budget fraction."""

    dataset: str
    fraction: float
    max_seconds: float
    max_evaluations: int


# Per-process cache: (table path, dataset) -> (space, evaluator). Filled before the pool
# forks, so workers inherit the parsed table.
_CONTEXT: dict = {}


def context(table_path: str | Path, dataset: str):
    """The tss space (from the registry) and the 12-epoch-charging TableEvaluator of one
    dataset (cached per process)."""
    from layernas.registry import make_space
    from layernas.table_evaluator import TableEvaluator
    from layernas.tables import load_table

    key = (str(table_path), dataset)
    if key not in _CONTEXT:
        table_key = ("table", str(table_path))
        if table_key not in _CONTEXT:
            _CONTEXT[table_key] = load_table(table_path, "tss", metadata=TABLE_METADATA)
        space = make_space("nats-tss", dataset)
        _CONTEXT[key] = (space, TableEvaluator(_CONTEXT[table_key], dataset, space,
                                               charge_epochs=CHARGE_EPOCHS))
    return _CONTEXT[key]


def flops_target(space, fraction: float) -> Target:
    """``flops <= fraction * (the largest architecture's FLOPs)``."""
    return Target("flops", max=fraction * space.cost_bounds((), "flops")[1])


def oracle(evaluator, target: Target) -> dict:
    """The best test accuracy among table rows satisfying ``target`` (FLOPs only).

    Returns:
      ``{"test": ..., "arch_str": ..., "feasible": number of feasible rows}``.
    """
    a = evaluator.arrays
    ok = a.flops <= target.max
    row = int(np.flatnonzero(ok)[np.nanargmax(a.test_mean[ok])])
    return {"test": float(a.test_mean[row]), "arch_str": a.arch_str[row], "feasible": int(ok.sum())}


def run_search(algorithm: str, space, evaluator, target: Target, seed: int, max_seconds: float,
               max_evaluations: int, options: dict | None = None) -> dict:
    """One seeded search through the run loop (in memory, one trial in flight), until both
    limits are reached (or the searcher stops).

    Returns:
      a dict of per-evaluation numpy arrays ``cum_seconds``, ``best_valid``, ``best_test``
      (the running best-by-validation feasible architecture; NaN before the first feasible
      one), ``feasible`` (whether each evaluated arch satisfies the target), ``rows``
      (table rows evaluated), and ``finished`` (the searcher ran out of proposals).
    """
    searcher = make_searcher(algorithm, space, target, **(options or {}))
    budget = Budget(evaluations=int(max_evaluations), seconds=float(max_seconds), until="last")
    record = run_loop(space, searcher, as_executor(evaluator, 1), budget, target, seed=seed)
    committed = record.committed   # the columns: no history rows are built
    results, feasible = committed.results, committed.feasible
    # one pass: the running answer as results.best_so_far picks it (feasible, strictly
    # higher reward)
    n = len(results)
    best_valid, best_test = [math.nan] * n, [math.nan] * n
    row_of = evaluator.row
    rows = [row_of(result.arch) for result in results]
    best = None
    for i, (result, ok) in enumerate(zip(results, feasible)):
        if ok and (best is None or result.reward > best.reward):
            best = result
        if best is not None:
            best_valid[i] = best.reward
            test = best.test
            best_test[i] = math.nan if test is None else test
    cum = committed.cum_seconds
    return {"cum_seconds": np.array(cum, float),
            "best_valid": np.array(best_valid, float), "best_test": np.array(best_test, float),
            "feasible": np.array(feasible, bool),
            "rows": np.array(rows, np.int64),
            "finished": bool(record.stopped_early)}


POINT_COLUMNS = ("kind", "point", "best_valid", "best_test", "evaluations", "sim_seconds")


def _grid(setting: Setting) -> tuple[list[str], list[float], list[int], np.ndarray]:
    """The budget points of a setting: kinds, points, evaluation-count indices (before
    clipping to a run's length) and the time points."""
    kinds, points, counts = [], [], []
    for k in EVAL_GRID:
        if k > setting.max_evaluations:
            break
        kinds.append("evaluations")
        points.append(float(k))
        counts.append(k)
    times = np.linspace(0.0, setting.max_seconds, TIME_POINTS)
    return kinds + ["seconds"] * len(times), points + times.tolist(), counts, times


def _budget_columns(trace: dict, grid) -> tuple[list, ...]:
    """:func:`budget_points` as columns (in POINT_COLUMNS order)."""
    kinds, points, counts, times = grid
    cum, valid, test = trace["cum_seconds"], trace["best_valid"], trace["best_test"]
    n = len(cum)
    # a searcher that stopped keeps its last answer
    index = [min(k, n) - 1 for k in counts] + (np.searchsorted(cum, times, side="right") - 1).tolist()
    valid, test, cum = valid.tolist(), test.tolist(), cum.tolist()
    nan = float("nan")
    return (kinds, points, [valid[i] if i >= 0 else nan for i in index],
            [test[i] if i >= 0 else nan for i in index], [i + 1 for i in index],
            [cum[i] if i >= 0 else 0.0 for i in index])


def budget_points(trace: dict, setting: Setting) -> list[dict]:
    """The running best at the grid of evaluation counts and simulated seconds."""
    columns = _budget_columns(trace, _grid(setting))
    return [dict(zip(POINT_COLUMNS, values)) for values in zip(*columns)]


RUN_KEYS = ("algorithm", "dataset", "fraction", "seed")


def _task(args) -> tuple[dict, list[dict], float]:
    table_path, setting, algorithm, seeds, options = args
    start = time.perf_counter()
    space, evaluator = context(table_path, setting.dataset)
    target = flops_target(space, setting.fraction)
    best = oracle(evaluator, target)["test"]
    grid = _grid(setting)
    points: dict[str, list] = {k: [] for k in RUN_KEYS + POINT_COLUMNS}
    runs = []
    for seed in seeds:
        trace = run_search(algorithm, space, evaluator, target, seed, setting.max_seconds,
                           setting.max_evaluations, options.get(algorithm))
        base = {"algorithm": algorithm, "dataset": setting.dataset, "fraction": setting.fraction,
                "seed": seed}
        columns = _budget_columns(trace, grid)
        for key in RUN_KEYS:
            points[key] += [base[key]] * len(columns[0])
        for key, values in zip(POINT_COLUMNS, columns):
            points[key] += values
        in_budget = trace["cum_seconds"] <= setting.max_seconds
        close = np.flatnonzero(trace["best_test"] >= best - 0.5)
        runs.append({**base, "max_seconds": setting.max_seconds,
                     "evaluations_in_budget": int(in_budget.sum()),
                     "distinct_in_budget": len(set(trace["rows"][in_budget].tolist())),
                     "infeasible_in_budget": int((~trace["feasible"][in_budget]).sum()),
                     "evaluations_run": len(trace["rows"]), "finished": trace["finished"],
                     "evals_to_within_0.5": int(close[0] + 1) if len(close) else np.nan,
                     "seconds_to_within_0.5": float(trace["cum_seconds"][close[0]]) if len(close) else np.nan})
    return points, runs, time.perf_counter() - start


def run_comparison(table_path: str | Path, seeds: int = 100,
                   datasets: Sequence[str] = DATASETS, fractions: Sequence[float] = FRACTIONS,
                   algorithms: Sequence[str] = ALGORITHMS, processes: int = 2,
                   max_evaluations: int = 200, options: dict | None = None,
                   time_budgets: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Run every (algorithm, dataset, fraction) for ``seeds`` seeds.

    Args:
      table_path: the compact tss table (CSV or Parquet).
      seeds: runs per algorithm and setting (seeds 0 .. seeds-1).
      datasets, fractions, algorithms: what to run.
      processes: worker processes (fork; each inherits the parsed table).
      max_evaluations: every run also continues to at least this many evaluations (for the
        evaluation-count grid), beyond the time budget.
      options: per-algorithm searcher options, e.g. ``{"layernas": {"num_buckets": 50}}``.
      time_budgets: seconds per dataset (default the NATS-Bench tss budgets).
    Returns:
      ``(points, runs, timing)``: one row per run and budget point; one row per run; and
      where the time went (load, per-algorithm worker seconds, wall).
    """
    table_path = Path(table_path)
    options = dict(options or {})
    budgets = dict(TSS_TIME_BUDGETS, **(time_budgets or {}))
    timing = {}
    start = time.perf_counter()
    for d in datasets:
        context(table_path, d)
    timing["load_table_s"] = time.perf_counter() - start
    tasks = []
    chunk = max(1, -(-seeds // 4))  # 4 chunks per (algorithm, setting) to balance 2 workers
    for d in datasets:
        for f in fractions:
            setting = Setting(d, float(f), budgets[d], max_evaluations)
            for a in algorithms:
                for lo in range(0, seeds, chunk):
                    tasks.append((str(table_path), setting, a, list(range(lo, min(seeds, lo + chunk))), options))
    run_start = time.perf_counter()
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            outputs = pool.map(_task, tasks, chunksize=1)
    else:
        outputs = [_task(t) for t in tasks]
    timing["search_wall_s"] = time.perf_counter() - run_start
    per_algo: dict[str, float] = {}
    for t, (_, _, secs) in zip(tasks, outputs):
        per_algo[t[2]] = per_algo.get(t[2], 0.0) + secs
    timing["worker_seconds_by_algorithm"] = per_algo
    points = pd.DataFrame({k: [v for o in outputs for v in o[0][k]] for k in RUN_KEYS + POINT_COLUMNS})
    runs = pd.DataFrame([r for o in outputs for r in o[1]])
    timing["total_s"] = time.perf_counter() - start
    return points, runs, timing


def oracle_table(table_path, datasets=DATASETS, fractions=FRACTIONS) -> pd.DataFrame:
    """One row per (dataset, fraction): the FLOPs limit and the :func:`oracle`."""
    rows = []
    for d in datasets:
        space, evaluator = context(table_path, d)
        for f in fractions:
            target = flops_target(space, f)
            rows.append({"dataset": d, "fraction": f, "max_mflops": target.max, **oracle(evaluator, target)})
    return pd.DataFrame(rows)


def final_table(points: pd.DataFrame, runs: pd.DataFrame, oracles: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, fraction, algorithm): test accuracy at the final time budget (mean, std,
    25/50/75%), the oracle, and the evaluations needed to come within 0.5 points of it."""
    final = points[(points.kind == "seconds")]
    final = final[final.point == final.groupby(["dataset", "fraction"]).point.transform("max")]
    g = final.groupby(["dataset", "fraction", "algorithm"]).best_test
    table = pd.DataFrame({
        "mean": g.mean(), "std": g.std(), "q25": g.quantile(0.25), "median": g.median(),
        "q75": g.quantile(0.75), "no_answer": g.apply(lambda s: int(s.isna().sum())),
    }).reset_index()
    runs = runs.assign(reached=runs["seconds_to_within_0.5"] <= runs["max_seconds"])
    runs = runs.assign(evals_if_reached=runs["evals_to_within_0.5"].where(runs.reached))
    reach = runs.groupby(["dataset", "fraction", "algorithm"]).agg(
        evals_in_budget=("evaluations_in_budget", "mean"),
        infeasible_evals=("infeasible_in_budget", "mean"),
        **{"reached_0.5": ("reached", "mean"), "median_evals_to_0.5": ("evals_if_reached", "median")},
    ).reset_index()
    table = table.merge(reach, on=["dataset", "fraction", "algorithm"])
    table = table.merge(oracles[["dataset", "fraction", "test"]].rename(columns={"test": "oracle"}),
                        on=["dataset", "fraction"])
    order = {d: i for i, d in enumerate(DATASETS)}
    return table.sort_values(["dataset", "fraction", "algorithm"], key=lambda s: s.map(order) if s.name == "dataset" else (-s if s.name == "fraction" else s)).reset_index(drop=True)


COLORS = {"layernas": "tab:red", "random": "tab:gray", "rea": "tab:blue", "reinforce": "tab:green"}


def plot(points: pd.DataFrame, oracles: pd.DataFrame, path: Path, kind: str = "seconds") -> None:
    """Mean test accuracy vs budget with 25-75% IQR bands; one panel per dataset x fraction.
    Needs matplotlib (imported here, not with the module)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if d in set(points.dataset)]
    fractions = sorted(set(points.fraction), reverse=True)
    fig, axes = plt.subplots(len(fractions), len(datasets), figsize=(4.6 * len(datasets), 3.6 * len(fractions)),
                             squeeze=False)
    sub = points[points.kind == kind]
    for j, d in enumerate(datasets):
        for i, f in enumerate(fractions):
            ax = axes[i][j]
            panel = sub[(sub.dataset == d) & (sub.fraction == f)]
            orc = float(oracles[(oracles.dataset == d) & (oracles.fraction == f)].test.iloc[0])
            lows = []
            for a in [x for x in ALGORITHMS if x in set(panel.algorithm)]:
                runs_of_a = panel[panel.algorithm == a]
                g = runs_of_a.groupby("point").best_test
                mean, q25, q75 = g.mean(), g.quantile(0.25), g.quantile(0.75)  # NaN (no answer yet) skipped
                x = mean.index.to_numpy()
                every = (g.count() == runs_of_a.seed.nunique()).to_numpy()  # every run has an answer
                ax.plot(x, mean.to_numpy(), color=COLORS.get(a), lw=1.2, ls=":")
                ax.plot(x, np.where(every, mean.to_numpy(), np.nan), color=COLORS.get(a), label=a, lw=1.6)
                ax.fill_between(x, q25.to_numpy(), q75.to_numpy(), color=COLORS.get(a), alpha=0.18, lw=0)
                tail = mean.to_numpy()[2 * len(x) // 3:]
                lows.append(np.nanmin(tail) if np.isfinite(tail).any() else orc - 3)
            ax.axhline(orc, color="black", ls="--", lw=1, label="oracle")
            ax.set_ylim(min(lows + [orc - 1.0]) - 0.3, orc + 0.3)
            ax.set_title(f"{d}, FLOPs <= {f:.0%} of max")
            ax.set_xlabel("simulated search time (s, 12-epoch)" if kind == "seconds" else "evaluations")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    runs = int(sub.groupby(["algorithm", "dataset", "fraction"]).seed.nunique().max())
    fig.text(0.5, 0.005, f"Line: the mean over {runs} runs (seeds) of each algorithm; band: the 25-75% range of "
             "those runs. Dotted: not every run has a feasible answer yet, and the mean is over the runs that "
             "have one (the paper's LayerNAS evaluates over-budget children first, so its curve is dotted longest).",
             ha="center", va="bottom", fontsize=9, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_table_path() -> Path | None:
    """``$LAYERNAS_SHARED/data/nats_tss/nats_tss_200ep.csv`` when that variable is set."""
    shared = os.environ.get("LAYERNAS_SHARED")
    return Path(shared) / "data" / "nats_tss" / "nats_tss_200ep.csv" if shared else None


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``layernas benchmark nats`` to ``parser``.

    Example:
        >>> import argparse
        >>> args = add_benchmark_arguments(argparse.ArgumentParser()).parse_args(["--seeds", "5"])
        >>> args.seeds, args.processes, args.out
        (5, 2, 'results/nats')
    """
    parser.add_argument("--table", default=None,
                        help="the compact NATS tss table with 200-epoch columns (CSV or Parquet; "
                             "default $LAYERNAS_SHARED/data/nats_tss/nats_tss_200ep.csv)")
    parser.add_argument("--seeds", type=int, default=100, help="runs per searcher and setting (default 100)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="default: all three")
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS),
                        help="FLOPs budgets as fractions of the largest model's (default 0.5 0.25)")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), help="default: all four")
    parser.add_argument("--out", default="results/nats", help="output folder (default results/nats)")
    parser.add_argument("--preset", default="paper", choices=("paper", "efficient"),
                        help="LayerNAS's preset (default paper: the comparison of the LayerNAS paper; "
                             "benchmarks/nats_ablation.py compares the presets)")
    return parser


def _checked(args) -> Path:
    """The table path of benchmark ``args``; ValueError (one line) for a bad option."""
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds}: expected a positive integer")
    if args.processes < 1:
        raise ValueError(f"--processes {args.processes}: expected a positive integer")
    for d in args.datasets:
        if d not in DATASETS:
            raise ValueError(f"--datasets {d!r}: expected one of {', '.join(DATASETS)}")
    for f in args.fractions:
        if not 0 < f <= 1:
            raise ValueError(f"--fractions {f}: expected a number in (0, 1]")
    for a in args.algorithms:
        if a not in SEARCHERS:
            raise ValueError(f"--algorithms {a!r}: expected one of {', '.join(sorted(SEARCHERS))}")
    table = Path(args.table) if args.table else default_table_path()
    if table is None:
        raise ValueError("--table: give the compact NATS tss table (CSV or Parquet), or set $LAYERNAS_SHARED")
    if not table.is_file():
        raise ValueError(f"--table {table}: no such file")
    return table


def write_benchmark(args, command: str) -> dict:
    """Run the comparison of benchmark ``args`` and write its files into ``args.out``:
    points.parquet, runs.csv, oracle.csv, final.csv, the two plots (when matplotlib is
    importable) and provenance.json.

    Returns:
      ``{"final", "runs", "points", "oracles", "timing", "table", "out", "start"}``.
    """
    start = time.perf_counter()
    table = _checked(args)
    points, runs, timing = run_comparison(table, args.seeds, args.datasets, args.fractions,
                                          args.algorithms, args.processes,
                                          options={"layernas": {"preset": getattr(args, "preset", "paper")}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    oracles = oracle_table(table, args.datasets, args.fractions)
    write_atomic(out / "points.parquet", points.to_parquet(index=False))
    write_atomic(out / "runs.csv", runs.to_csv(index=False))
    write_atomic(out / "oracle.csv", oracles.to_csv(index=False))
    final = final_table(points, runs, oracles)
    write_atomic(out / "final.csv", final.to_csv(index=False))
    timing["tables_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if importlib.util.find_spec("matplotlib") is None:
        timing["plots_s"] = None
    else:
        plot(points, oracles, out / "nats_tss_time.png", "seconds")
        plot(points, oracles, out / "nats_tss_evals.png", "evaluations")
        timing["plots_s"] = time.perf_counter() - t
    timing["wall_s"] = time.perf_counter() - start
    from layernas.provenance import write_provenance

    write_provenance(out, timing["wall_s"], command, timing=timing, table=str(table), seeds=args.seeds,
                     processes=args.processes, charge_epochs=CHARGE_EPOCHS, time_budgets=TSS_TIME_BUDGETS,
                     eval_grid=list(EVAL_GRID), algorithms=list(args.algorithms))
    return {"final": final, "runs": runs, "points": points, "oracles": oracles, "timing": timing,
            "table": table, "out": out, "start": start}


def run_benchmark(args, command: str = "layernas benchmark nats") -> int:
    """``layernas benchmark nats``: :func:`write_benchmark`, then print the final table.

    Returns:
      0 (bad options raise ValueError with one line).
    """
    done = write_benchmark(args, command)
    cols = ["dataset", "fraction", "algorithm", "mean", "std", "oracle", "reached_0.5", "evals_in_budget"]
    print(done["final"][cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in done["timing"].items()},
                     default=str))
    print(f"wrote {done['out']}/ in {done['timing']['wall_s']:.1f} s")
    return 0


__all__ = ["ALGORITHMS", "DATASETS", "FRACTIONS", "TSS_TIME_BUDGETS", "Setting", "context", "flops_target",
           "oracle", "run_search", "budget_points", "run_comparison", "oracle_table", "final_table", "plot",
           "add_benchmark_arguments", "write_benchmark", "run_benchmark"]
