"""The packaged grid configs: paper.py (the default), demo.py, emodb_classical.py (see parrot_jax.config)."""
