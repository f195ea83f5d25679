"""The conv stacks' 1-D convolution, with a member-axis batching rule chosen per backend.

    conv1d(x, kernel)[b, t, o] = sum_{k, c} x[b, t + k, c] kernel[k, c, o]      (x padded first for "SAME")

x [B, L, C_in], kernel [K, C_in, C_out]: the same numbers as `lax.conv_general_dilated` (and flax's
`nn.Conv`). What differs is how the trainer's `jax.vmap` over members (folds x seeds, each with its own
kernel) is carried out:

- "loop": each member's convolution runs as an ordinary convolution, one after another inside the same
  compiled program, and the results are stacked;
- "grouped": JAX's own rule, one grouped convolution (feature_group_count = members);
- "matmul": `matmul_conv1d`, the K shifted views of x stacked on the channel axis times the reshaped
  kernel: under vmap one batched matrix product, the form accelerators' matrix units run well; plain JAX
  operations, so forward mode and higher derivatives work too;
- "auto" (default): "loop" on a single CPU device, "matmul" elsewhere (with several devices the member
  axis is sharded, and slicing it member by member would undo that).

Why: XLA:CPU runs grouped convolutions slowly. A PARROT branch's gradient (dims 3840, batch 32, 5 members)
took 843 ms with the grouped form and 700 ms with "loop" (one member alone: 116 ms; jax 0.10.2, 2 CPU
cores; bench/train_step.py). Off a single CPU device "auto" takes "matmul", so that members run on
an accelerator's matrix units (the design's choice; not yet measured on a GPU). On
one CPU device "matmul" measured slower than "loop" (2664 vs 2024 ms, `bench/train_step.py --parts
conv`, loaded machine), so "loop" stays there.

For "loop" and "grouped" the gradient is a `jax.custom_vjp` whose two backward convolutions (d/dx,
d/dkernel) are themselves batched by the same rule: reverse mode, first order, is all that is defined.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

MemberRule = Literal["auto", "loop", "grouped", "matmul"]
MEMBER_RULES: tuple[str, ...] = ("auto", "loop", "grouped", "matmul")
_DIMENSIONS = ("NWC", "WIO", "NWC")


def resolve_rule(rule: str) -> str:
    """"auto" -> "loop" on one CPU device, else "matmul"; other values are checked and returned."""
    if rule not in MEMBER_RULES:
        raise ValueError(f"member batching rule must be one of {MEMBER_RULES}, got {rule!r}")
    if rule != "auto":
        return rule
    return "loop" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "matmul"


def _conv(x: jax.Array, kernel: jax.Array, padding: str) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1,), padding, dimension_numbers=_DIMENSIONS)


def _batched_by(rule: str, fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`fn` with a vmap rule: members one by one ("loop") or JAX's own batching ("grouped")."""
    wrapped = custom_vmap(fn)

    @wrapped.def_vmap
    def _rule(axis_size: int, in_batched: Sequence[bool], *args: jax.Array) -> tuple[jax.Array, bool]:
        if rule == "loop":
            pick = lambda m: [a[m] if batched else a for a, batched in zip(args, in_batched)]  # noqa: E731
            return jnp.stack([fn(*pick(m)) for m in range(axis_size)]), True
        return jax.vmap(fn, in_axes=tuple(0 if b else None for b in in_batched))(*args), True

    return wrapped


def matmul_conv1d(x: jax.Array, kernel: jax.Array, padding: str = "VALID") -> jax.Array:
    """The same convolution as one matrix product: the K shifted views of x stacked along the channel
    axis, [B, L', K * C_in], times the kernel reshaped to [K * C_in, C_out]. Plain JAX operations, so
    vmap over members turns it into one batched matrix product, and every derivative (forward mode,
    second order) is JAX's own."""
    width = kernel.shape[0]
    if padding == "SAME":
        left = (width - 1) // 2
        x = jnp.pad(x, ((0, 0), (left, width - 1 - left), (0, 0)))
    elif padding != "VALID":
        raise ValueError(f"matmul_conv1d: padding must be 'VALID' or 'SAME', got {padding!r}")
    length = x.shape[1] - width + 1
    views = jnp.concatenate([x[:, k : k + length] for k in range(width)], axis=-1)
    return jnp.einsum("blc,co->blo", views, kernel.reshape(-1, kernel.shape[-1]))


def conv1d(x: jax.Array, kernel: jax.Array, padding: str = "VALID", rule: MemberRule = "auto") -> jax.Array:
    """[B, L, C_in] * [K, C_in, C_out] -> [B, L', C_out] (L' = L - K + 1 for "VALID", L for "SAME")."""
    rule = resolve_rule(rule)
    if rule == "matmul":
        return matmul_conv1d(x, kernel, padding)
    return _conv1d(x, kernel, padding, rule)


def _forward(x: jax.Array, kernel: jax.Array, padding: str, rule: str) -> jax.Array:
    return _batched_by(rule, lambda x, k: _conv(x, k, padding))(x, kernel)


_conv1d = jax.custom_vjp(_forward, nondiff_argnums=(2, 3))


def _conv1d_fwd(x, kernel, padding, rule):
    return _forward(x, kernel, padding, rule), (x, kernel)


def _conv1d_bwd(padding, rule, residuals, g):
    x, kernel = residuals

    def d_input(g: jax.Array, kernel: jax.Array) -> jax.Array:
        return jax.vjp(lambda x: _conv(x, kernel, padding), jnp.zeros(x.shape[-3:], x.dtype))[1](g)[0]

    def d_kernel(x: jax.Array, g: jax.Array) -> jax.Array:
        return jax.vjp(lambda k: _conv(x, k, padding), jnp.zeros(kernel.shape[-3:], kernel.dtype))[1](g)[0]

    return _batched_by(rule, d_input)(g, kernel), _batched_by(rule, d_kernel)(x, g)


_conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)


class Conv1D(nn.Module):
    """Drop-in for `nn.Conv(features, (kernel_size,), padding=...)` on [B, L, C] inputs: same parameter
    names, shapes and initialisers ("kernel" lecun-normal [K, C_in, C_out], "bias" zeros), same outputs,
    with the member batching rule of `conv1d`."""

    features: int
    kernel_size: int
    padding: str = "VALID"
    rule: MemberRule = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return conv1d(x, kernel, self.padding, self.rule) + bias
