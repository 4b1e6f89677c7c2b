"""Final answers of the committed NATS-Bench tss comparison, read from its per-run files.

``benchmarks/nats_comparison.py`` reports "runs within 0.5 of oracle" as the runs whose
answer came within 0.5 points of the oracle *at any point* inside the time budget. An
answer is the best-by-validation architecture so far, so its test accuracy can fall
again after it got close. This script counts the *final* answers instead (the answer at
the end of the time budget), and adds three facts the write-up relies on:

* how many evaluations LayerNAS needs to finish (``evaluations_run``) against how many
  fit in the time budget, and whether its mean curve still rises at the end of the budget;
* how many evaluations of REA and REINFORCE repeat an architecture they had already paid
  for (LayerNAS and random search never repeat one);
* the largest point of the evaluation-count grid that is in the data.

It reads ``results/nats/points.parquet``, ``runs.csv`` and ``oracle.csv`` and writes
``final_answers.csv`` and ``final_answers.md`` beside them (about 2 s)::

    python benchmarks/nats_final_answers.py                 # results/nats/
    python benchmarks/nats_final_answers.py --results DIR   # another comparison's output
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.5  # test-accuracy points from the oracle


def final_answers(points: pd.DataFrame, runs: pd.DataFrame, oracle: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, fraction, algorithm): final-answer and repeat statistics.

    Args:
      points: ``points.parquet`` (every run at every budget point; ``kind`` is
        "seconds" or "evaluations").
      runs: ``runs.csv`` (one row per run, with ``max_seconds``, ``evaluations_in_budget``,
        ``distinct_in_budget``, ``evaluations_run`` and ``seconds_to_within_0.5``, the charged
        time at which the run's answer first came within 0.5 of the oracle).
      oracle: ``oracle.csv`` (best feasible test accuracy per dataset and fraction).
    Returns:
      a DataFrame with the fraction of runs whose final answer is within TOLERANCE of the
      oracle (``final_within``), the same over any point in the budget (``ever_within``),
      runs without an answer, mean evaluations needed (``evaluations_run``) and inside the
      budget, the mean fraction of repeated evaluations, and the mean best test accuracy at
      90% and 100% of the time budget (``mean_at_90pct``, ``mean_at_budget``).
    """
    timed = points[points["kind"] == "seconds"]
    rows = []
    for (dataset, fraction, algorithm), group in runs.groupby(["dataset", "fraction", "algorithm"], sort=False):
        budget = float(group["max_seconds"].iloc[0])
        best = float(oracle[(oracle["dataset"] == dataset) & (oracle["fraction"] == fraction)]["test"].iloc[0])
        mine = timed[(timed["dataset"] == dataset) & (timed["fraction"] == fraction)
                     & (timed["algorithm"] == algorithm) & (timed["point"] <= budget)]
        at_budget = mine[mine["point"] == budget].set_index("seed")["best_test"]
        near_end = mine[mine["point"] <= 0.9 * budget]
        at_90 = near_end[near_end["point"] == near_end["point"].max()].set_index("seed")["best_test"]
        rows.append({
            "dataset": dataset, "fraction": fraction, "algorithm": algorithm, "runs": len(group),
            "oracle": best,
            "final_within": float((best - at_budget <= TOLERANCE).mean()),
            "ever_within": float((group["seconds_to_within_0.5"] <= budget).mean()),
            "no_answer": int(at_budget.isna().sum()),
            "evaluations_run": float(group["evaluations_run"].mean()),
            "evaluations_in_budget": float(group["evaluations_in_budget"].mean()),
            "repeated_fraction": float((1 - group["distinct_in_budget"] / group["evaluations_in_budget"]).mean()),
            "mean_at_90pct": float(at_90.mean()),
            "mean_at_budget": float(at_budget.mean()),
        })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, grid_max: float, seconds: float, command: str) -> str:
    """The summary written to ``final_answers.md``."""
    lines = [
        "# NATS-Bench tss comparison: final answers",
        "",
        f"Made by `{command}` from the committed `points.parquet`, `runs.csv` and `oracle.csv` "
        f"in {seconds:.1f} s wall.",
        "",
        f"'final within {TOLERANCE}': fraction of runs whose answer at the end of the time budget "
        f"is within {TOLERANCE} test-accuracy points of the oracle; 'ever within': the same at any "
        "point inside the budget (what `summary.md` reports). 'evals needed': evaluations the "
        "algorithm runs before it stops (LayerNAS stops when no candidate is left; the driver "
        "stops a baseline once it has both 200 evaluations and its time budget spent); 'in budget': those that fit in the time budget. 'repeated': mean fraction "
        "of the evaluations in budget that re-evaluate (and pay again for) an architecture the "
        "run had already evaluated. 'mean at 90% / 100%': mean best test accuracy at 90% of the "
        "time budget and at the budget (a rising curve at the end shows the budget, not the "
        "algorithm, ended the search).",
        "",
        "| dataset | FLOPs budget | algorithm | final within 0.5 | ever within 0.5 | no answer | "
        "evals needed | in budget | repeated | mean at 90% | mean at 100% |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(f"| {r.dataset} | {r.fraction:.0%} | {r.algorithm} | {r.final_within:.0%} | "
                     f"{r.ever_within:.0%} | {r.no_answer} | {r.evaluations_run:.0f} | "
                     f"{r.evaluations_in_budget:.0f} | {r.repeated_fraction:.1%} | "
                     f"{r.mean_at_90pct:.2f} | {r.mean_at_budget:.2f} |")
    lines += ["", f"The evaluation-count grid in `points.parquet` ends at {grid_max:.0f} evaluations.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(REPO / "results" / "nats"),
                        help="folder written by benchmarks/nats_comparison.py (default results/nats)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    folder = Path(args.results)
    points = pd.read_parquet(folder / "points.parquet")
    table = final_answers(points, pd.read_csv(folder / "runs.csv"), pd.read_csv(folder / "oracle.csv"))
    grid_max = float(points[points["kind"] == "evaluations"]["point"].max())
    table.to_csv(folder / "final_answers.csv", index=False)
    command = "python benchmarks/nats_final_answers.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    (folder / "final_answers.md").write_text(markdown(table, grid_max, time.perf_counter() - start, command))
    print(f"wrote {folder / 'final_answers.csv'} and final_answers.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
