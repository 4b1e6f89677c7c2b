"""One place that turns a search space's architecture into a flax model.

Search spaces are pure data plus cost; they know nothing of flax. Each model module in
this package registers a builder for the space classes it can train:

* :class:`~layernas.search_spaces.nats_tss.NatsTss` and
  :class:`~layernas.search_spaces.nats_sss.NatsSss`: :mod:`layernas.trainers.nats_models`;
* :class:`~layernas.search_spaces.layerwise.LayerwiseSpace` (MobileNetV2/V3, MnasNet):
  :mod:`layernas.trainers.mbconv_model`;
* :class:`~layernas.search_spaces.codec.CodecHyperpriorSpace`: :mod:`layernas.trainers.codec_model`;
* :class:`~layernas.search_spaces.sandwich.SandwichSpace`: :mod:`layernas.trainers.sandwich_model`.

:func:`build_model` finds the builder by the space's type (its class, then its base
classes in method-resolution order). A space of your own either registers a builder
with :func:`register_model`, or defines ``build(arch, num_classes=K, **model_kwargs)``
itself; a space that does neither cannot be trained.

Example:
    >>> from layernas.search_spaces.nats_sss import NatsSss
    >>> space = NatsSss("cifar10")
    >>> type(build_model(space, space.default_arch(), num_classes=10)).__name__
    'NatsNetwork'
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

Builder = Callable[..., Any]

# The model modules whose import registers the built-in spaces' builders.
BUILTIN_MODEL_MODULES = (
    "layernas.trainers.nats_models",
    "layernas.trainers.mbconv_model",
    "layernas.trainers.codec_model",
    "layernas.trainers.sandwich_model",
)

_BUILDERS: dict[type, Builder] = {}


def register_model(space_class: type) -> Callable[[Builder], Builder]:
    """Register ``builder(space, arch, **kwargs) -> flax module`` for a space class.

    Args:
      space_class: the space class (subclasses use it too, unless they register their own).
    Returns:
      a decorator that registers the builder and returns it unchanged.

    Example:
        >>> from layernas.space import Layer, SearchSpace
        >>> class Widths(SearchSpace):
        ...     name = "widths"
        ...     layers = (Layer("width", (4, 8)),)
        >>> @register_model(Widths)
        ... def build_widths(space, arch, *, num_classes=10):
        ...     return ("a model", space.layers[0].options[arch[0]], num_classes)
        >>> build_model(Widths(), (1,), num_classes=3)
        ('a model', 8, 3)
    """
    if not isinstance(space_class, type):
        raise TypeError(f"register_model needs a space class, got {space_class!r}")

    def register(builder: Builder) -> Builder:
        _BUILDERS[space_class] = builder
        return builder

    return register


def _load_builtin_builders() -> None:
    for module in BUILTIN_MODEL_MODULES:
        importlib.import_module(module)


def registered_space_classes() -> tuple[type, ...]:
    """Every space class with a registered builder (the built-in ones included)."""
    _load_builtin_builders()
    return tuple(_BUILDERS)


def model_builder(space) -> Builder | None:
    """The builder registered for ``type(space)`` or its nearest registered base class
    (method-resolution order), or None."""
    _load_builtin_builders()
    return next((_BUILDERS[cls] for cls in type(space).__mro__ if cls in _BUILDERS), None)


def build_model(space, arch: Sequence[int], *, num_classes: int | None = None, **model_kwargs):
    """The flax module of ``arch`` in ``space``.

    Args:
      space: a search space whose class has a registered builder (see the module
        docstring), or any object with its own ``build(arch, num_classes=K, **kwargs)``.
      arch: option indices, one per layer of the space.
      num_classes: the data's class count, for classifier spaces (None: the space's own,
        where it has one; codec spaces take none).
      **model_kwargs: family-specific builder options, e.g. ``C`` and ``N`` of a NATS
        topology network.
    Returns:
      the flax module, called as ``model.apply(variables, x, ...)``.
    Raises:
      TypeError: the space has neither a registered builder nor its own ``build``.
    """
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    builder = model_builder(space)
    if builder is not None:
        return builder(space, arch, **kwargs)
    own_build = getattr(space, "build", None)
    if own_build is None:
        raise TypeError(f"no model builder for space {getattr(space, 'name', space)!r} "
                        f"({type(space).__qualname__}); register one with layernas.trainers.models.register_model")
    return own_build(arch, **kwargs)
