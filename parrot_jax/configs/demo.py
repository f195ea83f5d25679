"""The demo's grid: the synthetic demo corpus, its two classical feature sets, a short training."""

from parrot_jax.config import GridConfig
from parrot_jax.training import TrainConfig


def get_config() -> GridConfig:
    return GridConfig(
        run="demo",
        features="results/demo/features",
        results="results",
        corpora=("demo",),
        encoders=("mfcc-stats", "logmel-stats"),
        protocol="stratified",
        folds=5,
        seeds=(0,),
        train=TrainConfig(epochs=30, patience=10),
        figures=("best",),
    )
