"""Image-folder loading, the decoded cache, splits, shuffles and augmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from layernas.trainers import data


def _write_folder(root, sizes=((6, 5),), per_class=5, classes=("b_cat", "a_dog")):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for ci, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                arr = np.full((h, w, 3), 40 * ci + i, np.uint8)
                arr[0, 0] = rng.integers(0, 255, 3)
                suffix = ".png" if i % 2 else ".jpg"
                Image.fromarray(arr).save(root / split / name / f"{i:03d}{suffix}", quality=100)
    (root / "train" / "a_dog" / "notes.txt").write_text("not an image")
    return root


def test_load_labels_cache_and_invalidation(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "ds")
    cache = tmp_path / "cache"
    ds = data.load_image_folder(root, "train", cache_dir=cache)
    assert ds.classes == ("a_dog", "b_cat")  # sorted class names -> label ids
    assert ds.images.shape == (10, 6, 5, 3) and ds.images.dtype == np.uint8
    assert list(ds.labels) == [0] * 5 + [1] * 5
    png = np.asarray(Image.open(root / "train" / "b_cat" / "001.png"))
    np.testing.assert_array_equal(ds.images[6], png)  # b_cat/001.png is the 2nd b_cat file
    assert len(list(cache.glob("*.npz"))) == 1

    # the second load reads the cache: decoding would now fail
    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_decode", no_decode)
    again = data.load_image_folder(root, "train", cache_dir=cache)
    np.testing.assert_array_equal(again.images, ds.images)
    np.testing.assert_array_equal(again.labels, ds.labels)
    monkeypatch.undo()

    # a changed file invalidates the cache
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(root / "train" / "a_dog" / "000.jpg")
    changed = data.load_image_folder(root, "train", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    assert changed.images[0].max() < 10


def test_mixed_sizes_need_image_size(tmp_path):
    root = _write_folder(tmp_path / "ds", sizes=((6, 5), (8, 8)))
    with pytest.raises(ValueError, match="image_size"):
        data.load_image_folder(root, "train", cache_dir=None)
    ds = data.load_image_folder(root, "train", image_size=(4, 4), cache_dir=None)
    assert ds.images.shape == (10, 4, 4, 3)


@pytest.mark.parametrize("bad", ["missing_split", "empty"])
def test_bad_folder_raises(tmp_path, bad):
    if bad == "empty":
        (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="root/<split>/<class>"):
        data.load_image_folder(tmp_path, "train", cache_dir=None)


def test_per_class_subsample_is_deterministic(tmp_path):
    root = _write_folder(tmp_path / "ds", per_class=8)
    first = data.load_image_folder(root, "train", per_class=3, cache_dir=None)
    assert list(np.bincount(first.labels)) == [3, 3]
    # without a seed: the first 3 files of each class
    # labels: a_dog (values 40+i) is class 0; JPEG is lossy, so compare loosely
    np.testing.assert_allclose(first.images[:, 4, 3, 0], [40, 41, 42, 0, 1, 2], atol=4)
    a = data.load_image_folder(root, "train", per_class=3, subsample_seed=5, cache_dir=None)
    b = data.load_image_folder(root, "train", per_class=3, subsample_seed=5, cache_dir=None)
    np.testing.assert_array_equal(a.images, b.images)


def test_split_validation_stratified_disjoint_deterministic():
    ds = data.synthetic_dataset(num_classes=3, per_class=20, size=4)
    tr, va = data.split_validation(ds, per_class=5, seed=1)
    assert len(tr) == 45 and len(va) == 15
    assert list(np.bincount(va.labels)) == [5, 5, 5]
    keys = lambda d: {x.tobytes() for x in d.images}
    assert not keys(tr) & keys(va) and len(keys(tr) | keys(va)) == 60
    tr2, va2 = data.split_validation(ds, per_class=5, seed=1)
    np.testing.assert_array_equal(va.images, va2.images)
    _, va3 = data.split_validation(ds, per_class=5, seed=2)
    assert not np.array_equal(va.images, va3.images)
    with pytest.raises(ValueError, match="exactly one"):
        data.split_validation(ds)


def test_epoch_batches_seeded_shuffle():
    a = list(data.epoch_batches(10, 3, seed=0, epoch=0))
    assert [len(b) for b in a] == [3, 3, 3]  # drop_last keeps one batch shape
    assert len(set(np.concatenate(a))) == 9
    assert all(np.array_equal(x, y) for x, y in zip(a, data.epoch_batches(10, 3, seed=0, epoch=0)))
    assert not np.array_equal(np.concatenate(a), np.concatenate(list(data.epoch_batches(10, 3, 0, 1))))
    assert not np.array_equal(np.concatenate(a), np.concatenate(list(data.epoch_batches(10, 3, 1, 0))))
    assert sum(len(b) for b in data.epoch_batches(10, 3, 0, 0, drop_last=False)) == 10


def test_random_crop_flip_is_a_padded_crop_or_its_mirror():
    imgs = jnp.asarray(np.random.default_rng(0).integers(1, 255, (16, 6, 6, 3)), jnp.uint8)
    out = np.asarray(jax.jit(data.random_crop_flip)(jax.random.key(0), imgs))
    assert out.shape == imgs.shape and out.dtype == np.uint8
    padded = np.pad(np.asarray(imgs), ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips = 0
    for i in range(len(out)):
        cands = {(y, x, f) for y in range(9) for x in range(9) for f in (0, 1)
                 if np.array_equal(out[i], (padded[i, y:y + 6, x:x + 6][:, ::-1] if f else padded[i, y:y + 6, x:x + 6]))}
        assert cands, f"image {i} is not a crop of its padded input"
        flips += min(f for _, _, f in cands)
    assert 0 < flips < 16  # both flipped and unflipped occur
    again = np.asarray(data.random_crop_flip(jax.random.key(0), imgs))
    np.testing.assert_array_equal(out, again)


def test_cifar10_folder(cifar10_dir, tmp_path):
    ds = data.load_image_folder(cifar10_dir, "test", per_class=3, cache_dir=tmp_path)
    assert ds.images.shape == (30, 32, 32, 3) and ds.num_classes == 10
    assert ds.classes[0] == "airplane" and list(np.bincount(ds.labels)) == [3] * 10
    mean, std = ds.channel_stats()
    assert np.all((0.2 < mean) & (mean < 0.8)) and np.all(std > 0.1)
