"""``layernas``: the command line, a thin wrapper over the library.

    layernas search --space nats-tss --dataset cifar10 --flops-fraction 0.5
    layernas search --space nats-tss --dataset cifar10 --flops-fraction 0.5 --resume
    layernas search --space nats-sss --trainer proxy --data DIR --epochs 1 --train-per-class 50
    layernas search ... --distributed --coordinator HOST:PORT --num-processes N --process-id I
    layernas describe --space nats-tss --arch '|nor_conv_3x3~0|+|...|'
    layernas convert-table NATS-tss-v1_0-3ffb9-simple/ tss.parquet --space tss
    layernas spaces

Bad input of any kind prints one line, ``layernas: error: ...``, and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path

from layernas.errors import first_line
from layernas import registry

TARGET_METRICS = ("flops", "madds", "params", "latency", "decoder_gmacs")
SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


CODEC_DEFAULTS = {"lmbda": 0.013, "width_scale": 0.25, "proxy_steps": 60}
# the codec spaces and their defaults; the sandwich's U-Nets are narrow already (widths 8..48,
# kept >= 4 when scaled), so its proxy scales them by 0.5, not 0.25
CODEC_SPACES = {"codec-hyperprior": CODEC_DEFAULTS, "codec-sandwich": {**CODEC_DEFAULTS, "width_scale": 0.5}}


class UsageError(ValueError):
    """Bad command-line input."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str):
        raise UsageError(message)


def parse_number(text: str) -> float:
    """'300M' -> 3e8, '0.5' -> 0.5, '2e4' -> 2e4."""
    m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKMGT]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (expected e.g. 300, 2.5e4 or 300M)")
    return float(m.group(1)) * SI.get(m.group(2), 1.0)


def parse_cap(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"cap {text!r} must look like METRIC=MAX, e.g. params=3.5")
    metric, value = text.split("=", 1)
    return metric.strip(), parse_number(value)


def build_parser() -> Parser:
    parser = Parser(prog="layernas", description="LayerNAS: hardware-aware NAS in polynomial complexity.")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, required=True)

    s = sub.add_parser("search", help="run a search (resumable)")
    s.add_argument("--space", required=True, help=f"one of: {', '.join(registry.SPACES)}")
    s.add_argument("--dataset", help="dataset of the space (NATS: cifar10, cifar100, ImageNet16-120)")
    s.add_argument("--searcher", default="layernas", help="layernas (default) or a baseline")
    t = s.add_argument_group("target (the answer must satisfy it)")
    t.add_argument("--metric", help="cost metric to bucket and target (default: the space's main one)")
    t.add_argument("--flops-fraction", "--cost-fraction", dest="fraction", type=float,
                   help="target max = this fraction of the most expensive architecture's cost")
    t.add_argument("--target-max", type=parse_number, help="target max of --metric (e.g. 300M)")
    t.add_argument("--target-min", type=parse_number, help="target min of --metric")
    for metric in TARGET_METRICS:
        t.add_argument(f"--target-{metric.replace('_', '-')}", type=parse_number, dest=f"target_{metric}",
                       help=f"shorthand for --metric {metric} --target-max VALUE")
    t.add_argument("--cap", type=parse_cap, action="append", default=[],
                   help="METRIC=MAX: also cap another metric (repeatable)")
    b = s.add_argument_group("budget and search options")
    b.add_argument("--budget-evals", type=int, help="most evaluations (default 200 when no budget is given)")
    b.add_argument("--budget-seconds", type=parse_number, help="most (simulated) seconds charged")
    b.add_argument("--num-buckets", type=int, help="LayerNAS: buckets per layer (default 100)")
    b.add_argument("--per-bucket", type=int, help="LayerNAS: candidates kept per bucket (default 1)")
    b.add_argument("--seed", type=int, default=0)
    e = s.add_argument_group("evaluation")
    e.add_argument("--table", help="NATS table: a compact .csv/.parquet, or official NATS-Bench "
                                  "files (default: the table packaged with the install)")
    e.add_argument("--max-in-flight", type=int,
                   help="trials in flight at once (default 1; with --distributed, every device of every process)")
    e.add_argument("--evaluator", choices=["auto", "dry-run"], default="auto",
                   help="dry-run: a training-free proxy score (NOT accuracy) for trying a space")
    e.add_argument("--trainer", help="train children: proxy | nats-12 | nats-200 (with --data)")
    e.add_argument("--data", help="image folder root/<split>/<class>/*.jpg for --trainer")
    e.add_argument("--devices", default="auto", help="trainer placement: auto|candidates|data|single")
    e.add_argument("--epochs", type=int, help="--trainer: epochs per child (default: the recipe's; proxy 5)")
    e.add_argument("--batch-size", type=int, help="--trainer: global batch (default: the recipe's; proxy 128)")
    e.add_argument("--train-per-class", type=int,
                   help="--trainer: images per class taken from the train split, validation included "
                        "(default: the recipe's; proxy 500)")
    e.add_argument("--valid-per-class", type=int,
                   help="--trainer: of those, images per class held out for validation (proxy 100)")
    e.add_argument("--store", nargs="?", const="default", metavar="PATH",
                   help="--trainer: train each child once into this child store and reuse it across runs "
                        "and processes (no PATH: the user cache, $LAYERNAS_CACHE/children)")
    e.add_argument("--training-seeds", type=int, default=3,
                   help="--store: each query draws one of K training seeds (default 3)")
    e.add_argument("--warm-start-epochs", type=int,
                   help="--store, nats-tss: start a child from a stored one-layer neighbour and train this many epochs")
    e.add_argument("--lambda", dest="lmbda", type=float,
                   help=f"codec: the RD trade-off of the reward (default {CODEC_DEFAULTS['lmbda']})")
    e.add_argument("--width-scale", type=float,
                   help=f"codec: proxy width multiplier in (0, 1] (default {CODEC_DEFAULTS['width_scale']}; "
                        f"codec-sandwich {CODEC_SPACES['codec-sandwich']['width_scale']})")
    e.add_argument("--proxy-steps", type=int,
                   help=f"codec: proxy training steps per child (default {CODEC_DEFAULTS['proxy_steps']})")
    e.add_argument("--backend", choices=["local", "ray"], default="local")
    e.add_argument("--address", default="auto", help="Ray address: auto | host:port | local")
    e.add_argument("--max-concurrent", type=int, help="Ray: trials in flight (default --max-in-flight)")
    e.add_argument("--gpus-per-trial", type=float, default=0.0)
    e.add_argument("--cpus-per-trial", type=float, default=1.0)
    e.add_argument("--max-retries", type=int, default=2)
    h = s.add_argument_group("multi-host search (jax.distributed); start the same command in every process")
    h.add_argument("--distributed", action="store_true",
                   help="join the processes with jax.distributed.initialize() before anything else; each process "
                        "evaluates its share of every round, only process 0 writes --out (implied by the next three)")
    h.add_argument("--coordinator", help="HOST:PORT of the coordinator, which process 0 starts (default: what JAX "
                                         "detects on TPU/SLURM/Open MPI, or $JAX_COORDINATOR_ADDRESS)")
    h.add_argument("--num-processes", type=int, help="how many processes (default: detected by JAX)")
    h.add_argument("--process-id", type=int, help="this process, 0..N-1 (default: detected by JAX)")
    o = s.add_argument_group("output")
    o.add_argument("--out", help="run directory (default: runs/<named from the arguments>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out")
    o.add_argument("--quiet", action="store_true", help="no progress line")
    o.add_argument("--json", action="store_true", help="print result.json instead of a summary")

    d = sub.add_parser("describe", help="per-layer description and costs of an architecture")
    d.add_argument("--space", required=True)
    d.add_argument("--dataset")
    d.add_argument("--arch", help="architecture string (default: the space's default)")

    c = sub.add_parser("convert-table", help="official NATS-Bench files -> compact table")
    c.add_argument("src", help="official NATS-Bench file or directory")
    c.add_argument("dst", help="output .parquet or .csv")
    c.add_argument("--space", choices=["tss", "sss"], required=True)

    sub.add_parser("spaces", help="list the named search spaces")
    return parser


def default_out_dir(args, space_name: str, dataset: str, target) -> Path:
    parts = [space_name, dataset, args.searcher, target.metric]
    if args.fraction is not None:
        parts.append(f"frac{args.fraction:g}")
    else:
        parts.append(f"max{target.max:g}" if target.max is not None else "nomax")
        if target.min is not None:
            parts.append(f"min{target.min:g}")
    parts += [f"{m}{v:g}" for m, v in sorted(target.caps.items())]
    parts.append(f"seed{args.seed}")
    name = "-".join(parts).replace("/", "_")
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def make_target(args, space, entry):
    from layernas.target import Target

    metric, target_max = args.metric, args.target_max
    for m in TARGET_METRICS:
        value = getattr(args, f"target_{m}")
        if value is not None:
            if metric not in (None, m) or target_max is not None:
                raise UsageError(f"--target-{m} conflicts with --metric/--target-max")
            metric, target_max = m, value
    metric = metric or entry.default_metric
    if metric not in space.cost_metrics:
        raise UsageError(f"unknown metric {metric!r} for space {space.name!r}; expected one of "
                         f"{', '.join(space.cost_metrics)}")
    if args.fraction is not None:
        if target_max is not None:
            raise UsageError("give either --flops-fraction or a target max, not both")
        if not 0 < args.fraction <= 1:
            raise UsageError(f"--flops-fraction must be in (0, 1], got {args.fraction:g}")
        target_max = args.fraction * space.cost_bounds((), metric)[1]
    return Target(metric, max=target_max, min=args.target_min, caps=dict(args.cap))


def distributed_options(args) -> dict | None:
    """The ``jax.distributed.initialize`` arguments from ``--distributed``, ``--coordinator``,
    ``--num-processes`` and ``--process-id``, checked; None for a one-process search.

    Args:
      args: the parsed ``search`` arguments.
    Returns:
      ``{"coordinator_address", "num_processes", "process_id"}`` (None values are left to
      JAX's detection), or None when none of the four flags is given.
    Raises:
      UsageError: a malformed coordinator, a non-positive process count, a process id out of
        range, or ``--backend ray`` with a multi-host search.
    """
    given = args.distributed or any(v is not None for v in (args.coordinator, args.num_processes, args.process_id))
    if not given:
        return None
    if args.backend == "ray":
        raise UsageError("--distributed and --backend ray are two different multi-machine backends; choose one")
    if args.coordinator is not None:
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", args.coordinator.strip())
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise UsageError(f"--coordinator {args.coordinator!r}: expected HOST:PORT with a port in 1..65535, "
                             f"e.g. 10.0.0.2:8476")
    if args.num_processes is not None and args.num_processes < 1:
        raise UsageError(f"--num-processes {args.num_processes}: expected a positive integer")
    if args.process_id is not None:
        if args.process_id < 0:
            raise UsageError(f"--process-id {args.process_id}: expected 0 or more")
        if args.num_processes is not None and args.process_id >= args.num_processes:
            raise UsageError(f"--process-id {args.process_id}: expected 0..{args.num_processes - 1} "
                             f"(--num-processes {args.num_processes})")
    return {"coordinator_address": args.coordinator and args.coordinator.strip(),
            "num_processes": args.num_processes, "process_id": args.process_id}


def recipe_overrides(args) -> dict:
    """Recipe fields set by ``--epochs``, ``--batch-size``, ``--train-per-class`` and
    ``--valid-per-class``, checked.

    Args:
      args: the parsed ``search`` arguments.
    Returns:
      ``{field: value}`` for the flags given (empty when none is).
    Raises:
      UsageError: a flag without ``--trainer``, or a value out of range.
    """
    flags = {"epochs": ("--epochs", 1), "batch_size": ("--batch-size", 1),
             "train_per_class": ("--train-per-class", 2), "valid_per_class": ("--valid-per-class", 1)}
    out = {}
    for field, (flag, least) in flags.items():
        value = getattr(args, field)
        if value is None:
            continue
        if not args.trainer:
            raise UsageError(f"{flag} sets the training recipe; it needs --trainer proxy|nats-12|nats-200")
        if value < least:
            raise UsageError(f"{flag} {value}: expected an integer >= {least}")
        out[field] = value
    train, valid = out.get("train_per_class"), out.get("valid_per_class")
    if train is not None and valid is not None and valid >= train:
        raise UsageError(f"--valid-per-class {valid} must be below --train-per-class {train} "
                         f"(validation is held out of the training images)")
    return out


def codec_options(args) -> dict | None:
    """``--lambda``, ``--width-scale`` and ``--proxy-steps`` with their defaults, checked.

    Args:
      args: the parsed ``search`` arguments.
    Returns:
      ``{"lmbda", "width_scale", "proxy_steps"}`` for a codec space (``CODEC_SPACES``:
      ``codec-hyperprior``, ``codec-sandwich``), else None.
    Raises:
      UsageError: a codec flag with another space, a classifier recipe flag with a codec
        space, or a value out of range.
    """
    flags = {"lmbda": "--lambda", "width_scale": "--width-scale", "proxy_steps": "--proxy-steps"}
    if args.space not in CODEC_SPACES:
        for field, flag in flags.items():
            if getattr(args, field) is not None:
                raise UsageError(f"{flag} applies to --space {' or '.join(CODEC_SPACES)}, not --space {args.space}")
        return None
    defaults = CODEC_SPACES[args.space]
    for flag, field in (("--epochs", "epochs"), ("--batch-size", "batch_size"),
                        ("--train-per-class", "train_per_class"), ("--valid-per-class", "valid_per_class")):
        if getattr(args, field) is not None:
            raise UsageError(f"{flag} sets the image-classifier recipe; the codec spaces train with "
                             f"--proxy-steps, --width-scale and --lambda")
    out = {k: (defaults[k] if getattr(args, k) is None else getattr(args, k)) for k in flags}
    if not (out["lmbda"] > 0 and math.isfinite(out["lmbda"])):
        raise UsageError(f"--lambda {out['lmbda']}: expected a positive number (CompressAI uses 0.0018-0.18)")
    if not 0 < out["width_scale"] <= 1:
        raise UsageError(f"--width-scale {out['width_scale']}: expected a number in (0, 1]")
    if out["proxy_steps"] < 1:
        raise UsageError(f"--proxy-steps {out['proxy_steps']}: expected an integer >= 1")
    return out


def make_evaluator(args, space, entry, dataset, out=None):
    if args.evaluator == "dry-run":
        from layernas.dry_run import ProxyScoreEvaluator

        # the score grows with model size: MAdds where the space counts them, else its main metric
        return ProxyScoreEvaluator(space, metric="madds" if "madds" in space.cost_metrics else entry.default_metric)
    if args.space in CODEC_SPACES:
        if args.space == "codec-sandwich":
            from layernas.trainers.sandwich_train import SandwichEvaluator as evaluator_class
        else:
            from layernas.trainers.codec_train import CodecEvaluator as evaluator_class
        codec = codec_options(args)
        return evaluator_class.for_search(space, codec["lmbda"], width_scale=codec["width_scale"],
                                          steps=codec["proxy_steps"], seed=args.seed)
    if args.trainer:
        if not args.data:
            raise UsageError("--trainer needs --data DIR (an image folder root/<split>/<class>/*.jpg)")
        from layernas.trainers.evaluator import make_trainer_evaluator

        devices = args.devices
        if args.distributed and devices in ("auto", "candidates"):
            devices = "single"  # DistributedExecutor spreads this process's share over its devices
        return make_trainer_evaluator(space, args.data, args.trainer,
                                      work_dir=(out / "trainer") if out else None,
                                      data_seed=args.seed, devices=devices,
                                      recipe_overrides=recipe_overrides(args), **store_options(args))
    if entry.evaluator == "table":
        from layernas.table_evaluator import TableEvaluator
        from layernas.tables import load_table

        table = load_table(args.table, space="sss" if args.space == "nats-sss" else "tss")
        return TableEvaluator(table, dataset, space)
    raise UsageError(f"space {args.space!r} must be trained: pass --trainer proxy --data DIR, "
                     f"or --evaluator dry-run")


def store_options(args) -> dict:
    """``make_trainer_evaluator``'s child-store options from ``--store``, ``--training-seeds``
    and ``--warm-start-epochs`` (empty without ``--store``).

    Raises:
      UsageError: a store flag without ``--trainer``/``--store``, or a value out of range.
    """
    if args.store is None:
        if args.warm_start_epochs is not None or args.training_seeds != 3:
            raise UsageError("--training-seeds and --warm-start-epochs need --store [PATH]")
        return {}
    if not args.trainer:
        raise UsageError("--store keeps trained children; it needs --trainer proxy|nats-12|nats-200")
    if args.training_seeds < 1:
        raise UsageError(f"--training-seeds {args.training_seeds}; expected a positive integer")
    if args.warm_start_epochs is not None and args.warm_start_epochs < 1:
        raise UsageError(f"--warm-start-epochs {args.warm_start_epochs}; expected a positive integer")
    from layernas.trainers.child_store import DEFAULT_STORE

    return {"store": DEFAULT_STORE if args.store == "default" else Path(args.store),
            "training_seeds": args.training_seeds, "warm_start_epochs": args.warm_start_epochs}


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True):
    """Send file descriptor 1 to stderr inside the block (when ``active``).

    The collectives of a multi-host run (gloo on CPU) print connection messages straight to
    the process's stdout from C++, which would corrupt ``--json`` output; this moves them,
    and anything else printed during the search, to stderr.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_search(args) -> int:
    import layernas
    from layernas.run import Budget

    init = distributed_options(args)
    if init is not None:  # before anything else touches JAX's devices
        from layernas.executors import initialize_distributed

        args.distributed = True
        try:
            initialize_distributed(**init)
        except (ValueError, TypeError, RuntimeError) as e:
            first = first_line(e)
            raise UsageError(f"jax.distributed.initialize: {first} (pass --coordinator HOST:PORT --num-processes N "
                             f"--process-id I, or run where JAX finds them: Cloud TPU, SLURM, Open MPI)") from None
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise UsageError(f"--max-in-flight {args.max_in_flight}: expected a positive integer")
    entry = registry.get_space_entry(args.space)
    dataset = args.dataset or entry.datasets[0]
    space = registry.make_space(args.space, dataset)
    target = make_target(args, space, entry)
    if args.budget_evals is None and args.budget_seconds is None:
        args.budget_evals = 200
    budget = Budget(evaluations=args.budget_evals, seconds=args.budget_seconds)
    options = {k: v for k, v in (("num_buckets", args.num_buckets), ("per_bucket", args.per_bucket))
               if v is not None}
    out = Path(args.out) if args.out else default_out_dir(args, args.space, dataset, target)
    codec = codec_options(args)
    overrides = recipe_overrides(args)
    store_options(args)  # checked before anything is built
    evaluator = make_evaluator(args, space, entry, dataset, out)
    max_in_flight = args.max_in_flight or 1
    if args.trainer:
        max_in_flight = getattr(evaluator, "max_in_flight", max_in_flight)
    if args.distributed:
        from layernas.executors import DistributedExecutor

        evaluator = DistributedExecutor(evaluator, args.max_in_flight, per_device=args.devices != "data")
        max_in_flight = evaluator.max_in_flight
    elif args.backend == "ray":
        import functools

        from layernas.executors import make_ray_executor

        factory = functools.partial(make_evaluator, args, space, entry, dataset, out)
        evaluator = make_ray_executor(factory, args.address, args.max_concurrent or args.max_in_flight or 1,
                                      num_gpus_per_trial=args.gpus_per_trial,
                                      num_cpus_per_trial=args.cpus_per_trial, max_retries=args.max_retries)
        max_in_flight = evaluator.max_in_flight
    settings = {"dataset": dataset, "table": str(args.table) if args.table else "default",
                "evaluator": "dry-run" if args.evaluator == "dry-run" else (args.trainer or entry.evaluator)}
    if overrides:
        settings["recipe_overrides"] = overrides
    if args.store is not None:
        settings["store"] = {**store_options(args), "store": str(store_options(args)["store"])}
    if codec:
        settings["codec"] = codec
    with stdout_to_stderr(args.distributed):  # gloo prints to stdout; keep --json output clean
        result = layernas.search(space, evaluator, budget, target, seed=args.seed, searcher=args.searcher,
                                 searcher_options=options, out_dir=out, resume=args.resume,
                                 max_in_flight=max_in_flight, progress=not args.quiet,
                                 settings=settings)
    close = getattr(evaluator, "close", None)
    if close:
        close()
    if getattr(evaluator, "process_index", 0) == 0:
        from layernas.provenance import write_provenance

        write_provenance(out, result.wall_seconds, " ".join(["layernas", *args.argv]), args={
            k: v for k, v in vars(args).items() if k not in ("func", "argv")})
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(result.summary())
        if args.evaluator == "dry-run":
            print("note: --evaluator dry-run: 'validation' is a training-free proxy score, NOT accuracy")
        print(f"target: {target.metric} in [{target.min if target.min is not None else '-inf'}, "
              f"{target.max if target.max is not None else 'inf'}]" +
              "".join(f", {m} <= {v:g}" for m, v in target.caps.items()))
        if getattr(evaluator, "process_index", 0) == 0:
            print(f"wrote {out}/history.csv, frontier.csv, result.json, provenance.json")
        else:
            print(f"process {evaluator.process_index} of {evaluator.process_count}: "
                  f"the run's files are written by process 0")
    return 0


def cmd_describe(args) -> int:
    space = registry.make_space(args.space, args.dataset)
    arch = space.str_to_arch(args.arch) if args.arch else space.default_arch()
    print(space.describe(arch))
    return 0


def cmd_convert(args) -> int:
    from layernas.tables import convert_official

    convert_official(args.src, args.dst, space=args.space)
    print(f"wrote {args.dst}")
    return 0


def cmd_spaces(args) -> int:
    for name, entry in registry.SPACES.items():
        print(f"{name:<22} {entry.help} (datasets: {', '.join(entry.datasets)})")
    return 0


COMMANDS = {"search": cmd_search, "describe": cmd_describe, "convert-table": cmd_convert,
            "spaces": cmd_spaces}


def main(argv: list[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        args.argv = argv
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\nlayernas: interrupted; everything finished so far is checkpointed "
              "(continue with --resume)", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        message = first_line(e)
        print(f"layernas: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
