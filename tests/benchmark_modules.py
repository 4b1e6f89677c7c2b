"""Load a script of ``benchmarks/`` as a module, for the tests of its pieces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, freshly executed as the module ``name`` and registered
    under that name in ``sys.modules`` (the benchmarks folder is put on ``sys.path`` first,
    as running the script does, so its imports of sibling scripts work).

    Example:
        >>> load_benchmark("nats_ablation").SELECTION_PANEL
        ('cifar10', 0.5)
    """
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # as an import does (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module
