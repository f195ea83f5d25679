"""Grid configs: `GridConfig` (what a grid run does), config files as Python, command-line overrides.

A config file is a Python file defining ``get_config() -> GridConfig``. The package ships the paper's
(``paper``, the default), the demo's (``demo``) and ``emodb_classical`` in ``parrot_jax/configs/``;
`load_config` takes one of these names or the path of a file of your own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

TABLE1_METHODS = ("svm", "fcn", "cnn")
TABLE2_METHODS = ("concat", "parrot")
ABLATION_METHODS = ("hadamard", "ot")
CONFIGS = Path(__file__).resolve().parent / "configs"  # the packaged configs: paper.py, demo.py, ...
DEFAULT_CONFIG = CONFIGS / "paper.py"


@dataclass(frozen=True)
class GridConfig:
    """Everything a grid run needs; defaults are the paper's settings.

    run: results go to ``<results>/<run>/``.
    features: the feature store's root (``<features>/<corpus>/<encoder>.npy``).
    corpora / encoders: restrict to these (empty: every corpus / encoder with features present).
    protocol: "stratified" (the paper: stratified 5-fold), "speaker" (speaker-independent folds) or
        "emobox" (EmoBox's split files under ``splits``: their folds, their number; `splits.emobox_folds`).
    folds: k of the k-fold cross-validation (paper: 5); not used under "emobox".
    splits: EmoBox's split files: its data folder (``<splits>/<corpus>/fold_<k>/...``) or one corpus's
        folder (``<splits>/fold_<k>/...``). Only with protocol "emobox".
    allow_missing: under "emobox", leave out split rows the store lacks and store rows in no split
        (counted and listed in grid.json and each cell record) instead of refusing them.
    metrics: the metrics tables show, by name: wa (= acc, accuracy), ua (= uar), f1 (macro), micro_f1.
        Cell records hold all of them per run whatever is shown.
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
    splits: str = ""
    allow_missing: bool = False
    metrics: tuple[str, ...] = ("acc", "f1")
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
        from parrot_jax.report import metric_keys
        from parrot_jax.splits import ALL_PROTOCOLS

        if self.protocol not in ALL_PROTOCOLS:
            raise ValueError(f"GridConfig.protocol: expected one of {ALL_PROTOCOLS}, got {self.protocol!r}")
        if (self.protocol == "emobox") != bool(self.splits):
            raise ValueError("GridConfig: protocol 'emobox' needs the split files' folder (splits / --splits DIR), "
                             f"and splits is only read under it; got protocol={self.protocol!r}, splits={self.splits!r}")
        metric_keys(self.metrics)
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

    def splits_folder(self, corpus: str) -> Path:
        """The EmoBox split files of `corpus`: ``<splits>/<corpus>/`` where it exists, else ``<splits>/``."""
        per_corpus = Path(self.splits) / corpus
        return per_corpus if per_corpus.is_dir() else Path(self.splits)


# ----------------------------------------------------------------------------------------------------
# configs as code, with command-line overrides


def packaged_configs() -> list[str]:
    """Names of the configs shipped in the package (``parrot_jax/configs/<name>.py``)."""
    return sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem != "__init__")


def config_path(path: str | Path | None) -> Path:
    """The file of a config: an existing file, else a packaged config's name (None: the paper's)."""
    if path is None:
        return DEFAULT_CONFIG
    if Path(path).is_file():
        return Path(path)
    if str(path) in packaged_configs():
        return CONFIGS / f"{path}.py"
    raise FileNotFoundError(f"config file not found: {path} (expected a Python file with get_config(), or one "
                            f"of the packaged configs: {', '.join(packaged_configs())})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> tuple[GridConfig, dict]:
    """The `GridConfig` of a config file (a Python file defining ``get_config() -> GridConfig``, or the
    name of a packaged one: paper, demo, emodb_classical) with ``key=value`` overrides applied; and its
    provenance (file, its text, the overrides) to record."""
    path = config_path(path)
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
    ``model.dropout_rate=0.3`` for entries of the ``train`` / ``model`` dicts; tuples are comma-separated."""
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


def _check_fields(group: str, options: dict, kind: type, set_elsewhere: str) -> None:
    """Refuse keys of `options` (``config.train`` / ``config.model``) that are not fields of `kind`."""
    known = [f.name for f in dataclasses.fields(kind) if f.name != set_elsewhere]
    for key in options:
        if key not in known:
            raise ValueError(f"{group}.{key}: {kind.__name__} has no field {key!r}; known: {', '.join(known)}")


def train_config(config: GridConfig):
    """The `TrainConfig` of every neural cell: the paper's defaults, ``config.train``, ``config.seeds``."""
    from parrot_jax.training import TrainConfig

    _check_fields("train", config.train, TrainConfig, "seeds")
    return TrainConfig(**{**config.train, "seeds": tuple(config.seeds)})


def model_config(config: GridConfig, num_classes: int):
    """The `ModelConfig` of every neural cell: its defaults, ``config.model``, the corpus's class count."""
    from parrot_jax.models import ModelConfig

    _check_fields("model", config.model, ModelConfig, "num_classes")
    return ModelConfig.from_dict({**config.model, "num_classes": num_classes})
