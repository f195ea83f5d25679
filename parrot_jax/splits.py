"""Cross-validation folds of a corpus: the paper's stratified folds, speaker-independent folds, and the
fixed folds of EmoBox's split files.

Each fold holds three disjoint, sorted sets of row indices: ``test`` (one of the k folds), and the
remaining k-1 folds divided into ``train`` and ``val`` (the validation part used for early stopping).
Nothing in ``test`` ever appears in ``train`` or ``val``; under ``protocol="speaker"`` no speaker of
``test`` appears in ``train`` or ``val`` either.

How ``val`` is taken from a fold's training part is a named *validation policy* (`VAL_POLICIES`):
"speaker" (whole speakers, ``round(val_fraction * S)`` of the S training speakers, at least one),
"stratified" (a stratified ``val_fraction`` of the rows), "valid" (the split files' own ``valid`` part),
"none" (no validation: no early stopping), or "auto" (default), the first of these that never costs a
training part more than a quarter of its rows (`MAX_AUTO_SHARE`), nor a whole speaker when it has fewer
than 4 (`MIN_AUTO_SPEAKERS`): the split files' ``valid`` part; by speaker (speaker protocol, or split
files with speaker ids); a stratified share, at most a quarter. `validation_line` says what ran.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from parrot_jax.corpora import LABELS, vocabulary_label
from parrot_jax.files import read_text, sha256_file

Protocol = Literal["stratified", "speaker"]
PROTOCOLS: tuple[str, ...] = ("stratified", "speaker")
#: Every protocol the grid offers: ours (`make_folds`) and EmoBox's split files (`emobox_folds`).
ALL_PROTOCOLS: tuple[str, ...] = PROTOCOLS + ("emobox",)

#: Share of each fold's training rows (or speakers) held out for early stopping. The paper uses
#: early stopping without saying on what; 10 % of the training part is our default.
DEFAULT_VAL_FRACTION = 0.1
SplitMatch = Literal["name", "speaker_name", "key"]
SPLIT_MATCHES: tuple[str, ...] = ("name", "speaker_name", "key")
ValPolicy = Literal["auto", "speaker", "stratified", "valid", "none"]
VAL_POLICIES: tuple[str, ...] = ("auto", "speaker", "stratified", "valid", "none")
MAX_AUTO_SHARE = 0.25  # "auto" never holds out more of a training part's rows than this
MIN_AUTO_SPEAKERS = 4  # ... nor a whole speaker of a training part with fewer speakers than this


@dataclass(frozen=True)
class Fold:
    """Row indices of one cross-validation fold (each sorted, pairwise disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_policy: str = "none"  # the validation policy that carved ``val`` (never "auto")

    def fit_rows(self, refit: bool) -> np.ndarray:
        """The rows every model of a table fits its final parameters on: ``train`` + ``val`` with refit
        (`TrainConfig.refit`: early stopping picks the epoch on ``val``, then the model trains on both),
        ``train`` alone without (``val`` only picks the epoch)."""
        return np.union1d(self.train, self.val).astype(np.int64) if refit else self.train


def make_folds(
    labels: np.ndarray,
    speakers: np.ndarray | None = None,
    protocol: Protocol = "stratified",
    k: int = 5,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_policy: ValPolicy = "auto",
) -> list[Fold]:
    """Split rows into k folds; every row is in exactly one fold's ``test``.

    - ``stratified`` (the paper): random folds with each class's share kept (scikit-learn
      ``StratifiedKFold(shuffle=True, random_state=seed)``);
    - ``speaker`` (speaker-independent): whole speakers per fold, class shares balanced as far as
      whole speakers allow (``StratifiedGroupKFold``).

    ``val`` follows ``val_policy`` (module doc; "auto" prefers speakers under ``speaker``, rows under
    ``stratified``); ``val_fraction=0`` gives empty validation parts (no early stopping).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels: expected a non-empty 1-D array, got shape {labels.shape}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k: expected an integer >= 2, got {k!r}")
    rows = np.arange(len(labels))
    if protocol == "stratified":
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < k:
            small = {str(c): int(n) for c, n in zip(classes, counts) if n < k}
            raise ValueError(f"stratified {k}-fold split: every class needs at least {k} rows; these have fewer: {small}")
        outer = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, labels))
    else:
        if speakers is None:
            raise ValueError("protocol 'speaker' needs the speakers array (one speaker id per row)")
        speakers = np.asarray(speakers)
        if speakers.shape != labels.shape:
            raise ValueError(f"speakers: expected shape {labels.shape} (one per label), got {speakers.shape}")
        distinct = np.unique(speakers)
        if len(distinct) < k:
            raise ValueError(f"speaker {k}-fold split needs at least {k} speakers, got {len(distinct)}: "
                             f"{distinct.tolist()}; use at most {len(distinct)} folds (--folds {len(distinct)}) or "
                             "the stratified protocol (--protocol stratified)")
        outer = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, labels, speakers))
    rng = np.random.default_rng(seed)  # one stream over the folds
    return with_validation([(rest, test, None) for rest, test in outer], labels, speakers, val_policy, val_fraction,
                           seed, lambda _: rng, prefer="speaker" if protocol == "speaker" else "stratified")


def with_validation(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], labels: np.ndarray,
                    speakers: np.ndarray | None, policy: str, val_fraction: float, seed: int,
                    rng_of: Callable[[int], np.random.Generator], prefer: str) -> list[Fold]:
    """Folds from (training part, test rows, the split files' ``valid`` rows or None) triples, ``val``
    carved by ``policy`` (module doc). ``prefer``: "auto"'s carving, "speaker" or "stratified";
    ``rng_of(f)``: the generator that draws fold f's validation speakers."""
    if policy not in VAL_POLICIES:
        raise ValueError(f"val_policy: expected one of {VAL_POLICIES}, got {policy!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction!r}")
    has_valid = all(valid is not None for _, _, valid in parts)
    if policy == "valid" and not has_valid:
        raise ValueError("val_policy 'valid' needs the split files' own valid part (<corpus>_valid_fold_<k>.jsonl), "
                         "and these folds have none; choose val_policy=speaker, stratified, none or auto")
    if policy == "speaker" and speakers is None:
        raise ValueError("val_policy 'speaker' needs speaker ids, and this corpus has none; choose "
                         "val_policy=stratified, none or auto")
    if policy == "valid" or (policy == "auto" and has_valid and all(
            len(valid) <= MAX_AUTO_SHARE * len(rest) for rest, _, valid in parts)):
        return [_fold(rest, test, valid, "valid") for rest, test, valid in parts]
    if policy == "none" or val_fraction == 0.0:
        return [_fold(rest, test, np.empty(0, np.int64), "none") for rest, test, _ in parts]
    if policy == "speaker" or (policy == "auto" and prefer == "speaker" and speakers is not None):
        folds = [_fold(rest, test, _speaker_val(rest, speakers, val_fraction, rng_of(f), policy == "speaker"),
                       "speaker") for f, (rest, test, _) in enumerate(parts)]
        if policy == "speaker" or all(_cheap(fold, speakers) for fold in folds):
            return folds
    fraction = min(val_fraction, MAX_AUTO_SHARE) if policy == "auto" else val_fraction
    return [_fold(rest, test, _stratified_val(rest, labels, fraction, seed), "stratified") for rest, test, _ in parts]


def _cheap(fold: Fold, speakers: np.ndarray) -> bool:
    """A speaker-carved ``val`` within "auto"'s limits: at most a quarter of the rows, >= 4 training speakers."""
    rest = len(fold.train) + len(fold.val)
    return len(fold.val) <= MAX_AUTO_SHARE * rest and len(np.unique(speakers[np.union1d(fold.train, fold.val)])) >= \
        MIN_AUTO_SPEAKERS


def _stratified_val(rest: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """A stratified random ``val_fraction`` of ``rest`` (plain random where a class has one row, or where
    the share holds fewer rows than there are classes)."""
    _, counts = np.unique(labels[rest], return_counts=True)
    enough = counts.min() >= 2 and math.ceil(val_fraction * len(rest)) >= len(counts)
    stratify = labels[rest] if enough else None
    _, val = train_test_split(rest, test_size=val_fraction, random_state=seed, stratify=stratify)
    return val


def _speaker_val(rest: np.ndarray, speakers: np.ndarray, val_fraction: float, rng: np.random.Generator,
                 asked: bool) -> np.ndarray:
    """All rows of ``round(val_fraction * S)`` (at least one, at most S - 1) random training speakers; a
    training part of one speaker: an error where the policy was ``asked`` for, else no rows (auto then
    carves rows instead)."""
    pool = np.unique(speakers[rest])
    if len(pool) < 2:
        if not asked:
            return rest
        raise ValueError(f"cannot carve a validation speaker from a training part with one speaker ({pool.tolist()}); "
                         "choose another validation policy (--set val_policy=stratified or none), or more speakers "
                         "per training part (more folds)")
    n_val = min(max(1, round(val_fraction * len(pool))), len(pool) - 1)
    chosen = rng.choice(pool, size=n_val, replace=False)
    return rest[np.isin(speakers[rest], chosen)]


def _fold(rest: np.ndarray, test: np.ndarray, val: np.ndarray, policy: str) -> Fold:
    val = np.sort(val).astype(np.int64)
    train = np.setdiff1d(rest, val).astype(np.int64)
    return Fold(train=train, val=val, test=np.sort(test).astype(np.int64), val_policy=policy)


def validation_line(corpus: str, folds: Sequence[Fold], asked: str, speakers: np.ndarray | None) -> str:
    """One line saying which validation policy ran and what each fold's validation took, e.g.
    ``emodb: validation auto -> speaker: 49 rows, 1 speaker of 8 (11%) | ...``; flagged where it costs
    more than "auto" ever would."""
    used = folds[0].val_policy
    parts, costly = [], False
    for fold in folds:
        rest = np.union1d(fold.train, fold.val)
        share = len(fold.val) / len(rest)
        text = f"{len(fold.val)} of {len(rest)} rows ({share:.0%})"
        if speakers is not None and len(fold.val):
            held, pool = len(np.unique(speakers[fold.val])), len(np.unique(speakers[rest]))
            whole = not set(speakers[fold.val]) & set(speakers[fold.train])
            text += f", {held} of {pool} speakers" + ("" if whole else " (rows of them)")
            costly |= whole and pool < MIN_AUTO_SPEAKERS
        costly |= share > MAX_AUTO_SHARE
        parts.append(text)
    head = f"{corpus}: validation {asked}" + (f" -> {used}" if asked != used else "")
    note = (f"; costly: more than {MAX_AUTO_SHARE:.0%} of a training part or a whole speaker of fewer than "
            f"{MIN_AUTO_SPEAKERS} ('auto' would not)" if costly else "")
    return f"{head}; per fold: " + " | ".join(parts) + note


# ----------------------------------------------------------------------------------------------------
# EmoBox's split files


@dataclass(frozen=True)
class SplitFiles:
    """Folds read from split files, and how the files met the store.

    missing: file names the split files list but the store lacks (left out under ``allow_missing``).
    unused: store rows (by file name) that no split file lists (never used).
    files: each split file read (path relative to the splits folder) -> its sha256.
    """

    folds: list[Fold]
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    label_map: dict[str, str] | None = None

    def record(self) -> dict:
        """What a run records about its splits: files and hashes, rows per fold, missing and unused rows."""
        return {
            "files": self.files,
            "label_map": self.label_map,
            "rows": [{"train": len(f.train), "val": len(f.val), "test": len(f.test)} for f in self.folds],
            "missing": {"count": len(self.missing), "names": self.missing},
            "unused": {"count": len(self.unused), "names": self.unused},
        }


_FOLD_DIR = re.compile(r"^fold_(\d+)$")
_SPLIT_FILE = re.compile(r"^(?P<corpus>.+)_(?P<part>train|valid|test)_fold_(?P<k>\d+)\.jsonl$")
_SHOWN = 5  # names quoted in an error message


def _shown(names: Sequence[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _read_label_map(path: Path) -> dict[str, str] | None:
    if not path.exists() and not path.is_symlink():
        return None
    try:
        mapping = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"{path}: expected a JSON object mapping label codes to names")
    return mapping


def _split_files(splits: Path) -> dict[int, dict[str, Path]]:
    """{k: {"train": path, "test": path[, "valid": path]}} of ``splits/fold_<k>/<corpus>_<part>_fold_<k>.jsonl``."""
    if not splits.is_dir():
        raise ValueError(f"splits folder {splits} does not exist (expected EmoBox's fold_<k>/ folders)")
    folds: dict[int, dict[str, Path]] = {}
    folders: dict[int, Path] = {}
    for folder in sorted(p for p in splits.iterdir() if p.is_dir() and _FOLD_DIR.match(p.name)):
        k = int(_FOLD_DIR.match(folder.name)[1])
        if k in folders:
            raise ValueError(f"{splits}: {folders[k].name}/ and {folder.name}/ are both fold {k}; keep one")
        folders[k] = folder
        parts: dict[str, Path] = {}
        for path in sorted(folder.glob("*.jsonl")):
            if not path.is_file():
                raise ValueError(f"{path}: not a regular file (a split file must be one)")
            m = _SPLIT_FILE.match(path.name)
            if m is None or int(m["k"]) != k:
                raise ValueError(f"{path}: unexpected file in a fold folder; expected <corpus>_{{train,test,valid}}_fold_{k}.jsonl")
            if m["part"] in parts:
                raise ValueError(f"{folder}: two {m['part']} files ({parts[m['part']].name}, {path.name})")
            parts[m["part"]] = path
        lacking = [p for p in ("train", "test") if p not in parts]
        if lacking:
            raise ValueError(f"{folder}: no {' or '.join(lacking)} file (expected <corpus>_{{train,test}}_fold_{k}.jsonl)")
        folds[k] = parts
    if not folds:
        raise ValueError(f"{splits}: no fold_<k>/ folders with split files")
    return folds


def _read_split(path: Path, label_map: dict[str, str] | None, match: str = "name") -> list[tuple[str, str, str]]:
    """(match key, vocabulary label, where) of each line of a split file: the key is the line's ``key`` field
    under ``match="key"``, else the file name of its ``wav`` without extension."""
    lowered = {k.lower(): v for k, v in (label_map or {}).items()}
    rows, seen = [], {}
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not a JSON object ({err})") from None
        if not isinstance(row, dict) or not isinstance(row.get("wav"), str) or not isinstance(row.get("emo"), str):
            raise ValueError(f"{where}: expected a JSON object with string fields 'wav' and 'emo'")
        if match == "key" and not isinstance(row.get("key"), str):
            raise ValueError(f"{where}: expected a string field 'key' (split_match=key matches rows by it)")
        name = row["key"] if match == "key" else Path(row["wav"].replace("\\", "/")).stem
        if name in seen:
            raise ValueError(f"{where}: {name} listed twice in {path.name} (first on line {seen[name]})")
        seen[name] = line_no
        code = row["emo"]
        label = vocabulary_label(lowered.get(code.lower(), code))
        if label is None:
            raise ValueError(f"{where}: label {code!r} of {name} maps to no emotion of the vocabulary ({', '.join(LABELS)})"
                             + ("" if label_map is None else f" through label_map.json ({lowered.get(code.lower())!r})"))
        rows.append((name, label, where))
    return rows


def emobox_folds(
    splits: str | Path,
    ids: Sequence[str],
    labels: Sequence[str],
    speakers: np.ndarray | None = None,
    allow_missing: bool = False,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_policy: ValPolicy = "auto",
    match: SplitMatch = "name",
    keys: Sequence[str] | None = None,
) -> SplitFiles:
    """The folds of EmoBox's split files for the store's rows.

    ``splits`` is one corpus's folder of EmoBox's ``data/``: ``fold_<k>/<corpus>_{train,test[,valid]}_fold_<k>.jsonl``
    (one JSON object a line; ``wav`` a path whose file name, without its extension, is matched to the last
    path component of the store's ids; ``emo`` the corpus's label code) and, when present, ``label_map.json``
    (code -> name, looked up case-insensitively). Labels map onto the vocabulary (`corpora.vocabulary_label`)
    and must equal the store's ``labels`` (vocabulary names, one per id), else ValueError naming the file.
    ``match`` (`SPLIT_MATCHES`) is what a store row is matched by: "name", its file name (the last path
    component of its id), or "speaker_name", ``<speaker>_<file name>`` (SAVEE kept as distributed,
    ``AudioData/DC/a01.wav``, against EmoBox's ``DC_a01``; needs ``speakers``), or "key", the row's own key
    (``keys``: a CSV corpus's ``key`` column) against each split line's ``key`` field (EmoBox's ``emodb-03a02Wb``).
    The folds are the files' (their number too); ``val`` follows ``val_policy`` (`with_validation`; "auto"
    carves by speaker when ``speakers`` is given).
    Split rows the store lacks and store rows in no split are refused, naming the first few, unless
    ``allow_missing`` (then left out, and listed in `SplitFiles`).
    """
    splits = Path(splits)
    labels = list(labels)
    if len(labels) != len(ids):
        raise ValueError(f"labels: expected one per id ({len(ids)}), got {len(labels)}")
    row_of = _match_keys(ids, speakers, match, keys)
    label_map = _read_label_map(splits / "label_map.json")
    files = split_file_hashes(splits)
    paths = dict(sorted(_split_files(splits).items()))
    parsed = {k: {part: _read_split(path, label_map, match) for part, path in parts.items()}
              for k, parts in paths.items()}
    listed = {name for parts in parsed.values() for rows in parts.values() for name, _, _ in rows}
    missing = sorted(listed - set(row_of))
    unused = sorted(set(row_of) - listed)
    if (missing or unused) and not allow_missing:
        problems = []
        if missing:
            problems.append(f"{len(missing)} file(s) in the split files are not in the store: {_shown(missing)}")
        if unused:
            problems.append(f"{len(unused)} store row(s) are in no split file: {_shown(unused)}")
        raise ValueError(f"{splits}: " + "; ".join(problems) + " (allow_missing / --allow-missing leaves them out)")
    speakers = None if speakers is None else np.asarray(speakers)
    y = np.asarray(labels)
    parts = []
    for k, files_of_fold in parsed.items():
        rows = {}
        for part, entries in files_of_fold.items():
            for name, label, where in entries:
                if name in row_of and labels[row_of[name]] != label:
                    raise ValueError(f"{where}: {name} is labelled {label!r} in the split file but "
                                     f"{labels[row_of[name]]!r} in the store")
            rows[part] = np.array(sorted(row_of[n] for n, _, _ in entries if n in row_of), dtype=np.int64)
            if part in ("train", "test") and not len(rows[part]):
                why = f"none of its {len(entries)} rows is in the store" if entries else "it lists no recording"
                raise ValueError(f"{paths[k][part]}: an empty {part} file ({why}); every fold needs {part} rows")
        overlap = set(rows["test"]) & (set(rows["train"]) | set(rows.get("valid", [])))
        if overlap:
            raise ValueError(f"{splits}/fold_{k}: {_shown(sorted(ids[r] for r in overlap))} in both test and training files")
        training = np.union1d(rows["train"], rows.get("valid", [])).astype(np.int64)
        parts.append((training, rows["test"], rows.get("valid")))
    numbers = list(parsed)
    folds = with_validation(parts, y, speakers, val_policy, val_fraction, seed,
                            lambda f: np.random.default_rng([seed, numbers[f]]),
                            prefer="speaker" if speakers is not None else "stratified")
    return SplitFiles(folds, missing, unused, files, label_map)


def _match_keys(ids: Sequence[str], speakers: np.ndarray | None, match: str,
                keys: Sequence[str] | None = None) -> dict[str, int]:
    """Store row of each match key (`emobox_folds`' ``match``); two rows of one key refused, naming the fix."""
    if match not in SPLIT_MATCHES:
        raise ValueError(f"split_match: expected one of {SPLIT_MATCHES}, got {match!r}")
    if match == "speaker_name" and speakers is None:
        raise ValueError("split_match 'speaker_name' needs speaker ids, and this corpus has none")
    if match == "key" and keys is None:
        raise ValueError("split_match 'key' needs a key for every row (a 'key' column in the corpus CSV), "
                         "and this corpus has none")
    row_of: dict[str, int] = {}
    for r, id_ in enumerate(ids):
        key = {"name": lambda: Path(id_).name, "speaker_name": lambda: f"{speakers[r]}_{Path(id_).name}",
               "key": lambda: str(keys[r])}[match]()
        if key in row_of:
            first = ids[row_of[key]]
            if match == "name":
                raise ValueError(f"store rows {first!r} and {id_!r} share the file name {key!r}, and split files "
                                 "match rows by file name (split_match=name); where the split files name rows "
                                 "<speaker>_<file name> (EmoBox's DC_a01), match by speaker: --set "
                                 "split_match=speaker_name; or give the corpus CSV a 'key' column holding each "
                                 "row's split-file key and --set split_match=key")
            raise ValueError(f"store rows {first!r} and {id_!r} share the key {key!r} (split_match={match})")
        row_of[key] = r
    return row_of


def split_file_hashes(splits: str | Path) -> dict[str, str]:
    """sha256 of every split file (and label_map.json) under an EmoBox splits folder, by relative path."""
    splits = Path(splits)
    paths = [path for parts in _split_files(splits).values() for path in parts.values()]
    paths += [splits / "label_map.json"] if (splits / "label_map.json").is_file() else []
    return {path.relative_to(splits).as_posix(): sha256_file(path) for path in sorted(paths)}
