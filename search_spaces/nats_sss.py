"""NATS-Bench size search space (sss).

The macro network of the topology space with N=1 (stem, cell, reduction block, cell,
reduction block, cell) and a fixed cell, the best topology-space cell
``|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|``.
What is searched is the output width of each of the 5 layers, from
(8, 16, 24, 32, 40, 48, 56, 64): 8**5 = 32768 architectures. The stem has the width of the
first layer. The official index of an architecture is its position in product order, and
its arch string is the widths joined by ':' (``8:8:40:32:40``).

Default option: 64 channels on every layer, the most expensive, as the LayerNAS paper does.

Costs (NATS-Bench counting, see :mod:`layernas.search_spaces.nats_network`): ``flops`` in
MFLOPs and ``params`` in MB. Both grow with every layer's width, so the min/max over the
completions of a prefix are reached by filling the free layers with 8 / 64 channels.

Example:
    >>> from layernas.search_spaces.nats_sss import NatsSss
    >>> space = NatsSss("cifar10")
    >>> costs = space.cost(space.str_to_arch("8:8:40:32:40"))
    >>> round(costs["flops"], 6), round(costs["params"], 6)
    (21.827994, 0.144834)
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from layernas.nats_arch_strings import parse_sss
from layernas.search_spaces.nats_network import check_dataset, network_costs
from layernas.space import Arch, Costs, Layer, SearchSpace, SpaceError

WIDTHS = (8, 16, 24, 32, 40, 48, 56, 64)
NUM_LAYERS = 5
NUM_ARCHS = len(WIDTHS) ** NUM_LAYERS
CELL = (
    "nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3"
)
GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
LAYER_NAMES = ("cell_1", "reduce_1", "cell_2", "reduce_2", "cell_3")


def arch_code(archs: np.ndarray) -> np.ndarray:
    """Base-8 code of architectures = their official NATS sss index (product order)."""
    archs = np.asarray(archs, dtype=np.int64)
    return archs @ (len(WIDTHS) ** np.arange(NUM_LAYERS - 1, -1, -1))


class NatsSss(SearchSpace):
    """The NATS-Bench size space for one dataset.

    Args:
      dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120``.
    """

    def __init__(self, dataset: str = "cifar10"):
        check_dataset(dataset, SpaceError)
        self.dataset = dataset
        self.name = f"nats-sss/{dataset}"
        self.layers = tuple(Layer(n, WIDTHS, len(WIDTHS) - 1) for n in LAYER_NAMES)
        self.cost_metrics = ("flops", "params")
        flops, params = self._costs_of_array(self.all_archs_array())
        self._table = {"flops": flops, "params": params}  # indexed by arch_code
        self._bounds_cache: dict = {}

    def _costs_of_array(self, archs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        widths = np.asarray(WIDTHS, dtype=np.int64)[np.asarray(archs, dtype=np.int64)]
        flops, params = network_costs([widths[..., i] for i in range(NUM_LAYERS)], CELL, self.dataset)
        # round to the counting unit (1 multiply-add, 1 parameter) to drop float noise
        return np.round(flops * 1e6) / 1e6, np.round(params * 1e6) / 1e6

    # --- costs --------------------------------------------------------------------
    def cost(self, arch: Sequence[int]) -> Costs:
        code = int(arch_code(self.validate(arch)))
        return {m: float(v[code]) for m, v in self._table.items()}

    def cost_bounds(self, prefix: Sequence[int], metric: str) -> tuple[float, float]:
        """Exact: costs grow with every width, so fill the free layers with 8 / 64."""
        key = (tuple(prefix), metric)
        hit = self._bounds_cache.get(key)
        if hit is None:
            prefix = self.validate(prefix, prefix=True)
            self._check_metric(metric)
            free = NUM_LAYERS - len(prefix)
            lo = self.cost(prefix + (0,) * free)[metric]
            hi = self.cost(prefix + (len(WIDTHS) - 1,) * free)[metric]
            hit = self._bounds_cache[key] = (lo, hi)
        return hit

    # --- vectorised helpers -------------------------------------------------------
    @staticmethod
    def all_archs_array() -> np.ndarray:
        """All 32768 architectures, (32768, 5) option indices in official index order."""
        return np.array(list(itertools.product(range(len(WIDTHS)), repeat=NUM_LAYERS)), dtype=np.int64)

    def flops_of_array(self, archs: np.ndarray) -> np.ndarray:
        """MFLOPs of each row of an (n, 5) array of option indices."""
        return self._table["flops"][arch_code(archs)]

    def params_of_array(self, archs: np.ndarray) -> np.ndarray:
        """Params (MB) of each row of an (n, 5) array of option indices."""
        return self._table["params"][arch_code(archs)]

    # --- text forms ---------------------------------------------------------------
    def arch_to_str(self, arch: Sequence[int]) -> str:
        """The official NATS sss string, the widths joined by ':' (``8:8:40:32:40``)."""
        return ":".join(str(WIDTHS[a]) for a in self.validate(arch))

    def str_to_arch(self, text: str) -> Arch:
        """Parse ``w:w:w:w:w``; SpaceError naming the text if it is not an sss string."""
        return parse_sss(text)


__all__ = ["NatsSss", "WIDTHS", "GENOTYPE", "arch_code", "NUM_ARCHS"]
