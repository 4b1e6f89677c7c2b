"""``--data`` means the same for every trained space: the codec spaces train on it (and
score on ``--valid-data`` or the last 8 of it), and a missing, unreadable or bad folder is a
one-line error with exit code 2 before any child trains. Images of one constant colour train
with finite inputs."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from layernas.cli import build_parser, config_from_args, main
from layernas.trainers import data, train
from layernas.trainers.data_checks import load_photo_split

CODEC_FAST = ["--target-decoder-gmacs", "16.5", "--lambda", "0.0067", "--width-scale", "0.0625",
              "--proxy-steps", "2", "--budget-evals", "1", "--quiet"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _photos(folder, n=10, size=(160, 136), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _evaluator(*argv):
    argv = ["search", *map(str, argv)]
    args = build_parser(argv).parse_args(argv)
    config = config_from_args(args)
    return config.make_evaluator(config.make_space())


def test_codec_evaluator_trains_on_data_and_holds_out_its_last_8(tmp_path):
    photos = _photos(tmp_path / "photos", n=11)
    ev = _evaluator("--space", "codec-hyperprior", "--data", photos)
    files = sorted(photos.glob("*.png"))
    assert len(ev.train_images) == 3 and ev.val_images.shape == (8, 128, 128, 3)
    np.testing.assert_array_equal(ev.train_images[0], np.asarray(Image.open(files[0])))
    # --valid-data: every photo of --data trains, the other folder scores
    valid = _photos(tmp_path / "valid", n=2, size=(200, 192), seed=1)
    ev = _evaluator("--space", "codec-sandwich", "--data", photos, "--valid-data", valid)
    assert len(ev.train_images) == 11 and ev.val_images.shape == (2, 192, 192, 3)


@pytest.mark.slow  # ~40-170 s on 2 busy cores; tests/test_cli.py and test_sandwich.py search with --data by default
@pytest.mark.parametrize("space", ["codec-hyperprior", "codec-sandwich"])
def test_codec_search_honours_data(space, tmp_path, capsys):
    photos = _photos(tmp_path / "photos", n=10, size=(200, 192))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", "--space", space, "--data", photos, *CODEC_FAST,
                           *(["--target-decoder-gmacs", "12"] if space == "codec-sandwich" else []),
                           "--out", out)
    assert code == 0, err
    rows = json.loads((out / "checkpoint.json").read_text())["history"]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["reward"] < 0


def _bad_photo_folders(tmp_path):
    good = lambda name: _photos(tmp_path / name, n=10)  # noqa: E731
    corrupt = good("corrupt")
    (corrupt / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    small = good("small")
    Image.new("RGB", (40, 200), (9, 9, 9)).save(small / "000.png")
    small_valid = good("small_valid")
    Image.new("RGB", (100, 100), (9, 9, 9)).save(small_valid / "009.png")  # a held-out photo below 128
    kodak = good("kodak")
    Image.new("RGB", (64, 64)).save(kodak / "kodim03.png")
    few = _photos(tmp_path / "few", n=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file.png"
    Image.new("RGB", (64, 64)).save(a_file)
    return [
        (tmp_path / "does-not-exist", "no such folder"),
        (a_file, "is not a folder"),
        (empty, "has no .png photos"),
        (few, "has 8 photos; need more than 8"),
        (corrupt, f"cannot read image {corrupt / '005.png'}"),
        (small, f"{small / '000.png'} is 40x200 pixels; training photos must be at least 64"),
        (small_valid, f"{small_valid / '009.png'} is 100x100 pixels; held-out photos must be at least 128"),
        (kodak, "kodim03.png in --data is a Kodak image"),
    ]


def test_bad_codec_data_is_one_line_before_any_child_trains(tmp_path, capsys):
    for folder, needle in _bad_photo_folders(tmp_path):
        out = tmp_path / f"run-{folder.name}"
        code, _, err = run_cli(capsys, "search", "--space", "codec-hyperprior", "--data", folder, *CODEC_FAST,
                               "--out", out)
        assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (folder, err)
        assert not out.exists()  # refused before the search started


def test_codec_space_without_data_is_refused(capsys):
    code, _, err = run_cli(capsys, "search", "--space", "codec-sandwich", *CODEC_FAST)
    assert code == 2 and "pass --data DIR" in err and "prepare-data photos" in err
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--valid-data", "x", "--budget-evals", "1")
    assert code == 2 and "--valid-data 'x': applies to --space codec-hyperprior or codec-sandwich" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder whatever its permissions")
def test_unreadable_data_is_refused(tmp_path, capsys):
    photos = _photos(tmp_path / "photos", n=10)
    photos.chmod(0)
    try:
        code, _, err = run_cli(capsys, "search", "--space", "codec-hyperprior", "--data", photos, *CODEC_FAST,
                               "--out", tmp_path / "run")
        assert code == 2 and "cannot be read" in err
    finally:
        photos.chmod(0o755)


def test_the_issue_command_exits_2(capsys):
    code, _, err = run_cli(capsys, "search", "--space", "codec-hyperprior", "--data", "/does/not/exist",
                           "--budget-evals", "1")
    assert code == 2 and err == ("layernas: error: --data /does/not/exist: no such folder; expected a folder of "
                                 ".png photos (make one with `layernas prepare-data photos SRC --out DIR`, "
                                 "see docs/data.md)\n")


# ----------------------------------------------------------------------- image classifiers
def _image_folder(root, per_class=4, size=(32, 32), classes=("a", "b")):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "train" / name / f"{i}.png")
    return root


CLASSIFIER = ["search", "--space", "mobilenetv2-cifar", "--target-madds", "100M", "--trainer", "proxy",
              "--epochs", "1", "--batch-size", "4", "--train-per-class", "4", "--valid-per-class", "1",
              "--budget-evals", "2", "--quiet"]


def test_bad_classifier_data_is_one_line_before_any_child_trains(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    mixed = _image_folder(tmp_path / "mixed")
    Image.new("L", (32, 32)).save(mixed / "train" / "a" / "0.png")           # grayscale: converted, fine
    Image.new("RGBA", (32, 32)).save(mixed / "train" / "a" / "1.png")        # RGBA: converted, fine
    Image.new("RGB", (40, 32)).save(mixed / "train" / "b" / "2.png")         # another size: refused
    corrupt = _image_folder(tmp_path / "corrupt")
    (corrupt / "train" / "b" / "3.png").write_bytes(b"not a png at all")
    no_train = tmp_path / "no_train"
    (no_train / "test").mkdir(parents=True)
    no_classes = tmp_path / "no_classes"
    (no_classes / "train").mkdir(parents=True)
    for folder, needle in [
        (tmp_path / "missing", "no such folder; expected an image folder"),
        (no_train, "no folder"),
        (no_classes, "has no class sub-folders"),
        (mixed, f"different sizes: {mixed / 'train' / 'b' / '2.png'} is 40x32"),
        (corrupt, f"cannot read image {corrupt / 'train' / 'b' / '3.png'}"),
    ]:
        out = tmp_path / f"run-{folder.name}"
        code, _, err = run_cli(capsys, *CLASSIFIER, "--data", folder, "--out", out)
        assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (folder, err)
        assert not (out / "history.csv").exists()


def test_constant_colour_images_normalise_to_finite_inputs_and_train():
    images = np.full((2, 4, 4, 3), 77, np.uint8)
    mean, std = data.ImageDataset(images, np.zeros(2, np.int32), ("a",)).channel_stats()
    assert np.all(std < data.MIN_STD)  # 0, or a rounding residue of ~1e-17
    x = data.normalize(jnp.asarray(images), mean, std)
    assert bool(jnp.all(jnp.isfinite(x))) and float(jnp.abs(x).max()) < 1e-3
    assert bool(jnp.all(data.normalize(jnp.asarray(images), mean, np.zeros(3, np.float32)) == 0))
    # a real training run on a one-colour-per-class dataset: finite loss, status ok
    from test_trainers import TINY, TinyNet

    labels = np.repeat(np.arange(2, dtype=np.int32), 24)
    flat = data.ImageDataset(np.full((48, 8, 8, 3), 128, np.uint8), labels, ("a", "b"))
    tr, va = data.split_validation(flat, per_class=4, seed=0)
    res = train.train_model(TinyNet(4, 2), tr, va, TINY.replace(epochs=1), 0)
    assert res.status == "ok", res.error
    assert np.isfinite(res.train_loss) and np.isfinite(res.valid_loss)


def test_workspace_photos_pass_the_checks():
    photos = shared_path("data", "photos")
    train_images, valid = load_photo_split(photos, min_train_side=64, min_valid_side=192)
    assert len(train_images) == len(list(photos.glob("*.png"))) - 8 and len(valid) == 8


def test_summary_says_when_every_evaluation_failed():
    import layernas
    from layernas.evaluator import EvalResult
    from layernas.target import Target
    from toy_spaces import AdditiveEvaluator, AdditiveSpace

    space = AdditiveSpace([[1, 2, 3], [1, 2, 3]], [[0, 1, 2], [0, 1, 2]])

    class BadData:
        def evaluate(self, trial):
            return EvalResult.failed(trial, "cannot read image data/x.png: truncated", 1.0)

    result = layernas.search(space, BadData(), budget=4, target=Target("cost", max=100))
    assert result.best is None
    assert result.evaluations >= 2
    assert (f"every trial failed ({result.evaluations} of {result.evaluations}), so nothing was compared with the "
            "target; first errors: cannot read image data/x.png: truncated") in result.summary()
    # with evaluations that succeed, the summary is the usual one
    result = layernas.search(space, AdditiveEvaluator(space), budget=4, target=Target("cost", max=100))
    assert result.best is not None and "failed" not in result.summary()
