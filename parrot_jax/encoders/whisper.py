"""Whisper's encoder (every size, tiny to large-v3 and the distilled ones) as our own Flax (linen) module,
read from a transformers folder or a CTranslate2 (faster-whisper) folder, PyTorch-free.

Front end (transformers' ``WhisperFeatureExtractor``): a 30 s window of 16 kHz audio (zero-padded), STFT
with a periodic Hann window of n_fft = 400 every hop = 160 samples (centred, reflect padding), power
spectrum P, Slaney mel filterbank M (0-8 kHz, 80 or 128 bins), then

    L = log10(max(M P, 1e-10))[:, :-1];  L <- max(L, max(L) - 8);  X = (L + 4) / 4      [n_mels, 3000]

Encoder (transformers' ``WhisperEncoder``)::

    h = GELU(conv1_k3(X)); h = GELU(conv2_k3_stride2(h)); h = h + E_pos       [1500, d]  (E_pos read as a weight)
    layer i: h <- h + Attn(LN(h)); h <- h + FC2(act(FC1(LN(h))))                (pre-LN)
    hidden_states = (input of layer 1, outputs of layers 1..L-1, LN_final(output of layer L))

as transformers 5.x returns them: the last hidden state is the final LayerNorm's output.

Embedding: the chosen hidden state averaged (mean, or mean and std) over the frames that cover the
real audio, floor(samples / 320) of the 1500 (EmoBox's rule: its Whisper features keep the first
``len(wave) // 320`` frames), or over all 1500 (``frames="all"``). The encoder always sees the whole
zero-padded window, as Whisper was trained. Audio longer than 30 s is cut into 30 s windows, each encoded
alone; their frames are pooled together (a last piece shorter than one frame, 320 samples, is dropped).

Checkpoints: a transformers folder (``config.json`` of model_type "whisper", ``model.safetensors`` /
``pytorch_model.bin`` or shards with their index; only the encoder's tensors are read, the decoder's are
counted as ignored), or a CTranslate2 folder (``model.bin`` of spec "WhisperSpec": the architecture is read
off the weights; float16/bfloat16 upcast to float32; the fused ``self_attention/linear_0`` split into q, k, v).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from parrot_jax.encoders import checkpoints as ck
from parrot_jax.encoders import wav2vec2 as w2v
from parrot_jax.encoders.base import HostBatches, Program
from parrot_jax.encoders.options import split, to_json
from parrot_jax.encoders.runner import Runner, run
from parrot_jax.files import sha256_files

SAMPLE_RATE = 16_000
_FORMATS = ("transformers", "ctranslate2")


@dataclass(frozen=True)
class WhisperConfig:
    """The encoder's architecture (transformers' names)."""

    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    num_mel_bins: int
    max_source_positions: int = 1500  # encoder frames of one window (2x as many mel frames)
    activation_function: str = "gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_hf(cls, hf: Any, source: str) -> "WhisperConfig":
        """From a transformers WhisperConfig; refuses what the module cannot be built with, naming `source`."""
        cfg = cls(d_model=hf.d_model, encoder_layers=hf.encoder_layers,
                  encoder_attention_heads=hf.encoder_attention_heads, encoder_ffn_dim=hf.encoder_ffn_dim,
                  num_mel_bins=hf.num_mel_bins, max_source_positions=hf.max_source_positions,
                  activation_function=hf.activation_function)
        cfg.check(source)
        return cfg

    def check(self, source: str) -> None:
        for name in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
                     "max_source_positions"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ck.CheckpointError(f"{source}: {name}={value!r}; expected a positive integer")
        if self.d_model % self.encoder_attention_heads:
            raise ck.CheckpointError(f"{source}: encoder_attention_heads={self.encoder_attention_heads} does not "
                                     f"divide d_model={self.d_model}")
        if self.activation_function not in w2v._ACTIVATIONS:
            raise ck.CheckpointError(f"{source}: activation_function={self.activation_function!r}; expected one "
                                     f"of {sorted(w2v._ACTIVATIONS)}")


@dataclass(frozen=True)
class FrontEnd:
    """WhisperFeatureExtractor's settings (preprocessor_config.json) and its log-mel features."""

    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    chunk_length: int = 30  # seconds per window
    sampling_rate: int = SAMPLE_RATE

    @property
    def window_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    @functools.cached_property
    def _filters(self) -> np.ndarray:
        import librosa

        return librosa.filters.mel(sr=self.sampling_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=0.0,
                                   fmax=8000.0, htk=False, norm="slaney", dtype=np.float64)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """float32 [n_mels, window_samples / hop] of one window (`wave`, at most window_samples, zero-padded)."""
        x = np.zeros(self.window_samples, np.float64)
        x[: wave.size] = wave
        x = np.pad(x, self.n_fft // 2, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop_length]
        window = np.hanning(self.n_fft + 1)[:-1]  # periodic Hann
        power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [frames, 1 + n_fft / 2]
        log_spec = np.log10(np.maximum(self._filters @ power.T, 1e-10))[:, :-1]
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)


def read_front_end(folder: Path, n_mels: int, window_frames: int) -> FrontEnd:
    """The folder's preprocessor_config.json (Whisper's defaults where absent), checked against the model."""
    path = folder / "preprocessor_config.json"
    try:
        settings = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ck.CheckpointError(f"{path}: not JSON ({error})") from None
    if not isinstance(settings, dict):
        raise ck.CheckpointError(f"{path}: expected a JSON object of feature-extractor settings")
    front = FrontEnd(n_mels=settings.get("feature_size", n_mels), n_fft=settings.get("n_fft", 400),
                     hop_length=settings.get("hop_length", 160), chunk_length=settings.get("chunk_length", 30),
                     sampling_rate=settings.get("sampling_rate", SAMPLE_RATE))
    expected = FrontEnd(n_mels=n_mels, n_fft=front.n_fft, hop_length=front.hop_length,
                        chunk_length=front.chunk_length, sampling_rate=SAMPLE_RATE)
    if front != expected or front.window_samples // front.hop_length != window_frames:
        source = path if path.is_file() else f"{folder} (no preprocessor_config.json: Whisper's defaults)"
        raise ck.CheckpointError(
            f"{source}: feature_size={front.n_mels}, sampling_rate={front.sampling_rate}, chunk_length="
            f"{front.chunk_length}, hop_length={front.hop_length}; the model expects {n_mels} mel bins at "
            f"{SAMPLE_RATE} Hz and {window_frames} mel frames per window")
    return front


# ---------------------------------------------------------------------------------------------------
# Flax modules (names mirror transformers' so that checkpoint keys map one to one)


class Attention(nn.Module):
    """softmax(q k^T / sqrt(d_head)) v over all frames of the window (k_proj has no bias)."""

    cfg: WhisperConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        heads = lambda y: y.reshape(*y.shape[:2], c.encoder_attention_heads, -1)  # [B, T, H, d]
        q = heads(nn.Dense(c.d_model, name="q_proj")(x))
        k = heads(nn.Dense(c.d_model, use_bias=False, name="k_proj")(x))
        v = heads(nn.Dense(c.d_model, name="v_proj")(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q * (q.shape[-1] ** -0.5), k)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return nn.Dense(c.d_model, name="out_proj")(out.reshape(*out.shape[:2], -1))


class EncoderLayer(nn.Module):
    """Pre-LN: h + Attn(LN h), then h + FC2(act(FC1(LN h)))."""

    cfg: WhisperConfig

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        c = self.cfg
        h = h + Attention(c, name="self_attn")(nn.LayerNorm(c.layer_norm_eps, name="self_attn_layer_norm")(h))
        y = nn.LayerNorm(c.layer_norm_eps, name="final_layer_norm")(h)
        y = w2v._ACTIVATIONS[c.activation_function](nn.Dense(c.encoder_ffn_dim, name="fc1")(y))
        return h + nn.Dense(c.d_model, name="fc2")(y)


class WhisperEncoder(nn.Module):
    """log-mel [B, 2 * max_source_positions, n_mels] -> hidden states (L+1 of [B, max_source_positions, d])."""

    cfg: WhisperConfig

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, ...]:
        c = self.cfg
        gelu = w2v._ACTIVATIONS["gelu"]
        h = gelu(nn.Conv(c.d_model, (3,), padding=[(1, 1)], name="conv1")(features))
        h = gelu(nn.Conv(c.d_model, (3,), (2,), padding=[(1, 1)], name="conv2")(h))
        if h.shape[1] != c.max_source_positions:
            raise ValueError(f"{features.shape[1]} mel frames; Whisper expects {2 * c.max_source_positions}")
        h = h + nn.Embed(c.max_source_positions, c.d_model, name="embed_positions").embedding
        states = [h]
        for i in range(c.encoder_layers):
            h = EncoderLayer(c, name=f"layers_{i}")(h)
            states.append(h)
        states[-1] = nn.LayerNorm(c.layer_norm_eps, name="layer_norm")(h)
        return tuple(states)


# ---------------------------------------------------------------------------------------------------
# checkpoint -> params

_HF_PREFIXES = ("model.encoder.", "encoder.")


def rename(key: str) -> tuple[str, ck.Transform] | None:
    """transformers encoder key (prefix stripped) -> (Flax path, transform), e.g. ``layers.3.fc1.weight`` ->
    ``layers_3/fc1/kernel`` (transposed)."""
    parts = re.sub(r"\.(\d+)\.", r"_\1.", key).split(".")
    *modules, leaf = parts
    if not modules:
        return None
    owner = modules[-1]
    if leaf == "bias":
        return "/".join(modules + ["bias"]), ck.identity
    if leaf != "weight":
        return None
    if "norm" in owner:
        return "/".join(modules + ["scale"]), ck.identity
    if owner == "embed_positions":
        return "/".join(modules + ["embedding"]), ck.identity
    return "/".join(modules + ["kernel"]), (ck.conv_kernel if owner.startswith("conv") else ck.linear_kernel)


def encoder_state(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, int]]:
    """(the encoder's tensors, each one's transformers name without prefix, ignored tensors counted by top name).

    ``model.encoder.*`` (WhisperForConditionalGeneration) or ``encoder.*`` (WhisperModel, encoder-only
    classes); everything else (decoder, proj_out, classifier heads) is ignored, not an error.
    """
    prefix = next((p for p in _HF_PREFIXES if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        return {}, {}, _count_top(state)
    kept = {k: v for k, v in state.items() if k.startswith(prefix)}
    return kept, {k: k[len(prefix):] for k in kept}, _count_top({k: v for k, v in state.items() if k not in kept})


def _count_top(state: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        top = ".".join(parts[:2]) if parts[0] == "model" and len(parts) > 2 else parts[0]  # model.decoder
        counts[top] = counts.get(top, 0) + 1
    return dict(sorted(counts.items()))


_CT2_NAMES = {  # CTranslate2 layer-spec names -> transformers' (per layer)
    "self_attention/layer_norm/gamma": "self_attn_layer_norm.weight",
    "self_attention/layer_norm/beta": "self_attn_layer_norm.bias",
    "self_attention/linear_1/weight": "self_attn.out_proj.weight",
    "self_attention/linear_1/bias": "self_attn.out_proj.bias",
    "ffn/layer_norm/gamma": "final_layer_norm.weight",
    "ffn/layer_norm/beta": "final_layer_norm.bias",
    "ffn/linear_0/weight": "fc1.weight",
    "ffn/linear_0/bias": "fc1.bias",
    "ffn/linear_1/weight": "fc2.weight",
    "ffn/linear_1/bias": "fc2.bias",
}
_CT2_TOP = {"conv1/weight": "conv1.weight", "conv1/bias": "conv1.bias", "conv2/weight": "conv2.weight",
            "conv2/bias": "conv2.bias", "position_encodings/encodings": "embed_positions.weight",
            "layer_norm/gamma": "layer_norm.weight", "layer_norm/beta": "layer_norm.bias"}


def ct2_encoder_state(model: ck.CTranslate2Model,
                      source: str) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, int]]:
    """A CTranslate2 WhisperSpec's encoder: (float32 tensors by their CTranslate2 name, each one's transformers
    name, ignored variables counted by scope).

    The fused ``self_attention/linear_0`` ([3d, d] weight, [3d] bias) is split into q, k, v (named
    ``<name>[q]`` ...); k's bias (zeros written by the converter, and softmax-invariant anyway) is dropped.
    Quantized (integer) weights are refused.
    """
    if model.spec != "WhisperSpec":
        raise ck.CheckpointError(f"{source}: CTranslate2 spec {model.spec!r}; expected 'WhisperSpec'")
    state: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    ignored: dict[str, int] = {}
    for name, value in model.variables.items():
        scope, _, rest = name.partition("/")
        if scope != "encoder":
            ignored[scope] = ignored.get(scope, 0) + 1
            continue
        if rest == "num_heads":
            continue
        if value.dtype.kind in "iu":
            raise ck.CheckpointError(f"{source}: {name} is {value.dtype} (a quantized model); convert it with "
                                     "--quantization float32 or float16")
        value = np.asarray(value, np.float32)
        layer = re.fullmatch(r"layer_(\d+)/(.+)", rest)
        i, tail = layer.groups() if layer else ("", rest)
        if tail in ("self_attention/linear_0/weight", "self_attention/linear_0/bias"):
            if value.shape[0] % 3:
                raise ck.CheckpointError(f"{source}: {name} has shape {value.shape}; expected 3 x d_model rows "
                                         "(q, k, v fused)")
            leaf = tail.rsplit("/", 1)[1]
            for part, piece in zip("qkv", np.split(value, 3)):
                if part != "k" or leaf == "weight":
                    state[f"{name}[{part}]"] = piece
                    names[f"{name}[{part}]"] = f"layers.{i}.self_attn.{part}_proj.{leaf}"
            continue
        state[name] = value
        known = _CT2_NAMES.get(tail) if layer else _CT2_TOP.get(tail)
        names[name] = f"layers.{i}.{known}" if layer and known else (known or name)  # unknown: reported unexpected
    return state, names, dict(sorted(ignored.items()))


def ct2_config(model: ck.CTranslate2Model, source: str) -> WhisperConfig:
    """The architecture read off a CTranslate2 Whisper model's encoder weights (its config.json has none)."""
    v = model.variables

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise ck.CheckpointMismatch(f"{source}: weights do not match the model\n  missing (1): {name}")
        return v[name]

    d, n_mels, _ = get("encoder/conv1/weight").shape
    layers = len({m.group(1) for k in v if (m := re.match(r"encoder/layer_(\d+)/", k))})
    cfg = WhisperConfig(d_model=int(d), encoder_layers=layers,
                        encoder_attention_heads=int(get("encoder/num_heads")),
                        encoder_ffn_dim=int(get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
                        num_mel_bins=int(n_mels),
                        max_source_positions=int(get("encoder/position_encodings/encodings").shape[0]))
    cfg.check(source)
    return cfg


@dataclass(frozen=True)
class Checkpoint:
    """A loaded Whisper checkpoint folder."""

    format: str  # "transformers" or "ctranslate2"
    files: tuple[Path, ...]
    config: WhisperConfig
    front_end: FrontEnd
    params: Any
    ignored: dict[str, int]  # tensors not read (decoder, heads), counted by top-level name


def checkpoint_format(folder: Path) -> str:
    """"transformers" where the folder holds transformers' weight files, "ctranslate2" where it holds a model.bin."""
    try:
        w2v.checkpoint_files(folder)
        return "transformers"
    except FileNotFoundError:
        if (folder / "model.bin").is_file():
            return "ctranslate2"
        raise FileNotFoundError(f"{folder}: no model.safetensors, pytorch_model.bin (transformers) or model.bin "
                                "(CTranslate2): expected a downloaded Whisper checkpoint folder") from None


def load(folder: str | Path) -> Checkpoint:
    """Read a Whisper checkpoint folder (transformers or CTranslate2) into our parameter tree."""
    folder = Path(folder)
    if checkpoint_format(folder) == "transformers":
        cfg = WhisperConfig.from_hf(w2v.read_config(folder, ("whisper",)), str(folder / "config.json"))
        files = tuple(w2v.checkpoint_files(folder))
        state, names, ignored = encoder_state({k: v for f in files for k, v in ck.read_state_dict(f).items()})
        source = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
        fmt = "transformers"
    else:
        files = (folder / "model.bin",)
        source = str(files[0])
        model = ck.read_ctranslate2(files[0])
        cfg = ct2_config(model, source)
        state, names, ignored = ct2_encoder_state(model, source)
        fmt = "ctranslate2"
    module = WhisperEncoder(cfg)
    frames = 2 * cfg.max_source_positions
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, frames, cfg.num_mel_bins)))["params"]
    params = ck.load_params(template, state, lambda key: rename(names[key]), source=source)
    return Checkpoint(fmt, files, cfg, read_front_end(folder, cfg.num_mel_bins, frames), params, ignored)


# ---------------------------------------------------------------------------------------------------
# options, the pure batch function, the Encoder


@dataclass(frozen=True)
class EmbeddingOptions(w2v.EmbeddingOptions):
    """The attention family's layer and pooling, and which frames of a 30 s window are pooled:

    frames: "audio" (default: the floor(samples / 320) frames covering the real audio, EmoBox's rule) |
        "all" (all 1500, the zero padding's frames included).
    """

    frames: Literal["audio", "all"] = "audio"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frames not in ("audio", "all"):
            raise ValueError(f"frames={self.frames!r}; expected 'audio' or 'all'")


@dataclass(frozen=True)
class RunOptions:
    """How the embedding is computed (never part of a feature set's identity).

    batch_size: most 30 s windows per program call (a last, smaller group is padded to a power of two rows).
        Every window has the same length (Whisper always encodes 30 s), so there is nothing to bucket.
    compilation_cache: folder of JAX's persistent compilation cache (None: the user cache folder;
        the cache stays off when the user turned it off, PARROT_COMPILATION_CACHE=0).
    """

    batch_size: int = 4
    compilation_cache: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool) and self.batch_size >= 1):
            raise ValueError(f"batch_size={self.batch_size!r}; expected an integer >= 1")


def option_classes(name: str) -> tuple[type, type]:
    """(embedding options, run options) of every Whisper encoder."""
    return EmbeddingOptions, RunOptions


def window_moments(module: WhisperEncoder, layer: Any, params: Any, features: jax.Array,
                   frames: jax.Array) -> jax.Array:
    """The pure batch function: per window, the mean and the sum of squared deviations M2 of the chosen
    hidden state over its first `frames` frames, stacked: [B, 2, D] ([B, 2, L+1, D] with layer="all").

    features: [B, 2 * max_source_positions, n_mels] log-mel windows; frames: [B] int (>= 1).
    """
    states = module.apply({"params": params}, features)
    if layer == "all":
        h = jnp.stack(states, axis=1)  # [B, L+1, T, D]
    elif layer == "last":
        h = states[-1]
    elif isinstance(layer, int):
        h = states[layer]
    else:
        h = sum(w * s for w, s in zip(layer, states))
    mask = (jnp.arange(h.shape[-2])[None, :] < frames[:, None]).astype(h.dtype)  # [B, T]
    n = frames.astype(h.dtype).reshape((-1,) + (1,) * (h.ndim - 2))
    mean = jnp.einsum("bt,b...td->b...d", mask, h) / n  # sums over time as products: see wav2vec2.pool
    m2 = jnp.einsum("bt,b...td->b...d", mask, jnp.square(h - mean[..., None, :]))
    return jnp.stack([mean, m2], axis=1)


def combine(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray, pooling: str) -> np.ndarray:
    """One utterance's embedding from its windows' (count n_w, mean mu_w, M2_w) (Chan et al.):

    n = sum n_w;  mu = sum n_w mu_w / n;  var = (sum M2_w + sum n_w (mu_w - mu)^2) / n;  [mu] or [mu, sqrt(var)].
    """
    w = counts.astype(np.float64).reshape((-1,) + (1,) * (means.ndim - 1))
    n = w.sum()
    mean = (w * means).sum(0) / n
    if pooling == "mean":
        return mean.astype(np.float32)
    var = (m2s.sum(0) + (w * np.square(means - mean)).sum(0)) / n
    return np.concatenate([mean, np.sqrt(var)], axis=-1).astype(np.float32)


class WhisperEmbedder:
    """The registry's Encoder for a Whisper checkpoint folder (transformers or CTranslate2): the model, its
    pure batch function ``(params, log-mel windows [B, T, n_mels], frames [B]) -> moments [B, 2, ...]``
    (`program`) and the host batches (`batches`: front end, 30 s windows, pooling of a wave's windows).
    How it runs (devices, compilation cache) is ``runner``'s (`parrot_jax.encoders.runner`)."""

    sample_rate = SAMPLE_RATE
    runner: Runner | None = None

    def __init__(self, name: str, folder: Path, options: EmbeddingOptions = EmbeddingOptions(),
                 run_options: RunOptions = RunOptions()):
        self.name, self.folder, self.options, self.run_options = name, Path(folder), options, run_options
        self.checkpoint = load(self.folder)
        self.config, self.front_end = self.checkpoint.config, self.checkpoint.front_end
        n_states = self.config.encoder_layers + 1
        if isinstance(options.layer, int) and not 0 <= options.layer < n_states:
            raise ValueError(f"layer={options.layer}; expected 0..{n_states - 1} or 'last'")
        if not isinstance(options.layer, (int, str)) and len(options.layer) != n_states:
            raise ValueError(f"layer weights: {len(options.layer)} given; expected {n_states} (one per hidden state)")
        self.frame_samples = 2 * self.front_end.hop_length  # audio per encoder frame (conv2's stride 2)
        self.min_samples = self.frame_samples
        self.dim = self.config.d_model * (2 if options.pooling == "mean+std" else 1)
        self.layers = n_states if options.layer == "all" else None  # rows are [layers, dim] when set
        apply = functools.partial(window_moments, WhisperEncoder(self.config), options.layer)
        self.program = Program(apply, self.checkpoint.params)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1 or x.size < self.min_samples:
            raise ValueError(f"wave of shape {x.shape}: expected 1-D with at least {self.min_samples} samples")
        if not np.all(np.isfinite(x)):
            raise ValueError("wave holds NaN or infinite samples")
        return x

    def windows(self, wave: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """(samples, frames pooled) of each 30 s window of `wave`; a last piece under one frame is dropped."""
        size, step = wave.size, self.front_end.window_samples
        pieces = [wave[i: i + step] for i in range(0, size, step)]
        pieces = [p for p in pieces if p.size >= self.frame_samples] or pieces[:1]
        full = self.config.max_source_positions
        return [(p, full if self.options.frames == "all" else min(p.size // self.frame_samples, full))
                for p in pieces]

    def batches(self, waves: Sequence[np.ndarray]) -> HostBatches:
        """Every 30 s window of every wave as a log-mel row, in groups of batch_size (padded to a power of two
        rows: silence pooled over one frame); `assemble` pools each wave's windows together (`combine`)."""
        jobs = [(i, *window) for i, wave in enumerate(waves) for window in self.windows(self.prepare(wave))]
        batch, frames_per_window = self.run_options.batch_size, 2 * self.config.max_source_positions
        groups = [jobs[start: start + batch] for start in range(0, len(jobs), batch)]
        arrays = []
        for group in groups:
            rows = min(1 << (len(group) - 1).bit_length(), batch)
            features = np.zeros((rows, frames_per_window, self.config.num_mel_bins), np.float32)
            frames = np.ones((rows,), np.int32)
            for r, (_, piece, n) in enumerate(group):
                features[r] = self.front_end.log_mel(piece).T
                frames[r] = n
            arrays.append((features, frames))

        def assemble(outputs: list[np.ndarray]) -> np.ndarray:
            moments = np.concatenate([out[: len(group)] for group, out in zip(groups, outputs)]) if jobs else None
            owner = np.array([job[0] for job in jobs], np.int64)
            counts = np.array([job[2] for job in jobs], np.int64)
            out = np.zeros((len(waves), *((self.layers,) if self.layers else ()), self.dim), np.float32)
            for i in range(len(waves)):
                mine = owner == i
                out[i] = combine(counts[mine], moments[mine, 0], moments[mine, 1], self.options.pooling)
            return out

        return HostBatches(arrays, assemble)

    def embed_batch(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(waves), dim] ([len(waves), L+1, dim] with layer="all"), through ``runner``."""
        return run(self, waves)

    @functools.cached_property
    def checkpoint_sha256(self) -> str:
        """sha256 of the weight file(s), in order (computed once)."""
        return sha256_files(list(self.checkpoint.files))

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "family": "attention", "options": to_json(self.options),
                "run_options": to_json(self.run_options), "checkpoint_sha256": self.checkpoint_sha256,
                "checkpoint": [p.name for p in self.checkpoint.files], "format": self.checkpoint.format,
                "ignored_tensors": self.checkpoint.ignored, "dim": self.dim,
                **({"layers": self.layers} if self.layers else {}),
                "front_end": asdict(self.front_end), "config": asdict(self.config)}


def build(name: str, checkpoint_folder: Path, **options: Any) -> WhisperEmbedder:
    """Registry builder for every whisper-* name (any size: the architecture comes from the checkpoint)."""
    embedding, running = split(name, options, EmbeddingOptions, RunOptions)
    return WhisperEmbedder(name, checkpoint_folder, embedding, running)
