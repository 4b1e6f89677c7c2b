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

Open choices of the sources, with their defaults here:

* ``num_buckets`` (H) = 100, as in the paper; buckets are equal-width on the bucketing
  metric over ``bucket_range``; or give ``bucket_edges`` explicitly.
* ``bucket_range`` = the cost range of the whole space (``space.cost_bounds((), metric)``).
* ``bucket_by`` = ``"model"``: a child is bucketed by the cost of the evaluated model itself
  (unsearched layers at their default). ``"min_completion"`` buckets by the cheapest
  completion of the searched prefix instead, the lower bound the choices so far commit
  the final model to. For additive costs the two differ by a constant per layer.
* ``per_bucket`` (top-k per bucket) = 1.
* default option of unsearched layers = the space's ``Layer.default``; the NATS and
  MobileNet spaces use the most expensive option, as the paper does.
* ``candidate_order`` = ``"reward"``: candidates are expanded best reward first;
  ``"cost"`` expands cheapest first.
* ties (equal reward) break by lower cost, then by the smaller architecture tuple.
* pruning: a child is built only if ``target.reachable(space, prefix)``, i.e. some
  completion of its searched prefix can land in the target range and under every cap.
* an architecture evaluated before is never proposed again: its first reward is reused.

Example:
    >>> from layernas.searchers.layernas import layernas
    >>> from layernas.target import Target
    >>> from layernas.space import Layer, SearchSpace
    >>> class Toy(SearchSpace):
    ...     name, cost_metrics = "toy", ("cost",)
    ...     layers = tuple(Layer(f"l{i}", (0, 1, 2), default=2) for i in range(3))
    ...     def cost(self, arch): return {"cost": float(sum(arch))}
    >>> searcher = layernas(Toy(), Target("cost", max=3.0))
    >>> state = searcher.init(0)
    >>> archs, state = searcher.propose(state, 8)
    >>> archs
    [(0, 2, 2), (1, 2, 2), (2, 2, 2)]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from layernas.evaluator import EvalResult
from layernas.searchers.base import Searcher, State, arch_key, key_arch
from layernas.target import Target
from layernas.space import Arch, SearchSpace


def layernas(
    space: SearchSpace,
    target: Target,
    *,
    num_buckets: int = 100,
    per_bucket: int = 1,
    bucket_by: str = "model",
    bucket_range: tuple[float, float] | None = None,
    bucket_edges: Sequence[float] | Sequence[Sequence[float]] | None = None,
    candidate_order: str = "reward",
) -> Searcher:
    """Build the LayerNAS searcher for ``space`` aiming at ``target``.

    Args:
      space: the search space.
      target: the cost range of the answer; its metric is the one bucketed on.
      num_buckets: H, the number of cost buckets per layer.
      per_bucket: how many children each bucket keeps (top-k).
      bucket_by: ``"model"`` or ``"min_completion"`` (see the module docstring).
      bucket_range: (lo, hi) of the equal-width buckets; default the space's cost range.
      bucket_edges: explicit increasing bucket edges, or one such list per layer;
        overrides num_buckets/bucket_range. Costs below the first edge go to the first
        bucket, above the last to the last.
      candidate_order: ``"reward"`` (best first) or ``"cost"`` (cheapest first).
    Returns:
      A :class:`Searcher`.
    """
    target.check(space)
    metric = target.metric
    if bucket_by not in ("model", "min_completion"):
        raise ValueError(f"bucket_by must be 'model' or 'min_completion', got {bucket_by!r}")
    if candidate_order not in ("reward", "cost"):
        raise ValueError(f"candidate_order must be 'reward' or 'cost', got {candidate_order!r}")
    if per_bucket < 1:
        raise ValueError(f"per_bucket must be >= 1, got {per_bucket}")
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
    inner_edges = [edges[1:-1] for edges in layer_edges]
    num_layers = space.num_layers
    cost_cache: dict[Arch, float] = {}

    def bucket_cost(arch: Arch, layer: int) -> float:
        """The cost a child of ``layer`` is bucketed by."""
        if arch not in cost_cache:
            if bucket_by == "model":
                cost_cache[arch] = float(space.cost(arch)[metric])
            else:
                cost_cache[arch] = float(space.cost_bounds(arch[: layer + 1], metric)[0])
        return cost_cache[arch]

    def bucket_of(cost: float, layer: int) -> int:
        return int(np.searchsorted(inner_edges[layer], cost, side="right"))

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
            "known": {},                      # arch key -> reward (None: failed)
            "trained": 0,                     # models trained (results received)
            "done": False,
        }

    def insert(tables: list, layer: int, arch: Arch, reward: float | None) -> None:
        if reward is None:
            return
        cost = bucket_cost(arch, layer)
        b = str(bucket_of(cost, layer))
        table = dict(tables[layer])
        entries = [e for e in table.get(b, []) if tuple(e[0]) != arch]
        entries.append([list(arch), float(reward), cost])
        entries.sort(key=sort_key)
        table[b] = entries[:per_bucket]
        tables[layer] = table

    def next_candidate(state: State, layer: int) -> Arch | None:
        """The best unexpanded, still-reachable candidate for expanding ``layer``."""
        expanded = set(state["expanded"][layer])
        if layer == 0:
            root = space.default_arch()
            return None if arch_key(root) in expanded else root
        pool = [e for entries in state["tables"][layer - 1].values() for e in entries]
        for entry in sorted(pool, key=sort_key):
            arch = tuple(entry[0])
            if arch_key(arch) not in expanded and target.reachable(space, arch[:layer]):
                return arch
        return None

    def expand(state: State, layer: int, parent: Arch) -> State:
        tables = list(state["tables"])
        expanded = [list(e) for e in state["expanded"]]
        expanded[layer].append(arch_key(parent))
        queue, waiting, known = list(state["queue"]), dict(state["waiting"]), state["known"]
        for option in range(space.num_options[layer]):
            child = parent[:layer] + (option,) + parent[layer + 1:]
            if not target.reachable(space, child[: layer + 1]):
                continue
            key = arch_key(child)
            if key in known:
                insert(tables, layer, child, known[key])
            else:
                if key not in waiting:
                    queue.append(key)
                waiting[key] = sorted(set(waiting.get(key, [])) | {layer})
        return {**state, "tables": tables, "expanded": expanded, "queue": queue,
                "waiting": waiting, "idle_layers": 0}

    def propose(state: State, n: int) -> tuple[list[Arch], State]:
        out: list[Arch] = []
        while len(out) < n and not state["done"]:
            if state["queue"]:
                out.append(key_arch(state["queue"][0]))
                state = {**state, "queue": state["queue"][1:]}
                continue
            layer = state["layer"]
            parent = next_candidate(state, layer)
            if parent is not None:
                state = expand(state, layer, parent)
                continue
            if state["waiting"]:
                break  # this layer's children are still training: finish the layer first
            idle = state["idle_layers"] + 1
            state = {**state, "layer": (layer + 1) % num_layers, "idle_layers": idle,
                     "done": idle > num_layers}
        return out, state

    def update(state: State, results: Sequence[EvalResult]) -> State:
        tables, known, waiting = list(state["tables"]), dict(state["known"]), dict(state["waiting"])
        trained = state["trained"]
        for result in results:
            key = arch_key(result.arch)
            reward = float(result.reward) if result.ok else None
            if key not in known:
                trained += 1
            known.setdefault(key, reward)
            for layer in waiting.pop(key, []):
                insert(tables, layer, tuple(result.arch), known[key])
        return {**state, "tables": tables, "known": known, "waiting": waiting, "trained": trained}

    return Searcher("layernas", init, propose, update)


def memorial_table(state: State, layer: int) -> list[tuple[int, Arch, float, float]]:
    """The kept children of one layer as (bucket, arch, reward, bucket cost) rows."""
    rows = []
    for bucket, entries in state["tables"][layer].items():
        for arch, reward, cost in entries:
            rows.append((int(bucket), tuple(arch), reward, cost))
    return sorted(rows)
