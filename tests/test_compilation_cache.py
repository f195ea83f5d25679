"""parrot_jax.compilation_cache: PARROT_COMPILATION_CACHE turns the cache off or names its folder, for every caller;
the library never turns it on by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from parrot_jax.compilation_cache import ENV, enable_compilation_cache, user_choice

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def jax_cache_config():
    """Restores the process's cache settings after the test."""
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


@pytest.mark.parametrize("value,choice", [
    ("", True), ("1", True), ("on", True), ("TRUE", True), ("yes", True),
    ("0", False), ("off", False), ("False", False), (" no ", False),
    ("/var/cache/jax", Path("/var/cache/jax")), ("~/jax", Path.home() / "jax"),
])  # fmt: skip
def test_the_variable_turns_the_cache_off_or_names_its_folder(monkeypatch, value, choice):
    monkeypatch.setenv(ENV, value)
    assert user_choice() == choice


@pytest.mark.parametrize("value", ["maybe", "of", "cache/jax"])
def test_any_other_value_is_refused_naming_the_variable_and_the_accepted_values(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ValueError) as refused:
        user_choice()
    assert str(refused.value) == (f"PARROT_COMPILATION_CACHE={value!r}: expected 0, off, false or no (no cache), 1, "
                                  "on, true or yes (the default folder), or an absolute folder path")


def test_turned_off_nothing_changes_even_for_a_named_folder(monkeypatch, tmp_path, jax_cache_config):
    """The opt-out wins over a folder the caller names (an encoder's ``compilation_cache`` run option)."""
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv(ENV, "0")
    assert enable_compilation_cache(tmp_path / "own") is None
    assert jax.config.jax_compilation_cache_dir is None and not (tmp_path / "own").exists()


def test_the_folder_named_by_argument_then_variable_then_jax_then_user_cache(monkeypatch, tmp_path, jax_cache_config):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(ENV, "")
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compilation_cache() == tmp_path / "xdg" / "parrot_jax" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "set"))
    assert enable_compilation_cache() == tmp_path / "set"  # a folder set in JAX is kept
    monkeypatch.setenv(ENV, str(tmp_path / "named"))
    assert enable_compilation_cache() == tmp_path / "named"
    assert enable_compilation_cache(tmp_path / "own") == tmp_path / "own"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "own") and (tmp_path / "own").is_dir()
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0


_LIBRARY = """
import sys
import jax
sys.path.insert(0, sys.argv[1])
import parrot_jax, parrot_jax.cli
from test_training import _config, _problem
from parrot_jax.splits import make_folds
from parrot_jax.training import TrainConfig, train_cell
feats, labels = _problem(n=30)
train_cell("fcn", _config(), feats[:1], labels, make_folds(labels, k=2), TrainConfig(epochs=1))
print(jax.config.jax_compilation_cache_dir)
"""


@pytest.mark.slow
def test_the_library_never_turns_the_cache_on(tmp_path):
    """Importing parrot_jax (and its command's module) and training leave JAX's cache folder unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "PARROT_", "XLA_", "XDG_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _LIBRARY, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[-1] == "None" and not (tmp_path / "parrot_jax").exists()
