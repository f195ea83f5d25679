"""parrot_jax.encoders.wav2vec2: equal to transformers' PyTorch models (committed fixtures, live with torch),
batched == one at a time, options, loading errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parrot_jax.encoders import checkpoints as ck
from parrot_jax.encoders import registry
from parrot_jax.encoders import wav2vec2 as w2v
from parrot_jax.encoders import wavlm

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
TOL = 1e-4


def fixture_waves(folder: Path) -> tuple[list[np.ndarray], np.lib.npyio.NpzFile]:
    expected = np.load(folder / "expected.npz")
    return [expected[f"wave_{i}"] for i in range(len([k for k in expected if k.startswith("wave_")]))], expected


def check_hidden_states(folder: Path, load, model) -> None:
    """Every hidden state and the last hidden state of our module vs transformers', per wave (<= TOL)."""
    cfg, params = load(folder)
    cfg_bin, params_bin = load(Path(f"{folder}_bin"))
    assert cfg_bin == cfg
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-7), params, params_bin)
    encoder = w2v.AttentionEncoder("t", folder, model, (cfg.model_type,), w2v.EmbeddingOptions())
    waves, expected = fixture_waves(folder)
    apply = jax.jit(model(cfg).apply)
    for i, wave in enumerate(waves):
        x = encoder.prepare(wave)
        states, last, frames = apply({"params": params}, jnp.asarray(x)[None], jnp.array([x.size]))
        ref = expected[f"hidden_{i}"]
        assert int(frames[0]) == ref.shape[1] == cfg.frames(x.size)
        assert len(states) == ref.shape[0]
        for k, s in enumerate(states):
            np.testing.assert_allclose(np.asarray(s[0]), ref[k], rtol=0, atol=TOL,
                                       err_msg=f"{folder.name} wave {i} state {k}")
        np.testing.assert_allclose(np.asarray(last[0]), expected[f"last_{i}"], rtol=0, atol=TOL)


def check_batching(folder: Path, build_fn, **options) -> None:
    """Batched embeddings == one-at-a-time == the mean of transformers' last hidden state (<= TOL)."""
    waves, expected = fixture_waves(folder)
    enc = build_fn("t", folder, batch_size=4, **options)
    batched = enc.embed_batch(waves[::-1])[::-1]  # unsorted input order comes back in order
    single = np.stack([enc.embed_batch([w])[0] for w in waves])
    ref = np.stack([expected[f"last_{i}"].mean(axis=0) for i in range(len(waves))])
    assert batched.shape == (len(waves), enc.dim) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, rtol=0, atol=TOL)
    np.testing.assert_allclose(single, ref, rtol=0, atol=TOL)


FAMILIES = ["wav2vec2", "hubert", "unispeech_sat", "mms"]


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_equal_transformers(family):
    check_hidden_states(FIXTURES / family, w2v.load, w2v.Wav2Vec2Model)


@pytest.mark.parametrize("family", ["wav2vec2", "mms"])  # group-norm (valid-sample statistics) and layer-norm
def test_batched_equals_one_at_a_time(family):
    check_batching(FIXTURES / family, w2v.build)


def test_layer_and_pooling_options():
    folder = FIXTURES / "hubert"
    waves, expected = fixture_waves(folder)
    hidden = [expected[f"hidden_{i}"] for i in range(len(waves))]
    one = w2v.build("t", folder, layer=1, batch_size=2).embed_batch(waves)
    np.testing.assert_allclose(one, np.stack([h[1].mean(0) for h in hidden]), atol=TOL)
    weights = [0.5, 0.25, 0.25]
    mix = w2v.build("t", folder, layer=weights, batch_size=2).embed_batch(waves)
    np.testing.assert_allclose(mix, np.stack([np.tensordot(weights, h, 1).mean(0) for h in hidden]), atol=TOL)
    enc = w2v.build("t", folder, pooling="mean+std", batch_size=2)
    assert enc.dim == 32
    ms = enc.embed_batch(waves)
    last = [expected[f"last_{i}"] for i in range(len(waves))]
    np.testing.assert_allclose(ms, np.stack([np.concatenate([h.mean(0), h.std(0)]) for h in last]), atol=TOL)
    every = w2v.build("t", folder, layer="all", batch_size=2)
    stacked = every.embed_batch(waves)
    assert stacked.shape == (len(waves), 3, 16) and every.layers == 3 and every.metadata()["layers"] == 3
    np.testing.assert_allclose(stacked, np.stack([h.mean(1) for h in hidden]), atol=TOL)  # hidden_k pooled alone
    np.testing.assert_allclose(stacked[:, 1], one, atol=1e-6)  # layer 1 of layer=1
    for bad, message in [({"layer": 3}, r"layer=3; expected 0\.\.2"), ({"layer": [1.0]}, "1 given; expected 3"),
                         ({"pooling": "max"}, "pooling='max'"), ({"layer": "first"}, "expected 'last', 'all'")]:
        with pytest.raises(ValueError, match=message):
            w2v.build("t", folder, **bad)


def test_encoder_protocol_and_bad_waves():
    folder = FIXTURES / "wav2vec2"
    enc = registry.build("wav2vec2-base", folder)
    assert (enc.name, enc.dim, enc.sample_rate, enc.min_samples) == ("wav2vec2-base", 16, 16000, 30)
    meta = enc.metadata()
    assert meta["checkpoint"] == ["model.safetensors"] and len(meta["checkpoint_sha256"]) == 64
    assert meta["config"]["hidden_size"] == 16 and meta["options"] == {"layer": "last", "pooling": "mean"}
    assert meta["run_options"] == {"batch_size": 4, "bucket_ratio": 1.1, "compilation_cache": None}
    json.dumps(meta)
    with pytest.raises(ValueError, match="at least 30 samples"):
        enc.embed_batch([np.zeros(29, np.float32)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        enc.embed_batch([np.full(100, np.nan, np.float32)])
    with pytest.raises(ValueError, match=r"model_type 'wavlm'; expected one of"):
        w2v.load(FIXTURES / "wavlm")


def test_missing_unexpected_misshaped_weights_listed_together(tmp_path):
    src = FIXTURES / "wav2vec2"
    folder = tmp_path / "broken"
    shutil.copytree(src, folder)
    state = ck.read_state_dict(src / "model.safetensors")
    state = {k: v for k, v in state.items() if k != "encoder.layers.1.feed_forward.output_dense.bias"}
    state["encoder.layers.0.attention.q_proj.weight"] = np.zeros((16, 15), np.float32)
    state["encoder.extra.weight"] = np.zeros(3, np.float32)
    header, blobs, offset = {}, [], 0
    for k, v in state.items():
        raw = np.ascontiguousarray(v, np.float32).tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))
    with pytest.raises(ck.CheckpointMismatch) as e:
        w2v.load(folder)
    msg = str(e.value)
    assert "missing (1): encoder/layers_1/feed_forward/output_dense/bias" in msg
    assert "unexpected (1): encoder.extra.weight" in msg
    assert "encoder.layers.0.attention.q_proj.weight -> encoder/layers_0/attention/q_proj/kernel: (15, 16)" in msg


def test_sharded_checkpoint_loads_like_one_file(tmp_path):
    import safetensors.numpy

    src = FIXTURES / "wav2vec2"
    folder = tmp_path / "sharded"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(src / name, folder / name)
    state = ck.read_state_dict(src / "model.safetensors")
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, shard_keys in halves.items():
        safetensors.numpy.save_file({k: np.ascontiguousarray(state[k]) for k in shard_keys}, folder / shard)
    index = {"weight_map": {k: shard for shard, ks in halves.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _, whole = w2v.load(src)
    _, sharded = w2v.load(folder)
    jax.tree_util.tree_map(np.testing.assert_array_equal, whole, sharded)
    assert w2v.build("t", folder).metadata()["checkpoint"] == sorted(halves)


def test_refuses_adapter_configs(tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(FIXTURES / "wav2vec2", folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "adapter_attn_dim": 4}))
    with pytest.raises(ValueError, match="adapter_attn_dim"):
        w2v.load(folder)


@pytest.mark.parametrize("change,message", [
    ({"num_attention_heads": 5}, r"num_attention_heads=5 does not divide hidden_size=16"),
    ({"num_conv_pos_embedding_groups": 3}, r"num_conv_pos_embedding_groups=3 does not divide hidden_size=16"),
    ({"num_hidden_layers": 0}, r"num_hidden_layers=0; expected a positive integer"),
    ({"conv_kernel": [10, 3]}, r"not a readable transformers config \(.*len\(config\.conv_kernel\) = 2"),
    ({"conv_stride": [5, 0, 2]}, r"conv_stride=\[5, 0, 2\]; expected positive integers"),
])  # fmt: skip
def test_inconsistent_configs_are_refused_naming_file_and_field(tmp_path, change, message):
    folder = tmp_path / "bad"
    shutil.copytree(FIXTURES / "wav2vec2", folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ck.CheckpointError, match=rf"bad/config\.json: {message}"):
        w2v.load(folder)


def test_corrupt_config_names_its_file(tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(FIXTURES / "wav2vec2", folder)
    (folder / "config.json").write_text('{"model_type": "wav2vec2", ')
    with pytest.raises(ck.CheckpointError, match=r"corrupt/config\.json: not a readable transformers config"):
        w2v.load(folder)


def test_bucket_length_grid():
    for n in [1, 319, 320, 321, 5000, 16000 * 7 + 3]:
        size = w2v.bucket_length(n, 320, 1.25)
        assert size >= n and size % 320 == 0 and (size - n) < max(320, 0.25 * n + 320)
    assert len({w2v.bucket_length(n, 320, 1.25) for n in range(32000, 128001, 97)}) <= 8


REAL_SIZES = {  # the checkpoints the paper uses, by their published configs (architecture only)
    "wav2vec2-base": ("Wav2Vec2", {}),
    "hubert-base": ("Hubert", {}),
    "unispeech-sat-base": ("UniSpeechSat", {}),
    "mms-1b": ("Wav2Vec2", dict(hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120,
                                 feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    "wavlm-base": ("WavLM", {}),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_real_size_checkpoint_layout(name):
    """Every key and shape of transformers' real-size model maps onto our parameter tree (meta tensors: no memory)."""
    torch = pytest.importorskip("torch", reason="building transformers' model needs the `ref` extra")
    import transformers

    prefix, overrides = REAL_SIZES[name]
    config = getattr(transformers, f"{prefix}Config")(**overrides)
    with torch.device("meta"):
        model = getattr(transformers, f"{prefix}Model")(config)
    state = {k: np.broadcast_to(np.float32(1), tuple(v.shape)) for k, v in model.state_dict().items()}
    cfg = w2v.Wav2Vec2Config.from_hf(config)
    module = wavlm.wavlm_model(cfg) if prefix == "WavLM" else w2v.Wav2Vec2Model(cfg)
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 400)), jnp.array([400]))
    params = ck.load_params(template["params"], w2v.prepare_state(state), w2v.rename, source=name)
    n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    # transformers counts two more tensors: masked_spec_embed (training only) and the weight norm's g,
    # which is folded into the kernel here
    assert n == sum(p.numel() for p in model.parameters()) - config.hidden_size - config.num_conv_pos_embeddings


@pytest.mark.torch
@pytest.mark.slow
def test_live_random_config_equals_transformers(tmp_path):
    """A fresh random config (not the committed one), compared live with transformers."""
    torch = pytest.importorskip("torch", reason="the live comparison needs the `ref` extra")
    import transformers as T

    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    config = T.HubertConfig(hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40,
                            conv_dim=(12, 12), conv_kernel=(8, 4), conv_stride=(4, 3), num_conv_pos_embeddings=5,
                            num_conv_pos_embedding_groups=3, feat_extract_norm=str(rng.choice(["group", "layer"])),
                            do_stable_layer_norm=bool(rng.integers(2)), conv_pos_batch_norm=True)
    model = T.HubertModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        bn = model.encoder.pos_conv_embed.batch_norm
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path)
    T.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (500, 2000)]
    enc = w2v.build("t", tmp_path)
    cfg, params = w2v.load(tmp_path)
    for wave in waves:
        x = enc.prepare(wave)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)[None], output_hidden_states=True)
        states, last, _ = w2v.Wav2Vec2Model(cfg).apply({"params": params}, jnp.asarray(x)[None], jnp.array([x.size]))
        for s, r in zip(states, ref.hidden_states):
            np.testing.assert_allclose(np.asarray(s[0]), r[0].numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(np.asarray(last[0]), ref.last_hidden_state[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(enc.embed_batch(waves), np.stack([enc.embed_batch([w])[0] for w in waves]), atol=TOL)


@pytest.mark.slow
def test_compiled_programs_go_to_the_persistent_cache(tmp_path):
    """A fresh process writes its compiled programs to the cache folder; a second one reads them back."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "jax-cache"
    script = (
        "import numpy as np, sys\n"
        "from parrot_jax.encoders import wav2vec2 as w2v\n"
        "enc = w2v.build('t', sys.argv[1], compilation_cache=sys.argv[2])\n"
        "print(enc.embed_batch([np.ones(3000, np.float32)])[0, :3].tolist())\n"
    )
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PLATFORMS": "cpu"}
    run = lambda: subprocess.run([sys.executable, "-c", script, str(FIXTURES / "wav2vec2"), str(cache)], env=env,
                                 capture_output=True, text=True, check=True)
    first = run()
    entries = {p.name for p in cache.iterdir()}
    assert entries, first.stderr
    second = run()
    assert second.stdout == first.stdout
    assert {p.name for p in cache.iterdir()} == entries  # nothing new compiled: every program came from the cache
