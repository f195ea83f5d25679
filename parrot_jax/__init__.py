"""parrot_jax: PARROT speech-emotion recognition (Mamba + attention PTM fusion) in JAX/Flax.

Importing the package (or any module of it) changes nothing in the process. The malloc settings that
speed up XLA:CPU training are opt-in: `parrot_jax.allocator.keep_freed_memory()` (the `parrot` command
and the benchmarks call it).
"""

__version__ = "0.1.0"
