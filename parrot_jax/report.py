"""Tables and figures of a grid run, laid out like the paper's Table 1 and Table 2.

Input: the per-cell JSON files a grid run writes (see `parrot_jax.grid`), read into `CellRecord`s.
Output, in the run folder:

- ``table1.md`` / ``table1.csv`` (single encoder x SVM, FCN, CNN) and ``table2.md`` / ``table2.csv``
  (encoder pairs x Concatenation, PARROT, and the HP-only / OT-only ablations where run), each with the
  paper's published number beside ours and the difference ``ours - paper`` (percentage points);
- ``table1.png`` / ``table2.png``: ours (mean +- std) against the paper, one panel per corpus;
- ``confusion_<cell>.png`` (the paper's Figure 3) and ``tsne_<cell>.png`` (its Figure 2);
- ``significance.csv``: for each Table 2 pair, PARROT against Concatenation and each ablation against
  PARROT, per metric, the paired tests of `parrot_jax.significance` over the matched (seed, fold) runs;
  ``table2.md`` marks a cell with † where the corrected resampled t-test gives p < 0.05 and lists the tests.

Scores are percentages. "mean +- std" is over every (seed, fold) run of a cell: the mean, and the
sample standard deviation (divisor n - 1); a cell of a single run shows its value alone (the spread of one
value is undefined, not zero), and its paired tests say n/a. Each neural cell's median best epoch (the
epoch early stopping kept, over its members) is listed below the table and in the CSV. The metrics shown are the
names asked for (`metrics.METRIC_ALIASES`: wa/acc, ua/uar, f1/macro_f1, micro_f1); the paper's tables
show Acc (= WA) and F1 (macro).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from parrot_jax.files import atomic_write, write_text
from parrot_jax.metrics import METRIC_ALIASES, from_confusion, metric_keys
from parrot_jax.significance import ALPHA, PairedTest, paired_tests

PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables.csv"  # package data

# The paper's corpora, in its column order, and how its tables name them.
PAPER_CORPORA = {"cremad": "CREMA-D", "emodb": "Emo-DB", "mesd": "MESD"}
# Row groups / column groups in the paper's order; ablations after the paper's two fusions.
TABLE1_METHODS = ("svm", "fcn", "cnn")
TABLE2_METHODS = ("concat", "parrot", "hadamard", "ot")
METHOD_TITLES = {
    "svm": "SVM",
    "fcn": "FCN",
    "cnn": "CNN",
    "concat": "Concatenation",
    "parrot": "PARROT",
    "hadamard": "HP only",
    "ot": "OT only",
}
METRICS = {"accuracy": "Acc", "macro_f1": "F1"}  # the paper's metrics (experiments/paper_tables.csv columns)
#: Column titles of the metric names a table may be asked for.
METRIC_TITLES = {"wa": "WA", "acc": "Acc", "accuracy": "Acc", "ua": "UA", "uar": "UAR", "f1": "F1",
                 "macro_f1": "F1", "micro_f1": "micro-F1"}  # fmt: skip
DEFAULT_METRICS = ("acc", "f1")
SIGNIFICANT = "†"

PaperKey = tuple[int, str, str, str]  # (table, method, encoders abbreviation, corpus)


@dataclass(frozen=True)
class CellRecord:
    """What the report needs from one cell's result file.

    `runs` maps a metric name to its per-(seed, fold) values as fractions in [0, 1], in the order of
    `run_ids` ((seed, fold) of each run; empty where unknown);
    `confusion[i, j]` counts test utterances of true class i predicted as j, summed over runs.
    """

    corpus: str
    table: int
    method: str
    encoders: tuple[str, ...]
    abbrev: str
    runs: dict[str, tuple[float, ...]]
    confusion: np.ndarray
    class_names: tuple[str, ...]
    name: str
    run_ids: tuple[tuple[int, int], ...] = ()
    best_epochs: tuple[int, ...] = ()  # per run, the epoch whose params were kept (empty: an SVM)

    @property
    def median_best_epoch(self) -> float | None:
        return float(np.median(self.best_epochs)) if self.best_epochs else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CellRecord":
        """A grid's cell record; metrics it lacks (micro_f1 in older records) come from its runs' confusions."""
        cell = data["cell"]
        runs = {k: tuple(float(v) for v in vals) for k, vals in data["metrics"].items()}
        per_run = data.get("result", {}).get("runs", [])
        if per_run:
            scores = [from_confusion(r["confusion"]) for r in per_run]
            runs.update({k: tuple(s[k] for s in scores) for k in scores[0] if k not in runs})
        return cls(
            corpus=cell["corpus"],
            table=int(cell["table"]),
            method=cell["method"],
            encoders=tuple(cell["encoders"]),
            abbrev=cell["abbrev"],
            runs=runs,
            confusion=np.asarray(data["confusion"], dtype=np.int64),
            class_names=tuple(data["class_names"]),
            name=cell["name"],
            run_ids=tuple((int(r["seed"]), int(r["fold"])) for r in per_run),
            best_epochs=tuple(int(r["best_epoch"]) for r in per_run if r.get("best_epoch") is not None),
        )

    def score(self, metric: str) -> tuple[float, float | None]:
        """(mean, sample std) of `metric` in percent over the cell's runs; std None for a single run."""
        values = 100.0 * np.asarray(self.runs[metric], dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"cell {self.name}: no runs recorded for {metric!r}")
        if not np.isfinite(values).all():
            raise ValueError(f"cell {self.name}: non-finite {metric} in {values.tolist()}")
        std = float(values.std(ddof=1)) if values.size > 1 else None
        return float(values.mean()), std


def read_paper_tables(path: Path = PAPER_TABLES) -> dict[PaperKey, dict[str, float]]:
    """The paper's published scores: (table, method, abbreviation, corpus) -> {metric: percent}."""
    if not path.is_file():
        raise FileNotFoundError(f"paper tables not found: {path} (expected the package's paper_tables.csv)")
    table: dict[PaperKey, dict[str, float]] = {}
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            key = (int(row["table"]), row["method"], row["encoders"], row["corpus"])
            if key in table:
                raise ValueError(f"{path}:{line}: duplicate row for {key}")
            table[key] = {metric: float(row[metric]) for metric in METRICS}
    return table


@dataclass(frozen=True)
class TableRow:
    """One (method, encoders, corpus, metric) entry of a report table."""

    table: int
    method: str
    abbrev: str
    corpus: str
    metric: str
    mean: float
    std: float | None  # None for a single run
    n: int
    paper: float | None
    median_best_epoch: float | None = None

    @property
    def diff(self) -> float | None:
        return None if self.paper is None else self.mean - self.paper


def table_rows(
    cells: Iterable[CellRecord], table: int, paper: dict[PaperKey, dict[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> list[TableRow]:
    """Every (cell, metric) of `table` beside the paper's number (None where the paper has none)."""
    rows = []
    for cell in cells:
        if cell.table != table:
            continue
        for metric in dict.fromkeys(metric_keys(metrics)):
            mean, std = cell.score(metric)
            published = paper.get((table, cell.method, cell.abbrev, cell.corpus), {}).get(metric)
            rows.append(
                TableRow(table, cell.method, cell.abbrev, cell.corpus, metric, mean, std,
                         len(cell.runs[metric]), published, cell.median_best_epoch)
            )
    return rows


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """`values` deduplicated, those in `order` first in that order, the rest in first-seen order."""
    seen = list(dict.fromkeys(values))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def _corpus_order(rows: Sequence[TableRow]) -> list[str]:
    return _ordered((r.corpus for r in rows), list(PAPER_CORPORA))


def _row_order(rows: Sequence[TableRow], row_order: Sequence[str]) -> list[str]:
    return _ordered((r.abbrev for r in rows), row_order)


def format_cell(row: TableRow | None, mark: str = "") -> str:
    """'ours ± std<mark> (paper; ours-paper)' ('ours<mark> ...' for a single run), or '–' where we have no
    result."""
    if row is None:
        return "–"
    ours = f"{row.mean:.2f}" + ("" if row.std is None else f" ± {row.std:.2f}") + mark
    if row.paper is None:
        return ours
    return f"{ours} ({row.paper:.2f}; {row.diff:+.2f})"


def markdown_table(rows: Sequence[TableRow], table: int, row_order: Sequence[str] = (),
                   metrics: Sequence[str] = DEFAULT_METRICS, tests: Sequence["Comparison"] = ()) -> str:
    """The paper's layout in Markdown.

    Table 1: columns corpus x metrics (default Acc, F1); rows grouped by downstream (SVM, FCN, CNN), one per encoder.
    Table 2: columns corpus x fusion x metrics; one row per encoder pair; `tests` (see `comparisons`) mark
    significant cells with † and are listed below the table.
    `row_order` lists encoder abbreviations (or pairs) in the order rows should appear.
    """
    index = {(r.method, r.abbrev, r.corpus, r.metric): r for r in rows}
    marks = {(c.method, c.abbrev, c.corpus, c.metric): SIGNIFICANT for c in tests if c.corrected_t.significant}
    corpora = _corpus_order(rows)
    labels = _row_order(rows, row_order)
    titles = {METRIC_ALIASES[m]: METRIC_TITLES[m] for m in metrics}
    metrics = list(titles)
    if table == 1:
        methods = _ordered((r.method for r in rows), TABLE1_METHODS)
        header = ["PTM"] + [f"{PAPER_CORPORA.get(c, c)} {titles[m]}" for c in corpora for m in metrics]
        lines = [_md_line(header), _md_line(["---"] * len(header))]
        for method in methods:
            lines.append(_md_line([f"**{METHOD_TITLES.get(method, method)}**"] + [""] * (len(header) - 1)))
            for label in labels:
                cells = [index.get((method, label, c, m)) for c in corpora for m in metrics]
                if any(cells):
                    lines.append(_md_line([label] + [format_cell(x) for x in cells]))
    elif table == 2:
        methods = _ordered((r.method for r in rows), TABLE2_METHODS)
        header = ["Fusion"] + [
            f"{PAPER_CORPORA.get(c, c)} {METHOD_TITLES.get(f, f)} {titles[m]}"
            for c in corpora for f in methods for m in metrics
        ]
        lines = [_md_line(header), _md_line(["---"] * len(header))]
        for label in labels:
            keys = [(f, label, c, m) for c in corpora for f in methods for m in metrics]
            lines.append(_md_line([label] + [format_cell(index.get(k), marks.get(k, "")) for k in keys]))
    else:
        raise ValueError(f"table must be 1 or 2, got {table!r}")
    legend = f"Table {table}: scores in %, ours as mean ± sample std over folds and seeds"
    if any(r.std is None for r in rows):
        legend += " (a single run: its value alone)"
    if any(r.paper is not None for r in rows):
        legend += "; in brackets the paper's number and ours minus the paper's (percentage points)"
    legend += "."
    text = "\n".join(lines) + "\n\n" + legend + "\n" + _epochs_line(rows)
    if tests:
        text += "\n" + significance_markdown(tests, titles)
    return text


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a Table 2 row: ``method`` against ``baseline`` on ``metric``."""

    corpus: str
    abbrev: str
    method: str
    baseline: str
    metric: str
    corrected_t: PairedTest
    wilcoxon: PairedTest


#: Table 2's paired comparisons: (method, baseline).
COMPARED = (("parrot", "concat"), ("hadamard", "parrot"), ("ot", "parrot"))


def comparisons(cells: Sequence[CellRecord], test_train_ratio: dict[str, float],
                metrics: Sequence[str] = DEFAULT_METRICS) -> list[Comparison]:
    """The paired tests of every Table 2 row holding both cells of a `COMPARED` pair, per metric, over the
    (seed, fold) runs the two cells share (`significance.paired_tests`); ``test_train_ratio[corpus]`` is
    the ratio of test to training rows of the corpus's folds."""
    index = {(c.corpus, c.abbrev, c.method): c for c in cells if c.table == 2}
    out = []
    for (corpus, abbrev, method), cell in index.items():
        for compared, baseline in COMPARED:
            other = index.get((corpus, abbrev, baseline))
            if method != compared or other is None:
                continue
            for metric in dict.fromkeys(metric_keys(metrics)):
                if not cell.run_ids or not other.run_ids:
                    raise ValueError(f"cells {cell.name} and {other.name}: runs without (seed, fold) ids cannot be paired")
                a = dict(zip(cell.run_ids, cell.runs[metric]))
                b = dict(zip(other.run_ids, other.runs[metric]))
                t, w = paired_tests(a, b, test_train_ratio[corpus])
                out.append(Comparison(corpus, abbrev, method, baseline, metric, t, w))
    return out


def significance_markdown(tests: Sequence[Comparison], titles: dict[str, str]) -> str:
    """The paired tests below Table 2: mean difference (points), corrected t p, Wilcoxon p, runs."""
    lines = [_md_line(["Pair", "Compared", "Metric", "mean diff (pp)", "corrected t p", "Wilcoxon p", "runs"]),
             _md_line(["---"] * 7)]
    for c in tests:
        lines.append(_md_line([
            f"{PAPER_CORPORA.get(c.corpus, c.corpus)} {c.abbrev}",
            f"{METHOD_TITLES.get(c.method, c.method)} vs {METHOD_TITLES.get(c.baseline, c.baseline)}",
            titles.get(c.metric, c.metric), f"{100 * c.corrected_t.mean_difference:+.2f}",
            c.corrected_t.p_text(), c.wilcoxon.p_text(), str(c.corrected_t.n),
        ]))
    notes = sorted({f"{r.test}: {r.note}" for c in tests for r in (c.corrected_t, c.wilcoxon) if r.p_value is None})
    return ("\n".join(lines) + f"\n\n{SIGNIFICANT}: differs from the compared method (Concatenation for PARROT, "
            f"PARROT for an ablation) with p < {ALPHA} in Nadeau and Bengio's corrected resampled t-test over the "
            "matched (seed, fold) runs; Wilcoxon signed-rank beside it. n/a: " + ("; ".join(notes) or "none") + ".\n")


SIGNIFICANCE_FIELDS = ("corpus", "pair", "method", "baseline", "metric", "runs", "mean_difference",
                       "corrected_t", "corrected_t_p", "wilcoxon_statistic", "wilcoxon_p", "note")


def write_significance_csv(tests: Sequence[Comparison], path: Path) -> None:
    """One line per comparison and metric; p-values empty ("n/a" in ``note``) below a test's minimum."""
    def num(value: float | None) -> str:
        return "" if value is None else repr(float(value))

    fh = io.StringIO(newline="")
    writer = csv.writer(fh)
    writer.writerow(SIGNIFICANCE_FIELDS)
    for c in tests:
        notes = "; ".join(f"{r.test} n/a: {r.note}" for r in (c.corrected_t, c.wilcoxon) if r.note)
        writer.writerow([c.corpus, c.abbrev, c.method, c.baseline, c.metric, c.corrected_t.n,
                         repr(c.corrected_t.mean_difference), num(c.corrected_t.statistic),
                         num(c.corrected_t.p_value), num(c.wilcoxon.statistic), num(c.wilcoxon.p_value), notes])
    write_text(path, fh.getvalue())


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _epochs_line(rows: Sequence[TableRow]) -> str:
    """'Median best epoch: FCN MFCC 12, ...' over the table's neural cells (first corpus order), or ''."""
    seen = {(r.corpus, r.method, r.abbrev): r.median_best_epoch for r in rows if r.median_best_epoch is not None}
    if not seen:
        return ""
    parts = [f"{PAPER_CORPORA.get(c, c)} {METHOD_TITLES.get(m, m)} {a} {e:g}" for (c, m, a), e in seen.items()]
    return ("\nMedian best epoch (the epoch whose params each member kept: early stopping's best, or the last "
            "without early stopping; over seeds x folds): " + ", ".join(parts) + ".\n")


CSV_FIELDS = ("table", "method", "encoders", "corpus", "metric", "mean", "std", "n", "paper", "diff",
              "median_best_epoch")


def write_csv(rows: Sequence[TableRow], path: Path) -> None:
    """One line per (method, encoders, corpus, metric); empty std for a single run, paper/diff where the
    paper has none, median_best_epoch for an SVM."""
    fh = io.StringIO(newline="")
    writer = csv.writer(fh)
    writer.writerow(CSV_FIELDS)
    for r in rows:
        writer.writerow([
            r.table, r.method, r.abbrev, r.corpus, r.metric, f"{r.mean:.4f}",
            "" if r.std is None else f"{r.std:.4f}", r.n,
            "" if r.paper is None else f"{r.paper:.2f}", "" if r.diff is None else f"{r.diff:.4f}",
            "" if r.median_best_epoch is None else f"{r.median_best_epoch:g}",
        ])
    write_text(path, fh.getvalue())


def table_title(rows: Sequence[TableRow], table: int) -> str:
    """What a table's figure compares: our models, runs per cell, and the paper only where it has numbers."""
    runs = "/".join(str(n) for n in sorted({r.n for r in rows}))
    paper = any(r.paper is not None for r in rows)
    compared = " against the paper's numbers" if paper else " (the paper has no numbers for these)"
    what = "downstream models per encoder" if table == 1 else "fusions per encoder pair"
    return f"Table {table}: our {what}, {runs} run(s) per cell{compared}"


def plot_table(rows: Sequence[TableRow], table: int, path: Path, row_order: Sequence[str] = ()) -> None:
    """Every metric of the rows, one panel per (metric, corpus): ours as a bar with its std (none for a
    single run), the paper's number as a diamond where it has one; the title names what is compared."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r.metric for r in rows))
    corpora = _corpus_order(rows)
    labels = _row_order(rows, row_order)
    methods = _ordered((r.method for r in rows), TABLE1_METHODS if table == 1 else TABLE2_METHODS)
    entries = [(m, lab) for m in methods for lab in labels]
    index = {(r.method, r.abbrev, r.corpus, r.metric): r for r in rows}
    height = max(2.5, 0.28 * len(entries) + 1.2)
    fig, axes = plt.subplots(len(metrics), len(corpora), figsize=(4.5 * len(corpora), height * len(metrics)),
                             squeeze=False)
    for axes_row, metric in zip(axes, metrics):
        for ax, corpus in zip(axes_row, corpora):
            shown = [(m, lab) for m, lab in entries if (m, lab, corpus, metric) in index]
            y = np.arange(len(shown))
            got = [index[(m, lab, corpus, metric)] for m, lab in shown]
            ax.barh(y, [r.mean for r in got], xerr=[0.0 if r.std is None else r.std for r in got], color="tab:blue",
                    alpha=0.7, label="ours (mean ± std over runs)")
            paper_y = [i for i, r in enumerate(got) if r.paper is not None]
            if paper_y:
                ax.plot([got[i].paper for i in paper_y], paper_y, "kD", markersize=4, label="paper")
            ax.set_yticks(y, [f"{METHOD_TITLES.get(m, m)} {lab}" for m, lab in shown], fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel(f"{METRIC_TITLES.get(metric, metric)} (%)")
            ax.set_title(PAPER_CORPORA.get(corpus, corpus))
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(table_title(rows, table), fontsize=9)
    fig.tight_layout(rect=(0.0, 0.6 / (height * len(metrics)), 1.0, 1.0))
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix (x: predicted, y: true, as the paper's Figure 3), counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    k = len(class_names)
    if confusion.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {confusion.shape} for {k} classes {list(class_names)}")
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.7 * k))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{confusion[i, j]}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


class FigureSkipped(ValueError):
    """A figure that cannot be drawn from its input; the message says why."""


def tsne_embedding(activations: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of [N, D] activations (sklearn, PCA init, perplexity min(30, (N - 1) / 3)).

    Raises FigureSkipped where the input cannot be mapped: not [N >= 5, D], non-finite values, or every
    row equal (PCA initialisation divides by zero there, and sklearn's native code then crashes the
    process). t-SNE runs in a child process, so that a crash in native code ends only the child: it is
    reported as FigureSkipped too.
    """
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    activations = np.asarray(activations, dtype=np.float64)
    n = activations.shape[0]
    if activations.ndim != 2 or n < 5:
        raise FigureSkipped(f"t-SNE needs a [N >= 5, D] matrix, got shape {activations.shape}")
    if not np.isfinite(activations).all():
        raise FigureSkipped("t-SNE input holds NaN or inf activations")
    if np.all(activations == activations[0]):
        raise FigureSkipped(f"all {n} rows of the activations are equal: nothing for t-SNE to map")
    perplexity = min(30.0, (n - 1) / 3.0)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(_tsne, activations, perplexity, seed).result()
        except BrokenProcessPool:
            raise FigureSkipped("t-SNE crashed in native code (its process died)") from None


def _tsne(activations: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(activations)


def plot_tsne(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str,
              path: Path) -> None:
    """Scatter of 2-D points coloured by true class (the paper's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = np.asarray(points)
    labels = np.asarray(labels)
    if points.shape != (labels.shape[0], 2):
        raise ValueError(f"t-SNE points of shape {points.shape} for {labels.shape[0]} labels")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        mask = labels == c
        ax.scatter(points[mask, 0], points[mask, 1], s=8, color=cmap(c % 10), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def write_tables(cells: Sequence[CellRecord], out: Path, row_order: Sequence[str] = (),
                 paper: dict[PaperKey, dict[str, float]] | None = None, metrics: Sequence[str] = DEFAULT_METRICS,
                 test_train_ratio: dict[str, float] | None = None) -> dict[int, str]:
    """Write table{1,2}.md/.csv/.png for the tables that have cells; returns {table: markdown}. With
    ``test_train_ratio`` ({corpus: test rows / training rows}), also Table 2's paired tests
    (marks and list in table2.md, ``significance.csv``)."""
    paper = read_paper_tables() if paper is None else paper
    tests = comparisons(cells, test_train_ratio, metrics) if test_train_ratio is not None else []
    if test_train_ratio is not None:
        write_significance_csv(tests, out / "significance.csv")
    written = {}
    for table in (1, 2):
        rows = table_rows(cells, table, paper, metrics)
        if not rows:
            continue
        text = markdown_table(rows, table, row_order, metrics, tests if table == 2 else ())
        write_text(out / f"table{table}.md", text)
        write_csv(rows, out / f"table{table}.csv")
        plot_table(rows, table, out / f"table{table}.png", row_order)
        written[table] = text
    return written

