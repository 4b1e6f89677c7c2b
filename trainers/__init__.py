"""JAX trainers for child architectures (installed as ``layernas.trainers``)."""
