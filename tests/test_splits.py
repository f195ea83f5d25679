"""Folds partition the rows, never leak test rows (or test speakers) into train/val, and refuse bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from parrot_jax.corpora import parse_name
from parrot_jax.splits import emobox_folds, make_folds, split_file_hashes, validation_line

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EMODB = SHARED / "emodb" / "wav"
EMOBOX_EMODB = SHARED / "emobox" / "emodb"


def _synthetic(n: int = 300, classes: int = 6, speakers: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, classes, n), rng.integers(0, speakers, n)


def _check_partition(folds, n: int, k: int) -> None:
    assert len(folds) == k
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(tests), np.arange(n)), "each row must be in exactly one test fold"
    for f in folds:
        for part in (f.train, f.val, f.test):
            assert np.array_equal(part, np.sort(part))
        assert not set(f.test) & set(f.train), "test rows in train"
        assert not set(f.test) & set(f.val), "test rows in val"
        assert not set(f.train) & set(f.val), "val rows in train"
        assert len(f.train) + len(f.val) + len(f.test) == n


@pytest.mark.parametrize("seed", [0, 1])
def test_stratified_partition_and_class_shares(seed):
    labels, _ = _synthetic(seed=seed)
    folds = make_folds(labels, protocol="stratified", k=5, seed=seed, val_fraction=0.1)
    _check_partition(folds, len(labels), 5)
    for f in folds:
        # each class's count in a test fold is within one of its total / k (StratifiedKFold's promise)
        for c in np.unique(labels):
            assert abs(np.sum(labels[f.test] == c) - np.sum(labels == c) / 5) <= 1
        assert abs(len(f.val) - 0.1 * (len(f.train) + len(f.val))) <= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_speaker_protocol_keeps_speakers_apart(seed):
    labels, speakers = _synthetic(seed=seed)
    folds = make_folds(labels, speakers, protocol="speaker", k=5, seed=seed, val_fraction=0.1)
    _check_partition(folds, len(labels), 5)
    for f in folds:
        test_spk, val_spk, train_spk = (set(speakers[p]) for p in (f.test, f.val, f.train))
        assert not test_spk & (train_spk | val_spk), "a test speaker appears in train/val"
        assert not val_spk & train_spk, "a validation speaker appears in train"
        assert len(val_spk) == 1  # round(0.1 * 9 or 10 training speakers) = 1


@pytest.mark.skipif(not EMODB.is_dir(), reason=f"Emo-DB not present at {EMODB} (../shared/data beside the repo)")
def test_speaker_folds_on_real_emodb_names():
    names = sorted(p.name for p in EMODB.glob("*.wav"))
    assert len(names) == 535
    speakers = np.array([n[:2] for n in names])
    labels = np.array([n[5] for n in names])
    folds = make_folds(labels, speakers, protocol="speaker", k=5, seed=0)
    _check_partition(folds, 535, 5)
    for f in folds:
        assert len(set(speakers[f.test])) == 2  # 10 actors over 5 folds
        assert not set(speakers[f.test]) & set(speakers[np.concatenate([f.train, f.val])])


def test_deterministic_and_seed_dependent():
    labels, speakers = _synthetic()
    a = make_folds(labels, protocol="stratified", seed=7)
    b = make_folds(labels, protocol="stratified", seed=7)
    c = make_folds(labels, protocol="stratified", seed=8)
    assert all(np.array_equal(x.test, y.test) and np.array_equal(x.val, y.val) for x, y in zip(a, b))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_zero_val_fraction_gives_empty_val():
    labels, speakers = _synthetic()
    for protocol in ("stratified", "speaker"):
        for f in make_folds(labels, speakers, protocol=protocol, val_fraction=0.0):
            assert len(f.val) == 0


def test_errors_name_the_values():
    labels, speakers = _synthetic()
    tiny = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match=re.escape("these have fewer: {'1': 3}")):
        make_folds(tiny, protocol="stratified", k=5)
    with pytest.raises(ValueError, match=r"needs at least 5 speakers, got 3: \[0, 1, 2\]; use at most 3 folds "
                       r"\(--folds 3\) or the stratified protocol \(--protocol stratified\)"):  # fmt: skip
        make_folds(labels, speakers % 3, protocol="speaker", k=5)
    with pytest.raises(ValueError, match=r"training part with one speaker \(\[[01]\]\); choose another validation "
                       r"policy \(--set val_policy=stratified or none\)"):  # fmt: skip
        make_folds(labels, speakers % 2, protocol="speaker", k=2, val_policy="speaker")
    assert len(make_folds(labels, speakers % 2, protocol="speaker", k=2, val_fraction=0.0)) == 2
    with pytest.raises(ValueError, match="needs the speakers array"):
        make_folds(labels, protocol="speaker")
    with pytest.raises(ValueError, match="protocol: expected one of"):
        make_folds(labels, protocol="random")
    with pytest.raises(ValueError, match=r"speakers: expected shape \(300,\)"):
        make_folds(labels, speakers[:10], protocol="speaker")
    with pytest.raises(ValueError, match=r"val_fraction: expected a value in \[0, 1\), got 1.5"):
        make_folds(labels, val_fraction=1.5)
    with pytest.raises(ValueError, match=r"val_policy 'valid' needs the split files' own valid part"):
        make_folds(labels, val_policy="valid")
    with pytest.raises(ValueError, match=r"val_policy: expected one of \('auto'"):
        make_folds(labels, val_policy="rows")


# ----------------------------------------------------------------------------------------------------
# EmoBox's split files


def _emodb_store():
    """Ids, vocabulary labels and speakers of the real Emo-DB file names, as a store holds them."""
    names = sorted(p.name for p in EMODB.glob("*.wav"))
    parsed = [parse_name("emodb", n) for n in names]
    return [f"wav/{Path(n).stem}" for n in names], [lab for lab, _ in parsed], np.array([spk for _, spk in parsed])


def _emobox_keys(path: Path) -> set[str]:
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


needs_emobox = pytest.mark.skipif(not (EMODB.is_dir() and EMOBOX_EMODB.is_dir()),
                                  reason=f"Emo-DB or EmoBox's Emo-DB split files not present under {SHARED}")


@needs_emobox
def test_emobox_emodb_folds_are_emobox_folds():
    ids, labels, speakers = _emodb_store()
    splits = emobox_folds(EMOBOX_EMODB, ids, labels, speakers, seed=0)
    assert len(splits.folds) == 5 and not splits.missing and not splits.unused
    _check_partition(splits.folds, 535, 5)
    for k, fold in enumerate(splits.folds, start=1):
        assert len(fold.test) == 107 and len(fold.train) + len(fold.val) == 428
        test_keys = {f"emodb-{Path(ids[r]).name}" for r in fold.test}
        train_keys = {f"emodb-{Path(ids[r]).name}" for r in np.concatenate([fold.train, fold.val])}
        assert test_keys == _emobox_keys(EMOBOX_EMODB / f"fold_{k}" / f"emodb_test_fold_{k}.jsonl")
        assert train_keys == _emobox_keys(EMOBOX_EMODB / f"fold_{k}" / f"emodb_train_fold_{k}.jsonl")
        assert not test_keys & train_keys
        # no valid file: validation carved from the training rows by speaker
        assert len(fold.val) > 0 and not set(speakers[fold.val]) & set(speakers[fold.train])
    record = splits.record()
    assert record["rows"][0]["test"] == 107 and set(record["files"]) >= {"label_map.json", "fold_1/emodb_test_fold_1.jsonl"}


def _copy_splits(tmp_path: Path) -> Path:
    target = tmp_path / "emodb"
    shutil.copytree(EMOBOX_EMODB, target)
    return target


@needs_emobox
def test_emobox_missing_file_refused_with_its_name(tmp_path):
    ids, labels, speakers = _emodb_store()
    gone = ids.index("wav/03a02Wb")  # in fold 1's test file
    kept = [i for r, i in enumerate(ids) if r != gone]
    kept_labels = [lab for r, lab in enumerate(labels) if r != gone]
    with pytest.raises(ValueError, match=r"1 file\(s\) in the split files are not in the store: 03a02Wb \(allow_missing"):
        emobox_folds(EMOBOX_EMODB, kept, kept_labels, np.delete(speakers, gone))
    splits = emobox_folds(EMOBOX_EMODB, kept, kept_labels, np.delete(speakers, gone), allow_missing=True)
    assert splits.missing == ["03a02Wb"] and splits.record()["missing"] == {"count": 1, "names": ["03a02Wb"]}
    assert len(splits.folds[0].test) == 106 and len(splits.folds[1].test) == 107
    # a store row in no split file
    extra = ids + ["wav/99z99Wz"]
    with pytest.raises(ValueError, match=r"1 store row\(s\) are in no split file: 99z99Wz"):
        emobox_folds(EMOBOX_EMODB, extra, labels + ["anger"], np.append(speakers, "99"))
    splits = emobox_folds(EMOBOX_EMODB, extra, labels + ["anger"], np.append(speakers, "99"), allow_missing=True)
    assert splits.unused == ["99z99Wz"] and all(len(ids) not in np.concatenate([f.train, f.val, f.test]) for f in splits.folds)


@needs_emobox
def test_emobox_wrong_label_refused_with_its_name(tmp_path):
    ids, labels, speakers = _emodb_store()
    target = _copy_splits(tmp_path)
    path = target / "fold_2" / "emodb_train_fold_2.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["emo"] = "sad" if row["emo"] != "sad" else "anger"
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    name = Path(row["wav"]).stem
    with pytest.raises(ValueError, match=rf"emodb_train_fold_2.jsonl:1: {name} is labelled '\w+' in the split file but"):
        emobox_folds(target, ids, labels, speakers)
    row["emo"] = "bliss"
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"emodb_train_fold_2.jsonl:1: label 'bliss' of {name} maps to no emotion"):
        emobox_folds(target, ids, labels, speakers)


def test_emobox_layout_valid_file_and_codes(tmp_path):
    """A corpus with CREMA-D-style codes, a valid file, no label map, no speakers: stratified carving unused."""
    names = [f"{a}_X_{e}" for a in range(6) for e in ("ANG", "SAD")]
    labels = ["anger" if n.endswith("ANG") else "sadness" for n in names]
    fold = tmp_path / "fold_1"
    fold.mkdir()
    parts = {"train": names[:8], "valid": names[8:10], "test": names[10:]}
    for part, rows in parts.items():
        (fold / f"toy_{part}_fold_1.jsonl").write_text(
            "".join(json.dumps({"key": n, "wav": f"downloads/toy/{n}.wav", "emo": n[-3:]}) + "\n" for n in rows))
    (splits,) = emobox_folds(tmp_path, names, labels).folds
    assert splits.train.tolist() == list(range(8)) and splits.val.tolist() == [8, 9] and splits.test.tolist() == [10, 11]
    (fold / "toy_test_fold_1.jsonl").write_text(json.dumps({"wav": f"{names[0]}.wav", "emo": "ANG"}) + "\n")
    with pytest.raises(ValueError, match=r"fold_1: 0_X_ANG in both test and training files"):
        emobox_folds(tmp_path, names, labels, allow_missing=True)
    (fold / "toy_test_fold_1.jsonl").unlink()
    with pytest.raises(ValueError, match=r"fold_1: no test file"):
        emobox_folds(tmp_path, names, labels)
    with pytest.raises(ValueError, match=r"splits folder .*nowhere does not exist"):
        emobox_folds(tmp_path / "nowhere", names, labels)


def _write_fold(folder: Path, corpus: str, parts: dict[str, list[str]], emotion) -> None:
    fold = folder / "fold_1"
    fold.mkdir(parents=True)
    for part, rows in parts.items():
        (fold / f"{corpus}_{part}_fold_1.jsonl").write_text(
            "".join(json.dumps({"wav": f"downloads/{corpus}/{n}.wav", "emo": emotion(n)}) + "\n" for n in rows))


def test_two_training_speakers_keep_at_least_three_quarters_of_the_training_rows(tmp_path):
    """TESS-like: one fold, two speakers in its training part, no valid file. "auto" may not hold out a speaker
    (half the rows): it carves a stratified 10 %; asked for, "speaker" takes a whole speaker, and says so."""
    names = [f"{spk}_{t}_{e}" for spk in ("OAF", "YAF", "ZZZ") for t in range(10) for e in ("ANG", "SAD")]
    labels = ["anger" if n.endswith("ANG") else "sadness" for n in names]
    speakers = np.array([n[:3] for n in names])
    train = [n for n in names if not n.startswith("ZZZ")]
    _write_fold(tmp_path, "toy", {"train": train, "test": [n for n in names if n.startswith("ZZZ")]}, lambda n: n[-3:])
    (fold,) = emobox_folds(tmp_path, names, labels, speakers).folds
    assert fold.val_policy == "stratified" and len(fold.train) >= 0.75 * len(train) and len(fold.val) == 4
    line = validation_line("toy", [fold], "auto", speakers)
    assert line == "toy: validation auto -> stratified; per fold: 4 of 40 rows (10%), 2 of 2 speakers (rows of them)"
    (whole,) = emobox_folds(tmp_path, names, labels, speakers, val_policy="speaker").folds
    assert whole.val_policy == "speaker" and len(whole.val) == 20 and len(set(speakers[whole.val])) == 1
    assert validation_line("toy", [whole], "speaker", speakers) == (
        "toy: validation speaker; per fold: 20 of 40 rows (50%), 1 of 2 speakers; costly: more than 25% of a "
        "training part or a whole speaker of fewer than 4 ('auto' would not)")
    (none,) = emobox_folds(tmp_path, names, labels, speakers, val_policy="none").folds
    assert len(none.val) == 0 and len(none.train) == 40 and none.val_policy == "none"
    with pytest.raises(ValueError, match=r"val_policy 'valid' needs the split files' own valid part"):
        emobox_folds(tmp_path, names, labels, speakers, val_policy="valid")


def test_auto_takes_a_speaker_only_from_four_or_more_within_a_quarter():
    labels, speakers = _synthetic()
    speaker = make_folds(labels, speakers, protocol="speaker", k=5)  # 8 training speakers of 10
    assert {f.val_policy for f in speaker} == {"speaker"}
    few = make_folds(labels, speakers % 4, protocol="speaker", k=2)  # 2 training speakers
    assert {f.val_policy for f in few} == {"stratified"}
    assert all(len(f.val) <= 0.25 * (len(f.train) + len(f.val)) for f in few)
    assert {f.val_policy for f in make_folds(labels, speakers % 4, protocol="speaker", k=2, val_policy="speaker")} \
        == {"speaker"}
    capped = make_folds(labels, protocol="stratified", val_fraction=0.5)  # auto: at most a quarter
    assert all(abs(len(f.val) - 0.25 * (len(f.train) + len(f.val))) <= 1 for f in capped)
    asked = make_folds(labels, protocol="stratified", val_fraction=0.5, val_policy="stratified")
    assert all(abs(len(f.val) - 0.5 * (len(f.train) + len(f.val))) <= 1 for f in asked)


def test_savee_layout_matched_by_speaker_and_file_name(tmp_path):
    """SAVEE as distributed, AudioData/<speaker>/<name>.wav with names repeating across speakers, against
    EmoBox's DC_a01 rows."""
    ids = [f"savee/AudioData/{spk}/{e}{i:02d}" for spk in ("DC", "JE", "JK") for e in ("a", "sa") for i in (1, 2)]
    speakers = np.array([i.split("/")[2] for i in ids])
    labels = ["anger" if Path(i).name.startswith("a") else "sadness" for i in ids]
    rows = [f"{spk}_{Path(i).name}" for i, spk in zip(ids, speakers)]
    _write_fold(tmp_path, "savee", {"train": rows[:8], "test": rows[8:]},
                lambda n: "a" if n.split("_")[1].startswith("a") else "sa")
    (tmp_path / "label_map.json").write_text(json.dumps({"a": "anger", "sa": "sadness"}))
    with pytest.raises(ValueError, match=r"store rows 'savee/AudioData/DC/a01' and 'savee/AudioData/JE/a01' share "
                       r"the file name 'a01', .* match by speaker: --set split_match=speaker_name"):
        emobox_folds(tmp_path, ids, labels, speakers)
    (fold,) = emobox_folds(tmp_path, ids, labels, speakers, val_policy="none", match="speaker_name").folds
    assert [ids[r] for r in fold.test] == ids[8:] and fold.train.tolist() == list(range(8))
    with pytest.raises(ValueError, match="split_match 'speaker_name' needs speaker ids"):
        emobox_folds(tmp_path, ids, labels, None, match="speaker_name")


CREMAD_LIST = SHARED / "cremad" / "audiowav_files.tsv"


@pytest.mark.skipif(not (CREMAD_LIST.is_file() and (SHARED / "emobox" / "cremad").is_dir()),
                    reason=f"CREMA-D's file list or EmoBox's CREMA-D split files not present under {SHARED}")
def test_emobox_cremad_has_one_fold():
    names = [line.split("\t")[0] for line in CREMAD_LIST.read_text().splitlines()[1:]]
    parsed = [parse_name("cremad", n) for n in names]
    ids = [Path(n).stem for n in names]
    splits = emobox_folds(SHARED / "emobox" / "cremad", ids, [lab for lab, _ in parsed],
                          np.array([spk for _, spk in parsed]))
    (fold,) = splits.folds
    assert len(fold.test) == 1856 and len(fold.train) + len(fold.val) == 5586


def _toy_splits(folder: Path, k: int = 1, fold_dir: str | None = None) -> tuple[list[str], list[str], Path]:
    """Split files of a 12-row toy corpus in ``folder/fold_<k>/`` (train 8, valid 2, test 2): (ids, labels, fold)."""
    names = [f"{a}_X_{e}" for a in range(6) for e in ("ANG", "SAD")]
    labels = ["anger" if n.endswith("ANG") else "sadness" for n in names]
    fold = folder / (fold_dir or f"fold_{k}")
    fold.mkdir(parents=True)
    for part, rows in {"train": names[:8], "valid": names[8:10], "test": names[10:]}.items():
        (fold / f"toy_{part}_fold_{k}.jsonl").write_text(
            "".join(json.dumps({"wav": f"{n}.wav", "emo": n[-3:]}) + "\n" for n in rows))
    return names, labels, fold


def test_split_files_that_are_not_utf8_empty_fifos_or_doubled_are_refused_naming_them(tmp_path):
    """Issue 18 #6 and #7: each of these named no file, hung, or silently dropped a fold."""
    names, labels, fold = _toy_splits(tmp_path)
    train = fold / "toy_train_fold_1.jsonl"
    good = train.read_bytes()
    train.write_bytes(good[:30] + b"\xff" + good[30:])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(train))}:1: not UTF-8 text \(byte 0xff at offset 30\)$"):
        emobox_folds(tmp_path, names, labels)
    train.write_bytes(good)
    (tmp_path / "label_map.json").write_bytes(b'{"ANG": "anger\xff"}')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'label_map.json'))}:1: not UTF-8 text"):
        emobox_folds(tmp_path, names, labels)
    (tmp_path / "label_map.json").unlink()
    test = fold / "toy_test_fold_1.jsonl"
    kept = test.read_text()
    for text, why in [("", "it lists no recording"), ('{"wav": "gone.wav", "emo": "ANG"}\n',
                                                       "none of its 1 rows is in the store")]:
        test.write_text(text)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(test))}: an empty test file \({why}\); every fold "
                                             "needs test rows$"):
            emobox_folds(tmp_path, names, labels, allow_missing=True)
    test.write_text(kept)
    train.write_text("\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(train))}: an empty train file \(it lists no recording\)"):
        emobox_folds(tmp_path, names, labels, allow_missing=True)
    train.write_bytes(good)
    test.unlink()
    os.mkfifo(test)  # reading it would block for ever
    with pytest.raises(ValueError, match=rf"^{re.escape(str(test))}: not a regular file"):
        emobox_folds(tmp_path, names, labels)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(test))}: not a regular file"):
        split_file_hashes(tmp_path)
    test.unlink()
    test.write_text(kept)
    assert len(emobox_folds(tmp_path, names, labels).folds) == 1
    _toy_splits(tmp_path, 1, "fold_01")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}: fold_01/ and fold_1/ are both fold 1; keep "
                                         "one$"):
        emobox_folds(tmp_path, names, labels)
