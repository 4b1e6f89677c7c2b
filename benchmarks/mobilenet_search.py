"""MobileNet search on real CIFAR-10 under a MAdds budget, end to end.

LayerNAS searches the ``mobilenetv2-cifar`` space (the all-default network has 88.0M
MAdds), or with ``--space mobilenetv3-small-cifar`` MobileNetV3-Small (17.5M), at MAdds
targets given as fractions of the default network (``--targets``, default 0.25 and 0.5). Every child is trained on real CIFAR-10 (``../shared/data/cifar10``, train
split only, with a validation split held out of it) through the child store
(:mod:`layernas.trainers.stored_evaluator`), K=3 seeded training draws per query, with the
trained-search proxy recipe (see ``settings``). Baselines at the same MAdds:

* ``random``: random search over the same space with as many trained children as the
  LayerNAS search of that target used;
* ``scaled``: the default network scaled by hand to the target: the widest width multiplier
  (``mobilenet_v2_cifar(width=w)`` or ``mobilenet_v3_small_cifar(width=w)``, channels
  rounded to multiples of 8) whose network fits,
  at full depth or with every block one layer shallower, whichever lands closer to the
  target (never over it).

Final training: the three answers of each target are trained with one recipe
(``final_recipe``) on the CIFAR-10 train split with ``--final-seeds`` seeds each and
evaluated once on the test split, which nothing else reads. Finished models are kept in
the child store (their own family), so an interrupted run resumes where it stopped.

Outputs in ``--out`` (default ``results/mobilenet_search/``, for MobileNetV3-Small
``results/mobilenet_search_v3small/``): ``searches.csv`` (one row per
finished search), ``models.csv`` (one row per finished final model: ``kind, target_madds,
arch, madds, params, latency_ms_lut, latency_ms_measured, test_acc_mean, test_acc_std,
seeds, train_wall_s`` and the width of the space its ``arch`` is written in), ``final_runs.csv``
(one row per final training seed), ``accuracy_vs_madds.png``, ``summary.md`` (written from the
CSVs; ``--analyze-only`` redoes just that), ``provenance.json``, ``lut.json`` (the latency
table the LUT column is read from) and ``runs/<algo>-<fraction>/`` (each search's run
directory; ``layernas export runs/layernas-0.25 --out DIR`` exports a LayerNAS answer with
its proxy-trained weights). ``--minutes`` is a deadline: at that time the running search or
training is interrupted (finished children are kept), and the summary says what is partial.
``--quick`` is a minutes-long smoke run (tiny data, few children) writing the same files.

Usage:
    nohup nice -n 10 python benchmarks/mobilenet_search.py --store STORE &   # -> results/mobilenet_search/
    python benchmarks/mobilenet_search.py --quick --out /tmp/mbs --store /tmp/mbs-store
"""

from __future__ import annotations

import _thread
import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))
CIFAR10 = SHARED / "data" / "cifar10"

@dataclasses.dataclass(frozen=True)
class Family:
    """A MobileNet space this benchmark searches.

    Attributes:
      space: its registry name (the width-1 network).
      label: its name in titles.
      width_factory: ``"module:function"`` whose ``function(width=w)`` is the width-``w``
        space (the scaled baseline's networks).
      children: the default LayerNAS child budget per target fraction: what
        :func:`first_round_children` gives (a test checks it).
      out: the default output folder.
      recipe: recipe fields this space's proxy and final recipe set beyond the common
        ones (MobileNetV3's BatchNorm momentum of 0.99 needs precise BatchNorm after the
        proxy's ~90 steps: its running statistics are far from converged, and without it
        every child evaluates at chance; ``benchmarks/bn_momentum_check.py``).
    """

    space: str
    label: str
    width_factory: str
    children: dict
    out: Path
    recipe: dict = dataclasses.field(default_factory=dict)

    def make(self, width: float = 1.0):
        """The space, or its width-``width`` version."""
        import importlib

        from layernas import registry

        if float(width) == 1.0:
            return registry.make_space(self.space, "cifar10")
        module, function = self.width_factory.split(":")
        return getattr(importlib.import_module(module), function)(width=float(width))


FAMILIES = {
    "mobilenetv2-cifar": Family("mobilenetv2-cifar", "MobileNetV2", "layernas.search_spaces.mobilenet_v2:mobilenet_v2_cifar",
                                {0.25: 38, 0.5: 57}, REPO / "results" / "mobilenet_search"),
    "mobilenetv3-small-cifar": Family("mobilenetv3-small-cifar", "MobileNetV3-Small",
                                      "layernas.search_spaces.mobilenet_v3:mobilenet_v3_small_cifar",
                                      {0.25: 37, 0.5: 43}, REPO / "results" / "mobilenet_search_v3small",
                                      {"bn_recalibration_batches": 32}),
}
DEFAULT_SPACE = "mobilenetv2-cifar"
FAMILY = FAMILIES[DEFAULT_SPACE]   # the space of this run (main sets it from --space)
OUT = FAMILY.out
KINDS = ("layernas", "random", "scaled")
MODEL_COLUMNS = ["kind", "target_madds", "arch", "madds", "params", "latency_ms_lut", "latency_ms_measured",
                 "test_acc_mean", "test_acc_std", "seeds", "train_wall_s"]
LATENCY_BATCH = 8

from trained_search import append_row, drop_rows  # noqa: E402  (filelocked CSV rows, written as they go)


# ----------------------------------------------------------------------------- setup
def settings(args) -> dict:
    """The search proxy and the final recipe's size (``--quick`` shrinks both).

    Search proxy: ``train`` + ``valid`` images per class of the CIFAR-10 train split
    (``valid`` of them held out for the reward), ``epochs`` epochs, batch ``batch``,
    SGD-Nesterov lr ``lr`` cosine after ``warmup`` warm-up epochs, wd 5e-4, crop+flip.

    Why: the trained search's NATS proxy (lr 0.1 constant, batch 64) did not learn
    MobileNetV2 in the steps a CPU affords (a 21.4M-MAdds child, 1,000 images, 2 epochs,
    ended at chance, 9.6 % validation), so: half the learning rate, a warm-up epoch, batch
    32 (3x the steps per image), 3 epochs; its children reach 21-31 % validation accuracy at 0.25x.
    Cost on a 2-core CPU: ~55 s a 22M-MAdds child (the committed searches' ``cost_seconds``;
    ~15 s of it compile), since depthwise convs run as shifted multiply-adds
    (``conv_ops.depthwise_conv``; with XLA's grouped convs a child took 965 s under load). LayerNAS:
    H=1 and 38 / 57 children at 0.25x / 0.5x, what a training-free dry run of the whole
    search needs to reach the last of the 28 decisions at H=1 (H=2 needs 65 / 107: give
    ``--num-buckets 2 --children 65 107``); ~35 min at 0.25x, within the ~90 minutes a
    search may take.
    """
    if args.quick:
        return {"train": 8, "valid": 4, "epochs": 1, "batch": 32, "lr": 0.05, "warmup": 0,
                "children": [3], "num_buckets": 2,
                "final_train": 16, "final_epochs": 1, "final_batch": 32, "test_per_class": 10,
                "latency_warmup": 1, "latency_repeats": 3}
    return {"train": 100, "valid": 50, "epochs": 3, "batch": 32, "lr": 0.05, "warmup": 1,
            "children": list(args.children) if args.children else default_children(args.targets),
            "num_buckets": args.num_buckets, "final_train": args.final_train_per_class,
            "final_epochs": args.final_epochs, "final_batch": 128, "test_per_class": None,
            "latency_warmup": 3, "latency_repeats": 10}


def proxy_recipe(s: dict):
    from layernas.trainers import train

    return train.PROXY.replace(name="mobilenet-search", **proxy_overrides(s))


def proxy_overrides(s: dict) -> dict:
    """The proxy as overrides of the registry's ``proxy`` recipe (what ``layernas export`` rebuilds)."""
    return {"epochs": s["epochs"], "batch_size": s["batch"], "learning_rate": s["lr"], "schedule": "cosine",
            "warmup_epochs": s["warmup"], "train_per_class": s["train"] + s["valid"], "valid_per_class": s["valid"],
            **FAMILY.recipe}


def final_recipe(s: dict):
    """One recipe for every final model: SGD-Nesterov 0.9, lr 0.1 cosine to 0 after one
    warm-up epoch, wd 5e-4, batch 128, crop+flip, on ``final_train`` images per class of
    the train split (None: all 5,000)."""
    from layernas.trainers import train

    return train.PROXY.replace(name="mobilenet-search-final", epochs=s["final_epochs"],
                               batch_size=s["final_batch"], schedule="cosine", warmup_epochs=1 if
                               s["final_epochs"] > 2 else 0, train_per_class=s["final_train"],
                               valid_per_class=None, **FAMILY.recipe)


def make_space(width: float = 1.0):
    """The searched space (width 1.0, the registry's) or its width-``w`` version."""
    return FAMILY.make(width)


def target_madds(frac: float) -> float:
    space = make_space()
    return float(frac) * space.cost(space.default_arch())["madds"]


def shallower(space, arch) -> tuple[int, ...]:
    """``arch`` with every searched depth one layer below the base (where the space allows)."""
    out = list(arch)
    for i, layer in enumerate(space.layers):
        if layer.name.endswith(".depth"):
            base = layer.options[layer.default]
            if base - 1 in layer.options:
                out[i] = layer.options.index(base - 1)
    return tuple(out)


def scaled_baseline(target: float, widths=None) -> tuple[float, tuple[int, ...], float]:
    """(width, arch, madds) of the default network scaled by hand to ``target`` MAdds.

    For each depth (the base, or every block one layer shallower) the widest width
    multiplier on a 0.01 grid whose network fits under ``target``; of the two, the one
    with more MAdds (closer to the target from below).
    """
    widths = np.round(np.arange(1.0, 0.099, -0.01), 2) if widths is None else widths
    best = None
    for depth in ("base", "shallower"):
        for w in widths:
            space = make_space(w)
            arch = space.default_arch() if depth == "base" else shallower(space, space.default_arch())
            m = space.cost(arch)["madds"]
            if m <= target:
                if best is None or m > best[2]:
                    best = (float(w), tuple(arch), float(m))
                break
    if best is None:
        raise ValueError(f"no width multiplier scales the default network under {target:.4g} MAdds")
    return best


def recompute_madds(arch: str, width: float = 1.0) -> float:
    """The MAdds of an ``arch`` string of models.csv, from the space (what the tests check)."""
    space = make_space(width)
    return float(space.cost(space.str_to_arch(arch))["madds"])


# ----------------------------------------------------------------------------- searches
def default_children(targets) -> list[int]:
    missing = [f for f in targets if f not in FAMILY.children]
    if missing:
        raise ValueError(f"no default child budget for targets {missing}; give --children")
    return [FAMILY.children[f] for f in targets]


def first_round_children(frac: float, num_buckets: int = 1, seed: int = 0) -> int:
    """How many children LayerNAS (H=``num_buckets``, this benchmark's options) trains
    before its first round through the layers ends, from a training-free dry run
    (``ProxyScoreEvaluator`` rewards): at H=1 the default child budget, so that a search
    decides every layer once (H=2 on mobilenetv2-cifar: 65 at 0.25x, 107 at 0.5x)."""
    import layernas
    from layernas.dry_run import ProxyScoreEvaluator
    from layernas.evaluator import Trial, trial_seed
    from layernas.searchers.layernas import layernas as make_layernas

    space, target = make_space(), target_madds(frac)
    opts = search_options("layernas", {"num_buckets": num_buckets}, target)
    searcher = make_layernas(space, layernas.Target("madds", max=target), **opts)
    evaluator = ProxyScoreEvaluator(space)
    state, n, deepest = searcher.init(seed), 0, 0
    while True:
        archs, state = searcher.propose(state, 1)
        deepest = max(deepest, state["layer"])
        if not archs or (deepest > 0 and state["layer"] == 0 and not state.get("sampling")):
            return n
        state = searcher.update(state, [evaluator.evaluate(Trial(n, archs[0], trial_seed(seed, n)))])
        n += 1


def children_for(s: dict, targets, frac: float) -> int:
    """The LayerNAS child budget at ``frac``: ``s["children"]`` has one number per target, or one for all."""
    ns = s["children"] if isinstance(s["children"], (list, tuple)) else [s["children"]]
    if len(ns) == 1:
        return int(ns[0])
    if len(ns) != len(targets):
        raise ValueError(f"--children has {len(ns)} numbers for {len(targets)} targets; give one, or one per target")
    return int(ns[list(targets).index(frac)])


def make_evaluator(space, s, store, seed: int = 0):
    """The stored proxy evaluator; its data split seed is the search seed, as `layernas export` assumes."""
    from layernas.trainers.stored_evaluator import StoredTrainerEvaluator

    return StoredTrainerEvaluator(space, CIFAR10, proxy_recipe(s), store=store, training_seeds=3, data_seed=seed)


def search_options(algo: str, s: dict, target: float) -> dict:
    """LayerNAS: H buckets, equal-width over [0.75, 1] x target on every layer (children
    are repaired to fit the target, so they land just under it; lower buckets stay empty).
    No dive, as the committed searches ran (with H=1 the layerwise search already is one
    dive, so it is the same search, and their run folders resume)."""
    if algo != "layernas":
        return {}
    edges = [float(e) for e in np.linspace(0.75 * target, target, s["num_buckets"] + 1)]
    return {"num_buckets": s["num_buckets"], "bucket_edges": edges, "dives": 0}


def reachable_random(space, target):
    """Random search that can reach a small MAdds target: the library's ``random`` searcher
    draws uniformly from the whole space and rejects infeasible architectures, and a uniform
    MobileNetV2-CIFAR architecture is essentially never under 0.5x the default network's
    MAdds (0 in 20,000 draws at 0.25x). This one draws each layer in turn uniformly among
    the options whose prefix can still meet the target (``target.reachable``, exact bounds),
    so every draw is feasible; draws seen before are redrawn. Named ``"random"``; its state
    is the seed, the draw count and the architectures proposed."""
    from layernas.searchers.base import Searcher, arch_key, rng_from

    def init(seed: int):
        return {"searcher": "random", "seed": int(seed), "draws": 0, "seen": [], "done": False}

    def draw(state):
        rng, state = rng_from(state)
        prefix: list[int] = []
        for layer in range(space.num_layers):
            ok = [o for o in range(space.num_options[layer]) if target.reachable(space, prefix + [o])]
            prefix.append(ok[int(rng.integers(len(ok)))])
        return tuple(prefix), state

    def propose(state, n: int):
        out, seen = [], set(state["seen"])
        for _ in range(n):
            for _try in range(1000):
                arch, state = draw(state)
                if arch_key(arch) not in seen and target.feasible(space.cost(arch)):
                    break
            else:
                return out, {**state, "done": True}
            seen.add(arch_key(arch))
            state = {**state, "seen": state["seen"] + [arch_key(arch)]}
            out.append(arch)
        return out, state

    return Searcher("random", init, propose, lambda state, results: state)


def run_search(args, algo: str, frac: float, s: dict, evaluator=None, children: int | None = None) -> dict:
    """One search (resumed from its run directory if it exists); its row of searches.csv."""
    import layernas

    space = make_space()
    target = target_madds(frac)
    out = args.out / "runs" / f"{algo}-{frac:g}"
    ev = evaluator if evaluator is not None else make_evaluator(space, s, args.store, args.seed)
    settings_extra = {"dataset": "cifar10", "data": str(CIFAR10), "evaluator": "proxy",
                      "recipe_overrides": proxy_overrides(s), "store": {"store": str(args.store)}}
    t0 = time.perf_counter()
    tgt = layernas.Target("madds", max=target)
    res = layernas.search(space, ev, int(children or children_for(s, [frac], frac)), tgt,
                          seed=args.seed, searcher=algo if algo == "layernas" else reachable_random(space, tgt),
                          searcher_options=search_options(algo, s, target) if algo == "layernas" else None,
                          out_dir=out, resume=out.exists(), settings=settings_extra, progress=True)
    wall = time.perf_counter() - t0
    # the run's whole history from its folder (a resumed run's in-memory history can be shorter)
    h, b = pd.read_csv(out / "history.csv"), res.best
    if b is not None and evaluator is None:
        make_exportable(out, space, b, ev)
    trained_now = int((h["child"] == "trained").sum()) if "child" in h else 0
    return {"algorithm": algo, "target_fraction": frac, "target_madds": target, "seed": args.seed,
            "arch": b["arch_str"] if b else "", "madds": b["costs"]["madds"] if b else np.nan,
            "proxy_reward": b["reward"] if b else np.nan, "children": len(h),
            "infeasible_children": int((~h["feasible"]).sum()), "trained_now": trained_now,
            "train_seconds": round(float(h.cost_seconds.sum()), 1), "wall_s": round(wall, 1)}


def make_exportable(run_dir: Path, space, best: dict, ev) -> None:
    """Put the answer's stored child into the run directory the way a ``--trainer`` run
    records it (``trainer/children/<key>/variables`` + ``result.json``), so that
    ``layernas export RUN_DIR`` finds its weights."""
    from layernas.trainers.evaluator import save_variables

    hist = pd.read_csv(run_dir / "history.csv")
    ok = hist[(hist.arch_str == best["arch_str"]) & (hist.status == "ok")]
    seeds = [int(x) for x in ok.training_seed] if "training_seed" in ok else list(range(ev.training_seeds))
    from layernas.trainers.child_store import child_key

    for seed in seeds:
        child = ev.store.get(child_key(ev.family, "scratch", tuple(best["arch"]), seed))
        if child is None or child.variables is None:
            continue
        d = run_dir / "trainer" / "children" / child.key
        d.mkdir(parents=True, exist_ok=True)
        save_variables(d / "variables", child.variables)
        rec = {"trial_id": best.get("trial_id"), "arch": [int(a) for a in best["arch"]], "status": "ok",
               "reward": float(child.metrics["valid_accuracy"]), "training_seed": seed, "store_key": child.key}
        (d / "result.json").write_text(json.dumps(rec, indent=1))


# ----------------------------------------------------------------------------- final training
class FinalTrainer:
    """Trains (or reuses from the store) one final model per (width, arch, seed): the
    train split (``final_train`` images per class) with :func:`final_recipe`, evaluated
    once on the test split."""

    def __init__(self, s: dict, store):
        from layernas.trainers import data as data_lib
        from layernas.trainers.child_store import ChildStore

        self.s, self.recipe = s, final_recipe(s)
        self.store = store if isinstance(store, ChildStore) else ChildStore(store)
        self.train = data_lib.load_image_folder(CIFAR10, "train", per_class=s["final_train"],
                                                subsample_seed=None if s["final_train"] is None else 0)
        self.test = data_lib.load_image_folder(CIFAR10, "test", per_class=s["test_per_class"],
                                               subsample_seed=None if s["test_per_class"] is None else 0)

    def family(self, width: float) -> str:
        from layernas.trainers.child_store import family_key

        recipe = self.recipe.identity()
        return family_key({"space": make_space(width).name, "recipe": recipe, "purpose": "final",
                           "train_per_class": self.s["final_train"], "test_per_class": self.s["test_per_class"]})

    def run(self, width: float, arch, seed: int) -> dict:
        from layernas.trainers import train
        from layernas.trainers.child_store import child_key
        from layernas.trainers.models import build_model

        space, arch = make_space(width), tuple(int(a) for a in arch)
        fam = self.family(width)

        def fit():
            res = train.train_model(build_model(space, arch), self.train, self.test, self.recipe, seed)
            metrics = {k: v for k, v in res.summary().items() if k != "history"}
            return (res.variables if res.ok else None), metrics, float(res.seconds)

        child, how = self.store.train_once(child_key(fam, "final", arch, seed),
                                           {"family": fam, "mode": "final", "arch": arch, "training_seed": seed},
                                           fit, weights=False)
        m = child.metrics
        return {"status": m.get("status"), "test_acc": m.get("valid_accuracy") if m.get("status") == "ok" else np.nan,
                "train_wall_s": child.train_seconds, "child": how}


def latency(width: float, arch, s: dict, lut_path: Path) -> tuple[float, float]:
    """(LUT-predicted ms, measured ms) of one inference call at batch 8 on this machine."""
    from layernas.trainers.latency import LatencyLUT, measure_arch_ms

    space = make_space(width)
    lut = LatencyLUT(lut_path, batch_size=LATENCY_BATCH, warmup=s["latency_warmup"], repeats=s["latency_repeats"])
    predicted = space.with_latency(lut).cost(tuple(arch))["latency"]
    measured = measure_arch_ms(space, tuple(arch), LATENCY_BATCH, s["latency_warmup"], s["latency_repeats"])
    return float(predicted), float(measured)


def export_answer(args, frac: float, log) -> dict:
    """``layernas export`` of the LayerNAS answer at ``frac`` into ``export/layernas-<frac>/``
    (once): ``model.json`` (space, architecture, costs, the ONNX check), the proxy-trained
    variables and ``model.onnx``, checked in onnxruntime on real CIFAR-10 images."""
    from layernas.trainers.export import MODEL_JSON, export_run

    out = args.out / "export" / f"layernas-{frac:g}"
    if (out / MODEL_JSON).exists():
        return json.loads((out / MODEL_JSON).read_text())
    t = time.perf_counter()
    meta = export_run(args.out / "runs" / f"layernas-{frac:g}", out, data=CIFAR10)
    check = meta.get("onnx_check") or {}
    log(f"export layernas {frac:g}: {meta['arch_str']} -> {out} ({time.perf_counter() - t:.0f} s); ONNX check: "
        f"max |logit diff| {check.get('max_abs_diff', float('nan')):.3g} over {check.get('images')} images")
    return meta


# ----------------------------------------------------------------------------- driver
def run_all(args, s: dict, log) -> None:
    searches, models, runs = args.out / "searches.csv", args.out / "models.csv", args.out / "final_runs.csv"

    def done_searches():
        return pd.read_csv(searches) if searches.exists() else pd.DataFrame(columns=["algorithm", "target_fraction"])

    for frac in [] if args.only_finals else args.targets:
        for algo in ("layernas", "random"):
            prev = done_searches()
            if len(prev[(prev.algorithm == algo) & np.isclose(prev.target_fraction, frac)]):
                continue
            children = children_for(s, args.targets, frac)
            if algo == "random":  # as many trained children as LayerNAS used at this target
                lay = prev[(prev.algorithm == "layernas") & np.isclose(prev.target_fraction, frac)]
                children = int(lay.children.iloc[0])
            log(f"search {algo} at {frac:g} x default MAdds ...")
            row = run_search(args, algo, frac, s, children=children)
            append_row(searches, row)
            log(f"search {algo} {frac:g}: {row['arch']} {row['madds'] / 1e6:.2f}M MAdds, proxy "
                f"{row['proxy_reward']:.2f}, {row['children']} children, {row['wall_s']:.0f} s")
    prev = done_searches()
    for frac in [] if args.only_finals else args.targets:
        if len(prev[(prev.algorithm == "layernas") & np.isclose(prev.target_fraction, frac)]):
            export_answer(args, frac, log)
    final = FinalTrainer(s, args.store)
    for frac in args.targets:
        target = target_madds(frac)
        w, sarch, _ = scaled_baseline(target)
        todo = {"scaled": (w, sarch)}
        for algo in ("layernas", "random"):
            r = prev[(prev.algorithm == algo) & np.isclose(prev.target_fraction, frac)]
            if len(r) and isinstance(r.arch.iloc[0], str) and r.arch.iloc[0]:
                todo[algo] = (1.0, make_space().str_to_arch(r.arch.iloc[0]))
        for kind in KINDS:
            if kind not in todo:
                continue
            if args.only_finals and kind not in args.only_finals:
                continue
            have = pd.read_csv(models) if models.exists() else pd.DataFrame(columns=["kind", "target_fraction"])
            mine = lambda f: (f.kind == kind) & np.isclose(f.target_fraction, frac)  # noqa: E731
            done = have[mine(have)]
            if len(done) and int(done.seeds.max()) >= args.final_seeds:
                continue
            drop_rows(models, mine)  # a row with fewer seeds is redone (its finished seeds come from the store)
            width, arch = todo[kind]
            space = make_space(width)
            accs, walls = [], []
            for seed in range(args.final_seeds):
                log(f"final {kind} {frac:g} seed {seed} ...")
                r = final.run(width, arch, seed)
                drop_rows(runs, lambda f, seed=seed: mine(f) & (f.seed == seed))
                append_row(runs, {"kind": kind, "target_fraction": frac, "width": width,
                                  "arch": space.arch_to_str(arch), "seed": seed, **r})
                accs.append(r["test_acc"])
                walls.append(r["train_wall_s"])
                log(f"final {kind} {frac:g} seed {seed}: test {r['test_acc']:.2f} % ({r['child']}, "
                    f"{r['train_wall_s']:.0f} s)")
            lut_ms, measured_ms = latency(width, arch, s, args.out / "lut.json")
            cost = space.cost(arch)
            accs = np.asarray(accs, float)
            append_row(models, {
                "kind": kind, "target_madds": target, "arch": space.arch_to_str(arch), "madds": cost["madds"],
                "params": cost["params"], "latency_ms_lut": round(lut_ms, 3), "latency_ms_measured": round(measured_ms, 3),
                "test_acc_mean": float(np.nanmean(accs)), "test_acc_std": float(np.nanstd(accs, ddof=1))
                if np.isfinite(accs).sum() > 1 else np.nan, "seeds": len(accs),
                "train_wall_s": round(float(np.sum(walls)), 1), "width": width, "target_fraction": frac,
                "test_acc_per_seed": ";".join(f"{a:.2f}" for a in accs)})


# ----------------------------------------------------------------------------- report
def in_progress(args) -> pd.DataFrame:
    """Searches with a run directory but no row in searches.csv: how far they got."""
    from layernas.run import finished_results

    done = set()
    if (args.out / "searches.csv").exists():
        done = {f"{a}-{f:g}" for a, f in pd.read_csv(args.out / "searches.csv")[["algorithm", "target_fraction"]].values}
    rows = []
    space = make_space()
    for run in sorted(p for p in (args.out / "runs").glob("*") if p.is_dir()) if (args.out / "runs").is_dir() else []:
        if run.name in done:
            continue
        algo, frac = run.name.rsplit("-", 1)
        limit = target_madds(float(frac))
        res = finished_results(run)
        # the journal keeps what the evaluator measured; the MAdds come from the space
        feas = [r for r in res if r.ok and space.cost(r.arch)["madds"] <= limit]
        best = max(feas, key=lambda r: r.reward) if feas else None
        rows.append({"algorithm": algo, "target_fraction": float(frac), "children": len(res), "feasible": len(feas),
                     "arch": space.arch_to_str(best.arch) if best else "none yet",
                     "proxy_reward": best.reward if best else np.nan})
    return pd.DataFrame(rows)


def plot(args, models: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = {"layernas": "o", "random": "s", "scaled": "^"}
    for kind, g in models.groupby("kind"):
        ax.errorbar(g.madds / 1e6, g.test_acc_mean, yerr=g.test_acc_std.fillna(0), fmt=markers.get(kind, "x"),
                    capsize=3, label=kind)
    for frac in args.targets:
        ax.axvline(target_madds(frac) / 1e6, ls="--", c="gray", lw=0.8)
        ax.text(target_madds(frac) / 1e6, ax.get_ylim()[1], f" target {frac:g}x", va="top", fontsize=8, c="gray")
    ax.set_xlabel("MAdds (M)")
    ax.set_ylabel("CIFAR-10 test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "accuracy_vs_madds.png", dpi=110)
    plt.close(fig)


def export_lines(args) -> list[str]:
    """The summary's export section: what ``export/`` holds and the ONNX round-trip check."""
    from layernas.trainers.export import MODEL_JSON

    metas = [(p.parent.name, json.loads(p.read_text())) for p in sorted((args.out / "export").glob(f"*/{MODEL_JSON}"))]
    if not metas:
        return []
    lines = ["## Export", "", "`layernas export RUN_DIR --out DIR` on each LayerNAS run directory: `model.json` "
             "(space, architecture, costs), the flax variables (`variables.msgpack`, the search proxy's training) and "
             "`model.onnx` (jax2onnx), run in onnxruntime on real CIFAR-10 images and compared with the JAX model.", "",
             "| export | arch | MAdds (M) | images | max abs logit diff | largest abs logit | top-1 agreement |",
             "|---|---|---|---|---|---|---|"]
    for name, m in metas:
        c = m.get("onnx_check") or {}
        lines.append(f"| `export/{name}` | `{m['arch_str']}` | {m['costs']['madds'] / 1e6:.2f} | {c.get('images')} "
                     f"({c.get('source')}) | {c.get('max_abs_diff', float('nan')):.2e} | "
                     f"{c.get('max_abs_logit', float('nan')):.3g} | {100 * c.get('top1_agreement', float('nan')):.0f}% |")
    return lines + ["", "The binary files are not committed; the command above writes them again.", ""]


GOAL_MARGIN = 1.0   # test-accuracy points LayerNAS must gain over the width-scaled network


def goal_lines(models: pd.DataFrame, final_seeds: int) -> list[str]:
    """The goal, per target, from ``models.csv``: within the same MAdds target, the LayerNAS
    answer beats the width-scaled network by ``GOAL_MARGIN`` points or more and beats
    random search (differences of seed means; a target missing a model says so). Each
    model's MAdds are shown: the scaled network is the widest one within the target, and
    widths come in steps, so it can sit a little below the LayerNAS answer."""
    lines = ["## The goal", "", f"Within the same MAdds target, LayerNAS's answer beats the width-scaled network by "
             f"{GOAL_MARGIN:g} point or more and beats random search (test accuracy, mean of {final_seeds} seeds).", "",
             f"| target | LayerNAS − scaled | ≥ {GOAL_MARGIN:g}, both within the target | LayerNAS − random | beats random |",
             "|---|---|---|---|---|"]
    for frac, g in models.groupby("target_fraction"):
        by = {r.kind: r for r in g.itertuples()}
        lay = by.get("layernas")
        cells = []
        for kind, margin in (("scaled", GOAL_MARGIN), ("random", 0.0)):
            other = by.get(kind)
            if lay is None or other is None:
                cells += ["not finished", "–"]
                continue
            diff = lay.test_acc_mean - other.test_acc_mean
            ok = diff >= margin if margin else diff > 0
            ok = ok and max(lay.madds, other.madds) <= lay.target_madds * (1 + 1e-12)
            cells += [f"{diff:+.2f} ({lay.test_acc_mean:.2f} vs {other.test_acc_mean:.2f}; "
                      f"{lay.madds / 1e6:.2f}M vs {other.madds / 1e6:.2f}M)", "yes" if ok else "NO"]
        lines.append(f"| {frac:g}x | " + " | ".join(cells) + " |")
    best = models.groupby("target_fraction").test_acc_mean.max()
    if len(best) > 1 and not best.is_monotonic_increasing:
        lines += ["", "The best final model of a larger target is *less* accurate than the best of a smaller one "
                  f"({', '.join(f'{f:g}x: {a:.2f} %' for f, a in best.items())}): with this final recipe the larger "
                  "networks are further from trained, so at those targets the comparison measures how fast a "
                  "network trains in the recipe's steps more than what it can reach."]
    return lines + [""]


def proxy_check_lines(path: Path) -> list[str]:
    """The final models scored by the search proxy with every training seed
    (``benchmarks/mobilenet_proxy_check.py``), if that has run."""
    if not path.exists():
        return []
    check = pd.read_csv(path)
    lines = ["## The final models under the search proxy", "",
             "Each final model trained with the search's proxy and every one of its 3 training seeds "
             "(`python benchmarks/mobilenet_proxy_check.py`; a search scores a child with one seed): "
             "does the search's own signal tell the models apart?", "",
             "| target | kind | MAdds (M) | proxy valid % (mean ± std) | per seed | final test % |", "|---|---|---|---|---|---|"]
    for r in check.sort_values(["target_fraction", "kind"]).itertuples():
        lines.append(f"| {r.target_fraction:g}x | {r.kind} | {r.madds / 1e6:.2f} | {r.proxy_valid_mean:.2f} ± "
                     f"{r.proxy_valid_std:.2f} | {str(r.proxy_valid_per_seed).replace(';', ', ')} | "
                     f"{r.final_test_mean:.2f} |")
    return lines + ["", f"{check.machine.iloc[0]}, {check.script_wall_s.iloc[0]:.0f} s wall.", ""]


def analyze(args, wall: float | None, notes: list[str]) -> None:
    s = settings(args)
    default = make_space().cost(make_space().default_arch())["madds"]
    lines = [f"# {FAMILY.label} search on CIFAR-10 under a MAdds budget{' (QUICK SMOKE RUN)' if args.quick else ''}", ""]
    searches = pd.read_csv(args.out / "searches.csv") if (args.out / "searches.csv").exists() else pd.DataFrame()
    models = pd.read_csv(args.out / "models.csv") if (args.out / "models.csv").exists() else pd.DataFrame()
    running = in_progress(args)
    expected = {(k, f) for k in KINDS for f in args.targets}
    have = {(r.kind, round(r.target_fraction, 6)) for r in models.itertuples()} if len(models) else set()
    missing = sorted(e for e in expected if (e[0], round(e[1], 6)) not in have)
    if missing or notes or args.partial_note:
        lines += ["**Partial results.** " + " ".join(
            ([args.partial_note] if args.partial_note else []) + notes
            + ([f"Models not finished: {', '.join(f'{k} at {f:g}x' for k, f in missing)}."] if missing else [])), ""]
    rec = final_recipe(s)
    test_split = "whole" if s["test_per_class"] is None else f"{10 * s['test_per_class']}-image"
    lines += [f"Space `{FAMILY.space}` ({make_space().num_layers} decisions; the default network has {default / 1e6:.1f}M MAdds). Targets: "
              + ", ".join(f"{f:g} x default = {target_madds(f) / 1e6:.2f}M MAdds" for f in args.targets) + ".", "",
              f"Search proxy: {10 * s['train']} CIFAR-10 training images ({10 * s['valid']} more held out of the "
              f"train split for the reward), {s['epochs']} epochs, batch {s['batch']}, SGD-Nesterov lr {s['lr']:g} cosine "
              f"({s['warmup']} warm-up epoch), "
              f"wd 5e-4, crop+flip; each query trains one of K=3 seeds (child store). LayerNAS: H={s['num_buckets']} "
              f"buckets equal-width over [0.75, 1] x target on every layer, at most "
              + ", ".join(f"{children_for(s, args.targets, f)} (at {f:g}x)" for f in args.targets) + " children; random "
              "search: as many children as LayerNAS used.", "",
              f"Final recipe (all models): {'all 5,000' if s['final_train'] is None else s['final_train']} training "
              f"images per class of the train split, {rec.epochs} epochs, batch {rec.batch_size}, SGD-Nesterov lr "
              f"{rec.learning_rate:g} {rec.schedule}{f' with {rec.warmup_epochs} warm-up epoch' if rec.warmup_epochs else ''}, "
              f"wd {rec.weight_decay:g}, crop+flip, {args.final_seeds} seeds; evaluated once on the "
              f"{test_split} test split, which "
              "the searches never read. Latency: batch 8 on this machine's CPU, LUT sum of per-unit times "
              "(`lut.json`) and the whole model measured; both are noisy on a shared machine.", ""]
    if len(searches) or len(running):
        lines += ["## Searches", "", "| algorithm | target | answer | MAdds (M) | proxy valid % | children | "
                  "trained now | wall s |", "|---|---|---|---|---|---|---|---|"]
        for r in searches.itertuples():
            lines.append(f"| {r.algorithm} | {r.target_fraction:g}x | `{r.arch}` | {r.madds / 1e6:.2f} | "
                         f"{r.proxy_reward:.2f} | {r.children} | {r.trained_now} | {r.wall_s:.0f} |")
        for r in running.itertuples():
            lines.append(f"| {r.algorithm} (not finished) | {r.target_fraction:g}x | `{r.arch}` | - | "
                         f"{r.proxy_reward:.2f} | {r.children} so far | - | - |")
        lines.append("")
    if len(models):
        lines += ["## Final models (test split)", "", "| kind | target (M) | arch | width | MAdds (M) | params (M) | "
                  "LUT ms | measured ms | test acc % | seeds | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in models.sort_values(["target_madds", "kind"]).itertuples():
            std = f" ± {r.test_acc_std:.2f}" if np.isfinite(r.test_acc_std) else ""
            lines.append(f"| {r.kind} | {r.target_madds / 1e6:.2f} | `{r.arch}` | {r.width:g} | {r.madds / 1e6:.2f} | "
                         f"{r.params / 1e6:.3f} | {r.latency_ms_lut:.1f} | {r.latency_ms_measured:.1f} | "
                         f"{r.test_acc_mean:.2f}{std} | {r.seeds} | {r.train_wall_s:.0f} |")
        lines += ["", f"`arch` is written in the space of its `width` (`{FAMILY.width_factory.split(':')[1]}(width=w)`; "
                  "1 = the searched space). ", "", "![accuracy vs MAdds](accuracy_vs_madds.png)", ""]
        lines += goal_lines(models, args.final_seeds)
        lines += proxy_check_lines(args.out / "proxy_check.csv")
        plot(args, models)
    else:
        lines += ["No final model finished yet.", ""]
    lines += export_lines(args)
    if wall is not None:
        import platform

        lines += [f"This invocation: {wall:.0f} s wall on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}"
                  f", shared; load average {os.getloadavg()[0]:.1f} at the end)."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    if wall is not None:
        from layernas.provenance import write_provenance

        write_provenance(args.out, wall, " ".join(["python"] + sys.argv), quick=args.quick,
                         targets=args.targets, settings=s, final_seeds=args.final_seeds, store=str(args.store),
                         partial=bool(missing or notes))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run (tiny data, few children)")
    p.add_argument("--space", choices=sorted(FAMILIES), default=DEFAULT_SPACE, help="the MobileNet space to search")
    p.add_argument("--out", type=Path, default=None, help="default: results/mobilenet_search/ (V2), "
                   "results/mobilenet_search_v3small/ (V3-Small)")
    p.add_argument("--store", type=Path, help="child store (default: the user cache's children store)")
    p.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5],
                   help="MAdds targets as fractions of the default network's")
    p.add_argument("--children", type=int, nargs="+", default=None,
                   help="most children per LayerNAS search: one number, or one per target "
                        "(default: by space and target, FAMILIES)"),
    p.add_argument("--num-buckets", type=int, default=1, help="LayerNAS cost buckets per layer (H)")
    p.add_argument("--final-seeds", type=int, default=2)
    p.add_argument("--final-epochs", type=int, default=30)
    p.add_argument("--final-train-per-class", type=int, default=None, help="default: the whole train split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="deadline: interrupt the work after this")
    p.add_argument("--partial-note", default="", help="a note printed at the top of summary.md")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--only-finals", nargs="+", choices=KINDS, default=None, metavar="KIND",
                   help="skip the searches and train only these kinds' final models (of finished "
                        "searches; 'scaled' needs none): a second process can train them while the full run "
                        "searches (the store trains each model once; rows are written under a file lock)")
    args = p.parse_args(argv)
    global FAMILY
    FAMILY = FAMILIES[args.space]
    args.out = args.out or FAMILY.out
    if not (CIFAR10 / "train").is_dir():
        print(f"mobilenet_search: needs {CIFAR10}/train", file=sys.stderr)
        return 2
    from layernas.trainers.child_store import DEFAULT_STORE

    args.store = args.store or DEFAULT_STORE
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    notes: list[str] = []

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.0f} s] {msg}", flush=True)

    if not args.analyze_only:
        from layernas.trainers import train

        train.configure_compilation_cache()
        timer = None
        if args.minutes is not None:
            timer = threading.Timer(60 * args.minutes, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
        try:
            run_all(args, settings(args), log)
        except KeyboardInterrupt:
            why = f"at its deadline ({args.minutes:g} min) or by an interrupt" if args.minutes is not None \
                else "by an interrupt"
            notes.append(f"The run was stopped {why}; what is listed is what had finished (finished children "
                         "are in the store, so a rerun resumes).")
            log("interrupted: writing the partial summary")
        finally:
            if timer is not None:
                timer.cancel()
    analyze(args, None if args.analyze_only else time.perf_counter() - t0, notes)
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
