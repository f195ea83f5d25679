"""The encoder contract: an encoder is a model and its pure batch function; how it runs is not its business.

An encoder turns 16 kHz mono float32 waveforms into one row each (`Encoder`). One that runs a JAX program
(`ProgramEncoder`: the wav2vec2 family, WavLM, SSAM) splits the work in two:

- on the host, ``batches(waves)`` checks the waves, computes the front end, sorts, buckets and pads them into
  a few batch shapes (`HostBatches.arrays`), and knows how to put the outputs back in the waves' order
  (`HostBatches.assemble`);
- on the device, its `Program`: ``apply(params, *arrays) -> jax.Array [rows, ...]``, a pure function
  (no side effects, jit-able, not jitted) whose row r depends on row r of each array only.

Where the program runs is decided once for every family by `parrot_jax.encoders.runner.Runner`: it jits
``apply``, splits each batch over the chosen devices (rows padded by repeating the last one, cut back after),
and sends the compiled programs to JAX's persistent compilation cache (the folder of the family's
``compilation_cache`` run option where it has one). Extraction and predict give every encoder of a run the
same runner (``encoder.runner = runner``); an encoder never sets it, and ``embed_batch`` falls back to one
device. Encoder modules import neither `parrot_jax.distributed` nor `parrot_jax.compilation_cache` and call
no ``jax.jit``.

The classical encoders have no JAX program (``program = None``): ``embed_batch`` computes their rows on the
host, per wave; devices, sharding and the compilation cache do not apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: the runner keys its compiled copies on it
class Program:
    """An encoder's device computation: ``apply(params, *arrays)`` -> ``[rows, ...]``, pure, row r of the
    result depending on row r of each array only (so a batch may be split over devices)."""

    apply: Callable[..., Any]
    params: Any  # a pytree of arrays, passed as the first argument of `apply`


@dataclass(frozen=True)
class HostBatches:
    """The host side of one `embed_batch` call: padded batches and how to turn their outputs into rows.

    arrays: one tuple of numpy arrays per call of the program (every array with the same leading size);
    assemble: the outputs (numpy, one per tuple, in order) -> float32 ``[len(waves), *row_shape]``.
    """

    arrays: list[tuple[np.ndarray, ...]]
    assemble: Callable[[list[np.ndarray]], np.ndarray]


class Encoder(Protocol):
    """What the feature store needs from an encoder. One without a program (``program`` None or absent)
    computes its rows on the host in ``embed_batch``."""

    name: str
    dim: int  # length of one pooled embedding
    sample_rate: int  # the rate `embed_batch` expects (16 kHz for every encoder here)
    min_samples: int  # shorter waveforms are refused by the audio layer, naming the file
    options: Any  # the family's embedding options (a frozen dataclass)
    run_options: Any  # the family's run options (a frozen dataclass)

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(waves), dim] (or [len(waves), layers, dim], see `row_shape`); row i depends on
        waves[i] only (padding never leaks)."""
        ...

    def metadata(self) -> dict[str, Any]:
        """JSON-able description, recorded in the store: at least ``name``, ``options`` (the embedding
        options), ``run_options``, ``checkpoint_sha256`` (None without a checkpoint), then the family's own
        details (architecture config, front end, library versions)."""
        ...


class ProgramEncoder(Encoder, Protocol):
    """An encoder that runs a JAX program (see the module docstring); its ``embed_batch(waves)`` is
    ``runner.run(self, waves)`` (`parrot_jax.encoders.runner.run`)."""

    program: Program
    runner: Any  # the `Runner` that runs `program`: a class attribute None, set by extraction and predict

    def batches(self, waves: Sequence[np.ndarray]) -> HostBatches:
        """The host side of embedding `waves`."""
        ...


def row_shape(encoder: Encoder) -> tuple[int, ...]:
    """Shape of one utterance's embedding: (dim,), or (layers, dim) for an encoder whose ``layers`` attribute
    is set (every hidden state pooled alone: the attention encoders' ``layer="all"``)."""
    layers = getattr(encoder, "layers", None)
    return (layers, encoder.dim) if layers else (encoder.dim,)
