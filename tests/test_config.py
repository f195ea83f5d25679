"""parrot_jax.config: the typed config tree, overrides of any depth refused when read, config files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parrot_jax.config import GridConfig, apply_overrides, load_config, model_config, train_config
from parrot_jax.models import ModelConfig
from parrot_jax.ot import SinkhornOptions
from parrot_jax.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_overrides_parse_by_field_type():
    config = apply_overrides(GridConfig(), ["seeds=0,1", "train.patience=none", "train.epochs=7", "ablations=true",
                                            "protocol=speaker", "corpora=emodb", "model.dropout_rate=0.25"])
    assert config.seeds == (0, 1) and config.ablations is True and config.protocol == "speaker"
    assert config.train == TrainConfig(patience=None, epochs=7)
    assert config.model.dropout_rate == 0.25 and config.corpora == ("emodb",)
    assert config.table2_methods == ("concat", "parrot", "hadamard", "ot")
    assert train_config(config).seeds == (0, 1) and model_config(config, 7).num_classes == 7
    with pytest.raises(ValueError, match=r"override 'epoch=5': unknown key 'epoch'; known: run, features"):
        apply_overrides(GridConfig(), ["epoch=5"])
    with pytest.raises(ValueError, match=r"override 'ablations=maybe': ablations='maybe': expected true or false"):
        apply_overrides(GridConfig(), ["ablations=maybe"])
    with pytest.raises(ValueError, match=r"GridConfig.protocol: expected one of \('stratified', 'speaker', 'emobox'\), "
                                         r"got 'loso'"):
        apply_overrides(GridConfig(), ["protocol=loso"])
    with pytest.raises(ValueError, match=r"protocol 'emobox' needs the split files' folder \(splits / --splits DIR\)"):
        apply_overrides(GridConfig(), ["protocol=emobox"])
    with pytest.raises(ValueError, match=r"metrics: unknown \['wer'\]; known: wa, acc"):
        apply_overrides(GridConfig(), ["metrics=wa,wer"])
    assert apply_overrides(GridConfig(), ["metrics=wa,ua,f1"]).metrics == ("wa", "ua", "f1")
    with pytest.raises(ValueError, match=r"override 'folds': expected key=value"):
        apply_overrides(GridConfig(), ["folds"])


def test_depth_three_overrides_reach_the_sinkhorn_options():
    config = apply_overrides(GridConfig(), ["model.sinkhorn.epsilon=0.1", "model.sinkhorn.threshold=none",
                                            "model.sinkhorn.gradient=implicit", "model.filters=32,64"])
    assert config.model.sinkhorn == SinkhornOptions(epsilon=0.1, threshold=None, gradient="implicit")
    assert config.model.filters == (32, 64) and isinstance(config.model, ModelConfig)
    assert model_config(config, 4).sinkhorn.epsilon == 0.1  # what every neural cell trains with


@pytest.mark.parametrize("override, message", [
    ("model.sinkhorn.epsilom=0.1", "override 'model.sinkhorn.epsilom=0.1': unknown key 'epsilom' in model.sinkhorn; "
                                   "known: epsilon, max_iterations, threshold, gradient, ridge"),
    ("train.patince=3", "override 'train.patince=3': unknown key 'patince' in train; known: epochs, batch_size, "),
    ("model.sinkhorn=3", "override 'model.sinkhorn=3': model.sinkhorn is a group of settings; set one of "
                         "model.sinkhorn.epsilon, "),
    ("folds.k=3", "override 'folds.k=3': folds is an int, with no field 'k'"),
    ("model.sinkhorn.gradient=fast", "override 'model.sinkhorn.gradient=fast': model.sinkhorn.gradient='fast': "
                                     "expected one of 'implicit', 'unroll', 'stop'"),
    ("model.sinkhorn.epsilon=-1", "override 'model.sinkhorn.epsilon=-1': model.sinkhorn.epsilon='-1': "
                                  "SinkhornOptions.epsilon must be a finite number > 0, got -1.0"),
    ("train.learning_rate=inf", "override 'train.learning_rate=inf': train.learning_rate='inf': expected a finite "
                                "float, not inf"),
    ("model.sinkhorn.epsilon=inf", "override 'model.sinkhorn.epsilon=inf': model.sinkhorn.epsilon='inf': expected "
                                   "a finite float, not inf"),
    ("val_fraction=nan", "override 'val_fraction=nan': val_fraction='nan': expected a finite float, not nan"),
    ("val_fraction=1", "overrides 'val_fraction=1': GridConfig.val_fraction: expected a number in [0, 1), got 1.0"),
    ("val_policy=rows", "override 'val_policy=rows': val_policy='rows': expected one of 'auto', 'speaker', "
                        "'stratified', 'valid', 'none'"),
    ("train.monitor=ua", "override 'train.monitor=ua': train.monitor='ua': expected one of 'loss', 'accuracy', "
                         "'uar', 'none'"),
    ("val_policy=speaker", "overrides 'val_policy=speaker': GridConfig: val_policy 'speaker' holds out validation "
                           "rows that train.monitor='none' (no early stopping) never uses; set val_policy=auto or "
                           "none, or a monitor"),
    ("train.patience=soon", "override 'train.patience=soon': train.patience='soon': expected an int or none"),
    ("train.seeds=1", "override 'train.seeds=1': train.seeds cannot be set: set the training seeds with seeds=..."),
    ("model.num_classes=3", "override 'model.num_classes=3': model.num_classes cannot be set: it is each corpus's "),
])
def test_a_bad_override_is_refused_in_one_line_naming_the_key(override, message):
    with pytest.raises(ValueError) as refused:
        apply_overrides(GridConfig(), [override])
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_non_finite_settings_in_a_config_file_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"^TrainConfig.learning_rate must be a finite number > 0, got inf$"):
        GridConfig(train={"learning_rate": float("inf")})
    with pytest.raises(ValueError, match=r"^SinkhornOptions.epsilon must be a finite number > 0, got nan$"):
        SinkhornOptions(epsilon=float("nan"))


def test_config_files_give_train_and_model_typed_or_as_dicts(tmp_path):
    assert GridConfig(train={"epochs": 5}, model={"hidden": 8}).train == TrainConfig(epochs=5)
    assert GridConfig(model={"sinkhorn": {"epsilon": 0.2}}).model.sinkhorn.epsilon == 0.2
    with pytest.raises(ValueError, match=r"GridConfig.train: unknown fields \['epoch'\]; known: epochs, "):
        GridConfig(train={"epoch": 5})
    with pytest.raises(ValueError, match="GridConfig.train: set the seeds with GridConfig.seeds, not train.seeds"):
        GridConfig(train=TrainConfig(seeds=(1, 2)))


def test_config_files_load_and_record_their_source(tmp_path):
    config, provenance = load_config(REPO / "experiments" / "configs" / "paper.py", ["folds=4"])
    assert config.folds == 4 and config.protocol == "stratified" and config.train.epochs == 50
    assert provenance["overrides"] == ["folds=4"]
    assert provenance["source"] == (REPO / "experiments" / "configs" / "paper.py").read_text()
    for name in ("demo.py", "emodb_classical.py", "beyond.py"):
        assert isinstance(load_config(REPO / "experiments" / "configs" / name)[0], GridConfig)
    assert load_config("demo")[0] == load_config(REPO / "experiments" / "configs" / "demo.py")[0]
    assert load_config(None)[0] == load_config("paper")[0] == config.__class__(**{**vars(config), "folds": 5})
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no get_config"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="config file not found: nope .*packaged configs: beyond, demo, "
                                                "emodb_classical, paper"):
        load_config("nope")


def test_beyond_pairs_the_papers_ssam_sizes_with_whisper_beside_the_papers_pairs():
    from parrot_jax.cells import pairs_for

    config = load_config("beyond")[0]
    assert config == load_config(REPO / "experiments" / "configs" / "beyond.py")[0]
    assert (config.protocol, config.folds, config.train.epochs) == ("stratified", 5, 50)  # the paper's grid
    pairs, note = pairs_for(config.encoders)
    assert note is None
    for mamba in ("ssam-tiny", "ssam-small", "ssam-base"):
        wanted = {(mamba, "wavlm-base"), (mamba, "mms-1b"), (mamba, "whisper-tiny"), (mamba, "whisper-large-v3")}
        assert wanted <= set(pairs)
    assert ("wavlm-base", "hubert-base") in pairs and ("wavlm-base", "whisper-large-v3") in pairs


def test_fields_checked_together_may_be_overridden_in_any_order():
    """`parrot grid --protocol emobox --splits DIR`: the shorthands become protocol=..., then splits=...;
    GridConfig's check that ties the two runs once on the result, not after each override."""
    for overrides in (["protocol=emobox", "splits=data/emobox"], ["splits=data/emobox", "protocol=emobox"]):
        config = apply_overrides(GridConfig(), overrides)
        assert (config.protocol, config.splits) == ("emobox", "data/emobox")
    with pytest.raises(ValueError, match=r"overrides 'splits=x': GridConfig: protocol 'emobox' needs the split files"):
        apply_overrides(GridConfig(), ["splits=x"])


@pytest.mark.parametrize("source,message", [
    ('def get_config():\n    raise RuntimeError("boom from config")\n',
     r"RuntimeError in get_config\(\): boom from config"),
    ("get_config = 5\n", r"get_config is 5, not a function"),
    ("def get_config():\n    return get_config()\n", r"RecursionError in get_config\(\): maximum recursion depth"),
    ("import sys\nsys.exit(0)\n", r"sys.exit\(0\) called while importing it"),
    ("def get_config():\n    return 3\n", r"get_config\(\) returned int, expected GridConfig"),
    ("from parrot_jax.config import GridConfig\ndef get_config():\n    return GridConfig(seeds=(0, -1))\n",
     r"ValueError in get_config\(\): GridConfig.seeds: expected ints in \[0, 2\*\*32\), got -1"),
])
def test_a_config_file_that_fails_is_one_error_naming_the_file(tmp_path, source, message):
    path = tmp_path / "config.py"
    path.write_text(source)
    with pytest.raises(ValueError) as refused:
        load_config(path)
    assert re.match(rf"config file {re.escape(str(path))}: {message}", str(refused.value)), refused.value
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("override,key", [("seeds=-1", "seeds"), ("seeds=0,-3", "seeds"),
                                          ("split_seed=-1", "split_seed"), ("split_seed=4294967296", "split_seed")])
def test_negative_seeds_are_refused_naming_the_key_and_the_config_file(override, key):
    with pytest.raises(ValueError) as refused:
        load_config("demo", [override])
    text = str(refused.value)
    assert text.startswith(f"config file {REPO / 'parrot_jax' / 'configs' / 'demo.py'}: overrides '{override}': "
                           f"GridConfig.{key}: expected ints in [0, 2**32), got "), text
