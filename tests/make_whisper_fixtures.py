"""Make tests/fixtures/whisper: tiny random Whisper checkpoints, transformers' outputs, a CTranslate2 conversion.

Needs the `ref` extra (torch==2.13.0) and the `whisper-ref` extra (ctranslate2); the ordinary test run only
reads what this writes. Run from the repository root:  .venv/bin/python tests/make_whisper_fixtures.py

To stay small, the models have 1-second windows (chunk_length=1, max_source_positions=50: 100 mel frames),
a configuration transformers' WhisperFeatureExtractor and WhisperEncoder run as they run 30 s. Written:

    tiny80/      WhisperForConditionalGeneration (keys model.encoder.*, a decoder to ignore), 80 mel bins:
                 config.json, preprocessor_config.json, model.safetensors (save_pretrained), expected.npz
    tiny80_bin/  the same weights as pytorch_model.bin (torch.save of the state dict)
    tiny80_ct2/  the same model converted by ctranslate2's own converter (float32) + preprocessor_config.json
    tiny128/     WhisperModel (keys encoder.*), 128 mel bins, 3 layers; tiny128_bin/ as above

expected.npz holds the test waves (several lengths, the last one 2.5 windows long) and, per wave and window,
every hidden state of transformers' encoder run on that window's features alone (float32, eval mode):
``hidden_<wave>_<window>`` [L+1, 50, d].
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers as T

OUT = Path(__file__).resolve().parent / "fixtures" / "whisper"
LENGTHS = (320, 4001, 12345, 16000, 40000)  # samples; one window is 16000 (1 s)
TOKENS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>", "a", "b"]


def config(n_mels: int, layers: int, heads: int) -> T.WhisperConfig:
    return T.WhisperConfig(d_model=16, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=32,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=n_mels,
                           vocab_size=len(TOKENS) + 3, max_source_positions=50, max_target_positions=8,
                           pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1,
                           suppress_tokens=[], begin_suppress_tokens=[0])


def spread(model: torch.nn.Module) -> None:
    """Spread the random weights so that every part of the model moves the output."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.eval()


def write(name: str, model: torch.nn.Module, encoder: torch.nn.Module, n_mels: int,
          waves: list[np.ndarray]) -> T.WhisperFeatureExtractor:
    folder, folder_bin = OUT / name, OUT / f"{name}_bin"
    fe = T.WhisperFeatureExtractor(feature_size=n_mels, chunk_length=1)
    model.save_pretrained(folder)
    fe.save_pretrained(folder)
    folder_bin.mkdir(parents=True)
    shutil.copy(folder / "config.json", folder_bin / "config.json")
    fe.save_pretrained(folder_bin)
    torch.save(model.state_dict(), folder_bin / "pytorch_model.bin")
    expected: dict[str, np.ndarray] = {}
    for i, wave in enumerate(waves):
        expected[f"wave_{i}"] = wave
        for w, start in enumerate(range(0, wave.size, fe.n_samples)):
            x = fe(wave[start: start + fe.n_samples], sampling_rate=16000, return_tensors="np").input_features
            with torch.no_grad():
                out = encoder(torch.from_numpy(x), output_hidden_states=True)
            expected[f"hidden_{i}_{w}"] = torch.stack(out.hidden_states).squeeze(1).numpy()
    np.savez_compressed(folder / "expected.npz", **expected)
    return fe


def convert_to_ctranslate2(name: str) -> None:
    """ctranslate2's TransformersConverter needs a tokenizer: a tiny one is written beside a copy of the model."""
    import ctranslate2.converters

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / name
        shutil.copytree(OUT / name, source)
        (source / "expected.npz").unlink()
        (source / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TOKENS)}))
        (source / "merges.txt").write_text("#version: 0.2\n")
        T.WhisperTokenizer(str(source / "vocab.json"), str(source / "merges.txt")).save_pretrained(source)
        ctranslate2.converters.TransformersConverter(str(source), copy_files=["preprocessor_config.json"]).convert(
            str(OUT / f"{name}_ct2"), quantization="float32")


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n) + 0.1 * np.sin(np.arange(n) / 7.0)).astype(np.float32) for n in LENGTHS]
    if OUT.exists():
        shutil.rmtree(OUT)
    full = T.WhisperForConditionalGeneration(config(80, 2, 2))
    spread(full)
    write("tiny80", full, full.model.encoder, 80, waves)
    convert_to_ctranslate2("tiny80")
    bare = T.WhisperModel(config(128, 3, 4))
    spread(bare)
    write("tiny128", bare, bare.encoder, 128, waves)
    for folder in sorted(OUT.iterdir()):
        print(folder.name, sorted(p.name for p in folder.iterdir()))


if __name__ == "__main__":
    main()
