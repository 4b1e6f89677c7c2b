"""Build an archive in the official CIFAR-10 python layout (``cifar-10-python.tar.gz``).

The tests use it to exercise ``layernas prepare-data cifar10`` without the real download:
``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta, readme.html}``, each batch a
pickled dict with ``b'batch_label'``, ``b'labels'`` (a list of ints), ``b'data'`` (uint8
N x 3072, channel-major rows: 1024 red, 1024 green, 1024 blue) and ``b'filenames'``.

Run as a script it converts an image folder ``ROOT/{train,test}/<class>/*`` (32x32) into such
an archive::

    python tests/cifar_archive.py ROOT cifar-10-python.tar.gz
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar10_archive(path: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                          classes=CLASSES) -> Path:
    """Write ``train``/``test`` (images uint8 [N, 32, 32, 3], labels [N]) as a CIFAR-10 archive.

    The training images are split over five batches, as in the official file.
    """
    def batch(images, labels, label):
        rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1), np.uint8)
        return pickle.dumps({b"batch_label": label.encode(), b"labels": [int(x) for x in labels], b"data": rows,
                             b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))]}, protocol=2)

    with tarfile.open(path, "w:gz") as tar:
        parts = np.array_split(np.arange(len(train[1])), 5)
        for i, idx in enumerate(parts, 1):
            _add(tar, f"data_batch_{i}", batch(train[0][idx], train[1][idx], f"training batch {i} of 5"))
        _add(tar, "test_batch", batch(*test, "testing batch 1 of 1"))
        meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": len(parts[0]),
                b"num_vis": 3072}
        _add(tar, "batches.meta", pickle.dumps(meta, protocol=2))
        _add(tar, "readme.html", b"<meta HTTP-EQUIV='REFRESH' content='0; url=http://www.cs.toronto.edu/~kriz/cifar.html'>")
    return path


def read_image_folder(root: Path, split: str, classes=CLASSES) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / split / name).iterdir()):
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(c)
    return np.stack(images), np.asarray(labels)


if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    write_cifar10_archive(out, read_image_folder(root, "train"), read_image_folder(root, "test"))
    print(f"wrote {out}")
