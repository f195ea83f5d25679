"""Audio: read a file, validate it, downmix to mono and resample to 16 kHz float32.

Reading is soundfile's (wav, flac, ogg, ...); resampling is soxr's "HQ" band-limited resampler. Every
problem raises :class:`AudioError` naming the file and what was wrong, where it is first seen:
unreadable, empty, NaN/Inf samples, all silence (peak below ``SILENCE_PEAK``), and (``check_length``)
shorter than an encoder's minimum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
# A file whose peak |sample| is below this (-80 dBFS, about 3 LSB of 16-bit PCM) is "all silence".
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """A file that cannot become a valid 16 kHz waveform; `problem` says why."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def load_audio(path: Path | str, sample_rate: int = SAMPLE_RATE, silence_peak: float = SILENCE_PEAK) -> np.ndarray:
    """The file's samples as float32 mono at `sample_rate`: x = mean over channels, then soxr HQ resampling."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as error:
        raise AudioError(path, f"unreadable audio file ({error})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty: 0 samples")
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(path, f"contains {bad} NaN/Inf samples")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(mono)))
    if peak < silence_peak:
        raise AudioError(path, f"all silence: peak |sample| {peak:.2e} < {silence_peak:.0e}")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_length(
    wave: np.ndarray, min_samples: int, path: Path | str, who: str = "the encoder", sample_rate: int = SAMPLE_RATE
) -> None:
    """Raise AudioError where `wave` has fewer than `min_samples` samples."""
    if len(wave) < min_samples:
        raise AudioError(
            path,
            f"too short: {len(wave)} samples ({len(wave) / sample_rate:.3f} s at {sample_rate} Hz); {who} needs "
            f"at least {min_samples} ({min_samples / sample_rate:.3f} s)",
        )
