"""What an accelerator buys: the train steps, children per hour and vmap over children, in one command.

On whatever JAX's default device is (a GPU when there is one), measures:

1. **classifier train step**: NATS tss C=16 N=5, batch 128 (the trainer's jitted, donated step:
   augmentation, forward, backward, SGD-Nesterov);
2. **MobileNet train step**: MobileNetV2-CIFAR (88.0M MAdds), batch 128, with the depthwise
   convs as grouped convolutions (``lax``) and as shifted multiply-adds (``shifted``, the CPU
   default); which one ``depthwise="auto"`` should pick on this device;
3. **codec train step**: the default scale hyperprior (N=128, M=192), 8 crops of 64x64, with the
   stride-1 reformulated convs and with lax's strided and transposed convs;
4. **children per hour**: new tss cells (C=8, N=1, the PROXY recipe) trained and validated end
   to end through the trainers' evaluator;
5. **vmap over K children**: ``jax.vmap`` of the train step over K same-shape children (different
   seeds) against K sequential children, K = 1, 4, 16 (tss C=8 N=1, batch 64).

Images are real CIFAR-10 / photos when the data folder is there, else random pixels of the same
shapes (a step's time does not depend on the pixel values; the data source is recorded). Each
section is skipped once ``--budget-s`` (default 540 s, to fit 10 minutes) is spent. Writes
``results/device/{device_check.csv, summary.md, provenance.json}``.

Usage: ``python benchmarks/device_check.py`` on the accelerator machine; ``--quick`` is a tiny
CPU smoke test (what the test suite runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_throughput as tt  # noqa: E402

from layernas.trainers import codec_model, data as data_lib, nats_models, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "device"
COLUMNS = ["section", "config", "K", "seconds_per_step", "items_per_second", "speedup", "compile_seconds", "notes"]


def synthetic_cifar(n_train: int, n_valid: int, seed: int = 0):
    """Random 32x32 RGB images in 10 classes, shaped like the PROXY split."""
    rng = np.random.default_rng(seed)
    classes = tuple(f"class{i}" for i in range(10))

    def make(n):
        return data_lib.ImageDataset(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                                     (np.arange(n) % 10).astype(np.int32), classes)
    return make(n_train), make(n_valid)


def cifar(quick: bool):
    """(train, valid, source): real CIFAR-10 PROXY split if present, else synthetic."""
    n_train, n_valid = (64, 32) if quick else (4000, 1000)
    if (tt.CIFAR10 / "train").is_dir() and not quick:
        tr, va = train.prepare_data(tt.CIFAR10, train.PROXY, seed=0)
        return tr, va, "real CIFAR-10"
    tr, va = synthetic_cifar(n_train, n_valid)
    return tr, va, "random pixels"


def timed_steps(run, steps: int, rounds: int) -> float:
    """Median seconds per step of ``run(steps)`` over ``rounds`` (after a warm-up)."""
    run(1)
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        run(steps)
        out.append((time.perf_counter() - t) / steps)
    return float(np.median(out))


def classifier_rows(tr, C, N, batch, steps, rounds) -> list[dict]:
    recipe = train.PROXY.replace(batch_size=batch)
    s = tt.JaxStepper(nats_models.build_tss(tt.BENCH_OPS, tr.num_classes, C, N), tr, recipe, seed=0)
    sec = timed_steps(s.run, steps, rounds)
    return [{"section": "classifier train step", "config": f"tss C={C} N={N} batch {batch}", "K": 1,
             "seconds_per_step": sec, "items_per_second": batch / sec, "speedup": float("nan"),
             "compile_seconds": s.compile_seconds, "notes": f"{s.flops:.3g} XLA FLOPs/step"}]


def mobilenet_rows(width: float, batch: int, steps: int, rounds: int) -> list[dict]:
    from mobilenet_step import JaxStepper as MobileNetStepper, network

    rows = []
    for impl in ("lax", "shifted"):
        s = MobileNetStepper(width, batch, impl)
        sec = timed_steps(s.run, steps, rounds)
        rows.append({"section": "mobilenet train step", "config": f"mobilenetv2-cifar width {width:g} "
                     f"({network(width)[1] / 1e6:.1f}M MAdds) batch {batch}, depthwise={impl}", "K": 1,
                     "seconds_per_step": sec, "items_per_second": batch / sec, "speedup": float("nan"),
                     "compile_seconds": s.compile_seconds, "notes": ""})
    for r in rows:
        r["speedup"] = rows[0]["seconds_per_step"] / r["seconds_per_step"]  # vs the grouped convolution
    return rows


def codec_rows(crops, config, steps, rounds, implementations) -> list[dict]:
    import dataclasses

    from perf_summary import JaxCodecStepper

    rows = []
    for impl in implementations:
        s = JaxCodecStepper(dataclasses.replace(config, conv_impl=impl), crops)
        sec = timed_steps(s.run, steps, rounds)
        rows.append({"section": "codec train step", "config": f"N={config.analysis_width} M={config.latent_channels} "
                     f"batch {len(crops)} {crops.shape[1]}x{crops.shape[2]}, conv_impl={impl}", "K": 1,
                     "seconds_per_step": sec, "items_per_second": len(crops) / sec, "speedup": float("nan"),
                     "compile_seconds": s.compile_seconds, "notes": f"{s.flops:.3g} XLA FLOPs/step"})
    base = rows[-1]["seconds_per_step"] if len(rows) > 1 else float("nan")
    for r in rows:
        r["speedup"] = base / r["seconds_per_step"]  # vs the lax formulation
    return rows


def children_rows(tr, va, n_children: int, recipe_overrides, C: int = 8, N: int = 1) -> list[dict]:
    from layernas.evaluator import Trial, trial_seed
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.trainers.evaluator import make_trainer_evaluator

    space = NatsTss("cifar10")
    ev = make_trainer_evaluator(space, (tr, va), "proxy", devices="single", compilation_cache=None,
                                model_kwargs={"C": C, "N": N}, recipe_overrides=recipe_overrides)
    rng = np.random.default_rng(1)
    secs = []
    for i in range(n_children):
        t = time.perf_counter()
        res = ev.evaluate(Trial(i, space.random_arch(rng), trial_seed(0, i)))
        secs.append(time.perf_counter() - t)
        if not res.ok:
            raise RuntimeError(f"child {i} failed: {res.error}")
    child_s = float(np.mean(secs))
    return [{"section": "children per hour", "config": f"tss C={C} N={N}, {n_children} new cells, "
             f"PROXY{' ' + str(recipe_overrides) if recipe_overrides else ''}", "K": 1,
             "seconds_per_step": float("nan"), "items_per_second": 3600.0 / child_s, "speedup": float("nan"),
             "compile_seconds": float("nan"), "notes": "children/hour end to end; seconds per child: "
             + ", ".join(f"{s:.1f}" for s in secs)}]


def vmap_rows(tr, Ks, batch, steps, rounds, C=8, N=1) -> list[dict]:
    """jax.vmap over K same-shape children vs K children one after another."""
    recipe = train.PROXY.replace(batch_size=batch)
    model = nats_models.build_tss(tt.BENCH_OPS, tr.num_classes, C, N)
    one = tt.JaxStepper(model, tr, recipe, seed=0)
    seq = timed_steps(one.run, steps, rounds)  # K sequential children run this program K times
    rows = []
    for K in Ks:
        states = [one.state] + [tt.JaxStepper(model, tr, recipe, seed=k).state for k in range(1, K)]
        vstate = tt.stack_states([jax.tree.map(jnp.copy, s) for s in states])
        keys = jnp.stack([jax.random.key(k) for k in range(K)])
        t = time.perf_counter()
        vstep = tt.vmapped_step(one.step).lower(vstate, one.batch, keys, one.consts).compile()
        compile_s = time.perf_counter() - t
        ref = [vstate]

        def run(n):
            for _ in range(n):
                ref[0], m = vstep(ref[0], one.batch, keys, one.consts)
            jax.block_until_ready(m)

        sec = timed_steps(run, steps, rounds)
        for config, s, c in (("sequential", K * seq, one.compile_seconds), ("jax.vmap", sec, compile_s)):
            rows.append({"section": "vmap over K children", "config": f"{config}, tss C={C} N={N} batch {batch}",
                         "K": K, "seconds_per_step": s, "items_per_second": K * batch / s,
                         "speedup": K * seq / s, "compile_seconds": c,
                         "notes": "seconds per step of all K children together"})
    return rows


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}: {getattr(d, 'device_kind', '?')} x {jax.device_count()}"


def write_markdown(df: pd.DataFrame, out: Path, wall: float, source: str, skipped: list[str], quick: bool) -> None:
    lines = ["# Device check", "",
             f"Device: **{device_name()}**; JAX {jax.__version__}. Images: {source}. Wall time: {wall:.0f} s."
             + (" **Quick mode: tiny sizes, the numbers are not meaningful.**" if quick else ""), "",
             "| section | config | K | s/step | items/s | speedup | compile s | notes |", "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.section} | {r.config} | {r.K} | {r.seconds_per_step:.4g} | {r.items_per_second:.4g} | "
                     f"{r.speedup:.3g} | {r.compile_seconds:.3g} | {r.notes} |")
    lines += ["", "items/s: images (classifier, vmap: child-images), crops (codec), children per hour (children). "
              "Speedup: codec vs conv_impl=lax; vmap vs K sequential children."]
    if skipped:
        lines += ["", f"Skipped (time budget spent): {', '.join(skipped)}."]
    lines += ["", "Reproduce: `python benchmarks/device_check.py` (`--quick`: a tiny CPU smoke test)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes on any device (the test suite's smoke test)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--budget-s", type=float, default=540.0, help="skip the remaining sections after this many seconds")
    args = p.parse_args(argv)
    if args.budget_s <= 0:
        p.error(f"--budget-s {args.budget_s}: expected a positive number of seconds")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    tr, va, source = cifar(q)
    steps, rounds = (1, 1) if q else (5, 3)
    if q:
        crops = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
        codec_cfg = codec_model.CodecConfig.small(4, 4)
    else:
        photos = tt.SHARED / "data" / "photos"
        if photos.is_dir():
            from perf_summary import codec_crops

            crops = codec_crops(8, 64)
        else:
            crops = np.random.default_rng(0).random((8, 64, 64, 3), dtype=np.float32)
        codec_cfg = codec_model.CodecConfig()
    sections = [
        ("classifier", lambda: classifier_rows(tr, *((4, 1, 8) if q else (16, 5, 128)), steps, rounds)),
        ("mobilenet", lambda: mobilenet_rows(*((0.25, 8) if q else (1.0, 128)), steps, rounds)),
        ("codec", lambda: codec_rows(crops, codec_cfg, steps, rounds, ("rearranged",) if q else ("rearranged", "lax"))),
        ("children", lambda: children_rows(tr, va, 1 if q else 3, {"epochs": 1, "batch_size": 16} if q else None,
                                          *((4, 1) if q else (8, 1)))),
        ("vmap", lambda: vmap_rows(tr, (2,) if q else (1, 4, 16), 8 if q else 64, steps, rounds,
                                   *((4, 1) if q else (8, 1)))),
    ]
    rows, skipped = [], []
    for name, fn in sections:
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append(name)
            continue
        print(f"{name} ...", flush=True)
        rows += fn()
        df = pd.DataFrame(rows, columns=COLUMNS)
        df.to_csv(args.out / "device_check.csv", index=False)  # written as it goes
        print(df.tail(4).to_string(index=False), flush=True)
    wall = time.perf_counter() - t0
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.to_csv(args.out / "device_check.csv", index=False)
    write_markdown(df, args.out, wall, source, skipped, q)
    from layernas.provenance import write_provenance

    write_provenance(args.out, wall, " ".join(["python", sys.argv[0]] + list(argv if argv is not None else sys.argv[1:])),
                     device=device_name(), images=source, quick=q, skipped=skipped,
                     xla_flags=os.environ.get("XLA_FLAGS", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
