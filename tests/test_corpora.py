"""parrot_jax.corpora: adapters on the real file names and audio, path safety, verify-corpus, the demo corpus."""

import csv
import hashlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from parrot_jax.cli import main
from parrot_jax.corpora import (
    EXPECTED_COUNTS,
    LABELS,
    audio_folder,
    generate_demo_corpus,
    load_manifest,
    parse_name,
    verify_corpus,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EMODB = SHARED / "emodb"
CREMAD_LIST = SHARED / "cremad" / "audiowav_files.tsv"


def _write_tone(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")
    return path


@pytest.mark.skipif(not (EMODB / "wav").is_dir(), reason="real Emo-DB not present at ../shared/data/emodb/wav")
def test_emodb_real_counts() -> None:
    manifest = load_manifest("emodb", EMODB)
    assert len(manifest) == 535
    assert Counter(u.label for u in manifest) == {
        "anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71, "sadness": 62, "neutral": 79,
    }  # fmt: skip
    assert Counter(u.speaker for u in manifest) == EXPECTED_COUNTS["emodb"]["speaker"]
    first = next(u for u in manifest if u.id == "03a01Fa")
    assert (first.path, first.label, first.speaker, first.duration) == ("wav/03a01Fa.wav", "happiness", "03", 1.89825)
    assert [u.path for u in manifest] == sorted(u.path for u in manifest)
    assert all(1.2 < u.duration < 9.0 for u in manifest)
    report = verify_corpus("emodb", EMODB)
    assert report.ok and report.count_mismatches == []


@pytest.mark.skipif(not CREMAD_LIST.is_file(), reason="CREMA-D file list not present at ../shared/data/cremad")
def test_cremad_all_real_names() -> None:
    with open(CREMAD_LIST, newline="") as f:
        names = [row["file"] for row in csv.DictReader(f, delimiter="\t")]
    assert len(names) == 7442
    parsed = [parse_name("cremad", name) for name in names]
    assert Counter(label for label, _ in parsed) == EXPECTED_COUNTS["cremad"]["label"]
    assert len({speaker for _, speaker in parsed}) == 91
    assert {speaker for _, speaker in parsed} == {str(a) for a in range(1001, 1092)}
    assert parse_name("cremad", "1001_DFA_ANG_XX.wav") == ("anger", "1001")


def test_cremad_adapter_on_files(tmp_path: Path) -> None:
    for name in ["1001_DFA_ANG_XX.wav", "1002_IEO_NEU_HI.wav", "1091_WSI_SAD_LO.wav"]:
        _write_tone(tmp_path / "AudioWAV" / name, 0.25)
    manifest = load_manifest("cremad", tmp_path)
    assert [(u.id, u.path, u.label, u.speaker, u.duration) for u in manifest] == [
        ("1001_DFA_ANG_XX", "AudioWAV/1001_DFA_ANG_XX.wav", "anger", "1001", 0.25),
        ("1002_IEO_NEU_HI", "AudioWAV/1002_IEO_NEU_HI.wav", "neutral", "1002", 0.25),
        ("1091_WSI_SAD_LO", "AudioWAV/1091_WSI_SAD_LO.wav", "sadness", "1091", 0.25),
    ]


def test_mesd_names(tmp_path: Path) -> None:
    assert parse_name("mesd", "Anger_C_A_abajo.wav") == ("anger", None)
    assert parse_name("mesd", "Neutral_F_B_por_favor.wav") == ("neutral", None)
    assert parse_name("mesd", "Happiness_M_A_a_b_c.wav") == ("happiness", None)
    for bad in ["Anger_X_A_abajo.wav", "Joy_F_A_abajo.wav", "Anger_F_C_abajo.wav", "Anger_F_A.wav"]:
        with pytest.raises(ValueError, match=rf"{bad}: not a MESD file name; expected <Emotion>_<Voice>"):
            parse_name("mesd", bad)
    _write_tone(tmp_path / "Sadness_M_B_por_favor.wav")
    (u,) = load_manifest("mesd", tmp_path)
    assert (u.id, u.label, u.speaker) == ("Sadness_M_B_por_favor", "sadness", None)


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"03a01Xa\.wav: not an Emo-DB file name"):
        parse_name("emodb", "03a01Xa.wav")
    with pytest.raises(ValueError, match=r"1001_DFA_ANG\.wav: not a CREMA-D file name"):
        parse_name("cremad", "1001_DFA_ANG.wav")
    _write_tone(tmp_path / "wav" / "03a01Fa.wav")
    _write_tone(tmp_path / "wav" / "notes.wav")
    with pytest.raises(ValueError, match=r"notes\.wav: not an Emo-DB file name"):
        load_manifest("emodb", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no audio files \(\.wav, \.flac, \.ogg\) under .*empty"):
        load_manifest("emodb", tmp_path / "empty")
    with pytest.raises(ValueError, match=r"unknown corpus 'iemocap'"):
        load_manifest("iemocap", tmp_path)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    _write_tone(tmp_path / "a" / "03a01Fa.wav")
    _write_tone(tmp_path / "b" / "03a01Fa.wav")
    with pytest.raises(ValueError, match=r"duplicate utterance id '03a01Fa': a/03a01Fa\.wav and b/03a01Fa\.wav"):
        load_manifest("emodb", tmp_path)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_manifest(tmp_path: Path) -> None:
    _write_tone(tmp_path / "audio" / "x1.wav", 0.5)
    _write_tone(tmp_path / "audio" / "sub" / "x2.wav", 0.75, rate=8000)
    _write_csv(tmp_path / "manifest.csv", [
        {"path": "audio/x1.wav", "label": "Happy", "speaker": "spk1"},
        {"path": "audio/sub/x2.wav", "label": "surprise", "speaker": ""},
    ])  # fmt: skip
    manifest = load_manifest("csv", tmp_path)
    assert [(u.id, u.path, u.label, u.speaker, u.duration) for u in manifest] == [
        ("audio/x1", "audio/x1.wav", "happiness", "spk1", 0.5),
        ("audio/sub/x2", "audio/sub/x2.wav", "surprise", None, 0.75),
    ]
    assert load_manifest("csv", tmp_path / "manifest.csv") == manifest  # the CSV file itself as root
    assert {u.label for u in manifest} <= set(LABELS)


def test_corpus_names(tmp_path: Path) -> None:
    from parrot_jax.corpora import corpus_name

    ravdess = tmp_path / "ravdess"
    ravdess.mkdir()
    assert corpus_name("csv", ravdess) == "ravdess"  # a folder holding manifest.csv
    assert corpus_name("csv", ravdess / "manifest.csv") == "ravdess"
    assert corpus_name("csv", tmp_path / "tess_subset.csv") == "tess_subset"  # any other CSV: its stem
    assert corpus_name("csv", ravdess, "RAVDESS-speech") == "RAVDESS-speech"
    assert corpus_name("emodb", tmp_path) == "emodb"
    with pytest.raises(ValueError, match=r"corpus name 'my corpus' cannot name a folder; .* \(set one with --name\)"):
        corpus_name("csv", tmp_path / "my corpus.csv")


def test_csv_refuses_bad_rows(tmp_path: Path) -> None:
    outside = _write_tone(tmp_path / "outside.wav")
    root = tmp_path / "corpus"
    _write_tone(root / "in.wav")
    cases = {
        "../outside.wav": r"manifest path '\.\./outside\.wav' resolves to .*outside the corpus root",
        str(outside): r"is absolute; paths must be relative to the root",
        "link.wav": r"manifest path 'link\.wav' resolves to .*outside\.wav, outside the corpus root",
    }
    os.symlink(outside, root / "link.wav")
    for path, message in cases.items():
        _write_csv(root / "manifest.csv", [{"path": path, "label": "anger"}])
        with pytest.raises(ValueError, match=message):
            load_manifest("csv", root)
    _write_csv(root / "manifest.csv", [{"path": "in.wav", "label": "contempt"}])
    with pytest.raises(ValueError, match=r"manifest\.csv:2: label 'contempt' is not in the vocabulary"):
        load_manifest("csv", root)
    _write_csv(root / "manifest.csv", [{"file": "in.wav", "label": "anger"}])
    with pytest.raises(ValueError, match=r"expected a header with columns path,label\[,speaker\]"):
        load_manifest("csv", root)
    # a symlink leading out of the root is refused by the name-based adapters too
    (root / "manifest.csv").unlink()
    (root / "in.wav").rename(root / "03a01Fa.wav")
    (root / "link.wav").unlink()
    os.symlink(outside, root / "03a02Wa.wav")
    with pytest.raises(ValueError, match=r"'03a02Wa\.wav' resolves to .*outside the corpus root"):
        load_manifest("emodb", root)


def _list_row(path: Path) -> dict:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"file": path.name, "sha256": digest, "size_bytes": path.stat().st_size}


def test_verify_corpus_against_a_file_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    root = corpus / "AudioWAV"
    good = _write_tone(root / "1001_DFA_ANG_XX.wav")
    corrupt = _write_tone(root / "1001_DFA_DIS_XX.wav")
    missing = _write_tone(tmp_path / "elsewhere" / "1001_DFA_FEA_XX.wav")
    resized = _write_tone(root / "1001_DFA_HAP_XX.wav")
    rows = [_list_row(p) for p in (good, corrupt, missing, resized)]
    data = bytearray(corrupt.read_bytes())
    data[-1] ^= 0x01  # same size, different content
    corrupt.write_bytes(bytes(data))
    resized.write_bytes(resized.read_bytes() + b"\0\0")
    _write_tone(root / "1002_DFA_NEU_XX.wav")  # extra
    file_list = tmp_path / "list.tsv"
    with open(file_list, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "sha256", "size_bytes"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    report = verify_corpus("cremad", corpus, file_list)
    assert report.missing == ["1001_DFA_FEA_XX.wav"]
    assert report.extra == ["1002_DFA_NEU_XX.wav"]
    assert report.corrupt == ["1001_DFA_DIS_XX.wav", "1001_DFA_HAP_XX.wav"]
    assert "total all: expected 7442, found 4" in report.count_mismatches
    assert report.counts["speaker"] == {"1001": 3, "1002": 1}
    assert not report.ok
    assert main(["verify-corpus", "--corpus", "cremad", "--root", str(corpus), "--file-list", str(file_list)]) == 1
    out = capsys.readouterr().out
    assert "missing (1): 1001_DFA_FEA_XX.wav" in out and "extra (1): 1002_DFA_NEU_XX.wav" in out
    assert "corrupt (size or sha256 differs) (2): 1001_DFA_DIS_XX.wav, 1001_DFA_HAP_XX.wav" in out
    assert out.rstrip().endswith("PROBLEMS FOUND")


@pytest.mark.skipif(not CREMAD_LIST.is_file(), reason="CREMA-D file list not present at ../shared/data/cremad")
def test_verify_cremad_reads_the_official_list(tmp_path: Path) -> None:
    _write_tone(tmp_path / "1001_DFA_ANG_XX.wav")
    report = verify_corpus("cremad", tmp_path, CREMAD_LIST)
    assert len(report.missing) == 7441 and report.corrupt == ["1001_DFA_ANG_XX.wav"] and report.extra == []


def test_demo_corpus_is_deterministic(tmp_path: Path) -> None:
    a = generate_demo_corpus(tmp_path / "a", seed=3, n_speakers=2, n_texts=2)
    b = generate_demo_corpus(tmp_path / "b", seed=3, n_speakers=2, n_texts=2)
    c = generate_demo_corpus(tmp_path / "c", seed=4, n_speakers=2, n_texts=2)
    files = sorted(p.name for p in (a / "wav").iterdir())
    assert files == sorted(f"{s}{t}{e}a.wav" for s in ("01", "02") for t in ("a01", "b01") for e in "WFNT")
    for name in files:
        assert (a / "wav" / name).read_bytes() == (b / "wav" / name).read_bytes()
        assert (a / "wav" / name).read_bytes() != (c / "wav" / name).read_bytes()
    manifest = load_manifest("demo", a)
    assert Counter(u.label for u in manifest) == {"anger": 4, "happiness": 4, "neutral": 4, "sadness": 4}
    assert all(0.8 < u.duration < 4.0 for u in manifest)


@pytest.mark.slow
def test_demo_corpus_separates_classes_but_not_perfectly(tmp_path: Path) -> None:
    """An SVM on MFCC statistics, speaker-independent 3-fold: well above chance (0.25), below perfect."""
    from sklearn.svm import SVC

    from parrot_jax.audio import load_audio
    from parrot_jax.encoders.classical import MfccStats
    from parrot_jax.splits import make_folds

    root = generate_demo_corpus(tmp_path / "demo")
    manifest = load_manifest("demo", root)
    assert len(manifest) == 192 and len({u.speaker for u in manifest}) == 6
    encoder = MfccStats()
    x = encoder.embed_batch([load_audio(root / u.path) for u in manifest])
    labels = np.array([u.label for u in manifest])
    y = np.unique(labels, return_inverse=True)[1]
    folds = make_folds(y, np.array([u.speaker for u in manifest]), "speaker", k=3, seed=0, val_fraction=0.0)
    correct = 0
    for fold in folds:
        assert not set(np.array([u.speaker for u in manifest])[fold.train]) & set(
            np.array([u.speaker for u in manifest])[fold.test]
        )
        mean, std = x[fold.train].mean(0), x[fold.train].std(0)
        model = SVC().fit((x[fold.train] - mean) / std, y[fold.train])
        correct += int(np.sum(model.predict((x[fold.test] - mean) / std) == y[fold.test]))
    accuracy = correct / len(y)
    assert 0.45 < accuracy < 0.95, accuracy


def test_csv_refuses_one_audio_file_listed_twice(tmp_path: Path) -> None:
    _write_tone(tmp_path / "wav" / "x.wav")
    _write_tone(tmp_path / "wav" / "y.wav")
    _write_csv(tmp_path / "manifest.csv", [
        {"path": "wav/x.wav", "label": "anger"}, {"path": "wav/y.wav", "label": "anger"},
        {"path": "wav/../wav/x.wav", "label": "sadness"},
    ])  # fmt: skip
    message = r"manifest\.csv:4: 'wav/\.\./wav/x\.wav' is the same audio file as 'wav/x\.wav' on line 2"
    with pytest.raises(ValueError, match=message):
        load_manifest("csv", tmp_path)


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    _write_tone(tmp_path / "x.wav")
    (tmp_path / "manifest.csv").write_text("path,label\nx.wav,anger\n", encoding="utf-8-sig")
    assert (tmp_path / "manifest.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert [(u.id, u.label) for u in load_manifest("csv", tmp_path)] == [("x", "anger")]


def test_csv_file_as_root_resolves_audio_beside_it(tmp_path: Path) -> None:
    _write_tone(tmp_path / "wav" / "03a01Fa.wav")
    csv_file = _write_csv(tmp_path / "good.csv", [{"path": "wav/03a01Fa.wav", "label": "happy"}])
    assert audio_folder("csv", csv_file) == tmp_path
    assert audio_folder("csv", tmp_path) == tmp_path
    assert audio_folder("emodb", tmp_path / "x") == tmp_path / "x"
    report = verify_corpus("csv", csv_file)
    assert report.ok and report.unreadable == []


def test_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """Issue 18 #6: a non-UTF-8 CSV said only `'utf-8' codec can't decode byte 0xff`, an unterminated quote
    ended in `AttributeError: 'NoneType' object has no attribute 'strip'`, a field over 131072 characters in
    the csv module's own error."""
    _write_tone(tmp_path / "a.wav")
    manifest = tmp_path / "manifest.csv"
    cases = [
        (b"path,label\na.wav,anger\nb\xff.wav,sadness\n", r":3: not UTF-8 text \(byte 0xff at offset 24\)"),
        (b'path,label\na.wav,"anger\n', r":\d+: not a valid CSV line \(unexpected end of data\)"),
        (b"path,label\na.wav," + b"x" * 200_000 + b"\n", r":\d+: not a valid CSV line \(field larger than field limit"),
        (b"path,label\na.wav\n", r":2: expected the fields path,label\[,speaker\]; the line has fewer"),
    ]
    for data, message in cases:
        manifest.write_bytes(data)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(manifest))}{message}"):
            load_manifest("csv", tmp_path)
    manifest.write_bytes(b"path,label\na.wav,anger\n")
    listing = tmp_path / "list.tsv"
    listing.write_bytes(b"file\tsha256\tsize_bytes\n\xff\t00\t1\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(listing))}:2: not UTF-8 text"):
        verify_corpus("csv", tmp_path, listing)


DEMO_ARGS = "import sys\nfrom parrot_jax.corpora import generate_demo_corpus\n"


def _generate(root: Path) -> subprocess.Popen:
    """`generate_demo_corpus(root, seed=5, n_speakers=2, n_texts=2)` in a child process."""
    script = DEMO_ARGS + "generate_demo_corpus(sys.argv[1], seed=5, n_speakers=2, n_texts=2)\n"
    return subprocess.Popen([sys.executable, "-c", script, str(root)], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_demo_generations_killed_or_at_once_leave_a_complete_corpus(tmp_path: Path) -> None:
    """Issue 18 #2: `parrot extract --corpus demo` killed while generating left a folder every rerun refused (no
    DEMO.json and not empty); two first-time runs at once refused one of them. Now a SIGKILL mid-generation
    leaves the folder absent and the next run generates it; two at once both succeed, with the same files."""
    reference = generate_demo_corpus(tmp_path / "reference", seed=5, n_speakers=2, n_texts=2)
    expected = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    root = tmp_path / "demo_corpus"
    child = _generate(root)
    deadline = time.time() + 120
    while len(list(tmp_path.glob(f".demo_corpus.tmp-{child.pid}/wav/*.wav"))) < 3:  # mid-generation
        assert child.poll() is None and time.time() < deadline, child.stderr.read()
        time.sleep(0.01)
    child.kill()
    child.wait()
    assert not root.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == \
        [f".demo_corpus.tmp-{child.pid}"]
    again = [_generate(root), _generate(root)]  # the rerun, twice at once
    assert [c.wait(timeout=300) for c in again] == [0, 0], [c.stderr.read() for c in again]
    assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_corpus", "reference"]  # no temporary left
    assert generate_demo_corpus(root, seed=5, n_speakers=2, n_texts=2) == root  # found: nothing written
    with pytest.raises(ValueError, match=rf"^{re.escape(str(root))} holds no demo corpus of these settings"):
        generate_demo_corpus(root, seed=6, n_speakers=2, n_texts=2)
