"""Image-folder datasets, a decoded uint8 cache, deterministic splits and on-device augmentation.

Layout: ``root/<split>/<class>/*.jpg|jpeg|png`` (class = sub-folder name, classes sorted by
name give the label ids). This is the layout ``layernas prepare-data cifar10`` writes from the
official CIFAR-10 archive (50k train / 10k test images), and of any user dataset shaped the
same way (see docs/data.md).

The first load decodes with Pillow (in threads) and writes ``<cache_dir>/<key>.npz``; the
key hashes the resolved root, the split, the chosen files and their sizes and mtimes, so a
changed file invalidates it. The second load reads the .npz (a fraction of a second for
CIFAR-10).

Example:
    >>> from layernas.trainers import data
    >>> train = data.load_image_folder("data/cifar10", "train", per_class=100)  # doctest: +SKIP
    >>> train, valid = data.split_validation(train, per_class=20, seed=0)                   # doctest: +SKIP
    >>> for idx in data.epoch_batches(len(train), 64, seed=0, epoch=0): ...                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_CACHE_DIR = Path(os.environ.get("LAYERNAS_CACHE", Path.home() / ".cache" / "layernas")) / "images"


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Decoded images in memory.

    Attributes:
      images: uint8 [N, H, W, C].
      labels: int32 [N].
      classes: class names; label i is ``classes[i]``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: np.ndarray) -> "ImageDataset":
        index = np.asarray(index)
        return ImageDataset(self.images[index], self.labels[index], self.classes)

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the pixels scaled to [0, 1] (float32 [C] each)."""
        x = self.images.reshape(-1, self.images.shape[-1]).astype(np.float64) / 255.0
        return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


def list_image_folder(root: str | Path, split: str) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Files, labels and class names of ``root/split``, in a stable (sorted) order."""
    base = Path(root) / split
    if not base.is_dir():
        raise ValueError(f"no folder {base}; expected an image folder laid out as root/<split>/<class>/*.jpg|png")
    classes = tuple(sorted(p.name for p in base.iterdir() if p.is_dir()))
    if not classes:
        raise ValueError(f"{base} has no class sub-folders; expected root/<split>/<class>/*.jpg|png")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (base / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"{base} has no .jpg/.jpeg/.png images in its class folders")
    return files, np.asarray(labels, np.int32), classes


def _per_class_pick(labels: np.ndarray, per_class: int, seed: int | None) -> np.ndarray:
    """Indices of ``per_class`` items of each class: the first ones in file order, or a
    seeded random choice when ``seed`` is given. Sorted, so the result is deterministic."""
    rng = None if seed is None else np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if rng is not None:
            idx = np.sort(rng.permutation(idx)[:per_class])
        keep.append(idx[:per_class])
    return np.sort(np.concatenate(keep))


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for a corrupt or truncated file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot read image {path}: {reason}") from None


def _cache_key(root: Path, split: str, files: list[Path], size) -> str:
    h = hashlib.sha256(f"{root.resolve()}|{split}|{size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_image_folder(
    root: str | Path,
    split: str = "train",
    *,
    per_class: int | None = None,
    subsample_seed: int | None = None,
    image_size: tuple[int, int] | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    workers: int | None = None,
) -> ImageDataset:
    """Load ``root/split/<class>/*`` as uint8 arrays, through the decoded cache.

    Args:
      root: dataset root.
      split: sub-folder, e.g. "train" or "test".
      per_class: keep at most this many images per class (None: all).
      subsample_seed: None keeps the first ``per_class`` files of each class (sorted by
        name); an int picks them at random with that seed. Either way it is deterministic.
      image_size: (H, W) to resize to; None requires every image to have the same size.
      cache_dir: where decoded arrays are cached (None: no cache).
      workers: decode threads (default: CPU count, at most 8).

    Returns:
      an :class:`ImageDataset`.
    """
    root = Path(root)
    files, labels, classes = list_image_folder(root, split)
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"per_class={per_class}; expected a positive count or None")
        keep = _per_class_pick(labels, per_class, subsample_seed)
        files, labels = [files[i] for i in keep], labels[keep]
    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_cache_key(root, split, files, size)}.npz"
        if cache_file.exists():
            with np.load(cache_file) as z:
                return ImageDataset(z["images"], z["labels"], tuple(str(c) for c in z["classes"]))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda f: _decode(f, size), files, chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        i = next(i for i, a in enumerate(arrays) if a.shape != arrays[0].shape)
        (h0, w0), (h, w) = arrays[0].shape[:2], arrays[i].shape[:2]
        raise ValueError(f"images under {root / split} have different sizes: {files[i]} is {w}x{h}, "
                         f"{files[0]} is {w0}x{h0}; pass image_size=(H, W) to resize them")
    ds = ImageDataset(np.stack(arrays), labels, classes)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, images=ds.images, labels=ds.labels, classes=np.asarray(classes))
        os.replace(tmp, cache_file)
    return ds


def split_validation(ds: ImageDataset, *, per_class: int | None = None, fraction: float | None = None,
                     seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a class-stratified validation split, deterministically by seed.

    Give exactly one of ``per_class`` (images per class held out) or ``fraction``.

    Returns:
      (train, valid), disjoint, together the whole of ``ds``.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction for the validation split")
    rng = np.random.default_rng(seed)
    valid = []
    for c in np.unique(ds.labels):
        idx = np.flatnonzero(ds.labels == c)
        k = per_class if per_class is not None else int(round(fraction * len(idx)))
        if not 0 < k < len(idx):
            raise ValueError(f"validation size {k} for class {ds.classes[c]!r} with {len(idx)} images; "
                             f"expected between 1 and {len(idx) - 1}")
        valid.append(rng.permutation(idx)[:k])
    valid = np.sort(np.concatenate(valid))
    train = np.setdiff1d(np.arange(len(ds)), valid)
    return ds.subset(train), ds.subset(valid)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, *, drop_last: bool = True) -> Iterator[np.ndarray]:
    """Index arrays of one epoch, shuffled by (seed, epoch). ``drop_last`` keeps one batch
    shape, hence one compiled train step."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected a positive integer")
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


MIN_STD = 1.0 / 255.0  # one grey level: a constant channel (std 0) is divided by this, not by 0


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 NHWC -> float32, scaled to [0, 1] then standardised per channel.

    A channel's ``std`` is floored at :data:`MIN_STD`, so images of one constant colour
    (std 0) give finite inputs, not NaN.
    """
    std = jnp.maximum(jnp.asarray(std, jnp.float32), MIN_STD)
    return (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / std


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop with ``pad`` pixels of zero padding, then a random horizontal flip.

    Pure and jittable (it runs inside the jitted train step, on the device).
    Args:
      key: a jax.random key.
      images: [N, H, W, C] (any dtype).
    Returns:
      the augmented batch, same shape and dtype.
    """
    n, h, w, c = images.shape
    k_y, k_x, k_f = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ys = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
    xs = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(padded, ys, xs)
    flip = jax.random.bernoulli(k_f, 0.5, (n,))
    return jnp.where(flip[:, None, None, None], crop[:, :, ::-1, :], crop)


def synthetic_dataset(num_classes: int = 4, per_class: int = 64, size: int = 16, seed: int = 0) -> ImageDataset:
    """A small learnable dataset (class = colour of a blob) for tests without real data."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (num_classes, 3))
    n = num_classes * per_class
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32) * 0.5
    for i, l in enumerate(labels):
        y, x = rng.integers(0, size // 2, 2)
        images[i, y:y + size // 2, x:x + size // 2] = colours[l]
    return ImageDataset(images.astype(np.uint8), labels, tuple(f"class{i}" for i in range(num_classes)))
