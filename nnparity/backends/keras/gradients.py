"""Objective and gradients of a Keras model without an update, one function per Keras backend.

Keras 3 has no backend-neutral gradient call, so this follows the custom
training step of each backend: ``tf.GradientTape``, torch autograd, and
``jax.value_and_grad`` over ``stateless_call``. The objective is the compiled
loss plus the regularization losses, as ``train_on_batch`` computes it, with
training-mode layers (exact dropout comes from the mask inputs).
"""

from __future__ import annotations

import numpy as np
from keras import ops


def loss_and_gradients(backend: str, model, loss_fn, inputs, targets):
    """Return ``(loss, {id(variable): gradient as float64 NumPy})`` for ``model``'s trainable weights."""
    compute = {"tensorflow": _tensorflow, "torch": _torch, "jax": _jax}[backend]
    loss, grads = compute(model, loss_fn, inputs, targets)
    return float(np.asarray(loss)), {id(v): np.asarray(g, np.float64) for v, g in zip(model.trainable_weights, grads)}


def _objective(model, loss_fn, inputs, targets):
    outputs = model(inputs, training=True)
    total = loss_fn(targets, outputs)
    for extra in model.losses:
        total = total + ops.sum(extra)
    return total


def _tensorflow(model, loss_fn, inputs, targets):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = _objective(model, loss_fn, inputs, targets)
    grads = tape.gradient(loss, [v.value for v in model.trainable_weights])
    return loss.numpy(), [g.numpy() for g in grads]


def _torch(model, loss_fn, inputs, targets):
    import torch

    values = [v.value for v in model.trainable_weights]
    loss = _objective(model, loss_fn, inputs, targets)
    grads = torch.autograd.grad(loss, values)
    return loss.detach().cpu().numpy(), [g.detach().cpu().numpy() for g in grads]


def _jax(model, loss_fn, inputs, targets):
    import jax

    trainable = [v.value for v in model.trainable_weights]
    non_trainable = [v.value for v in model.non_trainable_weights]

    def objective(trainable_values):
        outputs, _, losses = model.stateless_call(
            trainable_values, non_trainable, inputs, training=True, return_losses=True
        )
        total = loss_fn(targets, outputs)
        for extra in losses:
            total = total + ops.sum(extra)
        return total

    loss, grads = jax.value_and_grad(objective)(trainable)
    return np.asarray(loss), [np.asarray(g) for g in grads]
