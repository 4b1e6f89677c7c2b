"""``codec-hyperprior``: a layerwise search space over a learned codec's decoder.

The codec is the Ballé 2018 scale hyperprior (:mod:`layernas.trainers.codec_model`). The
encoder side (g_a, h_a) keeps its standard shape (N=128); the decoder side is searched,
one decision per layer:

==============  =============================================  ==================
layer           options                                        default
==============  =============================================  ==================
``M``           latent channels 64, 96, 128, 192, 256          192
``hs{i}_width`` h_s block i width 32, 64, 96, 128  (i = 0, 1)  128
``hs{i}_kernel`` 3, 5                                          5
``hs{i}_up``    deconv, subpixel, resize                       deconv
``gs{i}_width`` g_s block i width 32, 64, 96, 128, 192 (0..2)  128
``gs{i}_kernel`` 3, 5                                          5
``gs{i}_up``    deconv, subpixel, resize                       deconv
``gs{i}_act``   igdn, gdn_lite, leaky_relu                     igdn
``gs3_kernel``  3, 5 (the last block, to RGB)                  5
``gs3_up``      deconv, subpixel, resize                       deconv
==============  =============================================  ==================

The all-default architecture is exactly ``ScaleHyperprior(N=128, M=192)``. Unlike the
LayerNAS paper (most expensive option as the default), the default here is the published
model, which sits near the top of the cost range but not at it (width 192 and M=256 are
dearer), so a search starting from it explores both cheaper and dearer decoders.

Costs (``cost(arch)``), counted with :mod:`layernas.cost_model` at 768x512 (Kodak):

* ``decoder_madds``: decoder (h_s + g_s) multiply-adds per image pixel. Transposed convs
  are counted per *input* pixel (``H_in*W_in*k*k*C_in*C_out``, the real multiply count;
  counting per output pixel roughly triples it); IGDN is a CxC 1x1 conv per pixel;
  GDN-lite (diagonal gamma) costs C per pixel; activations, biases and resizes cost
  nothing. The default, CompressAI's ``ScaleHyperprior(N=128, M=192)``, is 43,540
  MAC/pixel.
* ``decoder_gmacs``: the same for one 768x512 image, in GMACs (1e9).
* ``encoder_madds``: what the encoder runs per pixel: g_a + h_a + h_s (it needs the scales).
* ``decoder_params``: parameters of h_s + g_s (+ the entropy bottleneck's tables are not
  counted).

Example:
    >>> space = CodecHyperpriorSpace()
    >>> space.cost(space.default_arch())["decoder_madds"]
    43540.0
"""

from __future__ import annotations

import dataclasses

from layernas import cost_model as cm
from layernas.space import Layer, NamedOptionStrings, SearchSpace

REFERENCE_SIZE = (512, 768)  # Kodak, H x W
LATENT_OPTIONS = (64, 96, 128, 192, 256)
GS_WIDTHS = (32, 64, 96, 128, 192)
HS_WIDTHS = (32, 64, 96, 128)
KERNELS = (3, 5)
UPSAMPLERS = ("deconv", "subpixel", "resize")
ACTIVATIONS = ("igdn", "gdn_lite", "leaky_relu")
# How the stride-2 convs (g_a, h_a) and transposed convs ("deconv" blocks) are computed:
# "rearranged" = space-to-depth + stride-1 conv and stride-1 conv + depth-to-space
# (:mod:`layernas.trainers.conv_ops`, fast on XLA:CPU), "lax" = lax's strided and
# transposed convs. Both give the same outputs from the same parameters.
CONV_IMPLEMENTATIONS = ("rearranged", "lax")


# --- the codec's shape (what the flax model reads) ---------------------------------
@dataclasses.dataclass(frozen=True)
class SynthesisBlock:
    """One upsampling block of g_s or h_s.

    Args:
      width: output channels (the last g_s block must output 3).
      kernel: spatial kernel size (odd).
      upsample: "deconv" (k x k transposed conv, stride 2), "subpixel" (k x k conv to
        4*width channels, then depth-to-space) or "resize" (nearest x2, then k x k conv).
      activation: "igdn", "gdn_lite", "leaky_relu", "relu" or "none".
    """

    width: int
    kernel: int = 5
    upsample: str = "deconv"
    activation: str = "igdn"

    def __post_init__(self):
        if self.upsample not in UPSAMPLERS:
            raise ValueError(f"upsample {self.upsample!r} is not one of {UPSAMPLERS}")
        if self.activation not in ACTIVATIONS + ("relu", "none"):
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS + ('relu', 'none')}")
        if self.kernel % 2 != 1 or self.kernel < 1:
            raise ValueError(f"kernel {self.kernel} must be a positive odd integer")
        if self.width < 1:
            raise ValueError(f"width {self.width} must be positive")


def _default_synthesis(n: int = 128) -> tuple[SynthesisBlock, ...]:
    return (SynthesisBlock(n), SynthesisBlock(n), SynthesisBlock(n), SynthesisBlock(3, activation="none"))


def _default_hyper_synthesis(n: int = 128) -> tuple[SynthesisBlock, ...]:
    return (SynthesisBlock(n, activation="relu"), SynthesisBlock(n, activation="relu"))


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """Shape of a hyperprior codec. The defaults are Ballé 2018 with N=128, M=192.

    Args:
      latent_channels: M, channels of y.
      analysis_width: N of g_a (its three hidden layers).
      hyper_channels: channels of z (and of h_a's hidden layers).
      synthesis: the four g_s blocks (the last has width 3 and no activation).
      hyper_synthesis: the two upsampling blocks of h_s; a 3x3 conv to M + ReLU follows.
      hyper_kernel: kernel of h_s's final 3x3 conv.
      conv_impl: how strided and transposed convs are computed, one of
        :data:`CONV_IMPLEMENTATIONS`; it changes neither the parameters nor the outputs
        (up to float rounding), nor the MAC count, only the speed.
    """

    latent_channels: int = 192
    analysis_width: int = 128
    hyper_channels: int = 128
    synthesis: tuple[SynthesisBlock, ...] = _default_synthesis()
    hyper_synthesis: tuple[SynthesisBlock, ...] = _default_hyper_synthesis()
    hyper_kernel: int = 3
    conv_impl: str = "rearranged"

    def __post_init__(self):
        if self.conv_impl not in CONV_IMPLEMENTATIONS:
            raise ValueError(f"conv_impl {self.conv_impl!r} is not one of {CONV_IMPLEMENTATIONS}")
        if len(self.synthesis) != 4 or self.synthesis[-1].width != 3:
            raise ValueError("synthesis must have 4 blocks, the last with width 3")
        if len(self.hyper_synthesis) != 2:
            raise ValueError("hyper_synthesis must have 2 blocks")

    @classmethod
    def small(cls, width: int = 32, latent: int = 48) -> "CodecConfig":
        """The default topology with every width scaled down (tests, CPU proxies)."""
        return cls(latent_channels=latent, analysis_width=width, hyper_channels=width,
                   synthesis=_default_synthesis(width), hyper_synthesis=_default_hyper_synthesis(width))


def _layers() -> tuple[Layer, ...]:
    layers = [Layer("M", LATENT_OPTIONS, default=LATENT_OPTIONS.index(192))]
    for i in range(2):
        layers += [Layer(f"hs{i}_width", HS_WIDTHS, default=HS_WIDTHS.index(128)),
                   Layer(f"hs{i}_kernel", KERNELS, default=1),
                   Layer(f"hs{i}_up", UPSAMPLERS, default=0)]
    for i in range(3):
        layers += [Layer(f"gs{i}_width", GS_WIDTHS, default=GS_WIDTHS.index(128)),
                   Layer(f"gs{i}_kernel", KERNELS, default=1),
                   Layer(f"gs{i}_up", UPSAMPLERS, default=0),
                   Layer(f"gs{i}_act", ACTIVATIONS, default=0)]
    layers += [Layer("gs3_kernel", KERNELS, default=1), Layer("gs3_up", UPSAMPLERS, default=0)]
    return tuple(layers)


def _upsample_cost(name: str, shape, block: SynthesisBlock) -> cm.LayerCost:
    fn = {"deconv": cm.conv_transpose2d, "subpixel": cm.subpixel_conv2d, "resize": cm.resize_conv2d}[block.upsample]
    return fn(name, shape, block.width, kernel=block.kernel, bias=True)


def _activation_cost(name: str, shape, act: str) -> list[cm.LayerCost]:
    if act == "igdn":
        return [cm.gdn(name, shape, inverse=True)]
    if act == "gdn_lite":  # diagonal gamma: C multiply-adds per pixel, beta + gamma params
        h, w, c = shape
        return [cm.LayerCost(name, "gdn_lite", tuple(shape), tuple(shape), h * w * c, 2 * c)]
    return []  # ReLU / LeakyReLU / none: free


def _synthesis_costs(prefix: str, builder: cm.CostBuilder, blocks) -> None:
    for i, block in enumerate(blocks):
        builder.add(_upsample_cost(f"{prefix}{i}", builder.shape, block))
        for layer in _activation_cost(f"{prefix}{i}_act", builder.shape, block.activation):
            builder.add(layer)


def codec_costs(config: CodecConfig, size: tuple[int, int] = REFERENCE_SIZE) -> dict[str, cm.NetworkCost]:
    """Per-part :class:`~layernas.cost_model.NetworkCost` of a codec on an HxW image:
    ``g_a``, ``h_a``, ``h_s``, ``g_s``."""
    h, w = size
    if h % 64 or w % 64:
        raise ValueError(f"size {h}x{w} must be a multiple of 64 on each side")
    n, m, nz = config.analysis_width, config.latent_channels, config.hyper_channels
    ga = cm.CostBuilder((h, w, 3))
    for i in range(3):
        ga.conv2d(f"ga{i}", n, kernel=5, stride=2, bias=True).gdn(f"ga{i}_gdn")
    ga.conv2d("ga3", m, kernel=5, stride=2, bias=True)
    ha = cm.CostBuilder((h // 16, w // 16, m))
    ha.conv2d("ha0", nz, kernel=3, bias=True).conv2d("ha1", nz, kernel=5, stride=2, bias=True)
    ha.conv2d("ha2", nz, kernel=5, stride=2, bias=True)
    hs = cm.CostBuilder((h // 64, w // 64, nz))
    _synthesis_costs("hs", hs, config.hyper_synthesis)
    hs.conv2d("hs_out", m, kernel=config.hyper_kernel, bias=True)
    gs = cm.CostBuilder((h // 16, w // 16, m))
    _synthesis_costs("gs", gs, config.synthesis)
    return {"g_a": ga.result(), "h_a": ha.result(), "h_s": hs.result(), "g_s": gs.result()}


class CodecHyperpriorSpace(NamedOptionStrings, SearchSpace):
    """The codec decoder space (see the module docstring).

    Args:
      analysis_width: N of g_a and h_a (and z's channels); 128 in Ballé 2018.
    """

    name = "codec-hyperprior"
    cost_metrics = ("decoder_madds", "decoder_gmacs", "encoder_madds", "decoder_params")

    def __init__(self, analysis_width: int = 128):
        self.analysis_width = int(analysis_width)
        self.layers = _layers()

    def config(self, arch) -> CodecConfig:
        """The :class:`CodecConfig` of an architecture."""
        arch = self.validate(arch)
        o = lambda name: self.option(arch, name)  # noqa: E731
        hs = tuple(SynthesisBlock(o(f"hs{i}_width"), o(f"hs{i}_kernel"), o(f"hs{i}_up"), "relu") for i in range(2))
        gs = tuple(SynthesisBlock(o(f"gs{i}_width"), o(f"gs{i}_kernel"), o(f"gs{i}_up"), o(f"gs{i}_act"))
                   for i in range(3))
        gs += (SynthesisBlock(3, o("gs3_kernel"), o("gs3_up"), "none"),)
        return CodecConfig(latent_channels=o("M"), analysis_width=self.analysis_width,
                           hyper_channels=self.analysis_width, synthesis=gs, hyper_synthesis=hs)

    def cost(self, arch) -> dict[str, float]:
        parts = codec_costs(self.config(arch))
        pixels = REFERENCE_SIZE[0] * REFERENCE_SIZE[1]
        dec = parts["h_s"].madds + parts["g_s"].madds
        enc = parts["g_a"].madds + parts["h_a"].madds + parts["h_s"].madds
        return {
            "decoder_madds": dec / pixels,
            "decoder_gmacs": dec / 1e9,
            "encoder_madds": enc / pixels,
            "decoder_params": float(parts["h_s"].params + parts["g_s"].params),
        }
