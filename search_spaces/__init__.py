"""Search spaces, one per file: the top-level ``search_spaces/`` folder, installed as
``layernas.search_spaces``.

A space is pure data plus cost: its layers and options, ``cost(arch)`` and
``cost_bounds``, and the plain config dataclasses its models are built from. No module
here imports jax or flax, so a table search, ``layernas describe`` or a cost query never
loads the accelerator stack. The flax models live with the trainers
(``layernas.trainers``); ``layernas.trainers.models.build_model(space, arch)`` builds one.
"""
