"""Units of cost metrics and the meaning of a run's reward, for printed summaries, plots and reports.

A space's costs are plain floats; what unit each one is in depends on the space family:
NATS-Bench counts FLOPs in MFLOPs and params in MB (millions of parameters), the layerwise
MobileNet/MnasNet spaces count MAdds and params as plain numbers and latency in ms, the codec
spaces count decoder MAdds per pixel and decoder GMACs for a 768x512 image. A space may also
say so itself with a ``cost_units`` mapping ``{metric: unit}``, which wins.

Example:
    >>> format_cost("flops", 86.4262, "nats-tss/cifar10")
    '86.43 MFLOPs'
    >>> format_cost("madds", 59.6e6, "mobilenetv3-small")
    '59.6M MAdds'
    >>> reward_meaning({"evaluator": "table"})
    'validation accuracy (%)'
"""

from __future__ import annotations

import math
from typing import Mapping

# (unit, is_a_plain_count): counts print with an SI suffix, e.g. 59.6M MAdds
_NATS = {"flops": ("MFLOPs", False), "params": ("MB", False), "latency": ("s", False)}
_LAYERWISE = {"madds": ("MAdds", True), "params": ("params", True), "latency": ("ms", False)}
_CODEC = {"decoder_madds": ("MAdds/pixel", False), "decoder_gmacs": ("GMACs", False),
          "encoder_madds": ("MAdds/pixel", False), "decoder_params": ("params", True),
          "params": ("params", True)}


def _family(space_name: str) -> dict:
    name = str(space_name or "")
    if name.startswith("nats-"):
        return _NATS
    if name.startswith("codec-"):
        return _CODEC
    return _LAYERWISE


def cost_unit(metric: str, space: object | str = "") -> str:
    """The unit of ``metric`` in ``space`` (a space object or its name); "" when unknown.

    Args:
      metric: a cost metric name, e.g. "flops".
      space: the space, or its ``name`` (e.g. "nats-tss/cifar10").
    Returns:
      the unit, e.g. "MFLOPs", "MB", "ms", "MAdds".
    """
    own = getattr(space, "cost_units", None)
    if isinstance(own, Mapping) and metric in own:
        return str(own[metric])
    name = space if isinstance(space, str) else getattr(space, "name", "")
    return _family(name).get(metric, ("", False))[0]


def _si(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.4g}{suffix}"
    return f"{value:.4g}"


def format_cost(metric: str, value: float, space: object | str = "") -> str:
    """``value`` of ``metric`` with its unit: '86.43 MFLOPs', '0.6154 MB', '59.6M MAdds'.

    Args:
      metric: the cost metric.
      value: its value, in the space's own unit.
      space: the space or its name (selects the unit).
    Returns:
      the value with four significant digits and its unit.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    name = space if isinstance(space, str) else getattr(space, "name", "")
    unit = cost_unit(metric, space)
    count = _family(name).get(metric, ("", False))[1] and not isinstance(getattr(space, "cost_units", None), Mapping)
    text = _si(float(value)) if count else f"{float(value):.4g}"
    return f"{text} {unit}" if unit else text


def axis_label(metric: str, space: object | str = "") -> str:
    """'flops (MFLOPs)', for plot axes and table headers."""
    unit = cost_unit(metric, space)
    return f"{metric} ({unit})" if unit else metric


def reward_meaning(settings: Mapping | None) -> str:
    """What a run's reward is, from its settings (as the CLI records them).

    Args:
      settings: the run's settings (``SearchResult.settings`` or result.json's).
    Returns:
      e.g. 'validation accuracy (%)', '-(lambda*255^2*MSE + bpp)', or 'reward' when the
      settings do not say (a library search with a custom evaluator).
    """
    settings = settings or {}
    evaluator = str(settings.get("evaluator", ""))
    if evaluator == "dry-run":
        return "training-free proxy score (NOT accuracy)"
    if settings.get("codec") is not None:
        lmbda = settings["codec"].get("lmbda")
        where = "lambda" if lmbda is None else f"lambda={lmbda:g}"
        return f"-(lambda*255^2*MSE + bpp), {where}, on held-out photos"
    from layernas.config import TRAINER_RECIPES

    if evaluator in ("table", "trainer", *TRAINER_RECIPES):
        return "validation accuracy (%)"
    return "reward"


def reward_label(settings: Mapping | None) -> str:
    """A short axis label for the reward: 'validation accuracy (%)' or 'reward = -(...)'."""
    meaning = reward_meaning(settings)
    return meaning if meaning.startswith(("validation", "training-free", "reward")) else f"reward = {meaning}"


def charged_meaning(settings: Mapping | None) -> str:
    """What the charged seconds are: simulated table training time or measured wall time."""
    settings = settings or {}
    evaluator = str(settings.get("evaluator", ""))
    if evaluator == "table":
        epochs = settings.get("charge_epochs")
        return f"simulated {epochs}-epoch training time" if epochs else "simulated training time"
    if evaluator == "dry-run":
        return "proxy-score time"
    if evaluator:
        return "measured training time"
    return "as the evaluator reports it"


__all__ = ["axis_label", "charged_meaning", "cost_unit", "format_cost", "reward_label", "reward_meaning"]
