"""Real bitstreams for :class:`~layernas.trainers.codec_model.HyperpriorCodec`.

``compress`` writes actual bytes with the ``constriction`` ANS coder; ``decompress``
reads them back and decodes bit-exactly to the reconstruction the encoder predicted.

Determinism (what the encoder and decoder must agree on):

* **z** (the hyper-latent) is coded per channel with a categorical model whose table is
  the entropy bottleneck's CDF evaluated in numpy float64 at the integers of a fixed
  range ``[-z_range, z_range]``; it depends only on the parameters.
* **y** is coded with a zero-mean quantized Gaussian, but the scale that ``h_s``
  predicts is first mapped to the index of a fixed table of 64 log-spaced scales
  (CompressAI's ``get_scale_table``: the smallest table scale >= the predicted one). Each
  table entry has one categorical pmf built in numpy float64, so both sides use the same
  table whatever tiny float differences ``h_s`` might show.
* Symbols outside a table's range are coded as an *escape* symbol followed by the value
  itself under a uniform 16-bit model.

``constriction`` turns the float64 probabilities into its fixed-point model in the same
deterministic way on both sides (``perfect=False``).

Stream layout: ``uint16 height, uint16 width`` (the unpadded image size), then the ANS
words (``uint32``, little endian). The model (config + parameters) is shared out of band.

Example:
    >>> coder = BitstreamCodec(config, params)                       # doctest: +SKIP
    >>> data, x_hat = coder.compress(image_uint8)                    # doctest: +SKIP
    >>> np.array_equal(coder.decompress(data), x_hat)                # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
import struct

import constriction
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr, ndtri

from layernas.trainers.codec_model import (
    SCALE_BOUND, SIZE_MULTIPLE, CodecConfig, HyperpriorCodec, logits_cumulative, pad_to_multiple)

TAIL_MASS = 1e-9
ESCAPE_BITS = 16
_ESCAPE_OFFSET = 1 << (ESCAPE_BITS - 1)
MAX_HALF_WIDTH = 2048


def scale_table(minimum: float = SCALE_BOUND, maximum: float = 256.0, levels: int = 64) -> np.ndarray:
    """CompressAI's table of log-spaced Gaussian scales."""
    return np.exp(np.linspace(np.log(minimum), np.log(maximum), levels))


def scale_indexes(scales: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the smallest table scale >= each scale (the last entry for larger ones)."""
    return np.minimum(np.searchsorted(table, scales, side="left"), len(table) - 1).astype(np.int32)


def _with_escape(pmf: np.ndarray) -> np.ndarray:
    """Append the escape symbol's probability (the mass outside the range, floored)."""
    tail = max(1.0 - float(pmf.sum()), TAIL_MASS)
    return np.append(np.maximum(pmf, 0.0), tail)


def gaussian_pmfs(table: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """For each table scale: (half width T, pmf over -T..T plus escape), float64."""
    multiplier = -ndtri(TAIL_MASS / 2)
    out = []
    for s in table:
        half = int(min(np.ceil(multiplier * s), MAX_HALF_WIDTH))
        v = np.arange(-half, half + 1, dtype=np.float64)
        pmf = ndtr((v + 0.5) / s) - ndtr((v - 0.5) / s)
        out.append((half, _with_escape(pmf)))
    return out


def bottleneck_pmfs(eb_params: dict, z_range: int) -> np.ndarray:
    """Per-channel pmf of the entropy bottleneck over -z_range..z_range plus escape,
    float64, shape (C, 2*z_range + 2)."""
    p = {k: np.asarray(v, np.float64) for k, v in eb_params.items()}
    k_layers = sum(1 for k in p if k.startswith("matrix"))
    softplus = lambda a: np.logaddexp(0.0, a)
    mats = [softplus(p[f"matrix{k}"]) for k in range(k_layers)]
    biases = [p[f"bias{k}"] for k in range(k_layers)]
    factors = [np.tanh(p[f"factor{k}"]) for k in range(k_layers - 1)]
    c = mats[0].shape[0]
    v = np.broadcast_to(np.arange(-z_range, z_range + 1, dtype=np.float64), (c, 1, 2 * z_range + 1))
    lower = logits_cumulative(v - 0.5, mats, biases, factors)
    upper = logits_cumulative(v + 0.5, mats, biases, factors)
    sign = -np.sign(lower + upper)
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))
    pmf = np.abs(sig(sign * upper) - sig(sign * lower))[:, 0, :]
    return np.stack([_with_escape(row) for row in pmf])


def _split_escapes(values: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols (value + half, or the escape index 2*half+1) and the escaped values."""
    values = values.astype(np.int64)
    outside = np.abs(values) > half
    if np.any(np.abs(values[outside]) >= _ESCAPE_OFFSET):
        raise ValueError(f"a latent value exceeds the escape range +-{_ESCAPE_OFFSET}")
    symbols = np.where(outside, 2 * half + 1, values + half).astype(np.int32)
    return symbols, values[outside]


@functools.lru_cache(maxsize=16)
def _coder_fns(config: CodecConfig):
    """Jitted (params, input) functions per architecture: encode, scales, decode."""
    model = HyperpriorCodec(config)
    fn = lambda method: jax.jit(lambda p, a: model.apply({"params": p}, a, method=method))  # noqa: E731
    return fn("encode_latents"), fn("hyper_scales"), fn("decode")


class BitstreamCodec:
    """Compress/decompress images with one trained codec.

    Args:
      config: the codec's :class:`CodecConfig`.
      params: its parameters (flax ``params`` collection).
      z_range: half width of the hyper-latent alphabet (larger values are escaped).
    """

    def __init__(self, config: CodecConfig, params, z_range: int = 64):
        self.config = config
        self.params = jax.tree_util.tree_map(np.asarray, params)
        self._encode, self._scales_fn, self._decode_fn = _coder_fns(config)
        self.z_range = int(z_range)
        self.z_models = [constriction.stream.model.Categorical(row, perfect=False)
                         for row in bottleneck_pmfs(self.params["entropy_bottleneck"], self.z_range)]
        self.table = scale_table()
        self.y_models = [(half, constriction.stream.model.Categorical(pmf, perfect=False))
                         for half, pmf in gaussian_pmfs(self.table)]
        self.escape_model = constriction.stream.model.Uniform(1 << ESCAPE_BITS)

    # ------------------------------------------------------------------ helpers
    def _y_groups(self, z_hat: np.ndarray) -> np.ndarray:
        scales = np.asarray(self._scales_fn(self.params, jnp.asarray(z_hat)))[0]
        return scale_indexes(scales.reshape(-1, scales.shape[-1]), self.table).reshape(scales.shape)

    # ------------------------------------------------------------------ API
    def compress(self, image: np.ndarray) -> tuple[bytes, np.ndarray]:
        """Encode one HxWx3 uint8 image.

        Returns:
          (the bitstream, the float32 reconstruction (H, W, 3) in [0, 1] that
          :meth:`decompress` will return, bit for bit).
        """
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
        h, w = image.shape[:2]
        if h >= 1 << 16 or w >= 1 << 16:
            raise ValueError(f"image size {h}x{w} exceeds 65535")
        x = pad_to_multiple(image.astype(np.float32) / 255.0)[None]
        y, z = self._encode(self.params, jnp.asarray(x))
        y_hat = np.round(np.asarray(y)).astype(np.int64)
        z_hat = np.round(np.asarray(z)).astype(np.int64)
        groups = self._y_groups(z_hat.astype(np.float32))

        coder = constriction.stream.stack.AnsCoder()
        # A stack: encode in the reverse of the decoding order, which is
        # z symbols, z escapes, y symbols (group by group), y escapes.
        y_flat, g_flat = y_hat[0].reshape(-1), groups.reshape(-1)
        y_parts = [_split_escapes(y_flat[g_flat == k], half) for k, (half, _) in enumerate(self.y_models)]
        z_parts = [_split_escapes(z_hat[0, ..., c].reshape(-1), self.z_range) for c in range(z_hat.shape[-1])]
        y_escapes = np.concatenate([e for _, e in y_parts])
        z_escapes = np.concatenate([e for _, e in z_parts])
        if y_escapes.size:
            coder.encode_reverse((y_escapes + _ESCAPE_OFFSET).astype(np.int32), self.escape_model)
        for k in reversed(range(len(self.y_models))):
            if y_parts[k][0].size:
                coder.encode_reverse(y_parts[k][0], self.y_models[k][1])
        if z_escapes.size:
            coder.encode_reverse((z_escapes + _ESCAPE_OFFSET).astype(np.int32), self.escape_model)
        for c in reversed(range(len(z_parts))):
            coder.encode_reverse(z_parts[c][0], self.z_models[c])
        words = coder.get_compressed().astype("<u4")
        data = struct.pack("<HH", h, w) + words.tobytes()
        x_hat = np.asarray(self._decode_fn(self.params, jnp.asarray(y_hat.astype(np.float32))))[0, :h, :w]
        return data, x_hat

    def decompress(self, data: bytes) -> np.ndarray:
        """Decode a bitstream from :meth:`compress` to the float32 HxWx3 reconstruction."""
        if len(data) < 4:
            raise ValueError(f"bitstream of {len(data)} bytes is too short for its header")
        h, w = struct.unpack("<HH", data[:4])
        words = np.frombuffer(data[4:], dtype="<u4").astype(np.uint32)
        coder = constriction.stream.stack.AnsCoder(words)
        ph, pw = h + (-h) % SIZE_MULTIPLE, w + (-w) % SIZE_MULTIPLE
        n_z = self.config.hyper_channels
        z_shape = (ph // 64, pw // 64)
        z_sym = np.stack([np.asarray(coder.decode(self.z_models[c], z_shape[0] * z_shape[1]))
                          for c in range(n_z)], axis=-1).astype(np.int64)
        # escapes were encoded channel by channel: resolve in channel-major order
        z_hat = self._resolve(coder, z_sym.T, self.z_range).T.reshape((1,) + z_shape + (n_z,))
        groups = self._y_groups(z_hat.astype(np.float32))
        g_flat = groups.reshape(-1)
        y_sym = np.zeros(g_flat.shape, np.int64)
        y_half = np.zeros(g_flat.shape, np.int64)
        for k, (half, model) in enumerate(self.y_models):
            where = np.flatnonzero(g_flat == k)
            if where.size:
                y_sym[where] = np.asarray(coder.decode(model, where.size))
                y_half[where] = half
        # escapes were encoded group by group, i.e. in the order of a stable sort by group
        order = np.argsort(g_flat, kind="stable")
        y_sorted = self._resolve(coder, y_sym[order], y_half[order])
        y_hat = np.empty_like(y_sorted)
        y_hat[order] = y_sorted
        y_hat = y_hat.reshape(groups.shape)[None].astype(np.float32)
        return np.asarray(self._decode_fn(self.params, jnp.asarray(y_hat)))[0, :h, :w]

    def _resolve(self, coder, symbols: np.ndarray, half) -> np.ndarray:
        """Symbols -> values, reading the escaped values from the stream in order."""
        half = np.broadcast_to(np.asarray(half, np.int64), symbols.shape)
        escaped = symbols == 2 * half + 1
        values = symbols - half
        if escaped.any():
            raw = np.asarray(coder.decode(self.escape_model, int(escaped.sum()))).astype(np.int64)
            values[escaped] = raw - _ESCAPE_OFFSET
        return values


def bitstream_bpp(data: bytes) -> float:
    """Bits per pixel of a stream (header included)."""
    h, w = struct.unpack("<HH", data[:4])
    return 8.0 * len(data) / (h * w)
