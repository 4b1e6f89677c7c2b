"""Search strategies: LayerNAS and the baselines it is compared with.

Every entry of SEARCHERS is a factory ``f(space, target, **options) -> Searcher``.
"""

from __future__ import annotations

from typing import Callable

from layernas.searchers.base import Searcher
from layernas.target import Target
from layernas.searchers.evolution import regularized_evolution
from layernas.searchers.layernas import layernas
from layernas.searchers.random_search import random_search
from layernas.searchers.reinforce import reinforce
from layernas.space import SearchSpace

SEARCHERS: dict[str, Callable[..., Searcher]] = {
    "layernas": layernas,
    "random": random_search,
    "rea": regularized_evolution,
    "reinforce": reinforce,
}


def make_searcher(name: str, space: SearchSpace, target: Target, **options) -> Searcher:
    """The searcher called ``name`` for ``space`` and ``target``.

    Raises:
      ValueError: naming the unknown searcher and the known ones.
    """
    if name not in SEARCHERS:
        raise ValueError(f"unknown searcher {name!r}; expected one of {', '.join(sorted(SEARCHERS))}")
    return SEARCHERS[name](space, target, **options)
