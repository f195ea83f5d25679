"""The optimal-transport math of PARROT's OT branch (paper section 3.1, eq. 1), on ott-jax.

Kept apart as ott-jax keeps them: the *geometry* is the cost matrix between the rows of two batches of
latent vectors (`normalized_cost`), the *problem* is the balanced OT problem with uniform marginals over
the valid rows, and the *solver* is ott-jax's log-domain Sinkhorn, parameterised by `SinkhornOptions`
(`transport_plan`).

For a batch of B rows r_p[i], r_q[j] (with an optional bool mask, False = padding row):

    d_ij = ||r_p[i] - r_q[j]||_2,     C_ij = d_ij / max_{valid k,l} d_kl            (eq. 1)

    Gamma = argmin_{P >= 0, P 1 = a, P^T 1 = b} <P, C> - epsilon H(P),   a = b = mask / n_valid

Padding rows carry no mass of the valid rows' problem: their rows and columns of Gamma are exactly
zero, and the valid block of Gamma is the plan of the valid rows alone (see `transport_plan`).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import implicit_differentiation, sinkhorn

GradientMode = Literal["implicit", "unroll", "stop"]
GRADIENT_MODES: tuple[str, ...] = ("implicit", "unroll", "stop")


@dataclass(frozen=True)
class SinkhornOptions:
    """How the plan is computed and differentiated (the paper names only "Sinkhorn").

    epsilon: entropic regularisation, absolute, on the max-normalised cost (C in [0, 1]), so it is
        also relative to the largest distance in the batch. Default 0.05.
    max_iterations: the most Sinkhorn iterations (ott-jax's default, 2000).
    threshold: stop when the L1 marginal error is below it (ott-jax's default, 1e-3); None runs exactly
        `max_iterations` iterations (a fixed-length loop, no convergence test).
    gradient: how d Gamma / d C is obtained.
        "unroll" (default): reverse mode through the Sinkhorn iterations themselves (ott-jax's
            checkpointed fixed-point loop): the exact derivative of the plan actually computed. Robust:
            finite on every input we tried, ~2 ms per gradient at B = 32.
        "implicit": implicit differentiation of the optimality conditions (ott-jax's ImplicitDiff, here
            with the symmetric Hessian system solved by CG and a ridge, see `ridge`): the derivative
            of the converged plan. ott-jax's own default (log-preconditioned, no ridge) made lineax raise
            "non-finite output" on about half of our random 32 x 32 problems; with this setting it still
            does on some padded batches of large-magnitude rows, hence not the default.
        "stop": the plan is treated as a constant (gradients still flow through Gamma R, not into Gamma).
    ridge: added to the implicit-differentiation system (ott-jax's ridge_kernel and ridge_identity);
        used only by gradient="implicit". Default 1e-2.
    inner_iterations: with a threshold, the marginal error is computed (and the loop may stop) every
        this many iterations (ott-jax's `inner_iterations`; its default, 10), so a solve runs a multiple
        of it. Each test costs a reduction and, under vmap, a synchronisation of all members' loops.
        Ignored when threshold is None.
    """

    epsilon: float = 0.05
    max_iterations: int = 2000
    threshold: float | None = 1e-3
    gradient: GradientMode = "unroll"
    ridge: float = 1e-2
    inner_iterations: int = 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"SinkhornOptions.epsilon must be a finite number > 0, got {self.epsilon!r}")
        if not (isinstance(self.max_iterations, int) and self.max_iterations >= 1):
            raise ValueError(f"SinkhornOptions.max_iterations must be an int >= 1, got {self.max_iterations!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"SinkhornOptions.threshold must be a finite number > 0 or None, got {self.threshold!r}")
        if not (isinstance(self.inner_iterations, int) and self.inner_iterations >= 1):
            raise ValueError(f"SinkhornOptions.inner_iterations must be an int >= 1, got {self.inner_iterations!r}")
        if self.threshold is not None and self.inner_iterations > self.max_iterations:  # ott-jax would run past max
            raise ValueError(f"SinkhornOptions.inner_iterations ({self.inner_iterations}) must be <= max_iterations "
                             f"({self.max_iterations}) when a threshold is checked")
        if not (math.isfinite(self.ridge) and self.ridge >= 0):
            raise ValueError(f"SinkhornOptions.ridge must be a finite number >= 0, got {self.ridge!r}")
        if self.gradient not in GRADIENT_MODES:
            raise ValueError(f"SinkhornOptions.gradient must be one of {GRADIENT_MODES}, got {self.gradient!r}")

    def solver(self) -> sinkhorn.Sinkhorn:
        """The ott-jax Sinkhorn solver these options describe."""
        fixed = self.threshold is None
        return sinkhorn.Sinkhorn(
            threshold=0.0 if fixed else self.threshold,  # min == max iterations: a fixed-length scan
            max_iterations=self.max_iterations,
            min_iterations=self.max_iterations if fixed else 0,
            inner_iterations=1 if fixed else self.inner_iterations,
            implicit_diff=(
                implicit_differentiation.ImplicitDiff(
                    symmetric=True,  # the Hessian itself (no log preconditioning): CG on an SPD system
                    precondition_fun=_identity,
                    solver_kwargs={"ridge_kernel": self.ridge, "ridge_identity": self.ridge},
                )
                if self.gradient == "implicit"
                else None
            ),
        )


def _identity(x: jax.Array) -> jax.Array:
    return x


def _check_mask(mask: jax.Array | None, batch: int, what: str) -> jax.Array:
    """The mask as bool [batch] (all True when None), with a clear error for a bad shape or dtype."""
    if mask is None:
        return jnp.ones((batch,), bool)
    if mask.shape != (batch,) or mask.dtype != jnp.bool_:
        raise ValueError(f"{what}: mask must be bool of shape ({batch},), got {mask.dtype} {mask.shape}")
    # A batch made only of padding (possible when folds of unequal size are stacked) is solved as if all
    # rows were valid: every output of it is padding, but it stays finite.
    return jnp.where(jnp.any(mask), mask, True)


def _safe_norm(x: jax.Array, axis: int) -> jax.Array:
    """Euclidean norm with gradient 0 (not NaN) where the norm is 0."""
    sq = jnp.sum(x * x, axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def normalized_cost(r_p: jax.Array, r_q: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """C [B, B] of eq. (1): C_ij = ||r_p[i] - r_q[j]|| / max over valid (k, l) of ||r_p[k] - r_q[l]||.

    r_p, r_q: [B, d] float32 (same B and d). Entries in a padding row or column are 0. When every valid
    distance is 0 (all rows equal), C is all zeros: no NaN, forward or backward.
    """
    if r_p.ndim != 2 or r_p.shape != r_q.shape:
        raise ValueError(f"normalized_cost: r_p and r_q must both be [B, d], got {r_p.shape} and {r_q.shape}")
    valid = _check_mask(mask, r_p.shape[0], "normalized_cost")
    pair = valid[:, None] & valid[None, :]
    dist = jnp.where(pair, _safe_norm(r_p[:, None, :] - r_q[None, :, :], axis=-1), 0.0)
    largest = jnp.max(dist)
    nonzero = largest > 0
    return jnp.where(nonzero, dist / jnp.where(nonzero, largest, 1.0), 0.0)


def transport_plan(
    cost: jax.Array, mask: jax.Array | None = None, options: SinkhornOptions = SinkhornOptions()
) -> jax.Array:
    """Gamma [B, B]: the entropic OT plan for `cost` [B, B] with uniform marginals over the valid rows.

    Each valid row and column of Gamma sums to 1 / n_valid (within the solver's threshold); rows and
    columns i with mask[i] False are exactly 0, and the valid block equals the plan of the valid rows alone.

    How padding is kept out: padding rows get their own mass 1 / n_pad and cost 0 among themselves, and
    a cost to and from valid rows so large (max valid cost + 1 + 200 epsilon) that the kernel
    exp(-cost / epsilon) underflows to exactly 0 there. The problem then splits into two independent
    blocks; the valid block sees the same marginals, iterations and stopping test as the valid rows
    alone. (Zero-mass padding, the other way, gives NaN gradients in ott-jax.)
    """
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"transport_plan: cost must be a square [B, B] matrix, got shape {cost.shape}")
    valid = _check_mask(mask, cost.shape[0], "transport_plan")
    pair = valid[:, None] & valid[None, :]
    if options.gradient == "stop":
        cost = jax.lax.stop_gradient(cost)
    cost = jnp.where(pair, cost, 0.0)
    separation = jax.lax.stop_gradient(jnp.max(jnp.abs(cost))) + 1.0 + 200.0 * options.epsilon
    same_kind = valid[:, None] == valid[None, :]
    cost = jnp.where(pair, cost, jnp.where(same_kind, 0.0, separation))
    n_valid = jnp.sum(valid)
    n_pad = jnp.maximum(valid.shape[0] - n_valid, 1)
    weights = jnp.where(valid, 1.0 / n_valid, 1.0 / n_pad).astype(cost.dtype)
    problem = linear_problem.LinearProblem(geometry.Geometry(cost, epsilon=options.epsilon), weights, weights)
    plan = options.solver()(problem).matrix
    return jnp.where(pair, plan, 0.0)
