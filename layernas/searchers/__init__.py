"""Search strategies: LayerNAS and the baselines it is compared with."""
