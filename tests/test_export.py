"""`layernas export`: a finished run's answer as JSON, trained flax weights and ONNX.

The round trip runs the ONNX file in onnxruntime and compares its logits with the JAX
model's on real CIFAR-10 images (synthetic ones when the data folder is absent).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import importlib.util

from layernas.cli import main
from layernas.search_spaces import layerwise
from layernas.trainers import export

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("jax2onnx", "onnx", "onnxruntime")),
    reason="needs the export extra (jax2onnx, onnx, onnxruntime): pip install 'layernas[export]'")

TINY_RECIPE = ["--trainer", "proxy", "--epochs", "1", "--train-per-class", "12", "--valid-per-class", "4",
               "--batch-size", "32"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_mobilenet_space() -> layerwise.LayerwiseSpace:
    """Three MBConv blocks with what trips ONNX converters: depthwise convs, hard-swish,
    squeeze-and-excite, residuals, eval-mode BatchNorm."""
    spec = layerwise.BackboneSpec(
        name="tiny-mobilenet", resolution=32, num_classes=10, stem_channels=8, stem_stride=2, stem_act="hswish",
        blocks=(
            layerwise.BlockSpec(8, 1, 1, expansion=(1.0,), depth_options=(1,), se=True, act="relu",
                                kernel_options=(3, 5), expansion_options=None, filter_options=None),
            layerwise.BlockSpec(16, 2, 2, expansion=(3.0,), depth_options=(1, 2), kernel_options=(3, 5),
                                expansion_options=None, filter_options=(0.5, 1.0)),
            layerwise.BlockSpec(16, 1, 1, kernel=5, expansion=(4.0,), depth_options=(1,), se=True, act="hswish",
                                kernel_options=None, expansion_options=None, filter_options=None),
        ),
        head_channels=32, head_act="hswish", fc_channels=(24,),
    )
    return layerwise.LayerwiseSpace(spec)


def check_images(n_per_class: int = 4) -> tuple[np.ndarray, str]:
    from tests.conftest import shared_dir

    from layernas.trainers import data as data_lib

    root = shared_dir() / "data" / "cifar10"
    if (root / "test").is_dir():
        return data_lib.load_image_folder(root, "test", per_class=n_per_class).images, "cifar10 test"
    return data_lib.synthetic_dataset(num_classes=10, per_class=n_per_class, size=32).images, "synthetic"


def trained_like_variables(model, seed: int = 0):
    """Initial variables with BatchNorm statistics, scales and biases drawn away from their
    identity values, so that eval-mode BatchNorm and every bias matter in the comparison."""
    import jax

    from layernas.trainers import train as train_lib

    rng = np.random.default_rng(seed)
    variables = train_lib.init_variables(model, (1, 32, 32, 3), seed)

    def perturb(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        leaf = np.asarray(leaf, np.float32)
        if name == "var":
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        if name in ("mean", "bias"):
            return rng.normal(0.0, 0.2, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(perturb, variables)


def tiny_space_and_model(kind: str):
    from layernas.trainers.models import build_model

    if kind == "mobilenet":
        space = tiny_mobilenet_space()
        arch = tuple(len(layer.options) - 1 for layer in space.layers)  # largest kernels, 2 layers in block 1
        return space, arch, build_model(space, arch, num_classes=10)
    from layernas.search_spaces.nats_tss import NatsTss

    space = NatsTss("cifar10")  # a reduced network: C=8, N=1; every op, the 3x3 average pool included
    arch = space.str_to_arch("|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")
    return space, arch, build_model(space, arch, num_classes=10, C=8, N=1)


@needs_onnx
@pytest.mark.parametrize("kind", ["mobilenet", "nats-tss"])
def test_round_trip_on_a_tiny_space(tmp_path, kind):
    space, arch, model = tiny_space_and_model(kind)
    variables = trained_like_variables(model)
    images, source = check_images()
    mean, std = np.array([0.49, 0.48, 0.45], np.float32), np.array([0.25, 0.24, 0.26], np.float32)
    meta = export.export_model(space, arch, model, variables, tmp_path / "out", mean=mean, std=std,
                               image_shape=(32, 32, 3), check_images=images, check_source=source,
                               model_kwargs={"C": 8, "N": 1} if kind == "nats-tss" else None,
                               registry_name="nats-tss" if kind == "nats-tss" else None,
                               extra={"dataset": "cifar10", "num_classes": 10})

    check = meta["onnx_check"]
    assert check["images"] == len(images) and check["max_abs_logit"] > 0.1  # logits worth comparing
    assert check["max_abs_diff"] < 1e-4, check
    assert meta["costs"] == space.cost(arch) and meta["arch"] == list(arch)
    # the stored record and the files agree with a fresh run of both models
    on_disk = json.loads((tmp_path / "out" / "model.json").read_text())
    assert on_disk["onnx_check"] == check and on_disk["files"] == {"weights": "variables.msgpack",
                                                                   "onnx": "model.onnx"}
    # the space comes back from its definition (mobilenet) or its registry name (nats-tss)
    reloaded = export.load_export(tmp_path / "out")
    ours = export.jax_logits(model, variables, images, mean, std)
    np.testing.assert_array_equal(reloaded.logits(images), ours)
    theirs = export.onnx_logits(tmp_path / "out" / "model.onnx", images[:3])  # another batch size
    assert np.max(np.abs(theirs - ours[:3])) < 1e-4
    if kind == "mobilenet":  # depthwise convs reach the runtime as its grouped Conv, not as slices
        import onnx

        graph = onnx.load(tmp_path / "out" / "model.onnx").graph
        groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert sum(g > 1 for g in groups) == len(model.net.layers)


@needs_onnx
def test_cli_exports_a_trained_cifar10_run_and_checks_it(tmp_path, capsys, cifar10_dir):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", "--space", "nats-sss", "--data", str(cifar10_dir), *TINY_RECIPE,
                           "--budget-evals", "1", "--quiet", "--out", str(run))
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "exported"))
    assert code == 0, err
    meta = json.loads((tmp_path / "exported" / "model.json").read_text())
    best = json.loads((run / "result.json").read_text())["best"]
    assert meta["arch"] == best["arch"] and meta["costs"] == best["costs"]
    assert meta["space"]["name"] == "nats-sss/cifar10" and meta["num_classes"] == 10
    check = meta["onnx_check"]
    assert check["images"] == 100 and check["source"].startswith("cifar10/test")
    assert check["max_abs_diff"] < 1e-4 and f"{check['max_abs_diff']:.3g}" in out
    # the input statistics are those of the child's training split (not of the test images)
    assert 0.3 < meta["input"]["mean"][0] < 0.7 and meta["source"]["recipe"]["train_per_class"] == 12
    reloaded = export.load_export(tmp_path / "exported")
    onnx_logits = export.onnx_logits(tmp_path / "exported" / "model.onnx", check_images(2)[0])
    assert np.max(np.abs(reloaded.logits(check_images(2)[0]) - onnx_logits)) < 1e-4
    # a damaged checkpoint of the child: one line, exit 2
    import shutil

    variables = run / "trainer" / "children" / meta["source"]["child"] / "variables"
    shutil.rmtree(variables)
    variables.mkdir()
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "again"))
    assert code == 2 and "damaged variables/ checkpoint" in err and len(err.strip().splitlines()) == 1, err


def test_cli_on_a_run_without_weights_is_one_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", "--space", "mobilenetv2-cifar", "--evaluator", "dry-run",
                           "--budget-evals", "3", "--quiet", "--out", str(run))
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "exported"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no trained weights" in err and "--no-weights" in err and "Traceback" not in err
    assert not (tmp_path / "exported" / "model.json").exists()
    # architecture only
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "exported"), "--no-weights")
    assert code == 0, err
    meta = json.loads((tmp_path / "exported" / "model.json").read_text())
    best = json.loads((run / "result.json").read_text())["best"]
    from layernas import registry

    space = registry.make_space("mobilenetv2-cifar")
    assert meta["arch"] == best["arch"] and meta["costs"] == space.cost(tuple(best["arch"]))
    assert meta["files"] == {"weights": None, "onnx": None} and meta["network"]["layers"]


@pytest.mark.parametrize("damage, needle", [
    (lambda run: (run / "result.json").write_text('{"best": {"arch": [0, 1'), "is not valid JSON"),
    (lambda run: (run / "result.json").unlink(), "does not exist"),
    (lambda run: (run / "result.json").write_text('{"best": {"arch": "x"}, "settings": {"space": "nats-sss"}}'),
     "best.arch"),
    (lambda run: (run / "result.json").write_text(
        '{"best": {"arch": [9, 9]}, "settings": {"space": "mobilenetv2-cifar"}}'), "is not an architecture"),
])
def test_cli_on_a_corrupt_run_dir_is_one_line_and_exit_2(tmp_path, capsys, damage, needle):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", "--space", "mobilenetv2-cifar", "--evaluator", "dry-run",
                           "--budget-evals", "2", "--quiet", "--out", str(run))
    assert code == 0, err
    damage(run)
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "exported"), "--no-weights")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_cli_on_a_missing_run_dir(tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"))
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
