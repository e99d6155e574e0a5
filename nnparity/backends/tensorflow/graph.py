"""The spec's forward pass and objective written with TensorFlow ops, channels-last.

Every function here runs inside a ``tf.function`` trace. Parameters are the
adapter's ``tf.Variable`` objects in backend layout (see ``layout``).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.tensorflow.layout import ChannelsLastLayout
from nnparity.specs import ModelSpec
from nnparity.specs import layers as L
from nnparity.specs import training as T


def activate(x, activation: str, negative_slope: float | None):
    if activation == "linear":
        return x
    if activation == "tanh":
        return tf.tanh(x)
    if activation == "sigmoid":
        return tf.sigmoid(x)
    if activation == "relu":
        # ReluGrad passes the gradient only where x > 0, so the gradient at 0 is 0, as in torch.
        return tf.nn.relu(x)
    if activation == "leaky_relu":
        # Not tf.nn.leaky_relu: its alpha is a float32 op attribute, so a slope of 0.1
        # becomes 0.10000000149 in float64 runs. Here the slope has x's dtype, and
        # the gradient at x == 0 is the slope, as in the spec.
        return tf.where(x > 0, x, tf.constant(negative_slope, x.dtype) * x)
    raise UnsupportedSpec(f"activation {activation!r} is not supported by the tensorflow backend")


def check_supported(spec: ModelSpec) -> None:
    """Raise UnsupportedSpec for any layer kind this graph builder does not know."""
    known = (L.Dense, L.Conv2D, L.MaxPool2D, L.Flatten, L.Dropout, L.SimpleRNN)
    for layer in spec.layers[1:]:
        if not isinstance(layer, known):
            raise UnsupportedSpec(f"layer {layer.name!r} of kind {layer.kind!r} is not supported by the tensorflow backend")


class Network:
    """The forward pass of one spec over a dict of variables keyed ``layer/param``."""

    def __init__(self, spec: ModelSpec, layout: ChannelsLastLayout, variables: dict, dtype):
        check_supported(spec)
        self.spec = spec
        self.layout = layout
        self.variables = variables
        self.dtype = dtype
        self.inputs = spec.input_shapes()

    def __call__(self, x, masks=None, dropout_seed=None):
        """Outputs for a canonical batch ``x``.

        ``masks`` (exact dropout, canonical layout) or ``dropout_seed`` (native
        dropout, a stateless seed pair) turns dropout on; with neither, Dropout
        layers are the identity, as in evaluation.
        """
        h = tf.transpose(x, [0, 2, 3, 1]) if self.layout.image_input else x
        dropout_index = 0
        for layer in self.spec.layers[1:]:
            if isinstance(layer, L.Dropout):
                h = self._dropout(h, layer, dropout_index, masks, dropout_seed)
                dropout_index += 1
            else:
                h = getattr(self, f"_{layer.kind}")(h, layer)
        # Outputs leave canonical, so squared-error targets and predictions need no conversion outside.
        if self.layout.image_output:
            h = tf.transpose(h, [0, 3, 1, 2])
        elif self.layout.output_order is not None:
            h = tf.gather(h, np.argsort(self.layout.output_order), axis=1)
        return h

    def _param(self, layer, name):
        return self.variables.get(f"{layer.name}/{name}")

    def _dense(self, h, layer):
        kernel, bias = self._param(layer, "W"), self._param(layer, "b")
        if len(h.shape) == 2:
            h = tf.matmul(h, kernel)
        else:
            h = tf.einsum("btf,fu->btu", h, kernel)
        if bias is not None:
            h = h + bias
        return activate(h, layer.activation, layer.negative_slope)

    def _conv2d(self, h, layer):
        kernel, bias = self._param(layer, "W"), self._param(layer, "b")
        stride = L._positive_pair(layer.name, "stride", layer.stride)
        h, padding = self._pad(h, layer, self.inputs[layer.name], 0.0)
        h = tf.nn.conv2d(h, kernel, strides=(1, *stride, 1), padding=padding)
        if bias is not None:
            h = tf.nn.bias_add(h, bias)
        return activate(h, layer.activation, layer.negative_slope)

    def _maxpool2d(self, h, layer):
        # TensorFlow's CPU MaxPoolGrad and XLA's select-and-scatter both route a
        # tied window's gradient to its first maximum in row-major order, which
        # is the spec's rule (tests check this on tied inputs).
        pool = L._positive_pair(layer.name, "pool_size", layer.pool_size)
        stride = layer.resolved_stride()
        h, padding = self._pad(h, layer, self.inputs[layer.name], -math.inf)
        return tf.nn.max_pool2d(h, ksize=pool, strides=stride, padding=padding)

    def _pad(self, h, layer, input_shape, value):
        """Return ``(h, "SAME")`` when TensorFlow's SAME equals the spec's padding, else pad explicitly."""
        pads = layer.explicit_padding(input_shape)
        if pads == ((0, 0), (0, 0)):
            return h, "VALID"
        if layer.padding == "same":
            # TensorFlow's SAME puts the odd extra pixel after (bottom, right), as the spec does.
            return h, "SAME"
        return tf.pad(h, [(0, 0), *pads, (0, 0)], constant_values=value), "VALID"

    def _flatten(self, h, layer):
        return tf.reshape(h, [-1, math.prod(self.inputs[layer.name])])

    def _dropout(self, h, layer, index, masks, dropout_seed):
        if masks is not None:
            mask = masks[index]
            order = self.layout.mask_orders[index]
            if isinstance(order, str):
                mask = tf.transpose(mask, [0, 2, 3, 1])
            elif order is not None:
                mask = tf.gather(mask, order, axis=1)
            return h * mask
        if dropout_seed is not None:
            seed = dropout_seed + tf.constant([0, index], dtype=dropout_seed.dtype)
            keep = tf.random.stateless_uniform(tf.shape(h), seed=seed, dtype=self.dtype) >= layer.rate
            return h * tf.cast(keep, self.dtype) / (1.0 - layer.rate)
        return h

    def _simple_rnn(self, h, layer):
        w_in, w_rec, bias = self._param(layer, "W_in"), self._param(layer, "W_rec"), self._param(layer, "b")
        steps = self.inputs[layer.name][0]

        # One input projection for all time steps, then the recurrence. The
        # loop is unrolled at trace time (the step count is static), which
        # suits the short sequences of the zoo.
        projected = tf.einsum("btf,fu->btu", h, w_in)
        if bias is not None:
            projected = projected + bias
        state = tf.zeros([tf.shape(h)[0], layer.units], dtype=self.dtype)
        outputs = []
        for t in range(steps):
            state = activate(projected[:, t] + tf.matmul(state, w_rec), layer.activation, None)
            outputs.append(state)
        return tf.stack(outputs, axis=1)


class Objective:
    """The spec's loss plus its L2 term, in TensorFlow ops."""

    def __init__(self, spec: ModelSpec, dtype):
        self.loss = spec.loss
        self.dtype = dtype
        reg = spec.regularization
        self.l2_keys = [p.key for p in spec.param_layout() if reg is not None and reg.applies_to(p.is_weight)]
        self.l2_scale = 0.0 if reg is None else (0.5 if reg.half else 1.0) * reg.factor

    def __call__(self, outputs, targets, variables):
        total = self.data_loss(outputs, targets)
        if self.l2_keys:
            squares = tf.add_n([tf.reduce_sum(tf.square(variables[key])) for key in self.l2_keys])
            total = total + self.l2_scale * squares
        return total

    def data_loss(self, outputs, targets):
        loss = self.loss
        if isinstance(loss, T.SoftmaxCrossEntropy):
            per_element = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=outputs)
        elif isinstance(loss, T.BinaryCrossEntropy):
            # tf.clip_by_value passes no gradient where it clips, as the spec requires.
            probs = tf.clip_by_value(tf.nn.softmax(outputs), loss.epsilon, 1.0 - loss.epsilon)
            onehot = tf.one_hot(targets, outputs.shape[-1], dtype=self.dtype)
            per_element = -(onehot * tf.math.log(probs) + (1.0 - onehot) * tf.math.log(1.0 - probs))
        elif isinstance(loss, T.SquaredError):
            per_element = tf.square(outputs - targets)
            if loss.half:
                per_element = 0.5 * per_element
        else:
            raise UnsupportedSpec(f"loss {loss.kind!r} is not supported by the tensorflow backend")
        if loss.reduction == "sum":
            return tf.reduce_sum(per_element)
        return tf.reduce_mean(per_element)


def target_signature(spec: ModelSpec, dtype) -> tf.TensorSpec:
    if isinstance(spec.loss, T.SquaredError):
        return tf.TensorSpec([None, *spec.shapes()[-1]], dtype)
    return tf.TensorSpec([None], tf.int64)
