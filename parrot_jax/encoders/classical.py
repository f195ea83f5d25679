"""Classical (non-neural) encoders: utterance statistics of MFCCs and log-mel energies, eGeMAPS functionals.

They follow the `Encoder` protocol of `registry.py` and need no checkpoint. Frames are 25 ms periodic-Hann
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

from pathlib import Path
from typing import Any, Sequence

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
DELTA_WIDTH = 9


def _check_options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"encoder {name!r}: unknown options {sorted(unknown)}; allowed: {sorted(allowed)}")


class MfccStats:
    """Mean and standard deviation over frames of MFCCs (and of their deltas)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, name: str = "mfcc-stats", n_mfcc: int = 40, n_mels: int = 64, deltas: bool = True):
        self.name, self.n_mfcc, self.n_mels, self.deltas = name, int(n_mfcc), int(n_mels), bool(deltas)
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(f"encoder {name!r}: need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
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

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.embed_one(np.asarray(w, np.float32)) for w in waves]).reshape(len(waves), self.dim)

    def metadata(self) -> dict[str, Any]:
        import librosa

        return {
            "family": "classical",
            "config": {"n_mfcc": self.n_mfcc, "n_mels": self.n_mels, "deltas": self.deltas, "n_fft": N_FFT,
                       "hop_length": HOP, "window": "hann", "delta_width": DELTA_WIDTH},
            "pooling": "mean+std over frames",
            "checkpoint_sha256": None,
            "librosa_version": librosa.__version__,
        }  # fmt: skip


class LogmelStats:
    """Mean and standard deviation over frames of log-mel energies (dB)."""

    sample_rate = SAMPLE_RATE
    min_samples = N_FFT

    def __init__(self, name: str = "logmel-stats", n_mels: int = 64):
        self.name, self.n_mels = name, int(n_mels)
        if self.n_mels < 1:
            raise ValueError(f"encoder {name!r}: n_mels must be >= 1, got {n_mels}")
        self.dim = 2 * self.n_mels

    def embed_one(self, wave: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=self.n_mels)
        logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)]).astype(np.float32)

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.embed_one(np.asarray(w, np.float32)) for w in waves]).reshape(len(waves), self.dim)

    def metadata(self) -> dict[str, Any]:
        import librosa

        return {
            "family": "classical",
            "config": {"n_mels": self.n_mels, "n_fft": N_FFT, "hop_length": HOP, "window": "hann",
                       "amin": 1e-10, "ref": 1.0},
            "pooling": "mean+std over frames",
            "checkpoint_sha256": None,
            "librosa_version": librosa.__version__,
        }  # fmt: skip


class Egemaps:
    """openSMILE's eGeMAPSv02 functionals (88 per utterance)."""

    sample_rate = SAMPLE_RATE
    dim = 88
    min_samples = SAMPLE_RATE // 10  # openSMILE's F0/jitter functionals need a few 60 ms frames

    def __init__(self, name: str = "egemaps"):
        try:
            import opensmile
        except ImportError:
            raise ImportError(
                "encoder 'egemaps' needs the optional package opensmile: pip install 'parrot_jax[egemaps]'"
            ) from None
        self.name = name
        self._version = opensmile.__version__
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )

    def embed_one(self, wave: np.ndarray) -> np.ndarray:
        values = self._smile.process_signal(wave, SAMPLE_RATE).to_numpy(dtype=np.float32).reshape(-1)
        if values.shape != (self.dim,):
            raise ValueError(f"encoder 'egemaps': openSMILE returned {values.shape[0]} values, expected {self.dim}")
        return values

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.embed_one(np.asarray(w, np.float32)) for w in waves]).reshape(len(waves), self.dim)

    def metadata(self) -> dict[str, Any]:
        return {
            "family": "classical",
            "config": {"feature_set": "eGeMAPSv02", "feature_level": "Functionals"},
            "pooling": "openSMILE functionals",
            "checkpoint_sha256": None,
            "opensmile_version": self._version,
        }


_BUILDERS = {"mfcc-stats": MfccStats, "logmel-stats": LogmelStats, "egemaps": Egemaps}


def build(name: str, checkpoint: Path | None = None, **options: Any) -> MfccStats | LogmelStats | Egemaps:
    """Registry builder: `checkpoint` must be None (classical features have no weights)."""
    if name not in _BUILDERS:
        raise ValueError(f"{name!r} is not a classical encoder; known: {', '.join(_BUILDERS)}")
    if checkpoint is not None:
        raise ValueError(f"encoder {name!r} takes no checkpoint, got {checkpoint}")
    allowed = {"mfcc-stats": {"n_mfcc", "n_mels", "deltas"}, "logmel-stats": {"n_mels"}, "egemaps": set()}[name]
    _check_options(name, options, allowed)
    return _BUILDERS[name](name=name, **options)
