"""The packaged grid configs: paper.py (the default), beyond.py, demo.py, emodb_classical.py (see parrot_jax.config)."""
