"""The experiment grid: the paper's Table 1 and Table 2 as resumable cells.

A *cell* is one (corpus, table, method, encoders) combination:

- Table 1: every single encoder x SVM, FCN, CNN;
- Table 2: every Mamba-attention and attention-attention pair (the paper's order) x Concatenation,
  PARROT (and, with ``ablations``, the HP-only and OT-only branches). Where only classical features
  are present (the demo), they are paired with each other instead, standing in for the two encoders.

Each cell trains on all folds (and seeds) at once and writes ``<results>/<run>/cells/<cell>.json``
atomically (temporary file, then rename) when it finishes. Its *key* is a SHA-256 over what decides
its numbers: the cell, the split settings, the resolved train/model configs (or the SVM's settings),
and the content hashes of its feature files. A rerun skips a cell whose file holds the same key and
reruns it otherwise, so a kill at any moment loses only the cell in flight (with ``pack_cells`` > 1,
the pack of cells in flight).

Several processes (`jax.distributed`, one per host) run the same grid together: every process
computes every cell (its share of the devices), the coordinator (process 0) alone writes files
(cell records, activations, checkpoints, tables, figures, grid.json), and the others read the records
back after a barrier, so every process returns the same outcome. Which cells are done is process 0's
reading of the results folder, sent to the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import platform
import sys
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from parrot_jax.encoders import registry

TABLE1_METHODS = ("svm", "fcn", "cnn")
TABLE2_METHODS = ("concat", "parrot")
ABLATION_METHODS = ("hadamard", "ot")
NEURAL_METHODS = ("fcn", "cnn", "concat", "parrot", "hadamard", "ot")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "paper.py"


@dataclass(frozen=True)
class GridConfig:
    """Everything a grid run needs; defaults are the paper's settings.

    run: results go to ``<results>/<run>/``.
    features: the feature store's root (``<features>/<corpus>/<encoder>.npy``).
    corpora / encoders: restrict to these (empty: every corpus / encoder with features present).
    protocol: "stratified" (the paper: stratified 5-fold) or "speaker" (speaker-independent folds).
    folds: k of the k-fold cross-validation (paper: 5).
    split_seed: seed of the fold assignment (the same folds for every cell and training seed).
    val_fraction: share of each fold's training part held out for early stopping (paper: unstated).
    seeds: training seeds (initialisation, dropout, shuffling); every cell runs each seed on each fold.
    table1 / table2: the methods of each table. ablations: add "hadamard" and "ot" to Table 2.
    train / model: overrides of `TrainConfig` / `ModelConfig` fields (e.g. {"epochs": 5}).
    svm_standardize: z-score features (training rows' statistics) before the SVM.
    checkpoints: also save each neural cell's trained models with orbax (``models/<cell>/``).
    tsne_methods: neural methods whose penultimate activations are kept for t-SNE figures.
    figures: cells to draw confusion matrices and t-SNE maps for: cell names, or "best" (each
        corpus's Table 2 PARROT cell with the highest mean accuracy).
    pack_cells: train up to this many neural cells of one corpus, method and feature shapes as one
        program (`training.train_cells`: members cell x seed x fold), e.g. Table 2's A(B)+W, A(B)+H,
        A(B)+W2, A(B)+U. Results and cell files are those of the cells trained alone. 1 (default):
        each cell alone. Worth it where one cell's folds x seeds leave devices idle (5 members on 8
        GPUs, a TPU pod slice); on one device a bigger program is no faster per member (slower on CPU).
        A kill loses the whole pack in flight.
    """

    run: str = "paper"
    features: str = "features"
    results: str = "results"
    corpora: tuple[str, ...] = ()
    encoders: tuple[str, ...] = ()
    protocol: str = "stratified"
    folds: int = 5
    split_seed: int = 0
    val_fraction: float = 0.1
    seeds: tuple[int, ...] = (0,)
    table1: tuple[str, ...] = TABLE1_METHODS
    table2: tuple[str, ...] = TABLE2_METHODS
    ablations: bool = False
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    svm_standardize: bool = True
    checkpoints: bool = False
    tsne_methods: tuple[str, ...] = ("parrot",)
    figures: tuple[str, ...] = ("best",)
    pack_cells: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in ("stratified", "speaker"):
            raise ValueError(f"GridConfig.protocol: expected 'stratified' or 'speaker', got {self.protocol!r}")
        unknown = [m for m in self.table1 if m not in TABLE1_METHODS]
        unknown += [m for m in self.table2 if m not in TABLE2_METHODS + ABLATION_METHODS]
        if unknown:
            raise ValueError(f"GridConfig: unknown methods {unknown}; Table 1 takes {TABLE1_METHODS}, "
                             f"Table 2 takes {TABLE2_METHODS + ABLATION_METHODS}")
        if not self.seeds:
            raise ValueError("GridConfig.seeds: expected at least one seed")
        if "seeds" in self.train:
            raise ValueError("GridConfig.train: set the seeds with GridConfig.seeds, not train.seeds")
        if not (isinstance(self.pack_cells, int) and self.pack_cells >= 1):
            raise ValueError(f"GridConfig.pack_cells: expected an int >= 1, got {self.pack_cells!r}")

    @property
    def table2_methods(self) -> tuple[str, ...]:
        return self.table2 + tuple(m for m in ABLATION_METHODS if self.ablations and m not in self.table2)

    @property
    def run_dir(self) -> Path:
        return Path(self.results) / self.run


# ----------------------------------------------------------------------------------------------------
# configs as code, with command-line overrides


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> tuple[GridConfig, dict]:
    """The `GridConfig` of a config file (a Python file defining ``get_config() -> GridConfig``) with
    ``key=value`` overrides applied; and its provenance (file, its text, the overrides) to record."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (expected a Python file with get_config())")
    spec = importlib.util.spec_from_file_location(f"parrot_grid_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, GridConfig):
        raise TypeError(f"{path}: get_config() returned {type(config).__name__}, expected GridConfig")
    config = apply_overrides(config, overrides)
    return config, {"file": str(path), "source": path.read_text(), "overrides": list(overrides)}


def _parse_scalar(text: str) -> Any:
    """A JSON value (5, 0.1, true, null, "x"), else the text itself; 'none' means None."""
    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_field(name: str, kind: Any, text: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"override {name}={text!r}: expected true or false")
        return text.lower() in ("true", "1", "yes")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"override {name}={text!r}: expected {kind.__name__}") from None
    if origin is tuple:
        item = typing.get_args(kind)[0]
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return tuple(_parse_field(name, item, p) for p in parts)
    raise ValueError(f"override {name}: field of type {kind} cannot be set from the command line")


def apply_overrides(config: GridConfig, overrides: Sequence[str]) -> GridConfig:
    """Apply ``key=value`` strings: ``epochs=5`` style for fields, ``train.patience=none`` /
    ``model.dropout=0.3`` for entries of the ``train`` / ``model`` dicts; tuples are comma-separated."""
    hints = typing.get_type_hints(GridConfig)
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        head, dot, sub = key.strip().partition(".")
        if head not in hints:
            raise ValueError(f"override {item!r}: unknown key {head!r}; known: {', '.join(hints)}")
        if dot:
            if head not in ("train", "model"):
                raise ValueError(f"override {item!r}: only train.<field> and model.<field> take a dotted key")
            merged = dict(changes.get(head, getattr(config, head)))
            merged[sub] = _parse_scalar(text.strip())
            changes[head] = merged
        else:
            changes[head] = _parse_field(head, hints[head], text.strip())
    return dataclasses.replace(config, **changes)


def config_dict(config: GridConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


# ----------------------------------------------------------------------------------------------------
# cells


@dataclass(frozen=True)
class Cell:
    corpus: str
    table: int
    method: str
    encoders: tuple[str, ...]

    @property
    def name(self) -> str:
        """File-name-safe id, e.g. ``emodb__parrot__ssam-base+hubert-base``."""
        return f"{self.corpus}__{self.method}__{'+'.join(self.encoders)}"

    @property
    def abbrev(self) -> str:
        """The paper's row label: "A(B)+H", "W"; classical encoders: their registry abbreviation."""
        return "+".join(_abbrev(e) for e in self.encoders)

    def to_json(self) -> dict:
        return {"corpus": self.corpus, "table": self.table, "method": self.method,
                "encoders": list(self.encoders), "abbrev": self.abbrev, "name": self.name}


def _abbrev(encoder: str) -> str:
    return registry.ENCODERS[encoder].abbrev if encoder in registry.ENCODERS else encoder


def encoder_order(names: Sequence[str]) -> list[str]:
    """The registry's order (the paper's: A(T), A(S), A(B), W, H, W2, U, M; then classical ones)."""
    known = list(registry.ENCODERS)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def pairs_for(encoders: Sequence[str]) -> tuple[list[tuple[str, str]], str | None]:
    """Table 2's pairs of the present encoders, and a note where classical ones stand in.

    Mamba x attention pairs first (each Mamba model with every attention model), then the
    attention-attention pairs, in the registry's order. With no Mamba/attention encoder present,
    every pair of the classical ones instead."""
    ordered = encoder_order(encoders)
    family = {e: registry.ENCODERS[e].family if e in registry.ENCODERS else "other" for e in ordered}
    mamba = [e for e in ordered if family[e] == "mamba"]
    attention = [e for e in ordered if family[e] == "attention"]
    pairs = [(m, a) for m in mamba for a in attention] + list(itertools.combinations(attention, 2))
    if pairs or mamba or attention:
        return pairs, None
    classical = [e for e in ordered if family[e] == "classical"]
    note = (f"only classical features present ({', '.join(classical)}): Table 2 pairs them, standing in "
            "for the paper's Mamba and attention encoders")
    return list(itertools.combinations(classical, 2)), note


def plan_cells(config: GridConfig, available: dict[str, list[str]]) -> tuple[list[Cell], list[str]]:
    """Every cell of the grid over the present features, and notes to print."""
    notes, cells = [], []
    corpora = list(config.corpora) or sorted(available)
    for corpus in corpora:
        present = available.get(corpus, [])
        encoders = [e for e in present if not config.encoders or e in config.encoders]
        missing = [e for e in config.encoders if e not in present]
        if missing:
            notes.append(f"{corpus}: no features for {', '.join(missing)} (skipped)")
        if not encoders:
            notes.append(f"{corpus}: no features present under {config.features}/{corpus} (skipped)")
            continue
        encoders = encoder_order(encoders)
        cells += [Cell(corpus, 1, m, (e,)) for m in config.table1 for e in encoders]
        pairs, note = pairs_for(encoders)
        if note:
            notes.append(f"{corpus}: {note}")
        cells += [Cell(corpus, 2, m, pair) for pair in pairs for m in config.table2_methods]
    return cells, notes


def available_features(root: str | Path) -> dict[str, list[str]]:
    """{corpus: [encoder, ...]} of the feature files present under ``root/<corpus>/<encoder>.npy``."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found: dict[str, list[str]] = {}
    for npy in sorted(root.glob("*/*.npy")):
        if npy.with_suffix(".json").is_file():
            found.setdefault(npy.parent.name, []).append(npy.stem)
    return found


# ----------------------------------------------------------------------------------------------------
# the data of one corpus


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


def load_corpus(root: str | Path, corpus: str, encoders: Sequence[str]) -> CorpusData:
    """Read the corpus's feature sets; refuse sets whose utterances or labels disagree."""
    from parrot_jax.features import load_features

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
    return CorpusData(corpus, ids, labels, class_names, speakers, matrices, hashes, metadata)


# ----------------------------------------------------------------------------------------------------
# running cells


def train_config(config: GridConfig):
    """The `TrainConfig` of every neural cell: the paper's defaults, ``config.train``, ``config.seeds``."""
    from parrot_jax.training import TrainConfig

    return TrainConfig(**{**config.train, "seeds": tuple(config.seeds)})


def model_config(config: GridConfig, num_classes: int):
    """The `ModelConfig` of every neural cell: its defaults, ``config.model``, the corpus's class count."""
    from parrot_jax.predict import model_config_from_dict

    return model_config_from_dict({**config.model, "num_classes": num_classes})


def cell_folds(config: GridConfig, data: CorpusData):
    from parrot_jax.splits import make_folds

    if config.protocol == "speaker" and data.speakers is None:
        raise ValueError(f"corpus {data.corpus!r} has no speaker ids; use protocol=stratified")
    return make_folds(data.labels, data.speakers, config.protocol, config.folds, config.split_seed,
                      config.val_fraction)


def cell_settings(cell: Cell, config: GridConfig, num_classes: int) -> dict:
    """What decides a cell's numbers apart from its features (hashed into its key)."""
    settings = {"cell": cell.to_json(), "protocol": config.protocol, "folds": config.folds,
                "split_seed": config.split_seed, "val_fraction": config.val_fraction}
    if cell.method == "svm":
        settings["svm"] = {"standardize": config.svm_standardize}
    else:
        settings["train"] = asdict(train_config(config))
        settings["model"] = asdict(model_config(config, num_classes))
        settings["tsne"] = cell.method in config.tsne_methods
    return json.loads(json.dumps(settings))


def cell_key(cell: Cell, config: GridConfig, data: CorpusData) -> str:
    payload = {"settings": cell_settings(cell, config, len(data.class_names)), "features": {e: data.hashes[e] for e in cell.encoders}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("parrot_jax", "jax", "jaxlib", "flax", "optax", "ott-jax", "orbax-checkpoint", "numpy",
                    "scikit-learn"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


STATUSES = ("done", "new", "changed")


def cell_status(path: Path, key: str, need_checkpoint: Path | None) -> str:
    """'done' (same key, and the checkpoint where one is wanted), 'changed', or 'new'."""
    if not path.is_file():
        return "new"
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return "changed"
    if old.get("key") != key:
        return "changed"
    if need_checkpoint is not None and not (need_checkpoint / "model.json").is_file():
        return "changed"
    return "done"


def _epoch_bar(total: int, label: str, disable: bool = False) -> tuple[Any, Callable[[int, dict], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"  {label}", unit="epoch", leave=False, position=1, dynamic_ncols=True,
               disable=disable)

    def progress(epoch: int, stats: dict) -> None:
        active = np.asarray(stats["active"])
        bar.update(epoch - bar.n)
        bar.set_postfix(loss=f"{np.nanmean(stats['train_loss']):.3f}",
                        val_acc=f"{np.nanmean(stats['val_accuracy']):.3f}",
                        active=f"{int(active.sum())}/{active.size}")

    return bar, progress


def pack_groups(cells: Sequence[Cell], config: GridConfig, data: dict[str, CorpusData]) -> list[list[Cell]]:
    """The cells in groups that train as one program: neural cells of the same corpus (so the same
    labels, folds and model config), method and feature shapes, at most ``config.pack_cells`` per
    group, in the order of their first cell; every SVM cell alone."""
    groups: dict[tuple, list[list[Cell]]] = {}
    for i, cell in enumerate(cells):
        shapes = tuple(data[cell.corpus].matrices[e].shape for e in cell.encoders)
        key = ("alone", i) if cell.method == "svm" else (cell.corpus, cell.method, shapes)
        packs = groups.setdefault(key, [[]])
        if len(packs[-1]) == config.pack_cells:
            packs.append([])
        packs[-1].append(cell)
    return sorted((pack for packs in groups.values() for pack in packs), key=lambda pack: cells.index(pack[0]))


def run_cells(cells: Sequence[Cell], config: GridConfig, data: CorpusData, folds, provenance: dict,
              keys: dict[str, str]) -> list[dict]:
    """Train/evaluate one group of `pack_groups` (one program); on the coordinator, write each cell's
    activations / checkpoint; return the cells' JSON records."""
    from parrot_jax import distributed as dist

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    method = cells[0].method
    cell_features = [[data.matrices[e] for e in cell.encoders] for cell in cells]
    writer = dist.is_coordinator()
    if method == "svm":
        from parrot_jax.svm import svm_cell

        results = [svm_cell(features, data.labels, folds, standardize=config.svm_standardize)
                   for features in cell_features]
    else:
        from parrot_jax.training import train_cells

        tc, mc = train_config(config), model_config(config, len(data.class_names))
        names = ", ".join(cell.name for cell in cells)
        bar, progress = _epoch_bar(tc.epochs, f"{names} (epochs)", disable=not writer)
        try:
            results = train_cells(method, mc, cell_features, data.labels, folds, tc, progress)
        finally:
            bar.close()
    records = []
    for cell, features, result in zip(cells, cell_features, results):
        artifacts = _write_artifacts(cell, config, data, folds, features, result, keys[cell.name]) if writer else {}
        runs = result.runs
        records.append({
            "cell": cell.to_json(),
            "key": keys[cell.name],
            "settings": cell_settings(cell, config, len(data.class_names)),
            "feature_hashes": {e: data.hashes[e] for e in cell.encoders},
            "config": config_dict(config),
            "provenance": provenance,
            "class_names": list(data.class_names),
            "metrics": {m: [float(getattr(r, m)) for r in runs] for m in ("accuracy", "macro_f1", "uar")},
            "confusion": np.sum([r.confusion for r in runs], axis=0).tolist(),
            "result": result.to_json(),
            "artifacts": artifacts,
            "timings": {"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "train_seconds": result.seconds, "total_seconds": time.perf_counter() - t0,
                        "packed_with": [c.name for c in cells if c != cell]},
            "versions": versions(),
        })
    return records


def _write_artifacts(cell: Cell, config: GridConfig, data: CorpusData, folds, features: list[np.ndarray],
                     result, key: str) -> dict[str, str | None]:
    """Write a neural cell's penultimate activations (for t-SNE) and checkpoint where the config asks."""
    artifacts: dict[str, str | None] = {"penultimate": None, "checkpoint": None}
    if cell.method == "svm":
        return artifacts
    from parrot_jax import predict

    tc, mc = train_config(config), model_config(config, len(data.class_names))
    if cell.method in config.tsne_methods:
        acts = predict.test_activations(result, mc, features, folds, tc.eval_batch_size)
        path = config.run_dir / "cells" / f"{cell.name}.penultimate.npz"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, activations=acts, labels=data.labels)
        os.replace(tmp, path)
        artifacts["penultimate"] = path.name
    if config.checkpoints:
        target = config.run_dir / "models" / cell.name
        info = {"corpus": cell.corpus, "cell": cell.name, "trained_on": "folds", "key": key}
        predict.save_model(target, predict.from_cell(result, mc, cell.encoders, data.metadata, data.class_names,
                                                     tc.eval_batch_size, info))
        artifacts["checkpoint"] = str(Path("models") / cell.name)
    return artifacts


@dataclass
class GridOutcome:
    cells: list[Cell]
    status: dict[str, str]  # cell name -> "done" (skipped) / "new" / "changed" (as found before running)
    records: dict[str, dict]  # cell name -> its JSON record (after the run)
    tables: dict[int, str]  # table number -> Markdown
    seconds: float


def run_grid(config: GridConfig, provenance: dict | None = None, dry_run: bool = False,
             echo: Callable[[str], None] = print) -> GridOutcome:
    """Plan the grid, run every cell not already done, then write the tables and figures.

    Under several processes every process calls it; only the coordinator writes and prints."""
    from tqdm.auto import tqdm

    from parrot_jax import distributed as dist
    from parrot_jax import report

    t0 = time.perf_counter()
    writer = dist.is_coordinator()
    echo = echo if writer else (lambda _: None)
    provenance = provenance or {}
    cells, notes = plan_cells(config, available_features(config.features))
    for note in notes:
        echo(note)
    if not cells:
        raise FileNotFoundError(f"no features to run under {config.features}/ (run `parrot extract` first)")
    cells_dir = config.run_dir / "cells"
    data = {c: load_corpus(config.features, c, sorted({e for x in cells if x.corpus == c for e in x.encoders}))
            for c in dict.fromkeys(x.corpus for x in cells)}
    keys = {cell.name: cell_key(cell, config, data[cell.corpus]) for cell in cells}
    found = [
        STATUSES.index(cell_status(cells_dir / f"{cell.name}.json", keys[cell.name],
                                   config.run_dir / "models" / cell.name
                                   if config.checkpoints and cell.method != "svm" else None))
        for cell in cells
    ]
    # every process runs the cells process 0 found missing (a file may appear while others look)
    status = {cell.name: STATUSES[i] for cell, i in zip(cells, dist.from_coordinator(np.array(found, np.int32)))}
    if dry_run:
        echo(f"{len(cells)} cells in {config.run_dir} ({sum(s == 'done' for s in status.values())} done):")
        for cell in cells:
            echo(f"  [{status[cell.name]:>7}] {cell.corpus:<8} table {cell.table}  {cell.method:<8} {cell.abbrev}")
        return GridOutcome(cells, status, {}, {}, time.perf_counter() - t0)

    if writer:
        cells_dir.mkdir(parents=True, exist_ok=True)
        for stale in cells_dir.glob(".*.tmp-*"):  # left by a killed run: never a finished cell
            stale.unlink()
    todo = [c for c in cells if status[c.name] != "done"]
    groups = pack_groups(todo, config, data)
    packed = f" as {len(groups)} program(s) (pack_cells={config.pack_cells})" if len(groups) < len(todo) else ""
    echo(f"{len(cells)} cells: {len(cells) - len(todo)} done and unchanged (skipped), {len(todo)} to run{packed}")
    folds = {}
    with tqdm(total=len(todo), desc="cells", unit="cell", position=0, dynamic_ncols=True, disable=not writer) as bar:
        for group in groups:
            bar.set_postfix_str(", ".join(c.name for c in group))
            corpus = group[0].corpus
            if corpus not in folds:
                folds[corpus] = cell_folds(config, data[corpus])
            records = run_cells(group, config, data[corpus], folds[corpus], provenance, keys)
            if writer:
                for cell, record in zip(group, records):
                    write_json_atomic(cells_dir / f"{cell.name}.json", record)
            bar.update(len(group))
    dist.barrier("parrot-grid-cells-written")
    records = {c.name: json.loads((cells_dir / f"{c.name}.json").read_text()) for c in cells}
    seconds = time.perf_counter() - t0
    if writer:
        cell_records = [report.CellRecord.from_json(records[c.name]) for c in cells]
        row_order = list(dict.fromkeys(c.abbrev for c in cells))
        report.write_tables(cell_records, config.run_dir, row_order)
        draw_figures(config, cells, records, echo)
        write_json_atomic(config.run_dir / "grid.json", {
            "config": config_dict(config), "provenance": provenance, "notes": notes,
            "cells": {c.name: {"status_before": status[c.name], "key": keys[c.name]} for c in cells},
            "seconds": seconds, "versions": versions(),
        })
    dist.barrier("parrot-grid-tables-written")
    tables = {t: (config.run_dir / f"table{t}.md").read_text() for t in sorted({c.table for c in cells})}
    return GridOutcome(cells, status, records, tables, seconds)


def figure_cells(config: GridConfig, cells: Sequence[Cell], records: dict[str, dict]) -> list[Cell]:
    """The cells named in ``config.figures``; "best": each corpus's best Table 2 PARROT cell."""
    chosen = []
    for wanted in config.figures:
        if wanted == "best":
            for corpus in dict.fromkeys(c.corpus for c in cells):
                candidates = [c for c in cells if c.corpus == corpus and c.table == 2 and c.method == "parrot"]
                if candidates:
                    chosen.append(max(candidates, key=lambda c: np.mean(records[c.name]["metrics"]["accuracy"])))
        else:
            match = [c for c in cells if c.name == wanted]
            if not match:
                raise ValueError(f"figures: no cell named {wanted!r} in this grid; names look like "
                                 f"{cells[0].name!r}")
            chosen += match
    return list(dict.fromkeys(chosen))


def draw_figures(config: GridConfig, cells: Sequence[Cell], records: dict[str, dict],
                 echo: Callable[[str], None] = print) -> list[Path]:
    """confusion_<cell>.png for each figure cell, and tsne_<cell>.png where activations were kept."""
    from parrot_jax import report

    written = []
    for cell in figure_cells(config, cells, records):
        record = records[cell.name]
        title = f"{cell.corpus}: {cell.method} {cell.abbrev}"
        path = config.run_dir / f"confusion_{cell.name}.png"
        report.plot_confusion(np.asarray(record["confusion"]), record["class_names"], title, path)
        written.append(path)
        acts = record["artifacts"].get("penultimate")
        if acts:
            with np.load(config.run_dir / "cells" / acts) as saved:
                activations, labels = saved["activations"], saved["labels"]
            points = report.tsne_embedding(activations, seed=config.split_seed)
            path = config.run_dir / f"tsne_{cell.name}.png"
            report.plot_tsne(points, labels, record["class_names"], f"{title} (penultimate layer)", path)
            written.append(path)
        else:
            echo(f"figures: {cell.name} kept no penultimate activations (tsne_methods={config.tsne_methods})")
    return written



# ----------------------------------------------------------------------------------------------------
# command line (`parrot grid` and experiments/run_grid.py)

SHORTHANDS = {  # flag -> the config key it sets
    "run": "run", "features": "features", "results": "results", "corpora": "corpora", "encoders": "encoders",
    "protocol": "protocol", "seeds": "seeds", "folds": "folds", "epochs": "train.epochs",
}  # fmt: skip


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"a Python config file with get_config() (default: {DEFAULT_CONFIG.name}, the paper's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (train.<field>, model.<field> for the trainer/model)")
    for flag, key in SHORTHANDS.items():
        parser.add_argument(f"--{flag}", default=None, help=f"shorthand for --set {key}=...")
    parser.add_argument("--ablations", action="store_true", help="also run HP-only and OT-only (Table 2)")
    parser.add_argument("--checkpoints", action="store_true", help="save each neural cell's models (orbax)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")


def overrides_from(args) -> list[str]:
    out = list(args.set)
    out += [f"{key}={getattr(args, flag)}" for flag, key in SHORTHANDS.items() if getattr(args, flag) is not None]
    out += ["ablations=true"] if args.ablations else []
    out += ["checkpoints=true"] if args.checkpoints else []
    return out


def command(args) -> int:
    """Run the grid the arguments describe; print the tables (on the coordinator)."""
    from parrot_jax import distributed as dist

    dist.initialize_multihost()  # a no-op unless launched as several processes (or already joined)
    from parrot_jax.training import enable_compilation_cache

    enable_compilation_cache()
    overrides = overrides_from(args)
    config, provenance = load_config(args.config, overrides)
    provenance["argv"] = sys.argv
    outcome = run_grid(config, provenance, dry_run=args.dry_run)
    if not args.dry_run and dist.is_coordinator():
        for table, text in outcome.tables.items():
            print(f"\n## Table {table} ({config.protocol} {config.folds}-fold, {len(config.seeds)} seed(s))\n")
            print(text)
        print(f"results in {config.run_dir}/ ({outcome.seconds:.1f} s)")
    return 0
