"""The spec's optimizers in JAX: optax where its update rule is the spec's, explicit code where not.

optax 0.2.8 rules, read from its source, against the spec's formulas:

- ``optax.sgd(lr)`` adds ``-lr * g``: the spec's SGD, bit for bit.
- ``optax.sgd(lr, momentum=m, nesterov=n)`` keeps ``b <- g + m * b`` and adds
  ``-lr * b`` (Nesterov: ``-lr * (g + m * b)``): the spec's ``form = "torch"``
  Momentum, bit for bit.
- The spec's ``form = "keras"`` Momentum stores ``v <- m * v - lr * g`` with
  the learning rate inside the velocity; optax has no such rule, so it is
  written out below.
- ``optax.adam`` divides the bias-corrected moments and adds epsilon to
  ``sqrt(v_hat)``: the spec's Adam with ``epsilon_form = "corrected"``, the
  same formula up to rounding, because optax multiplies by ``-lr`` last.
- Adam with ``epsilon_form = "uncorrected"`` (epsilon added to ``sqrt(v)``,
  bias correction folded into the step size) is not an optax rule and is
  written out below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.jax.runtime import jax, jnp, optax
from nnparity.specs import training as T

tree_map = jax.tree_util.tree_map


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state`` and ``update(grads, state, params) -> (params, state)``, both pure."""

    init: Callable
    update: Callable
    implementation: str


def make_optimizer(spec: T.Optimizer) -> Optimizer:
    """Build the update rule for one optimizer spec."""
    if isinstance(spec, T.SGD):
        return _from_optax(optax.sgd(spec.learning_rate), "optax.sgd")
    if isinstance(spec, T.Momentum) and spec.form == "torch":
        transform = optax.sgd(spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov)
        return _from_optax(transform, f"optax.sgd(momentum={spec.momentum}, nesterov={spec.nesterov})")
    if isinstance(spec, T.Momentum):
        return _keras_momentum(spec)
    if isinstance(spec, T.Adam) and spec.epsilon_form == "corrected":
        transform = optax.adam(spec.learning_rate, b1=spec.beta1, b2=spec.beta2, eps=spec.epsilon)
        return _from_optax(transform, "optax.adam")
    if isinstance(spec, T.Adam):
        return _uncorrected_adam(spec)
    raise UnsupportedSpec(f"optimizer {spec.kind!r} is not supported by the jax backend")


def _from_optax(transform, implementation: str) -> Optimizer:
    def update(grads, state, params):
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return Optimizer(transform.init, update, implementation)


def _keras_momentum(spec: T.Momentum) -> Optimizer:
    """``v <- m * v - lr * g``; plain ``p <- p + v``; Nesterov ``p <- p + m * v - lr * g`` (new ``v``)."""
    lr, m = spec.learning_rate, spec.momentum

    def init(params):
        return {"velocity": tree_map(jnp.zeros_like, params)}

    def update(grads, state, params):
        velocity = tree_map(lambda v, g: m * v - lr * g, state["velocity"], grads)
        if spec.nesterov:
            params = tree_map(lambda p, v, g: p + m * v - lr * g, params, velocity, grads)
        else:
            params = tree_map(lambda p, v: p + v, params, velocity)
        return params, {"velocity": velocity}

    nesterov = ", nesterov" if spec.nesterov else ""
    return Optimizer(init, update, f"explicit momentum, learning rate inside the velocity{nesterov}")


def _uncorrected_adam(spec: T.Adam) -> Optimizer:
    """Adam with ``lr_t = lr * sqrt(1 - b2 ** t) / (1 - b1 ** t)`` and ``p <- p - lr_t * m / (sqrt(v) + eps)``."""
    lr, b1, b2, eps = spec.learning_rate, spec.beta1, spec.beta2, spec.epsilon

    def init(params):
        zeros = tree_map(jnp.zeros_like, params)
        return {"count": jnp.zeros((), jnp.int32), "m": zeros, "v": tree_map(jnp.zeros_like, params)}

    def update(grads, state, params):
        count = state["count"] + 1
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], grads)

        def step(p, m, v):
            # The step size is computed in the parameter's dtype, as
            # TensorFlow 1's AdamOptimizer does.
            t = count.astype(p.dtype)
            lr_t = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            return p - lr_t * m / (jnp.sqrt(v) + eps)

        params = tree_map(step, params, m, v)
        return params, {"count": count, "m": m, "v": v}

    return Optimizer(init, update, "explicit Adam, epsilon added to the uncorrected sqrt(v)")
