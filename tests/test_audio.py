"""parrot_jax.audio: reading, downmixing, resampling, and each kind of bad file."""

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from parrot_jax.audio import (MAX_SECONDS, MIN_SAMPLE_RATE, SAMPLE_RATE, AudioError, check_length, load_audio,
                              read_audio)


def _tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_16k_pcm_is_read_exactly(tmp_path: Path) -> None:
    ints = np.random.default_rng(0).integers(-20000, 20000, 8000).astype(np.int16)
    sf.write(tmp_path / "a.wav", ints, SAMPLE_RATE, subtype="PCM_16")
    wave = load_audio(tmp_path / "a.wav")
    assert wave.dtype == np.float32 and wave.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(wave, ints.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("suffix,subtype", [(".wav", "FLOAT"), (".flac", "PCM_24"), (".ogg", "VORBIS")])
def test_stereo_44k_is_downmixed_and_resampled(tmp_path: Path, suffix: str, subtype: str) -> None:
    left, right = _tone(1.0, 44100, 440.0, 0.6), _tone(1.0, 44100, 1000.0, 0.2)
    path = tmp_path / f"s{suffix}"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == np.float32
    assert abs(len(wave) - 16000) <= 1
    stored = sf.read(path, dtype="float32", always_2d=True)[0]
    expected = soxr.resample(stored.mean(axis=1), 44100, 16000, quality="HQ")
    np.testing.assert_allclose(wave, expected, atol=1e-6)
    # the mono mix keeps both tones at half their amplitude: spectral peaks at 440 Hz and 1 kHz
    spectrum = np.abs(np.fft.rfft(wave[1000:15000] * np.hanning(14000))) / (14000 / 4)
    freqs = np.fft.rfftfreq(14000, 1 / 16000)
    for freq, amplitude in [(440.0, 0.3), (1000.0, 0.1)]:
        near = np.abs(freqs - freq) < 5
        assert spectrum[near].max() == pytest.approx(amplitude, rel=0.05 if subtype != "VORBIS" else 0.15)
    assert spectrum[freqs > 7600].max() < 1e-3  # band-limited: nothing folded back near Nyquist


def _write_float(path: Path, data: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    sf.write(path, data, rate, subtype="FLOAT")
    return path


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"RIFF this is not audio" * 10)
    with pytest.raises(AudioError, match=r"garbage\.wav: unreadable audio file"):
        load_audio(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"absent\.wav: no such file$"):
        load_audio(tmp_path / "absent.wav")


@pytest.mark.parametrize("keep,present", [(0.5, 15978), (100, 56)])
def test_truncated_wav_is_refused(tmp_path: Path, keep: float, present: int) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, _tone(1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")  # 44-byte header + 32000 bytes
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    message = rf"cut\.wav: truncated: its header declares 32000 bytes of audio, the file holds {present}$"
    with pytest.raises(AudioError, match=message):
        load_audio(cut)
    assert len(load_audio(whole)) == SAMPLE_RATE


def test_notes_say_what_reading_changed(tmp_path: Path) -> None:
    plain = tmp_path / "plain.wav"
    sf.write(plain, _tone(0.5, SAMPLE_RATE), SAMPLE_RATE)
    assert read_audio(plain)[1] == {}
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, np.stack([_tone(0.5, 96000)] * 2, axis=1), 96000)
    assert read_audio(stereo)[1] == {"resampled": "from 96000 Hz", "downmixed": "from 2 channels"}
    aiff = tmp_path / "aiff.wav"
    sf.write(aiff, _tone(0.5, SAMPLE_RATE), SAMPLE_RATE, format="AIFF")
    wave, notes = read_audio(aiff)
    assert notes == {"misnamed": "AIFF audio in a .wav file"}
    np.testing.assert_array_equal(wave, load_audio(plain))


def test_empty_file(tmp_path: Path) -> None:
    path = _write_float(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=r"empty\.wav: empty: 0 samples"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_samples(tmp_path: Path, bad: float) -> None:
    data = _tone(0.5, SAMPLE_RATE)
    data[[10, 200]] = bad
    path = _write_float(tmp_path / "nonfinite.wav", data)
    with pytest.raises(AudioError, match=r"nonfinite\.wav: contains 2 NaN/Inf samples"):
        load_audio(path)


def test_all_silence(tmp_path: Path) -> None:
    path = _write_float(tmp_path / "zeros.wav", np.zeros(16000, np.float32))
    with pytest.raises(AudioError, match=r"zeros\.wav: all silence: peak \|sample\| 0\.00e\+00 < 1e-04"):
        load_audio(path)
    # stereo channels in antiphase cancel in the downmix: silence too
    tone = _tone(0.5, SAMPLE_RATE)
    path = _write_float(tmp_path / "antiphase.wav", np.stack([tone, -tone], axis=1))
    with pytest.raises(AudioError, match=r"antiphase\.wav: all silence"):
        load_audio(path)
    # a quiet but real signal (-60 dBFS) is accepted
    quiet = _write_float(tmp_path / "quiet.wav", _tone(0.5, SAMPLE_RATE, amplitude=1e-3))
    assert np.abs(load_audio(quiet)).max() == pytest.approx(1e-3, rel=1e-3)


def test_too_short(tmp_path: Path) -> None:
    wave = _tone(0.05, SAMPLE_RATE)  # 800 samples
    check_length(wave, 800, "x.wav")
    message = r"x\.wav: too short: 800 samples \(0\.050 s at 16000 Hz\); encoder 'e' needs at least 1280 \(0\.080 s\)"
    with pytest.raises(AudioError, match=message):
        check_length(wave, 1280, "x.wav", "encoder 'e'")


def _sparse_wav(path: Path, rate: int, frames: int) -> Path:
    """A 16-bit mono WAV declaring `frames` frames at `rate` Hz whose data is a hole (zeros, no disk space)."""
    size = 2 * frames
    with open(path, "wb") as f:
        fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)  # PCM, mono, 16-bit
        f.write(b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", size))
        f.truncate(44 + size)
    return path


def test_rates_below_the_floor_and_hours_of_audio_are_refused_from_the_header(tmp_path: Path) -> None:
    """Issue 18 #4: a 40 KB WAV declaring 1 Hz and a 4 KB sparse WAV of 10 hours took over 4.2 GB each."""
    one_hz = _sparse_wav(tmp_path / "one_hz.wav", 1, 20_000)
    with pytest.raises(AudioError, match=rf"^{one_hz}: sample rate 1 Hz is below the {MIN_SAMPLE_RATE} Hz this reads$"):
        load_audio(one_hz)
    hours = _sparse_wav(tmp_path / "ten_hours.wav", SAMPLE_RATE, 10 * 3600 * SAMPLE_RATE)
    with pytest.raises(AudioError, match=rf"^{hours}: 36000.0 s of audio \(its header says\) is over the limit of "
                                         rf"{MAX_SECONDS:g} s \(predict: --max-seconds\)$"):
        load_audio(hours)
    minute = _write_float(tmp_path / "minute.wav", _tone(60.0, SAMPLE_RATE))
    with pytest.raises(AudioError, match=r"60.0 s of audio \(its header says\) is over the limit of 59.5 s"):
        load_audio(minute, max_seconds=59.5)
    assert len(load_audio(minute, max_seconds=60.0)) == 60 * SAMPLE_RATE
    assert len(load_audio(_write_float(tmp_path / "floor.wav", _tone(0.5, MIN_SAMPLE_RATE), MIN_SAMPLE_RATE))) == 8000
