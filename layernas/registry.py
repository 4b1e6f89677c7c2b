"""Named search spaces for the CLI: ``--space NAME`` -> a space and its evaluators.

Each entry says how to build the space for a dataset, which datasets it accepts, and
which evaluator it uses by default ("table" for the NATS-Bench lookups, "trainer" for
spaces that must be trained). Imports are lazy so that ``layernas --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from layernas.space import SearchSpace

NATS_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")


@dataclasses.dataclass(frozen=True)
class SpaceEntry:
    """How the CLI builds one named space.

    Attributes:
      make: dataset -> SearchSpace.
      datasets: accepted ``--dataset`` values (the first is the default).
      evaluator: "table" (NATS-Bench lookups) or "trainer" (real training).
      default_metric: the metric a ``--flops-fraction``/``--cost-fraction`` applies to.
      help: one line for ``layernas spaces``.
    """

    make: Callable[[str], SearchSpace]
    datasets: tuple[str, ...]
    evaluator: str
    default_metric: str
    help: str


def _nats_tss(dataset: str) -> SearchSpace:
    from layernas.search_spaces.nats_tss import NatsTss

    return NatsTss(dataset)


def _nats_sss(dataset: str) -> SearchSpace:
    from layernas.search_spaces.nats_sss import NatsSss

    return NatsSss(dataset)


SPACES: dict[str, SpaceEntry] = {
    "nats-tss": SpaceEntry(_nats_tss, NATS_DATASETS, "table", "flops",
                           "NATS-Bench topology space (NAS-Bench-201): 6 edges x 5 ops, 15625 cells"),
    "nats-sss": SpaceEntry(_nats_sss, NATS_DATASETS, "table", "flops",
                           "NATS-Bench size space: 5 channel counts from 8..64, 32768 networks"),
}


def _mobile(name: str) -> Callable[[str], SearchSpace]:
    def make(dataset: str) -> SearchSpace:
        from layernas.search_spaces import mnasnet, mobilenet_v2, mobilenet_v3

        factories = {**mobilenet_v2.SPACES, **mobilenet_v3.SPACES, **mnasnet.SPACES}
        return factories[name]()

    return make


def _codec(dataset: str) -> SearchSpace:
    from layernas.search_spaces.codec import CodecHyperpriorSpace

    return CodecHyperpriorSpace()


def _sandwich(dataset: str) -> SearchSpace:
    from layernas.search_spaces.sandwich import SandwichSpace

    return SandwichSpace()


for _name in ("mobilenetv2", "mobilenetv2-1.4", "mobilenetv3-large", "mobilenetv3-small"):
    SPACES[_name] = SpaceEntry(_mobile(_name), ("imagenet",), "trainer", "madds",
                               f"{_name} layerwise space (224x224; MAdds as plain counts)")
    SPACES[_name + "-cifar"] = SpaceEntry(_mobile(_name + "-cifar"), ("cifar10",), "trainer", "madds",
                                          f"{_name} layerwise space, CIFAR-size (32x32, 10 classes)")
SPACES["mnasnet-a1"] = SpaceEntry(_mobile("mnasnet-a1"), ("imagenet",), "trainer", "madds",
                                  "MnasNet-A1 layerwise space (224x224)")
SPACES["codec-hyperprior"] = SpaceEntry(_codec, ("photos",), "trainer", "decoder_gmacs",
                                        "learned-codec decoder space (default: Balle hyperprior N=128, M=192)")
SPACES["codec-sandwich"] = SpaceEntry(_sandwich, ("photos",), "trainer", "decoder_gmacs",
                                      "JPEG sandwich: pre/post U-Net widths and JPEG quality (default: widths 48, q75)")


def get_space_entry(name: str) -> SpaceEntry:
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; expected one of {', '.join(SPACES)}")
    return SPACES[name]


def make_space(name: str, dataset: str | None = None) -> SearchSpace:
    """The space called ``name`` for ``dataset`` (default: the entry's first dataset)."""
    entry = get_space_entry(name)
    dataset = dataset or entry.datasets[0]
    if dataset not in entry.datasets:
        raise ValueError(f"unknown dataset {dataset!r} for space {name!r}; expected one of "
                         f"{', '.join(entry.datasets)}")
    return entry.make(dataset)
