"""Make tests/fixtures/hf: tiny random checkpoints of each attention family and transformers' outputs.

Needs torch==2.13.0 and transformers (the `ref` extra); the ordinary test run only reads what this writes.
Run from the repository root:  .venv/bin/python tests/make_hf_fixtures.py

For each family (wav2vec2, HuBERT, UniSpeech-SAT as its pre-training class, an MMS-like stable-layer-norm
wav2vec2 pre-training checkpoint, WavLM post-LN and pre-LN) it writes

    <family>/      config.json, preprocessor_config.json, model.safetensors (save_pretrained), expected.npz
    <family>_bin/  config.json, preprocessor_config.json, pytorch_model.bin (torch.save of the state dict,
                   positional-conv weight norm in the old weight_g/weight_v form)

expected.npz holds the test waves (several lengths) and, per wave, every hidden state and the
last_hidden_state of transformers' PyTorch model run on that wave alone (float32, eval mode).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import transformers as T

OUT = Path(__file__).resolve().parent / "fixtures" / "hf"
LENGTHS = (30, 1234, 3001, 4800)  # 30 samples: the receptive field of the conv stack below (one frame)
COMMON = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
              num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)


def families() -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (model with random weights, do_normalize)."""
    return {
        "wav2vec2": (T.Wav2Vec2Model(T.Wav2Vec2Config(**COMMON, feat_extract_norm="group")), True),
        "hubert": (T.HubertModel(T.HubertConfig(**COMMON, feat_extract_norm="group", feat_proj_layer_norm=False)),
                   False),
        "unispeech_sat": (T.UniSpeechSatForPreTraining(T.UniSpeechSatConfig(
            **COMMON, feat_extract_norm="group", codevector_dim=8, proj_codevector_dim=8, num_codevectors_per_group=4,
            num_codevector_groups=2, num_clusters=3)), True),
        "mms": (T.Wav2Vec2ForPreTraining(T.Wav2Vec2Config(
            **COMMON, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, codevector_dim=8,
            proj_codevector_dim=8, num_codevectors_per_group=4, num_codevector_groups=2)), True),
        "wavlm": (T.WavLMModel(T.WavLMConfig(**COMMON, feat_extract_norm="group", num_buckets=16,
                                             max_bucket_distance=40)), False),
        "wavlm_stable": (T.WavLMModel(T.WavLMConfig(**COMMON, feat_extract_norm="layer", do_stable_layer_norm=True,
                                                    conv_bias=True, num_buckets=16, max_bucket_distance=40)), True),
    }


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder inside a pre-training class (its `wav2vec2` / `unispeech_sat` attribute), else the model."""
    for attr in ("wav2vec2", "unispeech_sat"):
        if hasattr(model, attr):
            return getattr(model, attr)
    return model


def old_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pre-parametrization key names of weight norm (what older .bin checkpoints hold)."""
    return {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                              "weight_v"): v for k, v in state.items()}


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n) + 0.1 * np.sin(np.arange(n) / 7.0)).astype(np.float32) for n in LENGTHS]
    if OUT.exists():
        shutil.rmtree(OUT)
    for name, (model, do_normalize) in families().items():
        with torch.no_grad():  # spread the weights so that every part of the model moves the output
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
        model.eval()
        fe = T.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                        do_normalize=do_normalize, return_attention_mask=not do_normalize)
        folder, folder_bin = OUT / name, OUT / f"{name}_bin"
        model.save_pretrained(folder)
        fe.save_pretrained(folder)
        folder_bin.mkdir(parents=True)
        shutil.copy(folder / "config.json", folder_bin / "config.json")
        fe.save_pretrained(folder_bin)
        torch.save(old_weight_norm(model.state_dict()), folder_bin / "pytorch_model.bin")
        expected: dict[str, np.ndarray] = {}
        for i, wave in enumerate(waves):
            x = fe(wave, sampling_rate=16000, return_tensors="np").input_values.astype(np.float32)
            with torch.no_grad():
                out = base_model(model)(torch.from_numpy(x), output_hidden_states=True)
            expected[f"wave_{i}"] = wave
            expected[f"hidden_{i}"] = torch.stack(out.hidden_states).squeeze(1).numpy()
            expected[f"last_{i}"] = out.last_hidden_state.squeeze(0).numpy()
        np.savez_compressed(folder / "expected.npz", **expected)
        print(name, sorted(p.name for p in folder.iterdir()))


if __name__ == "__main__":
    main()
