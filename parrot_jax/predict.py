"""Trained models: orbax checkpoints, penultimate activations, and emotions of new recordings.

A saved model (a folder) holds one or more *members* (the (seed, fold) models of a grid cell, or the
one model trained on a corpus by `train_on_corpus`) with their feature standardisers:

- ``state/``: the orbax checkpoint of ``{"params": stacked params [M, ...], "mean": [...], "scale": [...]}``;
- ``model.json``: the model kind and config, the encoders and the store metadata of their features
  (settings, checkpoint hashes), the class names, and where the model came from. Written last: a folder
  without it is not a saved model.

A new recording's class probabilities are the mean over members of softmax(logits): p = (1/M) sum_m
softmax(f_m(z_m(x))), x the recording's features extracted with the same encoders and settings.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from parrot_jax.encoders import registry
from parrot_jax.models import ModelConfig, build_model, penultimate_features
from parrot_jax.ot import SinkhornOptions
from parrot_jax.splits import Fold, make_folds
from parrot_jax.training import CellResult, Standardizer, TrainConfig, predict_logits, train_cell

PyTree = Any


@dataclass
class SavedModel:
    """A trained model with everything needed to run it on new recordings."""

    kind: str
    model_config: ModelConfig
    encoders: tuple[str, ...]
    feature_metadata: dict[str, dict]  # encoder -> the store's metadata of the training features
    class_names: tuple[str, ...]
    params: PyTree  # stacked over members [M, ...]
    standardizer: Standardizer | None  # stacked over members [M, D_i]
    eval_batch_size: int = 32
    info: dict = field(default_factory=dict)

    @property
    def members(self) -> int:
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    def member(self, m: int) -> tuple[PyTree, Standardizer | None]:
        params = jax.tree_util.tree_map(lambda a: np.asarray(a[m]), self.params)
        if self.standardizer is None:
            return params, None
        return params, Standardizer(tuple(a[m] for a in self.standardizer.mean),
                                    tuple(a[m] for a in self.standardizer.scale))

    def probabilities(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [N, C]: the members' mean softmax on rows of the encoders' features."""
        for name, x in zip(self.encoders, features):
            want = self.feature_metadata[name]["dim"]
            if x.ndim != 2 or x.shape[1] != want:
                raise ValueError(f"features of {name}: expected [N, {want}], got {list(x.shape)}")
        probs = []
        for m in range(self.members):
            params, stats = self.member(m)
            logits = predict_logits(self.kind, self.model_config, params, features, stats, self.eval_batch_size)
            probs.append(jax.nn.softmax(logits, axis=-1))
        return np.asarray(np.mean(probs, axis=0), np.float32)


def from_cell(result: CellResult, model_config: ModelConfig, encoders: Sequence[str],
              feature_metadata: Mapping[str, dict], class_names: Sequence[str], eval_batch_size: int = 32,
              info: dict | None = None) -> SavedModel:
    """Every (seed, fold) member of a trained neural cell as one saved-model ensemble."""
    if result.params is None:
        raise ValueError(f"a {result.kind} cell holds no trained params to save")
    return SavedModel(result.kind, model_config, tuple(encoders), {e: _slim(feature_metadata[e]) for e in encoders},
                      tuple(class_names), jax.device_get(result.params), result.standardizer, eval_batch_size,
                      info or {})


def save_model(path: str | Path, model: SavedModel) -> Path:
    """Write `model` to the folder `path` (replacing what is there); model.json last. Only the calling
    process writes, and it waits for no other (under several processes, call it on one)."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    tree = {"params": model.params}
    if model.standardizer is not None:
        tree["mean"] = list(model.standardizer.mean)
        tree["scale"] = list(model.standardizer.scale)
    # written by this process alone (under jax.distributed the grid saves on host 0 only): no barrier
    alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})
    handler = ocp.PyTreeCheckpointHandler(multiprocessing_options=alone)
    ocp.Checkpointer(handler, multiprocessing_options=alone).save(path / "state", tree)
    meta = {
        "kind": model.kind,
        "model_config": asdict(model.model_config),
        "encoders": list(model.encoders),
        "feature_metadata": model.feature_metadata,
        "class_names": list(model.class_names),
        "eval_batch_size": model.eval_batch_size,
        "standardized": model.standardizer is not None,
        "info": model.info,
    }
    tmp = path / f".model.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path / "model.json")
    return path


def _slim(metadata: dict) -> dict:
    """The store metadata without its per-row lists (ids, rejects)."""
    return {k: v for k, v in metadata.items() if k not in ("ids", "rejects")}


def load_model(path: str | Path) -> SavedModel:
    """Read a folder written by `save_model`."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"{path} holds no saved model (model.json missing)")
    meta = json.loads((path / "model.json").read_text())
    tree = ocp.PyTreeCheckpointer().restore(path / "state")
    stats = Standardizer(tuple(tree["mean"]), tuple(tree["scale"])) if meta["standardized"] else None
    return SavedModel(
        kind=meta["kind"],
        model_config=model_config_from_dict(meta["model_config"]),
        encoders=tuple(meta["encoders"]),
        feature_metadata=meta["feature_metadata"],
        class_names=tuple(meta["class_names"]),
        params=tree["params"],
        standardizer=stats,
        eval_batch_size=meta["eval_batch_size"],
        info=meta["info"],
    )


def model_config_from_dict(options: Mapping[str, Any]) -> ModelConfig:
    """A `ModelConfig` from its JSON form (lists back to tuples, ``sinkhorn`` a dict of its options)."""
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    if isinstance(options.get("sinkhorn"), Mapping):
        options["sinkhorn"] = SinkhornOptions(**options["sinkhorn"])
    return ModelConfig(**options)


# ----------------------------------------------------------------------------------------------------
# penultimate activations (the paper's Figure 2)


def penultimate(kind: str, model_config: ModelConfig, params: PyTree, features: Sequence[np.ndarray],
                standardizer: Standardizer | None, eval_batch_size: int = 32) -> np.ndarray:
    """float32 [N, H]: the input of the model's last Dense (`models.penultimate_features`), rows
    evaluated in the given order `eval_batch_size` at a time (padded, masked), as the trainer does."""
    if standardizer is not None:
        features = standardizer.apply(features)
    module = build_model(kind, model_config)
    apply = jax.jit(lambda p, inputs, mask: penultimate_features(module, p, inputs, mask))
    n = len(features[0])
    batches = -(-n // eval_batch_size)
    idx = np.zeros(batches * eval_batch_size, np.int64)
    idx[:n] = np.arange(n)
    mask = np.arange(batches * eval_batch_size) < n
    xs = [np.asarray(x, np.float32) for x in features]
    out = [np.asarray(apply(params, tuple(x[i] for x in xs), m))
           for i, m in zip(idx.reshape(batches, -1), mask.reshape(batches, -1))]
    return np.concatenate(out)[:n].astype(np.float32)


def test_activations(result: CellResult, model_config: ModelConfig, features: Sequence[np.ndarray],
                     folds: Sequence[Fold], eval_batch_size: int = 32) -> np.ndarray:
    """[N, H] penultimate activations of every row, each taken from the first seed's model of the fold
    that tests it (every row is tested exactly once per seed)."""
    seed = result.seeds[0]
    out = None
    for f, fold in enumerate(folds):
        params, stats = result.member(seed, f)
        rows = np.sort(fold.test)
        acts = penultimate(result.kind, model_config, params, [x[rows] for x in features], stats, eval_batch_size)
        if out is None:
            out = np.full((len(features[0]), acts.shape[1]), np.nan, np.float32)
        out[rows] = acts
    if np.isnan(out).any():
        raise ValueError("folds do not test every row: cannot build test activations for all rows")
    return out


# ----------------------------------------------------------------------------------------------------
# training on a corpus, predicting new files


def train_on_corpus(features_root: str | Path, corpus: str, kind: str, encoders: Sequence[str],
                    train_config: TrainConfig = TrainConfig(), model_options: Mapping[str, Any] | None = None,
                    holdout: float = 0.1, val_fraction: float = 0.1, seed: int = 0) -> tuple[SavedModel, dict]:
    """Train `kind` on a corpus's stored features; return the model and its held-out scores.

    A stratified `holdout` share of the rows is kept out of training and scores the model; of the rest,
    `val_fraction` decides early stopping, and the model trains on what remains. `model_options`:
    `ModelConfig` fields (the class count comes from the corpus)."""
    from parrot_jax.grid import load_corpus

    if not 0.0 < holdout < 0.5:
        raise ValueError(f"holdout must lie in (0, 0.5), got {holdout}")
    data = load_corpus(features_root, corpus, list(encoders))
    fold = make_folds(data.labels, None, "stratified", round(1 / holdout), seed, val_fraction)[0]
    features = [data.matrices[e] for e in encoders]
    model_config = model_config_from_dict({**(model_options or {}), "num_classes": len(data.class_names)})
    result = train_cell(kind, model_config, features, data.labels, [fold], train_config)
    scores = {m: getattr(result.runs[0], m) for m in ("accuracy", "macro_f1", "uar")}
    scores.update(train_rows=len(fold.train), val_rows=len(fold.val), holdout_rows=len(fold.test))
    model = from_cell(result, model_config, encoders, data.metadata, data.class_names,
                      train_config.eval_batch_size, {"corpus": corpus, "trained_on": "corpus", "holdout": scores})
    return model, scores


def build_encoders(model: SavedModel, checkpoints: Mapping[str, Path] | None = None) -> list:
    """The model's encoders, rebuilt with the settings its features were extracted with.

    Classical encoders are rebuilt from their recorded config; checkpoint encoders need their folder
    (`checkpoints[name]`) and must match the recorded checkpoint hash."""
    built = []
    for name in model.encoders:
        stored = model.feature_metadata[name]
        folder = (checkpoints or {}).get(name)
        entry = registry.entry(name)
        if entry.needs_checkpoint and folder is None:
            raise ValueError(f"encoder {name!r} needs its checkpoint folder: pass --checkpoint {name}=PATH")
        encoder = registry.build(name, folder)
        recorded = stored["encoder_metadata"].get("config", {})
        if encoder.metadata().get("config") != recorded:
            options = {k: v for k, v in recorded.items() if encoder.metadata()["config"].get(k) != v}
            try:
                encoder = registry.build(name, folder, **options)
            except (TypeError, ValueError) as error:
                raise ValueError(f"encoder {name!r}: cannot rebuild the settings {options} the model's features "
                                 f"were extracted with ({error})") from None
        if encoder.metadata().get("config") != recorded:
            raise ValueError(f"encoder {name!r}: its settings {encoder.metadata().get('config')} differ from the "
                             f"ones the model was trained on {recorded}")
        if stored.get("checkpoint_sha256") != encoder.metadata().get("checkpoint_sha256"):
            raise ValueError(f"encoder {name!r}: checkpoint {folder} has hash "
                             f"{encoder.metadata().get('checkpoint_sha256')}, the model was trained on "
                             f"{stored.get('checkpoint_sha256')}")
        built.append(encoder)
    return built


@dataclass(frozen=True)
class Prediction:
    file: str
    emotion: str
    probabilities: dict[str, float]


def predict_files(model: SavedModel, files: Sequence[str | Path],
                  checkpoints: Mapping[str, Path] | None = None) -> list[Prediction]:
    """Emotion and class probabilities of each audio file."""
    from parrot_jax.audio import check_length, load_audio

    encoders = build_encoders(model, checkpoints)
    features = []
    for encoder in encoders:
        waves = []
        for f in files:
            wave = load_audio(f, encoder.sample_rate)
            check_length(wave, encoder.min_samples, f, f"encoder {encoder.name!r}", encoder.sample_rate)
            waves.append(wave)
        features.append(np.asarray(encoder.embed_batch(waves), np.float32))
    probs = model.probabilities(features)
    return [
        Prediction(str(f), model.class_names[int(p.argmax())],
                   {c: float(v) for c, v in zip(model.class_names, p)})
        for f, p in zip(files, probs)
    ]


def format_predictions(predictions: Sequence[Prediction], class_names: Sequence[str]) -> str:
    """One line per file: the file, the emotion, then every class's probability."""
    width = max(len("file"), *(len(p.file) for p in predictions))
    lines = [f"{'file':<{width}}  {'emotion':<10} " + " ".join(f"{c:>9}" for c in class_names)]
    for p in predictions:
        lines.append(f"{p.file:<{width}}  {p.emotion:<10} "
                     + " ".join(f"{p.probabilities[c]:>9.3f}" for c in class_names))
    return "\n".join(lines)


def command(args) -> int:
    """`parrot predict`: load (or train and save) a model, then print each file's emotion."""
    import sys

    from parrot_jax.grid import available_features, encoder_order

    try:
        checkpoints = {}
        for item in args.checkpoint:
            name, sep, folder = item.partition("=")
            if not sep:
                raise ValueError(f"--checkpoint {item!r}: expected ENCODER=PATH")
            checkpoints[name] = Path(folder)
        if (args.model / "model.json").is_file():
            model = load_model(args.model)
            print(f"model {args.model}: {model.kind} on {'+'.join(model.encoders)}, {model.members} member(s)")
        elif args.corpus:
            stored = available_features(args.features).get(args.corpus, [])
            encoders = args.encoders.split(",") if args.encoders else encoder_order(stored)
            missing = [e for e in encoders if e not in stored]
            if missing:
                raise ValueError(f"no features of {', '.join(missing)} for corpus {args.corpus!r} in {args.features}")
            model, scores = train_on_corpus(args.features, args.corpus, args.kind, encoders,
                                            TrainConfig(epochs=args.epochs), holdout=args.holdout,
                                            val_fraction=args.val_fraction)
            save_model(args.model, model)
            print(f"trained {args.kind} on {args.corpus} ({'+'.join(encoders)}): {scores['train_rows']} rows; "
                  f"held-out accuracy {100 * scores['accuracy']:.1f}% on {scores['holdout_rows']} rows; "
                  f"saved to {args.model}")
        else:
            raise FileNotFoundError(f"{args.model} holds no saved model (model.json missing); "
                                    "pass --corpus NAME to train one on a corpus's stored features")
        predictions = predict_files(model, args.files, checkpoints)
    except (ValueError, FileNotFoundError) as error:
        print(f"parrot predict: error: {error}", file=sys.stderr)
        return 1
    print(format_predictions(predictions, model.class_names))
    return 0
