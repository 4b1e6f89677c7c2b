"""Latency lookup tables as data: timed units, per-device tables, additive predictions.

A :class:`TimedUnit` is one piece of a network that is timed on its own: the stem, one
MBConv layer (expand + depthwise + SE + project + residual, at a given input resolution),
or the head (last conv, pooling, FCs). Its ``key`` is a string naming everything that
changes its latency. A :class:`LatencyTable` maps keys to median milliseconds for one
device and batch size, and is stored in a JSON file under the table key
``"{backend}:{device_kind}|bs={batch}"`` (:func:`table_key`), so a table built on a GPU is
never read on a CPU.

The predicted latency of an architecture is the sum over its units
(:meth:`LatencyTable.predict_ms`). That assumes latencies add up, which layer fusion and
per-call dispatch overhead break; ``benchmarks/latency_additivity.py`` measures how well
it holds.

This module is pure Python (no jax): a space can read a recorded table, and a search can
cap latency, without the accelerator stack. Timing units on the current JAX device is the
trainers' job: :class:`layernas.trainers.latency.LatencyLUT` is a :class:`LatencyTable`
that times the units it is missing.

Example (a table read back from its JSON file, no timing):

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> unit = TimedUnit.stem(32, 3, 16, 1, "relu6")
    >>> path = Path(tempfile.mkdtemp()) / "lut.json"
    >>> key = table_key("cpu:cpu", 1)
    >>> _ = path.write_text(json.dumps({"format": 1, "tables": {key: {unit.key: 0.25}}}))
    >>> table = LatencyTable(key, path)
    >>> table.predict_ms([unit, unit])
    0.5

Attach a table to a layerwise space with ``space.with_latency(table)`` (or the factories'
``latency_lut=`` argument); ``space.cost(arch)["latency"]`` is then the predicted ms and
``Target("latency", max=...)`` or ``caps={"latency": ...}`` work like any other metric.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

DEFAULT_CACHE = Path(os.environ.get("LAYERNAS_CACHE", Path.home() / ".cache" / "layernas")) / "latency_lut.json"


def table_key(device: str, batch_size: int) -> str:
    """The key of one device's table for one batch size, e.g. ``"cpu:cpu|bs=1"``.

    Args:
      device: ``"{backend}:{device_kind}"`` (see :func:`layernas.trainers.latency.device_key`).
      batch_size: the batch the units are timed with.
    Returns:
      the key under which the table is stored in the JSON file.
    """
    return f"{device}|bs={int(batch_size)}"


@dataclasses.dataclass(frozen=True)
class TimedUnit:
    """One separately timed piece of a network.

    Attributes:
      kind: ``"stem"``, ``"mbconv"`` or ``"head"``.
      config: sorted ``(name, value)`` pairs that fully determine the module and its input.
    """

    kind: str
    config: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        return self.kind + "(" + ",".join(f"{k}={v}" for k, v in self.config) + ")"

    def settings(self) -> dict:
        """The unit's ``config`` as a dict (what a module builder reads)."""
        return dict(self.config)

    @classmethod
    def _make(cls, kind: str, **config) -> "TimedUnit":
        return cls(kind, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items())))

    @classmethod
    def stem(cls, resolution, in_ch, out_ch, stride, act, bn_eps=1e-5) -> "TimedUnit":
        return cls._make("stem", res=resolution, in_ch=in_ch, out=out_ch, s=stride, act=act, eps=bn_eps)

    @classmethod
    def mbconv(cls, layer, resolution, se_gate="hsigmoid", se_act="relu", bn_eps=1e-5) -> "TimedUnit":
        return cls._make("mbconv", res=resolution, in_ch=layer.in_ch, hidden=layer.hidden, out=layer.out_ch,
                         k=layer.kernel, s=layer.stride, se=layer.se_ch, act=layer.act,
                         gate=se_gate if layer.se_ch else "-", se_act=se_act if layer.se_ch else "-", eps=bn_eps)

    @classmethod
    def head(cls, resolution, in_ch, head_ch, head_act, fc, fc_act, num_classes, bn_eps=1e-5) -> "TimedUnit":
        return cls._make("head", res=resolution, in_ch=in_ch, head=head_ch, act=head_act, fc=tuple(fc), fc_act=fc_act,
                         classes=num_classes, eps=bn_eps)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        c = self.settings()
        return (batch, c["res"], c["res"], c["in_ch"])


class LatencyTable:
    """Per-unit latencies (ms) of one device and one batch size.

    Args:
      key: the table key (:func:`table_key`); only this table of the JSON file is read.
      path: JSON file holding tables of any number of devices and batch sizes. ``None``
        keeps the table in memory only.
      measure_missing: time a unit missing from the table when asked for it (with
        :meth:`measure`, which a timing subclass provides), else raise KeyError naming the
        unit.
    """

    def __init__(self, key: str, path: str | Path | None = None, measure_missing: bool = False):
        self.path = Path(path) if path is not None else None
        self.table_key = key
        self.measure_missing = measure_missing
        self.entries: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self.entries = dict(data.get("tables", {}).get(self.table_key, {}))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, unit: TimedUnit) -> bool:
        return unit.key in self.entries

    def latency_ms(self, unit: TimedUnit) -> float:
        """The unit's median latency, timing it first if it is missing (and allowed).

        Raises:
          KeyError: the unit is not in the table and ``measure_missing`` is off.
        """
        ms = self.entries.get(unit.key)
        if ms is None:
            if not self.measure_missing:
                raise KeyError(f"latency of {unit.key} is not in the LUT for {self.table_key}; call lut.fill(...)")
            ms = self.measure(unit)
            self.save()
        return ms

    def measure(self, unit: TimedUnit) -> float:
        """Time ``unit`` now and store its median ms (a timing subclass implements this)."""
        raise KeyError(f"latency of {unit.key} is not in the LUT for {self.table_key}, and a LatencyTable "
                       f"cannot time units; use layernas.trainers.latency.LatencyLUT to measure them")

    def fill(self, units: Iterable[TimedUnit], progress: bool = False) -> int:
        """Time every unit not yet in the table; save; return how many were timed."""
        todo = {u.key: u for u in units if u.key not in self.entries}
        for i, unit in enumerate(todo.values()):
            self.measure(unit)
            if progress:
                print(f"[lut] {i + 1}/{len(todo)} {unit.key}: {self.entries[unit.key]:.4f} ms", flush=True)
        if todo:
            self.save()
        return len(todo)

    def predict_ms(self, units: Iterable[TimedUnit]) -> float:
        """Sum of the units' latencies (the additive prediction)."""
        return float(sum(self.latency_ms(u) for u in units))

    def save(self) -> None:
        """Merge this table into the JSON cache file atomically (no-op without a path)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(self.path.read_text()) if self.path.exists() else {"format": 1, "tables": {}}
        data.setdefault("tables", {}).setdefault(self.table_key, {}).update(self.entries)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
