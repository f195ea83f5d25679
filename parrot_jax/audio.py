"""Audio: read a file, validate it, downmix to mono and resample to 16 kHz float32.

Reading is soundfile's (wav, flac, ogg, aiff, ...); resampling is soxr's "HQ" band-limited resampler.
Every problem raises :class:`AudioError` naming the file and what was wrong, where it is first seen:
missing, unreadable, a sample rate below ``MIN_SAMPLE_RATE`` or a duration over ``max_seconds`` (default
``MAX_SECONDS``; both read from the header, before anything is decoded, so that a small file declaring
hours of audio or a 1 Hz rate cannot take unbounded memory), truncated (a WAV whose header declares more
audio than the file holds), empty, NaN/Inf samples, all silence (peak below ``SILENCE_PEAK``), and
(``check_length``) shorter than an encoder's minimum. :func:`read_audio` also says what reading changed:
resampled, downmixed, or decoded from another container than the file's suffix names.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
# A file whose peak |sample| is below this (-80 dBFS, about 3 LSB of 16-bit PCM) is "all silence".
SILENCE_PEAK = 1e-4
# The containers (soundfile's format names) each suffix promises.
SUFFIX_FORMATS = {
    ".wav": ("WAV", "WAVEX", "RF64", "W64"), ".flac": ("FLAC",), ".ogg": ("OGG",), ".aiff": ("AIFF",),
    ".aif": ("AIFF",), ".mp3": ("MP3",),
}  # fmt: skip
# Sample rates below this are refused (speech needs a few kHz of bandwidth; resampling 1 Hz to 16 kHz
# would multiply the samples by 16000).
MIN_SAMPLE_RATE = 4000
# Recordings longer than this (seconds) are refused unless a caller allows more: 10 minutes of 16 kHz
# float32 is 38 MB, and the encoders' memory grows with the length.
MAX_SECONDS = 600.0
NOTES = ("resampled", "downmixed", "misnamed")  # the keys of read_audio's notes


class AudioError(ValueError):
    """A file that cannot become a valid 16 kHz waveform; `problem` says why."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def _wav_data_shortfall(path: Path | str) -> tuple[int, int] | None:
    """(declared, present) byte counts of a RIFF/WAVE file's ``data`` chunk where the file holds fewer
    bytes than its header declares; None where it holds them all, or the length is left open (0 or
    0xFFFFFFFF, as streaming writers do)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        position = 12
        while position + 8 <= size:
            f.seek(position)
            chunk_id, declared = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                present = size - position - 8
                open_length = declared in (0, 0xFFFFFFFF)
                return None if open_length or present >= declared else (declared, present)
            position += 8 + declared + (declared & 1)
    return None


def read_audio(
    path: Path | str, sample_rate: int = SAMPLE_RATE, silence_peak: float = SILENCE_PEAK,
    max_seconds: float = MAX_SECONDS,
) -> tuple[np.ndarray, dict[str, str]]:
    """The file's samples as float32 mono at `sample_rate` (x = mean over channels, then soxr HQ
    resampling), and notes on what reading changed: {"resampled": "from 44100 Hz", "downmixed": "from 2
    channels", "misnamed": "AIFF audio in a .wav file"} (only the keys that apply). A file whose header
    declares a rate below MIN_SAMPLE_RATE or more than `max_seconds` of audio is refused unread."""
    if not Path(path).is_file():
        raise AudioError(path, "no such file")
    try:
        with sf.SoundFile(str(path)) as f:
            container, rate, channels = f.format, f.samplerate, f.channels
            if rate < MIN_SAMPLE_RATE:
                raise AudioError(path, f"sample rate {rate} Hz is below the {MIN_SAMPLE_RATE} Hz this reads")
            if f.frames > max_seconds * rate:
                raise AudioError(path, f"{f.frames / rate:.1f} s of audio (its header says) is over the limit of "
                                 f"{max_seconds:g} s (predict: --max-seconds)")
            data = f.read(dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as error:
        raise AudioError(path, f"unreadable audio file ({error})") from None
    if container in ("WAV", "WAVEX") and (shortfall := _wav_data_shortfall(path)) is not None:
        declared, present = shortfall
        raise AudioError(path, f"truncated: its header declares {declared} bytes of audio, the file holds {present}")
    if data.shape[0] == 0:
        raise AudioError(path, "empty: 0 samples")
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(path, f"contains {bad} NaN/Inf samples")
    notes = {}
    suffix = Path(path).suffix.lower()
    if suffix in SUFFIX_FORMATS and container not in SUFFIX_FORMATS[suffix]:
        notes["misnamed"] = f"{container} audio in a {suffix} file"
    mono = data.mean(axis=1)
    if channels > 1:
        notes["downmixed"] = f"from {channels} channels"
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
        notes["resampled"] = f"from {rate} Hz"
    peak = float(np.max(np.abs(mono)))
    if peak < silence_peak:
        raise AudioError(path, f"all silence: peak |sample| {peak:.2e} < {silence_peak:.0e}")
    return np.ascontiguousarray(mono, dtype=np.float32), notes


def load_audio(path: Path | str, sample_rate: int = SAMPLE_RATE, silence_peak: float = SILENCE_PEAK,
               max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """The file's samples as float32 mono at `sample_rate` (:func:`read_audio` without its notes)."""
    return read_audio(path, sample_rate, silence_peak, max_seconds)[0]


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
