"""PARROT and its baselines as Flax linen modules (paper section 3).

Single-embedding models (one input [B, D]):
    fcn:      FCNHead   x -> Dense(128) ReLU -> dropout -> Dense(C)
    cnn:      CNNHead   x as a 1-channel sequence -> ConvStack -> flatten -> Dense(128) ReLU -> dropout -> Dense(C)
Two-embedding models (inputs (x_p, x_q), [B, D_p] and [B, D_q]); each input goes through its own CNNBranch
(ConvStack -> flatten -> Dense(120), linear) giving R_p, R_q [B, 120], then a fusion, then the same head:
    parrot:   concat(HP, F_q, F_p),  HP = R_p * R_q (HadamardFusion),
              F_q = [Gamma R_p, R_q], F_p = [Gamma^T R_q, R_p] (OTFusion, Gamma = Sinkhorn(C), parrot_jax.ot)
    concat:   concat(R_p, R_q)           (ConcatFusion, the paper's baseline)
    hadamard: HP only                    (ablation: PARROT without the OT branch)
    ot:       concat(F_q, F_p) only      (ablation: PARROT without the Hadamard branch)
ConvStack: Conv1D(64, k3, ReLU) -> MaxPool(2) -> Conv1D(128, k3, ReLU) -> MaxPool(2).

Stacked layers (``ModelConfig.layer_mix="softmax"``): an input may be [B, L+1, D], every layer of an encoder
(its ``layer=all`` feature); the model first reduces it to [B, D] by a learned softmax-weighted sum of the
layers (LayerMix, s3prl's Featurizer), one set of weights per input, then proceeds as above.

Calling convention, every model:
    logits = module.apply({"params": params}, inputs, mask=None, train=False, rngs={"dropout": key})
with `inputs` a tuple of 1 or 2 float32 arrays [B, D_i], `mask` an optional bool [B] (False = a padding
row added to fill a batch) and logits [B, num_classes]. The head's input (after its dropout, the input of
the last Dense) is sown as ("intermediates", "head", "penultimate"); see `penultimate_features`.

Batching matters for PARROT and the OT ablation: the plan Gamma couples the rows of a batch, so a sample's
prediction depends on the other samples of its batch. The trainer therefore evaluates in fixed batches of
32 rows in index order, the last one padded and masked; padding rows never change a valid row's output
(the plan is computed over the valid rows only, see `parrot_jax.ot.transport_plan`). The other models
treat rows independently.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from parrot_jax.conv import Conv1D
from parrot_jax.ot import SinkhornOptions, normalized_cost, transport_plan

MODEL_KINDS: tuple[str, ...] = ("fcn", "cnn", "parrot", "concat", "hadamard", "ot")
DROPOUT_PLACES: tuple[str, ...] = ("conv", "latent", "head")
TRANSPORTS: tuple[str, ...] = ("plain", "barycentric")
LAYER_MIXES: tuple[str, ...] = ("none", "softmax")
CONV_PADDINGS: tuple[str, ...] = ("VALID", "SAME")


@dataclass(frozen=True)
class ModelConfig:
    """Every size and every choice the paper leaves open, with its default.

    num_classes: C, the number of emotions.
    filters, kernel_size: the two Conv1D layers (paper: 64 and 128 filters, kernel 3, ReLU).
    pool_size: max-pool window and stride after each conv (paper: "a maxpooling"; Keras' default 2). Pooling
        drops a trailing odd element (floor), as Keras' MaxPooling1D does.
    conv_padding: "VALID" (default; Keras' Conv1D default, so a Keras reading of the paper: each conv
        shortens the sequence by kernel_size - 1) or "SAME".
    latent_dim: the linear projection of each branch (paper: 120).
    hidden: the head's Dense layer (paper: 128, ReLU).
    dropout_rate: paper says only "we use dropout"; default 0.5 (Srivastava et al.'s value for hidden units).
    dropout_places: where dropout is applied, a subset of ("conv", "latent", "head"): after each max-pool,
        after each branch's projection, after the head's Dense(128). Default ("head",).
    transport: how PARROT's OT branch transports features, with Gamma the plan of the valid rows:
        "plain" (default, the paper's formula): T_pq = Gamma R_p, T_qp = Gamma^T R_q. Each row of Gamma sums
            to 1 / n_valid, so these features shrink as the batch grows.
        "barycentric": T_pq = n_valid Gamma R_p, T_qp = n_valid Gamma^T R_q, i.e. barycentric projections
            (weights summing to 1 per row), independent of the batch size. Exactly n_valid times "plain".
    sinkhorn: the plan's solver options (parrot_jax.ot.SinkhornOptions).
    layer_mix: how an input holding every encoder layer, [B, L+1, D], becomes one embedding:
        "none" (default: the paper pools one layer, so inputs are [B, D] and a stacked input is refused) or
        "softmax": sum_k softmax(w)_k h_k with learned w [L+1], zeros at initialisation (the layers' mean),
        as s3prl's Featurizer; [B, D] inputs pass unchanged.
    """

    num_classes: int
    filters: tuple[int, ...] = (64, 128)
    kernel_size: int = 3
    pool_size: int = 2
    conv_padding: Literal["VALID", "SAME"] = "VALID"
    latent_dim: int = 120
    hidden: int = 128
    dropout_rate: float = 0.5
    dropout_places: tuple[str, ...] = ("head",)
    transport: Literal["plain", "barycentric"] = "plain"
    sinkhorn: SinkhornOptions = field(default_factory=SinkhornOptions)
    layer_mix: Literal["none", "softmax"] = "none"

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any) -> None:
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ModelConfig.{name} must be an int >= 1, got {value!r}")

        for name in ("num_classes", "kernel_size", "pool_size", "latent_dim", "hidden"):
            positive_int(name, getattr(self, name))
        if self.num_classes < 2:
            raise ValueError(f"ModelConfig.num_classes must be >= 2, got {self.num_classes}")
        if not self.filters:
            raise ValueError("ModelConfig.filters must name at least one conv layer")
        for f in self.filters:
            positive_int("filters[i]", f)
        if self.conv_padding not in CONV_PADDINGS:
            raise ValueError(f"ModelConfig.conv_padding must be one of {CONV_PADDINGS}, got {self.conv_padding!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"ModelConfig.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        unknown = set(self.dropout_places) - set(DROPOUT_PLACES)
        if unknown:
            raise ValueError(f"ModelConfig.dropout_places: unknown {sorted(unknown)}; known: {DROPOUT_PLACES}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"ModelConfig.transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.layer_mix not in LAYER_MIXES:
            raise ValueError(f"ModelConfig.layer_mix must be one of {LAYER_MIXES}, got {self.layer_mix!r}")
        if not isinstance(self.sinkhorn, SinkhornOptions):
            raise ValueError(f"ModelConfig.sinkhorn must be a SinkhornOptions, got {type(self.sinkhorn).__name__}")

    def conv_length(self, dim: int) -> int:
        """Sequence length after the conv stack for an embedding of length `dim` (0 if it vanishes)."""
        length = dim
        for _ in self.filters:
            if self.conv_padding == "VALID":
                length -= self.kernel_size - 1
            length = max(length, 0) // self.pool_size
        return length

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: tuples as lists, ``sinkhorn`` as a dict of its options."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "ModelConfig":
        """The inverse of `to_dict` (lists back to tuples, ``sinkhorn`` a dict of `SinkhornOptions` fields);
        an unknown field is a ValueError naming it and the known ones."""
        for kind, given in ((cls, options), (SinkhornOptions, options.get("sinkhorn") or {})):
            known = [f.name for f in fields(kind)]
            unknown = sorted(set(given) - set(known)) if isinstance(given, Mapping) else []
            if unknown:
                raise ValueError(f"{kind.__name__}: unknown fields {unknown}; known: {', '.join(known)}")
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        if isinstance(options.get("sinkhorn"), Mapping):
            options["sinkhorn"] = SinkhornOptions(**options["sinkhorn"])
        return cls(**options)


def _dropout(config: ModelConfig, place: str, x: jax.Array, train: bool) -> jax.Array:
    if place not in config.dropout_places or config.dropout_rate == 0.0:
        return x
    return nn.Dropout(config.dropout_rate, deterministic=not train)(x)


def _max_pool(x: jax.Array, size: int) -> jax.Array:
    """Max over non-overlapping windows along axis 1 of [B, L, C], dropping a trailing remainder.

    Same values as a strided max-pool; written as reshape + max because its gradient is much faster on
    CPU than select-and-scatter (a branch's gradient measured 128 ms against 191 ms).
    """
    batch, length, channels = x.shape
    kept = length // size * size
    return jnp.max(x[:, :kept].reshape(batch, length // size, size, channels), axis=2)


class ConvStack(nn.Module):
    """[B, D] -> [B, L * filters[-1]]: the embedding as a 1-channel sequence through Conv1D+ReLU+MaxPool
    layers, flattened in (length, channel) order as Keras' Flatten does."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        if cfg.conv_length(x.shape[-1]) < 1:
            raise ValueError(
                f"ConvStack: an embedding of length {x.shape[-1]} is too short for {len(cfg.filters)} conv "
                f"(kernel {cfg.kernel_size}, {cfg.conv_padding}) + max-pool ({cfg.pool_size}) layers"
            )
        h = x[:, :, None]
        for i, features in enumerate(cfg.filters):
            h = Conv1D(features, cfg.kernel_size, cfg.conv_padding, name=f"conv{i}")(h)
            h = _max_pool(nn.relu(h), cfg.pool_size)
            h = _dropout(cfg, "conv", h, train)
        return h.reshape(h.shape[0], -1)


class CNNBranch(nn.Module):
    """[B, D] -> R [B, latent_dim]: ConvStack then a linear projection (paper: 120-dim latent space)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = ConvStack(self.config, name="conv")(x, train)
        r = nn.Dense(self.config.latent_dim, name="project")(h)
        return _dropout(self.config, "latent", r, train)


class Classifier(nn.Module):
    """[B, F] -> logits [B, C]: Dense(hidden) ReLU -> dropout -> Dense(C); sows the last Dense's input."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = nn.relu(nn.Dense(self.config.hidden, name="hidden")(x))
        h = _dropout(self.config, "head", h, train)
        self.sow("intermediates", "penultimate", h)
        return nn.Dense(self.config.num_classes, name="logits")(h)


class HadamardFusion(nn.Module):
    """HP = R_p * R_q (element-wise), [B, d]."""

    @nn.compact
    def __call__(self, r_p: jax.Array, r_q: jax.Array) -> jax.Array:
        return r_p * r_q


class OTFusion(nn.Module):
    """concat(F_q, F_p) [B, 4 d]: F_q = [T_pq, R_q], F_p = [T_qp, R_p], T_pq = s Gamma R_p, T_qp = s Gamma^T R_q,

    Gamma = Sinkhorn(normalized_cost(R_p, R_q)) over the valid rows, s = 1 ("plain") or n_valid
    ("barycentric").
    """

    transport: str = "plain"
    sinkhorn: SinkhornOptions = SinkhornOptions()

    @nn.compact
    def __call__(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        plan = transport_plan(normalized_cost(r_p, r_q, mask), mask, self.sinkhorn)
        if self.transport == "barycentric":
            n_valid = r_p.shape[0] if mask is None else jnp.where(jnp.any(mask), jnp.sum(mask), r_p.shape[0])
            plan = plan * n_valid
        t_pq = plan @ r_p
        t_qp = plan.T @ r_q
        return jnp.concatenate([t_pq, r_q, t_qp, r_p], axis=-1)


class LayerMix(nn.Module):
    """[B, L+1, D] -> [B, D]: sum_k softmax(w)_k h[:, k], w [L+1] learned ("weights", zeros at init)."""

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        w = self.param("weights", nn.initializers.zeros, (h.shape[1],), jnp.float32)
        return jnp.einsum("l,bld->bd", jax.nn.softmax(w), h)


def _mix_layers(inputs: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Each stacked input [B, L+1, D] through its own LayerMix (``layer_mix_<i>``); [B, D] ones unchanged."""
    return tuple(LayerMix(name=f"layer_mix_{i}")(x) if x.ndim == 3 else x for i, x in enumerate(inputs))


def _check_inputs(inputs: Any, count: int, mask: jax.Array | None, model: str,
                  layer_mix: str = "none") -> tuple[jax.Array, ...]:
    """The inputs as a tuple of `count` float32 [B, D_i] arrays (or [B, L+1, D_i] under layer_mix "softmax")
    with one B; a clear error otherwise."""
    if not isinstance(inputs, (tuple, list)) or len(inputs) != count:
        got = f"{type(inputs).__name__} of length {len(inputs)}" if isinstance(inputs, (tuple, list)) else type(inputs).__name__
        raise ValueError(f"{model}: inputs must be a tuple of {count} array(s) [B, D], got {got}")
    arrays = tuple(jnp.asarray(x) for x in inputs)
    for i, x in enumerate(arrays):
        if x.ndim == 3 and layer_mix == "none":
            raise ValueError(f"{model}: inputs[{i}] holds every layer {x.shape}; a model takes stacked layers only "
                             "with ModelConfig.layer_mix='softmax'")
        if x.ndim not in (2, 3) or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{model}: inputs[{i}] must be a float array [B, D], got {x.dtype} {x.shape}")
    batch = arrays[0].shape[0]
    if any(x.shape[0] != batch for x in arrays):
        raise ValueError(f"{model}: inputs must share the batch size, got {[x.shape for x in arrays]}")
    if mask is not None and (mask.shape != (batch,) or mask.dtype != jnp.bool_):
        raise ValueError(f"{model}: mask must be bool of shape ({batch},), got {mask.dtype} {mask.shape}")
    return tuple(x.astype(jnp.float32) for x in arrays)


class FCNHead(nn.Module):
    """The paper's FCN on one embedding: Classifier applied to the raw [B, D] input."""

    config: ModelConfig

    @nn.compact
    def __call__(self, inputs: Sequence[jax.Array], mask: jax.Array | None = None, train: bool = False) -> jax.Array:
        (x,) = _mix_layers(_check_inputs(inputs, 1, mask, "FCNHead", self.config.layer_mix))
        return Classifier(self.config, name="head")(x, train)


class CNNHead(nn.Module):
    """The paper's CNN on one embedding: ConvStack -> flatten -> Classifier (no 120-dim projection)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, inputs: Sequence[jax.Array], mask: jax.Array | None = None, train: bool = False) -> jax.Array:
        (x,) = _mix_layers(_check_inputs(inputs, 1, mask, "CNNHead", self.config.layer_mix))
        return Classifier(self.config, name="head")(ConvStack(self.config, name="conv")(x, train), train)


class _TwoBranchModel(nn.Module):
    """Two CNNBranches (R_p, R_q), a fusion of them (`fuse`, per subclass), then the Classifier."""

    config: ModelConfig

    def fuse(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None) -> jax.Array:
        raise NotImplementedError

    def _ot(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None) -> jax.Array:
        return OTFusion(self.config.transport, self.config.sinkhorn, name="ot")(r_p, r_q, mask)

    @nn.compact
    def __call__(self, inputs: Sequence[jax.Array], mask: jax.Array | None = None, train: bool = False) -> jax.Array:
        x_p, x_q = _mix_layers(_check_inputs(inputs, 2, mask, type(self).__name__, self.config.layer_mix))
        r_p = CNNBranch(self.config, name="branch_p")(x_p, train)
        r_q = CNNBranch(self.config, name="branch_q")(x_q, train)
        return Classifier(self.config, name="head")(self.fuse(r_p, r_q, mask), train)


class PARROT(_TwoBranchModel):
    """concat(HP, F_q, F_p) -> Classifier: the paper's model."""

    def fuse(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None) -> jax.Array:
        return jnp.concatenate([HadamardFusion(name="hadamard")(r_p, r_q), self._ot(r_p, r_q, mask)], axis=-1)


class ConcatFusion(_TwoBranchModel):
    """concat(R_p, R_q) -> Classifier: the paper's baseline fusion (PARROT without its two branches)."""

    def fuse(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None) -> jax.Array:
        return jnp.concatenate([r_p, r_q], axis=-1)


class HadamardOnly(_TwoBranchModel):
    """HP -> Classifier: PARROT without the OT branch (ablation)."""

    def fuse(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None) -> jax.Array:
        return HadamardFusion(name="hadamard")(r_p, r_q)


class OTOnly(_TwoBranchModel):
    """concat(F_q, F_p) -> Classifier: PARROT without the Hadamard branch (ablation)."""

    def fuse(self, r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None) -> jax.Array:
        return self._ot(r_p, r_q, mask)


_MODELS: dict[str, type[nn.Module]] = {
    "fcn": FCNHead,
    "cnn": CNNHead,
    "parrot": PARROT,
    "concat": ConcatFusion,
    "hadamard": HadamardOnly,
    "ot": OTOnly,
}


def _check_kind(kind: str) -> None:
    if kind not in _MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")


def num_inputs(kind: str) -> int:
    """How many embeddings model `kind` takes: 1 (fcn, cnn) or 2 (the fusions)."""
    _check_kind(kind)
    return 1 if kind in ("fcn", "cnn") else 2


def build_model(kind: str, config: ModelConfig) -> nn.Module:
    """The Flax module of model `kind` (one of MODEL_KINDS)."""
    _check_kind(kind)
    return _MODELS[kind](config)


def param_shapes(kind: str, config: ModelConfig, shapes: Sequence[tuple[int, ...]]) -> Any:
    """The params of model `kind` for rows of the given shapes ([D], or [L+1, D]) as a tree of
    `jax.ShapeDtypeStruct`, by tracing its initialisation (nothing computed); raises what the model raises
    on inputs it cannot take (e.g. a conv stack that shortens the embedding to nothing)."""
    module = build_model(kind, config)
    key = jax.random.PRNGKey(0)
    inputs = tuple(jax.ShapeDtypeStruct((2, *shape), jnp.float32) for shape in shapes)
    init = lambda xs: module.init({"params": key, "dropout": key}, xs, mask=None, train=False)["params"]  # noqa: E731
    return jax.eval_shape(init, inputs)


def penultimate_features(
    module: nn.Module, params: Any, inputs: Sequence[jax.Array], mask: jax.Array | None = None
) -> jax.Array:
    """[B, hidden]: the input of the last Dense in evaluation mode (for t-SNE plots of the paper's Fig. 2)."""
    _, state = module.apply({"params": params}, inputs, mask=mask, train=False, mutable=["intermediates"])
    return state["intermediates"]["head"]["penultimate"][0]
