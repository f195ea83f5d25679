"""parrot_jax.report: table layout, paper numbers beside ours, plots."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import numpy as np
import pytest

from parrot_jax.report import (
    CellRecord,
    markdown_table,
    plot_confusion,
    plot_table,
    plot_tsne,
    read_paper_tables,
    table_rows,
    table_title,
    FigureSkipped,
    tsne_embedding,
    write_tables,
)

CLASSES = ("anger", "neutral", "sadness")


def _cell(corpus, table, method, encoders, abbrev, acc, f1):
    return CellRecord(
        corpus=corpus, table=table, method=method, encoders=tuple(encoders), abbrev=abbrev,
        runs={"accuracy": tuple(acc), "macro_f1": tuple(f1), "uar": tuple(acc)},
        confusion=np.array([[5, 1, 0], [0, 6, 0], [1, 0, 4]]), class_names=CLASSES,
        name=f"{corpus}-{method}-{abbrev}",
    )


def _cells():
    return [
        _cell("emodb", 2, "parrot", ["ssam-base", "hubert-base"], "A(B)+H", [0.91, 0.93], [0.90, 0.92]),
        _cell("emodb", 2, "concat", ["ssam-base", "hubert-base"], "A(B)+H", [0.90, 0.90], [0.88, 0.88]),
        _cell("emodb", 2, "parrot", ["mfcc-stats", "logmel-stats"], "MFCC+LogMel", [0.5], [0.4]),
        _cell("cremad", 2, "parrot", ["ssam-base", "hubert-base"], "A(B)+H", [0.70, 0.74], [0.7, 0.7]),
        _cell("emodb", 1, "svm", ["wavlm-base"], "W", [0.85, 0.86], [0.84, 0.85]),
        _cell("emodb", 1, "cnn", ["wavlm-base"], "W", [0.89, 0.89], [0.88, 0.88]),
    ]


def test_score_is_mean_and_sample_std_in_percent():
    cell = _cells()[0]
    mean, std = cell.score("accuracy")
    assert mean == pytest.approx(92.0)
    assert std == pytest.approx(np.std([91.0, 93.0], ddof=1))
    assert _cells()[2].score("accuracy") == (50.0, None)  # one run: no spread


def test_non_finite_scores_are_refused():
    cell = _cell("emodb", 1, "svm", ["w"], "W", [0.5, float("nan")], [0.5, 0.5])
    with pytest.raises(ValueError, match="cell emodb-svm-W: non-finite accuracy"):
        cell.score("accuracy")


def test_table2_markdown_has_the_paper_layout_and_numbers():
    paper = read_paper_tables()
    text = markdown_table(table_rows(_cells(), 2, paper), 2, row_order=["A(B)+H"])
    lines = text.splitlines()
    # Columns as the paper: corpus (paper order: CREMA-D before Emo-DB) x fusion x {Acc, F1}.
    assert lines[0] == (
        "| Fusion | CREMA-D Concatenation Acc | CREMA-D Concatenation F1 | CREMA-D PARROT Acc | CREMA-D PARROT F1"
        " | Emo-DB Concatenation Acc | Emo-DB Concatenation F1 | Emo-DB PARROT Acc | Emo-DB PARROT F1 |"
    )
    # Paper: Emo-DB A(B)+H Concat 89.92 / 88.24, PARROT 92.24 / 91.53; CREMA-D PARROT 73.68 / 72.90.
    assert lines[2] == (
        "| A(B)+H | – | – | 72.00 ± 2.83 (73.68; -1.68) | 70.00 ± 0.00 (72.90; -2.90)"
        " | 90.00 ± 0.00 (89.92; +0.08) | 88.00 ± 0.00 (88.24; -0.24)"
        " | 92.00 ± 1.41 (92.24; -0.24) | 91.00 ± 1.41 (91.53; -0.53) |"
    )
    # A pair the paper never ran, of one run: its value alone, no ±.
    assert lines[3] == "| MFCC+LogMel | – | – | – | – | – | – | 50.00 | 40.00 |"


def test_table1_markdown_groups_rows_by_downstream():
    paper = read_paper_tables()
    lines = markdown_table(table_rows(_cells(), 1, paper), 1).splitlines()
    assert lines[0] == "| PTM | Emo-DB Acc | Emo-DB F1 |"
    assert lines[2:] [:4] == [
        "| **SVM** |  |  |",
        "| W | 85.50 ± 0.71 (85.09; +0.41) | 84.50 ± 0.71 (84.63; -0.13) |",
        "| **CNN** |  |  |",
        "| W | 89.00 ± 0.00 (89.14; -0.14) | 88.00 ± 0.00 (88.69; -0.69) |",
    ]


def test_legend_mentions_paper_numbers_only_where_there_are_some():
    with_paper = markdown_table(table_rows(_cells(), 2, read_paper_tables()), 2).splitlines()[-1]
    without = [r for r in table_rows(_cells(), 2, read_paper_tables()) if r.paper is None]
    assert "in brackets the paper's number" in with_paper
    assert markdown_table(without, 2).splitlines()[-1] == (
        "Table 2: scores in %, ours as mean ± sample std over folds and seeds (a single run: its value alone)."
    )


def test_write_tables_csv_and_png(tmp_path):
    written = write_tables(_cells(), tmp_path, row_order=["W", "A(B)+H"])
    assert set(written) == {1, 2}
    with (tmp_path / "table2.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 2  # 4 table-2 cells x {accuracy, macro_f1}
    parrot = next(r for r in rows if r["corpus"] == "emodb" and r["method"] == "parrot"
                  and r["encoders"] == "A(B)+H" and r["metric"] == "accuracy")
    assert float(parrot["mean"]) == pytest.approx(92.0)
    assert float(parrot["paper"]) == 92.24
    assert float(parrot["diff"]) == pytest.approx(-0.24)
    ours_only = next(r for r in rows if r["encoders"] == "MFCC+LogMel" and r["metric"] == "macro_f1")
    assert ours_only["paper"] == "" and ours_only["diff"] == ""
    for table in (1, 2):
        image = matplotlib.image.imread(tmp_path / f"table{table}.png")
        assert image.ndim == 3 and min(image.shape[:2]) > 200
        assert image[..., :3].std() > 0.05  # something is drawn


def test_one_run_tables_print_no_spread_and_figures_plot_every_metric(tmp_path):
    one = [_cell("ravdess", 1, "svm", ["mfcc-stats"], "MFCC", [0.9971], [0.99]),
           _cell("ravdess", 2, "parrot", ["mfcc-stats", "logmel-stats"], "MFCC+LMEL", [0.75], [0.7])]
    written = write_tables(one, tmp_path, metrics=("wa", "ua", "f1"), test_train_ratio={"ravdess": 0.25})
    assert "| MFCC | 99.71 | 99.71 | 99.00 |" in written[1] and "±" not in written[1].split("\n\n")[0]
    assert "(a single run: its value alone)" in written[1]
    with (tmp_path / "table1.csv").open() as fh:
        assert {r["std"] for r in csv.DictReader(fh)} == {""}
    rows = table_rows(one, 1, read_paper_tables(), ("wa", "ua", "f1"))
    assert table_title(rows, 1) == ("Table 1: our downstream models per encoder, 1 run(s) per cell (the paper has "
                                    "no numbers for these)")
    paper_rows = table_rows(_cells(), 2, read_paper_tables())
    assert table_title(paper_rows, 2).endswith("run(s) per cell against the paper's numbers")
    plot_table(rows[:1], 1, tmp_path / "one.png")  # WA only
    three = matplotlib.image.imread(tmp_path / "table1.png")
    assert three.shape[0] > 2.5 * matplotlib.image.imread(tmp_path / "one.png").shape[0]  # a panel row per metric


def test_median_best_epoch_in_tables():
    record = {"cell": {"corpus": "emodb", "table": 1, "method": "fcn", "encoders": ["mfcc-stats"], "abbrev": "MFCC",
                       "name": "emodb__fcn__mfcc-stats"},
              "metrics": {"accuracy": [0.5, 0.6, 0.7], "macro_f1": [0.5, 0.6, 0.7], "uar": [0.5, 0.6, 0.7]},
              "confusion": [[1, 0], [0, 1]], "class_names": ["anger", "sadness"],
              "result": {"runs": [{"seed": 0, "fold": f, "best_epoch": e, "confusion": [[1, 0], [0, 1]]}
                                  for f, e in enumerate((2, 9, 4))]}}
    cell = CellRecord.from_json(record)
    assert cell.median_best_epoch == 4.0
    text = markdown_table(table_rows([cell], 1, {}), 1)
    assert text.endswith("Median best epoch (the epoch whose params each member kept: early stopping's best, or "
                         "the last without early stopping; over seeds x folds): Emo-DB FCN MFCC 4.\n")


def test_confusion_plot_checks_its_shape(tmp_path):
    path = tmp_path / "c.png"
    plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], "t", path)
    assert matplotlib.image.imread(path).shape[0] > 100
    with pytest.raises(ValueError, match=r"confusion matrix of shape \(2, 2\) for 3 classes"):
        plot_confusion(np.eye(2), ["a", "b", "c"], "t", path)


def test_tsne_keeps_separated_classes_apart(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.normal(size=(3, 16)) * 20.0
    points = tsne_embedding(centres[labels] + rng.normal(size=(60, 16)))
    assert points.shape == (60, 2)
    # Every point's nearest neighbour in the 2-D map is of its own class.
    d = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(60) * 1e9
    assert (labels[d.argmin(axis=1)] == labels).all()
    plot_tsne(points, labels, CLASSES, "t", tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="t-SNE input holds NaN"):
        tsne_embedding(np.full((6, 2), np.nan))


@pytest.mark.parametrize("activations,message", [
    (np.ones((40, 8)), r"all 40 rows of the activations are equal: nothing for t-SNE to map"),
    (np.ones((4, 8)), r"t-SNE needs a \[N >= 5, D\] matrix, got shape \(4, 8\)"),
])  # fmt: skip
def test_degenerate_tsne_input_is_skipped_not_crashed(activations, message):
    with pytest.raises(FigureSkipped, match=message):
        tsne_embedding(activations)


def test_a_native_crash_in_tsne_is_a_skipped_figure(monkeypatch):
    """The t-SNE process dying (as sklearn's native code does on all-equal input) leaves the caller alive."""
    import parrot_jax.report as report

    monkeypatch.setattr(report, "_tsne", _die)
    with pytest.raises(FigureSkipped, match=r"t-SNE crashed in native code \(its process died\)"):
        report.tsne_embedding(np.random.default_rng(0).normal(size=(10, 3)))


def _die(*args):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def test_table2_marks_significant_cells_and_writes_p_values(tmp_path):
    """PARROT above Concatenation on every one of 6 matched runs (WA): marked †, both tests' p in the CSV;
    F1 differences that change sign: not marked."""
    import dataclasses

    run_ids = tuple((s, f) for s in (0, 1) for f in range(3))
    concat_acc = (0.70, 0.72, 0.71, 0.69, 0.73, 0.70)
    parrot_acc = tuple(a + d for a, d in zip(concat_acc, (0.05, 0.04, 0.06, 0.05, 0.03, 0.05)))
    f1 = (0.6, 0.7, 0.6, 0.7, 0.6, 0.7)
    concat = dataclasses.replace(_cell("emodb", 2, "concat", ["a", "b"], "A+B", concat_acc, f1), run_ids=run_ids)
    parrot = dataclasses.replace(_cell("emodb", 2, "parrot", ["a", "b"], "A+B", parrot_acc, f1[::-1]), run_ids=run_ids)
    tables = write_tables([concat, parrot], tmp_path, paper={}, metrics=("wa", "f1"), test_train_ratio={"emodb": 0.5})
    row = next(line for line in tables[2].splitlines() if line.startswith("| A+B |"))
    assert row.split(" | ")[3].endswith("†") and "†" not in row.split(" | ")[4]  # PARROT WA marked, F1 not
    with open(tmp_path / "significance.csv", newline="") as fh:
        wa, f1_row = list(csv.DictReader(fh))
    assert (wa["method"], wa["baseline"], wa["metric"], wa["runs"]) == ("parrot", "concat", "accuracy", "6")
    assert float(wa["corrected_t_p"]) < 0.05 and float(wa["wilcoxon_p"]) == pytest.approx(2 / 64)
    assert float(f1_row["corrected_t_p"]) > 0.05 and f1_row["note"] == ""
    assert "| Emo-DB A+B | PARROT vs Concatenation | WA | +4.67 |" in tables[2]


def test_a_full_disk_while_writing_tables_and_figures_names_the_file(tmp_path):
    """Issue 18: a full disk while the tables or figures were written said "[Errno 28] No space left on device",
    naming no file. A file-size limit refuses a write the same way (errno 27, no file name) and can be caused."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import json, resource, signal, sys\n"
        "from pathlib import Path\n"
        "from parrot_jax.report import CellRecord, plot_table, table_rows, write_csv\n"
        "cell = CellRecord.from_json(json.loads(sys.argv[2]))\n"
        "rows = table_rows([cell], 1, {})\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
        "out = Path(sys.argv[1])\n"
        "for write in (lambda: write_csv(rows, out / 'table1.csv'), lambda: plot_table(rows, 1, out / 'table1.png')):\n"
        "    try:\n"
        "        write()\n"
        "    except OSError as error:\n"
        "        print(error)\n"
    )
    record = {"cell": {"corpus": "emodb", "table": 1, "method": "fcn", "encoders": ["mfcc-stats"],
                       "abbrev": "MFCC", "name": "emodb__fcn__mfcc-stats"},
              "metrics": {"accuracy": [0.5, 0.6, 0.7], "macro_f1": [0.5, 0.6, 0.7], "uar": [0.5, 0.6, 0.7]},
              "confusion": [[1, 0], [0, 1]], "class_names": ["anger", "sadness"],
              "result": {"runs": [{"seed": 0, "fold": f, "best_epoch": 5, "confusion": [[1, 0], [0, 1]]}
                                  for f in range(3)]}}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), json.dumps(record)], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert done.stdout == (f"[Errno 27] writing {tmp_path / 'table1.csv'}: File too large\n"
                           f"[Errno 27] writing {tmp_path / 'table1.png'}: File too large\n"), done.stdout + done.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written, no temporary left
