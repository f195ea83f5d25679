"""Run the paper's Table 1 / Table 2 grid over the features present (same as `parrot grid`).

    python experiments/run_grid.py                      # the paper's settings (configs/paper.py)
    python experiments/run_grid.py --dry-run            # list the cells and whether they are done
    python experiments/run_grid.py --protocol speaker --epochs 20 --run speaker20
    python experiments/run_grid.py --config experiments/configs/demo.py --set train.patience=none
"""

import argparse
import sys

from parrot_jax import grid

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    grid.add_arguments(parser)
    sys.exit(grid.command(parser.parse_args()))
