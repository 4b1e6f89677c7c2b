"""LayerNAS: layer-by-layer search with cost buckets (arXiv 2304.11517).

The search goes through the layers in order. At layer ``i`` it takes the candidates kept
for layer ``i-1`` (for ``i = 0``, the all-default architecture), best first, and for each
one that can still reach the target it builds every child that changes layer ``i``. The
children are trained (evaluated) and put in the *memorial table* of layer ``i``: a table
of cost buckets that keeps the ``per_bucket`` best children of each bucket. When all of
layer ``i``'s candidates are expanded and their children are back, the search moves to
layer ``i + 1``; after the last layer it goes round again and stops when a whole round
finds nothing left to expand. Layers not yet searched keep their default option.

At most ``H * per_bucket`` candidates per layer are expanded, each into ``|S|`` children,
so at most ``L * H * per_bucket * |S|`` models are trained: polynomial, where the full
space has ``|S| ** L`` members.

Open choices of the sources, with their defaults here (docs/searchers.md has the measured
effect of each on NATS-Bench):

* ``preset`` = ``"efficient"``: ``fill="space"``, ``repair=True``, ``bucket_by="model"``,
  ``candidate_order="reward"``, ``when_exhausted="mutate"``, ``warm_start=3``, ``dives=1``.
  ``preset="paper"`` is the paper's behaviour: the same with ``repair=False``,
  ``when_exhausted="stop"``, ``warm_start=0`` and ``dives=0``.
* ``fill`` = ``"space"``: layers not yet searched take the space's ``Layer.default`` (the
  NATS and MobileNet spaces use the most expensive option, as the paper does). Also
  ``"dearest"``, ``"cheapest"``, ``"in_target"`` (the dearest all-default model inside
  the target) and ``"sampled"`` (the best of the ``warm_start`` random models below).
* ``warm_start`` = 3: three uniformly random feasible models are evaluated before the
  layerwise search (0, the paper: none). They give the search feasible answers from its
  first evaluation, and are centres of ``when_exhausted="mutate"``'s local search; the
  layerwise search itself is unchanged (it reuses their rewards if it builds one of them).
* ``dives`` = 1: the layerwise search starts with one *dive*: at each layer in turn it
  expands only the best kept candidate of the previous layer, waits for its children, and
  goes on to the next layer, down to the last (a greedy coordinate descent through the
  layers, about ``L * |S|`` evaluations). Then the layer-by-layer rounds go on from layer 0
  with everything the dive evaluated in the tables. Every model a dive evaluates is a child
  of a kept candidate, as the rounds' are, so the layerwise argument is unchanged; the dive
  brings the first searched-through models forward. 0 (the paper): no dive.
* ``repair`` = True: a child over the target whose searched prefix can still reach it has
  its unsearched layers stepped down until it is feasible, so no evaluation is spent on a
  model that can never be the answer. False (the paper) evaluates the child as it is; with
  the most expensive default, the first half of a NATS search is then over the budget.
  Repair gives the children of one layer different unsearched layers, so the layerwise
  optimality argument (an optimal model of a bucket extends an optimal model of the
  previous layer) no longer holds exactly; the static fills keep it.
* ``num_buckets`` (H) = 100, as in the paper; buckets are equal-width on the bucketing
  metric over ``bucket_range``; or give ``bucket_edges`` explicitly.
* ``bucket_range`` = the cost range of the whole space (``space.cost_bounds((), metric)``).
* ``bucket_by`` = ``"model"``: a child is bucketed by the cost of the evaluated model itself.
  ``"min_completion"`` buckets by the cheapest completion of the searched prefix instead,
  the lower bound the choices so far commit the final model to.
* ``per_bucket`` (top-k per bucket) = 1.
* ``when_exhausted`` = ``"stop"``: once a whole round finds nothing left to expand, the
  search ends (the paper), even with budget left. ``"refine"`` starts another layerwise pass
  from the root with finer and wider tables (pass ``p``: every bucket split into ``2**p``,
  ``per_bucket + p`` kept per bucket), reusing every evaluation, until a pass evaluates
  nothing new; ``"mutate"`` evaluates the unevaluated feasible one-layer mutants of the best
  evaluated feasible model that has any, until none has. Both run only after the layerwise
  search, so they evaluate everything it does, in the same order, first.
* ``candidate_order`` = ``"reward"``: candidates are expanded best reward first;
  ``"cost"`` expands cheapest first.
* ties (equal reward) break by lower cost, then by the smaller architecture tuple.
* pruning: a child is built only if ``target.reachable(space, prefix)``, i.e. some
  completion of its searched prefix can land in the target range and under every cap.
* an architecture evaluated before is never proposed again: its first reward is reused.

Example (a toy space whose default option, 2, is its most expensive):
    >>> from layernas.searchers.layernas import layernas
    >>> from layernas.target import Target
    >>> from layernas.space import Layer, SearchSpace
    >>> class Toy(SearchSpace):
    ...     name, cost_metrics = "toy", ("cost",)
    ...     layers = tuple(Layer(f"l{i}", (0, 1, 2), default=2) for i in range(3))
    ...     def cost(self, arch): return {"cost": float(sum(arch))}
    >>> searcher = layernas(Toy(), Target("cost", max=3.0))
    >>> archs, state = searcher.propose(searcher.init(0), 8)   # the warm start
    >>> len(archs), all(sum(arch) <= 3 for arch in archs)      # 3 random models inside the target
    (3, True)
    >>> cold = layernas(Toy(), Target("cost", max=3.0), warm_start=0)
    >>> cold.propose(cold.init(0), 8)[0]              # every child repaired to cost <= 3
    [(0, 2, 1), (1, 1, 1), (2, 1, 0)]
    >>> paper = layernas(Toy(), Target("cost", max=3.0), preset="paper")
    >>> paper.propose(paper.init(0), 8)[0]            # the paper: costs 4, 5 and 6
    [(0, 2, 2), (1, 2, 2), (2, 2, 2)]
"""

from __future__ import annotations

import bisect
import json
import weakref
import zlib
from typing import Sequence

import numpy as np

from layernas.evaluator import EvalResult
from layernas.searchers.base import (Searcher, State, arch_key, cost_memo, draws_from, key_arch,
                                     sample_feasible)
from layernas.target import Target
from layernas.space import Arch, SearchSpace

FILLS = ("space", "dearest", "cheapest", "in_target", "sampled")
BUCKET_BYS = ("model", "min_completion")
CANDIDATE_ORDERS = ("reward", "cost")
WHEN_EXHAUSTED = ("stop", "refine", "mutate")
# Named bundles of (fill, repair, bucket_by, candidate_order, when_exhausted, warm_start, dives).
# "paper" is the LayerNAS paper's behaviour (with the NATS and MobileNet spaces, whose
# default option is the most expensive one); "efficient" is the library default, chosen by
# benchmarks/nats_ablation.py on validation accuracy only (see docs/searchers.md).
PRESETS = {
    "paper": {"fill": "space", "repair": False, "bucket_by": "model", "candidate_order": "reward",
              "when_exhausted": "stop", "warm_start": 0, "dives": 0},
    "efficient": {"fill": "space", "repair": True, "bucket_by": "model", "candidate_order": "reward",
                  "when_exhausted": "mutate", "warm_start": 3, "dives": 1},
}
# the options added after runs began recording their resolved options, with the value the
# searcher had before each existed (a resume reads a recorded config without one as that)
ADDED_OPTIONS = {"dives": 0}
DEFAULT_PRESET = "efficient"
KNOWN_SHARDS = 64  # the evaluated-architecture map is split into this many dicts
WARM_UNIFORM_TRIES = 1000   # uniform draws per warm-start model before the layer-by-layer draw
WARM_LAYERED_TRIES = 100    # layer-by-layer draws per warm-start model before it stops short


def _shard(key: str) -> int:
    return zlib.crc32(key.encode()) % KNOWN_SHARDS


# Pure memos shared by the searchers of a process (a table benchmark builds thousands of
# searchers that key the same architectures): arch -> key, key -> arch, key -> shard.
_KEY_MEMO: dict = {}
_ARCH_MEMO: dict = {}
_SHARD_MEMO: dict = {}
_MEMO_LIMIT = 1 << 20   # entries; the memos start afresh beyond it
_REACHABLE_MEMOS: "weakref.WeakKeyDictionary[SearchSpace, dict[str, dict]]" = weakref.WeakKeyDictionary()


def _shared_memos() -> tuple[dict, dict, dict]:
    """The process's (arch -> key, key -> arch, key -> shard) memos, for a new searcher."""
    if len(_KEY_MEMO) + len(_ARCH_MEMO) > _MEMO_LIMIT:
        for memo in (_KEY_MEMO, _ARCH_MEMO, _SHARD_MEMO):
            memo.clear()
    return _KEY_MEMO, _ARCH_MEMO, _SHARD_MEMO


def _reachable_memo(space: SearchSpace, target: Target) -> dict:
    """The memo ``prefix -> target.reachable(space, prefix)`` shared by the searchers of
    this space object and an equal target (a private one if the space cannot be weakly
    referenced)."""
    try:
        per_space = _REACHABLE_MEMOS.setdefault(space, {})
    except TypeError:
        return {}
    return per_space.setdefault(json.dumps(target.to_dict(), sort_keys=True), {})


def layernas(
    space: SearchSpace,
    target: Target,
    *,
    preset: str = DEFAULT_PRESET,
    fill: str | None = None,
    repair: bool | None = None,
    bucket_by: str | None = None,
    candidate_order: str | None = None,
    when_exhausted: str | None = None,
    num_buckets: int = 100,
    per_bucket: int = 1,
    bucket_range: tuple[float, float] | None = None,
    bucket_edges: Sequence[float] | Sequence[Sequence[float]] | None = None,
    warm_start: int | None = None,
    dives: int | None = None,
) -> Searcher:
    """Build the LayerNAS searcher for ``space`` aiming at ``target``.

    Args:
      space: the search space.
      target: the cost range of the answer; its metric is the one bucketed on.
      preset: a named bundle of ``fill``, ``repair``, ``bucket_by``, ``candidate_order``,
        ``when_exhausted``, ``warm_start`` and ``dives`` (see :data:`PRESETS`): ``"paper"`` (the
        LayerNAS paper) or ``"efficient"``. Those parameters, when given, override the preset.
      fill: the option of layers not yet searched: ``"space"`` (each layer's
        ``Layer.default``; the NATS and MobileNet spaces use the most expensive option,
        as the paper does), ``"dearest"`` (the most expensive option on the target
        metric), ``"cheapest"`` (the cheapest), or ``"in_target"`` (the dearest
        all-default architecture inside the target: starting from the dearest one, the
        last layers step down to their next cheaper option, one layer at a time and
        round after round, until the architecture is feasible), or ``"sampled"``: the best
        of the ``warm_start`` random models (ties as ``candidate_order="reward"``), once
        they are all back; if none succeeded, ``"in_target"``'s. The fill is then static,
        as the others.
      repair: if True, a child that is over the target (or under it) while some
        completion of its searched prefix is feasible is repaired before it is evaluated:
        its unsearched layers step down (or up) the same way as ``fill="in_target"``
        until it is feasible. Every evaluated model can then be the answer, but the
        children of one layer no longer share their unsearched layers.
      bucket_by: ``"model"``: a child is bucketed by the cost of the evaluated model
        itself; ``"min_completion"``: by the cheapest completion of its searched prefix.
      candidate_order: ``"reward"`` (best first) or ``"cost"`` (cheapest first).
      when_exhausted: what the search does once a whole round finds nothing left to
        expand (the layerwise search is exhausted) while budget is left: ``"stop"`` (the
        paper: the search ends); ``"refine"``: a new layerwise pass from the root with
        every bucket split in two (pass ``p`` has ``2**p`` times the buckets); models
        evaluated before are not evaluated again, their rewards fill the new tables, so a
        pass evaluates only what the finer tables newly keep; the search ends after a
        pass that evaluates nothing new; ``"mutate"``: local search: the best evaluated
        feasible model that still has unevaluated feasible one-layer mutants has them
        evaluated (layers and options in order); the search ends when no evaluated
        feasible model has one. Either way the layerwise pass is complete before
        anything else is evaluated.
      num_buckets: H, the number of cost buckets per layer.
      per_bucket: how many children each bucket keeps (top-k).
      bucket_range: (lo, hi) of the equal-width buckets; default the space's cost range.
      bucket_edges: explicit increasing bucket edges, or one such list per layer;
        overrides num_buckets/bucket_range. Costs below the first edge go to the first
        bucket, above the last to the last.
      warm_start: how many distinct, uniformly random feasible architectures (drawn from
        the seed) are evaluated before the layerwise search starts (fewer if the target
        has fewer). Each is drawn uniformly by rejection; where ``WARM_UNIFORM_TRIES``
        uniform draws find none (a target that uniform draws almost never hit), it is
        drawn layer by layer among the options that can still reach the target instead,
        which is not uniform. They are answers like any other evaluation, and centres of the local
        search of ``when_exhausted="mutate"``; the layerwise search starts once they are
        all back, and is otherwise the same (a child that is one of them reuses its
        reward). Default: the preset's (``"efficient"``: 3, ``"paper"``: 0).
      dives: how many dives the layerwise search starts with (after the warm start). A
        dive goes through the layers in order and at each one expands only the best
        unexpanded kept candidate of the previous layer (the root at layer 0), waits for
        its children, and moves on; after the last layer the next dive, or the ordinary
        layer-by-layer rounds, start again from layer 0, the tables holding everything
        evaluated so far. The rounds then expand every kept candidate, as without dives.
        A dive evaluates children of kept candidates only, so every table still ends up
        with the best evaluated child of each bucket and the layerwise argument is the same;
        what a dive adds is the children of a candidate that a better one may later push
        out of its bucket. Default: the preset's (``"efficient"``: 1, ``"paper"``: 0).
    Returns:
      A :class:`Searcher`.
    Raises:
      ValueError: naming the bad option value and the expected ones.
    """
    target.check(space)
    metric = target.metric
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}, got {preset!r}")
    chosen = dict(PRESETS[preset])
    for name, value in (("fill", fill), ("repair", repair), ("bucket_by", bucket_by),
                        ("candidate_order", candidate_order), ("when_exhausted", when_exhausted)):
        if value is not None:
            chosen[name] = value
    fill, repair = chosen["fill"], chosen["repair"]
    bucket_by, candidate_order = chosen["bucket_by"], chosen["candidate_order"]
    when_exhausted = chosen["when_exhausted"]
    for name, value, allowed in (("fill", fill, FILLS), ("bucket_by", bucket_by, BUCKET_BYS),
                                 ("candidate_order", candidate_order, CANDIDATE_ORDERS),
                                 ("when_exhausted", when_exhausted, WHEN_EXHAUSTED)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    if not isinstance(repair, bool):
        raise ValueError(f"repair must be True or False, got {repair!r}")
    if per_bucket < 1:
        raise ValueError(f"per_bucket must be >= 1, got {per_bucket}")
    if warm_start is not None:
        chosen["warm_start"] = warm_start
    if dives is not None:
        chosen["dives"] = dives
    dives = chosen["dives"]
    if not isinstance(dives, (int, np.integer)) or isinstance(dives, bool) or dives < 0:
        raise ValueError(f"dives must be an integer >= 0, got {dives!r}")
    dives = chosen["dives"] = int(dives)
    warm_start = chosen.get("warm_start", 0)
    if not isinstance(warm_start, (int, np.integer)) or isinstance(warm_start, bool) or warm_start < 0:
        raise ValueError(f"warm_start must be an integer >= 0, got {warm_start!r}")
    warm_start = chosen["warm_start"] = int(warm_start)
    if fill == "sampled" and warm_start < 1:
        raise ValueError("fill='sampled' takes the best of the warm_start models: warm_start must be "
                         f">= 1, got {warm_start}")
    if bucket_edges is None:
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        lo, hi = bucket_range if bucket_range is not None else space.cost_bounds((), metric)
        layer_edges = [np.linspace(float(lo), float(hi), int(num_buckets) + 1)] * space.num_layers
    else:
        per_layer = len(bucket_edges) > 0 and isinstance(bucket_edges[0], (list, tuple, np.ndarray))
        layer_edges = [np.asarray(e, dtype=float) for e in bucket_edges] if per_layer else (
            [np.asarray(bucket_edges, dtype=float)] * space.num_layers)
        if len(layer_edges) != space.num_layers:
            raise ValueError(f"bucket_edges has {len(layer_edges)} lists; the space has "
                             f"{space.num_layers} layers")
        for edges in layer_edges:
            if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
                raise ValueError(f"bucket_edges must be >= 2 increasing numbers, got {list(edges)}")
    inner_edges = [[float(e) for e in edges[1:-1]] for edges in layer_edges]
    num_layers = space.num_layers
    completion = Completion(space, target)
    # fill="sampled": the root is chosen in the search (state["root"]); until then, and if no
    # sample succeeds, in_target's all-default architecture
    root = completion.default_arch("in_target" if fill == "sampled" else fill)
    num_options = space.num_options
    # pure caches (no state depends on them): the bucket of (arch, layer), the key of an
    # arch and back, the shard of a key, whether a prefix can still reach the target
    bucket_cache: dict[tuple[Arch, int, int], tuple[float, str]] = {}
    key_cache, arch_cache, shard_cache = _shared_memos()   # shared by every searcher
    reachable_cache = _reachable_memo(space, target)        # ... of this space and target

    def key_of(arch: Arch) -> str:
        key = key_cache.get(arch)
        if key is None:
            key = key_cache[arch] = arch_key(arch)
            arch_cache[key] = arch
        return key

    def arch_of(key: str) -> Arch:
        arch = arch_cache.get(key)
        if arch is None:
            arch = arch_cache[key] = key_arch(key)
        return arch

    def shard_of(key: str) -> int:
        shard = shard_cache.get(key)
        if shard is None:
            shard = shard_cache[key] = _shard(key)
        return shard

    def reachable(prefix: Arch) -> bool:
        hit = reachable_cache.get(prefix)
        if hit is None:
            hit = reachable_cache[prefix] = bool(target.reachable(space, prefix))
        return hit

    pass_edges: dict[int, list[list[float]]] = {0: inner_edges}
    feasible_cache: dict[Arch, bool] = {}

    def edges_of(refinement: int) -> list[list[float]]:
        """The inner bucket edges of every layer in refinement pass ``refinement``: each
        bucket of pass 0 split into ``2 ** refinement`` equal parts."""
        hit = pass_edges.get(refinement)
        if hit is None:
            parts = 2 ** refinement
            hit = []
            for edges in layer_edges:
                fine = [float(e) for lo_, hi_ in zip(edges[:-1], edges[1:])
                        for e in np.linspace(lo_, hi_, parts + 1)[:-1]] + [float(edges[-1])]
                hit.append(fine[1:-1])
            pass_edges[refinement] = hit
        return hit

    model_cost = cost_memo(space)   # space.cost, memoised and shared with the run loop

    def bucket(arch: Arch, layer: int, refinement: int = 0) -> tuple[float, str]:
        """The cost a child of ``layer`` is bucketed by, and its bucket."""
        hit = bucket_cache.get((arch, layer, refinement))
        if hit is None:
            if bucket_by == "model":
                cost = float(model_cost(arch)[metric])
            else:
                cost = float(space.cost_bounds(arch[: layer + 1], metric)[0])
            hit = bucket_cache[(arch, layer, refinement)] = (
                cost, str(bisect.bisect_right(edges_of(refinement)[layer], cost)))
        return hit

    cost_cache: dict[Arch, float] = {}

    def cost_of(arch: Arch) -> float:
        hit = cost_cache.get(arch)
        if hit is None:
            hit = cost_cache[arch] = float(model_cost(arch)[metric])
        return hit

    def feasible(arch: Arch) -> bool:
        hit = feasible_cache.get(arch)
        if hit is None:
            hit = feasible_cache[arch] = completion.feasible(arch)
        return hit

    def sort_key(entry: list) -> tuple:
        arch, reward, cost = tuple(entry[0]), entry[1], entry[2]
        if candidate_order == "reward":
            return (-reward, cost, arch)
        return (cost, -reward, arch)

    def init(seed: int) -> State:
        return {
            "searcher": "layernas",
            "seed": int(seed),
            "draws": 0,
            "layer": 0,                       # layer being searched
            "idle_layers": 0,                 # consecutive layers with nothing to expand
            "tables": [{} for _ in range(num_layers)],   # bucket -> [[arch, reward, cost]]
            "expanded": [[] for _ in range(num_layers)],  # parent keys expanded at layer i
            "queue": [],                      # children waiting to be proposed
            "waiting": {},                    # child key -> layers whose table awaits it
            # arch key -> reward (None: failed), split into KNOWN_SHARDS dicts by a hash
            # of the key so that recording one result copies one small dict
            "known": [{} for _ in range(KNOWN_SHARDS)],
            "trained": 0,                     # models trained (results received)
            "done": False,
            **({"samples": [], "sample_target": warm_start, "sampling": True} if warm_start else {}),
            **({"root": None} if fill == "sampled" else {}),
            **({"diving": dives, "dove": False} if dives else {}),
        }

    def lookup(known: list, key: str):
        shard = known[shard_of(key)]
        return (True, shard[key]) if key in shard else (False, None)

    def insert(tables: list, layer: int, arch: Arch, reward: float | None, refinement: int = 0) -> None:
        """Put ``arch`` in the memorial table of ``layer`` (copying only that bucket)."""
        if reward is None:
            return
        cost, b = bucket(arch, layer, refinement)
        table = tables[layer]
        old = table.get(b, [])
        keep = per_bucket + refinement
        if len(old) >= keep and sort_key([arch, reward, cost]) > sort_key(old[-1]) and all(
                tuple(e[0]) != arch for e in old):
            return  # worse than every kept child of a full bucket
        entries = [e for e in old if tuple(e[0]) != arch]
        entries.append([list(arch), float(reward), cost])
        entries.sort(key=sort_key)
        tables[layer] = {**table, b: entries[:keep]}

    def next_candidate(state: State, layer: int) -> Arch | None:
        """The best unexpanded, still-reachable candidate for expanding ``layer``."""
        expanded = state["expanded"][layer]
        if layer == 0:
            start = root_of(state)
            return None if key_of(start) in expanded else start
        expanded = set(expanded)
        pool = [e for entries in state["tables"][layer - 1].values() for e in entries]
        for entry in sorted(pool, key=sort_key):
            arch = tuple(entry[0])
            if key_of(arch) not in expanded and reachable(arch[:layer]):
                return arch
        return None

    def child_of(parent: Arch, layer: int, option: int) -> Arch:
        child = parent[:layer] + (option,) + parent[layer + 1:]
        return completion.repair(child, layer + 1) if repair else child

    def expand(state: State, layer: int, parent: Arch) -> State:
        tables = list(state["tables"])
        expanded = list(state["expanded"])
        expanded[layer] = expanded[layer] + [key_of(parent)]
        queue, waiting, known = list(state["queue"]), dict(state["waiting"]), state["known"]
        refinement = state.get("pass", 0)
        for option in range(num_options[layer]):
            if not reachable(parent[:layer] + (option,)):
                continue
            child = child_of(parent, layer, option)
            key = key_of(child)
            seen, reward = lookup(known, key)
            if seen:
                insert(tables, layer, child, reward, refinement)
            else:
                if key not in waiting:
                    queue.append(key)
                waiting[key] = sorted(set(waiting.get(key, [])) | {layer})
        return {**state, "tables": tables, "expanded": expanded, "queue": queue,
                "waiting": waiting, "idle_layers": 0}

    def centre_entry(arch: Arch, reward: float) -> list:
        """The sort key of a local-search centre: best reward first, then lower cost, then the
        smaller architecture (the ties of ``candidate_order="reward"``), as a JSON list."""
        return [-float(reward), cost_of(arch), list(arch)]

    def open_mutants(state: State, arch: Arch, n: int) -> list[Arch]:
        """Up to ``n`` unevaluated, not yet proposed, feasible one-layer mutants of ``arch``,
        layer by layer and option by option."""
        waiting, known, out = state["waiting"], state["known"], []
        for layer in range(num_layers):
            for option in range(num_options[layer]):
                if option == arch[layer]:
                    continue
                child = arch[:layer] + (option,) + arch[layer + 1:]
                key = key_of(child)
                if key in waiting or lookup(known, key)[0] or not feasible(child):
                    continue
                out.append(child)
                if len(out) == n:
                    return out
        return out

    def exhausted(state: State) -> State:
        """The state once the layerwise search has nothing left to expand."""
        if when_exhausted == "refine" and not (
                state.get("pass", 0) > 0 and state["trained"] == state.get("pass_start", 0)):
            return {**state, "pass": state.get("pass", 0) + 1, "pass_start": state["trained"],
                    "layer": 0, "idle_layers": 0, "tables": [{} for _ in range(num_layers)],
                    "expanded": [[] for _ in range(num_layers)]}
        if when_exhausted == "mutate":
            # the evaluated feasible models, best first: the centres of the local search
            centres = sorted(centre_entry(arch_of(k), reward) for shard in state["known"]
                             for k, reward in shard.items() if reward is not None and feasible(arch_of(k)))
            return {**state, "phase": "mutate", "centres": centres}
        return {**state, "done": True}

    def propose_mutants(state: State, n: int) -> tuple[list[Arch], State]:
        """The open mutants of the best centre that has any. A centre without one is dropped:
        its mutants are all evaluated or in flight, and stay so."""
        centres = state["centres"]
        for i, (_, _, arch) in enumerate(centres):
            archs = open_mutants(state, tuple(arch), n)
            if archs:
                waiting = dict(state["waiting"])
                for child in archs:
                    waiting[key_of(child)] = []
                return archs, {**state, "waiting": waiting, "centres": centres[i:]}
        state = {**state, "centres": []}
        return [], (state if state["waiting"] else {**state, "done": True})

    def root_of(state: State) -> Arch:
        """The all-default architecture the layerwise search starts from."""
        chosen_root = state.get("root")
        return root if chosen_root is None else tuple(chosen_root)

    def layered_sample(draws, exclude: set) -> Arch | None:
        """A random feasible architecture not in ``exclude``, drawn layer by layer among the
        options whose prefix can still reach the target (for targets that uniform draws
        almost never hit; not uniform over the feasible set). None if no try finds one."""
        for _ in range(WARM_LAYERED_TRIES):
            prefix: Arch = ()
            for layer in range(num_layers):
                options = [o for o in range(num_options[layer]) if reachable(prefix + (o,))]
                if not options:
                    break
                prefix += (options[draws.integers(len(options))],)
            if len(prefix) == num_layers and feasible(prefix) and prefix not in exclude:
                return prefix
        return None

    def propose_samples(state: State, n: int) -> tuple[list[Arch], State]:
        """The warm start: up to ``n`` more of the random feasible architectures (one seeded
        stream each, so the draws do not depend on how many are asked for at a time). Once
        every one is drawn and back, the warm start ends (``state["sampling"]`` False) and,
        with ``fill="sampled"``, the best of them becomes the root (``state["root"]``)."""
        samples, waiting, out = list(state["samples"]), dict(state["waiting"]), []
        goal = state["sample_target"]
        exclude = {arch_of(k) for k in samples}
        while len(samples) < goal and len(out) < n:
            draws, state = draws_from(state)
            arch = sample_feasible(draws, space, feasible, exclude=exclude, max_tries=WARM_UNIFORM_TRIES)
            if arch is None:
                arch = layered_sample(draws, exclude)
            if arch is None:      # no feasible architecture left to draw: stop short
                goal = len(samples)
                break
            key = key_of(arch)
            samples.append(key)
            exclude.add(arch)
            waiting[key] = []
            out.append(arch)
        state = {**state, "samples": samples, "sample_target": goal, "waiting": waiting}
        if len(samples) < goal or waiting:
            return out, state
        state = {**state, "sampling": False}
        if fill != "sampled":
            return out, state
        scored = [[arch_of(k), reward, cost_of(arch_of(k))] for k in samples
                  for seen, reward in [lookup(state["known"], k)] if seen and reward is not None]
        best = min(scored, key=lambda e: (-e[1], e[2], e[0]))[0] if scored else root
        return out, {**state, "root": list(best)}

    def propose(state: State, n: int) -> tuple[list[Arch], State]:
        state = _upgrade(state)
        if state.get("phase") == "mutate":
            return ([], state) if state["done"] else propose_mutants(state, n)
        out: list[Arch] = []
        if state.get("sampling"):
            out, state = propose_samples(state, n)
            if state["sampling"]:
                return out, state
        while len(out) < n and not state["done"]:
            if state.get("phase") == "mutate":
                more, state = propose_mutants(state, n - len(out))
                out.extend(more)
                break
            if state["queue"]:
                take = state["queue"][: n - len(out)]
                out.extend(arch_of(k) for k in take)
                state = {**state, "queue": state["queue"][len(take):]}
                continue
            layer = state["layer"]
            diving = state.get("diving", 0)
            parent = None if diving and state["dove"] else next_candidate(state, layer)
            if parent is not None:
                state = expand(state, layer, parent)
                if diving:
                    state = {**state, "dove": True}
                continue
            if state["waiting"]:
                break  # this layer's children are still training: finish the layer first
            if diving:
                # a dive: one candidate per layer, the best unexpanded one, down to the last layer
                last = layer == num_layers - 1
                state = {**state, "layer": 0 if last else layer + 1, "idle_layers": state["idle_layers"] + 1,
                         "dove": False, "diving": diving - 1 if last else diving}
                continue
            idle = state["idle_layers"] + 1
            state = {**state, "layer": (layer + 1) % num_layers, "idle_layers": idle}
            if idle > num_layers:
                state = exhausted(state)
        return out, state

    def update(state: State, results: Sequence[EvalResult]) -> State:
        state = _upgrade(state)
        tables, known, waiting = list(state["tables"]), list(state["known"]), dict(state["waiting"])
        trained = state["trained"]
        centres = state.get("centres")  # only in the local search (when_exhausted="mutate")
        for result in results:
            arch = tuple(result.arch)
            key = key_of(arch)
            reward = float(result.reward) if result.ok else None
            s = shard_of(key)
            is_new = key not in known[s]
            if is_new:
                trained += 1
                known[s] = {**known[s], key: reward}
            reward = known[s][key]
            for layer in waiting.pop(key, []):
                insert(tables, layer, arch, reward, state.get("pass", 0))
            if centres is not None and reward is not None and feasible(arch) and is_new:
                entry = centre_entry(arch, reward)
                if centres is state["centres"]:
                    centres = list(centres)
                bisect.insort(centres, entry)
        out = {**state, "tables": tables, "known": known, "waiting": waiting, "trained": trained}
        return out if centres is None else {**out, "centres": centres}

    config = {"preset": preset, **chosen, "num_buckets": int(num_buckets), "per_bucket": int(per_bucket),
              "bucket_range": None if bucket_edges is not None else [float(lo), float(hi)],
              "bucket_edges": None if bucket_edges is None else [[float(e) for e in edges] for edges in layer_edges]}
    return Searcher("layernas", init, propose, update, config, ADDED_OPTIONS)


def _upgrade(state: State) -> State:
    """A state saved before the evaluated-architecture map was sharded, sharded."""
    if not isinstance(state["known"], dict):
        return state
    known = [{} for _ in range(KNOWN_SHARDS)]
    for key, reward in state["known"].items():
        known[_shard(key)][key] = reward
    return {**state, "known": known}


class Completion:
    """How the layers that are not searched yet are filled in (pure, cached).

    Args:
      space: the search space.
      target: the target; its metric orders the options, its limits decide feasibility.
    """

    def __init__(self, space: SearchSpace, target: Target):
        self.space, self.target = space, target
        self._cache: dict = {}
        self._costs = cost_memo(space)

    def _cost(self, arch: Arch) -> float:
        return float(self._costs(arch)[self.target.metric])

    def _ranked(self, arch: Arch, layer: int) -> list[int]:
        """The options of ``layer`` from the cheapest to the dearest on the target metric,
        the others as in ``arch``; equal costs keep the lower option index first."""
        costs = [self._cost(arch[:layer] + (o,) + arch[layer + 1:])
                 for o in range(self.space.num_options[layer])]
        return sorted(range(len(costs)), key=lambda o: (costs[o], o))

    def default_arch(self, fill: str) -> Arch:
        """The all-default architecture of a ``fill`` rule (see :func:`layernas`)."""
        base = self.space.default_arch()
        if fill == "space":
            return base
        if fill in ("dearest", "in_target"):
            arch = tuple(self._ranked(base, i)[-1] for i in range(self.space.num_layers))
            return self.repair(arch, 0) if fill == "in_target" else arch
        return tuple(self._ranked(base, i)[0] for i in range(self.space.num_layers))

    def feasible(self, arch: Arch) -> bool:
        return bool(self.target.feasible(self._costs(arch)))

    def repair(self, arch: Arch, first_free: int) -> Arch:
        """``arch`` with layers ``first_free..`` moved, as little as this rule allows, so
        that it is feasible: while it is over the target or a cap, the last free layers step
        down to their next cheaper option one layer at a time, round after round (and up,
        while it is under a target minimum). Returns ``arch`` unchanged if it is feasible
        or no free layer can move; the closest miss if no step makes it feasible."""
        key = (arch, first_free)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        out = arch
        if not self.feasible(arch) and first_free < self.space.num_layers:
            out = self._walk(arch, first_free)
        self._cache[key] = out
        return out

    def _miss(self, arch: Arch) -> float:
        """How far ``arch`` is outside the target: its relative violations, summed over the
        main metric and every cap (0 when feasible)."""
        costs = self._costs(arch)
        miss = 0.0
        for metric, lo, hi in self.target.limits():
            value = float(costs[metric])
            for bound, over in ((hi, value - (hi or 0.0)), (lo, (lo or 0.0) - value)):
                if bound is not None and over > 0:
                    miss += over / max(abs(bound), 1e-12)
        return miss

    def _step(self, arch: Arch, layer: int, down: bool) -> int | None:
        """The option of ``layer`` one cost level below (above) its option in ``arch``: of the
        next strictly cheaper (dearer) options, the one nearest in cost order; None at the end."""
        costs = {o: self._cost(arch[:layer] + (o,) + arch[layer + 1:])
                 for o in range(self.space.num_options[layer])}
        now = costs[arch[layer]]
        ranked = self._ranked(arch, layer)
        if down:
            lower = [o for o in ranked if costs[o] < now]
            return lower[-1] if lower else None
        higher = [o for o in ranked if costs[o] > now]
        return higher[0] if higher else None

    def _walk(self, arch: Arch, first_free: int) -> Arch:
        # up only while the main metric is under a target minimum; over the maximum or a cap: down
        lo = self.target.min
        down = not (lo is not None and self._cost(arch) < lo)
        best, current = arch, list(arch)
        moved = True
        while moved:
            moved = False
            for layer in reversed(range(first_free, self.space.num_layers)):
                step = self._step(tuple(current), layer, down)
                if step is None:
                    continue
                current[layer] = step
                moved = True
                trial = tuple(current)
                if self.feasible(trial):
                    return trial
                if self._miss(trial) < self._miss(best):
                    best = trial
        return best


def memorial_table(state: State, layer: int) -> list[tuple[int, Arch, float, float]]:
    """The kept children of one layer as (bucket, arch, reward, bucket cost) rows."""
    rows = []
    for bucket, entries in state["tables"][layer].items():
        for arch, reward, cost in entries:
            rows.append((int(bucket), tuple(arch), reward, cost))
    return sorted(rows)
