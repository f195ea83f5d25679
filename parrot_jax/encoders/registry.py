"""Name -> encoder: the paper's encoder names and how to build each one.

An encoder turns 16 kHz mono float32 waveforms into one pooled vector each:

    encoder.embed_batch([wave_1, ..., wave_B]) -> float32 [B, encoder.dim]

Builders are imported lazily (``"module:function"``) so that asking for MFCC statistics never imports a
Mamba. Adding an encoder is adding its module and one line to ``ENCODERS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np


class Encoder(Protocol):
    """What the feature store needs from an encoder.

    An encoder that runs a JAX program may also offer ``use_devices(mesh)``: afterwards each batch is
    split over the mesh's devices (this host's), with the same rows (`parrot_jax.distributed.data_parallel`).
    The store calls it when more than one local device is chosen.
    """

    name: str
    dim: int  # length of one pooled embedding
    sample_rate: int  # the rate `embed_batch` expects (16 kHz for every encoder here)
    min_samples: int  # shorter waveforms are refused by the audio layer, naming the file

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(waves), dim] (or [len(waves), layers, dim], see `row_shape`); row i depends on
        waves[i] only (padding never leaks)."""
        ...

    def metadata(self) -> dict[str, Any]:
        """JSON-able description: config, checkpoint hash, pooling, ... (recorded in the store)."""
        ...


def row_shape(encoder: Encoder) -> tuple[int, ...]:
    """Shape of one utterance's embedding: (dim,), or (layers, dim) for an encoder whose ``layers`` attribute
    is set (every hidden state pooled alone: the attention encoders' ``layer="all"``)."""
    layers = getattr(encoder, "layers", None)
    return (layers, encoder.dim) if layers else (encoder.dim,)


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    builder: str  # "module:function"; function(checkpoint: Path | None, **options) -> Encoder
    family: str  # "mamba", "attention" or "classical"
    abbrev: str  # the paper's abbreviation in Tables 1 and 2 (A(T), W, ...); classical: own
    dim: int  # pooled dimension with the default options
    needs_checkpoint: bool


ENCODERS: dict[str, EncoderEntry] = {
    entry.name: entry
    for entry in [
        EncoderEntry("ssam-tiny", "parrot_jax.encoders.ssam:build", "mamba", "A(T)", 960, True),
        EncoderEntry("ssam-small", "parrot_jax.encoders.ssam:build", "mamba", "A(S)", 1920, True),
        EncoderEntry("ssam-base", "parrot_jax.encoders.ssam:build", "mamba", "A(B)", 3840, True),
        EncoderEntry("wavlm-base", "parrot_jax.encoders.wavlm:build", "attention", "W", 768, True),
        EncoderEntry("hubert-base", "parrot_jax.encoders.wav2vec2:build", "attention", "H", 768, True),
        EncoderEntry("wav2vec2-base", "parrot_jax.encoders.wav2vec2:build", "attention", "W2", 768, True),
        EncoderEntry("unispeech-sat-base", "parrot_jax.encoders.wav2vec2:build", "attention", "U", 768, True),
        EncoderEntry("mms-1b", "parrot_jax.encoders.wav2vec2:build", "attention", "M", 1280, True),
        EncoderEntry("mfcc-stats", "parrot_jax.encoders.classical:build", "classical", "MFCC", 160, False),
        EncoderEntry("logmel-stats", "parrot_jax.encoders.classical:build", "classical", "LMEL", 128, False),
        EncoderEntry("egemaps", "parrot_jax.encoders.classical:build", "classical", "eGeMAPS", 88, False),
    ]
}


def entry(name: str) -> EncoderEntry:
    """The registry entry for `name`, or a ValueError listing the known names."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}") from None


def build(name: str, checkpoint: str | Path | None = None, **options: Any) -> Encoder:
    """Build encoder `name`, reading its weights from the folder `checkpoint` where it needs one."""
    e = entry(name)
    if e.needs_checkpoint and checkpoint is None:
        raise ValueError(f"encoder {name!r} needs a checkpoint folder (the downloaded model files)")
    module_name, function_name = e.builder.split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    return factory(name, None if checkpoint is None else Path(checkpoint), **options)
