"""``layernas prepare-data``: bring a downloaded dataset into the layout the trainers read.

Nothing is downloaded: each command reads the file or folder the user names.

* ``prepare-data cifar10 cifar-10-python.tar.gz --out data/cifar10`` reads the official
  CIFAR-10 python archive (Alex Krizhevsky's CIFAR page) and writes
  ``data/cifar10/{train,test}/<class>/NNNN.png`` (50,000 + 10,000 32x32 PNGs), the image
  folder that ``--trainer ... --data data/cifar10`` reads. The already extracted folder
  ``cifar-10-batches-py/`` is accepted too.
* ``prepare-data photos DIR --out data/photos`` turns a folder of photos (PNG, JPEG, TIFF,
  WebP, BMP) into the codec spaces' training folder: RGB PNGs, EXIF rotation applied, the
  long side downscaled to ``--max-side`` (default 512), photos shorter than ``--min-side``
  (default 192) skipped. Kodak images (by name, ``kodimNN``, or by their pixels) are skipped
  and listed: Kodak is kept for the final evaluation only.

The CIFAR batches are Python pickles (the official format). They are read with a restricted
unpickler that builds only dicts, lists, strings, bytes, numbers and NumPy arrays, so a
crafted file cannot run code; and only the archive the user named is read.

Example:
    >>> from layernas.trainers.prepare_data import prepare_cifar10
    >>> counts = prepare_cifar10("cifar-10-python.tar.gz", "data/cifar10")  # doctest: +SKIP
    >>> counts["train"], counts["test"]                                      # doctest: +SKIP
    (50000, 10000)
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR10_SIDE = 32
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
# (module, name) pairs a CIFAR pickle may name: how NumPy (1.x or 2.x) pickles an ndarray, and
# how Python 3 writes bytes in a protocol-2 pickle (``_codecs.encode(text, "latin1")``)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and NumPy arrays; refuses every other global."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only plain data and NumPy arrays)")


def load_plain_pickle(raw: bytes):
    """Unpickle ``raw`` (a Python 2 or 3 pickle, as the CIFAR batches are) allowing plain data only.

    Raises:
      pickle.UnpicklingError: the pickle names anything but NumPy's array reconstruction.
    """
    return _PlainDataUnpickler(io.BytesIO(raw), encoding="bytes").load()


class ArchiveError(ValueError):
    """A file that is not the CIFAR-10 python archive (or is corrupt)."""


def _cifar_members(archive: Path) -> dict[str, bytes]:
    """The raw bytes of the CIFAR-10 batch files, from the .tar.gz or its extracted folder."""
    wanted = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH, CIFAR10_META)
    found: dict[str, bytes] = {}
    if archive.is_dir():
        for name in wanted:
            if (archive / name).is_file():
                found[name] = (archive / name).read_bytes()
    else:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    found[base] = tar.extractfile(member).read()  # read in memory: nothing is extracted
    missing = [n for n in wanted if n not in found]
    if missing:
        raise ArchiveError(f"{archive} has no {', '.join(missing)}; expected the CIFAR-10 python version "
                           f"(cifar-10-python.tar.gz, with cifar-10-batches-py/data_batch_1..5, test_batch, "
                           f"batches.meta)")
    return found


def _key(d: dict, name: str):
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise KeyError(name)


def read_cifar10(archive: str | Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Read the official CIFAR-10 python archive.

    Args:
      archive: ``cifar-10-python.tar.gz`` (or the extracted ``cifar-10-batches-py/`` folder).
    Returns:
      (class names, {"train": (images, labels), "test": (images, labels)}): images uint8
      [N, 32, 32, 3], labels int64 [N].
    Raises:
      ArchiveError: not that archive, corrupt, or batches of the wrong shape (one line).
    """
    archive = Path(archive)
    if not archive.exists():
        raise ArchiveError(f"{archive}: no such file; expected the CIFAR-10 python archive cifar-10-python.tar.gz")
    try:
        raw = _cifar_members(archive)
        meta = load_plain_pickle(raw[CIFAR10_META])
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _key(meta, "label_names")]
        splits = {}
        for split, names in (("train", CIFAR10_TRAIN_BATCHES), ("test", (CIFAR10_TEST_BATCH,))):
            images, labels = [], []
            for name in names:
                batch = load_plain_pickle(raw[name])
                data = np.asarray(_key(batch, "data"))
                lab = np.asarray(_key(batch, "labels"), dtype=np.int64)
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * CIFAR10_SIDE ** 2:
                    raise ArchiveError(f"{archive}: {name} holds data of shape {data.shape} and type {data.dtype}; "
                                       f"expected uint8 N x 3072")
                if lab.shape != (data.shape[0],) or (lab.size and not 0 <= lab.min() <= lab.max() < len(classes)):
                    raise ArchiveError(f"{archive}: {name} has {lab.size} labels for {data.shape[0]} images, or labels "
                                       f"outside 0..{len(classes) - 1}")
                images.append(data.reshape(-1, 3, CIFAR10_SIDE, CIFAR10_SIDE).transpose(0, 2, 3, 1))
                labels.append(lab)
            splits[split] = (np.concatenate(images), np.concatenate(labels))
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, pickle.UnpicklingError, OSError, KeyError, ValueError,
            TypeError, AttributeError, IndexError) as e:
        if isinstance(e, KeyError):
            what = f"a batch has no {e} entry"
        elif isinstance(e, tarfile.ReadError):
            what = "not a tar archive, or a truncated one"
        else:
            what = str(e).splitlines()[0].rstrip(": ") if str(e).strip() else type(e).__name__
        raise ArchiveError(f"{archive} is not a readable CIFAR-10 python archive ({what}); expected "
                           f"cifar-10-python.tar.gz from Alex Krizhevsky's CIFAR page") from None
    if len(set(classes)) != len(classes) or any(not c or "/" in c or c in (".", "..") for c in classes):
        raise ArchiveError(f"{archive}: batches.meta has unusable class names {classes}")
    return classes, splits


def _check_out(out: Path, parts: tuple[str, ...]) -> None:
    for part in parts:
        if (out / part).exists():
            raise ValueError(f"--out {out} already has {part}/; remove it or choose another --out")


def _save_pngs(jobs: list[tuple[np.ndarray, Path]], workers: int | None = None) -> None:
    from PIL import Image

    def save(job):
        Image.fromarray(job[0]).save(job[1])

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(save, jobs, chunksize=256))


def prepare_cifar10(archive: str | Path, out: str | Path, *, workers: int | None = None) -> dict[str, int]:
    """Convert the CIFAR-10 python archive into ``out/{train,test}/<class>/NNNN.png``.

    The folders are written in a temporary folder inside ``out`` and moved into place at the
    end, so an interrupted run leaves no half-written ``train/`` or ``test/``.

    Args:
      archive: ``cifar-10-python.tar.gz`` or the extracted ``cifar-10-batches-py/``.
      out: the dataset root to create (it must not have ``train/`` or ``test/`` yet).
      workers: PNG-writing threads (default: CPU count, at most 8).
    Returns:
      ``{"train": images written, "test": images written, "classes": class count}``.
    Raises:
      ArchiveError / ValueError: a wrong or corrupt archive, or an ``out`` already prepared.
    """
    out = Path(out)
    _check_out(out, ("train", "test"))
    classes, splits = read_cifar10(archive)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        jobs = []
        for split, (images, labels) in splits.items():
            for c, name in enumerate(classes):
                folder = staging / split / name
                folder.mkdir(parents=True)
                jobs += [(images[i], folder / f"{k:04d}.png") for k, i in enumerate(np.flatnonzero(labels == c))]
        _save_pngs(jobs, workers)
        for split in splits:
            os.replace(staging / split, out / split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"train": len(splits["train"][1]), "test": len(splits["test"][1]), "classes": len(classes)}


def prepare_photos(src: str | Path, out: str | Path, *, max_side: int = 512, min_side: int = 192,
                   log=print) -> dict[str, list]:
    """Turn a folder of photos into the codec spaces' training folder ``out/*.png``.

    Each photo is converted to RGB (EXIF rotation applied), downscaled (Lanczos) so that its
    long side is at most ``max_side``, and written as ``out/<name>.png``; photos whose short
    side ends below ``min_side``, files that cannot be decoded, and Kodak images are skipped,
    each named through ``log``.

    Args:
      src: the folder of photos (not searched recursively).
      out: the folder to write; it must not contain .png files yet.
      max_side: the longest side after downscaling (photos already smaller are kept as they are).
      min_side: the least short side kept (192: the codec-sandwich validation crop; the
        hyperprior's is 128 and its training crops 64).
      log: where each skipped file is reported.
    Returns:
      ``{"written": [paths], "kodak": [paths skipped], "skipped": [(path, reason)]}``.
    Raises:
      ValueError: ``src`` missing or without photos, ``out`` not empty, bad sizes, or no
        photo kept. Fewer than 9 photos kept is only a note: enough for ``--valid-data``, too
        few for ``--data`` (whose last 8 are held out).
    """
    from PIL import Image, ImageOps

    from layernas.trainers.data_checks import VALIDATION_PHOTOS, looks_like_kodak, read_rgb

    src, out = Path(src), Path(out)
    if not 16 <= min_side <= max_side:
        raise ValueError(f"--min-side {min_side} / --max-side {max_side}: expected 16 <= min-side <= max-side")
    if not src.is_dir():
        raise ValueError(f"{src}: no such folder; expected a folder of photos ({', '.join(PHOTO_SUFFIXES)})")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise ValueError(f"{src} has no photos ({', '.join(PHOTO_SUFFIXES)})")
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the source folder; choose another --out")
    if out.exists() and any(out.glob("*.png")):
        raise ValueError(f"--out {out} already has .png files; remove them or choose another --out")
    report: dict[str, list] = {"written": [], "kodak": [], "skipped": []}
    taken: set[str] = set()
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            pixels = read_rgb(path)
        except ValueError as e:
            report["skipped"].append((path, str(e)))
            log(f"skipped {path}: {e}")
            continue
        if looks_like_kodak(path, pixels):
            report["kodak"].append(path)
            log(f"skipped {path}: a Kodak image (kept for the final evaluation only, never trained on)")
            continue
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        scale = min(1.0, max_side / max(im.size))
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        if min(size) < min_side:
            reason = f"{size[0]}x{size[1]} after downscaling, below --min-side {min_side}"
            report["skipped"].append((path, reason))
            log(f"skipped {path}: {reason}")
            continue
        if size != im.size:
            im = im.resize(size, Image.LANCZOS)
        name, n = path.stem, 1
        while name.lower() in taken:
            name, n = f"{path.stem}-{n}", n + 1
        taken.add(name.lower())
        target = out / f"{name}.png"
        tmp = out / f".{name}.png.tmp"
        im.save(tmp, format="PNG")
        os.replace(tmp, target)
        report["written"].append(target)
    if not report["written"]:
        raise ValueError(f"{src}: no usable photos (every file was skipped, see above)")
    if len(report["written"]) <= VALIDATION_PHOTOS:
        log(f"note: {len(report['written'])} photos: enough for --valid-data, but --data needs more than "
            f"{VALIDATION_PHOTOS} (its last {VALIDATION_PHOTOS} by name are held out unless --valid-data is given)")
    return report


def add_arguments(parser) -> None:
    """The ``prepare-data`` subcommand's arguments (``layernas prepare-data --help``)."""
    sub = parser.add_subparsers(dest="kind", required=True, parser_class=type(parser), help="what to convert")
    c = sub.add_parser("cifar10", help="the CIFAR-10 python archive -> ROOT/{train,test}/<class>/*.png")
    c.add_argument("archive", help="cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/ folder)")
    c.add_argument("--out", required=True, help="dataset root to write (then: --data ROOT)")
    p = sub.add_parser("photos", help="a folder of photos -> codec training photos ROOT/*.png (Kodak skipped)")
    p.add_argument("src", help="folder of photos (.png .jpg .jpeg .tif .tiff .webp .bmp)")
    p.add_argument("--out", required=True, help="folder to write (then: --data ROOT)")
    p.add_argument("--max-side", type=int, default=512, help="downscale the long side to at most this (default 512)")
    p.add_argument("--min-side", type=int, default=192,
                   help="skip photos whose short side ends below this (default 192, the largest validation crop)")


def run(args) -> int:
    """Run ``layernas prepare-data`` with the parsed ``args``; returns the exit code."""
    if args.kind == "cifar10":
        counts = prepare_cifar10(args.archive, args.out)
        print(f"wrote {counts['train']} train and {counts['test']} test images of {counts['classes']} classes "
              f"to {args.out}/{{train,test}}/<class>/ (use --data {args.out})")
        return 0
    report = prepare_photos(args.src, args.out, max_side=args.max_side, min_side=args.min_side)
    print(f"wrote {len(report['written'])} photos to {args.out} (use --data {args.out}; the last 8 by name are "
          f"held out for validation); skipped {len(report['kodak'])} Kodak and {len(report['skipped'])} other files")
    return 0
