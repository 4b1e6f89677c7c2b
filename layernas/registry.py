"""Named search spaces: ``--space NAME`` -> a space and the evaluators that can score it.

Every entry names its space and its evaluator factories by *reference*, a
``"module:attribute"`` string resolved only when used, so that listing the spaces,
``layernas --help`` and a table search import no search-space module, no trainer and no
JAX. Each factory lives beside the code it builds (the table lookup beside the tables,
the trainers beside the trainers) and is a function ``(config, space) -> Evaluator`` of a
:class:`layernas.config.SearchConfig` and the space it built.

Example:
    >>> from layernas import registry
    >>> entry = registry.get_space_entry("nats-tss")
    >>> entry.default_evaluator, entry.datasets[0], entry.units["flops"]
    ('table', 'cifar10', 'MFLOPs')
    >>> registry.make_space("nats-tss", "cifar100").name
    'nats-tss/cifar100'
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

from layernas.space import SearchSpace

NATS_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
NATS_UNITS = {"flops": "MFLOPs", "params": "MB (1e6 parameters)"}
MOBILE_UNITS = {"madds": "MAdds (plain count)", "params": "parameters (plain count)", "latency": "ms"}
CODEC_UNITS = {"decoder_gmacs": "GMACs", "decoder_madds": "MAdds (plain count)",
               "encoder_madds": "MAdds (plain count)", "decoder_params": "parameters (plain count)"}

TABLE = "layernas.table_evaluator:evaluator_for_search"
CLASSIFIER = "layernas.trainers.evaluator:evaluator_for_search"
CODEC = "layernas.trainers.evaluator:codec_evaluator_for_search"
SANDWICH = "layernas.trainers.evaluator:sandwich_evaluator_for_search"
DRY_RUN = "layernas.dry_run:evaluator_for_search"


def resolve(reference: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names (imported now).

    Args:
      reference: ``"module:attribute"``.
    Returns:
      the attribute.
    Raises:
      ImportError: the module cannot be imported or has no such attribute.
    """
    module, _, attribute = reference.partition(":")
    obj = importlib.import_module(module)
    try:
        return getattr(obj, attribute)
    except AttributeError:
        raise ImportError(f"{module} has no {attribute!r} (registry reference {reference!r})") from None


@dataclasses.dataclass(frozen=True)
class SpaceEntry:
    """One named space.

    Attributes:
      space: reference to a callable building the space: ``f(dataset)`` when
        ``per_dataset``, else ``f()``.
      datasets: accepted ``--dataset`` values (the first is the default).
      default_metric: the metric ``--flops-fraction``/``--cost-fraction`` applies to.
      help: one line for ``layernas spaces``.
      evaluators: evaluator kind -> reference to its factory ``(config, space) -> Evaluator``.
        Kinds: ``"table"`` (NATS-Bench lookups), ``"trainer"`` (image classifiers trained
        with a ``--trainer`` recipe), ``"codec"`` (codec proxies), ``"dry-run"``.
      default_evaluator: the kind used without ``--trainer``/``--evaluator``; None when the
        space must be trained and so needs ``--trainer``.
      units: the unit of each cost metric, as ``describe`` and ``--target-*`` use them.
      options: defaults of the space family's own flags (the codec's ``lmbda``,
        ``width_scale``, ``proxy_steps``); empty for spaces without any.
      per_dataset: whether ``space`` takes the dataset.
    """

    space: str
    datasets: tuple[str, ...]
    default_metric: str
    help: str
    evaluators: Mapping[str, str]
    default_evaluator: str | None
    units: Mapping[str, str]
    options: Mapping[str, float] = dataclasses.field(default_factory=dict)
    per_dataset: bool = False

    def evaluator_factory(self, kind: str) -> Callable[..., Any]:
        """The factory of evaluator ``kind`` (imported now)."""
        return resolve(self.evaluators[kind])


CODEC_OPTIONS = {"lmbda": 0.013, "width_scale": 0.25, "proxy_steps": 60}

SPACES: dict[str, SpaceEntry] = {
    "nats-tss": SpaceEntry("layernas.search_spaces.nats_tss:NatsTss", NATS_DATASETS, "flops",
                           "NATS-Bench topology space (NAS-Bench-201): 6 edges x 5 ops, 15625 cells",
                           {"table": TABLE, "trainer": CLASSIFIER, "dry-run": DRY_RUN}, "table", NATS_UNITS,
                           per_dataset=True),
    "nats-sss": SpaceEntry("layernas.search_spaces.nats_sss:NatsSss", NATS_DATASETS, "flops",
                           "NATS-Bench size space: 5 channel counts from 8..64, 32768 networks",
                           {"table": TABLE, "trainer": CLASSIFIER, "dry-run": DRY_RUN}, "table", NATS_UNITS,
                           per_dataset=True),
}
_MOBILE = {"mobilenetv2": "mobilenet_v2:mobilenet_v2", "mobilenetv2-1.4": "mobilenet_v2:mobilenet_v2_140",
           "mobilenetv3-large": "mobilenet_v3:mobilenet_v3_large",
           "mobilenetv3-small": "mobilenet_v3:mobilenet_v3_small"}
for _name, _ref in _MOBILE.items():
    SPACES[_name] = SpaceEntry(f"layernas.search_spaces.{_ref}", ("imagenet",), "madds",
                               f"{_name} layerwise space (224x224; MAdds as plain counts)",
                               {"trainer": CLASSIFIER, "dry-run": DRY_RUN}, None, MOBILE_UNITS)
    SPACES[_name + "-cifar"] = SpaceEntry(f"layernas.search_spaces.{_ref}_cifar", ("cifar10",), "madds",
                                          f"{_name} layerwise space, CIFAR-size (32x32, 10 classes)",
                                          {"trainer": CLASSIFIER, "dry-run": DRY_RUN}, None, MOBILE_UNITS)
SPACES["mnasnet-a1"] = SpaceEntry("layernas.search_spaces.mnasnet:mnasnet_a1", ("imagenet",), "madds",
                                  "MnasNet-A1 layerwise space (224x224)",
                                  {"trainer": CLASSIFIER, "dry-run": DRY_RUN}, None, MOBILE_UNITS)
SPACES["codec-hyperprior"] = SpaceEntry(
    "layernas.search_spaces.codec:CodecHyperpriorSpace", ("photos",), "decoder_gmacs",
    "learned-codec decoder space (default: Balle hyperprior N=128, M=192)",
    {"codec": CODEC, "dry-run": DRY_RUN}, "codec", CODEC_UNITS, CODEC_OPTIONS)
# the sandwich's U-Nets are narrow already (widths 8..48, kept >= 4 when scaled), so its
# proxy scales them by 0.5, not 0.25
SPACES["codec-sandwich"] = SpaceEntry(
    "layernas.search_spaces.sandwich:SandwichSpace", ("photos",), "decoder_gmacs",
    "JPEG sandwich: pre/post U-Net widths and JPEG quality (default: widths 48, q75)",
    {"codec": SANDWICH, "dry-run": DRY_RUN}, "codec", CODEC_UNITS, {**CODEC_OPTIONS, "width_scale": 0.5})


def get_space_entry(name: str) -> SpaceEntry:
    """The entry called ``name``; ValueError naming the known ones if there is none."""
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; expected one of {', '.join(SPACES)}")
    return SPACES[name]


def check_dataset(name: str, dataset: str | None) -> str:
    """``dataset`` (default: the entry's first), checked against space ``name``'s datasets."""
    entry = get_space_entry(name)
    dataset = entry.datasets[0] if dataset is None else dataset
    if dataset not in entry.datasets:
        raise ValueError(f"unknown dataset {dataset!r} for space {name!r}; expected one of "
                         f"{', '.join(entry.datasets)}")
    return dataset


def make_space(name: str, dataset: str | None = None) -> SearchSpace:
    """The space called ``name`` for ``dataset`` (default: the entry's first dataset)."""
    entry = get_space_entry(name)
    dataset = check_dataset(name, dataset)
    make = resolve(entry.space)
    return make(dataset) if entry.per_dataset else make()


def build_evaluator(config, space: SearchSpace | None = None):
    """The evaluator ``config`` asks for, built by its space family's factory.

    A ``functools.partial(build_evaluator, config)`` is what a Ray worker receives: the
    frozen config pickles, and the worker builds the space and the evaluator itself.

    Args:
      config: a :class:`layernas.config.SearchConfig`.
      space: the space, when the caller built it already (default: built from ``config``).
    Returns:
      an Evaluator (or, for a trainer spanning several local devices, an Executor).
    """
    if space is None:
        space = make_space(config.space, config.dataset)
    entry = get_space_entry(config.space)
    return entry.evaluator_factory(config.evaluator_kind)(config, space)
