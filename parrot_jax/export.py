"""A saved model as one file that runs without JAX: ONNX (through jax2onnx) or StableHLO (through `jax.export`).

The graph is the whole head of a saved model (`parrot_jax.saved_model`), its members' mean softmax on
standardised features, exactly `SavedModel.probabilities`:

    probabilities = (1/M) sum_m softmax(f_m((x_1 - mean_m1) / scale_m1, ...)),

with one float32 input per encoder, named by the encoder ([batch, D], or [batch, L+1, D] for layer=all),
a dynamic batch axis, and one output ``probabilities`` [batch, classes]. PARROT's OT branch is ott-jax's
Sinkhorn with the trained settings: its while loop, convergence test included, becomes an ONNX ``Loop``.

The contract travels with the graph (`contract`): the ONNX file's metadata_props (one JSON value per key),
or a JSON file beside the StableHLO file (``FILE.json``): the class names in output order, each input's
encoder, shape, embedding options, checkpoint sha256 and sample rate, and the package version.

Before a file is written, its probabilities on random rows are compared with the saved model's own
(`SavedModel.probabilities`); a difference above `PARITY_TOLERANCE` writes nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from parrot_jax import __version__
from parrot_jax.files import atomic_write, write_json
from parrot_jax.models import build_model
from parrot_jax.saved_model import SavedModel, load_model

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "stablehlo")
OUTPUT_NAME = "probabilities"
PARITY_TOLERANCE = 1e-5
CONTRACT_VERSION = 1
# The kinds whose rows are coupled by the transport plan: the rows of one call are one evaluation batch.
COUPLED_KINDS: tuple[str, ...] = ("parrot", "ot")


@dataclass(frozen=True)
class Exported:
    """What `export_model` wrote and how close it came to the saved model."""

    path: Path
    contract_path: Path | None  # the JSON beside a StableHLO file; None for ONNX (the contract is inside)
    format: str
    contract: dict
    max_error: float  # max |p_exported - p_saved_model| over the parity rows
    parity_rows: tuple[int, ...]  # the batch sizes compared


def head_function(model: SavedModel) -> Callable[..., jax.Array]:
    """The pure function features -> probabilities [batch, C] of `model` (params and standardisers baked in)."""
    module = build_model(model.kind, model.model_config)
    members = [model.member(m) for m in range(model.members)]

    def probabilities(*features: jax.Array) -> jax.Array:
        total = 0.0
        for params, stats in members:
            if stats is not None:
                features_m = tuple((x - jnp.asarray(mu, jnp.float32)) / jnp.asarray(s, jnp.float32)
                                   for x, mu, s in zip(features, stats.mean, stats.scale))
            else:
                features_m = features
            total = total + jax.nn.softmax(module.apply({"params": params}, features_m, train=False), axis=-1)
        return total / len(members)

    return probabilities


def input_shapes(model: SavedModel) -> list[tuple[int, ...]]:
    """One row's shape per input: (dim,), or (layers, dim) for an encoder's layer="all"."""
    shapes = []
    for name in model.encoders:
        meta = model.feature_metadata[name]
        shapes.append((meta["layers"], meta["dim"]) if "layers" in meta else (meta["dim"],))
    return shapes


def contract(model: SavedModel, file_format: str) -> dict[str, Any]:
    """What a consumer of the exported graph needs to know to feed it (see the module docstring)."""
    inputs = []
    for name, shape in zip(model.encoders, input_shapes(model)):
        meta = model.feature_metadata[name]
        inputs.append({
            "name": name, "shape": ["batch", *shape], "dtype": "float32",
            "encoder_options": meta.get("encoder_options"), "checkpoint_sha256": meta.get("checkpoint_sha256"),
            "sample_rate": meta.get("sample_rate"), "min_samples": meta.get("min_samples"),
        })
    rates = {i["sample_rate"] for i in inputs}
    return {
        "contract_version": CONTRACT_VERSION,
        "package_version": __version__,
        "format": file_format,
        "kind": model.kind,
        "members": model.members,
        "classes": list(model.class_names),
        "inputs": inputs,
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(model.class_names)], "dtype": "float32"},
        "sample_rate": rates.pop() if len(rates) == 1 else None,
        "model_config": model.model_config.to_dict(),
        # parrot, ot: the plan couples the rows of one call, as parrot predict's batches of eval_batch_size rows
        "rows_coupled": model.kind in COUPLED_KINDS,
        "eval_batch_size": model.eval_batch_size,
        "info": model.info,
    }


def export_model(model_dir: str | Path, out: str | Path, file_format: str = "onnx") -> Exported:
    """Export the saved model in `model_dir` (read by `saved_model.load_model`, with its checks) to `out`."""
    if file_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}")
    model = load_model(model_dir)
    out = Path(out)
    terms = contract(model, file_format)
    if file_format == "onnx":
        data = onnx_bytes(model, terms)
        try:
            run = onnx_runner(data)
        except Exception as error:  # onnxruntime's InvalidGraph, Fail, ... derive from Exception alone
            detail = " ".join(str(error).split())[:300]
            raise ValueError(f"the ONNX graph jax2onnx wrote for {model_dir} does not load in onnxruntime ({detail}); "
                             "nothing written; --format stablehlo expresses every primitive") from None
        sidecar = None
    else:
        data = stablehlo_bytes(model)
        run = stablehlo_runner(data)
        sidecar = contract_path(out)
    error, rows = _parity(model, run)
    if not error <= PARITY_TOLERANCE:
        raise ValueError(f"the {file_format} graph of {model_dir} differs from the saved model by {error:.3g} > "
                         f"{PARITY_TOLERANCE:g} on random rows; nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(data))
    if sidecar is not None:
        write_json(sidecar, terms)
    else:  # an ONNX file carries its contract: a JSON left beside it by an earlier StableHLO export would contradict it
        contract_path(out).unlink(missing_ok=True)
    return Exported(out, sidecar, file_format, terms, error, rows)


def contract_path(stablehlo_file: str | Path) -> Path:
    """The contract beside a StableHLO file: FILE.json."""
    return Path(f"{stablehlo_file}.json")


def read_contract(path: str | Path) -> dict[str, Any]:
    """The contract of an exported file: the JSON beside a StableHLO file, else an ONNX file's metadata_props."""
    if contract_path(path).is_file():
        return json.loads(contract_path(path).read_text())
    _, onnx = _onnx_packages()
    return {p.key: json.loads(p.value) for p in onnx.load(Path(path), load_external_data=False).metadata_props}


# --- StableHLO ---------------------------------------------------------------------------------------------------


def stablehlo_bytes(model: SavedModel) -> bytes:
    """The serialised `jax.export.Exported` of the head, batch axis symbolic; `jax.export.deserialize` reads it."""
    (batch,) = jax.export.symbolic_shape("batch")
    specs = [jax.ShapeDtypeStruct((batch, *shape), jnp.float32) for shape in input_shapes(model)]
    return bytes(jax.export.export(jax.jit(head_function(model)))(*specs).serialize())


def stablehlo_runner(data: bytes) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """features -> probabilities through a serialised StableHLO head (`jax.export.deserialize`)."""
    exported = jax.export.deserialize(bytearray(data))
    return lambda features: np.asarray(exported.call(*features))


# --- ONNX ----------------------------------------------------------------------------------------------------------


def onnx_bytes(model: SavedModel, terms: dict[str, Any]) -> bytes:
    """The ONNX model of the head (`onnx_model`), inputs named by encoder, the contract in its metadata_props."""
    _, onnx = _onnx_packages()
    (batch,) = jax.export.symbolic_shape("batch")
    specs = [jax.ShapeDtypeStruct((batch, *shape), jnp.float32) for shape in input_shapes(model)]
    proto = onnx_model(head_function(model), specs, list(model.encoders), f"a {model.kind} model")
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in terms.items()})
    return proto.SerializeToString()


def onnx_model(function: Callable[..., jax.Array], specs: Sequence[jax.ShapeDtypeStruct], input_names: Sequence[str],
               what: str) -> Any:
    """`function` (one output, `OUTPUT_NAME`) as an onnx.ModelProto, through jax2onnx.

    jax2onnx traces a function; it gets `forward_function` of `function`'s jaxpr, traced here first (outside
    jax2onnx, whose own replacements of jnp functions mistype ott-jax's ``jnp.where(isfinite(g), g, 0)``
    inside a loop). What jax2onnx cannot express is refused in one line naming the primitive."""
    jax2onnx, _ = _onnx_packages()
    closed = jax.make_jaxpr(function)(*specs)
    try:
        return jax2onnx.to_onnx(forward_function(closed), list(specs), input_names=list(input_names),
                                output_names=[OUTPUT_NAME], model_name="parrot_jax", return_mode="proto")
    except NotImplementedError as error:
        found = re.search(r"primitive '([^']+)'", str(error))
        version = f"jax2onnx {importlib.metadata.version('jax2onnx')}"
        if found is None:
            detail = " ".join(str(error).split())
            raise ValueError(f"ONNX export of {what}: {version} cannot express part of it ({detail}); "
                             "--format stablehlo expresses every primitive") from None
        primitive = found.group(1)
        raise ValueError(f"ONNX export of {what}: {version} cannot express the JAX primitive {primitive!r} (it would "
                         f"need a jax2onnx plugin for {primitive!r}); --format stablehlo expresses every primitive"
                         ) from None


def _onnx_packages() -> tuple[Any, Any]:
    try:
        for name in ("jax2onnx", "onnx_ir"):  # plugins for other libraries warn at import; type-less constants
            logging.getLogger(name).setLevel(logging.ERROR)
        import jax2onnx
        import onnx
    except ImportError as error:
        raise ImportError(f"ONNX export needs the export extra ({error.name} is missing): "
                          "pip install 'parrot_jax[export]'") from None
    return jax2onnx, onnx


def onnx_runner(data: bytes) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """features (in input order) -> probabilities through an ONNX head, in onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only (not jax2onnx's unused initialisers)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda features: session.run([OUTPUT_NAME], dict(zip(names, features)))[0]


def forward_function(closed: jcore.ClosedJaxpr) -> Callable[..., jax.Array]:
    """The forward computation of a one-output jaxpr, in the primitives an ONNX converter can take
    (`_evaluate`)."""
    return lambda *args: _evaluate(closed.jaxpr, closed.consts, args)[0]


def _evaluate(jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """Evaluate `jaxpr`, rebinding its equations, with three rewrites that change no value:

    - equations whose results are unused are dropped (ott-jax's initializer splits a PRNG key it never
      uses; random_seed and random_split have no ONNX form);
    - custom_jvp, custom_vjp and custom_vmap calls and jit calls are replaced by their bodies: the forward
      computation they define (their derivative and batching rules play no part in inference);
    - a while loop computes its test at the end of its body and carries it (`_while`).
    """
    live = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars if not isinstance(v, jcore.DropVar)):
            kept.append(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    env: dict[jcore.Var, Any] = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]  # noqa: E731
    for eqn in reversed(kept):
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _BODIES:
            body = eqn.params[_BODIES[name]]
            outs = _evaluate(body.jaxpr, body.consts, ins)
        elif name == "while":
            outs = _while(ins, **eqn.params)
        else:
            outs = eqn.primitive.bind(*ins, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


_BODIES = {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vmap_call": "call",
           "jit": "jaxpr"}  # primitive -> the parameter holding its body


def _while(ins: list[Any], cond_jaxpr: jcore.ClosedJaxpr, body_jaxpr: jcore.ClosedJaxpr, cond_nconsts: int,
           body_nconsts: int) -> list[Any]:
    """``while cond(x): x = body(x)`` as ``c = cond(x); while c: x = body(x); c = cond(x)``: the same
    iterations, in the form of an ONNX Loop (whose body returns the test). jax2onnx 0.13.0 turns a test
    that reads a carried array (ott-jax's error history) into a Loop body naming a value never computed."""
    cond_consts, body_consts = ins[:cond_nconsts], ins[cond_nconsts:cond_nconsts + body_nconsts]
    init = ins[cond_nconsts + body_nconsts:]

    def test(x: list[Any]) -> jax.Array:
        return _evaluate(cond_jaxpr.jaxpr, [*cond_jaxpr.consts], [*cond_consts, *x])[0]

    def step(state: tuple[jax.Array, list[Any]]) -> tuple[jax.Array, list[Any]]:
        x = _evaluate(body_jaxpr.jaxpr, [*body_jaxpr.consts], [*body_consts, *state[1]])
        return test(x), x

    return lax.while_loop(lambda state: state[0], step, (test(init), list(init)))[1]


# --- parity --------------------------------------------------------------------------------------------------------


def _parity(model: SavedModel, run: Callable[[Sequence[np.ndarray]], np.ndarray]) -> tuple[float, tuple[int, ...]]:
    """max |run(x) - model.probabilities(x)| over random rows x (mean + scale * N(0, 1) of member 0's
    standardiser), for batches of 1 and of min(7, eval_batch_size) rows (one evaluation batch of the
    saved model, so that coupled rows are coupled alike)."""
    rng = np.random.default_rng(0)
    sizes = (1, min(7, model.eval_batch_size))
    error = 0.0
    for n in sizes:
        features = []
        for i, shape in enumerate(input_shapes(model)):
            z = rng.standard_normal((n, *shape))
            if model.standardizer is not None:
                z = model.standardizer.mean[i][0] + model.standardizer.scale[i][0] * z
            features.append(z.astype(np.float32))
        error = max(error, float(np.max(np.abs(run(features) - model.probabilities(features)))))
    return error, sizes
