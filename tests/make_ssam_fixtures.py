"""Make the committed reference fixtures of tests/test_ssam.py (needs torch==2.13.0 and transformers).

    .venv/bin/python tests/make_ssam_fixtures.py

Writes tests/fixtures/ssam/:
- mixer.npz: a transformers ``MambaMixer`` (pure-PyTorch slow path) with random weights, an input, its output.
- frontend.npz: three int16 test waves and their normalised log-mel spectrograms computed with torch.stft
  (in float64, stored as float32; and in float32 as the official code does) and an htk mel filterbank built here from torchaudio's formula.
- tiny/checkpoints/checkpoint-{9,10}.pth: a tiny random SSAM (embed_dim 32, depth 2) saved exactly in the
  official layout ({'model', 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace}); epoch 9 holds
  other (stale) weights, so a loader that sorts epochs as text picks the wrong file.
- tiny_fp16/checkpoints/checkpoint-10.pth: the same weights in float16.
- runs_code/checkpoints/checkpoint-1.pth: the same, but its 'args' holds an object whose unpickling calls
  builtins.print: a safe loader refuses it.
- forward.npz: a PyTorch reference forward of the official semantics (front end, 2 s chunks, patch embed,
  sin-cos position table, cls token, Add -> LayerNorm -> Mamba blocks, final norm, the official token
  rearrangement or the corrected one, padded-tail trim, mean) on the three waves.

The reference model below is assembled from the official repository's semantics (src/models/ssast.py,
src/models/mamba_ssast.py, src/models/patch_embed.py, src/models/pos_embed.py, hear_api/runtime.py,
src/data/features.py); its mixer is transformers' MambaMixer, whose parameter names equal mamba-ssm's.
"""

from __future__ import annotations

import argparse
import builtins
import copyreg
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer

OUT = Path(__file__).resolve().parent / "fixtures" / "ssam"
SR, N_FFT, HOP, N_MELS, F_MIN, F_MAX = 16000, 400, 160, 80, 50.0, 8000.0
CHUNK, PATCH = 200, (4, 16)
TINY = dict(embed_dim=32, depth=2, d_state=24, d_conv=4, expand=3)
WAVE_SAMPLES = (11200, 63840, 40480)  # 71 frames (one chunk); 400 frames (whole chunks); 254 frames


def mamba_config(hidden: int, state: int, conv: int, expand: int, rank: int) -> MambaConfig:
    return MambaConfig(hidden_size=hidden, state_size=state, conv_kernel=conv, expand=expand,
                       time_step_rank=rank, use_bias=False, use_conv_bias=True, hidden_act="silu",
                       num_hidden_layers=1, vocab_size=8)


def randomise_mixer(mixer: MambaMixer, gen: torch.Generator) -> None:
    """Every parameter random (not the init values), with A_log, D and dt bias in realistic ranges."""
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if name == "A_log":
                p.copy_(torch.log(torch.rand(p.shape, generator=gen) * 15 + 1))
            elif name == "dt_proj.bias":
                dt = torch.exp(torch.rand(p.shape, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name == "D":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 1)
            else:
                fan_in = p.shape[-1] if p.ndim > 1 else 4
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def make_mixer_fixture(gen: torch.Generator) -> None:
    config = mamba_config(hidden=24, state=8, conv=4, expand=3, rank=3)
    mixer = MambaMixer(config, layer_idx=0).eval()
    randomise_mixer(mixer, gen)
    x = torch.randn(2, 37, 24, generator=gen)
    with torch.no_grad():
        y = mixer(x)
    state = {f"w/{k}": v.numpy() for k, v in mixer.state_dict().items()}
    np.savez(OUT / "mixer.npz", x=x.numpy(), y=y.numpy(), **state)


# ------------------------------------------------------------------------------------ reference front end


def torchaudio_mel_fb(dtype: torch.dtype) -> torch.Tensor:
    """torchaudio.functional.melscale_fbanks(201, 50, 8000, 80, 16000, norm=None, mel_scale='htk')."""
    all_freqs = torch.linspace(0, SR // 2, N_FFT // 2 + 1, dtype=dtype)
    m_min = 2595.0 * math.log10(1.0 + F_MIN / 700.0)
    m_max = 2595.0 * math.log10(1.0 + F_MAX / 700.0)
    m_pts = torch.linspace(m_min, m_max, N_MELS + 2, dtype=dtype)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1, dtype=dtype), torch.min(down, up))


def reference_log_mel(wave: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """LogMelSpec(normalize=True, flip_ft=True) of src/data/features.py for one wave: [1, 1, T, 80]."""
    x = wave.to(dtype)[None]
    spec = torch.stft(x, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT, dtype=dtype), center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.abs().pow(2.0)  # [1, 201, T]
    mel = torch.matmul(power.transpose(-1, -2), torchaudio_mel_fb(dtype)).transpose(-1, -2)  # [1, 80, T]
    x = (mel + torch.finfo(torch.float32).eps).log()
    mean = torch.mean(x, [1, 2], keepdim=True)
    std = torch.std(x, [1, 2], keepdim=True)
    x = (x - mean) / (std + 1e-8)
    return x.transpose(-2, -1).unsqueeze(1)


def test_waves() -> list[np.ndarray]:
    """Deterministic speech-like int16 waves: a gliding harmonic tone under an envelope, plus noise."""
    rng = np.random.default_rng(20241124)
    waves = []
    for n in WAVE_SAMPLES:
        t = np.arange(n) / SR
        f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        tone = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t) ** 2
        wave = 0.2 * envelope * tone + 0.01 * rng.standard_normal(n)
        waves.append(np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16))
    return waves


# ------------------------------------------------------------------------------------------ reference model


def official_pos_embed(embed_dim: int, grid: tuple[int, int]) -> np.ndarray:
    """get_2d_sincos_pos_embed(embed_dim, grid, cls_token=True), step by step as src/models/pos_embed.py."""
    gh, gw = grid
    mesh = np.stack(np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32)), axis=0)
    mesh = mesh.reshape([2, 1, gh, gw])

    def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(embed_dim // 2, mesh[0]), one_d(embed_dim // 2, mesh[1])], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


class RefBlock(torch.nn.Module):
    """mamba_ssast.Block without fused add-norm: Add -> LayerNorm -> Mixer, returning (hidden, residual)."""

    def __init__(self, dim: int, mixer_config: MambaConfig) -> None:
        super().__init__()
        self.mixer = MambaMixer(mixer_config, layer_idx=0)
        self.norm = torch.nn.LayerNorm(dim, eps=1e-6)

    def forward(self, hidden, residual):
        residual = hidden if residual is None else residual + hidden
        return self.mixer(self.norm(residual)), residual


class RefSSAM(torch.nn.Module):
    """MambaSSAST(frequency_first=False, rms_norm=False, fused_add_norm=False) with the official state-dict keys."""

    def __init__(self, embed_dim: int, depth: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.grid = (CHUNK // PATCH[0], N_MELS // PATCH[1])  # (time, frequency) = (50, 5)
        self.patch_embed = torch.nn.Module()
        self.patch_embed.proj = torch.nn.Conv2d(1, embed_dim, kernel_size=PATCH, stride=PATCH)
        n_tokens = 1 + self.grid[0] * self.grid[1]
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, n_tokens, embed_dim), requires_grad=False)
        self.encoder_norm = torch.nn.LayerNorm(embed_dim, eps=1e-6)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pred = torch.nn.Sequential(torch.nn.Linear(embed_dim, embed_dim), torch.nn.GELU(),
                                        torch.nn.Linear(embed_dim, PATCH[0] * PATCH[1]))
        config = mamba_config(embed_dim, d_state, d_conv, expand, math.ceil(embed_dim / 16))
        self.blocks = torch.nn.ModuleList([RefBlock(embed_dim, config) for _ in range(depth)])

    def forward_features(self, x: torch.Tensor, official_order: bool) -> torch.Tensor:
        b = x.shape[0]
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1).reshape(b, -1, self.embed_dim)  # time-major tokens
        x = x + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(b, -1, -1)
        x = torch.cat((cls, x), dim=1)
        hidden, residual = x, None
        for block in self.blocks:
            hidden, residual = block(hidden, residual)
        x = self.encoder_norm(residual + hidden)[:, 1:, :]
        t, f = self.grid
        if official_order:  # rearrange(x, 'b (f t) d -> b t (f d)', f=f)
            return x.reshape(b, f, t, self.embed_dim).permute(0, 2, 1, 3).reshape(b, t, f * self.embed_dim)
        return x.reshape(b, t, f * self.embed_dim)  # 'b (t f) d -> b t (f d)'

    def encode(self, lms: torch.Tensor, official_order: bool) -> torch.Tensor:
        """RuntimeSSAST.encode for frequency_first=False: [1, 1, T, 80] -> frames [1, n, 5 * D]."""
        cur = lms.shape[-2]
        pad = CHUNK - cur % CHUNK  # a whole zero chunk when cur % CHUNK == 0, as the official code does
        x = torch.nn.functional.pad(lms, (0, 0, 0, pad))
        embeddings = [self.forward_features(x[:, :, i * CHUNK : (i + 1) * CHUNK, :], official_order)
                      for i in range(x.shape[-2] // CHUNK)]
        x = torch.hstack(embeddings)
        trim = int(embeddings[0].shape[1] * pad / CHUNK)
        return x[:, :-trim] if trim > 0 else x


def randomise_model(model: RefSSAM, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                p.copy_(torch.from_numpy(official_pos_embed(model.embed_dim, model.grid)).float()[None])
            elif "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
            elif name in ("cls_token", "mask_token"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        for block in model.blocks:
            randomise_mixer(block.mixer, gen)
        for module in (model.patch_embed.proj, model.pred[0], model.pred[2]):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


class ConfigDict:
    """Pickles exactly as ml_collections' ConfigDict (GLOBAL ml_collections.config_dict.config_dict ConfigDict,
    NEWOBJ, BUILD with its field state), without needing ml_collections installed."""

    def __init__(self, **fields: object) -> None:
        self.fields = fields

    def __reduce_ex__(self, protocol: int):
        state = {"_fields": self.fields, "_locked": False, "_type_safe": True, "_convert_dict": True,
                 "_allow_dotted_keys": False, "_sort_keys": True}
        return copyreg.__newobj__, (type(self),), state


_ML_COLLECTIONS = "ml_collections.config_dict.config_dict"
ConfigDict.__module__ = _ML_COLLECTIONS
for _name in ("ml_collections", "ml_collections.config_dict", _ML_COLLECTIONS):
    sys.modules.setdefault(_name, types.ModuleType(_name))
sys.modules[_ML_COLLECTIONS].ConfigDict = ConfigDict


class RunsCode:
    """An object whose unpickling would call a function (print): a checkpoint a safe loader must refuse."""

    def __reduce__(self):
        return builtins.print, ("this checkpoint ran code while loading",)


def official_args(**extra: object) -> argparse.Namespace:
    """The 'args' entry of train.py: an argparse.Namespace whose .config is an ml_collections ConfigDict."""
    config = ConfigDict(model=ConfigDict(arch="mamba_ssast_tiny", type="ssast", model_args=ConfigDict(
        img_size=(200, 80), patch_size=(4, 16), frequency_first=False, rms_norm=False, fused_add_norm=False)))
    return argparse.Namespace(config=config, workdir="runs/ssam_tiny", output_dir="runs/ssam_tiny/checkpoints",
                              precision="float16", num_workers=16, distributed=True, **extra)


def save_official(model: RefSSAM, path: Path, epoch: int, dtype: torch.dtype = torch.float32,
                  args: argparse.Namespace | None = None) -> None:
    """torch.save in the layout of the official misc.save_model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    args = official_args() if args is None else args
    optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(4)}},
                 "param_groups": [{"lr": 1.5e-4, "betas": (0.9, 0.95), "weight_decay": 0.05, "params": [0]}]}
    torch.save({"model": state, "optimizer": optimizer, "epoch": epoch, "scaler": {"scale": 65536.0},
                "args": args}, path)


def make_model_fixtures(gen: torch.Generator) -> None:
    stale = RefSSAM(**TINY).eval()
    randomise_model(stale, gen)
    save_official(stale, OUT / "tiny" / "checkpoints" / "checkpoint-9.pth", epoch=9)
    model = RefSSAM(**TINY).eval()
    randomise_model(model, gen)
    save_official(model, OUT / "tiny" / "checkpoints" / "checkpoint-10.pth", epoch=10)
    save_official(model, OUT / "tiny_fp16" / "checkpoints" / "checkpoint-10.pth", epoch=10, dtype=torch.float16)
    save_official(model, OUT / "runs_code" / "checkpoints" / "checkpoint-1.pth", epoch=1, dtype=torch.float16,
                  args=official_args(hook=RunsCode()))
    half = RefSSAM(**TINY).eval()
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})

    waves = test_waves()
    arrays: dict[str, np.ndarray] = {"pos_embed": official_pos_embed(TINY["embed_dim"], model.grid)}
    frontend: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, pcm in enumerate(waves):
            wave = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
            frontend[f"wave{i}"] = pcm
            frontend[f"logmel64_{i}"] = reference_log_mel(wave, torch.float64)[0, 0].float().numpy()
            lms = reference_log_mel(wave, torch.float32)
            frontend[f"logmel32_{i}"] = lms[0, 0].numpy()
            for order, official in (("official", True), ("time_major", False)):
                frames = model.encode(lms, official)
                arrays[f"pooled_{order}_{i}"] = frames.mean(dim=1)[0].numpy()
                if i == 2:
                    arrays[f"frames_{order}_{i}"] = frames[0].numpy()
            arrays[f"pooled_fp16_{i}"] = half.encode(lms, True).mean(dim=1)[0].numpy()
    np.savez_compressed(OUT / "frontend.npz", **frontend)
    np.savez(OUT / "forward.npz", **arrays)


def main() -> None:
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(5)
    make_mixer_fixture(gen)
    make_model_fixtures(gen)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(OUT)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
