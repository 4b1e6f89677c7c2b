"""What the run loop costs per evaluation: checkpointing at N evaluations, and table searches.

Two measurements, each side by side in one run of this script:

* ``checkpoint``: a table search of ``--evaluations`` trials through ``layernas.search``,
  once in memory and once writing its run folder; the cost of checkpointing one result at
  the end of the run is the median (and the mean) time between two consecutive evaluations
  over the last ``--window`` evaluations with the folder, minus the same in memory; the
  amortised cost is the difference of the two wall times over the evaluations.
* ``comparison``: the 2,400-run NATS comparison (``layernas.comparison.run_comparison``,
  100 seeds x 4 searchers x 3 datasets x 2 FLOPs budgets) on one process: wall and CPU
  seconds (CPU seconds are the stable number on a loaded machine).

Run it at two commits to compare them (the script uses only the public API)::

    python benchmarks/run_loop_cost.py --table PATH --out results/run_loop
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class Timed:
    """An evaluator wrapper that records when each evaluation starts."""

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.starts: list[float] = []

    def evaluate(self, trial):
        self.starts.append(time.perf_counter())
        return self.evaluator.evaluate(trial)


def checkpoint_cost(table: Path, evaluations: int, window: int, searcher: str) -> dict:
    import layernas
    from layernas.registry import make_space
    from layernas.table_evaluator import TableEvaluator
    from layernas.target import Target

    space = make_space("nats-tss", "cifar100")
    base = TableEvaluator(str(table), "cifar100", space)
    target = Target("flops", max=0.25 * space.cost_bounds((), "flops")[1])
    gaps = {}
    walls = {}
    for mode in ("memory", "folder"):
        timed = Timed(base)
        out = Path(tempfile.mkdtemp(prefix="layernas_ckpt_")) / "run" if mode == "folder" else None
        start = time.perf_counter()
        layernas.search(space, timed, evaluations, target, seed=0, searcher=searcher, out_dir=out)
        walls[mode] = time.perf_counter() - start
        last = np.diff(np.array(timed.starts)[-window:])
        gaps[mode] = (float(np.median(last)), float(np.mean(last)))
    return {"evaluations": evaluations, "searcher": searcher, "window": window,
            "per_eval_memory_ms": 1e3 * gaps["memory"][0], "per_eval_folder_ms": 1e3 * gaps["folder"][0],
            "checkpoint_ms_per_eval": 1e3 * (gaps["folder"][0] - gaps["memory"][0]),
            "checkpoint_ms_per_eval_mean": 1e3 * (gaps["folder"][1] - gaps["memory"][1]),
            "checkpoint_ms_per_eval_amortised": 1e3 * (walls["folder"] - walls["memory"]) / evaluations,
            "wall_memory_s": walls["memory"], "wall_folder_s": walls["folder"]}


def comparison_time(table: Path, seeds: int) -> dict:
    try:
        from layernas.comparison import run_comparison
    except ImportError:   # the baseline tree being measured (before the comparison moved)
        from layernas.nats_comparison import run_comparison
    wall, cpu = time.perf_counter(), time.process_time()
    _, runs, _ = run_comparison(table, seeds=seeds, processes=1)
    return {"runs": len(runs), "evaluations": int(runs.evaluations_run.sum()),
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the compact NATS tss table (200-epoch columns)")
    parser.add_argument("--evaluations", type=int, default=4000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--searcher", default="rea")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--skip", choices=["checkpoint", "comparison"], default=None)
    parser.add_argument("--label", default="", help="recorded with the numbers (e.g. the commit)")
    parser.add_argument("--out", default=None, help="append a JSON line per measurement to OUT/run_loop_cost.jsonl")
    args = parser.parse_args(argv)
    table = Path(args.table)
    rows = []
    if args.skip != "checkpoint":
        rows.append({"measure": "checkpoint", **checkpoint_cost(table, args.evaluations, args.window, args.searcher)})
    if args.skip != "comparison":
        rows.append({"measure": "comparison", **comparison_time(table, args.seeds)})
    stamp = {"label": args.label, "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for row in rows:
        line = json.dumps({**row, **stamp})
        print(line)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            with open(Path(args.out) / "run_loop_cost.jsonl", "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
