"""parrot_jax.predict: saved models (orbax), and emotions of recordings the test writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parrot_jax import cli
from parrot_jax.audio import load_audio
from parrot_jax.features import load_features
from parrot_jax.predict import predict_files, train_on_corpus
from parrot_jax.saved_model import load_model, save_model
from parrot_jax.training import TrainConfig

ENCODERS = ["mfcc-stats", "logmel-stats"]
TINY = TrainConfig(epochs=2, batch_size=8, eval_batch_size=8)
SMALL_MODEL = {"filters": (4, 8), "latent_dim": 8, "hidden": 16}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus root, feature store) of a 24-utterance demo corpus."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.extraction import extract

    base = tmp_path_factory.mktemp("predict")
    root = generate_demo_corpus(base / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, ENCODERS, base / "features", progress=False)
    return root, base / "features"


@pytest.fixture(scope="module")
def saved(corpus, tmp_path_factory) -> Path:
    _, store = corpus
    model, scores = train_on_corpus(store, "demo", "parrot", ENCODERS, TINY, SMALL_MODEL, holdout=0.25,
                                    val_fraction=0.25)
    assert scores["holdout_rows"] == 6 and scores["train_rows"] + scores["val_rows"] == 18
    return save_model(tmp_path_factory.mktemp("model") / "parrot", model)


def test_saved_model_predicts_a_written_file_as_its_stored_features(corpus, saved, tmp_path):
    root, store = corpus
    model = load_model(saved)
    assert model.kind == "parrot" and model.encoders == tuple(ENCODERS)
    assert model.class_names == ("anger", "happiness", "neutral", "sadness") and model.members == 1
    stored = [load_features(store, "demo", e) for e in ENCODERS]
    row = 5
    source = root / "wav" / f"{stored[0].ids[row]}.wav"
    # The test writes a new file with the same samples (16-bit PCM round-trips exactly).
    new = tmp_path / "new_recording.wav"
    sf.write(new, load_audio(source), 16000, subtype="PCM_16")
    [prediction] = predict_files(model, [new])
    expected = model.probabilities([np.asarray(s.matrix[row : row + 1]) for s in stored])[0]
    got = np.array([prediction.probabilities[c] for c in model.class_names])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert prediction.emotion == model.class_names[int(expected.argmax())]
    assert got.sum() == pytest.approx(1.0, abs=1e-5)


def test_save_and_load_keep_params_exactly(corpus, saved, tmp_path):
    model = load_model(saved)
    again = load_model(save_model(tmp_path / "copy", model))
    for a, b in zip(np.concatenate([np.ravel(x) for x in _leaves(model.params)]),
                    np.concatenate([np.ravel(x) for x in _leaves(again.params)])):
        assert a == b
    np.testing.assert_array_equal(model.standardizer.mean[0], again.standardizer.mean[0])
    assert load_model(save_model(tmp_path / "copy", model)).members == model.members  # a saved model is replaced
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table1.md").write_text("keep me")
    with pytest.raises(ValueError, match=r"results holds other things than a saved model \(table1\.md\)"):
        save_model(tmp_path / "results", model)
    assert (tmp_path / "results" / "table1.md").read_text() == "keep me"


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_stereo_44k_file_is_downmixed_and_resampled(saved, tmp_path):
    t = np.arange(int(1.5 * 44100)) / 44100
    voice = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([voice, 0.5 * voice], axis=1), 44100)
    [prediction] = predict_files(load_model(saved), [path])
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_cli_trains_saves_then_loads(corpus, tmp_path, capsys):
    root, store = corpus
    wav = tmp_path / "clip.wav"
    sf.write(wav, load_audio(next((root / "wav").glob("*.wav"))), 16000, subtype="PCM_16")
    target = tmp_path / "model"
    argv = ["predict", "--model", str(target), "--corpus", "demo", "--features", str(store), "--kind", "fcn",
            "--encoders", "logmel-stats", "--epochs", "1", "--holdout", "0.25", "--val-fraction", "0.25", str(wav)]
    assert cli.main(argv) == 0
    trained = capsys.readouterr().out
    assert "trained fcn on demo (logmel-stats)" in trained and (target / "model.json").is_file()
    assert cli.main(["predict", "--model", str(target), str(wav)]) == 0
    loaded = capsys.readouterr().out.splitlines()
    assert loaded[0].startswith(f"model {target}: fcn on logmel-stats, 1 member(s)")
    header, line = loaded[1].split(), loaded[2].split()
    assert header == ["file", "emotion", "anger", "happiness", "neutral", "sadness"]
    probs = [float(x) for x in line[2:]]
    assert line[0] == str(wav) and line[1] == header[2 + int(np.argmax(probs))]
    assert trained.splitlines()[-1] == loaded[2]  # the same model gives the same line


def test_missing_model_and_mismatched_encoder_settings_are_refused(saved, tmp_path, capsys):
    wav = tmp_path / "x.wav"
    sf.write(wav, 0.1 * np.sin(np.linspace(0, 3000, 16000)), 16000)
    assert cli.main(["predict", "--model", str(tmp_path / "none"), str(wav)]) == 1
    assert "none holds no saved model (model.json missing); pass --corpus NAME" in capsys.readouterr().err
    meta = json.loads((saved / "model.json").read_text())
    meta["feature_metadata"]["mfcc-stats"]["encoder_options"]["window"] = "hamming"
    with pytest.raises(ValueError, match=r"^encoder 'mfcc-stats': unknown option window; it takes n_mfcc, n_mels, "
                                         r"deltas \(embedding\)$"):
        predict_files(load_model(_copy_with(saved, meta, tmp_path / "other")), [wav])
    del meta["feature_metadata"]["mfcc-stats"]["encoder_options"]
    meta["feature_metadata"]["mfcc-stats"]["format_version"] = 1
    with pytest.raises(ValueError, match=r"^encoder 'mfcc-stats': the model was trained on features of store format "
                                         r"1, which record no encoder options: extract the features again"):
        predict_files(load_model(_copy_with(saved, meta, tmp_path / "legacy")), [wav])


def _copy_with(saved: Path, meta: dict, folder: Path) -> Path:
    """A saved model sharing `saved`'s params, with `meta` as its model.json."""
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "state").symlink_to(saved / "state")
    return folder


def test_predict_rebuilds_encoders_with_the_options_their_features_were_extracted_with(tmp_path):
    """wav2vec2 features of hidden state 1 (not the default last one): a new recording is embedded alike."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.encoders import registry
    from parrot_jax.extraction import extract

    folder = Path(__file__).resolve().parent / "fixtures" / "hf" / "wav2vec2"
    root = generate_demo_corpus(tmp_path / "corpus", seed=0, n_speakers=3, n_texts=2)
    spec = registry.parse_encoders("wav2vec2-base:layer=1")
    extract("demo", root, spec, tmp_path / "features", checkpoints={"wav2vec2-base": folder}, progress=False)
    model, _ = train_on_corpus(tmp_path / "features", "demo", "fcn", ["wav2vec2-base"], TINY, SMALL_MODEL,
                               holdout=0.25, val_fraction=0.25)
    model = load_model(save_model(tmp_path / "model", model))
    stored = load_features(tmp_path / "features", "demo", "wav2vec2-base")
    row = 3
    new = tmp_path / "new_recording.wav"
    sf.write(new, load_audio(root / "wav" / f"{stored.ids[row]}.wav"), 16000, subtype="PCM_16")
    last = registry.build("wav2vec2-base", folder).embed_batch([load_audio(new)])[0]
    assert np.abs(last - stored.matrix[row]).max() > 1e-2  # the default options embed it otherwise
    [prediction] = predict_files(model, [new], {"wav2vec2-base": folder})
    expected = model.probabilities([np.asarray(stored.matrix[row : row + 1])])[0]
    np.testing.assert_allclose([prediction.probabilities[c] for c in model.class_names], expected, atol=1e-5)


def test_corrupt_model_json_and_missing_audio_are_named(saved, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state").symlink_to(saved / "state")
    wav = tmp_path / "x.wav"
    sf.write(wav, 0.1 * np.sin(np.linspace(0, 3000, 16000)), 16000)
    for text, message in [('{"kind": "parrot", ', r"model\.json: not valid JSON"),
                          ('{"kind": "parrot"}', r"model\.json: field 'model_config' is missing")]:
        (broken / "model.json").write_text(text)
        assert cli.main(["predict", "--model", str(broken), str(wav)]) == 1
        err = capsys.readouterr().err
        assert re.fullmatch(rf"parrot predict: error: {re.escape(str(broken))}/{message}.*\n", err), err
    assert cli.main(["predict", "--model", str(saved), str(tmp_path / "absent.wav")]) == 1
    assert capsys.readouterr().err == f"parrot predict: error: {tmp_path / 'absent.wav'}: no such file\n"


def test_test_activations_come_from_the_fold_model_that_tested_each_row(corpus):
    from parrot_jax.features import load_corpus
    from parrot_jax.models import ModelConfig
    from parrot_jax.activations import penultimate, test_activations
    from parrot_jax.splits import make_folds
    from parrot_jax.training import train_cell

    _, store = corpus
    data = load_corpus(store, "demo", ["mfcc-stats"])
    folds = make_folds(data.labels, None, "stratified", 3, 0, 0.25)
    config = ModelConfig(**{**SMALL_MODEL, "num_classes": 4})
    features = [data.matrices["mfcc-stats"]]
    result = train_cell("fcn", config, features, data.labels, folds, TINY)
    rows, acts = test_activations(result, config, features, folds, TINY.eval_batch_size)
    assert np.array_equal(rows, np.arange(len(data.labels))) and np.isfinite(acts).all()
    for f, fold in enumerate(folds):  # an FCN row's activation does not depend on its batch-mates
        row = int(fold.test[1])
        params, stats = result.member(0, f)
        alone = penultimate("fcn", config, params, [features[0][row : row + 1]], stats)
        np.testing.assert_allclose(acts[row], alone[0], atol=1e-5)
        other, other_stats = result.member(0, (f + 1) % len(folds))
        assert not np.allclose(acts[row], penultimate("fcn", config, other, [features[0][row : row + 1]], other_stats)[0])


def test_a_model_of_every_layer_predicts_a_new_recording_as_its_stored_features(tmp_path):
    """wav2vec2 features of every hidden state (layer=all) through a learned layer mix: a new recording is
    embedded as [1, L+1, D] and predicted as its stored row."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.encoders import registry
    from parrot_jax.extraction import extract

    folder = Path(__file__).resolve().parent / "fixtures" / "hf" / "wav2vec2"
    root = generate_demo_corpus(tmp_path / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, registry.parse_encoders("wav2vec2-base:layer=all"), tmp_path / "features",
            checkpoints={"wav2vec2-base": folder}, progress=False)
    stored = load_features(tmp_path / "features", "demo", "wav2vec2-base")
    assert stored.matrix.ndim == 3
    mixing = {**SMALL_MODEL, "layer_mix": "softmax"}
    model, _ = train_on_corpus(tmp_path / "features", "demo", "fcn", ["wav2vec2-base"], TINY, mixing,
                               holdout=0.25, val_fraction=0.25)
    model = load_model(save_model(tmp_path / "model", model))
    row = 3
    new = tmp_path / "new_recording.wav"
    sf.write(new, load_audio(root / "wav" / f"{stored.ids[row]}.wav"), 16000, subtype="PCM_16")
    [prediction] = predict_files(model, [new], {"wav2vec2-base": folder})
    expected = model.probabilities([np.asarray(stored.matrix[row : row + 1])])[0]
    np.testing.assert_allclose([prediction.probabilities[c] for c in model.class_names], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"features of wav2vec2-base: expected \[N, \d+, \d+\], got \[1, \d+\]"):
        model.probabilities([np.asarray(stored.matrix[row : row + 1, 0])])


@pytest.mark.slow
def test_predict_rebuilds_a_whisper_pair_with_its_recorded_options(tmp_path):
    """A PARROT model on a Table 2 pair (Whisper, layer 1 over all frames, + MFCC statistics): a new recording
    gets the probabilities of its stored features."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.encoders import registry
    from parrot_jax.extraction import extract

    folder = Path(__file__).resolve().parent / "fixtures" / "whisper" / "tiny128"
    root = generate_demo_corpus(tmp_path / "corpus", seed=0, n_speakers=3, n_texts=2)
    specs = registry.parse_encoders("whisper-small:layer=1,frames=all,mfcc-stats")
    extract("demo", root, specs, tmp_path / "features", checkpoints={"whisper-small": folder}, progress=False)
    pair = ["whisper-small", "mfcc-stats"]
    model, _ = train_on_corpus(tmp_path / "features", "demo", "parrot", pair, TINY, SMALL_MODEL, holdout=0.25,
                               val_fraction=0.25)
    model = load_model(save_model(tmp_path / "model", model))
    stored = [load_features(tmp_path / "features", "demo", name) for name in pair]
    row = 5
    new = tmp_path / "new_recording.wav"
    sf.write(new, load_audio(root / "wav" / f"{stored[0].ids[row]}.wav"), 16000, subtype="PCM_16")
    default = registry.build("whisper-small", folder).embed_batch([load_audio(new)])[0]
    assert np.abs(default - stored[0].matrix[row]).max() > 1e-2  # the default options embed it otherwise
    [prediction] = predict_files(model, [new], {"whisper-small": folder})
    expected = model.probabilities([np.asarray(s.matrix[row: row + 1]) for s in stored])[0]
    np.testing.assert_allclose([prediction.probabilities[c] for c in model.class_names], expected, atol=1e-5)
