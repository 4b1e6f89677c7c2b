"""How fast is our trainer on this machine? Four measurements, all in one run.

1. **JAX vs PyTorch**: images/s of our jitted, donated train step
   (:func:`layernas.trainers.train.compiled_steps`: augmentation + forward + backward +
   SGD-Nesterov update) against the same NATS tss network written in PyTorch
   (``benchmarks/torch_nats_tss.py``, eager mode, same ops, same batch, same augmentation
   and optimizer), on real CIFAR-10 images. JAX runs on one XLA:CPU device and
   data-parallel over 2 host devices; PyTorch runs with ``torch.set_num_threads(2)`` (the
   machine has 2 cores), in NCHW and channels_last. Configurations are interleaved in
   rounds and the median per-step time is kept, because the machine is shared.
2. **Fraction of peak**: the train step's FLOPs from XLA's ``cost_analysis`` of the compiled
   step (cross-checked with 3 x forward FLOPs) divided by the median step time, as a
   fraction of this machine's float32 matmul peak (best of several ``jnp.matmul`` of
   2048x2048 matrices, measured in the same run).
3. **Children per hour** with the PROXY recipe: per new architecture, the measured init,
   train-step compile, eval compile + validation pass, plus PROXY's steps at the measured
   step time (cold compilation cache).
4. **Batching children**: sequential training vs ``jax.vmap`` over same-shape children vs a
   masked-padding "supernet" program (one compile serves every tss cell; the cell's ops
   are a traced mask) vs vmap over the masked program. Small network (C=8, N=1) to keep
   vmap's grouped convolutions affordable.

Writes ``results/trainer/{throughput.csv, batching.csv, summary.md, provenance.json}``.
Usage: ``python benchmarks/trainer_throughput.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from layernas.trainers import data as data_lib
from layernas.trainers import loop, nats_models, train

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))
CIFAR10 = SHARED / "data" / "cifar10"
OUT = REPO / "results" / "trainer"
# A mixed cell: 2 conv3x3, 1 conv1x1, skips and a pool (NATS closed form: 82.49 M MAdds at C=16, N=5).
BENCH_OPS = ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "skip_connect", "avg_pool_3x3")
OTHER_OPS = ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")


def median_time(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# ------------------------------------------------------------------------------- peak
def matmul_peak(sizes=(1024, 2048, 4096), reps: int = 5) -> dict:
    """Best float32 matmul GFLOP/s of ``jnp.matmul`` (and NumPy, for reference) over square
    sizes and repeats."""
    best = {"sizes": list(sizes), "reps": reps, "jax_best_gflops": 0.0, "jax_median_gflops": 0.0,
            "numpy_best_gflops": 0.0}
    f = jax.jit(jnp.matmul)
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        f(a, b).block_until_ready()
        ts = median_time(lambda: f(a, b).block_until_ready(), reps)
        an, bn = np.asarray(a), np.asarray(b)
        tn = median_time(lambda: an @ bn, reps)
        flop = 2.0 * n ** 3
        if flop / min(ts) / 1e9 > best["jax_best_gflops"]:
            best.update(n=n, jax_best_gflops=flop / min(ts) / 1e9, jax_median_gflops=float(flop / np.median(ts) / 1e9))
        best["numpy_best_gflops"] = max(best["numpy_best_gflops"], flop / min(tn) / 1e9)
    return best


def best_peak(a: dict, b: dict) -> dict:
    """The better of two peak measurements (taken at the start and the end of the run)."""
    out = dict(a if a["jax_best_gflops"] >= b["jax_best_gflops"] else b)
    out["numpy_best_gflops"] = max(a["numpy_best_gflops"], b["numpy_best_gflops"])
    out["jax_best_gflops_start_end"] = [a["jax_best_gflops"], b["jax_best_gflops"]]
    return out


def xla_flops(compiled) -> float:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca.get("flops", float("nan")))


# ------------------------------------------------------------------------- JAX side
_COMPILED: dict = {}


class JaxStepper:
    """One child's state + compiled step, stepping on fixed real batches."""

    def __init__(self, model, tr, recipe, seed, placement=None, total_steps=1000):
        self.placer = loop.Placer(placement)
        t0 = time.perf_counter()
        variables = train.init_variables(model, tr.images.shape, seed)
        self.init_seconds = time.perf_counter() - t0
        steps = train.compiled_steps(model, recipe, tr.num_classes, total_steps, max(1, total_steps // recipe.epochs),
                                     placement)
        self.tx, self.step, self.eval_step = steps.tx, steps.train_step, steps.eval_step
        self.state = loop.initial_state(variables, self.tx, recipe.ema_decay, self.placer)
        self.consts = self.placer.put_state(tr.channel_stats())
        self.key = jax.random.wrap_key_data(self.placer.put_state(jax.random.key_data(jax.random.key(seed))))
        idx = np.arange(recipe.batch_size)
        self.batch = self.placer.put_batch({"images": tr.images[idx], "labels": tr.labels[idx]})
        self.args = lambda: (self.state, self.batch, self.key, self.consts)
        # AOT-compile once (a later plain call of the jit would compile again), shared
        # between steppers of the same shape.
        key = (id(self.step), str(jax.tree.map(lambda a: (a.shape, a.dtype), self.args())))
        t0 = time.perf_counter()
        if key not in _COMPILED:
            _COMPILED[key] = self.step.lower(*self.args()).compile()
        self.compiled = _COMPILED[key]
        self.compile_seconds = time.perf_counter() - t0
        self.flops = xla_flops(self.compiled)

    def run(self, n: int):
        for _ in range(n):
            self.state, m = self.compiled(*self.args())
        jax.block_until_ready(m)


# ----------------------------------------------------------------------- PyTorch side
class TorchStepper:
    def __init__(self, ops, tr, recipe, C, N, seed, channels_last: bool, threads: int = 2):
        import torch

        sys.path.insert(0, str(Path(__file__).parent))
        from torch_nats_tss import TorchTss

        torch.manual_seed(seed)
        self.torch = torch
        self.net = TorchTss(ops, tr.num_classes, C, N)
        self.channels_last = channels_last
        self.threads = threads
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=fmt).train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=recipe.learning_rate, momentum=recipe.momentum,
                                   nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
        mean, std = tr.channel_stats()
        idx = np.arange(recipe.batch_size)
        self.images = torch.from_numpy(tr.images[idx]).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        self.labels = torch.from_numpy(tr.labels[idx].astype(np.int64))
        self.mean = torch.from_numpy(mean).view(1, 3, 1, 1)
        self.std = torch.from_numpy(std).view(1, 3, 1, 1)
        self.fmt = fmt
        self.gen = torch.Generator().manual_seed(seed)

    def augment(self, x):
        """Random crop (4 px zero padding) + horizontal flip, as data.random_crop_flip."""
        torch = self.torch
        n, c, h, w = x.shape
        padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
        ys = torch.randint(0, 9, (n,), generator=self.gen)
        xs = torch.randint(0, 9, (n,), generator=self.gen)
        rows = (ys[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 8)
        crop = padded.gather(2, rows)
        cols = (xs[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
        crop = crop.gather(3, cols)
        flip = torch.rand(n, generator=self.gen) < 0.5
        return torch.where(flip[:, None, None, None], crop.flip(3), crop)

    def run(self, n: int):
        torch = self.torch
        torch.set_num_threads(self.threads)
        for _ in range(n):
            x = self.augment(self.images.float() / 255.0)
            x = ((x - self.mean) / self.std).contiguous(memory_format=self.fmt)
            loss = torch.nn.functional.cross_entropy(self.net(x), self.labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        float(loss.detach())


TORCH_CONFIGS = {"pytorch eager, 2 threads, NCHW": (False, 2), "pytorch eager, 2 threads, channels_last": (True, 2),
                 "pytorch eager, 1 thread, NCHW": (False, 1)}


def torch_worker(args) -> None:
    """Runs in a child process without JAX's thread pool (whose spinning threads would
    slow PyTorch's OpenMP barriers if both lived in one process). Reads ``<config>\t<n>``
    lines on stdin, answers the seconds for ``n`` train steps."""
    tr, _ = train.prepare_data(CIFAR10, train.PROXY, seed=0)
    recipe = train.PROXY.replace(batch_size=args.batch)
    steppers = {k: TorchStepper(BENCH_OPS, tr, recipe, args.C, args.N, 0, channels_last=cl, threads=th)
                for k, (cl, th) in TORCH_CONFIGS.items()}
    print("ready", flush=True)
    for line in sys.stdin:
        name, n = line.rstrip("\n").split("\t")
        t = time.perf_counter()
        steppers[name].run(int(n))
        print(time.perf_counter() - t, flush=True)


class TorchProcess:
    """Parent-side handle of one PyTorch config in the worker process."""

    proc = None

    def __init__(self, name, args):
        import subprocess

        if TorchProcess.proc is None:
            cmd = [sys.executable, __file__, "--torch-worker", "--C", str(args.C), "--N", str(args.N),
                   "--batch", str(args.batch)]
            TorchProcess.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            while TorchProcess.proc.stdout.readline().strip() != "ready":
                pass
        self.name = name
        self.threads = TORCH_CONFIGS[name][1]

    def run(self, n: int) -> float:
        TorchProcess.proc.stdin.write(f"{self.name}\t{n}\n")
        TorchProcess.proc.stdin.flush()
        return float(TorchProcess.proc.stdout.readline())


# ------------------------------------------------------------------ masked padding model
class MaskedCellOp(nn.Module):
    """Every tss op on one edge; the traced one-hot ``mask`` [5] (TSS_OPS order) picks one."""

    features: int

    @nn.compact
    def __call__(self, x, mask, train: bool):
        conv1 = nats_models.ReLUConvBN(self.features, 1)(x, train)
        conv3 = nats_models.ReLUConvBN(self.features, 3)(x, train)
        pool = nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
        return mask[1] * x + mask[2] * conv1 + mask[3] * conv3 + mask[4] * pool  # mask[0]: none


class MaskedTss(nn.Module):
    """tss skeleton whose cell ops come from the ``mask`` collection ([6, 5] one-hot), so one
    compiled program trains any cell ("masked padding" to the all-ops supernet)."""

    C: int
    N: int
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        mask = self.variable("mask", "ops", lambda: jnp.ones((6, len(nats_models.TSS_OPS)), jnp.float32)).value
        x = nn.Conv(self.C, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
        x = nats_models._bn(train)(x)
        for stage, c in enumerate((self.C, 2 * self.C, 4 * self.C)):
            if stage:
                x = nats_models.ResidualReduction(c)(x, train)
            for _ in range(self.N):
                nodes, e = [x], 0
                for i in range(1, 4):
                    total = 0.0
                    for j in range(i):
                        total = total + MaskedCellOp(c)(nodes[j], mask[e], train)
                        e += 1
                    nodes.append(total)
                x = nodes[-1]
        x = nn.relu(nats_models._bn(train)(x))
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def one_hot_ops(ops) -> np.ndarray:
    return np.eye(len(nats_models.TSS_OPS), dtype=np.float32)[[nats_models.TSS_OPS.index(o) for o in ops]]


def set_mask(stepper: JaxStepper, ops):
    st = stepper.state
    st["model_state"]["mask"] = {"ops": jnp.asarray(one_hot_ops(ops))}
    stepper.state = st


def stack_states(states):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def vmapped_step(step):
    return jax.jit(jax.vmap(step, in_axes=(0, None, 0, None)), donate_argnums=0)  # (state, batch, key, consts)


def batching_study(tr, recipe, reps: int, steps: int, K: int = 2) -> list[dict]:
    """Sequential vs vmap vs masked padding on the small network (C=8, N=1)."""
    C, N = 8, 1
    rows = []
    archs = [BENCH_OPS, OTHER_OPS]
    seq = [JaxStepper(nats_models.build_tss(o, 10, C, N), tr, recipe, seed=i) for i, o in enumerate(archs)]
    same = [seq[0]] + [JaxStepper(nats_models.build_tss(BENCH_OPS, 10, C, N), tr, recipe, seed=10 + i) for i in range(K - 1)]
    masked = JaxStepper(MaskedTss(C, N, 10), tr, recipe, seed=0)
    set_mask(masked, BENCH_OPS)

    # vmap over K same-shape children (different seeds)
    vstate = stack_states([s.state for s in same])
    vkeys = jnp.stack([s.key for s in same])
    vstep = vmapped_step(seq[0].step)
    t0 = time.perf_counter()
    vstep = vstep.lower(vstate, seq[0].batch, vkeys, seq[0].consts).compile()
    v_compile = time.perf_counter() - t0
    # vmap over K masked children (different cells, one program)
    mstates = []
    for i, ops in enumerate(archs):
        m = JaxStepper.__new__(JaxStepper)
        m.state = jax.tree.map(jnp.copy, masked.state)
        set_mask(m, ops)
        mstates.append(m.state)
    mvstate = stack_states(mstates)
    mvstep = vmapped_step(masked.step)
    t0 = time.perf_counter()
    mvstep = mvstep.lower(mvstate, masked.batch, vkeys, masked.consts).compile()
    mv_compile = time.perf_counter() - t0

    def run_v(state_ref, fn, stepper):
        def go():
            for _ in range(steps):
                state_ref[0], m = fn(state_ref[0], stepper.batch, vkeys, stepper.consts)
            jax.block_until_ready(m)
        return go

    vref, mvref = [vstate], [mvstate]
    configs = {
        "sequential, K same-shape children": lambda: [s.run(steps) for s in same],
        "jax.vmap over K same-shape children": run_v(vref, vstep, seq[0]),
        "sequential, K different cells": lambda: [s.run(steps) for s in seq],
        "masked padding (supernet program), K cells sequentially": lambda: [masked.run(steps) for _ in archs],
        "jax.vmap over K masked cells": run_v(mvref, mvstep, masked),
    }
    compile_s = {
        "sequential, K same-shape children": seq[0].compile_seconds,  # one program for all K
        "jax.vmap over K same-shape children": v_compile,
        "sequential, K different cells": sum(s.compile_seconds for s in seq),
        "masked padding (supernet program), K cells sequentially": masked.compile_seconds,
        "jax.vmap over K masked cells": mv_compile,
    }
    for f in configs.values():  # warm-up
        f()
    times = {k: [] for k in configs}
    for _ in range(reps):
        for k, f in configs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    for k, ts in times.items():
        per_round = float(np.median(ts))
        rows.append({"config": k, "K": K, "C": C, "N": N, "batch": recipe.batch_size, "steps_per_child": steps,
                     "median_seconds_per_child_step": per_round / (K * steps),
                     "child_images_per_second": K * steps * recipe.batch_size / per_round,
                     "compile_seconds": compile_s[k], "reps": reps})
    base = rows[0]["child_images_per_second"]
    base_diff = rows[2]["child_images_per_second"]
    for r in rows:
        r["speed_vs_sequential"] = r["child_images_per_second"] / (base if "same-shape" in r["config"] else base_diff)
    return rows


# ------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--N", type=int, default=5)
    p.add_argument("--batch", type=int, default=train.PROXY.batch_size)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="train steps per configuration per round")
    p.add_argument("--children", type=int, default=1, choices=[1, 2], help="new shapes timed end to end")
    p.add_argument("--quick", action="store_true", help="tiny network, for a smoke test")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_worker:
        return torch_worker(args)
    if args.quick:
        args.C, args.N, args.batch, args.rounds, args.steps = 4, 1, 32, 2, 2
    import torch

    torch.set_num_threads(2)
    t_all = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    recipe = train.PROXY.replace(batch_size=args.batch)
    tr, va = train.prepare_data(CIFAR10, train.PROXY, seed=0)
    print(f"data: {len(tr)} train / {len(va)} valid real CIFAR-10 images", flush=True)

    peak = matmul_peak()
    print("matmul peak", peak, flush=True)

    # ---- 1+2: JAX vs PyTorch, same network and batch; FLOPs
    model = nats_models.build_tss(BENCH_OPS, 10, args.C, args.N)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    j1 = JaxStepper(model, tr, recipe, seed=0)
    j2 = JaxStepper(model, tr, recipe, seed=0, placement=mesh)
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        {"params": j1.state["params"], **j1.state["model_state"]}, jnp.zeros((args.batch, 32, 32, 3))).compile()
    fwd_flops = xla_flops(fwd)
    n3, n1 = BENCH_OPS.count("nor_conv_3x3"), BENCH_OPS.count("nor_conv_1x1")
    nats_madds = (7.78305 + 35.38944 * n3 + 3.93216 * n1) * 1e6 if (args.C, args.N) == (16, 5) else float("nan")
    print(f"compile 1dev {j1.compile_seconds:.1f}s mesh {j2.compile_seconds:.1f}s; xla flops/step {j1.flops:.3g} "
          f"fwd {fwd_flops:.3g}", flush=True)
    configs = {"jax jit, 1 XLA:CPU device": j1, "jax jit, data-parallel over 2 host devices": j2}
    configs.update({k: TorchProcess(k, args) for k in TORCH_CONFIGS})
    for s in configs.values():
        s.run(1)  # warm-up
    times = {k: [] for k in configs}
    for r in range(args.rounds):
        for k, s in configs.items():
            t = time.perf_counter()
            s.run(args.steps)
            times[k].append((time.perf_counter() - t) / args.steps)
        print("round", r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    rows = []
    torch_best = min(np.median(times[k]) for k in configs if k.startswith("pytorch"))
    for k, ts in times.items():
        step_s = float(np.median(ts))
        rows.append({"config": k, "C": args.C, "N": args.N, "batch": args.batch, "ops": "|".join(BENCH_OPS),
                     "median_step_seconds": step_s, "min_step_seconds": float(min(ts)),
                     "images_per_second": args.batch / step_s,
                     "speedup_vs_best_pytorch": torch_best / step_s,
                     "xla_flops_per_step": j1.flops, "achieved_gflops": j1.flops / step_s / 1e9,
                     "rounds": args.rounds, "steps_per_round": args.steps,
                     "compile_seconds": getattr(configs[k], "compile_seconds", float("nan")),
                     "threads": "XLA:CPU default pool (2 cores)" if k.startswith("jax") else f"torch.set_num_threads({configs[k].threads})"})
    thr = pd.DataFrame(rows)
    # the peak again right after the rounds (the load on the shared machine drifts); keep the best
    peak = best_peak(peak, matmul_peak())
    thr["matmul_peak_gflops"] = peak["jax_best_gflops"]
    thr["fraction_of_matmul_peak"] = thr.achieved_gflops / peak["jax_best_gflops"]
    thr.to_csv(OUT / "throughput.csv", index=False)
    print("matmul peak", peak, flush=True)
    print(thr[["config", "median_step_seconds", "images_per_second", "speedup_vs_best_pytorch",
               "fraction_of_matmul_peak"]].to_string(index=False), flush=True)

    # ---- 3: children per hour with the PROXY recipe (cold compile cache, new shape each)
    child_rows = []
    proxy_steps = (len(tr) // args.batch) * train.PROXY.epochs  # PROXY's steps when --batch is PROXY's
    best_jax = thr[thr.config.str.startswith("jax")].sort_values("median_step_seconds").iloc[0]
    for i, ops in enumerate([OTHER_OPS, ("nor_conv_3x3",) * 3 + ("skip_connect",) * 3][:args.children]):
        m = nats_models.build_tss(ops, 10, args.C, args.N)
        tiny = tr.subset(np.arange(args.batch * 2))
        res = train.train_model(m, tiny, va, recipe.replace(epochs=1), seed=i,
                                placement=mesh if "data-parallel" in best_jax.config else None, keep_variables=False)
        # res.seconds = init + compile + 2 steps + eval compile + eval pass over the valid split
        overhead = res.seconds - 2 * best_jax.median_step_seconds
        child_s = overhead + proxy_steps * best_jax.median_step_seconds
        child_rows.append({"ops": "|".join(ops), "init_seconds": res.init_seconds,
                           "first_step_seconds_incl_compile": res.compile_seconds,
                           "per_child_overhead_seconds": overhead, "proxy_steps": proxy_steps,
                           "step_seconds": best_jax.median_step_seconds, "child_seconds": child_s,
                           "children_per_hour": 3600.0 / child_s, "config": best_jax.config, "train_images": len(tr)})
    children = pd.DataFrame(child_rows)
    children.to_csv(OUT / "children_per_hour.csv", index=False)
    print(children.to_string(index=False), flush=True)

    # ---- 4: batching children
    small_recipe = train.PROXY.replace(batch_size=64)
    batching = pd.DataFrame(batching_study(tr, small_recipe, reps=args.rounds, steps=max(2, args.steps)))
    batching.to_csv(OUT / "batching.csv", index=False)
    print(batching[["config", "child_images_per_second", "speed_vs_sequential", "compile_seconds"]].to_string(index=False), flush=True)

    wall = time.perf_counter() - t_all
    write_summary(thr, children, batching, peak, fwd_flops, nats_madds, args, wall)
    from layernas.provenance import write_provenance

    write_provenance(OUT, wall, " ".join(["python"] + sys.argv), torch=torch.__version__,
                     torch_threads=torch.get_num_threads(), xla_flags=os.environ.get("XLA_FLAGS", ""),
                     matmul_peak=peak, C=args.C, N=args.N, batch=args.batch, rounds=args.rounds, steps=args.steps)


def write_summary(thr, children, batching, peak, fwd_flops, nats_madds, args, wall):
    j = thr[thr.config.str.startswith("jax")].set_index("config")
    t = thr[thr.config.str.startswith("pytorch")].set_index("config")
    best_j, best_t = j.median_step_seconds.idxmin(), t.median_step_seconds.idxmin()
    ratio = t.median_step_seconds.min() / j.median_step_seconds.min()
    flops = thr.xla_flops_per_step.iloc[0]
    lines = [
        "# Trainer throughput (CPU)", "",
        f"Machine: {os.cpu_count()} CPU cores, shared with other jobs during the run; every time is the median of "
        f"{args.rounds} interleaved rounds of {args.steps} steps. Wall time of the whole benchmark: {wall:.0f} s.", "",
        f"Network: NATS tss skeleton C={args.C}, N={args.N}, cell `{'|'.join(BENCH_OPS)}`, batch {args.batch}, "
        "real CIFAR-10 32x32 images, crop+flip augmentation, SGD-Nesterov + weight decay, BatchNorm in train mode.", "",
        "## JAX vs PyTorch (same network, batch, machine, run)", "",
        "| config | median s/step | images/s | vs best PyTorch | achieved GFLOP/s | fraction of matmul peak |",
        "|---|---|---|---|---|---|"]
    for r in thr.itertuples():
        lines.append(f"| {r.config} | {r.median_step_seconds:.3f} | {r.images_per_second:.1f} | "
                     f"{r.speedup_vs_best_pytorch:.2f}x | {r.achieved_gflops:.2f} | {r.fraction_of_matmul_peak:.3f} |")
    lines += [
        "", f"Best JAX ({best_j}) vs best PyTorch ({best_t}): **{ratio:.2f}x** the images/s.",
        "PyTorch runs in a child process (no JAX thread pool beside it) with `torch.set_num_threads(2)` "
        "(and 1, in case OpenMP barriers suffer on the shared, oversubscribed machine); XLA:CPU uses its own "
        "thread pool over the 2 cores.", "",
        f"FLOPs per train step: {flops:.4g} (XLA `cost_analysis` of the compiled step, which counts a "
        f"multiply-add as 2 FLOPs); 3 x forward ({fwd_flops:.4g} from the compiled inference function) = "
        f"{3 * fwd_flops:.4g}" + (f"; NATS closed form 3 x 2 x {nats_madds / 1e6:.2f}M MAdds x batch = "
                                  f"{6 * nats_madds * args.batch:.4g}" if math.isfinite(nats_madds) else "") + ".",
        f"Matmul peak: {peak['jax_best_gflops']:.1f} GFLOP/s (best float32 `jnp.matmul` over sizes "
        f"{peak['sizes']} x {peak['reps']} repeats, measured before and after the rounds "
        f"({', '.join(f'{x:.1f}' for x in peak['jax_best_gflops_start_end'])}); best at n={peak['n']}, median there "
        f"{peak['jax_median_gflops']:.1f}; NumPy best {peak['numpy_best_gflops']:.1f}). The PyTorch rows use the same "
        "FLOP count (same network and batch), so their fraction can exceed 1: XLA's matmul does not reach the "
        "cores' FMA peak, and oneDNN's convolutions beat it.", "",
        "## Children per hour, PROXY recipe", "",
        f"PROXY = {train.PROXY.epochs} epochs x {int(children.proxy_steps.iloc[0]) // train.PROXY.epochs} steps of batch "
        f"{train.PROXY.batch_size} ({int(children.train_images.iloc[0]):,} train images), network C={args.C}, N={args.N}, "
        f"{children.config.iloc[0]}. Per-child overhead (fast numpy init, train-step compile, eval compile, "
        "validation pass on 1,000 images) measured on new shapes with a cold compilation cache; train time = steps x "
        "the median step time above.", "",
        "| cell | init s | first step incl. compile s | overhead s | child s | children/hour |", "|---|---|---|---|---|---|"]
    for r in children.itertuples():
        lines.append(f"| `{r.ops}` | {r.init_seconds:.2f} | {r.first_step_seconds_incl_compile:.1f} | "
                     f"{r.per_child_overhead_seconds:.1f} | {r.child_seconds:.0f} | {r.children_per_hour:.1f} |")
    lines += ["", "## Batching children: vmap / masked padding vs sequential", "",
              f"Network C=8, N=1, batch 64, K={int(batching.K.iloc[0])} children. Speed = child-images trained per "
              "second; compile is per program (sequential different cells: one compile per cell).", "",
              "| config | child images/s | vs sequential | compile s |", "|---|---|---|---|"]
    for r in batching.itertuples():
        lines.append(f"| {r.config} | {r.child_images_per_second:.1f} | {r.speed_vs_sequential:.2f}x | {r.compile_seconds:.1f} |")
    b = batching.set_index("config")
    seq_step = 1.0 / b.loc["sequential, K different cells", "child_images_per_second"]
    mask_step = 1.0 / b.loc["masked padding (supernet program), K cells sequentially", "child_images_per_second"]
    per_shape_compile = b.loc["sequential, K different cells", "compile_seconds"] / int(batching.K.iloc[0])
    if mask_step > seq_step:
        steps_even = per_shape_compile / ((mask_step - seq_step) * int(batching.batch.iloc[0]))
        lines += ["", f"Masked padding saves a compile per new cell ({per_shape_compile:.1f} s here) but each step costs "
                  f"{mask_step / seq_step:.2f}x; it only pays for children trained fewer than ~{steps_even:.0f} steps "
                  f"(PROXY trains {int(children.proxy_steps.iloc[0])})."]
    lines += ["", "Files: `throughput.csv`, `children_per_hour.csv`, `batching.csv`, `provenance.json`."]
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
