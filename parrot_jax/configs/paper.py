"""The paper's grid: stratified 5-fold CV, Adam lr 1e-3, batch 32, 50 epochs with early stopping."""

from parrot_jax.config import GridConfig


def get_config() -> GridConfig:
    return GridConfig(
        run="paper",
        features="features",
        results="results",
        protocol="stratified",
        folds=5,
        split_seed=0,
        val_fraction=0.1,
        seeds=(0,),
        table1=("svm", "fcn", "cnn"),
        table2=("concat", "parrot"),
        ablations=False,
        train={"epochs": 50, "batch_size": 32, "learning_rate": 1e-3},
        model={},
        checkpoints=False,
        tsne_methods=("parrot",),
        figures=("best",),
    )
