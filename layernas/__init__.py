"""LayerNAS in JAX: hardware-aware neural architecture search in polynomial complexity.

The library call is :func:`layernas.search`; the CLI is ``layernas search ...``.
"""

from layernas.api import search
from layernas.evaluator import EvalResult, Evaluator, Trial
from layernas.executors import Executor, SerialExecutor
from layernas.results import SearchResult
from layernas.run import Budget, RunError
from layernas.searchers import SEARCHERS, make_searcher
from layernas.searchers.base import Searcher
from layernas.target import Target
from layernas.space import Arch, Costs, Layer, SearchSpace, SpaceError

__version__ = "0.1.0"

__all__ = [
    "search", "Budget", "Target", "SearchResult", "Searcher", "SEARCHERS", "make_searcher",
    "SearchSpace", "Layer", "Arch", "Costs", "SpaceError", "RunError",
    "Trial", "EvalResult", "Evaluator", "Executor", "SerialExecutor",
]
