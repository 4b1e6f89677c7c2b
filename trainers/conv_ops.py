"""Convolutions XLA:CPU runs slowly, rewritten exactly as operations it runs fast.

XLA:CPU sends stride-1 convolutions to its fast convolution library, but not strided
convolutions nor transposed ones (a transposed conv is a conv over an input dilated with
zeros, so three quarters of its multiply-adds hit zeros at stride 2). This module computes
the same operations another way:

* :func:`strided_conv` (= ``lax.conv_general_dilated`` with ``window_strides=s``):
  space-to-depth of the input (each ``s x s`` block of pixels becomes ``s*s*C`` channels),
  then a stride-1 conv whose ``ceil(k/s)``-tap kernel holds the original taps, rearranged;
* :func:`conv_transpose` (= ``lax.conv_transpose`` with ``transpose_kernel=False``, what
  ``flax.linen.ConvTranspose`` computes): a stride-1 conv to ``s*s*C`` channels (one group
  of ``C`` per output phase), then depth-to-space (sub-pixel);
* :func:`depthwise_conv` (= ``lax.conv_general_dilated`` with ``feature_group_count`` equal
  to the channels, MobileNet's depthwise conv): a sum of shifted slices times per-channel
  weights, with a kernel gradient of one reduction per tap (XLA:CPU's grouped
  convolutions, and their kernel gradients most, run at a small fraction of its dense speed).

The kernels keep their usual ``HWIO`` layout (the rearrangement is a static gather inside
the function, so gradients reach the original kernel), and :class:`StridedConv`,
:class:`ConvTranspose` and :class:`DepthwiseConv` are drop-in flax modules with the
parameters of ``nn.Conv`` and ``nn.ConvTranspose`` (same names, shapes and initializers): saved parameters load into
either implementation, and the layer's multiply-adds (the transform) are unchanged.

All tensors are NHWC, kernels HWIO (``(kh, kw, in, out)``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    >>> w = jax.random.normal(jax.random.key(1), (5, 5, 3, 8))
    >>> ref = jax.lax.conv_transpose(x, w, (2, 2), "SAME")
    >>> bool(jnp.allclose(conv_transpose(x, w, 2, "SAME"), ref, atol=1e-4))
    True
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
Padding = str | Sequence[tuple[int, int]]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(a) for a in v)


def space_to_depth(x: jnp.ndarray, block: int | Sequence[int] = 2) -> jnp.ndarray:
    """``(n, h, w, c) -> (n, h/by, w/bx, by*bx*c)``; channel index ``(ry, rx, c)``.

    Args:
      x: NHWC array, ``h`` and ``w`` multiples of the block.
      block: block size, one int or ``(by, bx)``.
    Returns:
      The rearranged array (the inverse of :func:`depth_to_space`).
    """
    by, bx = _pair(block)
    n, h, w, c = x.shape
    if h % by or w % bx:
        raise ValueError(f"space_to_depth: spatial shape {h}x{w} is not a multiple of the block {by}x{bx}")
    x = x.reshape(n, h // by, by, w // bx, bx, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // by, w // bx, by * bx * c)


def depth_to_space(x: jnp.ndarray, block: int | Sequence[int] = 2) -> jnp.ndarray:
    """``(n, h, w, by*bx*c) -> (n, h*by, w*bx, c)`` (sub-pixel shuffle; channel index
    ``(ry, rx, c)``), the inverse of :func:`space_to_depth`."""
    by, bx = _pair(block)
    n, h, w, c = x.shape
    if c % (by * bx):
        raise ValueError(f"depth_to_space: {c} channels is not a multiple of the block {by}x{bx}")
    x = x.reshape(n, h, w, by, bx, c // (by * bx)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * by, w * bx, c // (by * bx))


def _crop_or_pad_spec(x: jnp.ndarray, pads: Sequence[tuple[int, int]]):
    """Crop ``x``'s spatial axes where a pad is negative; return the non-negative pads."""
    slices = [slice(None)] * x.ndim
    out = []
    for axis, (lo, hi) in zip((1, 2), pads):
        slices[axis] = slice(max(-lo, 0), x.shape[axis] - max(-hi, 0))
        out.append((max(lo, 0), max(hi, 0)))
    return x[tuple(slices)], out


def _rearranged_kernel(kernel: jnp.ndarray, taps_y: np.ndarray, taps_x: np.ndarray) -> jnp.ndarray:
    """``kernel[taps_y[l, r], taps_x[l', r']]`` with index ``k`` meaning a zero tap:
    shape ``(Ly, sy, Lx, sx, in, out)``."""
    kh, kw = kernel.shape[:2]
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    ty = np.where((taps_y >= 0) & (taps_y < kh), taps_y, kh)
    tx = np.where((taps_x >= 0) & (taps_x < kw), taps_x, kw)
    return padded[ty[:, :, None, None], tx[None, None, :, :]]


def _conv_pads(spatial, kernel, strides, padding: Padding) -> list[tuple[int, int]]:
    """``[(lo_y, hi_y), (lo_x, hi_x)]`` of "SAME"/"VALID" (as lax computes them) or of explicit pads."""
    if isinstance(padding, str):
        return [tuple(p) for p in jax.lax.padtype_to_pads(spatial, kernel, strides, padding)]
    return [tuple(int(v) for v in p) for p in padding]


def _stride1_conv(x, kernel, pads, precision):
    x, pads = _crop_or_pad_spec(x, pads)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=DIMENSION_NUMBERS,
                                        precision=precision)


# ----------------------------------------------------------------------------- strided conv
def _strided_axis_plan(n: int, k: int, s: int, lo: int, hi: int):
    """For one spatial axis: (taps [K', s], s2d length, conv pads in blocks, out length)."""
    out = (n + lo + hi - k) // s + 1
    lo_r = -(-lo // s) * s  # the front padding rounded up to whole blocks
    shift = lo_r - lo       # the kernel's taps move by this many zero taps
    taps = -(-(k + shift) // s)
    table = s * np.arange(taps)[:, None] + np.arange(s)[None, :] - shift
    n_blocks = -(-n // s)
    pad_lo = lo_r // s
    pad_hi = out - 1 + taps - n_blocks - pad_lo
    return table, n_blocks * s, (pad_lo, pad_hi), out


def strided_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: int | Sequence[int], padding: Padding = "SAME",
                 precision=None) -> jnp.ndarray:
    """``lax.conv_general_dilated(x, kernel, strides, padding)`` (NHWC, HWIO) computed as
    space-to-depth followed by a stride-1 convolution.

    Args:
      x: input ``(n, h, w, c_in)``.
      kernel: ``(kh, kw, c_in, c_out)``.
      strides: one int or ``(sy, sx)``.
      padding: "SAME", "VALID" or ``((lo_y, hi_y), (lo_x, hi_x))``, as in lax.
      precision: passed to the convolution.
    Returns:
      ``(n, h_out, w_out, c_out)``, equal to the strided convolution.
    """
    sy, sx = _pair(strides)
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    pads = _conv_pads((h, w), (kh, kw), (sy, sx), padding)
    ty, h_full, (ply, phy), out_h = _strided_axis_plan(h, kh, sy, *pads[0])
    tx, w_full, (plx, phx), out_w = _strided_axis_plan(w, kw, sx, *pads[1])
    if (sy, sx) == (1, 1):
        x_blocks = x
    else:
        x_blocks = space_to_depth(jnp.pad(x, ((0, 0), (0, h_full - h), (0, w_full - w), (0, 0))), (sy, sx))
    k6 = _rearranged_kernel(kernel, ty, tx)  # (Ly, sy, Lx, sx, in, out)
    ly, lx, c_in, c_out = k6.shape[0], k6.shape[2], k6.shape[4], k6.shape[5]
    k4 = k6.transpose(0, 2, 1, 3, 4, 5).reshape(ly, lx, sy * sx * c_in, c_out)
    y = _stride1_conv(x_blocks, k4, [(ply, phy), (plx, phx)], precision)
    return y[:, :out_h, :out_w]


# ----------------------------------------------------------------------------- transposed conv
def _transpose_axis_plan(n: int, k: int, s: int, a: int, b: int):
    """For one spatial axis of ``lax.conv_transpose`` (the dilated conv's pads ``a``, ``b``):
    (taps [L, s], conv pads, phase length M, out length)."""
    out = (n - 1) * s + 1 + a + b - k + 1
    j_min = -(a // s)
    j_max = (k - 1 - a + s - 1) // s
    table = s * (j_min + np.arange(j_max - j_min + 1))[:, None] + a - np.arange(s)[None, :]
    phase = -(-out // s)
    return table, (-j_min, phase - 1 + j_max - (n - 1)), phase, out


def conv_transpose(x: jnp.ndarray, kernel: jnp.ndarray, strides: int | Sequence[int], padding: Padding = "SAME",
                   precision=None) -> jnp.ndarray:
    """``lax.conv_transpose(x, kernel, strides, padding, transpose_kernel=False)`` (NHWC,
    HWIO; what ``flax.linen.ConvTranspose`` computes) as a stride-1 convolution to
    ``sy*sx*c_out`` channels followed by depth-to-space.

    Args:
      x: input ``(n, h, w, c_in)``.
      kernel: ``(kh, kw, c_in, c_out)``.
      strides: one int or ``(sy, sx)``.
      padding: "SAME", "VALID" or explicit pads of the dilated convolution, as in
        ``lax.conv_transpose``.
      precision: passed to the convolution.
    Returns:
      ``(n, h_out, w_out, c_out)`` (``h_out = h * sy`` for "SAME"), equal to the
      transposed convolution.
    """
    sy, sx = _pair(strides)
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    if isinstance(padding, str):
        from jax._src.lax.convolution import _conv_transpose_padding

        pads = [_conv_transpose_padding(kh, sy, padding), _conv_transpose_padding(kw, sx, padding)]
    else:
        pads = [tuple(p) for p in padding]
    ty, pad_y, phase_h, out_h = _transpose_axis_plan(h, kh, sy, *pads[0])
    tx, pad_x, phase_w, out_w = _transpose_axis_plan(w, kw, sx, *pads[1])
    k6 = _rearranged_kernel(kernel, ty, tx)  # (Ly, sy, Lx, sx, in, out)
    ly, lx, c_in, c_out = k6.shape[0], k6.shape[2], k6.shape[4], k6.shape[5]
    k4 = k6.transpose(0, 2, 4, 1, 3, 5).reshape(ly, lx, c_in, sy * sx * c_out)
    y = _stride1_conv(x, k4, [pad_y, pad_x], precision)
    if (sy, sx) != (1, 1):
        y = depth_to_space(y, (sy, sx))
    return y[:, :out_h, :out_w]


# ----------------------------------------------------------------------------- depthwise conv
def _depthwise_plan(x_shape, k_shape, strides, padding):
    """``(pads, out_h, out_w)`` of a depthwise conv, as ``lax`` computes them."""
    sy, sx = strides
    (kh, kw), (h, w) = k_shape[:2], x_shape[1:3]
    pads = _conv_pads((h, w), (kh, kw), strides, padding)
    out_h = (h + sum(pads[0]) - kh) // sy + 1
    out_w = (w + sum(pads[1]) - kw) // sx + 1
    return pads, out_h, out_w


def _depthwise_forward(x, kernel, strides, pads, out_h, out_w):
    """The sum over taps of a shifted (strided) slice of the padded input times the tap's
    per-channel weight: elementwise work XLA fuses into one loop."""
    sy, sx = strides
    kh, kw = kernel.shape[:2]
    n, c = x.shape[0], x.shape[-1]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out = None
    for dy in range(kh):
        for dx in range(kw):
            tap = jax.lax.slice(xp, (0, dy, dx, 0), (n, dy + (out_h - 1) * sy + 1, dx + (out_w - 1) * sx + 1, c),
                                (1, sy, sx, 1))
            term = tap * kernel[dy, dx, 0]
            out = term if out is None else out + term
    return out


def _depthwise_kernel_grad(x, g, k_shape, strides, pads):
    """``d loss / d kernel``: per tap, the (strided) slice of the padded input times the
    output gradient, summed over batch and space. A ``scan`` over the taps keeps XLA from
    fusing the slices into the reductions, which it runs several times slower."""
    sy, sx = strides
    kh, kw = k_shape[:2]
    n, c = x.shape[0], x.shape[-1]
    out_h, out_w = g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    size = (n, (out_h - 1) * sy + 1, (out_w - 1) * sx + 1, c)
    offsets = jnp.asarray([(dy, dx) for dy in range(kh) for dx in range(kw)], jnp.int32)

    def tap_grad(carry, offset):
        tap = jax.lax.dynamic_slice(xp, (0, offset[0], offset[1], 0), size)
        if (sy, sx) != (1, 1):
            tap = tap[:, ::sy, ::sx]
        return carry, jnp.sum(tap * g, axis=(0, 1, 2))

    _, grads = jax.lax.scan(tap_grad, None, offsets)
    return grads.reshape(kh, kw, 1, c).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, strides, padding):
    pads, out_h, out_w = _depthwise_plan(x.shape, kernel.shape, strides, padding)
    return _depthwise_forward(x, kernel, strides, pads, out_h, out_w)


def _depthwise_fwd(x, kernel, strides, padding):
    return _depthwise(x, kernel, strides, padding), (x, kernel)


def _depthwise_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    pads, out_h, out_w = _depthwise_plan(x.shape, kernel.shape, strides, padding)
    # the forward is linear in x: its input gradient is its transpose (pads and strided slices)
    x_grad = jax.linear_transpose(lambda x_: _depthwise_forward(x_, kernel, strides, pads, out_h, out_w), x)
    return x_grad(g)[0], _depthwise_kernel_grad(x, g, kernel.shape, strides, pads)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: int | Sequence[int] = 1,
                   padding: Padding = "SAME") -> jnp.ndarray:
    """``lax.conv_general_dilated(x, kernel, strides, padding, feature_group_count=c)``
    (NHWC, HWIO, one filter per channel) computed as shifted multiply-adds.

    XLA:CPU runs grouped convolutions, and above all their kernel gradient, at a small
    fraction of its dense speed; this formulation is elementwise work plus one reduction
    per tap (see ``results/perf/mobilenet_step.md``). The value and both gradients equal the
    grouped convolution's up to float summation order.

    Args:
      x: input ``(n, h, w, c)``.
      kernel: ``(kh, kw, 1, c)``, as ``nn.Conv(c, ..., feature_group_count=c)`` holds it.
      strides: one int or ``(sy, sx)``.
      padding: "SAME", "VALID" or ``((lo_y, hi_y), (lo_x, hi_x))``, as in lax.
    Returns:
      ``(n, h_out, w_out, c)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
        >>> w = jax.random.normal(jax.random.key(1), (3, 3, 1, 4))
        >>> ref = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=DIMENSION_NUMBERS,
        ...                                    feature_group_count=4)
        >>> bool(jnp.allclose(depthwise_conv(x, w, 2), ref, atol=1e-5))
        True
    """
    if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[-1]:
        raise ValueError(f"depthwise_conv: kernel shape {kernel.shape} is not (kh, kw, 1, {x.shape[-1]}) "
                         f"for an input with {x.shape[-1]} channels")
    pad_spec = padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding)
    return _depthwise(x, kernel, _pair(strides), pad_spec)


# ----------------------------------------------------------------------------- flax modules
class StridedConv(nn.Module):
    """``nn.Conv(features, kernel_size, strides, padding)`` with the same parameters
    (``kernel`` HWIO, ``bias``), computed by :func:`strided_conv`.

    Args:
      features: output channels.
      kernel_size: ``(kh, kw)``.
      strides: one int or ``(sy, sx)``.
      padding: "SAME", "VALID" or explicit pads.
      use_bias: add a bias (zeros at init).
      implementation: "space_to_depth" (this module's formulation) or "lax" (the
        strided ``lax.conv_general_dilated``, for comparisons); both are equal.
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    implementation: str = "space_to_depth"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features))
        if self.implementation == "space_to_depth":
            y = strided_conv(x, kernel, self.strides, self.padding)
        elif self.implementation == "lax":
            y = jax.lax.conv_general_dilated(x, kernel, _pair(self.strides), self.padding,
                                             dimension_numbers=DIMENSION_NUMBERS)
        else:
            raise ValueError(f"implementation {self.implementation!r} is not one of ('space_to_depth', 'lax')")
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,))
        return y


class ConvTranspose(nn.Module):
    """``nn.ConvTranspose(features, kernel_size, strides, padding)`` with the same
    parameters (``kernel`` HWIO, ``bias``), computed by :func:`conv_transpose`.

    Args:
      features: output channels.
      kernel_size: ``(kh, kw)``.
      strides: one int or ``(sy, sx)``.
      padding: "SAME", "VALID" or explicit pads of the dilated convolution.
      use_bias: add a bias (zeros at init).
      implementation: "subpixel" (this module's formulation) or "lax"
        (``lax.conv_transpose``, for comparisons); both are equal.
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    implementation: str = "subpixel"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features))
        if self.implementation == "subpixel":
            y = conv_transpose(x, kernel, self.strides, self.padding)
        elif self.implementation == "lax":
            y = jax.lax.conv_transpose(x, kernel, _pair(self.strides), self.padding,
                                       dimension_numbers=DIMENSION_NUMBERS)
        else:
            raise ValueError(f"implementation {self.implementation!r} is not one of ('subpixel', 'lax')")
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,))
        return y


class DepthwiseConv(nn.Module):
    """``nn.Conv(c, kernel_size, strides, padding, feature_group_count=c, use_bias=False)``
    with the same parameter (``kernel`` of shape ``(kh, kw, 1, c)``, same initializer),
    computed by :func:`depthwise_conv`.

    Args:
      kernel_size: ``(kh, kw)``.
      strides: one int or ``(sy, sx)``.
      padding: "SAME", "VALID" or explicit pads.
      implementation: "shifted" (this module's formulation), "lax" (the grouped
        ``lax.conv_general_dilated``) or "auto" (shifted on CPU, where it is several times
        faster, lax on accelerators, whose libraries have fast grouped convolutions); all
        are equal.
    """

    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    implementation: str = "auto"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (1, c))
        implementation = self.implementation
        if implementation == "auto":
            implementation = "shifted" if jax.default_backend() == "cpu" else "lax"
        if implementation == "shifted":
            return depthwise_conv(x, kernel, self.strides, self.padding)
        if implementation == "lax":
            return jax.lax.conv_general_dilated(x, kernel, _pair(self.strides), self.padding,
                                                dimension_numbers=DIMENSION_NUMBERS, feature_group_count=c)
        raise ValueError(f"implementation {self.implementation!r} is not one of ('auto', 'shifted', 'lax')")
