"""Layerwise MBConv search spaces: a base network plus per-block options.

A :class:`BackboneSpec` is a base network (stem, blocks of MBConv layers, head) together
with the options each block may take. :class:`LayerwiseSpace` turns it into a
:class:`layernas.space.SearchSpace` whose decisions ("layers" in LayerNAS terms) are,
for each block ``b`` in order, those attributes that have more than one option:

* ``b{b}.depth``: the number of MBConv layers in the block (absolute counts);
* ``b{b}.kernel``: the depthwise kernel size;
* ``b{b}.expansion``: a multiplier of the block's base expansion ratio(s);
* ``b{b}.filters``: a multiplier of the block's base output filters (rounded to a
  multiple of ``channel_divisor`` with :func:`make_divisible`);
* ``b{b}.se``: squeeze-and-excite on or off;
* ``b{b}.act``: the activation.

The default option of every decision is the base network, so the all-default
architecture is the published model. Extra layers (depth above the base) repeat the
block's last layer; fewer layers drop layers from the end. The head keeps its base width.

Costs (``cost(arch)``), in readable units:

* ``"madds"``: multiply-adds, a plain count (conv + FC incl. SE and classifier);
* ``"params"``: trainable parameters, a plain count (incl. BN scale/offset);
* ``"latency"``: milliseconds, predicted by an attached
  :class:`layernas.latency.LatencyTable` (only when one is attached; a
  :class:`layernas.trainers.latency.LatencyLUT` times its units on the current device).

So ``Target("madds", max=300e6, caps={"params": 4e6, "latency": 12.0})`` means at most 300M
MAdds, 4.0M params and 12 ms (the CLI's ``--target-madds 300M`` parses to 300e6).

``cost_bounds`` is exact: every cost is a sum of a fixed stem, per-block terms that
depend only on the block's own decisions and its input width, and a head term that
depends on the last block's width. A dynamic program over the chain of block widths
finds the min and max over all completions without assuming monotonicity.

Define your own space in a few lines:

    >>> from layernas.search_spaces.layerwise import BackboneSpec, BlockSpec, LayerwiseSpace
    >>> spec = BackboneSpec(
    ...     name="tiny", resolution=32, num_classes=10, stem_channels=16, stem_stride=1,
    ...     blocks=(BlockSpec(filters=24, depth=2, stride=2, expansion=(4.0,)),
    ...             BlockSpec(filters=40, depth=2, stride=2, kernel=5, se=True)),
    ...     head_channels=128)
    >>> space = LayerwiseSpace(spec)
    >>> [layer.name for layer in space.layers][:4]
    ['b0.depth', 'b0.kernel', 'b0.expansion', 'b0.filters']
    >>> round(space.cost(space.default_arch())["madds"] / 1e6, 3)
    6.9
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from typing import Any, Sequence

import numpy as np

from layernas.cost_model import CostBuilder, NetworkCost
from layernas.latency import TimedUnit
from layernas.space import Arch, Costs, Layer, SearchSpace, SpaceError
from layernas.search_spaces.mbconv import (
    MBConvLayer,
    Network,
    head_cost,
    make_divisible,
    mbconv_cost,
    network_cost,
    stem_cost,
)

ATTRS = ("depth", "kernel", "expansion", "filters", "se", "act")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block (stage) of the base network and its options.

    Attributes:
      filters: output channels of the base block.
      depth: number of MBConv layers in the base block.
      stride: stride of the block's first layer (the others use 1).
      kernel: base depthwise kernel.
      expansion: base expansion ratio per layer (``hidden = make_divisible(in * ratio)``);
        the last one repeats for later layers.
      se: base squeeze-and-excite on/off.
      act: base activation.
      kernel_options: kernels to search; must contain ``kernel``. ``None``: not searched.
      expansion_options: multipliers of the base ratios; must contain 1.0.
      filter_options: multipliers of ``filters``; must contain 1.0.
      depth_options: absolute layer counts; must contain ``depth``. ``None``: the
        family default ``(depth - 1, depth, depth + 1)`` clipped at 1.
      se_options: e.g. ``(False, True)``; ``None``: not searched.
      act_options: e.g. ``("relu", "hswish")``; ``None``: not searched.
    """

    filters: int
    depth: int
    stride: int
    kernel: int = 3
    expansion: tuple[float, ...] = (6.0,)
    se: bool = False
    act: str = "relu6"
    kernel_options: tuple[int, ...] | None = (3, 5, 7)
    expansion_options: tuple[float, ...] | None = (0.5, 0.75, 1.0)
    filter_options: tuple[float, ...] | None = (0.5, 0.75, 1.0, 1.25)
    depth_options: tuple[int, ...] | None = None
    se_options: tuple[bool, ...] | None = None
    act_options: tuple[str, ...] | None = None

    def options(self) -> dict[str, tuple[tuple[Any, ...], Any]]:
        """attribute -> (options, base value), for the searched attributes only."""
        depth_opts = self.depth_options
        if depth_opts is None:
            depth_opts = tuple(sorted({max(1, self.depth - 1), self.depth, self.depth + 1}))
        out = {
            "depth": (tuple(depth_opts), self.depth),
            "kernel": (self.kernel_options, self.kernel),
            "expansion": (self.expansion_options, 1.0),
            "filters": (self.filter_options, 1.0),
            "se": (self.se_options, self.se),
            "act": (self.act_options, self.act),
        }
        return {k: (tuple(o), base) for k, (o, base) in out.items() if o is not None and len(o) > 1}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A base MBConv network and its per-block options (see the module docstring).

    Attributes:
      name: the space's name.
      resolution: input height = width.
      num_classes: classifier outputs.
      stem_channels, stem_stride, stem_act: the stem conv (3x3).
      blocks: the :class:`BlockSpec` of every block.
      head_channels, head_act: final 1x1 conv (0: none).
      fc_channels, fc_act: hidden FC layers after pooling (MobileNetV3: ``(1280,)``).
      se_ratio: SE squeeze channels = ``make_divisible(base * se_ratio, se_divisor)``.
      se_from: ``"expanded"`` (MobileNetV3: base = expanded channels) or ``"input"``
        (MnasNet: base = the layer's input channels).
      se_divisor: rounding of SE channels (8 in V3; 1 in MnasNet).
      se_gate, se_act: SE gating and inner activation.
      channel_divisor: rounding of searched filters and expanded channels.
      bn_eps, bn_momentum: BatchNorm settings of the built model.
    """

    name: str
    resolution: int
    num_classes: int
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int
    stem_stride: int = 2
    stem_act: str = "relu6"
    head_act: str = "relu6"
    fc_channels: tuple[int, ...] = ()
    fc_act: str = "hswish"
    se_ratio: float = 0.25
    se_from: str = "expanded"
    se_divisor: int = 8
    se_gate: str = "hsigmoid"
    se_act: str = "relu"
    channel_divisor: int = 8
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneSpec":
        d = dict(d)
        blocks = []
        for b in d.pop("blocks"):
            b = {k: (tuple(v) if isinstance(v, list) else v) for k, v in b.items()}
            blocks.append(BlockSpec(**b))
        d["fc_channels"] = tuple(d.get("fc_channels", ()))
        return cls(blocks=tuple(blocks), **d)


class LayerwiseSpace(SearchSpace):
    """A :class:`SearchSpace` over a :class:`BackboneSpec` (see the module docstring).

    Args:
      spec: the base network and its options.
      latency_lut: an optional :class:`layernas.latency.LatencyTable`; when given,
        ``"latency"`` (ms) joins ``cost_metrics``.
    """

    def __init__(self, spec: BackboneSpec, latency_lut=None):
        self.spec = spec
        self.name = spec.name
        self.latency_lut = latency_lut
        self.cost_metrics = ("madds", "params") + (("latency",) if latency_lut is not None else ())
        layers, self._slots = [], []  # slot: (block, attr) of each decision
        for b, block in enumerate(spec.blocks):
            for attr, (opts, base) in block.options().items():
                if base not in opts:
                    raise SpaceError(f"block {b} of {spec.name!r}: base {attr} {base!r} is not in its options {opts}")
                layers.append(Layer(f"b{b}.{attr}", opts, default=opts.index(base)))
                self._slots.append((b, attr))
        self.layers = tuple(layers)
        self._block_slots = [[i for i, (bb, _) in enumerate(self._slots) if bb == b] for b in range(len(spec.blocks))]
        self._block_cost = functools.lru_cache(maxsize=None)(self._block_cost_uncached)
        self._layer_cost = functools.lru_cache(maxsize=None)(self._layer_cost_uncached)
        self._block_range = functools.lru_cache(maxsize=None)(self._block_range_uncached)
        self._bounds = functools.lru_cache(maxsize=65536)(self._bounds_uncached)
        self._stem_cost = functools.lru_cache(maxsize=None)(self._stem_cost_uncached)
        self._head_cost = functools.lru_cache(maxsize=None)(self._head_cost_uncached)

    # --- resolving an architecture ------------------------------------------------
    def _choice(self, b: int, arch: Arch) -> tuple:
        """Block ``b``'s (depth, kernel, expansion, filters, se, act) under ``arch``."""
        block = self.spec.blocks[b]
        values = {"depth": block.depth, "kernel": block.kernel, "expansion": 1.0, "filters": 1.0,
                  "se": block.se, "act": block.act}
        for i in self._block_slots[b]:
            values[self._slots[i][1]] = self.layers[i].options[arch[i]]
        return tuple(values[a] for a in ATTRS)

    def _block_layers(self, b: int, in_ch: int, choice: tuple) -> tuple[MBConvLayer, ...]:
        spec, block = self.spec, self.spec.blocks[b]
        depth, kernel, exp_mult, filt_mult, se, act = choice
        out_ch = make_divisible(block.filters * filt_mult, spec.channel_divisor)
        layers = []
        for i in range(depth):
            ratio = block.expansion[min(i, len(block.expansion) - 1)] * exp_mult
            hidden = make_divisible(in_ch * ratio, spec.channel_divisor)
            se_ch = 0
            if se:
                base = hidden if spec.se_from == "expanded" else in_ch
                se_ch = make_divisible(base * spec.se_ratio, spec.se_divisor)
            layers.append(MBConvLayer(in_ch, hidden, out_ch, kernel, block.stride if i == 0 else 1, se_ch, act))
            in_ch = out_ch
        return tuple(layers)

    def resolve(self, arch: Sequence[int]) -> Network:
        """The resolved :class:`Network` of ``arch``."""
        arch = self.validate(arch)
        spec, in_ch, layers, names = self.spec, self.spec.stem_channels, [], []
        for b in range(len(spec.blocks)):
            block_layers = self._block_layers(b, in_ch, self._choice(b, arch))
            layers += block_layers
            names += [f"b{b}.{i}" for i in range(len(block_layers))]
            in_ch = block_layers[-1].out_ch
        return Network(
            resolution=spec.resolution, stem_ch=spec.stem_channels, layers=tuple(layers), names=tuple(names),
            head_ch=spec.head_channels, num_classes=spec.num_classes, stem_stride=spec.stem_stride,
            stem_act=spec.stem_act, head_act=spec.head_act, fc=tuple(spec.fc_channels), fc_act=spec.fc_act,
            se_gate=spec.se_gate, se_act=spec.se_act, bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum,
        )

    def network_cost(self, arch: Sequence[int]) -> NetworkCost:
        """Per-layer :class:`NetworkCost` (raw MAdds and params) of ``arch``."""
        return network_cost(self.resolve(arch))

    # --- costs as a sum over the chain of blocks ----------------------------------
    @functools.cached_property
    def _res(self) -> tuple[int, ...]:
        return tuple(self._resolutions_uncached())

    def _resolutions(self) -> tuple[int, ...]:
        return self._res

    def _resolutions_uncached(self) -> list[int]:
        res = -(-self.spec.resolution // self.spec.stem_stride)
        out = []
        for block in self.spec.blocks:
            out.append(res)
            res = -(-res // block.stride)
        return out + [res]

    def _metrics(self, net: NetworkCost, units) -> dict[str, float]:
        """MAdds and params (counts); LUT latency in ms of ``units()`` if a LUT is attached."""
        d = {"madds": float(net.madds), "params": float(net.params)}
        if self.latency_lut is not None:
            d["latency"] = sum(self.latency_lut.latency_ms(u) for u in units())
        return d

    def _stem_cost_uncached(self) -> dict[str, float]:
        net = self.resolve(self.default_arch())
        b = stem_cost(CostBuilder((net.resolution, net.resolution, net.in_channels)), net)
        return self._metrics(b.result(), lambda: [self.stem_unit()])

    def _head_cost_uncached(self, in_ch: int) -> dict[str, float]:
        net = dataclasses.replace(self.resolve(self.default_arch()), layers=(), names=())
        res = self._resolutions()[-1]
        return self._metrics(head_cost(CostBuilder((res, res, in_ch)), net).result(), lambda: [self.head_unit(in_ch)])

    def _layer_cost_uncached(self, layer: MBConvLayer, res: int) -> dict[str, float]:
        builder = mbconv_cost(CostBuilder((res, res, layer.in_ch)), "layer", layer)
        return self._metrics(builder.result(), lambda: [self.layer_unit(layer, res)])

    def _block_cost_uncached(self, b: int, in_ch: int, choice: tuple) -> tuple[dict[str, float], int]:
        """Metrics of block ``b`` (a sum of memoised per-layer costs) and its output width."""
        shape = self._resolutions()[b]
        layers = self._block_layers(b, in_ch, choice)
        total = dict.fromkeys(self.cost_metrics, 0.0)
        for layer in layers:
            for k, v in self._layer_cost(layer, shape).items():
                total[k] += v
            shape = -(-shape // layer.stride)
        return total, layers[-1].out_ch

    def cost(self, arch: Sequence[int]) -> Costs:
        """``{"madds": count, "params": count[, "latency": ms]}`` of a complete architecture."""
        arch = self.validate(arch)
        total = dict(self._stem_cost())
        in_ch = self.spec.stem_channels
        for b in range(len(self.spec.blocks)):
            c, in_ch = self._block_cost(b, in_ch, self._choice(b, arch))
            for k, v in c.items():
                total[k] += v
        for k, v in self._head_cost(in_ch).items():
            total[k] += v
        return total

    def cost_bounds(self, prefix: Sequence[int], metric: str) -> tuple[float, float]:
        """Exact min and max of ``metric`` over all completions of ``prefix`` (a dynamic
        program over block widths; see the module docstring)."""
        prefix = self.validate(prefix, prefix=True)
        self._check_metric(metric)
        return self._bounds(prefix, metric)

    def _block_range_uncached(self, b: int, in_ch: int, fixed: tuple, metric: str) -> dict[int, tuple[float, float]]:
        """Output width -> (min, max) of block ``b``'s ``metric`` over its free decisions;
        ``fixed`` holds the options of the block's decisions that the prefix sets."""
        slots = self._block_slots[b]
        ranges = [[fixed[j]] if j < len(fixed) else range(self.num_options[i]) for j, i in enumerate(slots)]
        out: dict[int, tuple[float, float]] = {}
        for choice in {self._choice(b, self._with(slots, combo)) for combo in itertools.product(*ranges)}:
            c, width = self._block_cost(b, in_ch, choice)
            lo, hi = out.get(width, (float("inf"), float("-inf")))
            out[width] = (min(lo, c[metric]), max(hi, c[metric]))
        return out

    def _bounds_uncached(self, prefix: Arch, metric: str) -> tuple[float, float]:
        stem = self._stem_cost()[metric]
        states = {self.spec.stem_channels: (stem, stem)}  # width -> (lo, hi) so far
        for b in range(len(self.spec.blocks)):
            fixed = tuple(prefix[i] for i in self._block_slots[b] if i < len(prefix))
            new: dict[int, tuple[float, float]] = {}
            for in_ch, (lo, hi) in states.items():
                for out, (blo, bhi) in self._block_range(b, in_ch, fixed, metric).items():
                    olo, ohi = new.get(out, (float("inf"), float("-inf")))
                    new[out] = (min(olo, lo + blo), max(ohi, hi + bhi))
            states = new
        los, his = [], []
        for in_ch, (lo, hi) in states.items():
            h = self._head_cost(in_ch)[metric]
            los.append(lo + h)
            his.append(hi + h)
        return float(min(los)), float(max(his))

    # --- latency units (what a LatencyLUT times) ------------------------------------
    def stem_unit(self):
        s = self.spec
        return TimedUnit.stem(s.resolution, 3, s.stem_channels, s.stem_stride, s.stem_act, s.bn_eps)

    def layer_unit(self, layer: MBConvLayer, resolution: int):
        return TimedUnit.mbconv(layer, resolution, self.spec.se_gate, self.spec.se_act, self.spec.bn_eps)

    def head_unit(self, in_ch: int):
        s = self.spec
        return TimedUnit.head(self._resolutions()[-1], in_ch, s.head_channels, s.head_act, tuple(s.fc_channels),
                              s.fc_act, s.num_classes, s.bn_eps)

    def latency_units(self, arch: Sequence[int]) -> list:
        """The :class:`layernas.latency.TimedUnit` list whose LUT latencies sum to the
        predicted latency of ``arch``: stem, each MBConv layer, head."""
        net = self.resolve(arch)
        units, res = [self.stem_unit()], -(-net.resolution // net.stem_stride)
        for layer in net.layers:
            units.append(self.layer_unit(layer, res))
            res = -(-res // layer.stride)
        return units + [self.head_unit(net.layers[-1].out_ch)]

    def all_units(self) -> list:
        """Every distinct :class:`layernas.latency.TimedUnit` any architecture of the space
        uses (what ``lut.fill`` needs before latency ``cost_bounds`` on a large space)."""
        units = {self.stem_unit().key: self.stem_unit()}
        widths = {self.spec.stem_channels}
        res = self._resolutions()
        for b in range(len(self.spec.blocks)):
            slots = self._block_slots[b]
            choices = {self._choice(b, self._with(slots, combo))
                       for combo in itertools.product(*(range(self.num_options[i]) for i in slots))}
            new_widths = set()
            for in_ch in widths:
                for choice in choices:
                    shape = res[b]
                    for layer in self._block_layers(b, in_ch, choice):
                        u = self.layer_unit(layer, shape)
                        units[u.key] = u
                        shape = -(-shape // layer.stride)
                        new_widths.add(layer.out_ch)
            widths = new_widths
        for w in widths:
            units[self.head_unit(w).key] = self.head_unit(w)
        return list(units.values())

    def _with(self, slots, combo) -> Arch:
        arch = list(self.default_arch())
        for i, o in zip(slots, combo):
            arch[i] = o
        return tuple(arch)

    def with_latency(self, lut) -> "LayerwiseSpace":
        """The same space with a latency LUT attached (adds the ``"latency"`` metric)."""
        return type(self)(self.spec, latency_lut=lut)

    # --- text and JSON --------------------------------------------------------------
    def describe(self, arch: Sequence[int], detail: bool = False) -> str:
        """The chosen options, then one row per unit (stem, each MBConv layer, head) with
        input/output shapes, its config, MAdds, params and, when a LUT is attached, the
        LUT latency; then the totals. ``detail=True`` adds the per-op table (every conv,
        BN, SE, FC)."""
        arch = self.validate(arch)
        net, cost = self.resolve(arch), self.network_cost(arch)
        groups: dict[str, list] = {}
        for l in cost.layers:
            parts = l.name.split(".")
            key = ".".join(parts[:2]) if parts[0].startswith("b") and parts[0][1:].isdigit() else (
                "stem" if parts[0] == "stem" else "head")
            groups.setdefault(key, []).append(l)
        configs = {"stem": f"conv3x3 s{net.stem_stride} {net.stem_act}",
                   "head": f"conv1x1 {net.head_ch} {net.head_act}, pool, fc {list(net.fc)}, {net.num_classes} classes"}
        for name, l in zip(net.names, net.layers):
            configs[name] = (f"e{l.hidden / l.in_ch:.2f} k{l.kernel} s{l.stride} {l.act}"
                             + (f" se{l.se_ch}" if l.se_ch else "") + (" +res" if l.residual else ""))
        lat = {}
        if self.latency_lut is not None:
            lat = dict(zip(["stem"] + list(net.names) + ["head"],
                           (self.latency_lut.latency_ms(u) for u in self.latency_units(arch))))
        shape = lambda s: "x".join(str(d) for d in s)  # noqa: E731
        head = (f"{'unit':<8} {'in':>11} {'out':>11}  {'config':<30} {'MAdds':>13} {'params':>11}"
                + ("  latency_ms" if lat else ""))
        lines = [super().describe(arch), "", head, "-" * len(head)]
        for key, ls in groups.items():
            lines.append(f"{key:<8} {shape(ls[0].in_shape):>11} {shape(ls[-1].out_shape):>11}  {configs[key][:30]:<30} "
                         f"{sum(l.madds for l in ls):>13,} {sum(l.params for l in ls):>11,}"
                         + (f"  {lat[key]:10.4f}" if lat else ""))
        lines.append("-" * len(head))
        lines.append(f"{'total':<8} {'':>11} {'':>11}  {'':<30} {cost.madds:>13,} {cost.params:>11,}"
                     + (f"  {sum(lat.values()):10.4f}" if lat else ""))
        if detail:
            lines += ["", cost.table(skip_free=True)]
        return "\n".join(lines)

    def str_to_arch(self, text: str) -> Arch:
        """Option indices joined by '-' (as ``arch_to_str`` writes them), or ``"default"``
        for the base network."""
        if text.strip().lower() == "default":
            return self.default_arch()
        return super().str_to_arch(text)

    def to_json(self) -> str:
        """The space as data, including the base network spec (``space_from_json`` reads it)."""
        d = json.loads(super().to_json())
        d["spec"] = self.spec.to_dict()
        return json.dumps(d)

    def arch_to_json(self, arch: Sequence[int]) -> str:
        """The architecture with its space, costs and resolved network (enough to rebuild
        the flax model with :func:`layernas.trainers.mbconv_model.network_from_json` without the space)."""
        arch = self.validate(arch)
        return json.dumps({
            "space": self.name, "arch": list(arch), "arch_str": self.arch_to_str(arch),
            "costs": {k: v for k, v in self.cost(arch).items()},
            "network": self.resolve(arch).to_dict(),
        })


def space_from_json(text: str, latency_lut=None) -> LayerwiseSpace:
    """Rebuild a :class:`LayerwiseSpace` from :meth:`LayerwiseSpace.to_json`."""
    d = json.loads(text)
    if "spec" not in d:
        raise SpaceError("space JSON has no 'spec': it was not written by LayerwiseSpace.to_json")
    return LayerwiseSpace(BackboneSpec.from_dict(d["spec"]), latency_lut=latency_lut)


def brute_force_bounds(space: SearchSpace, prefix: Sequence[int], metric: str) -> tuple[float, float]:
    """Min/max by enumerating every completion (for tests on small spaces)."""
    prefix = tuple(prefix)
    values = [space.cost(prefix + rest)[metric]
              for rest in itertools.product(*(range(n) for n in space.num_options[len(prefix):]))]
    return float(np.min(values)), float(np.max(values))
