"""`make extract`: the `parrot extract` command (see `parrot extract --help`)."""

import sys

from parrot_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
