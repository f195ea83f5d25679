"""wav2vec2 / HuBERT / UniSpeech-SAT / MMS as one config-driven Flax (linen) encoder, PyTorch-free.

The architecture (transformers' ``Wav2Vec2Model``, ``HubertModel``, ``UniSpeechSatModel``; WavLM swaps
the attention, see ``wavlm.py``)::

    wave [B, S] --conv stack (GroupNorm on layer 0, or LayerNorm on every layer; GELU)--> [B, T, C]
         --LayerNorm + Linear--> h [B, T, D];  padded frames set to 0
         h <- h + GELU(conv_pos(h))             (grouped conv, kernel K, "same" padding)
         post-LN ("group" models): h <- LayerNorm(h);  layers: h <- LN(h + Attn(h)); h <- LN(h + FFN(h))
         pre-LN (stable-layer-norm, MMS): h <- h + Attn(LN(h)); h <- h + FFN(LN(h)); at the end LN(h)

Hidden states follow transformers 5.x: ``hidden_states[0]`` is the input of the first layer,
``hidden_states[i]`` the output of layer i (for pre-LN models the last one is *before* the final
LayerNorm), and ``last_hidden_state`` is the model's output.

Batching: the valid length of every row is passed along; the GroupNorm of conv layer 0 takes its
statistics over valid frames only, attention never looks at padded keys, and pooling averages valid
frames only, so a row's embedding does not depend on the rest of the batch.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from parrot_jax.encoders import checkpoints as ck
from parrot_jax.encoders.base import HostBatches, Program
from parrot_jax.encoders.options import split, to_json
from parrot_jax.encoders.runner import Runner, jitted, run, runner_of
from parrot_jax.files import sha256_files

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclass(frozen=True)
class Wav2Vec2Config:
    """What the Flax module needs from a transformers config.json (see :meth:`from_hf`)."""

    model_type: str  # "wav2vec2", "hubert", "unispeech-sat", "wavlm"
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_bias: bool
    feat_extract_norm: str  # "group" (GroupNorm on conv layer 0) or "layer" (LayerNorm on every conv layer)
    feat_extract_activation: str
    hidden_act: str
    feat_proj_layer_norm: bool  # HuBERT may leave out the projection's LayerNorm
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int
    conv_pos_batch_norm: bool  # HuBERT variant: BatchNorm before a plain positional conv
    do_stable_layer_norm: bool
    layer_norm_eps: float
    num_buckets: int = 320  # WavLM relative position buckets
    max_bucket_distance: int = 800

    @classmethod
    def from_hf(cls, hf: Any, source: str | None = None) -> "Wav2Vec2Config":
        """From a transformers config object; refuses (CheckpointError naming `source`, e.g. the config.json,
        and the field) the variants whose output this module would not match and inconsistent sizes."""
        source = source or getattr(hf, "_name_or_path", "") or hf.model_type
        if getattr(hf, "add_adapter", False):
            raise ck.CheckpointError(f"{source}: config has add_adapter=True (a fine-tuning adapter); not supported")
        if getattr(hf, "adapter_attn_dim", None) is not None:
            raise ck.CheckpointError(f"{source}: config has adapter_attn_dim set (MMS language adapters); "
                                     "not supported")
        if hf.feat_extract_norm not in ("group", "layer"):
            raise ck.CheckpointError(f"{source}: feat_extract_norm={hf.feat_extract_norm!r}; "
                                     "expected 'group' or 'layer'")
        for field_name in ("hidden_act", "feat_extract_activation"):
            if getattr(hf, field_name) not in _ACTIVATIONS:
                raise ck.CheckpointError(f"{source}: {field_name}={getattr(hf, field_name)!r}; "
                                         f"expected one of {sorted(_ACTIVATIONS)}")
        _check_sizes(hf, source)
        return cls(
            model_type=hf.model_type,
            hidden_size=hf.hidden_size,
            num_hidden_layers=hf.num_hidden_layers,
            num_attention_heads=hf.num_attention_heads,
            intermediate_size=hf.intermediate_size,
            conv_dim=tuple(hf.conv_dim),
            conv_kernel=tuple(hf.conv_kernel),
            conv_stride=tuple(hf.conv_stride),
            conv_bias=bool(hf.conv_bias),
            feat_extract_norm=hf.feat_extract_norm,
            feat_extract_activation=hf.feat_extract_activation,
            hidden_act=hf.hidden_act,
            feat_proj_layer_norm=bool(getattr(hf, "feat_proj_layer_norm", True)),
            num_conv_pos_embeddings=hf.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=hf.num_conv_pos_embedding_groups,
            conv_pos_batch_norm=bool(getattr(hf, "conv_pos_batch_norm", False)),
            do_stable_layer_norm=bool(hf.do_stable_layer_norm),
            layer_norm_eps=float(hf.layer_norm_eps),
            num_buckets=int(getattr(hf, "num_buckets", 320)),
            max_bucket_distance=int(getattr(hf, "max_bucket_distance", 800)),
        )

    def frames(self, samples: Any) -> Any:
        """Frames the conv stack makes of `samples` (int or integer array): T <- floor((T - k) / s) + 1 per layer."""
        for k, s in zip(self.conv_kernel, self.conv_stride):
            samples = (samples - k) // s + 1
        return samples

    @property
    def min_samples(self) -> int:
        """The shortest input giving one frame: the conv stack's receptive field."""
        n = 1
        for k, s in reversed(list(zip(self.conv_kernel, self.conv_stride))):
            n = (n - 1) * s + k
        return n


def _check_sizes(hf: Any, source: str) -> None:
    """Refuse sizes the modules cannot be built with: non-positive counts or conv sizes, heads or
    positional-conv groups that do not divide hidden_size (transformers checks the conv lists' lengths)."""
    counts = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "num_conv_pos_embeddings", "num_conv_pos_embedding_groups")
    for name in counts:
        value = getattr(hf, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ck.CheckpointError(f"{source}: {name}={value!r}; expected a positive integer")
    for name in ("num_attention_heads", "num_conv_pos_embedding_groups"):
        if hf.hidden_size % getattr(hf, name):
            raise ck.CheckpointError(f"{source}: {name}={getattr(hf, name)} does not divide "
                                     f"hidden_size={hf.hidden_size}")
    for name in ("conv_dim", "conv_kernel", "conv_stride"):
        values = list(getattr(hf, name))
        if not all(isinstance(v, int) and v >= 1 for v in values):
            raise ck.CheckpointError(f"{source}: {name}={values}; expected positive integers")


# ---------------------------------------------------------------------------------------------------
# Flax modules (names mirror transformers' so that checkpoint keys map one to one)


def _valid(length: jax.Array, size: int) -> jax.Array:
    """[B, size] bool: position t < length[b]."""
    return jnp.arange(size)[None, :] < length[:, None]


class MaskedInstanceNorm(nn.Module):
    """``GroupNorm(C groups, C channels)`` over time, statistics over the valid frames of each row only.

    y[b,t,c] = (x[b,t,c] - mu[b,c]) / sqrt(var[b,c] + eps) * scale[c] + bias[c],  mu, var over t < length[b].
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, length: jax.Array) -> jax.Array:
        # The sums over time are written as mask-vector products: XLA:CPU runs a reduction over the
        # non-minor axis of [B, T, C] some 20x slower (measured: 336 ms vs 14 ms at T=16000, C=512).
        mask = _valid(length, x.shape[1]).astype(x.dtype)
        n = jnp.maximum(length, 1)[:, None].astype(x.dtype)
        mu = jnp.einsum("bt,btc->bc", mask, x) / n
        d = x - mu[:, None]
        var = jnp.einsum("bt,btc->bc", mask, d * d) / n
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return d * jax.lax.rsqrt(var + self.eps)[:, None] * scale + bias


class ConvLayer(nn.Module):
    """One conv layer of the feature encoder: conv -> (norm) -> activation."""

    features: int
    kernel: int
    stride: int
    use_bias: bool
    norm: str  # "group", "layer" or "none"
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array, length: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, (self.kernel,), (self.stride,), padding="VALID", use_bias=self.use_bias,
                    name="conv")(x)
        if self.norm == "group":
            x = MaskedInstanceNorm(name="layer_norm")(x, length)
        elif self.norm == "layer":
            x = nn.LayerNorm(epsilon=1e-5, name="layer_norm")(x)
        return _ACTIVATIONS[self.activation](x)


class FeatureEncoder(nn.Module):
    """Raw wave [B, S] -> conv features [B, T, C] and the valid frame count of each row."""

    cfg: Wav2Vec2Config

    @nn.compact
    def __call__(self, wave: jax.Array, length: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.cfg
        x = wave[:, :, None]
        for i, (dim, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
            length = (length - k) // s + 1
            norm = c.feat_extract_norm if (c.feat_extract_norm == "layer" or i == 0) else "none"
            x = ConvLayer(dim, k, s, c.conv_bias, norm, c.feat_extract_activation, name=f"conv_layers_{i}")(x, length)
        return x, length


class FeatureProjection(nn.Module):
    """[B, T, C] -> [B, T, D]: Linear(LayerNorm(x)) (HuBERT configs may leave out the LayerNorm)."""

    cfg: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.cfg.feat_proj_layer_norm:
            x = nn.LayerNorm(epsilon=self.cfg.layer_norm_eps, name="layer_norm")(x)
        return nn.Dense(self.cfg.hidden_size, name="projection")(x)


class FrozenBatchNorm(nn.Module):
    """BatchNorm1d in inference mode: (x - running_mean) / sqrt(running_var + eps) * scale + bias."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        mean = self.param("mean", nn.initializers.zeros, (d,))
        var = self.param("var", nn.initializers.ones, (d,))
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class PositionalConv(nn.Module):
    """Convolutional relative positional embedding: GELU(conv_K(x)) with "same" padding (last frame
    dropped for even K). The weight norm of the checkpoint is folded into the kernel when loading."""

    cfg: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        k = c.num_conv_pos_embeddings
        if c.conv_pos_batch_norm:
            x = FrozenBatchNorm(name="batch_norm")(x)
        y = nn.Conv(c.hidden_size, (k,), padding=[(k // 2, k // 2)],
                    feature_group_count=c.num_conv_pos_embedding_groups, name="conv")(x)
        if k % 2 == 0:
            y = y[:, :-1]
        return _ACTIVATIONS[c.feat_extract_activation](y)


class SelfAttention(nn.Module):
    """Multi-head self-attention; keys beyond a row's length are never attended to.

    softmax(q k^T / sqrt(d_head) + bias) v, with `bias` an optional additive [B, H, T, T] term (unused here).
    Returns (output, bias passed on to the next layer). `has_relative_position_bias` (True in the first
    layer) is part of the interface the layer stack calls: WavLM's attention, a subclass, uses it.
    """

    cfg: Wav2Vec2Config
    has_relative_position_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, key_valid: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, Any]:
        q, k, v = self.project(x)
        return self.attend(q, k, v, key_valid, None), bias

    def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        c = self.cfg
        heads = c.num_attention_heads
        split = lambda y: y.reshape(*y.shape[:2], heads, -1)  # [B, T, H, d]
        q = split(nn.Dense(c.hidden_size, name="q_proj")(x))
        k = split(nn.Dense(c.hidden_size, name="k_proj")(x))
        v = split(nn.Dense(c.hidden_size, name="v_proj")(x))
        return q, k, v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array,
               bias: jax.Array | None) -> jax.Array:
        scores = jnp.einsum("bqhd,bkhd->bhqk", q * (q.shape[-1] ** -0.5), k)
        if bias is not None:
            scores = scores + bias
        scores = jnp.where(key_valid[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return nn.Dense(self.cfg.hidden_size, name="out_proj")(out.reshape(*out.shape[:2], -1))


class FeedForward(nn.Module):
    cfg: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _ACTIVATIONS[self.cfg.hidden_act](nn.Dense(self.cfg.intermediate_size, name="intermediate_dense")(x))
        return nn.Dense(self.cfg.hidden_size, name="output_dense")(h)


class EncoderLayer(nn.Module):
    """Post-LN: LN(h + Attn(h)) then LN(h + FFN(h)); pre-LN (stable): h + Attn(LN h) then h + FFN(LN h)."""

    cfg: Wav2Vec2Config
    attention: type[nn.Module]
    first: bool

    @nn.compact
    def __call__(self, h: jax.Array, key_valid: jax.Array, bias: Any) -> tuple[jax.Array, Any]:
        c = self.cfg
        attn = self.attention(c, has_relative_position_bias=self.first, name="attention")
        ln = nn.LayerNorm(epsilon=c.layer_norm_eps, name="layer_norm")
        final_ln = nn.LayerNorm(epsilon=c.layer_norm_eps, name="final_layer_norm")
        ff = FeedForward(c, name="feed_forward")
        if c.do_stable_layer_norm:
            a, bias = attn(ln(h), key_valid, bias)
            h = h + a
            return h + ff(final_ln(h)), bias
        a, bias = attn(h, key_valid, bias)
        h = ln(h + a)
        return final_ln(h + ff(h)), bias


class Transformer(nn.Module):
    """Positional conv + the layer stack. Returns (hidden_states tuple of L+1, last_hidden_state)."""

    cfg: Wav2Vec2Config
    attention: type[nn.Module]

    @nn.compact
    def __call__(self, h: jax.Array, frame_valid: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
        c = self.cfg
        h = jnp.where(frame_valid[:, :, None], h, 0.0)
        h = h + PositionalConv(c, name="pos_conv_embed")(h)
        final_ln = nn.LayerNorm(epsilon=c.layer_norm_eps, name="layer_norm")
        if not c.do_stable_layer_norm:
            h = final_ln(h)
        states, bias = [h], None
        for i in range(c.num_hidden_layers):
            h, bias = EncoderLayer(c, self.attention, first=(i == 0), name=f"layers_{i}")(h, frame_valid, bias)
            states.append(h)
        return tuple(states), (final_ln(h) if c.do_stable_layer_norm else h)


class Wav2Vec2Model(nn.Module):
    """wave [B, S] + valid samples [B] -> (hidden_states, last_hidden_state, valid frames [B])."""

    cfg: Wav2Vec2Config
    attention: type[nn.Module] = SelfAttention

    @nn.compact
    def __call__(self, wave: jax.Array, length: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array, jax.Array]:
        c = self.cfg
        x, frames = FeatureEncoder(c, name="feature_extractor")(wave, length)
        h = FeatureProjection(c, name="feature_projection")(x)
        states, last = Transformer(c, self.attention, name="encoder")(h, _valid(frames, h.shape[1]))
        return states, last, frames


# ---------------------------------------------------------------------------------------------------
# checkpoint -> params

PREFIXES = ("wav2vec2.", "hubert.", "unispeech_sat.", "wavlm.")
UNUSED = (  # heads of pre-training / fine-tuning classes and training-only parameters
    r"masked_spec_embed$", r"quantizer\.", r"project_q\.", r"project_hid\.", r"final_proj\.",
    r"label_embs_concat$", r"label_embeddings_concat$",
    r"lm_head\.", r"speaker_proj\.", r"layer_norm_for_extract\.", r"classifier\.", r"projector\.", r"layer_weights$",
    r"tdnn\.", r"feature_extractor_xvector\.", r"objective\.", r".*num_batches_tracked$",
)
_LEAF = {"bias": "bias", "running_mean": "mean", "running_var": "var", "gru_rel_pos_const": "gru_rel_pos_const"}


def rename(key: str) -> tuple[str, ck.Transform] | None:
    """transformers key -> (Flax path, transform), e.g. ``encoder.layers.3.attention.q_proj.weight`` ->
    ``encoder/layers_3/attention/q_proj/kernel`` (transposed)."""
    parts: list[str] = []
    for p in key.split("."):
        if p.isdigit() and parts:
            parts[-1] += f"_{p}"
        else:
            parts.append(p)
    *modules, leaf = parts
    if not modules:
        return None
    owner = modules[-1]
    if leaf == "weight":
        if "norm" in owner:
            return "/".join(modules + ["scale"]), ck.identity
        if owner == "rel_attn_embed":
            return "/".join(modules + ["embedding"]), ck.identity
        return "/".join(modules + ["kernel"]), (ck.conv_kernel if owner == "conv" else ck.linear_kernel)
    if leaf in _LEAF:
        return "/".join(modules + [_LEAF[leaf]]), ck.identity
    return None


def prepare_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip pre-training prefixes, drop unused heads, fold the positional conv's weight norm."""
    return ck.fold_weight_norm(ck.drop_keys(ck.strip_prefix(state, PREFIXES), UNUSED))


def checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, in the names save_pretrained writes: model.safetensors, else
    pytorch_model.bin, else the shards listed by model.safetensors.index.json / pytorch_model.bin.index.json."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            shards = sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
    raise FileNotFoundError(
        f"{folder}: no model.safetensors or pytorch_model.bin (expected a downloaded checkpoint folder)")


def read_config(folder: Path, expected_types: Sequence[str]) -> Any:
    """transformers config of `folder` (config.json through AutoConfig: no torch), checked for its model_type."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a downloaded checkpoint folder)")
    try:
        hf = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, StrictDataclassError) as error:
        reason = " ".join(str(error).split())
        raise ck.CheckpointError(f"{folder / 'config.json'}: not a readable transformers config ({reason})") from None
    if hf.model_type not in expected_types:
        raise ck.CheckpointError(f"{folder}/config.json: model_type {hf.model_type!r}; expected one of "
                                 f"{list(expected_types)}")
    return hf


def load(folder: Path, model: Callable[[Wav2Vec2Config], nn.Module] | None = None,
         expected_types: Sequence[str] = ("wav2vec2", "hubert", "unispeech-sat")) -> tuple[Wav2Vec2Config, Any]:
    """(config, params) of a checkpoint folder (config.json + model.safetensors or pytorch_model.bin)."""
    folder = Path(folder)
    cfg = Wav2Vec2Config.from_hf(read_config(folder, expected_types), str(folder / "config.json"))
    module = (model or Wav2Vec2Model)(cfg)
    n = cfg.min_samples
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, n)), jnp.array([n]))["params"]
    files = checkpoint_files(folder)
    state = {k: v for f in files for k, v in ck.read_state_dict(f).items()}
    source = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
    params = ck.load_params(template, prepare_state(state), rename, source=source)
    return cfg, jax.device_put(params)  # on the device once, not copied from host memory at every call


# ---------------------------------------------------------------------------------------------------
# batching, pooling, the Encoder


def bucket_length(n: int, quantum: int, ratio: float) -> int:
    """Smallest grid length >= n; the grid is quantum * ceil(ratio^k), so padding adds < (ratio - 1) * n."""
    k = max(0, math.ceil(math.log(max(n, 1) / quantum) / math.log(ratio) - 1e-9))
    while True:
        size = quantum * math.ceil(ratio**k)
        if size >= n:
            return size
        k += 1


def pool(states: tuple[jax.Array, ...], last: jax.Array, frames: jax.Array, layer: Any, pooling: str) -> jax.Array:
    """Pooled embedding [B, D] (mean) or [B, 2D] (mean+std) of the chosen layer over valid frames.

    layer: "last" (last_hidden_state, the paper's choice), an index k into hidden_states (0 = input of
    the first transformer layer), a sequence of L+1 weights w_k giving sum_k w_k hidden_states[k], or
    "all": every hidden state pooled alone, stacked [B, L+1, D] (for a model's learned layer weights).
    """
    if layer == "all":
        return jnp.stack([pool(states, last, frames, k, pooling) for k in range(len(states))], axis=1)
    if layer == "last":
        h = last
    elif isinstance(layer, int):
        h = states[layer]
    else:
        h = sum(w * s for w, s in zip(layer, states))
    mask = _valid(frames, h.shape[1]).astype(h.dtype)
    n = frames[:, None].astype(h.dtype)
    mean = jnp.einsum("bt,btd->bd", mask, h) / n  # sums over time as products: see MaskedInstanceNorm
    if pooling == "mean":
        return mean
    var = jnp.einsum("bt,btd->bd", mask, jnp.square(h - mean[:, None])) / n
    return jnp.concatenate([mean, jnp.sqrt(var)], axis=-1)


@dataclass(frozen=True)
class EmbeddingOptions:
    """What changes the embedding (the paper's setting: the last hidden state, mean-pooled).

    layer: "last" | an index k into the hidden states | L+1 weights of a layer mix | "all" (every hidden
        state, [L+1, dim] per utterance; see :func:`pool`).
    pooling: "mean" | "mean+std".
    """

    layer: int | Literal["last", "all"] | tuple[float, ...] = "last"
    pooling: Literal["mean", "mean+std"] = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.layer, (list, tuple)):  # a layer mix: weights as floats, one spelling per identity
            object.__setattr__(self, "layer", tuple(float(w) for w in self.layer))
        if self.pooling not in ("mean", "mean+std"):
            raise ValueError(f"pooling={self.pooling!r}; expected 'mean' or 'mean+std'")
        if isinstance(self.layer, str) and self.layer not in ("last", "all"):
            raise ValueError(f"layer={self.layer!r}; expected 'last', 'all', an index or a list of weights")


@dataclass(frozen=True)
class RunOptions:
    """How the embedding is computed (never part of a feature set's identity).

    batch_size: most rows per compiled call (a last, smaller group is padded to a power of two rows).
    bucket_ratio: padded lengths lie on a geometric grid of this ratio (fewer compilations, < ratio-1 padding).
    compilation_cache: folder of JAX's persistent compilation cache (None: the user cache folder;
        the cache stays off when the user turned it off, PARROT_COMPILATION_CACHE=0).
    """

    batch_size: int = 4
    bucket_ratio: float = 1.1
    compilation_cache: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1) or not self.bucket_ratio > 1.0:
            raise ValueError(f"batch_size={self.batch_size}, bucket_ratio={self.bucket_ratio}; "
                             "expected batch_size >= 1 and bucket_ratio > 1")


def option_classes(name: str) -> tuple[type, type]:
    """(embedding options, run options) of every wav2vec2-family encoder (WavLM's too)."""
    return EmbeddingOptions, RunOptions


class AttentionEncoder:
    """The registry's Encoder for a wav2vec2-family checkpoint folder: the model, its pure batch function
    ``(params, wave [B, S], length [B]) -> pooled [B, dim]`` (`program`) and the host batches (`batches`).
    How it runs (devices, compilation cache) is ``runner``'s (`parrot_jax.encoders.runner`)."""

    sample_rate = 16_000
    runner: Runner | None = None

    def __init__(self, name: str, folder: Path, model: Callable[[Wav2Vec2Config], nn.Module],
                 expected_types: Sequence[str], options: EmbeddingOptions = EmbeddingOptions(),
                 run_options: RunOptions = RunOptions()):
        from transformers import Wav2Vec2FeatureExtractor

        self.name, self.folder, self.options, self.run_options = name, Path(folder), options, run_options
        self.config, self.params = load(self.folder, model, expected_types)
        if not (self.folder / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"{self.folder}: no preprocessor_config.json (feature-extractor settings)")
        fe = Wav2Vec2FeatureExtractor.from_pretrained(str(self.folder), local_files_only=True)
        if fe.sampling_rate != self.sample_rate:
            raise ValueError(
                f"{self.folder}/preprocessor_config.json: sampling_rate {fe.sampling_rate}; expected 16000")
        self.do_normalize = bool(fe.do_normalize)
        self._normalize = fe.zero_mean_unit_var_norm
        n_states = self.config.num_hidden_layers + 1
        if isinstance(options.layer, int) and not 0 <= options.layer < n_states:
            raise ValueError(f"layer={options.layer}; expected 0..{n_states - 1} or 'last'")
        if not isinstance(options.layer, (int, str)) and len(options.layer) != n_states:
            raise ValueError(f"layer weights: {len(options.layer)} given; expected {n_states} (one per hidden state)")
        self.min_samples = self.config.min_samples
        self.dim = self.config.hidden_size * (2 if options.pooling == "mean+std" else 1)
        self.layers = n_states if options.layer == "all" else None  # rows are [layers, dim] when set
        module = model(self.config)

        def embed(params: Any, wave: jax.Array, length: jax.Array) -> jax.Array:
            states, last, frames = module.apply({"params": params}, wave, length)
            return pool(states, last, frames, options.layer, options.pooling)

        self.program = Program(embed, self.params)
        self._quantum = int(np.prod(self.config.conv_stride))

    @property
    def _embed(self) -> Callable[..., Any]:
        """The compiled batch function ``runner`` calls (split over its devices where it has several)."""
        return runner_of(self).compiled(self.program)

    @property
    def _embed_one_device(self) -> Callable[..., Any]:
        """The compiled batch function on one device."""
        return jitted(self.program)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """float32 1-D wave, zero-mean unit-variance where preprocessor_config.json says do_normalize."""
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1 or x.size < self.min_samples:
            raise ValueError(f"wave of shape {x.shape}: expected 1-D with at least {self.min_samples} samples")
        if not np.all(np.isfinite(x)):
            raise ValueError("wave holds NaN or infinite samples")
        return self._normalize([x], None)[0].astype(np.float32) if self.do_normalize else x

    def batches(self, waves: Sequence[np.ndarray]) -> HostBatches:
        """The prepared waves sorted by length and grouped by ``batch_size``; each group padded to a bucket
        length and to a power of two rows (filler rows: full-length silence, never all-masked)."""
        xs = [self.prepare(w) for w in waves]
        order = sorted(range(len(xs)), key=lambda i: xs[i].size)
        groups = [order[start: start + self.run_options.batch_size]
                  for start in range(0, len(order), self.run_options.batch_size)]
        arrays = []
        for idx in groups:
            rows = min(1 << (len(idx) - 1).bit_length(), self.run_options.batch_size)
            size = bucket_length(xs[idx[-1]].size, self._quantum, self.run_options.bucket_ratio)
            wave = np.zeros((rows, size), np.float32)
            length = np.full((rows,), size, np.int32)
            for r, i in enumerate(idx):
                wave[r, : xs[i].size] = xs[i]
                length[r] = xs[i].size
            arrays.append((wave, length))

        def assemble(outputs: list[np.ndarray]) -> np.ndarray:
            out = np.zeros((len(xs), *((self.layers,) if self.layers else ()), self.dim), np.float32)
            for idx, rows in zip(groups, outputs):
                out[idx] = rows[: len(idx)]
            return out

        return HostBatches(arrays, assemble)

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(waves), dim] ([len(waves), L+1, dim] with layer="all"), through ``runner``."""
        return run(self, waves)

    @functools.cached_property
    def checkpoint_sha256(self) -> str:
        """sha256 of the weight file(s), in order (computed once: mms-1b's weights are 3.9 GB)."""
        return sha256_files(checkpoint_files(self.folder))

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "family": "attention", "options": to_json(self.options),
                "run_options": to_json(self.run_options), "checkpoint_sha256": self.checkpoint_sha256,
                "checkpoint": [p.name for p in checkpoint_files(self.folder)], "dim": self.dim,
                **({"layers": self.layers} if self.layers else {}),
                "do_normalize": self.do_normalize, "config": asdict(self.config)}


def build(name: str, checkpoint_folder: Path, **options: Any) -> AttentionEncoder:
    """Registry builder for wav2vec2-base, hubert-base, unispeech-sat-base, mms-1b (any size of these families)."""
    embedding, running = split(name, options, EmbeddingOptions, RunOptions)
    return AttentionEncoder(name, checkpoint_folder, Wav2Vec2Model, ("wav2vec2", "hubert", "unispeech-sat"),
                            embedding, running)

