"""Per-child fixed costs of a trained search: data, init, compile, eval compile, validation,
training; cold against warm, shared against unshared, in one run.

Every scenario runs in a fresh Python process (so nothing is cached in memory), on real
CIFAR-10, for two recipes:

* ``small-proxy``: the trained-search proxy, a NATS tss cell at C=8, N=1 on 2,000 training
  images (250 per class minus 50 held out) and 500 validation images, ``--small-epochs``
  epochs of batch 128;
* ``PROXY``: the named proxy recipe (4,000 training images, 5 epochs) on the same network;
  ``--proxy-epochs`` epochs are run and the training time is extrapolated to 5 (the fixed
  costs are measured, not extrapolated).

Scenarios (each a process; the persistent cache directory is a fresh temporary one):

* ``cold``: the persistent compilation cache is empty: child A, then child A again at
  another seed (the same shape: its compiled steps are shared in memory), then child B (a
  new shape);
* ``warm``: a new process on the cache the cold process filled: A and B again (their
  compiles come from disk).

Columns: ``data_s`` (load + split; once per process, i.e. per search), ``init_s``,
``compile_s`` (first train step minus a steady step), ``eval_compile_s`` (first validation
batch minus a steady one), ``validation_s``, ``train_s`` (all steps but the compile),
``fixed_s`` = init + compile + eval compile, ``child_s`` (the child's wall time, training
extrapolated for PROXY), ``children_per_hour`` = 3600 / child_s, and
``children_per_hour_same_train``, which uses the architecture's mean training time over the
recipe's rows (training does not depend on the caches; between rows it is the shared
machine's noise).

    python benchmarks/child_fixed_costs.py            # ~10-20 min on the 2-core machine

Writes ``results/perf/child_fixed_costs.{csv,md}`` and ``child_fixed_costs_run.json``
(the fused-compile measurement, wall time, load); ``--report-only`` rewrites the markdown from them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCH_A = ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1")
ARCH_B = ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "none")
SCENARIOS = {"cold": [("A", ARCH_A, 0, "new shape, empty persistent cache"),
                      ("A'", ARCH_A, 1, "same shape, compiled steps shared in memory"),
                      ("B", ARCH_B, 0, "new shape, empty persistent cache")],
             "warm": [("A", ARCH_A, 0, "new process, persistent cache warm"),
                      ("B", ARCH_B, 0, "new process, persistent cache warm")]}


def default_data() -> Path:
    shared = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))
    return shared / "data" / "cifar10"


def recipes(args):
    from layernas.trainers import train

    return {"small-proxy": (train.PROXY.replace(name="small-proxy", train_per_class=250, valid_per_class=50,
                                                epochs=args.small_epochs), args.small_epochs),
            "PROXY": (train.PROXY.replace(epochs=args.proxy_epochs), train.PROXY.epochs)}


def worker(args) -> int:
    """One scenario in this process: prints one JSON row per child."""
    t_import = time.perf_counter()
    import jax

    from layernas.trainers import loop, nats_models, train

    import_s = time.perf_counter() - t_import
    train.configure_compilation_cache(args.cache)
    recipe, full_epochs = recipes(args)[args.recipe]
    t = time.perf_counter()
    tr, va = train.prepare_data(args.data, recipe, seed=0)
    data_s = time.perf_counter() - t
    for i, (child, arch, seed, what) in enumerate(SCENARIOS[args.scenario]):
        model = nats_models.build_tss(arch, tr.num_classes, C=8, N=1)
        t = time.perf_counter()
        r = train.train_model(model, tr, va, recipe, seed=seed)
        wall = time.perf_counter() - t
        # the validation pass once more, compiled: its steady time (not part of the child)
        plan = train.ClassifierTask.for_recipe(model, tr, recipe).plan(recipe, 1)
        steps = train.compiled_steps(model, recipe, tr.num_classes, plan.total_steps, plan.steps_per_epoch)
        placer = loop.Placer()
        timing: dict = {}
        train.evaluate_model(steps.eval_step, jax.device_put(r.variables), va, placer.put_state(tr.channel_stats()),
                             recipe.eval_batch_size, placer, timing)
        validation_s = min(timing["seconds"], r.eval_seconds)
        steady = (r.seconds - r.init_seconds - r.compile_seconds - r.eval_seconds) / max(r.steps - 1, 1)
        compile_s = max(r.compile_seconds - steady, 0.0)
        eval_compile_s = max(r.eval_seconds - validation_s, 0.0)
        train_s = r.seconds - r.init_seconds - compile_s - r.eval_seconds
        train_full = train_s * full_epochs / recipe.epochs
        fixed = r.init_seconds + compile_s + eval_compile_s
        child_s = fixed + train_full + validation_s
        print(json.dumps({
            "recipe": args.recipe, "scenario": args.scenario, "child": child, "what": what, "status": r.status,
            "epochs_run": r.epochs_done, "epochs_counted": full_epochs, "steps_run": r.steps,
            "import_s": round(import_s, 2) if i == 0 else 0.0, "data_s": round(data_s, 2) if i == 0 else 0.0,
            "init_s": round(r.init_seconds, 3), "compile_s": round(compile_s, 2),
            "eval_compile_s": round(eval_compile_s, 2), "validation_s": round(validation_s, 2),
            "train_s": round(train_full, 1), "fixed_s": round(fixed, 2), "child_s": round(child_s, 1),
            "children_per_hour": round(3600.0 / child_s, 1), "wall_s": round(wall, 1),
            "valid_accuracy": round(r.valid_accuracy, 2)}), flush=True)
    return 0


def fused_worker(args) -> int:
    """AOT compile seconds of the train step, the eval step, and both in one program
    (evaluation inside the training program), for ARCH_B, twice in alternating order."""
    import jax
    import numpy as np

    from layernas.trainers import loop, nats_models, train

    train.configure_compilation_cache(None)
    recipe, _ = recipes(args)[args.recipe]
    tr, va = train.prepare_data(args.data, recipe, seed=0)
    task = train.ClassifierTask.for_recipe(nats_models.build_tss(ARCH_B, tr.num_classes, C=8, N=1), tr, recipe)
    plan = task.plan(recipe, 1)
    tx = loop.make_optimizer(recipe, plan.total_steps, plan.steps_per_epoch)
    step = loop.make_train_step(task, tx, recipe.ema_decay)
    state = loop.initial_state(task.init(0), tx, recipe.ema_decay, loop.Placer())
    batch = {"images": tr.images[:plan.batch], "labels": tr.labels[:plan.batch]}
    n = min(recipe.eval_batch_size, len(va))
    vbatch = {"images": va.images[:n], "labels": va.labels[:n], "mask": np.ones(n, np.float32)}
    consts, key = tr.channel_stats(), jax.random.key(0)
    variables = {"params": state["params"], **state["model_state"]}

    def fused(state, batch, key, consts, vbatch):
        new, metrics = step(state, batch, key, consts)
        return new, metrics, task.eval_metrics({"params": new["params"], **new["model_state"]}, vbatch, consts)

    programs = {"train": (step, (state, batch, key, consts)), "eval": (task.eval_metrics, (variables, vbatch, consts)),
                "fused": (fused, (state, batch, key, consts, vbatch))}
    jax.jit(lambda x: x * 2).lower(np.ones(3)).compile()  # one-off backend start-up, not counted
    seconds = {k: [] for k in programs}
    for order in (("train", "eval", "fused"), ("fused", "eval", "train")):
        for name in order:
            fn, fargs = programs[name]
            t = time.perf_counter()
            jax.jit(fn).lower(*fargs).compile()
            seconds[name].append(time.perf_counter() - t)
    mean = {k: sum(v) / len(v) for k, v in seconds.items()}
    print(json.dumps({"recipe": args.recipe, "train_compile_s": round(mean["train"], 2),
                      "eval_compile_s": round(mean["eval"], 2), "separate_s": round(mean["train"] + mean["eval"], 2),
                      "fused_compile_s": round(mean["fused"], 2),
                      "fused_over_separate": round(mean["fused"] / (mean["train"] + mean["eval"]), 3)}), flush=True)
    return 0


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def write_report(df, run: dict, out: Path) -> None:
    """Write the CSV (with the per-architecture columns) and the markdown summary."""
    fused = run["fused"]
    # Training time does not depend on what is cached; on a shared machine it is noise between
    # rows. children_per_hour_same_train uses each architecture's mean training time over all
    # of its rows of the recipe, so that the rows differ only in their fixed costs.
    df["train_s_arch_mean"] = df.groupby(["recipe", df.child.str[0]]).train_s.transform("mean").round(1)
    df["children_per_hour_same_train"] = (3600.0 / (df.fixed_s + df.train_s_arch_mean + df.validation_s)).round(1)
    df.to_csv(out / "child_fixed_costs.csv", index=False)
    summary = []
    for recipe, g in df.groupby("recipe", sort=False):
        row = lambda scenario, child: g[(g.scenario == scenario) & (g.child == child)].iloc[0]  # noqa: E731
        cold_a, shared, cold_b = row("cold", "A"), row("cold", "A'"), row("cold", "B")
        warm_a, warm_b = row("warm", "A"), row("warm", "B")
        rate = "children_per_hour_same_train"
        summary.append(
            f"- **{recipe}**: a new shape with an empty cache costs {cold_a.fixed_s:.1f} s (A) and "
            f"{cold_b.fixed_s:.1f} s (B) fixed, of which {cold_a.compile_s:.1f} / {cold_b.compile_s:.1f} s compile, "
            f"{cold_a.eval_compile_s:.1f} / {cold_b.eval_compile_s:.1f} s eval compile and "
            f"{cold_a.init_s:.2f} / {cold_b.init_s:.2f} s init, against {cold_a.train_s_arch_mean:.0f} / "
            f"{cold_b.train_s_arch_mean:.0f} s of training: {cold_a[rate]:.1f} / {cold_b[rate]:.1f} children/hour. "
            f"A again (A', same shape, same process, its compiled steps shared): {shared.fixed_s:.2f} s fixed, "
            f"{shared[rate]:.1f}/hour (x{shared[rate] / cold_a[rate]:.2f} of A cold). A new process on the warm "
            f"persistent cache: {warm_a.fixed_s:.1f} / {warm_b.fixed_s:.1f} s fixed, {warm_a[rate]:.1f} / "
            f"{warm_b[rate]:.1f}/hour (x{warm_a[rate] / cold_a[rate]:.2f} / x{warm_b[rate] / cold_b[rate]:.2f}). "
            f"Data: {g.data_s.max():.1f} s once per search; import {g.import_s.max():.1f} s once per process.")
    (out / "child_fixed_costs.md").write_text(
        "# Per-child fixed costs\n\n"
        f"`python benchmarks/child_fixed_costs.py` on {run['machine']}, load average {run['load_average_end']} "
        f"at the end (the machine is shared by other jobs, so compile and step times swing between rows; "
        f"compare rows of this run only). Wall time {run['wall_s'] / 60:.1f} min.\n\n"
        "Every scenario is a fresh process on real CIFAR-10; the network is a NATS tss cell at C=8, N=1. "
        "`small-proxy` trains on 2,000 images (500 held out for validation); `PROXY` on 4,000 "
        "(1,000 held out) for 5 epochs, of which `epochs_run` were run and the training time "
        "extrapolated. The ratios below are against the same architecture's cold child of the same run.\n\n"
        + "\n".join(summary) + "\n\n" + _markdown(df) + "\n\n"
        "## Evaluation inside the training program\n\n"
        f"Compiling the small-proxy child B's train step and its eval step as one XLA program took "
        f"{fused['fused_compile_s']} s against {fused['separate_s']} s for the two programs apart "
        f"({fused['train_compile_s']} s + {fused['eval_compile_s']} s; ratio {fused['fused_over_separate']}, "
        "mean of two orders, fresh process, no persistent cache): "
        + (f"one program cuts the compile by {100 * (1 - fused['fused_over_separate']):.0f}%"
           if fused["fused_over_separate"] < 0.9 else
           "within 10%, so one program does not buy a cheaper compile here (XLA's compile time is about "
           "additive in the program)") + " (`child_fixed_costs_run.json`). The training loop compiles the two "
        "programs apart.\n")


def _markdown(df) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(default_data()))
    p.add_argument("--out", default=str(REPO / "results" / "perf"))
    p.add_argument("--small-epochs", type=int, default=2)
    p.add_argument("--proxy-epochs", type=int, default=1, help="PROXY epochs run (training extrapolated to 5)")
    p.add_argument("--recipes", default="small-proxy,PROXY")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the markdown from an existing child_fixed_costs.csv (+ _fused.json) in --out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    p.add_argument("--scenario", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return fused_worker(args) if args.scenario == "fused" else worker(args)
    import pandas as pd

    t_all = time.perf_counter()
    out = Path(args.out)
    if args.report_only:
        run = json.loads((out / "child_fixed_costs_run.json").read_text())
        write_report(pd.read_csv(out / "child_fixed_costs.csv"), run, out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in args.recipes.split(","):
        with tempfile.TemporaryDirectory(prefix="jaxcache-") as cache:
            for scenario in SCENARIOS:
                cmd = [sys.executable, __file__, "--worker", "--recipe", recipe, "--scenario", scenario,
                       "--cache", cache, "--data", args.data, "--small-epochs", str(args.small_epochs),
                       "--proxy-epochs", str(args.proxy_epochs)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.stderr.write(proc.stderr[-4000:])
                    return proc.returncode
                for line in proc.stdout.splitlines():
                    if line.startswith("{"):
                        rows.append(json.loads(line))
                        print(line, flush=True)
                pd.DataFrame(rows).to_csv(out / "child_fixed_costs.csv", index=False)
    df = pd.DataFrame(rows)
    df.to_csv(out / "child_fixed_costs.csv", index=False)
    cmd = [sys.executable, __file__, "--worker", "--recipe", "small-proxy", "--scenario", "fused", "--data", args.data,
           "--small-epochs", str(args.small_epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        return proc.returncode
    fused = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    print(json.dumps(fused), flush=True)
    run = {"fused": fused, "wall_s": round(time.perf_counter() - t_all, 1), "load_average_end": round(_load(), 1),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}"}
    (out / "child_fixed_costs_run.json").write_text(json.dumps(run, indent=1) + "\n")
    write_report(pd.DataFrame(rows), run, out)
    print(f"wrote {out / 'child_fixed_costs.csv'} and .md ({run['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
