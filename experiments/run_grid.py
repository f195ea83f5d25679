"""Run the paper's Table 1 / Table 2 grid over the features present (same as `parrot grid`).

    python experiments/run_grid.py                      # the paper's settings (the packaged config "paper")
    python experiments/run_grid.py --dry-run            # list the cells and whether they are done
    python experiments/run_grid.py --protocol speaker --epochs 20 --run speaker20
    python experiments/run_grid.py --config demo --set train.patience=none
    python experiments/run_grid.py --config experiments/configs/paper.py --set model.sinkhorn.epsilon=0.1
"""

import sys

from parrot_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["grid", *sys.argv[1:]]))
