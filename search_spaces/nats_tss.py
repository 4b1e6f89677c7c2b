"""NATS-Bench topology search space (tss, = NAS-Bench-201).

One cell, repeated in all 15 cell positions of the macro network (C=16, N=5), with 4
nodes and 6 edges. Each edge is a layer of the search space, in the order of the official
arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1,
3<-2). Each takes one of the 5 official ops; the architecture stores its index in
:data:`OPS`. 5**6 = 15625 architectures.

Default option: ``nor_conv_3x3`` on every edge, the most expensive op, as the LayerNAS
paper does for layers that are not searched yet.

Costs (NATS-Bench's own counting, see :mod:`layernas.search_spaces.nats_network`):
``flops`` in MFLOPs and ``params`` in MB; ``latency`` (seconds) too when the space is
built with a latency mapping from a table. Every edge has the same width, so costs are
additive over edges: ``cost = base + sum(op_cost[op] for each edge)``. For cifar10 that is
``7.78305 + 35.38944 * n(conv3x3) + 3.93216 * n(conv1x1)`` MFLOPs.

Example:
    >>> from layernas.search_spaces.nats_tss import NatsTss
    >>> space = NatsTss("cifar10")
    >>> arch = space.str_to_arch(
    ...     "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    >>> round(space.cost(arch)["flops"], 5), round(space.cost(arch)["params"], 6)
    (15.64737, 0.129306)
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from layernas.nats_arch_strings import parse_tss
from layernas.search_spaces.nats_network import DATASETS, EDGES, OPS, check_dataset, network_costs
from layernas.space import Arch, Costs, Layer, SearchSpace, SpaceError

C, N = 16, 5  # the NATS-Bench topology macro network
CHANNELS = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
DEFAULT_OP = "nor_conv_3x3"
NUM_ARCHS = len(OPS) ** len(EDGES)


def _edge_name(to: int, src: int) -> str:
    return f"edge_{to}<-{src}"


def arch_code(archs: np.ndarray) -> np.ndarray:
    """Base-5 code of architectures (rows of option indices): their position in product order."""
    archs = np.asarray(archs, dtype=np.int64)
    weights = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1)
    return archs @ weights


class NatsTss(SearchSpace):
    """The NATS-Bench topology space for one dataset.

    Args:
      dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120``.
      latency: optional mapping official arch string -> latency in seconds (for example
        ``Table.latency_mapping(dataset)``); it must cover all 15625 architectures. When
        given, ``latency`` becomes a cost metric.
    """

    def __init__(self, dataset: str = "cifar10", latency: Mapping[str, float] | None = None):
        check_dataset(dataset, SpaceError)
        self.dataset = dataset
        self.name = f"nats-tss/{dataset}"
        default = OPS.index(DEFAULT_OP)
        self.layers = tuple(Layer(_edge_name(to, src), OPS, default) for to, src in EDGES)
        # Integer counts (multiply-adds, parameters) of the network with every edge
        # 'none', and of each op on one edge position (all 15 cells), so that sums are
        # exact and only the final division by 1e6 rounds.
        base_f, base_p = network_costs(CHANNELS, ["none"] * 6, dataset)
        self._base = {"flops": round(float(base_f) * 1e6), "params": round(float(base_p) * 1e6)}
        self._op = {"flops": np.zeros(len(OPS), np.int64), "params": np.zeros(len(OPS), np.int64)}
        for i, op in enumerate(OPS):
            f, p = network_costs(CHANNELS, [op] + ["none"] * 5, dataset)
            self._op["flops"][i] = round(float(f) * 1e6) - self._base["flops"]
            self._op["params"][i] = round(float(p) * 1e6) - self._base["params"]
        self._op_list = {m: [int(v) for v in self._op[m]] for m in self._op}
        self.base = {m: v / 1e6 for m, v in self._base.items()}
        self.op_cost = {m: v / 1e6 for m, v in self._op.items()}
        self.cost_metrics = ("flops", "params")
        self._bounds_cache: dict = {}
        self._latency = None
        if latency is not None:
            self._latency = self._latency_array(latency)
            self.cost_metrics = ("flops", "params", "latency")

    def _latency_array(self, latency: Mapping[str, float]) -> np.ndarray:
        values = np.full(NUM_ARCHS, np.nan)
        for text, seconds in latency.items():
            values[arch_code(self.str_to_arch(text))] = float(seconds)
        missing = np.flatnonzero(~np.isfinite(values))
        if missing.size:
            first = self.arch_to_str(self.all_archs_array()[missing[0]])
            raise SpaceError(
                f"latency mapping lacks {missing.size} of {NUM_ARCHS} architectures "
                f"(for example {first}); expected a finite latency for every tss arch"
            )
        return values

    # --- costs --------------------------------------------------------------------
    def cost(self, arch: Sequence[int]) -> Costs:
        hit = self._cost_table().get(arch) if type(arch) is tuple else None
        return dict(hit) if hit is not None else self._cost(arch)

    def _cost_table(self) -> dict[Arch, Costs]:
        """The costs of all 15625 architectures, keyed by architecture (built on first use,
        from the vectorised sums: the same numbers as :meth:`_cost`, as the tests check)."""
        table = self.__dict__.get("_costs_by_arch")
        if table is None:
            archs = self.all_archs_array()   # row = arch_code, as self._latency is indexed
            columns = {m: self._of_array(archs, m).tolist() for m in ("flops", "params")}
            if self._latency is not None:
                columns["latency"] = self._latency.tolist()
            names = tuple(columns)
            table = self._costs_by_arch = {
                arch: dict(zip(names, values))
                for arch, values in zip(map(tuple, archs.tolist()), zip(*columns.values()))}
        return table

    def _cost(self, arch: Sequence[int]) -> Costs:
        """:meth:`cost` by the formula (validating ``arch``)."""
        arch = self.validate(arch)
        costs = {}
        for m in ("flops", "params"):
            op = self._op_list[m]
            costs[m] = (self._base[m] + sum(op[a] for a in arch)) / 1e6
        if self._latency is not None:
            costs["latency"] = float(self._latency[int(arch_code(arch))])
        return costs

    def cost_bounds(self, prefix: Sequence[int], metric: str) -> tuple[float, float]:
        """Exact min/max over completions: closed form for flops/params, and for latency
        the min/max of the contiguous product-order block of the prefix's completions."""
        key = (tuple(prefix), metric)
        hit = self._bounds_cache.get(key)
        if hit is None:
            hit = self._bounds_cache[key] = self._bounds(*key)
        return hit

    def _bounds(self, prefix: Sequence[int], metric: str) -> tuple[float, float]:
        prefix = self.validate(prefix, prefix=True)
        self._check_metric(metric)
        free = len(EDGES) - len(prefix)
        if metric == "latency":
            block = len(OPS) ** free
            start = int(arch_code(prefix + (0,) * free))
            values = self._latency[start:start + block]
            return float(values.min()), float(values.max())
        op = self._op_list[metric]
        fixed = self._base[metric] + sum(op[a] for a in prefix)
        return (fixed + free * min(op)) / 1e6, (fixed + free * max(op)) / 1e6

    # --- vectorised helpers -------------------------------------------------------
    @staticmethod
    def all_archs_array() -> np.ndarray:
        """All 15625 architectures as a (15625, 6) int array in product order (row = arch_code)."""
        return np.array(list(itertools.product(range(len(OPS)), repeat=len(EDGES))), dtype=np.int64)

    def flops_of_array(self, archs: np.ndarray) -> np.ndarray:
        """MFLOPs of each row of an (n, 6) array of option indices."""
        return self._of_array(archs, "flops")

    def params_of_array(self, archs: np.ndarray) -> np.ndarray:
        """Params (MB) of each row of an (n, 6) array of option indices."""
        return self._of_array(archs, "params")

    def _of_array(self, archs: np.ndarray, metric: str) -> np.ndarray:
        archs = np.asarray(archs, dtype=np.int64)
        return (self._base[metric] + self._op[metric][archs].sum(-1)) / 1e6

    # --- text forms ---------------------------------------------------------------
    def arch_to_str(self, arch: Sequence[int]) -> str:
        """The official NATS-Bench arch string, e.g. ``|nor_conv_3x3~0|+|none~0|...|``."""
        arch = self.validate(arch)
        nodes = []
        for to in (1, 2, 3):
            ops = [f"{OPS[a]}~{src}" for (t, src), a in zip(EDGES, arch) if t == to]
            nodes.append("|" + "|".join(ops) + "|")
        return "+".join(nodes)

    def str_to_arch(self, text: str) -> Arch:
        """Parse an official arch string; SpaceError naming the text if it is not one."""
        return parse_tss(text)


__all__ = ["NatsTss", "OPS", "EDGES", "DATASETS", "arch_code", "NUM_ARCHS", "DEFAULT_OP"]
