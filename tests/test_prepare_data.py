"""``layernas prepare-data``: the CIFAR-10 python archive and a folder of photos, made into
the layouts the trainers read; a wrong or corrupt input is one line and exit code 2."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from cifar_archive import CLASSES, write_cifar10_archive
from conftest import shared_path
from layernas.cli import main
from layernas.trainers import data
from layernas.trainers.prepare_data import load_plain_pickle, prepare_photos

TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 2


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _split(per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    rng.shuffle(labels)  # batches interleave the classes, as the official ones do
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return images, labels


@pytest.fixture
def small_archive(tmp_path):
    train, test = _split(TRAIN_PER_CLASS, 0), _split(TEST_PER_CLASS, 1)
    return write_cifar10_archive(tmp_path / "cifar-10-python.tar.gz", train, test), train, test


def test_cifar10_archive_becomes_an_image_folder(small_archive, tmp_path, capsys):
    archive, train, test = small_archive
    out = tmp_path / "cifar10"
    code, stdout, err = run_cli(capsys, "prepare-data", "cifar10", archive, "--out", out)
    assert code == 0, err
    assert f"wrote {len(train[1])} train and {len(test[1])} test images of 10 classes" in stdout
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(CLASSES)
        for name in CLASSES:
            assert len(list((out / split / name).glob("*.png"))) == per_class
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the staging folder is gone
    # the pixels survive (PNG is lossless) and the trainers' loader reads the folder
    ds = data.load_image_folder(out, "train", cache_dir=None)
    assert ds.classes == tuple(sorted(CLASSES)) and len(ds) == len(train[1])
    cat = CLASSES.index("cat")
    first_cat = np.asarray(Image.open(out / "train" / "cat" / "0000.png"))
    np.testing.assert_array_equal(first_cat, train[0][np.flatnonzero(train[1] == cat)[0]])
    # a second run refuses to overwrite
    code, _, err = run_cli(capsys, "prepare-data", "cifar10", archive, "--out", out)
    assert code == 2 and "already has train/" in err and err.count("\n") == 1


def test_extracted_folder_is_accepted(small_archive, tmp_path, capsys):
    archive, train, _ = small_archive
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    code, _, err = run_cli(capsys, "prepare-data", "cifar10", tmp_path / "x" / "cifar-10-batches-py",
                           "--out", tmp_path / "c")
    assert code == 0, err
    assert sum(1 for _ in (tmp_path / "c" / "train").glob("*/*.png")) == len(train[1])


def _tar_with(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _bad_inputs(small_archive, tmp_path):
    archive, _, _ = small_archive
    raw = archive.read_bytes()
    with tarfile.open(archive) as tar:
        members = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    plain = tmp_path / "notes.txt"
    plain.write_text("not an archive")
    gz_not_tar = tmp_path / "x.tar.gz"
    gz_not_tar.write_bytes(gzip.compress(b"hello" * 100))
    other = _tar_with(tmp_path / "cifar-100-python.tar.gz", {"train": b"x", "test": b"y", "meta": b"z"})
    garbage_batch = _tar_with(tmp_path / "garbage.tar.gz", {**members, "data_batch_3": b"\x80\x02garbage"})
    wrong_shape = pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    shaped = _tar_with(tmp_path / "shape.tar.gz", {**members, "test_batch": wrong_shape})
    marker = tmp_path / "pwned"
    evil = _tar_with(tmp_path / "evil.tar.gz", {**members, "batches.meta": pickle.dumps(_Evil(marker), protocol=2)})
    return [
        (tmp_path / "missing.tar.gz", "no such file"),
        (truncated, "not a readable CIFAR-10 python archive"),
        (plain, "not a readable CIFAR-10 python archive"),
        (gz_not_tar, "not a readable CIFAR-10 python archive"),
        (other, "has no data_batch_1"),
        (garbage_batch, "not a readable CIFAR-10 python archive"),
        (shaped, "expected uint8 N x 3072"),
        (evil, "refused to load"),
    ], marker


def test_wrong_or_corrupt_archive_is_one_line_and_exit_2(small_archive, tmp_path, capsys):
    cases, marker = _bad_inputs(small_archive, tmp_path)
    for path, needle in cases:
        out = tmp_path / f"out-{path.name}"
        code, _, err = run_cli(capsys, "prepare-data", "cifar10", path, "--out", out)
        assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (path, err)
        assert not (out / "train").exists()
    assert not marker.exists()  # the crafted pickle ran nothing


def test_plain_pickle_loader_reads_arrays_and_refuses_other_globals(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    back = load_plain_pickle(pickle.dumps({b"data": arr, b"labels": [1, 2]}, protocol=2))
    np.testing.assert_array_equal(back[b"data"], arr)
    # NumPy 1.x writes numpy.core.multiarray, as the official (Python 2) batches do
    legacy = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(load_plain_pickle(legacy), arr)
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load (builtins|io)\.open"):
        load_plain_pickle(pickle.dumps(_Evil(tmp_path / "m"), protocol=2))
    assert not (tmp_path / "m").exists()


def _photo(path, size, mode="RGB", seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    im = Image.fromarray(arr, "RGBA").convert(mode)
    im.save(path, format=fmt)


def test_photos_folder_becomes_codec_training_photos(tmp_path, capsys):
    src = tmp_path / "camera"
    src.mkdir()
    for i in range(9):
        _photo(src / f"p{i:02d}.png", (300 + 20 * i, 220), seed=i)
    _photo(src / "big.jpg", (1200, 900), seed=20, fmt="JPEG")
    _photo(src / "gray.png", (256, 256), mode="L", seed=21)
    _photo(src / "alpha.png", (256, 300), mode="RGBA", seed=22)
    _photo(src / "kodim05.png", (768, 512), seed=23)
    _photo(src / "tiny.png", (150, 100), seed=24)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "notes.txt").write_text("not a photo")
    out = tmp_path / "photos"
    code, stdout, err = run_cli(capsys, "prepare-data", "photos", src, "--out", out)
    assert code == 0, err
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted([f"p{i:02d}.png" for i in range(9)] + ["big.png", "gray.png", "alpha.png"])
    assert "kodim05.png: a Kodak image" in stdout and "tiny.png" in stdout and "broken.png" in stdout
    assert "skipped 1 Kodak and 2 other files" in stdout
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            assert im.mode == "RGB" and max(im.size) <= 512 and min(im.size) >= 192
    with Image.open(out / "big.png") as im:
        assert im.size == (512, 384)
    # the result is what a codec search reads
    from layernas.trainers.data_checks import load_photo_split

    train, valid = load_photo_split(out, min_train_side=64, min_valid_side=192)
    assert len(train) == 4 and len(valid) == 8
    code, _, err = run_cli(capsys, "prepare-data", "photos", src, "--out", out)
    assert code == 2 and "already has .png files" in err


def test_renamed_kodak_image_is_recognised_by_its_pixels(tmp_path):
    kodak = shared_path("data", "kodak")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(9):
        _photo(src / f"p{i}.png", (400, 300), seed=i)
    Image.open(kodak / "kodim07.png").save(src / "holiday.png")
    report = prepare_photos(src, tmp_path / "out", log=lambda line: None)
    assert [p.name for p in report["kodak"]] == ["holiday.png"] and len(report["written"]) == 9


def test_photos_errors_are_one_line(tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        _photo(few / f"p{i}.png", (300, 300), seed=i)
    bad = tmp_path / "only-bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"broken")
    _photo(bad / "y.png", (100, 100))
    # three photos: a held-out folder, not a training one; said, not refused
    code, stdout, err = run_cli(capsys, "prepare-data", "photos", few, "--out", tmp_path / "valid")
    assert code == 0 and "note: 3 photos: enough for --valid-data, but --data needs more than 8" in stdout, err
    for argv, needle in (
        (["photos", tmp_path / "nope", "--out", tmp_path / "o1"], "no such folder"),
        (["photos", tmp_path / "only-bad", "--out", tmp_path / "o2"], "no usable photos"),
        (["photos", few, "--out", tmp_path / "o3", "--min-side", "600"], "--min-side 600 / --max-side 512"),
        (["photos", few, "--out", few], "is the source folder"),
        (["cifar10"], "the following arguments are required"),
        (["imagenet", "x"], "invalid choice"),
    ):
        code, _, err = run_cli(capsys, "prepare-data", *argv)
        assert code == 2 and needle in err and err.count("\n") == 1, (argv, err)
