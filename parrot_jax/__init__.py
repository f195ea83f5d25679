"""parrot_jax: PARROT speech-emotion recognition (Mamba + attention PTM fusion) in JAX/Flax."""

__version__ = "0.1.0"
