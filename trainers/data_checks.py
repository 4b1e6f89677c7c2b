"""Check a search's ``--data`` before any child trains, and read the codec photo folders.

A trained search reads its data lazily, inside the first trial; a folder that is missing,
unreadable or holds a bad image would then fail every trial, one by one. The functions here
run once, before the search starts, and raise a one-line ``ValueError`` naming the bad
folder or file:

* :func:`load_photo_split`: the codec spaces' training photos (``--data``) and held-out
  photos (``--valid-data``, default: the last :data:`VALIDATION_PHOTOS` of ``--data`` by
  name), every file decoded and checked against the crop sizes; Kodak images are refused.
* :func:`load_training_data`: an image-classifier evaluator's dataset, decoded now (and so
  written to the decoded-image cache the trials then read).

Example:
    >>> train, valid = load_photo_split("data/photos", min_train_side=64, min_valid_side=128)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

VALIDATION_PHOTOS = 8
PHOTO_SUFFIXES = (".png",)
KODAK_NAME = re.compile(r"^kodim\d\d$", re.IGNORECASE)
KODAK_SIZES = ((512, 768), (768, 512))  # (H, W) of the 24 Kodak images
# SHA-256 (first 16 hex digits) of the RGB pixels of kodim01..kodim24, the Kodak Lossless True
# Color Image Suite; a renamed or re-encoded (lossless) copy is recognised by its pixels.
KODAK_PIXEL_SHA256 = frozenset((
    "a002107433535944", "ae5a495df4ec40e0", "234e61f585503f2a", "e88e788fca00e6c7", "ed3d1ee770909d3b",
    "7f45158999fa297d", "4e3664bf6fe865b4", "889c3740e4ed54ca", "f8453140e63a4230", "fabe11b5c4f02839",
    "ab4dd9bf8431e717", "f412db2168e59994", "875703d56fb9396f", "2bd5029ee75ac169", "b5353e7511277009",
    "ed21745fd32fce95", "566bc866664e9b06", "3475af71066f3ca8", "7956408ef24222d3", "666ce8f2db5566a1",
    "2d6902daf7c4486b", "f430842120c108b6", "81992a83592267e6", "e3e3ccc3e795b82a"))
MAKE_PHOTOS_HINT = "make one with `layernas prepare-data photos SRC --out DIR`, see docs/data.md"


def looks_like_kodak(path: Path, pixels: np.ndarray | None = None) -> bool:
    """Whether ``path`` is one of the 24 Kodak images: by its name (``kodimNN``) or, for an
    image of Kodak's size, by the hash of its RGB pixels.

    Args:
      path: the file.
      pixels: its decoded HxWx3 uint8 pixels, when already read (else only the name is used).
    Returns:
      True for a Kodak image.
    """
    if KODAK_NAME.match(Path(path).stem):
        return True
    if pixels is None or tuple(pixels.shape[:2]) not in KODAK_SIZES:
        return False
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16] in KODAK_PIXEL_SHA256


def read_rgb(path: Path) -> np.ndarray:
    """Decode one image file as HxWx3 uint8 (grayscale, palette and RGBA are converted).

    Raises:
      ValueError: the file cannot be read or decoded (one line, naming the file).
    """
    from layernas.trainers.data import _decode

    return _decode(Path(path), None)


def photo_files(directory: str | Path, flag: str = "--data") -> list[Path]:
    """The ``*.png`` files of a photo folder, sorted by name.

    Args:
      directory: the folder.
      flag: how the folder is named in errors (the CLI flag that gave it).
    Raises:
      ValueError: the folder is missing, unreadable, not a folder, or holds no .png.
    """
    directory = Path(directory)
    if not str(directory).strip():
        raise ValueError(f"{flag} is empty; expected a folder of .png photos ({MAKE_PHOTOS_HINT})")
    if not directory.exists():
        raise ValueError(f"{flag} {directory}: no such folder; expected a folder of .png photos ({MAKE_PHOTOS_HINT})")
    if not directory.is_dir():
        raise ValueError(f"{flag} {directory} is not a folder; expected a folder of .png photos")
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    except OSError as e:
        raise ValueError(f"{flag} {directory} cannot be read: {e.strerror or e}") from None
    if not files:
        raise ValueError(f"{flag} {directory} has no .png photos ({MAKE_PHOTOS_HINT})")
    return files


def _read_photos(files: list[Path], min_side: int, flag: str, role: str) -> list[np.ndarray]:
    images = []
    for path in files:
        pixels = read_rgb(path)
        if looks_like_kodak(path, pixels):
            raise ValueError(f"{path} in {flag} is a Kodak image; Kodak is kept for the final evaluation only, "
                             f"move it out of the {role} photos")
        h, w = pixels.shape[:2]
        if min(h, w) < min_side:
            raise ValueError(f"{path} is {w}x{h} pixels; {role} photos must be at least {min_side} pixels a side "
                             f"(the crop size)")
        images.append(pixels)
    return images


def load_photo_split(data: str | Path, valid_data: str | Path | None = None, *,
                     n_val: int = VALIDATION_PHOTOS, min_train_side: int = 64,
                     min_valid_side: int = 128) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read and check a codec search's training and held-out photos.

    Args:
      data: the training photos, ``DIR/*.png`` (``--data``).
      valid_data: the held-out photos (``--valid-data``); None holds out the last ``n_val``
        photos of ``data`` (sorted by name) instead.
      n_val: how many photos of ``data`` are held out when ``valid_data`` is None.
      min_train_side: the training crop size: every training photo must be this large.
      min_valid_side: the validation centre-crop size: every held-out photo must be this large.
    Returns:
      (train, valid): lists of HxWx3 uint8 arrays.
    Raises:
      ValueError: a missing, unreadable or empty folder, an undecodable or too small photo,
        or a Kodak image (one line naming it).
    """
    files = photo_files(data, "--data")
    if valid_data is None:
        if len(files) <= n_val:
            raise ValueError(f"--data {data} has {len(files)} photos; need more than {n_val}: the last {n_val} "
                             f"by name are held out for validation (or give --valid-data DIR)")
        train_files, valid_files, valid_flag = files[:-n_val], files[-n_val:], "--data"
    else:
        train_files, valid_files, valid_flag = files, photo_files(valid_data, "--valid-data"), "--valid-data"
    return (_read_photos(train_files, min_train_side, "--data", "training"),
            _read_photos(valid_files, min_valid_side, valid_flag, "held-out"))


def check_image_folder(root: str | Path, split: str = "train") -> None:
    """Refuse a classifier ``--data`` that is missing, unreadable or not ``root/split/<class>/*``.

    Cheap (lists the folder, decodes nothing); :func:`load_training_data` decodes.

    Raises:
      ValueError: one line naming the folder and the expected layout.
    """
    root = Path(root)
    layout = f"expected an image folder {root}/{split}/<class>/*.png|jpg (see docs/data.md)"
    if not str(root).strip():
        raise ValueError(f"--data is empty; {layout}")
    if not root.is_dir():
        raise ValueError(f"--data {root}: no such folder; {layout}")
    if not os.access(root, os.R_OK | os.X_OK) or ((root / split).is_dir() and not os.access(root / split, os.R_OK | os.X_OK)):
        raise ValueError(f"--data {root} cannot be read (permission denied)")
    from layernas.trainers.data import list_image_folder

    try:
        list_image_folder(root, split)
    except OSError as e:
        raise ValueError(f"--data {root} cannot be read: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"--data {root}: {e}") from None


def load_training_data(evaluator) -> None:
    """Decode an image-classifier evaluator's training data now, before any child trains.

    Args:
      evaluator: a :class:`~layernas.trainers.evaluator.TrainerEvaluator`, or an executor
        wrapping one (``.evaluator``); anything without a ``datasets`` attribute is left alone.
    Raises:
      ValueError: an image that cannot be decoded, or images of different sizes (one line).
    """
    inner = getattr(evaluator, "evaluator", evaluator)
    if hasattr(type(inner), "datasets"):
        inner.datasets  # noqa: B018  (loads, checks and caches the images)
