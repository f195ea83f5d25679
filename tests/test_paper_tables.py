"""parrot_jax/paper_tables.csv (package data) against the text of the paper (../shared/paper/PARROT.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parrot_jax.report import PAPER_TABLES, read_paper_tables

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "PARROT.md"
CORPORA = ("cremad", "emodb", "mesd")  # the paper's column order
ABBREVS = ("A(T)", "A(S)", "A(B)", "W", "H", "W2", "U", "M")


def _paper_lines() -> list[str]:
    if not PAPER.is_file():
        pytest.skip(f"the paper's text is not beside the repository ({PAPER} absent)")
    return [re.sub(r"</?b>", "", line) for line in PAPER.read_text().splitlines()]


def _numbers(line: str) -> list[float]:
    return [float(x) for x in line.split("\t")[1:] if x.strip()]


def _published() -> dict[tuple[int, str, str, str], dict[str, float]]:
    """The tables as the paper prints them: tab-separated rows between header and caption."""
    lines = _paper_lines()
    out = {}
    start = next(i for i, l in enumerate(lines) if l.startswith("PTM's\tCREMA-D"))
    method = None
    for line in lines[start + 2:]:
        if line.startswith("Table 1"):
            break
        if line.strip() in ("SVM", "FCN", "CNN"):
            method = line.strip().lower()
        elif line.strip():
            values = _numbers(line)
            assert len(values) == 6, line
            for c, corpus in enumerate(CORPORA):
                out[(1, method, line.split("\t")[0], corpus)] = {
                    "accuracy": values[2 * c], "macro_f1": values[2 * c + 1]}
    start = next(i for i, l in enumerate(lines) if l.startswith("Fusion\tAcc"))
    for line in lines[start + 1:]:
        if line.startswith("Table 2"):
            break
        if line.strip():
            values = _numbers(line)
            assert len(values) == 12, line
            for c, corpus in enumerate(CORPORA):
                for f, fusion in enumerate(("concat", "parrot")):
                    out[(2, fusion, line.split("\t")[0], corpus)] = {
                        "accuracy": values[4 * c + 2 * f], "macro_f1": values[4 * c + 2 * f + 1]}
    return out


def test_transcription_equals_the_paper():
    published = _published()
    ours = read_paper_tables()
    assert len(published) == 3 * 3 * 8 + 2 * 3 * 25  # Table 1: 3 downstreams x 8 PTMs; Table 2: 25 pairs
    assert ours == published


def test_transcription_covers_every_paper_row_and_abbreviation():
    ours = read_paper_tables()
    assert {k[2] for k in ours if k[0] == 1} == set(ABBREVS)
    pairs = {k[2] for k in ours if k[0] == 2}
    mamba = [a for a in ABBREVS if a.startswith("A(")]
    attention = [a for a in ABBREVS if not a.startswith("A(")]
    expected = {f"{m}+{a}" for m in mamba for a in attention}
    expected |= {f"{a}+{b}" for i, a in enumerate(attention) for b in attention[i + 1:]}
    assert pairs == expected


def test_headline_numbers_hand_checked():
    """A few values read by eye from the PDF's tables (PARROT A(B)+H is the paper's best on Emo-DB)."""
    ours = read_paper_tables()
    assert ours[(2, "parrot", "A(B)+H", "emodb")] == {"accuracy": 92.24, "macro_f1": 91.53}
    assert ours[(2, "concat", "A(B)+M", "mesd")] == {"accuracy": 66.37, "macro_f1": 65.28}
    assert ours[(1, "cnn", "M", "emodb")] == {"accuracy": 72.90, "macro_f1": 66.24}
    assert ours[(1, "svm", "A(T)", "cremad")] == {"accuracy": 60.96, "macro_f1": 59.85}


def test_duplicate_rows_are_refused(tmp_path):
    text = PAPER_TABLES.read_text().splitlines()
    bad = tmp_path / "t.csv"
    bad.write_text("\n".join(text + [text[1]]) + "\n")
    with pytest.raises(ValueError, match=r"t\.csv:224: duplicate row for \(1, 'svm', 'A\(T\)', 'cremad'\)"):
        read_paper_tables(bad)
