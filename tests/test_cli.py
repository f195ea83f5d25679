"""parrot_jax.cli: the `parrot` command's parsing (the work behind each subcommand is tested with its module)."""

from __future__ import annotations

import pytest

from parrot_jax.cli import main


def test_grid_run_flag_names_the_run_folder(tmp_path, capsys):
    """`--run` is a config shorthand, not the subcommand's handler (they once shared `args.run`)."""
    assert main(["grid", "--config", "demo", "--features", str(tmp_path / "none"), "--results", str(tmp_path),
                 "--run", "named", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"0 cells in {tmp_path / 'named'}: no features to run under {tmp_path / 'none'}/" in out


def test_grid_refuses_a_misspelt_override_in_one_line(capsys):
    assert main(["grid", "--dry-run", "--set", "model.sinkhorn.epsilom=0.1"]) == 1
    err = capsys.readouterr().err
    assert err == ("parrot grid: error: override 'model.sinkhorn.epsilom=0.1': unknown key 'epsilom' in "
                   "model.sinkhorn; known: epsilon, max_iterations, threshold, gradient, ridge\n")


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
    assert all(name in out for name in ("extract", "verify-corpus", "grid", "predict", "demo"))


def test_extract_refuses_an_unknown_encoder_option_when_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["extract", "--corpus", "demo", "--root", str(tmp_path), "--encoders", "mfcc-stats:n_mfcc=20,layr=3"])
    assert done.value.code == 2
    assert ("argument --encoders: encoder 'mfcc-stats': unknown option 'layr'; it takes n_mfcc, n_mels, deltas "
            "(embedding)") in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything ran
