"""Custom Lasagne layers: where stock Lasagne 0.1 differs from the other frameworks, and what 0.1 lacks.

Stock ``MaxPool2DLayer`` routes the gradient to every tied maximum of a
window, and ``rectify`` is ``(x + |x|) / 2``, whose gradient at 0 is 0.5.
``FirstMaxPool2DLayer`` and ``switch_rectify`` give the gradient to the first
maximum only (row-major window order) and 0 at 0, as torch does. Import this
module only after ``compat.import_lasagne``.
"""

from __future__ import annotations

import lasagne
import numpy as np
import theano.tensor as T
from lasagne.layers import Layer, MergeLayer


def switch_rectify(x):
    return T.switch(x > 0, x, T.zeros_like(x))


class SwitchLeakyRectify:
    """Leaky ReLU as ``switch(x > 0, x, slope * x)``: gradient ``slope`` at 0, as torch."""

    def __init__(self, negative_slope: float):
        self.negative_slope = negative_slope

    def __call__(self, x):
        return T.switch(x > 0, x, np.asarray(self.negative_slope, dtype=x.dtype) * x)


class ExplicitPadLayer(Layer):
    """Pad the two spatial axes with ``((top, bottom), (left, right))`` and a fill value.

    Lasagne 0.1's conv and pool layers pad symmetrically only; SAME padding
    with an even window puts the extra pixel after (bottom, right).
    """

    def __init__(self, incoming, pads, value=0.0, **kwargs):
        super().__init__(incoming, **kwargs)
        self.pads = pads
        self.value = value

    def get_output_shape_for(self, input_shape):
        (top, bottom), (left, right) = self.pads
        n, c, h, w = input_shape
        return (n, c, h + top + bottom, w + left + right)

    def get_output_for(self, input, **kwargs):
        (top, bottom), (left, right) = self.pads
        n, c, h, w = input.shape
        base = T.alloc(np.asarray(self.value, dtype=input.dtype), n, c, h + top + bottom, w + left + right)
        return T.set_subtensor(base[:, :, top:top + h, left:left + w], input)


class FirstMaxPool2DLayer(Layer):
    """Max pooling without padding (pad with ``ExplicitPadLayer`` first); partial windows are dropped.

    The windows are stacked from strided slices; ``argmax`` picks the first
    maximum and a one-hot ``switch`` passes the gradient to it alone.
    """

    def __init__(self, incoming, pool_size, stride, **kwargs):
        super().__init__(incoming, **kwargs)
        self.pool_size = tuple(pool_size)
        self.stride = tuple(stride)

    def get_output_shape_for(self, input_shape):
        n, c, h, w = input_shape
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        return (n, c, (h - kh) // sh + 1, (w - kw) // sw + 1)

    def get_output_for(self, input, **kwargs):
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        _, _, out_h, out_w = self.output_shape
        slices = [
            input[:, :, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
            for i in range(kh) for j in range(kw)
        ]
        windows = T.stack(slices, axis=2)
        first_max = T.argmax(windows, axis=2, keepdims=True)
        one_hot = T.eq(T.arange(kh * kw).dimshuffle("x", "x", 0, "x", "x"), first_max)
        # switch, not a product: a masked-out -inf padding value times 0 would be NaN.
        return T.switch(one_hot, windows, T.zeros_like(windows)).sum(axis=2)


class MaskedDropoutLayer(MergeLayer):
    """Inverted dropout with a mask supplied from outside (the harness's exact-mode masks).

    The second incoming layer is an ``InputLayer`` holding the mask, already
    scaled by ``1 / (1 - rate)``. With ``deterministic=True`` the input passes through.
    """

    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, deterministic=False, **kwargs):
        if deterministic:
            return inputs[0]
        return inputs[0] * inputs[1]


def time_distributed_dense(incoming, steps: int, **dense_kwargs):
    """Apply a ``DenseLayer`` to every step of ``(N, T, F)``; Lasagne 0.1's DenseLayer flattens trailing axes.

    Returns ``(dense_layer, output_layer)``.
    """
    features = incoming.output_shape[-1]
    rows = lasagne.layers.ReshapeLayer(incoming, (-1, features))
    dense = lasagne.layers.DenseLayer(rows, **dense_kwargs)
    return dense, lasagne.layers.ReshapeLayer(dense, (-1, steps, dense_kwargs["num_units"]))
