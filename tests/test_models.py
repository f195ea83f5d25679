"""parrot_jax.models: shapes and parameter counts at the paper's sizes, the PARROT forward pass against a
numpy reference, padding invariance, the two transport forms, dropout places, errors, learnability."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from parrot_jax.models import (
    MODEL_KINDS,
    ModelConfig,
    OTFusion,
    _max_pool,
    build_model,
    num_inputs,
    penultimate_features,
)
from parrot_jax.ot import SinkhornOptions, normalized_cost, transport_plan

PAPER_DIMS = (768, 960, 1280, 1920, 3840)
TINY = ModelConfig(num_classes=3, filters=(4, 6), latent_dim=5, hidden=8)
TINY_DIMS = (21, 16)


def _init(kind: str, config: ModelConfig, dims: tuple[int, ...], batch: int = 6, seed: int = 0):
    module = build_model(kind, config)
    inputs = tuple(
        jax.random.normal(jax.random.PRNGKey(100 + seed + i), (batch, d)) for i, d in enumerate(dims[: num_inputs(kind)])
    )
    keys = {"params": jax.random.PRNGKey(seed), "dropout": jax.random.PRNGKey(seed + 1)}
    return module, module.init(keys, inputs, mask=None, train=False)["params"], inputs


# ---- parameter counts, by formula ---------------------------------------------------------------------


def _conv_length(dim: int) -> int:
    """Keras reading: Conv1D 'valid' (k=3) shortens by 2, MaxPooling1D(2) floors the halving; twice."""
    return ((dim - 2) // 2 - 2) // 2


def _expected_count(kind: str, dims: tuple[int, ...], classes: int) -> int:
    convs = (3 * 1 * 64 + 64) + (3 * 64 * 128 + 128)
    branch = lambda d: convs + _conv_length(d) * 128 * 120 + 120  # noqa: E731
    head = lambda width: width * 128 + 128 + 128 * classes + classes  # noqa: E731
    if kind == "fcn":
        return head(dims[0])
    if kind == "cnn":
        return convs + head(_conv_length(dims[0]) * 128)
    fused = {"parrot": 120 + 4 * 120, "concat": 2 * 120, "hadamard": 120, "ot": 4 * 120}[kind]
    return branch(dims[0]) + branch(dims[1]) + head(fused)


def _paper_cases():
    for kind in MODEL_KINDS:
        if num_inputs(kind) == 1:
            yield from ((kind, (d,)) for d in PAPER_DIMS)
        else:
            yield from ((kind, pair) for pair in itertools.combinations_with_replacement(PAPER_DIMS, 2))


@pytest.mark.parametrize("kind, dims", list(_paper_cases()))
def test_shapes_and_parameter_counts_at_paper_sizes(kind, dims):
    config = ModelConfig(num_classes=7)
    module = build_model(kind, config)
    inputs = tuple(jax.ShapeDtypeStruct((32, d), jnp.float32) for d in dims)
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    params = jax.eval_shape(lambda x: module.init(keys, x, mask=None, train=False), inputs)["params"]
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == _expected_count(kind, dims, 7)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    mask = jax.ShapeDtypeStruct((32,), jnp.bool_)
    out = jax.eval_shape(lambda p, x, m: module.apply({"params": p}, x, mask=m, train=False), params, inputs, mask)
    assert (out.shape, out.dtype) == ((32, 7), jnp.float32)


# ---- PARROT's forward pass against an independent numpy reference -----------------------------------


def _np_branch(p: dict, x: np.ndarray) -> np.ndarray:
    h = x[:, :, None]
    for name in ("conv0", "conv1"):
        w, b = (np.asarray(p["conv"][name][k], np.float64) for k in ("kernel", "bias"))
        k = w.shape[0]
        out = sum(np.einsum("blc,co->blo", h[:, i : h.shape[1] - k + 1 + i], w[i]) for i in range(k)) + b
        out = np.maximum(out, 0)
        half = out.shape[1] // 2
        h = np.maximum(out[:, 0 : 2 * half : 2], out[:, 1 : 2 * half : 2])
    flat = h.reshape(h.shape[0], -1)
    return flat @ np.asarray(p["project"]["kernel"], np.float64) + np.asarray(p["project"]["bias"], np.float64)


@pytest.mark.parametrize("transport", ["plain", "barycentric"])
def test_parrot_matches_numpy_reference(transport):
    config = ModelConfig(num_classes=3, filters=(4, 6), latent_dim=5, hidden=8, transport=transport)
    module, params, inputs = _init("parrot", config, TINY_DIMS)
    x_p, x_q = (np.asarray(x, np.float64) for x in inputs)
    r_p, r_q = _np_branch(params["branch_p"], x_p), _np_branch(params["branch_q"], x_q)
    plan = np.asarray(transport_plan(normalized_cost(jnp.asarray(r_p, jnp.float32), jnp.asarray(r_q, jnp.float32))))
    plan = plan * (len(plan) if transport == "barycentric" else 1.0)
    fused = np.concatenate([r_p * r_q, plan @ r_p, r_q, plan.T @ r_q, r_p], axis=1)
    head = params["head"]
    hidden = np.maximum(fused @ np.asarray(head["hidden"]["kernel"]) + np.asarray(head["hidden"]["bias"]), 0)
    expected = hidden @ np.asarray(head["logits"]["kernel"]) + np.asarray(head["logits"]["bias"])
    logits = module.apply({"params": params}, inputs, mask=None, train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(penultimate_features(module, params, inputs), hidden, rtol=1e-4, atol=1e-5)


def test_max_pool_equals_flax_max_pool():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 11, 4))
    np.testing.assert_array_equal(_max_pool(x, 2), nn.max_pool(x, (2,), strides=(2,), padding="VALID"))
    np.testing.assert_array_equal(_max_pool(x, 3), nn.max_pool(x, (3,), strides=(3,), padding="VALID"))


# ---- padding, transport forms, dropout --------------------------------------------------------------


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_padding_rows_never_change_valid_rows(kind):
    module, params, inputs = _init(kind, TINY, TINY_DIMS, batch=5)
    apply = jax.jit(lambda x, m: module.apply({"params": params}, x, mask=m, train=False))
    alone = apply(inputs, jnp.ones(5, bool))
    padded = tuple(
        jnp.concatenate([x, 1e3 * jax.random.normal(jax.random.PRNGKey(7 + i), (3, x.shape[1]))])
        for i, x in enumerate(inputs)
    )
    mask = jnp.arange(8) < 5
    out = apply(padded, mask)
    np.testing.assert_allclose(out[:5], alone, atol=1e-5)


def test_barycentric_is_plain_times_batch_size():
    r_p, r_q = (jax.random.normal(jax.random.PRNGKey(i), (6, 5)) for i in (1, 2))
    mask = jnp.arange(6) < 4
    plain = OTFusion("plain").apply({}, r_p, r_q, mask)
    bary = OTFusion("barycentric").apply({}, r_p, r_q, mask)
    transported = np.r_[0:5, 10:15]  # T_pq, T_qp in [T_pq, R_q, T_qp, R_p]
    np.testing.assert_allclose(bary[:, transported], 4 * plain[:, transported], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bary[:, np.r_[5:10, 15:20]], plain[:, np.r_[5:10, 15:20]])
    # rows of n_valid * Gamma are barycentric weights: they sum to 1
    plan = transport_plan(normalized_cost(r_p, r_q, mask), mask)
    np.testing.assert_allclose((4 * plan).sum(1)[:4], 1.0, atol=1e-3)
    # a single valid row: Gamma = [[1]], both forms agree
    one = jnp.arange(6) < 1
    np.testing.assert_allclose(OTFusion("barycentric").apply({}, r_p, r_q, one)[0], OTFusion("plain").apply({}, r_p, r_q, one)[0])


def test_barycentric_parrot_equals_plain_parrot_with_rescaled_head():
    """The head's first Dense is linear in T: barycentric with W equals plain with W's T-rows times B."""
    bary_cfg = ModelConfig(num_classes=3, filters=(4, 6), latent_dim=5, hidden=8, transport="barycentric")
    module_b, params, inputs = _init("parrot", bary_cfg, TINY_DIMS)
    module_p = build_model("parrot", TINY)
    batch = inputs[0].shape[0]
    kernel = params["head"]["hidden"]["kernel"]
    scale = jnp.ones(kernel.shape[0]).at[5:10].set(batch).at[15:20].set(batch)  # [HP, T_pq, R_q, T_qp, R_p]
    rescaled = jax.tree.map(lambda x: x, params)
    rescaled["head"]["hidden"]["kernel"] = kernel * scale[:, None]
    np.testing.assert_allclose(
        module_p.apply({"params": rescaled}, inputs), module_b.apply({"params": params}, inputs), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("places", [(), ("head",), ("latent",), ("conv",)])
def test_dropout_places(places):
    config = ModelConfig(num_classes=3, filters=(4, 6), latent_dim=5, hidden=8, dropout_places=places)
    module, params, inputs = _init("concat", config, TINY_DIMS)
    evaluated = module.apply({"params": params}, inputs, train=False)
    trained = module.apply({"params": params}, inputs, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert np.array_equal(evaluated, trained) == (places == ())


# ---- degenerate input: no NaN, forward or gradient ------------------------------------------------------


@pytest.mark.parametrize("gradient", ["implicit", "unroll", "stop"])
def test_parrot_degenerate_input_has_finite_loss_and_gradient(gradient):
    config = ModelConfig(num_classes=3, filters=(4, 6), latent_dim=5, hidden=8, sinkhorn=SinkhornOptions(gradient=gradient))
    module, params, _ = _init("parrot", config, TINY_DIMS)
    same = (jnp.ones((6, TINY_DIMS[0])), jnp.ones((6, TINY_DIMS[1])))  # every row equal: max distance 0
    labels = jnp.arange(6) % 3

    def loss(p):
        logits = module.apply({"params": p}, same, mask=jnp.arange(6) < 4, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# ---- learnability -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_model_learns_a_separable_problem(kind):
    """4 classes, class means apart in both embeddings; held-out accuracy far above chance (0.25)."""
    rng = np.random.default_rng(0)
    n, classes = 192, 4
    labels = rng.integers(0, classes, n)
    inputs = tuple(
        (rng.normal(size=(classes, d))[labels] + 1.5 * rng.normal(size=(n, d))).astype(np.float32) for d in (24, 16)
    )[: num_inputs(kind)]
    config = ModelConfig(num_classes=classes, filters=(8, 8), latent_dim=8, hidden=16, dropout_rate=0.1)
    module = build_model(kind, config)
    params = module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, tuple(x[:32] for x in inputs))["params"]
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, state, batch, y, key):
        def loss(p):
            logits = module.apply({"params": p}, batch, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    train = 160
    for epoch in range(15):
        for start in range(0, train, 32):
            batch = tuple(jnp.asarray(x[start : start + 32]) for x in inputs)
            key = jax.random.PRNGKey(1000 * epoch + start)
            params, state = step(params, state, batch, jnp.asarray(labels[start : start + 32]), key)
    logits = module.apply({"params": params}, tuple(jnp.asarray(x[train:]) for x in inputs))
    accuracy = float(np.mean(np.argmax(logits, 1) == labels[train:]))
    assert accuracy >= 0.7, f"{kind}: held-out accuracy {accuracy:.2f}"


# ---- bad input ----------------------------------------------------------------------------------------


def test_bad_inputs_are_named():
    module, params, inputs = _init("parrot", TINY, TINY_DIMS)
    with pytest.raises(ValueError, match=r"PARROT: inputs must be a tuple of 2 array\(s\) \[B, D\], got tuple of length 1"):
        module.apply({"params": params}, inputs[:1])
    with pytest.raises(ValueError, match=r"PARROT: mask must be bool of shape \(6,\), got bool \(5,\)"):
        module.apply({"params": params}, inputs, mask=jnp.ones(5, bool))
    with pytest.raises(ValueError, match=r"PARROT: inputs must share the batch size"):
        module.apply({"params": params}, (inputs[0], inputs[1][:4]))
    with pytest.raises(ValueError, match=r"ConvStack: an embedding of length 8 is too short for 2 conv"):
        build_model("cnn", TINY).init({"params": jax.random.PRNGKey(0)}, (jnp.ones((2, 8)),))
    with pytest.raises(ValueError, match=r"unknown model kind 'svm'; known: fcn, cnn, parrot, concat, hadamard, ot"):
        build_model("svm", TINY)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=1), "ModelConfig.num_classes must be >= 2, got 1"),
        (dict(conv_padding="valid"), "ModelConfig.conv_padding must be one of ('VALID', 'SAME'), got 'valid'"),
        (dict(dropout_rate=1.0), "ModelConfig.dropout_rate must be in [0, 1), got 1.0"),
        (dict(dropout_places=("input",)), "ModelConfig.dropout_places: unknown ['input']; known: ('conv', 'latent', 'head')"),
        (dict(transport="mean"), "ModelConfig.transport must be one of ('plain', 'barycentric'), got 'mean'"),
        (dict(latent_dim=0), "ModelConfig.latent_dim must be an int >= 1, got 0"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError) as err:
        ModelConfig(**{"num_classes": 3, **kwargs})
    assert str(err.value) == message


# ---- learned layer weights (layer_mix="softmax") ------------------------------------------------------


@pytest.mark.parametrize("kind", ["fcn", "cnn", "concat"])
def test_one_hot_layer_weights_give_exactly_the_fixed_layer_model(kind):
    """Stacked inputs [B, L+1, D] with softmax weights one-hot on layer k (logits -inf elsewhere) give the
    same logits, bit for bit, as the fixed-layer model (layer_mix="none", the same other params) on layer k."""
    layers, k, batch = 4, 2, 6
    mixed_config = ModelConfig(**{**TINY.__dict__, "layer_mix": "softmax"})
    fixed, params, _ = _init(kind, TINY, TINY_DIMS, batch)
    stacked = tuple(jax.random.normal(jax.random.PRNGKey(7 + i), (batch, layers, d))
                    for i, d in enumerate(TINY_DIMS[: num_inputs(kind)]))
    mixed = build_model(kind, mixed_config)
    mixed_params = mixed.init(jax.random.PRNGKey(0), stacked)["params"]
    # zeros at initialisation: equal weights, the mean of the layers (s3prl's Featurizer)
    assert all(np.array_equal(mixed_params[f"layer_mix_{i}"]["weights"], np.zeros(layers)) for i in range(len(stacked)))
    one_hot = jnp.full((layers,), -jnp.inf).at[k].set(0.0)
    mixed_params = {**params, **{f"layer_mix_{i}": {"weights": one_hot} for i in range(len(stacked))}}
    mask = jnp.arange(batch) < batch - 1
    got = jax.jit(mixed.apply)({"params": mixed_params}, stacked, mask=mask)
    want = jax.jit(fixed.apply)({"params": params}, tuple(x[:, k] for x in stacked), mask=mask)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the weights are learned: the loss has a gradient with respect to them
    grads = jax.jit(jax.grad(lambda p: mixed.apply({"params": p}, stacked).sum()))(
        mixed.init(jax.random.PRNGKey(1), stacked)["params"])
    assert float(jnp.abs(grads["layer_mix_0"]["weights"]).sum()) > 0


def test_stacked_input_refused_without_layer_mix():
    fixed, params, _ = _init("fcn", TINY, TINY_DIMS)
    with pytest.raises(ValueError, match=r"FCNHead: inputs\[0\] holds every layer \(6, 3, 21\); a model takes stacked "
                                         r"layers only with ModelConfig.layer_mix='softmax'"):
        fixed.apply({"params": params}, (jnp.zeros((6, 3, 21)),))
    with pytest.raises(ValueError, match=r"ModelConfig.layer_mix must be one of \('none', 'softmax'\), got 'mean'"):
        ModelConfig(num_classes=3, layer_mix="mean")


def test_model_config_from_dict_names_an_unknown_field():
    with pytest.raises(ValueError, match=r"SinkhornOptions: unknown fields \['epsilom'\]; known: epsilon"):
        ModelConfig.from_dict({"num_classes": 4, "sinkhorn": {"epsilom": 0.1}})
    with pytest.raises(ValueError, match=r"ModelConfig: unknown fields \['dropout'\]; known: num_classes"):
        ModelConfig.from_dict({"num_classes": 4, "dropout": 0.1})
    config = ModelConfig(num_classes=4)
    assert ModelConfig.from_dict(config.to_dict()) == config
