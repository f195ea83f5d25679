"""Grid configs: `GridConfig` (what a grid run does), config files as Python, command-line overrides.

A `GridConfig` is a tree of typed, frozen dataclasses: its own fields, ``train`` (a `TrainConfig`) and
``model`` (a `ModelConfig`, with ``model.sinkhorn`` a `SinkhornOptions`). An override
``key.sub.field=value`` sets one leaf of any depth from text (`parrot_jax.text_values`), and is
refused when read, in one line naming the key and what it accepts.

A config file is a Python file defining ``get_config() -> GridConfig``. The package ships the paper's
(``paper``, the default), the demo's (``demo``), ``emodb_classical`` and ``beyond`` (SSAM x Whisper beside
the paper's pairs) in ``parrot_jax/configs/``;
`load_config` takes one of these names or the path of a file of your own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from parrot_jax.models import ModelConfig
from parrot_jax.text_values import field_names, field_value
from parrot_jax.training import TrainConfig

TABLE1_METHODS = ("svm", "fcn", "cnn")
TABLE2_METHODS = ("concat", "parrot")
ABLATION_METHODS = ("hadamard", "ot")
CONFIGS = Path(__file__).resolve().parent / "configs"  # the packaged configs: paper.py, demo.py, ...
DEFAULT_CONFIG = CONFIGS / "paper.py"
SEED_LIMIT = 2**32  # seeds and split_seed lie in [0, SEED_LIMIT): what NumPy and scikit-learn take
MODEL_CLASSES_PLACEHOLDER = 2  # GridConfig.model.num_classes: replaced by each corpus's class count
DERIVED = {  # keys a grid sets itself, and from what
    "train.seeds": "set the training seeds with seeds=...",
    "model.num_classes": "it is each corpus's number of classes",
}


def _from_fields(cls: type, fields: Mapping[str, Any], key: str) -> Any:
    """`cls(**fields)`, unknown field names refused naming `key` and the known ones."""
    unknown = sorted(set(fields) - set(field_names(cls)))
    if unknown:
        raise ValueError(f"GridConfig.{key}: unknown fields {unknown}; known: {', '.join(field_names(cls))}")
    if cls is ModelConfig:
        return ModelConfig.from_dict(fields)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


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
    split_match: under "emobox", what matches a store row to a split file's row: "name" (its file name),
        "speaker_name" (``<speaker>_<file name>``, e.g. SAVEE's ``AudioData/DC/a01.wav`` as ``DC_a01``), or
        "key" (a CSV corpus's ``key`` column against each split line's ``key`` field, e.g. ``savee-DC_a01``).
    split_seed: seed of the fold assignment (the same folds for every cell and training seed).
    val_policy: how each fold's validation part (early stopping) is taken from its training part
        (`splits.VAL_POLICIES`): "speaker", "stratified", "valid" (the split files' own), "none" (no early
        stopping), or "auto" (default: never more than a quarter of a training part's rows, nor a whole
        speaker of fewer than 4; none at all when ``train.monitor`` is "none"; README "Validation"). The
        run prints, per corpus, what it took.
    val_fraction: share of each fold's training part (rows, or speakers) that "speaker" / "stratified"
        hold out for early stopping (paper: unstated); 0: no validation.
    seeds: training seeds (initialisation, dropout, shuffling); every cell runs each seed on each fold.
    table1 / table2: the methods of each table. ablations: add "hadamard" and "ot" to Table 2.
    train: how every neural cell trains (`TrainConfig`; its ``seeds`` come from ``seeds``).
    model: every neural cell's model (`ModelConfig`; its ``num_classes`` comes from each corpus's labels).
        A config file may give either as a dict of fields (e.g. ``train={"epochs": 5}``).
    svm_standardize: z-score features (training rows' statistics) before the SVM.
    checkpoints: also save each neural cell's trained models with orbax (``models/<cell>/``).
    tsne_methods: neural methods whose penultimate activations are kept for t-SNE figures.
    figures: cells to draw confusion matrices and t-SNE maps for: cell names, or "best" (each
        corpus's Table 2 PARROT cell with the highest mean accuracy).
    pack_cells: train up to this many neural cells of one corpus, method and feature shapes as one
        program (`training.train_cells`: members cell x seed x fold), e.g. Table 2's A(B)+W, A(B)+H,
        A(B)+W2, A(B)+U. Results and cell files are those of the cells trained alone. "auto" (default):
        as many as fit half the accelerator's free memory (`training.pack_size`), and 1 (each cell
        alone) on CPU, where a bigger program measured slower per member. A kill loses the pack in flight.
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
    split_match: Literal["name", "speaker_name", "key"] = "name"
    split_seed: int = 0
    val_policy: Literal["auto", "speaker", "stratified", "valid", "none"] = "auto"
    val_fraction: float = 0.1
    seeds: tuple[int, ...] = (0,)
    table1: tuple[str, ...] = TABLE1_METHODS
    table2: tuple[str, ...] = TABLE2_METHODS
    ablations: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(num_classes=MODEL_CLASSES_PLACEHOLDER))
    svm_standardize: bool = True
    checkpoints: bool = False
    tsne_methods: tuple[str, ...] = ("parrot",)
    figures: tuple[str, ...] = ("best",)
    pack_cells: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.train, Mapping):
            object.__setattr__(self, "train", _from_fields(TrainConfig, self.train, "train"))
        if isinstance(self.model, Mapping):
            fields = {"num_classes": MODEL_CLASSES_PLACEHOLDER, **self.model}
            object.__setattr__(self, "model", _from_fields(ModelConfig, fields, "model"))
        if not isinstance(self.train, TrainConfig) or not isinstance(self.model, ModelConfig):
            raise TypeError(f"GridConfig: train must be a TrainConfig and model a ModelConfig (or dicts of their "
                            f"fields), got {type(self.train).__name__} and {type(self.model).__name__}")
        from parrot_jax.metrics import metric_keys
        from parrot_jax.splits import ALL_PROTOCOLS, SPLIT_MATCHES, VAL_POLICIES

        if self.protocol not in ALL_PROTOCOLS:
            raise ValueError(f"GridConfig.protocol: expected one of {ALL_PROTOCOLS}, got {self.protocol!r}")
        if (self.protocol == "emobox") != bool(self.splits):
            raise ValueError("GridConfig: protocol 'emobox' needs the split files' folder (splits / --splits DIR), "
                             f"and splits is only read under it; got protocol={self.protocol!r}, splits={self.splits!r}")
        if self.val_policy not in VAL_POLICIES:
            raise ValueError(f"GridConfig.val_policy: expected one of {VAL_POLICIES}, got {self.val_policy!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"GridConfig.val_fraction: expected a number in [0, 1), got {self.val_fraction!r}")
        if self.train.monitor == "none" and self.val_policy not in ("auto", "none"):
            raise ValueError(f"GridConfig: val_policy {self.val_policy!r} holds out validation rows that "
                             "train.monitor='none' (no early stopping) never uses; set val_policy=auto or none, or a "
                             "monitor (train.monitor=loss, accuracy or uar)")
        if self.split_match not in SPLIT_MATCHES:
            raise ValueError(f"GridConfig.split_match: expected one of {SPLIT_MATCHES}, got {self.split_match!r}")
        metric_keys(self.metrics)
        unknown = [m for m in self.table1 if m not in TABLE1_METHODS]
        unknown += [m for m in self.table2 if m not in TABLE2_METHODS + ABLATION_METHODS]
        if unknown:
            raise ValueError(f"GridConfig: unknown methods {unknown}; Table 1 takes {TABLE1_METHODS}, "
                             f"Table 2 takes {TABLE2_METHODS + ABLATION_METHODS}")
        if not self.seeds:
            raise ValueError("GridConfig.seeds: expected at least one seed")
        for name, values in (("seeds", self.seeds), ("split_seed", (self.split_seed,))):
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < SEED_LIMIT]
            if bad:
                raise ValueError(f"GridConfig.{name}: expected ints in [0, 2**32), got {', '.join(map(repr, bad))}")
        if self.train.seeds != TrainConfig().seeds:
            raise ValueError("GridConfig.train: set the seeds with GridConfig.seeds, not train.seeds")
        if self.pack_cells != "auto" and not (isinstance(self.pack_cells, int) and self.pack_cells >= 1):
            raise ValueError(f"GridConfig.pack_cells: expected an int >= 1 or 'auto', got {self.pack_cells!r}")

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
    name of a packaged one: paper, beyond, demo, emodb_classical) with ``key=value`` overrides applied; and its
    provenance (file, its text, the overrides) to record."""
    path = config_path(path)
    config = _run_config_file(path)
    try:
        config = apply_overrides(config, overrides)
    except ValueError as error:
        raise ValueError(f"config file {path}: {error}") from None
    return config, {"file": str(path), "source": path.read_text(), "overrides": list(overrides)}


def _run_config_file(path: Path) -> GridConfig:
    """``get_config()`` of the config file `path` (see `_user_code` for what its failures become)."""
    spec = importlib.util.spec_from_file_location(f"parrot_grid_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    with _user_code(path, "while importing it"):
        spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        raise ValueError(f"config file {path} defines no get_config()")
    if not callable(get_config):
        raise ValueError(f"config file {path}: get_config is {get_config!r:.40}, not a function")
    with _user_code(path, "in get_config()"):
        config = get_config()
    if not isinstance(config, GridConfig):
        raise ValueError(f"config file {path}: get_config() returned {type(config).__name__}, expected GridConfig")
    return config


@contextmanager
def _user_code(path: Path, where: str) -> Iterator[None]:
    """Run a config file's code: whatever goes wrong (an error it raises, a recursion, ``sys.exit``) is one
    ValueError naming the file and `where`."""
    try:
        yield
    except SystemExit as stop:
        raise ValueError(f"config file {path}: sys.exit({stop.code!r}) called {where}") from None
    except Exception as error:
        raise ValueError(f"config file {path}: {type(error).__name__} {where}: {error}") from None


def apply_overrides(config: GridConfig, overrides: Sequence[str]) -> GridConfig:
    """Apply ``key=value`` strings, in order: ``folds=4``, ``seeds=0,1`` (tuples comma-separated),
    ``train.patience=none``, ``model.sinkhorn.epsilon=0.1`` (dotted keys of any depth). A ValueError in
    one line names the override, the key and what it accepts.

    ``train`` / ``model`` check each value as it is set; GridConfig's own checks, some of which tie its
    fields together (``protocol=emobox`` needs ``splits``), run once on the result, so the order of the
    overrides does not matter."""
    changed: dict[str, Any] = {}  # GridConfig field -> its new value
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        try:
            if not sep or not key:
                raise ValueError("expected key=value")
            if key in DERIVED:
                raise ValueError(f"{key} cannot be set: {DERIVED[key]}")
            path = key.split(".")
            changed[path[0]] = field_value(GridConfig, path, text, changed.get(path[0], getattr(config, path[0], None)))
        except ValueError as error:
            raise ValueError(f"override {item!r}: {error}") from None
    try:
        return dataclasses.replace(config, **changed)
    except (ValueError, TypeError) as error:
        raise ValueError(f"overrides {', '.join(map(repr, overrides))}: {error}") from None


def config_dict(config: GridConfig) -> dict:
    """The config as JSON, settings the run does not use as None: ``folds`` under "emobox" (the split files
    give the folds), ``split_match`` outside it."""
    unused = {"folds": None} if config.protocol == "emobox" else {"split_match": None}
    return json.loads(json.dumps({**asdict(config), **unused}))


def train_config(config: GridConfig) -> TrainConfig:
    """The `TrainConfig` of every neural cell: ``config.train`` with ``config.seeds``."""
    return dataclasses.replace(config.train, seeds=tuple(config.seeds))


def val_policy(config: GridConfig) -> str:
    """The validation policy the grid carves with: ``config.val_policy``, but "none" for "auto" when
    ``train.monitor`` is "none" (no early stopping: no row is held out for it)."""
    return "none" if config.val_policy == "auto" and config.train.monitor == "none" else config.val_policy


def model_config(config: GridConfig, num_classes: int) -> ModelConfig:
    """The `ModelConfig` of every neural cell: ``config.model`` with the corpus's class count."""
    return dataclasses.replace(config.model, num_classes=num_classes)
