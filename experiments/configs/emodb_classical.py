"""Emo-DB with the two classical feature sets (no checkpoints needed); pick the protocol on the command line:

The packaged config parrot_jax/configs/emodb_classical.py (`parrot grid --config emodb_classical`); copy that file here to make your own.
"""

from parrot_jax.configs.emodb_classical import get_config

__all__ = ["get_config"]
