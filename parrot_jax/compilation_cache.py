"""JAX's persistent compilation cache for the project's programs (encoder runner and trainer alike).

Every `parrot` command turns it on before it runs (`parrot_jax.cli.main`), the encoder runner when it
runs an encoder's program, and the benchmarks; importing or calling the rest of the library never does
(opt-in: call `enable_compilation_cache()`). The user's choice, ``PARROT_COMPILATION_CACHE`` (``parrot
--no-compilation-cache`` sets it to 0):

    unset, "", 1, on, true, yes   on, in the folder below
    0, off, false, no             off: nothing of parrot_jax turns the cache on, not even an encoder's
                                  ``compilation_cache`` run option (it only chooses the folder)
    an absolute path (or ~/...)   on, in that folder

Folder: the ``path`` argument (an encoder's run option), else the variable's path, else a folder already
set in JAX (``JAX_COMPILATION_CACHE_DIR``, ``jax.config``), else ``$XDG_CACHE_HOME/parrot_jax/jax`` or
``~/.cache/parrot_jax/jax``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV = "PARROT_COMPILATION_CACHE"
_ON = ("", "1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")


def user_choice() -> Path | bool:
    """``PARROT_COMPILATION_CACHE`` read: False (off), True (on, default folder) or a folder; a ValueError
    naming the variable and the accepted values for any other value."""
    text = os.environ.get(ENV, "")
    word = text.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    if Path(text).expanduser().is_absolute():
        return Path(text).expanduser()
    raise ValueError(f"{ENV}={text!r}: expected 0, off, false or no (no cache), 1, on, true or yes (the default "
                     "folder), or an absolute folder path")


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Send every compiled program of this process to JAX's persistent compilation cache, in the folder
    the module docstring says; returns the folder in use, or None (and changes nothing) when the user
    turned the cache off (``PARROT_COMPILATION_CACHE=0``).

    A second process with programs of the same shapes loads their executables (on a GPU with XLA's tuned
    convolutions) instead of compiling them. Programs of any compile time are kept (JAX's default keeps
    only those over 1 s), since a cell's small programs (init, evaluation) add up too.
    """
    choice = user_choice()
    if choice is False:
        return None
    current = jax.config.jax_compilation_cache_dir
    if path is not None:
        target = Path(path)
    elif isinstance(choice, Path):
        target = choice
    elif current:
        target = Path(current)
    else:
        target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "parrot_jax" / "jax"
    if str(target) != current:
        target.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return target
