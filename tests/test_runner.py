"""parrot_jax.encoders.runner: the one place where every encoder family's program runs (jit, devices, cache)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parrot_jax.encoders import registry
from parrot_jax.encoders.runner import Runner, jitted

REPO = Path(__file__).resolve().parents[1]
HF = REPO / "tests" / "fixtures" / "hf"
SSAM = REPO / "tests" / "fixtures" / "ssam" / "tiny"
WHISPER = REPO / "tests" / "fixtures" / "whisper" / "tiny128"


def _how_it_runs(path: Path) -> list[str]:
    """What in module `path` decides how a program runs: imports of distributed / compilation_cache,
    ``jax.jit``, a ``use_devices`` method."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names = {a.name for a in node.names}
        else:
            names = set()
        found += sorted(names & {"parrot_jax.distributed", "parrot_jax.compilation_cache", "jax.jit"})
        if isinstance(node, ast.Attribute) and node.attr == "jit" and getattr(node.value, "id", "") == "jax":
            found.append("jax.jit")
        if isinstance(node, ast.FunctionDef) and node.name == "use_devices":
            found.append("use_devices")
    return found


def test_no_encoder_module_decides_devices_sharding_or_the_cache():
    """The families hand over a program; only the runner jits, shards and turns the compilation cache on."""
    modules = {p.name: _how_it_runs(p) for p in sorted((REPO / "parrot_jax" / "encoders").glob("*.py"))}
    assert {"wav2vec2.py", "wavlm.py", "ssam.py", "classical.py", "runner.py"} <= modules.keys()
    assert modules.pop("runner.py") == ["parrot_jax.distributed", "parrot_jax.compilation_cache", "jax.jit"]
    assert {name: found for name, found in modules.items() if found} == {}


def test_a_runner_gives_itself_only_to_encoders_with_a_program():
    mfcc = registry.build("mfcc-stats")
    wav2vec2 = registry.build("wav2vec2-base", HF / "wav2vec2")
    runner = Runner()
    runner.use([mfcc, wav2vec2])
    assert (mfcc.program, getattr(mfcc, "runner", None), wav2vec2.runner) == (None, None, runner)
    with pytest.raises(ValueError, match=r"^encoder 'mfcc-stats' has no program to run \(it embeds on the host\)$"):
        runner.outputs(mfcc, [])
    # on one device every runner calls the same jitted function: one compilation per program and shape
    assert Runner().compiled(wav2vec2.program) is runner.compiled(wav2vec2.program) is jitted(wav2vec2.program)
    wave = np.random.default_rng(0).standard_normal(1200).astype(np.float32)
    assert np.array_equal(Runner().run(wav2vec2, [wave]), wav2vec2.embed_batch([wave]))


def _child(code: str, env: dict[str, str]) -> str:
    """stdout of `code` run in a fresh CPU-only Python with `env` added."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "PARROT_", "XLA_"))}
    full.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **env)
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


EVERY_FAMILY = f"""
import json, sys
import numpy as np
import soundfile as sf
from parrot_jax.audio import load_audio
from parrot_jax.corpora import generate_demo_corpus
from parrot_jax.encoders import registry, ssam
from parrot_jax.extraction import extract
from parrot_jax.features import load_features
from parrot_jax.predict import predict_files, train_on_corpus
from parrot_jax.training import TrainConfig

out = sys.argv[1]
root = generate_demo_corpus(out + "/corpus", seed=2, n_speakers=1, n_texts=3)  # 12 files: chunks of 5, 5, 2
def encoders():
    config, params = ssam.load({str(SSAM)!r})
    return [registry.build("wav2vec2-base", {str(HF / "wav2vec2")!r}),
            registry.build("wavlm-base", {str(HF / "wavlm")!r}, batch_size=2),
            ssam.SSAMEncoder("ssam-tiny", config, params, chunk_batch=2),
            registry.build("whisper-base", {str(WHISPER)!r}, batch_size=2, pooling="mean+std"),
            registry.build("mfcc-stats")]
rows, devices = {{}}, {{}}
for spec in ("1", "all"):
    built = encoders()
    extract("demo", root, built, out + "/" + spec, batch_size=5, progress=False, devices=spec)
    for e in built:
        rows[spec, e.name] = np.load(out + "/" + spec + "/demo/" + e.name + ".npy")
        devices[spec + " " + e.name] = e.runner.devices if e.program is not None else None
# predict embeds a new recording (a copy of row 3) on the 4 devices as extraction did
model, _ = train_on_corpus(out + "/all", "demo", "fcn", ["wav2vec2-base"], TrainConfig(epochs=1, batch_size=4),
                           {{"filters": (4, 8), "latent_dim": 8, "hidden": 8}}, holdout=1 / 3)
stored = load_features(out + "/all", "demo", "wav2vec2-base")
sf.write(out + "/new.wav", load_audio(root / "wav" / (stored.ids[3] + ".wav")), 16000, subtype="PCM_16")
[prediction] = predict_files(model, [out + "/new.wav"], {{"wav2vec2-base": {str(HF / "wav2vec2")!r}}})
expected = dict(zip(model.class_names, model.probabilities([np.asarray(stored.matrix[3:4])])[0].tolist()))
print(json.dumps({{"devices": devices,
                  "shapes": {{name: list(rows["all", name].shape) for _, name in rows}},
                  "diff": {{name: float(np.abs(rows["1", name] - rows["all", name]).max()) for _, name in rows}},
                  "predict_diff": max(abs(prediction.probabilities[c] - p) for c, p in expected.items())}}))
"""


@pytest.mark.slow
def test_extraction_and_predict_on_4_devices_give_the_one_device_rows_for_every_family(tmp_path: Path):
    """One runner per extraction: the attention (wav2vec2, WavLM, Whisper) and Mamba (SSAM) programs split each batch
    over 4 simulated devices (odd row counts padded) and give the one-device rows; the classical encoder has
    no program and gives the same bytes. predict embeds a new recording through a runner on the 4 devices
    too, giving the stored row's probabilities."""
    import json

    out = json.loads(_child(EVERY_FAMILY.replace("sys.argv[1]", repr(str(tmp_path))),
                            {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}).splitlines()[-1])
    assert out["devices"] == {"1 wav2vec2-base": 1, "1 wavlm-base": 1, "1 ssam-tiny": 1, "1 whisper-base": 1,
                              "1 mfcc-stats": None, "all wav2vec2-base": 4, "all wavlm-base": 4, "all ssam-tiny": 4,
                              "all whisper-base": 4, "all mfcc-stats": None}
    assert out["shapes"] == {"wav2vec2-base": [12, 16], "wavlm-base": [12, 16], "ssam-tiny": [12, 160],
                             "whisper-base": [12, 32], "mfcc-stats": [12, 160]}
    assert out["diff"]["mfcc-stats"] == 0.0
    assert max(out["diff"].values()) <= 1e-5, out["diff"]
    assert out["predict_diff"] <= 1e-5, out


@pytest.mark.slow
def test_every_familys_programs_go_to_the_persistent_compilation_cache(tmp_path: Path):
    """The runner turns the cache on for every family: SSAM's programs (which never did) land in the user cache
    folder, and the attention family's ``compilation_cache`` run option still names the folder."""
    code = f"""
import numpy as np
from parrot_jax.encoders import registry, ssam
config, params = ssam.load({str(SSAM)!r})
ssam.SSAMEncoder("ssam-tiny", config, params, chunk_batch=2).embed_batch([np.ones(3000, np.float32)])
"""
    _child(code, {"XDG_CACHE_HOME": str(tmp_path / "user")})
    assert any((tmp_path / "user" / "parrot_jax" / "jax").iterdir())
    code = f"""
import numpy as np
from parrot_jax.encoders import registry
encoder = registry.build("wav2vec2-base", {str(HF / "wav2vec2")!r}, compilation_cache={str(tmp_path / "own")!r})
encoder.embed_batch([np.ones(3000, np.float32)])
"""
    _child(code, {"XDG_CACHE_HOME": str(tmp_path / "user2")})
    assert any((tmp_path / "own").iterdir()) and not (tmp_path / "user2" / "parrot_jax").exists()
