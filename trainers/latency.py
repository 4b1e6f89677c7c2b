"""Measured latency: time network units on the current JAX backend and fill a LUT.

:class:`LatencyLUT` is a :class:`layernas.latency.LatencyTable` (the pure, per-device
table of :class:`~layernas.latency.TimedUnit` latencies) that times the units it is
missing: jit per unit shape, warm-up calls, then ``repeats`` timed calls, median. It keys
its table by this process's JAX device (:func:`device_key`) and batch size, and caches it
in a JSON file, so a table built on a GPU is never used on a CPU.

The predicted latency of an architecture is the sum over its units. That assumes
latencies add up, which layer fusion and per-call dispatch overhead break;
``benchmarks/latency_additivity.py`` measures how well it holds here.

Example (times three small units on first use, then reads the cache):

    >>> from layernas.trainers.latency import LatencyLUT
    >>> from layernas.search_spaces.mobilenet_v3 import mobilenet_v3_small_cifar
    >>> lut = LatencyLUT(path=None, repeats=3, warmup=1)   # in memory only
    >>> space = mobilenet_v3_small_cifar().with_latency(lut)
    >>> "latency" in space.cost_metrics
    True

``cost_bounds`` over latency enumerates every layer option, so call
``lut.fill(space.all_units())`` first on large spaces, or keep ``measure_missing=True``
and let it time what it needs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from layernas.latency import DEFAULT_CACHE, LatencyTable, TimedUnit, table_key
from layernas.search_spaces.mbconv import MBConvLayer, Network
from layernas.trainers.mbconv_model import ConvBN, Head, MBConv, init_variables
from layernas.trainers.models import build_model


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


def unit_module(unit: TimedUnit):
    """The flax module a :class:`~layernas.latency.TimedUnit` times (inference mode).

    Args:
      unit: a stem, mbconv or head unit.
    Returns:
      the module; its input has shape ``unit.input_shape(batch)``.
    """
    c = unit.settings()
    if unit.kind == "stem":
        return ConvBN(c["out"], 3, c["s"], act=c["act"], bn_eps=c["eps"])
    if unit.kind == "mbconv":
        layer = MBConvLayer(c["in_ch"], c["hidden"], c["out"], c["k"], c["s"], c["se"], c["act"])
        gate = c["gate"] if c["gate"] != "-" else "hsigmoid"
        se_act = c["se_act"] if c["se_act"] != "-" else "relu"
        return MBConv(layer, gate, se_act, c["eps"])
    if unit.kind == "head":
        net = Network(resolution=c["res"], stem_ch=c["in_ch"], layers=(), names=(), head_ch=c["head"],
                      num_classes=c["classes"], head_act=c["act"], fc=tuple(c["fc"]), fc_act=c["fc_act"],
                      bn_eps=c["eps"])
        return Head(net)
    raise ValueError(f"unknown unit kind {unit.kind!r}; expected stem, mbconv or head")


def compiled_call(module, input_shape, seed: int = 0) -> Callable[[], Any]:
    """A no-argument callable running one jitted inference call of ``module`` on zeros
    of ``input_shape`` (compiled on its first call)."""
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


class LatencyLUT(LatencyTable):
    """Per-unit latencies (ms) for the current JAX device and one batch size, timed on demand.

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
        self.batch_size, self.warmup, self.repeats = int(batch_size), int(warmup), int(repeats)
        super().__init__(table_key(device_key(), self.batch_size), path, measure_missing)

    def measure(self, unit: TimedUnit) -> float:
        """Time ``unit`` now and store the median (does not save)."""
        ms = measure_module_ms(unit_module(unit), unit.input_shape(self.batch_size), self.warmup, self.repeats)
        self.entries[unit.key] = ms
        return ms


def measure_arch_ms(space, arch: Sequence[int], batch_size: int = 1, warmup: int = 3, repeats: int = 20) -> float:
    """Measured end-to-end median ms of one jitted inference call of a layerwise space's model.

    Args:
      space: a :class:`~layernas.search_spaces.layerwise.LayerwiseSpace`.
      arch: the architecture (option indices).
      batch_size, warmup, repeats: see :func:`time_call`.
    Returns:
      the median ms of ``build_model(space, arch)`` on zeros of the space's input size.
    """
    r = space.spec.resolution
    return measure_module_ms(build_model(space, arch), (batch_size, r, r, 3), warmup, repeats)
