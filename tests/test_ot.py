"""parrot_jax.ot: the cost of eq. (1), the Sinkhorn plan (ott-jax), masking, gradients in every mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parrot_jax.ot import GRADIENT_MODES, SinkhornOptions, normalized_cost, transport_plan

B, D = 12, 7
N_VALID = 8
MASK = jnp.arange(B) < N_VALID


def _rows(seed: int, scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return scale * jax.random.normal(k1, (B, D)), scale * jax.random.normal(k2, (B, D))


def _garbage_padding(r: jax.Array, seed: int) -> jax.Array:
    """r with its padding rows replaced by large unrelated values."""
    junk = 1e3 * jax.random.normal(jax.random.PRNGKey(seed), r.shape)
    return jnp.where(MASK[:, None], r, junk)


# ---- the cost (eq. 1) -------------------------------------------------------------------------------


def test_normalized_cost_matches_numpy_reference():
    r_p, r_q = _rows(0)
    a, b = np.asarray(r_p, np.float64), np.asarray(r_q, np.float64)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(normalized_cost(r_p, r_q), dist / dist.max(), rtol=1e-5, atol=1e-6)


def test_normalized_cost_masked_uses_valid_pairs_only():
    r_p, r_q = _rows(1)
    cost = normalized_cost(_garbage_padding(r_p, 2), _garbage_padding(r_q, 3), MASK)
    np.testing.assert_allclose(cost[:N_VALID, :N_VALID], normalized_cost(r_p[:N_VALID], r_q[:N_VALID]), atol=1e-6)
    assert float(jnp.max(cost)) == pytest.approx(1.0)
    assert not np.any(np.asarray(cost)[N_VALID:, :]) and not np.any(np.asarray(cost)[:, N_VALID:])


def test_normalized_cost_degenerate_is_zero_with_zero_gradient():
    same = jnp.ones((B, D))
    assert not np.any(np.asarray(normalized_cost(same, same)))
    grad = jax.grad(lambda x: jnp.sum(normalized_cost(x, x) ** 2 + normalized_cost(x, x)))(same)
    assert np.all(np.isfinite(grad))


# ---- the plan ---------------------------------------------------------------------------------------


def _assert_entropic_plan(plan: jax.Array, cost: jax.Array, epsilon: float, atol: float) -> None:
    """Gamma is the entropic OT plan of `cost`: log Gamma + C / epsilon = f_i + g_j (rank-one additive),
    which with fixed marginals determines Gamma uniquely."""
    m = np.log(np.asarray(plan, np.float64)) + np.asarray(cost, np.float64) / epsilon
    centred = m - m.mean(0, keepdims=True) - m.mean(1, keepdims=True) + m.mean()
    assert np.abs(centred).max() < atol


@pytest.mark.parametrize("threshold, inner", [(1e-3, 10), (1e-3, 1), (None, 10)])
def test_plan_has_uniform_marginals_and_entropic_form(threshold, inner):
    options = SinkhornOptions(threshold=threshold, max_iterations=2000 if threshold else 300, inner_iterations=inner)
    cost = normalized_cost(*_rows(4))
    plan = transport_plan(cost, None, options)
    tol = 1e-3 if threshold else 1e-4
    assert np.abs(np.asarray(plan.sum(1)) - 1 / B).sum() < tol
    assert np.abs(np.asarray(plan.sum(0)) - 1 / B).sum() < tol
    _assert_entropic_plan(plan, cost, options.epsilon, atol=1e-3)
    assert options.solver().inner_iterations == (inner if threshold else 1)


def test_plan_with_padding_equals_plan_of_valid_rows_alone():
    r_p, r_q = _rows(5)
    plan = transport_plan(normalized_cost(_garbage_padding(r_p, 6), _garbage_padding(r_q, 7), MASK), MASK)
    alone = transport_plan(normalized_cost(r_p[:N_VALID], r_q[:N_VALID]))
    np.testing.assert_allclose(plan[:N_VALID, :N_VALID], alone, atol=1e-7)
    assert not np.any(np.asarray(plan)[N_VALID:, :]) and not np.any(np.asarray(plan)[:, N_VALID:])
    assert np.abs(np.asarray(plan.sum(0)[:N_VALID]) - 1 / N_VALID).sum() < 1e-3
    assert np.abs(np.asarray(plan.sum(1)[:N_VALID]) - 1 / N_VALID).sum() < 1e-3


def test_plan_degenerate_is_uniform_and_all_padding_is_finite():
    plan = transport_plan(jnp.zeros((B, B)))
    np.testing.assert_allclose(plan, np.full((B, B), 1 / B**2), rtol=1e-5)
    plan = transport_plan(normalized_cost(*_rows(8)), jnp.zeros((B,), bool))
    assert np.all(np.isfinite(plan))


# ---- gradients --------------------------------------------------------------------------------------


def _loss(options: SinkhornOptions):
    def loss(r_p, r_q, mask):
        plan = transport_plan(normalized_cost(r_p, r_q, mask), mask, options)
        valid = (jnp.ones(r_p.shape[0], bool) if mask is None else mask)[:, None]
        return jnp.sum(jnp.where(valid, jnp.tanh(plan @ r_p) + (plan.T @ r_q) ** 2, 0.0))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


ALL = jnp.ones((B,), bool)
CASES = {  # name: (r_p, r_q, mask); stacked and vmapped so that each mode compiles once
    "random": (*_rows(9), ALL),
    "padded": (*_rows(10), MASK),
    "large_rows": (*_rows(11, scale=100.0), ALL),
    "degenerate": (jnp.ones((B, D)), jnp.ones((B, D)), ALL),
    "degenerate_padded": (jnp.ones((B, D)), jnp.ones((B, D)), MASK),
    "identical_clouds": (_rows(12)[0], _rows(12)[0], ALL),
    "all_padding": (*_rows(13), jnp.zeros((B,), bool)),
}


@pytest.mark.parametrize(
    "gradient, threshold", [("implicit", 1e-3), ("unroll", 1e-3), ("unroll", None), ("stop", 1e-3)]
)
def test_gradients_finite_in_every_mode(gradient, threshold):
    grad = _loss(SinkhornOptions(gradient=gradient, threshold=threshold, max_iterations=2000 if threshold else 100))
    stacked = [jnp.stack(parts) for parts in zip(*CASES.values())]
    g_p, g_q = jax.vmap(grad)(*stacked)
    for i, name in enumerate(CASES):
        assert np.all(np.isfinite(g_p[i])) and np.all(np.isfinite(g_q[i])), f"non-finite gradient: {gradient}, {name}"


@pytest.mark.slow
@pytest.mark.parametrize("gradient", GRADIENT_MODES)
def test_gradients_ignore_padding(gradient):
    grad = _loss(SinkhornOptions(gradient=gradient))
    r_p, r_q = _rows(13)
    g_pad = grad(_garbage_padding(r_p, 14), _garbage_padding(r_q, 15), MASK)
    g_alone = grad(r_p[:N_VALID], r_q[:N_VALID], None)
    for padded, alone in zip(g_pad, g_alone):
        np.testing.assert_allclose(padded[:N_VALID], alone, atol=1e-5)
        assert not np.any(np.asarray(padded)[N_VALID:])


@pytest.mark.slow
def test_implicit_and_unrolled_gradients_agree_at_convergence():
    """Both approximate d(converged plan); run tight so that they must agree (implicit has a 1e-2 ridge)."""
    r_p, r_q = _rows(16)
    tight = dict(threshold=1e-6, max_iterations=20000)
    g_unroll = _loss(SinkhornOptions(gradient="unroll", **tight))(r_p, r_q, None)
    g_implicit = _loss(SinkhornOptions(gradient="implicit", ridge=1e-6, **tight))(r_p, r_q, None)
    for u, i in zip(g_unroll, g_implicit):
        np.testing.assert_allclose(i, u, atol=2e-3 * float(jnp.abs(u).max()))


def test_stop_gradient_treats_plan_as_constant():
    r_p, r_q = _rows(17)
    options = SinkhornOptions(gradient="stop")
    fixed = transport_plan(normalized_cost(r_p, r_q), None, options)
    g_stop = jax.grad(lambda x: jnp.sum(transport_plan(normalized_cost(x, r_q), None, options) @ x))(r_p)
    g_const = jax.grad(lambda x: jnp.sum(fixed @ x))(r_p)
    np.testing.assert_allclose(g_stop, g_const, atol=1e-6)


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epsilon=0.0), "SinkhornOptions.epsilon must be a finite number > 0, got 0.0"),
        (dict(epsilon=float("inf")), "SinkhornOptions.epsilon must be a finite number > 0, got inf"),
        (dict(max_iterations=5, inner_iterations=10),
         "SinkhornOptions.inner_iterations (10) must be <= max_iterations (5) when a threshold is checked"),
        (dict(max_iterations=0), "SinkhornOptions.max_iterations must be an int >= 1, got 0"),
        (dict(threshold=-1.0), "SinkhornOptions.threshold must be a finite number > 0 or None, got -1.0"),
        (dict(gradient="exact"), "SinkhornOptions.gradient must be one of ('implicit', 'unroll', 'stop'), got 'exact'"),
        (dict(ridge=-1.0), "SinkhornOptions.ridge must be a finite number >= 0, got -1.0"),
        (dict(ridge=float("nan")), "SinkhornOptions.ridge must be a finite number >= 0, got nan"),
        (dict(inner_iterations=0), "SinkhornOptions.inner_iterations must be an int >= 1, got 0"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError) as err:
        SinkhornOptions(**kwargs)
    assert str(err.value) == message


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"transport_plan: cost must be a square \[B, B\] matrix, got shape \(3, 4\)"):
        transport_plan(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"normalized_cost: r_p and r_q must both be \[B, d\]"):
        normalized_cost(jnp.zeros((3, 4)), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"transport_plan: mask must be bool of shape \(3,\), got int32 \(3,\)"):
        transport_plan(jnp.zeros((3, 3)), jnp.ones(3, jnp.int32))
