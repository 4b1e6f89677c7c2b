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
from layernas.searchers.base import DerivedValue, Searcher, State, draws_from, feasibility_check, sample_feasible
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
    # list object, so a propose/update pair converts nothing back and forth. Adam's two
    # moments are one (2, layers, width) array: each elementwise step below is one numpy
    # call for both (the same operations on the same numbers as a call per moment).
    logits_of = DerivedValue(frozen)
    moments_of: list = [None, None, None]   # [adam_m list, adam_v list, their (2, L, W) array]

    def moments(state: State) -> np.ndarray:
        m_list, v_list = state["adam_m"], state["adam_v"]
        if m_list is not moments_of[0] or v_list is not moments_of[1]:
            moments_of[:] = [m_list, v_list, frozen([m_list, v_list])]
        return moments_of[2]

    shape = (len(sizes), width)
    decay = np.array([b1, b2]).reshape(2, 1, 1)              # b1 * m, b2 * v
    keep = np.array([1 - b1, 1 - b2]).reshape(2, 1, 1)       # (1 - b1) * grad, (1 - b2) * grad**2
    # scratch arrays of one call (a call never keeps them; every searcher has its own)
    shifted, exps = np.empty(shape), np.empty(shape)
    row_top, row_total = np.empty((len(sizes), 1)), np.empty((len(sizes), 1))
    cumulative = np.empty(shape)
    grads, corrected, bias = np.empty((2,) + shape), np.empty((2,) + shape), np.empty((2, 1, 1))
    unmasked = ~mask

    def probabilities(logits: np.ndarray) -> np.ndarray:
        """softmax per layer: ``exp(z - max) / sum(exp(z - max))`` on the masked logits."""
        z = np.where(mask, logits, -np.inf) if masked else logits
        # z.max / z.sum are these ufunc methods behind a Python wrapper (which costs about
        # as much as the arithmetic on a policy this small)
        row_max(z, 1, None, row_top, True)
        np.subtract(z, row_top, out=shifted)
        np.exp(shifted, out=exps)   # input and output contiguous and apart, as np.exp(z - max)
        row_sum(exps, 1, None, row_total, True)
        return np.divide(exps, row_total)

    probs_of = DerivedValue(lambda logits_list: probabilities(logits_of.get(logits_list)))

    def cdf_of_logits(logits_list) -> list:
        cdf = accumulate(probs_of.get(logits_list), 1, None, cumulative)   # np.cumsum(p, axis=1)
        cdf[:, -1] = 1.0
        return cdf.tolist()

    # as lists: a sample is a bisection per layer (see propose)
    cdfs = DerivedValue(cdf_of_logits)
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
                arch = sample_feasible(rng, space, feasible)
                if arch is None:
                    raise RuntimeError(f"found no architecture of {space.name!r} inside the target")
            out.append(arch)
        return out, state

    def update(state: State, results: Sequence[EvalResult]) -> State:
        if not any(result.ok for result in results):
            return state
        logits, mv = logits_of.get(state["logits"]), moments(state)
        t, baseline = int(state["adam_t"]), state["baseline"]
        probs = probs_of.get(state["logits"])   # the policy propose sampled from
        grad, grad2 = grads[0], grads[1]
        for result in results:
            if not result.ok:
                continue
            reward = float(result.reward)
            baseline = reward if baseline is None else (
                baseline_momentum * baseline + (1 - baseline_momentum) * reward)
            if probs is None:
                probs = probabilities(logits)
            # d/dlogits of -log pi(arch) * advantage; (p - onehot) is -(onehot - p) exactly
            np.subtract(probs, onehot_of(tuple(result.arch)), out=grad)
            np.multiply(grad, reward - baseline, out=grad)
            probs = None
            if masked:
                np.copyto(grad, 0.0, where=unmasked)   # np.where(mask, grad, 0.0)
            t += 1
            np.multiply(grad, grad, out=grad2)         # grad**2
            np.multiply(grads, keep, out=grads)        # (1 - b1) * grad, (1 - b2) * grad**2
            mv = np.multiply(decay, mv)                # b1 * m, b2 * v
            np.add(mv, grads, out=mv)                  # m, v
            bias[0, 0, 0], bias[1, 0, 0] = 1 - b1**t, 1 - b2**t
            np.divide(mv, bias, out=corrected)         # m / (1 - b1**t), v / (1 - b2**t)
            m_hat, v_hat = corrected[0], corrected[1]
            np.sqrt(v_hat, out=v_hat)
            np.add(v_hat, eps, out=v_hat)
            np.multiply(m_hat, learning_rate, out=m_hat)
            np.divide(m_hat, v_hat, out=m_hat)         # lr * m_hat / (sqrt(v_hat) + eps)
            logits = np.subtract(logits, m_hat)
        m_list, v_list = mv.tolist()
        new = {**state, "logits": logits.tolist(), "adam_m": m_list, "adam_v": v_list,
               "adam_t": t, "baseline": baseline}
        logits.flags.writeable = False
        mv.flags.writeable = False
        logits_of.put(new["logits"], logits)
        moments_of[:] = [m_list, v_list, mv]
        return new

    return Searcher("reinforce", init, propose, update)
