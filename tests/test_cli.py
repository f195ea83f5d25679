"""parrot_jax.cli: every error reaching `parrot` is one line ``parrot <command>: error: ...`` and exit status 1
(the traceback only with --debug or PARROT_DEBUG=1); `--dry-run` finds what a run would refuse."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from parrot_jax.cli import main

TINY_CONFIG = '''
from parrot_jax.config import GridConfig

def get_config():
    return GridConfig(run="tiny", features={features!r}, results={results!r}, folds=3, val_fraction=0.25,
                      train={{"epochs": 1, "batch_size": 8, "eval_batch_size": 8}},
                      model={{"filters": (4, 8), "latent_dim": 8, "hidden": 16}}, table1=("svm",), table2=())
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A feature store of a 24-utterance demo corpus (3 speakers x 2 texts x 4 emotions), two encoders."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.extraction import extract

    base = tmp_path_factory.mktemp("cli")
    root = generate_demo_corpus(base / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, ["mfcc-stats", "logmel-stats"], base / "features", progress=False)
    return base / "features"


def _config(tmp_path: Path, features: Path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG.format(features=str(features), results=str(tmp_path / "results")))
    return str(path)


def _error(capsys: pytest.CaptureFixture, argv: list[str], command: str) -> str:
    """The one error line `parrot` prints for `argv` (exit status 1, no traceback)."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"parrot {command}: error: "), err
    return lines[0].removeprefix(f"parrot {command}: error: ")


@pytest.mark.parametrize("override,message", [
    ("foo=1", r"override 'foo=1': unknown key 'foo'; known: run, features"),
    ("train.foo=1", r"override 'train\.foo=1': unknown key 'foo' in train; known: epochs, batch_size"),
    ("folds=abc", r"override 'folds=abc': folds='abc': expected an int"),
    ("model.dropout_rate=2", r"ModelConfig\.dropout_rate must be in \[0, 1\), got 2"),
])  # fmt: skip
def test_bad_overrides_are_one_line_in_runs_and_dry_runs(store, tmp_path, capsys, override, message):
    config = _config(tmp_path, store)
    for extra in ([], ["--dry-run"]):
        assert re.search(message, _error(capsys, ["grid", "--config", config, "--set", override, *extra], "grid"))
    assert not (tmp_path / "results" / "tiny" / "cells").exists()


def test_too_few_speakers_says_what_to_do_in_dry_runs_too(store, tmp_path, capsys):
    config = _config(tmp_path, store)
    for extra in ([], ["--dry-run"]):
        text = _error(capsys, ["grid", "--config", config, "--protocol", "speaker", "--folds", "5", *extra], "grid")
        assert "speaker 5-fold split needs at least 5 speakers, got 3" in text
        assert "--folds 3" in text and "--protocol stratified" in text
    assert main(["grid", "--config", config, "--protocol", "speaker", "--dry-run"]) == 0  # 3 folds, 3 speakers
    capsys.readouterr()


def test_missing_config_features_and_tampered_matrix(store, tmp_path, capsys):
    text = _error(capsys, ["grid", "--config", str(tmp_path / "absent.py")], "grid")
    assert text.startswith(f"config file not found: {tmp_path / 'absent.py'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    text = _error(capsys, ["grid", "--config", _config(tmp_path, empty), "--dry-run"], "grid")
    assert f"no features to run under {empty}" in text
    copy = tmp_path / "copy"
    (copy / "demo").mkdir(parents=True)
    for f in (store / "demo").iterdir():
        if f.is_file():
            (copy / "demo" / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / "demo" / "mfcc-stats.npy").read_bytes())
    data[-1] ^= 0x40
    (copy / "demo" / "mfcc-stats.npy").write_bytes(bytes(data))
    text = _error(capsys, ["grid", "--config", _config(tmp_path, copy), "--dry-run"], "grid")
    assert re.match(rf"{re.escape(str(copy / 'demo' / 'mfcc-stats.npy'))}: content hash differs", text)


def test_predict_and_extract_errors_are_one_line(store, tmp_path, capsys):
    wav = tmp_path / "x.wav"
    text = _error(capsys, ["predict", "--model", str(tmp_path / "m"), "--corpus", "cremad", "--features", str(store),
                           str(wav)], "predict")  # fmt: skip
    assert text.startswith(f"no features of corpus 'cremad' in {store}")
    with pytest.raises(SystemExit) as done:  # refused while parsing the arguments (argparse's exit status 2)
        main(["extract", "--corpus", "demo", "--encoders", ",", "--out", str(tmp_path / "f")])
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "parrot extract: error: argument --encoders: no encoder named in ','")


def test_debug_shows_the_traceback(store, tmp_path, capsys, monkeypatch):
    config = _config(tmp_path, store)
    with pytest.raises(ValueError, match=r"unknown key 'foo'"):
        main(["--debug", "grid", "--config", config, "--set", "foo=1"])
    monkeypatch.setenv("PARROT_DEBUG", "1")
    with pytest.raises(ValueError, match=r"unknown key 'foo'"):
        main(["grid", "--config", config, "--set", "foo=1"])


def test_an_unexpected_failure_is_one_line_naming_its_kind(store, tmp_path, capsys, monkeypatch):
    from parrot_jax import grid

    def broken(*args, **kwargs):
        raise KeyError("cell")

    monkeypatch.setattr(grid, "run_grid", broken)
    text = _error(capsys, ["grid", "--config", _config(tmp_path, store)], "grid")
    assert text == "KeyError: 'cell' (run with --debug, or PARROT_DEBUG=1, for the traceback)"


def test_a_second_csv_corpus_never_replaces_the_first(store, tmp_path, capsys):
    """Two CSV files of one stem (both `list.csv`) name one store, OUT/list/: the second corpus is refused naming
    both, unless --start-over."""
    wavs = sorted((store.parent / "corpus" / "wav").iterdir())
    for name, files in (("first", wavs[:3]), ("second", wavs[3:5])):
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
        (tmp_path / name / "list.csv").write_text("path,label\n" + "".join(f"{f.name},anger\n" for f in files))
    out = tmp_path / "out"
    common = ["extract", "--corpus", "csv", "--encoders", "logmel-stats", "--out", str(out), "--no-progress"]
    assert main([*common, "--root", str(tmp_path / "first" / "list.csv")]) == 0
    capsys.readouterr()
    text = _error(capsys, [*common, "--root", str(tmp_path / "second" / "list.csv")], "extract")
    assert (f"holds features (logmel-stats) of {tmp_path / 'first' / 'list.csv'} (3 utterances" in text
            and f"this extraction reads {tmp_path / 'second' / 'list.csv'} (2 utterances" in text), text
    assert len(np.load(out / "list" / "logmel-stats.npy")) == 3
    assert main([*common, "--root", str(tmp_path / "second" / "list.csv"), "--start-over"]) == 0
    assert len(np.load(out / "list" / "logmel-stats.npy")) == 2


def test_grid_run_flag_names_the_run_folder(store, tmp_path, capsys):
    """`--run` is a config shorthand, not the subcommand's handler (they once shared `args.run`)."""
    assert main(["grid", "--config", _config(tmp_path, store), "--results", str(tmp_path), "--run", "named",
                 "--dry-run"]) == 0
    assert f"cells in {tmp_path / 'named'} (0 done)" in capsys.readouterr().out


def test_grid_refuses_a_misspelt_override_in_one_line(capsys):
    assert main(["grid", "--dry-run", "--set", "model.sinkhorn.epsilom=0.1"]) == 1
    err = capsys.readouterr().err
    from parrot_jax.config import DEFAULT_CONFIG

    assert err == (f"parrot grid: error: config file {DEFAULT_CONFIG}: override 'model.sinkhorn.epsilom=0.1': "
                   "unknown key 'epsilom' in "
                   "model.sinkhorn; known: epsilon, max_iterations, threshold, gradient, ridge, inner_iterations\n")


def test_checkpoint_arguments_need_name_and_path(tmp_path, capsys):
    assert main(["extract", "--corpus", "demo", "--root", str(tmp_path), "--checkpoint", "wavlm-base"]) == 1
    assert "parrot extract: error: --checkpoint expects NAME=PATH, got 'wavlm-base'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "a.wav"), "--model", str(tmp_path), "--checkpoint", "=x"]) == 1
    assert "parrot predict: error: --checkpoint expects NAME=PATH, got '=x'" in capsys.readouterr().err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("extract", "verify-corpus", "grid", "predict", "export", "demo"))


def test_extract_refuses_an_unknown_encoder_option_when_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["extract", "--corpus", "demo", "--root", str(tmp_path), "--encoders", "mfcc-stats:n_mfcc=20,layr=3"])
    assert done.value.code == 2
    assert ("argument --encoders: encoder 'mfcc-stats': unknown option 'layr'; it takes n_mfcc, n_mels, deltas "
            "(embedding)") in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything ran


@pytest.mark.parametrize("argv,line", [
    (["grid", "--bogus-flag"], "parrot grid: error: unrecognized arguments: --bogus-flag"),
    (["predict", "x.wav"], "parrot predict: error: the following arguments are required: --model"),
    (["extract", "--corpus", "nope"], "parrot extract: error: argument --corpus: invalid choice: 'nope' (choose from "
                                      "'emodb', 'cremad', 'mesd', 'csv', 'demo')"),
    (["bogus"], "parrot: error: argument command: invalid choice: 'bogus' (choose from 'extract', 'verify-corpus', "
                "'grid', 'predict', 'export', 'demo')"),
])
def test_argparse_errors_are_one_line_naming_the_subcommand(argv, line, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert capsys.readouterr().err == line + "\n"  # no usage block: that is --help's


def test_help_of_a_subcommand_shows_its_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["grid", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: parrot grid [-h]")
