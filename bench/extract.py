"""Extraction speed: our Flax encoders vs transformers' PyTorch models with the same weights, same run.

Each case builds a real-size model with random weights, writes it as a checkpoint folder, and gives two
functions waves -> [B, D] pooled embeddings: ours (through the registry's builder) and the reference.
Warm runs are repeated (--repeats, alternating ours and torch) and the fastest of each is kept, which
damps the noise of a shared machine. For every case this prints seconds, real-time factor (seconds of compute per second of audio) and the
ratio reference / ours, plus the max abs difference of the embeddings (they must agree):

    ours (cold)   first pass: compiles each bucket shape (or reads the persistent compilation cache)
    ours (warm)   later passes over the same utterances: compiled programs reused
    torch 1-by-1  PyTorch, one utterance at a time (the exact reference for group-norm models)
    torch batched PyTorch, batches padded like ours with an attention mask (inexact for group-norm
                  models: padding enters GroupNorm's statistics; shown for speed only); Whisper: batches of
                  30 s windows, exact like ours

Usage: .venv/bin/python bench/extract.py [--utterances 64] [--cases wavlm-base,hubert-base,whisper-tiny]
Needs torch==2.13.0 (the `ref` extra). Add a case by appending to CASES.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from parrot_jax import allocator

allocator.keep_freed_memory_if_wanted()  # before JAX allocates anything (PARROT_KEEP_FREED_MEMORY=0: off)

import numpy as np

Embed = Callable[[Sequence[np.ndarray]], np.ndarray]
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Case:
    """name; setup(workdir, batch_size) -> (ours, reference, reference_batched or None)."""

    name: str
    setup: Callable[[Path, int], tuple[Embed, Embed, Embed | None]]


def _hf_case(registry_name: str, config_class: str, model_class: str) -> Case:
    """A transformers family at its default (base) size, random weights, saved as a checkpoint folder."""

    def setup(workdir: Path, batch_size: int) -> tuple[Embed, Embed, Embed | None]:
        import torch
        import transformers as T

        from parrot_jax.encoders import registry

        torch.manual_seed(0)
        model = getattr(T, model_class)(getattr(T, config_class)()).eval()
        folder = workdir / registry_name
        model.save_pretrained(folder)
        T.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(folder)
        ours = registry.build(registry_name, folder, batch_size=batch_size)

        @torch.inference_mode()
        def one_by_one(waves: Sequence[np.ndarray]) -> np.ndarray:
            return np.stack([model(torch.from_numpy(w)[None]).last_hidden_state[0].mean(0).numpy() for w in waves])

        @torch.inference_mode()
        def batched(waves: Sequence[np.ndarray]) -> np.ndarray:
            out = np.zeros((len(waves), model.config.hidden_size), np.float32)
            order = sorted(range(len(waves)), key=lambda i: waves[i].size)
            for start in range(0, len(order), batch_size):
                idx = order[start: start + batch_size]
                size = max(waves[i].size for i in idx)
                x = torch.zeros(len(idx), size)
                mask = torch.zeros(len(idx), size, dtype=torch.long)
                for r, i in enumerate(idx):
                    x[r, : waves[i].size] = torch.from_numpy(waves[i])
                    mask[r, : waves[i].size] = 1
                h = model(x, attention_mask=mask).last_hidden_state
                frames = model._get_feat_extract_output_lengths(mask.sum(-1))
                valid = (torch.arange(h.shape[1])[None] < frames[:, None]).unsqueeze(-1)
                out[idx] = ((h * valid).sum(1) / frames[:, None]).numpy()
            return out

        return ours.embed_batch, one_by_one, batched

    return Case(registry_name, setup)


def _ssam_case(registry_name: str, scan: str) -> Case:
    """Audio Mamba at its paper size, random weights saved in the official layout; the reference is the
    PyTorch forward of tests/make_ssam_fixtures.py (official semantics, transformers' MambaMixer slow path).
    Case name ``<registry name>-<scan>``: compare the two scans side by side by listing both cases."""

    def setup(workdir: Path, batch_size: int) -> tuple[Embed, Embed, Embed | None]:
        import sys

        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import make_ssam_fixtures as ref

        from parrot_jax.encoders import registry, ssam

        dims = {"ssam-tiny": 192, "ssam-small": 384, "ssam-base": 768}
        model = ref.RefSSAM(embed_dim=dims[registry_name], depth=12, d_state=24, d_conv=4, expand=3).eval()
        ref.randomise_model(model, torch.Generator().manual_seed(0))
        ref.save_official(model, workdir / registry_name / "checkpoints" / "checkpoint-99.pth", epoch=99)
        ours = registry.build(registry_name, workdir / registry_name, scan=scan, chunk_batch=batch_size)

        @torch.inference_mode()
        def one_by_one(waves: Sequence[np.ndarray]) -> np.ndarray:
            return np.stack([model.encode(ref.reference_log_mel(torch.from_numpy(w), torch.float32), True)
                             .mean(1)[0].numpy() for w in waves])

        @torch.inference_mode()
        def batched(waves: Sequence[np.ndarray]) -> np.ndarray:
            chunked = [ssam.chunk_spectrogram(ref.reference_log_mel(torch.from_numpy(w), torch.float32)[0, 0]
                                              .numpy(), ssam.CHUNK_FRAMES) for w in waves]
            chunks = torch.from_numpy(np.concatenate([c for c, _ in chunked]))[:, None]
            frames = torch.cat([model.forward_features(chunks[i: i + batch_size], True)
                                for i in range(0, len(chunks), batch_size)]).numpy()
            pooled, start = [], 0
            for c, pad in chunked:
                pooled.append(ssam.pool_frames(frames[start: start + len(c)], pad, ssam.CHUNK_FRAMES))
                start += len(c)
            return np.stack(pooled)

        return ours.embed_batch, one_by_one, batched

    return Case(f"{registry_name}-{scan}", setup)


def _whisper_case(registry_name: str, **sizes: int) -> Case:
    """A Whisper encoder at a real size (random weights; a one-layer decoder with a small vocabulary, which
    neither side runs). The reference is transformers' PyTorch encoder on WhisperFeatureExtractor's
    features, pooled like ours: the last hidden state's mean over the len // 320 frames covering the audio."""

    def setup(workdir: Path, batch_size: int) -> tuple[Embed, Embed, Embed | None]:
        import torch
        import transformers as T

        from parrot_jax.encoders import registry

        torch.manual_seed(0)
        config = T.WhisperConfig(**sizes, decoder_layers=1, decoder_attention_heads=sizes["encoder_attention_heads"],
                                 vocab_size=64, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                 decoder_start_token_id=1)
        model = T.WhisperModel(config).eval()
        fe = T.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        folder = workdir / registry_name
        model.save_pretrained(folder)
        fe.save_pretrained(folder)
        ours = registry.build(registry_name, folder, batch_size=batch_size)

        @torch.inference_mode()
        def embed(waves: Sequence[np.ndarray]) -> np.ndarray:
            x = fe(list(waves), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            h = model.encoder(x).last_hidden_state
            return np.stack([h[i, : w.size // 320].mean(0).numpy() for i, w in enumerate(waves)])

        def batched(waves: Sequence[np.ndarray]) -> np.ndarray:
            return np.concatenate([embed(waves[i: i + batch_size]) for i in range(0, len(waves), batch_size)])

        return ours.embed_batch, lambda waves: np.concatenate([embed([w]) for w in waves]), batched

    return Case(registry_name, setup)


CASES: list[Case] = [
    _hf_case("wavlm-base", "WavLMConfig", "WavLMModel"),
    _hf_case("hubert-base", "HubertConfig", "HubertModel"),
    *(_ssam_case(name, scan) for name in ("ssam-tiny", "ssam-base") for scan in ("sequential", "associative")),
    _whisper_case("whisper-tiny", d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536),
    _whisper_case("whisper-base", d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048),
]


def utterances(n: int, low: float, high: float, seed: int = 0) -> list[np.ndarray]:
    """n speech-like random waves with durations uniform in [low, high] seconds."""
    rng = np.random.default_rng(seed)
    waves = []
    for _ in range(n):
        size = int(rng.uniform(low, high) * SAMPLE_RATE)
        t = np.arange(size) / SAMPLE_RATE
        tone = np.sin(2 * np.pi * rng.uniform(100, 300) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        waves.append((0.3 * tone + 0.05 * rng.standard_normal(size)).astype(np.float32))
    return waves


def timed(fn: Embed, waves: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(waves)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=64)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=8.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="warm runs of each side; the fastest is reported")
    p.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated case names")
    p.add_argument("--no-batched-torch", action="store_true", help="skip the padded PyTorch batches")
    args = p.parse_args(argv)
    known = {c.name: c for c in CASES}
    wanted = [name for name in args.cases.split(",") if name]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(known)}")
    waves = utterances(args.utterances, args.min_seconds, args.max_seconds)
    audio = sum(w.size for w in waves) / SAMPLE_RATE
    print(f"{len(waves)} utterances, {audio:.1f} s of audio, batch size {args.batch_size}")
    for name in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            ours, reference, batched = known[name].setup(Path(tmp), args.batch_size)
            t_cold, e_cold = timed(ours, waves)
            sides = {"ours (warm)": ours, "torch 1-by-1": reference}
            if batched is not None and not args.no_batched_torch:
                sides["torch batched"] = batched
            best: dict[str, tuple[float, np.ndarray]] = {}
            for _ in range(args.repeats):
                for label, fn in sides.items():
                    seconds, emb = timed(fn, waves)
                    if label not in best or seconds < best[label][0]:
                        best[label] = (seconds, emb)
            rows = [("ours (cold)", t_cold, e_cold)] + [(label, *best[label]) for label in sides]
            t_ref, e_ref = best["torch 1-by-1"]
        print(f"\n{name}")
        print(f"  {'run':14s} {'seconds':>8s} {'RTF':>7s} {'torch 1-by-1 / run':>19s} {'max|emb - torch 1-by-1|':>24s}")
        for label, seconds, emb in rows:
            print(f"  {label:14s} {seconds:8.2f} {seconds / audio:7.4f} {t_ref / seconds:19.2f} "
                  f"{float(np.abs(emb - e_ref).max()):24.2e}")


if __name__ == "__main__":
    main()
