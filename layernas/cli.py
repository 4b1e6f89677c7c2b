"""``layernas``: the command line, a thin wrapper over the library (every flag: ``docs/cli.md``).

``search`` parses its flags into one :class:`layernas.config.SearchConfig` (validated once),
builds the space, target and evaluator from it through :mod:`layernas.registry`, calls
:func:`layernas.search` and prints the result. Bad input of any kind prints one line,
``layernas: error: ...``, and exits 2; 0 is success, 1 an internal error, 130 an interrupt (Ctrl-C), 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path

from layernas import registry
from layernas.config import DEVICES, SEARCHER_NAMES, TARGET_METRICS, TRAINER_RECIPES, SearchConfig
from layernas.errors import first_line

SI = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class UsageError(ValueError):
    """Bad command-line input."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str):
        raise UsageError(message)


def parse_number(text: str) -> float:
    """'300M' -> 3e8, '0.5' -> 0.5, '2e4' -> 2e4; a finite number or ArgumentTypeError."""
    m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKMGT]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (expected e.g. 300, 2.5e4 or 300M)")
    value = float(m.group(1)) * SI.get(m.group(2), 1.0)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parse_searcher_option(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` -> (name, value): the value as JSON if it reads as JSON, else the text."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"searcher option {text!r} must look like NAME=VALUE, "
                                         "e.g. when_exhausted=stop")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value


def parse_cap(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"cap {text!r} must look like METRIC=MAX, e.g. params=3.5")
    metric, value = text.split("=", 1)
    return metric.strip(), parse_number(value)


def build_parser(argv: list[str] | None = None) -> Parser:
    """The parser; ``argv`` (when given) lets it skip building what that command does not use."""
    parser = Parser(prog="layernas", description="LayerNAS: hardware-aware NAS in polynomial complexity. "
                    "Exit codes: 0 success, 1 internal error, 2 bad input (one line on stderr), 130 interrupted, 143 terminated "
                    "(--resume continues). See docs/cli.md.")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, required=True)
    s = sub.add_parser("search", help="run a search (resumable)")
    s.add_argument("--space", required=True, help=f"one of: {', '.join(registry.SPACES)} (nats-sss needs "
                   f"--table: only the tss table ships with the install)")
    s.add_argument("--dataset", help="dataset of the space (NATS: cifar10 (default), cifar100, ImageNet16-120)")
    s.add_argument("--searcher", default="layernas", choices=SEARCHER_NAMES, metavar="NAME", help="layernas "
                   "(default), or a baseline: random (search), rea (regularized evolution), reinforce (REINFORCE)")
    t = s.add_argument_group("target (the answer must satisfy it; units as `layernas describe` prints them: "
                             "NATS flops in MFLOPs and params in MB, MobileNet madds and params as plain counts)")
    t.add_argument("--metric", help="cost metric to bucket and target (default: the space's main one)")
    t.add_argument("--flops-fraction", "--cost-fraction", dest="fraction", type=float, help="target max = this "
                   "fraction, in (0, 1], of the most expensive architecture's cost")
    t.add_argument("--target-max", type=parse_number, help="target max of --metric in the space's unit (NATS: flops in MFLOPs, "
                   "params in MB; MobileNet: madds and params as counts, suffixes k M G T: 300M = 3e8; latency in "
                   "ms; codecs: decoder_gmacs in GMACs)")
    t.add_argument("--target-min", type=parse_number, help="target min of --metric (same unit)")
    for metric in TARGET_METRICS:
        t.add_argument(f"--target-{metric.replace('_', '-')}", type=parse_number, dest=f"target_{metric}",
                       help=f"shorthand for --metric {metric} --target-max VALUE")
    t.add_argument("--cap", type=parse_cap, action="append", default=[], help="METRIC=MAX: cap another metric too, in its unit (e.g. params=3.5M)")
    b = s.add_argument_group("budget and search options")
    b.add_argument("--budget-evals", type=int, help="most evaluations (default 200 when no budget is given)")
    b.add_argument("--budget-seconds", type=parse_number, help="most seconds charged: for NATS tables the simulated "
                   "12-epoch training time of the NATS-Bench protocol (its budgets: 20000/40000/120000 s for "
                   "cifar10/cifar100/ImageNet16-120); for a trainer the measured wall time of each child")
    b.add_argument("--num-buckets", type=int, help="LayerNAS only: cost buckets per layer, 1..10000 (default 100)")
    b.add_argument("--per-bucket", type=int, help="LayerNAS only: candidates kept per bucket (default 1)")
    b.add_argument("--preset", help="LayerNAS only: 'efficient' (default: 3 random models inside the target "
                   "are evaluated first, over-budget children are repaired before they are evaluated, and "
                   "the budget left after the layerwise search goes to one-layer mutations of the best "
                   "models) or 'paper' (the paper's behaviour); see docs/searchers.md")
    b.add_argument("--searcher-option", type=parse_searcher_option, action="append", default=[],
                   metavar="NAME=VALUE", help="any other option of the searcher (repeatable; VALUE is read as "
                   "JSON if it can be), e.g. when_exhausted=stop; see docs/searchers.md")
    b.add_argument("--seed", type=int, default=0, help="seeds the searcher and every trial, 0..2**63-1 (default 0)")
    e = s.add_argument_group("evaluation")
    e.add_argument("--table", help="NATS table: a compact .csv/.parquet, or official NATS-Bench files "
                                  "(default: the packaged table). .pickle/.pbz2/.pth files and directories are "
                                  "unpickled, which can run code: load only files you trust")
    e.add_argument("--max-in-flight", type=int, help="trials in flight at once (default 1; --distributed: all devices)")
    e.add_argument("--evaluator", choices=["auto", "dry-run"], default="auto", help="dry-run: a training-free "
                   "proxy score (NOT accuracy) for trying a space")
    e.add_argument("--trainer", choices=TRAINER_RECIPES, metavar="RECIPE",
                   help=f"train children with a recipe: {' | '.join(TRAINER_RECIPES)} (needs --data)")
    e.add_argument("--data", help="training data: an image folder ROOT/train/<class>/*.png for --trainer; "
                   "a folder of .png photos for the codec spaces (see docs/data.md)")
    e.add_argument("--store", nargs="?", const="default", metavar="PATH",
                   help="--trainer: train each child once into this child store and reuse it across runs and "
                        "processes (no PATH: the user cache, $LAYERNAS_CACHE/children)")
    e.add_argument("--training-seeds", type=int, help="--store: each query draws one of K training seeds (default 3)")
    e.add_argument("--warm-start-epochs", type=int, help="--store, nats-tss: start a child from a stored one-layer "
                   "neighbour and train this many epochs")
    e.add_argument("--valid-data", help="codec spaces: held-out photos DIR/*.png that score each child "
                   "(default: the last 8 photos of --data by name)")
    e.add_argument("--devices", choices=DEVICES, help="--trainer: placement over local devices (default auto)")
    e.add_argument("--epochs", type=int, help="--trainer: epochs per child (default: the recipe's; proxy 5)")
    e.add_argument("--batch-size", type=int, help="--trainer: global batch (default: the recipe's; proxy 128)")
    e.add_argument("--train-per-class", type=int, help="--trainer: images per class, validation included (proxy 500)")
    e.add_argument("--valid-per-class", type=int, help="--trainer: of those, held out for validation (proxy 100)")
    codec = registry.CODEC_OPTIONS
    e.add_argument("--lambda", dest="lmbda", type=float, help=f"codec: rate-distortion trade-off ({codec['lmbda']})")
    e.add_argument("--width-scale", type=float, help=f"codec: proxy width multiplier in (0, 1] "
                   f"({codec['width_scale']}; codec-sandwich 0.5)")
    e.add_argument("--proxy-steps", type=int, help=f"codec: proxy training steps per child ({codec['proxy_steps']})")
    r = s.add_argument_group("Ray (with --backend ray only)")
    r.add_argument("--backend", choices=["local", "ray"], default="local", help="local (default), or ray: trials run "
                   "in Ray workers")
    r.add_argument("--address", help="Ray cluster: auto (default: the one `ray start --head` started here), "
                                     "HOST:PORT (a remote head), or local (a private instance for this run)")
    r.add_argument("--max-concurrent", type=int, help="trials in flight in Ray (default: --max-in-flight, else 1)")
    r.add_argument("--gpus-per-trial", type=float, help="GPUs reserved per trial, fractions allowed (default 0)")
    r.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial (default 1)")
    r.add_argument("--max-retries", type=int, help="re-runs of a trial whose worker died (default 2)")
    h = s.add_argument_group("multi-host search (jax.distributed); start the same command in every process")
    h.add_argument("--distributed", action="store_true", help="join the processes with jax.distributed before "
                   "anything else; only process 0 writes --out (implied by the next three)")
    h.add_argument("--coordinator", help="HOST:PORT of the coordinator, which process 0 starts (default: what "
                                         "JAX detects on TPU/SLURM/Open MPI, or $JAX_COORDINATOR_ADDRESS)")
    h.add_argument("--num-processes", type=int, help="how many processes (default: detected by JAX)")
    h.add_argument("--process-id", type=int, help="this process, 0..N-1 (default: detected by JAX)")
    o = s.add_argument_group("output")
    o.add_argument("--out", help="run directory (default: runs/<named from the arguments>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out (which must hold one)")
    o.add_argument("--quiet", action="store_true",
                   help="no progress (else: a bar with an ETA on a terminal, one line per result otherwise)")
    o.add_argument("--json", action="store_true", help="print result.json instead of a summary")

    d = sub.add_parser("describe", help="per-layer description and costs of an architecture")
    d.add_argument("--space", required=True, help=f"one of: {', '.join(registry.SPACES)}")
    d.add_argument("--dataset", help="dataset of the space (default: its first)")
    d.add_argument("--arch", help="architecture string (default: the space's default)")
    c = sub.add_parser("convert-table", help="official NATS-Bench files -> compact table")
    c.add_argument("src", help="official NATS-Bench file or directory (unpickled: load only files you trust)")
    c.add_argument("dst", help="output .parquet or .csv")
    c.add_argument("--space", choices=["tss", "sss"], required=True, help="which NATS-Bench space the files hold")
    sub.add_parser("spaces", help="list the named search spaces")
    sub.add_parser("report", help="redraw a run's plots and write its self-contained report.html").add_argument(
        "run_dir", help="a run directory (the --out of a search)")
    x = sub.add_parser("export", help="a finished run's answer as JSON, trained flax weights and ONNX")
    x.add_argument("run_dir", help="run directory of a finished search (its --out)")
    x.add_argument("--out", required=True, help="export directory (model.json, variables.msgpack, model.onnx)")
    x.add_argument("--no-weights", action="store_true", help="architecture and costs only (a table or dry-run search)")
    x.add_argument("--data", help="the image folder the run trained on (default: the one the run records)")
    bench = sub.add_parser("benchmark", help="reproducible benchmarks").add_subparsers(
        dest="benchmark", parser_class=Parser, required=True)
    nats = bench.add_parser("nats", help="LayerNAS against the baselines on the NATS tables")
    if argv is None or list(argv[:2]) == ["benchmark", "nats"]:
        from layernas import comparison

        comparison.add_benchmark_arguments(nats)
    from layernas.trainers import prepare_data

    prepare_data.add_arguments(sub.add_parser(
        "prepare-data", help="convert a downloaded dataset (the CIFAR-10 archive, a folder of photos) into "
                             "--data's layout; never downloads"))
    return parser


def config_from_args(args) -> SearchConfig:
    """The ``search`` flags as one validated :class:`SearchConfig`."""
    metric, target_max, target_flag = args.metric, args.target_max, "--target-max"
    for m in TARGET_METRICS:
        value = getattr(args, f"target_{m}")
        if value is not None:
            if metric not in (None, m) or target_max is not None:
                raise UsageError(f"--target-{m.replace('_', '-')} conflicts with --metric/--target-max")
            metric, target_max, target_flag = m, value, f"--target-{m.replace('_', '-')}"
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    return SearchConfig(**{**values, "metric": metric, "target_max": target_max, "target_flag": target_flag,
                           "caps": tuple(args.cap), "searcher_option": tuple(args.searcher_option)})


def cmd_search(args) -> int:
    import layernas
    from layernas.config import check_resumable
    from layernas.run import Budget

    config = config_from_args(args)
    if config.multi_host:  # before anything else touches JAX's devices
        config.join_processes()
    process = sys.modules["jax"].process_index() if config.multi_host else 0
    space = config.make_space()
    target = config.make_target(space)
    out = Path(config.out)
    if config.resume and process == 0:
        check_resumable(out)
    evaluator = config.make_evaluator(space)
    is_executor = hasattr(evaluator, "submit")
    with stdout_to_stderr(config.multi_host):  # gloo prints to stdout; keep --json output clean
        try:
            result = layernas.search(
                space, evaluator, Budget(config.budget_evals, config.budget_seconds), target, seed=config.seed,
                searcher=config.searcher, searcher_options=config.searcher_options(), out_dir=out,
                resume=config.resume, max_in_flight=None if is_executor else config.max_in_flight,
                progress=not config.quiet, settings=config.run_settings(), distributed=config.multi_host or None)
        except OSError as e:
            if e.filename is None:
                raise OSError(e.errno, f"writing the run in {out}: {first_line(e)}") from None
            raise
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            if not config.resume:
                raise
            raise UsageError(f"cannot resume from {out / 'checkpoint.json'}: {first_line(e, with_type=True)} "
                             f"(a malformed or foreign checkpoint)") from None
        finally:
            getattr(evaluator, "close", lambda: None)()
    with interrupts_ignored():  # the search is committed: finish writing and printing
        return report(config, args.argv, result, space, target, out, process, evaluator)


@contextlib.contextmanager
def interrupts_ignored():
    """Ignore Ctrl-C and SIGTERM inside the block (on the main thread), then restore the
    handlers: the search is committed, and its files must be finished. In the ``layernas``
    program (:func:`console_main`) they stay ignored: the process is about to exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not _exiting_process:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_exiting_process = False   # set by console_main: this process ends when main returns


def ignore_interrupts_until_exit() -> None:
    """In the ``layernas`` program, ignore SIGINT and SIGTERM from now on (main thread only;
    a no-op when :func:`main` is called as a function). Called once the command is on its
    way out: everything it finished is committed, and a further Ctrl-C or SIGTERM must not
    turn that exit (0, 130 or 143) into a death by signal."""
    if _exiting_process and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def report(config: SearchConfig, argv: list[str], result, space, target, out: Path, process: int, evaluator) -> int:
    """Write provenance.json (process 0) and print the result."""
    from layernas.provenance import write_provenance
    from layernas.units import format_cost

    if process == 0:
        write_provenance(out, result.wall_seconds, " ".join(["layernas", *argv]), args=dataclasses.asdict(config))
    if config.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
        return EXIT_OK
    if result.evaluations and not (result.history["status"] == "ok").any():
        rows = len(evaluator.arrays.archs) if hasattr(evaluator, "arrays") else None
        coverage = (f" (the table has {rows} of the space's {space.size} architectures: use a full table, see "
                    f"docs/nats.md)" if rows is not None and rows < space.size else "")
        raise UsageError(f"all {result.evaluations} evaluations failed{coverage}; the first: "
                         f"{result.history['error'].dropna().iloc[0]}")
    print(result.summary())
    if config.evaluator_kind == "dry-run":
        print("note: --evaluator dry-run: the reward is a training-free proxy score, NOT accuracy")
    elif hasattr(evaluator, "arrays") and not getattr(evaluator, "charge_epochs", None):
        print(f"note: table {config.table} does not record how many epochs its training times are for, so they are "
              f"charged as recorded, not as the 12-epoch time NATS-Bench budgets are in (a sidecar "
              f"{Path(str(config.table)).name}.meta.json with {{\"train_time_epochs\": N}} fixes that)")
    print(f"target: {target.metric} in [{'-inf' if target.min is None else format_cost(target.metric, target.min, space)}"
          f", {'inf' if target.max is None else format_cost(target.metric, target.max, space)}]" +
          "".join(f", {m} <= {format_cost(m, v, space)}" for m, v in target.caps.items()))
    if process == 0:
        print(f"wrote {out}/history.csv, frontier.csv, result.json, provenance.json, progress.png, cost_reward.png, "
              f"report.html")
    else:
        print(f"process {process}: the run's files are written by process 0")
    return EXIT_OK


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True):
    """Send file descriptor 1 to stderr inside the block (when ``active``): the collectives of
    a multi-host run (gloo on CPU) print connection messages straight to stdout from C++."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_describe(args) -> int:
    if args.arch is not None and not args.arch.strip():
        raise UsageError("--arch '': expected an architecture string (see the first line of describe's output)")
    space = registry.make_space(args.space, args.dataset)
    arch = space.str_to_arch(args.arch) if args.arch is not None else space.default_arch()
    text = space.describe(arch)
    print(text)
    if "  *" in text:
        print("* marks a layer whose option differs from the space's default architecture")
    units = registry.get_space_entry(args.space).units
    print("units: " + ", ".join(f"{m} in {u}" for m, u in units.items() if m in space.cost_metrics))
    return EXIT_OK


def cmd_convert(args) -> int:
    from layernas.tables import convert_official

    convert_official(args.src, args.dst, space=args.space)
    print(f"wrote {args.dst}")
    return EXIT_OK


def cmd_spaces(args) -> int:
    width = max(map(len, registry.SPACES))
    for name, entry in registry.SPACES.items():
        print(f"{name:<{width}}  {entry.help} (datasets: {', '.join(entry.datasets)})")
    return EXIT_OK


def cmd_report(args) -> int:
    from layernas.report import write_report

    path = write_report(args.run_dir)
    print(f"wrote {path.parent}/progress.png, cost_reward.png, {path.name}")
    return EXIT_OK


def cmd_export(args) -> int:
    from layernas.trainers.export import run_export

    return run_export(args)


def cmd_benchmark(args) -> int:
    from layernas import comparison

    return int(comparison.run_benchmark(args))


def cmd_prepare_data(args) -> int:
    from layernas.trainers import prepare_data

    return prepare_data.run(args)


COMMANDS = {"search": cmd_search, "describe": cmd_describe, "convert-table": cmd_convert,
            "spaces": cmd_spaces, "benchmark": cmd_benchmark, "prepare-data": cmd_prepare_data,
            "report": cmd_report, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    """Run one ``layernas`` command; returns the exit code (see the module docstring)."""
    from layernas.run import Terminated, terminate_like_interrupt

    try:
        if threading.current_thread() is threading.main_thread():
            terminate_like_interrupt()   # SIGTERM saves and exits like Ctrl-C
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(argv).parse_args(argv)
        args.argv = argv
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as e:
        ignore_interrupts_until_exit()   # the run is checkpointed: a second signal changes nothing
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{chr(10) if sys.stderr.isatty() else ''}layernas: {what}; everything finished so far is "
              f"checkpointed (continue with --resume)", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:  # `layernas ... | head`: the reader left; the work itself is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        print(f"layernas: error: {first_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug: still one line, but not disguised as bad input
        if os.environ.get("LAYERNAS_TRACEBACK"):
            raise
        print(f"layernas: internal error: {first_line(e, with_type=True)} (set LAYERNAS_TRACEBACK=1 "
              f"for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def console_main() -> int:
    """The ``layernas`` program: :func:`main`, with SIGINT/SIGTERM ignored from the moment the
    command is on its way out (an interrupt caught, or main returned) until Python exits.

    Everything is written when ``main`` returns, and an interrupt is caught only after the run
    is checkpointed; a further signal in those last moments (a second Ctrl-C, or one while the
    interpreter shuts down and puts the default handlers back) must not turn the exit code
    (0, 130, 143) into a death by signal.
    """
    global _exiting_process
    _exiting_process = True
    try:
        code = main()
    except KeyboardInterrupt as e:  # one arriving after main's own handler ran: the state is committed
        ignore_interrupts_until_exit()
        code = EXIT_TERMINATED if type(e).__name__ == "Terminated" else EXIT_INTERRUPTED
    ignore_interrupts_until_exit()
    return code


if __name__ == "__main__":
    sys.exit(console_main())
