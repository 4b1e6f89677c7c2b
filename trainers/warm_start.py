"""Warm start: a child begins from its parent's trained weights where they still apply.

A LayerNAS child differs from its parent in one layer. In the NATS topology space (tss)
a layer is one cell edge, shared by every cell of the network, so a child's variables
split into

* those of its *changed* edge (in every cell): freshly initialised, as from scratch;
* everything else (stem, reduction blocks, the other five edges of every cell, the
  classifier, BatchNorm statistics): copied from the parent's trained variables.

The child then trains for fewer epochs (:class:`WarmStart`), with the same optimizer
started afresh. A variable is copied only when its path lies outside the changed scopes
and its shape equals the parent's, so a copy can never be silently wrong.

The parent is looked up in the :class:`~layernas.trainers.child_store.ChildStore`:
any stored child of the same family and training seed whose architecture differs in
exactly one layer (the LayerNAS parent always qualifies once it is trained); among several,
the one with the best proxy reward, then the smallest key.

Example:
    >>> from layernas.trainers import warm_start
    >>> sorted(warm_start.tss_changed_scopes((3, 3, 3, 3, 3, 3), (3, 1, 3, 3, 3, 3)))
    ['edge_2_0']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from layernas.trainers.nats_models import TSS_EDGES


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """How a warm-started child trains.

    Attributes:
      epochs: epochs of training after the copy (fewer than the scratch recipe's).
    """

    epochs: int = 1

    def __post_init__(self):
        if int(self.epochs) < 1:
            raise ValueError(f"warm-start epochs={self.epochs}; expected a positive integer")

    @property
    def mode(self) -> str:
        """The store mode of children trained this way."""
        return f"warm-{int(self.epochs)}ep"


def hamming(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of layers where two architectures differ."""
    return sum(int(x) != int(y) for x, y in zip(a, b))


def tss_changed_scopes(parent_arch: Sequence[int], child_arch: Sequence[int]) -> set[str]:
    """The flax scope names (``edge_<to>_<src>``) of the tss edges whose op differs."""
    if len(parent_arch) != len(TSS_EDGES) or len(child_arch) != len(TSS_EDGES):
        raise ValueError(f"tss architectures have {len(TSS_EDGES)} layers; got {tuple(parent_arch)} "
                         f"and {tuple(child_arch)}")
    return {f"edge_{to}_{src}" for (to, src), p, c in zip(TSS_EDGES, parent_arch, child_arch) if int(p) != int(c)}


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def inherit(fresh, parent, changed_scopes: Iterable[str]) -> tuple[Any, dict]:
    """Copy ``parent``'s variables into ``fresh`` outside ``changed_scopes``.

    Args:
      fresh: the child's freshly initialised variables (a pytree of arrays).
      parent: the parent's trained variables (nested dicts, e.g. from the store).
      changed_scopes: module names whose variables stay fresh wherever they occur in a path.

    Returns:
      ``(variables, counts)``: the child's starting variables (NumPy arrays) and
      ``{"inherited": n, "fresh": m}`` leaf counts (``fresh`` includes leaves the parent
      lacks or has in another shape).
    """
    changed = set(changed_scopes)
    counts = {"inherited": 0, "fresh": 0}

    def lookup(names):
        node = parent
        for n in names:
            if not isinstance(node, dict) or n not in node:
                return None
            node = node[n]
        return node

    def pick(path, leaf):
        names = _path_names(path)
        src = None if changed & set(names) else lookup(names)
        if src is not None and np.shape(src) == np.shape(leaf):
            counts["inherited"] += 1
            return np.asarray(src, dtype=np.asarray(leaf).dtype)
        counts["fresh"] += 1
        return np.asarray(leaf)

    out = jax.tree_util.tree_map_with_path(pick, jax.device_get(fresh))
    return out, counts


def find_parent(store, family: str, arch: Sequence[int], training_seed: int, *, weights: bool = True):
    """The best stored one-layer neighbour of ``arch`` with weights, or None.

    Args:
      store: a :class:`~layernas.trainers.child_store.ChildStore`.
      family: the family key the child is trained in.
      arch: the child's architecture.
      training_seed: the child's training seed (parents of other seeds are not used).
      weights: load (and check) the parent's variables; False only says whether one exists.

    Returns:
      the parent :class:`~layernas.trainers.child_store.StoredChild` with its variables
      loaded, or None.
    """
    found = [c for c in store.family_children(family, training_seed)
             if hamming(c.arch, arch) == 1 and c.metrics.get("status") == "ok"]
    found.sort(key=lambda c: (-float(c.metrics.get("valid_accuracy", float("-inf"))), c.key))
    if not weights:
        return found[0] if found else None
    for c in found:
        full = store.get(c.key)
        if full is not None and full.variables is not None:
            return full
    return None
