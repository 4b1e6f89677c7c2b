"""What every searcher shares: the init/propose/update protocol.

A searcher is a :class:`Searcher`: a name and three pure functions, like an optax
``GradientTransformation``::

    state = searcher.init(seed)
    archs, state = searcher.propose(state, n)      # up to n architectures to evaluate
    state = searcher.update(state, results)        # results: list[EvalResult]

States are plain JSON-able values (dicts, lists, numbers, strings) that are never
modified in place: ``propose`` and ``update`` return a new state. Saving a state with
``json.dumps`` and loading it back resumes the search exactly. Randomness is explicit:
the seed lives in the state together with a counter of draws.

``propose`` may return fewer than ``n`` architectures (even none) while it waits for
results it needs (LayerNAS finishes a layer before it starts the next one). When it
returns none and no trial is in flight, the search is over.
"""

from __future__ import annotations

import collections
import json
import threading
import types
import weakref
from typing import Any, Callable, Generic, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np

from layernas.evaluator import EvalResult
from layernas.space import Arch, SearchSpace
from layernas.target import Target

State = dict[str, Any]


class Searcher(NamedTuple):
    """A search strategy as pure functions. See the module docstring.

    ``config`` is the searcher's options as resolved, every default and preset filled in
    (JSON-able). A run records it, and a resume refuses a searcher whose resolved options
    differ, so a changed default never silently changes a resumed search.
    ``added_options`` names the options added after runs began recording ``config``, each
    with the value the searcher had before the option existed: a recorded config without
    one of them is read as having that value.
    """

    name: str
    init: Callable[[int], State]
    propose: Callable[[State, int], tuple[list[Arch], State]]
    update: Callable[[State, Sequence[EvalResult]], State]
    config: Mapping[str, Any] = types.MappingProxyType({})
    added_options: Mapping[str, Any] = types.MappingProxyType({})


def arch_key(arch: Sequence[int]) -> str:
    """The JSON-able key of an architecture inside searcher states."""
    return ",".join(str(int(a)) for a in arch)


_ARCH_KEYS: dict = {}   # arch tuple -> arch_key(arch), for memo_arch_key


def memo_arch_key(arch: Arch) -> str:
    """:func:`arch_key` of an architecture tuple, memoised (table searches key the same
    few thousand architectures over and over)."""
    key = _ARCH_KEYS.get(arch)
    if key is None:
        key = arch_key(arch)
        if len(_ARCH_KEYS) < 1 << 18:
            _ARCH_KEYS[arch] = key
    return key


def key_arch(key: str) -> Arch:
    return tuple(int(a) for a in key.split(",")) if key else ()


_STREAM_CACHE_SIZE = 1 << 16
_streams: collections.OrderedDict = collections.OrderedDict()   # (seed, draws) -> PCG64 state
_local = threading.local()


def rng_from(state: State) -> tuple[np.random.Generator, State]:
    """A numpy Generator for the next draw, and the state with its draw counter bumped.

    The stream is ``np.random.default_rng([seed, draws])``: a pure function of the state,
    so saving the state saves the RNG. Seeding costs ~12 us, so the starting points of
    recently used streams are kept (runs that share a seed share their streams), and the
    generator reuses one bit generator per thread: use it for this draw only, before the
    next ``rng_from`` call in the same thread.
    """
    key = (int(state["seed"]), int(state["draws"]))
    start = _streams.get(key)
    if start is None:
        start = np.random.PCG64(np.random.SeedSequence(list(key))).state
        _streams[key] = start
        if len(_streams) > _STREAM_CACHE_SIZE:
            _streams.popitem(last=False)
    bits = getattr(_local, "bits", None)
    if bits is None:
        bits = _local.bits = np.random.PCG64(0)
    bits.state = start
    return np.random.Generator(bits), {**state, "draws": key[1] + 1}


_WORDS_FIRST = 32             # raw 64-bit words read when a stream is first used
_stream_words: collections.OrderedDict = collections.OrderedDict()   # (seed, draws) -> _Stream


_NO_SEED = np.random.SeedSequence(0)   # a PCG64(seed) runs SeedSequence(seed) (~10 us); its state is replaced


def _scratch_bits() -> np.random.PCG64:
    """This thread's scratch bit generator (set its state before use)."""
    bits = getattr(_local, "scratch", None)
    if bits is None:
        bits = _local.scratch = np.random.PCG64(_NO_SEED)
    return bits


class _Stream:
    """The start state of one ``default_rng([seed, draws])`` stream and the raw PCG64 words
    read from it so far (a prefix of the stream, extended on demand, never changed)."""

    __slots__ = ("start", "words")

    def __init__(self, start: dict, words: list):
        self.start, self.words = start, words

    def extend(self, at_least: int) -> list:
        bits = _scratch_bits()
        bits.state = self.start
        have = len(self.words)
        bits.advance(have)
        self.words = self.words + bits.random_raw(max(at_least - have, have, _WORDS_FIRST)).tolist()
        return self.words


class Draws:
    """The numbers a ``np.random.default_rng([seed, draws])`` Generator would give, read from
    the stream's raw PCG64 words, which are computed once and shared by every run that uses
    the same stream (table benchmarks run each seed in many settings).

    ``integers(n)`` is ``int(Generator.integers(n))`` and ``random()`` is
    ``float(Generator.random())``, number for number and in any order: numpy draws a bounded
    integer below 2**32 by Lemire's method on 32-bit halves of the words (the upper half
    kept for the next 32-bit draw) and a double from the top 53 bits of a whole word, and
    so does this (tests check it against numpy). A tenth of the cost of numpy's scalar
    calls, which is most of a baseline searcher's step on a table. ``generator()`` hands
    over a numpy Generator at exactly this point of the stream, for anything else; after
    it, this object draws from that generator.
    """

    __slots__ = ("_stream", "_words", "_pos", "_half", "_gen")

    def __init__(self, stream: _Stream):
        self._stream, self._words, self._pos, self._half, self._gen = stream, stream.words, 0, None, None

    def _word(self) -> int:
        pos = self._pos
        words = self._words
        if pos >= len(words):
            words = self._words = self._stream.extend(pos + 1)
        self._pos = pos + 1
        return words[pos]

    def integers(self, n: int) -> int:
        """A uniform integer in ``[0, n)``, ``1 <= n <= 2**32``: ``int(Generator.integers(n))``."""
        if self._gen is not None:
            return int(self._gen.integers(n))
        if n <= 1:
            if n == 1:
                return 0      # numpy draws nothing for a range of one
            raise ValueError(f"integers({n}): high <= 0")
        if n > 0x100000000:
            raise ValueError(f"integers({n}): Draws covers n <= 2**32; use generator()")
        while True:
            half = self._half
            if half is None:
                word = self._word()
                self._half, half = word >> 32, word & 0xFFFFFFFF
            else:
                self._half = None
            if n == 0x100000000:
                return half
            m = half * n
            leftover = m & 0xFFFFFFFF
            if leftover >= n or leftover >= (0x100000000 - n) % n:
                return m >> 32

    def integers_each(self, bounds: Sequence[int]) -> list[int]:
        """One uniform integer below each bound, in order:
        ``[self.integers(n) for n in bounds]``, in one call (a random architecture).

        Args:
          bounds: the exclusive upper bounds, each in ``[1, 2**32]``.

        Returns:
          the integers, as a list.
        """
        if self._gen is not None or not bounds or min(bounds) < 1 or max(bounds) > 0x100000000:
            return [self.integers(n) for n in bounds]   # (raises where integers raises)
        out = []
        half, pos, words = self._half, self._pos, self._words
        for n in bounds:
            if n == 1:
                out.append(0)   # numpy draws nothing for a range of one
                continue
            while True:   # integers(n), with the stream position in locals
                if half is None:
                    if pos >= len(words):
                        words = self._words = self._stream.extend(pos + 1)
                    word = words[pos]
                    pos += 1
                    low, half = word & 0xFFFFFFFF, word >> 32
                else:
                    low, half = half, None
                if n == 0x100000000:
                    out.append(low)
                    break
                m = low * n
                leftover = m & 0xFFFFFFFF
                if leftover >= n or leftover >= (0x100000000 - n) % n:
                    out.append(m >> 32)
                    break
        self._half, self._pos = half, pos
        return out

    def random(self) -> float:
        """A uniform float in ``[0, 1)``: ``float(Generator.random())``."""
        if self._gen is not None:
            return float(self._gen.random())
        return (self._word() >> 11) * (1.0 / 9007199254740992.0)

    def uniforms(self, k: int) -> list[float]:
        """``k`` uniform floats in ``[0, 1)``: ``[self.random() for _ in range(k)]``, in one call.

        Args:
          k: how many numbers to draw.

        Returns:
          the numbers, as a list of floats.
        """
        if self._gen is not None:
            random = self._gen.random
            return [float(random()) for _ in range(k)]
        pos = self._pos
        end = pos + k
        words = self._words
        if end > len(words):
            words = self._words = self._stream.extend(end)
        self._pos = end
        return [(word >> 11) * (1.0 / 9007199254740992.0) for word in words[pos:end]]

    def generator(self) -> np.random.Generator:
        """A numpy Generator at this point of the stream (this object then draws from it)."""
        if self._gen is None:
            bits = np.random.PCG64(_NO_SEED)   # its own bit generator: the caller keeps it
            bits.state = self._stream.start
            bits.advance(self._pos)
            if self._half is not None:
                state = bits.state
                state["has_uint32"], state["uinteger"] = 1, self._half
                bits.state = state
            self._gen = np.random.Generator(bits)
        return self._gen


def draws_from(state: State) -> tuple[Draws, State]:
    """:func:`rng_from` as :class:`Draws`: the same stream, ``default_rng([seed, draws])``,
    and the state with its draw counter bumped."""
    seed, draws = state["seed"], state["draws"]
    key = (seed, draws) if type(seed) is int and type(draws) is int else (int(seed), int(draws))
    stream = _stream_words.get(key)
    if stream is None:
        bits = np.random.PCG64(np.random.SeedSequence(list(key)))
        stream = _stream_words[key] = _Stream(bits.state, bits.random_raw(_WORDS_FIRST).tolist())
        if len(_stream_words) > _STREAM_CACHE_SIZE:
            _stream_words.popitem(last=False)
    return Draws(stream), {**state, "draws": key[1] + 1}


_T = TypeVar("_T")


class DerivedValue(Generic[_T]):
    """A one-entry cache of a value derived from an immutable state part, keyed by the
    part's identity (states are never modified in place, so the same object always
    derives the same value). It keeps a reference to the part, so the identity cannot be
    reused while cached.

    Example:
        >>> seen = DerivedValue(set)
        >>> keys = ["0,1", "1,1"]
        >>> seen.get(keys) == {"0,1", "1,1"} and seen.get(keys) is seen.get(keys)
        True
    """

    def __init__(self, derive: Callable[[Any], _T]):
        self.derive = derive
        self._part: Any = None
        self._value: _T | None = None

    def get(self, part: Any) -> _T:
        if part is not self._part or self._value is None:
            self._value = self.derive(part)
            self._part = part
        return self._value

    def put(self, part: Any, value: _T) -> None:
        """Record ``value`` as derived from ``part`` (a state part just built)."""
        self._part, self._value = part, value


_feasible_caches: "weakref.WeakKeyDictionary[SearchSpace, dict[str, dict]]" = weakref.WeakKeyDictionary()
_cost_caches: "weakref.WeakKeyDictionary[SearchSpace, dict]" = weakref.WeakKeyDictionary()


def cost_memo(space: SearchSpace) -> Callable[[Arch], dict]:
    """``arch -> space.cost(arch)``, memoised in one table shared by everything that asks
    the same space object: the searchers, their feasibility checks and the run loop
    (``cost`` is a pure function of the architecture; the returned dicts must not be
    modified). A space that cannot be weakly referenced gets a private memo."""
    try:
        memo = _cost_caches.setdefault(space, {})
    except TypeError:
        memo = {}
    compute = space.cost

    def cost(arch: Arch) -> dict:
        hit = memo.get(arch)
        if hit is None:
            hit = memo[arch] = compute(arch)
        return hit

    return cost


def feasibility_check(space: SearchSpace, target: Target) -> Callable[[Arch], bool]:
    """A cached ``arch -> target.feasible(space.cost(arch))`` for searchers that must never
    propose an architecture outside the target (the baselines know the cost model, so
    they reject infeasible architectures before evaluation, at no evaluation cost).
    Searchers built for the same space object and an equal target share the cache."""
    try:
        per_space = _feasible_caches.setdefault(space, {})
    except TypeError:   # a space that cannot be weakly referenced: a private cache
        per_space = {}
    cache: dict[Arch, bool] = per_space.setdefault(json.dumps(target.to_dict(), sort_keys=True), {})
    cost = cost_memo(space)   # shared by the targets (and the run loop) of this space

    def feasible(arch: Arch) -> bool:
        hit = cache.get(arch)
        if hit is None:
            hit = cache[arch] = bool(target.feasible(cost(arch)))
        return hit

    return feasible


def feasible_sampler(
    space: SearchSpace, feasible: Callable[[Arch], bool]
) -> Callable[..., Arch | None]:
    """:func:`sample_feasible` for one space and feasibility check, with everything that
    does not depend on the draw (the layer sizes, which sampler the space has) settled
    once: for a searcher that samples at every proposal.

    Args:
      space: the search space.
      feasible: ``arch -> bool``.

    Returns:
      ``sample(rng, *, exclude=frozenset(), max_tries=10_000)``, drawing exactly what
      ``sample_feasible(rng, space, feasible, exclude=..., max_tries=...)`` draws.
    """
    default_sampler = type(space).random_arch is SearchSpace.random_arch
    sizes = space.num_options   # the default sampler, with its sizes read once
    random_arch = space.random_arch

    def sample(rng: "np.random.Generator | Draws", *, exclude: set | frozenset = frozenset(),
               max_tries: int = 10_000) -> Arch | None:
        if default_sampler:
            if type(rng) is Draws:
                integers_each = rng.integers_each
                for _ in range(max_tries):
                    arch = tuple(integers_each(sizes))
                    if feasible(arch) and arch not in exclude:
                        return arch
                return None
            integers = rng.integers
            def draw() -> Arch:
                return tuple([int(integers(n)) for n in sizes])
        else:
            generator = rng.generator() if isinstance(rng, Draws) else rng

            def draw() -> Arch:
                return random_arch(generator)
        for _ in range(max_tries):
            arch = draw()
            if feasible(arch) and arch not in exclude:
                return arch
        return None

    return sample


def sample_feasible(
    rng: "np.random.Generator | Draws",
    space: SearchSpace,
    feasible: Callable[[Arch], bool],
    *,
    exclude: set | frozenset = frozenset(),
    max_tries: int = 10_000,
) -> Arch | None:
    """A uniformly random feasible architecture not in ``exclude`` (a set of architecture
    tuples), by rejection sampling; None if ``max_tries`` draws find none. Uniform over the
    feasible, non-excluded set (rejection sampling does not bias it). Draws exactly what
    ``space.random_arch(rng)`` draws. ``rng``: a numpy Generator or :class:`Draws`.
    (:func:`feasible_sampler` builds the same sampler once, for repeated use.)"""
    return feasible_sampler(space, feasible)(rng, exclude=exclude, max_tries=max_tries)
