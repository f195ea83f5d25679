"""parrot_jax.grid: configs and overrides, the paper's cells, keys, and a resumable run that survives SIGKILL."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from parrot_jax import cells, grid
from parrot_jax.cells import Cell, plan_cells
from parrot_jax.config import GridConfig, apply_overrides
from parrot_jax.features import CorpusData, load_corpus
from parrot_jax.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
PAPER_ENCODERS = ["ssam-tiny", "ssam-small", "ssam-base", "wavlm-base", "hubert-base", "wav2vec2-base",
                  "unispeech-sat-base", "mms-1b"]
# A tiny grid: 3 folds, 2 epochs, 2 classical feature sets of a 24-utterance demo corpus; 6 cells.
TINY_CONFIG = '''
from parrot_jax.config import GridConfig

def get_config():
    return GridConfig(run="tiny", features={features!r}, results={results!r}, folds=3, val_fraction=0.25,
                      train={{"epochs": 2, "batch_size": 8, "eval_batch_size": 8}},
                      model={{"filters": (4, 8), "latent_dim": 8, "hidden": 16}}, table1=("svm", "fcn"))
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A feature store of a 24-utterance demo corpus (3 speakers x 2 texts x 4 emotions)."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.extraction import extract

    base = tmp_path_factory.mktemp("grid")
    root = generate_demo_corpus(base / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, ["mfcc-stats", "logmel-stats"], base / "features", progress=False)
    return base / "features"


class Columns:
    """Stands in for an attention encoder (the grid pairs encoders by their registry family): 12 columns
    of the real logmel-stats features, from another offset per name, so that cells of equal shapes differ."""

    dim = 12

    def __init__(self, name: str, start: int):
        from parrot_jax.encoders import registry

        self.inner, self.name, self.start = registry.build("logmel-stats"), name, start
        self.sample_rate, self.min_samples = self.inner.sample_rate, self.inner.min_samples

    def embed_batch(self, waves):
        return self.inner.embed_batch(waves)[:, self.start : self.start + self.dim]

    def metadata(self) -> dict:
        return {"name": self.name, "options": {"stand_in": "logmel-stats columns", "start": self.start},
                "run_options": {}, "checkpoint_sha256": None}


@pytest.fixture(scope="module")
def equal_store(tmp_path_factory) -> Path:
    """The demo corpus with three 12-d feature sets named wavlm-base, hubert-base, wav2vec2-base: Table 1's
    three FCN cells have equal shapes, and so have Table 2's three PARROT pairs."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.extraction import extract

    base = tmp_path_factory.mktemp("equal")
    root = generate_demo_corpus(base / "corpus", seed=0, n_speakers=3, n_texts=2)
    encoders = [Columns(name, start) for name, start in (("wavlm-base", 0), ("hubert-base", 20), ("wav2vec2-base", 40))]
    extract("demo", root, encoders, base / "features", progress=False)
    return base / "features"


def equal_config(store: Path, results: Path, run: str, pack_cells: int, **extra) -> GridConfig:
    """6 cells (FCN x 3 encoders, PARROT x 3 pairs), 3 folds, 2 epochs, tiny model, 20 Sinkhorn iterations."""
    return GridConfig(run=run, features=str(store), results=str(results), folds=3, val_fraction=0.25,
                      table1=("fcn",), table2=("parrot",), pack_cells=pack_cells,
                      train={"epochs": 2, "batch_size": 8, "eval_batch_size": 8},
                      model={"filters": (4, 8), "latent_dim": 8, "hidden": 16,
                             "sinkhorn": {"max_iterations": 20, "threshold": None}}, **extra)


def same_results(a: dict, b: dict) -> bool:
    """Two records of one cell hold the same key, predictions, metrics and epochs (probabilities 1e-5)."""
    runs = zip(a["result"]["runs"], b["result"]["runs"], strict=True)
    return a["key"] == b["key"] and a["metrics"] == b["metrics"] and a["confusion"] == b["confusion"] and all(
        (x["seed"], x["fold"], x["predictions"], x["test_indices"], x["best_epoch"], x["epochs_run"])
        == (y["seed"], y["fold"], y["predictions"], y["test_indices"], y["best_epoch"], y["epochs_run"])
        and np.allclose(x["probabilities"], y["probabilities"], atol=1e-5)
        for x, y in runs
    )


@pytest.fixture(scope="module")
def alone_grid(equal_store, tmp_path_factory) -> grid.GridOutcome:
    """The 6-cell grid of `equal_config`, each cell trained alone, in this process."""
    return grid.run_grid(equal_config(equal_store, tmp_path_factory.mktemp("alone"), "alone", 1), echo=lambda _: None)


def _config_file(tmp_path: Path, store: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG.format(features=str(store), results=str(tmp_path / "results")))
    return path


def test_key_follows_config_and_features(store):
    data = load_corpus(store, "demo", ["mfcc-stats", "logmel-stats"])
    svm, parrot = Cell("demo", 1, "svm", ("mfcc-stats",)), Cell("demo", 2, "parrot", ("mfcc-stats", "logmel-stats"))
    base = GridConfig()
    longer = apply_overrides(base, ["train.epochs=3"])
    assert cells.cell_key(svm, base, data) == cells.cell_key(svm, longer, data)  # epochs do not touch the SVM
    assert cells.cell_key(parrot, base, data) != cells.cell_key(parrot, longer, data)
    assert cells.cell_key(svm, base, data) != cells.cell_key(svm, apply_overrides(base, ["folds=4"]), data)
    data.hashes["mfcc-stats"] = "0" * 64  # other feature content
    assert cells.cell_key(parrot, base, data) != cells.cell_key(parrot, longer, data) != ""
    assert data.labels.tolist().count(0) == 6 and data.class_names == ("anger", "happiness", "neutral", "sadness")


# ----------------------------------------------------------------------------------------------------
# a real run, killed and resumed


def _grid(config: Path, *extra: str, console_script: bool = False) -> subprocess.Popen:
    """`python experiments/run_grid.py --config CONFIG ...`, or the installed `parrot grid` console script."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_MININTERVAL="0", PYTHONPATH=str(REPO))
    command = [sys.executable, str(REPO / "experiments" / "run_grid.py")]
    if console_script:
        script = Path(sys.executable).with_name("parrot")
        if not script.is_file():
            pytest.skip(f"the `parrot` console script is not installed beside {sys.executable}")
        command = [str(script), "grid"]
    return subprocess.Popen([*command, "--config", str(config), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_sigkill_loses_only_the_cell_in_flight(tmp_path, store):
    """`parrot grid --run killed` SIGKILLed mid-run, then run again, reruns only the unfinished cells; the
    same grid through experiments/run_grid.py (one code path) finds every cell done."""
    config = _config_file(tmp_path, store)
    cells_dir = tmp_path / "results" / "killed" / "cells"
    proc = _grid(config, "--run", "killed", console_script=True)
    deadline = time.time() + 240
    while len(list(cells_dir.glob("*.json"))) < 3:  # SVMs first, then at least one trained cell
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "grid made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.read_bytes() for p in cells_dir.glob("*.json")}
    for text in finished.values():
        json.loads(text)  # every file present is a complete cell
    assert 3 <= len(finished) < 6  # 2 encoders x (svm, fcn) + 1 pair x (concat, parrot)

    rerun = _grid(config, "--run", "killed", console_script=True)
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out
    assert f"6 cells: {len(finished)} done and unchanged (skipped), {6 - len(finished)} to run" in out
    assert {p.name: p.read_bytes() for p in cells_dir.glob("*.json") if p.name in finished} == finished
    assert len(list(cells_dir.glob("*.json"))) == 6 and not list(cells_dir.glob(".*tmp*"))

    # outputs of the finished grid
    run = tmp_path / "results" / "killed"
    assert not (tmp_path / "results" / "tiny").exists()
    for name in ("table1.md", "table1.csv", "table1.png", "table2.md", "table2.csv", "table2.png", "grid.json"):
        assert (run / name).is_file(), name
    best = json.loads((run / "grid.json").read_text())
    assert set(best["cells"]) == {p.stem for p in cells_dir.glob("*.json")}
    assert len(list(run.glob("confusion_demo__parrot__*.png"))) == 1 and len(list(run.glob("tsne_*.png"))) == 1
    record = json.loads((cells_dir / "demo__parrot__mfcc-stats+logmel-stats.json").read_text())
    labels = load_corpus(store, "demo", ["mfcc-stats"]).labels
    assert np.sum(record["confusion"]) == len(labels)  # every utterance tested once
    for run_ in record["result"]["runs"]:  # the stored accuracy is the one its predictions give
        truth = labels[run_["test_indices"]]
        assert run_["accuracy"] == pytest.approx(np.mean(np.array(run_["predictions"]) == truth))
    assert record["provenance"]["source"] == config.read_text()
    assert record["feature_hashes"].keys() == {"mfcc-stats", "logmel-stats"}
    assert record["settings"]["train"]["epochs"] == 2 and record["versions"]["jax"]
    assert record["timings"]["train_seconds"] > 0

    # a changed setting reruns the cells it touches, and only those
    dry = _grid(config, "--run", "killed", "--dry-run")
    out, _ = dry.communicate(timeout=120)
    assert [line.split("]")[0].strip(" [") for line in out.splitlines() if line.startswith("  [")] == ["done"] * 6, out
    dry = _grid(config, "--run", "killed", "--dry-run", "--set", "train.epochs=3")
    out, _ = dry.communicate(timeout=120)
    status = [line.split("]")[0].strip(" [") for line in out.splitlines() if line.startswith("  [")]
    assert status == ["done"] * 2 + ["changed"] * 4, out  # the SVM rows do not depend on epochs


# ----------------------------------------------------------------------------------------------------
# cells of equal shapes packed into one program


def test_pack_groups_follow_corpus_method_and_shapes():
    """The paper's grid on CREMA-D (registry dims): Table 2 PARROT packs A(T)+W/H/W2/U, the six
    768+768 attention pairs (4 + 2 with pack_cells=4), and the four 768+1280 pairs with MMS."""
    config = GridConfig(pack_cells=4)
    cells, _ = plan_cells(config, {"cremad": PAPER_ENCODERS})
    from parrot_jax.encoders import registry

    data = {"cremad": CorpusData("cremad", [], np.zeros(2), ("anger", "fear"), None,
                                 {e: np.zeros((2, registry.ENCODERS[e].dim), np.float32) for e in PAPER_ENCODERS},
                                 {}, {})}
    groups = grid.pack_groups(cells, config, data, {"cremad": [None] * 5})
    assert sorted(c.name for g in groups for c in g) == sorted(c.name for c in cells)  # each cell once
    assert all(len(g) == 1 for g in groups if g[0].method == "svm")
    abbrevs = [[c.abbrev for c in g] for g in groups if g[0].method == "parrot"]
    assert abbrevs[:2] == [["A(T)+W", "A(T)+H", "A(T)+W2", "A(T)+U"], ["A(T)+M"]]
    assert ["W+H", "W+W2", "W+U", "H+W2"] in abbrevs and ["H+U", "W2+U"] in abbrevs
    assert ["W+M", "H+M", "W2+M", "U+M"] in abbrevs
    assert [[c.abbrev for c in g] for g in groups if g[0].method == "fcn"] == [
        ["A(T)"], ["A(S)"], ["A(B)"], ["W", "H", "W2", "U"], ["M"]]
    assert [c for g in groups for c in g if c.method == "concat"][0].abbrev == "A(T)+W"  # order kept
    assert all(len(g) == 1 for g in grid.pack_groups(cells, GridConfig(), data, {"cremad": [None] * 5}))  # "auto" on CPU: each alone
    with pytest.raises(ValueError, match="GridConfig.pack_cells: expected an int >= 1 or 'auto', got 0"):
        GridConfig(pack_cells=0)


@pytest.mark.slow
def test_packed_cells_write_the_records_of_cells_trained_alone(tmp_path, equal_store, alone_grid):
    """pack_cells=3 trains the 6 cells as 2 programs and writes the records of the cells trained alone;
    a pack whose cells are partly done trains only the missing ones."""
    config = equal_config(equal_store, tmp_path, "packed", 3)
    lines: list[str] = []
    packed = grid.run_grid(config, echo=lines.append)
    assert "6 cells: 0 done and unchanged (skipped), 6 to run as 2 program(s) (pack_cells=3)" in lines
    assert packed.records.keys() == alone_grid.records.keys() and len(packed.records) == 6
    for name, record in alone_grid.records.items():
        assert same_results(packed.records[name], record), name
        assert len(packed.records[name]["timings"]["packed_with"]) == 2
    assert packed.tables == alone_grid.tables

    cells_dir = config.run_dir / "cells"
    pairs = sorted(cells_dir.glob("demo__parrot__*.json"))
    assert len(pairs) == 3
    kept = pairs[0].read_bytes()
    for path in pairs[1:]:
        path.unlink()
    lines.clear()
    again = grid.run_grid(config, echo=lines.append)
    assert "6 cells: 4 done and unchanged (skipped), 2 to run as 1 program(s) (pack_cells=3)" in lines
    assert pairs[0].read_bytes() == kept
    for path in pairs[1:]:
        record = again.records[path.stem]
        assert same_results(record, alone_grid.records[path.stem])
        assert record["timings"]["packed_with"] == [p.stem for p in pairs[1:] if p != path]


# A grid run by one of several jax.distributed processes. An audit hook (sys.addaudithook: Python's
# own record of file operations) lists every file the process creates, writes, renames or removes
# under the results folder.
GRID_PROCESS = """
import hashlib, json, os, sys
from pathlib import Path

results = os.path.realpath(sys.argv[2])
touched = []

def audit(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            touched.append(("write", args[0]))
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree") and isinstance(args[0], (str, os.PathLike)):
        touched.append((event, args[1] if event == "os.rename" else args[0]))

sys.addaudithook(audit)
from parrot_jax import distributed as dist

dist.initialize_multihost()
import jax
from parrot_jax import grid

from parrot_jax.config import load_config
config, provenance = load_config(sys.argv[1])
outcome = grid.run_grid(config, provenance, echo=lambda _: None)
ours = sorted({(e, os.path.relpath(os.path.realpath(p), results)) for e, p in touched
               if os.path.realpath(p).startswith(results + os.sep)})
digest = lambda value: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
print(json.dumps({"process": jax.process_index(), "devices": len(jax.devices()), "touched": ours,
                  "renamed": [p for e, p in touched if e == "os.rename" and os.path.realpath(p).startswith(results)],
                  "records": digest(outcome.records), "tables": digest(outcome.tables),
                  "status": outcome.status}))
"""


@pytest.mark.slow
def test_two_processes_run_the_grid_and_only_host_0_writes(tmp_path, equal_store, alone_grid):
    """Two jax.distributed processes on localhost (2 CPU devices each) run the 6-cell grid packed as 2
    programs with checkpoints: process 1 creates, writes, renames and removes nothing under the results
    folder; process 0 writes each cell record once; both return the same records and tables, and the
    records equal those of the one-process grid trained cell by cell."""
    from test_distributed import _run_processes

    config = equal_config(equal_store, tmp_path / "results", "two", 3, checkpoints=True)
    path = tmp_path / "two.py"
    path.write_text(f"from parrot_jax.config import GridConfig\n\ndef get_config():\n"
                    f"    return GridConfig(**{dataclasses.asdict(config)!r})\n")
    outs = _run_processes(GRID_PROCESS, 2, argv=lambda rank: [str(path), str(tmp_path / "results")])
    assert [(o["process"], o["devices"]) for o in outs] == [(0, 4), (1, 4)]
    assert outs[1]["touched"] == [], outs[1]["touched"]
    run = config.run_dir
    cell_files = [str(run / "cells" / f"{name}.json") for name in alone_grid.records]
    renamed = [os.path.realpath(p) for p in outs[0]["renamed"]]
    assert all(renamed.count(os.path.realpath(p)) == 1 for p in cell_files), renamed
    assert renamed.count(os.path.realpath(run / "grid.json")) == 1
    assert outs[0]["records"] == outs[1]["records"] and outs[0]["tables"] == outs[1]["tables"]
    assert set(outs[0]["status"].values()) == {"new"}
    for name, record in alone_grid.records.items():
        assert same_results(json.loads((run / "cells" / f"{name}.json").read_text()), record), name
        assert (run / "models" / name / "model.json").is_file()
    for name in ("table1.md", "table2.md", "grid.json"):
        assert (run / name).is_file()
    from parrot_jax.saved_model import load_model

    assert load_model(run / "models" / "demo__parrot__wavlm-base+hubert-base").members == 3  # 3 folds x 1 seed


def test_degenerate_tsne_is_skipped_with_a_line(tmp_path):
    """Penultimate activations all equal (a corpus of one repeated recording) used to segfault the grid."""
    config = GridConfig(run="same", results=str(tmp_path), figures=("demo__parrot__a+b",))
    cell = Cell("demo", 2, "parrot", ("a", "b"))
    (config.run_dir / "cells").mkdir(parents=True)
    np.savez(config.run_dir / "cells" / "acts.npz", activations=np.ones((30, 8), np.float32),
             labels=np.repeat(np.arange(3), 10))
    record = {"confusion": [[10, 0, 0], [10, 0, 0], [10, 0, 0]], "class_names": ["anger", "fear", "sadness"],
              "artifacts": {"penultimate": "acts.npz"}}
    lines = []
    written = grid.draw_figures(config, [cell], {cell.name: record}, lines.append)
    assert written == [config.run_dir / "confusion_demo__parrot__a+b.png"] and written[0].is_file()
    assert lines[:-1] == ["figures 1/1: confusion matrix of demo__parrot__a+b",  # progress, then the skip
                          "figures 1/1: t-SNE of demo__parrot__a+b (30 rows)",
                          "figures: t-SNE of demo__parrot__a+b skipped: all 30 rows of the activations are equal: "
                          "nothing for t-SNE to map"]
    assert re.fullmatch(r"figures: 1 written \(\d+\.\d s\)", lines[-1])


def test_progress_without_validation_rows_shows_no_nan(recwarn):
    bar, progress = grid._epoch_bar(3, "cell", disable=True)
    progress(1, {"active": np.ones(3, bool), "train_loss": np.array([1.0, 2.0, 3.0]),
                 "val_accuracy": np.full(3, np.nan)})
    assert "nan" not in str(bar.postfix) and "val_acc" not in str(bar.postfix) and "loss=2.000" in str(bar.postfix)
    progress(2, {"active": np.ones(3, bool), "train_loss": np.ones(3), "val_accuracy": np.array([0.5, np.nan, 1.0])})
    assert "val_acc=0.750" in str(bar.postfix)
    bar.close()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_progress_counts_the_epochs_of_every_pass(capsys):
    """Under fold_axis "loop" the members train one after another (one pass each): the bar counts the epochs of
    every pass, and names the member, never stepping back at a new pass's epoch 1."""
    bar, progress = grid._epoch_bar(3, "cell")
    one = {"active": np.ones(1, bool), "train_loss": np.ones(1), "val_accuracy": np.full(1, np.nan), "passes": 2}
    progress(3, {**one, "pass": 0})
    assert (bar.n, bar.total) == (3, 6) and "member=1/2" in str(bar.postfix) and "active" not in str(bar.postfix)
    progress(1, {**one, "pass": 1})
    assert (bar.n, bar.total) == (4, 6) and "member=2/2" in str(bar.postfix)
    bar.close()


# ----------------------------------------------------------------------------------------------------
# EmoBox split files, metrics by name, paired tests


def _write_emobox_splits(folder: Path, store: Path, extra: str | None = None) -> dict[int, set[str]]:
    """EmoBox-layout split files for the demo store: fold k tests speaker k's rows (k = 1, 2), trains on
    the rest; labels as capitalised names through a label_map.json. Returns {k: test file names}."""
    from parrot_jax.features import load_features

    fs = load_features(store, "demo", "mfcc-stats")
    speakers = sorted(set(fs.speakers))
    tests = {}
    for k in (1, 2):
        (folder / f"fold_{k}").mkdir(parents=True)
        parts = {"test": [], "train": []}
        for id_, label, speaker in zip(fs.ids, fs.labels, fs.speakers):
            parts["test" if speaker == speakers[k - 1] else "train"].append((Path(id_).name, label))
        if extra:
            parts["train"].append((extra, "anger"))
        for part, rows in parts.items():
            (folder / f"fold_{k}" / f"demo_{part}_fold_{k}.jsonl").write_text("".join(
                json.dumps({"key": f"demo-{n}", "wav": f"downloads/demo/wav/{n}.wav", "emo": lab[:3].upper()}) + "\n"
                for n, lab in rows))
        tests[k] = {n for n, _ in parts["test"]}
    codes = {"ANG": "Angry", "HAP": "Happy", "SAD": "Sad", "NEU": "Neutral", "FEA": "Fear", "BOR": "Boredom",
             "DIS": "Disgust"}
    (folder / "label_map.json").write_text(json.dumps(codes))
    return tests


def test_emobox_protocol_trains_on_the_split_files_and_tests_the_pairs(tmp_path, store):
    from parrot_jax.features import load_features

    splits = tmp_path / "emobox" / "demo"
    tests = _write_emobox_splits(splits, store, extra="99z99Wz")
    config = GridConfig(run="emobox", features=str(store), results=str(tmp_path / "results"), protocol="emobox",
                        splits=str(tmp_path / "emobox"), metrics=("wa", "ua", "f1"), seeds=(0, 1),
                        table1=("svm",), table2=("concat", "parrot"), val_fraction=0.5,
                        train={"epochs": 2, "batch_size": 8, "eval_batch_size": 8},
                        model={"filters": (4, 8), "latent_dim": 8, "hidden": 16,
                               "sinkhorn": {"max_iterations": 20, "threshold": None}})
    with pytest.raises(ValueError, match=r"1 file\(s\) in the split files are not in the store: 99z99Wz"):
        grid.run_grid(config, echo=lambda _: None)
    outcome = grid.run_grid(dataclasses.replace(config, allow_missing=True), echo=lambda _: None)
    ids = load_features(store, "demo", "mfcc-stats").ids
    record = outcome.records["demo__parrot__mfcc-stats+logmel-stats"]
    assert record["splits"]["missing"] == {"count": 1, "names": ["99z99Wz"]}
    assert json.loads((config.run_dir / "grid.json").read_text())["splits"]["demo"]["missing"]["count"] == 1
    assert len(record["result"]["runs"]) == 4  # 2 folds (the files') x 2 seeds
    for run in record["result"]["runs"]:
        assert {Path(ids[i]).name for i in run["test_indices"]} == tests[run["fold"] + 1]
    assert set(record["metrics"]) == {"accuracy", "uar", "macro_f1", "micro_f1"}
    assert record["metrics"]["micro_f1"] == pytest.approx(record["metrics"]["accuracy"])
    table2 = outcome.tables[2]
    assert "demo Concatenation WA | demo Concatenation UA | demo Concatenation F1" in table2
    paired = [line for line in table2.splitlines() if "PARROT vs Concatenation" in line]
    assert [line.split(" | ")[2] for line in paired] == ["WA", "UA", "F1"]
    assert all(line.endswith("| n/a | 4 |") for line in paired)  # Wilcoxon n/a with 4 runs
    with (config.run_dir / "significance.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["baseline"], r["metric"], r["runs"]) for r in rows] == [
        ("parrot", "concat", m, "4") for m in ("accuracy", "uar", "macro_f1")]
    for r in rows:  # 4 runs: the corrected t gives a p-value, Wilcoxon (minimum 6) says n/a
        assert 0.0 <= float(r["corrected_t_p"]) <= 1.0 and r["wilcoxon_p"] == ""
        assert "wilcoxon n/a: needs at least 6 non-zero differences" in r["note"]


@pytest.mark.parametrize("refit", [False, True])
def test_default_validation_spares_two_speakers_and_every_model_fits_the_same_rows(tmp_path, store, refit):
    """EmoBox-style files with no valid part, two speakers in each training part: "auto" carves rows (at most a
    quarter), never a speaker; the record says so; the SVM and the FCN fit on the same rows; --folds, unused
    under EmoBox, leaves the finished cells' keys alone."""
    _write_emobox_splits(tmp_path / "emobox" / "demo", store)
    lines = []
    config = GridConfig(run="fair", features=str(store), results=str(tmp_path / "results"), protocol="emobox",
                        splits=str(tmp_path / "emobox"), table1=("svm", "fcn"), table2=(),
                        train={"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "monitor": "loss", "refit": refit},
                        model={"hidden": 16})
    outcome = grid.run_grid(config, echo=lines.append)
    svm, fcn = (outcome.records[f"demo__{m}__mfcc-stats"] for m in ("svm", "fcn"))
    assert fcn["validation"] == {"policy": "auto", "ran": "stratified", "fit": "train+val" if refit else "train"}
    assert svm["fold_rows"] == fcn["fold_rows"] == [{"train": 14, "val": 2, "test": 8, "fit": 16 if refit else 14}] * 2
    assert all(r["train"] >= 0.75 * (r["train"] + r["val"]) for r in fcn["fold_rows"])
    assert ("demo: validation auto -> stratified; per fold: 2 of 16 rows (12%), 1 of 2 speakers (rows of them) | "
            "2 of 16 rows (12%), 1 of 2 speakers (rows of them)") in lines
    assert fcn["best_epoch"]["members"] == 2 and 1 <= fcn["best_epoch"]["median"] <= 2
    assert fcn["config"]["folds"] is None and "folds" not in fcn["settings"]
    again = grid.run_grid(dataclasses.replace(config, folds=3), dry_run=True, echo=lambda _: None)
    assert set(again.status.values()) == {"done"}
    assert any(line.startswith("warning: demo__fcn__mfcc-stats: 2 of 2 members kept an epoch <= 3") for line in lines)


def test_without_early_stopping_auto_holds_out_nothing(tmp_path, store):
    lines = []
    config = GridConfig(run="all", features=str(store), results=str(tmp_path / "results"), folds=3, table1=("svm", "fcn"),
                        table2=(), encoders=("mfcc-stats",), train={"epochs": 2, "batch_size": 8, "monitor": "none"},
                        model={"hidden": 16})
    outcome = grid.run_grid(config, echo=lines.append)
    svm, fcn = (outcome.records[f"demo__{m}__mfcc-stats"] for m in ("svm", "fcn"))
    assert svm["fold_rows"] == fcn["fold_rows"] == [{"train": 16, "val": 0, "test": 8, "fit": 16}] * 3
    assert "demo: validation auto -> none; per fold: 0 of 16 rows (0%) | 0 of 16 rows (0%) | 0 of 16 rows (0%) " \
           "(train.monitor=none: no early stopping)" in lines
    assert [r["best_epoch"] for r in fcn["result"]["runs"]] == [2, 2, 2]
    with pytest.raises(ValueError, match="val_policy 'speaker' holds out validation rows that train.monitor='none'"):
        dataclasses.replace(config, val_policy="speaker")


def test_a_non_finite_loss_stops_the_cell_and_makes_no_row(tmp_path, store):
    config = GridConfig(run="nan", features=str(store), results=str(tmp_path / "results"), folds=3, table1=("fcn",),
                        table2=(), encoders=("mfcc-stats",), train={"epochs": 3, "batch_size": 8, "learning_rate": 1e30},
                        model={"hidden": 16})
    with pytest.raises(ValueError, match=r"^cell demo__fcn__mfcc-stats: seed 0, fold \d \(0-based\), epoch \d: "
                       r"training loss is nan \(not finite\); the grid stops here, writing no record or table row"):
        grid.run_grid(config, echo=lambda _: None)
    assert not (config.run_dir / "cells" / "demo__fcn__mfcc-stats.json").exists()
    assert not (config.run_dir / "table1.md").exists()


def test_grid_command_takes_run_and_metrics(tmp_path, store, capsys):
    from parrot_jax import cli

    config = _config_file(tmp_path, store)
    assert cli.main(["grid", "--config", str(config), "--run", "named", "--metrics", "wa,ua", "--dry-run"]) == 0
    assert f"cells in {tmp_path / 'results' / 'named'}" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------
# features holding every layer (an encoder's layer="all")


class Layers(Columns):
    """Stands in for an attention encoder with layer="all": 3 "layers" of 12 logmel-stats columns each."""

    layers = 3

    def embed_batch(self, waves):
        full = self.inner.embed_batch(waves)
        return np.stack([full[:, k * self.dim : (k + 1) * self.dim] for k in range(self.layers)], axis=1)


def test_layer_all_features_need_a_model_that_mixes_layers(tmp_path):
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.extraction import extract
    from parrot_jax.features import load_features

    root = generate_demo_corpus(tmp_path / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, [Layers("wavlm-base", 0), Columns("hubert-base", 40)], tmp_path / "features", progress=False)
    stacked = load_features(tmp_path / "features", "demo", "wavlm-base")
    assert isinstance(stacked.matrix, np.memmap) and stacked.matrix.shape == (24, 3, 12)
    assert stacked.metadata["layers"] == 3 and load_features(tmp_path / "features", "demo", "hubert-base").matrix.ndim == 2
    config = equal_config(tmp_path / "features", tmp_path / "results", "layers", 1)
    with pytest.raises(ValueError, match=re.escape(
            "cell demo__svm__wavlm-base: feature wavlm-base holds every layer [24, 3, 12] (layer=all), but method "
            "'svm' cannot take it: the SVM takes one embedding per utterance")):
        grid.run_grid(dataclasses.replace(config, table1=("svm",)), echo=lambda _: None)
    with pytest.raises(ValueError, match=re.escape(
            "cell demo__fcn__wavlm-base: feature wavlm-base holds every layer [24, 3, 12] (layer=all), but method "
            "'fcn' cannot take it: its model has layer_mix='none'")):
        grid.run_grid(config, echo=lambda _: None)
    mixing = dataclasses.replace(config, table2=("concat",), model=dataclasses.replace(config.model, layer_mix="softmax"))
    outcome = grid.run_grid(mixing, echo=lambda _: None)
    assert set(outcome.records) == {"demo__fcn__wavlm-base", "demo__fcn__hubert-base", "demo__concat__wavlm-base+hubert-base"}
    assert all(len(r["result"]["runs"]) == 3 for r in outcome.records.values())


# ----------------------------------------------------------------------------------------------------
# issue 18: a locked run, saves that survive SIGKILL, dry runs that refuse what the run would


def _one_cell(store: Path, results: Path, run: str = "one", **extra) -> GridConfig:
    """One FCN cell on mfcc-stats (3 folds, 2 epochs, tiny model), its activations kept and its models saved."""
    return GridConfig(run=run, features=str(store), results=str(results), folds=3, val_fraction=0.25,
                      encoders=("mfcc-stats",), table1=("fcn",), table2=(), tsne_methods=("fcn",), checkpoints=True,
                      train={"epochs": 2, "batch_size": 8, "eval_batch_size": 8},
                      model={"filters": (4, 8), "latent_dim": 8, "hidden": 16}, **extra)


@pytest.mark.parametrize("overrides,message", [
    (["table1=cnn", "model.kernel_size=1000"],
     r"cell demo__cnn__mfcc-stats: model settings \(.*model.kernel_size=1000.*\) cannot take features of shapes "
     r"\[\[160\]\]: ConvStack: an embedding of length 160 is too short"),
    (["figures=bogus_cell"], r"figures: no cell named 'bogus_cell' in this grid; cell names look like "
                             r"'demo__fcn__mfcc-stats', or 'best'$"),
])
def test_a_dry_run_refuses_what_the_run_would_refuse_later(tmp_path, store, overrides, message):
    config = apply_overrides(_one_cell(store, tmp_path), overrides)
    with pytest.raises(ValueError, match=message):
        grid.run_grid(config, dry_run=True, echo=lambda _: None)
    assert not (tmp_path / "one").exists()  # nothing written


def test_a_second_process_on_a_running_grid_is_refused_naming_the_holder(tmp_path, store):
    from parrot_jax.locks import Locked, exclusive

    config = _one_cell(store, tmp_path)
    with exclusive(config.run_dir, "grid run"):  # held as a running grid holds it
        with pytest.raises(Locked, match=rf"^grid run {re.escape(str(config.run_dir))} is in use by process "
                                         rf"{os.getpid()} on "):
            grid.run_grid(config, echo=lambda _: None)
    assert not (config.run_dir / "cells").exists()  # refused before anything ran
    assert grid.run_grid(config, dry_run=True, echo=lambda _: None).status  # a dry run writes nothing: no lock


@pytest.mark.slow
def test_two_grids_started_on_one_run_one_is_refused_the_other_finishes_alone(tmp_path, store):
    """Issue 18 #1: `G --run r` and `G --run r --epochs 3` at once mixed their cells; now the second is refused at
    once, naming the first, whose tables are those of the same grid run alone."""
    config = _config_file(tmp_path, store)
    lock = tmp_path / "results" / "r" / ".lock"
    small = ("--set", "table2=", "--encoders", "mfcc-stats")
    first = _grid(config, "--run", "r", *small)
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text()):
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "the first grid took no lock"
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # frozen while it holds the lock, however fast it would run
    try:
        second = _grid(config, "--run", "r", *small, "--epochs", "3")
        out, _ = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1, out
    assert out.splitlines()[-1].startswith(f"parrot grid: error: grid run {lock.parent} is in use by process "
                                           f"{first.pid} on "), out
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    alone = _grid(config, "--run", "alone", *small)
    assert alone.wait(timeout=300) == 0
    for name in ("table1.md", "table1.csv"):
        assert (lock.parent / name).read_text() == (tmp_path / "results" / "alone" / name).read_text()


@pytest.mark.slow
def test_leftovers_of_killed_saves_are_cleaned_and_damaged_artifacts_rebuilt(tmp_path, store):
    """Issue 18 #2 and #3: what a SIGKILL inside a save leaves (orbax's state.orbax-checkpoint-tmp in the model
    folder, a half-written model beside it, a half-written activations file) never blocks a rerun, and a
    truncated penultimate .npz is rebuilt instead of failing every rerun with BadZipFile."""
    from parrot_jax.saved_model import load_model

    config = _one_cell(store, tmp_path)
    cell = "demo__fcn__mfcc-stats"
    first = grid.run_grid(config, echo=lambda _: None)
    acts = config.run_dir / "cells" / f"{cell}.penultimate.npz"
    model = config.run_dir / "models" / cell
    good_acts, good_table = acts.read_bytes(), (config.run_dir / "table1.md").read_text()
    assert first.records[cell]["artifacts"]["penultimate_sha256"] == sha256_file(acts)

    acts.write_bytes(good_acts[: len(good_acts) // 2])  # truncated
    again = grid.run_grid(config, echo=lambda _: None)
    assert again.status[cell] == "changed" and acts.read_bytes() == good_acts
    record_path = config.run_dir / "cells" / f"{cell}.json"  # a record of an older version: no sha256
    record = json.loads(record_path.read_text())
    del record["artifacts"]["penultimate_sha256"]
    record_path.write_text(json.dumps(record))
    assert grid.run_grid(config, dry_run=True, echo=lambda _: None).status[cell] == "done"  # the file reads
    acts.write_bytes(good_acts[:-10])
    assert grid.run_grid(config, dry_run=True, echo=lambda _: None).status[cell] == "changed"

    # a kill inside orbax's save (old layout: its temporary inside the model folder, no model.json), a kill
    # inside this version's save (a temporary folder beside it), and one inside the activations' atomic write
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shutil.rmtree(model)
    (model / "state.orbax-checkpoint-tmp-1733000000").mkdir(parents=True)
    (model / "state.orbax-checkpoint-tmp-1733000000" / "_METADATA").write_text("{")
    (model.parent / f".{cell}.tmp-{dead.pid}" / "state").mkdir(parents=True)
    (acts.parent / f".{acts.name}.tmp-{dead.pid}").write_bytes(good_acts[:100])
    rerun = grid.run_grid(config, echo=lambda _: None)
    assert rerun.status[cell] == "changed"
    assert sorted(p.name for p in model.iterdir()) == ["model.json", "state"]
    assert sorted(p.name for p in model.parent.iterdir()) == [cell]
    assert sorted(p.name for p in acts.parent.iterdir()) == [f"{cell}.json", acts.name]
    assert load_model(model).members == 3 and acts.read_bytes() == good_acts
    assert (config.run_dir / "table1.md").read_text() == good_table
    assert grid.run_grid(config, echo=lambda _: None).status[cell] == "done"


def test_a_dry_run_refuses_an_empty_test_file_naming_it(tmp_path, store, capsys):
    """Issue 18 #6: an empty test file passed `--dry-run`, then the run ended in scikit-learn's `Found array with
    0 sample(s)... required by SVC`."""
    from parrot_jax import cli

    _write_emobox_splits(tmp_path / "splits", store)
    empty = tmp_path / "splits" / "fold_2" / "demo_test_fold_2.jsonl"
    empty.write_text("")
    config = _config_file(tmp_path, store)
    assert cli.main(["grid", "--config", str(config), "--protocol", "emobox", "--splits", str(tmp_path / "splits"),
                     "--allow-missing", "--dry-run"]) == 1
    assert capsys.readouterr().err == (f"parrot grid: error: {empty}: an empty test file (it lists no recording); "
                                       "every fold needs test rows\n")
