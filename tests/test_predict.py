"""parrot_jax.predict: saved models (orbax), and emotions of recordings the test writes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
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
REPO = Path(__file__).resolve().parents[1]
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
    model, scores = train_on_corpus(store, "demo", "parrot", ENCODERS, TINY, SMALL_MODEL, holdout=0.25)
    assert (scores["holdout_rows"], scores["train_rows"], scores["val_rows"]) == (6, 18, 0)  # no early stopping
    return save_model(tmp_path_factory.mktemp("model") / "parrot", model)


def test_rows_are_held_out_for_early_stopping_only_when_it_is_on(corpus):
    """Issue 17: without early stopping (monitor "none", the default) a validation share would be rows lost."""
    _, store = corpus
    with pytest.raises(ValueError, match=r"val_fraction 0.25 holds rows out for early stopping, but monitor is "
                                         r"'none' \(no early stopping\)"):
        train_on_corpus(store, "demo", "fcn", ENCODERS[:1], TINY, SMALL_MODEL, holdout=0.25, val_fraction=0.25)
    _, scores = train_on_corpus(store, "demo", "fcn", ENCODERS[:1], dataclasses.replace(TINY, monitor="loss"),
                                SMALL_MODEL, holdout=0.25)
    assert (scores["holdout_rows"], scores["train_rows"], scores["val_rows"]) == (6, 16, 2)  # 10 % of 18, stratified


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
            "--encoders", "logmel-stats", "--epochs", "1", "--holdout", "0.25", "--monitor", "loss",
            "--val-fraction", "0.25", str(wav)]
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
                               holdout=0.25)
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
                               holdout=0.25)
    model = load_model(save_model(tmp_path / "model", model))
    row = 3
    new = tmp_path / "new_recording.wav"
    sf.write(new, load_audio(root / "wav" / f"{stored.ids[row]}.wav"), 16000, subtype="PCM_16")
    [prediction] = predict_files(model, [new], {"wav2vec2-base": folder})
    expected = model.probabilities([np.asarray(stored.matrix[row : row + 1])])[0]
    np.testing.assert_allclose([prediction.probabilities[c] for c in model.class_names], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"features of wav2vec2-base: expected \[N, \d+, \d+\], got \[1, \d+\]"):
        model.probabilities([np.asarray(stored.matrix[row : row + 1, 0])])


# ----------------------------------------------------------------------------------------------------
# issue 18: saved models are checked, saves survive SIGKILL, memory stays bounded


def _copy(saved: Path, folder: Path, edit=None) -> Path:
    """A copy of the saved model `saved`, its model.json changed by `edit(meta)`."""
    shutil.copytree(saved, folder)
    if edit is not None:
        meta = json.loads((folder / "model.json").read_text())
        edit(meta)
        (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _set(path: str, value):
    def edit(meta: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            meta = meta[key]
        meta[last] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set("class_names", ["anger", "happiness", "neutral"]),
     r"field class_names: expected 4 distinct names \(model_config.num_classes\), got \[\"anger\", "),
    (_set("class_names", ["anger", "anger", "neutral", "sadness"]), r"field class_names: expected 4 distinct names"),
    (_set("standardized", "no"), r"field standardized: expected true or false, got \"no\""),
    (_set("eval_batch_size", 0), r"field eval_batch_size: expected an int in \[1, 4096\], got 0"),
    (_set("eval_batch_size", 20000000), r"field eval_batch_size: expected an int in \[1, 4096\], got 20000000"),
    (_set("eval_batch_size", 8.0), r"field eval_batch_size: expected an int in \[1, 4096\], got 8.0"),
    (_set("feature_metadata.mfcc-stats.dim", "160"), r"field feature_metadata.mfcc-stats.dim: expected an int >= 1, "
                                                     r"got \"160\""),
    (_set("encoders", 5), r"field encoders: expected 2 distinct encoder name\(s\) \(model parrot\), got 5"),
    (_set("kind", "svm"), r"field kind: expected one of fcn, cnn, parrot, concat, hadamard, ot, got \"svm\""),
    (_set("model_config.hidden", 32), r"fields model_config and feature_metadata \(dims\) give params of other shapes "
                                      r"than those in state/ \(first: \['head'\]\['hidden'\]"),
    (_set("model_config.kernel_size", "3"),
     r"field model_config: ModelConfig.kernel_size must be an int >= 1, got '3'"),
    (_set("manifest", None), r"field manifest: expected an object with files"),
])
def test_a_tampered_model_json_is_refused_naming_the_file_and_field(saved, tmp_path, edit, message):
    """Issue 18 #3: a wrong class count dropped a column, "standardized": "no" read as true, and 24 of 45 tampered
    models ended in errors naming no file (KeyError, TypeError, ZeroDivisionError, ScopeParamShapeError)."""
    folder = _copy(saved, tmp_path / "m", edit)
    with pytest.raises(ValueError) as refused:
        load_model(folder)
    assert re.match(rf"{re.escape(str(folder / 'model.json'))}: {message}", str(refused.value)), refused.value
    assert "\n" not in str(refused.value)


def test_flipped_bytes_in_a_state_file_are_refused_naming_it(saved, tmp_path):
    folder = _copy(saved, tmp_path / "m")
    damaged = max((p for p in (folder / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
                  key=lambda p: p.stat().st_size)
    data = bytearray(damaged.read_bytes())
    data[:64] = bytes(b ^ 0xFF for b in data[:64])
    damaged.write_bytes(bytes(data))
    meta = re.escape(str(folder / "model.json"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(damaged))}: sha256 differs from field manifest.files of "
                                         rf"{meta} \(the file was changed or damaged\)"):
        load_model(folder)
    (folder / "state" / "extra").write_text("x")
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(folder / 'state' / 'extra'))}: not in the manifest"):
        load_model(folder)


def test_a_truncated_state_file_is_one_line_without_event_loop_tracebacks(saved, tmp_path):
    """Issue 18 #7: orbax reading a truncated file printed the error, then 1-8 `RuntimeError: Event loop is
    closed` tracebacks; the manifest refuses the file before orbax reads anything."""
    folder = _copy(saved, tmp_path / "m")
    for path in (folder / "state").glob("ocdbt.process_0/d/*"):
        os.truncate(path, 20)
    done = subprocess.run([sys.executable, "-m", "parrot_jax.cli", "predict", "--model", str(folder), "x.wav"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 1
    assert re.fullmatch(rf"parrot predict: error: {re.escape(str(folder / 'state'))}/ocdbt.process_0/d/\w+: sha256 "
                        r"differs from field manifest.files of .*\n", done.stderr), done.stderr


def _restated(saved: Path, folder: Path, change) -> Path:
    """A copy of `saved` whose state/ holds the arrays `change(tree)` made, written with orbax as save_model
    writes them, its manifest updated to match: the checks after the manifest's must refuse it."""
    import orbax.checkpoint as ocp

    from parrot_jax.files import sha256_file

    model = load_model(saved)
    tree = {"params": model.params, "mean": list(model.standardizer.mean), "scale": list(model.standardizer.scale)}
    change(tree)
    _copy(saved, folder)
    shutil.rmtree(folder / "state")
    ocp.PyTreeCheckpointer().save(folder / "state", tree)
    meta = json.loads((folder / "model.json").read_text())
    meta["manifest"]["files"] = {p.relative_to(folder).as_posix(): sha256_file(p)
                                 for p in (folder / "state").rglob("*") if p.is_file()}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_non_finite_params_zero_scales_and_non_finite_predictions_are_refused(saved, tmp_path):
    """Issue 18 #3: NaN params or an all-zero scale printed `nan nan nan nan` and exit 0."""
    def nan_param(tree):
        tree["params"]["head"]["hidden"]["kernel"][0, 0, 0] = np.nan

    def zero_scale(tree):
        tree["scale"][1][...] = 0.0

    folder = _restated(saved, tmp_path / "nan", nan_param)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(folder / 'state'))}: params\['head'\]\['hidden'\]"
                                         r"\['kernel'\] holds 1 NaN/Inf value\(s\)$"):
        load_model(folder)
    folder = _restated(saved, tmp_path / "zero", zero_scale)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(folder / 'state'))}: scale\[1\] holds \d+ value\(s\) <= 0"):
        load_model(folder)
    model = load_model(saved)
    nan_params = jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), model.params)
    nan_model = dataclasses.replace(model, params=nan_params)
    with pytest.raises(ValueError, match=r"params\['branch_p'\].* holds \d+ NaN/Inf value\(s\)"):
        save_model(tmp_path / "never", nan_model)
    assert not (tmp_path / "never").exists()
    dims = [model.feature_metadata[e]["dim"] for e in model.encoders]
    rows = [np.ones((3, d), np.float32) for d in dims]
    rows[1][1, 0] = np.nan
    # PARROT's transport couples the rows of a batch: one NaN row makes every row of its batch NaN
    with pytest.raises(ValueError, match=r"^the model's probabilities of row\(s\) \[0, 1, 2\] are not finite \(NaN/Inf "
                                         r"features or params\)$"):
        model.probabilities(rows)


def test_a_sigkill_inside_a_model_save_leaves_the_old_model_and_the_next_save_recovers(saved, tmp_path):
    """Issue 18 #2: `parrot predict --model m` killed inside its save left `state.orbax-checkpoint-tmp` in m/,
    and every later save refused m/. Here a real SIGKILL lands right after orbax has written the new state
    (the save wrapped in the child process: the library has no hook for it)."""
    target = _copy(saved, tmp_path / "model")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    script = (
        "import os, signal, sys\n"
        "import orbax.checkpoint as ocp\n"
        "from parrot_jax.saved_model import load_model, save_model\n"
        "save = ocp.Checkpointer.save\n"
        "def killed(self, *args, **kwargs):\n"
        "    save(self, *args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "ocp.Checkpointer.save = killed\n"
        "save_model(sys.argv[1], load_model(sys.argv[1]))\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert child.returncode == -signal.SIGKILL, child.stderr
    leftover = tmp_path / ".model.tmp-"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(leftover.name)]  # what the kill left
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before  # the old model, untouched
    model = load_model(target)
    save_model(target, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    np.testing.assert_array_equal(_leaves(load_model(target).params)[0], _leaves(model.params)[0])
    # the leftover of an older version's kill: orbax's temporary inside the model folder, no model.json
    shutil.rmtree(target)
    (target / "state.orbax-checkpoint-tmp-1733000000").mkdir(parents=True)
    save_model(target, model)
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "state"]


def _peak_rss_of_predict(args: list[str]) -> tuple[int, str]:
    """(peak resident memory in bytes, stderr) of `parrot predict ARGS` run in a fresh process: VmHWM, the
    high-water mark of the new program's own memory (getrusage's ru_maxrss would also count the pytest process
    the child was forked from, whose size it keeps across exec)."""
    script = ("import re, sys\nfrom pathlib import Path\nfrom parrot_jax.cli import main\n"
              "main(['predict', *sys.argv[1:]])\n"
              "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())[1]) * 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    return int(done.stdout.split()[-1]), done.stderr


@pytest.mark.slow
def test_a_10_hour_file_and_a_1_hz_file_are_refused_in_bounded_memory(saved, tmp_path):
    """Issue 18 #4: `parrot predict` on 10 hours of silence (a 4 KB sparse WAV) took over 4.2 GB, a 40 KB WAV
    declaring 1 Hz too, a 4 MB one ended in `MemoryError: std::bad_alloc`. Both are refused from their headers."""
    from test_audio import _sparse_wav

    hours = _sparse_wav(tmp_path / "ten_hours.wav", 16000, 10 * 3600 * 16000)
    one_hz = _sparse_wav(tmp_path / "one_hz.wav", 1, 2_000_000)
    for wav, problem in [(hours, "36000.0 s of audio (its header says) is over the limit of 600 s (predict: "
                                 "--max-seconds)"),
                         (one_hz, "sample rate 1 Hz is below the 4000 Hz this reads")]:
        peak, err = _peak_rss_of_predict(["--model", str(saved), str(wav)])
        assert err == f"parrot predict: error: {wav}: {problem}\n", err
        assert peak < 1.5 * 2**30, f"{wav.name}: peak RSS {peak / 2**20:.0f} MiB"


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
    model, _ = train_on_corpus(tmp_path / "features", "demo", "parrot", pair, TINY, SMALL_MODEL, holdout=0.25)
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


def test_a_save_killed_between_its_two_renames_leaves_the_previous_model(saved, tmp_path):
    """save_model moves the old folder aside, then renames the new one into place: a kill between the two left no
    model at all, and the next save deleted both (the old one as a dead writer's temporary)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    target = tmp_path / "m"
    shutil.copytree(saved, tmp_path / f".m.tmp-old-{ended.pid}")  # the state such a kill leaves
    shutil.copytree(saved, tmp_path / f".m.tmp-{ended.pid}")
    model = load_model(target)  # the previous model is put back
    assert model.kind == "parrot" and (target / "model.json").read_bytes() == (saved / "model.json").read_bytes()
    save_model(target, model)  # and a save over it cleans the dead writer's other temporary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
