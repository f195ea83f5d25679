"""The paper's SSAM sizes against Whisper's encoders, beside the paper's pairs.

The packaged config parrot_jax/configs/beyond.py (`parrot grid --config beyond`); copy that file here to make your own.
"""

from parrot_jax.configs.beyond import get_config

__all__ = ["get_config"]
