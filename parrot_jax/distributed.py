"""Devices, meshes and hosts: where the vmapped axis and the extraction batch run.

One idea: a leading axis of independent lanes (the trainer's folds x seeds, an extraction batch) is
split over a 1-D `jax.sharding.Mesh` whose single axis is named `AXIS`. With `n` lanes on `d` devices
the axis is padded to `L = d * ceil(n / d)` lanes, `L / d` lanes packed per device:

    x[0], ..., x[n-1], x[n-1], ..., x[n-1]      (padding repeats the last real lane)

Padding repeats a real lane rather than writing zeros, so every padded lane computes exactly what a
real one does (no division by an empty mask, no NaN) and a reduction over lanes that the caller takes
("stop when every fold has stopped") is the same with or without the copies. Lanes never interact,
so the first `n` results equal the unsharded run; `gather(tree, n)` drops the copies.

Devices: `select_devices(spec)`, spec as in `--devices` or the environment variable `PARROT_DEVICES`:
`all` (default), `N` (the first N of `jax.devices()`), or `ids:0,2,3` (those device ids).

Hosts: `initialize_multihost()` calls `jax.distributed.initialize()` when a multi-process launch is
visible in the environment (see its docstring). Afterwards `jax.devices()` spans every host, every
host holds the same host data, `shard_leading` gives each device its lanes, and `gather` returns the
full result on every host; `host_rows` splits work such as extraction into one part per host,
`is_coordinator()` names the one host that writes shared files, `from_coordinator` hands its
decisions to the others and `barrier` waits for its writes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "devices"
ENV_DEVICES = "PARROT_DEVICES"
ENV_DISTRIBUTED = "PARROT_DISTRIBUTED"

PyTree = Any


def multihost_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment describes a launch of several JAX processes.

    `PARROT_DISTRIBUTED=1` / `0` forces the answer (1: let `jax.distributed.initialize()` detect the
    cluster, e.g. on a Cloud TPU pod slice). Otherwise any of:
    `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`), a SLURM step of more
    than one task (`SLURM_NTASKS` > 1), an Open MPI launch of more than one rank
    (`OMPI_COMM_WORLD_SIZE` > 1), or a TPU slice's worker list (`TPU_WORKER_HOSTNAMES` /
    `TPU_PROCESS_ADDRESSES` naming more than one host, or `MEGASCALE_COORDINATOR_ADDRESS`).
    """
    env = os.environ if environ is None else environ
    forced = env.get(ENV_DISTRIBUTED)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"{ENV_DISTRIBUTED}={forced!r}: expected 0 or 1")
        return forced == "1"
    workers = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    return (
        "JAX_COORDINATOR_ADDRESS" in env
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        or len([w for w in workers.split(",") if w]) > 1
        or "MEGASCALE_COORDINATOR_ADDRESS" in env
    )


def initialize_multihost(environ: Mapping[str, str] | None = None) -> bool:
    """Join the other processes with `jax.distributed.initialize()` if the environment asks for it.

    Call once, before anything touches a JAX device. With `JAX_COORDINATOR_ADDRESS` the process count
    and rank come from `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (both required); with a cluster
    manager (SLURM, Open MPI, Cloud TPU) JAX detects them. Returns whether it initialized; calling it
    again after a successful initialization is a no-op that returns True.
    """
    env = os.environ if environ is None else environ
    if jax.distributed.is_initialized():
        return True
    if not multihost_requested(env):
        return False
    kwargs: dict[str, Any] = {}
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
        for var, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
            value = env.get(var, "")
            if not value.isdigit():
                raise ValueError(
                    f"JAX_COORDINATOR_ADDRESS is set, so {var} must be a non-negative integer; got {value!r}"
                )
            kwargs[key] = int(value)
    jax.distributed.initialize(**kwargs)
    return True


def select_devices(spec: str | None = None) -> list[jax.Device]:
    """The devices to use: `spec`, else `$PARROT_DEVICES`, else all of `jax.devices()`.

    `spec` is `all`, `N` (the first N devices in `jax.devices()` order, N >= 1) or `ids:i,j,...`
    (devices by id; ids are global across hosts). Under several processes every process must own at
    least one chosen device, since each runs its share of the program.
    """
    spec = (spec if spec is not None else os.environ.get(ENV_DEVICES, "all")).strip()
    available = jax.devices()
    source = f"devices spec {spec!r}"
    if spec == "all":
        chosen = list(available)
    elif spec.isdigit():
        count = int(spec)
        if not 1 <= count <= len(available):
            raise ValueError(f"{source}: expected a count between 1 and {len(available)} (devices available)")
        chosen = list(available[:count])
    elif spec.startswith("ids:"):
        by_id = {d.id: d for d in available}
        try:
            ids = [int(part) for part in spec[4:].split(",")]
        except ValueError:
            raise ValueError(f"{source}: expected ids:<int>,<int>,...") from None
        unknown = [i for i in ids if i not in by_id]
        if unknown or len(set(ids)) != len(ids):
            raise ValueError(
                f"{source}: ids must be distinct and among {sorted(by_id)}; "
                f"{'unknown ' + str(unknown) if unknown else 'repeated ids'}"
            )
        chosen = [by_id[i] for i in ids]
    else:
        raise ValueError(f"{source}: expected 'all', a device count N, or 'ids:i,j,...'")
    missing = sorted(set(range(jax.process_count())) - {d.process_index for d in chosen})
    if missing:
        raise ValueError(f"{source}: processes {missing} own none of the chosen devices")
    return chosen


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: `select_devices()`), its one axis named `AXIS`."""
    return Mesh(np.array(list(devices if devices is not None else select_devices())), (AXIS,))


def local_mesh(mesh: Mesh) -> Mesh:
    """The part of `mesh` this process owns: extraction runs on it, one part of the data per host."""
    return make_mesh([d for d in mesh.devices.flat if d.process_index == jax.process_index()])


def padded_length(n: int, mesh: Mesh) -> int:
    """`n` rounded up to a multiple of the number of devices in `mesh` (n >= 1)."""
    if n < 1:
        raise ValueError(f"need at least one lane to shard; got {n}")
    d = mesh.devices.size
    return d * math.ceil(n / d)


def _as_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        raise ValueError("shard_leading expects host data or single-process arrays, not a global array")
    return np.asarray(x)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def lanes(tree: PyTree) -> int:
    """The leading (lane) size shared by every leaf of `tree`; a ValueError if they differ."""
    shapes = [np.shape(jax.random.key_data(x) if _is_key(x) else x) for x in jax.tree_util.tree_leaves(tree)]
    sizes = {shape[0] if shape else None for shape in shapes}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every leaf needs the same leading (lane) axis; got leading sizes {sizes}")
    return sizes.pop()


def pad_leading(tree: PyTree, length: int) -> PyTree:
    """Host (numpy) copy of `tree`, every leaf's leading axis padded to `length` lanes by repeating
    its last lane."""
    n = lanes(tree)
    if n > length:
        raise ValueError(f"cannot pad {n} lanes down to {length}")

    def pad(x: Any) -> np.ndarray:
        x = _as_host(x)
        return np.concatenate([x, np.repeat(x[-1:], length - n, axis=0)]) if length > n else x

    return jax.tree_util.tree_map(pad, tree)


def _place(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Works on one host and on many: every process holds the same x and hands over its devices' slices.
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_leading(tree: PyTree, mesh: Mesh) -> PyTree:
    """`tree`'s leaves split along their leading (lane) axis over `mesh`, padded to
    `padded_length(n, mesh)` lanes (see the module docstring). Typed PRNG key arrays stay keys; JAX
    arrays that already have that many lanes (a jitted program's output, also one spanning hosts)
    are resharded on device, with no trip through the host."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    length = padded_length(lanes(tree), mesh)
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    out = []
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and leaf.shape[0] == length:  # already padded: move on device
            out.append(jax.device_put(leaf, sharding))
        elif _is_key(leaf):
            data = _place(pad_leading(np.asarray(jax.random.key_data(leaf)), length), sharding)
            out.append(jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf)))
        else:
            out.append(_place(pad_leading(leaf, length), sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf copied whole onto every device of `mesh` (data all lanes read, such as features)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: _place(_as_host(x), sharding), tree)


def gather(tree: PyTree, n: int | None = None) -> PyTree:
    """Host numpy copy of `tree` on every process (all hosts' lanes), the first `n` lanes if given."""

    def fetch(x: Any) -> np.ndarray:
        if _is_key(x):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = multihost_utils.process_allgather(x, tiled=True)
        x = np.asarray(x)
        return x if n is None else x[:n]

    return jax.tree_util.tree_map(fetch, tree)


def data_parallel(fn: Callable[..., jax.Array], mesh: Mesh) -> Callable[..., np.ndarray]:
    """`fn(params, *batch)` (jitted; row i of its result depends on row i of each batch array only,
    as an encoder's forward) turned into one that splits the batch over `mesh` and returns numpy.

    Each call pads the batch arrays to a multiple of the device count (repeating the last row),
    places one slice per device, and cuts the result back to the batch's length. `params` are copied
    to every device once and reused while the same arrays are passed (a new dict around the same
    leaves is the same params). `mesh` holds this process's devices only (`local_mesh`): each host
    embeds its own part.
    """
    if any(d.process_index != jax.process_index() for d in mesh.devices.flat):
        raise ValueError("data_parallel needs a mesh of this process's devices (see local_mesh)")
    placed: dict[tuple[int, ...], tuple[PyTree, PyTree]] = {}

    def call(params: PyTree, *batch: np.ndarray) -> np.ndarray:
        key = tuple(map(id, jax.tree_util.tree_leaves(params)))
        if key not in placed:
            placed.clear()  # keep one copy: the previous params are no longer used
            placed[key] = (params, replicate(params, mesh))  # holding `params` keeps the ids valid
        out = fn(placed[key][1], *shard_leading(tuple(np.asarray(x) for x in batch), mesh))
        return gather(out, lanes(batch))

    return call


def host_rows(n: int, process_index: int | None = None, process_count: int | None = None) -> range:
    """This process's contiguous share of `n` rows: process p of P gets [p*n//P, (p+1)*n//P)."""
    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= p < count:
        raise ValueError(f"process index {p} outside 0..{count - 1}")
    return range(p * n // count, (p + 1) * n // count)


def is_coordinator() -> bool:
    """True on the one process (index 0) that writes files every host shares."""
    return jax.process_index() == 0


def from_coordinator(values: np.ndarray) -> np.ndarray:
    """Process 0's `values` on every process (each process passes an array of the same shape and
    dtype); `values` itself with one process. For decisions every process must take alike."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
