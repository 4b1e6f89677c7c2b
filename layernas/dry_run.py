"""A training-free stand-in evaluator for dry runs. Its reward is NOT accuracy.

:class:`ProxyScoreEvaluator` lets a search (CLI or ``layernas.search``) run end to end in
seconds: it checks the plumbing (searcher, cost targets, checkpoints, results) without
training anything. Its reward, the *proxy score*, is

    score = slope * log10(cost[metric]) + noise_std * z,   z ~ N(0, 1)

(``cost[metric]`` in the space's units: a plain MAdds count for the MobileNet spaces)

where ``z`` is drawn from a generator seeded by a hash of (space name, architecture,
``noise_seed``), so the same architecture always gets the same score whatever the trial
id, worker or order. Larger models score higher on average, as accuracy tends to, so
a correct cost-constrained search should end near the top of its cost budget, and no
architecture over the budget may win. Every result says
``info["evaluator"] = "proxy-score (dry run, not accuracy)"`` and has ``test=None``.

Example:
    >>> from layernas.dry_run import ProxyScoreEvaluator
    >>> from layernas.evaluator import Trial
    >>> from layernas.search_spaces.mobilenet_v2 import mobilenet_v2
    >>> space = mobilenet_v2()
    >>> ev = ProxyScoreEvaluator(space)
    >>> r1 = ev.evaluate(Trial(0, space.default_arch(), seed=1))
    >>> r2 = ev.evaluate(Trial(7, space.default_arch(), seed=2))
    >>> r1.reward == r2.reward, r1.test, r1.info["evaluator"]
    (True, None, 'proxy-score (dry run, not accuracy)')
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from layernas.evaluator import EvalResult, Trial
from layernas.space import SearchSpace

PROXY_LABEL = "proxy-score (dry run, not accuracy)"


@dataclasses.dataclass
class ProxyScoreEvaluator:
    """Deterministic, training-free proxy score (see the module docstring).

    Args:
      space: the search space (its ``cost`` supplies the metric).
      metric: the cost metric the score grows with (default ``"madds"``).
      slope: score gained per tenfold increase of the metric.
      noise_std: standard deviation of the arch-keyed noise (0: a pure function of cost).
      noise_seed: changes the noise draw for every architecture.
      seconds_per_eval: simulated seconds charged per evaluation (``cost_seconds``).
    """

    space: SearchSpace
    metric: str = "madds"
    slope: float = 10.0
    noise_std: float = 0.5
    noise_seed: int = 0
    seconds_per_eval: float = 0.0

    def __post_init__(self):
        if self.metric not in self.space.cost_metrics:
            raise ValueError(f"metric {self.metric!r} is not a cost metric of {self.space.name!r}: "
                             f"expected one of {', '.join(self.space.cost_metrics)}")

    def score(self, arch) -> float:
        costs = self.space.cost(arch)
        digest = hashlib.sha256(f"{self.space.name}|{self.space.arch_to_str(arch)}|{self.noise_seed}".encode()).digest()
        z = np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal()
        return float(self.slope * math.log10(max(costs[self.metric], 1e-12)) + self.noise_std * z)

    def evaluate(self, trial: Trial) -> EvalResult:
        arch = self.space.validate(trial.arch)
        return EvalResult(trial.trial_id, arch, self.score(arch), self.seconds_per_eval, None,
                          dict(self.space.cost(arch)), info={"evaluator": PROXY_LABEL})


# The name the CLI may use for ``--evaluator``.
DryRunEvaluator = ProxyScoreEvaluator


def evaluator_for_search(config, space) -> ProxyScoreEvaluator:
    """The ``"dry-run"`` factory of every space in :mod:`layernas.registry`: the proxy score
    grows with MAdds where the space counts them, else with its main metric."""
    from layernas.registry import get_space_entry

    metric = "madds" if "madds" in space.cost_metrics else get_space_entry(config.space).default_metric
    return ProxyScoreEvaluator(space, metric=metric)
