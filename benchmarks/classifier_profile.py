"""Where the classifier train step's time goes on XLA:CPU, and what changes it.

The NATS tss network (C=16, N=5, batch 128, the cell of ``benchmarks/trainer_throughput.py``),
each piece jitted and timed on its own, interleaved in rounds with PyTorch channels_last's whole
step (2 threads, separate process) in the same run:

* the whole train step (augmentation, forward, backward, SGD-Nesterov update), at batch 64,
  128 and 256 (time per 128 images);
* forward in train mode (BatchNorm batch statistics), forward + backward, augmentation +
  normalisation alone, the optimizer update alone;
* forward + backward with BatchNorm removed (what fusing BN away could buy at most);
* which convolutions of the compiled step XLA sends to YNNPACK (the rest run on Eigen).

Writes ``results/perf/classifier_profile.{csv,md}``.
Usage: ``python benchmarks/classifier_profile.py [--quick]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_throughput as tt  # noqa: E402

from layernas.trainers import data as data_lib, nats_models, train  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "perf"


def conv_backends(compiled) -> dict:
    """``{"ynn": n, "eigen": n}``: convolutions inside YNNPACK fusions vs the rest."""
    txt = compiled.as_text()
    ynn_comps = {m.group(1) for m in re.finditer(r'calls=%?([\w.\-]+)[^\n]*__ynn_fusion', txt)}
    count = collections.Counter()
    for comp in re.split(r"\n(?=\S)", txt):
        name = comp.split("\n", 1)[0].split()[0].lstrip("%") if comp.strip() else ""
        n = len(re.findall(r"= \S+ convolution\(", comp))
        count["ynn" if name in ynn_comps else "eigen"] += n
    return dict(count)


def pieces(tr, C, N, batch):
    """Jitted pieces of one step, each as ``run(n) -> seconds``."""
    model = nats_models.build_tss(tt.BENCH_OPS, 10, C, N)
    recipe = train.PROXY.replace(batch_size=batch)
    stepper = tt.JaxStepper(model, tr, recipe, seed=0)
    params = jax.tree.map(jnp.copy, stepper.state["params"])  # the step donates its state
    rest = jax.tree.map(jnp.copy, stepper.state["model_state"])
    images, labels = stepper.batch["images"], stepper.batch["labels"]
    mean, std = stepper.consts
    x = data_lib.normalize(images, mean, std)

    def loss_fn(p, x):
        out, upd = model.apply({"params": p, **rest}, x, train=True, mutable=list(rest))
        return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean(), upd

    fwd = jax.jit(lambda p, x: loss_fn(p, x)[0])
    grad = jax.jit(lambda p, x: jax.grad(loss_fn, has_aux=True)(p, x)[0])
    aug = jax.jit(lambda k, im: data_lib.normalize(data_lib.random_crop_flip(k, im), mean, std))
    tx = stepper.tx
    opt_state = tx.init(params)
    g = jax.tree.map(jnp.ones_like, params)
    opt = jax.jit(lambda p, s: optax.apply_updates(p, tx.update(g, s, p)[0]))
    key = jax.random.key(0)

    def loop(f, *a):
        def run(n):
            t = time.perf_counter()
            for _ in range(n):
                out = f(*a)
            jax.block_until_ready(out)
            return time.perf_counter() - t
        return run

    def step_run(n):
        t = time.perf_counter()
        stepper.run(n)
        return time.perf_counter() - t

    return stepper, {"whole train step": step_run, "forward (train mode)": loop(fwd, params, x),
                     "forward + backward": loop(grad, params, x), "augmentation + normalisation": loop(aug, key, images),
                     "optimizer update": loop(opt, params, opt_state)}


class _NoNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    C, N, batch = (4, 1, 32) if args.quick else (16, 5, 128)
    if args.quick:
        args.rounds, args.steps = 1, 1
    t0 = time.perf_counter()
    tr, _ = train.prepare_data(tt.CIFAR10, train.PROXY, seed=0)
    stepper, runs = pieces(tr, C, N, batch)
    backends = conv_backends(stepper.compiled)
    per128 = {"whole train step": 1.0}
    for b in (batch // 2, batch * 2):
        _, r = pieces(tr, C, N, b)
        runs[f"whole train step, batch {b}"] = r["whole train step"]
        per128[f"whole train step, batch {b}"] = batch / b
    orig_bn = nats_models._bn
    nats_models._bn = lambda train, name=None: _NoNorm(name=name)  # trace-time only, for this one function
    try:
        plain = nats_models.build_tss(tt.BENCH_OPS, 10, C, N)
        variables = train.init_variables(plain, tr.images.shape, 0)
        x = data_lib.normalize(jnp.asarray(tr.images[:batch]), *map(jnp.asarray, tr.channel_stats()))
        labels = jnp.asarray(tr.labels[:batch])

        def plain_loss(p):
            out = plain.apply({"params": p}, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

        plain_grad = jax.jit(jax.grad(plain_loss)).lower(variables["params"]).compile()
    finally:
        nats_models._bn = orig_bn

    def no_bn(n):
        t = time.perf_counter()
        for _ in range(n):
            out = plain_grad(variables["params"])
        jax.block_until_ready(out)
        return time.perf_counter() - t
    runs["forward + backward without BatchNorm"] = no_bn
    torch_name = "pytorch eager, 2 threads, channels_last"
    torch_proc = tt.TorchProcess(torch_name, argparse.Namespace(C=C, N=N, batch=batch))
    runs["PyTorch channels_last whole train step"] = torch_proc.run
    times = {k: [] for k in runs}
    for f in runs.values():
        f(1)
    for r in range(args.rounds):
        for k, f in runs.items():
            times[k].append(f(args.steps) / args.steps)
        print("round", r, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    tt.TorchProcess.proc.stdin.close()
    tt.TorchProcess.proc.wait()
    med = {k: float(np.median(v)) * per128.get(k, 1.0) for k, v in times.items()}
    whole = med["whole train step"]
    torch_s = med["PyTorch channels_last whole train step"]
    df = pd.DataFrame([{"piece": k, "seconds_per_128_images": v, "fraction_of_jax_step": v / whole,
                        "vs_pytorch_step": v / torch_s} for k, v in med.items()])
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "classifier_profile.csv", index=False)
    wall = time.perf_counter() - t0
    lines = ["# Classifier train step on XLA:CPU: where the time goes", "",
             f"NATS tss C={C} N={N}, batch {batch}, cell `{'|'.join(tt.BENCH_OPS)}`, real CIFAR-10; medians of "
             f"{args.rounds} interleaved rounds of {args.steps} steps, in one run, {os.cpu_count()} shared cores. "
             f"Wall time {wall:.0f} s." + (" **Quick mode.**" if args.quick else ""), "",
             "| piece | s per 128 images | fraction of the JAX step | vs the PyTorch step |", "|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.piece} | {r.seconds_per_128_images:.3f} | {r.fraction_of_jax_step:.2f} | "
                     f"{r.vs_pytorch_step:.2f} |")
    lines += ["", f"Convolutions of the compiled step: {backends.get('ynn', 0)} in YNNPACK fusions, "
              f"{backends.get('eigen', 0)} elsewhere (Eigen). XLA sends a convolution to YNNPACK only when "
              "in x out channels > 256, so the 16->16 convs of the first stage (a third of the conv FLOPs) and "
              "the transposed convs of the stride-2 backward stay on Eigen.", "",
              "Reproduce: `python benchmarks/classifier_profile.py`."]
    (args.out / "classifier_profile.md").write_text("\n".join(lines) + "\n")
    print(df.to_string(index=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
