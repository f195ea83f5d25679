"""The demo's grid: the synthetic demo corpus, its two classical feature sets, a short training.

The packaged config parrot_jax/configs/demo.py (`parrot grid --config demo`); copy that file here to make your own.
"""

from parrot_jax.configs.demo import get_config

__all__ = ["get_config"]
