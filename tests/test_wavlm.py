"""parrot_jax.encoders.wavlm: gated relative position bias equal to transformers' WavLM (fixtures, live)."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pytest

from parrot_jax.encoders import registry
from parrot_jax.encoders import wavlm
from test_wav2vec2 import FIXTURES, TOL, check_batching, check_hidden_states


@pytest.mark.parametrize("family", ["wavlm", "wavlm_stable"])
def test_hidden_states_equal_transformers(family):
    check_hidden_states(FIXTURES / family, wavlm.load, wavlm.wavlm_model)


def test_batched_equals_one_at_a_time_group_norm():
    check_batching(FIXTURES / "wavlm", wavlm.build)


def test_registry_builds_wavlm_and_refuses_other_families():
    enc = registry.build("wavlm-base", FIXTURES / "wavlm")
    assert enc.dim == 16 and enc.metadata()["config"]["model_type"] == "wavlm"
    with pytest.raises(ValueError, match=r"model_type 'wav2vec2'; expected one of \['wavlm'\]"):
        wavlm.load(FIXTURES / "wav2vec2")


def test_bucket_table_small_cases():
    b = wavlm.relative_position_buckets(5, num_buckets=16, max_distance=40)
    # 8 buckets per sign, exact below 4: b[i, j] = |j - i| (+8 where j > i) for |j - i| < 4
    assert b[0, 0] == 0 and b[2, 1] == 1 and b[1, 2] == 9 and b[0, 3] == 11 and b[3, 0] == 3
    assert b[0, 4] >= 12 and b[4, 0] >= 4


@pytest.mark.torch
def test_bucket_table_equals_transformers_at_real_size():
    torch = pytest.importorskip("torch", reason="the comparison with transformers' bucketing needs the `ref` extra")
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    attn = WavLMAttention(768, 12, num_buckets=320, max_distance=800)
    for n in (1, 2, 399, 1600):
        rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        np.testing.assert_array_equal(wavlm.relative_position_buckets(n, 320, 800),
                                      attn._relative_positions_bucket(rel).numpy())


@pytest.mark.torch
@pytest.mark.slow
def test_live_random_config_equals_transformers(tmp_path):
    torch = pytest.importorskip("torch", reason="the live comparison needs the `ref` extra")
    import transformers as T

    torch.manual_seed(3)
    config = T.WavLMConfig(hidden_size=24, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
                           conv_dim=(12, 12), conv_kernel=(8, 4), conv_stride=(4, 3), num_conv_pos_embeddings=6,
                           num_conv_pos_embedding_groups=3, num_buckets=24, max_bucket_distance=60)
    model = T.WavLMModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    T.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path)
    rng = np.random.default_rng(3)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (700, 3100)]
    cfg, params = wavlm.load(tmp_path)
    for x in waves:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)[None], output_hidden_states=True)
        states, last, _ = wavlm.wavlm_model(cfg).apply({"params": params}, jnp.asarray(x)[None], jnp.array([x.size]))
        for s, r in zip(states, ref.hidden_states):
            np.testing.assert_allclose(np.asarray(s[0]), r[0].numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(np.asarray(last[0]), ref.last_hidden_state[0].numpy(), rtol=0, atol=TOL)
    enc = wavlm.build("t", tmp_path)
    np.testing.assert_allclose(enc.embed_batch(waves), np.stack([enc.embed_batch([w])[0] for w in waves]), atol=TOL)


def test_feature_store_wiring(tmp_path):
    """`parrot extract`'s store embeds a corpus with our encoder: its rows equal embed_batch on the same audio."""
    import json

    import soundfile as sf

    from parrot_jax import extraction

    root = tmp_path / "emodb"
    (root / "wav").mkdir(parents=True)
    rng = np.random.default_rng(0)
    waves = {}
    for name, n in [("03a01Fa.wav", 9000), ("08b02Wb.wav", 15000), ("11a04Ac.wav", 4000)]:
        waves[name] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        sf.write(root / "wav" / name, waves[name], 16000, subtype="FLOAT")
    extraction.extract("emodb", root, ["wavlm-base"], tmp_path / "out", batch_size=2,
                       checkpoints={"wavlm-base": FIXTURES / "wavlm"}, progress=False)
    store = next((tmp_path / "out").rglob("wavlm-base.npy")).parent
    ids = json.loads((store / "wavlm-base.json").read_text())["ids"]
    rows = np.load(store / "wavlm-base.npy")
    enc = wavlm.build("wavlm-base", FIXTURES / "wavlm")
    assert sorted(ids) == sorted(name[:-4] for name in waves)
    expected = enc.embed_batch([waves[f"{i}.wav"] for i in ids])
    np.testing.assert_allclose(rows, expected, rtol=0, atol=TOL)
