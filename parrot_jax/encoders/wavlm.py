"""WavLM: the wav2vec2 architecture with gated relative position bias in every attention layer.

Layer 0 owns a table E [num_buckets, H] and makes the bias b[h, i, j] = E[bucket(j - i), h] (T5-style
log buckets: exact below num_buckets/4, logarithmic up to max_bucket_distance, sign in the top half).
Every layer gates it by its own input x [B, T, D] split into heads x_h [B, T, d]:

    (a, c) = sigmoid(sum over groups of 4 of Linear_{d->8}(x_h))        each [B, H, T]
    gate   = a * (c * const_h - 1) + 2
    attn   = softmax(q k^T / sqrt(d) + gate[..., None] * b) v

and passes the ungated b on. Everything else (conv stack, projection, positional conv, layer
stack, batching, pooling) is shared with ``wav2vec2.py``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from parrot_jax.encoders.options import split
from parrot_jax.encoders.wav2vec2 import (AttentionEncoder, EmbeddingOptions, RunOptions, SelfAttention,
                                          Wav2Vec2Config, Wav2Vec2Model)


@functools.lru_cache(maxsize=32)
def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """int32 [length, length]: bucket of the relative position j - i, computed in float32 as transformers does."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.where(rel < max_exact, 0, np.float32(max_exact) + large)  # avoid casting -inf (rel = 0)
    large = np.minimum(large.astype(np.int64), half - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class WavLMAttention(SelfAttention):
    """Self-attention with WavLM's gated relative position bias; returns (output, ungated bias)."""

    @nn.compact
    def __call__(self, x: jax.Array, key_valid: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        c = self.cfg
        heads, length = c.num_attention_heads, x.shape[1]
        if bias is None:
            if not self.has_relative_position_bias:
                raise ValueError("WavLM: only the first layer computes the relative position bias")
            buckets = relative_position_buckets(length, c.num_buckets, c.max_bucket_distance)
            table = nn.Embed(c.num_buckets, heads, name="rel_attn_embed")
            bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))[None]  # [1, H, T, T]
        q, k, v = self.project(x)
        xh = x.reshape(*x.shape[:2], heads, -1)  # [B, T, H, d]
        proj = nn.Dense(8, name="gru_rel_pos_linear")(xh).reshape(*xh.shape[:3], 2, 4).sum(-1)
        gate_a, gate_c = jnp.moveaxis(jax.nn.sigmoid(proj), -1, 0)  # each [B, T, H]
        const = self.param("gru_rel_pos_const", nn.initializers.ones, (1, heads, 1, 1)).reshape(heads)
        gate = gate_a * (gate_c * const - 1.0) + 2.0
        gated = jnp.transpose(gate, (0, 2, 1))[..., None] * bias  # [B, H, T, T]
        return self.attend(q, k, v, key_valid, gated), bias


def wavlm_model(cfg: Wav2Vec2Config) -> Wav2Vec2Model:
    return Wav2Vec2Model(cfg, attention=WavLMAttention)


def load(folder: Path) -> tuple[Wav2Vec2Config, Any]:
    """(config, params) of a WavLM checkpoint folder."""
    from parrot_jax.encoders import wav2vec2

    return wav2vec2.load(folder, wavlm_model, ("wavlm",))


def option_classes(name: str) -> tuple[type, type]:
    """(embedding options, run options): the wav2vec2 family's."""
    return EmbeddingOptions, RunOptions


def build(name: str, checkpoint_folder: Path, **options: Any) -> AttentionEncoder:
    """Registry builder for wavlm-base (and other WavLM sizes): the options of the wav2vec2 family."""
    embedding, running = split(name, options, EmbeddingOptions, RunOptions)
    return AttentionEncoder(name, checkpoint_folder, wavlm_model, ("wavlm",), embedding, running)
