"""The one place where encoders' programs run: jit, devices, sharding, the persistent compilation cache.

An encoder hands over its pure batch function and host batches (`parrot_jax.encoders.base`); a `Runner`
embeds waves with it:

    work = encoder.batches(waves)
    rows = work.assemble([fn(program.params, *arrays) for arrays in work.arrays]),   fn = compiled(program)

where ``compiled(program)`` is ``jax.jit(program.apply)`` (one per program, shared by every runner) and, on
a mesh of several devices, that function with each batch split over them
(`parrot_jax.distributed.data_parallel`: rows padded by repeating the last one, params copied to every
device once). Since row r of a program's result depends on row r of its inputs only, the rows are those of
one device. Before running, the compiled programs are sent to JAX's persistent compilation cache
(`parrot_jax.compilation_cache`), in the folder of the encoder's ``compilation_cache`` run option where its
family has one, else the folder already set or the user cache folder; not when the user turned the cache
off (``PARROT_COMPILATION_CACHE=0``, ``parrot --no-compilation-cache``), whatever the run option says.

Extraction and predict make one runner for the devices chosen (`Runner.for_devices`) and give it to every
encoder of the run (`Runner.use`); ``encoder.embed_batch`` runs through `run`, on one device unless a
runner was given.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from parrot_jax import distributed as dist
from parrot_jax.compilation_cache import enable_compilation_cache
from parrot_jax.encoders.base import Encoder, Program, ProgramEncoder

_JITTED: weakref.WeakKeyDictionary[Program, Callable[..., Any]] = weakref.WeakKeyDictionary()


def jitted(program: Program) -> Callable[..., Any]:
    """``jax.jit(program.apply)``, made once per program."""
    fn = _JITTED.get(program)
    if fn is None:
        fn = _JITTED[program] = jax.jit(program.apply)
    return fn


class Runner:
    """Runs encoders' programs on `mesh` (this process's devices, see `distributed.local_mesh`), each batch
    split over its devices; with no mesh, or a mesh of one device, on JAX's default device."""

    def __init__(self, mesh: Mesh | None = None):
        self.mesh = mesh
        self._split: weakref.WeakKeyDictionary[Program, Callable[..., np.ndarray]] = weakref.WeakKeyDictionary()

    @classmethod
    def for_devices(cls, spec: str | None = None) -> "Runner":
        """A runner on this process's share of `distributed.select_devices(spec)` (`spec` as ``--devices``;
        default ``$PARROT_DEVICES``, else every device)."""
        return cls(dist.local_mesh(dist.make_mesh(dist.select_devices(spec))))

    @property
    def devices(self) -> int:
        """How many devices each batch is split over."""
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    def compiled(self, program: Program) -> Callable[..., Any]:
        """The function the runner calls: `jitted(program)`, split over the mesh's devices when it has several."""
        if self.devices == 1:
            return jitted(program)
        fn = self._split.get(program)
        if fn is None:
            fn = self._split[program] = dist.data_parallel(jitted(program), self.mesh)
        return fn

    def outputs(self, encoder: ProgramEncoder, arrays: Sequence[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
        """The encoder's program on each batch of `arrays`, as numpy."""
        program = encoder.program
        if program is None:
            raise ValueError(f"encoder {encoder.name!r} has no program to run (it embeds on the host)")
        enable_compilation_cache(getattr(encoder.run_options, "compilation_cache", None))
        fn = self.compiled(program)
        return [np.asarray(fn(program.params, *batch)) for batch in arrays]

    def run(self, encoder: ProgramEncoder, waves: Sequence[np.ndarray]) -> np.ndarray:
        """The encoder's rows of `waves`: its host batches through its program, assembled."""
        work = encoder.batches(waves)
        return work.assemble(self.outputs(encoder, work.arrays))

    def use(self, encoders: Iterable[Encoder]) -> None:
        """Make this runner run every encoder that has a program (``encoder.runner = self``)."""
        for encoder in encoders:
            if getattr(encoder, "program", None) is not None:
                encoder.runner = self


def runner_of(encoder: ProgramEncoder) -> Runner:
    """The runner given to `encoder` (by extraction or predict), else one on one device."""
    return encoder.runner or Runner()


def run(encoder: ProgramEncoder, waves: Sequence[np.ndarray]) -> np.ndarray:
    """``encoder.embed_batch(waves)`` of an encoder with a program, through `runner_of(encoder)`."""
    return runner_of(encoder).run(encoder, waves)
