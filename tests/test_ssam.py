"""Audio Mamba (SSAM): front end, mixer, scans, encoder and loader against committed PyTorch references.

The fixtures under tests/fixtures/ssam/ are made by tests/make_ssam_fixtures.py (torch + transformers);
this file needs neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parrot_jax.encoders import registry, ssam
from parrot_jax.encoders.checkpoints import CheckpointError, CheckpointMismatch, load_params

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ssam"
EMODB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb" / "wav"
TOL = 1e-4  # max abs difference to the PyTorch references (float32)


@pytest.fixture(scope="module")
def frontend() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "frontend.npz") as f:
        return dict(f)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "forward.npz") as f:
        return dict(f)


@pytest.fixture(scope="module")
def waves(frontend: dict[str, np.ndarray]) -> list[np.ndarray]:
    """71 frames (one chunk, tail trimmed), 400 frames (whole chunks), 254 frames (two chunks, tail trimmed)."""
    return [frontend[f"wave{i}"].astype(np.float32) / 32768.0 for i in range(3)]


@pytest.fixture(scope="module")
def tiny() -> tuple[ssam.SSAMConfig, dict]:
    config, params = ssam.load(FIXTURES / "tiny")
    return config, params


# ------------------------------------------------------------------------------------------ front end


def test_mel_filterbank_equals_librosa_htk_without_norm() -> None:
    librosa = pytest.importorskip("librosa")
    fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=50.0, fmax=8000.0, htk=True, norm=None,
                             dtype=np.float64)
    np.testing.assert_allclose(ssam.mel_filterbank(), fb.T, atol=1e-12)


def test_log_mel_equals_torch_stft_reference(frontend: dict[str, np.ndarray], waves: list[np.ndarray]) -> None:
    for i, wave in enumerate(waves):
        ours = ssam.log_mel(wave)
        assert ours.shape == (1 + len(wave) // 160, 80) and ours.dtype == np.float32
        # the same computation in float64 (torch.stft, centred reflect padding, periodic Hann, htk mel)
        np.testing.assert_allclose(ours, frontend[f"logmel64_{i}"], atol=1e-5, rtol=0)
        # the official float32 computation
        np.testing.assert_allclose(ours, frontend[f"logmel32_{i}"], atol=TOL, rtol=0)


def test_log_mel_equals_librosa_computation(waves: list[np.ndarray]) -> None:
    librosa = pytest.importorskip("librosa")
    wave = waves[0].astype(np.float64)
    power = np.abs(librosa.stft(wave, n_fft=400, hop_length=160, win_length=400, window="hann", center=True,
                                pad_mode="reflect", dtype=np.complex128)) ** 2
    fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=50.0, fmax=8000.0, htk=True, norm=None,
                             dtype=np.float64)
    logmel = np.log(fb @ power + np.finfo(np.float32).eps)
    expected = ((logmel - logmel.mean()) / (logmel.std(ddof=1) + 1e-8)).T
    np.testing.assert_allclose(ssam.log_mel(waves[0]), expected, atol=1e-5, rtol=0)


def test_log_mel_of_silence_is_finite() -> None:
    silence = ssam.log_mel(np.zeros(1000, np.float32))  # std 0: (x - mean) / 1e-8 ~ 0, not NaN
    assert silence.shape == (7, 80) and np.abs(silence).max() <= 1e-6


def test_log_mel_refuses_too_short_and_multichannel_input() -> None:
    with pytest.raises(ValueError, match=r"at least 201 samples, got shape \(200,\)"):
        ssam.log_mel(np.zeros(200, np.float32))
    with pytest.raises(ValueError, match=r"1-D wave .* got shape \(2, 1000\)"):
        ssam.log_mel(np.zeros((2, 1000), np.float32))


# -------------------------------------------------------------------------------------- mixer and scans


@pytest.mark.parametrize("scan", ["associative", "sequential"])
def test_mixer_equals_transformers_slow_path(scan: str) -> None:
    with np.load(FIXTURES / "mixer.npz") as f:
        data = dict(f)
    state = {k[2:]: v for k, v in data.items() if k.startswith("w/")}
    mixer = ssam.MambaMixer(d_model=24, d_state=8, d_conv=4, expand=3, dt_rank=3, scan=scan)
    template = jax.eval_shape(mixer.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, 24)))["params"]
    params = load_params(template, state, ssam.mixer_rename, source="mixer.npz")
    out = np.asarray(mixer.apply({"params": params}, data["x"]))
    assert np.abs(out - data["y"]).max() <= TOL


def _naive_scan(u, dt, A, B, C) -> np.ndarray:
    """The recurrence written out in float64: h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = h_t . C_t."""
    u, dt, A, B, C = (np.asarray(v, np.float64) for v in (u, dt, A, B, C))
    h = np.zeros((u.shape[0],) + A.shape)
    ys = []
    for t in range(u.shape[1]):
        h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        ys.append(np.einsum("bds,bs->bd", h, C[:, t]))
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("shape", [(1, 1, 3, 2), (2, 17, 5, 4), (3, 64, 8, 24)])
def test_associative_and_sequential_scans_equal_the_recurrence(shape: tuple[int, int, int, int]) -> None:
    b, length, d, s = shape
    rng = np.random.default_rng(sum(shape))
    u = rng.standard_normal((b, length, d)).astype(np.float32)
    dt = rng.uniform(1e-3, 0.5, (b, length, d)).astype(np.float32)
    A = -rng.uniform(0.5, 16, (d, s)).astype(np.float32)
    B, C = (rng.standard_normal((b, length, s)).astype(np.float32) for _ in range(2))
    expected = _naive_scan(u, dt, A, B, C)
    for method in ("associative", "sequential"):
        got = np.asarray(ssam.selective_scan(u, dt, A, B, C, method))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=method)


def test_auto_scan_is_the_measured_faster_one_per_backend() -> None:
    expected = "sequential" if jax.default_backend() == "cpu" else "associative"
    assert ssam.resolve_scan("auto") == expected
    assert ssam.resolve_scan("associative") == "associative"


# --------------------------------------------------------------------------------------------- encoder


def test_sincos_table_equals_the_official_one(reference: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(ssam.sincos_pos_embed(32, (50, 5)), reference["pos_embed"], atol=1e-6)


def test_official_token_order_reads_time_major_tokens_frequency_major() -> None:
    t, f, d = 50, 5, 2
    tokens = np.arange(t * f)[None, :, None] * np.ones((1, 1, d))  # token k holds the value k
    official = np.asarray(ssam.rearrange_tokens(jnp.asarray(tokens), (t, f), "official"))
    corrected = np.asarray(ssam.rearrange_tokens(jnp.asarray(tokens), (t, f), "time_major"))
    for j in (0, 7, 49):
        assert official[0, j, ::d].tolist() == [k * t + j for k in range(f)]  # tokens j, 50 + j, ...
        assert corrected[0, j, ::d].tolist() == [j * f + k for k in range(f)]  # the 5 bands of time j


def test_chunking_and_trim_follow_the_official_runtime() -> None:
    chunks, pad = ssam.chunk_spectrogram(np.ones((71, 80), np.float32), 200)
    assert chunks.shape == (1, 200, 80) and pad == 129 and not chunks[0, 71:].any()
    assert ssam.chunk_spectrogram(np.ones((400, 80), np.float32), 200)[0].shape == (2, 200, 80)
    frames = np.arange(2 * 50, dtype=np.float64).reshape(2, 50, 1)
    # pad 146 frames -> floor(50 * 146 / 200) = 36 trailing frames dropped, 64 kept
    assert ssam.pool_frames(frames, 146, 200)[0] == np.arange(64).mean()


@pytest.mark.slow
@pytest.mark.parametrize("order", ["official", "time_major"])
def test_whole_forward_equals_pytorch_reference(order: str, tiny, waves, reference) -> None:
    config, params = tiny
    assert config == ssam.SSAMConfig(embed_dim=32, depth=2, dt_rank=2)
    encoder = ssam.SSAMEncoder("ssam-test", dataclasses.replace(config, token_order=order), params)
    pooled = encoder.embed_batch(waves)
    assert pooled.shape == (3, 160) and pooled.dtype == np.float32
    for i in range(3):
        assert np.abs(pooled[i] - reference[f"pooled_{order}_{i}"]).max() <= TOL, i
    chunks, pad = ssam.chunk_spectrogram(ssam.log_mel(waves[2]), 200)
    frames = encoder.frames(chunks).reshape(-1, 160)
    expected = reference[f"frames_{order}_2"]
    assert frames[: len(expected)].shape == expected.shape == (100 - (50 * pad) // 200, 160)
    assert np.abs(frames[: len(expected)] - expected).max() <= TOL


def test_the_two_token_orders_give_different_embeddings(reference: dict[str, np.ndarray]) -> None:
    assert np.abs(reference["pooled_official_0"] - reference["pooled_time_major_0"]).max() > 0.1


@pytest.mark.slow
def test_fp16_checkpoint_is_widened_and_matches(waves, reference) -> None:
    config, params = ssam.load(FIXTURES / "tiny_fp16")
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    pooled = ssam.SSAMEncoder("ssam-test", config, params).embed_batch(waves)
    for i in range(3):
        assert np.abs(pooled[i] - reference[f"pooled_fp16_{i}"]).max() <= TOL


@pytest.mark.slow
def test_batch_equals_one_at_a_time_and_silence_is_finite(tiny) -> None:
    config, params = tiny
    encoder = ssam.SSAMEncoder("ssam-test", config, params, chunk_batch=2)
    rng = np.random.default_rng(3)
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (201, 16000 * 5 + 37, 32000)]
    waves.append(np.zeros(8000, np.float32))
    together = encoder.embed_batch(waves)
    alone = np.stack([encoder.embed_batch([w])[0] for w in waves])
    assert np.isfinite(together).all()
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)
    assert encoder.embed_batch([]).shape == (0, 160)


@pytest.mark.slow
def test_real_emodb_utterances_batch_equals_single(tiny) -> None:
    if not EMODB.is_dir():
        pytest.skip(f"real Emo-DB audio not found at {EMODB} (../shared/data beside the repository)")
    sf = pytest.importorskip("soundfile")
    config, params = tiny
    encoder = ssam.SSAMEncoder("ssam-test", config, params)
    waves = [sf.read(p, dtype="float32")[0] for p in sorted(EMODB.glob("*.wav"))[:3]]
    together = encoder.embed_batch(waves)
    alone = np.stack([encoder.embed_batch([w])[0] for w in waves])
    assert np.isfinite(together).all()
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)


def test_embed_batch_refuses_bad_waves(tiny) -> None:
    config, params = tiny
    encoder = ssam.SSAMEncoder("ssam-test", config, params)
    with pytest.raises(ValueError, match=r"ssam-test: wave 1 contains NaN"):
        encoder.embed_batch([np.zeros(400, np.float32), np.full(400, np.nan, np.float32)])
    with pytest.raises(ValueError, match=r"wave 0 must be a 1-D float array of >= 201 samples .* shape \(100,\)"):
        encoder.embed_batch([np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match=r"dtype int16"):
        encoder.embed_batch([np.zeros(400, np.int16)])


def test_paper_size_models_have_the_registry_dims() -> None:
    for name, preset in ssam.PRESETS.items():
        out = jax.eval_shape(lambda x, c=preset: ssam.AudioMamba(c).init_with_output(jax.random.PRNGKey(0), x)[0],
                             jax.ShapeDtypeStruct((2, 200, 80), jnp.float32))
        assert out.shape == (2, 50, registry.entry(name).dim) == (2, 50, preset.frame_dim)


# ---------------------------------------------------------------------------------------------- loader


def test_newest_epoch_is_chosen_numerically() -> None:
    # checkpoint-9.pth (stale weights) sorts after checkpoint-10.pth as text
    assert ssam.newest_checkpoint(FIXTURES / "tiny").name == "checkpoint-10.pth"


def test_loader_reads_the_official_layout_and_keeps_args_inert(tiny) -> None:
    config, params = tiny
    assert set(params) == {"patch_embed", "pos_embed", "cls_token", "encoder_norm", "blocks_0", "blocks_1"}
    state = ssam.read_official_state(ssam.newest_checkpoint(FIXTURES / "tiny"))
    assert "mask_token" not in state and not any(k.startswith("pred.") for k in state)


def test_a_checkpoint_that_would_run_code_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match=r"refuses the global __builtin__\.print"):
        ssam.load(FIXTURES / "runs_code")
    assert "ran code" not in capsys.readouterr().out


def test_mismatched_weights_are_listed_in_one_error() -> None:
    wrong = ssam.SSAMConfig(embed_dim=32, depth=3, d_state=16, dt_rank=2)
    with pytest.raises(CheckpointMismatch) as info:
        ssam.load(FIXTURES / "tiny", wrong)
    message = str(info.value)
    assert "checkpoint-10.pth" in message
    assert "missing (11)" in message and "blocks_2/mixer/A_log" in message
    assert "mis-shaped" in message and "blocks.0.mixer.A_log -> blocks_0/mixer/A_log: (96, 24) (expected (96, 16))" in message


def test_registry_build_checks_the_named_size(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatch, match=r"mis-shaped .*cls_token -> cls_token: \(1, 1, 32\) \(expected \(1, 1, 192\)\)"):
        registry.build("ssam-tiny", FIXTURES / "tiny")
    with pytest.raises(FileNotFoundError, match=r"no checkpoints/checkpoint-<epoch>\.pth in"):
        registry.build("ssam-base", tmp_path)
    with pytest.raises(ValueError, match=r"token_order must be 'official' or 'time_major', got 'freq'"):
        registry.build("ssam-small", FIXTURES / "tiny", token_order="freq")


def test_metadata_is_json_and_names_the_checkpoint(tiny) -> None:
    config, params = tiny
    path = ssam.newest_checkpoint(FIXTURES / "tiny")
    meta = ssam.SSAMEncoder("ssam-test", config, params, path).metadata()
    assert json.loads(json.dumps(meta))["checkpoint"] == "checkpoint-10.pth"
    assert meta["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["dim"] == 160 and meta["options"]["token_order"] == "official"


def test_impossible_shapes_are_refused_naming_file_and_weight() -> None:
    state = dict(ssam.read_official_state(ssam.newest_checkpoint(FIXTURES / "tiny")))
    assert ssam.infer_config(state, "ck.pth").embed_dim == 32
    odd = {**state, "blocks.0.mixer.A_log": np.zeros((90, 24), np.float32)}
    with pytest.raises(CheckpointMismatch, match=r"ck\.pth: blocks\.0\.mixer\.A_log has 90 inner channels, not a "
                       r"multiple of cls_token's embedding size 32"):  # fmt: skip
        ssam.infer_config(odd, "ck.pth")
    flat = {**state, "patch_embed.proj.weight": np.zeros((32, 64), np.float32)}
    with pytest.raises(CheckpointMismatch, match=r"ck\.pth: patch_embed\.proj\.weight has shape \[32, 64\]; "
                       r"expected 4"):  # fmt: skip
        ssam.infer_config(flat, "ck.pth")
    wide = {**state, "cls_token": np.zeros((1, 1, 30), np.float32), "blocks.0.mixer.A_log": np.zeros((60, 24))}
    with pytest.raises(CheckpointMismatch, match=r"ck\.pth: the weights' shapes give an impossible SSAM config: "
                       r"embed_dim must be a multiple of 4"):  # fmt: skip
        ssam.infer_config(wide, "ck.pth")
