"""Objective and gradients of a Keras model without an update, one function per Keras backend.

Keras 3 has no backend-neutral gradient call, so this follows the custom
training step of each backend: ``tf.GradientTape``, torch autograd, and
``jax.value_and_grad`` over ``stateless_call``. The objective is the compiled
loss plus the regularization losses, as ``train_on_batch`` computes it.
``training`` is true only when exact dropout masks are fed as inputs; without
masks the layers run in inference mode, so a native ``Dropout`` is the
identity, as the adapter contract requires.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def loss_and_gradients(backend: str, model, loss_fn, inputs, targets, training: bool):
    """Return ``(loss, {id(variable): gradient as NumPy})`` for ``model``'s trainable variables."""
    compute = {"tensorflow": _tensorflow, "torch": _torch, "jax": _jax}[backend]
    loss, grads = compute(model, loss_fn, inputs, targets, training)
    return float(np.asarray(loss)), {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, grads)}


def _objective(model, loss_fn, inputs, targets, training):
    outputs = model(inputs, training=training)
    total = loss_fn(targets, outputs)
    for extra in model.losses:
        total = total + ops.sum(extra)
    return total


def _tensorflow(model, loss_fn, inputs, targets, training):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = _objective(model, loss_fn, inputs, targets, training)
    grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
    return loss.numpy(), [g.numpy() for g in grads]


def _torch(model, loss_fn, inputs, targets, training):
    import torch

    values = [v.value for v in model.trainable_variables]
    loss = _objective(model, loss_fn, inputs, targets, training)
    grads = torch.autograd.grad(loss, values)
    return loss.detach().cpu().numpy(), [g.detach().cpu().numpy() for g in grads]


def _jax(model, loss_fn, inputs, targets, training):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    # Variables, not weights: stateless_call also wants the SeedGenerator state of Dropout and SimpleRNN.
    non_trainable = [v.value for v in model.non_trainable_variables]

    def objective(trainable_values):
        outputs, _, losses = model.stateless_call(
            trainable_values, non_trainable, inputs, training=training, return_losses=True
        )
        total = loss_fn(targets, outputs)
        for extra in losses:
            total = total + ops.sum(extra)
        return total

    loss, grads = jax.value_and_grad(objective)(trainable)
    return np.asarray(loss), [np.asarray(g) for g in grads]
