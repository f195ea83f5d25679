"""The cells of the grid: what each one is, which ones a config plans, and their keys.

A *cell* is one (corpus, table, method, encoders) combination:

- Table 1: every single encoder x SVM, FCN, CNN;
- Table 2: every Mamba-attention and attention-attention pair (the paper's order) x Concatenation,
  PARROT (and, with ``ablations``, the HP-only and OT-only branches). Where only classical features
  are present (the demo), they are paired with each other instead, standing in for the two encoders.

A cell's *key* is a SHA-256 over what decides its numbers: the cell, the split settings, the resolved
train/model configs (or the SVM's settings), and the content hashes of its feature files. A finished
cell's file holding the same key is "done"; any other is run again.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from parrot_jax.config import GridConfig, model_config, train_config, val_policy
from parrot_jax.encoders import registry
from parrot_jax.features import CorpusData
from parrot_jax.files import sha256_json

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
    attention-attention pairs, in the registry's order. Where these make no pair (no Mamba/attention
    encoder, or a single one), every pair of the present Mamba, attention and classical encoders instead:
    classical features stand in for the missing family (e.g. whisper-tiny.en + mfcc-stats)."""
    ordered = encoder_order(encoders)
    family = {e: registry.ENCODERS[e].family if e in registry.ENCODERS else "other" for e in ordered}
    mamba = [e for e in ordered if family[e] == "mamba"]
    attention = [e for e in ordered if family[e] == "attention"]
    pairs = [(m, a) for m in mamba for a in attention] + list(itertools.combinations(attention, 2))
    classical = [e for e in ordered if family[e] == "classical"]
    if pairs or not classical:
        return pairs, None
    if mamba or attention:
        note = (f"no Mamba-attention or attention-attention pair ({', '.join(mamba + attention)}): Table 2 pairs "
                f"every present encoder, the classical features ({', '.join(classical)}) standing in for the "
                "paper's missing encoders")
    else:
        note = (f"only classical features present ({', '.join(classical)}): Table 2 pairs them, standing in "
                "for the paper's Mamba and attention encoders")
    return list(itertools.combinations(mamba + attention + classical, 2)), note


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
            others = sorted(set(available) - set(corpora))
            why = (f"; the config restricts corpora to {', '.join(corpora)} (features present for "
                   f"{', '.join(others)}: choose with --corpora)") if config.corpora and others else ""
            notes.append(f"{corpus}: no features present under {config.features}/{corpus} (skipped{why})")
            continue
        encoders = encoder_order(encoders)
        cells += [Cell(corpus, 1, m, (e,)) for m in config.table1 for e in encoders]
        pairs, note = pairs_for(encoders)
        if note:
            notes.append(f"{corpus}: {note}")
        cells += [Cell(corpus, 2, m, pair) for pair in pairs for m in config.table2_methods]
    return cells, notes


def cell_settings(cell: Cell, config: GridConfig, num_classes: int) -> dict:
    """What decides a cell's numbers apart from its features (hashed into its key); settings the run does
    not use are left out (``folds`` under "emobox", ``val_fraction`` under val_policy "valid" / "none")."""
    settings = {"cell": cell.to_json(), "protocol": config.protocol, "split_seed": config.split_seed,
                "val_policy": val_policy(config)}
    if config.protocol == "emobox":
        from parrot_jax.splits import split_file_hashes

        settings["splits"] = {"files": split_file_hashes(config.splits_folder(cell.corpus)),
                              "allow_missing": config.allow_missing, "match": config.split_match}
    else:
        settings["folds"] = config.folds
    if val_policy(config) not in ("valid", "none"):
        settings["val_fraction"] = config.val_fraction
    if cell.method == "svm":
        settings["svm"] = {"standardize": config.svm_standardize, "refit": config.train.refit}
    else:
        settings["train"] = asdict(train_config(config))
        settings["model"] = model_config(config, num_classes).to_dict()
        settings["tsne"] = cell.method in config.tsne_methods
    return json.loads(json.dumps(settings))


def check_layer_inputs(cells: Sequence[Cell], config: GridConfig, data: dict[str, CorpusData]) -> None:
    """Refuse a cell that gives a feature holding every layer ([N, L+1, D]: an encoder's ``layer="all"``) to a
    method that takes one embedding per utterance: the SVM, or a neural model without ``layer_mix="softmax"``."""
    for cell in cells:
        corpus = data[cell.corpus]
        for encoder in cell.encoders:
            shape = corpus.matrices[encoder].shape
            if len(shape) != 3:
                continue
            if cell.method == "svm":
                why = "the SVM takes one embedding per utterance"
            elif model_config(config, len(corpus.class_names)).layer_mix == "none":
                why = "its model has layer_mix='none' (one embedding per utterance); set model.layer_mix=softmax"
            else:
                continue
            raise ValueError(f"cell {cell.name}: feature {encoder} holds every layer {list(shape)} (layer=all), but "
                             f"method {cell.method!r} cannot take it: {why}")


def cell_key(cell: Cell, config: GridConfig, data: CorpusData) -> str:
    """SHA-256 of the cell's settings and the content hashes of its feature files."""
    payload = {"settings": cell_settings(cell, config, len(data.class_names)), "features": {e: data.hashes[e] for e in cell.encoders}}
    return sha256_json(payload)



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
