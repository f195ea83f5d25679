"""Emotions of new recordings: train a model on a corpus's stored features, rebuild its encoders, predict.

A new recording's class probabilities are the saved model's (`parrot_jax.saved_model`): the mean over
members of softmax(logits), on the recording's features extracted by the model's encoders rebuilt with
the options its training features were extracted with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from parrot_jax.audio import MAX_SECONDS
from parrot_jax.encoders import registry
from parrot_jax.features import load_corpus
from parrot_jax.models import ModelConfig
from parrot_jax.saved_model import SavedModel, from_cell
from parrot_jax.splits import make_folds
from parrot_jax.training import TrainConfig, train_cell


def train_on_corpus(features_root: str | Path, corpus: str, kind: str, encoders: Sequence[str],
                    train_config: TrainConfig = TrainConfig(), model_options: Mapping[str, Any] | None = None,
                    holdout: float = 0.1, val_fraction: float | None = None, seed: int = 0) -> tuple[SavedModel, dict]:
    """Train `kind` on a corpus's stored features; return the model and its held-out scores.

    A stratified `holdout` share of the rows is kept out of training and scores the model; with early
    stopping (``train_config.monitor`` other than "none"), a stratified `val_fraction` of the rest (default
    0.1) decides the epoch, and the model trains on what remains; without it (the default) the model trains on
    all of the rest, and a `val_fraction` above 0 is refused (rows held out for nothing). `model_options`:
    `ModelConfig` fields (the class count comes from the corpus)."""
    if not 0.0 < holdout < 0.5:
        raise ValueError(f"holdout must lie in (0, 0.5), got {holdout}")
    early_stopping = train_config.monitor != "none"
    if val_fraction is None:
        val_fraction = 0.1 if early_stopping else 0.0
    if val_fraction and not early_stopping:
        raise ValueError(f"val_fraction {val_fraction:g} holds rows out for early stopping, but monitor is 'none' "
                         "(no early stopping): give a monitor, or leave val_fraction out")
    data = load_corpus(features_root, corpus, list(encoders))
    fold = make_folds(data.labels, None, "stratified", round(1 / holdout), seed, val_fraction,
                      "stratified" if val_fraction else "none")[0]
    features = [data.matrices[e] for e in encoders]
    model_config = ModelConfig.from_dict({**(model_options or {}), "num_classes": len(data.class_names)})
    result = train_cell(kind, model_config, features, data.labels, [fold], train_config)
    scores = {m: getattr(result.runs[0], m) for m in ("accuracy", "macro_f1", "uar")}
    scores.update(train_rows=len(fold.train), val_rows=len(fold.val), holdout_rows=len(fold.test))
    model = from_cell(result, model_config, encoders, data.metadata, data.class_names,
                      train_config.eval_batch_size, {"corpus": corpus, "trained_on": "corpus", "holdout": scores})
    return model, scores


def build_encoders(model: SavedModel, checkpoints: Mapping[str, Path] | None = None) -> list:
    """The model's encoders, rebuilt with the embedding options its training features were extracted with
    (recorded in the store: layer, pooling, token order, ...).

    Checkpoint encoders need their folder (`checkpoints[name]`), whose weights must have the recorded hash."""
    built = []
    for name in model.encoders:
        stored = model.feature_metadata[name]
        if "encoder_options" not in stored:
            raise ValueError(f"encoder {name!r}: the model was trained on features of store format "
                             f"{stored.get('format_version')}, which record no encoder options: extract the "
                             "features again and retrain")
        folder = (checkpoints or {}).get(name)
        if registry.entry(name).needs_checkpoint and folder is None:
            raise ValueError(f"encoder {name!r} needs its checkpoint folder: pass --checkpoint {name}=PATH")
        encoder = registry.build(name, folder, **stored["encoder_options"])
        rebuilt = encoder.metadata()
        if rebuilt["options"] != stored["encoder_options"]:
            raise ValueError(f"encoder {name!r}: rebuilt with options {rebuilt['options']}, the model's features "
                             f"were extracted with {stored['encoder_options']}")
        if rebuilt["checkpoint_sha256"] != stored["checkpoint_sha256"]:
            raise ValueError(f"encoder {name!r}: checkpoint {folder} has hash {rebuilt['checkpoint_sha256']}, the "
                             f"model was trained on {stored['checkpoint_sha256']}")
        built.append(encoder)
    return built


@dataclass(frozen=True)
class Prediction:
    file: str
    emotion: str
    probabilities: dict[str, float]


def predict_files(model: SavedModel, files: Sequence[str | Path], checkpoints: Mapping[str, Path] | None = None,
                  max_seconds: float = MAX_SECONDS) -> list[Prediction]:
    """Emotion and class probabilities of each audio file, its features embedded as extraction embeds them
    (one runner for every encoder: this host's devices of ``$PARROT_DEVICES``, the compilation cache); a file
    longer than `max_seconds` is refused (from its header, unread: `audio.read_audio`)."""
    from parrot_jax.audio import check_length, load_audio
    from parrot_jax.encoders.runner import Runner

    encoders = build_encoders(model, checkpoints)
    Runner.for_devices().use(encoders)
    features = []
    for encoder in encoders:
        waves = []
        for f in files:
            wave = load_audio(f, encoder.sample_rate, max_seconds=max_seconds)
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
