"""How much the LayerNAS searcher's own work costs, before and after its state was made cheap
to update (the evaluated-architecture map sharded so that a result copies one small dict;
bucket, key and reachability caches).

The "before" searcher is the module as it was at commit BEFORE, read with ``git show``; both
run in this process, interleaved, on the same results, so the ratio is measured side by side.
Only ``propose`` and ``update`` are timed (table lookups excluded). Two workloads:

* NATS-Bench tss cifar10 at 50% FLOPs, 100 seeded table runs (about 185 evaluations each,
  the run continuing as the NATS comparison does, to 200 evaluations or the searcher's end);
* a synthetic additive space with many layers and options, one run of several thousand
  evaluations, where copying the whole map per result grows with the number of results.

Writes results/nats/ablation_state_speed.csv (with the machine and the script's wall time).

    python benchmarks/layernas_state_speed.py
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from layernas.evaluator import EvalResult, Trial, trial_seed
from layernas.searchers.layernas import layernas as layernas_now
from layernas.space import Layer, SearchSpace
from layernas.target import Target

BEFORE = "10101c3"  # the last commit before the LayerNAS options and the cheap state
REPO = Path(__file__).resolve().parents[1]


def searcher_before():
    """The ``layernas`` factory of commit BEFORE."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:layernas/searchers/layernas.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "layernas_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("layernas_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.layernas


class Wide(SearchSpace):
    """An additive space: ``layers`` layers of ``options`` options with random integer costs."""

    cost_metrics = ("cost",)

    def __init__(self, layers: int, options: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.name = f"wide{layers}x{options}"
        self.costs = rng.integers(0, 20, size=(layers, options)).tolist()
        self.rewards = rng.normal(size=(layers, options)).tolist()
        self.layers = tuple(Layer(f"l{i}", tuple(range(options)), default=int(np.argmax(c)))
                            for i, c in enumerate(self.costs))

    def cost(self, arch):
        return {"cost": float(sum(self.costs[i][a] for i, a in enumerate(arch)))}

    def cost_bounds(self, prefix, metric):
        """Closed form (costs are additive), so that the timing is the searcher's, not bounds'."""
        fixed = sum(self.costs[i][a] for i, a in enumerate(prefix))
        rest = self.costs[len(prefix):]
        return float(fixed + sum(map(min, rest))), float(fixed + sum(map(max, rest)))

    def reward(self, arch) -> float:
        return float(sum(self.rewards[i][a] for i, a in enumerate(arch)))


def drive(searcher, evaluate, seed: int, max_evaluations: int) -> tuple[float, int]:
    """Seconds spent in propose/update for one run, and its evaluations."""
    state, spent, n = searcher.init(seed), 0.0, 0
    while n < max_evaluations:
        t = time.perf_counter()
        archs, state = searcher.propose(state, 1)
        spent += time.perf_counter() - t
        if not archs:
            break
        result = evaluate(Trial(n, archs[0], trial_seed(seed, n)))
        t = time.perf_counter()
        state = searcher.update(state, [result])
        spent += time.perf_counter() - t
        n += 1
    return spent, n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layernas_state_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/nats")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    before = searcher_before()
    from layernas import comparison as nc

    table = nc.default_table_path() or Path(__file__).resolve().parents[2] / "shared/data/nats_tss/nats_tss_200ep.csv"
    space, evaluator = nc.context(table, "cifar10")
    target = nc.flops_target(space, 0.5)
    wide = Wide(24, 12)
    lo, hi = wide.cost_bounds((), "cost")
    wide_target = Target("cost", max=lo + 0.4 * (hi - lo))

    def wide_eval(trial):
        return EvalResult(trial.trial_id, trial.arch, wide.reward(trial.arch), 1.0)

    workloads = {
        "nats-tss cifar10 50%, 100 table runs": (space, target, evaluator.evaluate, range(100), 200),
        f"{wide.name} additive, 1 run": (wide, wide_target, wide_eval, range(1), 10**9),
    }
    rows = []
    for name, (sp, tg, evaluate, seeds, limit) in workloads.items():
        times = {"before": [], "now": []}
        evaluations = {}
        for _ in range(args.repeats):
            for label, factory, opts in (("before", before, {}), ("now", layernas_now, {"preset": "paper"})):
                total, count = 0.0, 0
                for seed in seeds:
                    spent, n = drive(factory(sp, tg, **opts), evaluate, seed, limit)
                    total, count = total + spent, count + n
                times[label].append(total)
                evaluations[label] = count
        assert evaluations["before"] == evaluations["now"], evaluations
        b, a = float(np.median(times["before"])), float(np.median(times["now"]))
        rows.append({"workload": name, "evaluations": evaluations["now"], "before_s": round(b, 4),
                     "now_s": round(a, 4), "speedup": round(b / a, 2), "repeats": args.repeats})
        print(rows[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from layernas.provenance import machine_info

    machine = machine_info()
    frame = pd.DataFrame(rows).assign(cpu_model=machine.get("cpu_model"), cpu_count=machine.get("cpu_count"),
                                      script_wall_s=round(time.perf_counter() - start, 1),
                                      date=machine.get("date"))
    frame.to_csv(out / "ablation_state_speed.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
