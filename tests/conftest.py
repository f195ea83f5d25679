"""The test session runs with JAX's persistent compilation cache on, as every `parrot` command does
(`parrot_jax.compilation_cache`; ``PARROT_COMPILATION_CACHE=0`` turns it off): a second run of the suite loads
its programs instead of compiling them. Tests about the cache itself run in child processes of their own."""

from parrot_jax.compilation_cache import enable_compilation_cache


def pytest_configure(config) -> None:
    enable_compilation_cache()
