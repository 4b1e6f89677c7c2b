"""JAX trainers for child architectures: the top-level ``trainers/`` folder, installed as
``layernas.trainers``.

Everything that needs jax or flax lives here: the flax models of the search spaces
(``nats_models``, ``mbconv_model``, ``codec_model``, ``sandwich_model``), the one
``models.build_model(space, arch)`` that builds them by space type, training, data
loading, latency measurement (``latency``) and the trainer evaluators. The core
(``layernas``) never imports this package; it plugs in through the registry.
"""
