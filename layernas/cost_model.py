"""Layer-level cost counting: multiply-adds (MAdds) and parameters, for any resolution.

Conventions (the implementation counts that the MobileNet / MnasNet papers and torchvision
report: MobileNetV2 300M MAdds, Sandler et al. 2018, arXiv:1801.04381; MobileNetV3-Large
219M, Howard et al. 2019, arXiv:1905.02244; MnasNet-A1 312M, Tan et al. 2019,
arXiv:1807.11626; parameter counts as in the torchvision.models documentation):

* **MAdds** count the multiply-adds of convolutions and dense (fully connected) layers,
  including the 1x1 convs / FCs inside squeeze-and-excite and the classifier, plus the
  bias add when a layer has a bias is *not* counted (a bias is an add, not a
  multiply-add). BatchNorm, activations, pooling, residual adds and the SE gating
  multiply are 0 MAdds.
* A convolution costs ``H_out * W_out * k_h * k_w * (C_in / groups) * C_out``.
* A **transposed** convolution costs ``H_in * W_in * k_h * k_w * C_in * C_out`` (counted per
  *input* pixel: the real number of multiplies; per-output counting would be ``stride^2``
  times too large).
* **GDN / IGDN** is a 1x1 ``C x C`` normalisation: ``H * W * C * C`` MAdds, ``C*C + C``
  params (gamma and beta).
* **Params** count every trainable weight: kernels, biases, and BatchNorm scale and
  offset (``2*C``; the running statistics are not parameters). This is how torchvision
  counts MobileNetV2 at 3,504,872.

Shapes are ``(H, W, C)`` tuples (batch left out, channels last, as in flax); a dense
layer's shape is ``(C,)``. Spatial output sizes follow ``"SAME"`` padding
(``ceil(H / stride)``), which is also what torchvision's ``padding=(k-1)//2`` gives for odd
kernels; pass ``padding="VALID"`` for ``floor((H - k) / stride) + 1``.

Every function returns one frozen :class:`LayerCost`. :class:`CostBuilder` chains them,
tracking the current shape, and returns a :class:`NetworkCost` (the per-layer list plus
totals).

Example:
    >>> from layernas.cost_model import CostBuilder
    >>> b = CostBuilder((224, 224, 3))
    >>> _ = b.conv2d("stem", 32, kernel=3, stride=2).batch_norm("stem_bn").activation("stem_act", "relu6")
    >>> _ = b.depthwise_conv2d("dw", kernel=3).pointwise_conv2d("pw", 64)
    >>> net = b.result()
    >>> net.layers[0].out_shape, net.layers[0].madds, net.layers[0].params
    ((112, 112, 32), 10838016, 864)
    >>> net.madds == sum(layer.madds for layer in net.layers)
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

Shape = tuple[int, ...]

__all__ = [
    "LayerCost",
    "NetworkCost",
    "CostBuilder",
    "conv2d",
    "depthwise_conv2d",
    "pointwise_conv2d",
    "conv_transpose2d",
    "subpixel_conv2d",
    "resize_conv2d",
    "dense",
    "batch_norm",
    "activation",
    "pool2d",
    "global_pool",
    "squeeze_excite",
    "gdn",
    "residual_add",
    "flatten",
    "conv_out_size",
    "ACTIVATIONS",
]

# Activation names the cost model (and the flax builders) know; all cost 0 MAdds.
ACTIVATIONS = ("identity", "relu", "relu6", "hswish", "swish", "sigmoid", "hsigmoid", "gelu", "tanh")


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """The cost of one layer.

    Attributes:
      name: the layer's name (unique within a network by convention, e.g. ``"b3.1.dw"``).
      kind: what it is: ``"conv2d"``, ``"dwconv2d"``, ``"conv_transpose2d"``, ``"dense"``,
        ``"batch_norm"``, ``"activation"``, ``"pool"``, ``"squeeze_excite"``, ``"gdn"``,
        ``"igdn"``, ``"add"``, ``"flatten"``, ``"subpixel_conv2d"``, ``"resize_conv2d"``.
      in_shape: input shape, ``(H, W, C)`` or ``(C,)``.
      out_shape: output shape.
      madds: multiply-adds (see the module docstring for the convention).
      params: trainable parameters.
    """

    name: str
    kind: str
    in_shape: Shape
    out_shape: Shape
    madds: int
    params: int

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "madds": self.madds,
            "params": self.params,
        }


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """Per-layer costs of a network and their totals.

    Attributes:
      layers: the :class:`LayerCost` of every layer, in order.
    """

    layers: tuple[LayerCost, ...]

    @property
    def madds(self) -> int:
        return sum(layer.madds for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def in_shape(self) -> Shape:
        return self.layers[0].in_shape if self.layers else ()

    @property
    def out_shape(self) -> Shape:
        return self.layers[-1].out_shape if self.layers else ()

    def totals(self) -> dict[str, int]:
        return {"madds": self.madds, "params": self.params}

    def by_prefix(self, sep: str = ".") -> dict[str, dict[str, int]]:
        """Totals grouped by the part of each layer name before the first ``sep``."""
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            key = layer.name.split(sep, 1)[0]
            agg = out.setdefault(key, {"madds": 0, "params": 0})
            agg["madds"] += layer.madds
            agg["params"] += layer.params
        return out

    def to_rows(self) -> list[dict]:
        return [layer.to_dict() for layer in self.layers]

    def table(self, skip_free: bool = False) -> str:
        """A fixed-width text table: one line per layer, then the totals.

        Args:
          skip_free: leave out layers with 0 MAdds and 0 params (activations, adds).
        """
        rows = [l for l in self.layers if not (skip_free and l.madds == 0 and l.params == 0)]
        name_w = max([len("layer")] + [len(l.name) for l in rows])
        kind_w = max([len("kind")] + [len(l.kind) for l in rows])
        shape = lambda s: "x".join(str(d) for d in s)  # noqa: E731
        shp_w = max([len("out")] + [len(shape(l.in_shape)) for l in rows] + [len(shape(l.out_shape)) for l in rows])
        head = f"{'layer':<{name_w}}  {'kind':<{kind_w}}  {'in':>{shp_w}}  {'out':>{shp_w}}  {'MAdds':>13}  {'params':>10}"
        lines = [head, "-" * len(head)]
        for l in rows:
            lines.append(
                f"{l.name:<{name_w}}  {l.kind:<{kind_w}}  {shape(l.in_shape):>{shp_w}}  "
                f"{shape(l.out_shape):>{shp_w}}  {l.madds:>13,}  {l.params:>10,}"
            )
        lines.append("-" * len(head))
        lines.append(f"{'total':<{name_w}}  {'':<{kind_w}}  {'':>{shp_w}}  {'':>{shp_w}}  {self.madds:>13,}  {self.params:>10,}")
        return "\n".join(lines)


# --- helpers --------------------------------------------------------------------------
def _hwc(shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(d) <= 0 for d in shape):
        raise ValueError(f"layer {name!r}: input shape {tuple(shape)} is not a positive (H, W, C)")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def conv_out_size(size: int, kernel: int, stride: int, padding: str = "SAME") -> int:
    """Output length of one spatial axis under ``"SAME"`` or ``"VALID"`` padding."""
    if padding.upper() == "SAME":
        return -(-size // stride)
    if padding.upper() == "VALID":
        if size < kernel:
            raise ValueError(f"VALID conv: input size {size} is smaller than kernel {kernel}")
        return (size - kernel) // stride + 1
    raise ValueError(f"padding {padding!r} is not 'SAME' or 'VALID'")


# --- layers ---------------------------------------------------------------------------
def conv2d(
    name: str,
    in_shape: Sequence[int],
    out_channels: int,
    kernel: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "SAME",
) -> LayerCost:
    """A (grouped) 2-D convolution: ``H_out*W_out*kh*kw*(C_in/groups)*C_out`` MAdds.

    Args:
      name: layer name.
      in_shape: ``(H, W, C_in)``.
      out_channels: ``C_out``.
      kernel: ``k`` or ``(kh, kw)``.
      stride: ``s`` or ``(sh, sw)``.
      groups: feature groups (``C_in`` for a depthwise conv); must divide both channel counts.
      bias: whether the conv has a bias (adds ``C_out`` params, no MAdds).
      padding: ``"SAME"`` or ``"VALID"``.
    Returns:
      its :class:`LayerCost`.
    """
    h, w, cin = _hwc(in_shape, name)
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    if groups < 1 or cin % groups or out_channels % groups:
        raise ValueError(
            f"layer {name!r}: groups={groups} must divide C_in={cin} and C_out={out_channels}"
        )
    ho, wo = conv_out_size(h, kh, sh, padding), conv_out_size(w, kw, sw, padding)
    per_out = kh * kw * (cin // groups)
    kind = "dwconv2d" if groups == cin and groups > 1 else "conv2d"
    return LayerCost(
        name,
        kind,
        (h, w, cin),
        (ho, wo, int(out_channels)),
        ho * wo * per_out * int(out_channels),
        per_out * int(out_channels) + (int(out_channels) if bias else 0),
    )


def depthwise_conv2d(
    name: str,
    in_shape: Sequence[int],
    kernel: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    multiplier: int = 1,
    bias: bool = False,
    padding: str = "SAME",
) -> LayerCost:
    """A depthwise conv (``groups = C_in``, ``C_out = multiplier * C_in``)."""
    cin = _hwc(in_shape, name)[2]
    return conv2d(name, in_shape, cin * multiplier, kernel, stride, cin, bias, padding)


def pointwise_conv2d(name: str, in_shape: Sequence[int], out_channels: int, bias: bool = False) -> LayerCost:
    """A 1x1 conv."""
    return conv2d(name, in_shape, out_channels, 1, 1, 1, bias)


def conv_transpose2d(
    name: str,
    in_shape: Sequence[int],
    out_channels: int,
    kernel: int | Sequence[int] = 5,
    stride: int | Sequence[int] = 2,
    bias: bool = True,
) -> LayerCost:
    """A transposed conv with ``"SAME"`` output size ``H_in*stride``.

    MAdds are counted per *input* pixel: ``H_in*W_in*kh*kw*C_in*C_out`` (the codec
    convention: the real multiply count of a scatter-style transposed conv; counting per
    output pixel would triple it).
    """
    h, w, cin = _hwc(in_shape, name)
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    per_in = kh * kw * cin * int(out_channels)
    return LayerCost(
        name,
        "conv_transpose2d",
        (h, w, cin),
        (h * sh, w * sw, int(out_channels)),
        h * w * per_in,
        per_in + (int(out_channels) if bias else 0),
    )


def subpixel_conv2d(
    name: str,
    in_shape: Sequence[int],
    out_channels: int,
    kernel: int | Sequence[int] = 3,
    upscale: int = 2,
    bias: bool = True,
) -> LayerCost:
    """A conv to ``C_out * r^2`` channels at the input resolution, then depth-to-space by
    ``r`` (the pixel shuffle is free). Output ``(H*r, W*r, C_out)``."""
    inner = conv2d(name, in_shape, int(out_channels) * upscale * upscale, kernel, 1, 1, bias)
    h, w, _ = inner.out_shape
    return dataclasses.replace(
        inner, kind="subpixel_conv2d", out_shape=(h * upscale, w * upscale, int(out_channels))
    )


def resize_conv2d(
    name: str,
    in_shape: Sequence[int],
    out_channels: int,
    kernel: int | Sequence[int] = 3,
    upscale: int = 2,
    bias: bool = True,
) -> LayerCost:
    """Nearest/bilinear upsampling by ``r`` (counted as free) then a stride-1 conv at the
    upsampled resolution."""
    h, w, c = _hwc(in_shape, name)
    inner = conv2d(name, (h * upscale, w * upscale, c), out_channels, kernel, 1, 1, bias)
    return dataclasses.replace(inner, kind="resize_conv2d", in_shape=(h, w, c))


def dense(name: str, in_shape: Sequence[int], out_features: int, bias: bool = True) -> LayerCost:
    """A fully connected layer on a vector ``(C,)``: ``C*out`` MAdds, ``C*out (+out)`` params."""
    if len(in_shape) != 1:
        raise ValueError(f"layer {name!r}: dense input shape {tuple(in_shape)} is not (C,); flatten or pool first")
    cin = int(in_shape[0])
    return LayerCost(
        name, "dense", (cin,), (int(out_features),), cin * int(out_features),
        cin * int(out_features) + (int(out_features) if bias else 0),
    )


def batch_norm(name: str, in_shape: Sequence[int], affine: bool = True) -> LayerCost:
    """BatchNorm: 0 MAdds; ``2*C`` params (scale and offset) when affine."""
    shape = tuple(int(d) for d in in_shape)
    return LayerCost(name, "batch_norm", shape, shape, 0, 2 * shape[-1] if affine else 0)


def activation(name: str, in_shape: Sequence[int], fn: str = "relu") -> LayerCost:
    """An elementwise activation: 0 MAdds, 0 params. ``fn`` must be in ACTIVATIONS."""
    if fn not in ACTIVATIONS:
        raise ValueError(f"layer {name!r}: activation {fn!r} is not one of {', '.join(ACTIVATIONS)}")
    shape = tuple(int(d) for d in in_shape)
    return LayerCost(name, "activation", shape, shape, 0, 0)


def residual_add(name: str, in_shape: Sequence[int]) -> LayerCost:
    """A residual (skip) add: 0 MAdds, 0 params."""
    shape = tuple(int(d) for d in in_shape)
    return LayerCost(name, "add", shape, shape, 0, 0)


def pool2d(name: str, in_shape: Sequence[int], window: int = 2, stride: int | None = None, padding: str = "VALID") -> LayerCost:
    """Average/max pooling over ``window x window``: 0 MAdds, 0 params."""
    h, w, c = _hwc(in_shape, name)
    stride = window if stride is None else stride
    return LayerCost(
        name, "pool", (h, w, c),
        (conv_out_size(h, window, stride, padding), conv_out_size(w, window, stride, padding), c), 0, 0,
    )


def global_pool(name: str, in_shape: Sequence[int]) -> LayerCost:
    """Global average pooling ``(H, W, C) -> (C,)``: 0 MAdds, 0 params."""
    h, w, c = _hwc(in_shape, name)
    return LayerCost(name, "pool", (h, w, c), (c,), 0, 0)


def flatten(name: str, in_shape: Sequence[int]) -> LayerCost:
    shape = tuple(int(d) for d in in_shape)
    return LayerCost(name, "flatten", shape, (math.prod(shape),), 0, 0)


def squeeze_excite(name: str, in_shape: Sequence[int], squeeze_channels: int, bias: bool = True) -> LayerCost:
    """Squeeze-and-excite: global pool, FC ``C -> S``, activation, FC ``S -> C``, gate.

    MAdds ``2*C*S`` (the two FCs on the pooled vector; pooling and the gating multiply are
    not multiply-adds of a conv/FC). Params ``2*C*S`` plus ``S + C`` biases when ``bias``.
    The shape is unchanged.
    """
    h, w, c = _hwc(in_shape, name)
    s = int(squeeze_channels)
    if s < 1:
        raise ValueError(f"layer {name!r}: squeeze_channels={s} must be >= 1")
    return LayerCost(name, "squeeze_excite", (h, w, c), (h, w, c), 2 * c * s, 2 * c * s + ((s + c) if bias else 0))


def gdn(name: str, in_shape: Sequence[int], inverse: bool = False) -> LayerCost:
    """GDN / IGDN (Balle et al.): a 1x1 ``C x C`` normalisation. ``H*W*C*C`` MAdds,
    ``C*C + C`` params (gamma and beta)."""
    h, w, c = _hwc(in_shape, name)
    return LayerCost(name, "igdn" if inverse else "gdn", (h, w, c), (h, w, c), h * w * c * c, c * c + c)


# --- builder --------------------------------------------------------------------------
class CostBuilder:
    """Chains layer costs, tracking the current shape. Every method returns ``self``.

    Args:
      in_shape: the network's input shape ``(H, W, C)`` (no batch).

    Example:
        >>> b = CostBuilder((32, 32, 3)).conv2d("c1", 16).activation("a1", "relu").global_pool("gap").dense("fc", 10)
        >>> b.shape, b.result().madds
        ((10,), 442528)
    """

    def __init__(self, in_shape: Sequence[int]):
        self.shape: Shape = tuple(int(d) for d in in_shape)
        self._layers: list[LayerCost] = []

    def add(self, layer: LayerCost) -> "CostBuilder":
        """Append a ready-made LayerCost; the current shape becomes its output shape."""
        self._layers.append(layer)
        self.shape = layer.out_shape
        return self

    def conv2d(self, name, out_channels, kernel=3, stride=1, groups=1, bias=False, padding="SAME"):
        return self.add(conv2d(name, self.shape, out_channels, kernel, stride, groups, bias, padding))

    def depthwise_conv2d(self, name, kernel=3, stride=1, multiplier=1, bias=False, padding="SAME"):
        return self.add(depthwise_conv2d(name, self.shape, kernel, stride, multiplier, bias, padding))

    def pointwise_conv2d(self, name, out_channels, bias=False):
        return self.add(pointwise_conv2d(name, self.shape, out_channels, bias))

    def conv_transpose2d(self, name, out_channels, kernel=5, stride=2, bias=True):
        return self.add(conv_transpose2d(name, self.shape, out_channels, kernel, stride, bias))

    def subpixel_conv2d(self, name, out_channels, kernel=3, upscale=2, bias=True):
        return self.add(subpixel_conv2d(name, self.shape, out_channels, kernel, upscale, bias))

    def resize_conv2d(self, name, out_channels, kernel=3, upscale=2, bias=True):
        return self.add(resize_conv2d(name, self.shape, out_channels, kernel, upscale, bias))

    def dense(self, name, out_features, bias=True):
        return self.add(dense(name, self.shape, out_features, bias))

    def batch_norm(self, name, affine=True):
        return self.add(batch_norm(name, self.shape, affine))

    def activation(self, name, fn="relu"):
        return self.add(activation(name, self.shape, fn))

    def residual_add(self, name):
        return self.add(residual_add(name, self.shape))

    def pool2d(self, name, window=2, stride=None, padding="VALID"):
        return self.add(pool2d(name, self.shape, window, stride, padding))

    def global_pool(self, name):
        return self.add(global_pool(name, self.shape))

    def flatten(self, name):
        return self.add(flatten(name, self.shape))

    def squeeze_excite(self, name, squeeze_channels, bias=True):
        return self.add(squeeze_excite(name, self.shape, squeeze_channels, bias))

    def gdn(self, name, inverse=False):
        return self.add(gdn(name, self.shape, inverse))

    def extend(self, other: "CostBuilder | NetworkCost") -> "CostBuilder":
        layers = other._layers if isinstance(other, CostBuilder) else other.layers
        for layer in layers:
            self.add(layer)
        return self

    def result(self) -> NetworkCost:
        return NetworkCost(tuple(self._layers))
