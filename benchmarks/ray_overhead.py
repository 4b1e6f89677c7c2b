"""Per-trial overhead of the Ray backend against the local path.

The same trivial evaluator (an additive toy reward, optionally after a fixed sleep) is run
for ``--trials`` trials through

* ``executor``: submit one trial, wait for it, repeat (pure dispatch round trip, k=1);
* ``loop``: ``layernas.search`` with a trivial searcher (architectures in index order,
  microseconds per proposal) and ``max_in_flight`` k: the run loop plus the backend;
* ``layernas``: ``layernas.search`` with the LayerNAS searcher (its own proposal time,
  several ms per trial here, is in both columns, and so is its noise),

once with the local :class:`~layernas.executors.SerialExecutor` and once with
:class:`~layernas.executors.RayExecutor` on a private local Ray instance
(``ray.init(num_cpus=2)``), interleaved, ``--repeats`` times. Ray start-up and actor
start-up are measured separately and excluded from the per-trial numbers (the actors are
warmed up first). Writes ``results/ray/overhead.csv``, ``summary.md`` and ``provenance.json``.

    python benchmarks/ray_overhead.py                      # ~2 min on 2 CPU cores
    python benchmarks/ray_overhead.py --trials 50 --repeats 1 --out /tmp/ray_overhead
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import layernas
from layernas.evaluator import EvalResult, Trial
from layernas.executors import SerialExecutor
from layernas.provenance import write_provenance
from layernas.searchers.base import Searcher
from layernas.target import Target
from layernas.space import Layer, SearchSpace


class TinySpace(SearchSpace):
    """8 layers x 5 options, additive cost and reward (seeded); LayerNAS with 50 buckets
    runs ~420 trials on it before it has nothing left to propose."""

    name = "tiny"
    cost_metrics = ("cost",)

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.option_costs = rng.integers(0, 10, size=(8, 5)).astype(float)
        self.option_rewards = np.round(rng.normal(size=(8, 5)), 3)
        self.layers = tuple(Layer(f"layer{i}", tuple(range(5)), default=int(np.argmax(c)))
                            for i, c in enumerate(self.option_costs))

    def cost(self, arch):
        return {"cost": float(sum(self.option_costs[i, a] for i, a in enumerate(arch)))}


class TrivialEvaluator:
    """reward = the space's additive reward, after ``sleep`` seconds."""

    def __init__(self, space: TinySpace, sleep: float = 0.0):
        self.space, self.sleep = space, sleep

    def evaluate(self, trial: Trial) -> EvalResult:
        if self.sleep:
            time.sleep(self.sleep)
        reward = float(sum(self.space.option_rewards[i, a] for i, a in enumerate(trial.arch)))
        return EvalResult(trial.trial_id, trial.arch, reward, cost_seconds=1.0)


def enumerate_searcher(space: SearchSpace) -> Searcher:
    """Proposes every architecture in index order; ignores results. Costs next to nothing."""
    sizes = [len(layer.options) for layer in space.layers]

    def propose(state, n):
        archs = [tuple(int(a) for a in np.unravel_index(i, sizes)) for i in range(state["next"], state["next"] + n)]
        return archs, {"next": state["next"] + n}

    return Searcher("enumerate", lambda seed: {"next": 0}, propose, lambda state, results: state)


def time_executor(executor, trials: int) -> float:
    """Submit-then-wait one trial at a time; seconds for ``trials`` trials."""
    start = time.perf_counter()
    for i in range(trials):
        executor.submit(Trial(i, (0, 1, 2, 3, 4, 0, 1, 2), i))
        got = []
        while not got:
            got = executor.wait()
        assert got[0].trial_id == i and got[0].ok
    return time.perf_counter() - start


def time_search(space, executor, trials: int, searcher: str) -> tuple[float, list]:
    target = Target("cost", max=0.5 * float(space.option_costs.max(axis=1).sum()))
    options = {"searcher": enumerate_searcher(space)} if searcher == "loop" else \
        {"searcher": "layernas", "searcher_options": {"num_buckets": 50}}
    start = time.perf_counter()
    result = layernas.search(space, executor, budget=trials, target=target, seed=0, **options)
    seconds = time.perf_counter() - start
    assert result.evaluations == trials, result.evaluations
    return seconds, list(result.history.arch_str)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sleep-ms", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="results/ray")
    args = parser.parse_args(argv)
    wall_start = time.perf_counter()
    import ray

    from layernas.executors import RayExecutor

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    space = TinySpace(0)
    rows, startup = [], []
    configs = [("executor", 1, s) for s in args.sleep_ms] + \
              [("loop", k, s) for k in args.in_flight for s in args.sleep_ms] + \
              [("layernas", k, 0.0) for k in args.in_flight]
    for mode, k, sleep_ms in configs:
        evaluator = TrivialEvaluator(space, sleep_ms / 1000)
        t0 = time.perf_counter()
        remote = RayExecutor(evaluator, max_in_flight=k)
        for i in range(k):  # warm up: start every actor before timing
            remote.submit(Trial(10_000 + i, (0,) * 8, i))
        warm = []
        while len(warm) < k:
            warm += remote.wait()
        startup.append({"mode": mode, "max_in_flight": k, "sleep_ms": sleep_ms,
                        "actor_startup_s": time.perf_counter() - t0})
        for repeat in range(args.repeats):
            archs = {}
            for backend in ("local", "ray"):
                executor = SerialExecutor(evaluator, k) if backend == "local" else remote
                if mode == "executor":
                    seconds = time_executor(executor, args.trials)
                else:
                    seconds, archs[backend] = time_search(space, executor, args.trials, mode)
                rows.append({"mode": mode, "backend": backend, "max_in_flight": k, "sleep_ms": sleep_ms,
                             "trials": args.trials, "repeat": repeat, "wall_s": seconds,
                             "ms_per_trial": 1000 * seconds / args.trials})
                print(f"{mode:8s} k={k} sleep={sleep_ms:g}ms {backend:5s} "
                      f"{1000 * seconds / args.trials:8.3f} ms/trial", flush=True)
            if archs:
                assert archs["local"] == archs["ray"], "Ray and local searches differ"
        remote.close()
    ray.shutdown()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "overhead.csv", index=False)
    med = df.groupby(["mode", "max_in_flight", "sleep_ms", "backend"]).ms_per_trial.median().unstack()
    med["ratio_ray_over_local"] = med["ray"] / med["local"]
    med["overhead_ms_per_trial"] = med["ray"] - med["local"]
    med = med.reset_index()
    med.to_csv(out / "summary.csv", index=False)
    wall = time.perf_counter() - wall_start
    lines = [
        "# Ray backend overhead per trial",
        "",
        f"`python benchmarks/ray_overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"{args.trials} trials of a trivial evaluator, median of {args.repeats} interleaved repeats; "
        "local = SerialExecutor in the driver, ray = RayExecutor on a private `ray.init(num_cpus=2)` "
        "(actors warmed up first). `executor` = submit one trial, wait for it (pure round trip); "
        "`loop` = `layernas.search` with a trivial searcher and `max_in_flight` k (run loop + backend); "
        "`layernas` = `layernas.search` with LayerNAS (its proposal time, and its noise, is in both "
        "columns). With k=2 the Ray path runs two trials at once, the local path one after the "
        "other, so a negative overhead there is parallel speed-up.",
        "",
        "| mode | k | sleep ms | local ms/trial | ray ms/trial | ray / local | overhead ms/trial |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in med.itertuples():
        lines.append(f"| {r.mode} | {r.max_in_flight} | {r.sleep_ms:g} | {r.local:.3f} | {r.ray:.3f} | "
                     f"{r.ratio_ray_over_local:.2f} | {r.overhead_ms_per_trial:+.3f} |")
    lines += ["", f"Ray start-up (`ray.init`, local, 2 CPUs): {ray_init_s:.1f} s. Actor start-up "
              f"(first results from k fresh actors): " +
              ", ".join(f"{s['mode']} k={s['max_in_flight']}: {s['actor_startup_s']:.2f} s" for s in startup)
              + ".", "", f"Total wall time {wall:.0f} s on this machine (see provenance.json; "
              "a shared 2-core CPU VM, so absolute numbers are noisy)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    write_provenance(out, wall, "python benchmarks/ray_overhead.py " + " ".join(sys.argv[1:]),
                     ray=ray.__version__, ray_init_s=ray_init_s, actor_startup=startup,
                     trials=args.trials, repeats=args.repeats)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
