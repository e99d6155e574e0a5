"""Lasagne-style layer builders: each takes a symbolic input and returns the layer's output expression.

PyTensor 3.0.7 has no neural-network convolution or pooling op, so both are
built from slices: convolution as im2col (the kh*kw shifted slices of the
padded input, stacked, then one ``dot`` with the reshaped kernel), and max
pooling through ``argmax`` and a one-hot mask, so that exactly the first
maximum of each window, in row-major window order, gets the gradient (as
torch on CPU and NumPy's argmax). ReLU is ``switch(z > 0, z, 0)``, whose
gradient at 0 is 0, as in torch.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from nnparity.backends.base import UnsupportedSpec
from nnparity.specs import layers as L


def activation(z, name: str, negative_slope: float | None = None):
    if name == "linear":
        return z
    if name == "tanh":
        return pt.tanh(z)
    if name == "sigmoid":
        return pt.sigmoid(z)
    if name == "relu":
        return pt.switch(z > 0, z, pt.zeros_like(z))
    if name == "leaky_relu":
        return pt.switch(z > 0, z, np.asarray(negative_slope, dtype=z.dtype) * z)
    raise UnsupportedSpec(f"activation {name!r} is not supported by the theano backend")


def dense(x, layer: L.Dense, params: dict):
    """Affine map on the last axis; a sequence input ``(N, T, F)`` is folded into rows first."""
    W = params["W"]
    if x.ndim == 2:
        z = pt.dot(x, W)
    else:
        rows = pt.dot(x.reshape((-1, x.shape[-1])), W)
        z = rows.reshape((*[x.shape[i] for i in range(x.ndim - 1)], W.shape[1]))
    if "b" in params:
        z = z + params["b"]
    return activation(z, layer.activation, layer.negative_slope)


def pad2d(x, pads, value: float):
    """Pad the two spatial axes of ``(N, C, H, W)``; ``pads`` is ``((top, bottom), (left, right))``."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    shape = (n, c, h + top + bottom, w + left + right)
    base = pt.full(shape, np.asarray(value, dtype=x.dtype), dtype=x.dtype)
    return pt.set_subtensor(base[:, :, top:top + h, left:left + w], x)


def window_slices(xp, window, stride, out_hw):
    """Return the kh*kw strided slices of the padded input, each ``(N, C, OH, OW)``, in row-major window order."""
    (kh, kw), (sh, sw), (oh, ow) = window, stride, out_hw
    slices = []
    for i in range(kh):
        for j in range(kw):
            slices.append(xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw])
    return slices


def conv2d(x, layer: L.Conv2D, params: dict, input_shape, output_shape):
    """Cross-correlation (no kernel flip) as im2col plus one matrix product."""
    W = params["W"]
    channels = input_shape[0]
    filters, out_h, out_w = output_shape
    kh, kw = (layer.kernel_size, layer.kernel_size) if isinstance(layer.kernel_size, int) else layer.kernel_size
    stride = (layer.stride, layer.stride) if isinstance(layer.stride, int) else layer.stride

    xp = pad2d(x, layer.explicit_padding(input_shape), 0.0)
    patches = pt.stack(window_slices(xp, (kh, kw), stride, (out_h, out_w)), axis=2)

    # Column order (channel, kernel row, kernel column) matches W.reshape(filters, -1).
    n = batch_size(x)
    columns = patches.reshape((n, channels * kh * kw, out_h * out_w)).dimshuffle(0, 2, 1)
    columns = columns.reshape((n * out_h * out_w, channels * kh * kw))
    z = pt.dot(columns, W.reshape((filters, channels * kh * kw)).T)
    z = z.reshape((n, out_h, out_w, filters)).dimshuffle(0, 3, 1, 2)
    if "b" in params:
        z = z + params["b"].dimshuffle("x", 0, "x", "x")
    return activation(z, layer.activation, layer.negative_slope)


def max_pool2d(x, layer: L.MaxPool2D, input_shape, output_shape):
    """Max pooling whose gradient goes to the first maximum of each window only.

    Reshape-and-max would send the gradient to every tied maximum, and ties
    are common on image data (zero-padded or ReLU-clipped regions).
    """
    pool = (layer.pool_size, layer.pool_size) if isinstance(layer.pool_size, int) else layer.pool_size
    _, out_h, out_w = output_shape

    # -inf padding never wins a SAME window, because each window contains at least one input element.
    xp = pad2d(x, layer.explicit_padding(input_shape), -np.inf)
    windows = pt.stack(window_slices(xp, pool, layer.resolved_stride(), (out_h, out_w)), axis=2)

    first_max = pt.argmax(windows, axis=2, keepdims=True)
    positions = np.arange(pool[0] * pool[1], dtype="int64").reshape(1, 1, -1, 1, 1)
    one_hot = pt.eq(positions, first_max)
    # switch, not a product: a masked-out -inf times 0 would be NaN.
    return pt.switch(one_hot, windows, pt.zeros_like(windows)).sum(axis=2)


def batch_size(x):
    """The batch dimension: a constant when the input type fixes it (the JAX linker needs static shapes)."""
    return x.type.shape[0] if x.type.shape[0] is not None else x.shape[0]


def flatten(x, input_shape):
    return x.reshape((batch_size(x), int(np.prod(input_shape))))


def dropout(x, mask):
    """Inverted dropout with a given mask (already scaled by 1 / (1 - rate))."""
    return x * mask


def random_dropout_mask(rng, x, rate: float):
    """Draw a keep mask in the graph; return ``(next_rng, mask)`` so the caller chains the RNG updates."""
    next_rng, uniform = rng.uniform(0.0, 1.0, size=x.shape)
    keep = pt.ge(uniform, rate)
    scale = np.asarray(1.0 / (1.0 - rate), dtype=x.dtype)
    return next_rng, pt.cast(keep, x.dtype) * scale


def simple_rnn(x, layer: L.SimpleRNN, params: dict, input_shape):
    """Elman recurrence over ``(N, T, F)`` with ``h_0 = 0``, as one ``scan``; returns ``(N, T, units)``.

    Shapes come from the spec, not from ``x.shape``, so that the JAX linker sees static shapes.
    """
    W_in, W_rec = params["W_in"], params["W_rec"]
    steps, features = input_shape
    batch = batch_size(x)
    steps_first = x.dimshuffle(1, 0, 2)
    driven = pt.dot(steps_first.reshape((steps * batch, features)), W_in)
    driven = driven.reshape((steps, batch, layer.units))
    if "b" in params:
        driven = driven + params["b"]

    def step(drive, h_prev):
        return activation(drive + pt.dot(h_prev, W_rec), layer.activation)

    h0 = pt.zeros_like(driven[0])
    hidden = pytensor.scan(step, sequences=[driven], outputs_info=[h0], return_updates=False)
    return hidden.dimshuffle(1, 0, 2)
