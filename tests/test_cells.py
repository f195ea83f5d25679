"""parrot_jax.cells: the grid's cells in the paper's order (keys are tested with a real store in test_grid)."""

from __future__ import annotations

from parrot_jax.cells import plan_cells
from parrot_jax.config import GridConfig
from parrot_jax.report import read_paper_tables

PAPER_ENCODERS = ["ssam-tiny", "ssam-small", "ssam-base", "wavlm-base", "hubert-base", "wav2vec2-base",
                  "unispeech-sat-base", "mms-1b"]


def test_plan_has_the_papers_rows_in_its_order():
    cells, notes = plan_cells(GridConfig(), {"cremad": list(reversed(PAPER_ENCODERS))})
    assert notes == []
    paper = read_paper_tables()
    paper_pairs = list(dict.fromkeys(k[2] for k in paper if k[0] == 2))
    ours = [c.abbrev for c in cells if c.table == 2 and c.method == "parrot"]
    assert ours == paper_pairs  # 15 Mamba-attention + 10 attention-attention, the paper's order
    table1 = [(c.method, c.abbrev) for c in cells if c.table == 1]
    assert table1 == [(m, a) for m in ("svm", "fcn", "cnn") for a in ("A(T)", "A(S)", "A(B)", "W", "H", "W2", "U", "M")]
    assert {(c.table, c.method, c.abbrev, "cremad") for c in cells} <= set(paper)  # every cell has a paper number
    assert len(cells) == 3 * 8 + 2 * 25


def test_plan_pairs_classical_features_only_when_nothing_else_is_present():
    cells, notes = plan_cells(GridConfig(ablations=True), {"demo": ["logmel-stats", "mfcc-stats"]})
    assert [c.encoders for c in cells if c.table == 2] == [("mfcc-stats", "logmel-stats")] * 4
    assert notes == ["demo: only classical features present (mfcc-stats, logmel-stats): Table 2 pairs them, "
                     "standing in for the paper's Mamba and attention encoders"]
    mixed, _ = plan_cells(GridConfig(), {"emodb": ["mfcc-stats", "ssam-base", "hubert-base"]})
    assert [c.abbrev for c in mixed if c.table == 2] == ["A(B)+H", "A(B)+H"]


def test_plan_pairs_a_single_deep_encoder_with_the_classical_features():
    cells, notes = plan_cells(GridConfig(), {"emodb": ["mfcc-stats", "whisper-tiny.en"]})
    assert [(c.method, c.encoders) for c in cells if c.table == 2] == [
        ("concat", ("whisper-tiny.en", "mfcc-stats")), ("parrot", ("whisper-tiny.en", "mfcc-stats"))]
    assert [c.abbrev for c in cells if c.table == 1] == ["Wh-T.en", "MFCC"] * 3
    assert notes == ["emodb: no Mamba-attention or attention-attention pair (whisper-tiny.en): Table 2 pairs "
                     "every present encoder, the classical features (mfcc-stats) standing in for the paper's "
                     "missing encoders"]
    two_mamba, _ = plan_cells(GridConfig(), {"emodb": ["mfcc-stats", "ssam-tiny", "ssam-base"]})
    assert [c.abbrev for c in two_mamba if c.method == "parrot"] == ["A(T)+A(B)", "A(T)+MFCC", "A(B)+MFCC"]


def test_a_config_restricting_corpora_says_so_in_the_skip_line():
    cells, notes = plan_cells(GridConfig(corpora=("emodb",)), {"ravdess": ["mfcc-stats"], "savee": ["mfcc-stats"]})
    assert cells == []
    assert notes == ["emodb: no features present under features/emodb (skipped; the config restricts corpora to "
                     "emodb (features present for ravdess, savee: choose with --corpora))"]
    _, unrestricted = plan_cells(GridConfig(encoders=("wavlm-base",)), {"savee": ["mfcc-stats"]})
    assert unrestricted[-1] == "savee: no features present under features/savee (skipped)"
