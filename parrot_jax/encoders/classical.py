"""Classical (non-neural) encoders: utterance statistics of MFCCs and log-mel energies, eGeMAPS functionals.

They follow the `Encoder` contract of `base.py` with no JAX program (``program = None``): ``embed_batch``
computes each wave's row on the host, so devices, sharding and the compilation cache do not apply; they
need no checkpoint. Frames are 25 ms periodic-Hann
windows (n_fft 400 at 16 kHz) every 10 ms (hop 160), centred (n_fft/2 zeros padded at each end, librosa's
default); P = |STFT|^2; M = Slaney-normalised mel filterbank (librosa.filters.mel, 0-8 kHz) applied to P.

- ``mfcc-stats``: C = DCT-II-ortho over bands of 10 log10(max(M, 1e-10)), floored at its maximum - 80 dB
  (librosa.feature.mfcc), first ``n_mfcc`` rows [n_mfcc, T]; with ``deltas``, dC = Savitzky-Golay first
  derivative over 9 frames (order 1, interpolated edges: librosa.feature.delta). The embedding is
  [mean_t(C), std_t(C), mean_t(dC), std_t(dC)] (population std); default dim 4 * 40 = 160.
- ``logmel-stats``: L = 10 log10(max(M, 1e-10)) [n_mels, T] (no floor); the embedding is
  [mean_t(L), std_t(L)]; default dim 2 * 64 = 128.
- ``egemaps``: the 88 eGeMAPSv02 functionals of openSMILE (optional extra ``egemaps``: ``pip install
  'parrot_jax[egemaps]'``).

Embeddings are returned as computed; a non-finite one (openSMILE fills a too-short segment with NaN) is
refused by the feature store, naming the file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from parrot_jax.encoders.options import NoOptions, split, to_json

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
DELTA_WIDTH = 9


@dataclass(frozen=True)
class MfccOptions:
    """mfcc-stats' embedding options: MFCCs kept, mel bands, whether the deltas' statistics follow."""

    n_mfcc: int = 40
    n_mels: int = 64
    deltas: bool = True

    def __post_init__(self) -> None:
        counts = (self.n_mfcc, self.n_mels)
        if not (all(isinstance(n, int) and not isinstance(n, bool) for n in counts) and 1 <= self.n_mfcc <= self.n_mels):
            raise ValueError(f"need ints 1 <= n_mfcc <= n_mels, got n_mfcc={self.n_mfcc!r}, n_mels={self.n_mels!r}")
        if not isinstance(self.deltas, bool):
            raise ValueError(f"deltas must be true or false, got {self.deltas!r}")


@dataclass(frozen=True)
class LogmelOptions:
    """logmel-stats' embedding options: mel bands."""

    n_mels: int = 64

    def __post_init__(self) -> None:
        if not (isinstance(self.n_mels, int) and not isinstance(self.n_mels, bool) and self.n_mels >= 1):
            raise ValueError(f"n_mels must be an int >= 1, got {self.n_mels!r}")


def _metadata(encoder: Any, config: dict[str, Any], pooling: str, versions: dict[str, str]) -> dict[str, Any]:
    return {"name": encoder.name, "family": "classical", "options": to_json(encoder.options),
            "run_options": to_json(encoder.run_options), "checkpoint_sha256": None, "config": config,
            "pooling": pooling, **versions}


class HostEncoder(ABC):
    """What the classical encoders share: no program, no run options, one row per wave by ``embed_one``."""

    sample_rate = SAMPLE_RATE
    run_options = NoOptions()
    program = None  # no JAX program: nothing for a runner to place (parrot_jax.encoders.base)
    dim: int

    @abstractmethod
    def embed_one(self, wave: np.ndarray) -> np.ndarray:
        """float32 [dim]: the row of one wave."""

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(waves), dim]: `embed_one` of each wave."""
        return np.stack([self.embed_one(np.asarray(w, np.float32)) for w in waves]).reshape(len(waves), self.dim)


class MfccStats(HostEncoder):
    """Mean and standard deviation over frames of MFCCs (and of their deltas)."""

    def __init__(self, name: str = "mfcc-stats", options: MfccOptions = MfccOptions()):
        self.name, self.options = name, options
        self.n_mfcc, self.n_mels, self.deltas = options.n_mfcc, options.n_mels, options.deltas
        self.dim = (4 if self.deltas else 2) * self.n_mfcc
        # the delta filter needs DELTA_WIDTH frames; centred framing gives 1 + len // HOP frames
        self.min_samples = (DELTA_WIDTH - 1) * HOP if self.deltas else N_FFT

    def embed_one(self, wave: np.ndarray) -> np.ndarray:
        import librosa

        c = librosa.feature.mfcc(y=wave, sr=SAMPLE_RATE, n_mfcc=self.n_mfcc, n_fft=N_FFT, hop_length=HOP,
                                 n_mels=self.n_mels)  # fmt: skip
        parts = [c.mean(axis=1), c.std(axis=1)]
        if self.deltas:
            d = librosa.feature.delta(c, width=DELTA_WIDTH)
            parts += [d.mean(axis=1), d.std(axis=1)]
        return np.concatenate(parts).astype(np.float32)

    def metadata(self) -> dict[str, Any]:
        import librosa

        config = {"n_mfcc": self.n_mfcc, "n_mels": self.n_mels, "deltas": self.deltas, "n_fft": N_FFT,
                  "hop_length": HOP, "window": "hann", "delta_width": DELTA_WIDTH}
        return _metadata(self, config, "mean+std over frames", {"librosa_version": librosa.__version__})


class LogmelStats(HostEncoder):
    """Mean and standard deviation over frames of log-mel energies (dB)."""

    min_samples = N_FFT

    def __init__(self, name: str = "logmel-stats", options: LogmelOptions = LogmelOptions()):
        self.name, self.options, self.n_mels = name, options, options.n_mels
        self.dim = 2 * self.n_mels

    def embed_one(self, wave: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=self.n_mels)
        logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)]).astype(np.float32)

    def metadata(self) -> dict[str, Any]:
        import librosa

        config = {"n_mels": self.n_mels, "n_fft": N_FFT, "hop_length": HOP, "window": "hann", "amin": 1e-10,
                  "ref": 1.0}
        return _metadata(self, config, "mean+std over frames", {"librosa_version": librosa.__version__})


class Egemaps(HostEncoder):
    """openSMILE's eGeMAPSv02 functionals (88 per utterance)."""

    dim = 88
    min_samples = SAMPLE_RATE // 10  # openSMILE's F0/jitter functionals need a few 60 ms frames

    def __init__(self, name: str = "egemaps", options: NoOptions = NoOptions()):
        try:
            import opensmile
        except ImportError:
            raise ImportError(
                "encoder 'egemaps' needs the optional package opensmile: pip install 'parrot_jax[egemaps]'"
            ) from None
        self.name, self.options = name, options
        self._version = opensmile.__version__
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )

    def embed_one(self, wave: np.ndarray) -> np.ndarray:
        values = self._smile.process_signal(wave, SAMPLE_RATE).to_numpy(dtype=np.float32).reshape(-1)
        if values.shape != (self.dim,):
            raise ValueError(f"encoder 'egemaps': openSMILE returned {values.shape[0]} values, expected {self.dim}")
        return values

    def metadata(self) -> dict[str, Any]:
        config = {"feature_set": "eGeMAPSv02", "feature_level": "Functionals"}
        return _metadata(self, config, "openSMILE functionals", {"opensmile_version": self._version})


_BUILDERS = {"mfcc-stats": (MfccStats, MfccOptions), "logmel-stats": (LogmelStats, LogmelOptions),
             "egemaps": (Egemaps, NoOptions)}


def option_classes(name: str) -> tuple[type, type]:
    """(embedding options, run options) of classical encoder `name` (none runs differently)."""
    if name not in _BUILDERS:
        raise ValueError(f"{name!r} is not a classical encoder; known: {', '.join(_BUILDERS)}")
    return _BUILDERS[name][1], NoOptions


def build(name: str, checkpoint: Path | None = None, **options: Any) -> MfccStats | LogmelStats | Egemaps:
    """Registry builder: `checkpoint` must be None (classical features have no weights)."""
    embedding, _ = split(name, options, *option_classes(name))
    if checkpoint is not None:
        raise ValueError(f"encoder {name!r} takes no checkpoint, got {checkpoint}")
    cls = _BUILDERS[name][0]
    return cls(name=name, options=embedding)
