"""Emo-DB with the two classical feature sets (no checkpoints needed); pick the protocol on the command line:

    parrot grid --config emodb_classical --protocol speaker \
        --run emodb-classical-speaker
    parrot grid --config emodb_classical --protocol emobox --splits EmoBox/data --metrics wa,ua,f1 \
        --run emodb-classical-emobox

(in a config: ``protocol="emobox", splits="EmoBox/data", metrics=("wa", "ua", "f1")``).
"""

from parrot_jax.config import GridConfig
from parrot_jax.training import TrainConfig


def get_config() -> GridConfig:
    return GridConfig(
        run="emodb-classical-stratified",
        corpora=("emodb",),
        encoders=("mfcc-stats", "logmel-stats"),
        protocol="stratified",
        folds=5,
        seeds=(0,),
        train=TrainConfig(epochs=50),
        figures=("best",),
    )
