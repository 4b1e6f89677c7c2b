"""The reformulations of strided, transposed and depthwise convs equal lax's, forward and backward."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layernas.trainers import conv_ops
from layernas.trainers.codec_model import CodecConfig, HyperpriorCodec, SynthesisBlock, rd_loss

DN = ("NHWC", "HWIO", "NHWC")
HI = jax.lax.Precision.HIGHEST
TOL = 1e-5

# (batch, h, w, c_in, c_out, kernel, strides, padding)
CASES = [
    (2, 16, 16, 3, 8, (5, 5), (2, 2), "SAME"),     # the codec's layers
    (1, 13, 9, 4, 5, (5, 5), (2, 2), "SAME"),      # odd sizes
    (2, 17, 12, 3, 4, (3, 3), (3, 3), "VALID"),
    (1, 12, 12, 2, 3, (4, 4), (2, 2), ((1, 2), (0, 3))),
    (1, 8, 10, 2, 3, (1, 1), (2, 2), "SAME"),
    (1, 10, 10, 2, 2, (3, 3), (1, 1), "SAME"),     # stride 1: a plain conv
    (2, 9, 11, 3, 2, (5, 3), (2, 3), "SAME"),      # non-square kernel and strides
    (1, 8, 8, 6, 4, (2, 2), (4, 4), "VALID"),      # stride > kernel
]


def _random(case, seed):
    n, h, w, ci, co, k, _, _ = case
    kx, kk, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n, h, w, ci))
    kernel = jax.random.normal(kk, k + (ci, co)) / np.sqrt(k[0] * k[1] * ci)
    return x, kernel, kg


def _check_forward_and_grads(fast, ref, x, kernel, kg):
    def forward_and_grads(f):
        def go(a, b, key):
            y, vjp = jax.vjp(f, a, b)
            return y, vjp(jax.random.normal(key, y.shape))
        return jax.jit(go)

    y_ref, grads_ref = forward_and_grads(ref)(x, kernel, kg)
    y, grads = forward_and_grads(fast)(x, kernel, kg)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, atol=TOL, rtol=TOL)
    for got, want in zip(grads, grads_ref):
        np.testing.assert_allclose(got, want, atol=TOL * 10, rtol=TOL)  # sums over up to ~300 terms


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_strided_conv_equals_lax(case):
    *_, strides, padding = case
    x, kernel, kg = _random(case, 0)
    _check_forward_and_grads(
        lambda a, b: conv_ops.strided_conv(a, b, strides, padding, precision=HI),
        lambda a, b: jax.lax.conv_general_dilated(a, b, strides, padding, dimension_numbers=DN, precision=HI),
        x, kernel, kg)


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv_transpose_equals_lax(case):
    *_, strides, padding = case
    x, kernel, kg = _random(case, 1)
    _check_forward_and_grads(
        lambda a, b: conv_ops.conv_transpose(a, b, strides, padding, precision=HI),
        lambda a, b: jax.lax.conv_transpose(a, b, strides, padding, dimension_numbers=DN, precision=HI),
        x, kernel, kg)


def test_rearrangement_is_not_the_identity():
    """The kernel gather matters: a kernel with its taps flipped gives a different output."""
    x, kernel, _ = _random(CASES[0], 2)
    good = conv_ops.conv_transpose(x, kernel, 2, "SAME", precision=HI)
    flipped = conv_ops.conv_transpose(x, kernel[::-1, ::-1], 2, "SAME", precision=HI)
    ref = jax.lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=DN, precision=HI)
    assert float(jnp.abs(flipped - ref).max()) > 100 * float(jnp.abs(good - ref).max())


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (conv_ops.StridedConv, nn.Conv, {}),
    (conv_ops.ConvTranspose, nn.ConvTranspose, {}),
    (conv_ops.ConvTranspose, nn.ConvTranspose, {"use_bias": False}),
])
def test_flax_modules_match_flax_layers(ours, theirs, kwargs):
    """Same parameter tree and values at init (same names, shapes, initializers), same output."""
    x = jax.random.normal(jax.random.key(3), (2, 16, 12, 5))
    a = ours(7, (5, 5), strides=(2, 2), padding="SAME", **kwargs)
    b = theirs(7, (5, 5), strides=(2, 2), padding="SAME", **kwargs)
    pa = jax.jit(a.init)(jax.random.key(4), x)
    pb = jax.jit(b.init)(jax.random.key(4), x)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for u, v in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(u, v)
    # a non-zero bias, so the bias is checked too
    pb = jax.tree.map(lambda p: p + 0.1, pb)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(jax.jit(a.apply)(pb, x), jax.jit(b.apply)(pb, x), atol=TOL, rtol=TOL)


@pytest.mark.slow  # two codec gradient compiles: ~30 s on a quiet 2-core machine
def test_codec_rearranged_equals_lax():
    """The whole codec (every block kind): same params, same outputs, same loss gradients."""
    blocks = (SynthesisBlock(8), SynthesisBlock(8, 3, "subpixel", "gdn_lite"), SynthesisBlock(8, 5, "resize"),
              SynthesisBlock(3, 5, "deconv", "none"))
    fast = dict(latent_channels=8, analysis_width=8, hyper_channels=8, synthesis=blocks)
    cfg_fast, cfg_lax = CodecConfig(**fast), CodecConfig(**fast, conv_impl="lax")
    x = jax.random.uniform(jax.random.key(5), (2, 64, 64, 3))
    m_fast, m_lax = HyperpriorCodec(cfg_fast), HyperpriorCodec(cfg_lax)
    p_fast = jax.jit(lambda k: m_fast.init({"params": k}, x, train=False)["params"])(jax.random.key(6))
    p_lax = jax.jit(lambda k: m_lax.init({"params": k}, x, train=False)["params"])(jax.random.key(6))
    for u, v in zip(jax.tree.leaves(p_fast), jax.tree.leaves(p_lax)):
        np.testing.assert_array_equal(u, v)

    def loss(model, params):
        out = model.apply({"params": params}, x, train=True, rng=jax.random.key(7))
        return rd_loss(out, x, 0.01)[0], out

    with jax.default_matmul_precision("highest"):
        (l_fast, o_fast), g_fast = jax.jit(jax.value_and_grad(lambda p: loss(m_fast, p), has_aux=True))(p_fast)
        (l_lax, o_lax), g_lax = jax.jit(jax.value_and_grad(lambda p: loss(m_lax, p), has_aux=True))(p_fast)
    np.testing.assert_allclose(o_fast["x_hat"], o_lax["x_hat"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(l_fast, l_lax, rtol=1e-5)
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(g_fast), jax.tree.leaves(g_lax)):
        scale = float(jnp.abs(v).max()) + 1e-12
        assert float(jnp.abs(u - v).max()) <= 1e-4 * scale, jax.tree_util.keystr(path)


def test_space_to_depth_round_trip_and_bad_shapes():
    x = jax.random.normal(jax.random.key(8), (2, 6, 9, 4))
    y = conv_ops.space_to_depth(x, (2, 3))
    assert y.shape == (2, 3, 3, 24)
    np.testing.assert_array_equal(conv_ops.depth_to_space(y, (2, 3)), x)
    np.testing.assert_array_equal(y[0, 1, 2, :4], x[0, 2, 6])  # block (1, 2), offset (0, 0)
    with pytest.raises(ValueError, match="6x9 is not a multiple of the block 4x4"):
        conv_ops.space_to_depth(x, 4)
    with pytest.raises(ValueError, match="6 channels is not a multiple of the block 2x2"):
        conv_ops.depth_to_space(jnp.zeros((1, 2, 2, 6)), 2)


def test_bad_implementation_names():
    x = jnp.zeros((1, 8, 8, 2))
    with pytest.raises(ValueError, match="implementation 'fft'"):
        conv_ops.StridedConv(3, (3, 3), 2, implementation="fft").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="conv_impl 'fft' is not one of"):
        CodecConfig(conv_impl="fft")


# (batch, h, w, channels, kernel, strides, padding): MobileNet's depthwise layers and edge cases
DEPTHWISE_CASES = [
    (2, 16, 16, 8, (3, 3), (1, 1), "SAME"),
    (2, 16, 16, 8, (3, 3), (2, 2), "SAME"),
    (1, 9, 9, 6, (5, 5), (2, 2), "SAME"),       # odd size, stride 2: uneven SAME pads
    (2, 8, 8, 4, (7, 7), (1, 1), "SAME"),       # kernel about the size of the input
    (1, 11, 7, 3, (3, 5), (2, 1), "SAME"),      # non-square
    (1, 10, 10, 5, (3, 3), (3, 3), "VALID"),
    (1, 8, 8, 2, (3, 3), (1, 1), ((2, 0), (1, 3))),
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=[str(i) for i in range(len(DEPTHWISE_CASES))])
def test_depthwise_conv_equals_grouped_lax(case):
    n, h, w, c, k, strides, padding = case
    kx, kk, kg = jax.random.split(jax.random.key(10), 3)
    x = jax.random.normal(kx, (n, h, w, c))
    kernel = jax.random.normal(kk, k + (1, c)) / np.sqrt(k[0] * k[1])
    _check_forward_and_grads(
        lambda a, b: conv_ops.depthwise_conv(a, b, strides, padding),
        lambda a, b: jax.lax.conv_general_dilated(a, b, strides, padding, dimension_numbers=DN, precision=HI,
                                                  feature_group_count=c),
        x, kernel, kg)


def test_depthwise_kernel_taps_are_not_interchangeable():
    """Each tap's weight multiplies its own shift: a flipped kernel gives another output and gradient."""
    x = jax.random.normal(jax.random.key(11), (1, 8, 8, 3))
    kernel = jax.random.normal(jax.random.key(12), (3, 3, 1, 3))
    ref = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=DN, feature_group_count=3)
    flipped = conv_ops.depthwise_conv(x, kernel[::-1, ::-1], 2)
    assert float(jnp.abs(flipped - ref).max()) > 0.1
    g = jax.grad(lambda k: jnp.sum(conv_ops.depthwise_conv(x, k, 2) * ref))(kernel)
    g_ref = jax.grad(lambda k: jnp.sum(jax.lax.conv_general_dilated(
        x, k, (2, 2), "SAME", dimension_numbers=DN, feature_group_count=3) * ref))(kernel)
    np.testing.assert_allclose(g, g_ref, atol=1e-4, rtol=1e-5)
    assert float(jnp.abs(g[::-1, ::-1] - g_ref).max()) > 0.1


@pytest.mark.parametrize("implementation", ["shifted", "lax", "auto"])
def test_depthwise_module_matches_grouped_flax_conv(implementation):
    """Same parameter (name, shape, initializer) as nn.Conv with feature_group_count, same output."""
    x = jax.random.normal(jax.random.key(13), (2, 9, 9, 6))
    ours = conv_ops.DepthwiseConv((5, 5), 2, implementation=implementation)
    theirs = nn.Conv(6, (5, 5), 2, padding="SAME", feature_group_count=6, use_bias=False)
    pa, pb = jax.jit(ours.init)(jax.random.key(14), x), jax.jit(theirs.init)(jax.random.key(14), x)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    np.testing.assert_array_equal(pa["params"]["kernel"], pb["params"]["kernel"])
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(jax.jit(ours.apply)(pb, x), jax.jit(theirs.apply)(pb, x), atol=TOL, rtol=TOL)


def test_depthwise_bad_kernel_and_implementation():
    x = jnp.zeros((1, 8, 8, 4))
    with pytest.raises(ValueError, match=r"kernel shape \(3, 3, 2, 4\) is not \(kh, kw, 1, 4\)"):
        conv_ops.depthwise_conv(x, jnp.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match="implementation 'fft' is not one of"):
        conv_ops.DepthwiseConv((3, 3), implementation="fft").init(jax.random.key(0), x)


@pytest.mark.slow  # ~30 s: two whole-network gradient compiles (the layer tests above run by default)
def test_mobilenet_depthwise_implementations_agree():
    """A whole MobileNetV2-CIFAR child: same parameters, logits and loss gradients either way."""
    from layernas.search_spaces.mobilenet_v2 import mobilenet_v2_cifar
    from layernas.trainers import mbconv_model

    space = mobilenet_v2_cifar(width=0.25)
    arch = tuple(len(layer.options) - 1 if "kernel" in layer.name else layer.default for layer in space.layers)
    x = jax.random.normal(jax.random.key(15), (2, 32, 32, 3))
    models = {impl: mbconv_model.MobileNet(space.resolve(arch), depthwise=impl) for impl in ("shifted", "lax")}
    variables = jax.jit(lambda k: models["lax"].init(k, x, train=False))(jax.random.key(16))
    shifted_vars = jax.jit(lambda k: models["shifted"].init(k, x, train=False))(jax.random.key(16))
    for u, v in zip(jax.tree.leaves(variables), jax.tree.leaves(shifted_vars)):
        np.testing.assert_array_equal(u, v)

    def loss(model, params):  # BatchNorm in inference mode: batch statistics of 2 images amplify rounding
        logits = model.apply({**variables, "params": params}, x, train=False)
        return jnp.sum(jax.nn.log_softmax(logits)[:, 3]), logits

    with jax.default_matmul_precision("highest"):
        out = {impl: jax.jit(jax.value_and_grad(lambda p, m=m: loss(m, p), has_aux=True))(variables["params"])
               for impl, m in models.items()}
    (l_s, logits_s), g_s = out["shifted"]
    (l_l, logits_l), g_l = out["lax"]
    np.testing.assert_allclose(logits_s, logits_l, atol=1e-4, rtol=1e-4)
    scale = max(float(jnp.abs(v).max()) for v in jax.tree.leaves(g_l))
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(g_s), jax.tree.leaves(g_l)):
        assert float(jnp.abs(u - v).max()) <= 1e-4 * scale, jax.tree_util.keystr(path)
