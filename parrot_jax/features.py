"""The feature store: where features live, how they are read back and checked, and what they record.

Layout under ``out/<corpus>/`` (written by `parrot_jax.extraction.extract`):

- ``manifest.json``: the corpus manifest (every utterance, in `load_manifest` order). Its hash is
  sha256 of the canonical JSON of the utterance list (sorted keys, no spaces).
- ``<encoder>.npy``: float32 [N, D], one row per accepted utterance, in manifest order.
- ``<encoder>.json``: the encoder's identity, ``encoder`` (its registry name), ``encoder_options`` (its
  embedding options) and ``checkpoint_sha256``; its whole ``metadata()`` (run options, architecture,
  library versions: for information); dim (and ``layers`` for an encoder's ``layer="all"``: the rows are
  then [L+1, D]), sample rate, row ids, manifest hash, the sha256 of the ``.npy`` file (the content hash
  the grid uses to decide whether a finished cell is still valid), rejects, the rows' reading notes
  (``audio_notes``: ids of the files resampled, downmixed, or in another container than their suffix
  names), package version, and the fingerprint. Written last: its presence with a matching fingerprint is
  what "finished" means.
- ``<encoder>.rejects.tsv``: ``id  path  reason`` of each file left out (``on_error="skip"``).
- ``.partial/<encoder>/``: the finished chunks of an interrupted extraction.
- ``.lock``: held by the extraction writing the store (`parrot_jax.locks`).

The *fingerprint* of an entry (`fingerprint`) hashes what its numbers depend on: the encoder's
identity, dim, sample rate and shortest accepted input, the manifest hash and the rejection policy;
never how the encoder ran (batch size, compilation cache, scan, device).

`load_features` reads one (corpus, encoder) entry and verifies it; `load_corpus` joins a corpus's
entries into aligned matrices (`CorpusData`), refusing sets whose utterances or labels disagree.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from parrot_jax.corpora import LABELS, Utterance
from parrot_jax.files import sha256_file, sha256_json, write_json
from parrot_jax.locks import LOCK_NAME

FORMAT_VERSION = 2  # 2: entries record the encoder's embedding options apart from how it ran
MMAP_BYTES = 64 << 20  # load_features memory-maps matrices larger than this by default


# --------------------------------------------------------------------------------------------------------
# manifest


def manifest_sha256(manifest: Sequence[Utterance]) -> str:
    """sha256 of the canonical JSON of the manifest's utterances (the store's manifest hash)."""
    return sha256_json([u.to_dict() for u in manifest])


def read_store_manifest(out: Path, corpus: str) -> list[Utterance]:
    """The manifest saved in the store `out/<corpus>/manifest.json`."""
    path = Path(out) / corpus / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no feature store for corpus {corpus!r} in {out}: {path} is missing")
    return [Utterance(**u) for u in json.loads(path.read_text())["utterances"]]


def _describe_manifest(saved: Mapping[str, Any]) -> str:
    return (f"{saved.get('source') or 'a corpus'} ({len(saved['utterances'])} utterances, manifest "
            f"{saved['manifest_sha256'][:12]})")


def write_store_manifest(
    store: Path, corpus: str, manifest: Sequence[Utterance], source: str, start_over: bool = False
) -> None:
    """Write the store's manifest.json (`source`: where the corpus was read from).

    A store never silently replaces a manifest that finished features were extracted against: a different
    one (another corpus under the same name, or a changed copy) is refused with a ValueError naming both,
    unless `start_over`, which first removes everything the store holds."""
    path = store / "manifest.json"
    digest = manifest_sha256(manifest)
    new = {"corpus": corpus, "source": source, "manifest_sha256": digest, "utterances": [u.to_dict() for u in manifest]}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("manifest_sha256") == digest:
            return
        extracted = sorted(p.stem for p in store.glob("*.json") if p != path)
        if extracted and not start_over:
            raise ValueError(
                f"the store {store} holds features ({', '.join(extracted)}) of {_describe_manifest(saved)}; this "
                f"extraction reads {_describe_manifest(new)}, a different corpus or a changed one. Extract into "
                "another --out (or under another corpus name), or pass --start-over to replace them"
            )
        for entry in store.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != LOCK_NAME:
                entry.unlink()
    write_json(path, new)


# --------------------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class FeatureSet:
    """A feature matrix and its rows' ids, labels, speakers and keys (a CSV corpus's ``key`` column), aligned
    row by row."""

    matrix: np.ndarray  # float32 [N, D]; an np.memmap (read-only) for large stores
    ids: tuple[str, ...]
    labels: tuple[str, ...]
    speakers: tuple[str | None, ...]
    metadata: dict[str, Any]
    keys: tuple[str | None, ...] = ()

    @property
    def sha256(self) -> str:
        """Content hash: sha256 of the .npy file."""
        return self.metadata["features_sha256"]

    @property
    def classes(self) -> tuple[str, ...]:
        """The labels present, in the order of the shared vocabulary `LABELS`."""
        present = set(self.labels)
        return tuple(label for label in LABELS if label in present)

    @property
    def y(self) -> np.ndarray:
        """int32 [N]: each row's label as an index into `classes`."""
        index = {label: i for i, label in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int32)


def features_sha256(out: Path, corpus: str, encoder: str) -> str:
    """The recorded content hash of a finished store entry, without reading the matrix."""
    return read_metadata(Path(out) / corpus, corpus, encoder)["features_sha256"]


def read_metadata(store: Path, corpus: str, encoder: str) -> dict[str, Any]:
    """The ``<encoder>.json`` of the store folder `store` (= ``out/<corpus>``); refuses another format."""
    path = store / f"{encoder}.json"
    extract = f"parrot extract --corpus {corpus} --encoders {encoder} --out {store.parent}"
    if not path.is_file():
        raise FileNotFoundError(f"no features of encoder {encoder!r} for corpus {corpus!r}: {path} is missing "
                                f"(run `{extract}`)")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: store format {meta.get('format_version')}, this version reads format "
                         f"{FORMAT_VERSION} (it records the encoder's options): re-run `{extract}`")
    return meta


def fingerprint(encoder_metadata: dict[str, Any], dim: int, sample_rate: int, min_samples: int,
                manifest_hash: str, on_error: str) -> str:
    """sha256 of what a store entry's numbers depend on (see the module's docstring)."""
    return sha256_json({"encoder": encoder_metadata["name"], "options": encoder_metadata["options"],
                        "checkpoint_sha256": encoder_metadata["checkpoint_sha256"], "dim": dim,
                        "sample_rate": sample_rate, "min_samples": min_samples, "manifest_sha256": manifest_hash,
                        "on_error": on_error, "format_version": FORMAT_VERSION})


def load_features(
    out: Path,
    corpus: str,
    encoder: str,
    manifest: Sequence[Utterance] | None = None,
    mmap: bool | None = None,
    verify: bool = True,
) -> FeatureSet:
    """The finished features of `encoder` on `corpus` from the store `out`.

    Refuses (ValueError) a store whose manifest hash differs from the one the features were extracted
    with, and, where `manifest` (e.g. a fresh `load_manifest`) is given, one that differs from it.
    `mmap`: memory-map the matrix (default: when it is larger than 64 MiB, or holds every layer). `verify`:
    check the .npy's sha256 against the recorded content hash. The matrix is [N, dim], or [N, layers, dim]
    for an encoder's ``layer="all"`` (metadata ``layers``).
    """
    store = Path(out) / corpus
    meta = read_metadata(store, corpus, encoder)
    stored = read_store_manifest(out, corpus)
    stored_hash = manifest_sha256(stored)
    if stored_hash != meta["manifest_sha256"]:
        raise ValueError(
            f"{store / (encoder + '.json')} was extracted from manifest {meta['manifest_sha256'][:12]}, but "
            f"{store / 'manifest.json'} is now {stored_hash[:12]} (the corpus changed since): re-run extraction "
            f"of {encoder!r}"
        )
    if manifest is not None and manifest_sha256(manifest) != stored_hash:
        raise ValueError(
            f"the given manifest (hash {manifest_sha256(manifest)[:12]}) differs from the one the store "
            f"{store} was extracted from ({stored_hash[:12]}): re-run extraction of {encoder!r}"
        )
    path = store / f"{encoder}.npy"
    if verify and sha256_file(path) != meta["features_sha256"]:
        raise ValueError(f"{path}: content hash differs from {meta['features_sha256'][:12]} recorded in its .json")
    if mmap is None:
        mmap = path.stat().st_size > MMAP_BYTES or "layers" in meta
    matrix = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    expected = [len(meta["ids"]), *([meta["layers"]] if "layers" in meta else []), meta["dim"]]
    if matrix.dtype != np.float32 or list(matrix.shape) != expected:
        raise ValueError(f"{path}: expected float32 {expected}, got {matrix.dtype} {list(matrix.shape)}")
    by_id = {u.id: u for u in stored}
    rows = [by_id[i] for i in meta["ids"]]
    return FeatureSet(matrix, tuple(meta["ids"]), tuple(u.label for u in rows), tuple(u.speaker for u in rows), meta,
                      tuple(u.key for u in rows))


def available_features(root: str | Path) -> dict[str, list[str]]:
    """{corpus: [encoder, ...]} of the finished entries under ``root/<corpus>/<encoder>.npy`` (with .json)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found: dict[str, list[str]] = {}
    for npy in sorted(root.glob("*/*.npy")):
        if npy.with_suffix(".json").is_file():
            found.setdefault(npy.parent.name, []).append(npy.stem)
    return found


# --------------------------------------------------------------------------------------------------------
# a corpus's feature sets joined


@dataclass
class CorpusData:
    """The feature matrices of one corpus's encoders, rows aligned by utterance id."""

    corpus: str
    ids: list[str]
    labels: np.ndarray  # int class ids [N]
    class_names: tuple[str, ...]
    speakers: np.ndarray | None
    matrices: dict[str, np.ndarray]  # encoder -> float32 [N, D]
    hashes: dict[str, str]  # encoder -> content hash of its feature file
    metadata: dict[str, dict]  # encoder -> the store's metadata
    keys: np.ndarray | None = None  # a CSV corpus's own row names (its ``key`` column), where every row has one


def load_corpus(root: str | Path, corpus: str, encoders: Sequence[str]) -> CorpusData:
    """Read the corpus's feature sets; refuse sets whose utterances or labels disagree."""
    sets = {e: load_features(Path(root), corpus, e) for e in encoders}
    first_name, first = next(iter(sets.items()))
    ids = list(first.ids)
    matrices, hashes, metadata = {}, {}, {}
    for name, fs in sets.items():
        order = {i: r for r, i in enumerate(fs.ids)}
        if set(order) != set(ids):
            raise ValueError(f"{root}/{corpus}: features of {name} and {first_name} cover different utterances "
                             f"({len(order)} vs {len(ids)} ids); extract both from the same corpus copy")
        rows = np.array([order[i] for i in ids])
        if list(np.asarray(fs.labels)[rows]) != list(first.labels):
            raise ValueError(f"{root}/{corpus}: labels of {name} disagree with {first_name}")
        matrices[name] = np.asarray(fs.matrix, np.float32)[rows]
        hashes[name] = fs.sha256
        metadata[name] = fs.metadata
    class_names = first.classes
    labels = first.y.astype(np.int64)
    speakers = None if first.speakers is None or any(s is None for s in first.speakers) else np.asarray(first.speakers)
    keys = None if not first.keys or any(k is None for k in first.keys) else np.asarray(first.keys)
    return CorpusData(corpus, ids, labels, class_names, speakers, matrices, hashes, metadata, keys)
