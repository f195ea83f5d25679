"""Audio Mamba (SSAM; Yadav & Tan, Interspeech 2024) in Flax linen: log-mel front end, encoder, loader.

The official model (SarthakYadav/audio-mamba-official, PyTorch + mamba-ssm) embeds a waveform as follows:

1. Front end: log-mel spectrogram (80 mels, n_fft = win = 400, hop 160, 50-8000 Hz, htk mel scale, no filter
   normalisation, periodic Hann window, centred reflect padding, power 2), ``log(mel + eps)`` with eps the
   float32 machine epsilon, then per-utterance normalisation ``(x - mean) / (std + 1e-8)`` (std with Bessel's
   correction, both over all frames and mels). Laid out time-major: ``[T, 80]``.
2. The spectrogram is cut into 200-frame (2 s) chunks, the last one zero-padded. Each chunk is one forward:
   4 x 16 (time x mel) patches -> linear patch embedding -> + fixed 2-D sin-cos position embedding -> a cls
   token in front -> ``depth`` blocks (Add -> LayerNorm -> Mamba mixer) -> Add -> LayerNorm -> tokens rearranged
   into 50 per-frame vectors of ``5 * embed_dim`` values.
3. The chunks' frames are joined in time, the frames that came from the padded tail are dropped
   (``floor(50 * pad / 200)`` of them), and the mean over time is the pooled embedding
   (960 / 1920 / 3840 values for tiny / small / base).

The token-order quirk: the official patch embedding emits tokens time-major (token ``t * 5 + f``), but the
final rearrangement reads them frequency-major (``'b (f t) d -> b t (f d)'``). Output frame ``j`` therefore
holds tokens ``j, 50 + j, ..., 200 + j``, and after mean pooling block ``k`` of the embedding is the mean of
the tokens of time steps ``10k .. 10k + 9`` (all bands) instead of the mean of frequency band ``k`` (all
times). ``token_order="official"`` (default) reproduces the released behaviour; ``"time_major"`` is the
corrected order. The two give different embeddings from the same weights.

The loader reads ``<folder>/checkpoints/checkpoint-<epoch>.pth`` (newest epoch) with the project's restricted
unpickler: the ``'model'`` entry is the state dict; the ``'args'`` entry (an argparse Namespace holding an
ml_collections ConfigDict) is turned into inert records, never executed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from parrot_jax.encoders.checkpoints import (
    CheckpointError,
    CheckpointMismatch,
    Transform,
    drop_keys,
    identity,
    linear_kernel,
    load_params,
    read_torch_file,
)
from parrot_jax.encoders.base import HostBatches, Program
from parrot_jax.encoders.options import split, to_json
from parrot_jax.encoders.runner import Runner, run, runner_of
from parrot_jax.files import sha256_file

# ----------------------------------------------------------------------------------------------- front end

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
F_MIN, F_MAX = 50.0, 8000.0
LOG_EPS = float(np.finfo(np.float32).eps)  # torch.finfo().eps of the default dtype
STD_EPS = 1e-8
MIN_SAMPLES = N_FFT // 2 + 1  # centred reflect padding needs more samples than the pad (200)
CHUNK_FRAMES = 200  # 2 s of frames: one forward of the encoder


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """Triangular htk-scale filters, no area normalisation: float64 ``[N_FFT // 2 + 1, N_MELS]``.

    Corner frequencies ``f_i = mel^-1(linspace(mel(50), mel(8000), 82))``; filter ``m`` rises from
    ``f_m`` to ``f_{m+1}`` and falls to ``f_{m+2}`` over the bin frequencies ``linspace(0, 8000, 201)``.
    """
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    corners = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2))
    width = np.diff(corners)
    slopes = corners[None, :] - bins[:, None]  # [bins, N_MELS + 2]
    rising = -slopes[:, :-2] / width[:-1]
    falling = slopes[:, 2:] / width[1:]
    return np.maximum(0.0, np.minimum(rising, falling))


_MEL_FB = mel_filterbank()
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


def log_mel(wave: np.ndarray) -> np.ndarray:
    """The official normalised log-mel spectrogram of one 16 kHz wave: float32 ``[1 + len // 160, 80]``.

    ``X = |STFT(reflect_pad(wave, 200))|^2 @ fb``, ``L = log(X + eps)``, ``(L - mean L) / (std L + 1e-8)``.
    Computed in float64 (the official computes in float32; the two agree to ~1e-5).
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.shape[0] < MIN_SAMPLES:
        raise ValueError(f"log_mel expects a 1-D wave of at least {MIN_SAMPLES} samples, got shape {wave.shape}")
    padded = np.pad(wave, N_FFT // 2, mode="reflect")
    n_frames = 1 + wave.shape[0] // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    logmel = np.log(power @ _MEL_FB + LOG_EPS)
    normed = (logmel - logmel.mean()) / (logmel.std(ddof=1) + STD_EPS)
    return normed.astype(np.float32)


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SSAMConfig:
    """Architecture of one SSAM model plus the two options the official code leaves to us.

    Defaults are the official ``ssam_*_200_16x4`` configs: 200 x 80 input (time x mel), 4 x 16 patches,
    frequency_first=False, LayerNorm (eps 1e-6) without fused add-norm, Mamba d_state 24, d_conv 4, expand 3,
    dt_rank = ceil(embed_dim / 16), no linear biases, conv bias.

    token_order: "official" (default; reproduces the released frequency-major reading of time-major tokens)
      or "time_major" (corrected: frame t holds the 5 frequency tokens of time step t).
    scan: "auto" (default: sequential on CPU, associative elsewhere), "associative" or "sequential".
    """

    embed_dim: int
    depth: int = 12
    d_state: int = 24
    d_conv: int = 4
    expand: int = 3
    dt_rank: int | None = None  # None: ceil(embed_dim / 16)
    norm_eps: float = 1e-6
    chunk_frames: int = CHUNK_FRAMES
    n_mels: int = N_MELS
    patch_time: int = 4
    patch_freq: int = 16
    token_order: str = "official"
    scan: str = "auto"

    def __post_init__(self) -> None:
        if self.token_order not in ("official", "time_major"):
            raise ValueError(f"token_order must be 'official' or 'time_major', got {self.token_order!r}")
        if self.scan not in ("auto", "associative", "sequential"):
            raise ValueError(f"scan must be 'auto', 'associative' or 'sequential', got {self.scan!r}")
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim must be a multiple of 4 (2-D sin-cos embedding), got {self.embed_dim}")
        if self.chunk_frames % self.patch_time or self.n_mels % self.patch_freq:
            raise ValueError("chunk_frames and n_mels must be multiples of patch_time and patch_freq")

    @property
    def time_step_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.embed_dim / 16)

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def grid(self) -> tuple[int, int]:
        """(time patches, frequency patches) per chunk: (50, 5) officially."""
        return self.chunk_frames // self.patch_time, self.n_mels // self.patch_freq

    @property
    def frame_dim(self) -> int:
        """Length of one per-frame (and of the pooled) embedding: frequency patches x embed_dim."""
        return self.grid[1] * self.embed_dim


PRESETS: dict[str, SSAMConfig] = {
    "ssam-tiny": SSAMConfig(embed_dim=192),
    "ssam-small": SSAMConfig(embed_dim=384),
    "ssam-base": SSAMConfig(embed_dim=768),
}


# ----------------------------------------------------------------------------------------------- mixer


def selective_scan_associative(a: jax.Array, b: jax.Array) -> jax.Array:
    """States ``h_t = a_t * h_{t-1} + b_t`` (``h_0 = b_0``) along axis 1 by a parallel prefix scan.

    The pairs ``(a, b)`` compose as ``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)``.
    """

    def combine(left: tuple[jax.Array, jax.Array], right: tuple[jax.Array, jax.Array]):
        a1, b1 = left
        a2, b2 = right
        return a1 * a2, a2 * b1 + b2

    return jax.lax.associative_scan(combine, (a, b), axis=1)[1]


def selective_scan(
    u: jax.Array, dt: jax.Array, A: jax.Array, B: jax.Array, C: jax.Array, method: str
) -> jax.Array:
    """Mamba's selective scan without the D skip: ``y_t = C_t . h_t``, ``[batch, L, d_inner]``.

    ``h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t`` with ``h`` of shape ``[d_state, d_inner]`` per sequence
    (d_inner innermost: the long axis vectorises, 1.7x faster on CPU than ``[d_inner, d_state]``);
    u, dt ``[batch, L, d_inner]``, A ``[d_inner, d_state]``, B, C ``[batch, L, d_state]``.
    "associative" materialises all ``[batch, L, d_state, d_inner]`` terms and scans in parallel;
    "sequential" runs a ``lax.scan`` over time carrying only ``h``.
    """
    A = A.T  # [d_state, d_inner]
    if method == "associative":
        a = jnp.exp(dt[:, :, None, :] * A)
        b = (dt * u)[:, :, None, :] * B[..., None]
        h = selective_scan_associative(a, b)
        return (h * C[..., None]).sum(axis=2)

    def step(h: jax.Array, inputs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        u_t, dt_t, B_t, C_t = inputs
        h = jnp.exp(dt_t[:, None, :] * A) * h + (dt_t * u_t)[:, None, :] * B_t[..., None]
        return h, (h * C_t[..., None]).sum(axis=1)

    h0 = jnp.zeros((u.shape[0],) + A.shape, u.dtype)
    time_major = [jnp.swapaxes(v, 0, 1) for v in (u, dt, B, C)]
    _, y = jax.lax.scan(step, h0, tuple(time_major))
    return jnp.swapaxes(y, 0, 1)


def resolve_scan(method: str) -> str:
    """"auto" -> the faster scan for the current backend (measured on CPU: see bench/; GPU/TPU: associative)."""
    if method != "auto":
        return method
    return "sequential" if jax.default_backend() == "cpu" else "associative"


def _a_log_init(d_state: int) -> Callable:
    def init(key: jax.Array, shape: tuple[int, int], dtype: Any = jnp.float32) -> jax.Array:
        return jnp.log(jnp.broadcast_to(jnp.arange(1, d_state + 1, dtype=jnp.float32), shape))

    return init


def _dt_bias_init(key: jax.Array, shape: tuple[int], dtype: Any = jnp.float32) -> jax.Array:
    """softplus^-1 of dt drawn log-uniformly in [1e-3, 0.1] (mamba-ssm's initialisation)."""
    dt = jnp.exp(jax.random.uniform(key, shape) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    dt = jnp.maximum(dt, 1e-4)
    return dt + jnp.log(-jnp.expm1(-dt))


class MambaMixer(nn.Module):
    """The Mamba mixer (mamba-ssm ``Mamba`` / transformers ``MambaMixer``), ``[batch, L, d_model]`` -> same.

    ``x, z = in_proj(h)``; ``u = silu(causal_depthwise_conv(x))``; ``dt, B, C = x_proj(u)``;
    ``dt = softplus(dt_proj(dt))``; ``y = scan(u, dt, A = -exp(A_log), B, C) + D u``;
    ``out_proj(y * silu(z))``.
    """

    d_model: int
    d_state: int
    d_conv: int
    expand: int
    dt_rank: int
    scan: str = "auto"

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        d_inner = self.expand * self.d_model
        xz = nn.Dense(2 * d_inner, use_bias=False, name="in_proj")(hidden)
        x, z = jnp.split(xz, 2, axis=-1)
        kernel = self.param("conv_kernel", nn.initializers.lecun_normal(), (self.d_conv, d_inner))
        bias = self.param("conv_bias", nn.initializers.zeros, (d_inner,))
        length = x.shape[1]
        padded = jnp.pad(x, ((0, 0), (self.d_conv - 1, 0), (0, 0)))
        conv = sum(padded[:, k : k + length] * kernel[k] for k in range(self.d_conv)) + bias
        u = nn.silu(conv)
        dbc = nn.Dense(self.dt_rank + 2 * self.d_state, use_bias=False, name="x_proj")(u)
        dt, B, C = jnp.split(dbc, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        dt = jax.nn.softplus(nn.Dense(d_inner, bias_init=_dt_bias_init, name="dt_proj")(dt))
        A = -jnp.exp(self.param("A_log", _a_log_init(self.d_state), (d_inner, self.d_state)))
        D = self.param("D", nn.initializers.ones, (d_inner,))
        y = selective_scan(u, dt, A, B, C, resolve_scan(self.scan)) + u * D
        return nn.Dense(self.d_model, use_bias=False, name="out_proj")(y * nn.silu(z))


# --------------------------------------------------------------------------------------------- encoder


def sincos_pos_embed(embed_dim: int, grid: tuple[int, int]) -> np.ndarray:
    """The fixed 2-D sin-cos table with a zero cls row: float32 ``[1 + rows * cols, embed_dim]``.

    Token ``r * cols + c`` (row-major over the patch grid ``(rows, cols)``): the first half of the channels
    encodes the column ``c``, the second half the row ``r``; each half is ``[sin(p w_i), cos(p w_i)]`` with
    ``w_i = 10000^(-i / (embed_dim / 4))``, ``i < embed_dim / 4`` (MAE's table, as the official code builds it).
    """
    rows, cols = grid
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")

    def encode(pos: np.ndarray) -> np.ndarray:
        angle = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)

    table = np.concatenate([encode(c), encode(r)], axis=1)
    return np.concatenate([np.zeros((1, embed_dim)), table], axis=0).astype(np.float32)


class Block(nn.Module):
    """``hidden = mixer(LayerNorm(residual))``; the caller adds the residual (the official Add -> LN -> Mixer)."""

    config: SSAMConfig

    @nn.compact
    def __call__(self, residual: jax.Array) -> jax.Array:
        c = self.config
        normed = nn.LayerNorm(epsilon=c.norm_eps, use_fast_variance=False, name="norm")(residual)
        mixer = MambaMixer(c.embed_dim, c.d_state, c.d_conv, c.expand, c.time_step_rank, c.scan, name="mixer")
        return mixer(normed)


def rearrange_tokens(tokens: jax.Array, grid: tuple[int, int], token_order: str) -> jax.Array:
    """Time-major patch tokens ``[N, T * F, D]`` -> per-frame vectors ``[N, T, F * D]``.

    "official" reads the tokens as frequency-major (``'b (f t) d -> b t (f d)'``), as the released code does;
    "time_major" keeps frame ``t`` = the ``F`` tokens of time step ``t``.
    """
    n, _, d = tokens.shape
    t, f = grid
    if token_order == "official":
        return tokens.reshape(n, f, t, d).transpose(0, 2, 1, 3).reshape(n, t, f * d)
    return tokens.reshape(n, t, f * d)


class AudioMamba(nn.Module):
    """SSAM encoder: normalised log-mel chunks ``[N, 200, 80]`` (time x mel) -> frames ``[N, 50, 5 * D]``."""

    config: SSAMConfig

    @nn.compact
    def __call__(self, spec: jax.Array) -> jax.Array:
        c = self.config
        n = spec.shape[0]
        t, f = c.grid
        if spec.shape[1:] != (c.chunk_frames, c.n_mels):
            raise ValueError(f"AudioMamba expects chunks [N, {c.chunk_frames}, {c.n_mels}], got {spec.shape}")
        patches = spec.reshape(n, t, c.patch_time, f, c.patch_freq).transpose(0, 1, 3, 2, 4)
        x = nn.Dense(c.embed_dim, name="patch_embed")(patches.reshape(n, t * f, c.patch_time * c.patch_freq))
        pos = self.param("pos_embed", lambda key: jnp.asarray(sincos_pos_embed(c.embed_dim, c.grid))[None])
        cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, c.embed_dim))
        cls = jnp.broadcast_to(cls + pos[:, :1], (n, 1, c.embed_dim))
        residual = jnp.concatenate([cls, x + pos[:, 1:]], axis=1)
        hidden = Block(c, name="blocks_0")(residual)
        for i in range(1, c.depth):
            residual = residual + hidden
            hidden = Block(c, name=f"blocks_{i}")(residual)
        out = nn.LayerNorm(epsilon=c.norm_eps, use_fast_variance=False, name="encoder_norm")(residual + hidden)
        return rearrange_tokens(out[:, 1:], c.grid, c.token_order)


# ---------------------------------------------------------------------------------------------- pooling


def chunk_spectrogram(spec: np.ndarray, chunk_frames: int) -> tuple[np.ndarray, int]:
    """Zero-pad ``[T, M]`` to whole chunks: ``([ceil(T / chunk), chunk, M], pad)`` with ``pad < chunk``.

    The official code pads ``chunk - T % chunk`` frames, a whole extra zero chunk when ``T % chunk == 0``,
    whose frames it then drops entirely; skipping that chunk gives the same embedding.
    """
    n_chunks = -(-spec.shape[0] // chunk_frames)
    pad = n_chunks * chunk_frames - spec.shape[0]
    padded = np.pad(spec, ((0, pad), (0, 0)))
    return padded.reshape(n_chunks, chunk_frames, spec.shape[1]), pad


def pool_frames(frames: np.ndarray, pad: int, chunk_frames: int) -> np.ndarray:
    """Mean over time of the joined chunk frames ``[n_chunks, t, d]`` after dropping ``floor(t * pad / chunk)``
    tail frames (the official trim: a frame only partly made of padding is kept)."""
    n_chunks, t, d = frames.shape
    keep = n_chunks * t - (t * pad) // chunk_frames
    return frames.reshape(n_chunks * t, d)[:keep].mean(axis=0)


# ----------------------------------------------------------------------------------------------- loader

TRAINING_ONLY = (r"mask_token$", r"pred\.")
"""Keys of the official state dict used only by the masked-patch pre-training head: read and dropped."""

INERT_GLOBALS = (
    "argparse.Namespace",  # the checkpoint's 'args'
    "ml_collections.config_dict.config_dict.ConfigDict",  # args.config
    "ml_collections.config_dict.config_dict.FieldReference",
)
"""Globals of the official checkpoint's 'args' entry, recorded as inert data, never constructed."""

_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)\.pth")

_MIXER_KEYS: dict[str, tuple[str, Transform]] = {
    "in_proj.weight": ("in_proj/kernel", linear_kernel),
    "conv1d.weight": ("conv_kernel", lambda w: w[:, 0, :].T),  # [d_inner, 1, k] -> [k, d_inner]
    "conv1d.bias": ("conv_bias", identity),
    "x_proj.weight": ("x_proj/kernel", linear_kernel),
    "dt_proj.weight": ("dt_proj/kernel", linear_kernel),
    "dt_proj.bias": ("dt_proj/bias", identity),
    "A_log": ("A_log", identity),
    "D": ("D", identity),
    "out_proj.weight": ("out_proj/kernel", linear_kernel),
}


def mixer_rename(key: str) -> tuple[str, Transform] | None:
    """mamba-ssm / transformers mixer key (``in_proj.weight``, ...) -> MambaMixer param path and transform."""
    return _MIXER_KEYS.get(key)


def ssam_rename(key: str) -> tuple[str, Transform] | None:
    """Official SSAM state-dict key -> AudioMamba param path and transform (None: not a model weight)."""
    fixed: dict[str, tuple[str, Transform]] = {
        "patch_embed.proj.weight": ("patch_embed/kernel", lambda w: w.reshape(w.shape[0], -1).T),
        "patch_embed.proj.bias": ("patch_embed/bias", identity),
        "cls_token": ("cls_token", identity),
        "pos_embed": ("pos_embed", identity),
        "encoder_norm.weight": ("encoder_norm/scale", identity),
        "encoder_norm.bias": ("encoder_norm/bias", identity),
    }
    if key in fixed:
        return fixed[key]
    m = re.fullmatch(r"blocks\.(\d+)\.(norm\.weight|norm\.bias|mixer\.(.+))", key)
    if m is None:
        return None
    block = f"blocks_{m.group(1)}/"
    if m.group(3) is not None:
        inner = mixer_rename(m.group(3))
        return None if inner is None else (block + "mixer/" + inner[0], inner[1])
    return block + ("norm/scale" if m.group(2).endswith("weight") else "norm/bias"), identity


def newest_checkpoint(folder: Path) -> Path:
    """``folder/checkpoints/checkpoint-<epoch>.pth`` with the largest epoch (compared as integers)."""
    found = []
    sub = Path(folder) / "checkpoints"
    if sub.is_dir():
        found = [(int(m.group(1)), p) for p in sub.iterdir() if (m := _CHECKPOINT_NAME.fullmatch(p.name))]
    if not found:
        raise FileNotFoundError(f"no checkpoints/checkpoint-<epoch>.pth in {folder} (the official SSAM layout)")
    return max(found)[1]


def read_official_state(path: Path) -> dict[str, np.ndarray]:
    """The ``'model'`` state dict of an official checkpoint, read without torch; ``'args'`` stays inert."""
    content = read_torch_file(path, inert_globals=INERT_GLOBALS)
    state = content.get("model") if isinstance(content, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a dict whose 'model' entry is the state dict "
                              "(the official SSAM checkpoint layout)")
    return drop_keys(state, TRAINING_ONLY)


def infer_config(state: Mapping[str, np.ndarray], source: str) -> SSAMConfig:
    """Architecture read off the shapes of an official state dict."""
    anchors = ["cls_token", "patch_embed.proj.weight", "blocks.0.mixer.A_log", "blocks.0.mixer.conv1d.weight",
               "blocks.0.mixer.dt_proj.weight"]
    missing = [k for k in anchors if k not in state]
    if missing:
        raise CheckpointMismatch(f"{source}: not an SSAM state dict: missing {', '.join(missing)}")
    ranks = {"cls_token": 3, "patch_embed.proj.weight": 4, "blocks.0.mixer.A_log": 2,
             "blocks.0.mixer.conv1d.weight": 3, "blocks.0.mixer.dt_proj.weight": 2}
    for key, rank in ranks.items():
        if np.ndim(state[key]) != rank:
            raise CheckpointMismatch(f"{source}: {key} has shape {list(np.shape(state[key]))}; expected {rank} axes")
    d = state["cls_token"].shape[-1]
    d_inner, d_state = state["blocks.0.mixer.A_log"].shape
    _, _, patch_time, patch_freq = state["patch_embed.proj.weight"].shape
    if d < 1 or d_inner % d:
        raise CheckpointMismatch(f"{source}: blocks.0.mixer.A_log has {d_inner} inner channels, not a multiple of "
                                 f"cls_token's embedding size {d}")
    try:
        return SSAMConfig(
            embed_dim=d,
            depth=1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))),
            d_state=d_state,
            d_conv=state["blocks.0.mixer.conv1d.weight"].shape[-1],
            expand=d_inner // d,
            dt_rank=state["blocks.0.mixer.dt_proj.weight"].shape[1],
            patch_time=patch_time,
            patch_freq=patch_freq,
        )
    except ValueError as error:
        raise CheckpointMismatch(f"{source}: the weights' shapes give an impossible SSAM config: {error}") from None


def load(folder: str | Path, config: SSAMConfig | None = None) -> tuple[SSAMConfig, Any]:
    """``(config, params)`` from an official SSAM folder (its newest ``checkpoint-<epoch>.pth``).

    With ``config`` given the weights must fit it, else the architecture is read off the weights' shapes.
    One CheckpointMismatch lists every missing, unexpected or mis-shaped weight. fp16/bf16 weights are
    widened to float32; non-finite weights are refused.
    """
    path = newest_checkpoint(Path(folder))
    state = read_official_state(path)
    config = config if config is not None else infer_config(state, str(path))
    template = jax.eval_shape(AudioMamba(config).init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, config.chunk_frames, config.n_mels), jnp.float32))
    params = load_params(template["params"], state, ssam_rename, source=str(path))
    bad = [key for key, value in state.items() if not np.isfinite(np.asarray(value, np.float32)).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {', '.join(sorted(bad))}")
    return config, jax.tree.map(jnp.asarray, params)


# ---------------------------------------------------------------------------------------------- encoder


@dataclass(frozen=True)
class EmbeddingOptions:
    """What changes the embedding: the token order (see `SSAMConfig`)."""

    token_order: Literal["official", "time_major"] = "official"


@dataclass(frozen=True)
class RunOptions:
    """How the embedding is computed: the selective scan's algorithm (see `SSAMConfig`) and how many
    2 s chunks run in one compiled call."""

    scan: Literal["auto", "associative", "sequential"] = "auto"
    chunk_batch: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.chunk_batch, int) and self.chunk_batch >= 1):
            raise ValueError(f"chunk_batch must be >= 1, got {self.chunk_batch!r}")


def option_classes(name: str) -> tuple[type, type]:
    """(embedding options, run options) of every SSAM model."""
    return EmbeddingOptions, RunOptions


class SSAMEncoder:
    """The registry's Encoder: waves -> mean-pooled SSAM embeddings ``[B, config.frame_dim]``.

    Its program is the encoder's forward ``(params, chunks [chunk_batch, 200, 80]) -> frames [chunk_batch, 50,
    frame_dim]``; on the host, `batches` computes the log-mel chunks of every wave of a call and runs them
    together in batches of ``chunk_batch`` (the last batch zero-filled, so one compiled shape serves every
    call), and pools each wave's frames. Every chunk is an independent forward, so row ``i`` depends on wave
    ``i`` only. How it runs (devices, compilation cache) is ``runner``'s (`parrot_jax.encoders.runner`).
    """

    sample_rate = SAMPLE_RATE
    min_samples = MIN_SAMPLES
    runner: Runner | None = None

    def __init__(self, name: str, config: SSAMConfig, params: Any, checkpoint: Path | None = None,
                 chunk_batch: int = 8) -> None:
        self.name = name
        self.config = config
        self.params = params
        self.checkpoint = checkpoint
        self.options = EmbeddingOptions(config.token_order)
        self.run_options = RunOptions(config.scan, chunk_batch)
        self.chunk_batch = chunk_batch
        self.dim = config.frame_dim
        module = AudioMamba(config)

        def forward(params: Any, chunks: jax.Array) -> jax.Array:
            return module.apply({"params": params}, chunks)

        self.program = Program(forward, params)
        self._sha256: str | None = None

    def chunk_batches(self, chunks: np.ndarray) -> list[tuple[np.ndarray]]:
        """``[N, 200, 80]`` chunks in batches of ``chunk_batch``, the last one zero-filled."""
        out = []
        for start in range(0, chunks.shape[0], self.chunk_batch):
            part = chunks[start : start + self.chunk_batch]
            filled = np.zeros((self.chunk_batch,) + part.shape[1:], np.float32)
            filled[: part.shape[0]] = part
            out.append((filled,))
        return out

    def frames(self, chunks: np.ndarray) -> np.ndarray:
        """Per-frame embeddings of normalised log-mel chunks ``[N, 200, 80]`` -> ``[N, 50, frame_dim]``."""
        outputs = runner_of(self).outputs(self, self.chunk_batches(chunks))
        return np.concatenate(outputs, axis=0)[: chunks.shape[0]]

    def batches(self, waves: Sequence[np.ndarray]) -> HostBatches:
        """Every wave's log-mel chunks, together in batches of ``chunk_batch``; assembled: each wave's frames
        joined and mean-pooled (`pool_frames`)."""
        chunked = []
        for i, wave in enumerate(waves):
            wave = np.asarray(wave)
            if wave.ndim != 1 or wave.dtype.kind != "f" or wave.shape[0] < self.min_samples:
                raise ValueError(f"{self.name}: wave {i} must be a 1-D float array of >= {self.min_samples} "
                                 f"samples at 16 kHz, got dtype {wave.dtype} shape {wave.shape}")
            if not np.isfinite(wave).all():
                raise ValueError(f"{self.name}: wave {i} contains NaN or infinite samples")
            chunked.append(chunk_spectrogram(log_mel(wave), self.config.chunk_frames))
        n_chunks = sum(len(c) for c, _ in chunked)

        def assemble(outputs: list[np.ndarray]) -> np.ndarray:
            if not chunked:
                return np.zeros((0, self.dim), np.float32)
            frames = np.concatenate(outputs, axis=0)[:n_chunks]
            pooled, start = [], 0
            for chunks, pad in chunked:
                pooled.append(pool_frames(frames[start : start + len(chunks)], pad, self.config.chunk_frames))
                start += len(chunks)
            return np.stack(pooled).astype(np.float32)

        arrays = self.chunk_batches(np.concatenate([c for c, _ in chunked], axis=0)) if chunked else []
        return HostBatches(arrays, assemble)

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """float32 ``[len(waves), dim]``, through ``runner``."""
        return run(self, waves)

    def metadata(self) -> dict[str, Any]:
        if self.checkpoint is not None and self._sha256 is None:
            self._sha256 = sha256_file(self.checkpoint)
        return {
            "name": self.name,
            "family": "mamba",
            "options": to_json(self.options),
            "run_options": {**to_json(self.run_options), "resolved_scan": resolve_scan(self.config.scan)},
            "checkpoint_sha256": self._sha256,
            "checkpoint": None if self.checkpoint is None else self.checkpoint.name,
            "dim": self.dim,
            "pooling": "mean over time of the per-frame embeddings of 2 s chunks, padded tail trimmed",
            "config": dataclasses.asdict(self.config),
            "front_end": {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
                          "f_min": F_MIN, "f_max": F_MAX, "log_eps": LOG_EPS, "normalise": "per utterance"},
        }


def build(name: str, checkpoint_folder: Path | None, **options: Any) -> SSAMEncoder:
    """Registry builder: the SSAM model ``name`` (ssam-tiny/-small/-base) from an official checkpoint folder,
    with `EmbeddingOptions` and `RunOptions` fields as keyword options."""
    if name not in PRESETS:
        raise ValueError(f"unknown SSAM model {name!r}; known: {', '.join(PRESETS)}")
    embedding, running = split(name, options, EmbeddingOptions, RunOptions)
    if checkpoint_folder is None:
        raise ValueError(f"{name} needs the folder of the downloaded official checkpoint")
    preset = dataclasses.replace(PRESETS[name], token_order=embedding.token_order, scan=running.scan)
    config, params = load(checkpoint_folder, preset)
    return SSAMEncoder(name, config, params, newest_checkpoint(Path(checkpoint_folder)), running.chunk_batch)


__all__ = [
    "AudioMamba", "Block", "EmbeddingOptions", "MambaMixer", "PRESETS", "RunOptions", "SSAMConfig", "SSAMEncoder",
    "build", "chunk_spectrogram", "load", "log_mel", "mel_filterbank", "mixer_rename", "newest_checkpoint",
    "option_classes", "pool_frames", "rearrange_tokens", "selective_scan", "sincos_pos_embed", "ssam_rename",
]
