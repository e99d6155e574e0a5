"""Activations and their derivatives, shared by the dense, conv and RNN layers.

``activate`` works in place on the pre-activation ``z`` (a fresh array the
caller owns) and returns the output plus what the backward pass needs. ReLU
and leaky ReLU send no gradient through ``z == 0`` (as PyTorch does), so the
backward pass keys on ``z > 0``, not on ``z >= 0``.
"""

from __future__ import annotations

import numpy as np


def activate(z: np.ndarray, kind: str, negative_slope: float | None):
    """Apply ``kind`` to ``z`` in place; return ``(output, cache)``."""
    if kind == "linear":
        return z, None

    if kind == "tanh":
        np.tanh(z, out=z)
        return z, z

    if kind == "sigmoid":
        # 1 / (1 + exp(-z)), computed in the array's dtype.
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        np.reciprocal(z, out=z)
        return z, z

    positive = z > 0
    if kind == "relu":
        np.multiply(z, positive, out=z)
        return z, positive

    if kind == "leaky_relu":
        scale = np.where(positive, z.dtype.type(1.0), z.dtype.type(negative_slope))
        np.multiply(z, scale, out=z)
        return z, scale

    raise ValueError(f"unknown activation {kind!r}; use linear, tanh, sigmoid, relu or leaky_relu")


def activation_grad(dy: np.ndarray, kind: str, cache) -> np.ndarray:
    """Gradient with respect to the pre-activation, as a new array."""
    if kind == "linear":
        return dy

    if kind == "tanh":
        # d tanh = 1 - y^2
        return dy * (1.0 - cache * cache)

    if kind == "sigmoid":
        # d sigmoid = y (1 - y)
        return dy * (cache * (1.0 - cache))

    # relu multiplies by the boolean mask z > 0, leaky_relu by 1 or the slope.
    return dy * cache
