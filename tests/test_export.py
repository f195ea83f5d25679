"""parrot_jax.export: a saved model as ONNX (onnxruntime) and StableHLO (jax.export), equal to `parrot predict`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parrot_jax import __version__, cli
from parrot_jax.export import contract, export_model, onnx_model, read_contract
from parrot_jax.features import load_corpus
from parrot_jax.models import ModelConfig
from parrot_jax.predict import train_on_corpus
from parrot_jax.saved_model import from_cell, load_model, save_model
from parrot_jax.splits import make_folds
from parrot_jax.training import TrainConfig, train_cell

ENCODERS = ["mfcc-stats", "logmel-stats"]
TINY = TrainConfig(epochs=1, batch_size=8, eval_batch_size=8)
SMALL_MODEL = {"filters": (4, 8), "latent_dim": 8, "hidden": 16}
KINDS = ["parrot", "hadamard", "ot", "concat", "fcn", "cnn"]


def _onnx_session(path: Path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The feature store of a 24-utterance demo corpus."""
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.extraction import extract

    base = tmp_path_factory.mktemp("export")
    root = generate_demo_corpus(base / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, ENCODERS, base / "features", progress=False)
    return base / "features"


@pytest.fixture(scope="module")
def saved(store, tmp_path_factory):
    """kind -> a saved model folder; parrot is a two-member ensemble (two folds of a cell)."""
    folder = tmp_path_factory.mktemp("models")
    models = {}

    def save(kind: str) -> Path:
        if kind not in models:
            encoders = ENCODERS if kind not in ("fcn", "cnn") else ENCODERS[1:]
            if kind == "parrot":
                data = load_corpus(store, "demo", encoders)
                config = ModelConfig(**SMALL_MODEL, num_classes=len(data.class_names))
                folds = make_folds(data.labels, None, "stratified", 3, 0, 0.25)[:2]
                result = train_cell(kind, config, [data.matrices[e] for e in encoders], data.labels, folds, TINY)
                model = from_cell(result, config, encoders, data.metadata, data.class_names, TINY.eval_batch_size)
            else:
                model, _ = train_on_corpus(store, "demo", kind, encoders, TINY, SMALL_MODEL, holdout=0.25)
            models[kind] = save_model(folder / kind, model)
        return models[kind]

    return save


def _rows(store: Path, encoders, start: int, n: int) -> list[np.ndarray]:
    data = load_corpus(store, "demo", list(encoders))
    return [np.asarray(data.matrices[e][start : start + n], np.float32) for e in encoders]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_probabilities_equal_the_saved_models_on_stored_rows(kind, store, saved, tmp_path):
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra")
    model = load_model(saved(kind))
    out = export_model(saved(kind), tmp_path / f"{kind}.onnx")
    assert out.max_error <= 1e-5 and out.path.is_file() and out.contract_path is None
    session = _onnx_session(out.path)
    assert [(i.name, i.shape, i.type) for i in session.get_inputs()] == [
        (e, ["batch", model.feature_metadata[e]["dim"]], "tensor(float)") for e in model.encoders]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("probabilities", ["batch", 4])]
    if kind == "parrot":
        assert model.members == 2
    for start, n in [(3, 1), (0, 7), (9, 7)]:  # batches of 1 and 7 rows through the same graph
        rows = _rows(store, model.encoders, start, n)
        got = session.run(None, dict(zip(model.encoders, rows)))[0]
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, model.probabilities(rows), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parrot", "cnn"])
def test_stablehlo_deserialised_gives_the_saved_models_probabilities(kind, store, saved, tmp_path, capsys):
    model = load_model(saved(kind))
    out = tmp_path / f"{kind}.stablehlo"
    assert cli.main(["export", "--model", str(saved(kind)), "--out", str(out), "--format", "stablehlo"]) == 0
    printed = capsys.readouterr().out
    assert f"exported {kind} ({model.members} member(s)) to {out} (stablehlo, " in printed
    assert re.search(r"parity with the saved model: max \|p difference\| \S+ on random batches of 1 and 7 rows",
                     printed)
    assert ("feed at most 8 rows per call" in printed) == (kind == "parrot")
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    for start, n in [(3, 1), (0, 7)]:
        rows = _rows(store, model.encoders, start, n)
        np.testing.assert_allclose(np.asarray(exported.call(*rows)), model.probabilities(rows), rtol=0, atol=1e-5)
    assert read_contract(out) == json.loads(Path(f"{out}.json").read_text()) == contract(model, "stablehlo")


@pytest.mark.slow
def test_onnx_contract_round_trips(store, saved, tmp_path, capsys):
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra")
    model = load_model(saved("concat"))
    out = tmp_path / "concat.onnx"
    assert cli.main(["export", "--model", str(saved("concat")), "--out", str(out)]) == 0
    assert "contract in its metadata" in capsys.readouterr().out
    terms = read_contract(out)
    assert terms == contract(model, "onnx")
    # what an ONNX runtime alone reads: custom metadata, one JSON value per key
    shown = {k: json.loads(v) for k, v in _onnx_session(out).get_modelmeta().custom_metadata_map.items()}
    assert shown == terms
    assert terms["classes"] == ["anger", "happiness", "neutral", "sadness"] == list(model.class_names)
    assert terms["package_version"] == __version__ and terms["sample_rate"] == 16000
    stored = load_corpus(store, "demo", ENCODERS).metadata
    assert [i["name"] for i in terms["inputs"]] == ENCODERS
    for given in terms["inputs"]:
        meta = stored[given["name"]]
        assert given["encoder_options"] == meta["encoder_options"] and given["encoder_options"]
        assert given["checkpoint_sha256"] == meta["checkpoint_sha256"]
        assert given["shape"] == ["batch", meta["dim"]] and given["sample_rate"] == meta["sample_rate"]
    assert terms["model_config"]["sinkhorn"] == model.model_config.to_dict()["sinkhorn"]


@pytest.mark.slow
def test_stacked_layers_input_is_batch_layers_dim(tmp_path):
    """wav2vec2 features of every layer (layer=all), mixed by a learned softmax: input [batch, L+1, dim]."""
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra")
    from parrot_jax.corpora import generate_demo_corpus
    from parrot_jax.encoders import registry
    from parrot_jax.extraction import extract

    folder = Path(__file__).resolve().parent / "fixtures" / "hf" / "wav2vec2"
    root = generate_demo_corpus(tmp_path / "corpus", seed=0, n_speakers=3, n_texts=2)
    extract("demo", root, registry.parse_encoders("wav2vec2-base:layer=all"), tmp_path / "features",
            checkpoints={"wav2vec2-base": folder}, progress=False)
    model, _ = train_on_corpus(tmp_path / "features", "demo", "fcn", ["wav2vec2-base"], TINY,
                               {**SMALL_MODEL, "layer_mix": "softmax"}, holdout=0.25)
    saved = save_model(tmp_path / "model", model)
    out = export_model(saved, tmp_path / "w2v.onnx")
    meta = model.feature_metadata["wav2vec2-base"]
    assert out.contract["inputs"][0]["shape"] == ["batch", meta["layers"], meta["dim"]]
    session = _onnx_session(out.path)
    assert session.get_inputs()[0].shape == ["batch", meta["layers"], meta["dim"]]
    rows = _rows(tmp_path / "features", ["wav2vec2-base"], 0, 7)
    got = session.run(None, {"wav2vec2-base": rows[0]})[0]
    np.testing.assert_allclose(got, model.probabilities(rows), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_primitive_the_converter_cannot_express_is_refused_in_one_line():
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra")
    from importlib.metadata import version

    def noisy(x: jax.Array) -> jax.Array:
        return x + jax.random.gamma(jax.random.key(0), 2.0, (4,))

    (batch,) = jax.export.symbolic_shape("batch")
    with pytest.raises(ValueError) as refused:
        onnx_model(noisy, [jax.ShapeDtypeStruct((batch, 4), jnp.float32)], ["x"], "a test function")
    assert str(refused.value) == (
        f"ONNX export of a test function: jax2onnx {version('jax2onnx')} cannot express the JAX primitive "
        "'random_gamma' (it would need a jax2onnx plugin for 'random_gamma'); --format stablehlo expresses every "
        "primitive")


@pytest.mark.slow
def test_the_sinkhorn_plan_converts_with_its_convergence_test(tmp_path):
    """ott-jax's Sinkhorn loop stops on an entry of its carried error history; jax2onnx 0.13.0 writes an invalid
    Loop for that test unless the test is carried (export._while): the plan then equals JAX's."""
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra")
    from parrot_jax.ot import normalized_cost, transport_plan

    def plan(r_p: jax.Array, r_q: jax.Array) -> jax.Array:
        return transport_plan(normalized_cost(r_p, r_q))

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, 5), jnp.float32)
    path = tmp_path / "plan.onnx"
    path.write_bytes(onnx_model(plan, [spec, spec], ["r_p", "r_q"], "a plan").SerializeToString())
    session = _onnx_session(path)
    rng = np.random.default_rng(0)
    for n in (1, 6):
        r_p, r_q = rng.normal(size=(2, n, 5)).astype(np.float32)
        got = session.run(None, {"r_p": r_p, "r_q": r_q})[0]
        np.testing.assert_allclose(got, np.asarray(plan(r_p, r_q)), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_graph_onnxruntime_refuses_is_not_written(saved, tmp_path, monkeypatch):
    """Without the carried loop test (export._while), jax2onnx 0.13.0's Loop for the Sinkhorn is invalid:
    the export says so in one line and writes nothing."""
    pytest.importorskip("jax2onnx", reason="ONNX export needs the export extra")
    from jax.extend.core.primitives import while_p

    from parrot_jax import export

    monkeypatch.setattr(export, "_while", lambda ins, **params: while_p.bind(*ins, **params))
    with pytest.raises(ValueError) as refused:
        export_model(saved("ot"), tmp_path / "ot.onnx")
    assert re.fullmatch(rf"the ONNX graph jax2onnx wrote for {re.escape(str(saved('ot')))} does not load in "
                        r"onnxruntime \(.*INVALID_GRAPH.*\); nothing written; --format stablehlo expresses every "
                        r"primitive", str(refused.value))
    assert not (tmp_path / "ot.onnx").exists()


def test_missing_or_tampered_model_is_refused_as_predict_refuses_it(saved, tmp_path, capsys):
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    missing = tmp_path / "none"
    assert cli.main(["export", "--model", str(missing), "--out", str(tmp_path / "a.onnx")]) == 1
    refused = capsys.readouterr().err
    assert refused == f"parrot export: error: {missing} holds no saved model (model.json missing)\n"
    assert cli.main(["predict", "--model", str(missing), str(wav)]) == 1
    assert capsys.readouterr().err.startswith(refused.rstrip("\n").replace("parrot export", "parrot predict"))
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "state").symlink_to(saved("fcn") / "state")
    (tampered / "model.json").write_text((saved("fcn") / "model.json").read_text()[:-20])
    errors = []
    for command in (["export", "--model", str(tampered), "--out", str(tmp_path / "b.onnx")],
                    ["predict", "--model", str(tampered), str(wav)]):
        assert cli.main(command) == 1
        errors.append(capsys.readouterr().err.replace(f"parrot {command[0]}: ", "", 1))
    assert errors[0] == errors[1] and errors[0].startswith(f"error: {tampered / 'model.json'}: ")  # load_model's words
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_a_kind_without_a_graph_is_refused(saved, tmp_path, capsys):
    svm = tmp_path / "svm"
    svm.mkdir()
    (svm / "state").symlink_to(saved("fcn") / "state")
    meta = json.loads((saved("fcn") / "model.json").read_text())
    (svm / "model.json").write_text(json.dumps({**meta, "kind": "svm"}))
    assert cli.main(["export", "--model", str(svm), "--out", str(tmp_path / "svm.onnx"), "--format", "stablehlo"]) == 1
    # no SVM is ever saved (the grid saves neural cells only): load_model refuses the kind, naming the file
    assert capsys.readouterr().err == (f"parrot export: error: {svm / 'model.json'}: field kind: expected one of "
                                       'fcn, cnn, parrot, concat, hadamard, ot, got "svm"\n')
