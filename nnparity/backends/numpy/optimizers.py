"""Optimizer update rules, exactly as ``nnparity.specs.training`` writes them.

Each optimizer updates a list of parameter arrays in place from a list of
gradients in the same order. Constants stay Python floats, so NumPy casts
them to the parameters' dtype and a float32 run stays float32.
"""

from __future__ import annotations

import math

import numpy as np

from nnparity.specs import training as T


class SGDUpdate:
    """``p <- p - lr * g``."""

    def __init__(self, spec: T.SGD, params: list[np.ndarray]):
        self.lr = float(spec.learning_rate)

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Update ``params`` in place; ``grads`` are used as scratch space and overwritten."""
        lr = self.lr
        for p, g in zip(params, grads):
            g *= lr
            p -= g


class MomentumUpdate:
    """Heavy-ball or Nesterov momentum in the PyTorch form or the Keras form (see ``training.Momentum``)."""

    def __init__(self, spec: T.Momentum, params: list[np.ndarray]):
        self.lr = float(spec.learning_rate)
        self.momentum = float(spec.momentum)
        self.nesterov = spec.nesterov
        self.torch_form = spec.form == "torch"
        self.buffers = [np.zeros_like(p) for p in params]
        self.scratch = [np.empty_like(p) for p in params] if self.nesterov else [None] * len(params)

    def step(self, params, grads):
        """Update ``params`` in place; ``grads`` are used as scratch space and overwritten."""
        lr, m = self.lr, self.momentum
        for p, g, buffer, scratch in zip(params, grads, self.buffers, self.scratch):
            if self.torch_form:
                # b <- m b + g
                buffer *= m
                buffer += g
                if self.nesterov:
                    # p <- p - lr (g + m b)
                    np.multiply(buffer, m, out=scratch)
                    g += scratch
                    g *= lr
                    p -= g
                else:
                    # p <- p - lr b
                    np.multiply(buffer, lr, out=g)
                    p -= g
            else:
                # v <- m v - lr g
                g *= lr
                buffer *= m
                buffer -= g
                if self.nesterov:
                    # p <- p + m v - lr g
                    np.multiply(buffer, m, out=scratch)
                    p += scratch
                    p -= g
                else:
                    # p <- p + v
                    p += buffer


class AdamUpdate:
    """Adam with epsilon on the bias-corrected ``sqrt(v_hat)`` or on the uncorrected ``sqrt(v)``."""

    def __init__(self, spec: T.Adam, params: list[np.ndarray]):
        self.lr = float(spec.learning_rate)
        self.beta1 = float(spec.beta1)
        self.beta2 = float(spec.beta2)
        self.epsilon = float(spec.epsilon)
        self.corrected = spec.epsilon_form == "corrected"
        self.first = [np.zeros_like(p) for p in params]
        self.second = [np.zeros_like(p) for p in params]
        # Reused temporaries: fresh arrays of a dense layer's size would cost page faults every step.
        self.scratch = [np.empty_like(p) for p in params]
        self.t = 0

    def step(self, params, grads):
        """Update ``params`` in place; ``grads`` are used as scratch space and overwritten."""
        self.t += 1
        b1, b2, eps, lr = self.beta1, self.beta2, self.epsilon, self.lr
        correction1 = 1.0 - b1 ** self.t
        correction2 = 1.0 - b2 ** self.t
        step_size = lr * math.sqrt(correction2) / correction1

        for p, g, m, v, tmp in zip(params, grads, self.first, self.second, self.scratch):
            # m <- b1 m + (1 - b1) g
            m *= b1
            np.multiply(g, 1.0 - b1, out=tmp)
            m += tmp

            # v <- b2 v + (1 - b2) g^2; g is free after this.
            v *= b2
            np.multiply(g, g, out=g)
            g *= 1.0 - b2
            v += g

            if self.corrected:
                # p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
                np.divide(v, correction2, out=tmp)
                np.sqrt(tmp, out=tmp)
                tmp += eps
                np.divide(m, correction1, out=g)
                g *= lr
            else:
                # p <- p - lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
                np.sqrt(v, out=tmp)
                tmp += eps
                np.multiply(m, step_size, out=g)
            g /= tmp
            p -= g


OPTIMIZERS = {T.SGD: SGDUpdate, T.Momentum: MomentumUpdate, T.Adam: AdamUpdate}


def make_optimizer(spec: T.Optimizer, params: list[np.ndarray]):
    """Create the update rule for ``spec`` with zeroed state shaped like ``params``."""
    update = OPTIMIZERS.get(type(spec))
    if update is None:
        raise NotImplementedError(f"the numpy backend has no optimizer {type(spec).__name__}")
    return update(spec, params)
