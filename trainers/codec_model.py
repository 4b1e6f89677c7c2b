"""A learned image codec in flax: the Ballé et al. 2018 scale hyperprior, made configurable.

The model (all tensors NHWC, images in [0, 1]):

* ``g_a`` (analysis): conv5 s2, GDN, conv5 s2, GDN, conv5 s2, GDN, conv5 s2 -> y (M channels);
* ``h_a`` (hyper-analysis): |y| -> conv3 s1, ReLU, conv5 s2, ReLU, conv5 s2 -> z;
* ``EntropyBottleneck``: the factorized non-parametric density of Ballé et al. 2018
  (appendix 6.1), one per channel of z;
* ``h_s`` (hyper-synthesis): z_hat -> [upsample, ReLU] x 2, conv3 s1, ReLU -> scales of y;
* ``GaussianConditional``: y ~ N(0, scale^2) convolved with U(-1/2, 1/2);
* ``g_s`` (synthesis): y_hat -> [upsample, activation] x 3, upsample -> x_hat.

The synthesis side (``g_s`` and ``h_s``) is configurable block by block: width, kernel
size, upsampling operator (transposed conv, sub-pixel conv, nearest resize + conv) and
activation (IGDN, GDN-lite, LeakyReLU), plus the latent channels M. The all-default
:class:`CodecConfig` is exactly the CompressAI ``ScaleHyperprior(N=128, M=192)``.

Quantization: additive uniform noise in training (``train=True``), hard rounding at
evaluation (``train=False``). Rate = -sum(log2 likelihoods); the RD loss is
``lmbda * 255**2 * MSE + bpp`` (:func:`rd_loss`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> cfg = CodecConfig.small(width=16, latent=16)
    >>> model = HyperpriorCodec(cfg)
    >>> x = jnp.zeros((1, 64, 64, 3))
    >>> params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]
    >>> out = model.apply({"params": params}, x, train=False)
    >>> out["x_hat"].shape
    (1, 64, 64, 3)
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The codec's shape (CodecConfig, SynthesisBlock) is pure data that lives with its search space.
from layernas.search_spaces.codec import CodecConfig, CodecHyperpriorSpace, SynthesisBlock
from layernas.trainers.conv_ops import ConvTranspose, StridedConv, depth_to_space
from layernas.trainers.models import register_model

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11  # CompressAI's lower bound on the Gaussian scales
# The image side must be a multiple of this: 4 stride-2 layers in g_a, 2 more in h_a.
SIZE_MULTIPLE = 64


# ----------------------------------------------------------------------------- non-negative parameters
@jax.custom_vjp
def lower_bound(x, bound):
    """max(x, bound) whose gradient still flows when it pushes x up from below the bound
    (CompressAI's LowerBound), so a parameter stuck at the bound can recover."""
    return jnp.maximum(x, bound)


def _lb_fwd(x, bound):
    return jnp.maximum(x, bound), (x, bound)


def _lb_bwd(res, g):
    x, bound = res
    pass_through = (x >= bound) | (g < 0)
    return (jnp.where(pass_through, g, 0.0), jnp.zeros_like(bound))


lower_bound.defvjp(_lb_fwd, _lb_bwd)

_PEDESTAL = (2.0 ** -18) ** 2


def nonneg_init(value: np.ndarray) -> np.ndarray:
    """Raw parameter whose :func:`nonneg` is ``value`` (Ballé's reparameterization)."""
    return np.sqrt(np.maximum(value + _PEDESTAL, _PEDESTAL)).astype(np.float32)


def nonneg(raw: jnp.ndarray, minimum: float = 0.0) -> jnp.ndarray:
    """Reparameterized non-negative value: lower_bound(raw, sqrt(min + p))^2 - p >= min."""
    bound = jnp.sqrt(minimum + _PEDESTAL)
    return lower_bound(raw, jnp.asarray(bound, raw.dtype)) ** 2 - _PEDESTAL


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé 2016); ``inverse=True`` gives IGDN.

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) (GDN) or x_i * sqrt(...) (IGDN),
    with beta >= 1e-6 and gamma >= 0 through :func:`nonneg`. ``diagonal=True`` is
    GDN-lite: gamma is diagonal, so it costs C multiplies per pixel instead of C^2.
    """

    inverse: bool = False
    diagonal: bool = False
    beta_min: float = 1e-6
    gamma_init: float = 0.1

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        beta = nonneg(self.param("beta", lambda k: jnp.asarray(nonneg_init(np.ones(c)))), self.beta_min)
        if self.diagonal:
            gamma = nonneg(self.param("gamma", lambda k: jnp.asarray(nonneg_init(self.gamma_init * np.ones(c)))))
            norm = beta + gamma * x * x
        else:
            gamma = nonneg(self.param("gamma", lambda k: jnp.asarray(nonneg_init(self.gamma_init * np.eye(c)))))
            norm = beta + jnp.einsum("...j,ij->...i", x * x, gamma)  # gamma[i, j]: j -> i
        return x * jnp.sqrt(norm) if self.inverse else x * jax.lax.rsqrt(norm)


def activation(name: str, inverse: bool = True) -> nn.Module | None:
    if name == "igdn":
        return GDN(inverse=inverse)
    if name == "gdn_lite":
        return GDN(inverse=inverse, diagonal=True)
    return None


def _apply_activation(name, x, inverse=True):
    if name in ("igdn", "gdn_lite"):
        return activation(name, inverse)(x)
    if name == "leaky_relu":
        return nn.leaky_relu(x, 0.01)
    if name == "relu":
        return nn.relu(x)
    return x


class Upsample(nn.Module):
    """One :class:`SynthesisBlock`: x2 upsampling to ``block.width`` channels, then its
    activation."""

    block: SynthesisBlock
    conv_impl: str = "rearranged"

    @nn.compact
    def __call__(self, x):
        b = self.block
        k = (b.kernel, b.kernel)
        if b.upsample == "deconv":
            impl = "subpixel" if self.conv_impl == "rearranged" else "lax"
            x = ConvTranspose(b.width, k, strides=(2, 2), padding="SAME", implementation=impl, name="conv")(x)
        elif b.upsample == "subpixel":
            x = depth_to_space(nn.Conv(4 * b.width, k, padding="SAME", name="conv")(x))
        else:
            n, h, w, c = x.shape
            x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "nearest")
            x = nn.Conv(b.width, k, padding="SAME", name="conv")(x)
        return _apply_activation(b.activation, x, inverse=True)


# ----------------------------------------------------------------------------- transforms
def _conv5_s2(features: int, conv_impl: str, name: str) -> nn.Module:
    """A 5x5 stride-2 'SAME' conv with ``nn.Conv``'s parameters."""
    impl = "space_to_depth" if conv_impl == "rearranged" else "lax"
    return StridedConv(features, (5, 5), strides=(2, 2), padding="SAME", implementation=impl, name=name)


class Analysis(nn.Module):
    n: int
    m: int
    conv_impl: str = "rearranged"

    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = _conv5_s2(self.n, self.conv_impl, f"conv{i}")(x)
            x = GDN(name=f"gdn{i}")(x)
        return _conv5_s2(self.m, self.conv_impl, "conv3")(x)


class HyperAnalysis(nn.Module):
    n: int
    conv_impl: str = "rearranged"

    @nn.compact
    def __call__(self, y):
        x = nn.relu(nn.Conv(self.n, (3, 3), padding="SAME", name="conv0")(jnp.abs(y)))
        x = nn.relu(_conv5_s2(self.n, self.conv_impl, "conv1")(x))
        return _conv5_s2(self.n, self.conv_impl, "conv2")(x)


class Synthesis(nn.Module):
    blocks: tuple[SynthesisBlock, ...]
    conv_impl: str = "rearranged"

    @nn.compact
    def __call__(self, y):
        x = y
        for i, block in enumerate(self.blocks):
            x = Upsample(block, self.conv_impl, name=f"up{i}")(x)
        return x


class HyperSynthesis(nn.Module):
    blocks: tuple[SynthesisBlock, ...]
    m: int
    kernel: int = 3
    conv_impl: str = "rearranged"

    @nn.compact
    def __call__(self, z):
        x = z
        for i, block in enumerate(self.blocks):
            x = Upsample(block, self.conv_impl, name=f"up{i}")(x)
        x = nn.relu(nn.Conv(self.m, (self.kernel, self.kernel), padding="SAME", name="conv_out")(x))
        return jnp.maximum(x, SCALE_BOUND)  # the scales of y


# ----------------------------------------------------------------------------- entropy models
class EntropyBottleneck(nn.Module):
    """Ballé 2018's factorized, non-parametric density, one per channel.

    Each channel's CDF is c(x) = sigmoid(f_K o ... o f_1(x)) with
    f_k(x) = softplus(H_k) x + b_k followed (k < K) by x + tanh(a_k) * tanh(x).
    Likelihood of an integer (or noisy) value v is c(v + 1/2) - c(v - 1/2).
    """

    channels: int
    filters: tuple[int, ...] = (3, 3, 3)
    init_scale: float = 10.0

    def setup(self):
        dims = (1,) + tuple(self.filters) + (1,)
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        mats, biases, factors = [], [], []
        for k in range(len(dims) - 1):
            init = float(np.log(np.expm1(1.0 / scale / dims[k + 1])))
            shape = (self.channels, dims[k + 1], dims[k])
            mats.append(self.param(f"matrix{k}", lambda key, s=shape, v=init: jnp.full(s, v)))
            biases.append(self.param(
                f"bias{k}", lambda key, s=(self.channels, dims[k + 1], 1): jax.random.uniform(key, s, minval=-0.5, maxval=0.5)))
            if k < len(dims) - 2:
                factors.append(self.param(f"factor{k}", lambda key, s=(self.channels, dims[k + 1], 1): jnp.zeros(s)))
        self.mats, self.biases, self.factors = mats, biases, factors

    def logits_cumulative(self, x):
        """x: (C, 1, n) -> logits of the CDF, (C, 1, n)."""
        return logits_cumulative(
            x, [jax.nn.softplus(m) for m in self.mats], list(self.biases),
            [jnp.tanh(f) for f in self.factors], xp=jnp)

    def __call__(self, z, train: bool, rng=None):
        """Returns (z_hat or z_tilde, likelihoods), both shaped like z (NHWC)."""
        if train:
            z_q = z + jax.random.uniform(rng, z.shape, minval=-0.5, maxval=0.5)
        else:
            z_q = jnp.round(z)
        c = z.shape[-1]
        v = jnp.moveaxis(z_q, -1, 0).reshape(c, 1, -1)
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))
        lik = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
        lik = jnp.moveaxis(lik.reshape((c,) + z.shape[:-1]), 0, -1)
        return z_q, lower_bound(lik, jnp.asarray(LIKELIHOOD_BOUND, lik.dtype))


def logits_cumulative(x, mats, biases, factors, xp=np):
    """The bottleneck's CDF logits, with parameters already made positive (``mats`` are
    softplus-ed, ``factors`` tanh-ed). ``xp`` is numpy (float64, for the coder's tables)
    or jax.numpy (training)."""
    for k, (m, b) in enumerate(zip(mats, biases)):
        x = xp.matmul(m, x) + b
        if k < len(factors):
            x = x + factors[k] * xp.tanh(x)
    return x


def gaussian_likelihood(y_q, scales):
    """P(y_q) under N(0, scales^2) convolved with U(-1/2, 1/2)."""
    v = jnp.abs(y_q)
    upper = jax.scipy.stats.norm.cdf((0.5 - v) / scales)
    lower = jax.scipy.stats.norm.cdf((-0.5 - v) / scales)
    return lower_bound(upper - lower, jnp.asarray(LIKELIHOOD_BOUND, y_q.dtype))


# ----------------------------------------------------------------------------- the codec
class HyperpriorCodec(nn.Module):
    """The scale-hyperprior codec for one :class:`CodecConfig`.

    ``__call__(x, train, rng)`` returns a dict with ``x_hat``, ``y_hat``, ``z_hat``,
    ``lik_y``, ``lik_z``. Methods ``encode_latents``, ``hyper_scales`` and ``decode``
    are the pieces the bitstream coder calls (via ``apply(..., method=...)``).
    """

    config: CodecConfig = CodecConfig()

    def setup(self):
        c = self.config
        self.g_a = Analysis(c.analysis_width, c.latent_channels, c.conv_impl)
        self.h_a = HyperAnalysis(c.hyper_channels, c.conv_impl)
        self.h_s = HyperSynthesis(c.hyper_synthesis, c.latent_channels, c.hyper_kernel, c.conv_impl)
        self.g_s = Synthesis(c.synthesis, c.conv_impl)
        self.entropy_bottleneck = EntropyBottleneck(c.hyper_channels)

    def __call__(self, x, train: bool = False, rng=None):
        if train and rng is None:
            raise ValueError("train=True needs an rng for the quantization noise")
        rz, ry = jax.random.split(rng) if train else (None, None)
        y = self.g_a(x)
        z = self.h_a(y)
        z_q, lik_z = self.entropy_bottleneck(z, train, rz)
        scales = self.h_s(z_q)
        if train:
            y_q = y + jax.random.uniform(ry, y.shape, minval=-0.5, maxval=0.5)
        else:
            y_q = jnp.round(y)
        lik_y = gaussian_likelihood(y_q, scales)
        x_hat = self.g_s(y_q)
        return {"x_hat": x_hat, "y_hat": y_q, "z_hat": z_q, "lik_y": lik_y, "lik_z": lik_z,
                "scales": scales}

    def encode_latents(self, x):
        """x -> (y, z) unquantized."""
        y = self.g_a(x)
        return y, self.h_a(y)

    def hyper_scales(self, z_hat):
        return self.h_s(z_hat)

    def decode(self, y_hat):
        return self.g_s(y_hat)


def bits(likelihoods) -> jnp.ndarray:
    """Information content in bits: -sum(log2 p)."""
    return -jnp.sum(jnp.log2(likelihoods))


def rd_loss(out: dict, x, lmbda: float) -> tuple[jnp.ndarray, dict]:
    """``lmbda * 255**2 * MSE + bpp`` for a batch (x in [0, 1]).

    Returns:
      (loss, metrics) with metrics ``mse``, ``bpp``, ``bpp_y``, ``bpp_z``, ``psnr``.
    """
    num_pixels = x.shape[0] * x.shape[1] * x.shape[2]
    bpp_y = bits(out["lik_y"]) / num_pixels
    bpp_z = bits(out["lik_z"]) / num_pixels
    mse = jnp.mean((out["x_hat"] - x) ** 2)
    bpp = bpp_y + bpp_z
    loss = lmbda * 255.0 ** 2 * mse + bpp
    psnr = -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))
    return loss, {"loss": loss, "mse": mse, "bpp": bpp, "bpp_y": bpp_y, "bpp_z": bpp_z, "psnr": psnr}


def check_image_size(h: int, w: int) -> None:
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"image size {h}x{w} must be a multiple of {SIZE_MULTIPLE} on each side")


def pad_to_multiple(x: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Edge-pad an HWC image so both sides are multiples of ``multiple``."""
    h, w = x.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="edge") if (ph or pw) else x


@functools.lru_cache(maxsize=32)
def _init_fn(config: CodecConfig):
    model = HyperpriorCodec(config)
    x = jnp.zeros((1, SIZE_MULTIPLE, SIZE_MULTIPLE, 3), jnp.float32)
    return jax.jit(lambda k: model.init({"params": k}, x, train=False)["params"])


def init_params(config: CodecConfig, seed: int):
    """Parameters of ``HyperpriorCodec(config)`` (they do not depend on the image size).
    One compiled init per architecture, cached."""
    return _init_fn(config)(jax.random.key(seed))


def count_params(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


@register_model(CodecHyperpriorSpace)
def build_codec(space: CodecHyperpriorSpace, arch: Sequence[int]) -> HyperpriorCodec:
    """The :class:`HyperpriorCodec` of one architecture of the codec space
    (``HyperpriorCodec(space.config(arch))``)."""
    return HyperpriorCodec(space.config(arch))
