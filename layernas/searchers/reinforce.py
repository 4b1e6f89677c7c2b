"""REINFORCE with a factorised categorical policy, restricted to the cost target.

As in the NATS-Bench baseline scripts: one independent categorical distribution per
layer (logits start at zero, so the first samples are uniform), trained with Adam
(lr 0.01, betas 0.9/0.999, eps 1e-8, the torch defaults) on the policy-gradient loss
``-log pi(arch) * (reward - baseline)``, where the baseline is an exponential moving
average of the rewards (momentum 0.9), updated with the current reward *before* the
advantage is taken (so the first step has zero advantage), as in NATS-Bench. Adam and
the softmax are a few lines of numpy; there is no JAX in the loop.

The answer is the best architecture seen (the run loop and the benchmark pick it from the
history), not the policy's mode.

Constraint handling: the searcher knows the cost model. An architecture sampled from the
policy that violates the target is discarded before evaluation and the policy is sampled
again, so the proposals follow the policy conditioned on feasibility; the gradient uses
the unconditioned log-probability of the evaluated architecture. Duplicates are allowed,
as in NATS-Bench: an architecture sampled twice is evaluated (and charged) twice.

One gradient step is taken per result, in the order results are given to ``update``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Sequence

import numpy as np

from layernas.evaluator import EvalResult
from layernas.searchers.base import DerivedValue, Searcher, State, draws_from, feasibility_check, \
    feasible_sampler
from layernas.target import Target
from layernas.space import Arch, SearchSpace


row_max, row_sum, accumulate = np.maximum.reduce, np.add.reduce, np.add.accumulate
_ONEHOTS: dict[tuple[int, int], dict[Arch, np.ndarray]] = {}   # (layers, width) -> arch -> one-hot


def reinforce(
    space: SearchSpace,
    target: Target,
    *,
    learning_rate: float = 0.01,
    baseline_momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    max_tries: int = 10_000,
) -> Searcher:
    """Build the REINFORCE baseline.

    Args:
      space: the search space.
      target: proposals always satisfy it.
      learning_rate: Adam's step size (NATS-Bench: 0.01).
      baseline_momentum: momentum of the moving-average reward baseline (NATS-Bench: 0.9).
      betas, eps: Adam's moment decay rates and epsilon.
      max_tries: policy samples per proposal before falling back to a uniform feasible one.
    Returns:
      A :class:`Searcher` named ``"reinforce"``.
    """
    target.check(space)
    feasible = feasibility_check(space, target)
    sample_feasible = feasible_sampler(space, feasible)
    sizes = space.num_options
    width = max(sizes)
    # Padded (layers, width) logits; options beyond a layer's count are masked out.
    mask = np.arange(width)[None, :] < np.asarray(sizes)[:, None]
    masked = not mask.all()   # every layer as wide as the widest: no masking needed
    b1, b2 = betas
    rows = np.arange(len(sizes))

    def frozen(values) -> np.ndarray:
        array = np.asarray(values, dtype=float)
        array.flags.writeable = False
        return array

    # The state keeps JSON lists; their arrays (and the policy's CDF) are derived once per
    # list object, so a propose/update pair converts nothing back and forth.
    logits_of, m_of, v_of = DerivedValue(frozen), DerivedValue(frozen), DerivedValue(frozen)

    probs_of = DerivedValue(lambda logits_list: probabilities(logits_of.get(logits_list)))

    def cdf_of_logits(logits_list) -> np.ndarray:
        cdf = accumulate(probs_of.get(logits_list), axis=1)   # np.cumsum(p, axis=1)
        cdf[:, -1] = 1.0
        return cdf

    # as lists: a sample is a bisection per layer (see propose)
    cdfs = DerivedValue(lambda logits_list: cdf_of_logits(logits_list).tolist())
    onehots = _ONEHOTS.setdefault((len(sizes), width), {})

    def onehot_of(arch: Arch) -> np.ndarray:
        hit = onehots.get(arch)
        if hit is None:
            hit = np.zeros((len(sizes), width))
            hit[rows, list(arch)] = 1.0
            hit.flags.writeable = False
            if len(onehots) < 1 << 17:
                onehots[arch] = hit
        return hit

    def init(seed: int) -> State:
        zeros = np.zeros((len(sizes), width)).tolist()
        return {"searcher": "reinforce", "seed": int(seed), "draws": 0,
                "logits": zeros, "adam_m": zeros, "adam_v": zeros, "adam_t": 0,
                "baseline": None}

    def probabilities(logits: np.ndarray) -> np.ndarray:
        z = np.where(mask, logits, -np.inf) if masked else logits
        # z.max / z.sum / np.cumsum are these ufunc methods behind a Python wrapper (which
        # costs about as much as the arithmetic on a policy this small)
        z = np.exp(z - row_max(z, axis=1, keepdims=True))
        return z / row_sum(z, axis=1, keepdims=True)

    num_layers = len(sizes)

    def propose(state: State, n: int) -> tuple[list[Arch], State]:
        cdf = cdfs.get(state["logits"])
        out: list[Arch] = []
        for _ in range(n):
            rng, state = draws_from(state)   # the numbers of rng_from's Generator, cheaper
            uniforms = rng.uniforms
            arch = None
            for _ in range(max_tries):
                # one uniform u per layer, in layer order (as rng.random(layers) draws them);
                # the option is the number of CDF entries below u, (cdf < u).sum() as a
                # bisection: a CDF is non-decreasing up to entries >= 1 > u at its end
                sample = tuple(map(bisect_left, cdf, uniforms(num_layers)))
                if feasible(sample):
                    arch = sample
                    break
            if arch is None:
                arch = sample_feasible(rng)
                if arch is None:
                    raise RuntimeError(f"found no architecture of {space.name!r} inside the target")
            out.append(arch)
        return out, state

    def update(state: State, results: Sequence[EvalResult]) -> State:
        logits = logits_of.get(state["logits"])
        m, v = m_of.get(state["adam_m"]), v_of.get(state["adam_v"])
        t, baseline = int(state["adam_t"]), state["baseline"]
        if not any(result.ok for result in results):
            return state
        probs = probs_of.get(state["logits"])   # the policy propose sampled from
        for result in results:
            if not result.ok:
                continue
            reward = float(result.reward)
            baseline = reward if baseline is None else (
                baseline_momentum * baseline + (1 - baseline_momentum) * reward)
            if probs is None:
                probs = probabilities(logits)
            # d/dlogits of -log pi(arch) * advantage; (p - onehot) is -(onehot - p) exactly
            grad = (probs - onehot_of(tuple(result.arch))) * (reward - baseline)
            probs = None
            if masked:
                grad = np.where(mask, grad, 0.0)
            t += 1
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad**2
            step = learning_rate * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            logits = logits - step
        new = {**state, "logits": logits.tolist(), "adam_m": m.tolist(), "adam_v": v.tolist(),
               "adam_t": t, "baseline": baseline}
        for derived, key, array in ((logits_of, "logits", logits), (m_of, "adam_m", m), (v_of, "adam_v", v)):
            array.flags.writeable = False
            derived.put(new[key], array)
        return new

    config = {"learning_rate": learning_rate,
              "baseline_momentum": baseline_momentum,
              "betas": betas,
              "eps": eps,
              "max_tries": max_tries}
    return Searcher("reinforce", init, propose, update, config)
