"""A differentiable JPEG proxy in ``jax.numpy``, and the real codec (Pillow) it stands in for.

The proxy follows baseline JPEG (ITU-T T.81, as libjpeg implements it) step by step:

1. the RGB image in [0, 1] is clipped and rounded to 8 bits (what an encoder receives);
2. RGB -> YCbCr with the JFIF matrix (full range, chroma offset 128);
3. **4:4:4**: no chroma subsampling (the real codec is called with ``subsampling=0`` to match);
4. each channel, level-shifted by -128, is cut into 8x8 blocks (the image is edge-padded to a
   multiple of 8, as libjpeg does) and transformed by the orthonormal 8x8 DCT-II, written as
   two matrix products ``D @ block @ D.T`` (this is exactly JPEG's FDCT scaling);
5. quantization by the IJG (Annex K) luma/chroma tables scaled by the quality exactly as
   libjpeg's ``jpeg_quality_scaling`` and ``jpeg_add_quant_table(force_baseline=TRUE)`` do
   (:func:`quant_tables`; the test checks them against the tables Pillow writes);
6. dequantization, inverse DCT, YCbCr -> RGB, clip to [0, 255] and round to 8 bits.

**Rounding** (steps 1, 5, 6): evaluation (``train=False``) rounds hard. Training
(``train=True``) uses the *straight-through estimator*: the forward pass still rounds (so the
training forward pass is exactly the evaluation one, and the distortion the networks are
trained on is the proxy's real quantization error, including JPEG's dead zone), while the
backward pass treats rounding as the identity. Additive uniform noise was not used: it
models the error of a coefficient quantized to zero as q^2/12 regardless of its size, which
is far from the truth at the low qualities the sandwich targets.

**Rate proxy** (:func:`rate_bits`): a log-magnitude surrogate for JPEG's Huffman coding of
the quantized coefficients ``k``. Baseline JPEG spends on each non-zero coefficient about
``log2|k| + 1`` magnitude bits plus a (run, size) Huffman symbol, and codes DC as the
difference from the previous block's DC. The proxy is::

    bits = RATE_PER_LOG * sum(log2(1 + |k_ac|)) + RATE_PER_LOG * sum(log2(1 + |dDC|))
           + RATE_PER_NONZERO * count(k != 0) + RATE_PER_BLOCK * blocks

summed over the three channels, where ``dDC`` is the difference of each block's DC from
the previous block's in raster order. The constants were fitted by least squares to
Pillow's entropy-coded byte count (the bytes after the SOS header) on crops of the
*training* photos at qualities 5..95 (``benchmarks/sandwich_proxy.py --fit``); Kodak was not
used. The count is written ``sum(min(|k|, 1))``: the same value on integers, and through the
straight-through estimator it passes a gradient at ``|k| = 1``, the coefficients a small push
can zero; the log terms pass a gradient for every non-zero coefficient. The ~620-byte JPEG header (tables and
markers) is not part of the proxy: it does not depend on the image.

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.full((1, 16, 16, 3), 0.5)
    >>> x_hat, bits = jpeg_proxy(x, quant_tables(75))
    >>> x_hat.shape, bits.shape
    ((1, 16, 16, 3), (1,))
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from layernas.search_spaces.sandwich import check_quality

BLOCK = 8
# ITU-T T.81 Annex K, tables K.1 and K.2 (natural row-major order), as in libjpeg's jcparam.c.
LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64).reshape(8, 8)
CHROMA_TABLE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99], dtype=np.int64).reshape(8, 8)

# JFIF RGB -> YCbCr (rows: Y, Cb, Cr); Cb and Cr get +128.
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                         [-0.168735892, -0.331264108, 0.5],
                         [0.5, -0.418687589, -0.081312411]], dtype=np.float64)
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)

# Rate-proxy constants (see the module docstring; fitted by benchmarks/sandwich_proxy.py --fit).
# 187 centre 256x256 crops of 17 training photos x 11 qualities: median relative error 1.3 %,
# max 8.2 %.
RATE_PER_LOG = 1.928
RATE_PER_NONZERO = 1.985
RATE_PER_BLOCK = 4.752


def quality_scale(quality: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: quality 1..100 -> a percentage scale of the tables.

    Args:
      quality: the JPEG quality, an integer in 1..100.
    Returns:
      ``5000 // quality`` below 50, else ``200 - 2 * quality`` (50 -> 100 %, 100 -> 0 %).
    Raises:
      ValueError: a quality outside 1..100 or not an integer.
    """
    quality = check_quality(quality)
    return 5000 // int(quality) if quality < 50 else 200 - 2 * int(quality)


def quant_tables(quality: int) -> np.ndarray:
    """The luma and chroma quantization tables libjpeg (and so Pillow) writes at ``quality``.

    Each entry is ``(base * scale + 50) // 100`` clipped to 1..255 (``force_baseline``).

    Args:
      quality: an integer in 1..100.
    Returns:
      float32 array (2, 8, 8): ``[luma, chroma]`` in natural (row-major) order.
    """
    scale = quality_scale(quality)
    tables = [np.clip((t * scale + 50) // 100, 1, 255) for t in (LUMA_TABLE, CHROMA_TABLE)]
    return np.stack(tables).astype(np.float32)


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal n-point DCT-II matrix ``D`` (``D @ D.T = I``); a block's 2-D DCT is
    ``D @ block @ D.T``. For n = 8 this is JPEG's FDCT."""
    k, i = np.mgrid[0:n, 0:n]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


DCT = dct_matrix()


def _round(x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Hard rounding; with ``train`` a straight-through estimator (identity gradient)."""
    if train:
        return x + jax.lax.stop_gradient(jnp.round(x) - x)
    return jnp.round(x)


def _blocks(x: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, C) -> (N, C, H/8, W/8, 8, 8); H and W are multiples of 8."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK, c)
    return x.transpose(0, 5, 1, 3, 2, 4)


def _unblocks(b: jnp.ndarray) -> jnp.ndarray:
    """Inverse of :func:`_blocks`."""
    n, c, bh, bw, _, _ = b.shape
    return b.transpose(0, 2, 4, 3, 5, 1).reshape(n, bh * BLOCK, bw * BLOCK, c)


def dct_coefficients(x: jnp.ndarray, tables, train: bool = False) -> jnp.ndarray:
    """The quantized DCT coefficients ``k`` of a batch (steps 1-5 of the module docstring).

    Args:
      x: float (N, H, W, 3) RGB in [0, 1]; H and W are multiples of 8.
      tables: (2, 8, 8) quantization tables from :func:`quant_tables`.
      train: straight-through rounding instead of hard rounding.
    Returns:
      (N, 3, H/8, W/8, 8, 8): the quantized coefficients (integers in value) of Y, Cb, Cr.
    """
    rgb = _round(jnp.clip(x, 0.0, 1.0) * 255.0, train)
    ycc = rgb @ jnp.asarray(RGB_TO_YCBCR.T, jnp.float32) + jnp.array([0.0, 128.0, 128.0])
    ycc = _round(ycc, train) - 128.0  # libjpeg's colour converter outputs 8-bit samples
    d = jnp.asarray(DCT)
    coef = d @ _blocks(ycc) @ d.T
    q = jnp.asarray(tables, jnp.float32)[jnp.array([0, 1, 1])][None, :, None, None]
    return _round(coef / q, train)


def rate_bits(k: jnp.ndarray) -> jnp.ndarray:
    """The rate proxy (module docstring) of quantized coefficients, in bits per image.

    Args:
      k: (N, 3, BH, BW, 8, 8) quantized coefficients from :func:`dct_coefficients`.
    Returns:
      (N,) estimated bits of the entropy-coded data.
    """
    n, c, bh, bw = k.shape[:4]
    ac = k.reshape(n, c, bh * bw, 64)[..., 1:]
    dc = k[..., 0, 0].reshape(n, c, bh * bw)
    ddc = jnp.diff(dc, axis=-1, prepend=jnp.zeros_like(dc[..., :1]))
    logs = jnp.sum(jnp.log2(1.0 + jnp.abs(ac)), axis=(1, 2, 3)) + jnp.sum(jnp.log2(1.0 + jnp.abs(ddc)), axis=(1, 2))
    # min(|k|, 1) is the non-zero indicator on integers; through the straight-through
    # estimator it also passes a gradient at |k| = 1 (the coefficients a push can zero).
    nonzero = jnp.sum(jnp.minimum(jnp.abs(ac), 1.0), axis=(1, 2, 3))
    return RATE_PER_LOG * logs + RATE_PER_NONZERO * nonzero + RATE_PER_BLOCK * (c * bh * bw)


def decode_coefficients(k: jnp.ndarray, tables, train: bool = False) -> jnp.ndarray:
    """Dequantize, inverse DCT and convert back to RGB (step 6).

    Args:
      k: (N, 3, BH, BW, 8, 8) quantized coefficients.
      tables: the (2, 8, 8) tables they were quantized with.
      train: straight-through rounding of the output pixels.
    Returns:
      float (N, 8*BH, 8*BW, 3) RGB in [0, 1], on the 8-bit grid.
    """
    d = jnp.asarray(DCT)
    q = jnp.asarray(tables, jnp.float32)[jnp.array([0, 1, 1])][None, :, None, None]
    ycc = _unblocks(d.T @ (k * q) @ d) + 128.0
    ycc = _round(jnp.clip(ycc, 0.0, 255.0), train)  # the IDCT outputs 8-bit samples
    rgb = (ycc - jnp.array([0.0, 128.0, 128.0])) @ jnp.asarray(YCBCR_TO_RGB.T, jnp.float32)
    return _round(jnp.clip(rgb, 0.0, 255.0), train) / 255.0


def jpeg_proxy(x: jnp.ndarray, tables, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """JPEG (4:4:4) encode + decode and its estimated rate, differentiable with ``train``.

    Args:
      x: float (N, H, W, 3) RGB in [0, 1]; any H, W (edge-padded to multiples of 8 inside,
        cropped back after).
      tables: (2, 8, 8) quantization tables, ``quant_tables(quality)``. An argument rather
        than the quality so that one jitted function serves every quality.
      train: straight-through rounding (gradients flow) instead of hard rounding. The
        forward values are identical either way.
    Returns:
      ``(x_hat, bits)``: the decoded image (N, H, W, 3) in [0, 1] and the rate proxy (N,)
      in bits per image (entropy-coded data, no header).
    """
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"image batch of shape {tuple(x.shape)}: expected (N, H, W, 3)")
    h, w = x.shape[1:3]
    ph, pw = -h % BLOCK, -w % BLOCK
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    k = dct_coefficients(x, tables, train)
    x_hat = decode_coefficients(k, tables, train)[:, :h, :w]
    return x_hat, rate_bits(k)


# ----------------------------------------------------------------------------- the real codec
def jpeg_encode(image: np.ndarray, quality: int) -> bytes:
    """Real baseline JPEG bytes from Pillow (libjpeg), 4:4:4 like the proxy.

    Args:
      image: (H, W, 3) uint8 RGB.
      quality: 1..100.
    Returns:
      the complete JFIF file as bytes (header included).
    """
    quality_scale(quality)  # validates
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image of dtype {image.dtype} and shape {image.shape}: expected (H, W, 3) uint8")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()


def jpeg_decode(data: bytes) -> np.ndarray:
    """Decode JPEG bytes with Pillow to an (H, W, 3) uint8 RGB array."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def payload_bytes(data: bytes) -> int:
    """Bytes of the entropy-coded data: everything after the SOS segment, minus the EOI marker.

    Args:
      data: a baseline JPEG file with one scan.
    Returns:
      the byte count the rate proxy estimates (the rest is the image-independent header).
    """
    sos = data.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("JPEG data without an SOS marker (0xFFDA)")
    length = int.from_bytes(data[sos + 2:sos + 4], "big")
    return len(data) - (sos + 2 + length) - 2
