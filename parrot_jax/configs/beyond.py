"""Beyond the paper: its Mamba models (SSAM tiny, small, base) against Whisper's encoders (tiny to large-v3)
beside its own attention models, everything else as the paper's grid (``paper.py``).

Table 1 gets a row per Whisper size; Table 2 pairs every SSAM size with every attention model, Whisper's
included, then every two attention models (the paper's pairs among them). Encoders whose features are
absent from the store are skipped with a note, so a store with only some of them runs those::

    parrot extract --corpus emodb --root ~/data/emodb --encoders ssam-base,wavlm-base,whisper-large-v3 \
        --checkpoints ~/checkpoints
    parrot grid --config beyond --corpora emodb --run beyond-emodb
"""

import dataclasses

from parrot_jax.configs.paper import get_config as paper_config
from parrot_jax.config import GridConfig

PAPER_ENCODERS = ("ssam-tiny", "ssam-small", "ssam-base", "wavlm-base", "hubert-base", "wav2vec2-base",
                  "unispeech-sat-base", "mms-1b")
WHISPER_ENCODERS = ("whisper-tiny", "whisper-base", "whisper-small", "whisper-medium", "whisper-large-v3")


def get_config() -> GridConfig:
    return dataclasses.replace(paper_config(), run="beyond", encoders=PAPER_ENCODERS + WHISPER_ENCODERS)
