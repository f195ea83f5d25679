"""Extraction: embed a corpus with encoders into the feature store (`parrot_jax.features`).

The manifest is cut into chunks of ``batch_size`` consecutive utterances; each chunk's audio is loaded
once for all encoders and embedded, and each finished chunk is written atomically to
``.partial/<encoder>/chunk_<k>.npz``. A run killed at any point (SIGKILL included) and started again
skips the chunks already there, then assembles the same bytes an uninterrupted run writes. A finished
entry is not recomputed while its fingerprint (`features.fingerprint`: the encoder's name, embedding
options and checkpoint hash, the manifest, on_error) holds, however the encoder runs now (batch size,
compilation cache, scan, devices). Partial work is discarded when the fingerprint, the chunking
(``batch_size``) or the chunk format changes. Each chunk records its utterance ids, and a matrix is
published only where the chunks' ids are exactly the manifest's, in order. One extraction at a time per
store: `extract` holds the store's lock (``.lock``, `parrot_jax.locks`) throughout and refuses a second
writer at once.

Devices and hosts: one `parrot_jax.encoders.runner.Runner` runs every encoder's JAX program (jitted, each
batch split over this host's chosen devices, compiled programs kept in the persistent compilation cache);
under several processes each host embeds its share of the chunks and host 0 assembles the store.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from parrot_jax import __version__
from parrot_jax.audio import NOTES, AudioError, check_length, read_audio
from parrot_jax.corpora import (
    FILE_NAME, Utterance, audio_folder, corpus_name, demo_corpus_root, load_manifest, resolve_inside,
)
from parrot_jax.encoders import registry
from parrot_jax.encoders.base import Encoder, row_shape
from parrot_jax.features import FORMAT_VERSION, fingerprint, manifest_sha256, read_metadata, write_store_manifest
from parrot_jax.files import atomic_write, remove_temporaries, sha256_file, sha256_json, write_json
from parrot_jax.locks import exclusive

ON_ERROR = ("raise", "skip")
CHUNK_FORMAT = 2  # of the partial chunks: rows, accepted, reasons, ids, notes


@dataclass
class EncoderSummary:
    encoder: str
    rows: int
    rejects: int
    computed_files: int  # files embedded in this run (0 where the store was already up to date)
    reused_files: int  # files whose rows came from an earlier (interrupted or finished) run
    features_sha256: str
    notes: dict[str, int] = field(default_factory=dict)  # rows resampled / downmixed / misnamed (audio.NOTES)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], computed_files: int, reused_files: int) -> "EncoderSummary":
        notes = {kind: len(meta.get("audio_notes", {}).get(kind, {})) for kind in NOTES}
        return cls(meta["encoder"], len(meta["ids"]), len(meta["rejects"]), computed_files, reused_files,
                   meta["features_sha256"], notes)  # fmt: skip


@dataclass
class ExtractSummary:
    """What `extract` did: `seconds` of wall time, `audio_seconds` of the manifest's audio."""

    corpus: str
    files: int  # in the manifest
    processed_files: int  # read and embedded (by every encoder that needed them) in this run
    processed_audio_seconds: float
    seconds: float
    encoders: list[EncoderSummary] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        """Processed files per second of wall time (all encoders of the run together)."""
        return self.processed_files / self.seconds if self.seconds > 0 else float("nan")

    @property
    def real_time_factor(self) -> float:
        """Wall seconds per second of processed audio (below 1: faster than real time)."""
        return self.seconds / self.processed_audio_seconds if self.processed_audio_seconds > 0 else float("nan")

    def text(self) -> str:
        lines = [f"corpus {self.corpus}: {self.files} files, {self.processed_files} processed in this run"]
        for e in self.encoders:
            notes = ", ".join(f"{e.notes.get(kind, 0)} {kind.replace('misnamed', 'mis-named')}" for kind in NOTES)
            lines.append(
                f"  {e.encoder}: {e.rows} rows, {e.rejects} rejects, {e.computed_files} computed, "
                f"{e.reused_files} reused, sha256 {e.features_sha256[:12]}; audio {notes}"
            )
        if self.processed_files == 0:
            lines.append(f"{self.seconds:.1f} s: every encoder was up to date, nothing extracted")
        else:
            lines.append(
                f"{self.seconds:.1f} s, {self.files_per_second:.1f} files/s, real-time factor "
                f"{self.real_time_factor:.4f} ({self.processed_audio_seconds:.1f} s of audio)"
            )
        return "\n".join(lines)


def _build(encoder: str | registry.EncoderSpec | Encoder, checkpoints: Mapping[str, Path]) -> Encoder:
    if isinstance(encoder, str):
        return registry.build(encoder, checkpoints.get(encoder))
    if isinstance(encoder, registry.EncoderSpec):
        return registry.build(encoder.name, checkpoints.get(encoder.name), **encoder.options)
    return encoder


@dataclass
class _Job:
    """One encoder's extraction: where its chunks go and which are still to do."""

    encoder: Encoder
    encoder_metadata: dict[str, Any]  # encoder.metadata(), asked once (it may hash a large checkpoint)
    fingerprint: str  # of the finished entry (features.fingerprint)
    partial: Path
    todo: set[int]
    reused_files: int = 0
    computed_files: int = 0


def _partial_fingerprint(identity: str, batch_size: int) -> str:
    """What a partial extraction's chunks depend on: the entry's fingerprint and the chunking."""
    return sha256_json({"fingerprint": identity, "batch_size": batch_size})


def _chunk_path(partial: Path, k: int) -> Path:
    return partial / f"chunk_{k:06d}.npz"


def _up_to_date(store: Path, name: str, fingerprint: str) -> bool:
    meta_path, npy_path = store / f"{name}.json", store / f"{name}.npy"
    if not (meta_path.is_file() and npy_path.is_file()):
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("fingerprint") == fingerprint and meta.get("features_sha256") == sha256_file(npy_path)


def _start_job(store: Path, encoder: Encoder, encoder_metadata: dict[str, Any], identity: str,
               batch_size: int, n_chunks: int) -> _Job:
    partial = store / ".partial" / encoder.name
    state = partial / "state.json"
    wanted = {"fingerprint": _partial_fingerprint(identity, batch_size), "chunk_format": CHUNK_FORMAT}
    if partial.is_dir() and (not state.is_file() or json.loads(state.read_text()) != wanted):
        shutil.rmtree(partial)  # work of another encoder identity, manifest, batch size or chunk format
    partial.mkdir(parents=True, exist_ok=True)
    remove_temporaries(partial)
    if not state.is_file():
        write_json(state, wanted)
    todo = {k for k in range(n_chunks) if not _chunk_path(partial, k).is_file()}
    return _Job(encoder, encoder_metadata, identity, partial, todo)


def _embed_chunk(
    job: _Job,
    k: int,
    chunk: Sequence[Utterance],
    waves: Mapping[str, np.ndarray | AudioError],
    notes: Mapping[str, dict[str, str]],
    root: Path,
    on_error: str,
) -> None:
    """Embed one chunk with one encoder and write it atomically: rows, accepted mask, reasons, the
    utterance ids, and each file's reading notes (JSON).

    A file is rejected (or, with on_error="raise", raises AudioError naming it) where its audio is bad, it
    is shorter than the encoder's `min_samples`, or the encoder gives it a non-finite embedding.
    """
    encoder = job.encoder
    problems: dict[int, str] = {}
    batch, batch_index = [], []
    for i, u in enumerate(chunk):
        wave = waves[u.id]
        try:
            if isinstance(wave, AudioError):
                raise wave
            check_length(wave, encoder.min_samples, root / u.path, f"encoder {encoder.name!r}", encoder.sample_rate)
        except AudioError as error:
            if on_error == "raise":
                raise
            problems[i] = error.problem
            continue
        batch.append(wave)
        batch_index.append(i)
    shape = row_shape(encoder)
    rows = np.zeros((0, *shape), np.float32)
    if batch:
        rows = np.asarray(encoder.embed_batch(batch))
        if rows.dtype != np.float32 or rows.shape != (len(batch), *shape):
            raise ValueError(
                f"encoder {encoder.name!r} returned {rows.dtype} {list(rows.shape)} for a batch of {len(batch)}; "
                f"expected float32 {[len(batch), *shape]}"
            )
        finite = np.all(np.isfinite(rows.reshape(len(rows), -1)), axis=1)
        for i in np.asarray(batch_index)[~finite]:
            error = AudioError(root / chunk[i].path, f"encoder {encoder.name!r} gave a non-finite (NaN/Inf) embedding")
            if on_error == "raise":
                raise error
            problems[int(i)] = error.problem
        rows = rows[finite]
    accepted = [i not in problems for i in range(len(chunk))]
    reasons = [problems.get(i, "") for i in range(len(chunk))]
    arrays = {"rows": rows, "accepted": np.array(accepted), "reasons": np.array(reasons, dtype=str),
              "ids": np.array([u.id for u in chunk], dtype=str),
              "notes": np.array([json.dumps(notes.get(u.id, {}), sort_keys=True) for u in chunk], dtype=str)}
    atomic_write(_chunk_path(job.partial, k), lambda f: np.savez(f, **arrays))
    job.computed_files += len(chunk)


def _load_waves(
    chunk: Sequence[Utterance], root: Path, sample_rate: int
) -> tuple[dict[str, np.ndarray | AudioError], dict[str, dict[str, str]]]:
    """Each utterance's waveform at `sample_rate` (or the AudioError saying why it has none), and the
    reading notes (resampled, downmixed, misnamed) of those read."""
    waves: dict[str, np.ndarray | AudioError] = {}
    notes: dict[str, dict[str, str]] = {}
    for u in chunk:
        try:
            waves[u.id], notes[u.id] = read_audio(resolve_inside(root, u.path), sample_rate)
        except AudioError as error:
            waves[u.id] = error
    return waves, notes


def _write_matrix(path: Path, chunks: Sequence[Path], n_rows: int, row_shape: tuple[int, ...]) -> None:
    """Concatenate the chunk files' rows into the .npy `path` atomically, one chunk in memory at a time."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n_rows, *row_shape)}

    def write(f) -> None:
        np.lib.format.write_array_header_1_0(f, header)
        for chunk in chunks:
            with np.load(chunk, allow_pickle=False) as saved:
                f.write(np.ascontiguousarray(saved["rows"], np.float32).tobytes())

    atomic_write(path, write)


def _finish(
    job: _Job, store: Path, corpus: str, manifest: Sequence[Utterance], batch_size: int, on_error: str
) -> EncoderSummary:
    """Assemble the chunks into `<encoder>.npy`, then the rejects file, then the metadata (the commit).

    Refuses (ValueError, nothing published) chunks whose utterance ids are not exactly the manifest's,
    in order, or whose row counts differ from their accepted files."""
    encoder, n_chunks = job.encoder, -(-len(manifest) // batch_size)
    chunks = [_chunk_path(job.partial, k) for k in range(n_chunks)]
    accepted, reasons, ids, notes = [], [], [], []
    for path in chunks:  # the rows are read again, one chunk at a time, by _write_matrix
        with np.load(path, allow_pickle=False) as chunk:
            if len(chunk["rows"]) != int(chunk["accepted"].sum()):
                raise ValueError(f"{path}: {len(chunk['rows'])} rows for {int(chunk['accepted'].sum())} accepted "
                                 f"files; not publishing {encoder.name!r} (delete {job.partial} and extract again)")
            accepted += chunk["accepted"].tolist()
            reasons += chunk["reasons"].tolist()
            ids += chunk["ids"].tolist()
            notes += [json.loads(text) for text in chunk["notes"].tolist()]
    expected = [u.id for u in manifest]
    if ids != expected:
        i = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
        got = ids[i] if i < len(ids) else "nothing"
        raise ValueError(f"{job.partial}: row {i} of the chunks is {got!r}, the manifest's is "
                         f"{expected[i] if i < len(expected) else 'nothing'!r} ({len(ids)} rows for {len(expected)} "
                         f"utterances); not publishing {encoder.name!r} (delete {job.partial} and extract again)")
    rejects = [{"id": u.id, "path": u.path, "reason": r} for u, ok, r in zip(manifest, accepted, reasons) if not ok]
    if len(rejects) == len(manifest):
        raise ValueError(f"encoder {encoder.name!r}: every file of {corpus!r} was rejected, e.g. {rejects[0]}")
    npy = store / f"{encoder.name}.npy"
    _write_matrix(npy, chunks, sum(accepted), row_shape(encoder))
    cell = lambda text: " ".join(text.split())  # noqa: E731  (one line, no tabs)
    tsv = "id\tpath\treason\n" + "".join(f"{cell(r['id'])}\t{cell(r['path'])}\t{cell(r['reason'])}\n" for r in rejects)
    atomic_write(store / f"{encoder.name}.rejects.tsv", lambda f: f.write(tsv.encode()))
    encoder_metadata = job.encoder_metadata
    meta = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "corpus": corpus,
        "encoder": encoder.name,
        "encoder_metadata": encoder_metadata,
        "encoder_options": encoder_metadata["options"],
        "checkpoint_sha256": encoder_metadata["checkpoint_sha256"],
        "dim": encoder.dim,
        **({"layers": row_shape(encoder)[0]} if len(row_shape(encoder)) == 2 else {}),
        "sample_rate": encoder.sample_rate,
        "min_samples": encoder.min_samples,
        "batch_size": batch_size,
        "on_error": on_error,
        "manifest_sha256": manifest_sha256(manifest),
        "features_sha256": sha256_file(npy),
        "fingerprint": job.fingerprint,
        "ids": [u.id for u, ok in zip(manifest, accepted) if ok],
        "rejects": rejects,
        "audio_notes": {kind: {u.id: n[kind] for u, ok, n in zip(manifest, accepted, notes) if ok and kind in n}
                        for kind in NOTES},
    }
    write_json(store / f"{encoder.name}.json", meta)
    _remove_partial(job.partial)
    return EncoderSummary.from_metadata(meta, job.computed_files, job.reused_files)


def _remove_partial(partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    if partial.parent.is_dir() and not any(partial.parent.iterdir()):
        partial.parent.rmdir()


def _corpus_root(corpus: str, root: Path | None) -> Path:
    if corpus == "demo":
        return demo_corpus_root(root)
    if root is None:
        raise ValueError(f"corpus {corpus!r} needs --root (the folder holding its audio files)")
    return Path(root)


def extract(
    corpus: str,
    root: Path | None,
    encoders: Sequence[str | Encoder],
    out: Path,
    batch_size: int = 16,
    on_error: str = "raise",
    checkpoints: Mapping[str, Path] | None = None,
    progress: bool = True,
    devices: str | None = None,
    start_over: bool = False,
    name: str | None = None,
) -> ExtractSummary:
    """Embed every utterance of `corpus` under `root` with each encoder into the store `out/<name>/`.

    `name` (`corpora.corpus_name`): the store's corpus name, which tables and results folders show;
    default the corpus's own name, and for a CSV corpus the CSV file's stem (its folder's name for a
    ``manifest.csv``).

    `encoders`: registry names (built with `checkpoints[name]` where they need a folder) or built Encoder
    objects. `batch_size` utterances are loaded (once for all encoders) and embedded together. `on_error`:
    "raise" stops at the first bad file (AudioError naming it); "skip" leaves it out and lists it with its
    reason in `<encoder>.rejects.tsv`. An encoder whose finished store matches (same fingerprint and content
    hash) is not recomputed; an interrupted one resumes from its finished chunks. For corpus "demo" with no
    root, the demo corpus is generated in `demo_corpus/` first.

    One writer at a time: the store is locked (`parrot_jax.locks`) for the whole extraction, and a second
    extraction into it is refused at once (`locks.Locked`, naming the store and the holder). A store whose
    finished features were extracted from another manifest is refused (ValueError naming both) unless
    `start_over`, which empties it first.

    Devices and hosts (`parrot_jax.distributed`): `devices` (default `$PARROT_DEVICES`, else all) picks the
    devices; one runner (`parrot_jax.encoders.runner`) runs every encoder's program with each batch split
    over this host's chosen ones, and its compiled programs in the persistent compilation cache (the folder
    of an encoder's ``compilation_cache`` run option where it has one). Under several
    processes (jax.distributed) each host embeds its own contiguous share of the chunks into the shared
    `.partial/` folder (`out` must be on a filesystem every host sees); host 0 prepares the store first
    and alone assembles the matrices and metadata, so the store is written exactly as by one process.
    """
    from parrot_jax import distributed as dist

    if not encoders:
        raise ValueError("no encoders given: expected registry names such as mfcc-stats,logmel-stats")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = _corpus_root(corpus, root)  # generating the demo corpus is not part of the timing
    store_name = corpus_name(corpus, root, name)
    store = Path(out) / store_name
    with exclusive(store, "feature store") if dist.is_coordinator() else contextlib.nullcontext():
        return _extract(corpus, root, encoders, store, store_name, batch_size, on_error, checkpoints or {}, progress,
                        devices, start_over)  # fmt: skip


def _extract(
    corpus: str, root: Path, encoders: Sequence[str | Encoder], store: Path, store_name: str,
    batch_size: int, on_error: str, checkpoints: Mapping[str, Path], progress: bool, devices: str | None,
    start_over: bool,
) -> ExtractSummary:
    """`extract`'s work, under the store's lock (on host 0)."""
    from parrot_jax import distributed as dist
    from parrot_jax.encoders.runner import Runner

    start = time.perf_counter()
    manifest = load_manifest(corpus, root)
    audio_root = audio_folder(corpus, root)  # what the manifest's paths are relative to
    digest = manifest_sha256(manifest)
    built = [_build(e, checkpoints) for e in encoders]
    names = [e.name for e in built]
    for name in names:
        if not FILE_NAME.match(name):
            raise ValueError(f"encoder name {name!r} cannot name a file; expected letters, digits, '.', '_', '-'")
    if len(set(names)) != len(names):
        raise ValueError(f"encoders given twice: {names}")
    Runner.for_devices(devices).use(built)  # how every encoder's program runs: devices, sharding, cache
    if dist.is_coordinator():
        remove_temporaries(store)
        write_store_manifest(store, store_name, manifest, str(root), start_over)
    n_chunks = -(-len(manifest) // batch_size)
    chunk = lambda k: manifest[k * batch_size : (k + 1) * batch_size]  # noqa: E731
    if dist.is_coordinator():  # host 0 sets the partial folders up before the others read them
        summaries, jobs = _plan_jobs(built, store, store_name, manifest, digest, batch_size, on_error, n_chunks)
    dist.barrier(f"extract {store}: planned on host 0")
    if not dist.is_coordinator():
        summaries, jobs = _plan_jobs(built, store, store_name, manifest, digest, batch_size, on_error, n_chunks)
    dist.barrier(f"extract {store}: planned")

    mine = set(dist.host_rows(n_chunks))
    todo = sorted(set().union(*(job.todo for job in jobs)) & mine)
    processed = [u for k in todo for u in chunk(k)]
    from tqdm import tqdm

    with tqdm(total=len(processed), unit="file", desc=f"extract {store_name}", disable=not progress) as bar:
        for k in todo:
            needed = [job for job in jobs if k in job.todo]
            rates = {job.encoder.sample_rate for job in needed}
            read = {rate: _load_waves(chunk(k), audio_root, rate) for rate in rates}
            for job in needed:
                waves, notes = read[job.encoder.sample_rate]
                _embed_chunk(job, k, chunk(k), waves, notes, audio_root, on_error)
            bar.update(len(chunk(k)))
    dist.barrier(f"extract {store}: embedded")
    for job in jobs:
        if dist.is_coordinator():
            summaries[job.encoder.name] = _finish(job, store, store_name, manifest, batch_size, on_error)
    dist.barrier(f"extract {store}: finished")
    for job in jobs:
        if not dist.is_coordinator():
            meta = read_metadata(store, store_name, job.encoder.name)
            summaries[job.encoder.name] = EncoderSummary.from_metadata(meta, job.computed_files, job.reused_files)
    audio_seconds = sum(u.duration for u in processed if u.duration is not None)
    return ExtractSummary(store_name, len(manifest), len(processed), audio_seconds, time.perf_counter() - start,
                          [summaries[name] for name in names])  # fmt: skip


def _plan_jobs(
    built: Sequence[Encoder], store: Path, corpus: str, manifest: Sequence[Utterance], digest: str,
    batch_size: int, on_error: str, n_chunks: int,
) -> tuple[dict[str, EncoderSummary], list[_Job]]:
    """Summaries of the encoders already up to date, and a job (chunks to do) for each other one."""
    chunk = lambda k: manifest[k * batch_size : (k + 1) * batch_size]  # noqa: E731
    summaries: dict[str, EncoderSummary] = {}
    jobs: list[_Job] = []
    for encoder in built:
        encoder_metadata = encoder.metadata()
        identity = fingerprint(encoder_metadata, encoder.dim, encoder.sample_rate, encoder.min_samples, digest,
                               on_error)
        if _up_to_date(store, encoder.name, identity):
            _remove_partial(store / ".partial" / encoder.name)
            meta = read_metadata(store, corpus, encoder.name)
            summaries[encoder.name] = EncoderSummary.from_metadata(meta, 0, len(manifest))
            continue
        job = _start_job(store, encoder, encoder_metadata, identity, batch_size, n_chunks)
        job.reused_files = sum(len(chunk(k)) for k in range(n_chunks) if k not in job.todo)
        jobs.append(job)
    return summaries, jobs
