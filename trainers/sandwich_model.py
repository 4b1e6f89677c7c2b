"""Sandwiched image compression (Guleryuz et al.): U-Nets around a standard codec, in flax.

A pre-processor U-Net maps the image ``x`` to a *bottleneck image* ``b = x + unet_pre(x)``
that a standard codec (baseline JPEG, 4:4:4) compresses; a post-processor U-Net restores
the decoded image: ``x_hat = x_dec + unet_post(x_dec)``. Both residual branches end in a
zero-initialized 1x1 conv, so at initialization the sandwich *is* plain JPEG and training
starts from the codec's own rate-distortion point.

In training the codec is the differentiable proxy of :mod:`layernas.trainers.jpeg_proxy`
(straight-through rounding, a log-magnitude rate proxy); the evaluation in
:mod:`layernas.trainers.sandwich_train` uses real JPEG bytes from Pillow.

The U-Net (:class:`UNet`), with per-level widths ``(w_0, ..., w_{L-1})``, all NHWC:

* encoder level i: (2x2 average pool if i > 0), 3x3 conv to ``w_i``, ReLU;
* decoder level i = L-2 .. 0: nearest x2 upsampling, concatenation with encoder level i's
  output, 3x3 conv to ``w_i``, ReLU;
* a 1x1 conv to 3 channels (zero-initialized), added to the input.

Pooling, upsampling, concatenation and the residual add cost no multiply-adds
(:mod:`layernas.search_spaces.sandwich` counts the convs). Image sides must be multiples of
``2**(L-1)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> cfg = SandwichConfig(pre_widths=(4, 8), post_widths=(4, 8), quality=50)
    >>> params = init_params(cfg, 0)
    >>> out = Sandwich(cfg).apply({"params": params}, jnp.full((1, 16, 16, 3), 0.5))
    >>> sorted(out), out["x_hat"].shape
    (['bits', 'bottleneck', 'x_dec', 'x_hat'], (1, 16, 16, 3))
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# The sandwich's shape (SandwichConfig) is pure data that lives with its search space.
from layernas.search_spaces.sandwich import SandwichConfig, SandwichSpace
from layernas.trainers.jpeg_proxy import jpeg_proxy, quant_tables
from layernas.trainers.models import register_model


def _upsample2(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
    """A small residual U-Net ``x + f(x)`` with one 3x3 conv per level and side (module docstring).

    Attributes:
      widths: channels per level, full resolution first.
    """

    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h, w = x.shape[1:3]
        m = 2 ** (len(self.widths) - 1)
        if h % m or w % m:
            raise ValueError(f"image {h}x{w}: a {len(self.widths)}-level U-Net needs sides that are multiples of {m}")
        skips, y = [], x
        for i, width in enumerate(self.widths):
            if i:
                y = nn.avg_pool(y, (2, 2), strides=(2, 2))
            y = nn.relu(nn.Conv(width, (3, 3), name=f"enc{i}")(y))
            skips.append(y)
        for i in reversed(range(len(self.widths) - 1)):
            y = jnp.concatenate([_upsample2(y), skips[i]], axis=-1)
            y = nn.relu(nn.Conv(self.widths[i], (3, 3), name=f"dec{i}")(y))
        return x + nn.Conv(3, (1, 1), kernel_init=nn.initializers.zeros, name="out")(y)


class Sandwich(nn.Module):
    """Pre U-Net -> codec -> post U-Net (module docstring).

    Attributes:
      config: the :class:`SandwichConfig`.
    """

    config: SandwichConfig

    def setup(self):
        self.pre = UNet(self.config.pre_widths)
        self.post = UNet(self.config.post_widths)

    def preprocess(self, x: jnp.ndarray) -> jnp.ndarray:
        """The bottleneck image (unclipped; the codec clips and rounds it to 8 bits)."""
        return self.pre(x)

    def postprocess(self, x_dec: jnp.ndarray) -> jnp.ndarray:
        """The restored image from a decoded one."""
        return self.post(x_dec)

    def __call__(self, x: jnp.ndarray, train: bool = False, tables=None) -> dict:
        """Run the sandwich with the JPEG proxy in the middle.

        Args:
          x: (N, H, W, 3) images in [0, 1].
          train: straight-through rounding in the proxy (gradients reach the pre U-Net).
          tables: (2, 8, 8) quantization tables overriding ``config.quality`` (a traced
            argument lets one compiled step serve every quality).
        Returns:
          ``{"bottleneck", "x_dec", "x_hat", "bits"}``: bits is the proxy rate (N,).
        """
        b = self.pre(x)
        tables = quant_tables(self.config.quality) if tables is None else tables
        x_dec, bits = jpeg_proxy(b, tables, train)
        return {"bottleneck": b, "x_dec": x_dec, "x_hat": self.post(x_dec), "bits": bits}


def sandwich_loss(out: dict, x: jnp.ndarray, lmbda) -> tuple[jnp.ndarray, dict]:
    """``lmbda * 255**2 * MSE + bpp`` with the proxy's rate, as the hyperprior's ``rd_loss``.

    Args:
      out: :class:`Sandwich` output.
      x: the (N, H, W, 3) originals in [0, 1].
      lmbda: the rate-distortion trade-off.
    Returns:
      (loss, metrics) with metrics ``loss``, ``mse``, ``bpp``, ``psnr``.
    """
    bpp = jnp.sum(out["bits"]) / (x.shape[0] * x.shape[1] * x.shape[2])
    mse = jnp.mean((out["x_hat"] - x) ** 2)
    loss = lmbda * 255.0 ** 2 * mse + bpp
    return loss, {"loss": loss, "mse": mse, "bpp": bpp, "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))}


@functools.lru_cache(maxsize=32)
def _init_fn(config: SandwichConfig):
    model = Sandwich(config)
    x = jnp.zeros((1, 8 * config.size_multiple, 8 * config.size_multiple, 3), jnp.float32)
    return jax.jit(lambda k: model.init({"params": k}, x)["params"])


def init_params(config: SandwichConfig, seed: int):
    """Parameters of ``Sandwich(config)`` from ``jax.random.key(seed)`` (one compiled init
    per architecture, cached; the parameters do not depend on the image size)."""
    return _init_fn(config)(jax.random.key(seed))


@register_model(SandwichSpace)
def build_sandwich(space: SandwichSpace, arch: Sequence[int]) -> Sandwich:
    """The :class:`Sandwich` of one architecture of the sandwich space
    (``Sandwich(space.config(arch))``)."""
    return Sandwich(space.config(arch))
