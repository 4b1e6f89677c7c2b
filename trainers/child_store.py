"""The trained-child store: train a child once, reuse it in every later run and process.

A child is keyed by what determines its training outcome: the *family* (space, recipe,
data subset, network overrides), the *mode* (trained from scratch, or warm-started with a
given number of epochs), the architecture and the training seed. The store keeps, per
child, its weights, its metrics (validation accuracy, losses, status) and its training
time.

Layout of a store directory::

    <store>/index.sqlite          one row per child, plus claim rows (see below)
    <store>/blobs/<kk>/<key>.msgpack   the child's variables (flax msgpack), one file

Why SQLite (from the standard library): several processes on one machine read and write
the index at once. SQLite in WAL mode lets readers run while one writer commits, a busy
timeout makes concurrent writers queue instead of failing, and ``BEGIN IMMEDIATE``
transactions make "is anyone training this child? then I am" one atomic step. A folder of
orbax checkpoints has none of that: two processes could both see "not there" and both
train. Weights are one msgpack file per child so that one SHA-256, kept in the index
row, checks the whole blob.

Integrity: the blob is written to a temporary file, fsynced and renamed before its row is
committed, and its SHA-256 and size are in the row. :meth:`ChildStore.get` re-hashes the
blob; a missing, truncated or altered blob drops the entry (row and file) and reports a
miss, so the caller trains the child again. It never raises for a bad entry.

No duplicate training: :meth:`ChildStore.train_once` takes a *claim* (a row in the
``claims`` table, in one immediate transaction) before training; another process that
wants the same child waits for the entry instead of training it too. A claim whose owner
process has died (same host), or whose lease has run out, is taken over.

Example:
    >>> store = ChildStore("/tmp/layernas-store")                             # doctest: +SKIP
    >>> key = child_key({"space": "nats-tss"}, "scratch", (0, 1, 2, 3, 4, 0), 1)  # doctest: +SKIP
    >>> child, how = store.train_once(key, meta, lambda: (variables, metrics, 12.3))  # doctest: +SKIP
    >>> how                                                                   # doctest: +SKIP
    'trained'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

DEFAULT_STORE = Path(os.environ.get("LAYERNAS_CACHE", Path.home() / ".cache" / "layernas")) / "children"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
DEFAULT_LEASE_S = 4 * 3600.0


class StoreError(ValueError):
    """A store that cannot be opened (a file where a directory is expected, another schema)."""


@dataclasses.dataclass(frozen=True)
class StoredChild:
    """One stored child.

    Attributes:
      key: the store key (:func:`child_key`).
      family, mode, arch, training_seed: what it was keyed by.
      metrics: the training outcome (``status``, ``valid_accuracy``, losses ...).
      train_seconds: wall seconds its training took.
      variables: its trained variables (nested dict of NumPy arrays), or None when it
        failed or was loaded without weights.
    """

    key: str
    family: str
    mode: str
    arch: tuple[int, ...]
    training_seed: int
    metrics: dict
    train_seconds: float
    variables: Any = None


def canonical_json(obj: Any) -> str:
    """A stable JSON text of ``obj`` (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def family_key(identity: dict) -> str:
    """The family hash of a training setup (space, recipe, data subset, network)."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:24]


def child_key(family: str, mode: str, arch: Sequence[int], training_seed: int) -> str:
    """The store key of one child: a hash of (family, mode, architecture, training seed)."""
    text = canonical_json([family, mode, [int(a) for a in arch], int(training_seed)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def serialize_variables(variables) -> bytes:
    """Variables (a pytree of arrays) -> msgpack bytes."""
    import jax
    import numpy as np
    from flax import serialization

    return serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, jax.device_get(variables)))


def deserialize_variables(blob: bytes):
    """msgpack bytes -> variables (nested dict of NumPy arrays)."""
    from flax import serialization

    return serialization.msgpack_restore(blob)


class ChildStore:
    """An SQLite-indexed store of trained children (see the module docstring).

    Args:
      path: the store directory (created if missing).
      lease_seconds: how long a claim holds before another process may take it over
        (a claim by a dead process on this host is taken over at once).
      poll_seconds: how often a process waiting for another's training looks again.
    """

    def __init__(self, path: str | os.PathLike = DEFAULT_STORE, *, lease_seconds: float = DEFAULT_LEASE_S,
                 poll_seconds: float = 0.5):
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} is a file; expected a directory (created if missing)")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "blobs").mkdir(exist_ok=True)
        self.lease_seconds = float(lease_seconds)
        self.poll_seconds = float(poll_seconds)
        self.dropped: list[str] = []  # keys of corrupt entries dropped by this object
        try:
            found = self._create_schema()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open child store {self.path}: {e}") from None
        if found != str(SCHEMA_VERSION):
            raise StoreError(f"store {self.path} has schema {found}; expected {SCHEMA_VERSION}")

    def _create_schema(self) -> str:
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS children (key TEXT PRIMARY KEY, family TEXT, mode TEXT, "
                       "arch TEXT, training_seed INTEGER, metrics TEXT, train_seconds REAL, blob TEXT, "
                       "blob_sha256 TEXT, blob_bytes INTEGER, created REAL)")
            db.execute("CREATE INDEX IF NOT EXISTS children_family ON children (family, training_seed)")
            db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, host TEXT, "
                       "pid INTEGER, expires REAL)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()[0]

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path / "index.sqlite", timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return _Closing(db)

    def _blob_path(self, key: str) -> Path:
        return self.path / "blobs" / key[:2] / f"{key}.msgpack"

    @staticmethod
    def _owner() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM children").fetchone()[0])

    def get(self, key: str, *, weights: bool = True) -> StoredChild | None:
        """The stored child, or None if absent or corrupt (a corrupt entry is dropped).

        Args:
          key: a :func:`child_key`.
          weights: load the variables (False: metrics only; the blob is still checked
            against its size and SHA-256).
        """
        with self._connect() as db:
            row = db.execute("SELECT key, family, mode, arch, training_seed, metrics, train_seconds, blob, "
                             "blob_sha256, blob_bytes FROM children WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return self._load(row, weights)
        except _Corrupt as e:
            self.drop(key, str(e))
            return None

    def _load(self, row, weights: bool, check: bool = True) -> StoredChild:
        key, family, mode, arch, seed, metrics, seconds, blob, sha, size = row
        try:
            metrics_d = json.loads(metrics)
            arch_t = tuple(int(a) for a in json.loads(arch))
        except (TypeError, ValueError) as e:
            raise _Corrupt(f"unreadable index row: {e}") from None
        variables = None
        if blob and check:
            path = self.path / blob
            if not path.is_file():
                raise _Corrupt(f"weights file {path} is missing")
            if path.stat().st_size != size:
                raise _Corrupt(f"weights file {path} has {path.stat().st_size} bytes; the index says {size}")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise _Corrupt(f"weights file {path} fails its SHA-256 check")
            if weights:
                try:
                    variables = deserialize_variables(data)
                except Exception as e:  # a blob that hashes right but does not decode: written wrong
                    raise _Corrupt(f"weights file {path} does not decode: {e}") from None
        return StoredChild(key, family, mode, arch_t, int(seed), metrics_d, float(seconds), variables)

    def family_children(self, family: str, training_seed: int | None = None) -> list[StoredChild]:
        """Every child of ``family`` (optionally one training seed), without weights and
        without reading their blobs (:meth:`get` checks one before it is used)."""
        q = ("SELECT key, family, mode, arch, training_seed, metrics, train_seconds, blob, blob_sha256, "
             "blob_bytes FROM children WHERE family=?")
        args: tuple = (family,)
        if training_seed is not None:
            q += " AND training_seed=?"
            args += (int(training_seed),)
        with self._connect() as db:
            rows = db.execute(q + " ORDER BY key", args).fetchall()
        out = []
        for row in rows:
            try:
                out.append(self._load(row, weights=False, check=False))
            except _Corrupt as e:
                self.drop(row[0], str(e))
        return out

    # ------------------------------------------------------------------ writing
    def put(self, key: str, *, family: str, mode: str, arch: Sequence[int], training_seed: int, metrics: dict,
            train_seconds: float, variables=None) -> StoredChild:
        """Record a trained child (its weights first, then its index row)."""
        blob_rel, sha, size = None, None, None
        if variables is not None:
            data = serialize_variables(variables)
            path = self._blob_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            blob_rel, sha, size = str(path.relative_to(self.path)), hashlib.sha256(data).hexdigest(), len(data)
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO children VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (key, family, mode, json.dumps([int(a) for a in arch]), int(training_seed),
                        canonical_json(metrics), float(train_seconds), blob_rel, sha, size, time.time()))
        return StoredChild(key, family, mode, tuple(int(a) for a in arch), int(training_seed), dict(metrics),
                           float(train_seconds), variables)

    def drop(self, key: str, reason: str = "") -> None:
        """Remove an entry (row and weights file); logs why."""
        log.warning("child store %s: dropping entry %s (%s); it will be trained again", self.path, key, reason)
        self.dropped.append(key)
        with self._connect() as db:
            db.execute("DELETE FROM children WHERE key=?", (key,))
        try:
            self._blob_path(key).unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ claims
    def claim(self, key: str) -> bool:
        """Take the claim to train ``key``; False if a live owner holds it."""
        me, host, now = self._owner(), socket.gethostname(), time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT owner, host, pid, expires FROM claims WHERE key=?", (key,)).fetchone()
                if row is not None and row[0] != me and row[3] > now and not _dead(row[1], row[2]):
                    db.execute("ROLLBACK")
                    return False
                db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?)",
                           (key, me, host, os.getpid(), now + self.lease_seconds))
                db.execute("COMMIT")
                return True
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def release(self, key: str) -> None:
        """Give up this thread's claim on ``key`` (if it holds it)."""
        with self._connect() as db:
            db.execute("DELETE FROM claims WHERE key=? AND owner=?", (key, self._owner()))

    def train_once(self, key: str, meta: dict, train: Callable[[], tuple[Any, dict, float]],
                   *, weights: bool = True) -> tuple[StoredChild, str]:
        """The stored child ``key``, training it (once, store-wide) if it is not there.

        Args:
          key: the child's :func:`child_key`.
          meta: ``family``, ``mode``, ``arch``, ``training_seed`` of the child.
          train: ``() -> (variables or None, metrics, train_seconds)``; called at most once
            per key across every process sharing the store (unless a trainer dies).
          weights: load the variables of a reused child.

        Returns:
          ``(child, how)`` with ``how`` "reused" (found in the store, or trained meanwhile
          by another process) or "trained" (trained here).
        """
        while True:
            hit = self.get(key, weights=weights)
            if hit is not None:
                return hit, "reused"
            if self.claim(key):
                try:
                    hit = self.get(key, weights=weights)  # finished between our get and claim
                    if hit is not None:
                        return hit, "reused"
                    variables, metrics, seconds = train()
                    child = self.put(key, variables=variables, metrics=metrics, train_seconds=seconds, **meta)
                    return child, "trained"
                finally:
                    self.release(key)
            time.sleep(self.poll_seconds)


class _Corrupt(Exception):
    pass


class _Closing:
    """An sqlite3 connection that closes at the end of a ``with`` block (sqlite3's own
    context manager only commits)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


def _dead(host: str, pid: int) -> bool:
    """Whether ``pid`` on ``host`` is known to have exited (only checkable on this host)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
