"""The official NATS-Bench architecture strings, and their option indices.

NATS-Bench names every architecture by a string; a search space names it by a tuple of
option indices, one per layer. This module is the one place that translates between the
two, for both NATS spaces. It is pure data (no cost model, no JAX), so the table code
(:mod:`layernas.tables`) and the search spaces
(:mod:`layernas.search_spaces.nats_tss`, :mod:`layernas.search_spaces.nats_sss`) share it.

* **tss** (topology, = NAS-Bench-201): ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, one op
  from :data:`TSS_OPS` per cell edge, in the order of :data:`TSS_EDGES`; the tuple holds
  each edge's op index.
* **sss** (size): the five channel widths joined by ``:`` (``8:8:40:32:40``); the tuple
  holds each width's index in :data:`SSS_WIDTHS`.

Example:
    >>> parse_arch_string("tss", "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
    (3, 0, 1, 4, 0, 2)
    >>> tss_arch_string((3, 0, 1, 4, 0, 2))
    '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|'
    >>> parse_arch_string("sss", "8:8:40:32:40"), sss_arch_string((0, 0, 4, 3, 4))
    ((0, 0, 4, 3, 4), '8:8:40:32:40')
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

from layernas.space import Arch, SpaceError

KINDS = ("tss", "sss")
TSS_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of the 6 cell edges, in the order of the official arch string
TSS_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_TSS_TEMPLATE = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"
SSS_WIDTHS = (8, 16, 24, 32, 40, 48, 56, 64)
SSS_LAYERS = 5
_SSS_WIDTH_INDEX = {str(w): i for i, w in enumerate(SSS_WIDTHS)}


def tss_arch_string(arch: Sequence[int]) -> str:
    """The official tss string of an arch (op indices in edge order)."""
    return _TSS_TEMPLATE.format(*(TSS_OPS[a] for a in arch))


@functools.lru_cache(maxsize=1)
def tss_arch_of_string() -> dict[str, Arch]:
    """Every official tss string -> its arch (5**6 = 15625 entries, built once)."""
    return {tss_arch_string(arch): arch for arch in itertools.product(range(len(TSS_OPS)), repeat=len(TSS_EDGES))}


def _bad_tss(text, why: str) -> SpaceError:
    return SpaceError(f"bad NATS tss arch string {text!r}: {why}; expected "
                      "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops from " + ", ".join(TSS_OPS))


@functools.lru_cache(maxsize=None)
def _parse_tss(text: str) -> Arch:
    def bad(why: str) -> SpaceError:
        return _bad_tss(text, why)

    nodes = text.split("+")
    if len(nodes) != 3:
        raise bad(f"{len(nodes)} nodes")
    arch = []
    for to, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise bad(f"node {to} {node!r} is not enclosed in '|'")
        parts = node[1:-1].split("|")
        if len(parts) != to:
            raise bad(f"node {to} has {len(parts)} inputs, expected {to}")
        for src, part in enumerate(parts):
            op, sep, inp = part.partition("~")
            if not sep or inp != str(src):
                raise bad(f"edge {part!r} should read node {src}")
            if op not in TSS_OPS:
                raise bad(f"unknown op {op!r}")
            arch.append(TSS_OPS.index(op))
    return tuple(arch)


def parse_tss(text: str) -> Arch:
    """Parse an official tss string; SpaceError naming the text and the expected form."""
    if not isinstance(text, str):
        raise _bad_tss(text, "not a string")
    arch = tss_arch_of_string().get(text)
    return arch if arch is not None else _parse_tss(text)


def sss_arch_string(arch: Sequence[int]) -> str:
    """The official sss string of an arch (width indices): the widths joined by ':'."""
    return ":".join(str(SSS_WIDTHS[a]) for a in arch)


def parse_sss(text: str) -> Arch:
    """Parse ``w:w:w:w:w``; SpaceError naming the text if it is not an sss string."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != SSS_LAYERS or not all(p in _SSS_WIDTH_INDEX for p in parts):
        raise SpaceError(
            f"bad NATS sss arch string {text!r}: expected {SSS_LAYERS} widths from "
            f"{', '.join(map(str, SSS_WIDTHS))} joined by ':' (e.g. '8:8:40:32:40')"
        )
    return tuple(_SSS_WIDTH_INDEX[p] for p in parts)


def parse_arch_string(kind: str, text: str) -> Arch:
    """Parse an official NATS arch string of space ``kind`` ('tss' or 'sss').

    Raises:
      SpaceError: the text is not such a string (naming it and the expected form), or
        ``kind`` is not a NATS space.
    """
    if kind == "tss":
        return parse_tss(text)
    if kind == "sss":
        return parse_sss(text)
    raise SpaceError(f"unknown NATS space {kind!r}; expected one of {', '.join(KINDS)}")


__all__ = ["KINDS", "TSS_OPS", "TSS_EDGES", "SSS_WIDTHS", "SSS_LAYERS", "tss_arch_string", "tss_arch_of_string",
           "parse_tss", "sss_arch_string", "parse_sss", "parse_arch_string"]
