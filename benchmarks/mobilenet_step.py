"""The MobileNet train step on XLA:CPU: depthwise convs as grouped convs vs shifted multiply-adds, against PyTorch.

A MobileNet child spends its training in depthwise convolutions, and XLA:CPU runs grouped
convolutions (above all their kernel gradient) at a small fraction of its dense speed.
:func:`layernas.trainers.conv_ops.depthwise_conv` computes the same function as shifted
multiply-adds. This benchmark measures, in one run, interleaved in rounds (the machine is
shared):

* the whole train step of the project's training loop (``train.compiled_steps``: on-device
  crop+flip augmentation, forward in training mode, backward, SGD-Nesterov with weight
  decay, state donated) for MobileNetV2-CIFAR at width 1.0 (the searched space's default
  network, 88.0M MAdds) and width 0.5, at batch 32 (the search proxy's) and 128 (the final
  recipe's), with the depthwise convs as ``lax`` grouped convs and as ``shifted``
  multiply-adds (the default on CPU);
* the same network in PyTorch eager (``benchmarks/torch_mobilenet.py``, same layers,
  same "SAME" padding, same optimizer, same batch), 2 threads, NCHW and channels_last,
  in a separate process without JAX's thread pool;
* each distinct depthwise layer of the width-1.0 network alone, forward + backward, both ways.

Writes ``results/perf/mobilenet_step.{csv,md}``. ``ratio`` is the PyTorch (best layout)
seconds per step over ours, so above 1 means faster than PyTorch.

Usage: ``python benchmarks/mobilenet_step.py [--quick] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from worker_process import LineWorker, interleaved_medians  # noqa: E402

OUT = REPO / "results" / "perf"
TORCH_THREADS = 2
TORCH_LAYOUTS = {"pytorch eager, 2 threads, NCHW": False, "pytorch eager, 2 threads, channels_last": True}


def network(width: float):
    from layernas.search_spaces.mobilenet_v2 import mobilenet_v2_cifar

    space = mobilenet_v2_cifar(width=width)
    arch = space.default_arch()
    return space.resolve(arch), space.cost(arch)["madds"]


def fixed_batch(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, batch).astype(np.int32)


# ------------------------------------------------------------------------ PyTorch worker
def torch_worker() -> None:
    """Reads ``width\\tbatch\\tlayout\\tsteps`` lines, answers the seconds for ``steps`` steps."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_mobilenet import TorchMobileNet

    torch.set_num_threads(TORCH_THREADS)
    steppers = {}
    print("ready", flush=True)
    for line in sys.stdin:
        width, batch, layout, steps = line.rstrip("\n").split("\t")
        key = (width, batch, layout)
        if key not in steppers:
            torch.manual_seed(0)
            net = TorchMobileNet(network(float(width))[0])
            fmt = torch.channels_last if TORCH_LAYOUTS[layout] else torch.contiguous_format
            net = net.to(memory_format=fmt).train()
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            images, labels = fixed_batch(int(batch))
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous(memory_format=fmt)
            y = torch.from_numpy(labels.astype(np.int64))
            gen = torch.Generator().manual_seed(0)

            def step(net=net, opt=opt, x=x, y=y, gen=gen):
                flip = torch.rand(x.shape[0], generator=gen) < 0.5  # the augmentation's cost, roughly
                xb = torch.where(flip[:, None, None, None], x.flip(3), x)
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(net(xb), y)
                loss.backward()
                opt.step()
                return loss

            step()
            steppers[key] = step
        t = time.perf_counter()
        for _ in range(int(steps)):
            steppers[key]()
        print(time.perf_counter() - t, flush=True)


class TorchWorker(LineWorker):
    def __init__(self):
        super().__init__([sys.executable, __file__, "--torch-worker"])


# ------------------------------------------------------------------------------ JAX steps
class JaxStepper:
    """The training loop's compiled step for one (width, batch, depthwise implementation)."""

    def __init__(self, width: float, batch: int, depthwise: str):
        import jax
        import jax.numpy as jnp

        from layernas.trainers import loop, mbconv_model, train

        model = mbconv_model.MobileNet(network(width)[0], depthwise=depthwise)
        recipe = train.PROXY.replace(batch_size=batch, learning_rate=0.05)
        steps = train.compiled_steps(model, recipe, 10, total_steps=1000, steps_per_epoch=100)
        images, labels = fixed_batch(batch)
        task = train.ClassifierTask.for_recipe(model, None, recipe, num_classes=10)
        variables = loop.init_variables(model, images.shape, 0, task.init_method)
        self.state = loop.initial_state(variables, steps.tx, 0.0, loop.Placer(None))
        self.batch = {"images": jnp.asarray(images), "labels": jnp.asarray(labels)}
        self.consts = (jnp.full(3, 0.5, jnp.float32), jnp.full(3, 0.25, jnp.float32))
        self.key = jax.random.key(0)
        self.step = steps.train_step
        self._block_until_ready = jax.block_until_ready
        t = time.perf_counter()
        self.run(1)
        self.compile_seconds = time.perf_counter() - t

    def run(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.step(self.state, self.batch, self.key, self.consts)
        self._block_until_ready(metrics)
        return time.perf_counter() - t


def depthwise_layers(batch: int) -> list[dict]:
    """The distinct depthwise layers of the width-1.0 network: input shape, kernel, stride."""
    net, _ = network(1.0)
    size, out, seen = net.resolution // net.stem_stride, [], set()
    for layer in net.layers:
        key = (size, layer.hidden, layer.kernel, layer.stride)
        if key not in seen:
            seen.add(key)
            out.append({"hw": size, "channels": layer.hidden, "kernel": layer.kernel, "stride": layer.stride,
                        "batch": batch})
        size = -(-size // layer.stride)
    return out


def time_depthwise_layer(case: dict, reps: int) -> dict:
    """Forward + backward (both gradients) of one depthwise layer, grouped lax vs shifted, ms."""
    import jax
    import jax.numpy as jnp

    from layernas.trainers import conv_ops

    n, hw, c, k, s = case["batch"], case["hw"], case["channels"], case["kernel"], case["stride"]
    x = jax.random.normal(jax.random.key(0), (n, hw, hw, c))
    w = jax.random.normal(jax.random.key(1), (k, k, 1, c))
    out = {}
    for impl in ("lax", "shifted"):
        if impl == "lax":
            f = lambda a, b: jax.lax.conv_general_dilated(a, b, (s, s), "SAME", feature_group_count=c,  # noqa: E731
                                                          dimension_numbers=conv_ops.DIMENSION_NUMBERS)
        else:
            f = lambda a, b: conv_ops.depthwise_conv(a, b, s)  # noqa: E731
        g = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(f(a, b) ** 2), (0, 1)))
        jax.block_until_ready(g(x, w))
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(g(x, w))
            times.append(time.perf_counter() - t)
        out[impl] = 1e3 * float(np.median(times))
    macs = n * (-(-hw // s)) ** 2 * c * k * k
    return {**case, "mmacs_forward": macs / 1e6, "lax_ms": out["lax"], "shifted_ms": out["shifted"],
            "speedup": out["lax"] / out["shifted"]}


# ---------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="seconds: width 0.25 at batch 8, one round, no layer table")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per round and configuration")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_worker:
        torch_worker()
        return 0
    import jax

    t0 = time.perf_counter()
    configs = [(0.25, 8)] if args.quick else [(1.0, 32), (0.5, 32), (1.0, 128)]
    rounds, steps = (1, 1) if args.quick else (args.rounds, args.steps)
    worker = TorchWorker()
    rows = []
    try:
        for width, batch in configs:
            _, madds = network(width)
            runners = {}
            for impl in ("lax", "shifted"):
                st = JaxStepper(width, batch, impl)
                runners[f"jax, depthwise {impl}"] = st.run
                rows.append({"measure": "compile", "width": width, "batch": batch, "madds_m": madds / 1e6,
                             "config": f"jax, depthwise {impl}", "seconds": st.compile_seconds})
            for layout in TORCH_LAYOUTS:
                runners[layout] = lambda n, layout=layout: worker.ask(width, batch, layout, n)
            print(f"width {width} batch {batch}:", flush=True)
            times = interleaved_medians(runners, rounds, steps)
            med = {k: float(np.median(v)) for k, v in times.items()}
            torch_best = min(med[k] for k in TORCH_LAYOUTS)
            for k, sec in med.items():
                rows.append({"measure": "train step", "width": width, "batch": batch, "madds_m": madds / 1e6,
                             "config": k, "seconds": sec, "images_per_s": batch / sec,
                             "ratio_vs_pytorch": torch_best / sec})
    finally:
        worker.close()
    layers = [] if args.quick else [time_depthwise_layer(c, reps=5) for c in depthwise_layers(32)]
    wall = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(args.out / "mobilenet_step.csv", index=False)
    if layers:
        pd.DataFrame(layers).to_csv(args.out / "depthwise_layers.csv", index=False)
    write_markdown(args, df, pd.DataFrame(layers), wall, jax)
    print((args.out / "mobilenet_step.md").read_text())
    return 0


def write_markdown(args, df: pd.DataFrame, layers: pd.DataFrame, wall: float, jax) -> None:
    steps = df[df.measure == "train step"]
    lines = ["# MobileNetV2-CIFAR train step on CPU: depthwise convs, JAX vs PyTorch" + (" (QUICK)" if args.quick else ""),
             "", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} at the end; jax {jax.__version__}; {wall:.0f} s wall. Median of "
             f"{1 if args.quick else args.rounds} interleaved rounds; PyTorch {TORCH_THREADS} threads in its own "
             "process. `ratio` = best PyTorch layout's seconds / ours (above 1: faster than PyTorch).", "",
             "| width | MAdds (M) | batch | configuration | s/step | images/s | ratio vs PyTorch |",
             "|---|---|---|---|---|---|---|"]
    for r in steps.itertuples():
        lines.append(f"| {r.width:g} | {r.madds_m:.1f} | {r.batch} | {r.config} | {r.seconds:.3f} | "
                     f"{r.images_per_s:.0f} | {r.ratio_vs_pytorch:.2f} |")
    comp = df[df.measure == "compile"]
    lines += ["", "Compile + first step (s): " + "; ".join(
        f"width {r.width:g} batch {r.batch} {r.config.split(', ')[1]} {r.seconds:.1f}" for r in comp.itertuples()), ""]
    if len(layers):
        lines += ["## Each depthwise layer of the width-1.0 network (batch 32, forward + both gradients)", "",
                  "| input | channels | kernel | stride | forward MMACs | grouped lax ms | shifted ms | speed-up |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in layers.itertuples():
            lines.append(f"| {r.hw}x{r.hw} | {r.channels} | {r.kernel} | {r.stride} | {r.mmacs_forward:.1f} | "
                         f"{r.lax_ms:.1f} | {r.shifted_ms:.1f} | {r.speedup:.1f}x |")
        lines.append("")
    lines += [f"Reproduce: `python benchmarks/mobilenet_step.py{' --quick' if args.quick else ''}`.", ""]
    (args.out / "mobilenet_step.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
