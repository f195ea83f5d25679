"""The saved-model format: a trained model with what is needed to run it on new recordings.

A saved model (a folder) holds one or more *members* (the (seed, fold) models of a grid cell, or the
one model trained on a corpus by `predict.train_on_corpus`) with their feature standardisers:

- ``state/``: the orbax checkpoint of ``{"params": stacked params [M, ...], "mean": [...], "scale": [...]}``;
- ``model.json``: the model kind and config, the encoders and the store metadata of their features
  (encoder name, embedding options, checkpoint hash), the class names, and where the model came from.
  Written last: a folder without it is not a saved model.

The class probabilities of rows of features are the mean over members of softmax(logits):
p = (1/M) sum_m softmax(f_m(z_m(x))), z_m member m's standardiser.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from parrot_jax.files import write_json
from parrot_jax.models import ModelConfig
from parrot_jax.training import CellResult, Standardizer, predict_logits

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
        """float32 [N, C]: the members' mean softmax on rows of the encoders' features ([N, D], or
        [N, L+1, D] for an encoder's layer="all")."""
        for name, x in zip(self.encoders, features):
            meta = self.feature_metadata[name]  # "layers": the encoder's layer="all", rows [L+1, dim]
            want = [meta["layers"], meta["dim"]] if "layers" in meta else [meta["dim"]]
            if list(x.shape[1:]) != want:
                shown = ", ".join(str(n) for n in ["N", *want])
                raise ValueError(f"features of {name}: expected [{shown}], got {list(x.shape)}")
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
    """Write `model` to the folder `path` (replacing a saved model there, never other files); model.json
    last. Only the calling process writes, and it waits for no other (under several processes, call it
    on one)."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if path.exists():
        other = sorted(set(p.name for p in path.iterdir()) - {"model.json", "state"}) if path.is_dir() else [path.name]
        if other:
            raise ValueError(f"{path} holds other things than a saved model ({', '.join(other[:3])}); save the "
                             "model to a new or empty folder")
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
    write_json(path / "model.json", {
        "kind": model.kind,
        "model_config": model.model_config.to_dict(),
        "encoders": list(model.encoders),
        "feature_metadata": model.feature_metadata,
        "class_names": list(model.class_names),
        "eval_batch_size": model.eval_batch_size,
        "standardized": model.standardizer is not None,
        "info": model.info,
    })
    return path


def _slim(metadata: dict) -> dict:
    """The store metadata without its per-row lists (ids, rejects)."""
    return {k: v for k, v in metadata.items() if k not in ("ids", "rejects")}


MODEL_FIELDS = ("kind", "model_config", "encoders", "feature_metadata", "class_names", "eval_batch_size",
                "standardized", "info")  # the keys of model.json


def load_model(path: str | Path) -> SavedModel:
    """Read a folder written by `save_model`."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"{path} holds no saved model (model.json missing)")
    try:
        meta = json.loads((path / "model.json").read_text())
        fields = {name: meta[name] for name in MODEL_FIELDS}
        model_config = ModelConfig.from_dict(fields["model_config"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path / 'model.json'}: not valid JSON ({error}); save the model again") from None
    except KeyError as error:
        raise ValueError(f"{path / 'model.json'}: field {error} is missing; save the model again") from None
    except TypeError as error:
        raise ValueError(f"{path / 'model.json'}: model_config does not fit this version ({error})") from None
    tree = ocp.PyTreeCheckpointer().restore(path / "state")
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
