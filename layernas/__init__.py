"""LayerNAS in JAX: hardware-aware neural architecture search in polynomial complexity."""

from layernas.space import Arch, Costs, Layer, SearchSpace, SpaceError
from layernas.evaluator import EvalResult, Evaluator, Executor, SerialExecutor, Trial

__version__ = "0.1.0"
