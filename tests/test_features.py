"""parrot_jax.features: the store's rows, rejects, resumption after SIGKILL, and the manifest-hash refusal."""

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parrot_jax.audio import AudioError, load_audio
from parrot_jax.cli import main
from parrot_jax.corpora import generate_demo_corpus, load_manifest
from parrot_jax.encoders import registry
from parrot_jax.extraction import extract
from parrot_jax.features import features_sha256, load_features, manifest_sha256, read_store_manifest

ENCODERS = ["mfcc-stats", "logmel-stats"]
WAV2VEC2 = Path(__file__).resolve().parent / "fixtures" / "hf" / "wav2vec2"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), seed=1, n_speakers=2, n_texts=3)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rows_equal_the_encoders_on_each_file(demo: Path, tmp_path: Path) -> None:
    summary = extract("demo", demo, ENCODERS, tmp_path, batch_size=5, progress=False)
    manifest = load_manifest("demo", demo)
    assert summary.files == summary.processed_files == len(manifest) == 24
    assert [(e.encoder, e.rows, e.rejects, e.computed_files, e.reused_files) for e in summary.encoders] == [
        ("mfcc-stats", 24, 0, 24, 0), ("logmel-stats", 24, 0, 24, 0),
    ]  # fmt: skip
    assert summary.processed_audio_seconds == pytest.approx(sum(u.duration for u in manifest))
    for name in ENCODERS:
        features = load_features(tmp_path, "demo", name, manifest=manifest)
        encoder = registry.build(name)
        expected = np.stack([encoder.embed_batch([load_audio(demo / u.path)])[0] for u in manifest])
        assert features.matrix.dtype == np.float32 and features.matrix.shape == (24, encoder.dim)
        np.testing.assert_array_equal(features.matrix, expected)
        assert features.ids == tuple(u.id for u in manifest)
        assert features.labels == tuple(u.label for u in manifest)
        assert features.speakers == tuple(u.speaker for u in manifest)
        assert features.classes == ("anger", "happiness", "neutral", "sadness")
        assert [features.classes[i] for i in features.y] == list(features.labels)
        meta = features.metadata
        assert meta["manifest_sha256"] == manifest_sha256(manifest)
        assert meta["features_sha256"] == features.sha256 == _sha(tmp_path / "demo" / f"{name}.npy")
        assert features_sha256(tmp_path, "demo", name) == features.sha256
        assert (meta["encoder"], meta["dim"], meta["sample_rate"]) == (name, encoder.dim, 16000)
        assert meta["encoder_options"] == encoder.metadata()["options"] and meta["format_version"] == 2
        assert meta["encoder_metadata"] == encoder.metadata() and meta["package_version"] == "0.1.0"
    assert not (tmp_path / "demo" / ".partial").exists()
    assert read_store_manifest(tmp_path, "demo") == manifest
    # a second run recomputes nothing and leaves the bytes as they were
    store_bytes = lambda: {p.name: _sha(p) for p in (tmp_path / "demo").iterdir() if p.name != ".lock"}  # noqa: E731
    before = store_bytes()  # (.lock records the last holder)
    again = extract("demo", demo, ENCODERS, tmp_path, batch_size=5, progress=False)
    assert again.processed_files == 0 and [e.computed_files for e in again.encoders] == [0, 0]
    assert store_bytes() == before


def test_large_stores_are_memory_mapped(demo: Path, tmp_path: Path) -> None:
    extract("demo", demo, ["logmel-stats"], tmp_path, progress=False)
    mapped = load_features(tmp_path, "demo", "logmel-stats", mmap=True)
    assert isinstance(mapped.matrix, np.memmap)
    np.testing.assert_array_equal(mapped.matrix, load_features(tmp_path, "demo", "logmel-stats", mmap=False).matrix)
    assert not isinstance(load_features(tmp_path, "demo", "logmel-stats").matrix, np.memmap)  # small: in memory


def _bad_corpus(root: Path, demo: Path) -> tuple[Path, dict[str, str]]:
    """A CSV corpus: 3 good demo files and one file of each bad kind; returns (root, {id: reason regex})."""
    root.mkdir()
    rows = []
    for name in ["01a01Wa.wav", "01a01Ta.wav", "02a01Fa.wav"]:
        (root / name).write_bytes((demo / "wav" / name).read_bytes())
        rows.append({"path": name, "label": "anger"})
    (root / "garbage.wav").write_bytes(b"not audio at all" * 50)
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16000, subtype="FLOAT")
    nan = np.full(8000, 0.1, np.float32)
    nan[5] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "silent.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    sf.write(root / "short.wav", 0.1 * np.random.default_rng(0).standard_normal(1000), 16000, subtype="PCM_16")
    reasons = {
        "garbage": r"unreadable audio file",
        "empty": r"empty: 0 samples",
        "nan": r"contains 1 NaN/Inf samples",
        "silent": r"all silence",
        "short": r"too short: 1000 samples \(0\.062 s at 16000 Hz\); encoder 'mfcc-stats' needs at least 1280",
    }
    rows = rows[:1] + [{"path": f"{k}.wav", "label": "sadness"} for k in reasons] + rows[1:]
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root, reasons


def test_bad_files_raise_or_are_skipped_and_listed(demo: Path, tmp_path: Path) -> None:
    root, reasons = _bad_corpus(tmp_path / "bad", demo)
    with pytest.raises(AudioError, match=r"garbage\.wav: unreadable audio file"):
        extract("csv", root, ["mfcc-stats"], tmp_path / "raise", batch_size=4, progress=False)
    summary = extract("csv", root, ENCODERS, tmp_path / "skip", batch_size=4, on_error="skip", progress=False)
    mfcc, logmel = summary.encoders
    assert (mfcc.rows, mfcc.rejects) == (3, 5)
    assert (logmel.rows, logmel.rejects) == (4, 4)  # 1000 samples are enough for log-mel statistics (400)
    features = load_features(tmp_path / "skip", "bad", "mfcc-stats")  # the manifest.csv folder names it
    assert features.ids == ("01a01Wa", "01a01Ta", "02a01Fa")
    with open(tmp_path / "skip" / "bad" / "mfcc-stats.rejects.tsv", newline="") as f:
        listed = list(csv.DictReader(f, delimiter="\t"))
    assert [r["id"] for r in listed] == list(reasons)
    for row in listed:
        assert row["path"] == f"{row['id']}.wav"
        assert re.match(reasons[row["id"]], row["reason"]), row
    assert [r["id"] for r in features.metadata["rejects"]] == list(reasons)
    encoder = registry.build("mfcc-stats")
    good = [load_audio(root / f"{i}.wav") for i in features.ids]
    np.testing.assert_array_equal(features.matrix, encoder.embed_batch(good))


def test_manifest_mismatch_is_refused(demo: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "wav").mkdir(parents=True)
    for p in sorted((demo / "wav").iterdir())[:6]:
        (corpus / "wav" / p.name).write_bytes(p.read_bytes())
    extract("emodb", corpus, ["logmel-stats"], tmp_path / "f", progress=False)
    before = load_manifest("emodb", corpus)
    extra = sorted((demo / "wav").iterdir())[6]
    (corpus / "wav" / extra.name).write_bytes(extra.read_bytes())
    now = load_manifest("emodb", corpus)
    with pytest.raises(ValueError, match=r"the given manifest \(hash [0-9a-f]{12}\) differs from the one the store .* "
                       r"was extracted from \([0-9a-f]{12}\): re-run extraction of 'logmel-stats'"):  # fmt: skip
        load_features(tmp_path / "f", "emodb", "logmel-stats", manifest=now)
    assert load_features(tmp_path / "f", "emodb", "logmel-stats", manifest=before).matrix.shape[0] == 6
    # the grown corpus may not silently replace the manifest the stored features were extracted from
    message = (rf"the store {re.escape(str(tmp_path / 'f' / 'emodb'))} holds features \(logmel-stats\) of "
               rf"{re.escape(str(corpus))} \(6 utterances, manifest [0-9a-f]{{12}}\); this extraction reads "
               rf"{re.escape(str(corpus))} \(7 utterances, manifest [0-9a-f]{{12}}\), a different corpus or a "
               r"changed one\. Extract into another --out \(or under another corpus name\), or pass --start-over")
    with pytest.raises(ValueError, match=message):
        extract("emodb", corpus, ["mfcc-stats"], tmp_path / "f", progress=False)
    assert load_features(tmp_path / "f", "emodb", "logmel-stats", manifest=before).matrix.shape[0] == 6
    extract("emodb", corpus, ["mfcc-stats"], tmp_path / "f", progress=False, start_over=True)
    assert sorted(p.name for p in (tmp_path / "f" / "emodb").iterdir()) == [
        ".lock", "manifest.json", "mfcc-stats.json", "mfcc-stats.npy", "mfcc-stats.rejects.tsv"]
    assert load_features(tmp_path / "f", "emodb", "mfcc-stats").matrix.shape[0] == 7
    # features whose manifest differs from the store's (a hand-edited store) are refused
    (tmp_path / "f" / "emodb" / "logmel-stats.json").write_text(json.dumps({
        **json.loads((tmp_path / "f" / "emodb" / "mfcc-stats.json").read_text()), "manifest_sha256": "0" * 64}))
    store = tmp_path / "f" / "emodb"
    (store / "logmel-stats.npy").write_bytes((store / "mfcc-stats.npy").read_bytes())
    with pytest.raises(ValueError, match=r"logmel-stats\.json was extracted from manifest 000000000000, but .*"
                       r"manifest\.json is now [0-9a-f]{12} \(the corpus changed since\)"):  # fmt: skip
        load_features(tmp_path / "f", "emodb", "logmel-stats")
    # a tampered matrix is refused by its content hash
    npy = tmp_path / "f" / "emodb" / "mfcc-stats.npy"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0x40
    npy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"mfcc-stats\.npy: content hash differs from [0-9a-f]{12} recorded"):
        load_features(tmp_path / "f", "emodb", "mfcc-stats")
    with pytest.raises(FileNotFoundError, match=r"no features of encoder 'egemaps' for corpus 'emodb'"):
        load_features(tmp_path / "f", "emodb", "egemaps")


def test_cli_extract_and_checkpoint_errors(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    common = ["extract", "--corpus", "demo", "--root", str(demo), "--out", str(out), "--no-progress"]
    assert main([*common, "--encoders", "logmel-stats"]) == 0
    text = capsys.readouterr().out
    assert "logmel-stats: 24 rows, 0 rejects, 24 computed, 0 reused" in text and "files/s, real-time factor" in text
    assert main([*common, "--encoders", "wavlm-base"]) == 1
    assert "encoder 'wavlm-base' needs a checkpoint folder: give --checkpoints DIR" in capsys.readouterr().err
    assert main([*common, "--encoders", "wavlm-base", "--checkpoints", str(tmp_path / "ckpts")]) == 1
    missing = tmp_path / "ckpts" / "wavlm-base"
    assert f"checkpoint folder of encoder 'wavlm-base' does not exist: {missing}" in capsys.readouterr().err
    assert main([*common, "--encoders", "mfcc-stats", "--checkpoint", f"mfcc-stats={tmp_path}"]) == 1
    assert "encoder 'mfcc-stats' takes no checkpoint" in capsys.readouterr().err


def _chunks(out: Path, name: str) -> int:
    return len(list((out / "demo" / ".partial" / name).glob("chunk_*.npz")))


def _run_until(out: Path, root: Path, name: str, n_chunks: int) -> int:
    """Start `parrot extract` in a subprocess, SIGKILL it once `n_chunks` chunks of `name` exist."""
    command = [sys.executable, "-m", "parrot_jax.cli", "extract", "--corpus", "demo", "--root", str(root),
               "--encoders", ",".join(ENCODERS), "--out", str(out), "--batch-size", "1", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while _chunks(out, name) < n_chunks:
        assert process.poll() is None, f"extraction ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "extraction made no progress"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "demo" / f"{name}.json").exists(), "killed after the end: make the corpus longer"
    return _chunks(out, name)


@pytest.mark.slow
def test_sigkilled_extraction_resumes_to_identical_bytes(tmp_path: Path) -> None:
    root = generate_demo_corpus(tmp_path / "corpus", seed=2, n_speakers=2, n_texts=6)  # 48 files
    reference = extract("demo", root, ENCODERS, tmp_path / "reference", batch_size=1, progress=False)
    out = tmp_path / "killed"
    _run_until(out, root, "mfcc-stats", 3)
    done = {name: _chunks(out, name) for name in ENCODERS}
    before = {p: p.stat().st_mtime_ns for p in (out / "demo" / ".partial").rglob("chunk_*.npz")}
    # a second kill, after more progress, while resuming the first
    _run_until(out, root, "mfcc-stats", done["mfcc-stats"] + 12)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished chunks were not rewritten
    done = {name: _chunks(out, name) for name in ENCODERS}
    assert 3 < done["mfcc-stats"] < 48
    resumed = extract("demo", root, ENCODERS, out, batch_size=1, progress=False)
    for summary in resumed.encoders:
        assert summary.reused_files == done[summary.encoder]
        assert summary.computed_files == 48 - done[summary.encoder]
    for name in ENCODERS:
        for suffix in (".npy", ".json", ".rejects.tsv"):
            assert (out / "demo" / f"{name}{suffix}").read_bytes() == (
                tmp_path / "reference" / "demo" / f"{name}{suffix}"
            ).read_bytes()
    assert [e.features_sha256 for e in resumed.encoders] == [e.features_sha256 for e in reference.encoders]
    assert not (out / "demo" / ".partial").exists()
    assert not [p for p in (out / "demo").iterdir() if ".tmp-" in p.name]
    assert json.loads((out / "demo" / "mfcc-stats.json").read_text())["rejects"] == []


@pytest.mark.filterwarnings("ignore:Segment too short, filling with NaN")
def test_non_finite_embeddings_are_rejected_naming_the_file(demo: Path, tmp_path: Path) -> None:
    """openSMILE fills functionals of a too-short segment with NaN: the store never writes such a row."""
    pytest.importorskip("opensmile", reason="optional extra `egemaps` (opensmile) not installed")
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "long.wav").write_bytes((demo / "wav" / "01a01Wa.wav").read_bytes())
    sf.write(root / "tiny.wav", 0.1 * np.random.default_rng(0).standard_normal(600), 16000, subtype="PCM_16")
    (root / "manifest.csv").write_text("path,label\nlong.wav,anger\ntiny.wav,anger\n")
    encoder = registry.build("egemaps")
    encoder.min_samples = 400  # below what openSMILE needs: it returns NaN for tiny.wav
    with pytest.raises(AudioError, match=r"tiny\.wav: encoder 'egemaps' gave a non-finite \(NaN/Inf\) embedding"):
        extract("csv", root, [encoder], tmp_path / "raise", progress=False)
    summary = extract("csv", root, [encoder], tmp_path / "skip", on_error="skip", progress=False)
    assert (summary.encoders[0].rows, summary.encoders[0].rejects) == (1, 1)
    features = load_features(tmp_path / "skip", "corpus", "egemaps")
    assert features.ids == ("long",) and np.all(np.isfinite(features.matrix))
    assert features.metadata["rejects"] == [{"id": "tiny", "path": "tiny.wav", "reason": "encoder 'egemaps' gave a "
                                             "non-finite (NaN/Inf) embedding"}]  # fmt: skip


def test_interruption_while_finishing_resumes_without_recomputing(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after the .npy is in place but before its metadata (the commit) is: nothing is recomputed."""
    import parrot_jax.extraction as extraction

    reference = extract("demo", demo, ["logmel-stats"], tmp_path / "reference", batch_size=7, progress=False)
    write_json = extraction.write_json

    def fail_on_metadata(path: Path, value: object) -> None:
        if path.name == "logmel-stats.json":
            raise KeyboardInterrupt("stopped before the commit")
        write_json(path, value)

    monkeypatch.setattr(extraction, "write_json", fail_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        extract("demo", demo, ["logmel-stats"], tmp_path / "out", batch_size=7, progress=False)
    store = tmp_path / "out" / "demo"
    assert (store / "logmel-stats.npy").is_file() and not (store / "logmel-stats.json").exists()
    monkeypatch.setattr(extraction, "write_json", write_json)
    resumed = extract("demo", demo, ["logmel-stats"], tmp_path / "out", batch_size=7, progress=False)
    assert (resumed.encoders[0].computed_files, resumed.encoders[0].reused_files) == (0, 24)
    for suffix in (".npy", ".json", ".rejects.tsv"):
        reference_file = tmp_path / "reference" / "demo" / f"logmel-stats{suffix}"
        assert (store / f"logmel-stats{suffix}").read_bytes() == reference_file.read_bytes()
    assert resumed.encoders[0].features_sha256 == reference.encoders[0].features_sha256


def test_csv_file_as_root_extracts_and_notes_what_reading_changed(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "wav").mkdir(parents=True)
    names = sorted(p.name for p in (demo / "wav").iterdir())[:3]
    for name in names[:2]:
        (corpus / "wav" / name).write_bytes((demo / "wav" / name).read_bytes())
    wave, rate = sf.read(demo / "wav" / names[2])
    sf.write(corpus / "wav" / names[2], np.stack([wave, wave], axis=1), rate, format="AIFF")  # stereo AIFF as .wav
    (corpus / "wav" / "x.flac").write_bytes(b"")
    sf.write(corpus / "wav" / "x.flac", sf.read(demo / "wav" / names[0])[0], 8000)  # 8 kHz
    csv_file = corpus / "good.csv"
    csv_file.write_text("path,label\n" + "".join(f"wav/{n},anger\n" for n in [*names, "x.flac"]))
    out = tmp_path / "out"
    args = ["extract", "--corpus", "csv", "--root", str(csv_file), "--encoders", "logmel-stats", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "logmel-stats: 4 rows, 0 rejects" in text and "audio 1 resampled, 1 downmixed, 1 mis-named" in text
    meta = load_features(out, "good", "logmel-stats").metadata
    stem = f"wav/{Path(names[2]).stem}"
    assert meta["audio_notes"] == {"resampled": {"wav/x": "from 8000 Hz"}, "downmixed": {stem: "from 2 channels"},
                                   "misnamed": {stem: "AIFF audio in a .wav file"}}  # fmt: skip
    assert main(args) == 0  # up to date: no rate of nothing
    text = capsys.readouterr().out
    assert "every encoder was up to date, nothing extracted" in text and "nan" not in text


def test_chunks_of_other_utterances_are_never_published(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import parrot_jax.extraction as extraction

    out = tmp_path / "out"
    reference = extract("demo", demo, ["logmel-stats"], tmp_path / "reference", batch_size=6, progress=False)
    real_finish = extraction._finish

    def swap_two_chunks(job, *args, **kwargs):
        first, second = extraction._chunk_path(job.partial, 0), extraction._chunk_path(job.partial, 1)
        data = first.read_bytes()
        first.write_bytes(second.read_bytes())
        second.write_bytes(data)
        return real_finish(job, *args, **kwargs)

    monkeypatch.setattr(extraction, "_finish", swap_two_chunks)
    with pytest.raises(ValueError, match=r"row 0 of the chunks is '01a02Ta', the manifest's is '01a01Fa' "
                       r"\(24 rows for 24 utterances\); not publishing 'logmel-stats'"):  # fmt: skip
        extract("demo", demo, ["logmel-stats"], out, batch_size=6, progress=False)
    monkeypatch.setattr(extraction, "_finish", real_finish)
    assert not (out / "demo" / "logmel-stats.npy").exists() and not (out / "demo" / "logmel-stats.json").exists()
    with pytest.raises(ValueError, match=r"not publishing 'logmel-stats'"):  # resuming finds the same chunks
        extract("demo", demo, ["logmel-stats"], out, batch_size=6, progress=False)
    shutil.rmtree(out / "demo" / ".partial" / "logmel-stats")  # as the message says
    assert extract("demo", demo, ["logmel-stats"], out, batch_size=6, progress=False).encoders == reference.encoders


def _console_script() -> str:
    script = Path(sys.executable).with_name("parrot")
    if not script.is_file():
        pytest.skip(f"the `parrot` console script is not installed beside {sys.executable}")
    return str(script)


@pytest.mark.slow
def test_concurrent_extractions_never_publish_a_wrong_store(tmp_path: Path) -> None:
    """Two `parrot extract` runs on one store, with different batch sizes, started together: the second is
    refused at once naming the store and the first's process; the store equals an uninterrupted run's."""
    root = generate_demo_corpus(tmp_path / "corpus", seed=2, n_speakers=2, n_texts=6)  # 48 files
    for batch_size in (1, 5):
        extract("demo", root, ENCODERS, tmp_path / f"reference{batch_size}", batch_size=batch_size, progress=False)
    out = tmp_path / "shared"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    runs = [subprocess.Popen([_console_script(), "extract", "--corpus", "demo", "--root", str(root), "--encoders",
                              ",".join(ENCODERS), "--out", str(out), "--batch-size", str(batch_size), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for batch_size in (1, 5)]  # fmt: skip
    results = [(run.pid, *run.communicate(timeout=300), run.returncode) for run in runs]
    finished = [batch for batch, (_, _, _, code) in zip((1, 5), results) if code == 0]
    assert finished, results
    for (pid, _, err, code), (other, *_) in zip(results, results[::-1]):
        if code != 0:
            assert code == 1 and re.fullmatch(rf"parrot extract: error: feature store {re.escape(str(out / 'demo'))} "
                                              rf"is in use by process {other} on .*\n", err), err
    store = out / "demo"
    for name in ENCODERS:
        assert (store / f"{name}.npy").read_bytes() == (tmp_path / "reference1" / "demo" / f"{name}.npy").read_bytes()
        written = (store / f"{name}.json").read_bytes()
        assert written in [(tmp_path / f"reference{b}" / "demo" / f"{name}.json").read_bytes() for b in finished]
        assert load_features(out, "demo", name).ids == tuple(u.id for u in load_manifest("demo", root))


@pytest.mark.slow
def test_how_an_encoder_runs_is_not_part_of_a_store_entrys_identity(demo: Path, tmp_path: Path) -> None:
    """Moving the compilation-cache folder or changing the encoder's batch size re-extracts nothing; an
    embedding option (the layer) does, and the entry records the options."""
    import jax

    out, checkpoints = tmp_path / "out", {"wav2vec2-base": WAV2VEC2}
    run = lambda text: extract("demo", demo, registry.parse_encoders(text), out, checkpoints=checkpoints,  # noqa: E731
                               progress=False).encoders[0]
    before = jax.config.jax_compilation_cache_dir
    try:
        first = run(f"wav2vec2-base:compilation_cache={tmp_path / 'cache-a'}")
        moved = run(f"wav2vec2-base:compilation_cache={tmp_path / 'cache-b'},batch_size=2")
        layer = run(f"wav2vec2-base:layer=1,compilation_cache={tmp_path / 'cache-b'}")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert (first.computed_files, moved.computed_files, moved.reused_files, layer.computed_files) == (24, 0, 24, 24)
    assert moved.features_sha256 == first.features_sha256 != layer.features_sha256
    meta = json.loads((out / "demo" / "wav2vec2-base.json").read_text())
    assert (meta["encoder"], meta["encoder_options"]) == ("wav2vec2-base", {"layer": 1, "pooling": "mean"})
    assert meta["checkpoint_sha256"] == _sha(WAV2VEC2 / "model.safetensors")
    assert meta["encoder_metadata"]["run_options"]["compilation_cache"] == str(tmp_path / "cache-b")


def test_a_csv_key_column_travels_from_the_manifest_to_split_matching(demo: Path, tmp_path: Path) -> None:
    """Issue 17 #5: SAVEE kept as distributed (AudioData/<speaker>/<name>.wav, names repeating across speakers)
    is matched to split lines by the CSV's own ``key`` column (split_match=key), whatever the layout."""
    from parrot_jax.corpora import Utterance
    from parrot_jax.features import load_corpus
    from parrot_jax.splits import emobox_folds

    wavs = sorted((demo / "wav").glob("*.wav"))[:8]
    root = tmp_path / "savee"
    rows = []
    for n, wav in enumerate(wavs):
        speaker, name = ("DC", "JE")[n % 2], f"a{n // 2:02d}"
        target = root / "AudioData" / speaker / f"{name}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, target)
        rows.append({"path": f"AudioData/{speaker}/{name}.wav", "label": "anger" if n < 4 else "sadness",
                     "speaker": speaker, "key": f"savee-{speaker}_{name}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    extract("csv", root, ["mfcc-stats"], tmp_path / "store", progress=False)
    data = load_corpus(tmp_path / "store", "savee", ["mfcc-stats"])
    assert list(data.keys) == [r["key"] for r in rows]

    fold = tmp_path / "splits" / "fold_1"
    fold.mkdir(parents=True)
    for part, chosen in {"train": rows[:6], "test": rows[6:]}.items():  # EmoBox-like lines: wav names repeat
        (fold / f"savee_{part}_fold_1.jsonl").write_text("".join(
            json.dumps({"key": r["key"], "wav": f"downloads/savee/{Path(r['path']).name}", "emo": r["label"]}) + "\n"
            for r in chosen))
    labels = [data.class_names[y] for y in data.labels]
    with pytest.raises(ValueError, match=r"share the file name 'a00'.*--set split_match=speaker_name; or give the "
                                         r"corpus CSV a 'key' column .* --set split_match=key"):
        emobox_folds(tmp_path / "splits", data.ids, labels, data.speakers)
    (split,) = emobox_folds(tmp_path / "splits", data.ids, labels, data.speakers, val_policy="none", match="key",
                            keys=data.keys).folds
    assert [data.keys[r] for r in split.test] == [r["key"] for r in rows[6:]]
    assert sorted(data.keys[r] for r in split.train) == sorted(r["key"] for r in rows[:6])
    with pytest.raises(ValueError, match=r"split_match 'key' needs a key for every row \(a 'key' column"):
        emobox_folds(tmp_path / "splits", data.ids, labels, data.speakers, match="key")
    # a row without a key keeps the manifest JSON (and so the store's manifest hash) it had before keys existed
    assert "key" not in Utterance("a", "a.wav", "anger", None, 1.0).to_dict()


def test_csv_keys_are_each_rows_own(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(1600), 16000)
    sf.write(tmp_path / "b.wav", np.zeros(1600), 16000)
    (tmp_path / "manifest.csv").write_text("path,label,key\na.wav,anger,k1\nb.wav,anger,k1\n")
    with pytest.raises(ValueError, match=r"manifest\.csv:3: key 'k1' is the key of line 2 too"):
        load_manifest("csv", tmp_path)
