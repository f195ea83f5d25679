"""Running the grid: the paper's Table 1 and Table 2 as resumable cells (`parrot_jax.cells`).

Each cell trains on all folds (and seeds) at once and writes ``<results>/<run>/cells/<cell>.json``
atomically when it finishes, with its key (`cells.cell_key`). A rerun skips a cell whose file holds the
same key and reruns it otherwise, so a kill at any moment loses only the cell in flight (with
``pack_cells`` > 1, the pack of cells in flight). Then the tables and figures are written (`report`).

Several processes (`jax.distributed`, one per host) run the same grid together: every process
computes every cell (its share of the devices), the coordinator (process 0) alone writes files
(cell records, activations, checkpoints, tables, figures, grid.json), and the others read the records
back after a barrier, so every process returns the same outcome. Which cells are done is process 0's
reading of the results folder, sent to the others.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from parrot_jax.cells import STATUSES, Cell, cell_key, cell_settings, cell_status, check_layer_inputs, plan_cells
from parrot_jax.config import GridConfig, config_dict, model_config, train_config, val_policy
from parrot_jax.features import CorpusData, available_features, load_corpus
from parrot_jax.files import atomic_write, sha256_file, write_json
from parrot_jax.locks import exclusive
from parrot_jax.splits import validation_line

# ----------------------------------------------------------------------------------------------------
# running cells


def cell_folds(config: GridConfig, data: CorpusData) -> tuple[list, dict | None]:
    """The corpus's folds under the config's protocol, and (under "emobox") the split files' record."""
    from parrot_jax.splits import emobox_folds, make_folds

    if config.protocol == "emobox":
        split = emobox_folds(config.splits_folder(data.corpus), data.ids, [data.class_names[y] for y in data.labels],
                             data.speakers, config.allow_missing, config.split_seed, config.val_fraction,
                             val_policy(config), config.split_match, data.keys)
        return split.folds, split.record()
    if config.protocol == "speaker" and data.speakers is None:
        raise ValueError(f"corpus {data.corpus!r} has no speaker ids; use protocol=stratified")
    return make_folds(data.labels, data.speakers, config.protocol, config.folds, config.split_seed,
                      config.val_fraction, val_policy(config)), None


def fold_rows(folds, refit: bool) -> list[dict[str, int]]:
    """Rows per fold: train, val, test, and fit, the rows every model of the grid fits its final parameters
    on (`splits.Fold.fit_rows`: train + val with ``train.refit``, train alone without)."""
    return [{"train": len(f.train), "val": len(f.val), "test": len(f.test), "fit": len(f.fit_rows(refit))}
            for f in folds]


#: Early stopping that keeps an epoch this early, for most members of a cell, is reported (`early_stop_note`).
EARLY_EPOCHS = 3


def best_epochs(epochs: Sequence[int | None]) -> dict:
    """The epochs early stopping kept, over a cell's members (None: an SVM): median, and how many are
    <= `EARLY_EPOCHS`."""
    kept = [e for e in epochs if e is not None]
    return {"median": float(np.median(kept)) if kept else None, "members": len(kept),
            f"within_{EARLY_EPOCHS}": sum(e <= EARLY_EPOCHS for e in kept)}


def early_stop_note(name: str, record: dict) -> str | None:
    """A warning line where early stopping is on and most of a cell's members kept an epoch <= `EARLY_EPOCHS`
    (validation stopped them almost at once), else None."""
    if record.get("settings", {}).get("train", {}).get("monitor") == "none":  # no early stopping
        return None
    epochs = record.get("best_epoch") or {}
    early, members = epochs.get(f"within_{EARLY_EPOCHS}", 0), epochs.get("members", 0)
    if not members or 2 * early <= members:
        return None
    return (f"warning: {name}: {early} of {members} members kept an epoch <= {EARLY_EPOCHS} (median "
            f"{epochs['median']:g}): early stopping fired almost at once; see train.monitor, train.patience, "
            "val_policy")


def test_train_ratio(folds) -> float:
    """Test rows over training rows (train + val) of the folds, averaged: n_test/n_train of the corrected t-test."""
    return float(np.mean([len(f.test) for f in folds]) / np.mean([len(f.train) + len(f.val) for f in folds]))


def check_run(config: GridConfig, data: dict[str, CorpusData]) -> tuple[dict[str, list], dict[str, dict | None]]:
    """Each corpus's folds and split-file record, after checking what a run would otherwise refuse midway
    (dry runs check it too): the train and model overrides, and the folds (protocol, folds vs speakers,
    val_fraction, split files)."""
    train_config(config)
    folds, split_records = {}, {}
    for corpus, corpus_data in data.items():
        model_config(config, len(corpus_data.class_names))
        folds[corpus], split_records[corpus] = cell_folds(config, corpus_data)
    return folds, split_records


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


def _epoch_bar(total: int, label: str, disable: bool = False) -> tuple[Any, Callable[[int, dict], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"  {label}", unit="epoch", leave=False, position=1, dynamic_ncols=True,
               disable=disable)

    stage = ["select"]

    def progress(epoch: int, stats: dict) -> None:
        """Epochs of every pass (fold_axis "loop": one pass per member, one after another) on one bar."""
        active, val_acc = np.asarray(stats["active"]), np.asarray(stats["val_accuracy"])
        passes, done = stats.get("passes", 1), stats.get("pass", 0)
        if stats.get("stage", "select") != stage[0]:  # the refit pass (train.refit) starts again at epoch 1
            stage[0] = stats["stage"]
            bar.reset()
            bar.set_description(f"  {label} ({stage[0]})")
        if bar.total != total * passes:
            bar.total = total * passes
        bar.update(done * total + epoch - bar.n)
        shown = {"loss": f"{np.nanmean(stats['train_loss']):.3f}"}
        if np.isfinite(val_acc).any():  # members without validation rows (val_fraction=0) report NaN
            shown["val_acc"] = f"{np.nanmean(val_acc):.3f}"
        if passes > 1:
            shown["member"] = f"{done + 1}/{passes}"
        if active.size > 1:
            shown["active"] = f"{int(active.sum())}/{active.size}"
        bar.set_postfix(**shown)

    return bar, progress


def pack_groups(cells: Sequence[Cell], config: GridConfig, data: dict[str, CorpusData],
                folds: dict[str, Sequence]) -> list[list[Cell]]:
    """The cells in groups that train as one program: neural cells of the same corpus (so the same
    labels, folds and model config), method and feature shapes, at most ``config.pack_cells`` per
    group (under "auto", `training.pack_size`: what fits the accelerator, 1 on CPU, a cell holding a
    member per seed and fold of its corpus's `folds`), in the order of their first cell; every SVM cell
    alone."""
    groups: dict[tuple, list[list[Cell]]] = {}
    limits: dict[tuple, int] = {}
    for i, cell in enumerate(cells):
        shapes = tuple(data[cell.corpus].matrices[e].shape for e in cell.encoders)
        key = ("alone", i) if cell.method == "svm" else (cell.corpus, cell.method, shapes)
        if key not in limits:
            members = len(config.seeds) * len(folds[cell.corpus])
            limits[key] = pack_limit(config, cell, shapes, len(data[cell.corpus].class_names), members)
        packs = groups.setdefault(key, [[]])
        if len(packs[-1]) == limits[key]:
            packs.append([])
        packs[-1].append(cell)
    return sorted((pack for packs in groups.values() for pack in packs), key=lambda pack: cells.index(pack[0]))


def pack_limit(config: GridConfig, cell: Cell, shapes: tuple[tuple[int, ...], ...], num_classes: int,
               members: int) -> int:
    """Most cells of `cell`'s method and feature `shapes` per program: ``config.pack_cells``, or under
    "auto" what half the accelerator's free memory holds (members: seeds x folds each)."""
    if config.pack_cells != "auto":
        return config.pack_cells
    if cell.method == "svm":
        return 1
    from parrot_jax.training import pack_size

    return pack_size(cell.method, model_config(config, num_classes), shapes, members, train_config(config))


def run_cells(cells: Sequence[Cell], config: GridConfig, data: CorpusData, folds, provenance: dict,
              keys: dict[str, str], split_record: dict | None = None) -> list[dict]:
    """Train/evaluate one group of `pack_groups` (one program); on the coordinator, write each cell's
    activations / checkpoint; return the cells' JSON records (with the split files' record, if any)."""
    from parrot_jax import distributed as dist
    from parrot_jax.metrics import from_confusion

    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    method = cells[0].method
    cell_features = [[data.matrices[e] for e in cell.encoders] for cell in cells]
    writer = dist.is_coordinator()
    if method == "svm":
        from parrot_jax.svm import svm_cell

        results = [svm_cell(features, data.labels, folds, standardize=config.svm_standardize,
                            refit=config.train.refit) for features in cell_features]
    else:
        from parrot_jax.training import NonFiniteLoss, train_cells

        tc, mc = train_config(config), model_config(config, len(data.class_names))
        names = ", ".join(cell.name for cell in cells)
        bar, progress = _epoch_bar(tc.epochs, f"{names} (epochs)", disable=not writer)
        try:
            results = train_cells(method, mc, cell_features, data.labels, folds, tc, progress)
        except NonFiniteLoss as error:
            raise ValueError(f"cell {cells[error.cell].name}: {error}; the grid stops here, writing no record or "
                             "table row for this cell or the cells trained with it (cells finished before are kept; "
                             "lower train.learning_rate, or check the features)") from None
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
            "metrics": {**{m: [float(getattr(r, m)) for r in runs] for m in ("accuracy", "macro_f1", "uar")},
                        "micro_f1": [from_confusion(r.confusion)["micro_f1"] for r in runs]},
            "fold_rows": fold_rows(folds, config.train.refit),
            "validation": {"policy": config.val_policy, "ran": folds[0].val_policy,
                           "fit": "train+val" if config.train.refit else "train"},
            "best_epoch": best_epochs([r.best_epoch for r in runs]),
            "splits": split_record,
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
    from parrot_jax.activations import test_activations
    from parrot_jax.saved_model import from_cell, save_model

    tc, mc = train_config(config), model_config(config, len(data.class_names))
    if cell.method in config.tsne_methods:
        rows, acts = test_activations(result, mc, features, folds, tc.eval_batch_size)
        path = config.run_dir / "cells" / f"{cell.name}.penultimate.npz"
        atomic_write(path, lambda f: np.savez(f, activations=acts, labels=data.labels[rows], rows=rows))
        artifacts["penultimate"] = path.name
        artifacts["penultimate_sha256"] = sha256_file(path)  # checked when the cell is reused
    if config.checkpoints:
        target = config.run_dir / "models" / cell.name
        info = {"corpus": cell.corpus, "cell": cell.name, "trained_on": "folds", "key": key}
        save_model(target, from_cell(result, mc, cell.encoders, data.metadata, data.class_names,
                                     tc.eval_batch_size, info))
        artifacts["checkpoint"] = str(Path("models") / cell.name)
    return artifacts


def reuse_status(cell: Cell, config: GridConfig, key: str) -> str:
    """`cells.cell_status` of the cell's record, with its artifacts checked: a record whose penultimate
    activations no longer have their recorded sha256, or whose saved model fails its manifest
    (`saved_model.verify_files`), is "changed" (run again, its files rebuilt)."""
    from parrot_jax.saved_model import verify_files

    models = config.run_dir / "models" / cell.name
    record = config.run_dir / "cells" / f"{cell.name}.json"
    status = cell_status(record, key, models if config.checkpoints and cell.method != "svm" else None)
    if status != "done":
        return status
    artifacts = json.loads(record.read_text()).get("artifacts") or {}
    if artifacts.get("penultimate") and not _activations_intact(config.run_dir / "cells" / artifacts["penultimate"],
                                                                artifacts.get("penultimate_sha256")):
        return "changed"
    if config.checkpoints and cell.method != "svm":
        try:
            verify_files(models)
        except ValueError:
            return "changed"
    return status


def _activations_intact(path: Path, sha256: str | None) -> bool:
    """Whether the activations file has its recorded sha256 (records of older versions recorded none: then
    whether it reads as the arrays it should hold)."""
    if not path.is_file():
        return False
    if sha256 is not None:
        return sha256_file(path) == sha256
    try:
        with np.load(path) as saved:
            return all(len(saved[k]) == len(saved["rows"]) for k in ("activations", "labels"))
    except Exception:  # a damaged file fails in many ways (BadZipFile, EOFError, KeyError, ...)
        return False


def check_cells(cells: Sequence[Cell], config: GridConfig, data: dict[str, CorpusData]) -> None:
    """Refuse, before anything trains (dry runs too), what the run would refuse later: a neural model
    that cannot take its cell's feature shapes (e.g. a conv stack longer than the embedding), and
    figure names that name no cell."""
    from parrot_jax.models import param_shapes

    checked = set()
    for cell in cells:
        shapes = tuple(data[cell.corpus].matrices[e].shape[1:] for e in cell.encoders)
        mc = model_config(config, len(data[cell.corpus].class_names))
        if cell.method == "svm" or (cell.method, shapes, mc) in checked:
            continue
        checked.add((cell.method, shapes, mc))
        try:
            param_shapes(cell.method, mc, shapes)
        except Exception as error:  # the model's own refusal of these shapes, whatever its type
            text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise ValueError(f"cell {cell.name}: model settings {config_model_keys(config)} cannot take features of "
                             f"shapes {[list(s) for s in shapes]}: {text}") from None
    names = [cell.name for cell in cells]
    unknown = [f for f in config.figures if f != "best" and f not in names]
    if unknown:
        raise ValueError(f"figures: no cell named {', '.join(map(repr, unknown))} in this grid; cell names look "
                         f"like {names[0]!r}, or 'best'")


def config_model_keys(config: GridConfig) -> str:
    """The model settings that differ from the defaults, as ``model.key=value`` (what an error names)."""
    from parrot_jax.config import MODEL_CLASSES_PLACEHOLDER
    from parrot_jax.models import ModelConfig

    default, given = ModelConfig(MODEL_CLASSES_PLACEHOLDER).to_dict(), config.model.to_dict()
    changed = [f"model.{k}={given[k]}" for k in given if given[k] != default[k]]
    return f"({', '.join(changed)})" if changed else "(the defaults)"


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

    Under several processes every process calls it; only the coordinator writes and prints. The writer
    holds the run folder's lock (`locks.exclusive`) throughout: a second run of the same folder is refused
    at once, naming the holder."""
    from parrot_jax import distributed as dist

    if dry_run or not dist.is_coordinator():
        return _run_grid(config, provenance, dry_run, echo)
    with exclusive(config.run_dir, "grid run"):
        return _run_grid(config, provenance, dry_run, echo)


def _run_grid(config: GridConfig, provenance: dict | None, dry_run: bool, echo: Callable[[str], None]) -> GridOutcome:
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
    if not cells:  # a dry run reports it too: it checks what a run would refuse
        only = f" for the config's corpora ({', '.join(config.corpora)})" if config.corpora else ""
        raise FileNotFoundError(f"no features to run under {config.features}/{only} (run `parrot extract` first)")
    cells_dir = config.run_dir / "cells"
    data = {c: load_corpus(config.features, c, sorted({e for x in cells if x.corpus == c for e in x.encoders}))
            for c in dict.fromkeys(x.corpus for x in cells)}
    check_layer_inputs(cells, config, data)
    keys = {cell.name: cell_key(cell, config, data[cell.corpus]) for cell in cells}
    # process 0 reads (and hashes) the records and artifacts; the others take its answer below
    found = [STATUSES.index(reuse_status(cell, config, keys[cell.name])) if writer else 0 for cell in cells]
    # every process runs the cells process 0 found missing (a file may appear while others look)
    status = {cell.name: STATUSES[i] for cell, i in zip(cells, dist.from_coordinator(np.array(found, np.int32)))}
    folds, split_records = check_run(config, data)
    check_cells(cells, config, data)
    for corpus, record in split_records.items():
        if record and (record["missing"]["count"] or record["unused"]["count"]):
            echo(f"{corpus}: {record['missing']['count']} split row(s) not in the store and "
                 f"{record['unused']['count']} store row(s) in no split left out (allow_missing)")
    for corpus, corpus_folds in folds.items():
        echo(validation_line(corpus, corpus_folds, config.val_policy, data[corpus].speakers)
             + (" (train.monitor=none: no early stopping)" if config.train.monitor == "none" else ""))
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
    groups = pack_groups(todo, config, data, folds)
    packed = f" as {len(groups)} program(s) (pack_cells={config.pack_cells})" if len(groups) < len(todo) else ""
    echo(f"{len(cells)} cells: {len(cells) - len(todo)} done and unchanged (skipped), {len(todo)} to run{packed}")
    with tqdm(total=len(todo), desc="cells", unit="cell", position=0, dynamic_ncols=True, disable=not writer) as bar:
        for group in groups:
            bar.set_postfix_str(", ".join(c.name for c in group))
            corpus = group[0].corpus
            records = run_cells(group, config, data[corpus], folds[corpus], provenance, keys, split_records[corpus])
            if writer:
                for cell, record in zip(group, records):
                    write_json(cells_dir / f"{cell.name}.json", record)
                    note = early_stop_note(cell.name, record)
                    if note:
                        echo(note)
            bar.update(len(group))
    dist.barrier("parrot-grid-cells-written")
    records = {c.name: json.loads((cells_dir / f"{c.name}.json").read_text()) for c in cells}
    if writer:
        cell_records = [report.CellRecord.from_json(records[c.name]) for c in cells]
        row_order = list(dict.fromkeys(c.abbrev for c in cells))
        echo("writing tables and their figures")
        report.write_tables(cell_records, config.run_dir, row_order, metrics=config.metrics,
                            test_train_ratio={c: test_train_ratio(f) for c, f in folds.items()})
        draw_figures(config, cells, records, echo)
    seconds = time.perf_counter() - t0  # cells, tables and figures
    if writer:
        write_json(config.run_dir / "grid.json", {
            "config": config_dict(config), "provenance": provenance, "notes": notes,
            "splits": {c: r for c, r in split_records.items() if r is not None},
            "validation": {c: validation_line(c, f, config.val_policy, data[c].speakers) for c, f in folds.items()},
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

    written, chosen, t0 = [], figure_cells(config, cells, records), time.perf_counter()
    for i, cell in enumerate(chosen, start=1):
        record = records[cell.name]
        title = f"{cell.corpus}: {cell.method} {cell.abbrev}"
        echo(f"figures {i}/{len(chosen)}: confusion matrix of {cell.name}")
        path = config.run_dir / f"confusion_{cell.name}.png"
        report.plot_confusion(np.asarray(record["confusion"]), record["class_names"], title, path)
        written.append(path)
        acts = record["artifacts"].get("penultimate")
        if acts:
            with np.load(config.run_dir / "cells" / acts) as saved:
                activations, labels = saved["activations"], saved["labels"]
            echo(f"figures {i}/{len(chosen)}: t-SNE of {cell.name} ({len(activations)} rows)")
            try:
                points = report.tsne_embedding(activations, seed=config.split_seed)
            except report.FigureSkipped as reason:
                echo(f"figures: t-SNE of {cell.name} skipped: {reason}")
                continue
            path = config.run_dir / f"tsne_{cell.name}.png"
            report.plot_tsne(points, labels, record["class_names"], f"{title} (penultimate layer)", path)
            written.append(path)
        else:
            echo(f"figures: {cell.name} kept no penultimate activations (tsne_methods={config.tsne_methods})")
    if chosen:
        echo(f"figures: {len(written)} written ({time.perf_counter() - t0:.1f} s)")
    return written
