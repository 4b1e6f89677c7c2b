"""Measured latency: a per-layer lookup table (LUT) timed on the current JAX backend.

A :class:`TimedUnit` is one piece of a network that is timed on its own: the stem, one
MBConv layer (expand + depthwise + SE + project + residual, at a given input resolution),
or the head (last conv, pooling, FCs). Its ``key`` is a string naming everything that
changes its latency. A :class:`LatencyLUT` maps keys to median milliseconds for one
device and batch size; it times missing units on demand (jit per unit shape, warm-up
calls, then ``repeats`` timed calls, median) and caches them in a JSON file keyed by
``"{backend}:{device_kind}|bs={batch}"``, so a table built on a GPU is never used on a CPU.

The predicted latency of an architecture is the sum over its units. That assumes
latencies add up, which layer fusion and per-call dispatch overhead break;
``benchmarks/latency_additivity.py`` measures how well it holds here.

Example (times three small units on first use, then reads the cache):

    >>> from layernas.latency import LatencyLUT
    >>> from layernas.search_spaces.mobilenet_v3 import mobilenet_v3_small_cifar
    >>> lut = LatencyLUT(path=None, repeats=3, warmup=1)   # in memory only
    >>> space = mobilenet_v3_small_cifar().with_latency(lut)
    >>> "latency" in space.cost_metrics
    True

Attach a LUT to a space with ``space.with_latency(lut)`` (or the factories'
``latency_lut=`` argument); ``space.cost(arch)["latency"]`` is then the predicted ms and
``Target("latency", max=...)`` or ``caps={"latency": ...}`` work like any other metric.
``cost_bounds`` over latency enumerates every layer option, so call
``lut.fill(space.all_units())`` first on large spaces, or keep ``measure_missing=True``
and let it time what it needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

DEFAULT_CACHE = Path(os.environ.get("LAYERNAS_CACHE", Path.home() / ".cache" / "layernas")) / "latency_lut.json"


def device_key() -> str:
    """``"{backend}:{device_kind}"`` of the default JAX device, e.g. ``"cpu:cpu"``."""
    d = jax.devices()[0]
    return f"{jax.default_backend()}:{d.device_kind}".replace(" ", "_")


def time_call(fn: Callable[[], Any], warmup: int = 3, repeats: int = 20) -> float:
    """Median wall milliseconds of ``fn()`` (its result is ``block_until_ready``-ed).

    Args:
      fn: a no-argument callable returning JAX arrays (a jitted call).
      warmup: untimed calls first (compilation happens in the first one).
      repeats: timed calls; the median is returned (robust on a busy, shared machine).
    """
    for _ in range(max(1, warmup)):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


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

    def _cfg(self) -> dict:
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
        c = self._cfg()
        return (batch, c["res"], c["res"], c["in_ch"])

    def module(self):
        """The flax module this unit times (inference mode)."""
        from layernas.search_spaces.mbconv import ConvBN, Head, MBConv, MBConvLayer, Network

        c = self._cfg()
        if self.kind == "stem":
            return ConvBN(c["out"], 3, c["s"], act=c["act"], bn_eps=c["eps"])
        if self.kind == "mbconv":
            layer = MBConvLayer(c["in_ch"], c["hidden"], c["out"], c["k"], c["s"], c["se"], c["act"])
            gate = c["gate"] if c["gate"] != "-" else "hsigmoid"
            se_act = c["se_act"] if c["se_act"] != "-" else "relu"
            return MBConv(layer, gate, se_act, c["eps"])
        if self.kind == "head":
            net = Network(resolution=c["res"], stem_ch=c["in_ch"], layers=(), names=(), head_ch=c["head"],
                          num_classes=c["classes"], head_act=c["act"], fc=tuple(c["fc"]), fc_act=c["fc_act"],
                          bn_eps=c["eps"])
            return Head(net)
        raise ValueError(f"unknown unit kind {self.kind!r}; expected stem, mbconv or head")


def compiled_call(module, input_shape, seed: int = 0) -> Callable[[], Any]:
    """A no-argument callable running one jitted inference call of ``module`` on zeros
    of ``input_shape`` (compiled on its first call)."""
    from layernas.search_spaces.mbconv import init_variables

    variables = init_variables(module, input_shape, seed)
    x = jnp.zeros(input_shape, jnp.float32)
    fn = jax.jit(lambda v, x: module.apply(v, x, train=False))
    return lambda: fn(variables, x)


def measure_module_ms(module, input_shape, warmup: int = 3, repeats: int = 20, seed: int = 0) -> float:
    """Median ms of one jitted inference call of a flax module on zeros of ``input_shape``."""
    return time_call(compiled_call(module, input_shape, seed), warmup, repeats)


def interleaved_ms(calls: list[Callable[[], Any]], rounds: int = 5, per_round: int = 3, warmup: int = 2) -> list[float]:
    """Median ms of each callable, timed in alternation: ``rounds`` rounds, each running
    every callable ``per_round`` times. On a shared machine whose load drifts, all the
    callables then see the same load, so their ratios are fair."""
    for fn in calls:
        for _ in range(max(1, warmup)):
            jax.block_until_ready(fn())
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, fn in enumerate(calls):
            for _ in range(per_round):
                t0 = time.perf_counter()
                jax.block_until_ready(fn())
                times[i].append((time.perf_counter() - t0) * 1e3)
    return [float(statistics.median(t)) for t in times]


def dispatch_overhead_ms(warmup: int = 5, repeats: int = 200) -> float:
    """Median ms of a jitted call that does (almost) nothing: the fixed per-call cost
    that a sum of per-unit latencies counts once per unit instead of once."""
    x = jnp.zeros((1,), jnp.float32)
    fn = jax.jit(lambda x: x + 1.0)
    return time_call(lambda: fn(x), warmup, repeats)


class LatencyLUT:
    """Per-unit latencies (ms) for the current device and one batch size.

    Args:
      path: JSON cache file (shared by all devices and batch sizes; entries are keyed by
        both). ``None`` keeps the table in memory only. Default:
        ``~/.cache/layernas/latency_lut.json`` (or ``$LAYERNAS_CACHE``).
      batch_size: the batch the units are timed with.
      warmup, repeats: see :func:`time_call`.
      measure_missing: time a unit missing from the table when asked for it (else raise
        KeyError naming the unit).
    """

    def __init__(self, path: str | Path | None = DEFAULT_CACHE, batch_size: int = 1, warmup: int = 3,
                 repeats: int = 20, measure_missing: bool = True):
        if batch_size < 1 or repeats < 1:
            raise ValueError(f"batch_size={batch_size} and repeats={repeats} must be >= 1")
        self.path = Path(path) if path is not None else None
        self.batch_size, self.warmup, self.repeats = int(batch_size), int(warmup), int(repeats)
        self.measure_missing = measure_missing
        self.table_key = f"{device_key()}|bs={self.batch_size}"
        self.entries: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            data = json.loads(self.path.read_text())
            self.entries = dict(data.get("tables", {}).get(self.table_key, {}))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, unit: TimedUnit) -> bool:
        return unit.key in self.entries

    def latency_ms(self, unit: TimedUnit) -> float:
        """The unit's median latency, timing it first if it is missing (and allowed)."""
        ms = self.entries.get(unit.key)
        if ms is None:
            if not self.measure_missing:
                raise KeyError(f"latency of {unit.key} is not in the LUT for {self.table_key}; call lut.fill(...)")
            ms = self.measure(unit)
            self.save()
        return ms

    def measure(self, unit: TimedUnit) -> float:
        """Time ``unit`` now and store the median (does not save)."""
        ms = measure_module_ms(unit.module(), unit.input_shape(self.batch_size), self.warmup, self.repeats)
        self.entries[unit.key] = ms
        return ms

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


def measure_arch_ms(space, arch, batch_size: int = 1, warmup: int = 3, repeats: int = 20) -> float:
    """Measured end-to-end median ms of one jitted inference call of ``space.build(arch)``."""
    r = space.spec.resolution
    return measure_module_ms(space.build(arch), (batch_size, r, r, 3), warmup, repeats)
