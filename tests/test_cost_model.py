"""Layer-level MAdds/params counting (layernas.cost_model)."""

import pytest

from layernas import cost_model as cm


def test_conv_counts_and_shapes():
    c = cm.conv2d("c", (224, 224, 3), 32, kernel=3, stride=2)
    assert c.out_shape == (112, 112, 32)
    assert c.madds == 112 * 112 * 3 * 3 * 3 * 32
    assert c.params == 3 * 3 * 3 * 32
    assert cm.conv2d("c", (8, 8, 4), 6, kernel=1, bias=True).params == 4 * 6 + 6


def test_depthwise_and_grouped():
    d = cm.depthwise_conv2d("dw", (56, 56, 144), kernel=5, stride=2)
    assert d.kind == "dwconv2d" and d.out_shape == (28, 28, 144)
    assert d.madds == 28 * 28 * 25 * 144 and d.params == 25 * 144
    g = cm.conv2d("g", (10, 10, 8), 16, kernel=3, groups=4)
    assert g.madds == 100 * 9 * 2 * 16 and g.params == 9 * 2 * 16
    with pytest.raises(ValueError, match="groups=3"):
        cm.conv2d("bad", (10, 10, 8), 16, groups=3)


def test_odd_sizes_same_and_valid_padding():
    assert cm.conv2d("c", (7, 7, 8), 8, kernel=3, stride=2).out_shape == (4, 4, 8)
    assert cm.conv2d("c", (7, 7, 8), 8, kernel=3, stride=2, padding="VALID").out_shape == (3, 3, 8)
    assert cm.pool2d("p", (7, 7, 8), window=2).out_shape == (3, 3, 8)


def test_zero_madd_layers():
    for layer in [
        cm.batch_norm("bn", (4, 4, 16)),
        cm.activation("a", (4, 4, 16), "hswish"),
        cm.global_pool("gap", (4, 4, 16)),
        cm.residual_add("add", (4, 4, 16)),
    ]:
        assert layer.madds == 0
    assert cm.batch_norm("bn", (4, 4, 16)).params == 32
    with pytest.raises(ValueError, match="activation 'mish'"):
        cm.activation("a", (4, 4, 16), "mish")


def test_dense_and_se():
    assert cm.dense("fc", (1280,), 1000).madds == 1_280_000
    assert cm.dense("fc", (1280,), 1000).params == 1_281_000
    se = cm.squeeze_excite("se", (14, 14, 72), 24)
    assert se.madds == 2 * 72 * 24 and se.params == 2 * 72 * 24 + 24 + 72
    with pytest.raises(ValueError, match=r"not \(C,\)"):
        cm.dense("fc", (7, 7, 10), 10)


def test_transposed_conv_counts_per_input_pixel():
    t = cm.conv_transpose2d("up", (16, 16, 192), 128, kernel=5, stride=2)
    assert t.out_shape == (32, 32, 128)
    assert t.madds == 16 * 16 * 25 * 192 * 128  # not 32*32*...: per input pixel
    assert t.params == 25 * 192 * 128 + 128


def test_gdn_subpixel_resize():
    g = cm.gdn("igdn", (32, 32, 128), inverse=True)
    assert g.kind == "igdn" and g.madds == 32 * 32 * 128 * 128 and g.params == 128 * 128 + 128
    s = cm.subpixel_conv2d("sp", (16, 16, 64), 32, kernel=3, upscale=2)
    assert s.out_shape == (32, 32, 32) and s.madds == 16 * 16 * 9 * 64 * 128
    r = cm.resize_conv2d("rc", (16, 16, 64), 32, kernel=3, upscale=2)
    assert r.in_shape == (16, 16, 64) and r.out_shape == (32, 32, 32) and r.madds == 32 * 32 * 9 * 64 * 32


def test_hyperprior_decoder_macs_per_pixel():
    """The Balle 2018 hyperprior (N=128, M=192; arXiv:1802.01436) decoder costs 43.5k MAC
    per pixel with transposed convs counted per input pixel."""
    n, m, h, w = 128, 192, 256, 256
    b = cm.CostBuilder((h // 64, w // 64, n))  # hyper-decoder h_s
    b.conv_transpose2d("hs1", n).activation("r1", "relu").conv_transpose2d("hs2", n).activation("r2", "relu")
    b.conv2d("hs3", m, kernel=3, bias=True)
    b.add(cm.conv_transpose2d("gs1", (h // 16, w // 16, m), n)).gdn("igdn1", inverse=True)
    b.conv_transpose2d("gs2", n).gdn("igdn2", inverse=True).conv_transpose2d("gs3", n).gdn("igdn3", inverse=True)
    b.conv_transpose2d("gs4", 3)
    net = b.result()
    assert net.out_shape == (h, w, 3)
    assert net.madds / (h * w) == pytest.approx(43.5e3, rel=0.002)


def test_builder_totals_and_table():
    b = cm.CostBuilder((32, 32, 3)).conv2d("c1", 16).batch_norm("bn").activation("a", "relu")
    b.global_pool("gap").dense("fc", 10)
    net = b.result()
    assert net.madds == 32 * 32 * 27 * 16 + 160
    assert net.params == 27 * 16 + 32 + 170
    assert net.out_shape == (10,)
    text = net.table()
    assert "total" in text and f"{net.madds:,}" in text
    assert net.by_prefix()["c1"]["madds"] == 32 * 32 * 27 * 16
