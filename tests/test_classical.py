"""parrot_jax.encoders.classical: the statistics equal a NumPy/SciPy computation of the documented math."""

import sys

import numpy as np
import pytest
from scipy.fft import dct
from scipy.signal import get_window, savgol_filter

from parrot_jax.encoders import registry
from parrot_jax.encoders.classical import HOP, N_FFT

SR = 16000


def _wave(seconds: float = 0.8, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: 140 Hz harmonics with a moving amplitude, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in range(1, 20))
    wave = 0.2 * voiced * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def _mel_power(wave: np.ndarray, n_mels: int) -> np.ndarray:
    """Periodic Hann, n_fft/2 zeros each side, |rfft|^2, Slaney mel filterbank."""
    import librosa

    padded = np.pad(wave.astype(np.float64), N_FFT // 2)
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.stack([padded[i * HOP : i * HOP + N_FFT] for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * get_window("hann", N_FFT, fftbins=True), axis=1)) ** 2
    return librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=n_mels, dtype=np.float64) @ power.T


def test_logmel_stats_match_the_math() -> None:
    encoder = registry.build("logmel-stats")
    wave = _wave()
    logmel = 10 * np.log10(np.maximum(_mel_power(wave, 64), 1e-10))
    expected = np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)])
    got = encoder.embed_batch([wave])
    assert got.dtype == np.float32 and got.shape == (1, 128) == (1, registry.entry("logmel-stats").dim)
    np.testing.assert_allclose(got[0], expected, atol=2e-3)  # dB; librosa computes in float32


@pytest.mark.parametrize("deltas", [True, False])
def test_mfcc_stats_match_the_math(deltas: bool) -> None:
    encoder = registry.build("mfcc-stats", n_mfcc=20, n_mels=40, deltas=deltas)
    wave = _wave(seed=1)
    db = 10 * np.log10(np.maximum(_mel_power(wave, 40), 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    c = dct(db, type=2, norm="ortho", axis=0)[:20]
    parts = [c.mean(axis=1), c.std(axis=1)]
    if deltas:
        d = savgol_filter(c, 9, 1, deriv=1, axis=1, mode="interp")
        parts += [d.mean(axis=1), d.std(axis=1)]
    got = encoder.embed_batch([wave])[0]
    assert got.shape == (80 if deltas else 40,) == (encoder.dim,)
    np.testing.assert_allclose(got, np.concatenate(parts), atol=2e-3)
    assert registry.build("mfcc-stats").dim == registry.entry("mfcc-stats").dim == 160


def test_rows_are_independent_of_the_batch() -> None:
    for name in ("mfcc-stats", "logmel-stats"):
        encoder = registry.build(name)
        waves = [_wave(0.5, 0), _wave(1.3, 1), _wave(0.09, 2)]
        batch = encoder.embed_batch(waves)
        for i, wave in enumerate(waves):
            np.testing.assert_array_equal(batch[i], encoder.embed_batch([wave])[0])


def test_min_samples_is_enough_for_finite_features() -> None:
    for name in ("mfcc-stats", "logmel-stats"):
        encoder = registry.build(name)
        wave = _wave(1.0)[: encoder.min_samples]
        assert np.all(np.isfinite(encoder.embed_batch([wave])))
    assert registry.build("mfcc-stats").min_samples == 1280  # 9 frames for the delta filter
    assert registry.build("mfcc-stats", deltas=False).min_samples == N_FFT


def test_options_and_checkpoints_are_checked() -> None:
    with pytest.raises(ValueError, match=r"encoder 'mfcc-stats': unknown option n_fft; it takes n_mfcc, n_mels, "
                                         r"deltas \(embedding\)"):
        registry.build("mfcc-stats", n_fft=512)
    with pytest.raises(ValueError, match=r"encoder 'logmel-stats' takes no checkpoint"):
        registry.build("logmel-stats", "some/folder")
    with pytest.raises(ValueError, match=r"encoder 'mfcc-stats': need ints 1 <= n_mfcc <= n_mels"):
        registry.build("mfcc-stats", n_mfcc=80, n_mels=64)
    meta = registry.build("mfcc-stats").metadata()
    assert meta["config"]["n_mfcc"] == 40 and meta["pooling"] == "mean+std over frames"
    assert meta["options"] == {"n_mfcc": 40, "n_mels": 64, "deltas": True} and meta["run_options"] == {}


def test_egemaps_without_opensmile_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` fail
    with pytest.raises(ImportError, match=r"needs the optional package opensmile: pip install 'parrot_jax\[egemaps\]'"):
        registry.build("egemaps")


def test_egemaps_functionals() -> None:
    opensmile = pytest.importorskip("opensmile", reason="optional extra `egemaps` (opensmile) not installed")
    encoder = registry.build("egemaps")
    wave = _wave(1.0)
    got = encoder.embed_batch([wave, wave[: encoder.min_samples]])
    assert got.shape == (2, 88) and got.dtype == np.float32 and np.all(np.isfinite(got))
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    reference = smile.process_signal(wave, SR)
    np.testing.assert_array_equal(got[0], reference.to_numpy(np.float32)[0])
    f0_mean = reference["F0semitoneFrom27.5Hz_sma3nz_amean"].iloc[0]
    assert f0_mean == pytest.approx(12 * np.log2(140 / 27.5), abs=0.5)  # the test signal's 140 Hz pitch
