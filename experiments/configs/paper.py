"""The paper's grid: stratified 5-fold CV, Adam lr 1e-3, batch 32, 50 epochs with early stopping.

The packaged config parrot_jax/configs/paper.py (`parrot grid --config paper`); copy that file here to make your own.
"""

from parrot_jax.configs.paper import get_config

__all__ = ["get_config"]
