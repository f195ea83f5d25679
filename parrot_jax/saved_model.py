"""The saved-model format: a trained model with what is needed to run it on new recordings.

A saved model (a folder) holds one or more *members* (the (seed, fold) models of a grid cell, or the
one model trained on a corpus by `predict.train_on_corpus`) with their feature standardisers:

- ``state/``: the orbax checkpoint of ``{"params": stacked params [M, ...], "mean": [...], "scale": [...]}``;
- ``model.json``: the model kind and config, the encoders and the store metadata of their features
  (encoder name, embedding options, checkpoint hash), the class names, where the model came from, and a
  manifest: the sha256 of every file under ``state/`` and the shape of every saved array.

A model is written into ``.<name>.tmp-<pid>`` beside its folder and renamed into place, so the folder is
absent or complete whenever the writer is killed; the next save deletes what a killed one left. `load_model`
checks everything before it is used: the manifest (each file's hash, each array's shape), the types of
model.json's fields (the class names one per class, booleans as booleans, a batch size in
[1, MAX_EVAL_BATCH]), that the params fit the model's config and the features' dims, and that params and
standardisers are finite (scales > 0). Every refusal is one ValueError naming the file and the field.

The class probabilities of rows of features are the mean over members of softmax(logits):
p = (1/M) sum_m softmax(f_m(z_m(x))), z_m member m's standardiser.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from parrot_jax.files import (fsync_dir, remove_dead_temporaries, restore_interrupted_replace, sha256_file,
                              temporary_path, write_json)
from parrot_jax.models import MODEL_KINDS, ModelConfig, num_inputs, param_shapes
from parrot_jax.training import CellResult, Standardizer, predict_logits

PyTree = Any
MAX_EVAL_BATCH = 4096  # rows per evaluation batch a saved model may ask for (each batch is padded to it)
ORBAX_TEMPORARY = "state.orbax-checkpoint-tmp"  # what orbax leaves in a folder when killed mid-save


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
        """float32 [N, C]: the members' mean softmax on rows of the encoders' features ([N, D], or
        [N, L+1, D] for an encoder's layer="all")."""
        for name, x in zip(self.encoders, features):
            meta = self.feature_metadata[name]  # "layers": the encoder's layer="all", rows [L+1, dim]
            want = [meta["layers"], meta["dim"]] if "layers" in meta else [meta["dim"]]
            if list(x.shape[1:]) != want:
                shown = ", ".join(str(n) for n in ["N", *want])
                raise ValueError(f"features of {name}: expected [{shown}], got {list(x.shape)}")
        probs = []
        batch = max(1, min(self.eval_batch_size, len(features[0])))  # never padded beyond the rows given
        for m in range(self.members):
            params, stats = self.member(m)
            logits = predict_logits(self.kind, self.model_config, params, features, stats, batch)
            probs.append(jax.nn.softmax(logits, axis=-1))
        out = np.asarray(np.mean(probs, axis=0), np.float32)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise ValueError(f"the model's probabilities of row(s) {np.flatnonzero(bad)[:5].tolist()} are not finite "
                             "(NaN/Inf features or params)")
        return out


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
    """Write `model` to the folder `path` (replacing a saved model there, never other files): written whole
    beside it (``.<name>.tmp-<pid>``), then renamed into place. Only the calling process writes, and it
    waits for no other (under several processes, call it on one)."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    restore_interrupted_replace(path)
    remove_dead_temporaries(path)
    ours = lambda name: name in ("model.json", "state") or name.startswith(ORBAX_TEMPORARY)  # noqa: E731
    other = sorted(p.name for p in path.iterdir() if not ours(p.name)) if path.is_dir() else \
        [path.name] if path.exists() else []
    if other:
        raise ValueError(f"{path} holds other things than a saved model ({', '.join(other[:3])}); save the "
                         "model to a new or empty folder")
    tree = {"params": model.params}
    if model.standardizer is not None:
        tree["mean"] = list(model.standardizer.mean)
        tree["scale"] = list(model.standardizer.scale)
    _check_finite(tree, path / "state")
    tmp = temporary_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # written by this process alone (under jax.distributed the grid saves on host 0 only): no barrier
    alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})
    handler = ocp.PyTreeCheckpointHandler(multiprocessing_options=alone)
    try:
        ocp.Checkpointer(handler, multiprocessing_options=alone).save(tmp / "state", tree)
    except OSError as error:  # a full disk: name the folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(error.errno, f"writing {path / 'state'}: {error.strerror or error}") from None
    write_json(tmp / "model.json", {
        "kind": model.kind,
        "model_config": model.model_config.to_dict(),
        "encoders": list(model.encoders),
        "feature_metadata": model.feature_metadata,
        "class_names": list(model.class_names),
        "eval_batch_size": model.eval_batch_size,
        "standardized": model.standardizer is not None,
        "info": model.info,
        "manifest": {"files": {name: sha256_file(tmp / name) for name in _state_files(tmp)}, "shapes": _shapes(tree)},
    })
    old = path.with_name(f".{path.name}.tmp-old-{os.getpid()}")
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _slim(metadata: dict) -> dict:
    """The store metadata without its per-row lists (ids, rejects)."""
    return {k: v for k, v in metadata.items() if k not in ("ids", "rejects")}


def _state_files(folder: Path) -> list[str]:
    """Every file under ``folder/state`` (symbolic links followed), as sorted paths relative to `folder`."""
    out = []
    for parent, _, names in os.walk(folder / "state", followlinks=True):
        out += [(Path(parent) / n).relative_to(folder).as_posix() for n in names]
    return sorted(out)


def _shapes(tree: dict) -> dict:
    """The shape of every array of the saved tree: params by their key path, mean and scale by position."""
    params = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
    out = {"params": {jax.tree_util.keystr(k): list(np.shape(v)) for k, v in params}}
    for part in ("mean", "scale"):
        if part in tree:
            out[part] = [list(np.shape(a)) for a in tree[part]]
    return out


def _check_finite(tree: dict, where: Path) -> None:
    """Refuse NaN/Inf anywhere in the saved tree, and standardiser scales that are not > 0."""
    for part, value in tree.items():
        for key, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
            leaf = np.asarray(leaf)
            if not np.isfinite(leaf).all():
                raise ValueError(f"{where}: {part}{jax.tree_util.keystr(key)} holds "
                                 f"{int(np.count_nonzero(~np.isfinite(leaf)))} NaN/Inf value(s)")
            if part == "scale" and not (leaf > 0).all():
                raise ValueError(f"{where}: scale{jax.tree_util.keystr(key)} holds "
                                 f"{int(np.count_nonzero(leaf <= 0))} value(s) <= 0 (a standardiser divides by it)")


MODEL_FIELDS = ("kind", "model_config", "encoders", "feature_metadata", "class_names", "eval_batch_size",
                "standardized", "info", "manifest")  # the keys of model.json


def verify_files(path: str | Path) -> dict:
    """model.json's fields, checked (`_check_fields`), after checking that the files under ``state/`` are
    exactly those of its manifest, each with its recorded sha256. A ValueError names the file and field."""
    path = Path(path).resolve()
    restore_interrupted_replace(path)  # a save killed between its two renames: the previous model is back
    meta_path = path / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} holds no saved model (model.json missing)")
    try:
        meta = json.loads(meta_path.read_text())
        fields = {name: meta[name] for name in MODEL_FIELDS}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path}: not valid JSON ({error}); save the model again") from None
    except KeyError as error:
        raise ValueError(f"{meta_path}: field {error} is missing; save the model again") from None
    except TypeError:
        raise ValueError(f"{meta_path}: expected a JSON object; save the model again") from None
    fields["model_config"] = _check_fields(fields, meta_path)
    recorded = fields["manifest"]["files"]
    present = _state_files(path)
    for name in sorted(set(recorded) ^ set(present)):
        state = "missing" if name in recorded else "not in the manifest"
        raise ValueError(f"{path / name}: {state} (field manifest.files of {meta_path}); save the model again")
    for name in present:
        if sha256_file(path / name) != recorded[name]:
            raise ValueError(f"{path / name}: sha256 differs from field manifest.files of {meta_path} (the file "
                             "was changed or damaged); save the model again")
    return fields


def _check_fields(fields: dict, where: Path) -> ModelConfig:
    """The model config of model.json's `fields`, after checking every field's type and what ties them
    together; a ValueError naming `where` and the field otherwise."""
    def refuse(name: str, expected: str) -> ValueError:
        return ValueError(f"{where}: field {name}: expected {expected}, got {json.dumps(fields.get(name))[:80]}")

    def strings(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value) and len(set(value)) == len(value)

    if fields["kind"] not in MODEL_KINDS:
        raise refuse("kind", f"one of {', '.join(MODEL_KINDS)}")
    if not isinstance(fields["model_config"], dict):
        raise refuse("model_config", "a JSON object")
    try:
        model_config = ModelConfig.from_dict(fields["model_config"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: field model_config: {error}") from None
    if not strings(fields["encoders"]) or len(fields["encoders"]) != num_inputs(fields["kind"]):
        raise refuse("encoders", f"{num_inputs(fields['kind'])} distinct encoder name(s) (model {fields['kind']})")
    if not strings(fields["class_names"]) or len(fields["class_names"]) != model_config.num_classes:
        raise refuse("class_names", f"{model_config.num_classes} distinct names (model_config.num_classes)")
    batch = fields["eval_batch_size"]
    if type(batch) is not int or not 1 <= batch <= MAX_EVAL_BATCH:
        raise refuse("eval_batch_size", f"an int in [1, {MAX_EVAL_BATCH}]")
    for name in ("standardized",):
        if not isinstance(fields[name], bool):
            raise refuse(name, "true or false")
    if not isinstance(fields["info"], dict):
        raise refuse("info", "a JSON object")
    metadata = fields["feature_metadata"]
    if not isinstance(metadata, dict) or sorted(metadata) != sorted(fields["encoders"]):
        raise refuse("feature_metadata", f"an object with one entry per encoder ({', '.join(fields['encoders'])})")
    for encoder, meta in metadata.items():
        if not isinstance(meta, dict):
            raise refuse("feature_metadata", f"an object per encoder ({encoder}: the store's metadata)")
        for key in ("dim", "layers") if "layers" in meta else ("dim",):
            if type(meta.get(key)) is not int or meta[key] < 1:
                raise ValueError(f"{where}: field feature_metadata.{encoder}.{key}: expected an int >= 1, got "
                                 f"{json.dumps(meta.get(key))}")
    manifest = fields["manifest"]
    if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
            and all(isinstance(v, str) for v in manifest["files"].values())
            and isinstance(manifest.get("shapes"), dict) and isinstance(manifest["shapes"].get("params"), dict)):
        raise refuse("manifest", "an object with files {path: sha256} and shapes {params: ..., mean, scale}")
    return model_config


def load_model(path: str | Path) -> SavedModel:
    """Read a folder written by `save_model`, after checking it (`verify_files`, then each array's shape
    against the manifest and against the model's config and the features' dims, and that params and
    standardisers are finite)."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    fields = verify_files(path)
    model_config, meta_path = fields["model_config"], path / "model.json"
    try:
        tree = ocp.PyTreeCheckpointer().restore(path / "state")
    except Exception as error:  # the files match their hashes: a checkpoint this orbax cannot read
        raise ValueError(f"{path / 'state'}: orbax cannot restore it ({type(error).__name__}: {error})") from None
    if (("mean" in tree) != fields["standardized"] or _shapes(tree) != fields["manifest"]["shapes"]):
        raise ValueError(f"{path / 'state'}: its arrays do not have the shapes of field manifest.shapes of "
                         f"{meta_path} (or field standardized); save the model again")
    features = [[m["layers"], m["dim"]] if "layers" in m else [m["dim"]]
                for m in (fields["feature_metadata"][e] for e in fields["encoders"])]
    try:
        expected = param_shapes(fields["kind"], model_config, [tuple(f) for f in features])
    except Exception as error:
        raise ValueError(f"{meta_path}: field model_config does not fit features of shapes {features}: "
                         f"{error}") from None
    expected = {jax.tree_util.keystr(k): list(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
    saved = {k: shape[1:] for k, shape in fields["manifest"]["shapes"]["params"].items()}
    if saved != expected:
        wrong = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
        raise ValueError(f"{meta_path}: fields model_config and feature_metadata (dims) give params of other shapes "
                         f"than those in state/ (first: {wrong[0]} {expected.get(wrong[0])} vs {saved.get(wrong[0])})")
    _check_finite(tree, path / "state")
    stats = Standardizer(tuple(tree["mean"]), tuple(tree["scale"])) if fields["standardized"] else None
    return SavedModel(
        kind=fields["kind"],
        model_config=model_config,
        encoders=tuple(fields["encoders"]),
        feature_metadata=fields["feature_metadata"],
        class_names=tuple(fields["class_names"]),
        params=tree["params"],
        standardizer=stats,
        eval_batch_size=fields["eval_batch_size"],
        info=fields["info"],
    )
