"""parrot_jax.conv: Conv1D equals flax's nn.Conv (parameters and outputs); conv1d's custom gradient equals
JAX's own; under vmap over members both batching rules give each member's own numbers, and "loop" really
avoids the grouped convolution it exists to avoid."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from parrot_jax.conv import Conv1D, conv1d, matmul_conv1d, resolve_rule

X = jax.random.normal(jax.random.PRNGKey(1), (4, 29, 3))
KERNEL = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 5))


def _lax_conv(x, kernel, padding):
    return lax.conv_general_dilated(x, kernel, (1,), padding, dimension_numbers=("NWC", "WIO", "NWC"))


def _loss(conv, x, kernel, padding, rule=None):
    args = (x, kernel, padding) if rule is None else (x, kernel, padding, rule)
    return jnp.sum(jnp.sin(conv(*args)) * jnp.arange(1.0, 6.0))


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv1d_module_is_nn_conv(padding):
    ours, flax_conv = Conv1D(5, 3, padding), nn.Conv(5, (3,), padding=padding)
    p_ours, p_flax = ours.init(jax.random.PRNGKey(0), X), flax_conv.init(jax.random.PRNGKey(0), X)
    assert jax.tree_util.tree_structure(p_ours) == jax.tree_util.tree_structure(p_flax)
    for a, b in zip(jax.tree_util.tree_leaves(p_ours), jax.tree_util.tree_leaves(p_flax)):
        np.testing.assert_array_equal(a, b)
    p = jax.tree_util.tree_map(lambda v: v + 0.25, p_flax)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(p, X), flax_conv.apply(p, X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rule", ["loop", "grouped"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_gradient_equals_jax_autodiff(padding, rule):
    ours = jax.grad(_loss, argnums=(1, 2))(conv1d, X, KERNEL, padding, rule)
    ref = jax.grad(_loss, argnums=(1, 2))(_lax_conv, X, KERNEL, padding)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rule", ["loop", "grouped"])
def test_members_under_vmap_equal_each_member_alone(rule):
    members = 3
    xs = jnp.stack([X * (m + 1) for m in range(members)])
    kernels = jnp.stack([KERNEL - m for m in range(members)])
    value_and_grad = jax.value_and_grad(_loss, argnums=(1, 2))
    batched = jax.jit(jax.vmap(lambda x, k: value_and_grad(conv1d, x, k, "VALID", rule)))(xs, kernels)
    for m in range(members):
        alone = value_and_grad(_lax_conv, xs[m], kernels[m], "VALID")
        np.testing.assert_allclose(batched[0][m], alone[0], rtol=1e-6)
        for a, b in zip(batched[1], alone[1]):
            np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule, grouped", [("loop", False), ("grouped", True)])
def test_loop_rule_has_no_grouped_convolution(rule, grouped):
    """The point of "loop": XLA:CPU's slow grouped convolution (feature_group_count > 1) never appears,
    forward or backward; JAX's own rule ("grouped") does produce it."""
    fn = jax.vmap(jax.grad(lambda x, k: _loss(conv1d, x, k, "VALID", rule), argnums=(0, 1)))
    members = jnp.stack([X, X]), jnp.stack([KERNEL, KERNEL])
    text = jax.jit(fn).lower(*members).as_text()
    groups = [int(g) for g in re.findall(r"feature_group_count = (\d+)", text)]
    assert text.count("convolution") >= 3  # forward, d/dx, d/dkernel for each member
    assert any(g > 1 for g in groups) == grouped, groups


def test_resolve_rule():
    one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    assert resolve_rule("auto") == ("loop" if one_cpu else "matmul")
    assert resolve_rule("grouped") == "grouped"
    with pytest.raises(ValueError, match="must be one of .*'loop'.* got 'looped'"):
        conv1d(X, KERNEL, "VALID", "looped")


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_matmul_conv_equals_lax_conv(padding):
    """The shifted-view matrix product: values and gradients (input and kernel) equal
    `lax.conv_general_dilated`'s within 1e-5, for an odd and an even kernel width."""
    for kernel in (KERNEL, jax.random.normal(jax.random.PRNGKey(3), (4, 3, 5))):
        np.testing.assert_allclose(matmul_conv1d(X, kernel, padding), _lax_conv(X, kernel, padding), rtol=1e-5, atol=1e-5)
        ours = jax.grad(_loss, argnums=(1, 2))(matmul_conv1d, X, kernel, padding)
        ref = jax.grad(_loss, argnums=(1, 2))(_lax_conv, X, kernel, padding)
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_matmul_conv_under_vmap_is_one_batched_matrix_product():
    """vmapped over members (each its own kernel), the forward and both gradients contain no convolution
    at all, only dot products with the member axis as a batch dimension; values equal each member alone."""
    members = 3
    xs = jnp.stack([X * (1 + 0.25 * m) for m in range(members)])
    kernels = jnp.stack([KERNEL * (1 - 0.25 * m) for m in range(members)])
    fn = jax.vmap(jax.value_and_grad(lambda x, k: _loss(matmul_conv1d, x, k, "VALID"), argnums=(0, 1)))
    text = jax.jit(fn).lower(xs, kernels).as_text()
    assert "stablehlo.convolution" not in text
    dots = re.findall(r"stablehlo.dot_general .*", text)
    assert len(dots) == 3 and all("batching_dims = [0] x [0]" in d for d in dots), dots  # forward, d/dx, d/dkernel
    batched = jax.jit(fn)(xs, kernels)
    for m in range(members):
        alone = jax.value_and_grad(_loss, argnums=(1, 2))(_lax_conv, xs[m], kernels[m], "VALID")
        np.testing.assert_allclose(batched[0][m], alone[0], rtol=1e-5)
        for a, b in zip(batched[1], alone[1]):
            np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-5)


def test_matmul_conv_rejects_unknown_padding():
    with pytest.raises(ValueError, match="padding must be 'VALID' or 'SAME', got 'FULL'"):
        matmul_conv1d(X, KERNEL, "FULL")
