"""One table of where this library stands on this machine, every row measured side by side in one run.

Rows of ``results/perf/summary.csv`` (columns ``measure, ours, baseline, unit, ratio, notes``;
``ratio`` is always "how many times better ours is": ``baseline / ours`` for times,
``ours / baseline`` for rates):

* **GEMM peaks**: the best float32 GEMM of PyTorch, of NumPy (OpenBLAS with its threads set to
  the core count and ``OPENBLAS_CORETYPE`` unset, in a subprocess) and of ``jnp.matmul``; the
  best of them is the *achievable peak*. The theoretical FMA peak (cores x clock x FMA lanes,
  from ``/proc/cpuinfo``) is given for reference.
* **Classifier train step** (NATS tss C=16 N=5, batch 128, real CIFAR-10; the networks and
  steppers of ``benchmarks/trainer_throughput.py``): best JAX configuration against the best
  PyTorch eager configuration (NCHW or channels_last, 2 threads, in a separate process).
* **Codec train step** (the default scale hyperprior N=128 M=192, 8 random 64x64 crops of the
  training photos, RD loss + Adam + clip + EMA): JAX with the stride-1 reformulated convs
  against PyTorch (``benchmarks/torch_codec.py``) and against JAX with lax's strided and
  transposed convs (``CodecConfig(conv_impl="lax")``).
* **Fraction of the achievable peak**: each step's FLOPs (XLA ``cost_analysis``) per second
  over the achievable peak.
* **Children per hour**: a small proxy (tss C=8 N=1 under PROXY) trained end to end through the
  trainers' public evaluator, and the full-size PROXY child (per-child fixed costs measured on a
  new shape, training extrapolated from the measured step), against the numbers recorded in
  ``results/trainer/children_per_hour.csv`` and ``results/proxy_child_time/children.csv``.
* **Table comparison** (the 2,400-run NATS comparison, one process): wall time against the
  lookup floor (the runs' evaluations times one table lookup, measured in this run).

Writes ``results/perf/{summary.csv, summary.md, provenance.json}``.
Usage: ``python benchmarks/perf_summary.py [--quick] [--skip GROUP ...]`` (``--quick``: tiny
sizes, a smoke test; ``--skip classifier codec children table``: not measured this run, their
rows are kept from the previous ``summary.csv`` and marked so).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_throughput as tt  # noqa: E402
from worker_process import LineWorker, interleaved_medians  # noqa: E402

from layernas.trainers import codec_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "data" / "photos"
OUT = REPO / "results" / "perf"
COLUMNS = ["measure", "ours", "baseline", "unit", "ratio", "notes"]
TORCH_THREADS = 2


# ------------------------------------------------------------------------------ GEMM peaks
_GEMM_SCRIPT = """
import sys, time, numpy as np
best = 0.0
for n in [int(a) for a in sys.argv[1].split(',')]:
    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
    a @ b
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter(); a @ b; best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t) / 1e9)
print(best)
"""


def numpy_gemm_gflops(sizes, reps: int, unset_coretype: bool) -> float:
    """Best NumPy float32 GEMM GFLOP/s in a fresh process with OpenBLAS threads = cores
    (and ``OPENBLAS_CORETYPE`` removed when ``unset_coretype``)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(os.cpu_count()))
    if unset_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
    out = subprocess.run([sys.executable, "-c", _GEMM_SCRIPT, ",".join(map(str, sizes)), str(reps)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def jax_gemm_gflops(sizes, reps: int) -> float:
    f = jax.jit(jnp.matmul)
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        f(a, b).block_until_ready()
        for _ in range(reps):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def theoretical_fma_peak() -> dict:
    """cores x clock x (2 FLOPs per FMA x float32 lanes x FMA pipes) from ``/proc/cpuinfo``.

    Lanes: 16 with avx512f, 8 with avx2+fma, 4 otherwise; AMD family 25 (Zen 3/4) runs
    512-bit ops on 256-bit datapaths, so 8 there. Two FMA pipes per core is assumed (true
    of every recent x86 server core); it is not in the flags.
    """
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k, v)
    flags = set(fields.get("flags", "").split())
    mhz = float(fields.get("cpu MHz", "nan"))
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    if fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25":
        lanes = min(lanes, 8)
    pipes = 2
    cores = os.cpu_count()
    return {"gflops": cores * mhz / 1e3 * 2 * lanes * pipes, "cores": cores, "mhz": mhz, "lanes": lanes,
            "pipes": pipes, "model": fields.get("model name", "?"),
            "isa": "avx512f" if "avx512f" in flags else "avx2+fma" if {"avx2", "fma"} <= flags else "sse"}


# ------------------------------------------------------------------------ PyTorch worker
def torch_worker(args) -> None:
    """A process without JAX's thread pool: reads ``codec\\t<config>\\t<n>`` or
    ``gemm\\t<sizes>\\t<reps>`` lines, answers seconds (codec) or GFLOP/s (gemm)."""
    import torch

    from torch_codec import TorchCodecStepper

    torch.set_num_threads(TORCH_THREADS)
    crops = np.load(args.crops)
    steppers = {name: TorchCodecStepper(args.codec_n, args.codec_m, crops, channels_last=cl, threads=TORCH_THREADS)
                for name, cl in TORCH_CODEC_CONFIGS.items()}
    print("ready", flush=True)
    for line in sys.stdin:
        kind, a, b = line.rstrip("\n").split("\t")
        if kind == "codec":
            t = time.perf_counter()
            steppers[a].run(int(b))
            print(time.perf_counter() - t, flush=True)
        else:
            best = 0.0
            for n in map(int, a.split(",")):
                x, y = torch.rand(n, n), torch.rand(n, n)
                x @ y
                for _ in range(int(b)):
                    t = time.perf_counter()
                    x @ y
                    best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t) / 1e9)
            print(best, flush=True)


TORCH_CODEC_CONFIGS = {"pytorch eager, 2 threads, NCHW": False, "pytorch eager, 2 threads, channels_last": True}


class TorchWorker(LineWorker):
    def __init__(self, args, crops_path: Path):
        super().__init__([sys.executable, __file__, "--torch-worker", "--crops", str(crops_path),
                          "--codec-n", str(args.codec_n), "--codec-m", str(args.codec_m)])


# ------------------------------------------------------------------------------ codec step
def codec_crops(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """``batch`` random ``size`` crops (with flips) of the training photos, float32 in [0, 1]."""
    from layernas.trainers.codec_train import load_images, random_crops, split_photos

    train, _ = split_photos(load_images(PHOTOS))
    return random_crops(train, np.random.default_rng(seed), batch, size)


class JaxCodecStepper:
    """The codec train step (RD loss, global-norm clip, Adam, EMA), jitted with the state
    donated, on a fixed batch; the same step as :class:`torch_codec.TorchCodecStepper`."""

    def __init__(self, config: codec_model.CodecConfig, crops: np.ndarray, lmbda: float = 0.0130,
                 lr: float = 1e-4, ema_decay: float = 0.99):
        model = codec_model.HyperpriorCodec(config)
        opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
        params = codec_model.init_params(config, 0)

        def step(state, x, key):
            params, opt_state, ema = state
            key, sub = jax.random.split(key)

            def loss_fn(p):
                return codec_model.rd_loss(model.apply({"params": p}, x, train=True, rng=sub), x, lmbda)[0]

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
            return (params, opt_state, ema), key, loss

        self.state = (params, opt.init(params), jax.tree.map(jnp.copy, params))
        self.x = jnp.asarray(crops)
        self.key = jax.random.key(0)
        t = time.perf_counter()
        self.compiled = jax.jit(step, donate_argnums=0).lower(self.state, self.x, self.key).compile()
        self.compile_seconds = time.perf_counter() - t
        self.flops = tt.xla_flops(self.compiled)

    def run(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.state, self.key, loss = self.compiled(self.state, self.x, self.key)
        jax.block_until_ready(loss)
        return time.perf_counter() - t


# ------------------------------------------------------------------------ children per hour
def recorded_children_per_hour() -> dict:
    """Today's recorded children/hour: PROXY full size and the reduced C=8 N=1 child."""
    out = {}
    p = REPO / "results" / "trainer" / "children_per_hour.csv"
    if p.exists():
        out["proxy"] = float(pd.read_csv(p).children_per_hour.median())
    p = REPO / "results" / "proxy_child_time" / "children.csv"
    if p.exists():
        df = pd.read_csv(p)
        row = df[df.child.str.contains("C=8 N=1")]
        if len(row):
            out["small"] = 3600.0 / float(row.proxy_wall_s_estimate.iloc[0])
    return out


def children_per_hour(evaluator, archs, seed: int = 0) -> tuple[float, list[float]]:
    """Children per hour of ``evaluator.evaluate`` over new architectures, end to end (data,
    init, compile, training, validation): the trainers' public entry point, so this row
    measures whatever the trainer does today."""
    from layernas.evaluator import Trial, trial_seed

    seconds = []
    for i, arch in enumerate(archs):
        t = time.perf_counter()
        res = evaluator.evaluate(Trial(i, tuple(arch), trial_seed(seed, i)))
        seconds.append(time.perf_counter() - t)
        print(f"  child {i}: {seconds[-1]:.1f} s, ok={res.ok}", flush=True)
    return 3600.0 / float(np.mean(seconds)), seconds


def tss_archs(space, k: int, seed: int):
    rng = np.random.default_rng(seed)
    return [space.random_arch(rng) for _ in range(k)]


# -------------------------------------------------------------------------- table comparison
def table_path() -> Path:
    """The compact NATS tss table of the comparison (results/nats/ was made from it)."""
    return SHARED / "data" / "nats_tss" / "nats_tss_200ep.csv"


def run_table_comparison(seeds: int, processes: int = 1, datasets=None) -> tuple[float, float, "pd.DataFrame"]:
    """The NATS comparison as ``benchmarks/nats_comparison.py`` runs it (LayerNAS's paper
    preset), on ``processes`` processes, with the table loaded before the clock starts.

    Returns:
      ``(wall seconds, CPU seconds of this process, runs)`` of the searches; CPU seconds are
      the stable number on a shared machine (they count only this process's work).
    """
    from layernas import comparison as comp

    kwargs = {"seeds": seeds, "processes": processes, "options": {"layernas": {"preset": "paper"}}}
    if datasets is not None:
        kwargs["datasets"] = datasets
    for d in kwargs.get("datasets", comp.DATASETS):
        comp.context(table_path(), d)
    wall, cpu = time.perf_counter(), time.process_time()
    _, runs, _ = comp.run_comparison(table_path(), **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, runs


def lookup_seconds(n: int = 20000, dataset: str = "cifar10") -> float:
    """CPU seconds per table lookup (evaluate + row) on random architectures."""
    from layernas.comparison import context
    from layernas.evaluator import Trial

    space, ev = context(table_path(), dataset)
    archs = tss_archs(space, n, 0)
    t = time.process_time()
    for i, a in enumerate(archs):
        ev.evaluate(Trial(i, a, i))
        ev.row(a)
    return (time.process_time() - t) / n


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test; numbers are not meaningful)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--table-seeds", type=int, default=100, help="seeds per setting of the table comparison")
    p.add_argument("--skip", nargs="*", default=[], choices=["classifier", "codec", "children", "table"])
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--crops", help=argparse.SUPPRESS)
    p.add_argument("--codec-n", type=int, default=128)
    p.add_argument("--codec-m", type=int, default=192)
    args = p.parse_args(argv)
    if args.torch_worker:
        torch_worker(args)
        return 0
    if args.quick:
        args.rounds, args.steps, args.table_seeds, args.codec_n, args.codec_m = 2, 1, 1, 16, 16
    t_all = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    extra: dict = {}

    def save_partial():  # rows so far, so an interrupted run leaves what it measured
        pd.DataFrame(rows, columns=COLUMNS).to_csv(args.out / "summary.partial.csv", index=False)
    gemm_sizes, gemm_reps = ((256, 512), 2) if args.quick else ((1024, 2048), 3)

    codec_batch, codec_size = 8, 64
    crops = codec_crops(codec_batch, codec_size)
    crops_path = args.out / "_codec_crops.npy"
    np.save(crops_path, crops)
    worker = TorchWorker(args, crops_path)

    # ---- peaks (start of the run; measured again at the end, the best is kept)
    def peaks():
        return {"pytorch": worker.ask("gemm", ",".join(map(str, gemm_sizes)), gemm_reps),
                "numpy (OPENBLAS_CORETYPE unset)": numpy_gemm_gflops(gemm_sizes, gemm_reps, True),
                "numpy (environment as is)": numpy_gemm_gflops(gemm_sizes, gemm_reps, False),
                "jax": jax_gemm_gflops(gemm_sizes, gemm_reps)}
    peak_start = peaks()
    print("GEMM GFLOP/s", peak_start, flush=True)

    # ---- classifier step
    flops = {}
    if "classifier" not in args.skip:
        C, N, batch = (4, 1, 32) if args.quick else (16, 5, 128)
        tt_args = argparse.Namespace(C=C, N=N, batch=batch)
        recipe = tt.train.PROXY.replace(batch_size=batch)
        tr, _ = tt.train.prepare_data(tt.CIFAR10, tt.train.PROXY, seed=0)
        model = tt.nats_models.build_tss(tt.BENCH_OPS, 10, C, N)
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
        jax_cfg = {"jax jit, 1 XLA:CPU device": tt.JaxStepper(model, tr, recipe, seed=0),
                   "jax jit, data-parallel over 2 host devices": tt.JaxStepper(model, tr, recipe, seed=0, placement=mesh)}
        torch_cfg = {k: tt.TorchProcess(k, tt_args) for k in tt.TORCH_CONFIGS if "2 threads" in k}

        def timed(s):
            def go(n):
                t = time.perf_counter()
                s.run(n)
                return time.perf_counter() - t
            return go

        print("classifier step", flush=True)
        runners = {k: timed(s) for k, s in jax_cfg.items()}
        runners.update({k: (lambda s: lambda n: s.run(n))(s) for k, s in torch_cfg.items()})
        times = interleaved_medians(runners, args.rounds, args.steps)
        med = {k: float(np.median(v)) for k, v in times.items()}
        bj = min((k for k in med if k.startswith("jax")), key=med.get)
        bt = min((k for k in med if k.startswith("pytorch")), key=med.get)
        # the 1-device program's count: a data-parallel program's cost_analysis is per device
        flops["classifier"] = (jax_cfg["jax jit, 1 XLA:CPU device"].flops, med[bj], med[bt])
        extra["classifier_times"] = med
        rows.append({"measure": f"classifier train step (NATS tss C={C} N={N}, batch {batch})", "ours": med[bj],
                     "baseline": med[bt], "unit": "s/step", "ratio": med[bt] / med[bj],
                     "notes": f"ours: {bj}; baseline: {bt}; "
                              + "; ".join(f"{k} {v:.3f}" for k, v in med.items() if k not in (bj, bt))})
        tt.TorchProcess.proc.stdin.close()
        tt.TorchProcess.proc.wait()
        tt.TorchProcess.proc = None
        save_partial()

    # ---- codec step
    if "codec" not in args.skip:
        base = codec_model.CodecConfig() if (args.codec_n, args.codec_m) == (128, 192) else \
            codec_model.CodecConfig.small(args.codec_n, args.codec_m)
        jax_codec = {"jax, stride-1 reformulated convs": JaxCodecStepper(base, crops),
                     "jax, lax strided + transposed convs": JaxCodecStepper(
                         dataclasses.replace(base, conv_impl="lax"), crops)}
        print("codec step; compile s", {k: round(s.compile_seconds, 1) for k, s in jax_codec.items()}, flush=True)
        runners = {k: s.run for k, s in jax_codec.items()}
        runners.update({k: (lambda k: lambda n: worker.ask("codec", k, n))(k) for k in TORCH_CODEC_CONFIGS})
        times = interleaved_medians(runners, args.rounds, args.steps)
        med = {k: float(np.median(v)) for k, v in times.items()}
        ours, old = med["jax, stride-1 reformulated convs"], med["jax, lax strided + transposed convs"]
        bt = min(TORCH_CODEC_CONFIGS, key=med.get)
        flops["codec"] = (jax_codec["jax, lax strided + transposed convs"].flops, ours, med[bt])
        extra["codec_times"] = med
        extra["codec_xla_flops"] = {k: s.flops for k, s in jax_codec.items()}
        what = f"codec train step (hyperprior N={args.codec_n} M={args.codec_m}, {codec_batch} x {codec_size}x{codec_size} crops)"
        rows.append({"measure": what + " vs PyTorch", "ours": ours, "baseline": med[bt], "unit": "s/step",
                     "ratio": med[bt] / ours, "notes": f"baseline: {bt}; other PyTorch: "
                     + "; ".join(f"{k} {med[k]:.3f}" for k in TORCH_CODEC_CONFIGS if k != bt)})
        rows.append({"measure": what + " vs the old JAX formulation", "ours": ours, "baseline": old, "unit": "s/step",
                     "ratio": old / ours, "notes": "baseline: CodecConfig(conv_impl='lax'), same parameters and outputs"})
        save_partial()

    # ---- peaks again, fractions
    peak_end = peaks()
    peak = {k: max(peak_start[k], peak_end[k]) for k in peak_start}
    achievable_name = max(peak, key=peak.get)
    achievable = peak[achievable_name]
    theo = theoretical_fma_peak()
    worker.close()
    crops_path.unlink(missing_ok=True)
    rows.append({"measure": "achievable GEMM peak (best float32 GEMM)", "ours": achievable,
                 "baseline": theo["gflops"], "unit": "GFLOP/s", "ratio": achievable / theo["gflops"],
                 "notes": f"best: {achievable_name}; " + "; ".join(f"{k} {v:.1f}" for k, v in peak.items())
                 + f"; baseline = theoretical FMA peak {theo['cores']} cores x {theo['mhz']:.0f} MHz x 2 x "
                   f"{theo['lanes']} lanes x {theo['pipes']} pipes ({theo['isa']})"})
    for name, (fl, ours_s, torch_s) in flops.items():
        rows.append({"measure": f"{name} step: fraction of the achievable peak", "ours": fl / ours_s / 1e9 / achievable,
                     "baseline": fl / torch_s / 1e9 / achievable, "unit": "fraction",
                     "ratio": torch_s / ours_s,
                     "notes": f"{fl:.3g} FLOPs/step (XLA cost_analysis"
                              + (" of the lax formulation, i.e. the transform's FLOPs)" if name == "codec" else ")")
                              + "; baseline = PyTorch at the same FLOPs"})

    # ---- table comparison
    if "table" not in args.skip:
        print("table comparison", flush=True)
        per_lookup = lookup_seconds(2000 if args.quick else 20000)
        wall, cpu, runs = run_table_comparison(args.table_seeds, processes=1,
                                               datasets=("cifar10",) if args.quick else None)
        evaluations = int(runs.evaluations_run.sum())
        floor = evaluations * per_lookup
        rows.append({"measure": f"table comparison, {len(runs)} runs, 1 process (CPU s)", "ours": cpu,
                     "baseline": floor, "unit": "s", "ratio": floor / cpu,
                     "notes": f"searches only, table loaded first; wall {wall:.1f} s (load average "
                              f"{os.getloadavg()[0]:.1f}); baseline = lookup floor: {evaluations} evaluations x "
                              f"{per_lookup * 1e6:.1f} us CPU per lookup (measured in this run); 1 s is the reference "
                              f"limit for 2,400 runs; before/after: results/nats_tables/comparison_speed.md"})

        save_partial()

    # ---- children per hour
    if "children" not in args.skip:
        from layernas.search_spaces.nats_tss import NatsTss
        from layernas.trainers.evaluator import make_trainer_evaluator

        recorded = recorded_children_per_hour()
        space = NatsTss("cifar10")
        over = {"epochs": 1, "train_per_class": 20, "valid_per_class": 5} if args.quick else None
        print("children per hour, small proxy", flush=True)
        ev = make_trainer_evaluator(space, tt.CIFAR10, "proxy", devices="single", compilation_cache=None,
                                    model_kwargs={"C": 8, "N": 1}, recipe_overrides=over)
        small, secs = children_per_hour(ev, tss_archs(space, 1 if args.quick else 2, 1))
        rows.append({"measure": "children per hour, small proxy (tss C=8 N=1, PROXY recipe)", "ours": small,
                     "baseline": recorded.get("small", float("nan")), "unit": "children/h",
                     "ratio": small / recorded.get("small", float("nan")),
                     "notes": f"end to end through TrainerEvaluator.evaluate, {len(secs)} new cells "
                              f"({', '.join(f'{s:.0f}' for s in secs)} s)"
                              + ("; QUICK: 1 epoch on 20 images/class" if args.quick else "")
                              + "; baseline: results/proxy_child_time/children.csv (recorded, not this run)"})
        if "classifier" in args.skip or args.quick:
            pass  # the full-size row needs the classifier step of this run
        else:
            print("children per hour, PROXY full size (fixed costs measured, training extrapolated)", flush=True)
            ev = make_trainer_evaluator(space, tt.CIFAR10, "proxy", devices="single", compilation_cache=None,
                                        recipe_overrides={"epochs": 1, "train_per_class": 132, "valid_per_class": 100})
            _, (fixed_plus,) = children_per_hour(ev, tss_archs(space, 1, 2))
            step_s = extra["classifier_times"]["jax jit, 1 XLA:CPU device"]
            steps = (4000 // 128) * tt.train.PROXY.epochs
            # 132 per class, 100 held out: 320 training images, 2 steps of 128 in the 1-epoch run
            child_s = fixed_plus - 2 * step_s + steps * step_s
            proxy = 3600.0 / child_s
            rows.append({"measure": "children per hour, PROXY (tss C=16 N=5)", "ours": proxy,
                         "baseline": recorded.get("proxy", float("nan")), "unit": "children/h",
                         "ratio": proxy / recorded.get("proxy", float("nan")),
                         "notes": f"fixed costs {fixed_plus - 2 * step_s:.1f} s measured on a new cell (data, init, "
                                  f"compile, eval) + {steps} steps x {step_s:.3f} s (this run's 1-device step); "
                                  "baseline: results/trainer/children_per_hour.csv (recorded, not this run)"})

        save_partial()

    wall_all = time.perf_counter() - t_all
    previous = args.out / "summary.csv"
    df = with_skipped_rows(pd.DataFrame(rows, columns=COLUMNS),
                           pd.read_csv(previous) if previous.exists() else None, args.skip)
    df.to_csv(args.out / "summary.csv", index=False)
    (args.out / "summary.partial.csv").unlink(missing_ok=True)
    write_markdown(df, args, wall_all, theo)
    from layernas.provenance import write_provenance

    write_provenance(args.out, wall_all, " ".join(["python"] + sys.argv[:1] + list(argv or sys.argv[1:])),
                     quick=args.quick, rounds=args.rounds, steps=args.steps, peaks_start=peak_start,
                     peaks_end=peak_end, theoretical=theo, details=json.loads(json.dumps(extra, default=float)))
    print(df.to_string(index=False), flush=True)
    print(f"wall {wall_all:.0f} s", flush=True)
    return 0


SKIP_GROUPS = {"classifier": "classifier", "codec": "codec", "children": "children per hour",
               "table": "table comparison"}   # --skip name -> the prefix of its rows' measure


def with_skipped_rows(measured: pd.DataFrame, previous: pd.DataFrame | None, skipped) -> pd.DataFrame:
    """This run's rows, plus the previous ``summary.csv``'s rows of the ``--skip`` groups
    (their notes say so), in the previous file's order: so one group can be refreshed alone.

    Args:
      measured: the rows this run measured.
      previous: the summary.csv this run replaces (None: there is none).
      skipped: the ``--skip`` group names.

    Returns:
      the table to write.
    """
    prefixes = tuple(SKIP_GROUPS[g] for g in skipped)
    if previous is None or not prefixes:
        return measured
    kept = previous[previous.measure.str.startswith(prefixes) & ~previous.measure.isin(measured.measure)].copy()
    kept["notes"] = kept.notes.fillna("").astype(str) + "; kept from the previous run (--skip)"
    order = {m: i for i, m in enumerate(previous.measure)}
    out = pd.concat([measured, kept], ignore_index=True)
    rank = out.measure.map(lambda m: order.get(m, len(order)))
    return out.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)[COLUMNS]


def write_markdown(df: pd.DataFrame, args, wall: float, theo: dict) -> None:
    lines = ["# Performance summary (CPU)", "",
             f"Machine: {theo['model']}, {theo['cores']} cores at {theo['mhz']:.0f} MHz ({theo['isa']}), shared with "
             f"other jobs (load average {os.getloadavg()[1]:.1f} over the last 5 min at the end); JAX {jax.__version__}. "
             f"Wall time of the whole run: {wall:.0f} s."
             + (" **Quick mode: tiny sizes, the numbers are not meaningful.**" if args.quick else ""), "",
             f"Every step time is the median of {args.rounds} interleaved rounds of {args.steps} steps. `ratio` is how "
             "many times better ours is than the baseline (baseline/ours for times, ours/baseline for rates; for the "
             "peak row, the achievable peak over the theoretical one).", "",
             "| measure | ours | baseline | unit | ratio | notes |", "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.measure} | {r.ours:.4g} | {r.baseline:.4g} | {r.unit} | {r.ratio:.3g} | {r.notes} |")
    lines += ["", "Reproduce: `python benchmarks/perf_summary.py` (`--quick` for a smoke test)."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
