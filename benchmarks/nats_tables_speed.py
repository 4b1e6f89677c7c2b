"""How fast the NATS table machinery is: default-table build, evaluator set-up, lookups.

    python benchmarks/nats_tables_speed.py [--out results/nats_tables] [--queries 200000]

Writes ``speed.csv`` (one row per measurement, median of --repeats), ``summary.md`` and
``provenance.json``. The baseline in the same run is a plain dict lookup of the arch tuple
(the least any per-query evaluator must do), so ``ratio_to_dict_lookup`` is machine-noise
robust. Default-table timings are for a fresh in-memory build (the lru cache is cleared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.evaluator import Trial, trial_seed
from layernas.provenance import write_provenance
from layernas.search_spaces.nats_tss import NatsTss
from layernas.table_evaluator import TableEvaluator
from layernas import tables


CPU_TIMES: dict = {}


def _median_time(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()``; its median CPU (process) seconds go to CPU_TIMES,
    which matter on a shared machine where wall time includes waiting for a core."""
    times, cpu = [], []
    for _ in range(repeats):
        start, cstart = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cstart)
    CPU_TIMES[fn] = statistics.median(cpu)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/nats_tables")
    p.add_argument("--queries", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def build_default():
        tables._default_table_in_memory.cache_clear()
        return tables.default_table()

    rows = [{"what": "default_table() fresh build (s)", "value": _median_time(build_default, args.repeats),
             "cpu_seconds": CPU_TIMES[build_default]}]
    table = tables.default_table()
    space = NatsTss("cifar10")
    rows.append({"what": "TableEvaluator() set-up (s)",
                 "value": _median_time(lambda: TableEvaluator(table, "cifar10", space, charge_epochs=12), args.repeats)})
    ev = TableEvaluator(table, "cifar10", space, charge_epochs=12)
    rng = np.random.default_rng(0)
    archs = [tuple(int(x) for x in a) for a in rng.integers(5, size=(args.queries, 6))]
    trials = [Trial(i, a, trial_seed(0, i)) for i, a in enumerate(archs)]
    lookup = dict(ev.arrays.row_of_arch)

    def dict_only():
        for t in trials:
            lookup[t.arch]

    def evaluate_all():
        for t in trials:
            ev.evaluate(t)

    rows_arr = np.array([ev.row(a) for a in archs])
    seeds = np.array([t.seed for t in trials], dtype=np.uint64)
    base = _median_time(dict_only, args.repeats) / args.queries
    per_eval = _median_time(evaluate_all, args.repeats) / args.queries
    vec = _median_time(lambda: ev.evaluate_rows(rows_arr, seeds), args.repeats) / args.queries
    rows += [
        {"what": "dict lookup baseline (us/query)", "value": base * 1e6},
        {"what": "TableEvaluator.evaluate (us/query)", "value": per_eval * 1e6, "ratio_to_dict_lookup": per_eval / base},
        {"what": "TableEvaluator.evaluate_rows (us/query)", "value": vec * 1e6, "ratio_to_dict_lookup": vec / base},
    ]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "speed.csv", index=False)
    load = os.getloadavg()[0]
    lines = ["# NATS table speed", "", f"`{' '.join(sys.argv)}`, {args.queries} queries, median of {args.repeats}; "
             f"load average {load:.1f} on {os.cpu_count()} cores during the run.", "",
             "| measurement | wall value | CPU seconds | ratio to dict lookup |", "|---|---|---|---|"]
    for r in rows:
        ratio, cpu = r.get("ratio_to_dict_lookup"), r.get("cpu_seconds")
        lines.append(f"| {r['what']} | {r['value']:.3g} | {'' if cpu is None else f'{cpu:.3g}'} | "
                     f"{'' if ratio is None or pd.isna(ratio) else f'{ratio:.1f}x'} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    write_provenance(out, time.time() - start, " ".join(sys.argv), queries=args.queries, repeats=args.repeats)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
