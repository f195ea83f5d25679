"""Name -> encoder: the paper's encoder names, how to build each one, and the options each takes.

An encoder turns 16 kHz mono float32 waveforms into one pooled vector each:

    encoder.embed_batch([wave_1, ..., wave_B]) -> float32 [B, encoder.dim]

It is a model and its pure batch function; where that runs (devices, compilation cache) is decided by
one runner for every family (the contract: `parrot_jax.encoders.base`; the runner:
`parrot_jax.encoders.runner`).

`build(name, checkpoint, **options)` builds one; its options are its family's embedding options (what
changes the numbers: recorded in the store, rebuilt exactly by predict) and run options (how they are
computed), see `parrot_jax.encoders.options`. On the command line an encoder list is written

    wavlm-base:layer=6,pooling=mean+std,ssam-base,mfcc-stats:n_mfcc=20

(`parse_encoders`): names and ``option=value`` items separated by commas, each option belonging to the
encoder named before it; a layer mix's weights are separated by "/" (``layer=0.5/0.5/...``).

Builders are imported lazily (``"module:function"``) so that asking for MFCC statistics never imports a
Mamba. Adding an encoder is adding its module and one line to ``ENCODERS``.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parrot_jax.encoders.base import Encoder
from parrot_jax.encoders.options import known
from parrot_jax.text_values import field_names, parse_value


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
        *(EncoderEntry(f"whisper-{size}", "parrot_jax.encoders.whisper:build", "attention", f"Wh-{abbrev}", dim, True)
          for size, abbrev, dim in [("tiny", "T", 384), ("tiny.en", "T.en", 384), ("base", "B", 512),
                                    ("base.en", "B.en", 512), ("small", "S", 768), ("small.en", "S.en", 768),
                                    ("medium", "M", 1024), ("medium.en", "M.en", 1024), ("large-v2", "L2", 1280),
                                    ("large-v3", "L3", 1280)]),
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


def _module(name: str) -> Any:
    return importlib.import_module(entry(name).builder.split(":")[0])


def build(name: str, checkpoint: str | Path | None = None, **options: Any) -> Encoder:
    """Build encoder `name`, reading its weights from the folder `checkpoint` where it needs one, with
    `options` (its family's embedding and run options; unknown names are refused, listing the known)."""
    e = entry(name)
    if e.needs_checkpoint and checkpoint is None:
        raise ValueError(f"encoder {name!r} needs a checkpoint folder (the downloaded model files)")
    factory = getattr(_module(name), e.builder.split(":")[1])
    return factory(name, None if checkpoint is None else Path(checkpoint), **options)


def option_classes(name: str) -> tuple[type, type]:
    """(embedding options, run options): the dataclasses of encoder `name`'s options."""
    return _module(name).option_classes(name)


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder name with options for `build` (parsed from the command line by `parse_encoders`)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_encoders(text: str) -> list[EncoderSpec]:
    """The encoders of ``"wavlm-base:layer=6,pooling=mean+std,ssam-base"``: each name with its options,
    values read by their field types. Refuses an unknown encoder, an unknown option (naming the encoder
    and the options it takes) and a bad value, in one line each."""
    specs: list[EncoderSpec] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        head, colon, rest = token.partition(":")
        if colon and "=" not in head:
            specs.append(EncoderSpec(entry(head.strip()).name))
            token = rest.strip()
            if not token:
                continue
        elif "=" not in token:
            specs.append(EncoderSpec(entry(token).name))
            continue
        if not specs:
            raise ValueError(f"encoder option {token!r} comes before any encoder name (expected NAME:OPTION=VALUE)")
        key, _, value = (part.strip() for part in token.partition("="))
        spec = specs[-1]
        classes = option_classes(spec.name)
        kind = next((typing.get_type_hints(c)[key] for c in classes if key in field_names(c)), None)
        if kind is None:
            raise ValueError(f"encoder {spec.name!r}: unknown option {key!r}; it takes {known(*classes)}")
        if key in spec.options:
            raise ValueError(f"encoder {spec.name!r}: option {key!r} given twice")
        spec.options[key] = parse_value(f"{spec.name}:{key}", kind, value, separator="/")
    if not specs:
        raise ValueError(f"no encoder named in {text!r}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"encoders given twice: {', '.join(names)}")
    return specs
