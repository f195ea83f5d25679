"""parrot_jax.encoders.registry: encoder lists with options, read and refused by their option types."""

from __future__ import annotations

import pytest

from parrot_jax.encoders import registry
from parrot_jax.encoders.registry import EncoderSpec, parse_encoders


def test_an_encoder_list_carries_each_encoders_options():
    specs = parse_encoders("wavlm-base:layer=6,pooling=mean+std,ssam-base,mfcc-stats:n_mfcc=20,deltas=false")
    assert specs == [EncoderSpec("wavlm-base", {"layer": 6, "pooling": "mean+std"}), EncoderSpec("ssam-base"),
                     EncoderSpec("mfcc-stats", {"n_mfcc": 20, "deltas": False})]
    assert parse_encoders("hubert-base:layer=0.5/0.25/0.25, ssam-tiny:token_order=time_major,chunk_batch=4") == [
        EncoderSpec("hubert-base", {"layer": (0.5, 0.25, 0.25)}),
        EncoderSpec("ssam-tiny", {"token_order": "time_major", "chunk_batch": 4})]
    assert parse_encoders("wav2vec2-base:layer=last,compilation_cache=/tmp/a:b")[0].options == {
        "layer": "last", "compilation_cache": "/tmp/a:b"}


@pytest.mark.parametrize("text, message", [
    ("wavlm-base:layr=6", "encoder 'wavlm-base': unknown option 'layr'; it takes layer, pooling (embedding); "
                          "batch_size, bucket_ratio, compilation_cache (run)"),
    ("logmel-stats:n_mfcc=20", "encoder 'logmel-stats': unknown option 'n_mfcc'; it takes n_mels (embedding)"),
    ("egemaps:n_mels=3", "encoder 'egemaps': unknown option 'n_mels'; it takes none"),
    ("wavlm-base:pooling=max", "wavlm-base:pooling='max': expected one of 'mean', 'mean+std'"),
    ("ssam-base:chunk_batch=many", "ssam-base:chunk_batch='many': expected an int"),
    ("layer=6,wavlm-base", "encoder option 'layer=6' comes before any encoder name"),
    ("wavlm", "unknown encoder 'wavlm'; known: "),
    ("mfcc-stats,mfcc-stats", "encoders given twice: mfcc-stats, mfcc-stats"),
    ("mfcc-stats:n_mfcc=20,n_mfcc=30", "encoder 'mfcc-stats': option 'n_mfcc' given twice"),
])
def test_a_bad_encoder_list_is_refused_naming_the_encoder_and_its_options(text, message):
    with pytest.raises(ValueError) as refused:
        parse_encoders(text)
    assert str(refused.value).startswith(message)


def test_build_refuses_unknown_options_naming_what_the_family_takes():
    with pytest.raises(ValueError, match=r"^encoder 'mfcc-stats': unknown option n_fft; it takes n_mfcc, n_mels, "
                                         r"deltas \(embedding\)$"):
        registry.build("mfcc-stats", n_fft=512)
    assert registry.build("mfcc-stats", n_mfcc=20).metadata()["options"] == {"n_mfcc": 20, "n_mels": 64,
                                                                              "deltas": True}


@pytest.mark.parametrize("options, message", [
    ({"deltas": "no"}, "deltas must be true or false, got 'no'"),
    ({"n_mfcc": True}, "need ints 1 <= n_mfcc <= n_mels, got n_mfcc=True"),
])
def test_mfcc_options_refuse_values_of_another_type(options, message):
    with pytest.raises(ValueError, match=message):
        registry.build("mfcc-stats", **options)


def test_a_layer_mix_is_one_identity_however_its_weights_are_written():
    from parrot_jax.encoders.wav2vec2 import EmbeddingOptions

    as_ints, as_floats = EmbeddingOptions(layer=(1, 0, 0)), EmbeddingOptions(layer=[1.0, 0.0, 0.0])
    assert as_ints == as_floats and all(type(w) is float for w in as_ints.layer)
