"""Corpora: a root folder of audio files -> a manifest of utterances (id, path, label, speaker, duration).

Adapters (``load_manifest(corpus, root)``):

- ``"emodb"``: Emo-DB, names ``SSTTTEV.wav`` (speaker SS, text TTT, emotion letter E, version V), found
  anywhere under the root (the distribution keeps them in ``wav/``).
- ``"cremad"``: CREMA-D, names ``AAAA_SSS_EEE_LL.wav`` (actor, sentence, emotion, intensity).
- ``"mesd"``: MESD, names ``<Emotion>_<Voice>_<Corpus>_<word>.wav``; the word may contain underscores. MESD
  has no speaker ids (only a voice type F/M/C), so ``speaker`` is None.
- ``"csv"``: any other corpus, described by a CSV file (UTF-8, a byte-order mark allowed) with columns
  ``path,label[,speaker]``; ``root`` is either that file or a folder holding ``manifest.csv``; paths are
  relative to the file's folder (:func:`audio_folder`), and no audio file may be listed twice.
- ``"demo"``: the synthetic corpus of :func:`generate_demo_corpus`, in Emo-DB's layout (read by the Emo-DB
  name parser; it only has the four emotions it synthesises).

Every corpus's own codes map onto one shared vocabulary, :data:`LABELS`. Manifest paths must resolve inside
the root (no ``..``, no absolute paths, no symlinks leading out); anything else is refused.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from parrot_jax.files import read_text, remove_dead_temporaries, sha256_file

# The shared label vocabulary (alphabetical). Emo-DB uses 7 of them, CREMA-D and MESD 6, the demo 4;
# calm and surprise are there for CSV corpora such as RAVDESS.
LABELS: tuple[str, ...] = (
    "anger", "boredom", "calm", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
)  # fmt: skip

CORPORA: tuple[str, ...] = ("emodb", "cremad", "mesd", "csv", "demo")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

EMODB_EMOTIONS = {
    "W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral",
}  # fmt: skip
CREMAD_EMOTIONS = {
    "ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral", "SAD": "sadness",
}  # fmt: skip
MESD_EMOTIONS = {e.lower(): e.lower() for e in ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness")}
CSV_SYNONYMS = {
    "angry": "anger", "bored": "boredom", "disgusted": "disgust", "fearful": "fear", "afraid": "fear",
    "happy": "happiness", "joy": "happiness", "sad": "sadness", "surprised": "surprise",
}  # fmt: skip

_EMODB_NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])$")
_CREMAD_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>LO|MD|HI|XX)$")
_MESD_NAME = re.compile(r"^(?P<emotion>[A-Za-z]+)_(?P<voice>[FMC])_(?P<corpus>[AB])_(?P<word>.+)$")

# Published counts, used by `verify_corpus` (Emo-DB: Burkhardt et al. 2005; CREMA-D: Cao et al. 2014).
EXPECTED_COUNTS: dict[str, dict[str, dict[str, int]]] = {
    "emodb": {
        "total": {"all": 535},
        "label": {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71, "sadness": 62,
                  "neutral": 79},
        "speaker": {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35, "13": 61, "14": 69, "15": 56,
                    "16": 71},
    },
    "cremad": {
        "total": {"all": 7442},
        "label": {"anger": 1271, "disgust": 1271, "fear": 1271, "happiness": 1271, "neutral": 1087,
                  "sadness": 1271},
    },
    "mesd": {"total": {"all": 864}},
}  # fmt: skip


@dataclass(frozen=True)
class Utterance:
    """One recording: `path` is relative to the corpus root (POSIX separators); `duration` in seconds is
    None where the file's header cannot be read (the audio layer then rejects it, naming the problem);
    `key` is a CSV corpus's own name for the row (its ``key`` column: what split files may match it by)."""

    id: str
    path: str
    label: str
    speaker: str | None
    duration: float | None
    key: str | None = None

    def to_dict(self) -> dict:
        """The manifest's JSON of the row; ``key`` only where it is set (older manifests keep their hash)."""
        row = asdict(self)
        if row["key"] is None:
            del row["key"]
        return row


def parse_name(corpus: str, filename: str) -> tuple[str, str | None]:
    """(label, speaker) from a file name of `corpus` ("emodb", "demo", "cremad", "mesd").

    Raises ValueError naming the file and the expected pattern where the name does not fit.
    """
    stem = Path(filename).stem
    if corpus in ("emodb", "demo"):
        m = _EMODB_NAME.match(stem)
        if m is None or m["emotion"] not in EMODB_EMOTIONS:
            raise ValueError(
                f"{filename}: not an Emo-DB file name; expected SSTTTEV.wav (2-digit speaker, text a01-b99, "
                f"emotion letter in {''.join(EMODB_EMOTIONS)}, version letter), e.g. 03a01Fa.wav"
            )
        return EMODB_EMOTIONS[m["emotion"]], m["speaker"]
    if corpus == "cremad":
        m = _CREMAD_NAME.match(stem)
        if m is None or m["emotion"] not in CREMAD_EMOTIONS:
            raise ValueError(
                f"{filename}: not a CREMA-D file name; expected AAAA_SSS_EEE_LL.wav (4-digit actor, sentence "
                f"code, emotion in {', '.join(CREMAD_EMOTIONS)}, intensity LO/MD/HI/XX), e.g. 1001_DFA_ANG_XX.wav"
            )
        return CREMAD_EMOTIONS[m["emotion"]], m["actor"]
    if corpus == "mesd":
        m = _MESD_NAME.match(stem)
        if m is None or m["emotion"].lower() not in MESD_EMOTIONS:
            raise ValueError(
                f"{filename}: not a MESD file name; expected <Emotion>_<Voice>_<Corpus>_<word>.wav (emotion in "
                f"Anger/Disgust/Fear/Happiness/Neutral/Sadness, voice F/M/C, corpus A/B), e.g. Anger_C_A_abajo.wav"
            )
        return MESD_EMOTIONS[m["emotion"].lower()], None
    raise ValueError(f"corpus {corpus!r} has no file-name convention; known: emodb, demo, cremad, mesd")


def resolve_inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing absolute paths and anything that resolves outside `root`."""
    if Path(relative).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", relative):
        raise ValueError(f"manifest path {relative!r} is absolute; paths must be relative to the root {root}")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ValueError(f"manifest path {relative!r} resolves to {target}, outside the corpus root {root}")
    return target


def _duration(path: Path) -> float | None:
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return None
    return info.frames / info.samplerate if info.samplerate > 0 else None


def _audio_files(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}")
    return files


def _from_names(corpus: str, root: Path) -> list[Utterance]:
    utterances, seen = [], {}
    for path in _audio_files(root):
        relative = path.relative_to(root).as_posix()
        resolve_inside(root, relative)  # refuses symlinks leading out of the root
        label, speaker = parse_name(corpus, path.name)
        if path.stem in seen:
            raise ValueError(f"duplicate utterance id {path.stem!r}: {seen[path.stem]} and {relative}")
        seen[path.stem] = relative
        utterances.append(Utterance(path.stem, relative, label, speaker, _duration(path)))
    return utterances


def vocabulary_label(code: str) -> str | None:
    """The vocabulary's name for an emotion written as a name (``Anger``, ``happy``, ``Sad``) or a CREMA-D
    code (``ANG``); None when it is neither."""
    text = code.strip()
    if text.upper() in CREMAD_EMOTIONS:
        return CREMAD_EMOTIONS[text.upper()]
    label = CSV_SYNONYMS.get(text.lower(), text.lower())
    return label if label in LABELS else None


def _csv_label(value: str, where: str) -> str:
    label = vocabulary_label(value)
    if label is None:
        raise ValueError(f"{where}: label {value!r} is not in the vocabulary ({', '.join(LABELS)})")
    return label


def _csv_file(root: Path) -> Path:
    return root if root.suffix.lower() == ".csv" else root / "manifest.csv"


def audio_folder(corpus: str, root: Path) -> Path:
    """The folder a manifest's paths are relative to: for "csv" the CSV file's folder, else `root`."""
    root = Path(root)
    return _csv_file(root).parent if corpus == "csv" else root


@contextmanager
def _csv_rows(path: Path, delimiter: str = ",") -> Iterator[csv.DictReader]:
    """A `csv.DictReader` of `path` (UTF-8; a leading byte-order mark is dropped; quotes read strictly);
    a byte that is not UTF-8, an unterminated quote or a field over the csv module's limit is one
    ValueError naming the file and line."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter, strict=True)
        try:
            yield reader
        except UnicodeDecodeError:
            read_text(path)  # raises, naming the line of the first byte that is not UTF-8
            raise
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: not a valid CSV line ({error})") from None


def _from_csv(root: Path) -> list[Utterance]:
    csv_path = _csv_file(root)
    if not csv_path.is_file():
        raise ValueError(f"corpus 'csv' needs a CSV manifest: {csv_path} does not exist")
    base = csv_path.parent
    with _csv_rows(csv_path) as reader:
        columns = set(reader.fieldnames or [])
        if not {"path", "label"} <= columns:
            raise ValueError(f"{csv_path}: expected a header with columns path,label[,speaker][,key]; "
                             f"got {sorted(columns)}")
        utterances, seen, files, keys = [], {}, {}, {}
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if row["path"] is None or row["label"] is None:
                raise ValueError(f"{where}: expected the fields path,label[,speaker]; the line has fewer")
            line = reader.line_num
            relative = row["path"].strip()
            if not relative:
                raise ValueError(f"{where}: empty path")
            target = resolve_inside(base, relative)
            if target in files:
                first_line, first_path = files[target]
                raise ValueError(f"{where}: {relative!r} is the same audio file as {first_path!r} on line "
                                 f"{first_line} ({target}); each recording may appear once")
            files[target] = (line, relative)
            id_ = Path(relative).with_suffix("").as_posix()
            if id_ in seen:
                raise ValueError(f"{where}: duplicate utterance id {id_!r} (first on line {seen[id_]})")
            seen[id_] = line
            speaker = (row.get("speaker") or "").strip() or None
            key = (row.get("key") or "").strip() or None
            if key is not None and key in keys:
                raise ValueError(f"{where}: key {key!r} is the key of line {keys[key]} too; each row's key is its own")
            keys[key] = line
            utterances.append(Utterance(id_, Path(relative).as_posix(), _csv_label(row["label"], where), speaker,
                                        _duration(target), key))  # fmt: skip
    if not utterances:
        raise ValueError(f"{csv_path}: no rows")
    return utterances


FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a name that can name a file or folder as it is


def corpus_name(corpus: str, root: Path, name: str | None = None) -> str:
    """The name a corpus goes by in the feature store, tables and results folders: `name` when given, else
    the adapter's name, and for ``csv`` the CSV file's stem (its folder's name for ``<folder>/manifest.csv``)."""
    if name is None:
        root = Path(root)
        if corpus != "csv":
            name = corpus
        elif root.suffix.lower() == ".csv" and root.name.lower() != "manifest.csv":
            name = root.stem
        else:
            name = (root.parent if root.suffix.lower() == ".csv" else root).resolve().name
    if not FILE_NAME.match(name):
        raise ValueError(f"corpus name {name!r} cannot name a folder; expected letters, digits, '.', '_', '-' "
                         "(set one with --name)")
    return name


def load_manifest(corpus: str, root: Path) -> list[Utterance]:
    """The manifest of `corpus` under `root`, sorted by path (a deterministic order: the store's row order)."""
    root = Path(root)
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    if not root.exists():
        raise ValueError(f"corpus root {root} does not exist")
    if corpus == "csv":
        return _from_csv(root)
    return _from_names(corpus, root)


# --------------------------------------------------------------------------------------------------------
# verify-corpus


@dataclass
class CorpusReport:
    """What `verify_corpus` found; `ok` is False where any count or file differs from what was expected."""

    corpus: str
    counts: dict[str, dict[str, int]]
    count_mismatches: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.count_mismatches or self.missing or self.extra or self.corrupt or self.unreadable)


def read_file_list(path: Path) -> dict[str, tuple[str, int]]:
    """An official file list, TSV with header ``file  sha256  size_bytes`` -> {file: (sha256, size)}."""
    with _csv_rows(path, delimiter="\t") as reader:
        if not {"file", "sha256", "size_bytes"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected a TSV header 'file<TAB>sha256<TAB>size_bytes'")
        return {row["file"]: (row["sha256"].lower(), int(row["size_bytes"])) for row in reader}


def verify_corpus(corpus: str, root: Path, file_list: Path | None = None) -> CorpusReport:
    """Counts per label and speaker against the published ones; with `file_list` (e.g. CREMA-D's official
    list of names, sha256 and sizes) also the missing, extra and corrupt (size or hash differs) files."""
    root = Path(root)
    manifest = load_manifest(corpus, root)
    counts = {
        "total": {"all": len(manifest)},
        "label": dict(sorted(Counter(u.label for u in manifest).items())),
        "speaker": dict(sorted(Counter(u.speaker for u in manifest if u.speaker is not None).items())),
    }
    report = CorpusReport(corpus, counts, unreadable=[u.path for u in manifest if u.duration is None])
    for kind, expected in EXPECTED_COUNTS.get(corpus, {}).items():
        for key in sorted(set(expected) | set(counts[kind])):
            want, got = expected.get(key, 0), counts[kind].get(key, 0)
            if want != got:
                report.count_mismatches.append(f"{kind} {key}: expected {want}, found {got}")
    if file_list is not None:
        official = read_file_list(Path(file_list))
        folder = audio_folder(corpus, root)
        on_disk = {Path(u.path).name: folder / u.path for u in manifest}
        report.missing = sorted(set(official) - set(on_disk))
        report.extra = sorted(set(on_disk) - set(official))
        for name in sorted(set(official) & set(on_disk)):
            sha, size = official[name]
            path = on_disk[name]
            if path.stat().st_size != size or sha256_file(path) != sha:
                report.corrupt.append(name)
    return report


# --------------------------------------------------------------------------------------------------------
# The synthetic demo corpus

DEMO_EMOTIONS = {"W": "anger", "F": "happiness", "N": "neutral", "T": "sadness"}
DEMO_SAMPLE_RATE = 16000

# Emotion -> prosody relative to the speaker's neutral voice: f0 factor, f0 range (fraction of f0),
# level (dB), tempo factor, spectral tilt of the glottal source (dB/octave, lower = brighter/pressed),
# breath noise (fraction of the voiced amplitude).
_PROSODY = {
    "anger": dict(f0=1.30, range=0.22, level=5.0, tempo=1.15, tilt=-7.0, breath=0.02),
    "happiness": dict(f0=1.40, range=0.32, level=2.5, tempo=1.10, tilt=-10.0, breath=0.04),
    "neutral": dict(f0=1.00, range=0.08, level=0.0, tempo=1.00, tilt=-12.0, breath=0.04),
    "sadness": dict(f0=0.90, range=0.05, level=-4.0, tempo=0.78, tilt=-15.0, breath=0.14),
}
_VOWELS = {  # formants F1, F2, F3 (Hz) of an adult male voice
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
    "o": (570, 840, 2410), "u": (300, 870, 2240),
}  # fmt: skip
_BANDWIDTHS = (80.0, 100.0, 140.0)


def _resonate(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    """Two-pole resonator y[n] = x[n] + 2r cos(w) y[n-1] - r^2 y[n-2], gain-normalised at `freq`."""
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bandwidth / sr)
    w = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(w), r * r]
    gain = abs(1 - 2 * r * np.cos(w) * np.exp(-1j * w) + r * r * np.exp(-2j * w))
    return lfilter([gain], a, x)


def _synthesise(speaker: dict, emotion: str, text: list[str], rng: np.random.Generator) -> np.ndarray:
    """One utterance: harmonic glottal source (f0 contour, spectral tilt) + breath noise, through the
    formants of each syllable's vowel, under syllable envelopes, with per-utterance random variation."""
    sr = DEMO_SAMPLE_RATE
    p = _PROSODY[emotion]
    f0_mean = speaker["f0"] * p["f0"] * rng.lognormal(0.0, 0.10)
    f0_range = p["range"] * rng.lognormal(0.0, 0.35)
    tempo = speaker["tempo"] * p["tempo"] * rng.lognormal(0.0, 0.10)
    tilt = p["tilt"] + rng.normal(0.0, 2.0)
    breath = p["breath"] * rng.lognormal(0.0, 0.4)
    pieces = [np.zeros(int(0.12 * sr))]
    n_syllables = len(text)
    for k, vowel in enumerate(text):
        seconds = rng.uniform(0.7, 1.3) / tempo
        n = int(seconds * sr)
        t = np.arange(n) / sr
        # declination over the utterance plus a rise-fall accent on each syllable
        position = (k + t / seconds) / n_syllables
        accent = np.sin(np.pi * t / seconds) * rng.uniform(0.3, 1.0)
        drift = 1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n)  # slow random pitch drift
        f0 = f0_mean * (1.0 + f0_range * (accent - 0.5 * position)) * drift
        phase = 2 * np.pi * np.cumsum(f0) / sr
        source = np.zeros(n)
        for h in range(1, int(4000 / f0.max()) + 1):
            source += 10 ** (tilt * np.log2(h) / 20) * np.sin(h * phase)
        source += breath * np.abs(source).mean() * 4 * rng.standard_normal(n)
        voiced = source
        for formant, bandwidth in zip(_VOWELS[vowel], _BANDWIDTHS):
            voiced = _resonate(voiced, formant * speaker["formants"], bandwidth, sr)
        envelope = np.sin(np.pi * np.minimum(t / seconds, 1.0)) ** 0.6
        onset = rng.standard_normal(int(0.04 * sr)) * 0.3 * np.abs(voiced).mean()  # a fricative consonant
        pieces += [np.diff(onset, prepend=0.0), voiced * envelope, np.zeros(int(rng.uniform(0.02, 0.08) * sr))]
    pieces.append(np.zeros(int(0.12 * sr)))
    wave = np.concatenate(pieces)
    wave = wave / np.sqrt(np.mean(wave**2))
    level_db = -26.0 + p["level"] + rng.normal(0.0, 2.5)
    wave *= 10 ** (level_db / 20)
    snr_db = rng.uniform(20.0, 40.0)
    wave += 10 ** ((level_db - snr_db) / 20) * rng.standard_normal(len(wave))
    return np.clip(wave, -0.99, 0.99)


def generate_demo_corpus(root: Path, seed: int = 0, n_speakers: int = 6, n_texts: int = 8) -> Path:
    """Write the synthetic demo corpus under `root`/wav in Emo-DB's layout and return `root`.

    ``n_speakers`` speakers (codes 01.., alternating male/female: own f0, vocal-tract length and tempo) each
    say ``n_texts`` texts (codes a01.. then b01..: fixed vowel sequences of 4-8 syllables) in four emotions
    (anger W, happiness F, neutral N, sadness T) differing in pitch level and range, energy, tempo and voice
    quality (source tilt, breathiness), with random per-utterance variation so that classes overlap.
    16 kHz 16-bit PCM. Deterministic: the same arguments give byte-identical files (each file's random
    stream is seeded by (seed, speaker, emotion, text)). A `DEMO.json` records the arguments.

    Where `root` already holds this corpus (the same `DEMO.json`), nothing is written. Else the corpus is
    written into ``.<name>.tmp-<pid>`` beside `root` and renamed into place, so `root` is absent or complete:
    a killed generation leaves only that folder, which the next generation deletes, and two generations
    at once both succeed (the second finds the first's identical corpus). A `root` holding anything else
    is refused.
    """
    root = Path(root)
    stamp = {"seed": seed, "n_speakers": n_speakers, "n_texts": n_texts, "emotions": list(DEMO_EMOTIONS.values())}
    if _demo_stamp(root) == stamp:
        return root
    remove_dead_temporaries(root)
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "wav").mkdir(parents=True)
    vowels = list(_VOWELS)
    texts = []
    for t in range(n_texts):
        text_rng = np.random.default_rng([seed, 1, t])
        code = f"a{t + 1:02d}" if t < (n_texts + 1) // 2 else f"b{t + 1 - (n_texts + 1) // 2:02d}"
        texts.append((code, [vowels[i] for i in text_rng.integers(0, len(vowels), text_rng.integers(4, 9))]))
    jobs = []
    for s in range(n_speakers):
        speaker_rng = np.random.default_rng([seed, 2, s])
        male = s % 2 == 0
        speaker = {
            "f0": speaker_rng.uniform(95, 135) if male else speaker_rng.uniform(185, 235),
            "formants": speaker_rng.uniform(0.95, 1.05) * (1.0 if male else 1.17),
            "tempo": speaker_rng.uniform(3.6, 4.8),
        }
        jobs += [(speaker, s, e, letter, emotion, t, code, text)
                 for e, (letter, emotion) in enumerate(DEMO_EMOTIONS.items()) for t, (code, text) in enumerate(texts)]

    def write(job: tuple) -> None:
        speaker, s, e, letter, emotion, t, code, text = job
        wave = _synthesise(speaker, emotion, text, np.random.default_rng([seed, 3, s, e, t]))
        sf.write(tmp / "wav" / f"{s + 1:02d}{code}{letter}a.wav", wave, DEMO_SAMPLE_RATE, subtype="PCM_16")

    # each file from its own random stream: the same bytes in any order; numpy and scipy release the GIL
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write, jobs))
    (tmp / "DEMO.json").write_text(json.dumps(stamp, indent=1) + "\n")
    try:
        os.rename(tmp, root)  # atomic; refused where root is a folder that is not empty
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _demo_stamp(root) != stamp:
            raise ValueError(f"{root} holds no demo corpus of these settings (DEMO.json) and is not empty: not "
                             "writing there") from None
    return root


def _demo_stamp(root: Path) -> dict | None:
    """The settings recorded in a demo corpus's `DEMO.json`; None where there is none."""
    try:
        return json.loads((Path(root) / "DEMO.json").read_text())
    except (OSError, ValueError):
        return None


DEFAULT_DEMO_ROOT = Path("demo_corpus")  # where `demo_corpus_root(None)` generates the demo corpus


def demo_corpus_root(root: Path | None = None) -> Path:
    """The demo corpus's folder (default ``demo_corpus/``), generated there first when it holds none.

    Refuses to write into a folder that is neither empty nor a demo corpus (no ``DEMO.json``)."""
    root = Path(root) if root is not None else DEFAULT_DEMO_ROOT
    if not (root / "DEMO.json").is_file():
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root} holds no demo corpus (no DEMO.json) and is not empty: not writing there")
        root = generate_demo_corpus(root)
    return root
