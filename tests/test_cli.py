"""parrot_jax.cli: every error reaching `parrot` is one line ``parrot <command>: error: ...`` and exit status 1
(the traceback only with --debug or PARROT_DEBUG=1); `--dry-run` finds what a run would refuse; every command that
compiles keeps its programs in the persistent compilation cache unless opted out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


REPO = Path(__file__).resolve().parents[1]
WAV2VEC2 = REPO / "tests" / "fixtures" / "hf" / "wav2vec2"
# Runs `parrot_jax.cli.main` on each argv of a JSON list in one process and prints, per command, how many
# programs it found in the persistent compilation cache (hits) and compiled into it (misses). Between commands the
# process forgets every compiled program and the cache folder, so each command finds them (or not) by itself.
_COUNTED = """
import json, sys
import jax
from jax import monitoring
from jax.experimental.compilation_cache import compilation_cache as jax_cache
from parrot_jax.cli import main

counts = {}
def listen(event, **kwargs):
    kind = event.removeprefix("/jax/compilation_cache/cache_")
    if kind in counts:
        counts[kind] += 1
monitoring.register_event_listener(listen)
out = []
for argv in json.loads(sys.argv[1]):
    jax.clear_caches()
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
    counts.update(hits=0, misses=0)
    assert main(argv) == 0, argv
    out.append([counts["hits"], counts["misses"]])
print(json.dumps(out))
"""


def _counted(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, int]]:
    """(hits, misses) of each command, run one after the other by `parrot` in a fresh CPU-only process."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "PARROT_", "XLA_", "XDG_"))}
    full.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **env)
    proc = subprocess.run([sys.executable, "-c", _COUNTED, json.dumps(commands)], env=full, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [tuple(pair) for pair in json.loads(proc.stdout.splitlines()[-1])]


def _commands(store: Path, tmp_path: Path, out: Path) -> list[list[str]]:
    """Every `parrot` command that compiles, small, writing under `out`: demo, grid, predict (training a model),
    export (the model), extract (a JAX encoder)."""
    config = tmp_path / "one_cell.py"
    config.write_text(TINY_CONFIG.format(features=str(store), results=str(tmp_path)).replace('("svm",)', '("fcn",)'))
    wavs = sorted((store.parent / "corpus" / "wav").glob("*.wav"))[:2]
    listing = tmp_path / "two" / "list.csv"
    listing.parent.mkdir(exist_ok=True)
    for path in wavs:
        (listing.parent / path.name).write_bytes(path.read_bytes())
    listing.write_text("path,label\n" + "".join(f"{path.name},anger\n" for path in wavs))
    return [
        ["demo", "--epochs", "1", "--out", str(out / "demo")],
        ["grid", "--config", str(config), "--results", str(out), "--set", "train.epochs=1"],
        ["predict", "--model", str(out / "model"), "--corpus", "demo", "--features", str(store), "--epochs", "1",
         "--holdout", "0.25", *map(str, wavs)],
        ["export", "--model", str(out / "model"), "--out", str(out / "model.mlir"), "--format", "stablehlo"],
        ["extract", "--corpus", "csv", "--root", str(listing), "--encoders", "wav2vec2-base", "--checkpoint",
         f"wav2vec2-base={WAV2VEC2}", "--out", str(out / "features"), "--no-progress"],
    ]  # fmt: skip


@pytest.mark.slow
def test_every_command_that_compiles_loads_its_programs_from_the_persistent_cache(store, tmp_path):
    """Each command of a first process on an empty cache compiles its programs into it (misses); each command of
    a second process writing elsewhere finds every one of them (hits, no miss), the second process naming the
    folder by PARROT_COMPILATION_CACHE instead of XDG_CACHE_HOME."""
    first = _counted(_commands(store, tmp_path, tmp_path / "first"), {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert all(misses >= 1 for hits, misses in first), first
    folder = tmp_path / "xdg" / "parrot_jax" / "jax"
    assert len(list(folder.iterdir())) >= sum(misses for hits, misses in first)
    second = _counted(_commands(store, tmp_path, tmp_path / "second"),
                      {"XDG_CACHE_HOME": str(tmp_path / "elsewhere"), "PARROT_COMPILATION_CACHE": str(folder)})
    assert second == [(hits + misses, 0) for hits, misses in first]
    assert not (tmp_path / "elsewhere" / "parrot_jax").exists()


@pytest.mark.slow
def test_the_opt_out_keeps_every_program_out_of_the_cache(store, tmp_path):
    """`parrot --no-compilation-cache` and PARROT_COMPILATION_CACHE=off: no program is looked up or stored, no
    folder made, not even the one an encoder's ``compilation_cache`` run option names."""
    predict, extract = _commands(store, tmp_path, tmp_path / "out")[2::2]
    own = tmp_path / "own"
    extract[extract.index("wav2vec2-base")] = f"wav2vec2-base:compilation_cache={own}"
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert _counted([["--no-compilation-cache", *predict]], env) == [(0, 0)]  # trains and saves the model
    assert _counted([predict, extract], {**env, "PARROT_COMPILATION_CACHE": "off"}) == [(0, 0), (0, 0)]
    assert (tmp_path / "out" / "model" / "model.json").is_file() and (tmp_path / "out" / "features").is_dir()
    assert not (tmp_path / "xdg" / "parrot_jax").exists() and not own.exists()


def test_an_unknown_cache_setting_is_one_line_naming_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARROT_COMPILATION_CACHE", "maybe")
    text = _error(capsys, ["predict", "--model", str(tmp_path), str(tmp_path / "a.wav")], "predict")
    assert text == ("PARROT_COMPILATION_CACHE='maybe': expected 0, off, false or no (no cache), 1, on, true or yes "
                    "(the default folder), or an absolute folder path")
    assert not any(tmp_path.iterdir())
