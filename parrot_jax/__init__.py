"""parrot_jax: PARROT speech-emotion recognition (Mamba + attention PTM fusion) in JAX/Flax."""

from parrot_jax import allocator as _allocator

if _allocator.wanted():
    _allocator.keep_freed_memory()

__version__ = "0.1.0"
