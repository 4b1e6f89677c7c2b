"""Small additive spaces for testing searchers against brute force."""

from __future__ import annotations

import time

import numpy as np

from layernas.evaluator import EvalResult, Trial
from layernas.space import Layer, SearchSpace


class AdditiveSpace(SearchSpace):
    """cost(arch) = sum of per-layer option costs; the evaluator's reward is additive too.

    The default option of each layer is its most expensive one, as in the LayerNAS paper.
    """

    cost_metrics = ("cost",)

    def __init__(self, costs, rewards, name="additive", default="max"):
        self.name = name
        self.option_costs = [list(map(float, c)) for c in costs]
        self.option_rewards = [list(map(float, r)) for r in rewards]
        pick = np.argmax if default == "max" else np.argmin
        self.layers = tuple(
            Layer(f"layer{i}", tuple(range(len(c))), default=int(pick(c))) for i, c in enumerate(costs)
        )

    def cost(self, arch):
        return {"cost": float(sum(self.option_costs[i][a] for i, a in enumerate(arch)))}

    def reward(self, arch):
        return float(sum(self.option_rewards[i][a] for i, a in enumerate(arch)))

    @classmethod
    def random(cls, rng, num_layers, num_options, max_cost=5):
        costs = rng.integers(0, max_cost + 1, size=(num_layers, num_options)).tolist()
        rewards = np.round(rng.normal(size=(num_layers, num_options)), 3).tolist()
        return cls(costs, rewards)


class AdditiveEvaluator:
    """Deterministic reward = the space's additive reward; charges 1 s per trial."""

    def __init__(self, space, sleep=0.0, log=None):
        self.space, self.sleep, self.log = space, sleep, log

    def evaluate(self, trial: Trial) -> EvalResult:
        if self.sleep:
            time.sleep(self.sleep)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{trial.trial_id}\n")
        reward = self.space.reward(trial.arch) + 1e-3 * (trial.seed % 7)  # seed-dependent noise
        return EvalResult(trial.trial_id, trial.arch, reward, cost_seconds=1.0, test=reward)


def brute_force_best(space, target):
    best = None
    for arch in space.all_archs():
        if target.feasible(space.cost(arch)):
            r = space.reward(arch)
            if best is None or r > best:
                best = r
    return best
