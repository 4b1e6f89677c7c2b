"""Trained search on NATS tss, scored by the NATS-Bench table: a proxy study and searches.

Every child is trained on real CIFAR-10 (``../shared/data/cifar10``, train split only; the
validation split is held out of it; the test split is never read) through the child store
(:mod:`layernas.trainers.stored_evaluator`), so an interrupted run resumes from the store
and a child shared by the study and several searches is trained once. The NATS-Bench table
(``../shared/data/nats_tss/nats_tss_200ep.csv``) is read only to pick the study's cells,
to correlate proxies with its 200-epoch ``cifar10_valid_mean``, and to score final answers.
The searchers see proxy rewards only.

Parts:

* ``study``: cells under 50% of the maximum FLOPs, value-spaced over the feasible cells'
  accuracy range, plus extra cells from their top quartile, run in a seeded shuffled order
  (a cut-short study still spans the range). Variants (one thing changed at a time from the
  base proxy C=8, N=1, 2,000 training images, 3 epochs): ``base``, ``synflow`` (zero-cost,
  on the base network at init), ``base+synflow-tiebreak`` (within 1 point of proxy reward,
  higher SynFlow first), ``warm-1ep`` (each cell warm-started from a LayerNAS-style parent:
  the cell with its last non-conv3x3 edge set back to conv3x3, trained from scratch; the
  child trains 1 epoch), and with ``--variants`` also ``epochs-6``, ``C16``, ``images-4000``.
  ``proxy_study.csv`` reports Kendall/Spearman over all cells and within the top quartile,
  ``kendall_bucket`` the mean Kendall inside equal-width FLOPs buckets (what LayerNAS ranks
  within), and the seconds per child.
* ``search``: LayerNAS (``--num-buckets`` cost buckets), REA and random search at 50%
  FLOPs, each driving real training with the base proxy and K=3 training seeds per query;
  REA and random get as many trained children as LayerNAS used in the same seed;
  ``answers.csv`` records each answer with its table accuracies; ``curves.csv``
  the table test accuracy of each run's current answer after every child.

``summary.md`` and ``answer_curves.png`` are rewritten from the CSVs at the end
(``--analyze-only`` redoes just that). ``--quick`` is a minutes-long smoke run (tiny
network, few images and cells) that writes the same files to ``--out``.

Usage:
    nohup nice -n 10 python benchmarks/trained_search.py &       # -> results/trained_search/
    python benchmarks/trained_search.py --quick --out /tmp/ts     # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))
TSS_CSV = SHARED / "data" / "nats_tss" / "nats_tss_200ep.csv"
CIFAR10 = SHARED / "data" / "cifar10"
OUT = REPO / "results" / "trained_search"
REFERENCE = "cifar10_valid_mean"
TABLE_LAYERNAS, ORACLE = 94.00, 94.31  # table-driven LayerNAS answer and the best feasible cell (test)
CONV3 = 3  # index of nor_conv_3x3 in the tss ops


# ----------------------------------------------------------------------------- setup
def settings(args) -> dict:
    """Network, recipe and data of the base proxy (``--quick`` shrinks everything)."""
    if args.quick:
        return {"C": 2, "N": 1, "train": 10, "valid": 5, "epochs": 2, "batch": 32}
    from layernas.trainers import train  # the named recipe and network

    r, net = train.TRAINED_SEARCH, train.TRAINED_SEARCH_NETWORK
    return {**net, "train": r.train_per_class - r.valid_per_class, "valid": r.valid_per_class,
            "epochs": r.epochs, "batch": r.batch_size}


def base_recipe(s: dict, **changes):
    from layernas.trainers import train

    r = train.TRAINED_SEARCH.replace(epochs=s["epochs"], batch_size=s["batch"],
                                     train_per_class=s["train"] + s["valid"], valid_per_class=s["valid"])
    return r.replace(**changes)


def feasible_table(space) -> tuple[pd.DataFrame, float]:
    table = pd.read_csv(TSS_CSV)
    archs = np.stack([space.str_to_arch(t) for t in table.arch_str])
    table["flops"] = space.flops_of_array(archs)
    limit = 0.5 * space.cost_bounds((), "flops")[1]
    return table, limit


def select_cells(table: pd.DataFrame, limit: float, n: int, extra_top: int, seed: int) -> pd.DataFrame:
    """``n`` feasible cells nearest to accuracies spaced evenly over the feasible range, plus
    ``extra_top`` random feasible top-quartile cells, in a seeded shuffled order."""
    rng = np.random.default_rng(seed)
    feas = table[table.flops <= limit]
    acc = feas[REFERENCE].to_numpy()
    chosen: list[int] = []
    for target in np.linspace(acc.min(), acc.max(), n):
        dist = np.abs(acc - target)
        dist[[feas.index.get_loc(i) for i in chosen]] = np.inf
        chosen.append(int(feas.index[int(np.argmin(dist))]))
    top = feas[feas[REFERENCE] >= np.quantile(acc, 0.75)]
    free = [int(i) for i in top.index if int(i) not in chosen]
    chosen += [int(i) for i in rng.choice(free, size=min(extra_top, len(free)), replace=False)]
    rows = table.loc[chosen].copy()
    rows["selection"] = ["spaced"] * n + ["top-extra"] * (len(rows) - n)
    return rows.iloc[rng.permutation(len(rows))]


def layernas_parent(arch) -> tuple[int, ...] | None:
    """The cell LayerNAS would have trained before ``arch``: its last edge that is not at the
    default op (conv3x3) set back to the default. None for the all-default cell."""
    arch = list(arch)
    for i in reversed(range(len(arch))):
        if arch[i] != CONV3:
            return tuple(arch[:i] + [CONV3] + arch[i + 1:])
    return None


def make_evaluator(space, s, data, store, recipe=None, **kw):
    from layernas.trainers.stored_evaluator import StoredTrainerEvaluator

    return StoredTrainerEvaluator(space, data, recipe or base_recipe(s), store=store,
                                  model_kwargs={"C": s["C"], "N": s["N"]}, **kw)


def append_row(path: Path, row: dict) -> None:
    """Add a row to a CSV (rewritten whole: columns may grow); safe with several processes."""
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        frame = pd.concat([pd.read_csv(path), pd.DataFrame([row])]) if path.exists() else pd.DataFrame([row])
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)


def drop_rows(path: Path, where) -> None:
    """Remove the rows for which ``where(frame)`` is True from a CSV written by :func:`append_row`."""
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        if not path.exists():
            return
        frame = pd.read_csv(path)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        frame[~where(frame)].to_csv(tmp, index=False)
        os.replace(tmp, path)


# ----------------------------------------------------------------------------- study
def run_study(args, space, s, data, deadline: float) -> None:
    from layernas.evaluator import Trial
    from layernas.trainers.warm_start import WarmStart

    table, limit = feasible_table(space)
    cells = select_cells(table, limit, args.cells, args.top_extra, args.seed)
    runs = args.out / "study_runs.csv"
    done = set()
    if runs.exists():
        prev = pd.read_csv(runs)
        done = set(zip(prev["index"], prev["variant"]))
    scratch = make_evaluator(space, s, data, args.store, training_seeds=1)
    warm = make_evaluator(space, s, data, args.store, training_seeds=1, warm_start=WarmStart(1))
    extra = {}
    if "epochs-6" in args.variants:
        extra["epochs-6"] = make_evaluator(space, s, data, args.store, base_recipe(s, epochs=6), training_seeds=1)
    if "images-4000" in args.variants:
        s4 = {**s, "train": 2 * s["train"]}
        extra["images-4000"] = make_evaluator(space, s4, data, args.store,
                                              base_recipe(s4), training_seeds=1)
    if "C16" in args.variants:
        extra["C16"] = make_evaluator(space, {**s, "C": 2 * s["C"]}, data, args.store, training_seeds=1)
    for k, row in enumerate(cells.itertuples()):
        if time.time() > deadline:
            print(f"study: deadline reached after {k} of {len(cells)} cells", flush=True)
            return
        arch = space.str_to_arch(row.arch_str)
        base = {"index": int(row.Index), "arch_str": row.arch_str, "selection": row.selection,
                "flops": float(row.flops), "reference_valid": float(getattr(row, REFERENCE)),
                "loadavg_1min": os.getloadavg()[0]}

        def record(variant, score, seconds, **more):
            append_row(runs, {**base, "variant": variant, "score": score, "seconds": round(seconds, 3), **more})
            print(f"[{k + 1}/{len(cells)}] {variant:<12} ref {base['reference_valid']:.2f} score {score:.4g} "
                  f"{seconds:.1f}s", flush=True)

        if (row.Index, "synflow") not in done:
            t0 = time.perf_counter()
            record("synflow", synflow_of(space, s, arch, args.seed), time.perf_counter() - t0)
        if (row.Index, "base") not in done:
            r = scratch.evaluate(Trial(k, arch, 0))
            record("base", r.reward, r.cost_seconds, child=r.info.get("child"), status=r.status)
        parent = layernas_parent(arch)
        if parent is not None and (row.Index, "warm-1ep") not in done:
            p = scratch.evaluate(Trial(k, parent, 0))
            r = warm.evaluate(Trial(k, arch, 0))
            record("warm-1ep", r.reward, r.cost_seconds, child=r.info.get("child"), status=r.status,
                   warm_from=r.info.get("warm_from"), parent_seconds=p.cost_seconds)
        for name, ev in extra.items():
            if (row.Index, name) not in done:
                r = ev.evaluate(Trial(k, arch, 0))
                record(name, r.reward, r.cost_seconds, child=r.info.get("child"), status=r.status)


def synflow_of(space, s: dict, arch, seed: int) -> float:
    """SynFlow (log) of the base proxy's network for ``arch``, at its initialisation of ``seed``."""
    from layernas.trainers import nats_models, train, zero_cost

    model = nats_models.build_tss([space.layers[0].options[a] for a in arch], 10, C=s["C"], N=s["N"])
    v = train.init_variables(model, (1, 32, 32, 3), seed)
    return float(zero_cost.synflow(model, v, (1, 32, 32, 3)))


def bucket_kendall(g: pd.DataFrame, score: str, edges: np.ndarray) -> float:
    from scipy import stats

    taus, weights = [], []
    for _, h in g.groupby(np.searchsorted(edges, g.flops)):
        if len(h) >= 3 and h[score].nunique() > 1 and h.reference_valid.nunique() > 1:
            taus.append(stats.kendalltau(h[score], h.reference_valid).statistic)
            weights.append(len(h))
    return float(np.average(taus, weights=weights)) if taus else float("nan")


def study_table(args, space) -> pd.DataFrame:
    from scipy import stats

    runs = pd.read_csv(args.out / "study_runs.csv")
    runs = runs[np.isfinite(runs.score) | (runs.variant == "synflow")]
    wide = runs.pivot_table(index="index", columns="variant", values="score", aggfunc="first")
    if {"base", "synflow"} <= set(wide.columns):  # lexicographic: 1-point proxy bins, then synflow
        syn_rank = wide["synflow"].rank(pct=True)
        runs = pd.concat([runs, pd.DataFrame({
            "index": wide.index, "variant": "base+synflow-tiebreak",
            "score": np.floor(wide["base"]) + 0.999 * syn_rank.values,
            "seconds": np.nan})]).reset_index(drop=True)
        meta = pd.read_csv(args.out / "study_runs.csv").drop_duplicates("index").set_index("index")
        for col in ("flops", "reference_valid"):
            runs[col] = runs["index"].map(meta[col])
        secs = runs[runs.variant.isin(["base", "synflow"])].groupby("variant").seconds.median()
        runs.loc[runs.variant == "base+synflow-tiebreak", "seconds"] = secs.sum()
    table, limit = feasible_table(space)
    feas = table[table.flops <= limit]
    top_cut = np.quantile(feas[REFERENCE], 0.75)
    edges = np.linspace(feas.flops.min(), limit, 6)[1:-1]  # 5 equal-width FLOPs buckets
    rows = []
    for variant, g in runs.groupby("variant"):
        g = g[np.isfinite(g.score) | (variant == "synflow")].replace(-np.inf, -1e9)
        if len(g) < 3:
            continue
        top = g[g.reference_valid >= top_cut]

        def corr(h, f):
            return f(h.score, h.reference_valid).statistic if len(h) >= 3 else float("nan")

        rows.append({"variant": variant, "seconds_per_child": float(g.seconds.median()), "n": len(g),
                     "kendall_all": corr(g, stats.kendalltau), "spearman_all": corr(g, stats.spearmanr),
                     "kendall_top": corr(top, stats.kendalltau), "spearman_top": corr(top, stats.spearmanr),
                     "n_top": len(top), "kendall_bucket": bucket_kendall(g, "score", edges)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- searches
def run_searches(args, space, s, data, deadline: float) -> None:
    import layernas
    from layernas.run import RunError

    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    target = layernas.Target("flops", max=limit)
    answers, curves = args.out / "answers.csv", args.out / "curves.csv"
    done = set()
    if answers.exists():
        done = set(zip(*pd.read_csv(answers)[["algorithm", "seed"]].T.values))
    # LayerNAS ends by itself once its layerwise search is exhausted (when_exhausted="stop"):
    # REA and random then get as many children as it used.
    # LayerNAS as the first searches ran: no warm start, no dive, stopping when the layerwise
    # search is done
    options = {"layernas": {"num_buckets": args.num_buckets, "when_exhausted": "stop", "warm_start": 0,
                            "dives": 0},
               "rea": {}, "random": {},
               # the paper's LayerNAS (unsearched layers at their most expensive option): what the
               # default preset saves in trained children that can never be the answer
               "layernas-paper": {"num_buckets": args.num_buckets, "preset": "paper"}}
    for seed in range(args.search_seeds):
        for algo in args.algorithms:
            if (algo, seed) in done:
                continue
            if time.time() > deadline:
                print(f"search: deadline reached before {algo} seed {seed}", flush=True)
                return
            ev = make_evaluator(space, s, data, args.store, training_seeds=3)
            out = args.out / "runs" / f"{algo}-{seed}"
            children = args.children
            if algo in ("rea", "random"):  # the same number of trained children as LayerNAS used
                while True:  # a LayerNAS run of this seed in another process: wait for its count
                    prev = pd.read_csv(answers) if answers.exists() else pd.DataFrame(columns=["algorithm", "seed"])
                    lay = prev[(prev.algorithm == "layernas") & (prev.seed == seed)]
                    if len(lay) or not (args.out / "runs" / f"layernas-{seed}").exists() or time.time() > deadline:
                        break
                    time.sleep(20)
                children = int(lay.children_trained.iloc[0]) if len(lay) else children
            t0 = time.perf_counter()
            try:
                res = layernas.search(space, ev, children, target, seed=seed, searcher=algo.split("-")[0],
                                      searcher_options=options[algo], out_dir=out, resume=out.exists(),
                                      progress=True)
            except RunError as e:
                print(f"search {algo} seed {seed}: {e}", flush=True)
                continue
            wall = time.perf_counter() - t0
            h = res.history
            best, best_reward = None, -np.inf
            for i, r in enumerate(h.itertuples()):  # the running answer, scored by the table
                if r.feasible and r.reward > best_reward:
                    best, best_reward = r.arch_str, r.reward
                test = float(lookup.loc[best, "cifar10_test_mean"]) if best else np.nan
                append_row(curves, {"algorithm": algo, "seed": seed, "children_trained": i + 1,
                                    "table_test_mean": test})
            b = res.best
            append_row(answers, {
                "algorithm": algo, "seed": seed, "arch_str": b["arch_str"] if b else "",
                "flops": b["costs"]["flops"] if b else np.nan, "children_trained": len(h),
                "proxy_reward": b["reward"] if b else np.nan,
                "table_valid_mean": float(lookup.loc[b["arch_str"], REFERENCE]) if b else np.nan,
                "table_test_mean": float(lookup.loc[b["arch_str"], "cifar10_test_mean"]) if b else np.nan,
                "wall_s": round(wall, 1), "infeasible_children": int((~h["feasible"]).sum()), "trained_now": int((h["child"] == "trained").sum()),
                "train_seconds": round(float(h.cost_seconds.sum()), 1)})
            print(f"search {algo} seed {seed}: {b['arch_str'] if b else None} -> test "
                  f"{lookup.loc[b['arch_str'], 'cifar10_test_mean'] if b else float('nan'):.2f} ({wall:.0f} s)",
                  flush=True)


# ----------------------------------------------------------------------------- the final pick
def held_out_images(ev, per_class: int, seed: int):
    """``per_class`` images of each class from the train split that are not among the
    proxy's training or validation images (compared by content), seeded."""
    from layernas.trainers import data as data_lib

    full = data_lib.load_image_folder(CIFAR10, "train")
    used = {im.tobytes() for ds in ev.datasets for im in ds.images}
    free = np.array([i for i in range(len(full)) if full.images[i].tobytes() not in used])
    rng = np.random.default_rng(seed)
    pick = [np.sort(rng.permutation(free[full.labels[free] == c])[:per_class]) for c in range(full.num_classes)]
    return full.subset(np.sort(np.concatenate(pick)))


def run_rescore(args, space, s, data) -> None:
    """Every feasible child of the finished searches, its stored weights scored again on a
    held-out set ``--rescore-per-class`` x 10 images large (no retraining): is the proxy's
    noise in its 1,000-image validation measurement, or in the training itself?"""
    import jax
    import jax.numpy as jnp

    from layernas.run import finished_results
    from layernas.trainers import data as data_lib
    from layernas.trainers.child_store import ChildStore, child_key

    ev = make_evaluator(space, s, data, args.store, training_seeds=3)
    store = ChildStore(args.store)
    big = held_out_images(ev, args.rescore_per_class, args.seed)
    mean, std = ev.datasets[0].channel_stats()
    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    path = args.out / "rescore.csv"
    have = set()
    if path.exists():
        prev = pd.read_csv(path)
        have = set(zip(prev.arch_str, prev.training_seed))
    for run in sorted(p for p in (args.out / "runs").glob("*") if p.is_dir()):
        for r in finished_results(run):
            arch = space.arch_to_str(r.arch)
            seed = int(r.info.get("training_seed", -1))
            if r.status != "ok" or (arch, seed) in have or lookup.loc[arch, "flops"] > limit:
                continue
            child = store.get(child_key(ev.family, "scratch", r.arch, seed), weights=True)
            if child is None:
                continue
            model = ev.build(r.arch)
            predict = jax.jit(lambda v, x, model=model: jnp.argmax(
                model.apply(v, data_lib.normalize(x, mean, std), train=False), -1))
            t0 = time.perf_counter()
            correct = sum(int((np.asarray(predict(child.variables, big.images[i:i + 1000]))
                               == big.labels[i:i + 1000]).sum()) for i in range(0, len(big), 1000))
            have.add((arch, seed))
            append_row(path, {"arch_str": arch, "training_seed": seed, "proxy": r.reward,
                              "held_out": 100.0 * correct / len(big), "held_out_images": len(big),
                              "table_valid": float(lookup.loc[arch, REFERENCE]),
                              "table_test": float(lookup.loc[arch, "cifar10_test_mean"]),
                              "seconds": round(time.perf_counter() - t0, 2)})
            print(f"rescore {run.name}: {arch} seed {seed}: proxy {r.reward:.1f} held-out "
                  f"{100.0 * correct / len(big):.2f}", flush=True)


SYNFLOW_PICK_TOP = 5  # fixed before any search answer was scored: the finalists' count


def run_synflow_pick(args, space, s, deadline: float) -> None:
    """SynFlow of every feasible child cell of the finished searches (``synflow.csv``), for
    the final pick by SynFlow: among all feasible children, and among the best
    ``SYNFLOW_PICK_TOP`` by proxy reward (the study ranks the top quartile better by SynFlow
    than by the trained proxy; a search's children are mostly there)."""
    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    path = args.out / "synflow.csv"
    have = set(pd.read_csv(path).arch_str) if path.exists() else set()
    answers = pd.read_csv(args.out / "answers.csv")
    for a in answers.itertuples():
        for h in run_children(args.out / "runs" / f"{a.algorithm}-{a.seed}", space, lookup, limit):
            if not h["feasible"] or h["arch_str"] in have:
                continue
            if time.time() > deadline:
                print("synflow-pick: deadline reached", flush=True)
                return
            t0 = time.perf_counter()
            value = synflow_of(space, s, space.str_to_arch(h["arch_str"]), args.seed)
            have.add(h["arch_str"])
            append_row(path, {"arch_str": h["arch_str"], "synflow": value,
                              "seconds": round(time.perf_counter() - t0, 2)})
            print(f"synflow {a.algorithm}-{a.seed}: {h['arch_str']} {value:.2f}", flush=True)


def synflow_picks(args, space) -> pd.DataFrame:
    """Per finished search: its answer, and the picks by SynFlow among all its feasible
    children and among its best ``SYNFLOW_PICK_TOP`` by proxy, scored by the table."""
    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    syn = pd.read_csv(args.out / "synflow.csv").drop_duplicates("arch_str").set_index("arch_str").synflow
    rows = []
    for a in pd.read_csv(args.out / "answers.csv").itertuples():
        best = best_feasible_rewards(args.out / "runs" / f"{a.algorithm}-{a.seed}", space, lookup, limit)
        if not best or not all(k in syn.index for k in best):
            continue
        top = sorted(best, key=lambda k: -best[k])[:SYNFLOW_PICK_TOP]
        pick_all, pick_top = max(best, key=lambda k: syn[k]), max(top, key=lambda k: syn[k])
        rows.append({"algorithm": a.algorithm, "seed": a.seed, "answer_test": float(a.table_test_mean),
                     "synflow_all_test": float(lookup.loc[pick_all, "cifar10_test_mean"]),
                     "synflow_top_test": float(lookup.loc[pick_top, "cifar10_test_mean"])})
    return pd.DataFrame(rows)


def run_finalists(args, space, s, data, deadline: float) -> None:
    """For each finished LayerNAS search: its ``--finalists`` best feasible children by proxy
    reward, trained with every one of the K=3 training seeds (through the store), and the
    answer picked again by the mean over the seeds. Charged: the children trained for it."""
    from layernas.evaluator import Trial

    ev = make_evaluator(space, s, data, args.store, training_seeds=3)
    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    path = args.out / "finalists.csv"
    done = set()
    if path.exists():
        done = set(zip(*pd.read_csv(path)[["algorithm", "seed"]].T.values))
    answers = pd.read_csv(args.out / "answers.csv")
    order = {algo: i for i, algo in enumerate(args.finalist_algorithms)}
    answers = answers[answers.algorithm.isin(order)]
    answers = answers.iloc[np.lexsort((answers.seed, answers.algorithm.map(order)))]
    for a in answers.itertuples():
        if (a.algorithm, a.seed) in done:
            continue
        if time.time() > deadline:
            print("finalists: deadline reached", flush=True)
            return
        best = best_feasible_rewards(args.out / "runs" / f"{a.algorithm}-{a.seed}", space, lookup, limit)
        finalists = sorted(best, key=lambda k: -best[k])[:args.finalists]
        means, trained, seconds = {}, 0, 0.0
        for arch_str in finalists:
            arch = space.str_to_arch(arch_str)
            rewards = []
            for seed in range(3):
                r = ev.evaluate(Trial(0, arch, seed), training_seed=seed)
                trained += r.info.get("child") == "trained"
                seconds += r.cost_seconds if r.info.get("child") == "trained" else 0.0
                rewards.append(r.reward if r.ok else -np.inf)
            means[arch_str] = float(np.mean(rewards))
        pick = max(means, key=means.get)
        append_row(path, {"algorithm": a.algorithm, "seed": a.seed, "finalists": len(finalists),
                          "answer": a.arch_str, "answer_test": float(a.table_test_mean), "pick": pick,
                          "pick_seed_mean": means[pick], "pick_test": float(lookup.loc[pick, "cifar10_test_mean"]),
                          "extra_children_trained": trained, "extra_train_seconds": round(seconds, 1)})
        print(f"finalists {a.algorithm} {a.seed}: {a.table_test_mean:.2f} -> "
              f"{lookup.loc[pick, 'cifar10_test_mean']:.2f} ({trained} more children)", flush=True)


# ----------------------------------------------------------------------------- report
def run_children(run: Path, space, lookup: pd.DataFrame, limit: float) -> list[dict]:
    """Every child a search folder trained, in order: its arch string, proxy reward, and
    whether it is feasible (trained ok, and under ``limit`` by the table's FLOPs)."""
    from layernas.run import finished_results

    out = []
    for r in finished_results(run):
        arch = space.arch_to_str(r.arch)
        out.append({"arch_str": arch, "reward": r.reward,
                    "feasible": r.status == "ok" and lookup.loc[arch, "flops"] <= limit})
    return out


def best_feasible_rewards(run: Path, space, lookup: pd.DataFrame, limit: float) -> dict[str, float]:
    """Each feasible cell a search folder trained -> its best proxy reward over its queries."""
    best: dict[str, float] = {}
    for h in run_children(run, space, lookup, limit):
        if h["feasible"]:
            best[h["arch_str"]] = max(best.get(h["arch_str"], -np.inf), h["reward"])
    return best


def in_progress(args, space) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Searches with a checkpoint but no row in answers.csv: their state so far, and the
    table test accuracy of their running answer after each child (curves.csv's columns)."""
    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    done = set()
    if (args.out / "answers.csv").exists():
        done = {f"{a}-{s}" for a, s in pd.read_csv(args.out / "answers.csv")[["algorithm", "seed"]].values}
    rows, curve = [], []
    for run in sorted(p for p in (args.out / "runs").glob("*") if p.is_dir()):
        name = run.name
        if name in done:
            continue
        hist = run_children(run, space, lookup, limit)
        algo, seed = name.rsplit("-", 1)
        best_so_far = None
        for i, h in enumerate(hist):
            if h["feasible"] and (best_so_far is None or h["reward"] > best_so_far["reward"]):
                best_so_far = h
            curve.append({"algorithm": algo, "seed": int(seed), "children_trained": i + 1, "table_test_mean":
                          float(lookup.loc[best_so_far["arch_str"], "cifar10_test_mean"]) if best_so_far else np.nan})
        feas = [h for h in hist if h["feasible"]]
        best = max(feas, key=lambda h: h["reward"]) if feas else None
        rows.append({"algorithm": algo, "seed": int(seed), "children": len(hist), "feasible": len(feas),
                     "arch_str": best["arch_str"] if best else "none yet",
                     "table_test_mean": float(lookup.loc[best["arch_str"], "cifar10_test_mean"]) if best else np.nan})
    return pd.DataFrame(rows), pd.DataFrame(curve)


def diagnose(args, space, answers: pd.DataFrame) -> pd.DataFrame:
    """Per finished search: its answer against the best feasible child it trained, the
    answer's rank among those by table validation, and proxy-vs-table Kendall over them."""
    from scipy import stats

    table, limit = feasible_table(space)
    lookup = table.set_index("arch_str")
    rows = []
    for a in answers.itertuples():
        run = args.out / "runs" / f"{a.algorithm}-{a.seed}"
        if not run.is_dir() or not isinstance(a.arch_str, str) or not a.arch_str:
            continue
        kids = {}  # arch -> mean proxy reward over its queries
        for h in run_children(run, space, lookup, limit):
            if h["feasible"]:
                kids.setdefault(h["arch_str"], []).append(h["reward"])
        if not kids:
            continue
        k = pd.DataFrame({"arch_str": list(kids), "proxy": [np.mean(v) for v in kids.values()]})
        k["valid"] = k.arch_str.map(lookup[REFERENCE])
        k["test"] = k.arch_str.map(lookup["cifar10_test_mean"])
        rank = int((k.valid > float(lookup.loc[a.arch_str, REFERENCE])).sum()) + 1
        tau = stats.kendalltau(k.proxy, k.valid).statistic if len(k) >= 3 else float("nan")
        rows.append({"algorithm": a.algorithm, "seed": a.seed, "feasible_trained": len(k),
                     "answer_test": float(a.table_test_mean), "best_trained_test": float(k.test.max()),
                     "answer_rank": rank, "kendall_proxy_table": float(tau)})
    return pd.DataFrame(rows)


def final_pick_sections(args, space) -> list[str]:
    """summary.md's sections on rescore.csv and finalists.csv (empty if neither exists)."""
    from scipy import stats

    lines = []
    if (args.out / "rescore.csv").exists():
        d = pd.read_csv(args.out / "rescore.csv")
        kt = {c: stats.kendalltau(d[c], d.table_valid).statistic for c in ("proxy", "held_out")}
        multi = d.groupby("arch_str").filter(lambda g: len(g) > 1)
        n_valid = 10 * settings(args)["valid"]
        spread = multi.groupby("arch_str").held_out.std(ddof=1).mean() if len(multi) else float("nan")
        lines += ["", "## Is the proxy's noise in its validation measurement? (`rescore.csv`)", "",
                  f"Every feasible child of the searches ({len(d)} trained (cell, seed) pairs, "
                  f"{d.arch_str.nunique()} cells) scored again from its stored weights on "
                  f"{int(d.held_out_images.iloc[0])} held-out train-split images "
                  f"({int(d.held_out_images.iloc[0]) / n_valid:.0f}x the proxy's validation set, none of them "
                  "seen in training or validation), without retraining.", "",
                  "| measure | Kendall vs table valid | Pearson with the proxy |", "|---|---|---|",
                  f"| proxy ({n_valid} validation images) | {kt['proxy']:.3f} | 1 |",
                  f"| held-out ({int(d.held_out_images.iloc[0])} images) | {kt['held_out']:.3f} | "
                  f"{stats.pearsonr(d.proxy, d.held_out).statistic:.3f} |"]
        if multi.arch_str.nunique() >= 3:
            mean = multi.groupby("arch_str").agg(h=("held_out", "mean"), v=("table_valid", "first"))
            lines.append(f"| held-out, mean over a cell's seeds ({len(mean)} cells with 2-3 seeds) | "
                         f"{stats.kendalltau(mean.h, mean.v).statistic:.3f} | |")
        lines += ["",
                  f"Between training seeds of one cell the held-out accuracy varies by {spread:.2f} points "
                  f"(mean standard deviation over the {multi.arch_str.nunique()} cells trained with more than "
                  f"one seed), against {d.groupby('arch_str').held_out.mean().std(ddof=1):.2f} between cells."]
    if (args.out / "synflow.csv").exists():
        sp = synflow_picks(args, space)
        if len(sp):
            sp.to_csv(args.out / "synflow_picks.csv", index=False)
            lines += ["", "## Picking the answer by SynFlow (`synflow_picks.csv`)", "",
                      "The searches as they ran (proxy rewards); only the final pick changes: the feasible child "
                      f"with the highest SynFlow, among all of them or among the best {SYNFLOW_PICK_TOP} by "
                      "proxy. Costs one SynFlow per child (seconds, no training).", "",
                      "| algorithm | runs | answer test mean | SynFlow pick, all children | "
                      f"SynFlow pick, best {SYNFLOW_PICK_TOP} by proxy |", "|---|---|---|---|---|"]
            for algo, g in sp.groupby("algorithm"):
                lines.append(f"| {algo} | {len(g)} | {g.answer_test.mean():.2f} | {g.synflow_all_test.mean():.2f} | "
                             f"{g.synflow_top_test.mean():.2f} |")
    if (args.out / "finalists.csv").exists():
        f = pd.read_csv(args.out / "finalists.csv")
        lines += ["", "## Picking again among finalists trained with every seed (`finalists.csv`)", "",
                  f"Each search's {int(f.finalists.max())} best feasible children by proxy, trained with all "
                  "3 training seeds (most already in the store), and the answer picked by the mean.", "",
                  "| algorithm | seed | answer test | re-picked test | more children trained |",
                  "|---|---|---|---|---|"]
        for r in f.itertuples():
            lines.append(f"| {r.algorithm} | {r.seed} | {r.answer_test:.2f} | {r.pick_test:.2f} | "
                         f"{r.extra_children_trained} |")
        lines += ["", "| algorithm | runs | answer test mean | re-picked test mean | more children (mean) |",
                  "|---|---|---|---|---|"]
        for algo, g in f.groupby("algorithm"):
            lines.append(f"| {algo} | {len(g)} | {g.answer_test.mean():.2f} | {g.pick_test.mean():.2f} | "
                         f"{g.extra_children_trained.mean():.1f} |")
    return lines


def analyze(args, space, wall: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"# Trained search on NATS tss / cifar10 at 50% FLOPs{' (QUICK SMOKE RUN)' if args.quick else ''}", ""]
    if args.partial_note:
        lines += [f"**Partial results.** {args.partial_note}", ""]
    s = settings(args)
    lines += [f"Base proxy: tss skeleton C={s['C']}, N={s['N']}, {10 * s['train']} CIFAR-10 training images "
              f"({10 * s['valid']} more held out of the train split for validation), {s['epochs']} epochs, "
              f"SGD-Nesterov lr 0.1 constant, batch {s['batch']}, crop+flip. The test split is never read; the "
              "table is read only for the cell selection, the correlations and the final scores.", ""]
    if (args.out / "study_runs.csv").exists():
        study = study_table(args, space)
        study.to_csv(args.out / "proxy_study.csv", index=False)
        lines += ["## Proxy study (reference: table 200-epoch `cifar10_valid_mean`)", "",
                  "| variant | s/child (median) | n | Kendall all | Spearman all | n top | Kendall top | "
                  "Spearman top | Kendall in FLOPs bucket |", "|---|---|---|---|---|---|---|---|---|"]
        for r in study.itertuples():
            lines.append(f"| {r.variant} | {r.seconds_per_child:.1f} | {r.n} | {r.kendall_all:.3f} | "
                         f"{r.spearman_all:.3f} | {r.n_top} | {r.kendall_top:.3f} | {r.spearman_top:.3f} | "
                         f"{r.kendall_bucket:.3f} |")
        lines += ["", "Top = cells in the feasible top quartile of the table. `warm-1ep` seconds are the "
                  "child's only (its parent is trained in a search anyway); `base+synflow-tiebreak` costs "
                  "both. SynFlow is computed on the base network at initialisation.", ""]
    running, running_curves = in_progress(args, space)
    if len(running):
        lines += ["## Searches not finished when this summary was written",
                  "", "They resume from their checkpoints, and their children from the store.",
                  "", "| algorithm | seed | children so far | feasible so far | current answer | table test |",
                  "|---|---|---|---|---|---|"]
        for r in running.itertuples():
            lines.append(f"| {r.algorithm} | {r.seed} | {r.children} | {r.feasible} | `{r.arch_str}` | "
                         f"{r.table_test_mean:.2f} |")
        lines.append("")
    if (args.out / "answers.csv").exists() or len(running):
        ans = (pd.read_csv(args.out / "answers.csv") if (args.out / "answers.csv").exists()
               else pd.DataFrame(columns=["algorithm", "seed", "arch_str", "flops", "children_trained", "proxy_reward",
                                          "table_valid_mean", "table_test_mean", "wall_s", "trained_now",
                                          "train_seconds"]))
        lines += ["## Search answers", "", "| algorithm | seed | answer | MFLOPs | children | proxy | table valid | "
                  "table test | wall s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in ans.itertuples():
            lines.append(f"| {r.algorithm} | {r.seed} | `{r.arch_str}` | {r.flops:.1f} | {r.children_trained} | "
                         f"{r.proxy_reward:.2f} | {r.table_valid_mean:.2f} | {r.table_test_mean:.2f} | "
                         f"{r.wall_s:.0f} |")
        lines += ["", "| algorithm | runs | table test mean ± std |", "|---|---|---|"]
        for algo, g in ans.groupby("algorithm"):
            t = g.table_test_mean
            lines.append(f"| {algo} | {len(g)} | {t.mean():.2f} ± {t.std(ddof=1):.2f} |" if len(g) > 1
                         else f"| {algo} | 1 | {t.iloc[0]:.2f} |")
        lines += ["", f"For reference: table-driven LayerNAS answers {TABLE_LAYERNAS:.2f} test accuracy and the "
                  f"oracle (best feasible cell) {ORACLE:.2f}.", ""]
        lines += [f"CPU time: searches' wall time {ans.wall_s.sum():.0f} s, of which training charged "
                  f"{ans.train_seconds.sum():.0f} s over {ans.children_trained.sum()} queries "
                  f"({ans.trained_now.sum()} trained in the search itself, the rest reused from the store)."]
        diag = diagnose(args, space, ans)
        if len(diag):
            diag.to_csv(args.out / "diagnosis.csv", index=False)
            lines += ["", "## Where the answers lost: the proxy's pick or the path", "",
                      "For each finished search, among the feasible children it trained: the best table test "
                      "accuracy it could have answered with (`best trained`), where its answer ranks among "
                      "them by table validation accuracy (1 = the best it trained), and the Kendall tau "
                      "between its proxy rewards and the table's validation accuracy over those children. "
                      "A search whose best trained child is good but whose answer ranks low lost to proxy "
                      "noise; one whose best trained child is itself poor lost on the path it took.", "",
                      "| algorithm | seed | distinct feasible cells trained | answer test | best trained test | answer's rank | "
                      "Kendall proxy vs table |", "|---|---|---|---|---|---|---|"]
            for r in diag.itertuples():
                lines.append(f"| {r.algorithm} | {r.seed} | {r.feasible_trained} | {r.answer_test:.2f} | "
                             f"{r.best_trained_test:.2f} | {r.answer_rank} | {r.kendall_proxy_table:.3f} |")
            means = diag.groupby("algorithm")[["answer_test", "best_trained_test", "kendall_proxy_table"]].mean()
            lines += ["", "| algorithm | answer test (mean) | best trained test (mean) | Kendall (mean) |",
                      "|---|---|---|---|"]
            for algo, r in means.iterrows():
                lines.append(f"| {algo} | {r.answer_test:.2f} | {r.best_trained_test:.2f} | "
                             f"{r.kendall_proxy_table:.3f} |")
        lines += final_pick_sections(args, space)
        frames = [pd.read_csv(args.out / "curves.csv")] if (args.out / "curves.csv").exists() else []
        if frames or len(running_curves):
            cur = pd.concat(frames + [running_curves]).drop_duplicates(["algorithm", "seed", "children_trained"],
                                                                       keep="last")
            fig, ax = plt.subplots(figsize=(6, 4))
            for algo, g in cur.groupby("algorithm"):
                q = g.groupby("children_trained").table_test_mean.quantile([0.25, 0.5, 0.75]).unstack()
                m = g.groupby("children_trained").table_test_mean.mean()
                ax.plot(m.index, m.values, label=algo)
                ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.2)
            ax.axhline(TABLE_LAYERNAS, ls="--", c="gray", lw=0.8, label="table-driven LayerNAS")
            ax.axhline(ORACLE, ls=":", c="k", lw=0.8, label="oracle")
            ax.set_xlabel("children trained")
            ax.set_ylabel("table test accuracy of the current answer (%)")
            ax.legend()
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(args.out / "answer_curves.png", dpi=110)
            lines += ["", "![answers](answer_curves.png)"]
            if len(running_curves):
                lines += ["", "The plot includes the searches not finished yet, up to where they are."]
    if wall is not None:
        lines += ["", f"This invocation: {wall:.0f} s wall on {os.cpu_count()} CPU cores (shared; load average "
                  f"{os.getloadavg()[0]:.1f} at the end)."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    if wall is not None:
        from layernas.provenance import write_provenance

        write_provenance(args.out, wall, " ".join(["python"] + sys.argv), quick=args.quick, cells=args.cells,
                         search_seeds=args.search_seeds, children=args.children, store=str(args.store))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run (tiny net, few cells)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--store", type=Path, help="child store (default: the user cache's children store)")
    p.add_argument("--parts", nargs="+", default=["study", "search"],
                   choices=["study", "search", "rescore", "synflow-pick", "finalists"],
                   help="rescore: the searches' children scored again on a larger held-out set from their "
                        "stored weights; synflow-pick: SynFlow of their children, to pick the answer by it; "
                        "finalists: their best few re-trained with every training seed")
    p.add_argument("--rescore-per-class", type=int, default=500, help="held-out images per class for rescore")
    p.add_argument("--finalists", type=int, default=5, help="children per search re-trained with all seeds")
    p.add_argument("--finalist-algorithms", nargs="+", default=["layernas", "rea", "random"],
                   help="whose searches get the finalists part, in this order")
    p.add_argument("--cells", type=int, default=60)
    p.add_argument("--top-extra", type=int, default=15)
    p.add_argument("--variants", nargs="*", default=[], choices=["epochs-6", "images-4000", "C16"])
    p.add_argument("--search-seeds", type=int, default=5)
    p.add_argument("--children", type=int, default=120,
                   help="most children per LayerNAS search; REA and random get as many as LayerNAS used")
    p.add_argument("--algorithms", nargs="+", default=["layernas", "rea", "random"],
                   choices=["layernas", "rea", "random", "layernas-paper"],
                   help="which searches (run REA/random in a second process while LayerNAS runs: without a "
                        "finished LayerNAS run of the seed they get --children)")
    p.add_argument("--num-buckets", type=int, default=5, help="LayerNAS cost buckets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--study-minutes", type=float, default=70.0)
    p.add_argument("--minutes", type=float, default=120.0, help="stop starting new work after this")
    p.add_argument("--partial-note", default="", help="a note printed at the top of summary.md")
    p.add_argument("--analyze-only", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.cells, args.top_extra, args.search_seeds, args.children = 2, 1, 1, 3
    if not TSS_CSV.exists() or not (CIFAR10 / "train").is_dir():
        print(f"trained_search: needs {TSS_CSV} and {CIFAR10}/train", file=sys.stderr)
        return 2
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.trainers import train
    from layernas.trainers.child_store import DEFAULT_STORE

    args.store = args.store or DEFAULT_STORE
    args.out.mkdir(parents=True, exist_ok=True)
    space = NatsTss("cifar10")
    t0 = time.perf_counter()
    if not args.analyze_only:
        train.configure_compilation_cache()
        s = settings(args)
        start = time.time()
        if "study" in args.parts:
            run_study(args, space, s, CIFAR10, start + 60 * min(args.study_minutes, args.minutes))
        if "search" in args.parts:
            run_searches(args, space, s, CIFAR10, start + 60 * args.minutes)
        if "rescore" in args.parts:
            run_rescore(args, space, s, CIFAR10)
        if "synflow-pick" in args.parts:
            run_synflow_pick(args, space, s, start + 60 * args.minutes)
        if "finalists" in args.parts:
            run_finalists(args, space, s, CIFAR10, start + 60 * args.minutes)
    analyze(args, space, None if args.analyze_only else time.perf_counter() - t0)
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
