"""``layernas``: the command line, a thin wrapper over the library.

    layernas search --space nats-tss --dataset cifar10 --flops-fraction 0.5
    layernas search --space nats-tss --dataset cifar10 --flops-fraction 0.5 --resume
    layernas describe --space nats-tss --arch '|nor_conv_3x3~0|+|...|'
    layernas convert-table NATS-tss-v1_0-3ffb9-simple/ tss.parquet --space tss
    layernas spaces

Bad input of any kind prints one line, ``layernas: error: ...``, and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from layernas import registry

TARGET_METRICS = ("flops", "madds", "params", "latency", "decoder_gmacs")
SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


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
    e.add_argument("--max-in-flight", type=int, default=1, help="trials in flight at once")
    e.add_argument("--evaluator", choices=["auto", "dry-run"], default="auto",
                   help="dry-run: a training-free proxy score (NOT accuracy) for trying a space")
    e.add_argument("--trainer", help="train children: proxy | nats-12 | nats-200 (with --data)")
    e.add_argument("--data", help="image folder root/<split>/<class>/*.jpg for --trainer")
    e.add_argument("--devices", default="auto", help="trainer placement: auto|candidates|data|single")
    e.add_argument("--lambda", dest="lmbda", type=float, default=0.013, help="codec RD lambda")
    e.add_argument("--width-scale", type=float, default=0.25, help="codec proxy width scale")
    e.add_argument("--proxy-steps", type=int, default=60, help="codec proxy training steps")
    e.add_argument("--backend", choices=["local", "ray"], default="local")
    e.add_argument("--address", default="auto", help="Ray address: auto | host:port | local")
    e.add_argument("--max-concurrent", type=int, help="Ray: trials in flight (default --max-in-flight)")
    e.add_argument("--gpus-per-trial", type=float, default=0.0)
    e.add_argument("--cpus-per-trial", type=float, default=1.0)
    e.add_argument("--max-retries", type=int, default=2)
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
    from layernas.searchers.base import Target

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


def make_evaluator(args, space, entry, dataset, out=None):
    if args.evaluator == "dry-run":
        from layernas.dry_run import ProxyScoreEvaluator

        return ProxyScoreEvaluator(space)
    if args.space == "codec-hyperprior":
        from layernas.trainers.codec_train import make_codec_evaluator

        return make_codec_evaluator(space, args.lmbda, width_scale=args.width_scale,
                                    steps=args.proxy_steps, seed=args.seed)
    if args.trainer:
        if not args.data:
            raise UsageError("--trainer needs --data DIR (an image folder root/<split>/<class>/*.jpg)")
        from layernas.trainers.evaluator import make_trainer_evaluator

        return make_trainer_evaluator(space, args.data, args.trainer,
                                      work_dir=(out / "trainer") if out else None,
                                      data_seed=args.seed, devices=args.devices)
    if entry.evaluator == "table":
        from layernas.tables import TableEvaluator, load_table

        table = load_table(args.table, space="sss" if args.space == "nats-sss" else "tss")
        return TableEvaluator(table, dataset, space)
    raise UsageError(f"space {args.space!r} must be trained: pass --trainer proxy --data DIR, "
                     f"or --evaluator dry-run")


def cmd_search(args) -> int:
    import layernas
    from layernas.run import Budget

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
    evaluator = make_evaluator(args, space, entry, dataset, out)
    max_in_flight = getattr(evaluator, "max_in_flight", args.max_in_flight) if args.trainer else args.max_in_flight
    if args.backend == "ray":
        import functools

        from layernas.ray_backend import make_ray_executor

        factory = functools.partial(make_evaluator, args, space, entry, dataset, out)
        evaluator = make_ray_executor(factory, args.address, args.max_concurrent or args.max_in_flight,
                                      num_gpus_per_trial=args.gpus_per_trial,
                                      num_cpus_per_trial=args.cpus_per_trial, max_retries=args.max_retries)
        max_in_flight = evaluator.max_in_flight
    settings = {"dataset": dataset, "table": str(args.table) if args.table else "default",
                "evaluator": "dry-run" if args.evaluator == "dry-run" else (args.trainer or entry.evaluator)}
    result = layernas.search(space, evaluator, budget, target, seed=args.seed, searcher=args.searcher,
                             searcher_options=options, out_dir=out, resume=args.resume,
                             max_in_flight=max_in_flight, progress=not args.quiet,
                             settings=settings)
    close = getattr(evaluator, "close", None)
    if close:
        close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(result.summary())
        if args.evaluator == "dry-run":
            print("note: --evaluator dry-run: 'validation' is a training-free proxy score, NOT accuracy")
        print(f"target: {target.metric} in [{target.min if target.min is not None else '-inf'}, "
              f"{target.max if target.max is not None else 'inf'}]" +
              "".join(f", {m} <= {v:g}" for m, v in target.caps.items()))
        print(f"wrote {out}/history.csv, frontier.csv, result.json")
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
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\nlayernas: interrupted; everything finished so far is checkpointed "
              "(continue with --resume)", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"layernas: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
